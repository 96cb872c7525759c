#!/usr/bin/env python
"""What tracelet adds to a Prefect flow: the same flows with ``@tracelet_task`` and with ``@task``.

    python benchmarks/bench_prefect.py               # 11 interleaved repeats of each flow
    python benchmarks/bench_prefect.py --repeats 3

Flows (each run as a whole, against one local Prefect server started for the benchmark, or
the one ``PREFECT_API_URL`` names):

- ``chain``    4 tasks in a row passing small dicts
- ``map8``     8 mapped tasks logging to one name, and one that combines them (9 task runs)
- ``array``    4 tasks in a row passing a 1 MiB float64 array

Prefect's flow-run heartbeat thread is switched off: it is joined in one-second steps when a
flow ends, which adds up to a second to every run, tracelet or not, and would bury the
difference under noise. Each flow runs once untimed (warm-up: imports, store and catalog opened, server caches), then
``--repeats`` times, interleaved with the plain flow; the table shows medians and minimums
(a flow run against a local server varies from 0.2 s to 2 s on a busy 2-core machine, so the
minimums say more about the work tracelet adds). ``new`` runs log new content every time (a new
version per task run, a markdown artifact and events); ``unchanged`` runs log the same content
again (tracelet returns the existing versions and publishes nothing; the eight mapped tasks
still log eight versions, as each differs from the name's latest). Overhead per task =
(tracelet - plain) / task runs. Times come from ``time.perf_counter`` around the flow call;
nothing here asserts on them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

_HOME: str | None = None


def prefect_environment() -> str:
    """Keep the benchmark's Prefect server state out of ``~/.prefect`` and off the network;
    set before Prefect is first imported (it reads these then)."""
    global _HOME
    if _HOME is None:
        _HOME = os.environ.get("PREFECT_HOME") or tempfile.mkdtemp(prefix="tracelet-bench-prefect-")
        os.environ.setdefault("PREFECT_HOME", _HOME)
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")  # shutdown noise
        os.environ.setdefault("TRACELET_STORE_URI", os.path.join(_HOME, "store"))
    return _HOME


def steps(make: Callable[..., Any], kind: str) -> dict[str, Any]:
    """The same functions as plain or tracelet tasks (``make(name)`` decorates); every step
    logs to its own name, so an unchanged rerun finds its content as the latest version."""

    import numpy as np

    def first(seed: int) -> Any:
        return np.full(131072, float(seed)) if kind == "array" else {"seed": seed, "rows": list(range(32))}

    def double(value: Any) -> Any:
        return value * 2 if kind == "array" else {**value, "rows": [r * 2 for r in value["rows"]]}

    def shard(seed: int, i: int) -> dict[str, int]:
        return {"seed": seed, "i": i}

    def combine(parts: list[Any]) -> dict[str, int]:
        return {"n": len(parts)}

    functions = {"first": first, "second": double, "third": double, "fourth": double, "combine": combine}
    made = {name: make(f"bench/{kind}/{name}")(fn) for name, fn in functions.items()}
    # Mapped tasks log to one name: eight versions per run, and never "unchanged".
    made["shard"] = make(f"bench/{kind}/shard")(shard)
    return made


def build_flows(make: Callable[..., Any]) -> dict[str, Callable[[int], Any]]:
    from prefect import flow

    small, array = steps(make, "small"), steps(make, "array")

    @flow(name="chain")
    def chain(seed: int) -> Any:
        return small["fourth"](small["third"](small["second"](small["first"](seed))))

    @flow(name="map8")
    def map8(seed: int) -> Any:
        parts = small["shard"].map(seed, range(8))
        return small["combine"](parts)

    @flow(name="array")
    def array_flow(seed: int) -> Any:
        return array["fourth"](array["third"](array["second"](array["first"](seed))))

    return {"chain": chain, "map8": map8, "array": array_flow}


TASK_RUNS = {"chain": 4, "map8": 9, "array": 4}


def plain(name: str) -> Callable[[Callable[..., Any]], Any]:
    from prefect import task

    return task(name=name.replace("/", "-"))


def traced(name: str) -> Callable[[Callable[..., Any]], Any]:
    import tracelet_prefect

    return tracelet_prefect.tracelet_task(name)


def timed(run: Callable[[int], Any], seed: int) -> float:
    start = time.perf_counter()
    run(seed)
    return time.perf_counter() - start


def measure(plain_run: Callable[[int], Any], tracelet_run: Callable[[int], Any],
            repeats: int) -> dict[str, list[float]]:
    """Interleaved runs (plain, tracelet new, tracelet unchanged, plain, ...), so drift on the
    server (its own background work) hits all three alike."""
    times: dict[str, list[float]] = {"plain": [], "new": [], "unchanged": []}
    for n in range(1, repeats + 1):
        times["plain"].append(timed(plain_run, n))
        times["new"].append(timed(tracelet_run, 1000 + n))
        times["unchanged"].append(timed(tracelet_run, 0))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()
    home = prefect_environment()
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from tracelet_core import ArtifactStore

    flows = {"plain": build_flows(plain), "tracelet": build_flows(traced)}
    rows: list[tuple[str, str, list[float], list[float]]] = []
    with prefect_test_harness(server_startup_timeout=120), \
            temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        for name in TASK_RUNS:
            for variant in flows.values():
                variant[name](0)  # warm-up
            times = measure(flows["plain"][name], flows["tracelet"][name], args.repeats)
            rows.append((name, "new", times["plain"], times["new"]))
            rows.append((name, "unchanged", times["plain"], times["unchanged"]))

    with ArtifactStore.open() as store:
        versions = sum(len(store.versions(a.name)) for a in store.list())

    print(f"tracelet-prefect overhead per flow run, {args.repeats} interleaved runs each "
          f"(Python {platform.python_version()}, {os.cpu_count()} CPUs, {versions} versions logged)")
    print(f"{'flow':<6} {'content':<10} {'tasks':>5} | {'median: plain':>13} {'tracelet':>9} {'ratio':>6} "
          f"{'+ms/task':>9} | {'min: plain':>10} {'tracelet':>9} {'ratio':>6} {'+ms/task':>9}")
    for name, content, base, tracelet in rows:
        cells = []
        for pick in (statistics.median, min):
            b, t = pick(base), pick(tracelet)
            cells.append(f"{b:>9.3f} s {t:>7.3f} s {t / b:>6.2f} {(t - b) * 1000 / TASK_RUNS[name]:>9.1f}")
        print(f"{name:<6} {content:<10} {TASK_RUNS[name]:>5} |  {cells[0]} |  {cells[1]}")
    if os.path.basename(home).startswith("tracelet-bench-prefect-"):
        shutil.rmtree(home, ignore_errors=True)


# ------------------------------------------------------------------------------------------
# the row of ``python -m benchmarks``: an N-task chain, tracelet tasks against plain tasks
# ------------------------------------------------------------------------------------------
def chain_flow(make: Callable[..., Any], n: int) -> Callable[[int], Any]:
    """A flow of ``n`` tasks in a row, each passing a small dict to the next; with tracelet,
    every task logs its own name (a new version each run: the seed changes)."""
    from prefect import flow

    def first(seed: int) -> dict[str, Any]:
        return {"seed": seed, "rows": list(range(32))}

    def step(value: dict[str, Any]) -> dict[str, Any]:
        return {**value, "rows": [r + 1 for r in value["rows"]]}

    tasks = [make(f"bench/chain/t{i:03d}")(first if i == 0 else step) for i in range(n)]

    @flow(name=f"chain{n}")
    def run(seed: int) -> Any:
        value = tasks[0](seed)
        for task_ in tasks[1:]:
            value = task_(value)
        return value

    return run


def cases(quick: bool) -> list[Any]:
    from ._runner import Case, Contender, Skip, installed, scratch, timed

    if not installed("prefect") or not installed("tracelet_prefect"):
        raise Skip("prefect or tracelet_prefect is not installed")
    n = 5 if quick else 50
    stack = contextlib.ExitStack()
    flows: dict[str, Callable[[int], Any]] = {}
    seeds = iter(range(1, 1_000_000))

    def setup() -> None:
        prefect_environment()
        os.environ["TRACELET_STORE_URI"] = str(scratch("prefect-store"))
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
        from prefect.testing.utilities import prefect_test_harness

        stack.enter_context(prefect_test_harness(server_startup_timeout=120))
        stack.enter_context(temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}))
        flows["plain"], flows["tracelet"] = chain_flow(plain, n), chain_flow(traced, n)
        for made in flows.values():
            made(0)  # warm-up: imports, the store opened, server caches

    def teardown() -> None:
        stack.close()
        os.environ.pop("TRACELET_STORE_URI", None)
        if _HOME is not None and os.path.basename(_HOME).startswith("tracelet-bench-prefect-"):
            shutil.rmtree(_HOME, ignore_errors=True)  # only a home this benchmark made

    return [Case(
        key="prefect_chain", title=f"Prefect {n}-task chain (new content each run)", per_item=n,
        contenders=[Contender("tracelet @tracelet_task", lambda: timed(lambda: flows["tracelet"](next(seeds))),
                              tracelet=True),
                    Contender("plain @task", lambda: timed(lambda: flows["plain"](next(seeds))))],
        target="<= 1.5x plain tasks", setup=setup, teardown=teardown, repeats=1 if quick else None)]


if __name__ == "__main__":
    sys.exit(main())
