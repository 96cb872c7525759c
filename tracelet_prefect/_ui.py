"""What a logged version looks like from Prefect: a markdown artifact and events.

For every new version (and every alias set on one) a tracelet task publishes:

- a markdown artifact keyed by the artifact name (``team/model`` -> ``team-model``: Prefect keys
  are lowercase letters, digits and dashes), so the UI's Artifacts page shows the history of
  the name: ref, type, digest, size, aliases, producer, where it was delivered, and its lineage
  as table rows Prefect's markdown renders: the producing task run and flow run, and one row per
  input version, each a link to that page in the UI;
- the event ``tracelet.artifact.logged`` on the resource ``tracelet.artifact.<name>``, with the
  version, digest, type, whether this run created the version (``tracelet.created``) and the
  aliases (``tracelet.alias.<alias>: "true"``) as resource labels, and all of it in the payload,
  so a ``DeploymentEventTrigger`` can react to a new version or to an alias move;
- for a new version, Prefect's own asset events (``prefect.asset.materialization.succeeded``
  on ``tracelet://<name>``, ``prefect.asset.referenced`` for each input), so Prefect's asset
  lineage links the same versions up.

None of it is on the task's path: events go through Prefect's events worker, and markdown
artifacts are handed to one publisher per process, which creates them in batches with Prefect's
async client from a background thread (``drain`` waits for it; the end of the flow run waits for
it, ``_flow_end``, and so does the process's exit). A version whose tracker deliveries are queued
on the background worker is published by that worker once they are done, so the markdown and
the events say how each delivery went. Publishing never fails the task: the version is committed
already. A failure is reported as a warning on the task run's log.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.context import SettingsContext
from prefect.events import emit_event
from prefect.logging import get_logger
from prefect.settings import PREFECT_UI_URL

from tracelet_core import _background as background
from tracelet_core._quarantine import quarantine_summary
from tracelet_core._reproduce import git_summary

from ._commit import Outcome
from ._runs import TaskRun

#: Markdown artifacts one request batch creates at most.
BATCH_SIZE = 50
#: Requests in flight at once.
CONCURRENT_REQUESTS = 4
#: How long an exiting process waits for the markdown artifacts it has not sent yet.
EXIT_DRAIN_SECONDS = 10.0

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


def _ui_link(path: str) -> str:
    base = PREFECT_UI_URL.value()
    return f"{base.rstrip('/')}{path}" if base else path


def _lineage_rows(outcome: Outcome, run: TaskRun) -> Iterator[str]:
    """Lineage as table rows: who made the version, and each input version it was made from."""
    producer = outcome.logged.producer
    if producer is not None and producer.orchestrator == "prefect":
        task = producer.extra.get("task_name") or producer.name or "task run"
        task_link = f"[{task}]({_ui_link(f'/runs/task-run/{producer.step}')})"
        flow = f"flow run of {producer.name}" if producer.extra.get("parameters") is not None else "flow run"
        flow_link = f"[{flow}]({_ui_link(f'/runs/flow-run/{producer.run_id}')})"
        yield f"| produced by | task run {task_link} in {flow_link} |"
    elif producer is not None:
        yield f"| produced by | {producer.orchestrator}: {producer.name or producer.run_id} / `{producer.step}` |"
    if not outcome.created and run.task_run_id is not None and (producer is None or producer.step != run.task_run_id):
        task_link = f"[{run.task_name}]({_ui_link(f'/runs/task-run/{run.task_run_id}')})"
        yield f"| aliases moved by | task run {task_link} |"
    for ref in outcome.logged.inputs:
        name = ref.rsplit(":", 1)[0]
        yield f"| input | `{ref}`: [{name} history]({_ui_link(f'/artifacts/key/{artifact_key(name)}')}) |"
    if not outcome.logged.inputs:
        yield "| input | - (no recorded inputs) |"


def render_markdown(outcome: Outcome, run: TaskRun) -> str:
    logged = outcome.logged
    aliases_set = ", ".join(outcome.aliases_set)
    what = "new version" if outcome.created else f"alias {aliases_set} set on an existing version"
    deliveries = ", ".join(f"{name} {'ok' if r.ok else 'FAILED: ' + (r.error or '')}"
                           for name, r in outcome.deliveries.items()) or "-"
    rows = [
        ("ref", f"`{logged.ref}`"),
        ("type", logged.type.value),
        ("digest", f"`{logged.digest}`"),
        ("size", _size(logged.size_bytes)),
        ("aliases", ", ".join(logged.aliases) or "-"),
        ("inputs", ", ".join(f"`{ref}`" for ref in logged.inputs) or "-"),
        ("backends", deliveries),
    ]
    extra = logged.producer.extra if logged.producer is not None else {}
    code = git_summary(extra)
    if code is not None:
        rows.append(("code", code))
    if extra.get("python"):
        rows.append(("python", str(extra["python"])))
    quarantined = quarantine_summary(logged)
    if quarantined is not None:
        rows.insert(0, ("**QUARANTINED**", quarantined))
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    lineage = "\n".join(_lineage_rows(outcome, run))
    return (f"### {logged.ref}\n\n{what}\n\n| | |\n|---|---|\n{table}\n\n"
            f"#### Lineage\n\n| | |\n|---|---|\n{lineage}\n")


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


def run_resources(run: TaskRun) -> list[dict[str, str]]:
    """The task run and flow run as related resources, for events sent outside the task run
    (a transaction's commit or rollback), where Prefect cannot add them from the context."""
    related = [{"prefect.resource.id": f"prefect.task-run.{run.task_run_id}", "prefect.resource.role": "task-run",
                "prefect.resource.name": run.task_run_name or run.task_name}]
    if run.flow_run_id:
        related.append({"prefect.resource.id": f"prefect.flow-run.{run.flow_run_id}",
                        "prefect.resource.role": "flow-run"})
    return related


def _emit_events(outcome: Outcome, run: TaskRun, outside_run: bool) -> None:
    logged = outcome.logged
    upstream = [ref.rsplit(":", 1)[0] for ref in logged.inputs]
    runs = run_resources(run) if outside_run else []
    emit_event(
        event=EVENT_LOGGED,
        resource=_resource(outcome),
        related=[*({"prefect.resource.id": resource_id(name), "prefect.resource.role": "tracelet-input",
                    "tracelet.ref": ref} for name, ref in zip(upstream, logged.inputs, strict=True)), *runs],
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
                 {"prefect.resource.id": MATERIALIZED_BY, "prefect.resource.role": "asset-materialized-by"},
                 *runs],
        payload={"tracelet.ref": logged.ref, "tracelet.version": logged.version,
                 "tracelet.digest": logged.digest},
    )


def run_logger(run: TaskRun) -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose records land on the task run's log in Prefect (from any thread)."""
    extra = {"task_run_id": run.task_run_id, "flow_run_id": run.flow_run_id,
             "task_run_name": run.task_run_name, "task_name": run.task_name}
    return logging.LoggerAdapter(get_logger("task_runs"), extra)


def _report(outcome: Outcome, run: TaskRun, what: str, exc: BaseException) -> None:
    run_logger(run).warning("tracelet: %s is committed, but publishing its %s to Prefect failed: %s: %s",
                            outcome.logged.ref, what, type(exc).__name__, exc)


def _report_deliveries(outcome: Outcome, run: TaskRun, queued: tuple[str, ...] = ()) -> None:
    """Failed deliveries as warnings on the task run's log; those that ran after the task
    returned (``queued``) also when they succeeded, since its markdown came later."""
    for name, result in outcome.deliveries.items():
        if not result.ok:
            run_logger(run).warning("tracelet: %s was not delivered to %s (%s); `tracelet sync` retries it",
                                    outcome.logged.ref, name, result.error)
        elif name in queued:
            run_logger(run).info("tracelet: %s delivered to %s (after the task returned)", outcome.logged.ref, name)


# -- the background publisher -----------------------------------------------------------------
@dataclass(frozen=True)
class _Markdown:
    outcome: Outcome
    run: TaskRun
    #: Prefect's settings where the task ran (which API to talk to)
    settings: SettingsContext | None

    def create(self) -> ArtifactCreate:
        logged = self.outcome.logged
        return ArtifactCreate(
            key=artifact_key(logged.name), type="markdown", description=f"tracelet {logged.ref}",
            data=render_markdown(self.outcome, self.run),
            task_run_id=UUID(self.run.task_run_id) if self.run.task_run_id else None,
            flow_run_id=UUID(self.run.flow_run_id) if self.run.flow_run_id else None,
        )


async def _create_artifacts(items: list[_Markdown]) -> list[BaseException | None]:
    """Create the markdown artifacts of ``items`` (one Prefect API) on one client: one key's in
    the order they were submitted (its history in the UI), a few keys at a time (a server on
    SQLite serializes writes anyway); the error of each item, or ``None``."""
    limit = asyncio.Semaphore(CONCURRENT_REQUESTS)
    errors: list[BaseException | None] = [None] * len(items)
    by_key: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        by_key.setdefault(artifact_key(item.outcome.logged.name), []).append(index)

    async with get_client() as client:
        async def create_in_order(indices: list[int]) -> None:
            async with limit:
                for index in indices:
                    try:
                        await client.create_artifact(items[index].create())
                    except Exception as exc:  # noqa: BLE001 - reported by the caller
                        errors[index] = exc

        await asyncio.gather(*(create_in_order(indices) for indices in by_key.values()))
    return errors


class Publisher:
    """Markdown artifacts handed off by tasks, created in batches by one background thread."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._pending: list[_Markdown] = []
        self._busy: list[_Markdown] = []
        #: flow runs this publisher has created artifacts for since their last ``finish_run``
        self._runs: set[str] = set()
        self._thread: threading.Thread | None = None

    def submit(self, item: _Markdown) -> None:
        with self._changed:
            self._pending.append(item)
            if item.run.flow_run_id:
                self._runs.add(item.run.flow_run_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tracelet-prefect-publisher", daemon=True)
                self._thread.start()
                # Registered now, after Prefect's own services started (they emit the first
                # task-run events), so it runs before they drain: the artifact events that
                # creating an artifact emits still go out.
                atexit.register(self.drain, EXIT_DRAIN_SECONDS)
            self._changed.notify_all()

    def drain(self, timeout: float | None = 30.0, flow_run_id: str | None = None) -> bool:
        """Wait until every artifact submitted so far (of one flow run) is created (or failed);
        False on timeout."""
        def done() -> bool:
            waiting = [*self._pending, *self._busy]
            return not any(flow_run_id is None or item.run.flow_run_id == flow_run_id for item in waiting)

        with self._changed:
            return self._changed.wait_for(done, timeout)

    def finish_run(self, flow_run_id: str, timeout: float | None) -> bool | None:
        """At the end of a flow run: ``None`` if it published nothing here since the last
        call, else whether its artifacts were all created within ``timeout``."""
        with self._changed:
            if flow_run_id not in self._runs:
                return None
            self._runs.discard(flow_run_id)
        return self.drain(timeout, flow_run_id)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            while True:
                with self._changed:
                    self._changed.wait_for(lambda: bool(self._pending))
                    batch, self._pending = self._pending[:BATCH_SIZE], self._pending[BATCH_SIZE:]
                    self._busy = batch
                try:
                    loop.run_until_complete(self._send(batch))
                finally:
                    with self._changed:
                        self._busy = []
                        self._changed.notify_all()
        finally:  # pragma: no cover - a daemon thread ends with the process
            loop.close()

    @staticmethod
    async def _send(batch: list[_Markdown]) -> None:
        groups: dict[int, list[_Markdown]] = {}
        for item in batch:
            groups.setdefault(id(item.settings), []).append(item)
        for items in groups.values():
            settings = items[0].settings
            try:
                if settings is None:
                    errors = await _create_artifacts(items)
                else:
                    with SettingsContext(profile=settings.profile, settings=settings.settings):
                        errors = await _create_artifacts(items)
            except Exception as exc:  # noqa: BLE001 - reported, never fails a committed version
                errors = [exc] * len(items)
            for item, error in zip(items, errors, strict=True):
                if error is not None:
                    _report(item.outcome, item.run, "markdown artifact", error)


_publishers: dict[int, Publisher] = {}
_publishers_lock = threading.Lock()


def publisher() -> Publisher:
    """This process's publisher (a forked child gets its own)."""
    pid = os.getpid()
    found = _publishers.get(pid)
    if found is None:
        with _publishers_lock:
            found = _publishers.setdefault(pid, Publisher())
    return found


def drain(timeout: float | None = 30.0) -> bool:
    """Wait for this process's pending markdown artifacts (run when the process exits)."""
    found = _publishers.get(os.getpid())
    return True if found is None else found.drain(timeout)


def finish_run(flow_run_id: str, timeout: float | None) -> bool | None:
    """Wait for the flow run's markdown artifacts in this process (``Publisher.finish_run``)."""
    found = _publishers.get(os.getpid())
    return None if found is None else found.finish_run(flow_run_id, timeout)


def publish(outcome: Outcome, run: TaskRun, *, outside_run: bool = False) -> None:
    """Hand ``outcome`` to Prefect: events now (Prefect's events worker sends them), the
    markdown artifact to the background publisher. ``outside_run``: called after the task run
    (a transaction commit), so the run's resources are named explicitly. An outcome whose
    deliveries are queued is published by the background worker once they are done (part of
    the flow run, flushed before it ends), with their results."""
    if not (run.in_prefect and outcome.changed):
        return
    if outcome.delivered is not None:
        background.submit(run.flow_run_id or str(run.task_run_id),
                          functools.partial(_publish_now, outcome, run, outside_run))
        return
    _publish_now(outcome, run, outside_run)


def _publish_now(outcome: Outcome, run: TaskRun, outside_run: bool) -> None:
    queued = outcome.queued
    outcome = outcome.settled()
    _report_deliveries(outcome, run, queued)
    publisher().submit(_Markdown(outcome, run, SettingsContext.get()))
    try:
        _emit_events(outcome, run, outside_run)
    except Exception as exc:  # noqa: BLE001 - reported, never fails a committed version
        _report(outcome, run, "events", exc)
