#!/usr/bin/env python
"""Benchmark tracelet's local store against named peers, in the same run, on the same data.

    python benchmarks/bench_store.py            # full run (a few minutes on 2 cores)
    python benchmarks/bench_store.py --quick    # smaller data, one repeat
    python benchmarks/bench_store.py --profile small   # cProfile one tracelet scenario

Peers: W&B Artifacts (``wandb``, offline mode), MLflow (SQLite tracking store with a local
artifact root), DVC (``dvc add`` through its Python API in a ``--no-scm`` repository) and a
plain ``shutil.copytree`` baseline (the floor: no hashing, no metadata, no durability).
Each peer is imported lazily; one that is not installed is listed as "not installed".

Scenarios (see ``benchmarks/README.md``):

1. ``small``    log many small files as one version
2. ``large``    log a few large files (random bytes)
3. ``relog``    log identical content again (tracelet returns the existing version)
4. ``delta``    log a new version where 1% of the small files changed
5. ``download`` materialise a version (the small one, then the large one) into a fresh folder
6. ``tiny``     many tiny versions in a row (``add_object(dict, "x")`` per version)

Every measurement is the median of N repetitions, each in fresh temporary folders, after an
untimed warm-up pass at a tiny size. Times come from ``time.perf_counter``; ratio = peer time
/ tracelet time (above 1: tracelet is faster). Nothing here asserts on wall-clock time.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # imported as benchmarks.bench_store (python -m benchmarks)
    from ._runner import machine_info
    from ._runner import quiet_environment as quiet_peers
except ImportError:  # run as a script: python benchmarks/bench_store.py
    from _runner import machine_info  # type: ignore[no-redef]
    from _runner import quiet_environment as quiet_peers  # type: ignore[no-redef]

MIB = 1024 * 1024


# ------------------------------------------------------------------------------------------
# sizes and data
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    small_files: int
    small_bytes: int
    large_files: int
    large_bytes: int
    changed_fraction: float
    tiny_versions: int
    repeats: int

    @property
    def changed_files(self) -> int:
        return max(1, round(self.small_files * self.changed_fraction))

    def describe(self) -> str:
        return (f"{self.small_files} x {self.small_bytes // 1024} KiB small files, "
                f"{self.large_files} x {self.large_bytes // MIB} MiB large files, "
                f"{self.changed_files} changed files ({self.changed_fraction:.0%}), "
                f"{self.tiny_versions} tiny versions, median of {self.repeats}")


FULL = Sizes(2000, 4096, 2, 256 * MIB, 0.01, 200, 3)
QUICK = Sizes(300, 4096, 2, 32 * MIB, 0.01, 50, 1)
WARMUP = Sizes(20, 4096, 1, 1 * MIB, 0.1, 5, 1)


@dataclass
class DataSet:
    """Source folders shared by every tool (read-only for them)."""

    root: Path
    sizes: Sizes
    small: Path = field(init=False)
    small_v2: Path = field(init=False)
    large: Path = field(init=False)

    def __post_init__(self) -> None:
        rng = random.Random(20240601)
        self.small = self.root / "small"
        self.small_v2 = self.root / "small_v2"
        self.large = self.root / "large"
        for i in range(self.sizes.small_files):
            path = self.small / f"part-{i // 100:03d}" / f"file-{i:05d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(rng.randbytes(self.sizes.small_bytes))
        shutil.copytree(self.small, self.small_v2)
        files = sorted(p for p in self.small_v2.rglob("*") if p.is_file())
        for path in rng.sample(files, self.sizes.changed_files):
            path.write_bytes(rng.randbytes(self.sizes.small_bytes))
        self.large.mkdir(parents=True)
        for i in range(self.sizes.large_files):
            with (self.large / f"shard-{i}.bin").open("wb") as handle:
                left = self.sizes.large_bytes
                while left:
                    chunk = min(left, 16 * MIB)
                    handle.write(rng.randbytes(chunk))
                    left -= chunk

    @property
    def small_total(self) -> int:
        return self.sizes.small_files * self.sizes.small_bytes

    @property
    def large_total(self) -> int:
        return self.sizes.large_files * self.sizes.large_bytes


class NotSupported(Exception):
    """The tool cannot do this operation in this setting (shown as n/a)."""


class ChainAborted(Exception):
    """A measured step failed; the steps after it in the same chain are skipped."""


def _error(exc: BaseException) -> str:
    first = str(exc).splitlines()[0][:120] if str(exc) else ""
    return f"error: {type(exc).__name__}: {first}"


# ------------------------------------------------------------------------------------------
# tools: one adapter per peer; setup/teardown and prepare are untimed, the rest is timed
# ------------------------------------------------------------------------------------------
class Tool:
    name = "?"
    dist: tuple[str, ...] = ()
    module = ""
    note = ""

    def available(self) -> str | None:
        """None if usable, else why not (checked without importing the package)."""
        if self.module and importlib.util.find_spec(self.module) is None:
            return "not installed"
        return None

    def version(self) -> str:
        for dist in self.dist:
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
        return "not installed"

    def setup(self, root: Path) -> None:
        raise NotImplementedError

    def teardown(self) -> None:
        pass

    def prepare(self, src: Path, name: str) -> Any:
        """Untimed work before a log (e.g. placing files in a DVC workspace)."""
        return src

    def log(self, prepared: Any, name: str, new_version: bool) -> Any:
        raise NotImplementedError

    def download(self, handle: Any, dest: Path) -> None:
        raise NotSupported

    def before_download(self, handle: Any, dest: Path) -> None:
        pass

    def log_tiny(self, i: int) -> None:
        raise NotImplementedError


def _tiny_payload(i: int) -> dict[str, Any]:
    return {"step": i, "loss": 1.0 / (i + 1), "lr": 0.001, "tags": ["bench", "tiny"]}


class TraceletTool(Tool):
    name = "tracelet"
    dist = ("tracelet-artifacts",)
    module = "tracelet_core"
    note = "hashes (BLAKE3) + copies each blob, fsyncs blobs and manifest, SQLite commit per version"

    def __init__(self) -> None:
        self.dedup_problems: list[str] = []
        self._before: str | None = None

    def setup(self, root: Path) -> None:
        from tracelet_core import ArtifactStore

        self.store = ArtifactStore.open(root / "store")

    def teardown(self) -> None:
        self.store.close()

    def prepare(self, src: Path, name: str) -> Any:
        self._before = self._latest(name)  # untimed: lets log() check dedup without a query
        return src

    def log(self, prepared: Path, name: str, new_version: bool) -> Any:
        from tracelet_core import TraceletArtifact

        logged = self.store.log(TraceletArtifact(name, "dataset").add_dir(prepared))
        if not new_version and self._before is not None and logged.version != self._before:
            self.dedup_problems.append(f"re-log of {name} made {logged.ref}, expected {name}:{self._before}")
        if new_version and logged.version == self._before:
            self.dedup_problems.append(f"new content of {name} returned the old {logged.ref}")
        return logged

    def _latest(self, name: str) -> str | None:
        from tracelet_core import ArtifactNotFoundError

        try:
            return str(self.store.get(name).version)
        except ArtifactNotFoundError:
            return None

    def download(self, handle: Any, dest: Path) -> None:
        handle.download(dest)

    def log_tiny(self, i: int) -> None:
        from tracelet_core import TraceletArtifact

        self.store.log(TraceletArtifact("tiny", "config").add_object(_tiny_payload(i), "x"))


class CopytreeTool(Tool):
    name = "copytree"
    note = "floor: shutil.copytree into a new folder per version; no hashing, dedup, fsync or catalog"

    def setup(self, root: Path) -> None:
        self.root = root / "copies"
        self.root.mkdir()
        self.counter = 0
        self.last: dict[str, Path] = {}

    def log(self, prepared: Path, name: str, new_version: bool) -> Any:
        if new_version or name not in self.last:
            self.counter += 1
            self.last[name] = self.root / f"{name}-{self.counter}"
        shutil.copytree(prepared, self.last[name], dirs_exist_ok=True)  # same call again on re-log
        return self.last[name]

    def download(self, handle: Path, dest: Path) -> None:
        shutil.copytree(handle, dest)

    def log_tiny(self, i: int) -> None:
        target = self.root / "tiny" / str(i)
        target.mkdir(parents=True)
        (target / "x.json").write_text(json.dumps(_tiny_payload(i)))


class MlflowTool(Tool):
    name = "mlflow"
    dist = ("mlflow", "mlflow-skinny")
    module = "mlflow"
    note = ("MlflowClient.log_artifacts into one run (SQLite tracking store, local artifact root); "
            "plain file copies, no hashing, no dedup, no fsync")

    def setup(self, root: Path) -> None:
        from mlflow.tracking import MlflowClient

        for logger in ("mlflow", "alembic"):  # mlflow resets its level when imported
            logging.getLogger(logger).setLevel(logging.WARNING)
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=self.uri)
        experiment = self.client.create_experiment("bench", artifact_location=(root / "mlartifacts").as_uri())
        self.run_id = self.client.create_run(experiment).info.run_id
        self.counter: dict[str, int] = {}

    def teardown(self) -> None:
        self.client.set_terminated(self.run_id)

    def log(self, prepared: Path, name: str, new_version: bool) -> Any:
        if new_version or name not in self.counter:
            self.counter[name] = self.counter.get(name, 0) + 1
        artifact_path = f"{name}/v{self.counter[name]}"  # a re-log repeats the same call
        self.client.log_artifacts(self.run_id, str(prepared), artifact_path)
        return artifact_path

    def download(self, handle: str, dest: Path) -> None:
        import mlflow.artifacts

        dest.mkdir(parents=True)
        mlflow.artifacts.download_artifacts(run_id=self.run_id, artifact_path=handle,
                                            dst_path=str(dest), tracking_uri=self.uri)

    def log_tiny(self, i: int) -> None:
        self.client.log_dict(self.run_id, _tiny_payload(i), f"tiny/{i}/x.json")


class WandbTool(Tool):
    name = "wandb"
    dist = ("wandb",)
    module = "wandb"
    note = ("offline mode: Artifact.add_dir hashes (MD5) and copies files into a local staging "
            "folder, log_artifact queues the record; nothing is uploaded, so this is a lower bound")

    def setup(self, root: Path) -> None:
        for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
            path = root / var.lower()
            path.mkdir()
            os.environ[var] = str(path)
        import wandb

        self.run = wandb.init(project="tracelet-bench", dir=os.environ["WANDB_DIR"])

    def teardown(self) -> None:
        self.run.finish()

    def log(self, prepared: Path, name: str, new_version: bool) -> Any:
        import wandb

        artifact = wandb.Artifact(name.replace("/", "-"), type="dataset")
        artifact.add_dir(str(prepared))
        self.run.log_artifact(artifact)
        return artifact

    def download(self, handle: Any, dest: Path) -> None:
        raise NotSupported("offline W&B cannot download an artifact")

    def log_tiny(self, i: int) -> None:
        import wandb

        artifact = wandb.Artifact("tiny", type="config")
        with artifact.new_file("x.json") as handle:
            json.dump(_tiny_payload(i), handle)
        self.run.log_artifact(artifact)


class DvcTool(Tool):
    name = "dvc"
    dist = ("dvc",)
    module = "dvc"
    note = ("dvc add via dvc.repo.Repo in a --no-scm repo (MD5 + copy into .dvc/cache, state DB "
            "skips unchanged files); data is placed in the workspace untimed; download = checkout")

    def setup(self, root: Path) -> None:
        os.environ["DVC_SITE_CACHE_DIR"] = str(root / "dvc-site")
        from dvc.repo import Repo

        logging.getLogger("dvc").setLevel(logging.WARNING)  # "Initialized DVC repository."

        self.dir = root / "dvcrepo"
        self.dir.mkdir()
        with contextlib.redirect_stdout(io.StringIO()):
            Repo.init(str(self.dir), no_scm=True)
        self.repo = Repo(str(self.dir))

    def teardown(self) -> None:
        self.repo.close()

    def prepare(self, src: Path, name: str) -> Any:
        """Make the workspace folder equal ``src``, rewriting only files whose bytes differ."""
        target = self.dir / name
        for path in src.rglob("*"):
            if not path.is_file():
                continue
            dest = target / path.relative_to(src)
            if dest.exists() and dest.stat().st_size == path.stat().st_size \
                    and dest.read_bytes() == path.read_bytes():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.unlink(missing_ok=True)  # the cache may have linked it read-only
            shutil.copyfile(path, dest)
        return target

    def log(self, prepared: Path, name: str, new_version: bool) -> Any:
        with contextlib.redirect_stdout(io.StringIO()):
            self.repo.add(str(prepared))
        return prepared

    def before_download(self, handle: Path, dest: Path) -> None:
        shutil.rmtree(handle)

    def download(self, handle: Path, dest: Path) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            self.repo.checkout(str(handle) + ".dvc")

    def log_tiny(self, i: int) -> None:
        path = self.dir / "tiny.json"
        path.write_text(json.dumps(_tiny_payload(i)))
        with contextlib.redirect_stdout(io.StringIO()):
            self.repo.add(str(path))


TOOLS: dict[str, type[Tool]] = {"tracelet": TraceletTool, "copytree": CopytreeTool,
                                "mlflow": MlflowTool, "wandb": WandbTool, "dvc": DvcTool}


# ------------------------------------------------------------------------------------------
# scenarios
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    unit: str  # "MiB/s" or "versions/s"


SCENARIOS = [
    Scenario("small", "1. log small files", "MiB/s"),
    Scenario("large", "2. log large files", "MiB/s"),
    Scenario("relog", "3. re-log identical", "MiB/s"),
    Scenario("delta", "4. new version, 1% changed", "MiB/s"),
    Scenario("download_small", "5a. download small version", "MiB/s"),
    Scenario("download_large", "5b. download large version", "MiB/s"),
    Scenario("tiny", "6. tiny versions", "versions/s"),
]


@dataclass
class Cell:
    times: list[float] = field(default_factory=list)
    status: str | None = None  # "n/a", "not installed", "error: ..."

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times and self.status is None else None


def prefault(scratch: Path, nbytes: int) -> None:
    """Write and delete ``nbytes`` of scratch data so the next writes reuse backed memory.

    On VMs whose free memory goes back to the host (free page reporting, ballooning), the
    first write into fresh page-cache pages is several times slower than later writes. Without
    this, whichever tool runs first after memory was returned pays for it.
    """
    if nbytes <= 0:
        return
    block = bytes(MIB)
    with scratch.open("wb") as handle:
        for _ in range(max(1, nbytes // MIB)):
            handle.write(block)
    scratch.unlink()  # never synced: its pages are freed without writeback


class Recorder:
    """Collects timings per (scenario, tool)."""

    def __init__(self, enabled: bool = True, scratch: Path | None = None) -> None:
        self.cells: dict[tuple[str, str], Cell] = {}
        self.enabled = enabled
        self.scratch = scratch  # None: no prefault
        self.reached: list[str] = []  # scenarios the current chain got to

    def cell(self, scenario: str, tool: str) -> Cell:
        return self.cells.setdefault((scenario, tool), Cell())

    def measure(self, scenario: str, tool: Tool, fn: Callable[[], Any], nbytes: int = 0) -> Any:
        """Time ``fn``; ``nbytes`` is about how much it writes (sizes the untimed prefault)."""
        cell = self.cell(scenario, tool.name)
        if cell.status is not None:
            if cell.status.startswith(("error", "skipped")):  # later steps may need its result
                raise ChainAborted(scenario)
            return None
        self.reached.append(scenario)
        if self.scratch is not None and self.enabled:
            prefault(self.scratch, max(64 * MIB, nbytes * 3 // 2))
        try:
            start = time.perf_counter()
            result = fn()
            elapsed = time.perf_counter() - start
        except NotSupported as exc:
            cell.status = f"n/a ({exc})" if str(exc) else "n/a"
            return None
        except Exception as exc:  # noqa: BLE001 - a failing peer is reported, never fatal
            cell.status = _error(exc)
            raise ChainAborted(scenario) from exc
        if self.enabled:
            cell.times.append(elapsed)
        return result

    def fail(self, scenarios: list[str], tool: str, message: str) -> None:
        for key in scenarios:
            cell = self.cell(key, tool)
            if cell.status is None:
                cell.status = message


@contextlib.contextmanager
def fresh_dir(base: Path, label: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.sync()  # write back other tools' dirty pages before the next measurement


def run_files_chain(tool: Tool, data: DataSet, rec: Recorder, base: Path) -> None:
    """small -> relog -> download_small -> delta, in one fresh store."""
    with fresh_dir(base, f"{tool.name}-files") as root:
        tool.setup(root)
        try:
            prepared = tool.prepare(data.small, "bench/small")
            handle = rec.measure("small", tool, lambda: tool.log(prepared, "bench/small", True),
                                 data.small_total)
            prepared = tool.prepare(data.small, "bench/small")
            rec.measure("relog", tool, lambda: tool.log(prepared, "bench/small", False),
                        data.small_total)
            dest = root / "download-small"
            tool.before_download(handle, dest)
            rec.measure("download_small", tool, lambda: tool.download(handle, dest), data.small_total)
            prepared = tool.prepare(data.small_v2, "bench/small")
            rec.measure("delta", tool, lambda: tool.log(prepared, "bench/small", True),
                        data.small_total)
        finally:
            tool.teardown()


def run_large_chain(tool: Tool, data: DataSet, rec: Recorder, base: Path) -> None:
    """large -> download_large, in one fresh store."""
    with fresh_dir(base, f"{tool.name}-large") as root:
        tool.setup(root)
        try:
            prepared = tool.prepare(data.large, "bench/large")
            handle = rec.measure("large", tool, lambda: tool.log(prepared, "bench/large", True),
                                 data.large_total)
            dest = root / "download-large"
            tool.before_download(handle, dest)
            rec.measure("download_large", tool, lambda: tool.download(handle, dest), data.large_total)
        finally:
            tool.teardown()


def run_tiny(tool: Tool, data: DataSet, rec: Recorder, base: Path) -> None:
    with fresh_dir(base, f"{tool.name}-tiny") as root:
        tool.setup(root)
        try:
            def many() -> None:
                for i in range(data.sizes.tiny_versions):
                    tool.log_tiny(i)
            rec.measure("tiny", tool, many)
        finally:
            tool.teardown()


CHAINS: list[tuple[Callable[[Tool, DataSet, Recorder, Path], None], list[str]]] = [
    (run_files_chain, ["small", "relog", "download_small", "delta"]),
    (run_large_chain, ["large", "download_large"]),
    (run_tiny, ["tiny"]),
]


def run_chain_safely(chain: Callable[..., None], keys: list[str], tool: Tool, data: DataSet,
                     rec: Recorder, base: Path) -> None:
    rec.reached = []
    try:
        chain(tool, data, rec, base)
    except ChainAborted as exc:
        rec.fail([k for k in keys if k not in rec.reached], tool.name, f"skipped: {exc} failed")
    except Exception as exc:  # noqa: BLE001 - setup/prepare/teardown of a peer failed
        rec.fail([k for k in keys if k not in rec.reached[:-1]], tool.name, _error(exc))


# ------------------------------------------------------------------------------------------
# environment and reporting
# ------------------------------------------------------------------------------------------
def quiet_environment() -> None:
    """The runner's quiet peers (and no ``TRACELET_*`` setting: the benchmark opens its own
    stores), plus DVC's."""
    quiet_peers()
    os.environ["DVC_NO_ANALYTICS"] = "1"
    for name in ("mlflow", "alembic", "wandb", "dvc", "dvc_data", "dvc_objects"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def versions_info(tools: list[Tool]) -> dict[str, str]:
    info = {tool.name: tool.version() for tool in tools if tool.dist}
    for dist in ("blake3", "SQLAlchemy", "fsspec"):
        try:
            info[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info[dist] = "not installed"
    return info


def build_rows(rec: Recorder, tools: list[Tool], data_sizes: Sizes) -> list[dict[str, str]]:
    small = data_sizes.small_files * data_sizes.small_bytes
    large = data_sizes.large_files * data_sizes.large_bytes
    payload = {"small": small, "large": large, "relog": small, "delta": small,
               "download_small": small, "download_large": large}
    rows = []
    for scenario in SCENARIOS:
        base = rec.cell(scenario.key, "tracelet").median
        for tool in tools:
            cell = rec.cell(scenario.key, tool.name)
            med = cell.median
            row = {"scenario": scenario.title, "tool": tool.name, "seconds": "", "spread": "",
                   "rate": "", "ratio": "", "status": cell.status or ""}
            if med is not None:
                row["seconds"] = f"{med:.3f}"
                if scenario.unit == "versions/s":
                    row["rate"] = f"{data_sizes.tiny_versions / med:,.0f} versions/s"
                else:
                    row["rate"] = f"{payload[scenario.key] / MIB / med:,.1f} MiB/s"
                if base:
                    row["ratio"] = f"{med / base:.2f}x"
                if len(cell.times) > 1:
                    row["spread"] = f"{min(cell.times):.3f}-{max(cell.times):.3f}"
            elif not cell.status:
                row["status"] = "not run"
            rows.append(row)
    return rows


def print_report(rows: list[dict[str, str]], header: dict[str, str], versions: dict[str, str],
                 notes: list[str], markdown: bool) -> None:
    columns = [("scenario", "Scenario"), ("tool", "Tool"), ("seconds", "Median s"),
               ("spread", "Min-max s"), ("rate", "Rate"), ("ratio", "vs tracelet"), ("status", "Note")]
    print()
    for key, value in header.items():
        print(f"{key:>12}: {value}")
    print(f"{'versions':>12}: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    use_rich = not markdown and importlib.util.find_spec("rich") is not None
    if use_rich:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="tracelet local store vs peers (ratio = peer time / tracelet time)")
        numeric = ("Median s", "Min-max s", "Rate", "vs tracelet")
        for _, label in columns:
            table.add_column(label, justify="right" if label in numeric else "left")
        last = None
        for row in rows:
            if last is not None and row["scenario"] != last:
                table.add_section()
            table.add_row(*[row[k] if k != "scenario" or row["scenario"] != last else ""
                            for k, _ in columns])
            last = row["scenario"]
        Console(width=max(120, shutil.get_terminal_size().columns)).print(table)
    else:
        print()
        print("| " + " | ".join(label for _, label in columns) + " |")
        print("|" + "|".join("---" for _ in columns) + "|")
        for row in rows:
            print("| " + " | ".join(row[k] for k, _ in columns) + " |")
    print()
    print("Notes:")
    for note in notes:
        print(f"  - {note}")


# ------------------------------------------------------------------------------------------
# profiling one tracelet scenario
# ------------------------------------------------------------------------------------------
def profile_tracelet(scenario: str, data: DataSet, base: Path, top: int) -> None:
    tool = TraceletTool()
    with fresh_dir(base, "profile") as root:
        tool.setup(root)
        try:
            steps: list[tuple[str, Callable[[], Any]]] = []
            if scenario in ("small", "relog", "delta", "download_small"):
                steps.append(("small", lambda: tool.log(data.small, "bench/small", True)))
                if scenario == "relog":
                    steps.append(("relog", lambda: tool.log(data.small, "bench/small", False)))
                if scenario == "delta":
                    steps.append(("delta", lambda: tool.log(data.small_v2, "bench/small", True)))
                if scenario == "download_small":
                    steps.append(("download_small",
                                  lambda: tool.store.get("bench/small").download(root / "dl")))
            elif scenario in ("large", "download_large"):
                steps.append(("large", lambda: tool.log(data.large, "bench/large", True)))
                if scenario == "download_large":
                    steps.append(("download_large",
                                  lambda: tool.store.get("bench/large").download(root / "dl")))
            else:
                def many() -> None:
                    for i in range(data.sizes.tiny_versions):
                        tool.log_tiny(i)
                steps.append(("tiny", many))
            for label, fn in steps:
                if label != scenario:
                    fn()
                    continue
                written = data.large_total if "large" in scenario else data.small_total
                prefault(base / "prefault.tmp", max(64 * MIB, written * 3 // 2))
                profiler = cProfile.Profile()
                start = time.perf_counter()
                profiler.enable()
                fn()
                profiler.disable()
                elapsed = time.perf_counter() - start
                print(f"\ncProfile of tracelet scenario {scenario!r}: {elapsed:.3f} s under the profiler")
                for order in ("tottime", "cumulative"):
                    print(f"\n-- top {top} by {order} --")
                    stream = io.StringIO()
                    pstats.Stats(profiler, stream=stream).strip_dirs().sort_stats(order).print_stats(top)
                    text = stream.getvalue()
                    print(text[text.find("   ncalls"):].rstrip())
        finally:
            tool.teardown()


# ------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller data and one repeat")
    parser.add_argument("--repeats", type=int, help="repetitions per measurement (median)")
    parser.add_argument("--tools", default=",".join(TOOLS),
                        help=f"comma-separated subset of {','.join(TOOLS)} (tracelet is always run)")
    parser.add_argument("--tmp", type=Path, default=None, help="where temporary folders go")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--json", type=Path, default=None, help="also write results as JSON here")
    parser.add_argument("--profile", choices=[s.key for s in SCENARIOS], default=None,
                        help="cProfile one tracelet scenario instead of benchmarking")
    parser.add_argument("--top", type=int, default=15, help="rows shown by --profile")
    parser.add_argument("--no-prefault", action="store_true",
                        help="skip the untimed scratch write before each measurement")
    args = parser.parse_args(argv)

    quiet_environment()
    sizes = QUICK if args.quick else FULL
    if args.repeats:
        sizes = Sizes(**{**sizes.__dict__, "repeats": args.repeats})
    base_parent = args.tmp or Path(tempfile.gettempdir())
    base_parent.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="tracelet-bench-", dir=base_parent))
    try:
        return _run(args, sizes, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run(args: argparse.Namespace, sizes: Sizes, base: Path) -> int:
    wanted = ["tracelet"] + [t for t in args.tools.split(",") if t and t != "tracelet"]
    unknown = [t for t in wanted if t not in TOOLS]
    if unknown:
        print(f"unknown tools: {', '.join(unknown)}; known: {', '.join(TOOLS)}", file=sys.stderr)
        return 2
    tools = [TOOLS[t]() for t in wanted]

    print(f"generating data: {sizes.describe()}", flush=True)
    start = time.perf_counter()
    data = DataSet(base / "data", sizes)
    warm_data = DataSet(base / "warm", WARMUP)
    os.sync()  # the generated data must not be written back during the first measurements
    print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)

    if args.profile:
        profile_tracelet(args.profile, data, base, args.top)
        return 0

    rec = Recorder(scratch=None if args.no_prefault else base / "prefault.tmp")
    load_before = _loadavg()
    warm = Recorder(enabled=False)
    active: list[Tool] = []
    for tool in tools:
        reason = tool.available()
        if reason:
            rec.fail([s.key for s in SCENARIOS], tool.name, reason)
            print(f"{tool.name}: {reason}, skipped", flush=True)
            continue
        active.append(tool)
        print(f"warming up {tool.name} ...", flush=True)
        for chain, keys in CHAINS:
            run_chain_safely(chain, keys, tool, warm_data, warm, base)
        for (key, name), cell in warm.cells.items():  # a peer broken in warm-up stays broken
            if name == tool.name and cell.status and cell.status.startswith("error"):
                rec.fail([key], name, cell.status)

    bench_start = time.perf_counter()
    for rep in range(sizes.repeats):
        for chain, keys in CHAINS:
            # interleave tools and rotate who goes first, so drift and ordering hit all alike
            order = active[rep % len(active):] + active[:rep % len(active)] if active else []
            for tool in order:
                print(f"repeat {rep + 1}/{sizes.repeats}: {chain.__name__[4:]} with {tool.name}", flush=True)
                run_chain_safely(chain, keys, tool, data, rec, base)
    total = time.perf_counter() - bench_start

    header = machine_info(base)
    header["data"] = sizes.describe() + (" (--quick)" if args.quick else "")
    header["bench time"] = f"{total:.0f} s for the measured repetitions (+ warm-up, data, prefault)"
    header["load average"] = f"{load_before} before, {_loadavg()} after (1/5/15 min)"
    versions = versions_info(tools)
    notes = [f"{tool.name}: {tool.note}" for tool in tools if tool.note and tool in active]
    notes.append("every log measurement includes building the artifact (walking the folder); "
                 "run/experiment/repository creation is untimed; downloads go to a fresh folder")
    notes.append("relog and delta rates are effective rates: the whole version's size / time")
    tracelet = next(t for t in tools if isinstance(t, TraceletTool))
    if getattr(tracelet, "dedup_problems", None):
        notes.append("TRACELET DEDUP PROBLEM: " + "; ".join(tracelet.dedup_problems[:3]))
    rows = build_rows(rec, tools, sizes)
    print_report(rows, header, versions, notes, args.markdown)
    if args.json:
        args.json.write_text(json.dumps({
            "machine": header, "versions": versions, "sizes": sizes.__dict__, "notes": notes,
            "rows": rows,
            "raw": {f"{s}/{t}": {"times": c.times, "status": c.status} for (s, t), c in rec.cells.items()},
        }, indent=2))
    tracelet_errors = [c.status for (s, t), c in rec.cells.items()
                       if t == "tracelet" and c.status and c.status.startswith("error")]
    if tracelet_errors:
        print("tracelet itself failed: " + "; ".join(dict.fromkeys(tracelet_errors)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
