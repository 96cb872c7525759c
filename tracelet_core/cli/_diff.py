"""``tracelet diff A B``: what changed between two versions, like ``git diff --stat``; and the
same reports for the lineage page's versions of one name (``page_diffs``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.filesize import decimal as human_size
from rich.text import Text

from .._diff import VersionDiff
from .._errors import TraceletError
from .._lineage import LineageGraph
from .._lineage_html import same_name_pairs
from .._store import ArtifactStore
from ._app import JsonFlag, console, count, open_store, plain, print_json, store_command

BeforeArgument = Annotated[str, typer.Argument(metavar="A", help="The version before (name:vN, name:ALIAS).",
                                               show_default=False)]
AfterArgument = Annotated[str, typer.Argument(metavar="B", help="The version after.", show_default=False)]


@store_command("diff")
def diff(ctx: typer.Context, a: BeforeArgument, b: AfterArgument, as_json: JsonFlag = False) -> None:
    """Compare two versions: files, metadata, tags, aliases, inputs, producer and content."""
    result = open_store(ctx, as_json=as_json).diff(a, b)
    if as_json:
        print_json(result.to_dict())
        return
    out = console()
    for line in diff_lines(result):  # one line each, never wrapped (like git diff)
        out.print(plain(line) if not isinstance(line, Text) else line, soft_wrap=True)


def _pair(values: list[Any]) -> str:
    return f"{values[0]!r} -> {values[1]!r}"


def diff_lines(result: VersionDiff) -> list[str | Text]:
    """The plain report: a ``--stat`` block per entry, then labels, lineage and content."""
    files = result.files
    lines: list[str | Text] = [Text(f"{result.before} -> {result.after}"
                                    + ("  (identical)" if result.identical else ""), style="bold")]
    for path in files["added"]:
        lines.append(Text.assemble(f" {path} | ", ("added", "green")))
    for path in files["removed"]:
        lines.append(Text.assemble(f" {path} | ", ("removed", "red")))
    for item in files["changed"]:
        before, after = (human_size(s) if s is not None else "?" for s in (item["size_before"], item["size_after"]))
        sizes = f"{before} -> {after}"
        lines.append(f" {item['path']} | {sizes}")
    lines.append(f" {count(len(files['changed']), 'entry', 'entries')} changed, {len(files['added'])} added, "
                 f"{len(files['removed'])} removed, {files['unchanged']} unchanged")
    for section in ("metadata", "tags", "aliases"):
        for key, values in getattr(result, section).items():
            lines.append(f"{section} {key}: {_pair(values)}")
    for ref in result.inputs.get("added", []):
        lines.append(f"input added: {ref}")
    for ref in result.inputs.get("removed", []):
        lines.append(f"input removed: {ref}")
    if result.producer is not None:
        lines.extend(_producer_lines(result.producer))
    for key, found in result.content.items():
        lines.append(Text(f"\n{key} ({found['kind']})", style="bold"))
        lines.extend(f"  {line}" for line in _content_lines(found))
    return lines


def _producer_lines(producers: list[dict[str, Any] | None]) -> list[str | Text]:
    before, after = ({} if p is None else p for p in producers)
    lines: list[str | Text] = []
    for key in ("orchestrator", "run_id", "step", "name", "partition", "code_version"):
        if before.get(key) != after.get(key):
            lines.append(f"producer {key}: {_pair([before.get(key), after.get(key)])}")
    extra_a, extra_b = before.get("extra") or {}, after.get("extra") or {}
    for key in ("commit", "branch", "dirty"):
        values = [(extra_a.get("git") or {}).get(key), (extra_b.get("git") or {}).get(key)]
        if values[0] != values[1]:
            lines.append(f"git {key}: {_pair(values)}")
    if extra_a.get("python") != extra_b.get("python"):
        lines.append(f"python: {_pair([extra_a.get('python'), extra_b.get('python')])}")
    packages_a, packages_b = extra_a.get("packages") or {}, extra_b.get("packages") or {}
    for dist in sorted(set(packages_a) | set(packages_b)):
        if packages_a.get(dist) != packages_b.get(dist):
            lines.append(f"package {dist}: {_pair([packages_a.get(dist), packages_b.get(dist)])}")
    return lines


def _content_lines(found: dict[str, Any]) -> list[str]:
    kind = found["kind"]
    if kind == "text":
        return str(found["diff"]).splitlines()
    if kind == "object":
        return ([f"{key or '(the value)'}: {_pair(values)}" for key, values in found["changed"].items()]
                + [f"+ {key}" for key in found["added"]] + [f"- {key}" for key in found["removed"]])
    if kind == "tensors":
        return ([f"+ {key}" for key in found["added"]] + [f"- {key}" for key in found["removed"]]
                + [f"{key}: shape {_pair(values)}" for key, values in found["shape_changed"].items()]
                + [f"{key}: max |diff| {value}" for key, value in found["max_abs_diff"].items()])
    lines = [f"rows: {_pair(found['rows'])}"]
    lines += [f"+ column {c}" for c in found["columns_added"]] + [f"- column {c}" for c in found["columns_removed"]]
    lines += [f"{c}: dtype {_pair(values)}" for c, values in found["dtypes_changed"].items()]
    for column, stats in found["stats"].items():
        changed = {k: v for k, v in stats.items() if v[0] != v[1]}
        if changed:
            lines.append(f"{column}: " + ", ".join(f"{k} {_pair(v)}" for k, v in changed.items()))
    return lines


#: At most this many diffs on one lineage page (each reads the changed entries of two versions).
MAX_PAGE_DIFFS = 20


def page_diffs(store: ArtifactStore, graph: LineageGraph) -> dict[tuple[str, str], list[str]]:
    """``tracelet diff``'s report for each pair of consecutive versions of a name in ``graph``
    (at most ``MAX_PAGE_DIFFS``): what the HTML lineage page links those versions to."""
    reports: dict[tuple[str, str], list[str]] = {}
    for before, after in same_name_pairs(graph)[:MAX_PAGE_DIFFS]:
        try:
            lines = diff_lines(store.diff(before, after))
        except TraceletError as exc:  # a deleted version, an unreadable entry: the page still opens
            lines = [f"cannot diff {before} and {after}: {exc}"]
        reports[(before, after)] = [line.plain if isinstance(line, Text) else line for line in lines]
    return reports
