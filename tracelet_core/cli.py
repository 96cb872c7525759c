"""The ``tracelet`` command line: list, inspect, fetch, trace, alias, verify and clean a store.

Every command opens the store lazily from ``--store`` / ``--catalog`` (default
``TRACELET_STORE_URI`` / ``TRACELET_CATALOG_URL``, read through ``TraceletSettings``).
Results go to stdout: readable tables and trees, or, with ``--json``, exactly one JSON
document and nothing else (progress bars are switched off then). Bad input (any
``TraceletError``, a missing path, a catalog that cannot be reached) ends a command with exit
code 1 and a single ``error: ...`` line on stderr, never a traceback; typer's own usage
errors keep exit code 2.

Extending it: a command that works on a store is a function decorated with
``@store_command(name, read_only=...)`` (it gets ``--store`` / ``--catalog`` before or after
the command, and read-only commands never create a store); it takes ``ctx: typer.Context``
first and opens the store with ``open_store(ctx, as_json=...)``. A lineage output format is one
entry in ``LINEAGE_FORMATS``.

This module is the only one that imports typer and rich at import time; ``tracelet_core``
does not import it.
"""

from __future__ import annotations

import functools
import inspect
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console, RenderableType
from rich.filesize import decimal as human_size
from rich.table import Column, Table
from rich.text import Text
from rich.tree import Tree
from sqlalchemy.exc import SQLAlchemyError
from typer.core import TyperGroup

from . import __version__
from ._artifact import TraceletArtifact
from ._blobstore import is_local_uri, local_root
from ._delivery import exporter
from ._errors import ConfigurationError, IntegrityError, InvalidArtifactError, TraceletError
from ._hashing import hash_file
from ._lineage import LineageGraph, run_label
from ._lineage_html import render_html, render_svg
from ._logged import LoggedArtifact
from ._model import RunInfo
from ._names import parse_ref
from ._settings import TraceletSettings
from ._store import DEFAULT_GC_GRACE_SECONDS, ArtifactStore, GcReport

#: Errors that mean "the input or the environment is wrong", reported as one line, exit 1.
USER_ERRORS: tuple[type[BaseException], ...] = (TraceletError, OSError, SQLAlchemyError)


# -- errors -----------------------------------------------------------------------------------
def one_line(message: str) -> str:
    """Fold a (possibly multi-line) message into one line: ``first rest1; rest2``."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    return lines[0] if len(lines) == 1 else f"{lines[0]} {'; '.join(lines[1:])}"


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    if isinstance(exc, SQLAlchemyError):
        return f"catalog error: {exc}"
    return str(exc) or type(exc).__name__


def fail(message: str) -> NoReturn:
    """Print ``error: message`` as one stderr line and exit with code 1."""
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(1)


class OneLineErrorGroup(TyperGroup):
    """Turns expected errors from any command into one stderr line and exit code 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise  # typer exits quietly when the reader of stdout went away
        except USER_ERRORS as exc:
            fail(describe_error(exc))


# -- the store --------------------------------------------------------------------------------
@dataclass
class StoreHandle:
    """The store named on the command line, opened on first use and closed at exit.

    ``--store`` / ``--catalog`` given after the subcommand win over those given before it.
    A read-only command (``must_exist``) refuses a local store that is not there instead of
    creating it.
    """

    uri: str | None
    catalog_url: str | None
    must_exist: bool = False
    _store: ArtifactStore | None = None

    def choose(self, uri: str | None, catalog_url: str | None, *, must_exist: bool) -> None:
        if uri is not None:
            self.uri = checked_store_option(uri)
        if catalog_url:
            self.catalog_url = catalog_url
        self.must_exist = must_exist

    def open(self, *, progress: bool) -> ArtifactStore:
        if self._store is None:
            if self.must_exist:
                problem = missing_store_problem(self.uri, self.catalog_url)
                if problem:
                    fail(problem)
            self._store = ArtifactStore.open(self.uri, self.catalog_url)
        self._store.show_progress = progress
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def checked_store_option(uri: str) -> str:
    if not uri.strip():
        raise ConfigurationError("--store needs a path or URL, got an empty string")
    return uri


def missing_store_problem(uri: str | None, catalog_url: str | None) -> str | None:
    """Why a read-only command must not open this store (it would create it), or ``None``.

    Only local stores are checked: opening a remote one writes nothing to its bucket.
    """
    settings = TraceletSettings.load()
    store_uri = uri if uri is not None else settings.resolved_store_uri()
    if not store_uri.strip() or not is_local_uri(store_uri):
        return None
    root = local_root(store_uri)
    if catalog_url or settings.catalog_url:
        present = root.is_dir()
    else:
        present = (root / "catalog.db").is_file()
        if not present and holds_manifests(root):
            return (f"the catalog of {root} is missing but the store holds versions; "
                    f"run `tracelet --store {root} reindex` to rebuild it")
    if not present:
        return f"no tracelet store at {root} (check --store or TRACELET_STORE_URI; logging creates one)"
    return None


def holds_manifests(root: Path) -> bool:
    """Whether a local store folder holds version manifests (what ``reindex`` reads)."""
    manifests = root / "manifests"
    return manifests.is_dir() and next(manifests.rglob("@v*.json"), None) is not None


def open_store(ctx: typer.Context, *, as_json: bool = False) -> ArtifactStore:
    """The command's store; progress bars only when stdout is not carrying JSON."""
    handle = ctx.find_object(StoreHandle)
    if handle is None:  # a command invoked without the app's callback (not via the CLI)
        handle = StoreHandle(None, None)
        ctx.call_on_close(handle.close)
    return handle.open(progress=not as_json)


# -- output helpers ---------------------------------------------------------------------------
def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def console() -> Console:
    return Console(highlight=False)


def plain(value: object) -> Text:
    """User data as literal text (never parsed as rich markup)."""
    return Text("" if value is None else str(value))


def local_time(artifact: LoggedArtifact) -> str:
    return artifact.created_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def describe_run(run: RunInfo) -> str:
    title = f"{run.orchestrator} run {run.run_id}"
    if run.step:
        title += f" / {run.step}"
    if run.name:
        title += f" ({run.name})"
    return title + (f" [partition {run.partition}]" if run.partition else "")


def summary(artifact: LoggedArtifact) -> dict[str, Any]:
    """What ``ls --json`` reports per name."""
    data = artifact.to_dict()
    keys = ("name", "version", "ref", "type", "digest", "aliases", "size_bytes", "created_at",
            "description")
    return {key: data[key] for key in keys}


def version_json(artifact: LoggedArtifact, *, created: bool) -> dict[str, Any]:
    """What ``show --json`` and ``log --json`` print: the version, and whether this command
    created it (``log`` of unchanged content returns the existing version: ``false``)."""
    return {**artifact.to_dict(), "created": created}


def count(number: int, noun: str, plural: str | None = None) -> str:
    """``1 file``, ``2 files``; ``plural`` for irregular nouns."""
    return f"{number} {noun}" if number == 1 else f"{number} {plural or noun + 's'}"


# -- the app ----------------------------------------------------------------------------------
app = typer.Typer(
    name="tracelet",
    cls=OneLineErrorGroup,
    help="Versioned, content-addressed ML artifacts with lineage.\n\n"
         "--store and --catalog go before or after the command: tracelet ls --store ./s",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no "<bool>" type placeholders beside flags
)

StoreOption = Annotated[str | None, typer.Option(
    "--store", metavar="URI", show_default=False,
    help="Store path or fsspec URL (default: $TRACELET_STORE_URI or ~/.tracelet/store).")]
CatalogOption = Annotated[str | None, typer.Option(
    "--catalog", metavar="URL", show_default=False,
    help="SQLAlchemy URL of the catalog (default: $TRACELET_CATALOG_URL, or SQLite inside a "
         "local store).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
RefArgument = Annotated[str, typer.Argument(
    metavar="REF", help="name, name:vN, name:latest or name:ALIAS.", show_default=False)]

CommandFunction = TypeVar("CommandFunction", bound=Callable[..., Any])


def store_command(name: str | None = None, *, read_only: bool = False
                  ) -> Callable[[CommandFunction], CommandFunction]:
    """Register a command that works on a store.

    It gets the common options (``--store``, ``--catalog``) so they work after the subcommand
    as well as before it; ``read_only`` commands never create a store that is not there. The
    decorated function takes ``ctx: typer.Context`` first and opens the store with
    ``open_store(ctx)``. A new common option is added here, once, for every command.
    """

    def register(func: CommandFunction) -> CommandFunction:
        signature = inspect.signature(func, eval_str=True)
        common = [
            inspect.Parameter("store", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=StoreOption),
            inspect.Parameter("catalog", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=CatalogOption),
        ]

        @functools.wraps(func)
        def command(ctx: typer.Context, *args: Any, store: str | None = None, catalog: str | None = None,
                    **kwargs: Any) -> Any:
            handle = ctx.find_object(StoreHandle)
            if handle is None:  # invoked without the app's callback
                handle = StoreHandle(None, None)
                ctx.obj = handle
                ctx.call_on_close(handle.close)
            handle.choose(store, catalog, must_exist=read_only)
            return func(ctx, *args, **kwargs)

        parameters = list(signature.parameters.values())
        command.__signature__ = signature.replace(parameters=[*parameters, *common])  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in [*parameters, *common]}
        app.command(name)(command)
        return func

    return register


def show_version(value: bool) -> None:
    if value:
        typer.echo(f"tracelet {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    store: StoreOption = None,
    catalog: CatalogOption = None,
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=show_version, help="Print the version and exit."),
    ] = False,
) -> None:
    """Versioned, content-addressed ML artifacts with lineage."""
    handle = StoreHandle(checked_store_option(store) if store is not None else None, catalog or None)
    ctx.obj = handle
    ctx.call_on_close(handle.close)


# -- ls ---------------------------------------------------------------------------------------
@store_command("ls", read_only=True)
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
        table.add_row(plain(artifact.ref), plain(artifact.type.value),
                      plain(", ".join(artifact.aliases)), human_size(artifact.size_bytes),
                      local_time(artifact))
    return table


# -- show -------------------------------------------------------------------------------------
@store_command(read_only=True)
def show(
    ctx: typer.Context,
    ref: RefArgument,
    as_json: JsonFlag = False,
) -> None:
    """Show one version: files, objects, references, producer, inputs and aliases."""
    artifact = open_store(ctx, as_json=as_json).get(ref)
    if as_json:
        print_json(version_json(artifact, created=False))
        return
    out = console()
    out.print(Text.assemble((artifact.ref, "bold"), f"  ({artifact.type.value})"))
    out.print(details_grid(artifact))
    for table in entry_tables(artifact):
        out.print()
        out.print(table)


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
    ]
    for key, value in rows:
        grid.add_row(key, plain(value))
    return grid


def entry_tables(artifact: LoggedArtifact) -> list[Table]:
    tables: list[Table] = []
    if artifact.files:
        files = Table("PATH", "SIZE", Column("DIGEST", overflow="fold"), title="files",
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
@store_command(read_only=True)
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
    artifact = open_store(ctx, as_json=as_json).get(ref)
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
    "html": lambda graph, _store: render_html(graph),
    "svg": lambda graph, _store: render_svg(graph),
    "openlineage": lambda graph, store: openlineage_lines(store, graph),
}


def known_lineage_format(value: str) -> str:
    if value not in LINEAGE_FORMATS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(LINEAGE_FORMATS)}")
    return value


@store_command(read_only=True)
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
    graph = store.lineage(ref, direction=direction, depth=depth)
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


# -- alias ------------------------------------------------------------------------------------
@store_command()
def alias(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(
        metavar="REF", help="The version to point at (with --remove: the name).")],
    alias_name: Annotated[str, typer.Argument(
        metavar="ALIAS", help="production, best, v1.2.0, ...")],
    remove: Annotated[bool, typer.Option(
        "--remove", help="Remove ALIAS from the name instead.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Point ALIAS at a version (moving it from any other), or remove it."""
    store = open_store(ctx, as_json=as_json)
    if remove:
        name, _selector = parse_ref(ref)
        store.remove_alias(name, alias_name)
        result: dict[str, Any] = {"name": name, "alias": alias_name, "removed": True}
        message = f"removed alias {alias_name!r} from {name}"
    else:
        artifact = store.set_alias(ref, alias_name)
        result = {"name": artifact.name, "alias": alias_name, "ref": artifact.ref,
                  "aliases": artifact.aliases}
        message = f"{artifact.name}:{alias_name} -> {artifact.ref}"
    if as_json:
        print_json(result)
    else:
        typer.echo(message)


# -- verify -----------------------------------------------------------------------------------
@store_command(read_only=True)
def verify(
    ctx: typer.Context,
    ref: Annotated[str | None, typer.Argument(
        metavar="REF", help="One version (default: every version).", show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Re-hash manifests and blobs; exit 1 naming every problem found."""
    try:
        checked = open_store(ctx, as_json=as_json).verify(ref)
    except IntegrityError as exc:
        report_problems(exc.problems or [str(exc)], as_json)
    if as_json:
        print_json({"ok": True, "checked": checked})
    else:
        typer.echo(f"ok: {count(len(checked), 'version')} verified")


def report_problems(problems: list[str], as_json: bool) -> NoReturn:
    """Every problem on stdout (or in the JSON document), one summary line on stderr, exit 1."""
    if as_json:
        print_json({"ok": False, "problems": problems})
    else:
        for problem in problems:
            typer.echo(f"BAD {problem}")
    fail(f"{count(len(problems), 'problem')} found")


# -- gc ---------------------------------------------------------------------------------------
@store_command()
def gc(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Only list what would be removed.")] = False,
    grace: Annotated[float, typer.Option(
        "--grace", min=0, metavar="SECONDS",
        help="Keep unreferenced files younger than this (in-flight logs)."),
    ] = DEFAULT_GC_GRACE_SECONDS,
    as_json: JsonFlag = False,
) -> None:
    """Delete blobs no version needs and leftovers of crashed writers."""
    report = open_store(ctx, as_json=as_json).gc(dry_run=dry_run, grace_seconds=grace)
    if as_json:
        print_json(report.to_dict())
    else:
        print_gc_report(report)


def print_gc_report(report: GcReport) -> None:
    verb = "would remove" if report.dry_run else "removed"
    counts = [count(len(report.blobs), "blob"), count(len(report.manifests), "stray manifest")]
    if not report.dry_run:
        counts.append(count(len(report.temp_files), "temp file"))
    typer.echo(f"{verb} {', '.join(counts)}")
    for item in [*report.blobs, *report.manifests, *report.temp_files]:
        typer.echo(f"  {item}")


# -- sync -------------------------------------------------------------------------------------
@store_command()
def sync(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Retry deliveries to tracker backends that failed or never finished; exit 1 if some
    still fail."""
    retried = open_store(ctx, as_json=as_json).sync()
    failed = [r for r in retried if not r.ok]
    if as_json:
        print_json({"retried": len(retried), "delivered": len(retried) - len(failed),
                    "results": [r.to_dict() for r in retried]})
    else:
        for result in retried:
            outcome = f"ok {result.version} {result.uri or ''}" if result.ok else f"FAILED {result.error}"
            typer.echo(f"{result.backend}: {outcome}".rstrip())
        typer.echo(f"retried {count(len(retried), 'delivery', 'deliveries')}")
    if failed:
        fail(f"{count(len(failed), 'delivery', 'deliveries')} still failing; run tracelet sync again later")


# -- log --------------------------------------------------------------------------------------
@store_command("log")
def log_path(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(
        metavar="PATH", help="A file or a folder to log as one version.")],
    name: Annotated[str, typer.Option("--name", "-n", metavar="NAME", help="Artifact name (a/b/c).")],
    artifact_type: Annotated[str, typer.Option(
        "--type", "-t", metavar="TYPE", help="model, dataset, config, ...")] = "custom",
    aliases: Annotated[list[str] | None, typer.Option(
        "--alias", "-a", metavar="ALIAS", help="Alias to set on the new version (repeatable)."),
    ] = None,
    description: Annotated[str | None, typer.Option(
        "--description", "-d", metavar="TEXT", help="What this version is.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Log a file or a folder as the next version of NAME."""
    artifact = build_artifact(path, name, artifact_type, description)
    logged = open_store(ctx, as_json=as_json).log(artifact, aliases=aliases or ())
    if as_json:
        print_json(version_json(logged, created=logged.created))
    elif logged.created:
        typer.echo(logged.ref)
    else:
        typer.echo(f"unchanged: kept {logged.ref}")


def build_artifact(path: Path, name: str, artifact_type: str,
                   description: str | None) -> TraceletArtifact:
    """A file becomes one entry; a folder becomes one entry per file under it."""
    artifact = TraceletArtifact(name, artifact_type, description)
    if path.is_dir():
        return artifact.add_dir(path)
    if not path.exists():
        raise InvalidArtifactError(f"no such file or directory: {path}")
    return artifact.add_file(path)


# -- reindex ----------------------------------------------------------------------------------
@store_command()
def reindex(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Rebuild missing catalog rows from the manifests in the store."""
    added = open_store(ctx, as_json=as_json).reindex()
    if as_json:
        print_json({"added": added, **({"skipped": added.skipped} if added.skipped else {})})
        return
    for ref in added:
        typer.echo(ref)
    for problem in added.skipped:
        typer.echo(f"skipped {problem}", err=True)
    typer.echo(f"added {count(len(added), 'version')}")


def main() -> None:
    """Console-script entry point (``tracelet``)."""
    app(prog_name="tracelet")


if __name__ == "__main__":
    main()
