"""Work that follows a commit, off the caller's path: one background worker per process.

An orchestrator step commits its version (with its outbox rows, pending, in the commit's
transaction) and hands what follows (delivering to the trackers, announcing the version) to
this worker; the step returns at once. Jobs are grouped by a *scope*, the orchestrator run
they belong to (a Prefect flow run, a Dagster run), and ``flush(scope, timeout)`` waits for a
scope's jobs before that run reports its end. One thread runs the jobs one at a time, in the
order they were submitted (a job may rely on the ones submitted before it), each in a copy of
the context its submitter had (``contextvars``: an orchestrator's settings and run context).

Nothing here is durable, and nothing has to be: a process that dies with jobs queued leaves
their outbox rows pending, and ``tracelet sync`` delivers them. A job that raises is logged and
never stops the worker. The process's exit waits for what is queued, for at most
``EXIT_FLUSH_SECONDS``.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")

#: How long an exiting process waits for the jobs it has not run yet.
EXIT_FLUSH_SECONDS = 30.0

logger = logging.getLogger("tracelet.background")


class _Job:
    def __init__(self, scope: str, call: Callable[[], object], context: contextvars.Context) -> None:
        self.scope = scope
        self.call = call
        self.context = context
        self.future: Future[object] = Future()


class Worker:
    """One thread that runs submitted jobs in order and tells who waits when a scope is done."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._queue: deque[_Job] = deque()
        #: scope -> jobs submitted and not finished yet
        self._open: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        #: jobs finished so far (what a flush with ``progress`` watches)
        self._finished = 0

    def submit(self, scope: str, call: Callable[[], T]) -> Future[T]:
        """Run ``call`` after every job submitted before it; its result or error in the future."""
        job = _Job(scope, call, contextvars.copy_context())
        with self._changed:
            self._queue.append(job)
            self._open[scope] = self._open.get(scope, 0) + 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tracelet-background", daemon=True)
                self._thread.start()
                atexit.register(self.flush, None, EXIT_FLUSH_SECONDS)
            self._changed.notify_all()
        return job.future  # type: ignore[return-value]  # the future holds what ``call`` returns

    def pending(self, scope: str | None = None) -> int:
        """Jobs of ``scope`` (of every scope: ``None``) submitted and not finished."""
        with self._changed:
            return sum(self._open.values()) if scope is None else self._open.get(scope, 0)

    def flush(self, scope: str | None = None, timeout: float | None = None, *, progress: bool = False) -> bool:
        """Wait until the jobs of ``scope`` (every job: ``None``) submitted so far are done;
        False when ``timeout`` seconds passed first (they keep running). With ``progress``,
        ``timeout`` counts from the last job that finished: a long queue that moves is waited for."""
        if threading.current_thread() is self._thread:
            return False  # a job waiting for the worker would wait for itself
        with self._changed:
            finished = self._finished
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._open.get(scope, 0) if scope is not None else self._open:
                if progress and self._finished != finished and timeout is not None:
                    finished, deadline = self._finished, time.monotonic() + timeout
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._queue))
                job = self._queue.popleft()
            try:
                if job.future.set_running_or_notify_cancel():
                    job.future.set_result(job.context.run(job.call))
            except BaseException as exc:  # noqa: BLE001 - handed to the future, never stops the worker
                logger.warning("tracelet: background job failed: %s: %s", type(exc).__name__, exc)
                job.future.set_exception(exc)
            finally:
                with self._changed:
                    self._finished += 1
                    left = self._open[job.scope] - 1
                    if left:
                        self._open[job.scope] = left
                    else:
                        del self._open[job.scope]
                    self._changed.notify_all()


_workers: dict[int, Worker] = {}
_workers_lock = threading.Lock()


def worker() -> Worker:
    """This process's worker (a forked child gets its own)."""
    pid = os.getpid()
    found = _workers.get(pid)
    if found is None:
        with _workers_lock:
            found = _workers.setdefault(pid, Worker())
    return found


def submit(scope: str, call: Callable[[], T]) -> Future[T]:
    """Run ``call`` on this process's worker, as part of ``scope``."""
    return worker().submit(scope, call)


def flush(scope: str | None = None, timeout: float | None = None, *, progress: bool = False) -> bool:
    """Wait for this process's jobs of ``scope`` (all: ``None``), at most ``timeout`` seconds
    (with ``progress``: since the last job finished)."""
    found = _workers.get(os.getpid())
    return True if found is None else found.flush(scope, timeout, progress=progress)


def pending(scope: str | None = None) -> int:
    """This process's jobs of ``scope`` (all: ``None``) not finished yet."""
    found = _workers.get(os.getpid())
    return 0 if found is None else found.pending(scope)
