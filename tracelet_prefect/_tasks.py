"""``tracelet_task``, ``log_artifact`` and ``load_artifact``: Prefect tasks over the core API.

A tracelet task is a ``prefect.Task`` (``TraceletTask``) whose function is wrapped: before the
user's function runs, ``LoggedArtifact`` arguments, also inside any list, tuple or dict (named
tuples, ``OrderedDict``, ``.map()``'s ``PrefectFutureList``...), are loaded to their values
(unless the parameter is annotated ``LoggedArtifact``); after it returns, the value is logged as
one version whose producer is the Prefect task run and whose inputs are those versions plus
what upstream ``load_artifact`` runs read into the plain values it received (confirmed, see
``_runs``); the task returns the ``LoggedArtifact``. Every Prefect task option passes through
untouched, tracelet's own ones go through ``with_options`` too, the cache key includes the store
the task logs to, and the wrapper runs wherever Prefect runs the task (a thread, an event loop,
a Dask worker process).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import inspect
import os
import typing
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, overload

from prefect import Task, task
from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.context import TaskRunContext
from prefect.futures import PrefectFutureList
from prefect.utilities.hashing import hash_objects
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
from tracelet_core._reproduce import identical_original

from ._commit import Outcome, build_artifact, commit, resolve_backends, set_aliases
from ._flow_end import PUBLISH_FLUSH_SECONDS, defers
from ._openlineage import task_lineage
from ._reproduce import keeps_aliases, note_logged, pinned, pinned_ref, rerun_of
from ._runs import TaskRun
from ._stores import StoreSpec
from ._transactions import enclosing_transaction, release
from ._ui import finish_run

P = ParamSpec("P")
R = TypeVar("R")
StoreLike = ArtifactStore | str | os.PathLike[str] | None
_AsyncLogged = Coroutine[Any, Any, LoggedArtifact]
#: Values never worth confirming as a loaded object: Prefect cannot track them either.
_UNTRACKABLE = (bool, type(None), type(Ellipsis), type(NotImplemented))


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


def _rebuilt(original: Any, items: list[Any]) -> Any:
    """A sequence like ``original`` holding ``items`` (as Prefect rebuilds one)."""
    if isinstance(original, PrefectFutureList):
        return items  # its items are values now, not futures
    if hasattr(type(original), "_make"):  # a named tuple
        return type(original)._make(items)
    try:
        return type(original)(items)
    except TypeError:  # a subclass whose constructor takes something else
        return list(items) if isinstance(original, list) else tuple(items)


def _rebuilt_mapping(original: dict[Any, Any], values: dict[Any, Any]) -> dict[Any, Any]:
    """A mapping like ``original`` (same class, ``defaultdict``'s factory...) with ``values``."""
    try:
        rebuilt = copy.copy(original)
        rebuilt.update(values)
        return rebuilt
    except TypeError:
        return dict(values)


@dataclass
class _Found:
    """What walking one parameter's value found."""

    versions: list[LoggedArtifact] = dataclasses.field(default_factory=list)
    #: the other objects in it, any depth: candidates for a confirmed ``load_artifact`` edge
    plain: list[Any] = dataclasses.field(default_factory=list)


def _load(value: Any, found: _Found, keep: bool, parameter: str, allow_pickle: bool | None = None) -> Any:
    """``value`` with every ``LoggedArtifact`` in it (in any list, tuple or dict, subclasses
    included) replaced by its loaded value, unless ``keep``."""
    if isinstance(value, LoggedArtifact):
        value = pinned(value)  # the recorded version, when a ``reproduce`` reruns the flow
        found.versions.append(value)
        if keep:
            return value
        try:
            return value.load(allow_pickle=allow_pickle)
        except ArtifactNotFoundError as exc:
            raise TypeError(f"parameter {parameter!r}: {value.ref} cannot be loaded to one value ({exc}); "
                            "annotate the parameter as LoggedArtifact to receive the version itself") from exc
    versions_before = len(found.versions)
    result = value
    if isinstance(value, (list, tuple)):
        items = [_load(v, found, keep, parameter, allow_pickle) for v in value]
        if isinstance(value, PrefectFutureList) or any(new is not old for new, old in zip(items, value, strict=True)):
            result = _rebuilt(value, items)
    elif isinstance(value, dict):
        values = {k: _load(v, found, keep, parameter, allow_pickle) for k, v in value.items()}
        if any(values[k] is not v for k, v in value.items()):
            result = _rebuilt_mapping(value, values)
    # A container of versions is not something a load returned; any other object may be.
    if len(found.versions) == versions_before and not isinstance(value, _UNTRACKABLE):
        found.plain.append(value)
    return result


@dataclass
class _Arguments:
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    versions: list[LoggedArtifact]
    #: parameter -> the plain objects it received (where an upstream load may have come from)
    plain: dict[str, list[Any]]


def _prepare(signature: inspect.Signature, keep: frozenset[str], args: tuple[Any, ...],
             kwargs: dict[str, Any], allow_pickle: bool | None = None) -> _Arguments:
    bound = signature.bind(*args, **kwargs)
    versions: list[LoggedArtifact] = []
    plain: dict[str, list[Any]] = {}
    for name, value in list(bound.arguments.items()):
        found = _Found()
        bound.arguments[name] = _load(value, found, name in keep, name, allow_pickle)
        versions.extend(found.versions)
        plain[name] = found.plain
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
    #: pickle allowed for this task's value and inputs (``None``: ``TRACELET_ALLOW_PICKLE``)
    allow_pickle: bool | None = None


def _spec(fn: Callable[..., Any], artifact_name: str | None, artifact_type: ArtifactType | str,
          aliases: Sequence[str] | str, backends: Sequence[str] | str | None, store: StoreLike | StoreSpec,
          allow_pickle: bool | None = None) -> _Spec:
    """Checked options (a bad name or type raises now, not when the task runs)."""
    if artifact_name is not None:
        TraceletArtifact(artifact_name)  # raises InvalidArtifactError for a bad name
    doc = inspect.getdoc(fn)
    return _Spec(artifact_name=artifact_name, fallback_name=fn.__name__, artifact_type=coerce_type(artifact_type),
                 aliases=(aliases,) if isinstance(aliases, str) else tuple(aliases),
                 backends=((backends,) if isinstance(backends, str) else tuple(backends))
                 if backends is not None else None,
                 store=store if isinstance(store, StoreSpec) else StoreSpec.of(store),
                 description=doc.splitlines()[0] if doc else None, allow_pickle=allow_pickle)


class _Run:
    """One execution of a tracelet task: context, store, backends and inputs."""

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec
        self.run = TaskRun.current(spec.fallback_name)
        self.store = spec.store.open()
        # Unknown or unavailable backends fail the task before the user's function runs.
        self.backends: dict[str, Backend] = resolve_backends(spec.backends, self.store.settings)
        self.transaction = enclosing_transaction(self.run)
        #: the flow run that flushes what this run queues (``None``: nothing is queued)
        self.scope = defers(self.run)
        self.inputs: list[str] = []
        #: the task's own switch, else the store's settings (``TRACELET_ALLOW_PICKLE``)
        self.allow_pickle = spec.allow_pickle if spec.allow_pickle is not None else self.store.settings.allow_pickle

    def arguments(self, signature: inspect.Signature, keep: frozenset[str], args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> _Arguments:
        prepared = _prepare(signature, keep, args, kwargs, self.allow_pickle)
        graph = self.run.confirmed_inputs(self.store, prepared.plain) if self.run.upstream else []
        self.inputs = list(dict.fromkeys([*(v.ref for v in prepared.versions), *graph]))
        return prepared

    def commit(self, value: Any) -> Outcome:
        spec = self.spec
        artifact = build_artifact(value, spec.artifact_name, spec.artifact_type, spec.fallback_name,
                                  spec.description, allow_pickle=self.allow_pickle)
        same = identical_original(self.store, artifact, rerun_of())
        outcome = Outcome(logged=same, created=False) if same is not None else commit(
            self.store, artifact, run=self.run, inputs=self.inputs, aliases=keeps_aliases(spec.aliases),
            backends=self.backends, stage=self.transaction is not None, scope=self.scope)
        note_logged(outcome.logged)
        return outcome

    def release(self, outcome: Outcome) -> None:
        release(self.store, outcome, self.run, self.transaction)
        if self.scope is None and self.run.flow_run_id is not None:
            # no flow run engine here to flush it (a process pool or Dask worker): now
            finish_run(self.run.flow_run_id, PUBLISH_FLUSH_SECONDS)


def _wrap(fn: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    signature = inspect.signature(fn)
    keep = _version_parameters(fn, signature)

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> LoggedArtifact:
            run = await asyncio.to_thread(_Run, spec)
            with task_lineage(run.store, spec.store, run.run):  # OpenLineage: START, then COMPLETE/FAIL
                prepared = await asyncio.to_thread(run.arguments, signature, keep, args, kwargs)
                value = await fn(*prepared.args, **prepared.kwargs)
                outcome = await asyncio.to_thread(run.commit, value)
                run.release(outcome)
            return outcome.logged

        return run_async

    @functools.wraps(fn)
    def run_sync(*args: Any, **kwargs: Any) -> LoggedArtifact:
        run = _Run(spec)
        with task_lineage(run.store, spec.store, run.run):  # OpenLineage: START, then COMPLETE/FAIL
            prepared = run.arguments(signature, keep, args, kwargs)
            value = fn(*prepared.args, **prepared.kwargs)
            outcome = run.commit(value)
            run.release(outcome)
        return outcome.logged

    return run_sync


# -- the task -------------------------------------------------------------------------------
@dataclass
class StoreCacheKey(CachePolicy):
    """A cache policy's key, extended with the store the task logs to in the running process:
    a cached ``LoggedArtifact`` is reused only against the store it lives in. No key from the
    wrapped policy (nothing to cache on) stays no key."""

    policy: CachePolicy | None = None
    store: StoreSpec | None = None

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        assert self.policy is not None and self.store is not None
        key = self.policy.compute_key(task_ctx=task_ctx, inputs=inputs, flow_parameters=flow_parameters, **kwargs)
        if key is None:
            return None
        return hash_objects(key, self.store.identity(), raise_on_failure=True)

    def __sub__(self, other: str) -> CachePolicy:
        assert self.policy is not None
        return dataclasses.replace(self, policy=self.policy - other)


class TraceletTask(Task[P, R]):
    """A Prefect task whose return value is logged (what ``tracelet_task`` makes)."""

    def __init__(self, user_fn: Callable[P, Any], spec: _Spec, **task_options: Any) -> None:
        super().__init__(fn=_wrap(user_fn, spec), **task_options)
        self._user_fn = user_fn
        self._spec = spec
        self._store_aware_cache_key()

    def _store_aware_cache_key(self) -> None:
        policy = self.cache_policy
        if not isinstance(policy, CachePolicy) or isinstance(policy, (StoreCacheKey, type(NO_CACHE))):
            return
        keyed: CachePolicy = StoreCacheKey(policy=policy, store=self._spec.store, key_storage=policy.key_storage,
                                           isolation_level=policy.isolation_level, lock_manager=policy.lock_manager)
        self.cache_policy = keyed  # type: ignore[assignment]  # Prefect types it by its first assignment

    def with_options(self, *, artifact_name: Any = dataclasses.MISSING, artifact_type: Any = dataclasses.MISSING,
                     aliases: Any = dataclasses.MISSING, backends: Any = dataclasses.MISSING,
                     store: Any = dataclasses.MISSING, allow_pickle: Any = dataclasses.MISSING,
                     **task_options: Any) -> TraceletTask[P, R]:
        """A copy with other options: tracelet's (``artifact_name``, ``artifact_type``,
        ``aliases``, ``backends``, ``store``, ``allow_pickle``) and any of ``Task.with_options``."""
        spec = self._spec
        chosen: dict[str, Any] = {"artifact_name": spec.artifact_name, "artifact_type": spec.artifact_type,
                  "aliases": spec.aliases, "backends": spec.backends, "store": spec.store,
                  "allow_pickle": spec.allow_pickle}
        given = {"artifact_name": artifact_name, "artifact_type": artifact_type, "aliases": aliases,
                 "backends": backends, "store": store, "allow_pickle": allow_pickle}
        chosen.update({k: v for k, v in given.items() if v is not dataclasses.MISSING})
        new_spec = _spec(self._user_fn, **chosen)
        plain = super().with_options(**task_options)  # a prefect.Task over the old spec's wrapper
        copied: TraceletTask[P, R] = object.__new__(type(self))
        copied.__dict__.update(plain.__dict__)
        copied.fn = _wrap(self._user_fn, new_spec)
        copied._user_fn = self._user_fn
        copied._spec = new_spec
        copied._store_aware_cache_key()
        return copied


# -- the decorator --------------------------------------------------------------------------
class _TraceletDecorator(Protocol):
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, Any]], /) -> TraceletTask[P, _AsyncLogged]:
        ...

    @overload
    def __call__(self, fn: Callable[P, Any], /) -> TraceletTask[P, LoggedArtifact]:
        ...


@overload
def tracelet_task(
        artifact_name: Callable[P, Coroutine[Any, Any, Any]], /) -> TraceletTask[P, _AsyncLogged]:
    ...


@overload
def tracelet_task(artifact_name: Callable[P, Any], /) -> TraceletTask[P, LoggedArtifact]:
    ...


@overload
def tracelet_task(artifact_name: str | None = None, artifact_type: ArtifactType | str = "custom",
                  aliases: Sequence[str] = (), backends: Sequence[str] | None = None, *,
                  store: StoreLike = None, allow_pickle: bool | None = None,
                  **task_options: Any) -> _TraceletDecorator:
    ...


def tracelet_task(artifact_name: Any = None, artifact_type: ArtifactType | str = "custom",
                  aliases: Sequence[str] = (), backends: Sequence[str] | None = None, *,
                  store: StoreLike = None, allow_pickle: bool | None = None, **task_options: Any) -> Any:
    """Make a Prefect task whose return value is logged as one version of ``artifact_name``.

    Args:
        artifact_name: the artifact's name (default: the function's name; a returned
            ``TraceletArtifact`` brings its own).
        artifact_type: an ``ArtifactType`` (or its value) for the logged version.
        aliases: aliases moved onto every version the task logs (or returns unchanged).
        backends: backend names the version is routed to (default: ``TRACELET_BACKENDS``).
        store: an ``ArtifactStore``, a path or a URL (default: ``TRACELET_STORE_URI`` /
            ``TRACELET_CATALOG_URL`` in the process that runs the task).
        allow_pickle: let this task store a value only pickle can hold, and load pickled
            inputs (default: ``TRACELET_ALLOW_PICKLE``); without it such a value fails the task
            with a message naming both switches.
        **task_options: anything ``prefect.task`` accepts (``retries``, ``cache_policy``,
            ``tags``, ``timeout_seconds``, ``name``, ...), passed through untouched; the
            cache key of any cache policy is extended with the store the task logs to.

    The value is logged as the object ``value`` (``add_object(value, "value", "auto")``); a
    PyTorch module or scikit-learn estimator goes through ``add_model``; a returned
    ``TraceletArtifact`` is logged as it is. The task returns the ``LoggedArtifact``;
    ``task.with_options(artifact_name=..., aliases=..., ...)`` makes a copy with other options.
    """
    if callable(artifact_name):  # used bare: @tracelet_task
        return tracelet_task()(artifact_name)
    if artifact_name is not None:
        TraceletArtifact(artifact_name)  # raises InvalidArtifactError for a bad name, now
    coerce_type(artifact_type)
    spec_store = StoreSpec.of(store)

    def decorate(fn: Callable[..., Any]) -> TraceletTask[..., Any]:
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(f"{fn.__name__} is a generator; a tracelet task logs one return value")
        return TraceletTask(fn, _spec(fn, artifact_name, artifact_type, aliases, backends, spec_store, allow_pickle),
                            **task_options)

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
    lineage. Inside a Prefect transaction the alias moves wait for its commit."""
    alias_list = keeps_aliases([aliases] if isinstance(aliases, str) else aliases)
    if isinstance(artifact, LoggedArtifact):
        run, opened = _current_run(store, artifact.store)
        if not alias_list:
            return artifact
        transaction = enclosing_transaction(run)
        outcome = set_aliases(opened, artifact, alias_list, stage=transaction is not None)
    elif isinstance(artifact, TraceletArtifact):
        run, opened = _current_run(store)
        transaction = enclosing_transaction(run)
        refs = [i.ref if isinstance(i, LoggedArtifact) else i for i in inputs]
        outcome = commit(opened, artifact, run=run, inputs=list(dict.fromkeys(refs)), aliases=alias_list,
                         backends=resolve_backends(backends, opened.settings), stage=transaction is not None,
                         scope=defers(run))
    else:
        raise InvalidArtifactError(f"log_artifact needs a TraceletArtifact or a LoggedArtifact, "
                                   f"got {type(artifact).__name__}")
    release(opened, outcome, run, transaction)
    return outcome.logged


class _NoDefault:
    """``load_artifact``'s ``default`` when none is given (a missing ref then raises)."""

    def __repr__(self) -> str:
        return "<no default>"


_NO_DEFAULT: Any = _NoDefault()


@task(name="load_artifact", cache_policy=NO_CACHE)
def load_artifact(ref: str | LoggedArtifact, object_name: str | None = None, *,
                  allow_pickle: bool | None = None, store: StoreLike = None, default: Any = _NO_DEFAULT) -> Any:
    """Load ``name:alias`` (or ``name:vN``, ``name:latest``) into a value: the version's only
    object, or ``object_name``. The version read is recorded under this task run, so a tracelet
    task that receives the value records it as an input. With ``default``, a ref that names no
    version (no such name, number or alias: "no production model yet") returns ``default``
    instead of raising ``ArtifactNotFoundError``."""
    if isinstance(ref, LoggedArtifact):
        logged = pinned(ref)
        opened = logged.store if store is None else StoreSpec.of(store).open()
    else:
        opened = StoreSpec.of(store).open()
        try:
            logged = opened.get(pinned_ref(ref))
        except ArtifactNotFoundError:
            if default is _NO_DEFAULT:
                raise
            return default
    run = TaskRun.current("load_artifact")
    producer = run.producer
    if producer is not None:
        opened.record_consumption(producer, [logged.ref])
    return logged.load(object_name, allow_pickle=allow_pickle)
