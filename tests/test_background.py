"""The background worker that runs deliveries after a commit: order, scopes, bounded flushes,
and a job that raises never stops it."""

from __future__ import annotations

import contextvars
import threading

import pytest

from tracelet_core._background import Worker

where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="worker")


def test_jobs_run_in_order_in_their_submitters_context_and_scopes_flush_separately() -> None:
    worker = Worker()
    gate = threading.Event()
    ran: list[str] = []
    where.set("submitter")
    worker.submit("run-a", lambda: gate.wait(30))
    worker.submit("run-a", lambda: ran.append(f"a:{where.get()}"))
    later = worker.submit("run-b", lambda: ran.append("b") or "done")

    assert worker.pending("run-a") == 2 and worker.pending("run-b") == 1
    assert worker.flush("run-b", timeout=0.05) is False  # behind run-a's blocked job: bounded
    gate.set()
    assert worker.flush("run-b", timeout=30) and later.result() == "done"
    assert ran == ["a:submitter", "b"] and worker.pending() == 0


def test_a_job_that_raises_is_reported_and_the_next_one_runs(caplog: pytest.LogCaptureFixture) -> None:
    worker = Worker()

    def broken() -> None:
        raise ConnectionError("injected: tracker down")

    failed = worker.submit("run", broken)
    fine = worker.submit("run", lambda: 42)
    assert worker.flush("run", timeout=30)
    assert isinstance(failed.exception(), ConnectionError) and fine.result() == 42
    assert "background job failed: ConnectionError: injected: tracker down" in caplog.text


def test_a_flush_with_progress_waits_for_a_moving_queue() -> None:
    worker = Worker()
    steps = [threading.Event() for _ in range(3)]
    for step in steps:
        worker.submit("run", lambda step=step: step.wait(30))

    def release_one_by_one() -> None:
        for step in steps:
            step.set()

    threading.Thread(target=release_one_by_one).start()
    assert worker.flush("run", timeout=30, progress=True)
    assert worker.pending("run") == 0
