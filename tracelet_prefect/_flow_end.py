"""What a tracelet task leaves to run after it returns is done before its flow run ends.

A tracelet task returns once its version is committed: the deliveries to trackers and the
announcements (events, the markdown artifact) run on the process's background worker
(``tracelet_core._background``), as part of the flow run (the *scope*). Before the flow run
reports its final state they are flushed, so that once ``flow()`` returns (or a deployment's run
shows Completed, Failed, Crashed...) the trackers hold the versions, Prefect's client lists
every markdown artifact, and Prefect's events worker has sent every event.

Prefect 3 has no hook there: the flow function returns, the engine turns its value into the
final state and proposes it, and only then runs ``on_completion``/``on_failure`` hooks (too
late: whoever waits on the run sees it ended). So while a flow run has tracelet work (from its
first tracelet task until its final state), the engines' ``set_state`` (sync and async) is
wrapped: when the state proposed is final, the run's work is flushed first. The wrapper is put
in place by :func:`defers` for the first such flow run and taken out again when the last one
ends, so a process with no flow run using tracelet runs Prefect unpatched.

Tasks that run in another process than their flow run's engine (``ProcessPoolTaskRunner``,
Dask workers) or outside any flow run cannot be reached by that flush: they deliver and
publish before they return, as before (:func:`defers` says which case a task run is).

Each wait is bounded: the queued work while it makes progress, giving up after
``TRACELET_BACKEND_TIMEOUT`` seconds in which nothing finished (what is left keeps running;
a process that exits first leaves the outbox rows for ``tracelet sync``), then the markdown
artifacts and the events worker, ``PUBLISH_FLUSH_SECONDS`` each.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from typing import Any

from prefect.context import FlowRunContext
from prefect.events.worker import EventsWorker
from prefect.flow_engine import AsyncFlowRunEngine, FlowRunEngine
from prefect.logging import get_logger

from tracelet_core import TraceletSettings
from tracelet_core import _background as background

from ._runs import TaskRun
from ._ui import finish_run

#: How long the end of a flow run waits for its markdown artifacts, then for its events.
PUBLISH_FLUSH_SECONDS = 30.0
_INSTALLED = "__tracelet_flushes__"

logger = get_logger("tracelet.prefect")


def defers(run: TaskRun) -> str | None:
    """The scope (flow run id) to queue this task run's work on, or ``None`` where no flow run
    engine in this process will flush it (no flow run, or the task runs in another process).
    A scope is held until its flow run's final state (the engines flush it then)."""
    if run.flow_run_id is None:
        return None
    context = FlowRunContext.get()
    if context is None or context.detached or context.flow_run is None:
        return None
    if str(context.flow_run.id) != run.flow_run_id:
        return None
    _hold(run.flow_run_id)
    return run.flow_run_id


#: Flow runs in this process with tracelet work to flush at their end; the engines' ``set_state``
#: is wrapped exactly while this is not empty.
_held: set[str] = set()
_held_lock = threading.Lock()
#: What to call, per flow run, with ``(flow, flow_run, final state)`` before that state is set.
EndCallback = Callable[[Any, Any, Any], None]
_at_end: dict[str, list[EndCallback]] = {}


def _hold(flow_run_id: str) -> None:
    with _held_lock:
        if not _held:
            _install()
        _held.add(flow_run_id)


def call_at_end(flow_run_id: str, callback: EndCallback) -> None:
    """Call ``callback(flow, flow_run, state)`` once the flow run's work is flushed, just before
    its final state is set (an equal callback registered twice is called once)."""
    with _held_lock:
        callbacks = _at_end.setdefault(flow_run_id, [])
        if callback not in callbacks:
            callbacks.append(callback)
    _hold(flow_run_id)


def _let_go(flow_run_id: str) -> None:
    with _held_lock:
        _at_end.pop(flow_run_id, None)
        if flow_run_id in _held:
            _held.discard(flow_run_id)
            if not _held:
                _uninstall()


def wrapped() -> bool:
    """Whether the engines' ``set_state`` is wrapped now (some flow run holds tracelet work)."""
    return bool(getattr(FlowRunEngine.set_state, _INSTALLED, False))


def _stall_bound() -> float | None:
    try:
        return TraceletSettings.load().backend_timeout
    except Exception:  # noqa: BLE001 - a bad TRACELET_* variable fails the tasks, not the flow's end
        return TraceletSettings.model_fields["backend_timeout"].default


def _events_sent(timeout: float) -> bool:
    """Wait until Prefect's events worker has sent what was emitted so far (bounded)."""
    done = threading.Event()

    def wait() -> None:
        EventsWorker.instance().wait_until_empty()
        done.set()

    threading.Thread(target=wait, name="tracelet-events-flush", daemon=True).start()
    return done.wait(timeout)


def flush_run(flow_run_id: str) -> None:
    """Finish what this process queued for the flow run: deliveries and announcements, then
    the markdown artifacts, then the events. Never raises: the run's state comes first."""
    try:
        queued = background.pending(flow_run_id)
        if queued and not background.flush(flow_run_id, _stall_bound(), progress=True):
            logger.warning("tracelet: flow run %s ends with %d deliveries or announcements still running; "
                           "`tracelet sync` delivers what this process does not", flow_run_id,
                           background.pending(flow_run_id))
        published = finish_run(flow_run_id, PUBLISH_FLUSH_SECONDS)
        if published is False:
            logger.warning("tracelet: flow run %s ends before all its markdown artifacts were created", flow_run_id)
        if (queued or published is not None) and not _events_sent(PUBLISH_FLUSH_SECONDS):
            logger.warning("tracelet: flow run %s ends before Prefect sent all its events", flow_run_id)
    except Exception as exc:  # noqa: BLE001 - a report; the flow run's state is the user's
        logger.warning("tracelet: could not flush the work of flow run %s: %s: %s", flow_run_id,
                       type(exc).__name__, exc)


def _end_run(engine: Any, flow_run_id: str, state: Any) -> None:
    """Flush the flow run's work, call what waits for its end, and let the run go."""
    flush_run(flow_run_id)
    with _held_lock:
        callbacks = list(_at_end.get(flow_run_id, ()))
    for callback in callbacks:
        try:
            callback(engine.flow, engine.flow_run, state)
        except Exception as exc:  # noqa: BLE001 - a report; the flow run's state is the user's
            logger.warning("tracelet: at the end of flow run %s: %s: %s", flow_run_id, type(exc).__name__, exc)
    _let_go(flow_run_id)


def _final_flow_run(engine: Any, state: Any) -> str | None:
    flow_run = getattr(engine, "flow_run", None)
    if flow_run is None or getattr(engine, "short_circuit", False) or not state.is_final():
        return None
    return str(flow_run.id)


def _flushing_sync(set_state: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(set_state)
    def flushing(self: Any, state: Any, *args: Any, **kwargs: Any) -> Any:
        flow_run_id = _final_flow_run(self, state)
        if flow_run_id is not None and flow_run_id in _held:
            _end_run(self, flow_run_id, state)
        return set_state(self, state, *args, **kwargs)

    setattr(flushing, _INSTALLED, True)
    return flushing


def _flushing_async(set_state: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(set_state)
    async def flushing(self: Any, state: Any, *args: Any, **kwargs: Any) -> Any:
        flow_run_id = _final_flow_run(self, state)
        if flow_run_id is not None and flow_run_id in _held:
            await asyncio.to_thread(_end_run, self, flow_run_id, state)
        return await set_state(self, state, *args, **kwargs)

    setattr(flushing, _INSTALLED, True)
    return flushing


_ENGINES: tuple[tuple[Any, Callable[[Callable[..., Any]], Callable[..., Any]]], ...] = (
    (FlowRunEngine, _flushing_sync), (AsyncFlowRunEngine, _flushing_async))
#: The engines' own ``set_state``, while wrapped.
_originals: dict[Any, Callable[..., Any]] = {}


def _install() -> None:
    """Wrap both flow run engines' ``set_state`` (called with ``_held_lock`` held)."""
    for engine, wrap in _ENGINES:
        current = engine.set_state
        if not getattr(current, _INSTALLED, False):
            _originals[engine] = current
            engine.set_state = wrap(current)


def _uninstall() -> None:
    """Put the engines' own ``set_state`` back (called with ``_held_lock`` held)."""
    for engine, original in list(_originals.items()):
        engine.set_state = original
        del _originals[engine]
