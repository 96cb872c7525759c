"""The ``tracelet`` command line's frame: the app, the common options, the store handle, errors
as one line, and the output helpers every command uses.

A command that works on a store is a function decorated with ``@store_command(name)``
(it gets ``--store`` / ``--catalog`` and its ``--json`` before or after the
command, and only ``log`` creates a store that is not there); it takes ``ctx: typer.Context``
first and opens the store with ``open_store(ctx, as_json=...)``; ``find_version`` reads a ref
and answers a bad one with a hint. Commands live in the sibling modules by what they do
(``_read``: look at a store; ``_manage``: change and maintain it); ``tracelet_core.cli``
imports them, which registers them on ``app``.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError
from typer.core import TyperGroup

from .. import __version__
from .._blobstore import is_local_uri, local_root
from .._errors import ArtifactNotFoundError, ConfigurationError, InvalidArtifactError, TraceletError
from .._logged import LoggedArtifact
from .._model import RunInfo
from .._names import parse_ref
from .._settings import TraceletSettings
from .._store import ArtifactStore

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
#: What a command needs to find before it opens a store: ``"store"`` (every command but two),
#: ``"manifests"`` (``reindex``: a store folder whose catalog may be missing) or ``"nothing"``
#: (``log``, the one command that creates a store).
Needs = Literal["store", "manifests", "nothing"]


@dataclass
class StoreHandle:
    """The store named on the command line, opened on first use and closed at exit.

    ``--store`` / ``--catalog`` given after the subcommand win over those given before it.
    A command refuses a local store that is not there instead of creating it, unless it
    ``needs`` nothing (``log``).
    """

    uri: str | None
    catalog_url: str | None
    needs: Needs = "store"
    #: ``--json`` given before the subcommand
    as_json: bool = False
    _store: ArtifactStore | None = None

    def choose(self, uri: str | None, catalog_url: str | None, *, needs: Needs) -> None:
        if uri is not None:
            self.uri = checked_store_option(uri)
        if catalog_url:
            self.catalog_url = catalog_url
        self.needs = needs

    def open(self, *, progress: bool) -> ArtifactStore:
        if self._store is None:
            if self.needs != "nothing":
                problem = missing_store_problem(self.uri, self.catalog_url, rebuilding=self.needs == "manifests")
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


def missing_store_problem(uri: str | None, catalog_url: str | None, *, rebuilding: bool = False) -> str | None:
    """Why a command must not open this store (it would create it), or ``None``; when
    ``rebuilding`` (``reindex``), a store folder holding manifests may lack its catalog.

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
            if rebuilding:
                return None
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


# -- refs, with a hint when they name nothing ---------------------------------------------------
def find_version(store: ArtifactStore, ref: str) -> LoggedArtifact:
    """``store.get(ref)``; a ref that names nothing fails with a hint at what exists."""
    with hinted(store, ref):
        return store.get(ref)


@contextmanager
def hinted(store: ArtifactStore, ref: str) -> Iterator[None]:
    """Fail with a hint (``ref_hint``) when the body finds that ``ref`` names nothing."""
    try:
        yield
    except (ArtifactNotFoundError, InvalidArtifactError) as exc:
        hint = ref_hint(store, ref)
        if hint is None:
            raise
        fail(f"{describe_error(exc)}; {hint}")


def ref_hint(store: ArtifactStore, ref: str) -> str | None:
    """What the user probably meant by a ``ref`` that names nothing: ``name:alias`` for
    ``name@alias``, the versions and aliases a name has, the closest existing names."""
    if "@" in ref and ":" not in ref:
        name, _, alias = ref.partition("@")
        return f"did you mean {name}:{alias}?"
    try:
        name, selector = parse_ref(ref)
    except InvalidArtifactError:
        return None
    if name not in (names := store.catalog.names()):
        return name_hint(name, names)
    versions = store.versions(name)
    if not versions:
        return None
    numbers = [v.version for v in versions]
    shown = ", ".join(numbers if len(numbers) <= 6 else [*numbers[:3], "...", *numbers[-3:]])
    aliases = sorted({a for v in versions for a in v.aliases})
    hint = f"{name} has {count(len(numbers), 'version')} ({shown})"
    hint += f" and the aliases {', '.join(aliases)}" if aliases else ", no aliases"
    if selector.isdigit():  # name:2
        wanted = f"v{int(selector)}"
        return (f"did you mean {name}:{wanted}? " if wanted in numbers else
                f"a version number is written {name}:{wanted}; ") + hint
    return hint


def name_hint(name: str, names: list[str]) -> str:
    """The existing names closest to ``name`` (difflib), or where to look."""
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if close:
        return f"did you mean {' or '.join(close)}?"
    return "`tracelet ls` lists the names" if names else "the store holds no artifacts yet"


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


def store_command(name: str | None = None, *, needs: Needs = "store") -> Callable[[CommandFunction], CommandFunction]:
    """Register a command that works on a store.

    It gets the common options (``--store``, ``--catalog``) so they work after the subcommand
    as well as before it, and ``--json`` given before the subcommand reaches its ``as_json``.
    Whatever it does, it never creates a store that is not there (exit 1) unless it ``needs``
    ``"nothing"`` (``log``). The decorated
    function takes ``ctx: typer.Context`` first and opens the store with ``open_store(ctx)``.
    A new common option is added here, once, for every command.
    """
    def register(func: CommandFunction) -> CommandFunction:
        signature = inspect.signature(func, eval_str=True)
        takes_json = "as_json" in signature.parameters
        command_name = name or func.__name__.replace("_", "-")
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
            handle.choose(store, catalog, needs=needs)
            if handle.as_json:
                if not takes_json:
                    fail(f"`tracelet {command_name}` has no --json output")
                kwargs["as_json"] = True
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
    as_json: JsonFlag = False,
) -> None:
    """Versioned, content-addressed ML artifacts with lineage."""
    handle = StoreHandle(checked_store_option(store) if store is not None else None, catalog or None,
                         as_json=as_json)
    ctx.obj = handle
    ctx.call_on_close(handle.close)



def main() -> None:
    """Console-script entry point (``tracelet``)."""
    app(prog_name="tracelet")

