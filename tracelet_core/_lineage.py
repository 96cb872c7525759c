"""``LineageGraph``: versions and runs linked by what each run read and wrote.

Nodes are artifact versions (id ``name:vN``) and runs (id ``run:<orchestrator>/<run_id>[/<step>]``).
Edges point the way data flows: ``input version -> run -> output version`` (or straight
``input -> output`` for a version logged without a producer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


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

    def _label(self, node_id: str) -> str:
        attrs = self.nodes[node_id]
        if attrs.get("kind") == "run":
            step = f" / {attrs['step']}" if attrs.get("step") else ""
            title = attrs.get("name") or attrs.get("run_id", "")
            return f"{attrs.get('orchestrator', 'run')}: {title}{step}"
        return f"{node_id} ({attrs.get('type', '')})"

    def to_mermaid(self) -> str:
        """A Mermaid flowchart (``graph LR``); artifacts are boxes, runs are rounded."""
        ids = {node_id: f"n{index}" for index, node_id in enumerate(self.nodes)}
        lines = ["graph LR"]
        for node_id, short in ids.items():
            label = self._label(node_id).replace('"', "'")
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
            lines.append(f"    {quote(node_id)} [label={quote(self._label(node_id))}, shape={shape}];")
        for edge in self.edges:
            lines.append(f"    {quote(edge.source)} -> {quote(edge.target)} [label={quote(edge.relation)}];")
        lines.append("}")
        return "\n".join(lines) + "\n"
