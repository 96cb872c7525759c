"""``tracelet_task``, ``log_artifact`` and ``load_artifact``: Prefect tasks over the core API.

A tracelet task is a plain ``prefect.Task`` whose function is wrapped: before the user's
function runs, ``LoggedArtifact`` arguments are loaded to their values (unless the parameter
is annotated ``LoggedArtifact``); after it returns, the value is logged as one version whose
producer is the Prefect task run and whose inputs are those versions plus what upstream
``load_artifact`` runs read; the task returns the ``LoggedArtifact``. Every Prefect task option
passes through untouched, and the wrapper runs wherever Prefect runs the task (a thread, an
event loop, a Dask worker process).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import typing
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, overload

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from typing_extensions import ParamSpec

from tracelet_core import (
    ArtifactNotFoundError,
    ArtifactStore,
    ArtifactType,
    Backend,
    InvalidArtifactError,
    LoggedArtifact,
    TraceletArtifact,
)
from tracelet_core._artifact import coerce_type

from ._commit import Outcome, build_artifact, commit, resolve_backends, set_aliases
from ._runs import TaskRun, consumed_refs
from ._stores import StoreSpec
from ._ui import apublish, publish

P = ParamSpec("P")
R = TypeVar("R")
StoreLike = ArtifactStore | str | os.PathLike[str] | None


# -- arguments ------------------------------------------------------------------------------
def _wants_versions(annotation: Any) -> bool:
    """Whether a parameter annotation asks for ``LoggedArtifact`` objects, not values."""
    if annotation is inspect.Parameter.empty or annotation is None:
        return False
    if isinstance(annotation, str):
        return "LoggedArtifact" in annotation
    if isinstance(annotation, type) and issubclass(annotation, LoggedArtifact):
        return True
    return any(_wants_versions(arg) for arg in typing.get_args(annotation))


def _version_parameters(fn: Callable[..., Any], signature: inspect.Signature) -> frozenset[str]:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable forward references: read the raw annotations
        hints = {name: p.annotation for name, p in signature.parameters.items()}
    return frozenset(name for name in signature.parameters if _wants_versions(hints.get(name)))


def _load(value: Any, found: list[LoggedArtifact], keep: bool, parameter: str) -> Any:
    """``value`` with every ``LoggedArtifact`` in it (also inside lists, tuples and dicts)
    replaced by its loaded value, unless ``keep``; the versions are collected in ``found``."""
    if isinstance(value, LoggedArtifact):
        found.append(value)
        if keep:
            return value
        try:
            return value.load()
        except ArtifactNotFoundError as exc:
            raise TypeError(f"parameter {parameter!r}: {value.ref} cannot be loaded to one value ({exc}); "
                            "annotate the parameter as LoggedArtifact to receive the version itself") from exc
    if type(value) in (list, tuple):
        return type(value)(_load(v, found, keep, parameter) for v in value)
    if type(value) is dict:
        return {k: _load(v, found, keep, parameter) for k, v in value.items()}
    return value


@dataclass
class _Arguments:
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    versions: list[LoggedArtifact]
    #: parameters that received no ``LoggedArtifact``: their upstream task runs are looked up
    plain: list[str]


def _prepare(signature: inspect.Signature, keep: frozenset[str], args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> _Arguments:
    bound = signature.bind(*args, **kwargs)
    versions: list[LoggedArtifact] = []
    plain: list[str] = []
    for name, value in list(bound.arguments.items()):
        before = len(versions)
        bound.arguments[name] = _load(value, versions, name in keep, name)
        if len(versions) == before:
            plain.append(name)
    return _Arguments(bound.args, bound.kwargs, versions, plain)


# -- one task run ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Spec:
    """What a tracelet task logs, fixed when it is decorated (and pickled with the task)."""

    artifact_name: str | None
    fallback_name: str
    artifact_type: ArtifactType
    aliases: tuple[str, ...]
    backends: tuple[str, ...] | None
    store: StoreSpec
    description: str | None


class _Run:
    """One execution of a tracelet task: context, store, backends and inputs."""

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec
        self.run = TaskRun.current(spec.fallback_name)
        self.store = spec.store.open()
        # Unknown or unavailable backends fail the task before the user's function runs.
        self.backends: dict[str, Backend] = resolve_backends(spec.backends, self.store.settings)
        self.inputs: list[str] = []

    def arguments(self, signature: inspect.Signature, keep: frozenset[str], args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> _Arguments:
        prepared = _prepare(signature, keep, args, kwargs)
        graph = consumed_refs(self.store, self.run.upstream_runs(prepared.plain))
        self.inputs = list(dict.fromkeys([*(v.ref for v in prepared.versions), *graph]))
        return prepared

    def commit(self, value: Any) -> Outcome:
        spec = self.spec
        artifact = build_artifact(value, spec.artifact_name, spec.artifact_type, spec.fallback_name,
                                  spec.description)
        return commit(self.store, artifact, run=self.run, inputs=self.inputs, aliases=spec.aliases,
                      backends=self.backends)


def _wrap(fn: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    signature = inspect.signature(fn)
    keep = _version_parameters(fn, signature)

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> LoggedArtifact:
            run = await asyncio.to_thread(_Run, spec)
            prepared = await asyncio.to_thread(run.arguments, signature, keep, args, kwargs)
            value = await fn(*prepared.args, **prepared.kwargs)
            outcome = await asyncio.to_thread(run.commit, value)
            await apublish(outcome, run.run)
            return outcome.logged

        return run_async

    @functools.wraps(fn)
    def run_sync(*args: Any, **kwargs: Any) -> LoggedArtifact:
        run = _Run(spec)
        prepared = run.arguments(signature, keep, args, kwargs)
        value = fn(*prepared.args, **prepared.kwargs)
        outcome = run.commit(value)
        publish(outcome, run.run)
        return outcome.logged

    return run_sync


# -- the decorator --------------------------------------------------------------------------
class _TraceletDecorator(Protocol):
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, Any]], /) -> Task[P, Coroutine[Any, Any, LoggedArtifact]]:
        ...

    @overload
    def __call__(self, fn: Callable[P, Any], /) -> Task[P, LoggedArtifact]:
        ...


@overload
def tracelet_task(
        artifact_name: Callable[P, Coroutine[Any, Any, Any]], /) -> Task[P, Coroutine[Any, Any, LoggedArtifact]]:
    ...


@overload
def tracelet_task(artifact_name: Callable[P, Any], /) -> Task[P, LoggedArtifact]:
    ...


@overload
def tracelet_task(artifact_name: str | None = None, artifact_type: ArtifactType | str = "custom",
                  aliases: Sequence[str] = (), backends: Sequence[str] | None = None, *,
                  store: StoreLike = None, **task_options: Any) -> _TraceletDecorator:
    ...


def tracelet_task(artifact_name: Any = None, artifact_type: ArtifactType | str = "custom",
                  aliases: Sequence[str] = (), backends: Sequence[str] | None = None, *,
                  store: StoreLike = None, **task_options: Any) -> Any:
    """Make a Prefect task whose return value is logged as one version of ``artifact_name``.

    Args:
        artifact_name: the artifact's name (default: the function's name; a returned
            ``TraceletArtifact`` brings its own).
        artifact_type: an ``ArtifactType`` (or its value) for the logged version.
        aliases: aliases moved onto every version the task logs (or returns unchanged).
        backends: backend names the version is routed to (default: ``TRACELET_BACKENDS``).
        store: an ``ArtifactStore``, a path or a URL (default: ``TRACELET_STORE_URI`` /
            ``TRACELET_CATALOG_URL`` in the process that runs the task).
        **task_options: anything ``prefect.task`` accepts (``retries``, ``cache_policy``,
            ``tags``, ``timeout_seconds``, ``name``, ...), passed through untouched.

    The value is logged as the object ``value`` (``add_object(value, "value", "auto")``); a
    PyTorch module or scikit-learn estimator goes through ``add_model``; a returned
    ``TraceletArtifact`` is logged as it is. The task returns the ``LoggedArtifact``.
    """
    if callable(artifact_name):  # used bare: @tracelet_task
        return tracelet_task()(artifact_name)
    if artifact_name is not None:
        TraceletArtifact(artifact_name)  # raises InvalidArtifactError for a bad name, now
    kind = coerce_type(artifact_type)
    alias_tuple = (aliases,) if isinstance(aliases, str) else tuple(aliases)
    if isinstance(backends, str):
        backends = [backends]
    spec_store = StoreSpec.of(store)

    def decorate(fn: Callable[..., Any]) -> Task[..., Any]:
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(f"{fn.__name__} is a generator; a tracelet task logs one return value")
        doc = inspect.getdoc(fn)
        spec = _Spec(artifact_name=artifact_name, fallback_name=fn.__name__, artifact_type=kind,
                     aliases=alias_tuple, backends=tuple(backends) if backends is not None else None,
                     store=spec_store, description=doc.splitlines()[0] if doc else None)
        return Task(fn=_wrap(fn, spec), **task_options)

    return decorate


# -- plain tasks ----------------------------------------------------------------------------
def _current_run(store: StoreLike, fallback: ArtifactStore | None = None) -> tuple[TaskRun, ArtifactStore]:
    run = TaskRun.current("log_artifact")
    if store is None and fallback is not None:
        return run, fallback
    return run, StoreSpec.of(store).open()


@task(name="log_artifact", cache_policy=NO_CACHE)
def log_artifact(artifact: TraceletArtifact | LoggedArtifact, aliases: Sequence[str] = (),
                 inputs: Iterable[str | LoggedArtifact] = (), backends: Sequence[str] | None = None,
                 store: StoreLike = None) -> LoggedArtifact:
    """Log a hand-built ``TraceletArtifact`` (producer: this task run), or, given a
    ``LoggedArtifact``, move ``aliases`` onto it (a promotion). ``inputs`` are recorded as its
    lineage, with what upstream ``load_artifact`` runs read."""
    alias_list = [aliases] if isinstance(aliases, str) else list(aliases)
    if isinstance(artifact, LoggedArtifact):
        run, opened = _current_run(store, artifact.store)
        if not alias_list:
            return artifact
        outcome = set_aliases(opened, artifact, alias_list)
    elif isinstance(artifact, TraceletArtifact):
        run, opened = _current_run(store)
        refs = [i.ref if isinstance(i, LoggedArtifact) else i for i in inputs]
        graph = consumed_refs(opened, run.upstream_runs(["artifact"]))
        outcome = commit(opened, artifact, run=run, inputs=list(dict.fromkeys([*refs, *graph])),
                         aliases=alias_list, backends=resolve_backends(backends, opened.settings))
    else:
        raise InvalidArtifactError(f"log_artifact needs a TraceletArtifact or a LoggedArtifact, "
                                   f"got {type(artifact).__name__}")
    publish(outcome, run)
    return outcome.logged


@task(name="load_artifact", cache_policy=NO_CACHE)
def load_artifact(ref: str | LoggedArtifact, object_name: str | None = None, *,
                  allow_pickle: bool | None = None, store: StoreLike = None) -> Any:
    """Load ``name:alias`` (or ``name:vN``, ``name:latest``) into a value: the version's only
    object, or ``object_name``. The version read is recorded under this task run, so a tracelet
    task that receives the value records it as an input."""
    if isinstance(ref, LoggedArtifact):
        logged = ref
        opened = logged.store if store is None else StoreSpec.of(store).open()
    else:
        opened = StoreSpec.of(store).open()
        logged = opened.get(ref)
    run = TaskRun.current("load_artifact")
    producer = run.producer
    if producer is not None:
        opened.record_consumption(producer, [logged.ref])
    return logged.load(object_name, allow_pickle=allow_pickle)
