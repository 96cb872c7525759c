"""What a logged version looks like from Prefect: a markdown artifact and events.

For every new version (and every alias set on one) a tracelet task publishes:

- a markdown artifact keyed by the artifact name (``team/model`` -> ``team-model``: Prefect keys
  are lowercase letters, digits and dashes), so the UI's Artifacts page shows the history of
  the name: ref, type, digest, size, aliases, producer, upstream refs, where it was delivered,
  and a Mermaid snippet of its lineage;
- the event ``tracelet.artifact.logged`` on the resource ``tracelet.artifact.<name>``, with the
  version, digest, type, whether this run created the version (``tracelet.created``) and the
  aliases (``tracelet.alias.<alias>: "true"``) as resource labels, and all of it in the payload,
  so a ``DeploymentEventTrigger`` can react to a new version or to an alias move;
- for a new version, Prefect's own asset events (``prefect.asset.materialization.succeeded``
  on ``tracelet://<name>``, ``prefect.asset.referenced`` for each input), so Prefect's asset
  lineage links the same versions up.

Publishing never fails the task: the version is committed already. A failure is reported as a
warning on the task run's logger.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from prefect.artifacts import acreate_markdown_artifact, create_markdown_artifact
from prefect.events import emit_event
from prefect.exceptions import MissingContextError
from prefect.logging import get_logger, get_run_logger

from ._commit import Outcome
from ._runs import TaskRun

EVENT_LOGGED = "tracelet.artifact.logged"
RESOURCE_PREFIX = "tracelet.artifact."
ASSET_SCHEME = "tracelet://"
MATERIALIZED_BY = "tracelet"


def artifact_key(name: str) -> str:
    """The Prefect artifact key of a tracelet name: ``Team/my_model.v2`` -> ``team-my-model-v2``."""
    return re.sub(r"[^a-z0-9-]", "-", name.lower())


def resource_id(name: str) -> str:
    return f"{RESOURCE_PREFIX}{name}"


def asset_key(name: str) -> str:
    return f"{ASSET_SCHEME}{name}"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit} ({n} B)"
        value /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def render_markdown(outcome: Outcome) -> str:
    logged = outcome.logged
    aliases_set = ", ".join(outcome.aliases_set)
    what = "new version" if outcome.created else f"alias {aliases_set} set on an existing version"
    producer = logged.producer
    made_by = f"{producer.orchestrator}: {producer.name or producer.run_id} / `{producer.step}`" if producer else "-"
    deliveries = ", ".join(f"{name} {'ok' if r.ok else 'FAILED: ' + (r.error or '')}"
                           for name, r in outcome.deliveries.items()) or "-"
    inputs = ", ".join(f"`{ref}`" for ref in logged.inputs) or "-"
    rows = [
        ("ref", f"`{logged.ref}`"),
        ("type", logged.type.value),
        ("digest", f"`{logged.digest}`"),
        ("size", _size(logged.size_bytes)),
        ("aliases", ", ".join(logged.aliases) or "-"),
        ("producer", made_by),
        ("inputs", inputs),
        ("backends", deliveries),
    ]
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    return (f"### {logged.ref}\n\n{what}\n\n| | |\n|---|---|\n{table}\n\n"
            f"```mermaid\n{outcome.lineage_mermaid}```\n")


def _resource(outcome: Outcome) -> dict[str, str]:
    logged = outcome.logged
    resource = {
        "prefect.resource.id": resource_id(logged.name),
        "prefect.resource.name": logged.name,
        "tracelet.name": logged.name,
        "tracelet.ref": logged.ref,
        "tracelet.version": logged.version,
        "tracelet.digest": logged.digest,
        "tracelet.type": logged.type.value,
        "tracelet.created": "true" if outcome.created else "false",
    }
    resource.update({f"tracelet.alias.{alias}": "true" for alias in logged.aliases})
    return resource


def event_payload(outcome: Outcome) -> dict[str, Any]:
    logged = outcome.logged
    return {
        "ref": logged.ref, "name": logged.name, "version": logged.version, "digest": logged.digest,
        "type": logged.type.value, "aliases": logged.aliases, "aliases_set": list(outcome.aliases_set),
        "created": outcome.created, "size_bytes": logged.size_bytes, "inputs": logged.inputs,
        "producer": logged.producer.to_dict() if logged.producer else None,
        "backends": {name: result.ok for name, result in outcome.deliveries.items()},
    }


def _emit_events(outcome: Outcome) -> None:
    logged = outcome.logged
    upstream = [ref.rsplit(":", 1)[0] for ref in logged.inputs]
    emit_event(
        event=EVENT_LOGGED,
        resource=_resource(outcome),
        related=[{"prefect.resource.id": resource_id(name), "prefect.resource.role": "tracelet-input",
                  "tracelet.ref": ref} for name, ref in zip(upstream, logged.inputs, strict=True)],
        payload=event_payload(outcome),
    )
    if not outcome.created:
        return
    # Prefect's asset lineage, as a ``@materialize`` task would report it.
    for name in dict.fromkeys(upstream):
        emit_event(event="prefect.asset.referenced", resource={"prefect.resource.id": asset_key(name)})
    emit_event(
        event="prefect.asset.materialization.succeeded",
        resource={"prefect.resource.id": asset_key(logged.name), "prefect.resource.name": logged.name},
        related=[*({"prefect.resource.id": asset_key(name), "prefect.resource.role": "asset"}
                   for name in dict.fromkeys(upstream)),
                 {"prefect.resource.id": MATERIALIZED_BY, "prefect.resource.role": "asset-materialized-by"}],
        payload={"tracelet.ref": logged.ref, "tracelet.version": logged.version,
                 "tracelet.digest": logged.digest},
    )


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except MissingContextError:
        return get_logger("tracelet_prefect")


def _report(outcome: Outcome, what: str, exc: Exception) -> None:
    _logger().warning("tracelet: %s is committed, but publishing its %s to Prefect failed: %s: %s",
                      outcome.logged.ref, what, type(exc).__name__, exc)


def _report_deliveries(outcome: Outcome) -> None:
    for name, result in outcome.deliveries.items():
        if not result.ok:
            _logger().warning("tracelet: %s was not delivered to %s (%s); `tracelet sync` retries it",
                              outcome.logged.ref, name, result.error)


def publish(outcome: Outcome, run: TaskRun) -> None:
    """Publish ``outcome`` to Prefect from a sync task."""
    if not (run.in_prefect and outcome.changed):
        return
    _report_deliveries(outcome)
    try:
        create_markdown_artifact(markdown=render_markdown(outcome), key=artifact_key(outcome.logged.name),
                                 description=f"tracelet {outcome.logged.ref}")
    except Exception as exc:  # noqa: BLE001 - reported, never fails a committed version
        _report(outcome, "markdown artifact", exc)
    try:
        _emit_events(outcome)
    except Exception as exc:  # noqa: BLE001 - reported, never fails a committed version
        _report(outcome, "events", exc)


async def apublish(outcome: Outcome, run: TaskRun) -> None:
    """Publish ``outcome`` to Prefect from an async task."""
    if not (run.in_prefect and outcome.changed):
        return
    _report_deliveries(outcome)
    try:
        await acreate_markdown_artifact(markdown=render_markdown(outcome), key=artifact_key(outcome.logged.name),
                                        description=f"tracelet {outcome.logged.ref}")
    except Exception as exc:  # noqa: BLE001 - reported, never fails a committed version
        _report(outcome, "markdown artifact", exc)
    try:
        _emit_events(outcome)
    except Exception as exc:  # noqa: BLE001 - reported, never fails a committed version
        _report(outcome, "events", exc)
