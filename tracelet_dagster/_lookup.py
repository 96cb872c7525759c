"""Which version an input loads.

In order: (1) a pin, ``AssetIn(metadata={"tracelet/version": "v2" | "production"})``, or the run
tag ``tracelet/pins`` (``raw_data:v3,features:v2``, set by ``tracelet_sensor``); (2) the exact
version the upstream step logged when it ran in this run (or the run this one re-executes),
read from that step's ``HANDLED_OUTPUT`` event, so a concurrent run logging a newer version
cannot slip in between; (3) otherwise the latest version, or for a partitioned asset the
newest version of the partition asked for (the store records each version's partition).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dagster import DagsterEventType, DagsterInvariantViolationError, InputContext

from tracelet_core import ArtifactNotFoundError, ArtifactStore, LoggedArtifact

from . import _keys
from ._metadata import plain_value
from ._steps import run_tags


def parse_pins(tag_value: str | None) -> dict[str, str]:
    """``"raw:v3, team/features:production"`` -> ``{"raw": "v3", "team/features": "production"}``."""
    pins: dict[str, str] = {}
    for item in (tag_value or "").split(","):
        name, _, selector = item.strip().rpartition(":")
        if name and selector:
            pins[name] = selector
    return pins


def format_pins(pins: dict[str, str]) -> str:
    return ",".join(f"{name}:{selector}" for name, selector in pins.items())


def pin_for(context: InputContext, name: str) -> str | None:
    """The version or alias this input is pinned to, if any."""
    pinned = plain_value(context.definition_metadata.get(_keys.PIN))
    if pinned:
        return str(pinned)
    return parse_pins(run_tags(context).get(_keys.PINS_TAG)).get(name)


def _upstream_step(context: InputContext) -> tuple[str, str, str, str | None] | None:
    """(run id, step key, output, mapping key) of the upstream output when a step of this run
    (or of the run it re-executes) produced it; None for assets loaded from earlier runs."""
    upstream = context.upstream_output
    if upstream is None:
        return None
    try:
        return upstream.run_id, upstream.step_key, upstream.name, upstream.mapping_key
    except DagsterInvariantViolationError:  # assets outside this run have no producing step
        return None


def refs_logged_upstream(context: InputContext) -> dict[str | None, str]:
    """``{partition or None: ref}`` the upstream step reported in its output metadata."""
    step = _upstream_step(context)
    if step is None:
        return {}
    run_id, step_key, output_name, mapping_key = step
    try:
        records = context.instance.all_logs(run_id, of_type=DagsterEventType.HANDLED_OUTPUT)
    except DagsterInvariantViolationError:  # a hand-built context without an instance
        return {}
    for record in reversed(records):  # newest first: the last attempt's handling wins
        event = record.dagster_event
        if event is None or event.step_key != step_key:
            continue
        data: Any = event.event_specific_data
        metadata = {key: plain_value(value) for key, value in data.metadata.items()}
        if data.output_name == output_name and metadata.get(_keys.MAPPING_KEY) == mapping_key:
            return _refs_in(metadata)
    return {}


def _refs_in(metadata: dict[str, Any]) -> dict[str | None, str]:
    if isinstance(metadata.get(_keys.REFS), dict):
        return {str(k): str(v) for k, v in metadata[_keys.REFS].items()}
    if metadata.get(_keys.REF):
        return {metadata.get(_keys.PARTITION): str(metadata[_keys.REF])}
    return {}


def newest_per_partition(store: ArtifactStore, name: str, partitions: Sequence[str]) -> dict[str, LoggedArtifact]:
    """The newest version of each partition (partitions without a version are left out)."""
    found: dict[str, LoggedArtifact] = {}
    for partition in dict.fromkeys(partitions):
        try:
            found[partition] = store.get(name, partition=partition)
        except ArtifactNotFoundError:
            continue
    return found