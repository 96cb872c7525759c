"""What each step attempt read, so what it logs records exactly those versions as inputs.

``load_input`` runs in the step's own process before the step's compute, ``handle_output``
after it, in the same process (with the in-process executor and with the multiprocess one, where
each step is a process of its own). Both the IO manager and ``TraceletResource.get`` note
their reads here, keyed by store, run, step and attempt, so a retried attempt starts clean and
two stores never mix refs. The registry is per process and lock protected; a run's entries are
dropped when its resources are torn down.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from ._steps import StepAttempt


class StepReads:
    """Refs read per (store, step attempt), in first-read order, without duplicates."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs: dict[tuple[str, StepAttempt], dict[str, None]] = {}

    def add(self, store_uri: str, attempt: StepAttempt, refs: Iterable[str]) -> None:
        with self._lock:
            self._refs.setdefault((store_uri, attempt), {}).update(dict.fromkeys(refs))

    def refs(self, store_uri: str, attempt: StepAttempt) -> list[str]:
        with self._lock:
            return list(self._refs.get((store_uri, attempt), {}))

    def forget_run(self, run_id: str) -> None:
        with self._lock:
            for key in [k for k in self._refs if k[1].run_id == run_id]:
                del self._refs[key]


STEP_READS = StepReads()
