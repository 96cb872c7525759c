"""Beyond one machine: tracelet tasks under prefect-dask's ``DaskTaskRunner`` on a local cluster
of two worker processes, logging into one shared store and catalog."""

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
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as local:
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
