"""Containers of safe values are stored without pickle, one entry per leaf plus a structure entry,
and come back as the same container; scikit-learn models go to skops with its trusted-types check."""

from __future__ import annotations

import datetime
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from tracelet_core import ArtifactStore, InvalidArtifactError, TraceletArtifact, UnsafeDeserializationError
from tracelet_core._values import add_value

FRAME = pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]})


class Opaque:
    """Only pickle can hold this."""

    def __init__(self, value: int) -> None:
        self.value = value


def _entries(logged: Any) -> dict[str, str]:
    return {o.path: o.serializer for o in logged.objects}


def _assert_equal(back: Any, value: Any) -> None:
    """Same container types all the way down, equal leaves."""
    assert type(back) is type(value)
    if isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(back, value)
    elif isinstance(value, pd.Series):
        pd.testing.assert_series_equal(back, value)
    elif isinstance(value, np.ndarray):
        np.testing.assert_array_equal(back, value)
        assert back.dtype == value.dtype
    elif isinstance(value, torch.Tensor):
        assert torch.equal(back, value)
    elif isinstance(value, dict):
        assert list(back) == list(value)
        for key in value:
            _assert_equal(back[key], value[key])
    elif isinstance(value, (list, tuple)):
        assert len(back) == len(value)
        for got, expected in zip(back, value, strict=True):
            _assert_equal(got, expected)
    else:
        assert back == value


@pytest.mark.parametrize(("value", "expected"), [
    ({"train": FRAME, "test": FRAME.iloc[1:]},
     {"value.json": "container", "value/train.parquet": "parquet", "value/test.parquet": "parquet"}),
    ((FRAME, FRAME.iloc[:1]), {"value.json": "container", "value/0.parquet": "parquet", "value/1.parquet": "parquet"}),
    ({"layer": {"w": np.ones((2, 2), dtype=np.float32), "b": np.zeros(2)}, "epochs": 3},
     {"value.json": "container", "value/layer/w.npy": "numpy", "value/layer/b.npy": "numpy"}),
    ([FRAME, {"rows": 3, "when": datetime.date(2024, 5, 1)}],
     {"value.json": "container", "value/0.parquet": "parquet"}),
    ({"weights": torch.arange(4.0), "frame": FRAME["x"]},
     {"value.json": "container", "value/weights.pt": "torch", "value/frame.parquet": "parquet"}),
    ({1: np.arange(2), (2, "b"): [np.arange(3)], "odd key/..": np.arange(1), "_3": "kept inline"},
     {"value.json": "container", "value/_0.npy": "numpy", "value/_1/0.npy": "numpy", "value/_2.npy": "numpy"}),
], ids=["dict-of-frames", "tuple-of-frames", "nested-arrays", "frame-and-dict", "tensor-and-series", "odd-keys"])
def test_containers_of_safe_values_are_one_entry_per_leaf_and_load_back_whole(
        value: Any, expected: dict[str, str], store: ArtifactStore) -> None:
    logged = store.log(TraceletArtifact("c/value", "dataset").add_object(value, "value", "auto"))

    assert _entries(logged) == expected
    assert "pickle" not in _entries(logged).values()
    _assert_equal(logged.load(allow_pickle=False), value)  # the container is the version's one value
    _assert_equal(logged.load("value", allow_pickle=False), value)


def test_keys_and_values_shaped_like_tags_come_back_as_they_were(store: ArtifactStore) -> None:
    value = {"__entry__": np.arange(2), "plain": {"__entry__": "not a leaf"}, (1, "a"): {"__tuple__": FRAME}}
    logged = store.log(TraceletArtifact("c/tags", "dataset").add_object(value, "value", "auto"))

    assert set(_entries(logged)) == {"value.json", "value/_0.npy", "value/_2/_0.parquet"}
    _assert_equal(logged.load(), value)


def test_a_leaf_is_a_loadable_entry_of_its_own_and_the_structure_lists_the_leaves(store: ArtifactStore) -> None:
    logged = store.log(TraceletArtifact("c/split", "dataset").add_object(
        {"train": FRAME, "test": FRAME.copy()}, "value", "auto"))

    pd.testing.assert_frame_equal(logged.load("value/train"), FRAME)
    [structure] = [o for o in logged.objects if o.serializer == "container"]
    assert structure.extra == {"container": "dict", "entries": ["value/train", "value/test"]}


def test_the_same_object_twice_is_one_entry(store: ArtifactStore) -> None:
    logged = store.log(TraceletArtifact("c/same", "dataset").add_object([FRAME, FRAME], "value", "auto"))

    assert _entries(logged) == {"value.json": "container", "value/0.parquet": "parquet"}
    back = logged.load()
    pd.testing.assert_frame_equal(back[1], FRAME)


def test_equal_containers_give_the_same_version(store: ArtifactStore) -> None:
    first = store.log(TraceletArtifact("c/again", "dataset").add_object({"a": np.arange(5)}, "value", "auto"))
    second = store.log(TraceletArtifact("c/again", "dataset").add_object({"a": np.arange(5)}, "value", "auto"))

    assert second.ref == first.ref and not second.created


@pytest.mark.parametrize(("value", "serializer"), [
    ({"when": datetime.datetime(2024, 5, 1, 9, 30), "n": 1}, "json-tagged"),
    ({1, 2, 3}, "json-tagged"),
    ({"a": [1, 2], "b": {"c": None}}, "json"),
    ({"w": torch.ones(2), "b": torch.zeros(1)}, "torch"),
])
def test_what_one_safe_entry_holds_stays_one_entry(value: Any, serializer: str, store: ArtifactStore) -> None:
    logged = store.log(TraceletArtifact("c/one", "custom").add_object(value, "value", "auto"))

    assert _entries(logged) == {f"value{Path(logged.objects[0].path).suffix}": serializer}
    _assert_equal(logged.load(), value)


def test_a_container_subclass_is_not_exploded(store: ArtifactStore) -> None:
    value = OrderedDict(frame=FRAME)  # it would come back a plain dict

    with pytest.raises(InvalidArtifactError, match="TRACELET_ALLOW_PICKLE"):
        add_value(TraceletArtifact("c/ordered"), value, allow_pickle=False)


def test_a_value_only_pickle_holds_is_refused_naming_where_it_sits() -> None:
    value = {"train": FRAME, "extras": [np.arange(2), Opaque(1)]}

    with pytest.raises(InvalidArtifactError) as refused:
        add_value(TraceletArtifact("c/refused"), value, allow_pickle=False)
    message = str(refused.value)
    assert "value['extras'][1]" in message and "Opaque" in message
    assert "TRACELET_ALLOW_PICKLE" in message and "allow_pickle" in message


def test_with_pickle_allowed_such_a_container_is_one_pickle_entry(store: ArtifactStore) -> None:
    artifact = TraceletArtifact("c/pickled")
    stored = add_value(artifact, {"train": FRAME, "odd": Opaque(2)}, allow_pickle=True)
    logged = store.log(artifact)

    assert stored.serializer == "pickle" and _entries(logged) == {"value.pkl": "pickle"}
    assert logged.load(allow_pickle=True)["odd"].value == 2


def test_add_value_stores_containers_by_the_same_rule(store: ArtifactStore) -> None:
    artifact = TraceletArtifact("c/added", "dataset")
    stored = add_value(artifact, {"train": FRAME}, allow_pickle=False)
    logged = store.log(artifact)

    assert (stored.kind, stored.entry, stored.serializer) == ("object", "value", "container")
    _assert_equal(logged.load(), {"train": FRAME})


def test_a_tampered_structure_is_an_integrity_error(store: ArtifactStore, tmp_path: Path) -> None:
    from tracelet_core import IntegrityError
    from tracelet_core._containers import rebuild

    with pytest.raises(IntegrityError, match="not a tracelet-container"):
        rebuild({"value": {"__entry__": "value/x"}}, lambda name: None)


# -- scikit-learn with skops ------------------------------------------------------------------------
def _fitted() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.array([[0.0, 1.0], [1.0, 0.0], [0.9, 0.2], [0.1, 0.8]])
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(features, [0, 1, 1, 0]), features


def test_sklearn_models_are_stored_with_skops_and_load_without_pickle(store: ArtifactStore) -> None:
    model, features = _fitted()
    artifact = TraceletArtifact("sk/model", "model")
    stored = add_value(artifact, model, allow_pickle=False)
    logged = store.log(artifact)

    assert (stored.kind, stored.serializer) == ("model", "skops")
    assert _entries(logged) == {"model.skops": "skops"}
    np.testing.assert_array_equal(logged.load(allow_pickle=False).predict(features), model.predict(features))
    again = store.log(TraceletArtifact("sk/model", "model").add_model(model))
    assert again.ref == logged.ref  # the same model gives the same bytes (fixed zip timestamps)


def test_a_model_in_a_container_is_a_skops_leaf(store: ArtifactStore) -> None:
    model, features = _fitted()
    artifact = TraceletArtifact("sk/bundle", "model")
    add_value(artifact, {"model": model, "accuracy": 1.0}, allow_pickle=False)
    logged = store.log(artifact)

    assert _entries(logged) == {"value.json": "container", "value/model.skops": "skops"}
    back = logged.load(allow_pickle=False)
    assert back["accuracy"] == 1.0
    np.testing.assert_array_equal(back["model"].predict(features), model.predict(features))


class HomeMadeScaler:
    """A user's own estimator: skops writes it, but does not trust its type."""

    def __init__(self, factor: float = 2.0) -> None:
        self.factor = factor

    def fit(self, features: Any, target: Any = None) -> HomeMadeScaler:
        return self

    def transform(self, features: Any) -> Any:
        return np.asarray(features) * self.factor


HomeMadeScaler.__module__ = "sklearn.custom"  # detected as an sklearn model, as a subclass would be


def test_untrusted_types_are_refused_where_the_model_is_stored_and_where_it_is_loaded(
        store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    module = types.ModuleType("sklearn.custom")
    module.HomeMadeScaler = HomeMadeScaler  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sklearn.custom", module)  # importable, as a user's module is

    with pytest.raises(InvalidArtifactError, match=r"skops' trusted list \(sklearn.custom.HomeMadeScaler\)"):
        add_value(TraceletArtifact("sk/home"), HomeMadeScaler(), allow_pickle=False)

    artifact = TraceletArtifact("sk/home", "model")
    add_value(artifact, HomeMadeScaler(3.0), allow_pickle=True)
    logged = store.log(artifact)
    assert _entries(logged) == {"model.skops": "skops"}
    with pytest.raises(UnsafeDeserializationError, match="sklearn.custom.HomeMadeScaler"):
        logged.load(allow_pickle=False)
    assert logged.load(allow_pickle=True).factor == 3.0


def test_a_model_skops_cannot_write_falls_back_to_pickle(store: ArtifactStore,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import skops.io

    def broken(obj: Any, file: Any, **kwargs: Any) -> None:  # the fault: skops cannot write this model
        raise TypeError("cannot serialize")

    monkeypatch.setattr(skops.io, "dump", broken)
    model, features = _fitted()

    with pytest.raises(InvalidArtifactError, match=r"skops cannot write .*cannot serialize.*TRACELET_ALLOW_PICKLE"):
        add_value(TraceletArtifact("sk/fallback", "model"), model, allow_pickle=False)
    artifact = TraceletArtifact("sk/fallback", "model")
    assert add_value(artifact, model, allow_pickle=True).serializer == "pickle"
    logged = store.log(artifact)
    entry = logged.objects[0]
    assert (entry.serializer, entry.extra["fallback_from"]) == ("pickle", "skops")
    assert "cannot serialize" in entry.extra["fallback_reason"]
    np.testing.assert_array_equal(logged.load(allow_pickle=True).predict(features), model.predict(features))


def test_without_skops_sklearn_models_are_pickled(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from tracelet_core import _frameworks

    monkeypatch.setattr(_frameworks, "skops_available", lambda: False)  # the fault: skops not installed
    model, _ = _fitted()

    logged = store.log(TraceletArtifact("sk/noskops", "model").add_model(model))
    assert _entries(logged) == {"model.pkl": "pickle"}
    with pytest.raises(UnsafeDeserializationError):
        logged.load()
