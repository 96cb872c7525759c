"""Commands that look at a store: ``ls``, ``versions``, ``show``, ``get``, ``lineage``,
``export-lineage``."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, RenderableType
from rich.filesize import decimal as human_size
from rich.measure import Measurement
from rich.table import Column, Table
from rich.text import Text
from rich.tree import Tree

from .._delivery import exporter
from .._hashing import hash_file
from .._lineage import LineageGraph, run_label
from .._lineage_html import render_html, render_svg
from .._logged import LoggedArtifact
from .._provenance import describe_provenance
from .._store import ArtifactStore
from ._app import (
    JsonFlag,
    RefArgument,
    console,
    count,
    describe_run,
    fail,
    find_version,
    hinted,
    local_time,
    open_store,
    plain,
    print_json,
    store_command,
    summary,
    version_json,
)
from ._diff import page_diffs
from ._quarantine import status_line, status_mark


# -- ls ---------------------------------------------------------------------------------------
@store_command("ls")
def list_artifacts(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(
        metavar="NAME", help="Only this name and the names under it (NAME/...).",
        show_default=False)] = None,
    artifact_type: Annotated[str | None, typer.Option(
        "--type", "-t", metavar="TYPE", help="Only artifacts of this type (model, dataset, ...)."),
    ] = None,
    tag: Annotated[str | None, typer.Option(
        "--tag", metavar="TAG", help="Only versions carrying this tag (the latest such of each name)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List the latest version of every artifact name."""
    store = open_store(ctx, as_json=as_json)
    artifacts = store.list(name, type=artifact_type, tag=tag)
    if not artifacts and name is None and artifact_type is None and tag is None \
            and any(True for _ in store.blobs.iter_manifests()):
        fail(f"the catalog of {store.uri} is empty but the store holds versions; "
             "run `tracelet reindex` to rebuild it")
    if as_json:
        print_json([summary(a) for a in artifacts])
    elif not artifacts:
        typer.echo("no artifacts")
    else:
        console().print(artifacts_table(artifacts))


def artifacts_table(artifacts: Iterable[LoggedArtifact]) -> Table:
    table = Table("REF", "TYPE", "ALIASES", "SIZE", "CREATED", box=None, header_style="bold")
    for artifact in artifacts:
        table.add_row(plain(artifact.ref + status_mark(artifact)), plain(artifact.type.value),
                      plain(", ".join(artifact.aliases)), human_size(artifact.size_bytes),
                      local_time(artifact))
    return table


# -- versions ---------------------------------------------------------------------------------
@store_command()
def versions(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The artifact name.", show_default=False)],
    as_json: JsonFlag = False,
) -> None:
    """List every version of NAME, oldest first: number, created, size, aliases, tags."""
    store = open_store(ctx, as_json=as_json)
    with hinted(store, name):
        found = store.versions(name)
    rows = [(v, v.tags) for v in found]
    if as_json:
        print_json([{**summary(v), "tags": tags} for v, tags in rows])
        return
    table = Table("VERSION", "CREATED", "SIZE", "ALIASES", "TAGS", box=None, header_style="bold")
    for v, tags in rows:
        table.add_row(plain(v.version + status_mark(v)), local_time(v), human_size(v.size_bytes),
                      plain(", ".join(v.aliases)), plain(", ".join(tags)))
    console().print(table)


# -- show -------------------------------------------------------------------------------------
@store_command()
def show(
    ctx: typer.Context,
    ref: RefArgument,
    as_json: JsonFlag = False,
) -> None:
    """Show one version: files, objects, references, producer, inputs and aliases."""
    artifact = find_version(open_store(ctx, as_json=as_json), ref)
    if as_json:
        print_json(version_json(artifact, created=False))
        return
    grid, tables = details_grid(artifact), entry_tables(artifact)
    out = unwrapped_console([grid, *tables])
    out.print(Text.assemble((artifact.ref, "bold"), f"  ({artifact.type.value})"))
    out.print(grid)
    for table in tables:
        out.print()
        out.print(table)


def unwrapped_console(renderables: list[Table]) -> Console:
    """A console as wide as the terminal, or as wide as the widest of ``renderables`` needs to
    fold nothing: a digest stays whole on one line (the terminal may fold it on screen; copied,
    it is one string)."""
    out = console()
    unbounded = out.options.update_width(1_000_000)
    needed = max((Measurement.get(out, unbounded, r).maximum for r in renderables), default=0)
    return out if needed <= out.width else Console(highlight=False, width=needed)


def details_grid(artifact: LoggedArtifact) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    rows: list[tuple[str, str]] = [
        ("digest", artifact.digest),
        ("size", human_size(artifact.size_bytes)),
        ("created", local_time(artifact)),
        ("aliases", ", ".join(artifact.aliases) or "-"),
        ("description", artifact.description or "-"),
        ("producer", describe_run(artifact.producer) if artifact.producer else "-"),
        ("inputs", ", ".join(artifact.inputs) or "-"),
        ("metadata", json.dumps(artifact.metadata, sort_keys=True) if artifact.metadata else "-"),
        *describe_provenance(artifact.producer.extra if artifact.producer else {}),
        *([("status", status)] if (status := status_line(artifact)) else []),
    ]
    for key, value in rows:
        grid.add_row(key, plain(value))
    return grid


def entry_tables(artifact: LoggedArtifact) -> list[Table]:
    tables: list[Table] = []
    if artifact.files:
        files = Table("PATH", "SIZE", Column("DIGEST", no_wrap=True), title="files",
                      title_justify="left", box=None)
        for f in artifact.files:
            files.add_row(plain(f.path), human_size(f.size), plain(f.digest))
        tables.append(files)
    if artifact.objects:
        objects = Table("NAME", "PATH", "SERIALIZER", "SIZE", title="objects", title_justify="left",
                        box=None)
        for o in artifact.objects:
            objects.add_row(plain(o.name), plain(o.path), plain(o.serializer), human_size(o.size))
        tables.append(objects)
    if artifact.references:
        references = Table("NAME", "URI", "SIZE", title="references", title_justify="left",
                           box=None)
        for r in artifact.references:
            size = human_size(r.size) if r.size is not None else "?"
            references.add_row(plain(r.name), plain(r.uri), size)
        tables.append(references)
    return tables


# -- get --------------------------------------------------------------------------------------
@store_command()
def get(
    ctx: typer.Context,
    ref: RefArgument,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="DIR",
        help="Folder to write into (default: ./artifacts/NAME/VERSION).")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Write into a folder that is not empty (files of the version replace "
                        "files at the same paths; other files stay).")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Download a version's files and objects (each verified against its digest).

    The folder must be empty (or hold exactly this version) unless --force is given; a failed
    download leaves nothing behind.
    """
    artifact = find_version(open_store(ctx, as_json=as_json), ref)
    root = output if output is not None else Path("artifacts", artifact.name, artifact.version)
    written = [f.path for f in artifact.files] + [o.path for o in artifact.objects]
    if not (root.is_dir() and holds_exactly(artifact, root)):
        download_into(artifact, root, force=force)
    if as_json:
        print_json({"ref": artifact.ref, "path": str(root.resolve()), "files": written})
    else:
        typer.echo(f"{artifact.ref} -> {root} ({count(len(written), 'file')})")


def holds_exactly(artifact: LoggedArtifact, root: Path) -> bool:
    """Whether ``root`` holds this version's files and objects, byte for byte, and nothing else."""
    expected = {f.path: f.digest for f in artifact.files} | {o.path: o.digest for o in artifact.objects}
    present = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if not p.is_dir()}
    if set(present) != set(expected):
        return False
    return all(p.is_file() and not p.is_symlink() and hash_file(p)[0] == expected[path]
               for path, p in present.items())


def download_into(artifact: LoggedArtifact, root: Path, *, force: bool) -> None:
    """Download into a staging folder beside ``root``, then move the files into place, so a
    failure (a corrupted blob, a full disk) leaves ``root`` as it was and creates nothing."""
    if root.exists() and not root.is_dir():
        fail(f"{root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not force:
        fail(f"{root} is not empty; choose an empty folder or pass --force to write into it")
    created = topmost_missing(root.resolve())
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tracelet-get-", dir=root.parent))
    try:
        artifact.download(staging)
        if not root.exists():
            staging.rename(root)
            return
        for source in sorted(staging.rglob("*")):
            if source.is_dir():
                continue
            target = root / source.relative_to(staging)
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            source.replace(target)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def topmost_missing(path: Path) -> Path | None:
    """The outermost folder on the way to ``path`` that does not exist yet (``path`` itself when
    only it is missing), or ``None`` when it exists."""
    missing = None
    while not path.exists():
        missing, path = path, path.parent
    return missing


# -- lineage ----------------------------------------------------------------------------------
def node_label(graph: LineageGraph, node_id: str) -> Text:
    attrs = graph.nodes[node_id]
    if attrs.get("kind") == "run":
        return Text(run_label(attrs), style="cyan")
    label = Text.assemble((node_id, "bold"), f" ({attrs.get('type', '?')})")
    if attrs.get("aliases"):
        label.append(f" [{', '.join(attrs['aliases'])}]", style="green")
    return label


def lineage_children(graph: LineageGraph) -> dict[str, list[tuple[str, str]]]:
    """For each node, the nodes one step further from the root, with the edge's relation."""
    upstream = graph.direction == "upstream"
    children: dict[str, list[tuple[str, str]]] = {}
    for edge in graph.edges:
        parent, child = (edge.target, edge.source) if upstream else (edge.source, edge.target)
        children.setdefault(parent, []).append((child, edge.relation))
    return children


def lineage_tree(graph: LineageGraph) -> Tree:
    """The graph as a tree from its root; a node reached twice is expanded only once."""
    children = lineage_children(graph)
    tree = Tree(node_label(graph, graph.root))
    expanded = {graph.root}

    def grow(branch: Tree, node_id: str) -> None:
        for child, relation in children.get(node_id, []):
            label = node_label(graph, child).append(f"  {relation}", style="dim")
            if child in expanded:
                branch.add(label.append("  (shown above)", style="dim"))
                continue
            expanded.add(child)
            grow(branch.add(label), child)

    grow(tree, graph.root)
    return tree


#: A lineage output format: the graph (and its store, for formats that look more up) as text,
#: or as something rich prints. Add a format by adding an entry here.
LineageRenderer = Callable[[LineageGraph, ArtifactStore], "str | RenderableType"]
LINEAGE_FORMATS: dict[str, LineageRenderer] = {
    "text": lambda graph, _store: lineage_tree(graph),
    "json": lambda graph, _store: graph.to_json() + "\n",
    "mermaid": lambda graph, _store: graph.to_mermaid(),
    "dot": lambda graph, _store: graph.to_dot(),
    "html": lambda graph, store: render_html(graph, diffs=page_diffs(store, graph)),
    "svg": lambda graph, _store: render_svg(graph),
    "openlineage": lambda graph, store: openlineage_lines(store, graph),
}


def known_lineage_format(value: str) -> str:
    if value not in LINEAGE_FORMATS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(LINEAGE_FORMATS)}")
    return value


@store_command()
def lineage(
    ctx: typer.Context,
    ref: RefArgument,
    downstream: Annotated[bool, typer.Option(
        "--downstream", help="What used this version (default: what it was made from).")] = False,
    depth: Annotated[int | None, typer.Option(
        "--depth", min=0, metavar="N", help="Follow at most N steps.")] = None,
    output_format: Annotated[str, typer.Option(
        "--format", "-f", metavar="FORMAT", callback=known_lineage_format,
        help=f"{', '.join(LINEAGE_FORMATS)}.")] = "text",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE", help="Write to FILE instead of stdout.")] = None,
) -> None:
    """Trace the versions and runs upstream (or downstream) of a version.

    --format html writes one self-contained page drawing the graph (open it in any browser,
    no network needed); svg the drawing alone.
    """
    direction = "downstream" if downstream else "upstream"
    store = open_store(ctx, as_json=output is None and output_format != "text")
    graph = store.lineage(find_version(store, ref), direction=direction, depth=depth)
    rendered = LINEAGE_FORMATS[output_format](graph, store)
    if output is None:
        if isinstance(rendered, str):
            typer.echo(rendered, nl=False)
        else:
            console().print(rendered)
        return
    with output.open("w", encoding="utf-8") as handle:
        if isinstance(rendered, str):
            handle.write(rendered)
        else:
            Console(file=handle, width=160, no_color=True, highlight=False).print(rendered)
    typer.echo(f"wrote the lineage of {graph.root} ({count(len(graph.nodes), 'node')}) to {output}")


def openlineage_lines(store: ArtifactStore, graph: LineageGraph) -> str:
    """The OpenLineage event of each version in the graph, oldest first, one JSON document per line."""
    openlineage = exporter()
    return "".join(openlineage.event_json(event) + "\n" for event in openlineage.graph_events(store, graph))


# -- export-lineage ---------------------------------------------------------------------------
@store_command("export-lineage")
def export_lineage(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Send the OpenLineage event of every version, oldest first, through the transport
    configured the OpenLineage way (OPENLINEAGE_URL, OPENLINEAGE__TRANSPORT__*, openlineage.yml):
    for a lineage server connected later. Run ids are stable, so exporting twice sends the same
    events; exit 1 at the first that fails."""
    results = list(exporter().export_store(open_store(ctx, as_json=as_json)))
    failed = [r for r in results if not r.ok]
    exported = len(results) - len(failed)
    if as_json:
        print_json({"exported": exported, "results": [r.to_dict() for r in results]})
    else:
        typer.echo(f"exported {count(exported, 'event')}")
    if failed:
        fail(f"export stopped: {failed[0].error}; run tracelet export-lineage again later")


