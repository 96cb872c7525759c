"""Beyond one machine: tracelet tasks under prefect-dask's ``DaskTaskRunner`` on a local cluster
of two worker processes, logging into one shared store and catalog (a local folder, and S3 --
moto's server -- with a PostgreSQL catalog)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from distributed import Client, LocalCluster
from prefect import flow
from prefect_dask import DaskTaskRunner

from tracelet_core import ArtifactStore, LoggedArtifact, TraceletArtifact
from tracelet_prefect import load_artifact, tracelet_task


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    """Two worker processes, one thread each; they inherit this test's TRACELET_STORE_URI."""
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address="127.0.0.1:0") as local:
        yield local


@tracelet_task("dask/shard")
def shard(i: int) -> TraceletArtifact:
    return TraceletArtifact("dask/shard", "dataset", metadata={"pid": os.getpid()}).add_object({"i": i}, "value")


@tracelet_task("dask/total", "report")
def total(table: dict[str, Any], shards: list[dict[str, int]]) -> dict[str, int]:
    return {"rows": len(table["rows"]), "sum": sum(s["i"] for s in shards), "pid": os.getpid()}


def test_eight_mapped_tasks_on_two_worker_processes_log_eight_versions(cluster: LocalCluster,
                                                                       store: ArtifactStore) -> None:
    store.log(TraceletArtifact("dask/table", "dataset").add_object({"rows": [1, 2, 3]}, "table", "json"))
    with Client(cluster) as client:
        workers = set(client.run(os.getpid).values())

    @flow(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
    def pipeline() -> tuple[list[LoggedArtifact], LoggedArtifact]:
        shards = shard.map(range(8))
        table = load_artifact.submit("dask/table:latest")
        return [s.result() for s in shards], total.submit(table, shards).result()

    shards, summary = pipeline()

    # Results came back from the workers as LoggedArtifacts bound to this process's store.
    assert sorted(s.version_number for s in shards) == list(range(1, 9))
    assert sorted(s.load()["i"] for s in shards) == list(range(8))
    assert {s.metadata["pid"] for s in shards} <= workers and os.getpid() not in workers
    assert [v.version for v in store.versions("dask/shard")] == [f"v{n}" for n in range(1, 9)]

    # Lineage stays exact across processes: the shards it received, and the table a
    # load_artifact task read on (possibly) another worker.
    assert summary.load()["sum"] == 28 and summary.load()["pid"] in workers
    assert sorted(summary.inputs) == [f"dask/shard:v{n}" for n in range(1, 9)] + ["dask/table:v1"]
    assert len({s.producer.step for s in shards if s.producer}) == 8
    assert summary.producer is not None and {s.producer.run_id for s in shards if s.producer} == {
        summary.producer.run_id}
    store.verify()


@pytest.fixture
def s3_postgres_cluster(s3_env: str, postgres_url: str, tmp_path: Any,  # noqa: F811 - pytest's fixture
                        monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalCluster]:
    """Two worker processes started with TRACELET_* naming an S3 store and a PostgreSQL catalog."""
    monkeypatch.setenv("TRACELET_STORE_URI", s3_env)
    monkeypatch.setenv("TRACELET_CATALOG_URL", postgres_url)
    monkeypatch.setenv("TRACELET_CACHE_DIR", str(tmp_path / "cache"))
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address="127.0.0.1:0") as local:
        yield local


@tracelet_task("scale/feature", "dataset")
def feature(shard: dict[str, int]) -> dict[str, int]:
    return {"i": shard["i"], "square": shard["i"] ** 2, "pid": os.getpid()}


@tracelet_task("scale/report", "report")
def report(features: list[dict[str, int]], table: dict[str, Any]) -> dict[str, int]:
    return {"sum": sum(f["square"] for f in features), "rows": len(table["rows"])}


def test_fan_out_and_in_on_two_workers_against_s3_and_postgres(s3_postgres_cluster: LocalCluster) -> None:
    with ArtifactStore.open() as opened:
        assert opened.uri.startswith("s3://") and opened.catalog.url.startswith("postgresql")
        opened.log(TraceletArtifact("scale/table", "dataset").add_object({"rows": [1, 2]}, "value", "json"))
    with Client(s3_postgres_cluster) as client:
        workers = set(client.run(os.getpid).values())

    @flow(task_runner=DaskTaskRunner(address=s3_postgres_cluster.scheduler_address))
    def pipeline() -> tuple[list[LoggedArtifact], list[LoggedArtifact], LoggedArtifact]:
        shards = shard.map(range(6))                                             # fan-out
        features = feature.map(shards)                                           # one edge each
        table = load_artifact.submit("scale/table:latest")
        return [s.result() for s in shards], [f.result() for f in features], report.submit(features, table).result()

    shards, features, summary = pipeline()

    with ArtifactStore.open() as opened:
        # No lost version: one per task run, numbered without gaps, every blob intact.
        assert [v.version for v in opened.versions("dask/shard")] == [f"v{n}" for n in range(1, 7)]
        assert [v.version for v in opened.versions("scale/feature")] == [f"v{n}" for n in range(1, 7)]
        assert len(opened.verify()) == 14 and {f.load()["pid"] for f in features} <= workers
        # Exact lineage: each feature from its own shard, the report from all six and the table.
        by_ref = {s.ref: s.load()["i"] for s in shards}
        for version in features:
            [parent] = opened.get(version.ref).inputs
            assert by_ref[parent] == version.load()["i"]
        assert sorted(opened.get(summary.ref).inputs) == sorted([f.ref for f in features] + ["scale/table:v1"])
        assert summary.load() == {"sum": sum(i * i for i in range(6)), "rows": 2}
