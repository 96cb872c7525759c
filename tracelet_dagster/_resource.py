"""``TraceletResource``: the core API inside ops and assets, with the Dagster run filled in.

``log`` commits a version produced by the current step (``RunInfo(orchestrator="dagster",
run_id, step, partition)``) whose inputs are what the step read, through this resource's
``get`` or the ``TraceletIOManager`` on the same store (both record reads in the store's
catalog), plus any ``inputs=`` given.
``experiment()`` opens a core ``Experiment`` whose run is the current step, for code written
against the Experiment API (backends, automagic capture). The current step comes from the
``context`` argument or, when omitted, from Dagster's current execution context.

Unlike the IO manager, whose errors surface as a step ``Failure``, the resource raises tracelet's
own errors (``ArtifactNotFoundError`` is a ``KeyError``), so the op can handle them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dagster import AssetExecutionContext, ConfigurableResource, OpExecutionContext
from pydantic import Field, PrivateAttr

from tracelet_core import Experiment, LoggedArtifact, RunInfo, TraceletArtifact

from ._io_manager import StoreAccess, StoreSlot, commit, step_reader

ComputeContext = OpExecutionContext | AssetExecutionContext


def _op_context(context: ComputeContext | None) -> OpExecutionContext:
    if context is None:
        return OpExecutionContext.get()
    return context.op_execution_context if isinstance(context, AssetExecutionContext) else context


def _step_key(context: OpExecutionContext) -> str:
    mapping_key = context.get_mapping_key()
    return f"{context.op_handle}[{mapping_key}]" if mapping_key else str(context.op_handle)


class TraceletResource(StoreAccess, ConfigurableResource):
    """tracelet's store for ops and assets: ``log``, ``get``, ``load`` and ``experiment``."""

    store_uri: str | None = Field(
        default=None, description="Folder or fsspec URL of the store (default: TRACELET_STORE_URI).")
    catalog_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the catalog (default: TRACELET_CATALOG_URL).")
    backends: list[str] = Field(
        default_factory=list, description="Trackers every logged version is routed to.")
    allow_pickle: bool | None = Field(
        default=None, description="Allow loading pickled entries (default: TRACELET_ALLOW_PICKLE, false).")

    _slot: StoreSlot = PrivateAttr(default_factory=StoreSlot)

    def run_info(self, context: ComputeContext | None = None) -> RunInfo:
        """The current step as a tracelet run."""
        op_context = _op_context(context)
        partition = str(op_context.partition_key) if op_context.has_partition_key else None
        return step_reader(op_context.run_id, _step_key(op_context), op_context.job_name, partition)

    def log(self, artifact: TraceletArtifact, *, inputs: Iterable[str | LoggedArtifact] = (),
            aliases: Iterable[str] = (), context: ComputeContext | None = None) -> LoggedArtifact:
        """Commit ``artifact`` as a version produced by the current step."""
        op_context = _op_context(context)
        extra = [i.ref if isinstance(i, LoggedArtifact) else i for i in inputs]
        producer = self.run_info(op_context)
        read = [v.ref for v in self.store.consumed(producer)]
        logged, _results = commit(self.store, artifact, producer=producer,
                                  inputs=list(dict.fromkeys([*read, *extra])), aliases=list(aliases),
                                  idempotency_key=None, partition=producer.partition, backends=self.backends)
        op_context.log.info(f"tracelet: logged {logged.ref} ({logged.digest[:19]})")
        return logged

    def get(self, ref: str, version: str | None = None, *, context: ComputeContext | None = None) -> LoggedArtifact:
        """A version (``"name:v3"``, ``"name:production"`` or name + version); recorded as read by
        the current step, so what it logs next lists it as an input."""
        op_context = _op_context(context)
        logged = self.store.get(ref, version)
        self.store.record_consumption(self.run_info(op_context), [logged.ref])
        return logged

    def load(self, ref: str, version: str | None = None, *, name: str | None = None,
             context: ComputeContext | None = None) -> Any:
        """``get(ref).load(name)`` with this resource's ``allow_pickle``."""
        return self.get(ref, version, context=context).load(name, allow_pickle=self.allow_pickle)

    def experiment(self, name: str | None = None, *, backend: str | list[str] | None = None,
                   context: ComputeContext | None = None, **options: Any) -> Experiment:
        """A core ``Experiment`` on this store whose run is the current step (not started)."""
        run = self.run_info(context)
        chosen = backend if backend is not None else (self.backends or None)
        experiment = Experiment(name or run.step or run.run_id, backend=chosen, store=self.store, **options)
        experiment.run = run
        return experiment
