"""Logging and reading bytes: one large file, its re-log, many small files, tiny versions,
peak memory while logging a very large file, and a download; tracelet in both durability
modes against ``cp``, MLflow and W&B (offline; full runs only: its service takes seconds to
start).

    python -m benchmarks --only log_,relog,small,tiny,rss,download

Sizes (``--quick`` in brackets): 1 GiB [32 MiB] file, 1,000 [100] x 4 KiB files, 200 [20]
tiny versions, 4 GiB [64 MiB] file for peak memory (smaller when the temp disk is short:
the row says so). The large file is read once before timing (page cache hot) and aged by a
minute (an unchanged file, not one written this instant).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from ._peers import DURABILITY_MODES, MlflowRun, WandbRun, cp, open_tracelet, remove, tracelet_label
from ._runner import (
    GIB,
    MIB,
    Case,
    Contender,
    Sample,
    Skip,
    age,
    bytes_written,
    installed,
    scratch,
    timed,
    tree_bytes,
    write_random_file,
)


class Data:
    """Source data, made once per run on first use."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.big_bytes = 32 * MIB if quick else GIB
        self.small_count = 100 if quick else 1000
        self.tiny_count = 20 if quick else 200
        self.huge_bytes = 64 * MIB if quick else 4 * GIB
        self._root: Path | None = None

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = scratch("data")
        return self._root

    def big(self) -> Path:
        path = self.root / "big" / "big.bin"
        if not path.exists():
            write_random_file(path, self.big_bytes)
            age(path)
        with path.open("rb") as handle:  # page cache hot
            while handle.read(16 * MIB):
                pass
        return path

    def small_dir(self) -> Path:
        folder = self.root / "small"
        if not folder.exists():
            import random

            rng = random.Random(7)
            for i in range(self.small_count):
                path = folder / f"part-{i // 100:02d}" / f"file-{i:05d}.bin"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(rng.randbytes(4096))
                age(path)
        return folder


def _tiny(i: int) -> dict[str, Any]:
    return {"step": i, "loss": 1.0 / (i + 1), "lr": 0.001, "tags": ["bench", "tiny"]}


class _Runs:
    """Numbered artifact paths, so a peer's repetitions never collide."""

    def __init__(self) -> None:
        self.n = 0

    def next(self) -> str:
        self.n += 1
        return f"r{self.n}"


def log_big_case(data: Data) -> Case:
    state: dict[str, Any] = {}
    runs = _Runs()

    def setup() -> None:
        state["src"] = data.big()
        state["mlflow"] = MlflowRun() if installed("mlflow") else None
        state["wandb"] = WandbRun() if installed("wandb") and not data.quick else None

    def teardown() -> None:
        for key in ("mlflow", "wandb"):
            if state.get(key) is not None:
                state[key].close()

    def tracelet(mode: str) -> Contender:
        def run() -> float:
            from tracelet_core import TraceletArtifact

            root = scratch("store")
            store = open_tracelet(root, mode)
            try:
                return timed(lambda: store.log(TraceletArtifact("big", "dataset").add_file(state["src"])))
            finally:
                store.close()
                remove(root)
        return Contender(tracelet_label(mode), run, tracelet=True)

    def cp_run(sync: bool) -> float:
        dest = scratch("cp") / "big.bin"
        try:
            def copy() -> None:
                cp(state["src"], dest)
                if sync:
                    import os

                    os.sync()
            return timed(copy)
        finally:
            remove(dest.parent)

    def mlflow() -> float:
        if state["mlflow"] is None:
            raise Skip("mlflow is not installed")
        path = runs.next()
        try:
            return timed(lambda: state["mlflow"].log_file(state["src"], path))
        finally:
            state["mlflow"].forget(path)

    def wandb() -> float:
        if state["wandb"] is None:
            raise Skip("wandb is not installed" if not data.quick else "full runs only")
        return timed(lambda: state["wandb"].log_file(state["src"], f"big-{runs.next()}"))

    size = f"{data.big_bytes // MIB:,} MiB" if data.big_bytes < GIB else f"{data.big_bytes // GIB} GiB"
    return Case(
        key="log_big", title=f"log {size}, page cache hot",
        contenders=[tracelet("none"), tracelet("full"), Contender("cp", lambda: cp_run(False)),
                    Contender("cp + sync", lambda: cp_run(True)), Contender("MLflow log_artifact", mlflow),
                    Contender("W&B offline", wandb)],
        target="none <= 1.5x cp, <= 1.1x MLflow; full <= 1.2x cp + sync",
        setup=setup, teardown=teardown, sync_between=True, prefault_bytes=data.big_bytes)


def relog_big_case(data: Data) -> Case:
    state: dict[str, Any] = {}

    def setup() -> None:
        from tracelet_core import TraceletArtifact

        state["src"] = data.big()
        for mode in DURABILITY_MODES:
            root = scratch(f"relog-{mode}")
            store = open_tracelet(root, mode)
            first = store.log(TraceletArtifact("big", "dataset").add_file(state["src"]))
            state[mode] = (root, store, first.ref)
        if installed("mlflow"):
            state["mlflow"] = MlflowRun()
            state["mlflow"].log_file(state["src"], "big")
        if installed("wandb") and not data.quick:
            state["wandb"] = WandbRun()
            state["wandb"].log_file(state["src"], "big")

    def teardown() -> None:
        for mode in DURABILITY_MODES:
            if mode in state:
                root, store, _ = state[mode]
                store.close()
                remove(root)
        for key in ("mlflow", "wandb"):
            if key in state:
                state[key].close()

    def tracelet(mode: str) -> Contender:
        def run() -> Sample:
            from tracelet_core import TraceletArtifact

            root, store, ref = state[mode]
            stored_before, written_before = tree_bytes(root), bytes_written()
            seconds = 0.0

            def relog() -> None:
                logged = store.log(TraceletArtifact("big", "dataset").add_file(state["src"]))
                if logged.ref != ref:
                    raise RuntimeError(f"re-log made {logged.ref}, expected {ref}")
            seconds = timed(relog)
            written = bytes_written() - written_before
            grown = tree_bytes(root) - stored_before
            return Sample(seconds, f"{written:,} bytes written, store grew {grown:,} bytes")
        return Contender(tracelet_label(mode), run, tracelet=True)

    def mlflow() -> float:
        if "mlflow" not in state:
            raise Skip("mlflow is not installed")
        return timed(lambda: state["mlflow"].log_file(state["src"], "big"))  # rewrites the bytes

    def wandb() -> float:
        if "wandb" not in state:
            raise Skip("wandb is not installed" if not data.quick else "full runs only")
        return timed(lambda: state["wandb"].log_file(state["src"], "big"))

    return Case(
        key="relog_big", title=f"re-log the unchanged {data.big_bytes // MIB:,} MiB file",
        contenders=[tracelet("none"), tracelet("full"), Contender("MLflow log_artifact", mlflow),
                    Contender("W&B offline", wandb)],
        unit="ms", target="<= 5 ms, 0 bytes written", setup=setup, teardown=teardown, sync_between=True)


def small_files_case(data: Data) -> Case:
    state: dict[str, Any] = {}
    runs = _Runs()

    def setup() -> None:
        state["src"] = data.small_dir()
        state["mlflow"] = MlflowRun() if installed("mlflow") else None

    def teardown() -> None:
        if state.get("mlflow") is not None:
            state["mlflow"].close()

    def tracelet(mode: str) -> Contender:
        def run() -> float:
            from tracelet_core import TraceletArtifact

            root = scratch("store")
            store = open_tracelet(root, mode)
            try:
                return timed(lambda: store.log(TraceletArtifact("small", "dataset").add_dir(state["src"])))
            finally:
                store.close()
                remove(root)
        return Contender(tracelet_label(mode), run, tracelet=True)

    def mlflow() -> float:
        if state["mlflow"] is None:
            raise Skip("mlflow is not installed")
        path = runs.next()
        try:
            return timed(lambda: state["mlflow"].log_dir(state["src"], path))
        finally:
            state["mlflow"].forget(path)

    return Case(
        key="small_files", title=f"{data.small_count:,} x 4 KiB as one version",
        contenders=[tracelet("none"), tracelet("full"), Contender("MLflow log_artifacts", mlflow)],
        target="none <= 1.0x MLflow, full <= 1.5x MLflow", setup=setup, teardown=teardown,
        sync_between=True, prefault_bytes=64 * MIB)


def tiny_versions_case(data: Data) -> Case:
    state: dict[str, Any] = {}
    runs = _Runs()

    def setup() -> None:
        state["mlflow"] = MlflowRun() if installed("mlflow") else None

    def teardown() -> None:
        if state.get("mlflow") is not None:
            state["mlflow"].close()

    def tracelet(mode: str) -> Contender:
        def run() -> float:
            from tracelet_core import TraceletArtifact

            root = scratch("store")
            store = open_tracelet(root, mode)
            try:
                def many() -> None:
                    for i in range(data.tiny_count):
                        store.log(TraceletArtifact("tiny", "config").add_object(_tiny(i), "x"))
                return timed(many)
            finally:
                store.close()
                remove(root)
        return Contender(tracelet_label(mode), run, tracelet=True)

    def mlflow() -> float:
        if state["mlflow"] is None:
            raise Skip("mlflow is not installed")
        path = runs.next()

        def many() -> None:
            for i in range(data.tiny_count):
                state["mlflow"].log_dict(_tiny(i), f"{path}/tiny/{i}/x.json")
        try:
            return timed(many)
        finally:
            state["mlflow"].forget(path)

    return Case(
        key="tiny_versions", title=f"{data.tiny_count} tiny versions",
        contenders=[tracelet("none"), tracelet("full"), Contender("MLflow log_dict", mlflow)],
        target="none <= 1.0x MLflow log_dict, full <= 1.5x", setup=setup, teardown=teardown,
        sync_between=True, per_item=data.tiny_count)


_PEAK_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    def hwm_mib():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    tool, src, root, mode = sys.argv[1:5]
    if tool == "tracelet":
        from tracelet_core import ArtifactStore, TraceletArtifact, TraceletSettings
        store = ArtifactStore.open(root, settings=TraceletSettings.load(durability=mode))
        artifact = TraceletArtifact("huge", "dataset").add_file(src)
        before = hwm_mib()
        store.log(artifact)
    else:
        import logging
        from mlflow.tracking import MlflowClient
        logging.getLogger("alembic").setLevel(logging.WARNING)
        client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
        experiment = client.create_experiment("bench", artifact_location=Path(root, "a").as_uri())
        run_id = client.create_run(experiment).info.run_id
        before = hwm_mib()
        client.log_artifact(run_id, src)
    print(json.dumps({"before": before, "after": hwm_mib()}))
""")


def peak_memory_case(data: Data) -> Case:
    state: dict[str, Any] = {}

    def setup() -> None:
        size = data.huge_bytes
        free = shutil.disk_usage(data.root).free
        while size > 64 * MIB and free < 3 * size + GIB:  # the source, a copy, headroom
            size //= 2
        state["size"] = size
        state["src"] = write_random_file(data.root / "huge" / "huge.bin", size, seed=3)
        age(state["src"])

    def measure(tool: str, mode: str) -> Sample:
        root = scratch("peak")
        try:
            out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, tool, str(state["src"]), str(root), mode],
                                 check=True, capture_output=True, text=True)
            values = json.loads(out.stdout.strip().splitlines()[-1])
            return Sample(values["after"] - values["before"], f"VmHWM {values['before']:.0f} -> "
                          f"{values['after']:.0f} MiB, file {state['size'] // MIB:,} MiB")
        finally:
            remove(root)

    def mlflow() -> Sample:
        if not installed("mlflow"):
            raise Skip("mlflow is not installed")
        if data.quick:
            raise Skip("full runs only (starting MLflow in a subprocess takes seconds)")
        return measure("mlflow", "")

    def teardown() -> None:
        if "src" in state:
            remove(state["src"])

    size = f"{data.huge_bytes // MIB:,} MiB" if data.huge_bytes < GIB else f"{data.huge_bytes // GIB} GiB"
    return Case(
        key="peak_rss", title=f"peak RSS (VmHWM) growth while logging {size}",
        contenders=[Contender(tracelet_label(m), lambda m=m: measure("tracelet", m), tracelet=True)  # type: ignore[misc]
                    for m in DURABILITY_MODES] + [Contender("MLflow log_artifact", mlflow)],
        unit="MiB", target="<= 64 MiB above before the log", setup=setup, teardown=teardown,
        repeats=1 if data.quick else 2, sync_between=True)


def download_case(data: Data) -> Case:
    state: dict[str, Any] = {}

    def setup() -> None:
        from tracelet_core import TraceletArtifact

        state["src"] = data.big()
        state["root"] = scratch("download-store")
        state["store"] = open_tracelet(state["root"], "full")
        state["logged"] = state["store"].log(TraceletArtifact("big", "dataset").add_file(state["src"]))
        if installed("mlflow"):
            state["mlflow"] = MlflowRun()
            state["mlflow"].log_file(state["src"], "big")

    def teardown() -> None:
        if "store" in state:
            state["store"].close()
            remove(state["root"])
        if "mlflow" in state:
            state["mlflow"].close()

    def into_fresh(fn: Any) -> float:
        dest = scratch("dest")
        try:
            return timed(lambda: fn(dest))
        finally:
            remove(dest)

    def mlflow() -> float:
        if "mlflow" not in state:
            raise Skip("mlflow is not installed")
        return into_fresh(lambda dest: state["mlflow"].download("big", dest))

    return Case(
        key="download_big", title=f"download {data.big_bytes // MIB:,} MiB (verified)",
        contenders=[Contender("tracelet", lambda: into_fresh(lambda dest: state["logged"].download(dest)),
                              tracelet=True),
                    Contender("cp", lambda: into_fresh(lambda dest: cp(state["src"], dest / "big.bin"))),
                    Contender("MLflow download_artifacts", mlflow)],
        target="<= 1.2x cp", setup=setup, teardown=teardown, sync_between=True,
        prefault_bytes=data.big_bytes)


def cases(quick: bool) -> list[Case]:
    if not installed("tracelet_core"):
        raise Skip("tracelet_core is not importable")
    data = Data(quick)
    return [log_big_case(data), relog_big_case(data), small_files_case(data), tiny_versions_case(data),
            peak_memory_case(data), download_case(data)]
