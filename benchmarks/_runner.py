"""The one benchmark command: every row of the performance table, measured in one run.

    python -m benchmarks                 # full sizes (1 GiB files, 100,000 versions, ...)
    python -m benchmarks --quick         # small sizes, under a minute, no thresholds
    python -m benchmarks --only log,get  # cases whose key contains one of these words
    python -m benchmarks --list          # the cases, without running them

How a row is measured: a ``Case`` has contenders (tracelet in each durability mode, and its
peers: ``cp``, MLflow, W&B, raw SQL, plain Dagster/Prefect). The runner repeats the case
``repeats`` times and, in every repetition, runs each contender once, rotating who goes
first, so drift on a shared machine hits all of them alike. The table shows each
contender's median and min-max, and the ratio tracelet / contender (below 1: tracelet is
faster). Nothing here asserts on time.

Adding rows (the hook): any module ``benchmarks/bench_*.py`` that defines
``cases(quick: bool) -> list[Case]`` is picked up. ``cases`` must be cheap (build data in
``Case.setup``, which runs untimed before the first repetition) and may raise ``Skip`` (or
return no cases) when what it needs is not installed. Contenders return seconds (or a
``Sample`` with a note, or another unit the case names) and do their own untimed setup.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib
import importlib.metadata
import json
import os
import pkgutil
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
GIB = 1024 * MIB

#: How a unit is shown: (scale from the value a contender returns, suffix).
UNITS = {"s": (1.0, "s"), "ms": (1e3, "ms"), "us": (1e6, "us"), "MiB": (1.0, "MiB")}


class Skip(Exception):
    """A case (or a whole module) cannot run here: a peer is not installed, no disk, ..."""


@dataclass
class Sample:
    """One measurement: ``value`` in the case's unit (seconds for time units), and a note
    (bytes written, versions made) shown next to the contender's row."""

    value: float
    note: str = ""


@dataclass
class Contender:
    label: str
    run: Callable[[], Sample | float]
    #: tracelet contenders are the reference the ratio column divides by the others.
    tracelet: bool = False


@dataclass
class Case:
    key: str
    title: str
    contenders: list[Contender]
    unit: str = "s"
    target: str = ""
    setup: Callable[[], None] | None = None
    teardown: Callable[[], None] | None = None
    repeats: int | None = None
    #: Items one run handles (assets, tasks): adds ``+x ms per item`` to the ratio.
    per_item: int | None = None
    #: Flush dirty pages (``os.sync``) after every contender run, untimed, so one
    #: contender's writeback does not land in another's measurement.
    sync_between: bool = False
    #: Write and delete this many scratch bytes before every run, untimed (see
    #: ``prefault``).
    prefault_bytes: int = 0
    module: str = ""


@dataclass
class Result:
    case: Case
    times: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    skipped: str | None = None


# ------------------------------------------------------------------------------------------
# helpers for bench modules
# ------------------------------------------------------------------------------------------
_BASE: Path | None = None


def scratch(label: str) -> Path:
    """A fresh folder under this run's temporary base (removed when the run ends)."""
    base = _BASE or Path(tempfile.gettempdir())
    return Path(tempfile.mkdtemp(prefix=f"{label}-", dir=base))


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def write_random_file(path: Path, nbytes: int, seed: int = 1) -> Path:
    """``nbytes`` of incompressible data, written in 16 MiB blocks (one block repeated with a
    per-block counter, so generating 4 GiB does not take minutes)."""
    import random

    path.parent.mkdir(parents=True, exist_ok=True)
    block = bytearray(random.Random(seed).randbytes(min(nbytes, 16 * MIB)))
    with path.open("wb") as handle:
        left, counter = nbytes, 0
        while left:
            block[:8] = counter.to_bytes(8, "little")
            piece = min(left, len(block))
            handle.write(memoryview(block)[:piece])
            left -= piece
            counter += 1
    return path


def age(path: Path, seconds: float = 60.0) -> None:
    """Set a file's mtime ``seconds`` in the past: a file written earlier, not just now (a
    stat cache must not trust a file modified within its timestamp granularity)."""
    when = time.time() - seconds
    os.utime(path, (when, when))


def prefault(scratch_file: Path, nbytes: int) -> None:
    """Write and delete ``nbytes`` of scratch data so the next writes reuse backed memory.

    On VMs whose free memory goes back to the host (free page reporting, ballooning), the
    first write into fresh page-cache pages is several times slower than later writes; without
    this, whichever contender runs first after memory was returned pays for it.
    """
    if nbytes <= 0:
        return
    block = bytes(MIB)
    with scratch_file.open("wb") as handle:
        for _ in range(max(1, nbytes // MIB)):
            handle.write(block)
    scratch_file.unlink()  # never synced: its pages are freed without writeback


def bytes_written() -> int:
    """Bytes this process passed to write-like system calls so far (``/proc/self/io``
    ``wchar``); 0 where the kernel does not say."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def quiet_environment() -> None:
    """Peers offline and quiet; no ``TRACELET_*`` setting leaks in from the caller."""
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    os.environ["WANDB_CONSOLE"] = "off"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["DAGSTER_DISABLE_TELEMETRY"] = "1"
    for var in [v for v in os.environ if v.startswith("TRACELET_")]:
        del os.environ[var]


# ------------------------------------------------------------------------------------------
# discovery and running
# ------------------------------------------------------------------------------------------
#: The order of the performance table; cases of other modules (the hook) come after.
TABLE_ORDER = ["log_big", "relog_big", "small_files", "tiny_versions", "get_latest", "get_alias",
               "lineage_one_hop", "peak_rss", "download_big", "dagster_chain", "prefect_chain", "import"]


def _table_position(case: Case) -> int:
    return next((n for n, key in enumerate(TABLE_ORDER) if case.key.startswith(key)), len(TABLE_ORDER))


def discover(quick: bool) -> tuple[list[Case], dict[str, str]]:
    """Cases from every ``benchmarks/bench_*.py`` with a ``cases(quick)``; modules that
    cannot run here are listed with the reason."""
    found: list[Case] = []
    skipped: dict[str, str] = {}
    package = Path(__file__).resolve().parent
    for info in sorted(pkgutil.iter_modules([str(package)]), key=lambda m: m.name):
        if not info.name.startswith("bench_"):
            continue
        try:
            module = importlib.import_module(f"benchmarks.{info.name}")
            make = getattr(module, "cases", None)
            if make is None:
                continue
            for case in make(quick):
                case.module = info.name
                found.append(case)
        except Skip as exc:
            skipped[info.name] = str(exc)
        except Exception as exc:  # noqa: BLE001 - one broken module must not stop the others
            skipped[info.name] = f"error: {type(exc).__name__}: {exc}"
    found.sort(key=_table_position)  # stable: a module's own order is kept
    return found, skipped


def _value(outcome: Sample | float) -> tuple[float, str]:
    if isinstance(outcome, Sample):
        return outcome.value, outcome.note
    return float(outcome), ""


def run_case(case: Case, repeats: int, scratch_file: Path, log: Callable[[str], None],
             quick: bool = False) -> Result:
    """Run ``case`` (``quick``: no prefault and no sync between runs: the sizes are small and
    the numbers only show that every row works)."""
    result = Result(case)
    try:
        if case.setup is not None:
            case.setup()
    except Skip as exc:
        result.skipped = str(exc)
        return result
    except Exception as exc:  # noqa: BLE001
        result.skipped = f"setup failed: {type(exc).__name__}: {exc}"
        traceback.print_exc()
        return result
    try:
        contenders = list(case.contenders)
        for rep in range(case.repeats or repeats):
            shift = rep % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                if contender.label in result.errors:
                    continue
                if case.prefault_bytes and not quick:
                    prefault(scratch_file, case.prefault_bytes)
                try:
                    value, note = _value(contender.run())
                except Skip as exc:
                    result.errors[contender.label] = f"n/a: {exc}"
                    continue
                except Exception as exc:  # noqa: BLE001 - a failing peer is reported, never fatal
                    result.errors[contender.label] = f"error: {type(exc).__name__}: {str(exc)[:160]}"
                    traceback.print_exc()
                    continue
                finally:
                    if case.sync_between and not quick:
                        os.sync()
                result.times.setdefault(contender.label, []).append(value)
                if note:
                    result.notes[contender.label] = note
            log(f"  {case.key}: repetition {rep + 1} done")
    finally:
        if case.teardown is not None:
            with contextlib.suppress(Exception):
                case.teardown()
    return result


# ------------------------------------------------------------------------------------------
# the table
# ------------------------------------------------------------------------------------------
def _fmt(value: float, unit: str) -> str:
    scale, _ = UNITS.get(unit, (1.0, unit))
    shown = value * scale
    if shown >= 100:
        return f"{shown:,.0f}"
    if shown >= 10:
        return f"{shown:.1f}"
    if shown >= 1:
        return f"{shown:.2f}"
    return f"{shown:.3f}"


def table_rows(results: list[Result]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for res in results:
        case = res.case
        suffix = UNITS.get(case.unit, (1.0, case.unit))[1]
        if res.skipped is not None:
            rows.append({"case": case.title, "contender": "", "median": "", "range": "", "ratio": "",
                         "note": f"skipped: {res.skipped}", "target": case.target})
            continue
        refs = [(c.label, statistics.median(res.times[c.label])) for c in case.contenders
                if c.tracelet and res.times.get(c.label)]
        for n, contender in enumerate(case.contenders):
            times = res.times.get(contender.label) or []
            row = {"case": case.title if n == 0 else "", "contender": contender.label, "median": "",
                   "range": "", "ratio": "", "note": res.errors.get(contender.label, ""),
                   "target": case.target if n == 0 else ""}
            if times:
                med = statistics.median(times)
                row["median"] = f"{_fmt(med, case.unit)} {suffix}"
                row["range"] = f"{_fmt(min(times), case.unit)}-{_fmt(max(times), case.unit)}"
                if not contender.tracelet and med > 0:
                    parts = []
                    for label, ref in refs:
                        mode = label.partition("(")[2].rstrip(")") or label
                        text = f"{ref / med:.2f}x" if len(refs) == 1 else f"{mode} {ref / med:.2f}x"
                        if case.per_item:
                            text += f" (+{(ref - med) * 1e3 / case.per_item:.1f} ms/item)"
                        parts.append(text)
                    row["ratio"] = ", ".join(parts)
                note = res.notes.get(contender.label)
                if note:
                    row["note"] = note
            rows.append(row)
    return rows


COLUMNS = [("case", "case"), ("contender", "contender"), ("median", "median"), ("range", "min-max"),
           ("ratio", "tracelet / this"), ("note", "note"), ("target", "target")]


def print_table(rows: list[dict[str, str]], markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(label for _, label in COLUMNS) + " |")
        print("|" + "|".join("---" for _ in COLUMNS) + "|")
        for row in rows:
            print("| " + " | ".join(row[key].replace("|", "/") for key, _ in COLUMNS) + " |")
        return
    widths = {key: max(len(label), *(len(r[key]) for r in rows)) if rows else len(label)
              for key, label in COLUMNS}
    widths["target"] = min(widths["target"], 48)
    print("  ".join(label.ljust(widths[key]) for key, label in COLUMNS))
    for row in rows:
        if row["case"]:
            print()
        print("  ".join(row[key][:widths[key]].ljust(widths[key]) for key, _ in COLUMNS).rstrip())


def machine_info(base: Path) -> dict[str, str]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    fstype = "?"
    with contextlib.suppress(OSError):
        best = ""
        resolved = str(base.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and resolved.startswith(parts[1]) and len(parts[1]) > len(best):
                best, fstype = parts[1], parts[2]
    commit = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        repo = Path(__file__).resolve().parent.parent
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            commit = head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = []
    for dist in ("tracelet-artifacts", "blake3", "SQLAlchemy", "mlflow", "wandb", "dagster", "prefect"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu}, {affinity} usable cores ({os.cpu_count()} online), {mem} RAM",
        "system": f"{platform.platform()}, {platform.python_implementation()} {platform.python_version()}",
        "temp folder": f"{base} ({fstype})",
        "tracelet at": commit,
        "versions": ", ".join(versions),
    }


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


@contextlib.contextmanager
def _run_base(parent: Path | None) -> Iterator[Path]:
    global _BASE
    root = parent or Path(tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="tracelet-bench-", dir=root))
    _BASE = base
    try:
        yield base
    finally:
        _BASE = None
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, two repetitions (about a minute)")
    parser.add_argument("--repeats", type=int, default=None, help="repetitions per case (default 3, quick 2)")
    parser.add_argument("--only", default="", help="comma-separated words; run cases whose key contains one")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--json", type=Path, default=None, help="also write every raw value as JSON here")
    parser.add_argument("--tmp", type=Path, default=None, help="where temporary folders go")
    args = parser.parse_args(argv)
    quiet_environment()
    repeats = args.repeats or (2 if args.quick else 3)
    with _run_base(args.tmp) as base:
        cases, skipped_modules = discover(args.quick)
        words = [w for w in args.only.split(",") if w]
        if words:
            cases = [c for c in cases if any(w in c.key for w in words)]
        if args.list:
            for case in cases:
                print(f"{case.key:<24} {case.title}  [{', '.join(c.label for c in case.contenders)}]")
            for name, why in skipped_modules.items():
                print(f"{name}: skipped ({why})")
            return 0
        header = machine_info(base)
        header["mode"] = ("--quick (small sizes; ratios are not the targets' sizes)" if args.quick
                          else "full") + f", {repeats} interleaved repetitions per case unless noted"
        load_before = _loadavg()
        print(f"{len(cases)} cases; {header['machine']}", flush=True)
        started = time.perf_counter()
        results = []
        for case in cases:
            print(f"{case.key} ...", flush=True)
            case_start = time.perf_counter()
            results.append(run_case(case, repeats, base / "prefault.tmp",
                                    lambda line: print(line, flush=True), quick=args.quick))
            print(f"  {case.key}: {time.perf_counter() - case_start:.1f} s", flush=True)
        header["bench time"] = f"{time.perf_counter() - started:.0f} s"
        header["load average"] = f"{load_before} before, {_loadavg()} after (1/5/15 min)"
    print()
    for key, value in header.items():
        print(f"{key:>12}: {value}")
    for name, why in skipped_modules.items():
        print(f"{'skipped':>12}: {name} ({why})")
    print()
    rows = table_rows(results)
    print_table(rows, args.markdown)
    if args.json:
        args.json.write_text(json.dumps({
            "machine": header, "skipped_modules": skipped_modules, "rows": rows,
            "raw": {r.case.key: {"unit": r.case.unit, "times": r.times, "errors": r.errors,
                                 "notes": r.notes, "skipped": r.skipped} for r in results},
        }, indent=2))
    failed = [f"{r.case.key}/{label}: {error}" for r in results for label, error in r.errors.items()
              if error.startswith("error") and any(c.tracelet and c.label == label for c in r.case.contenders)]
    failed += [f"{r.case.key}: {r.skipped}" for r in results if r.skipped and r.skipped.startswith("setup failed")]
    if failed:
        print("\ntracelet failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0
