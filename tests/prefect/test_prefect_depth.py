"""What Prefect users combine, beyond one task: containers of versions, lineage through
``load_artifact`` values (confirmed, never from an ``id()`` match alone), transactions, caching
across stores, JSON results and ``with_options`` -- on the session's real Prefect server, read
back through ``get_client()`` and the server's event stream."""

from __future__ import annotations

import json
import os
import random
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from prefect import flow, task
from prefect.cache_policies import INPUTS
from prefect.client.schemas.objects import TaskRun
from prefect.context import FlowRunContext
from prefect.events import Event
from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.transactions import transaction
from prefect_support import read_task_run
from pydantic import BaseModel

from tracelet_core import (
    ArtifactNotFoundError,
    ArtifactStore,
    IntegrityError,
    InvalidArtifactError,
    LoggedArtifact,
    TraceletArtifact,
)
from tracelet_core._json_form import logged_from_json, logged_to_json
from tracelet_prefect import load_artifact, log_artifact, tracelet_task
from tracelet_prefect._tasks import TraceletTask


def upstream_ids(task_run: TaskRun, parameter: str) -> set[str]:
    return {str(getattr(i, "id", "")) for i in task_run.task_inputs.get(parameter, [])}


def about(version: LoggedArtifact, event_name: str) -> Callable[[Event], bool]:
    """Events named ``event_name`` about ``version``, sent in the flow run that made it."""
    assert version.producer is not None
    flow_run = f"prefect.flow-run.{version.producer.run_id}"

    def match(candidate: Event) -> bool:
        return (candidate.event == event_name and candidate.resource.get("tracelet.ref") == version.ref
                and any(r.id == flow_run for r in candidate.related))

    return match


# -- containers of versions -------------------------------------------------------------------
class Pair(NamedTuple):
    left: Any
    right: Any


@tracelet_task("d1/part", "dataset")
def part(i: int) -> dict[str, int]:
    return {"i": i}


@tracelet_task("d1/extra", "dataset")
def extra(i: int) -> dict[str, int]:
    return {"extra": i}


@tracelet_task("d1/reduced", "report")
def reduce_all(parts: list[dict[str, int]], pair: Pair, ordered: OrderedDict[str, Any],
               counts: defaultdict[str, Any], mixed: dict[str, Any]) -> dict[str, Any]:
    assert type(parts) is list and type(pair) is Pair and type(ordered) is OrderedDict
    assert type(counts) is defaultdict and counts["missing"] == 0  # the factory survived
    return {"parts": sorted(p["i"] for p in parts), "pair": [pair.left["extra"], pair.right["i"]],
            "ordered": ordered["a"]["extra"], "counts": counts["x"]["extra"],
            "mixed": [mixed["table"]["rows"], mixed["part"]["extra"]]}


def test_map_results_named_tuples_ordered_dicts_and_mixed_dicts_are_loaded_and_recorded(
        store: ArtifactStore) -> None:
    store.log(TraceletArtifact("d1/table", "dataset").add_object({"rows": 3}, "value", "json"))

    @flow
    def pipeline() -> LoggedArtifact:
        parts = part.map(range(3))  # a PrefectFutureList, passed straight to the reducer
        table = load_artifact("d1/table:latest")  # a plain value, beside a version in one dict
        more = extra(10)
        return reduce_all(parts, Pair(more, parts[0]), OrderedDict(a=more), defaultdict(int, {"x": more}),
                          {"table": table, "part": more})

    reduced = pipeline()

    assert reduced.load() == {"parts": [0, 1, 2], "pair": [10, 0], "ordered": 10, "counts": 10, "mixed": [3, 10]}
    assert sorted(reduced.inputs) == ["d1/extra:v1", "d1/part:v1", "d1/part:v2", "d1/part:v3", "d1/table:v1"]


# -- an edge through a plain value is confirmed -----------------------------------------------
@tracelet_task("d2/consumer")
def consumer(data: dict[str, int]) -> dict[str, int]:
    return {"seen": data["k"]}


@tracelet_task("d2/bystander")
def bystander(data: dict[str, int]) -> dict[str, int]:
    return {"seen": data["k"]}


def test_an_id_match_alone_records_no_edge(store: ArtifactStore) -> None:
    store.log(TraceletArtifact("d2/source").add_object({"k": 1}, "value", "json"))

    @flow
    def pipeline() -> tuple[LoggedArtifact, LoggedArtifact, str]:
        loaded = load_artifact("d2/source:latest", return_state=True)
        value = loaded.result()
        real = consumer(value)
        # What Prefect's id() lookup holds once `value` is freed and a new dict takes its
        # address: the new object maps to the load_artifact run.
        other = {"k": 2}
        links = FlowRunContext.get().run_results  # type: ignore[union-attr]
        links[id(other)] = links[id(value)]
        return real, bystander(other), str(loaded.state_details.task_run_id)

    real, spurious, load_run = pipeline()

    assert real.inputs == ["d2/source:v1"]
    assert spurious.producer is not None
    assert load_run in upstream_ids(read_task_run(spurious.producer.step), "data")  # Prefect claims the edge
    assert spurious.inputs == []  # tracelet does not: that run never loaded this value


# -- generated graphs: fan-out and fan-in --------------------------------------------------------
@tracelet_task("g/node")
def node(label: str, parents: Any) -> dict[str, Any]:
    def labels(value: Any) -> list[str]:
        if isinstance(value, dict):
            return [x for v in value.values() for x in labels(v)] if "label" not in value else [value["label"]]
        if isinstance(value, (list, tuple)):
            return [x for v in value for x in labels(v)]
        return []

    return {"label": label, "from": sorted(labels(parents))}


@tracelet_task("g/leaf", "dataset")
def leaf(i: int, seed: int) -> dict[str, Any]:
    return {"label": f"leaf{i}", "seed": seed}


def _wrap_parents(rng: random.Random, parents: list[Any]) -> Any:
    shape = rng.choice(["list", "tuple", "dict", "pair", "nested"])
    if shape == "list":
        return list(parents)
    if shape == "tuple":
        return tuple(parents)
    if shape == "dict":
        return OrderedDict((f"p{i}", p) for i, p in enumerate(parents))
    if shape == "pair":
        return Pair(parents[0], parents[1:])
    return {"all": [parents]}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lineage_is_exact_on_generated_graphs_with_fan_out_and_fan_in(store: ArtifactStore, seed: int) -> None:
    rng = random.Random(seed)
    sources = [store.log(TraceletArtifact(f"g{seed}/source{i}", "dataset")
                         .add_object({"label": f"source{i}", "seed": seed}, "value", "json")) for i in range(2)]
    n_leaves, n_nodes = 3, 8
    plan: list[list[int]] = []  # parents of node k: indices into [sources..., leaves..., nodes...]
    for k in range(n_nodes):
        available = len(sources) + n_leaves + k
        plan.append(rng.sample(range(available), rng.randint(1, min(3, available))))

    @flow
    def pipeline() -> list[LoggedArtifact]:
        leaves = leaf.with_options(artifact_name=f"g{seed}/leaf").map(range(n_leaves), seed=seed)  # fan-out
        values: list[Any] = [load_artifact.submit(s.ref) for s in sources]
        values += list(leaves)
        results = []
        for k, parents in enumerate(plan):
            chosen = [values[i] for i in parents]
            parent_arg = _wrap_parents(rng, chosen) if len(chosen) > 1 else chosen[0]
            future: PrefectFuture[LoggedArtifact] = node.with_options(artifact_name=f"g{seed}/n{k}").submit(
                f"n{k}", parent_arg)
            values.append(future)
            results.append(future)
        return [f.result() for f in results]

    logged = pipeline()

    names = [f"source{i}" for i in range(len(sources))] + [f"leaf{i}" for i in range(n_leaves)] + \
        [f"n{k}" for k in range(n_nodes)]
    refs = [s.ref for s in sources] + [f"g{seed}/leaf:v{i + 1}" for i in range(n_leaves)] + \
        [f"g{seed}/n{k}:v1" for k in range(n_nodes)]
    leaf_refs = {v.load()["label"]: v.ref for v in store.versions(f"g{seed}/leaf")}
    refs[len(sources):len(sources) + n_leaves] = [leaf_refs[f"leaf{i}"] for i in range(n_leaves)]
    for k, version in enumerate(logged):
        assert version.load()["from"] == sorted(names[i] for i in plan[k])
        assert sorted(version.inputs) == sorted(refs[i] for i in plan[k]), f"node n{k} of seed {seed}"


# -- transactions ---------------------------------------------------------------------------------
@tracelet_task("d3/model", "model", aliases=("production",))
def release_model(w: int) -> dict[str, int]:
    return {"w": w}


@task
def validate(ok: bool) -> None:
    if not ok:
        raise RuntimeError("injected: validation failed")


def test_a_rolled_back_transaction_leaves_no_alias_and_says_so(store: ArtifactStore, event_log: Any) -> None:
    @flow
    def release(w: int, ok: bool) -> LoggedArtifact:
        with transaction():
            model = release_model(w)
            validate(ok)
        return model

    first = release(1, True)
    assert store.get("d3/model:production") == first

    state: State[Any] = release(2, False, return_state=True)

    assert state.is_failed()
    [kept, rolled_back] = store.versions("d3/model")
    assert kept == first and rolled_back.ref == "d3/model:v2"  # the version stays: versions are immutable
    assert store.get("d3/model:production").ref == "d3/model:v1"
    [event] = event_log.wait(about(rolled_back, "tracelet.artifact.rolled_back"))
    assert event.resource.id == "tracelet.artifact.d3/model"
    assert (event.payload["created"], event.payload["aliases_staged"], event.payload["aliases_restored"]) == (
        True, ["production"], {})
    assert rolled_back.producer is not None
    assert f"prefect.task-run.{rolled_back.producer.step}" in {r.id for r in event.related}
    event_log.wait(about(first, "tracelet.artifact.logged"))  # sent in order: v2's would be here
    assert event_log.matching(about(rolled_back, "tracelet.artifact.logged")) == []


def test_a_commit_moves_aliases_and_a_commit_that_fails_puts_them_back(store: ArtifactStore,
                                                                        event_log: Any) -> None:
    def refuse(_: Any) -> None:
        raise RuntimeError("injected: the commit failed after tracelet's hook")

    @flow
    def promote(w: int, fail_commit: bool) -> tuple[LoggedArtifact, str | None]:
        with transaction() as txn:
            model = release_model(w)
            promoted = log_artifact(model, aliases=["approved"])
            try:
                during = store.get("d3/model:approved").ref
            except ArtifactNotFoundError:
                during = None
            if fail_commit:
                txn.on_commit_hooks.append(refuse)  # runs after tracelet's, then Prefect rolls back
        return promoted, during

    first, during = promote(11, False)
    assert during is None  # nothing moved before the commit
    assert store.get("d3/model:approved") == store.get("d3/model:production") == first
    event_log.wait(lambda e: e.event == "tracelet.artifact.logged" and e.payload.get("ref") == first.ref
                   and e.payload.get("aliases_set") == ["approved"])

    second, _ = promote(12, True)

    assert store.get("d3/model:approved").ref == store.get("d3/model:production").ref == first.ref
    events = event_log.wait(about(second, "tracelet.artifact.rolled_back"), count=2)
    restored = sorted(json.dumps(e.payload["aliases_restored"]) for e in events)
    assert restored == [json.dumps({"approved": first.ref}), json.dumps({"production": first.ref})]


# -- caching, result serializers -------------------------------------------------------------------
@tracelet_task("d4/features", cache_policy=INPUTS, persist_result=True)
def cached_features(n: int) -> list[int]:
    return list(range(n))


@tracelet_task("d4/total")
def total(features: list[int]) -> int:
    return sum(features)


def test_the_cache_key_includes_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    @flow
    def pipeline(n: int) -> tuple[State[Any], LoggedArtifact]:
        features = cached_features(n, return_state=True)
        return features, total(features.result())

    monkeypatch.setenv("TRACELET_STORE_URI", str(tmp_path / "dev"))
    dev_features, dev_total = pipeline(5)
    again, _ = pipeline(5)
    monkeypatch.setenv("TRACELET_STORE_URI", str(tmp_path / "prod"))
    prod_features, prod_total = pipeline(5)

    assert (dev_features.name, again.name, prod_features.name) == ("Completed", "Cached", "Completed")
    assert prod_total.store.uri == str(tmp_path / "prod") and prod_total.inputs == ["d4/features:v1"]
    assert prod_features.result().store.uri == str(tmp_path / "prod")
    assert dev_total.load() == prod_total.load() == 10


@tracelet_task("d5/json", cache_policy=INPUTS, persist_result=True, result_serializer="json")
def json_result(n: int) -> dict[str, int]:
    return {"n": n}


def test_json_result_serializer_persists_and_caches(store: ArtifactStore) -> None:
    @flow
    def pipeline(n: int) -> State[Any]:
        return json_result(n, return_state=True)

    first, second = pipeline(7), pipeline(7)

    assert (first.name, second.name) == ("Completed", "Cached")
    restored = second.result()  # read back from the JSON record Prefect wrote
    assert isinstance(restored, LoggedArtifact) and restored == first.result() and restored.load() == {"n": 7}
    storage = Path(os.environ["PREFECT_HOME"]) / "storage"
    records = [p.read_bytes() for p in storage.rglob("*") if p.is_file()]
    mine = [r for r in records if restored.ref.encode() in r]
    assert mine and all(b"tracelet.logged/1" in r for r in mine)


def test_the_json_form_names_the_version_and_its_store_and_nothing_secret(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    class Release(BaseModel):
        model: LoggedArtifact
        parents: list[LoggedArtifact] = []

    with ArtifactStore.open(tmp_path / "blobs") as opened:
        logged = opened.log(TraceletArtifact("p/x").add_object([1], "value", "json"))
        parent = opened.log(TraceletArtifact("p/y").add_object([2], "value", "json"))
        data = Release(model=logged, parents=[parent]).model_dump_json()
        assert json.loads(data)["model"] == {"format": "tracelet.logged/1", "ref": "p/x:v1", "digest": logged.digest,
                                             "store": {"uri": str(tmp_path / "blobs"), "catalog_url": None}}
        back = Release.model_validate_json(data)
        assert back.model == logged and back.parents[0].load() == [2]

        form = logged_to_json(logged)
        with pytest.raises(IntegrityError, match="digest"):
            logged_from_json({**form, "digest": parent.digest})
        with pytest.raises(InvalidArtifactError):
            logged_from_json({"ref": "p/x:v1"})

    # A catalog from the reader's settings is not written down (it may hold a password, and the
    # reader's own TRACELET_CATALOG_URL says where it is); another one is, so it can be reopened.
    settings_catalog = f"sqlite:///{tmp_path / 'settings-catalog.db'}"
    monkeypatch.setenv("TRACELET_CATALOG_URL", settings_catalog)
    with ArtifactStore.open(tmp_path / "two") as two:
        form = logged_to_json(two.log(TraceletArtifact("p/z").add_object([3], "value", "json")))
        assert form["store"] == {"uri": str(tmp_path / "two"), "catalog_url": None}
        assert logged_from_json(form).load() == [3]
    explicit = f"sqlite:///{tmp_path / 'explicit.db'}"
    with ArtifactStore.open(tmp_path / "three", catalog_url=explicit) as three:
        form = logged_to_json(three.log(TraceletArtifact("p/w").add_object([4], "value", "json")))
        assert form["store"] == {"uri": str(tmp_path / "three"), "catalog_url": explicit}


# -- with_options ---------------------------------------------------------------------------------
@tracelet_task("d6/base", "dataset", aliases=("a",))
def configurable(n: int) -> list[int]:
    return [n]


def test_with_options_takes_tracelet_options_and_prefect_ones(store: ArtifactStore) -> None:
    other = configurable.with_options(artifact_name="d6/other", artifact_type="report", aliases=["b"],
                                      name="configured", retries=1)
    assert isinstance(other, TraceletTask) and (other.name, other.retries) == ("configured", 1)
    assert isinstance(configurable.with_options(tags=["x"]), TraceletTask)

    @flow
    def pipeline() -> tuple[LoggedArtifact, LoggedArtifact]:
        return configurable(1), other(2)

    base, changed = pipeline()

    assert (base.ref, base.type.value, base.aliases) == ("d6/base:v1", "dataset", ["a"])
    assert (changed.ref, changed.type.value, changed.aliases) == ("d6/other:v1", "report", ["b"])
    assert changed.producer is not None and changed.producer.extra["task_name"] == "configured"
    with pytest.raises(InvalidArtifactError):
        configurable.with_options(artifact_name="not a name!")
