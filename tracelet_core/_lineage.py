"""``LineageGraph``: versions and runs linked by what each run read and wrote.

Nodes are artifact versions (id ``name:vN``) and runs (id ``run:<orchestrator>/<run_id>[/<step>]``).
Edges point the way data flows: ``input version -> run -> output version`` (or straight
``input -> output`` for a version logged without a producer).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_HEX_ID = re.compile(r"^[0-9a-fA-F]{16,}$")
SHORT_ID_LENGTH = 8


def short_run_id(run_id: str) -> str:
    """A run id short enough for a label: UUIDs and long hex ids keep their first 8 digits."""
    if _UUID.match(run_id) or _HEX_ID.match(run_id):
        return run_id.replace("-", "")[:SHORT_ID_LENGTH]
    return run_id


def run_title(attrs: Mapping[str, Any]) -> str:
    """``dagster: retrain / model``: the orchestrator and the names that say what ran.

    Ids that say nothing to a reader are left out: a step that is a UUID (Prefect's task run
    ids; the task name says more) and job names Dagster makes up (``__ephemeral_asset_job__``).
    """
    run_id = str(attrs.get("run_id") or "")
    step, name = attrs.get("step"), attrs.get("name")
    parts = [str(name)] if name and not str(name).startswith("__") else []
    task = attrs.get("task")  # a Prefect task run: its flow is the name
    if task and str(task) not in parts:
        parts.append(str(task))
    if step and not _UUID.match(str(step)) and str(step) != run_id and str(step) not in parts:
        parts.append(str(step))
    return f"{attrs.get('orchestrator') or 'run'}: {' / '.join(parts) or 'run'}"


def run_detail(attrs: Mapping[str, Any]) -> str:
    """``run 1a2b3c4d [2024-01-01]``: the short run id and the partition, if any."""
    detail = f"run {short_run_id(str(attrs.get('run_id') or '?'))}"
    return detail + (f" [{attrs['partition']}]" if attrs.get("partition") else "")


def run_label(attrs: Mapping[str, Any]) -> str:
    """``dagster: retrain / model (run 1a2b3c4d [2024-01-01])`` for a run node's attributes."""
    return f"{run_title(attrs)} ({run_detail(attrs)})"


@dataclass(frozen=True)
class LineageEdge:
    source: str
    target: str
    relation: str  # "consumed" (version -> run), "produced" (run -> version), "input" (version -> version)

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "target": self.target, "relation": self.relation}


@dataclass
class LineageGraph:
    """The lineage around one version, upstream or downstream, up to some depth."""

    root: str
    direction: str
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: list[LineageEdge] = field(default_factory=list)

    def add_node(self, node_id: str, **attrs: Any) -> None:
        self.nodes.setdefault(node_id, {"id": node_id, **attrs})

    def add_edge(self, source: str, target: str, relation: str) -> None:
        edge = LineageEdge(source, target, relation)
        if edge not in self.edges:
            self.edges.append(edge)

    @property
    def artifact_refs(self) -> list[str]:
        return [n for n, attrs in self.nodes.items() if attrs.get("kind") == "artifact"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "direction": self.direction,
            "nodes": list(self.nodes.values()),
            "edges": [e.to_dict() for e in self.edges],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def label(self, node_id: str) -> str:
        """One line naming a node: ``ref (type)`` for a version, ``run_label`` for a run."""
        attrs = self.nodes[node_id]
        if attrs.get("kind") == "run":
            return run_label(attrs)
        return f"{node_id} ({attrs.get('type', '')})"

    def producer_of(self, node_id: str) -> str | None:
        """The run node that produced version ``node_id``, if the graph holds it."""
        for edge in self.edges:
            if edge.target == node_id and edge.relation == "produced":
                return edge.source
        return None

    def to_mermaid(self) -> str:
        """A Mermaid flowchart (``graph LR``); artifacts are boxes, runs are rounded."""
        ids = {node_id: f"n{index}" for index, node_id in enumerate(self.nodes)}
        lines = ["graph LR"]
        for node_id, short in ids.items():
            label = self.label(node_id).replace('"', "'")
            if self.nodes[node_id].get("kind") == "run":
                lines.append(f'    {short}(["{label}"])')
            else:
                lines.append(f'    {short}["{label}"]')
        for edge in self.edges:
            lines.append(f"    {ids[edge.source]} --> {ids[edge.target]}")
        return "\n".join(lines) + "\n"

    def to_dot(self) -> str:
        """A Graphviz digraph; artifacts are boxes, runs are ellipses."""

        def quote(text: str) -> str:
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

        lines = ["digraph lineage {", "    rankdir=LR;"]
        for node_id, attrs in self.nodes.items():
            shape = "ellipse" if attrs.get("kind") == "run" else "box"
            lines.append(f"    {quote(node_id)} [label={quote(self.label(node_id))}, shape={shape}];")
        for edge in self.edges:
            lines.append(f"    {quote(edge.source)} -> {quote(edge.target)} [label={quote(edge.relation)}];")
        lines.append("}")
        return "\n".join(lines) + "\n"
