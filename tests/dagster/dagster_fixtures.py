"""Fixtures for the Dagster adapter: a tracelet store per test, its IO manager and resource, and
a Dagster instance in a temporary DAGSTER_HOME for tests that need one (sensors, dynamic
partitions, the multiprocess executor).

Test modules load this with ``pytest_plugins = ["dagster_fixtures"]`` rather than it being a
``conftest.py``: pytest imports every non-package conftest as the module ``conftest``, and a
second one would shadow ``tests/conftest.py`` for ``from conftest import snapshot_tree``.
The ``store_dir`` and ``store`` fixtures come from ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance

from tracelet_dagster import TraceletIOManager, TraceletResource


@pytest.fixture
def tracelet_io(store_dir: Path) -> TraceletIOManager:
    """The IO manager on the test's store (``store`` opens the same one)."""
    return TraceletIOManager(store_uri=str(store_dir))


@pytest.fixture
def dagster_resources(tracelet_io: TraceletIOManager, store_dir: Path) -> dict[str, object]:
    return {"tracelet": tracelet_io, "tracelet_store": TraceletResource(store_uri=str(store_dir))}


@pytest.fixture
def dagster_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DagsterInstance]:
    """A persistent Dagster instance in a temporary DAGSTER_HOME."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with DagsterInstance.get() as dagster_instance:
        yield dagster_instance
