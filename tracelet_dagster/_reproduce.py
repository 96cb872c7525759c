"""``reproduce(ref, definitions)``: run the Dagster step that produced a version again, on the
exact input versions it recorded, and report whether the result is identical.

What runs
    An asset's version (version metadata ``dagster/asset_key``) reruns that asset, and the
    partition its producer recorded, from ``definitions``' implicit asset job (with the other
    assets of a multi-asset that cannot be subset). An op output in a job reruns the op and the
    ops upstream of it (``op_selection=["*<op>"]``) in the job its producer named.

What it reads
    Every input the version recorded is pinned through the ``tracelet/pins`` run tag (the IO
    manager's ordinary pins, which win over what an upstream step logged in the run), except the
    outputs of the ops inside the asset's own graph (a graph-backed asset), which the rerun
    computes again. The ``tracelet/reproduce`` tag makes the IO manager move no alias.

What comes back
    The version the rerun logged for the original's name (from the run's ``HANDLED_OUTPUT``
    events), read from ``store``; identical content gives the original back (``created=False``)
    even when newer versions of the name exist: the IO manager compares the output with the
    original before logging (``identical_original``).
"""

from __future__ import annotations

from typing import Any

from dagster import AssetKey, AssetSelection, DagsterEventType, DagsterInstance, Definitions
from dagster._core.errors import DagsterError

from tracelet_core import ArtifactNotFoundError, ArtifactStore, ConfigurationError, LoggedArtifact, NotReproducibleError
from tracelet_core._reproduce import ReproduceReport, recorded_pins, reproduce_report, require_producer

from . import _keys
from ._io_manager import ORCHESTRATOR, _node_path, _refs_in, format_pins, plain_value

_HOW = "tracelet_dagster.reproduce"


def reproduce(ref: str | LoggedArtifact, definitions: Definitions, *, store: ArtifactStore | None = None,
              instance: DagsterInstance | None = None) -> ReproduceReport:
    """Run the asset (and partition) or op that produced ``ref`` again, from ``definitions``, in
    a new Dagster run (on ``instance``, default an ephemeral one) in which every input loads the
    version ``ref`` recorded. The output is logged as usual, no alias moves.

    Raises ``NotReproducibleError`` when a Dagster step did not produce ``ref`` or
    ``definitions`` lack its asset or job; the run's own failure is raised as Dagster raises it.
    """
    store = store if store is not None else ArtifactStore.shared()
    original = ref if isinstance(ref, LoggedArtifact) else store.get(ref)
    require_producer(original, ORCHESTRATOR, _HOW)
    producer = original.producer
    assert producer is not None and producer.step is not None
    pins = recorded_pins(original)
    tags = {_keys.REPRODUCE_TAG: original.ref}
    asset_path = original.metadata.get(_keys.ASSET_KEY)
    run_instance = instance if instance is not None else DagsterInstance.ephemeral()
    if isinstance(asset_path, list):  # the ops of the asset's own graph compute their outputs again
        graph_ops = _node_path(producer.step).split(".")[0] + "."
        pins = {name: selector for name, selector in pins.items() if not name.startswith(graph_ops)}
    if pins:
        tags[_keys.PINS_TAG] = format_pins(pins)
    if isinstance(asset_path, list):
        key = AssetKey([str(part) for part in asset_path])
        result = _run_asset(definitions, key, original, producer.partition, tags, run_instance)
    else:
        result = _run_op(definitions, original, producer.name, producer.step, producer.partition, tags, run_instance)
    reproduced = _logged_by(result, original, store)
    return reproduce_report(original, reproduced, result.run_id)


def _run_asset(definitions: Definitions, key: AssetKey, original: LoggedArtifact, partition: str | None,
               tags: dict[str, str], instance: DagsterInstance) -> Any:
    if key not in set(definitions.resolve_all_asset_keys()):
        raise NotReproducibleError(f"{original.ref} was made by the asset {key.to_user_string()!r}, which these "
                                   "definitions do not define")
    graph = definitions.resolve_asset_graph()
    selected = AssetSelection.assets(key).required_multi_asset_neighbors().resolve(graph)
    job = definitions.resolve_implicit_job_def_def_for_assets(list(selected))
    if job is None:
        raise NotReproducibleError(f"no job of these definitions materializes {key.to_user_string()!r}")
    return job.execute_in_process(instance=instance, asset_selection=sorted(selected), partition_key=partition,
                                  tags=tags)


def _run_op(definitions: Definitions, original: LoggedArtifact, job_name: str | None, step: str,
            partition: str | None, tags: dict[str, str], instance: DagsterInstance) -> Any:
    try:
        job = definitions.resolve_job_def(str(job_name))
    except DagsterError as error:
        raise NotReproducibleError(f"{original.ref} was made by the op {step!r} of the job {job_name!r}, which these "
                                   f"definitions do not define") from error
    return job.execute_in_process(instance=instance, op_selection=[f"*{_node_path(step)}"], partition_key=partition,
                                  tags=tags)


def _logged_by(result: Any, original: LoggedArtifact, store: ArtifactStore) -> LoggedArtifact:
    """The version of ``original``'s name (and partition) that the run's IO manager logged."""
    partition = original.producer.partition if original.producer is not None else None
    for event in result.all_events:
        if event.event_type != DagsterEventType.HANDLED_OUTPUT:
            continue
        metadata = event.event_specific_data.metadata
        refs = _refs_in(metadata)
        found = refs.get(partition) if partition in refs else next(iter(refs.values()), None)
        if found is None or found.rpartition(":")[0] != original.name:
            continue
        try:
            logged = store.get(found)
        except ArtifactNotFoundError:
            logged = None
        if logged is None or logged.digest != plain_value(metadata.get(_keys.DIGEST, logged.digest)):
            raise ConfigurationError(f"the rerun logged {found}, but not in {store.uri}: the definitions' "
                                     "IO manager writes to another store")
        logged.created = bool(plain_value(metadata.get(_keys.NEW_VERSION, False)))  # made by this run
        return logged
    raise NotReproducibleError(f"the run {result.run_id} logged no version of {original.name!r}: is its output "
                               "handled by TraceletIOManager in these definitions?")
