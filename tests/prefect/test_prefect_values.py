"""Values through Prefect: a missing ref with a default, safe containers, pickle refused in the
producing task unless allowed."""

from __future__ import annotations

from typing import Any

import pytest
from prefect import flow

from tracelet_core import ArtifactNotFoundError, ArtifactStore, TraceletArtifact
from tracelet_prefect import load_artifact


# -- load_artifact(default=...) ---------------------------------------------------------------------
def test_load_artifact_returns_the_default_when_the_ref_does_not_exist(store: ArtifactStore) -> None:
    store.log(TraceletArtifact("v1/model", "model").add_object({"w": 1}, "value", "json"))

    @flow
    def champion(ref: str) -> Any:
        return load_artifact(ref, default=None)

    assert champion("v1/model:production") is None  # no such alias (yet)
    assert champion("v1/model:v7") is None
    assert champion("v1/nothing:latest") is None
    assert champion("v1/model:latest") == {"w": 1}
    assert not store.exists("v1/model:production") and store.exists("v1/model")


def test_load_artifact_without_a_default_still_fails_the_task(store: ArtifactStore) -> None:
    @flow
    def champion() -> Any:
        return load_artifact("v1/nothing:production")

    with pytest.raises(ArtifactNotFoundError, match="v1/nothing"):
        champion()
