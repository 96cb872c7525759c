"""The lineage picture: SVG and the self-contained HTML page, laid out for ~100 nodes, opened
in a real headless Chromium (Debian's ``chromium``; ``scripts/test.sh`` installs it)."""

from __future__ import annotations

import re
import subprocess
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

from tracelet_core._lineage import LineageGraph
from tracelet_core._lineage_html import layout, render_html, render_svg

CHROMIUM = Path("/usr/bin/chromium")
SVG_NS = "{http://www.w3.org/2000/svg}"


def pipeline_graph(width: int = 24) -> LineageGraph:
    """report <- run <- models <- runs <- features <- runs <- raw parts: 4 * width + 2 nodes."""
    graph = LineageGraph(root="report:v1", direction="upstream")

    def version(ref: str, kind: str, aliases: tuple[str, ...] = ()) -> str:
        graph.add_node(ref, kind="artifact", name=ref.split(":")[0], version="v1", type=kind,
                       digest="blake3:" + uuid.uuid4().hex * 2, aliases=list(aliases))
        return ref

    def run(orchestrator: str, step: str | None, name: str | None) -> str:
        run_id = str(uuid.uuid4())
        node_id = f"run:{orchestrator}/{run_id}/{step}"
        graph.add_node(node_id, kind="run", orchestrator=orchestrator, run_id=run_id, step=step, name=name,
                       partition=None)
        return node_id

    raws = [version(f"raw/part{i}:v1", "dataset") for i in range(width)]
    features = []
    for i in range(width):
        made = run("prefect", str(uuid.uuid4()), "featurize")
        for raw in (raws[i], raws[(i + 1) % width]):
            graph.add_edge(raw, made, "consumed")
        features.append(version(f"features/f{i}:v1", "dataset"))
        graph.add_edge(made, features[-1], "produced")
    models = []
    for j in range(width // 2):
        made = run("dagster", "model", "__ephemeral_asset_job__")
        for feature in features[2 * j: 2 * j + 2]:
            graph.add_edge(feature, made, "consumed")
        models.append(version(f"model{j}:v1", "model", ("production",) if j == 3 else ()))
        graph.add_edge(made, models[-1], "produced")
    final = run("tracelet", None, "evaluate")
    for model in models:
        graph.add_edge(model, final, "consumed")
    graph.add_edge(final, version("report:v1", "report"), "produced")
    return graph


@pytest.fixture(scope="module")
def graph() -> LineageGraph:
    return pipeline_graph()


def test_the_fixture_graph_has_about_a_hundred_nodes(graph: LineageGraph) -> None:
    assert len(graph.nodes) == 98 and len(graph.edges) == 121


def test_layout_flows_left_to_right_without_overlaps(graph: LineageGraph) -> None:
    placed, width, height = layout(graph)
    assert set(placed) == set(graph.nodes)
    for edge in graph.edges:
        assert placed[edge.source].x < placed[edge.target].x, edge
    boxes = list(placed.values())
    for i, a in enumerate(boxes):
        assert a.x >= 0 and a.x + a.width <= width and a.y >= 0 and a.y + a.height <= height
        for b in boxes[i + 1:]:
            apart = a.x + a.width <= b.x or b.x + b.width <= a.x or a.y + a.height <= b.y or b.y + b.height <= a.y
            assert apart, (a, b)


def test_svg_is_well_formed_and_draws_every_node_and_edge(graph: LineageGraph) -> None:
    root = ET.fromstring(render_svg(graph).split("\n", 1)[1])
    groups = [g for g in root.iter(f"{SVG_NS}g") if "node" in (g.get("class") or "").split()]
    assert sorted(g.get("data-id") for g in groups) == sorted(graph.nodes)
    assert len([p for p in root.iter(f"{SVG_NS}path") if "edge" in (p.get("class") or "")]) == len(graph.edges)
    drawn = {g.get("data-id"): " ".join("".join(t.itertext()) for t in g.iter(f"{SVG_NS}text")) for g in groups}
    assert drawn["model3:v1"].startswith("model3:v1 model [production]") and "production" in drawn["model3:v1"]
    assert "by dagster: model" in drawn["model3:v1"]  # the producer, by step name


def test_html_page_is_self_contained(graph: LineageGraph) -> None:
    page = render_html(graph)
    assert page.startswith("<!DOCTYPE html>")
    assert re.findall(r"https?://[^\"' )]+", page) == ["http://www.w3.org/2000/svg"]  # a namespace, not a fetch
    assert "<link" not in page and "src=" not in page and "@import" not in page and "url(http" not in page
    assert "61 versions, 37 runs, 121 edges" in page


def test_user_text_is_escaped() -> None:
    graph = LineageGraph(root="a:v1", direction="upstream")
    graph.add_node("a:v1", kind="artifact", type="custom", aliases=[], digest="d")
    graph.add_node("run:x", kind="run", orchestrator="tracelet", run_id="r1", step=None,
                   name="<script>alert(1)</script>", partition=None)
    graph.add_edge("run:x", "a:v1", "produced")
    page = render_html(graph)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM.exists(), "Debian's chromium is needed (scripts/test.sh installs it: apt-get install chromium)"
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
               f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def test_chromium_draws_every_node(graph: LineageGraph, tmp_path: Path) -> None:
    page = tmp_path / "lineage.html"
    page.write_text(render_html(graph), encoding="utf-8")

    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile").stdout
    assert f'data-nodes-drawn="{len(graph.nodes)}"' in dom  # the page's own check, after layout
    drawn = re.findall(r'<g class="node[^"]*" data-id="([^"]+)" data-kind="\w+" data-drawn="1"', dom)
    assert sorted(drawn) == sorted(graph.nodes)

    shot = tmp_path / "lineage.png"
    chromium("--window-size=1400,900", "--hide-scrollbars", f"--screenshot={shot}", page.as_uri(),
             profile=tmp_path / "profile")
    with Image.open(shot) as image:
        pixels = image.convert("RGB").resize((280, 180))
        colours = pixels.getcolors(maxcolors=280 * 180) or []
    background = max(colours)[1]
    inked = sum(n for n, colour in colours if colour != background)
    assert len(colours) > 50 and inked > 0.05 * 280 * 180  # cards, pills, curves and text, not a blank page


def test_deleted_and_quarantined_versions_are_marked() -> None:
    graph = LineageGraph(root="model:v2", direction="upstream")
    graph.add_node("raw:v1", kind="artifact", name="raw", version="v1", type="dataset", digest="d1", aliases=[],
                   deleted=True)
    graph.add_node("model:v2", kind="artifact", name="model", version="v2", type="model", digest="d2", aliases=[],
                   quarantined=True)
    graph.add_edge("raw:v1", "model:v2", "input")
    svg = render_svg(graph)
    ET.fromstring(svg)  # still well-formed
    assert '<g class="node version deleted" data-id="raw:v1"' in svg
    assert '<g class="node version root quarantined" data-id="model:v2"' in svg
    assert ".deleted .ref { text-decoration: line-through;" in svg and ".quarantined .card { fill: #fef2f2;" in svg
