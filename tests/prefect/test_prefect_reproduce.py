"""``tracelet_prefect.reproduce``: a real flow run again with its recorded parameters, the
producing task loading the versions it recorded (through ``load_artifact`` and through
``LoggedArtifact`` arguments) while newer ones exist; aliases stay; identical and not."""

from __future__ import annotations

import datetime
import json
import platform
import random
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.schemas.objects import Artifact
from prefect_dask import DaskTaskRunner
from typer.testing import CliRunner

from tracelet_core import ArtifactStore, LoggedArtifact, NotReproducibleError, TraceletArtifact
from tracelet_core.cli import app
from tracelet_prefect import load_artifact, reproduce, tracelet_task


@tracelet_task("rp/raw", "dataset")
def make_raw(scale: int) -> list[int]:
    return [n * scale for n in range(5)]


@flow
def publish_raw(scale: int) -> LoggedArtifact:
    return make_raw(scale)


@tracelet_task("rp/features", "dataset", aliases=("production",))
def features(raw: list[int]) -> dict[str, int]:
    return {"total": sum(raw)}


@tracelet_task("rp/noisy")
def noisy(raw: list[int], label: str) -> dict[str, object]:
    return {"total": sum(raw), "label": label, "salt": uuid.uuid4().hex}


@flow
def train(source: str, label: str = "plain") -> tuple[LoggedArtifact, LoggedArtifact]:
    raw = load_artifact(source)
    return features(raw), noisy(raw, label)


def test_a_flow_reruns_with_its_parameters_on_the_loaded_versions_it_recorded(store: ArtifactStore) -> None:
    publish_raw(1)
    made, salted = train("rp/raw:latest", label="first")
    assert made.inputs == ["rp/raw:v1"]
    producer = made.producer
    assert producer is not None and (producer.name, producer.extra["task_name"]) == ("train", "features")
    assert producer.extra["parameters"] == {"source": "rp/raw:latest", "label": "first"}
    publish_raw(10)  # rp/raw:v2 is now what rp/raw:latest names

    report = reproduce("rp/features:v1", train, store=store)

    assert (report.original, report.identical, report.diff) == ("rp/features:v1", True, None)
    assert (report.reproduced.ref, report.reproduced.created) == ("rp/features:v1", False)
    assert report.run_id != producer.run_id
    assert store.get("rp/features:production").ref == "rp/features:v1"

    # the same rerun made a new noisy version: from rp/raw:v1, with the recorded label
    rerun = [v for v in store.versions("rp/noisy") if v.producer is not None and v.producer.run_id == report.run_id]
    assert [v.inputs for v in rerun] == [["rp/raw:v1"]]
    assert rerun[0].load()["total"] == 10 and rerun[0].load()["label"] == "first"  # scale 1, not 10

    not_same = reproduce(salted.ref, train, store=store)
    assert not not_same.identical and not_same.reproduced.created
    assert not_same.reproduced.ref == "rp/noisy:v3" and not_same.reproduced.inputs == ["rp/raw:v1"]
    assert not_same.diff is not None and list(not_same.diff.content["value"]["changed"]) == ["salt"]
    assert not_same.to_dict()["diff"]["inputs"] == {"added": [], "removed": []}


@tracelet_task("rp/sample", "dataset")
def sample(size: int) -> list[float]:
    return [random.random() for _ in range(size)]  # noqa: S311 - a new sample every run


@tracelet_task("rp/summary", aliases=("best",))
def summarize(sample: list[float]) -> dict[str, float]:
    return {"mean": sum(sample) / len(sample)}


@flow
def sampling(size: int) -> LoggedArtifact:
    return summarize(sample(size))


def test_a_version_argument_loads_the_recorded_version_and_aliases_stay(store: ArtifactStore) -> None:
    first = sampling(50)
    second = sampling(50)  # a new sample: rp/summary:v2 takes "best"
    assert (first.ref, second.ref, store.get("rp/summary:best").ref) == ("rp/summary:v1", "rp/summary:v2",
                                                                       "rp/summary:v2")

    report = reproduce("rp/summary:v1", sampling, store=store)

    # the rerun drew a third sample, but summarize loaded rp/sample:v1, as recorded
    assert store.get("rp/sample:latest").ref == "rp/sample:v3"
    assert report.identical and report.reproduced.inputs == ["rp/sample:v1"]
    # identical content: the original back, though rp/summary:v2 is the newest (no duplicate v3)
    assert (report.reproduced.ref, report.reproduced.created) == ("rp/summary:v1", False)
    assert [v.ref for v in store.versions("rp/summary")] == ["rp/summary:v1", "rp/summary:v2"]
    assert store.get("rp/summary:best").ref == "rp/summary:v2"
    assert [c.after for c in store.alias_history("rp/summary", "best")] == ["rp/summary:v1", "rp/summary:v2"]


def test_the_ui_artifact_names_the_code_and_python(store: ArtifactStore, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   prefect_artifacts: Callable[[str], list[Artifact]]) -> None:
    code = tmp_path / "code"
    code.mkdir()
    for args in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "first"]):
        subprocess.run(["git", "-C", str(code), "-c", "user.name=t", "-c", "user.email=t@e", *args], check=True)
    commit = subprocess.run(["git", "-C", str(code), "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    monkeypatch.chdir(code)

    made = publish_raw(3)

    assert made.producer is not None
    (shown,) = [a for a in prefect_artifacts("rp-raw") if str(a.flow_run_id) == made.producer.run_id]
    assert f"| code | git commit {commit} on main |" in str(shown.data)
    assert f"| python | {platform.python_version()} |" in str(shown.data)


@tracelet_task("rp/echo")
def echo(n: int) -> int:
    return n


@flow
def dated(n: int, when: datetime.date, big: list[int] | None = None) -> LoggedArtifact:
    return echo(n)


def test_only_json_parameters_are_recorded_and_a_missing_one_is_refused(store: ArtifactStore) -> None:
    made = dated(3, datetime.date(2026, 1, 2), big=list(range(20_000)))  # over 64 KiB of JSON

    assert made.producer is not None and made.producer.extra["parameters"] == {"n": 3}
    with pytest.raises(NotReproducibleError, match=r"parameter\(s\) when were not recorded"):
        reproduce(made.ref, dated, store=store)


def test_what_cannot_be_rerun_is_refused(store: ArtifactStore) -> None:
    by_hand = store.log(TraceletArtifact("rp/by-hand").add_object([1], "value"))
    with pytest.raises(NotReproducibleError, match="no producer"):
        reproduce(by_hand.ref, train, store=store)
    made = publish_raw(2)
    with pytest.raises(NotReproducibleError, match="the flow 'publish-raw', not 'train'"):
        reproduce(made.ref, train, store=store)
    assert len(store.versions("rp/raw")) == 1


def test_the_cli_reruns_a_flow(store: ArtifactStore) -> None:
    publish_raw(1)
    made, _ = train("rp/raw:latest")
    publish_raw(4)

    done = CliRunner().invoke(app, ["--store", store.uri, "reproduce", made.ref, "--flow", f"{__name__}:train",
                                    "--json"])

    assert done.exit_code == 0, (done.stdout, done.stderr, done.exception)
    report = json.loads(done.stdout)
    assert (report["original"], report["reproduced"], report["identical"], report["diff"]) == (
        "rp/features:v1", "rp/features:v1", True, None)
    wrong = CliRunner().invoke(app, ["--store", store.uri, "reproduce", made.ref, "--flow", f"{__name__}:sampling"])
    assert wrong.exit_code == 1 and "made by the flow 'train', not 'sampling'" in wrong.stderr


@flow
def train_submitted(source: str) -> LoggedArtifact:
    raw = load_artifact.submit(source)  # submitted: through the flow's task runner
    return features.submit(raw).result()


def test_a_flow_on_dask_reruns_in_this_process(store: ArtifactStore) -> None:
    publish_raw(1)
    made = train_submitted("rp/raw:latest")
    publish_raw(7)
    on_dask = train_submitted.with_options(task_runner=DaskTaskRunner())  # its workers would not see the pins

    report = reproduce(made.ref, on_dask, store=store)

    assert report.identical and (report.reproduced.ref, report.reproduced.created) == ("rp/features:v1", False)
