"""The values the Dagster and Prefect container tests pass between steps, and what each must be
stored as: containers of safe values one entry per leaf, what one safe entry holds one entry.

Test modules import it by name (``from container_values import ...``), as ``support``.
"""

from __future__ import annotations

import datetime
from typing import Any

import numpy as np
import pandas as pd

from tracelet_core import ArtifactStore

FRAME = pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]})
WHEN = datetime.datetime(2024, 5, 1, 9, 30)


def splits() -> dict[str, pd.DataFrame]:
    return {"train": FRAME, "test": FRAME.iloc[1:]}


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    return FRAME, FRAME.iloc[:1]


def stamped() -> dict[str, datetime.datetime]:
    return {"when": WHEN}


def layers() -> dict[str, Any]:
    return {"dense": {"w": np.ones((2, 2)), "b": np.zeros(2)}, "epochs": 3}


def seen() -> set[int]:
    return {1, 2, 3}


def mixed() -> list[Any]:
    return [FRAME, {"rows": 3}]


#: value -> its entries (path: serializer)
ENTRIES = {
    "splits": {"value.json": "container", "value/train.parquet": "parquet", "value/test.parquet": "parquet"},
    "frames": {"value.json": "container", "value/0.parquet": "parquet", "value/1.parquet": "parquet"},
    "stamped": {"value.json": "json-tagged"},
    "layers": {"value.json": "container", "value/dense/w.npy": "numpy", "value/dense/b.npy": "numpy"},
    "seen": {"value.json": "json-tagged"},
    "mixed": {"value.json": "container", "value/0.parquet": "parquet"},
}
#: what ``summary`` returns for the values above
SUMMARY = {"splits": ["test", "train"], "frames": "tuple", "when": WHEN, "epochs": 3, "seen": {1, 2, 3},
           "mixed": {"rows": 3}}


def summary(splits: dict[str, pd.DataFrame], frames: tuple[pd.DataFrame, pd.DataFrame],
            stamped: dict[str, datetime.datetime], layers: dict[str, Any], seen: set[int],
            mixed: list[Any]) -> dict[str, Any]:
    """What the consuming step returns, after checking the leaves it received."""
    pd.testing.assert_frame_equal(splits["test"], FRAME.iloc[1:])
    pd.testing.assert_frame_equal(frames[1], FRAME.iloc[:1])
    np.testing.assert_array_equal(layers["dense"]["w"], np.ones((2, 2)))
    pd.testing.assert_frame_equal(mixed[0], FRAME)
    return {"splits": sorted(splits), "frames": type(frames).__name__, "when": stamped["when"],
            "epochs": layers["epochs"], "seen": seen, "mixed": mixed[1]}


def assert_stored_without_pickle(store: ArtifactStore, prefix: str = "") -> None:
    """Each value's version (named ``<prefix><value>``) holds exactly the entries in ``ENTRIES``."""
    entries = {v.name: {o.path: o.serializer for o in v.objects} for v in store.list()}
    assert {name: entries[prefix + name] for name in ENTRIES} == ENTRIES
    assert not any("pickle" in e.values() for e in entries.values())
