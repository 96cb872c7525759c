"""The Prefect features production pipelines use, with tracelet tasks in them, on the session's
real ``prefect server``: async tasks and ``atransaction()``, ``commit_mode=EAGER`` and nested
transactions, the thread and process pool task runners, results persisted on S3 (moto), cache
policies, key functions, expiration and refresh, tag concurrency limits and retries with delays.
Lineage is compared as the exact edges expected. (A served deployment triggered by
``tracelet.artifact.logged`` is in ``test_prefect_example.py``.)
"""

from __future__ import annotations

import asyncio
import gc
import threading
from datetime import timedelta
from typing import Any

import pytest
from prefect import flow
from prefect.cache_policies import INPUTS
from prefect.client.orchestration import get_client
from prefect.filesystems import RemoteFileSystem
from prefect.states import State
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
from prefect.transactions import CommitMode, atransaction, transaction

from tracelet_core import ArtifactNotFoundError, ArtifactStore, LoggedArtifact
from tracelet_prefect import tracelet_task


def edges(store: ArtifactStore, name: str) -> set[tuple[str, str]]:
    """(input ref, ref) of every version of ``name``."""
    return {(i, v.ref) for v in store.versions(name) for i in v.inputs}


def alias_target(store: ArtifactStore, ref: str) -> str | None:
    try:
        return store.get(ref).ref
    except ArtifactNotFoundError:
        return None


# -- async tasks and atransaction() ----------------------------------------------------------------
@tracelet_task("p1/raw", "dataset")
async def raw_async(n: int) -> list[int]:
    await asyncio.sleep(0)
    return list(range(n))


@tracelet_task("p1/model", "model", aliases=["candidate"])
async def train_async(data: list[int]) -> dict[str, int]:
    return {"w": sum(data)}


# Prefect's own async flow engine leaves a connection to the server open when asyncio.run()
# closes its loop (as in test_prefect_tasks.py): not tracelet's to close.
@pytest.mark.filterwarnings("ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
def test_async_tasks_inside_an_async_transaction(store: ArtifactStore) -> None:
    @flow
    async def pipeline(n: int, fail: bool = False) -> LoggedArtifact:
        async with atransaction():
            data = await raw_async(n)
            model = await train_async(data)
            if fail:
                raise RuntimeError("injected: validation failed")
        return model

    model = asyncio.run(pipeline(4))  # type: ignore[call-arg]
    assert store.get("p1/model:candidate") == model
    assert edges(store, "p1/model") == {("p1/raw:v1", "p1/model:v1")}

    state: State[Any] = asyncio.run(pipeline(5, True, return_state=True))  # type: ignore[call-arg]
    assert state.is_failed()
    # v2 is committed (versions are immutable) but the rolled back transaction moved no alias
    assert [v.ref for v in store.versions("p1/model")] == ["p1/model:v1", "p1/model:v2"]
    assert alias_target(store, "p1/model:candidate") == "p1/model:v1"
    assert edges(store, "p1/model") == {("p1/raw:v1", "p1/model:v1"), ("p1/raw:v2", "p1/model:v2")}
    gc.collect()  # Prefect's leftover socket is collected here, under this test's filters, not in the next test


# -- EAGER and nested transactions -------------------------------------------------------------------
@tracelet_task("p2/model", "model", aliases=["staging"])
def stage_model(w: int) -> dict[str, int]:
    return {"w": w}


@tracelet_task("p2/report", "report", aliases=["latest-report"])
def report(model: dict[str, int]) -> dict[str, int]:
    return {"score": model["w"] * 2}


def test_an_eager_inner_transaction_keeps_its_aliases_when_the_outer_one_rolls_back(store: ArtifactStore) -> None:
    @flow
    def pipeline(w: int, mode: CommitMode) -> tuple[LoggedArtifact, LoggedArtifact]:
        with transaction():
            with transaction(commit_mode=mode):
                model = stage_model(w)
            summary = report(model)
            raise RuntimeError("injected: the outer block fails")
        return model, summary  # pragma: no cover - never reached

    eager: State[Any] = pipeline(1, CommitMode.EAGER, return_state=True)
    assert eager.is_failed()
    # EAGER: the inner block committed when it ended; the outer rollback no longer reaches it
    assert alias_target(store, "p2/model:staging") == "p2/model:v1"
    assert alias_target(store, "p2/report:latest-report") is None

    lazy: State[Any] = pipeline(2, CommitMode.LAZY, return_state=True)
    assert lazy.is_failed()
    # LAZY: a nested transaction hands its hooks to the outer one, which rolled back
    assert alias_target(store, "p2/model:staging") == "p2/model:v1"
    assert edges(store, "p2/report") == {("p2/model:v1", "p2/report:v1"), ("p2/model:v2", "p2/report:v2")}


def test_nested_transactions_move_aliases_when_the_outermost_commits(store: ArtifactStore) -> None:
    seen: dict[str, str | None] = {}

    @flow
    def pipeline(w: int) -> LoggedArtifact:
        with transaction():
            with transaction():
                model = stage_model(w)
            seen["after the inner block"] = alias_target(store, "p2/model:staging")
            report(model)
        return model

    model = pipeline(3)
    assert seen == {"after the inner block": None}
    assert alias_target(store, "p2/model:staging") == model.ref
    assert edges(store, "p2/report") == {(model.ref, "p2/report:v1")}


# -- task runners ------------------------------------------------------------------------------------
@tracelet_task("p3/shard", "dataset")
def shard(i: int) -> list[int]:
    return [i, i + 1]


@tracelet_task("p3/merged", "dataset")
def merged(shards: list[list[int]]) -> int:
    return sum(sum(s) for s in shards)


@flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
def on_threads(n: int) -> LoggedArtifact:
    return merged(shard.map(range(n)))


@flow(task_runner=ProcessPoolTaskRunner(max_workers=2))
def on_processes(n: int) -> LoggedArtifact:
    return merged(shard.map(range(n)))


@pytest.mark.parametrize("pipeline", [on_threads, on_processes], ids=["threads", "processes"])
def test_task_runners_log_the_fan_out_and_its_fan_in(store: ArtifactStore, pipeline: Any) -> None:
    total = pipeline(6)
    shards = {v.ref for v in store.versions("p3/shard")}
    assert len(shards) == 6 and total.load() == sum(2 * i + 1 for i in range(6))
    assert edges(store, "p3/merged") == {(ref, total.ref) for ref in shards}
    assert {v.producer.run_id for v in store.versions("p3/shard")} == {total.producer.run_id}  # type: ignore[union-attr]


# -- results on S3, cache policies -------------------------------------------------------------------
def test_results_persisted_on_s3_are_reused_by_the_cache(store: ArtifactStore, s3_env: str, s3_admin: Any,
                                                         s3_endpoint: str) -> None:
    results = s3_env.rsplit("/", 1)[0] + "/prefect-results"
    storage = RemoteFileSystem(basepath=results, settings={
        "key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_endpoint}})
    storage.save(f"tracelet-{results.split('/')[2]}")  # Prefect keeps result storage server-side
    runs: list[int] = []

    @tracelet_task("p4/features", "dataset", cache_policy=INPUTS, persist_result=True, result_storage=storage)
    def features(n: int) -> list[int]:
        runs.append(n)
        return list(range(n))

    @flow
    def pipeline(n: int) -> State[Any]:
        return features(n, return_state=True)  # type: ignore[no-any-return]

    first, second = pipeline(3), pipeline(3)
    assert runs == [3] and second.name == "Cached"
    assert second.result() == first.result() == store.get("p4/features:v1")
    assert s3_admin.ls(results.removeprefix("s3://"))  # the result record is in the bucket


def test_cache_key_fn_expiration_and_refresh(store: ArtifactStore) -> None:
    runs: list[int] = []

    def by_parity(_context: Any, parameters: dict[str, Any]) -> str:
        return f"parity-{parameters['n'] % 2}"

    @tracelet_task("p5/counted", "dataset", cache_key_fn=by_parity, persist_result=True)
    def counted(n: int) -> list[int]:
        runs.append(n)
        return [n, len(runs)]

    @flow
    def pipeline(n: int, refresh: bool = False, expire: bool = False) -> State[Any]:
        options: dict[str, Any] = {"refresh_cache": refresh}
        if expire:
            options["cache_expiration"] = timedelta(milliseconds=1)  # (a zero timedelta means none)
        return counted.with_options(**options)(n, return_state=True)  # type: ignore[no-any-return]

    first = pipeline(2)
    cached = pipeline(4)  # same parity: the cached version, the function never ran
    assert (runs, cached.name, cached.result()) == ([2], "Cached", first.result())
    refreshed = pipeline(6, refresh=True, expire=True)  # runs again; its record expires at once
    assert runs == [2, 6] and refreshed.name == "Completed" and refreshed.result().ref == "p5/counted:v2"
    after = pipeline(8)  # the record expired: runs again
    assert runs == [2, 6, 8] and after.name == "Completed" and after.result().ref == "p5/counted:v3"
    again = pipeline(10)
    assert (runs, again.name, again.result()) == ([2, 6, 8], "Cached", after.result())
    assert [v.producer.step for v in store.versions("p5/counted")] == [  # type: ignore[union-attr]
        str(s.state_details.task_run_id) for s in (first, refreshed, after)]


# -- tag concurrency limits, retries with delays ---------------------------------------------------
def test_a_tag_concurrency_limit_holds_tracelet_tasks_to_one_at_a_time(store: ArtifactStore) -> None:
    tag = "tracelet-one-gpu"
    active, most = [0], [0]
    lock = threading.Lock()

    @tracelet_task("p6/trained", "model", tags=[tag])
    def trained(i: int) -> dict[str, int]:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            return {"i": i}
        finally:
            with lock:
                active[0] -= 1

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
    def pipeline() -> list[LoggedArtifact]:
        return trained.map(range(4)).result()  # type: ignore[no-any-return]

    async def limit(on: bool) -> None:
        async with get_client() as client:
            if on:
                await client.create_concurrency_limit(tag=tag, concurrency_limit=1)
            else:
                await client.delete_concurrency_limit_by_tag(tag)

    asyncio.run(limit(True))
    try:
        logged = pipeline()
    finally:
        asyncio.run(limit(False))
    assert most == [1]
    assert sorted(v.load()["i"] for v in logged) == [0, 1, 2, 3] and len(store.versions("p6/trained")) == 4


def test_retries_with_a_delay_log_one_version_from_the_attempt_that_succeeded(store: ArtifactStore) -> None:
    attempts: list[int] = []

    @tracelet_task("p7/flaky", "dataset", retries=2, retry_delay_seconds=0.1)
    def flaky(n: int) -> list[int]:
        attempts.append(n)
        if len(attempts) < 3:
            raise ConnectionError("injected: the source is not ready yet")
        return list(range(n))

    @tracelet_task("p7/used", "report")
    def used(data: list[int]) -> int:
        return len(data)

    @flow
    def pipeline() -> LoggedArtifact:
        return used(flaky(5))

    summary = pipeline()
    assert len(attempts) == 3
    [data] = store.versions("p7/flaky")
    assert data.load() == [0, 1, 2, 3, 4] and data.producer is not None
    assert edges(store, "p7/used") == {(data.ref, summary.ref)}
