"""Commands for bad versions: ``quarantine``, ``release`` and ``impact``; and the status mark
``ls``, ``versions`` and ``show`` print beside a quarantined version."""

from __future__ import annotations

from typing import Annotated

import typer

from .._logged import LoggedArtifact
from .._quarantine import ImpactReport, quarantine_summary
from ._app import JsonFlag, RefArgument, count, describe_run, open_store, print_json, store_command


def status_mark(artifact: LoggedArtifact) -> str:
    """`` (quarantined)`` for a quarantined version, else nothing (what listings append)."""
    return " (quarantined)" if artifact.quarantine is not None else ""


def status_line(artifact: LoggedArtifact) -> str | None:
    """``show``'s status row for a quarantined version (``None`` when it is not)."""
    summary = quarantine_summary(artifact)
    return None if summary is None else f"QUARANTINED {summary}"


def _print_impact(report: ImpactReport) -> None:
    typer.echo(f"built from {report.ref}: {count(len(report.versions), 'version')}")
    for ref in report.versions:
        typer.echo(f"  {ref}")
    for alias, ref in report.aliases.items():
        typer.echo(f"alias {alias} -> {ref}")
    for run in report.runs:
        typer.echo(f"read by {describe_run(run)}")


@store_command()
def quarantine(
    ctx: typer.Context,
    ref: RefArgument,
    reason: Annotated[str, typer.Option("--reason", metavar="TEXT", help="Why (required; loads report it).")],
    only: Annotated[bool, typer.Option(
        "--only", help="Mark this version only, not the versions built from it.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Quarantine a version and (unless --only) everything built from it: loading any of them
    fails until `tracelet release`."""
    report = open_store(ctx, as_json=as_json).quarantine(ref, reason, downstream=not only)
    if as_json:
        print_json({**report.to_dict(), "quarantined": [report.ref, *([] if only else report.versions)],
                    "reason": reason})
        return
    marked = [report.ref, *([] if only else report.versions)]
    typer.echo(f"quarantined {count(len(marked), 'version')}: {', '.join(marked)}")
    _print_impact(report)


@store_command()
def release(ctx: typer.Context, ref: RefArgument, as_json: JsonFlag = False) -> None:
    """Lift a quarantine: the version and what its quarantine marked can be loaded again."""
    lifted = open_store(ctx, as_json=as_json).release(ref)
    if as_json:
        print_json({"released": lifted})
        return
    typer.echo(f"released {count(len(lifted), 'version')}" + (f": {', '.join(lifted)}" if lifted else ""))


@store_command()
def impact(ctx: typer.Context, ref: RefArgument, as_json: JsonFlag = False) -> None:
    """What was built from a version (at any depth), which aliases point at any of it, and
    which runs read it."""
    report = open_store(ctx, as_json=as_json).impact(ref)
    if as_json:
        print_json(report.to_dict())
        return
    _print_impact(report)
