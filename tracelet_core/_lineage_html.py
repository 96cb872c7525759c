"""A lineage graph drawn as SVG, alone or inside one self-contained HTML page.

The layout is done here, in Python, so the page needs no JavaScript library and nothing is
fetched to view it: nodes are placed in columns by the longest path from a source (data flows
left to right), each column ordered by the barycenter of its neighbours to keep edges short,
and edges are drawn as curves between the columns. Versions are cards (ref, type, aliases,
producer); runs are rounded pills (orchestrator, step, short run id). A run that produced one
version and nothing else (a Dagster step, a Prefect task) is drawn inside that version's card,
so a pipeline takes one column per step instead of two. Deleted versions are struck through,
quarantined ones drawn red. Every node is a ``<g class="node" data-id=...>`` with a ``<title>``
carrying the full details, so a reader can hover for ids the labels shorten.

The page's only script (inline) fits the whole graph in the window when it opens, zooms with
the wheel (and the buttons; the label shows the true scale), pans by dragging, filters nodes by
text (saying how many match and bringing them into view), and records what the browser drew:
``data-nodes-drawn`` and ``data-nodes-visible`` (inside the window) on ``<body>``, and
``data-zoom`` (percent).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

from ._lineage import LineageGraph, run_detail, run_label, run_title

CARD_WIDTH = 260
CARD_HEIGHT = 62
RUN_HEIGHT = 40
INNER_RUN_HEIGHT = 24  # a run drawn inside the card of the version it produced
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


def inner_runs(graph: LineageGraph) -> dict[str, str]:
    """``{run id: version id}`` for every run drawn inside a card: one whose only outgoing edge
    is the one version it produced."""
    outgoing: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for edge in graph.edges:
        outgoing[edge.source].append((edge.target, edge.relation))
    return {node_id: targets[0][0] for node_id, targets in outgoing.items()
            if graph.nodes[node_id].get("kind") == "run" and len(targets) == 1 and targets[0][1] == "produced"}


def _card_edges(graph: LineageGraph, inner: dict[str, str]) -> list[tuple[str, str]]:
    """The edges between the boxes laid out: an edge into an inner run goes to its card."""
    return [(edge.source, inner.get(edge.target, edge.target)) for edge in graph.edges if edge.source not in inner]


def _columns(nodes: list[str], edges: list[tuple[str, str]]) -> list[list[str]]:
    """Nodes grouped by the longest path from a source, in data-flow order."""
    parents: dict[str, list[str]] = defaultdict(list)
    for source, target in edges:
        parents[target].append(source)
    depth: dict[str, int] = {}

    def longest(node_id: str, visiting: frozenset[str]) -> int:
        if node_id in depth:
            return depth[node_id]
        sources = [p for p in parents.get(node_id, []) if p not in visiting]  # a cycle would never end
        value = 1 + max((longest(p, visiting | {node_id}) for p in sources), default=-1)
        depth[node_id] = value
        return value

    for node_id in nodes:
        longest(node_id, frozenset())
    columns: list[list[str]] = [[] for _ in range(max(depth.values(), default=0) + 1)]
    for node_id in nodes:
        columns[depth[node_id]].append(node_id)
    return columns


def _order(edges: list[tuple[str, str]], columns: list[list[str]]) -> None:
    """Reorder each column by the mean position of its neighbours (a few sweeps both ways)."""
    neighbours: dict[str, list[str]] = defaultdict(list)
    for source, target in edges:
        neighbours[source].append(target)
        neighbours[target].append(source)
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
    """Every node's box (an inner run's inside its card), and the drawing's width and height."""
    inner = inner_runs(graph)
    holder = {version: run for run, version in inner.items()}
    edges = _card_edges(graph, inner)
    columns = _columns([n for n in graph.nodes if n not in inner], edges)
    _order(edges, columns)

    def height(node_id: str) -> float:
        if graph.nodes[node_id].get("kind") == "run":
            return RUN_HEIGHT
        return CARD_HEIGHT + (INNER_RUN_HEIGHT + 6 if node_id in holder else 0)

    column_heights = [sum(height(n) for n in c) + ROW_GAP * max(len(c) - 1, 0) for c in columns]
    total_height = max(column_heights, default=0.0) + 2 * MARGIN
    placed: dict[str, Placed] = {}
    for index, column in enumerate(columns):
        x = MARGIN + index * (CARD_WIDTH + COLUMN_GAP)
        y = MARGIN + (total_height - 2 * MARGIN - column_heights[index]) / 2
        for node_id in column:
            placed[node_id] = Placed(node_id, x, y, CARD_WIDTH, height(node_id))
            if node_id in holder:
                placed[holder[node_id]] = Placed(holder[node_id], x + 10, y + CARD_HEIGHT - 2, CARD_WIDTH - 20,
                                                 INNER_RUN_HEIGHT)
            y += height(node_id) + ROW_GAP
    total_width = 2 * MARGIN + len(columns) * CARD_WIDTH + max(len(columns) - 1, 0) * COLUMN_GAP
    return placed, total_width, total_height


def _fit(text: str, width: float) -> str:
    """``text`` cut with an ellipsis to fit ``width`` pixels."""
    limit = max(int(width / CHAR_WIDTH), 4)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(x: float, y: float, text: str, css_class: str, width: float) -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" class="{css_class}">{escape(_fit(text, width))}</text>'


def _status(attrs: dict[str, object]) -> tuple[str, list[str]]:
    """The card's extra CSS classes and tooltip lines for a deleted or quarantined version."""
    classes, details = "", []
    if attrs.get("deleted"):
        classes += " deleted"
        details.append("DELETED")
    quarantine = attrs.get("quarantined") or attrs.get("quarantine")
    if quarantine:
        classes += " quarantined"
        reason = quarantine.get("reason") if isinstance(quarantine, dict) else None
        details.append(f"QUARANTINED{f': {reason}' if reason else ''}")
    return classes, details


def _version_node(graph: LineageGraph, box: Placed, inner_run: str | None) -> str:
    attrs = graph.nodes[box.node_id]
    kind = str(attrs.get("type") or "custom")
    colour = TYPE_COLOURS.get(kind, TYPE_COLOURS["custom"])
    aliases = ", ".join(attrs.get("aliases") or [])
    producer_id = graph.producer_of(box.node_id)
    producer = graph.nodes[producer_id] if producer_id else None
    digest = str(attrs.get("digest") or "?")
    status, status_details = _status(attrs)
    details = [box.node_id, *status_details, f"type: {kind}", f"aliases: {aliases or '-'}",
               f"producer: {run_label(producer) if producer else '- (not in this graph)'}", f"digest: {digest}"]
    bottom = f"by {run_title(producer)}" if producer and not inner_run else digest
    inner = box.width - 22
    root = " root" if box.node_id == graph.root else ""
    badge = " quarantined" if "quarantined" in status else " deleted" if "deleted" in status else ""
    alias_room = inner - (len(kind) + len(badge)) * CHAR_WIDTH - 20
    lines = [
        f'<g class="node version{root}{status}" data-id="{escape(box.node_id)}" data-kind="version">',
        f"<title>{escape(chr(10).join(details))}</title>",
        f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width}" height="{box.height}" rx="6" class="card"/>',
        f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="6" height="{box.height}" rx="3" fill="{colour}"/>',
        _text(box.x + 14, box.y + 19, box.node_id, "ref", inner),
        f'<text x="{box.x + 14:.1f}" y="{box.y + 37:.1f}" class="meta">'
        f'<tspan fill="{colour}" font-weight="600">{escape(kind)}</tspan>'
        + (f'<tspan class="badge">{badge}</tspan>' if badge else "")
        + (f'<tspan class="alias"> [{escape(_fit(aliases, alias_room))}]</tspan>' if aliases else "") + "</text>",
        _text(box.x + 14, box.y + 54, bottom, "producer", inner),
        "</g>",
    ]
    return "".join(lines)


def _run_node(graph: LineageGraph, box: Placed, made: str | None) -> str:
    """A run's pill; ``made``: the version whose card it is drawn inside (one line, and a Dagster
    step named after that asset is not repeated)."""
    attrs = graph.nodes[box.node_id]
    details = [f"{attrs.get('orchestrator')} run {attrs.get('run_id')}"]
    details += [f"{key}: {attrs[key]}" for key in ("step", "name", "partition") if attrs.get(key)]
    if made is not None:
        made_name = str(graph.nodes[made].get("name") or made.rpartition(":")[0])
        without_step = {**attrs, "step": None}
        repeats_asset = str(attrs.get("step") or "").replace("__", "/") == made_name
        if repeats_asset and not run_title(without_step).endswith(": run"):
            attrs = without_step  # the job's name says more than the asset's name again
        return "".join([
            f'<g class="node run inner" data-id="{escape(box.node_id)}" data-kind="run">',
            f"<title>{escape(chr(10).join(details))}</title>",
            f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width}" height="{box.height}" '
            f'rx="{box.height / 2}" class="pill"/>',
            _text(box.x + 12, box.y + 16, f"{run_title(attrs)} · {run_detail(attrs)}", "runname", box.width - 24),
            "</g>",
        ])
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
.badge {{ font-weight: 700; }}
.deleted .card {{ stroke-dasharray: 5 3; fill: #f1f5f9; }}
.deleted .ref {{ text-decoration: line-through; fill: #64748b; }}
.deleted .badge {{ fill: #64748b; }}
.quarantined .card {{ stroke: #dc2626; stroke-width: 2.4; fill: #fef2f2; }}
.quarantined .badge {{ fill: #dc2626; }}
"""


def _diff_links(diffs: Mapping[tuple[str, str], Sequence[str]]) -> dict[str, str]:
    """Each version in a diffed pair -> the id of its diff's section (its newer pair first)."""
    links: dict[str, str] = {}
    for index, (before, after) in enumerate(diffs):
        links[after] = f"diff-{index}"
        links.setdefault(before, f"diff-{index}")
    return links


def render_svg(graph: LineageGraph, *, standalone: bool = True, diff_links: Mapping[str, str] | None = None) -> str:
    """The graph as one SVG document (``standalone=False``: an element to put inside HTML,
    whose cards in ``diff_links`` link to their diff's section of the page)."""
    placed, width, height = layout(graph)
    inner = inner_runs(graph)
    holder = {version: run for run, version in inner.items()}
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
        if edge.source in inner:
            continue  # a run inside its version's card: the card says it
        (x1, y1), (x2, y2) = placed[edge.source].right, placed[inner.get(edge.target, edge.target)].left
        parts.append(
            f'<path class="edge {edge.relation}" data-source="{escape(edge.source)}" '
            f'data-target="{escape(edge.target)}" marker-end="url(#arrow)" d="{_curve(x1, y1, x2, y2)}"/>')
    parts.append('</g><g class="nodes">')
    for node_id, box in placed.items():  # cards before the runs drawn inside them
        if graph.nodes[node_id].get("kind") != "run":
            card = _version_node(graph, box, holder.get(node_id))
            link = (diff_links or {}).get(node_id)
            parts.append(f'<a href="#{link}" class="diff-link">{card}</a>' if link else card)
    for node_id, box in placed.items():
        if graph.nodes[node_id].get("kind") == "run":
            parts.append(_run_node(graph, box, inner.get(node_id)))
    parts.append("</g></svg>")
    svg = "\n".join(parts)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + svg + "\n" if standalone else svg


PAGE_STYLE = """
html, body { height: 100%; }
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #0f172a;
       background: #f8fafc; display: flex; flex-direction: column; }
header { background: #ffffff; border-bottom: 1px solid #e2e8f0; padding: 8px 18px; display: flex; gap: 14px;
         align-items: center; flex-wrap: wrap; }
h1 { font-size: 16px; margin: 0; }
.summary, #filter-count { color: #475569; font-size: 13px; }
input { font: inherit; font-size: 13px; padding: 4px 8px; border: 1px solid #cbd5e1; border-radius: 4px; width: 16em; }
button { font: inherit; font-size: 13px; padding: 3px 10px; border: 1px solid #cbd5e1; border-radius: 4px;
         background: #f1f5f9; cursor: pointer; }
#zoom-label { display: inline-block; min-width: 3.5em; text-align: center; font-size: 13px; color: #334155; }
.legend span { display: inline-block; font-size: 12px; margin-right: 10px; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; }
main { flex: 1; min-height: 0; overflow: hidden; cursor: grab; touch-action: none; }
main.dragging { cursor: grabbing; }
main svg { display: block; }
#diffs { border-top: 1px solid #e2e8f0; background: #ffffff; max-height: 45vh; overflow: auto; padding: 6px 18px; }
#diffs summary { cursor: pointer; font-size: 13px; color: #334155; }
.diff h2 { font-size: 14px; margin: 10px 0 4px; }
.diff pre { font-size: 12px; margin: 0; white-space: pre-wrap; }
"""

#: The page's script: fit on open, wheel and button zoom about a point, drag to pan, filter
#: into view, and what the browser drew recorded on ``<body>`` for tests and for anyone curious.
PAGE_SCRIPT = """
(function () {
  var svg = document.getElementById('lineage');
  var main = document.querySelector('main');
  var label = document.getElementById('zoom-label');
  var counter = document.getElementById('filter-count');
  var nodes = Array.prototype.slice.call(svg.querySelectorAll('g.node'));
  var edges = Array.prototype.slice.call(svg.querySelectorAll('path.edge'));
  var full = {x: 0, y: 0, w: svg.viewBox.baseVal.width, h: svg.viewBox.baseVal.height};
  var view = {cx: full.w / 2, cy: full.h / 2, scale: 1};
  svg.setAttribute('width', '100%');
  svg.setAttribute('height', '100%');
  svg.setAttribute('preserveAspectRatio', 'xMidYMid meet');

  function record() {
    var area = main.getBoundingClientRect(), drawn = 0, visible = 0;
    nodes.forEach(function (node) {
      var box = node.getBoundingClientRect();
      var isDrawn = box.width > 0 && box.height > 0;
      var inside = isDrawn && box.left >= area.left - 1 && box.right <= area.right + 1 &&
                   box.top >= area.top - 1 && box.bottom <= area.bottom + 1;
      node.setAttribute('data-drawn', isDrawn ? '1' : '0');
      node.setAttribute('data-visible', inside ? '1' : '0');
      drawn += isDrawn ? 1 : 0;
      visible += inside ? 1 : 0;
    });
    document.body.setAttribute('data-nodes-drawn', String(drawn));
    document.body.setAttribute('data-nodes-visible', String(visible));
  }
  function apply() {
    var w = main.clientWidth / view.scale, h = main.clientHeight / view.scale;
    svg.setAttribute('viewBox', [view.cx - w / 2, view.cy - h / 2, w, h].join(' '));
    var percent = Math.round(view.scale * 100);
    label.textContent = percent + '%';
    document.body.setAttribute('data-zoom', String(percent));
    record();
  }
  function show(box, largest) {
    var pad = 16;
    view.scale = Math.min((main.clientWidth - 2 * pad) / box.w, (main.clientHeight - 2 * pad) / box.h, largest);
    view.cx = box.x + box.w / 2;
    view.cy = box.y + box.h / 2;
    apply();
  }
  function fit() { show(full, 1); }
  function zoomAt(factor, clientX, clientY) {
    var area = main.getBoundingClientRect();
    var dx = clientX - area.left - main.clientWidth / 2, dy = clientY - area.top - main.clientHeight / 2;
    var pointX = view.cx + dx / view.scale, pointY = view.cy + dy / view.scale;
    view.scale = Math.min(4, Math.max(0.05, view.scale * factor));
    view.cx = pointX - dx / view.scale;
    view.cy = pointY - dy / view.scale;
    apply();
  }
  function zoomCentre(factor) {
    var area = main.getBoundingClientRect();
    zoomAt(factor, area.left + main.clientWidth / 2, area.top + main.clientHeight / 2);
  }
  main.addEventListener('wheel', function (event) {
    event.preventDefault();
    zoomAt(Math.exp(-event.deltaY / 500), event.clientX, event.clientY);
  }, {passive: false});
  var drag = null;
  main.addEventListener('pointerdown', function (event) {
    drag = {x: event.clientX, y: event.clientY, cx: view.cx, cy: view.cy, moving: false};
  });
  main.addEventListener('pointermove', function (event) {
    if (!drag) { return; }
    if (!drag.moving) {  // a click (on a card's diff link) stays a click until the pointer moves
      if (Math.abs(event.clientX - drag.x) + Math.abs(event.clientY - drag.y) < 4) { return; }
      drag.moving = true;
      main.classList.add('dragging');
      main.setPointerCapture(event.pointerId);
    }
    view.cx = drag.cx - (event.clientX - drag.x) / view.scale;
    view.cy = drag.cy - (event.clientY - drag.y) / view.scale;
    apply();
  });
  function endDrag() { drag = null; main.classList.remove('dragging'); }
  main.addEventListener('pointerup', endDrag);
  main.addEventListener('pointercancel', endDrag);
  window.addEventListener('resize', apply);
  document.getElementById('zoom-in').onclick = function () { zoomCentre(1.25); };
  document.getElementById('zoom-out').onclick = function () { zoomCentre(0.8); };
  document.getElementById('zoom-reset').onclick = function () { view.scale = 1; apply(); };
  document.getElementById('zoom-fit').onclick = fit;
  function filter(text) {
    var hit = {}, matched = [];
    nodes.forEach(function (node) {
      var match = !text || node.textContent.toLowerCase().indexOf(text) >= 0;
      hit[node.getAttribute('data-id')] = match;
      node.classList.toggle('dim', !match);
      if (text && match) { matched.push(node); }
    });
    edges.forEach(function (edge) {
      var keep = !text || (hit[edge.getAttribute('data-source')] && hit[edge.getAttribute('data-target')]);
      edge.classList.toggle('dim', !keep);
    });
    counter.textContent = text ? matched.length + ' of ' + nodes.length + ' match' : '';
    document.body.setAttribute('data-filter-matches', String(text ? matched.length : nodes.length));
    if (!text) { fit(); return; }
    if (!matched.length) { return; }
    var left = Infinity, top = Infinity, right = -Infinity, bottom = -Infinity;
    matched.forEach(function (node) {
      var box = node.getBBox();
      left = Math.min(left, box.x); top = Math.min(top, box.y);
      right = Math.max(right, box.x + box.width); bottom = Math.max(bottom, box.y + box.height);
    });
    show({x: left, y: top, w: right - left, h: bottom - top}, 1);
  }
  var search = document.getElementById('filter');
  search.oninput = function () { filter(search.value.toLowerCase()); };
  fit();
  // ``lineage.html#filter=text`` opens the page filtered (a link can point at a node).
  var wanted = /[#&]filter=([^&]*)/.exec(window.location.hash);
  if (wanted) { search.value = decodeURIComponent(wanted[1]); filter(search.value.toLowerCase()); }
})();
"""


def same_name_pairs(graph: LineageGraph) -> list[tuple[str, str]]:
    """Consecutive versions of each name drawn in the graph (``(name:v1, name:v3)``...), by
    name: the pairs the page links to their diff."""
    by_name: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for node_id, attrs in graph.nodes.items():
        version = str(attrs.get("version") or "")
        if attrs.get("kind") != "run" and attrs.get("name") and version[1:].isdigit():
            by_name[str(attrs["name"])].append((int(version[1:]), node_id))
    pairs: list[tuple[str, str]] = []
    for name in sorted(by_name):
        refs = [ref for _, ref in sorted(by_name[name])]
        pairs.extend(zip(refs, refs[1:], strict=False))
    return pairs


def _diff_panel(diffs: Mapping[tuple[str, str], Sequence[str]]) -> str:
    """A collapsed panel under the graph: one section per pair, its ``tracelet diff`` report."""
    sections = "".join(
        f'<section class="diff" id="diff-{index}"><h2>{escape(a)} → {escape(b)}</h2>'
        f'<pre>{escape(chr(10).join(lines))}</pre></section>'
        for index, ((a, b), lines) in enumerate(diffs.items()))
    return (f'<details id="diffs"><summary>{len(diffs)} diff{"s" if len(diffs) != 1 else ""} between versions '
            f'of the same name</summary>{sections}</details>')


def render_html(graph: LineageGraph, diffs: Mapping[tuple[str, str], Sequence[str]] | None = None) -> str:
    """One self-contained page (inline CSS, SVG and script; nothing fetched) drawing the graph;
    ``diffs`` (``{(before, after): report lines}``, see ``same_name_pairs``) adds a panel with
    each report, and each of those versions' cards links to it."""
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
        '<span id="filter-count" aria-live="polite"></span>',
        '<span><button id="zoom-out" type="button" title="zoom out">−</button> <span id="zoom-label">100%</span> '
        '<button id="zoom-in" type="button" title="zoom in">+</button> '
        '<button id="zoom-fit" type="button" title="the whole graph in the window">fit</button> '
        '<button id="zoom-reset" type="button" title="actual size">100%</button></span>',
        f'<span class="legend">{legend}</span></header>',
        "<main>", render_svg(graph, standalone=False, diff_links=_diff_links(diffs or {})), "</main>",
        _diff_panel(diffs) if diffs else "",
        f"<script>{PAGE_SCRIPT}</script>",
        "</body></html>",
        "",
    ])
