"""The public face of tracelet_dagster: exactly the contract's names, loaded lazily."""

import subprocess
import sys

import pytest

import tracelet_dagster

CONTRACT = {"TraceletIOManager", "TraceletResource", "tracelet_source_asset", "tracelet_sensor", "reproduce"}


def test_all_lists_exactly_the_contract_names_and_each_resolves() -> None:
    assert set(tracelet_dagster.__all__) == CONTRACT
    for name in CONTRACT:
        assert getattr(tracelet_dagster, name).__name__ == name
    assert set(dir(tracelet_dagster)) >= CONTRACT
    with pytest.raises(AttributeError, match="no attribute 'TraceletStore'"):
        tracelet_dagster.TraceletStore  # noqa: B018


def test_dagster_is_imported_only_when_a_name_is_used() -> None:
    code = ("import sys, tracelet_dagster; before = 'dagster' in sys.modules; "
            "from tracelet_dagster import TraceletIOManager; print(before, 'dagster' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
