"""``reproduce(ref, flow)``: run the Prefect flow that produced a version again, with the
parameters its flow run had, the recorded input versions loaded in place of newer ones.

How the rerun loads the recorded versions
    ``reproduce`` sets a context variable (``Reproduction``) around the flow call; Prefect copies
    the context into every task run of the flow (threads, the event loop), and the tracelet
    code that resolves inputs reads it: a ``LoggedArtifact`` argument of a tracelet task and a
    ``load_artifact`` of a name the original version read load the version it recorded
    (``pinned``). The variable is reset when the flow returns, so nothing outlives the call.
    Tasks running in other processes would not see it, so a flow with another task runner (Dask)
    is rerun with Prefect's ``ThreadPoolTaskRunner``; a subflow with its own such runner still
    escapes: its versions are not noted and ``reproduce`` raises ``NotReproducibleError`` rather
    than report a rerun that may have read other versions.

What else changes in the rerun
    No alias moves (``keeps_aliases``: tracelet tasks' ``aliases`` and ``log_artifact``
    promotions are skipped), and Prefect's cache is refreshed so every task really runs. A
    value identical to the original's content gives the original back, nothing logged
    (``identical_original``). The version the rerun logged for the original's name is noted
    (``note``) as it is logged.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from prefect import Flow
from prefect.settings import PREFECT_TASKS_REFRESH_CACHE, temporary_settings
from prefect.task_runners import ThreadPoolTaskRunner

from tracelet_core import ArtifactStore, LoggedArtifact, NotReproducibleError
from tracelet_core._reproduce import ReproduceReport, recorded_pins, reproduce_report, require_producer

from ._runs import ORCHESTRATOR

_HOW = "tracelet_prefect.reproduce"


@dataclass
class Reproduction:
    """One ``reproduce`` call in progress: the version rerun, the versions its inputs load."""

    original: LoggedArtifact
    #: ``{input name: "vN"}`` the original recorded
    pins: dict[str, str]
    #: versions of the original's name the rerun logged, in order
    logged: list[LoggedArtifact] = field(default_factory=list)

    def note(self, version: LoggedArtifact) -> None:
        if version.name == self.original.name:
            self.logged.append(version)


_REPRODUCTION: ContextVar[Reproduction | None] = ContextVar("tracelet_reproduction", default=None)


def pinned(version: LoggedArtifact) -> LoggedArtifact:
    """In a rerun, the version of ``version``'s name that the original recorded; else ``version``."""
    reproduction = _REPRODUCTION.get()
    if reproduction is None:
        return version
    selector = reproduction.pins.get(version.name)
    if selector is None or selector == version.version:
        return version
    return version.store.get(version.name, selector)


def pinned_ref(ref: str) -> str:
    """In a rerun, ``name:vN`` recorded for the name ``ref`` selects; else ``ref``."""
    reproduction = _REPRODUCTION.get()
    name = ref.rpartition(":")[0] or ref
    if reproduction is None or name not in reproduction.pins:
        return ref
    return f"{name}:{reproduction.pins[name]}"


def keeps_aliases(aliases: Sequence[str]) -> list[str]:
    """The aliases to move: none in a rerun."""
    return [] if _REPRODUCTION.get() is not None else list(aliases)


def rerun_of() -> str | None:
    """The ref a rerun in progress reproduces, else ``None``."""
    reproduction = _REPRODUCTION.get()
    return reproduction.original.ref if reproduction is not None else None


def note_logged(version: LoggedArtifact) -> None:
    """Tell a rerun in progress which version a task logged."""
    reproduction = _REPRODUCTION.get()
    if reproduction is not None:
        reproduction.note(version)


def reproduce(ref: str | LoggedArtifact, flow: Flow[..., Any], *,
              store: ArtifactStore | None = None) -> ReproduceReport:
    """Run ``flow`` again with the parameters the flow run that produced ``ref`` had; every
    tracelet input named like one ``ref`` recorded loads the version recorded. The output is
    logged as usual, no alias moves.

    Raises ``NotReproducibleError`` when a Prefect task did not produce ``ref``, ``flow`` is not
    the flow that did, or a parameter it needs was not recorded (not JSON-able); the flow's own
    failure is raised as Prefect raises it.
    """
    store = store if store is not None else ArtifactStore.shared()
    original = ref if isinstance(ref, LoggedArtifact) else store.get(ref)
    require_producer(original, ORCHESTRATOR, _HOW)
    producer = original.producer
    assert producer is not None
    flow_name, parameters = producer.name, producer.extra.get("parameters")
    if flow_name is None or not isinstance(parameters, dict):
        raise NotReproducibleError(f"{original.ref} was made by a Prefect task run outside a flow run this process "
                                   "saw, so no flow and parameters were recorded")
    if flow_name != flow.name:
        raise NotReproducibleError(f"{original.ref} was made by the flow {flow_name!r}, not {flow.name!r}")
    _check_parameters(original, flow, parameters)
    if not isinstance(flow.task_runner, ThreadPoolTaskRunner):  # tasks in other processes would not see the pins
        flow = flow.with_options(task_runner=ThreadPoolTaskRunner())  # type: ignore[arg-type]  # Prefect types it by the flow's own runner
    reproduction = Reproduction(original, recorded_pins(original))
    token = _REPRODUCTION.set(reproduction)
    try:
        with temporary_settings(updates={PREFECT_TASKS_REFRESH_CACHE: True}):
            state: Any = flow(**parameters, return_state=True)
            if inspect.isawaitable(state):
                state = asyncio.run(_awaited(state))
    finally:
        _REPRODUCTION.reset(token)
    state.result()  # raises the flow's failure
    run_id = str(state.state_details.flow_run_id)
    if not reproduction.logged:
        raise NotReproducibleError(f"the flow run {run_id} of {flow.name!r} logged no version of {original.name!r} "
                                   "(a task that now logs elsewhere, or runs in another process)")
    # a task mapped over several values logs the name several times: the original, if one gave it back
    reproduced = next((v for v in reproduction.logged if v.ref == original.ref), reproduction.logged[-1])
    return reproduce_report(original, reproduced, run_id)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _check_parameters(original: LoggedArtifact, flow: Flow[..., Any], parameters: dict[str, Any]) -> None:
    signature = inspect.signature(flow.fn)
    missing = [name for name, p in signature.parameters.items()
               if p.default is inspect.Parameter.empty and name not in parameters
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if missing:
        raise NotReproducibleError(f"{original.ref}: the flow run's parameter(s) {', '.join(missing)} were not "
                                   "recorded (only JSON values are), so the flow cannot be called the same way")
