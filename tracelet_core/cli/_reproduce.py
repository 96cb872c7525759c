"""``tracelet reproduce REF``: run the step that made a version again on its recorded inputs.

``--definitions module:attr`` names a ``dagster.Definitions`` (``tracelet_dagster.reproduce``),
``--flow module:attr`` a Prefect flow (``tracelet_prefect.reproduce``); the module is imported
from the working directory (or is a ``.py`` file's path), the adapter only then. A version no
adapter can rerun (an ``Experiment``'s) exits 1 naming the git commit and inputs it recorded.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer

from .._reproduce import ReproduceReport, require_producer
from ._app import JsonFlag, RefArgument, console, fail, find_version, open_store, plain, print_json, store_command
from ._diff import diff_lines

DefinitionsOption = Annotated[str | None, typer.Option(
    "--definitions", metavar="MODULE:ATTR", show_default=False,
    help="The dagster.Definitions holding the asset or job that made REF.")]
FlowOption = Annotated[str | None, typer.Option(
    "--flow", metavar="MODULE:ATTR", show_default=False, help="The Prefect flow that made REF.")]


@store_command("reproduce")
def reproduce(ctx: typer.Context, ref: RefArgument, definitions: DefinitionsOption = None, flow: FlowOption = None,
              as_json: JsonFlag = False) -> None:
    """Run the Dagster asset or op, or the Prefect flow, that made REF again on the input
    versions it recorded (no alias moves), and say whether the result is identical."""
    if (definitions is None) == (flow is None):
        fail("give one of --definitions MODULE:ATTR (Dagster) or --flow MODULE:ATTR (Prefect)")
    store = open_store(ctx, as_json=as_json)
    original = find_version(store, ref)
    orchestrator, option = ("dagster", "--definitions") if definitions is not None else ("prefect", "--flow")
    require_producer(original, orchestrator, f"tracelet reproduce {option}")
    target = load_attribute(str(definitions or flow))
    if definitions is not None:
        from dagster import Definitions

        from tracelet_dagster import reproduce as rerun_dagster
        if not isinstance(target, Definitions):
            fail(f"{definitions} is a {type(target).__name__}, not a dagster.Definitions")
        report = rerun_dagster(original, target, store=store)
    else:
        from prefect import Flow

        from tracelet_prefect import reproduce as rerun_prefect
        if not isinstance(target, Flow):
            fail(f"{flow} is a {type(target).__name__}, not a Prefect flow")
        report = rerun_prefect(original, target, store=store)
    if as_json:
        print_json(report.to_dict())
        return
    out = console()
    for line in report_lines(report):
        out.print(plain(line) if isinstance(line, str) else line, soft_wrap=True)


def report_lines(report: ReproduceReport) -> list[Any]:
    """A headline (identical or not, which version, which run), then the diff when they differ."""
    made = "a new version" if report.reproduced.created else "an existing version"
    verdict = "identical" if report.identical else "different"
    lines: list[Any] = [f"{report.original} reproduced in run {report.run_id}: {verdict}, "
                        f"{report.reproduced.ref} ({made})"]
    if report.diff is not None:
        lines.extend(diff_lines(report.diff))
    return lines


def load_attribute(spec: str) -> Any:
    """``module:attr`` (a module importable from the working directory, or a ``.py`` path)."""
    module_name, _, attribute = spec.rpartition(":")
    if not module_name or not attribute:
        fail(f"{spec!r}: expected MODULE:ATTR, such as pipeline.definitions:defs")
    module = _module(module_name)
    try:
        found = module
        for part in attribute.split("."):
            found = getattr(found, part)
    except AttributeError:
        fail(f"{module_name} has no attribute {attribute!r}")
    return found


def _module(name: str) -> ModuleType:
    try:
        if name.endswith(".py"):
            path = Path(name).resolve()
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None or not path.is_file():
                fail(f"no Python file {name}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
            return module
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        return importlib.import_module(name)
    except ImportError as error:
        fail(f"cannot import {name}: {error}")
