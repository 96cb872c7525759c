"""``tracelet_dagster.reproduce``: a real Dagster run of the step that made a version, on the
input versions it recorded (even when its upstream has newer ones), aliases left alone."""

import platform
import subprocess
import uuid
from pathlib import Path

import pytest
from dagster import (
    AssetExecutionContext,
    AssetOut,
    Config,
    Definitions,
    Out,
    StaticPartitionsDefinition,
    asset,
    graph_asset,
    job,
    materialize,
    multi_asset,
    op,
)

from tracelet_core import ArtifactStore, NotReproducibleError, RunInfo, TraceletArtifact
from tracelet_dagster import TraceletIOManager, reproduce

pytest_plugins = ["dagster_fixtures"]


class RawConfig(Config):
    scale: int = 1


@asset(io_manager_key="tracelet")
def raw(config: RawConfig) -> list[int]:
    return [n * config.scale for n in range(5)]


@asset(io_manager_key="tracelet", metadata={"tracelet/aliases": ["production"]})
def features(raw: list[int]) -> dict[str, int]:
    return {"total": sum(raw), "count": len(raw)}


@asset(io_manager_key="tracelet")
def noisy(raw: list[int]) -> dict[str, object]:
    return {"total": sum(raw), "salt": uuid.uuid4().hex}  # not deterministic


@op
def doubled(raw: list[int]) -> list[int]:
    return [2 * n for n in raw]


@op(out=Out(io_manager_key="tracelet"))
def summed(values: list[int]) -> int:
    return sum(values)


@graph_asset
def graph_total(raw: list[int]) -> int:
    return summed(doubled(raw))


@multi_asset(outs={"low": AssetOut(io_manager_key="tracelet"), "high": AssetOut(io_manager_key="tracelet")})
def split(raw: list[int]) -> tuple[list[int], list[int]]:
    return [n for n in raw if n < 4], [n for n in raw if n >= 4]


@op(out=Out(io_manager_key="tracelet"))
def seed() -> int:
    return 3


@op(out=Out(io_manager_key="tracelet"))
def salted(base: int) -> str:
    return f"{base}-{uuid.uuid4().hex}"


@job
def salting() -> None:
    salted(seed())


regions = StaticPartitionsDefinition(["eu", "us"])


@asset(io_manager_key="tracelet", partitions_def=regions)
def regional(context: AssetExecutionContext, raw: list[int]) -> dict[str, object]:
    return {"region": context.partition_key, "total": sum(raw)}


ASSETS = [raw, features, noisy, graph_total, split, regional]


def _defs(store_dir: Path) -> Definitions:
    io = TraceletIOManager(store_uri=str(store_dir))
    return Definitions(assets=ASSETS, jobs=[salting], resources={"tracelet": io, "io_manager": io})


def _raw_run(store_dir: Path, scale: int, *selection: str, partition: str | None = None) -> None:
    result = materialize(ASSETS, resources={"tracelet": TraceletIOManager(store_uri=str(store_dir))},
                         run_config={"ops": {"raw": {"config": {"scale": scale}}}},
                         selection=["raw", *selection], partition_key=partition)
    assert result.success


def test_an_asset_reruns_on_its_recorded_inputs_though_upstream_has_newer(store_dir: Path,
                                                                           store: ArtifactStore) -> None:
    _raw_run(store_dir, 1, "features", "noisy", "graph_total", "low", "high")
    _raw_run(store_dir, 10)  # raw:v2, newer than what everything above read
    assert store.get("raw:latest").ref == "raw:v2"
    defs = _defs(store_dir)

    report = reproduce("features:v1", defs, store=store)

    assert (report.original, report.identical, report.diff) == ("features:v1", True, None)
    assert (report.reproduced.ref, report.reproduced.created) == ("features:v1", False)  # the original back
    assert len(store.versions("features")) == 1
    first = store.get("features:v1").producer
    assert first is not None and report.run_id and report.run_id != first.run_id  # a new Dagster run
    assert report.to_dict()["reproduced"] == "features:v1" and report.to_dict()["created"] is False

    # a non-deterministic asset: a new version, and a diff naming what moved
    noisy_report = reproduce("noisy:v1", defs, store=store)
    assert not noisy_report.identical and noisy_report.reproduced.created
    new = noisy_report.reproduced
    assert new.ref == "noisy:v2" and new.inputs == ["raw:v1"]  # read the recorded raw, not raw:v2
    assert new.load()["total"] == 10  # sum(range(5)) at scale 1 (raw:v2 would give 100)
    assert new.producer is not None and new.producer.run_id == noisy_report.run_id
    diff = noisy_report.diff
    assert diff is not None and list(diff.content["value"]["changed"]) == ["salt"]
    assert noisy_report.to_dict()["diff"]["content"]["value"]["kind"] == "object"

    # a graph-backed asset reruns its ops (their outputs are computed again, not pinned)
    graph_report = reproduce("graph_total:v1", defs, store=store)
    assert graph_report.identical and graph_report.reproduced.ref == "graph_total:v1"
    assert graph_report.reproduced.load() == 20

    # one asset of a multi-asset that cannot be subset: the whole op runs, each output deduplicated
    split_report = reproduce("high:v1", defs, store=store)
    assert split_report.identical and split_report.reproduced.ref == "high:v1"
    assert store.get("low:latest").ref == "low:v1"


def test_aliases_stay_where_they_are(store_dir: Path, store: ArtifactStore) -> None:
    _raw_run(store_dir, 1, "features")
    _raw_run(store_dir, 2, "features")  # features:v2 takes "production"
    assert store.get("features:production").ref == "features:v2"

    report = reproduce("features:v1", _defs(store_dir), store=store)

    # identical content: the original back, though features:v2 is the newest (no duplicate v3)
    assert report.identical and (report.reproduced.ref, report.reproduced.created) == ("features:v1", False)
    assert [v.ref for v in store.versions("features")] == ["features:v1", "features:v2"]
    assert store.get("features:production").ref == "features:v2"  # not moved by the rerun
    assert [c.after for c in store.alias_history("features", "production")] == ["features:v1", "features:v2"]


def test_a_partition_reruns_with_its_partition(store_dir: Path, store: ArtifactStore) -> None:
    _raw_run(store_dir, 1)
    result = materialize([raw, regional], resources={"tracelet": TraceletIOManager(store_uri=str(store_dir))},
                         selection=["regional"], partition_key="us")
    assert result.success
    _raw_run(store_dir, 3)
    original = store.get("regional", partition="us")

    report = reproduce(original.ref, _defs(store_dir), store=store)

    assert report.identical and report.reproduced.ref == original.ref
    assert report.reproduced.load() == {"region": "us", "total": 10}


def _git_repo(path: Path) -> str:
    path.mkdir()
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "first"]):
        subprocess.run(["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@e", *args], check=True)
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_an_op_output_in_a_job_reruns_with_its_upstream_pinned(store_dir: Path, store: ArtifactStore,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commit = _git_repo(tmp_path / "code")
    monkeypatch.chdir(tmp_path / "code")
    defs = _defs(store_dir)
    result = defs.resolve_job_def("salting").execute_in_process()
    assert result.success
    original = store.get("salting/salted/result:v1")
    # provenance in the Dagster UI: the output's metadata names the code and the interpreter
    handled = [e for e in result.all_events if e.event_type_value == "HANDLED_OUTPUT" and e.step_key == "salted"]
    metadata = {k: v.value for k, v in handled[0].event_specific_data.metadata.items()}
    assert (metadata["tracelet/git_commit"], metadata["tracelet/git_dirty"]) == (commit, False)
    assert metadata["tracelet/python"] == platform.python_version()
    assert original.inputs == ["salting/seed/result:v1"]

    report = reproduce(original.ref, defs, store=store)

    assert not report.identical and report.reproduced.ref == "salting/salted/result:v2"
    assert report.reproduced.inputs == ["salting/seed/result:v1"]
    assert report.reproduced.load().startswith("3-")


def test_what_cannot_be_rerun_is_refused_with_what_was_recorded(store_dir: Path, store: ArtifactStore) -> None:
    made = store.log(TraceletArtifact("by-hand").add_object({"a": 1}, "value"),
                     producer=RunInfo("tracelet", "exp-1", name="notebook"))
    with pytest.raises(NotReproducibleError, match="Experiment") as caught:
        reproduce(made.ref, _defs(store_dir), store=store)
    assert "inputs: none" in str(caught.value)

    _raw_run(store_dir, 1, "features")
    without = Definitions(assets=[raw], resources={"tracelet": TraceletIOManager(store_uri=str(store_dir))})
    with pytest.raises(NotReproducibleError, match="do not define"):
        reproduce("features:v1", without, store=store)
    assert len(store.versions("features")) == 1
