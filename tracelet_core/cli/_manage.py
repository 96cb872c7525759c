"""Commands that change or maintain a store: ``alias``, ``verify``, ``gc``, ``sync``, ``log``,
``reindex``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from .._artifact import TraceletArtifact
from .._errors import IntegrityError, InvalidArtifactError
from .._maintenance import DEFAULT_GC_GRACE_SECONDS, GcReport
from .._names import parse_ref
from .._store import ArtifactStore
from ._app import (
    JsonFlag,
    count,
    describe_run,
    fail,
    hinted,
    open_store,
    print_json,
    store_command,
    version_json,
)


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
    reason: Annotated[str | None, typer.Option(
        "--reason", metavar="R", help="Why (kept in the alias history).", show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Point ALIAS at a version (moving it from any other), or remove it; `alias history NAME`
    lists every change of NAME's aliases."""
    store = open_store(ctx, as_json=as_json)
    if ref == HISTORY and not remove:
        print_alias_history(store, alias_name, as_json=as_json)
        return
    if remove:
        name, _selector = parse_ref(ref)
        earlier = _alias_event_ids(store, name)
        with hinted(store, f"{name}:{alias_name}"):
            store.remove_alias(name, alias_name, reason=reason)
        result: dict[str, Any] = {"name": name, "alias": alias_name, "removed": True}
        message = f"removed alias {alias_name!r} from {name}"
    else:
        with hinted(store, ref):
            name = parse_ref(ref)[0]
            earlier = _alias_event_ids(store, name)
            artifact = store.set_alias(ref, alias_name, reason=reason)
        result = {"name": artifact.name, "alias": alias_name, "ref": artifact.ref,
                  "aliases": artifact.aliases}
        message = f"{artifact.name}:{alias_name} -> {artifact.ref}"
    trackers = _trackers_told(store, name, earlier)
    if trackers:
        result["trackers"] = trackers
        told = ", ".join(f"{backend} {outcome}" for backend, outcome in trackers.items())
        retry = "; `tracelet sync` retries the rest" if any(o != "updated" for o in trackers.values()) else ""
        message += f"\ntrackers: {told}{retry}"
    if as_json:
        print_json(result)
    else:
        typer.echo(message)


_EVENT_STATUSES = ("pending", "failed", "delivered")


def _alias_event_ids(store: ArtifactStore, name: str) -> set[int]:
    return {event.id for event in store.catalog.alias_events(statuses=_EVENT_STATUSES, name=name)}


def _trackers_told(store: ArtifactStore, name: str, earlier: set[int]) -> dict[str, str]:
    """backend -> what became of the alias events this command queued for it: ``updated``,
    ``failed: <error>`` or ``pending`` (its version is not delivered there yet)."""
    told: dict[str, str] = {}
    for event in store.catalog.alias_events(statuses=_EVENT_STATUSES, name=name):
        if event.id in earlier:
            continue
        outcome = {"delivered": "updated", "pending": "pending"}.get(event.status, f"failed: {event.last_error}")
        if told.get(event.backend, "updated") == "updated":  # the worst outcome per tracker
            told[event.backend] = outcome
    return told


#: ``tracelet alias history NAME``: the word in REF's place (an artifact named ``history`` is
#: still aliased with an explicit ref: ``tracelet alias history:latest ALIAS``).
HISTORY = "history"


def print_alias_history(store: ArtifactStore, name: str, *, as_json: bool) -> None:
    """Every recorded change of ``name``'s aliases, oldest first."""
    with hinted(store, name):
        if name not in store.catalog.names():
            store.get(name)  # no such artifact: the error, with the closest names
        changes = store.alias_history(name)
    if as_json:
        print_json([change.to_dict() for change in changes])
        return
    for change in changes:
        by = f" by {describe_run(change.by)}" if change.by else ""
        why = f" ({change.reason})" if change.reason else ""
        when = change.at.astimezone().isoformat(timespec="seconds")
        typer.echo(f"{when}  {name}:{change.alias}  {change.before or '-'} -> {change.after or '-'}{by}{why}")
    if not changes:
        typer.echo(f"no alias of {name} was ever set")


# -- verify -----------------------------------------------------------------------------------
@store_command()
def verify(
    ctx: typer.Context,
    ref: Annotated[str | None, typer.Argument(
        metavar="REF", help="One version (default: every version).", show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Re-hash manifests and blobs; exit 1 naming every problem found."""
    store = open_store(ctx, as_json=as_json)
    try:
        if ref is None:
            checked = store.verify()
        else:
            with hinted(store, ref):
                checked = store.verify(ref)
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
@store_command("log", needs="nothing")
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
@store_command(needs="manifests")
def reindex(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Rebuild missing catalog rows from the manifests in the store; exit 1 when it added or
    skipped anything (the catalog was not clean), 0 when nothing was missing."""
    added = open_store(ctx, as_json=as_json).reindex()
    if as_json:
        print_json({"added": added, **({"skipped": added.skipped} if added.skipped else {}),
                    **({"unsettled_aliases": added.unsettled_aliases} if added.unsettled_aliases else {})})
    else:
        for ref in added:
            typer.echo(ref)
        for problem in added.skipped:
            typer.echo(f"skipped {problem}")
        for alias, chosen in added.unsettled_aliases.items():
            typer.echo(f"unsettled alias {alias}: its last move never committed; "
                       + (f"kept {chosen}" if chosen else "no recorded target exists, left unset"))
        typer.echo(f"added {count(len(added), 'version')}")
    if added or not added.clean:
        found = [count(len(added), "missing version")] + (
            [f"skipped {count(len(added.skipped), 'manifest or journal', 'manifests or journals')}"]
            if added.skipped else []) + (
            [f"{count(len(added.unsettled_aliases), 'unsettled alias', 'unsettled aliases')}"]
            if added.unsettled_aliases else [])
        fail(f"the catalog was not clean: {', '.join(found)}")


