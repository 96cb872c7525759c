"""Serializers keep what they are given: tagged JSON for tuples, parquet for Series and arrow
tables, and ``auto`` picks the safest format (pickle only when nothing safe holds the value)."""

import datetime
import decimal
import uuid
from collections import namedtuple
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from tracelet_core import InvalidArtifactError
from tracelet_core._serializers import get_serializer, resolve_auto, resolve_safe

Point = namedtuple("Point", "x y")


def _round_trip(obj: Any, tmp_path: Path, key: str | None = None) -> Any:
    serializer = get_serializer(key or resolve_auto(obj))
    path = tmp_path / f"value{serializer.extension}"
    serializer.dump(obj, path)
    return serializer.load(path)


@pytest.mark.parametrize("value", [
    (1, 2),
    [(1, "a"), ((),)],
    {"pair": (1.5, None), "nested": {"deep": ("x",)}},
    {"__tuple__": [1], "other": (2,)},  # a dict shaped like a tag is escaped, not mistaken for one
    {"with_tuple": (1,), "tagged": {"__tuple__": [1]}, "wrapped": {"__dict__": {"a": 1}}},
])
def test_tuples_at_any_depth_come_back_as_tuples(value: Any, tmp_path: Path) -> None:
    assert resolve_auto(value) == "json-tagged"
    back = _round_trip(value, tmp_path)
    assert back == value and repr(back) == repr(value)


def test_plain_json_stays_plain_json(tmp_path: Path) -> None:
    value = {"__tuple__": [1, 2]}
    assert resolve_auto(value) == "json"
    assert _round_trip(value, tmp_path) == value
    assert (tmp_path / "value.json").read_text(encoding="utf-8").startswith('{\n  "__tuple__"')


def test_named_tuples_are_not_flattened_into_plain_tuples() -> None:
    assert resolve_safe(Point(1, 2)) is None
    assert resolve_auto(Point(1, 2)) == "pickle"


@pytest.mark.parametrize("series", [
    pd.Series([1.5, 2.5], index=["a", "b"], name="price"),
    pd.Series([1, 2, 3]),
    pd.Series(["x", None], name=7),
])
def test_series_round_trip_through_parquet_with_name_and_index(series: pd.Series, tmp_path: Path) -> None:
    assert resolve_auto(series) == "parquet"
    pd.testing.assert_series_equal(_round_trip(series, tmp_path), series)


def test_arrow_tables_round_trip_through_parquet(tmp_path: Path) -> None:
    table = pa.table({"id": [1, 2], "tag": ["x", None]}).replace_schema_metadata({"owner": "me"})
    assert resolve_auto(table) == "parquet"
    back = _round_trip(table, tmp_path)
    assert back.equals(table) and back.schema.metadata == {b"owner": b"me"}


def test_dataframes_are_written_as_before(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    pd.testing.assert_frame_equal(_round_trip(frame, tmp_path), frame)


def test_parquet_refuses_what_it_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(InvalidArtifactError, match="DataFrame, Series or pyarrow Table"):
        get_serializer("parquet").dump([1, 2], tmp_path / "x.parquet")
    with pytest.raises(InvalidArtifactError, match="cannot be written as parquet"):
        get_serializer("parquet").dump(pd.Series([object()]), tmp_path / "y.parquet")


# -- round 3: values plain JSON cannot hold, without pickle ---------------------------------------
WHEN = datetime.datetime(2024, 5, 1, 12, 30, 15, 250, tzinfo=datetime.timezone.utc)


def _typed(value: Any) -> Any:
    """``value`` with every type spelt out, nested: equal values of other types differ here."""
    if isinstance(value, dict):
        return ("dict", [(_typed(k), _typed(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_typed(v) for v in value])
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, sorted((_typed(v) for v in value), key=repr))
    return (type(value).__name__, repr(value))


@pytest.mark.parametrize("value", [
    {1, 2, 3},
    frozenset({"a", "b"}),
    {(1, "x"), frozenset({2})},
    {1: "one", 2: "two"},
    {1.5: "x", True: "t", (1, 2): [3]},
    {"a": {3: {4: (5,)}}},
    b"\x00\xffbytes",
    WHEN,
    WHEN.replace(tzinfo=None),
    datetime.date(2024, 5, 1),
    decimal.Decimal("1.10"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    {"when": WHEN, "ids": [uuid.UUID(int=7)], "raw": b"x", "price": decimal.Decimal("-0.5")},
    [{"__set__": [1]}, {"__items__": []}, {"__bytes__": "AA=="}, (1,)],  # tag-shaped dicts stay dicts
])
def test_sets_odd_keys_bytes_dates_decimals_and_uuids_round_trip_equal_and_of_the_same_type(
        value: Any, tmp_path: Path) -> None:
    assert resolve_auto(value) == "json-tagged"
    back = _round_trip(value, tmp_path)
    assert back == value and _typed(back) == _typed(value)


def test_equal_sets_give_equal_bytes(tmp_path: Path) -> None:
    serializer = get_serializer("json-tagged")
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    serializer.dump({"s": {3, 1, 2, (0, 1)}}, first)
    serializer.dump({"s": {(0, 1), 2, 1, 3}}, second)
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize("value", [
    {float("nan"): 1}, decimal.Decimal("NaN"), {object(): 1}, {frozenset({1}): 2},
    pd.Timestamp("2024-01-01"),  # a datetime subclass would come back as a plain datetime
])
def test_what_tagged_json_cannot_bring_back_is_not_chosen(value: Any) -> None:
    assert resolve_safe(value) is None


def test_tagged_values_through_a_store_need_no_pickle(tmp_path: Path) -> None:
    from tracelet_core import ArtifactStore, TraceletArtifact

    value = {"when": WHEN, "seen": {1, 2}, 3: frozenset({"x"})}
    with ArtifactStore.open(tmp_path / "store") as store:
        logged = store.log(TraceletArtifact("odd").add_object(value, "value", "auto"))
        assert logged.objects[0].serializer == "json-tagged"
        back = logged.load(allow_pickle=False)
    assert back == value and _typed(back) == _typed(value)
