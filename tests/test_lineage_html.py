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
from typer.testing import CliRunner

from tracelet_core import ArtifactStore, RunInfo, TraceletArtifact
from tracelet_core._lineage import LineageGraph
from tracelet_core._lineage_html import inner_runs, layout, render_html, render_svg
from tracelet_core.cli import app

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
    inner = inner_runs(graph)
    assert set(placed) == set(graph.nodes)
    assert len(inner) == 24 + 12 + 1  # every run here produced one version: each is drawn in its card
    for edge in graph.edges:
        source, target = placed[edge.source], placed[edge.target]
        if edge.source in inner:  # inside the card it produced
            assert target.x < source.x and source.x + source.width < target.x + target.width, edge
            assert target.y < source.y and source.y + source.height <= target.y + target.height, edge
        else:
            assert source.x < target.x, edge
    boxes = [box for node_id, box in placed.items() if node_id not in inner]
    for i, a in enumerate(boxes):
        assert a.x >= 0 and a.x + a.width <= width and a.y >= 0 and a.y + a.height <= height
        for b in boxes[i + 1:]:
            apart = a.x + a.width <= b.x or b.x + b.width <= a.x or a.y + a.height <= b.y or b.y + b.height <= a.y
            assert apart, (a, b)


def test_svg_is_well_formed_and_draws_every_node_and_edge(graph: LineageGraph) -> None:
    root = ET.fromstring(render_svg(graph).split("\n", 1)[1])
    groups = [g for g in root.iter(f"{SVG_NS}g") if "node" in (g.get("class") or "").split()]
    assert sorted(g.get("data-id") for g in groups) == sorted(graph.nodes)
    drawn_edges = [p for p in root.iter(f"{SVG_NS}path") if "edge" in (p.get("class") or "")]
    assert len(drawn_edges) == len(graph.edges) - len(inner_runs(graph))  # "produced" is the card itself
    drawn = {g.get("data-id"): " ".join("".join(t.itertext()) for t in g.iter(f"{SVG_NS}text")) for g in groups}
    assert drawn["model3:v1"].startswith("model3:v1 model [production]") and "production" in drawn["model3:v1"]
    producer = graph.producer_of("model3:v1")
    assert producer and drawn[producer].startswith("dagster: model · run ")  # the producer, by step name
    made_features = graph.producer_of("features/f0:v1")
    assert made_features and drawn[made_features].startswith("prefect: featurize · run ")  # a task run: its name


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


def dagster_graph(layers: int = 5, per_layer: int = 5) -> LineageGraph:
    """A Dagster asset graph: each asset made by its own step from two assets of the layer before."""
    graph = LineageGraph(root=f"shop/layer{layers - 1}_asset0:v3", direction="upstream")
    run_id = str(uuid.uuid4())
    previous: list[str] = []
    for layer in range(layers):
        current = []
        for i in range(per_layer):
            name = f"shop/layer{layer}_asset{i}"
            ref = f"{name}:v3"
            graph.add_node(ref, kind="artifact", name=name, version="v3", type="dataset" if layer < 3 else "model",
                           digest="blake3:" + uuid.uuid4().hex * 2, aliases=["production"] if layer == 4 else [])
            step = name.replace("/", "__")
            graph.add_node(f"run:dagster/{run_id}/{step}", kind="run", orchestrator="dagster", run_id=run_id,
                           step=step, name="nightly_retrain", partition=None)
            graph.add_edge(f"run:dagster/{run_id}/{step}", ref, "produced")
            for source in previous[i:i + 2] or previous[-1:]:
                graph.add_edge(source, f"run:dagster/{run_id}/{step}", "consumed")
            current.append(ref)
        previous = current
    return graph


def opened(page_html: str, tmp_path: Path, fragment: str = "") -> str:
    """The page's DOM after its script ran, in a 1400x900 window."""
    page = tmp_path / "lineage.html"
    page.write_text(page_html, encoding="utf-8")
    return chromium("--window-size=1400,900", "--dump-dom", page.as_uri() + fragment,
                    profile=tmp_path / "profile").stdout


def body_attribute(dom: str, name: str) -> str:
    found = re.search(rf'<body[^>]* {name}="([^"]*)"', dom)
    assert found, (name, dom[:500])
    return found.group(1)


def test_a_25_asset_dagster_graph_opens_whole_and_readable_at_1400x900(tmp_path: Path) -> None:
    graph = dagster_graph()
    assert len(graph.nodes) == 50
    dom = opened(render_html(graph), tmp_path)
    assert body_attribute(dom, "data-nodes-visible") == "50"  # every node inside the window
    zoom = int(body_attribute(dom, "data-zoom"))
    assert 70 <= zoom <= 100  # fitted, and large enough to read (12px text at >= 8.4px)
    assert re.search(rf'<span id="zoom-label">{zoom}%</span>', dom)  # the label tells the truth

    shot = tmp_path / "dagster.png"
    page = (tmp_path / "lineage.html").as_uri()
    chromium("--window-size=1400,900", "--hide-scrollbars", f"--screenshot={shot}", page, profile=tmp_path / "profile")
    with Image.open(shot) as image:
        pixels = image.convert("RGB")
        width, height = pixels.size
        background = (248, 250, 252)
        inked = [x for x in range(0, width, 4) if any(pixels.getpixel((x, y)) != background
                                                       for y in range(80, height, 3))]
    assert inked and inked[0] < 0.1 * width and inked[-1] > 0.9 * width  # drawn across the window, none cut off


def test_the_fixture_graph_fits_the_window_too(graph: LineageGraph, tmp_path: Path) -> None:
    dom = opened(render_html(graph), tmp_path)
    assert body_attribute(dom, "data-nodes-visible") == str(len(graph.nodes))
    assert int(body_attribute(dom, "data-zoom")) < 100  # scaled down to fit, no floor that cuts it off


def test_the_filter_counts_matches_and_brings_them_into_view(graph: LineageGraph, tmp_path: Path) -> None:
    dom = opened(render_html(graph), tmp_path, "#filter=model1")
    matches = [m for m in graph.nodes if "model1" in m]  # model1, model10, model11: far apart
    assert len(matches) == 3
    assert body_attribute(dom, "data-filter-matches") == str(len(matches))
    assert f'<span id="filter-count" aria-live="polite">{len(matches)} of {len(graph.nodes)} match</span>' in dom
    visible = set(re.findall(r'data-id="([^"]+)" data-kind="\w+" data-drawn="1" data-visible="1"', dom))
    assert set(matches) <= visible
    assert len(visible) < len(graph.nodes)  # zoomed in on them

    one = opened(render_html(graph), tmp_path, "#filter=report:v1")
    assert body_attribute(one, "data-filter-matches") == "1"
    assert body_attribute(one, "data-zoom") == "100"  # one match: shown at full size, never blown up


def test_deleted_and_quarantined_versions_are_marked(tmp_path: Path) -> None:
    graph = LineageGraph(root="model:v2", direction="upstream")
    graph.add_node("data:v1", kind="artifact", type="dataset", aliases=[], digest="d1", deleted=True)
    graph.add_node("model:v2", kind="artifact", type="model", aliases=[], digest="d2",
                   quarantined={"reason": "trained on leaked labels"})
    graph.add_edge("data:v1", "model:v2", "input")
    svg = render_svg(graph)
    assert 'class="node version deleted"' in svg and 'class="node version root quarantined"' in svg
    assert "QUARANTINED: trained on leaked labels" in svg and "DELETED" in svg  # the tooltips say why

    page = tmp_path / "marks.html"
    page.write_text(render_html(graph), encoding="utf-8")
    shot = tmp_path / "marks.png"
    chromium("--window-size=900,400", "--hide-scrollbars", f"--screenshot={shot}", page.as_uri(),
             profile=tmp_path / "profile")
    with Image.open(shot) as image:
        reds = sum(n for n, c in image.convert("RGB").getcolors(maxcolors=900 * 400) or []
                   if c[0] > 200 and c[1] < 80 and c[2] < 80)
    assert reds > 200  # the quarantined card's red border and badge are drawn


def test_the_cli_page_links_two_versions_of_a_name_to_their_diff(store_dir: Path, store: ArtifactStore,
                                                                 tmp_path: Path) -> None:
    raw = store.log(TraceletArtifact("raw", "dataset").add_object({"rows": 3}, "stats", serializer="json"))
    for threshold in (0.5, 0.7):
        store.log(TraceletArtifact("features", "dataset").add_object({"threshold": threshold}, "cfg", "json"),
                  inputs=[raw], producer=RunInfo("tracelet", f"run-{threshold}", name="featurize"))
    page = tmp_path / "page.html"
    done = CliRunner().invoke(app, ["--store", str(store_dir), "lineage", "raw:v1", "--downstream", "--format",
                                    "html", "-o", str(page)])
    assert done.exit_code == 0, done.output
    text = page.read_text()
    assert '<details id="diffs"><summary>1 diff between versions of the same name</summary>' in text
    assert '<section class="diff" id="diff-0"><h2>features:v1 → features:v2</h2>' in text
    assert " 1 entry changed, 0 added, 0 removed, 0 unchanged\n" in text  # `tracelet diff`'s report
    assert "cfg (object)\n  threshold: 0.5 -&gt; 0.7</pre>" in text  # with the content diff
    assert text.count('<a href="#diff-0" class="diff-link">') == 2  # both cards link to it

    dom = chromium("--window-size=1400,900", "--dump-dom", page.as_uri() + "#diff-0", profile=tmp_path / "profile")
    assert re.search(r'<details id="diffs" open="[^"]*">', dom.stdout)  # following a card's link opens the panel
