"""Walking the catalog's lineage edges into a ``LineageGraph`` (``ArtifactStore.lineage``).

Upstream follows what each version was made from (its producer run and that run's inputs),
downstream what was made from it (and the runs that read it), level by level with one catalog
read per level. Deleted versions stay as nodes marked ``deleted``; quarantined ones are marked
``quarantined``.
"""

from __future__ import annotations

from ._catalog import Catalog, VersionRecord
from ._errors import InvalidArtifactError
from ._lineage import LineageGraph
from ._model import RunInfo


def trace_lineage(catalog: Catalog, start: VersionRecord, direction: str = "upstream",
                  depth: int | None = None) -> LineageGraph:
    """Versions and runs upstream of ``start`` (what it was made from) or downstream (what used
    it), at most ``depth`` levels away (``None``: all)."""
    if direction not in ("upstream", "downstream"):
        raise InvalidArtifactError(f"direction must be 'upstream' or 'downstream', not {direction!r}")
    if depth is not None and depth < 0:
        raise InvalidArtifactError("depth must be >= 0")
    graph = LineageGraph(root=start.ref, direction=direction)
    _add_version_node(graph, start)
    frontier: list[VersionRecord] = [start]
    seen = {start.id}
    level = 0
    while frontier and (depth is None or level < depth):
        next_ids: list[int] = []
        for record in frontier:
            walk = _walk_up if direction == "upstream" else _walk_down
            next_ids += walk(catalog, graph, record)
        fresh = [i for i in dict.fromkeys(next_ids) if i not in seen]
        seen.update(fresh)
        frontier = catalog.get_by_ids(fresh) if fresh else []
        level += 1
    _mark_quarantined(catalog, graph, seen)
    return graph


def _mark_quarantined(catalog: Catalog, graph: LineageGraph, version_ids: set[int]) -> None:
    """Add ``"quarantined": true`` to the node of each quarantined version in ``graph``."""
    marked = catalog.quarantine_marks(sorted(version_ids))
    for record in catalog.get_by_ids(sorted(marked)) if marked else []:
        if record.ref in graph.nodes:
            graph.nodes[record.ref]["quarantined"] = True


def _add_version_node(graph: LineageGraph, record: VersionRecord) -> str:
    graph.add_node(record.ref, kind="artifact", name=record.name, version=f"v{record.version}",
                   type=record.type, digest=record.digest, aliases=record.aliases,
                   **({"deleted": True} if record.deleted_at is not None else {}))
    return record.ref


def _add_run_node(graph: LineageGraph, run: RunInfo) -> str:
    node_id = f"run:{run.key}"
    graph.add_node(node_id, kind="run", orchestrator=run.orchestrator, run_id=run.run_id,
                   step=run.step, name=run.name, partition=run.partition,
                   **({"task": run.extra["task_name"]} if run.extra.get("task_name") else {}))
    return node_id


def _walk_up(catalog: Catalog, graph: LineageGraph, record: VersionRecord) -> list[int]:
    input_ids = catalog.upstream_ids(record.id)
    inputs = catalog.get_by_ids(input_ids)
    target = record.ref
    if record.producer is not None:
        run_node = _add_run_node(graph, record.producer)
        graph.add_edge(run_node, record.ref, "produced")
        target = run_node
    for upstream in inputs:
        graph.add_edge(_add_version_node(graph, upstream), target,
                       "consumed" if target != record.ref else "input")
    return input_ids


def _walk_down(catalog: Catalog, graph: LineageGraph, record: VersionRecord) -> list[int]:
    downstream_ids = catalog.downstream_ids(record.id)
    for downstream in catalog.get_by_ids(downstream_ids):
        node = _add_version_node(graph, downstream)
        if downstream.producer is not None:
            run_node = _add_run_node(graph, downstream.producer)
            graph.add_edge(record.ref, run_node, "consumed")
            graph.add_edge(run_node, node, "produced")
        else:
            graph.add_edge(record.ref, node, "input")
    for run in catalog.consumers(record.id):
        graph.add_edge(record.ref, _add_run_node(graph, run), "consumed")
    return downstream_ids
