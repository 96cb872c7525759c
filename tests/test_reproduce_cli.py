"""``tracelet reproduce REF --definitions module:attr``: a Dagster asset rerun from the command
line (text and ``--json``), and the refusals: an Experiment's version (exit 1, naming its
commit and inputs), definitions without the asset, options that name nothing."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tracelet_core import ArtifactStore, Experiment
from tracelet_core.cli import app

runner = CliRunner()

PIPELINE = '''
import os
import uuid

from dagster import Definitions, asset, materialize
from tracelet_dagster import TraceletIOManager

SCALE = int(os.environ.get("SCALE", "1"))


@asset(io_manager_key="tracelet")
def cli_raw() -> list[int]:
    return [n * SCALE for n in range(4)]


@asset(io_manager_key="tracelet")
def cli_total(cli_raw: list[int]) -> int:
    return sum(cli_raw)


@asset(io_manager_key="tracelet")
def cli_salted(cli_raw: list[int]) -> str:
    return f"{sum(cli_raw)}-{uuid.uuid4().hex}"


resources = {"tracelet": TraceletIOManager(store_uri=os.environ["PIPELINE_STORE"])}
defs = Definitions(assets=[cli_raw, cli_total, cli_salted], resources=resources)
only_raw = Definitions(assets=[cli_raw], resources=resources)


def run(*selection):
    assert materialize([cli_raw, cli_total, cli_salted], resources=resources, selection=list(selection)).success
'''


@pytest.fixture
def pipeline(tmp_path: Path, store_dir: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A module in the working directory (a fresh name per test) whose IO manager logs to the test's store."""
    name = f"pipeline_{request.node.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(PIPELINE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIPELINE_STORE", str(store_dir))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def cli(store_dir: Path, *args: str) -> Result:
    return runner.invoke(app, ["--store", str(store_dir), "reproduce", *args])


def test_an_asset_is_rerun_on_its_recorded_inputs(pipeline: str, store_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    module = __import__(pipeline)
    module.run("cli_raw", "cli_total", "cli_salted")
    monkeypatch.setattr(module, "SCALE", 5)
    module.run("cli_raw")  # cli_raw:v2: newer than what cli_total:v1 read

    plain = cli(store_dir, "cli_total:v1", "--definitions", f"{pipeline}:defs")

    assert plain.exit_code == 0, (plain.stdout, plain.stderr, plain.exception)
    assert plain.stdout.startswith("cli_total:v1 reproduced in run ")
    assert ": identical, cli_total:v1 (an existing version)" in plain.stdout

    as_json = cli(store_dir, "cli_salted:v1", "--definitions", f"{pipeline}:defs", "--json")

    assert as_json.exit_code == 0, (as_json.stdout, as_json.stderr, as_json.exception)
    report = json.loads(as_json.stdout)
    assert (report["original"], report["reproduced"], report["created"], report["identical"]) == (
        "cli_salted:v1", "cli_salted:v2", True, False)
    assert list(report["diff"]["content"]["value"]["changed"]) == [""]  # the value itself changed
    with ArtifactStore.open(store_dir) as store:
        assert store.get("cli_salted:v2").inputs == ["cli_raw:v1"]
        assert store.get("cli_salted:v2").load().startswith("6-")  # sum of [0, 1, 2, 3]: scale 1, not 5


def test_an_experiment_version_exits_1_with_its_commit_and_inputs(pipeline: str, store_dir: Path) -> None:
    with ArtifactStore.open(store_dir) as store:
        with Experiment("notebook", store=store) as exp:
            exp.log_artifact(exp.create_artifact("notes", "dataset").add_object([1], "value"))
        with Experiment("analysis", store=store) as exp:
            exp.get_artifact("notes")
            exp.log_artifact(exp.create_artifact("analysis", "dataset").add_object([2], "value"))

    result = cli(store_dir, "analysis:v1", "--definitions", f"{pipeline}:defs")

    assert result.exit_code == 1 and result.stdout == ""
    assert "an Experiment (analysis)" in result.stderr and "inputs: notes:v1" in result.stderr
    assert "no git commit recorded" in result.stderr  # the working directory is no git repository


def test_definitions_without_the_asset_and_bad_options(pipeline: str, store_dir: Path) -> None:
    __import__(pipeline).run("cli_raw", "cli_total")

    missing = cli(store_dir, "cli_total:v1", "--definitions", f"{pipeline}:only_raw")
    assert missing.exit_code == 1 and "do not define" in missing.stderr

    both = cli(store_dir, "cli_total:v1", "--definitions", f"{pipeline}:defs", "--flow", f"{pipeline}:defs")
    assert both.exit_code == 1 and "give one of --definitions" in both.stderr
    no_attr = cli(store_dir, "cli_total:v1", "--definitions", f"{pipeline}:nothing")
    assert no_attr.exit_code == 1 and "has no attribute 'nothing'" in no_attr.stderr
    no_module = cli(store_dir, "cli_total:v1", "--definitions", "no_such_module:defs")
    assert no_module.exit_code == 1 and "cannot import no_such_module" in no_module.stderr
    not_defs = cli(store_dir, "cli_total:v1", "--definitions", f"{pipeline}:resources")
    assert not_defs.exit_code == 1 and "not a dagster.Definitions" in not_defs.stderr
    with ArtifactStore.open(store_dir) as store:
        assert [v.ref for v in store.versions("cli_total")] == ["cli_total:v1"]
