"""Tracelet tasks inside ``prefect.transactions.transaction()``.

A version is committed when its task returns, in or out of a transaction (versions are
immutable; one that is never used costs its bytes until ``gc``). What a transaction holds back
is what other runs react to: the aliases a tracelet task (or ``log_artifact``) moves and the
events and markdown artifact that announce the version. They are staged on the nearest
enclosing transaction and

- on commit: the aliases move (each remembering the version it pointed at before), then the
  events and markdown artifact go out as outside a transaction;
- on rollback: every alias moved at commit that still points at this version is put back on its
  previous version (or removed if it had none), and ``tracelet.artifact.rolled_back`` is
  emitted on the resource ``tracelet.artifact.<name>``.

Prefect's own rules decide when that is: a nested transaction hands its hooks to its parent, so
the outermost commit moves the aliases; with ``commit_mode=EAGER`` a transaction commits when
its block ends and a later rollback of its parent no longer reaches it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from prefect.events import emit_event
from prefect.transactions import BaseTransaction, get_transaction

from tracelet_core import ArtifactNotFoundError, ArtifactStore

from ._commit import Outcome
from ._runs import TaskRun
from ._ui import publish, resource_id, run_logger, run_resources

EVENT_ROLLED_BACK = "tracelet.artifact.rolled_back"


def enclosing_transaction(run: TaskRun) -> BaseTransaction | None:
    """The user's transaction around this task run, if any (not the task run's own one)."""
    if not run.in_prefect:
        return None
    own = get_transaction()
    return None if own is None else own.get_parent()


def _alias_target(store: ArtifactStore, name: str, alias: str) -> str | None:
    try:
        return store.get(f"{name}:{alias}").ref
    except ArtifactNotFoundError:
        return None


class StagedRelease:
    """One outcome's alias moves and announcements, waiting for a transaction's verdict."""

    def __init__(self, store: ArtifactStore, outcome: Outcome, run: TaskRun) -> None:
        self.store = store
        self.outcome = outcome
        self.run = run
        #: alias -> the ref it pointed at before the commit moved it (None: it did not exist)
        self.previous: dict[str, str | None] = {}

    def attach(self, transaction: BaseTransaction) -> None:
        transaction.on_commit_hooks.append(self.tracelet_commit)
        transaction.on_rollback_hooks.append(self.tracelet_rollback)

    def tracelet_commit(self, _transaction: Any) -> None:
        logged = self.outcome.logged
        for alias in self.outcome.staged_aliases:
            self.previous[alias] = _alias_target(self.store, logged.name, alias)
            logged = self.store.set_alias(logged.ref, alias)
        committed = dataclasses.replace(self.outcome, logged=logged, aliases_set=self.outcome.staged_aliases,
                                        staged_aliases=())
        publish(committed, self.run, outside_run=True)

    def tracelet_rollback(self, _transaction: Any) -> None:
        logged = self.outcome.logged
        restored: dict[str, str | None] = {}
        for alias, before in self.previous.items():
            if _alias_target(self.store, logged.name, alias) != logged.ref:
                continue  # moved on by someone else since: not ours to put back
            if before is None:
                self.store.remove_alias(logged.name, alias)
            else:
                self.store.set_alias(before, alias)
            restored[alias] = before
        self.previous = {}
        try:
            emit_event(
                event=EVENT_ROLLED_BACK,
                resource={"prefect.resource.id": resource_id(logged.name), "prefect.resource.name": logged.name,
                          "tracelet.ref": logged.ref, "tracelet.version": logged.version},
                related=run_resources(self.run),
                payload={"ref": logged.ref, "name": logged.name, "version": logged.version,
                         "created": self.outcome.created, "aliases_staged": list(self.outcome.staged_aliases),
                         "aliases_restored": restored},
            )
        except Exception as exc:  # noqa: BLE001 - the aliases are back; the event is a report
            run_logger(self.run).warning("tracelet: %s was rolled back, but its event could not be sent: %s: %s",
                                         logged.ref, type(exc).__name__, exc)


def release(store: ArtifactStore, outcome: Outcome, run: TaskRun, transaction: BaseTransaction | None) -> None:
    """Publish ``outcome`` now, or stage it on ``transaction``."""
    if transaction is None:
        publish(outcome, run)
    elif outcome.created or outcome.staged_aliases:
        StagedRelease(store, outcome, run).attach(transaction)
