"""``tracelet_task``, ``log_artifact`` and ``load_artifact`` in real Prefect flows."""

from __future__ import annotations

import asyncio
import gc
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from prefect import Task, flow, task
from prefect.cache_policies import INPUTS
from prefect.states import State
from prefect_support import read_task_run

import tracelet_prefect._tasks as tasks_module
from tracelet_core import (
    ArtifactResult,
    ArtifactStore,
    Backend,
    ConfigurationError,
    InvalidArtifactError,
    LoggedArtifact,
    TraceletArtifact,
    register_backend,
)
from tracelet_core._backends import unregister_backend
from tracelet_prefect import load_artifact, log_artifact, tracelet_task


def test_the_package_exports_exactly_its_public_names() -> None:
    import tracelet_prefect

    assert sorted(tracelet_prefect.__all__) == ["load_artifact", "log_artifact", "reproduce", "tracelet_task"]
    assert all(callable(getattr(tracelet_prefect, name)) for name in tracelet_prefect.__all__)
    assert isinstance(log_artifact, Task) and isinstance(load_artifact, Task)


# -- one task -------------------------------------------------------------------------------
@tracelet_task("t1/numbers", "dataset", aliases=("fresh",), tags=["tracelet-test"])
def numbers(n: int) -> list[int]:
    """The numbers below n."""
    return list(range(n))


@flow
def numbers_flow(n: int) -> LoggedArtifact:
    return numbers(n)


def test_return_value_is_logged_as_one_version_with_the_task_run_as_producer(store: ArtifactStore) -> None:
    logged = numbers_flow(4)

    assert isinstance(logged, LoggedArtifact)
    assert (logged.ref, logged.type.value, logged.aliases) == ("t1/numbers:v1", "dataset", ["fresh"])
    assert logged.load() == [0, 1, 2, 3]
    assert logged.description == "The numbers below n."
    assert [o.name for o in logged.objects] == ["value"]
    producer = logged.producer
    assert producer is not None
    assert (producer.orchestrator, producer.name, producer.extra["task_name"]) == ("prefect", "numbers-flow", "numbers")
    assert producer.extra["parameters"] == {"n": 4}
    task_run = read_task_run(str(producer.step))
    assert str(task_run.flow_run_id) == producer.run_id
    assert task_run.tags == ["tracelet-test"]
    assert producer.extra["task_run_name"] == task_run.name and "python" in producer.extra  # + provenance
    assert store.get("t1/numbers:fresh") == logged


def test_unchanged_value_returns_the_existing_version(store: ArtifactStore) -> None:
    first = numbers_flow(3)
    second = numbers_flow(3)
    third = numbers_flow(5)

    assert first == second and second.ref == "t1/numbers:v1"
    assert second.producer == first.producer  # made by the first run; the second only read it
    assert third.ref == "t1/numbers:v2"
    assert [v.ref for v in store.versions("t1/numbers")] == ["t1/numbers:v1", "t1/numbers:v2"]


def test_bare_decorator_and_calls_outside_prefect(store: ArtifactStore) -> None:
    @tracelet_task
    def scores() -> dict[str, float]:
        return {"f1": 0.5}

    logged = scores.fn()  # the function itself, outside any flow: logged without a producer
    assert (logged.ref, logged.producer) == ("scores:v1", None)
    assert scores.name == "scores"


# -- arguments and lineage --------------------------------------------------------------------
@tracelet_task("t2/raw")
def raw() -> dict[str, list[int]]:
    return {"rows": [1, 2, 3]}


@tracelet_task("t2/extra")
def extra() -> list[int]:
    return [10]


@tracelet_task("t2/summary")
def summary(data: dict[str, list[int]], more: list[Any], keep: LoggedArtifact,
            many: list[LoggedArtifact]) -> dict[str, Any]:
    assert isinstance(keep, LoggedArtifact) and all(isinstance(m, LoggedArtifact) for m in many)
    return {"total": sum(data["rows"]) + more[0][0], "kept": keep.ref, "many": [m.ref for m in many]}


def test_logged_arguments_are_loaded_unless_annotated_and_recorded_as_inputs(store: ArtifactStore) -> None:
    @flow
    def pipeline() -> LoggedArtifact:
        data = raw()
        more = extra.submit()
        return summary(data, [more], keep=data, many=[more])

    logged = pipeline()

    assert logged.load() == {"total": 16, "kept": "t2/raw:v1", "many": ["t2/extra:v1"]}
    assert sorted(logged.inputs) == ["t2/extra:v1", "t2/raw:v1"]


@tracelet_task("t3/features", "dataset")
def features(table: dict[str, list[int]]) -> dict[str, list[int]]:
    return {"x2": [2 * v for v in table["x"]]}


@tracelet_task("t3/model", "model")
def train(feats: dict[str, list[int]]) -> dict[str, int]:
    return {"w": sum(feats["x2"])}


@task
def describe(model: LoggedArtifact) -> TraceletArtifact:
    return TraceletArtifact("t3/report", "report").add_object({"model": model.ref}, "summary", "json")


def test_lineage_follows_the_task_graph(store: ArtifactStore) -> None:
    store.log(TraceletArtifact("t3/dataset", "dataset").add_object({"x": [1, 2, 3]}, "table", "json"),
              aliases=["golden"])

    @flow
    def pipeline() -> tuple[LoggedArtifact, LoggedArtifact, LoggedArtifact]:
        table = load_artifact("t3/dataset:golden")  # a value: lineage comes from the task graph
        feats = features(table)
        model = train(feats)
        return feats, model, log_artifact(describe(model), inputs=[model])

    feats, model, report = pipeline()

    assert feats.inputs == ["t3/dataset:v1"]
    assert model.inputs == ["t3/features:v1"]  # exact: not the dataset its input came from
    assert report.inputs == ["t3/model:v1"] and report.producer is not None
    assert (report.producer.name, report.producer.extra["task_name"]) == ("pipeline", "log_artifact")
    upstream = store.lineage(report.ref)
    assert set(upstream.artifact_refs) == {"t3/report:v1", "t3/model:v1", "t3/features:v1", "t3/dataset:v1"}
    downstream = store.lineage("t3/dataset:v1", "downstream")
    runs = {(n["name"], n.get("task")) for n in downstream.nodes.values() if n["kind"] == "run"}
    assert {("pipeline", task) for task in ("load_artifact", "features", "train", "log_artifact")} <= runs
    assert model.producer is not None and model.producer.run_id == feats.producer.run_id  # type: ignore[union-attr]


def test_load_artifact_loads_a_named_object_of_a_version(store: ArtifactStore) -> None:
    store.log(TraceletArtifact("t3/pair", "dataset").add_object([1], "left", "json").add_object([2], "right", "json"))

    @flow
    def pipeline() -> Any:
        return load_artifact("t3/pair:latest", "right")

    assert pipeline() == [2]


# -- parallel, async, submit ---------------------------------------------------------------------
@tracelet_task("t4/shard", "dataset")
def shard(i: int) -> dict[str, int]:
    return {"i": i}


def test_map_of_eight_parallel_tasks_logs_eight_versions(store: ArtifactStore) -> None:
    @flow
    def pipeline() -> list[LoggedArtifact]:
        return [f.result() for f in shard.map(range(8))]

    logged = pipeline()

    assert sorted(v.version_number for v in logged) == list(range(1, 9))
    assert sorted(v.load()["i"] for v in logged) == list(range(8))
    assert len({v.producer.step for v in logged if v.producer}) == 8
    assert [v.version for v in store.versions("t4/shard")] == [f"v{n}" for n in range(1, 9)]
    store.verify()


@tracelet_task("t5/fetched")
async def fetch(i: int) -> dict[str, int]:
    await asyncio.sleep(0)
    return {"i": i}


@tracelet_task("t5/combined")
async def combine(first: dict[str, int], second: LoggedArtifact, rest: list[dict[str, int]]) -> dict[str, Any]:
    return {"sum": first["i"] + second.load()["i"] + sum(r["i"] for r in rest), "second": second.ref}


# Prefect's own async flow engine leaves a connection to the server open when asyncio.run()
# closes the loop (a plain @task/@flow pair does the same).
@pytest.mark.filterwarnings("ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
def test_async_tasks_with_submit_and_map(store: ArtifactStore) -> None:
    @flow
    async def pipeline() -> LoggedArtifact:
        first = await fetch(1)
        second = fetch.submit(2)
        rest = fetch.map([3, 4])
        return await combine(first, second, [r.result() for r in rest])

    combined = asyncio.run(pipeline())

    result = combined.load()
    assert result["sum"] == 10 and store.get(result["second"]).load() == {"i": 2}
    assert sorted(combined.inputs) == ["t5/fetched:v1", "t5/fetched:v2", "t5/fetched:v3", "t5/fetched:v4"]
    assert len(store.versions("t5/fetched")) == 4
    gc.collect()  # Prefect's leftover socket is collected here, under this test's filters, not in the next test


def test_submit_returns_a_future_of_the_logged_version(store: ArtifactStore) -> None:
    @flow
    def pipeline() -> tuple[LoggedArtifact, LoggedArtifact]:
        future = shard.submit(41)
        return future.result(), summary.submit(raw(), [[1]], keep=future, many=[]).result()

    first, second = pipeline()
    assert first.load() == {"i": 41}
    assert sorted(second.inputs) == ["t2/raw:v1", "t4/shard:v1"]


# -- retries and failures ------------------------------------------------------------------------
def test_a_retry_returning_the_same_value_creates_no_duplicate(store: ArtifactStore,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    published: list[str] = []
    real_release = tasks_module.release

    def die_after_the_first_commit(opened: Any, outcome: Any, run: Any, transaction: Any) -> None:
        published.append(outcome.logged.ref)
        if len(published) == 1:
            # Another writer logs a newer version, then this attempt dies after its commit.
            store.log(TraceletArtifact("t6/value").add_object({"other": 1}, "value", "json"))
            raise RuntimeError("injected: the worker died after committing")
        real_release(opened, outcome, run, transaction)

    monkeypatch.setattr(tasks_module, "release", die_after_the_first_commit)
    calls: list[int] = []

    @tracelet_task("t6/value", retries=1)
    def value() -> dict[str, bool]:
        calls.append(1)
        return {"same": True}

    @flow
    def pipeline() -> LoggedArtifact:
        return value()

    logged = pipeline()

    assert len(calls) == 2 and published == ["t6/value:v1", "t6/value:v1"]
    assert logged.ref == "t6/value:v1"
    assert [v.load() for v in store.versions("t6/value")] == [{"same": True}, {"other": 1}]


def test_a_retry_returning_another_value_logs_it(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[Any] = []
    real_release = tasks_module.release

    def die_once(opened: Any, outcome: Any, run: Any, transaction: Any) -> None:
        attempts.append(outcome.logged.ref)
        if len(attempts) == 1:
            raise RuntimeError("injected: the worker died after committing")
        real_release(opened, outcome, run, transaction)

    monkeypatch.setattr(tasks_module, "release", die_once)

    @tracelet_task("t6/attempt", retries=1)
    def attempt() -> dict[str, int]:
        return {"attempt": len(attempts) + 1}

    @flow
    def pipeline() -> LoggedArtifact:
        return attempt()

    logged = pipeline()
    assert attempts == ["t6/attempt:v1", "t6/attempt:v2"]
    assert logged.load() == {"attempt": 2}


def test_a_failed_task_logs_nothing(store: ArtifactStore) -> None:
    calls: list[int] = []

    @tracelet_task("t6/broken", retries=1)
    def broken() -> dict[str, int]:
        calls.append(1)
        raise ValueError("bad data")

    @flow
    def pipeline() -> Any:
        return broken()

    state: State[Any] = pipeline(return_state=True)

    assert state.is_failed() and len(calls) == 2
    with pytest.raises(ValueError, match="bad data"):
        state.result()
    assert store.list() == []


# -- Prefect options, models, artifacts ----------------------------------------------------------
def test_prefect_task_options_pass_through(store: ArtifactStore) -> None:
    calls: list[int] = []

    @tracelet_task("t7/cached", name="cached-numbers", tags=["a", "b"], timeout_seconds=30, retries=2,
                   retry_delay_seconds=0, cache_policy=INPUTS, persist_result=True)
    def cached(n: int) -> list[int]:
        calls.append(n)
        return list(range(n))

    assert (cached.name, cached.tags, cached.timeout_seconds, cached.retries) == ("cached-numbers", {"a", "b"}, 30, 2)

    @flow
    def pipeline() -> State[Any]:
        return cached(3, return_state=True)

    first, second = pipeline(), pipeline()

    assert second.name == "Cached" and calls == [3]
    restored = second.result()  # unpickled from Prefect's result storage: reopens the store
    assert restored == first.result() and restored.load() == [0, 1, 2]
    assert sorted(read_task_run(str(restored.producer.step)).tags) == ["a", "b"]


def test_models_and_hand_built_artifacts(store: ArtifactStore) -> None:
    from sklearn.linear_model import LogisticRegression

    @tracelet_task("t8/model", "model")
    def fit() -> LogisticRegression:
        return LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])

    @tracelet_task("t8/bundle")
    def bundle(model: LoggedArtifact) -> TraceletArtifact:
        return (TraceletArtifact("t8/bundle", "report", "hand built")
                .add_object({"model": model.ref}, "card", "json").add_object([1, 2], "numbers", "json"))

    @tracelet_task("t8/other")
    def misnamed() -> TraceletArtifact:
        return TraceletArtifact("t8/bundle", "report").add_object({}, "card", "json")

    @flow
    def pipeline() -> tuple[LoggedArtifact, LoggedArtifact]:
        model = fit()
        return model, bundle(model)

    model, card = pipeline()

    assert model.type.value == "model" and model.metadata["framework"] == "sklearn"
    assert model.load(allow_pickle=True).predict([[3.0]]).tolist() == [1]
    assert (card.ref, card.type.value, card.description) == ("t8/bundle:v1", "report", "hand built")
    assert sorted(o.name for o in card.objects) == ["card", "numbers"] and card.inputs == [model.ref]

    @flow
    def wrong() -> Any:
        return misnamed()

    state = wrong(return_state=True)
    with pytest.raises(InvalidArtifactError, match="named 't8/bundle' but logs to 't8/other'"):
        state.result()


def test_a_version_without_one_object_needs_the_annotation(store: ArtifactStore) -> None:
    store.log(TraceletArtifact("t8/two", "dataset").add_object([1], "a", "json").add_object([2], "b", "json"))

    @tracelet_task("t8/uses")
    def uses(data: Any) -> int:
        return 1

    @flow
    def pipeline() -> Any:
        return uses(store.get("t8/two:v1"))

    with pytest.raises(TypeError, match="annotate the parameter as LoggedArtifact"):
        pipeline(return_state=True).result()


def test_logged_versions_pickle_by_store_uri(store: ArtifactStore) -> None:
    logged = numbers_flow(2)
    restored = pickle.loads(pickle.dumps(logged))
    assert restored == logged and restored.load() == [0, 1]
    assert restored.store.uri == store.uri


def test_tasks_and_unpickled_versions_share_the_cores_one_store_cache(store: ArtifactStore) -> None:
    from tracelet_prefect._stores import StoreSpec

    logged = numbers_flow(2)
    spec = StoreSpec(*store.reopen_args())
    assert spec.open() is ArtifactStore.shared(*store.reopen_args())
    assert pickle.loads(pickle.dumps(logged)).store is spec.open()


# -- backends ----------------------------------------------------------------------------------
class MemoryBackend(Backend):
    name = "memory"
    received: list[str] = []

    def log(self, artifact: LoggedArtifact) -> ArtifactResult:
        MemoryBackend.received.append(artifact.ref)
        return ArtifactResult(backend=self.name, ok=True, version=str(len(MemoryBackend.received)))


class BrokenBackend(Backend):
    name = "broken"

    def log(self, artifact: LoggedArtifact) -> ArtifactResult:
        raise RuntimeError("tracker is down")


@pytest.fixture
def backends() -> Iterator[list[str]]:
    MemoryBackend.received = []
    register_backend("memory", MemoryBackend)
    register_backend("broken", BrokenBackend)
    yield MemoryBackend.received
    unregister_backend("memory")
    unregister_backend("broken")


def test_versions_are_delivered_to_backends_and_a_failing_one_never_fails_the_log(
        store: ArtifactStore, backends: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    @tracelet_task("t9/model", "model", backends=["memory", "broken"])
    def model() -> dict[str, int]:
        return {"w": 1}

    @tracelet_task("t9/default")
    def default() -> dict[str, int]:
        return {"w": 2}

    @flow
    def pipeline() -> tuple[LoggedArtifact, LoggedArtifact]:
        return model(), default()

    monkeypatch.setenv("TRACELET_BACKENDS", "memory")
    first, second = pipeline()
    assert backends == ["t9/model:v1", "t9/default:v1"]
    pipeline()  # unchanged: nothing new to deliver
    assert backends == ["t9/model:v1", "t9/default:v1"]


def test_an_unknown_backend_fails_the_task_before_it_runs(store: ArtifactStore) -> None:
    calls: list[int] = []

    @tracelet_task("t9/never", backends=["no-such-tracker"])
    def never() -> int:
        calls.append(1)
        return 1

    @flow
    def pipeline() -> Any:
        return never()

    with pytest.raises(ConfigurationError, match="unknown backend 'no-such-tracker'"):
        pipeline(return_state=True).result()
    assert calls == [] and store.list() == []


def test_bad_decorator_arguments_fail_when_decorating() -> None:
    with pytest.raises(InvalidArtifactError):
        tracelet_task("not a name!")
    with pytest.raises(InvalidArtifactError, match="unknown artifact type"):
        tracelet_task("ok", "spreadsheet")
    with pytest.raises(TypeError, match="generator"):
        @tracelet_task("gen")
        def gen() -> Iterator[int]:
            yield 1


def test_a_catalog_url_from_the_settings_is_not_pickled(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"sqlite:///{tmp_path / 'catalog-with-secret.db'}"
    monkeypatch.setenv("TRACELET_CATALOG_URL", secret)
    with ArtifactStore.open(tmp_path / "blobs") as opened:
        logged = opened.log(TraceletArtifact("p/x").add_object([1], "value", "json"))
        data = pickle.dumps(logged)
        assert secret.encode() not in data and str(tmp_path / "blobs").encode() in data
        assert pickle.loads(data).load() == [1]  # reopened with this process's TRACELET_CATALOG_URL
