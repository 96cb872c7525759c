"""A lineage graph drawn as SVG, alone or inside one self-contained HTML page.

The layout is done here, in Python, so the page needs no JavaScript library and nothing is
fetched to view it: nodes are placed in columns by the longest path from a source (data flows
left to right), each column ordered by the barycenter of its neighbours to keep edges short,
and edges are drawn as curves between the columns. Versions are cards (ref, type, aliases,
producer); runs are rounded pills (orchestrator, step, short run id). Every node is a
``<g class="node" data-id=...>`` with a ``<title>`` carrying the full details, so a reader can
hover for ids the labels shorten. The page's only script (inline) filters nodes by text and
records, after layout, how many nodes the browser drew (``data-nodes-drawn``).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from html import escape

from ._lineage import LineageGraph, run_detail, run_label, run_title

CARD_WIDTH = 260
CARD_HEIGHT = 62
RUN_HEIGHT = 40
COLUMN_GAP = 90
ROW_GAP = 18
MARGIN = 24
CHAR_WIDTH = 7.0  # average advance of the 12px sans-serif font, for truncating labels
ORDERING_SWEEPS = 6

TYPE_COLOURS = {
    "model": "#7c3aed", "checkpoint": "#9333ea", "weights": "#a855f7",
    "dataset": "#2563eb", "sample": "#0891b2",
    "image": "#db2777", "audio": "#e11d48", "video": "#be185d", "visualization": "#c026d3",
    "report": "#059669", "config": "#ca8a04", "code": "#65a30d", "custom": "#475569",
}
RUN_COLOUR = "#0f766e"


@dataclass
class Placed:
    """A node's box: top-left corner and size."""

    node_id: str
    x: float
    y: float
    width: float
    height: float

    @property
    def right(self) -> tuple[float, float]:
        return self.x + self.width, self.y + self.height / 2

    @property
    def left(self) -> tuple[float, float]:
        return self.x, self.y + self.height / 2


def _columns(graph: LineageGraph) -> list[list[str]]:
    """Nodes grouped by the longest path from a source, in data-flow order."""
    parents: dict[str, list[str]] = defaultdict(list)
    for edge in graph.edges:
        parents[edge.target].append(edge.source)
    depth: dict[str, int] = {}

    def longest(node_id: str, visiting: frozenset[str]) -> int:
        if node_id in depth:
            return depth[node_id]
        sources = [p for p in parents.get(node_id, []) if p not in visiting]  # a cycle would never end
        value = 1 + max((longest(p, visiting | {node_id}) for p in sources), default=-1)
        depth[node_id] = value
        return value

    for node_id in graph.nodes:
        longest(node_id, frozenset())
    columns: list[list[str]] = [[] for _ in range(max(depth.values(), default=0) + 1)]
    for node_id in graph.nodes:
        columns[depth[node_id]].append(node_id)
    return columns


def _order(graph: LineageGraph, columns: list[list[str]]) -> None:
    """Reorder each column by the mean position of its neighbours (a few sweeps both ways)."""
    neighbours: dict[str, list[str]] = defaultdict(list)
    for edge in graph.edges:
        neighbours[edge.source].append(edge.target)
        neighbours[edge.target].append(edge.source)
    for sweep in range(ORDERING_SWEEPS):
        sequence = range(1, len(columns)) if sweep % 2 == 0 else range(len(columns) - 2, -1, -1)
        position = {n: i for column in columns for i, n in enumerate(column)}
        for index in sequence:
            reference = set(columns[index - 1] if sweep % 2 == 0 else columns[index + 1])
            columns[index].sort(key=functools.partial(_barycenter, neighbours=neighbours, position=position,
                                                      reference=reference))
            position.update({n: i for i, n in enumerate(columns[index])})


def _barycenter(node_id: str, neighbours: dict[str, list[str]], position: dict[str, int],
                reference: set[str]) -> float:
    """The mean position of ``node_id``'s neighbours in the reference column (its own if none)."""
    near = [position[n] for n in neighbours[node_id] if n in reference]
    return sum(near) / len(near) if near else position[node_id]


def layout(graph: LineageGraph) -> tuple[dict[str, Placed], float, float]:
    """Every node's box, and the drawing's width and height."""
    columns = _columns(graph)
    _order(graph, columns)

    def height(node_id: str) -> float:
        return RUN_HEIGHT if graph.nodes[node_id].get("kind") == "run" else CARD_HEIGHT

    column_heights = [sum(height(n) for n in c) + ROW_GAP * max(len(c) - 1, 0) for c in columns]
    total_height = max(column_heights, default=0.0) + 2 * MARGIN
    placed: dict[str, Placed] = {}
    for index, column in enumerate(columns):
        x = MARGIN + index * (CARD_WIDTH + COLUMN_GAP)
        y = MARGIN + (total_height - 2 * MARGIN - column_heights[index]) / 2
        for node_id in column:
            placed[node_id] = Placed(node_id, x, y, CARD_WIDTH, height(node_id))
            y += height(node_id) + ROW_GAP
    total_width = 2 * MARGIN + len(columns) * CARD_WIDTH + max(len(columns) - 1, 0) * COLUMN_GAP
    return placed, total_width, total_height


def _fit(text: str, width: float) -> str:
    """``text`` cut with an ellipsis to fit ``width`` pixels."""
    limit = max(int(width / CHAR_WIDTH), 4)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(x: float, y: float, text: str, css_class: str, width: float) -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" class="{css_class}">{escape(_fit(text, width))}</text>'


def _version_node(graph: LineageGraph, box: Placed) -> str:
    attrs = graph.nodes[box.node_id]
    kind = str(attrs.get("type") or "custom")
    colour = TYPE_COLOURS.get(kind, TYPE_COLOURS["custom"])
    aliases = ", ".join(attrs.get("aliases") or [])
    producer_id = graph.producer_of(box.node_id)
    producer = graph.nodes[producer_id] if producer_id else None
    digest = str(attrs.get("digest") or "?")
    details = [box.node_id, f"type: {kind}", f"aliases: {aliases or '-'}",
               f"producer: {run_label(producer) if producer else '- (not in this graph)'}", f"digest: {digest}"]
    bottom = f"by {run_title(producer)}" if producer else digest
    inner = box.width - 22
    root = " root" if box.node_id == graph.root else ""
    root += "".join(f" {state}" for state in ("deleted", "quarantined") if attrs.get(state))
    details += [state for state in ("deleted", "quarantined") if attrs.get(state)]
    lines = [
        f'<g class="node version{root}" data-id="{escape(box.node_id)}" data-kind="version">',
        f"<title>{escape(chr(10).join(details))}</title>",
        f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width}" height="{box.height}" rx="6" class="card"/>',
        f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="6" height="{box.height}" rx="3" fill="{colour}"/>',
        _text(box.x + 14, box.y + 19, box.node_id, "ref", inner),
        f'<text x="{box.x + 14:.1f}" y="{box.y + 37:.1f}" class="meta">'
        f'<tspan fill="{colour}" font-weight="600">{escape(kind)}</tspan>'
        + (f'<tspan class="alias"> [{escape(_fit(aliases, inner - len(kind) * CHAR_WIDTH - 20))}]</tspan>'
           if aliases else "") + "</text>",
        _text(box.x + 14, box.y + 54, bottom, "producer", inner),
        "</g>",
    ]
    return "".join(lines)


def _run_node(graph: LineageGraph, box: Placed) -> str:
    attrs = graph.nodes[box.node_id]
    details = [f"{attrs.get('orchestrator')} run {attrs.get('run_id')}"]
    details += [f"{key}: {attrs[key]}" for key in ("step", "name", "partition") if attrs.get(key)]
    return "".join([
        f'<g class="node run" data-id="{escape(box.node_id)}" data-kind="run">',
        f"<title>{escape(chr(10).join(details))}</title>",
        f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width}" height="{box.height}" '
        f'rx="{box.height / 2}" class="pill"/>',
        _text(box.x + 16, box.y + 17, run_title(attrs), "runname", box.width - 32),
        _text(box.x + 16, box.y + 32, run_detail(attrs), "runid", box.width - 32),
        "</g>",
    ])


def _curve(x1: float, y1: float, x2: float, y2: float) -> str:
    """A curve from one column to a later one; one that skips columns arcs over the nodes between."""
    span = round((x2 - x1) / (CARD_WIDTH + COLUMN_GAP))
    if span < 1:
        bend = max((x2 - x1) / 2, 30)
        return f"M {x1:.1f} {y1:.1f} C {x1 + bend:.1f} {y1:.1f}, {x2 - bend:.1f} {y2:.1f}, {x2:.1f} {y2:.1f}"
    lift = max(min(y1, y2) - CARD_HEIGHT / 2 - ROW_GAP / 2 - 6 * (span - 1), 4.0)
    gap = COLUMN_GAP / 2
    return (f"M {x1:.1f} {y1:.1f} C {x1 + gap:.1f} {y1:.1f}, {x1 + gap:.1f} {lift:.1f}, {x1 + gap * 2:.1f} {lift:.1f} "
            f"L {x2 - gap * 2:.1f} {lift:.1f} C {x2 - gap:.1f} {lift:.1f}, {x2 - gap:.1f} {y2:.1f}, {x2:.1f} {y2:.1f}")


SVG_STYLE = f"""
.card {{ fill: #ffffff; stroke: #cbd5e1; stroke-width: 1.2; }}
.root .card {{ stroke: #0f172a; stroke-width: 2.4; }}
.pill {{ fill: #ecfdf5; stroke: {RUN_COLOUR}; stroke-width: 1.2; }}
text {{ font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; font-size: 12px; fill: #334155; }}
.ref {{ font-weight: 700; fill: #0f172a; font-size: 13px; }}
.alias {{ fill: #15803d; font-weight: 600; }}
.producer, .runid {{ fill: #64748b; font-size: 11px; }}
.runname {{ fill: {RUN_COLOUR}; font-weight: 600; }}
.edge {{ fill: none; stroke: #94a3b8; stroke-width: 1.4; }}
.edge.produced {{ stroke: {RUN_COLOUR}; }}
.dim {{ opacity: 0.15; }}
.deleted .ref {{ text-decoration: line-through; fill: #64748b; }}
.deleted .card {{ stroke-dasharray: 4 3; }}
.quarantined .card {{ fill: #fef2f2; stroke: #dc2626; stroke-width: 2; }}
.quarantined .ref {{ fill: #b91c1c; }}
"""


def render_svg(graph: LineageGraph, *, standalone: bool = True) -> str:
    """The graph as one SVG document (``standalone=False``: an element to put inside HTML)."""
    placed, width, height = layout(graph)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="lineage" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="lineage of {escape(graph.root)}">',
        f"<style>{SVG_STYLE}</style>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#94a3b8"/></marker></defs>',
        '<rect width="100%" height="100%" fill="#f8fafc"/>',
        '<g class="edges">',
    ]
    for edge in graph.edges:
        (x1, y1), (x2, y2) = placed[edge.source].right, placed[edge.target].left
        parts.append(
            f'<path class="edge {edge.relation}" data-source="{escape(edge.source)}" '
            f'data-target="{escape(edge.target)}" marker-end="url(#arrow)" d="{_curve(x1, y1, x2, y2)}"/>')
    parts.append('</g><g class="nodes">')
    for node_id, box in placed.items():
        draw = _run_node if graph.nodes[node_id].get("kind") == "run" else _version_node
        parts.append(draw(graph, box))
    parts.append("</g></svg>")
    svg = "\n".join(parts)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + svg + "\n" if standalone else svg


PAGE_STYLE = """
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #0f172a;
       background: #f8fafc; }
header { position: sticky; top: 0; background: #ffffff; border-bottom: 1px solid #e2e8f0; padding: 10px 18px;
         display: flex; gap: 18px; align-items: center; flex-wrap: wrap; z-index: 1; }
h1 { font-size: 16px; margin: 0; }
.summary { color: #475569; font-size: 13px; }
input { font: inherit; font-size: 13px; padding: 4px 8px; border: 1px solid #cbd5e1; border-radius: 4px; width: 16em; }
button { font: inherit; font-size: 13px; padding: 3px 10px; border: 1px solid #cbd5e1; border-radius: 4px;
         background: #f1f5f9; cursor: pointer; }
.legend span { display: inline-block; font-size: 12px; margin-right: 10px; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; }
main { overflow: auto; }
"""

PAGE_SCRIPT = """
(function () {
  var svg = document.getElementById('lineage');
  var nodes = Array.prototype.slice.call(svg.querySelectorAll('g.node'));
  var edges = Array.prototype.slice.call(svg.querySelectorAll('path.edge'));
  var drawn = 0;
  nodes.forEach(function (node) {
    var box = node.getBoundingClientRect();
    var visible = box.width > 0 && box.height > 0;
    node.setAttribute('data-drawn', visible ? '1' : '0');
    if (visible) { drawn += 1; }
  });
  document.body.setAttribute('data-nodes-drawn', String(drawn));
  var width = svg.viewBox.baseVal.width, height = svg.viewBox.baseVal.height, scale = 1;
  function zoom(factor) {
    scale = factor === 0 ? 1 : Math.min(4, Math.max(0.1, scale * factor));
    svg.setAttribute('width', String(width * scale));
    svg.setAttribute('height', String(height * scale));
  }
  // A wide graph starts scaled down to the window's width, never below a readable 60%.
  var fit = Math.max(0.6, Math.min(1, (window.innerWidth - 16) / width));
  if (fit < 1) { zoom(fit); }
  document.getElementById('zoom-in').onclick = function () { zoom(1.25); };
  document.getElementById('zoom-out').onclick = function () { zoom(0.8); };
  document.getElementById('zoom-reset').onclick = function () { zoom(0); };
  document.getElementById('filter').oninput = function (event) {
    var text = event.target.value.toLowerCase();
    var hit = {};
    nodes.forEach(function (node) {
      var match = !text || node.textContent.toLowerCase().indexOf(text) >= 0;
      hit[node.getAttribute('data-id')] = match;
      node.classList.toggle('dim', !match);
    });
    edges.forEach(function (edge) {
      var keep = !text || (hit[edge.getAttribute('data-source')] && hit[edge.getAttribute('data-target')]);
      edge.classList.toggle('dim', !keep);
    });
  };
})();
"""


def render_html(graph: LineageGraph) -> str:
    """One self-contained page (inline CSS, SVG and script; nothing fetched) drawing the graph."""
    versions = sum(1 for a in graph.nodes.values() if a.get("kind") != "run")
    runs = len(graph.nodes) - versions
    types = sorted({str(a.get("type")) for a in graph.nodes.values() if a.get("kind") != "run"})
    legend = "".join(
        f'<span><i style="background:{TYPE_COLOURS.get(t, TYPE_COLOURS["custom"])}"></i>{escape(t)}</span>'
        for t in types) + f'<span><i style="background:{RUN_COLOUR}"></i>run</span>'
    title = f"Lineage of {graph.root} ({graph.direction})"
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{PAGE_STYLE}</style></head><body>",
        f"<header><h1>{escape(title)}</h1>",
        f'<span class="summary">{versions} version{"s" if versions != 1 else ""}, '
        f'{runs} run{"s" if runs != 1 else ""}, {len(graph.edges)} edge{"s" if len(graph.edges) != 1 else ""}</span>',
        '<input id="filter" type="search" placeholder="filter: name, alias, run...">',
        '<span><button id="zoom-out" type="button">−</button> <button id="zoom-reset" type="button">100%</button> '
        '<button id="zoom-in" type="button">+</button></span>',
        f'<span class="legend">{legend}</span></header>',
        "<main>", render_svg(graph, standalone=False), "</main>",
        f"<script>{PAGE_SCRIPT}</script>",
        "</body></html>",
        "",
    ])
