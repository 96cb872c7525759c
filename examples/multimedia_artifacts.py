"""Images, audio, video and visualizations as artifacts (the Tracelet guide's media types).

Generates a few media files (a PNG image and a batch of them, a WAV tone, a short animated
GIF standing in for a video clip, an SVG chart), logs each as its own type and reads them back
verified. Media types route to W&B when it is configured (``backend=["wandb"]`` or
``TRACELET_BACKENDS``), where they also show up as native ``wandb.Image`` / ``Audio`` /
``Video``; with no backend they stay in the local store. Seeded, so a rerun adds nothing.

    python examples/multimedia_artifacts.py        # store: TRACELET_STORE_URI or ~/.tracelet/store
"""

from __future__ import annotations

import math
import struct
import tempfile
import wave
from pathlib import Path

import numpy as np
from PIL import Image

from tracelet_core import ArtifactType, Experiment

SAMPLE_RATE = 16_000


def gradient_image(path: Path, seed: int, size: int = 64) -> Path:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    tint = rng.integers(0, 255, size=3)
    pixels = np.stack([(x * 4 + tint[0]) % 256, (y * 4 + tint[1]) % 256, np.full_like(x, tint[2])], axis=-1)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def tone(path: Path, frequency: float = 440.0, seconds: float = 0.5) -> Path:
    frames = b"".join(struct.pack("<h", int(12_000 * math.sin(2 * math.pi * frequency * i / SAMPLE_RATE)))
                      for i in range(int(SAMPLE_RATE * seconds)))
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(frames)
    return path


def clip(path: Path, frames: int = 12, size: int = 48) -> Path:
    """A moving dot as an animated GIF (a stand-in for a video: no codec needed)."""
    images = []
    for i in range(frames):
        canvas = np.zeros((size, size, 3), dtype=np.uint8)
        x = int((size - 8) * i / (frames - 1))
        canvas[size // 2 - 4: size // 2 + 4, x: x + 8] = (255, 200, 0)
        images.append(Image.fromarray(canvas))
    images[0].save(path, save_all=True, append_images=images[1:], duration=80, loop=0)
    return path


def loss_chart(path: Path, losses: list[float]) -> Path:
    points = " ".join(f"{20 + i * 40},{180 - loss * 150:.1f}" for i, loss in enumerate(losses))
    path.write_text(f'<svg xmlns="http://www.w3.org/2000/svg" width="400" height="200">'
                    f'<polyline points="{points}" fill="none" stroke="#2563eb" stroke-width="3"/></svg>')
    return path


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch, Experiment("multimedia_demo") as exp:
        work = Path(scratch)
        print(f"store: {exp.store.uri}")
        logged = []

        image = exp.create_artifact("media/sample_image", ArtifactType.IMAGE, "one generated image")
        logged.append(exp.log_artifact(image.add_file(gradient_image(work / "sample.png", 0), "sample.png")))

        batch = exp.create_artifact("media/prediction_batch", ArtifactType.IMAGE, "a batch of predictions")
        for i in range(4):
            batch.add_file(gradient_image(work / f"pred_{i}.png", i + 1), f"predictions/pred_{i}.png")
        batch.metadata["labels"] = ["cat", "dog", "cat", "bird"]
        logged.append(exp.log_artifact(batch))

        audio = exp.create_artifact("media/tone", ArtifactType.AUDIO, "a 440 Hz tone")
        audio.add_file(tone(work / "tone.wav"), "tone.wav").metadata["sample_rate"] = SAMPLE_RATE
        logged.append(exp.log_artifact(audio))

        video = exp.create_artifact("media/moving_dot", ArtifactType.VIDEO, "a short animated clip")
        logged.append(exp.log_artifact(video.add_file(clip(work / "moving_dot.gif"), "moving_dot.gif")))

        chart = exp.create_artifact("media/loss_curve", ArtifactType.VISUALIZATION, "training loss")
        losses = [1.0, 0.62, 0.41, 0.3, 0.24, 0.21, 0.2, 0.19, 0.185]
        chart.add_file(loss_chart(work / "loss.svg", losses), "loss.svg").add_object(losses, "losses", "json")
        logged.append(exp.log_artifact(chart))

        for results in logged:
            local = results["local"]
            print(f"  {local.version:<4} {local.uri}  ({local.size_bytes} bytes; routed to: "
                  f"{', '.join(k for k in results if k != 'local') or 'local store only'})")

        image_back = exp.get_artifact("media/sample_image")
        with Image.open(image_back.path("sample.png")) as reopened:  # verified against its digest first
            print(f"read back {image_back.ref}: {reopened.size[0]}x{reopened.size[1]} {reopened.mode}")
        with wave.open(str(exp.get_artifact("media/tone").path("tone.wav"))) as sound:
            seconds = sound.getnframes() / sound.getframerate()
            print(f"read back media/tone: {seconds:.2f} s at {sound.getframerate()} Hz")
        print("media in the store:", [a.ref for a in exp.store.list(name="media")])


if __name__ == "__main__":
    main()
