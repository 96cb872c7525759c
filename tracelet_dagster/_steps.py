"""Dagster contexts translated into tracelet terms: artifact names, runs and partitions.

Names: an asset's artifact is its key path joined by ``/`` (``AssetKey(["ml", "model"])`` ->
``ml/model``). An op output in a plain job is ``<job>/<op path>/<output>`` (``train/fit/result``;
ops inside graphs are dotted, ``train/prep.clean/result``); dynamic outputs of one step share
that name and are told apart by their mapping key.

Runs: every version names the step that produced it, ``RunInfo(orchestrator="dagster",
run_id=<run id>, step=<step key>, name=<job>, partition=<partition key>,
code_version=<asset or op code version>)``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dagster import DagsterInvariantViolationError, InputContext, MultiPartitionKey, OutputContext

from tracelet_core import RunInfo

from . import _keys

ORCHESTRATOR = "dagster"
_MAPPING_SUFFIX = re.compile(r"\[[^\]]*\]$")


@dataclass(frozen=True)
class StepAttempt:
    """One attempt of one step of one run: what it loaded is the lineage of what it logs."""

    run_id: str
    step_key: str
    attempt: int


# -- names --------------------------------------------------------------------------------------
def asset_artifact_name(asset_path: Sequence[str]) -> str:
    return "/".join(asset_path)


def op_output_artifact_name(job_name: str, step_key: str, output_name: str) -> str:
    """``<job>/<op path>/<output>``; the mapping key of a mapped step (``op[k]``) is dropped."""
    return f"{job_name}/{_MAPPING_SUFFIX.sub('', step_key)}/{output_name}"


def output_artifact_name(context: OutputContext) -> str:
    if context.has_asset_key:
        return asset_artifact_name(context.asset_key.path)
    return op_output_artifact_name(context.job_name, context.step_key, context.name)


def input_artifact_name(context: InputContext) -> str:
    """The artifact an input reads: the upstream asset, or the upstream op output."""
    if context.has_asset_key:
        return asset_artifact_name(context.asset_key.path)
    upstream = context.upstream_output
    if upstream is None:
        raise DagsterInvariantViolationError("tracelet can only load inputs that come from an asset or an op output")
    return op_output_artifact_name(upstream.job_name, upstream.step_key, upstream.name)


# -- partitions ---------------------------------------------------------------------------------
def output_partitions(context: OutputContext) -> list[str]:
    """The asset partitions this output covers (several for a single-run backfill), or []."""
    return list(context.asset_partition_keys) if context.has_asset_partitions else []


def partition_metadata(partition: str | None) -> dict[str, Any]:
    """Version metadata naming the partition; a multi-partition key is kept whole (``a|b``)."""
    if partition is None:
        return {}
    metadata: dict[str, Any] = {_keys.PARTITION: str(partition)}
    if isinstance(partition, MultiPartitionKey):
        metadata[_keys.PARTITION_DIMENSIONS] = dict(partition.keys_by_dimension)
    return metadata


def run_partition(context: OutputContext) -> str | None:
    """The run's partition key, for op outputs of partitioned jobs."""
    return str(context.partition_key) if context.has_partition_key else None


# -- runs ---------------------------------------------------------------------------------------
def _attempt_of(step_context: Any) -> int:
    return int(getattr(step_context, "previous_attempt_count", 0) or 0)


def output_attempt(context: OutputContext) -> StepAttempt:
    try:
        attempt = _attempt_of(context.step_context)
    except DagsterInvariantViolationError:  # an OutputContext built by hand (unit tests)
        attempt = 0
    return StepAttempt(context.run_id, context.step_key, attempt)


def input_attempt(context: InputContext) -> StepAttempt | None:
    """The consuming step's attempt, or None for a hand-built context without a step."""
    try:
        step_context = context.step_context
    except DagsterInvariantViolationError:
        return None
    return StepAttempt(step_context.run_id, step_context.step.key, _attempt_of(step_context))


def output_code_version(context: OutputContext) -> str | None:
    try:
        if context.has_asset_key:
            return context.asset_spec.code_version
        return context.op_def.output_def_named(context.name).code_version
    except DagsterInvariantViolationError:
        return None


def producer(context: OutputContext, partition: str | None) -> RunInfo:
    return RunInfo(orchestrator=ORCHESTRATOR, run_id=context.run_id, step=context.step_key,
                   name=context.job_name, partition=partition, code_version=output_code_version(context))


def consumer(context: InputContext, attempt: StepAttempt) -> RunInfo:
    partition = str(context.partition_key) if context.has_partition_key else None
    return RunInfo(orchestrator=ORCHESTRATOR, run_id=attempt.run_id, step=attempt.step_key,
                   name=context.job_name, partition=partition)


def idempotency_key(context: OutputContext, partition: str | None) -> str:
    """Same run, step, output and partition: a retried step gets the version it already logged."""
    mapping = context.mapping_key or ""
    return f"dagster:{context.run_id}:{context.step_key}:{context.name}:{mapping}:{partition or ''}"


def run_tags(context: InputContext) -> dict[str, str]:
    try:
        return dict(context.step_context.dagster_run.tags)
    except DagsterInvariantViolationError:
        return {}
