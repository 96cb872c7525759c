"""Commands for the second half of a version's life: ``delete``, ``prune`` and ``retention``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .._errors import InvalidArtifactError
from ._app import JsonFlag, RefArgument, count, open_store, print_json, store_command, summary

KeepLast = Annotated[int | None, typer.Option(
    "--keep-last", metavar="N", show_default=False, help="Keep the newest N versions of each name.")]
OlderThan = Annotated[str | None, typer.Option(
    "--older-than", metavar="AGE", show_default=False,
    help="Only versions created more than AGE ago: 30d, 12h, 90m, 45s, 2w.")]


# -- delete -----------------------------------------------------------------------------------
@store_command()
def delete(
    ctx: typer.Context,
    ref: RefArgument,
    force: Annotated[bool, typer.Option(
        "--force", help="Delete even an aliased version or one an aliased version was built from "
                        "(its aliases are removed).")] = False,
    reason: Annotated[str | None, typer.Option(
        "--reason", metavar="TEXT", show_default=False, help="Why; `get` of the version says it.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Delete a version: it leaves get, versions and ls; its number is never reused; its blobs
    go with the next `tracelet gc`."""
    deleted = open_store(ctx, as_json=as_json).delete(ref, reason=reason, force=force)
    if as_json:
        print_json({**summary(deleted), "deleted": True, "reason": reason})
    else:
        typer.echo(f"deleted {deleted.ref}" + (f" (aliases removed: {', '.join(deleted.aliases)})"
                                               if deleted.aliases else ""))


# -- prune ------------------------------------------------------------------------------------
@store_command()
def prune(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(
        metavar="[NAME]", show_default=False,
        help="A name or a pattern ending in * (default: every name).")] = None,
    keep_last: KeepLast = None,
    older_than: OlderThan = None,
    apply: Annotated[bool, typer.Option(
        "--apply", help="Delete them (default: a dry run that changes nothing).")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete versions beyond --keep-last and/or older than --older-than (with neither: the stored
    retention policies); never the latest version of a name nor a protected one."""
    report = open_store(ctx, as_json=as_json).prune(name, keep_last=keep_last, older_than=older_than,
                                                    dry_run=not apply)
    if as_json:
        print_json(report.to_dict())
        return
    verb = "deleted" if apply else "would delete"
    for ref in report.deleted:
        typer.echo(f"{verb} {ref}")
    for ref, why in report.kept.items():
        typer.echo(f"kept {ref}: {why}")
    typer.echo(f"{verb} {count(len(report.deleted), 'version')}, {report.bytes_freed} bytes freed by the next gc"
               + ("" if apply else " (dry run: --apply to delete)"))


# -- retention --------------------------------------------------------------------------------
@store_command()
def retention(
    ctx: typer.Context,
    action: Annotated[str, typer.Argument(metavar="set|ls|rm", help="Store, list or remove a policy.")],
    pattern: Annotated[str | None, typer.Argument(
        metavar="[PATTERN]", show_default=False, help="A name, a prefix ending in *, or *.")] = None,
    keep_last: KeepLast = None,
    older_than: OlderThan = None,
    as_json: JsonFlag = False,
) -> None:
    """Stored retention policies, which `tracelet prune` with no rule applies."""
    store = open_store(ctx, as_json=as_json)
    if action not in ("set", "ls", "rm"):
        raise InvalidArtifactError(f"retention action must be set, ls or rm, not {action!r}")
    if action != "ls":
        if pattern is None:
            raise InvalidArtifactError(f"retention {action} needs a PATTERN")
        if action == "set":
            store.set_retention(pattern, keep_last=keep_last, older_than=older_than)
        else:
            store.remove_retention(pattern)
    policies: dict[str, Any] = store.retention()
    if as_json:
        print_json(policies)
        return
    if not policies:
        typer.echo("no retention policies")
    for key, rule in policies.items():
        parts = [f"keep last {rule['keep_last']}"] if rule["keep_last"] is not None else []
        parts += [f"older than {rule['older_than']}"] if rule["older_than"] is not None else []
        typer.echo(f"{key}: {' and '.join(parts)}")
