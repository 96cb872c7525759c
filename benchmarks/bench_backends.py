#!/usr/bin/env python
"""Delivery to each tracker through tracelet vs the tracker's own call for the same files.

    python benchmarks/bench_backends.py            # 64 KiB and 16 MiB, 5 repeats
    python benchmarks/bench_backends.py --quick    # 64 KiB and 10 MiB, 3 repeats
    python benchmarks/bench_backends.py --trackers mlflow,aim --json out.json

Per tracker and size, the two calls run interleaved (tracelet, native, tracelet, native,
...), each into the same open tracker run, each with new content so nothing is deduplicated:

* tracelet: ``backend.log(version)`` for a version committed (untimed) just before; what an
  experiment pays per delivery after its local commit (staging, tags, manifest, native
  extras such as registering a model).
* native: what a user of that tracker would call for the same file: MLflow
  ``client.log_artifact(run_id, path)``, W&B offline ``run.log_artifact(Artifact + add_file)``,
  Aim ``run.log_artifact(path, block=True)``, ClearML offline
  ``task.upload_artifact(name, path, wait_on_upload=True)``.

Printed: median and min-max of each, the ratio tracelet / native and the overhead
(median difference) in milliseconds. ``measure(quick)`` returns those rows as dicts;
``cases(quick)`` gives ``python -m benchmarks`` the same measurements as its own cases (full
runs only: each tracker's SDK takes seconds to start). Nothing here asserts on time. Every tracker writes under one
temporary folder (W&B offline, ClearML offline, MLflow on SQLite, Aim in a local repo);
no network is used.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

KIB = 1024
MIB = 1024 * KIB
TRACKERS = ("mlflow", "wandb", "aim", "clearml")
CLEARML_CONF = """
api { api_server: "http://127.0.0.1:9"
      web_server: "http://127.0.0.1:9"
      files_server: "http://127.0.0.1:9" }
sdk { development { report_use_subprocess: false } }
"""


def _offline_env(root: Path) -> None:
    """Every tracker offline and inside ``root`` (set before any SDK is imported)."""
    (root / "clearml.conf").write_text(CLEARML_CONF)
    for name in ("DIR", "DATA_DIR", "CACHE_DIR", "CONFIG_DIR"):
        (root / f"wandb-{name.lower()}").mkdir(parents=True, exist_ok=True)
        os.environ[f"WANDB_{name}"] = str(root / f"wandb-{name.lower()}")
    os.environ.update({
        "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_BASE_URL": "http://127.0.0.1:9",
        "CLEARML_OFFLINE_MODE": "1", "CLEARML_CONFIG_FILE": str(root / "clearml.conf"),
        "CLEARML_CACHE_DIR": str(root / "clearml-cache"), "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "TRACELET_BACKEND_TIMEOUT": "600",
    })


class Bench:
    """One tracker, open for a run: ``tracelet(path)`` and ``native(path)`` deliver a file."""

    def __init__(self, tracker: str, root: Path) -> None:
        from tracelet_core import ArtifactStore
        from tracelet_core._backends import resolve_backend

        self.tracker = tracker
        self.root = root / tracker
        self.root.mkdir(parents=True)
        self.store = ArtifactStore.open(self.root / "store")
        config: dict[str, Any] = {
            "mlflow": {"tracking_uri": f"sqlite:///{self.root / 'mlflow.db'}",
                       "artifact_location": (self.root / "mlartifacts").as_uri()},
            "wandb": {"project": "bench", "dir": str(self.root)},
            "aim": {"repo": str(self.root / "aim"), "artifacts_uri": (self.root / "aim-artifacts").as_uri()},
            "clearml": {"project": "bench"},
        }[tracker]
        self.backend = resolve_backend(tracker, config)
        self.backend.start("bench", "bench-run")
        self.count = 0
        self._native = self._native_call()

    def tracelet(self, path: Path) -> float:
        from tracelet_core import TraceletArtifact

        self.count += 1
        logged = self.store.log(TraceletArtifact(f"bench/{self.tracker}", "dataset").add_file(path, path.name))
        began = time.perf_counter()
        result = self.backend.log(logged)
        elapsed = time.perf_counter() - began
        if not result.ok:
            raise RuntimeError(f"{self.tracker}: {result.error}")
        return elapsed

    def native(self, path: Path) -> float:
        self.count += 1
        began = time.perf_counter()
        self._native(path, self.count)
        return time.perf_counter() - began

    def _native_call(self) -> Callable[[Path, int], None]:
        backend: Any = self.backend
        if self.tracker == "mlflow":
            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri=backend.tracking_uri)
            experiment = client.create_experiment("native", artifact_location=(self.root / "native").as_uri())
            run_id = client.create_run(experiment).info.run_id
            return lambda path, n: client.log_artifact(run_id, str(path), f"native/{n}")
        if self.tracker == "wandb":
            import wandb

            run = wandb.init(project="bench", dir=str(self.root), reinit="create_new",
                             settings=wandb.Settings(console="off", disable_git=True, save_code=False))
            self.finish = run.finish

            def wandb_native(path: Path, n: int) -> None:
                artifact = wandb.Artifact(f"native-{n}", type="dataset")
                artifact.add_file(str(path))
                run.log_artifact(artifact)

            return wandb_native
        if self.tracker == "aim":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from aim import Run

            run = Run(repo=backend.repo)
            run.set_artifacts_uri((self.root / "aim-native").as_uri())
            self.finish = run.close
            return lambda path, n: run.log_artifact(str(path), name=f"native/{n}/{path.name}", block=True)
        # clearml: offline ClearML has one task per process; the native calls use the task the
        # backend opened (opened by a first, untimed delivery)
        return lambda path, n: backend._task.upload_artifact(f"native-{n}", artifact_object=str(path),
                                                              wait_on_upload=True)

    def close(self) -> None:
        finish = getattr(self, "finish", None)
        if finish is not None:
            finish()
        self.backend.stop()
        self.store.close()


def _file(folder: Path, size: int, seed: int) -> Path:
    path = folder / f"data-{seed}.bin"
    path.write_bytes(os.urandom(size))
    return path


@contextmanager
def _quiet() -> Iterator[None]:
    import logging

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def _row(tracker: str, size: int, tracelet: list[float], native: list[float]) -> dict[str, Any]:
    t_median, n_median = statistics.median(tracelet), statistics.median(native)
    label = f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB"
    return {
        "name": f"deliver {tracker} {label}", "tracker": tracker, "size_bytes": size,
        "tracelet_median_s": t_median, "tracelet_min_s": min(tracelet), "tracelet_max_s": max(tracelet),
        "native_median_s": n_median, "native_min_s": min(native), "native_max_s": max(native),
        "ratio": t_median / n_median if n_median else float("inf"),
        "overhead_ms": (t_median - n_median) * 1000, "repeats": len(tracelet),
    }


def measure(quick: bool, trackers: tuple[str, ...] = TRACKERS) -> list[dict[str, Any]]:
    """One row per tracker and size: tracelet's delivery vs the native call (see module doc)."""
    sizes = (64 * KIB, 10 * MIB) if quick else (64 * KIB, 16 * MIB)
    repeats = 3 if quick else 5
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tracelet-bench-backends-") as tmp:
        root = Path(tmp)
        _offline_env(root)
        for tracker in trackers:
            with _quiet():
                try:
                    bench = Bench(tracker, root)
                except ImportError as exc:
                    rows.append({"name": f"deliver {tracker}", "tracker": tracker, "error": f"not installed: {exc}"})
                    continue
                try:
                    data = root / f"data-{tracker}"
                    data.mkdir()
                    bench.tracelet(_file(data, KIB, 0))  # untimed warm-up: opens runs, imports lazily
                    bench.native(_file(data, KIB, 1))
                    for size in sizes:
                        timings: dict[str, list[float]] = {"tracelet": [], "native": []}
                        for repeat in range(repeats):
                            timings["tracelet"].append(bench.tracelet(_file(data, size, 10 + 2 * repeat)))
                            timings["native"].append(bench.native(_file(data, size, 11 + 2 * repeat)))
                        rows.append(_row(tracker, size, timings["tracelet"], timings["native"]))
                finally:
                    bench.close()
    return rows


def cases(quick: bool) -> list[Any]:
    """The delivery rows as ``benchmarks`` cases: per tracker and size, tracelet's delivery
    against the tracker's own call, interleaved by the runner."""
    from benchmarks._runner import Case, Contender, installed, scratch

    if quick:  # full runs only: each tracker's SDK takes seconds to start (the quick rows run alone:
        return []  # python benchmarks/bench_backends.py --quick)
    found: list[Any] = []
    for tracker in TRACKERS:
        if not installed(tracker):
            continue
        state: dict[str, Any] = {}

        def setup(tracker: str = tracker, state: dict[str, Any] = state) -> None:
            if "bench" in state:  # the tracker's first case opened it
                return
            root = scratch(f"deliver-{tracker}")
            _offline_env(root)
            with _quiet():
                bench = Bench(tracker, root)
                state.update(bench=bench, data=root / "data", seed=100)
                state["data"].mkdir()
                bench.tracelet(_file(state["data"], KIB, 0))  # untimed warm-up: runs opened, SDK imported
                bench.native(_file(state["data"], KIB, 1))

        def teardown(state: dict[str, Any] = state) -> None:
            if "bench" in state:
                with _quiet():
                    state.pop("bench").close()

        for size in (64 * KIB, 16 * MIB):
            def run(kind: str, size: int = size, state: dict[str, Any] = state) -> float:
                state["seed"] += 1
                path = _file(state["data"], size, state["seed"])
                with _quiet():
                    return float(getattr(state["bench"], kind)(path))

            label = f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB"
            found.append(Case(
                key=f"deliver_{tracker}_{label.replace(' ', '').lower()}",
                title=f"deliver {label} to {tracker}",
                contenders=[Contender("tracelet delivery", lambda run=run: run("tracelet"), tracelet=True),
                            Contender(f"{tracker} native call", lambda run=run: run("native"))],
                target="<= 1.5x native from 10 MB; < 30 ms overhead for small files",
                setup=setup,
                teardown=teardown if size == 16 * MIB else None, repeats=5))
    return found


def _print(rows: list[dict[str, Any]]) -> None:
    print(f"{'case':<24} {'tracelet median (min-max) s':>30} {'native median (min-max) s':>30} "
          f"{'ratio':>6} {'overhead ms':>12}")
    for row in rows:
        if "error" in row:
            print(f"{row['name']:<24} {row['error']}")
            continue
        tracelet = f"{row['tracelet_median_s']:.4f} ({row['tracelet_min_s']:.4f}-{row['tracelet_max_s']:.4f})"
        native = f"{row['native_median_s']:.4f} ({row['native_min_s']:.4f}-{row['native_max_s']:.4f})"
        print(f"{row['name']:<24} {tracelet:>30} {native:>30} {row['ratio']:>6.2f} {row['overhead_ms']:>12.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 MiB instead of 16 MiB, 3 repeats")
    parser.add_argument("--trackers", default=",".join(TRACKERS), help="a subset of " + ",".join(TRACKERS))
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    trackers = tuple(t for t in args.trackers.split(",") if t)
    rows = measure(args.quick, trackers)
    _print(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
