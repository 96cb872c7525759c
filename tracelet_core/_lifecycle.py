"""The second half of a version's life: delete (a tombstone), retention rules and prune.

``ArtifactStore`` gets ``delete``, ``prune``, ``set_retention``, ``retention`` and
``remove_retention`` from ``Lifecycle`` (a mixin) here; the SQL lives in ``_catalog.lifecycle``.

- **Delete** marks a version deleted in one catalog transaction: it leaves ``get``,
  ``versions`` and ``list``, ``latest`` moves to the newest remaining version, its number is
  never reused, and ``get`` of it raises ``ArtifactDeletedError`` saying when and why. Its
  row, entries and lineage edges stay (lineage shows the node with ``deleted: true``); its
  blobs go with the next ``gc(dry_run=False)`` once no remaining version uses them. A
  tombstone file beside the manifests (``@tombstones.json``) keeps the deletion through
  ``reindex``.
- **Protection**: an aliased version, and every version upstream (at any depth) of an aliased
  version, is refused with ``ProtectedVersionError`` unless ``force=True``, which also removes
  its aliases (through the alias journal and the alias-event outbox, as ``remove_alias``
  does, so trackers hear of it).
- **Prune** applies keep-last-N and/or older-than rules to one name, a ``prefix*`` pattern, or
  every name; never the latest version of a name nor a protected one (kept, with a reason).
  The selection and the deletion run in the same transaction, and a dry run runs the very
  same selection, so it reports exactly what a real run does at that moment.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, cast

from ._errors import ArtifactNotFoundError, InvalidArtifactError, TraceletError
from ._logged import LoggedArtifact
from ._model import RunInfo
from ._names import parse_ref, validate_alias, validate_name
from ._quarantine import Quarantine

if TYPE_CHECKING:
    from ._store import ArtifactStore

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
#: The reason a prune records on each version it deletes.
PRUNE_REASON = "pruned by retention rule"


@dataclass(frozen=True)
class AliasChange:
    """One recorded alias change: ``alias`` moved from ``before`` to ``after`` (refs; ``None``
    where it was not set, or was removed) at ``at`` (UTC), by the producing run ``by`` (a log
    with ``aliases=``; ``None`` for ``set_alias`` and ``remove_alias``), for ``reason``."""

    alias: str
    before: str | None
    after: str | None
    at: datetime
    by: RunInfo | None
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"alias": self.alias, "before": self.before, "after": self.after, "at": self.at.isoformat(),
                "by": self.by.to_dict() if self.by is not None else None, "reason": self.reason}


@dataclass
class PruneReport:
    """What ``prune`` deleted (or, on a dry run, would delete)."""

    dry_run: bool
    #: Refs deleted (``name:vN``), by name then newest first.
    deleted: list[str] = field(default_factory=list)
    #: ``{ref: reason}`` for every version the rule selected but that was kept.
    kept: dict[str, str] = field(default_factory=dict)
    #: Bytes of the blobs the deleted versions used that no remaining version uses (freed by
    #: the next ``gc(dry_run=False)``).
    bytes_freed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "deleted": self.deleted, "kept": self.kept,
                "bytes_freed": self.bytes_freed}


def parse_older_than(value: timedelta | str | float | None) -> float | None:
    """Seconds from a ``timedelta`` or a string such as ``"30d"``, ``"12h"``, ``"90m"``,
    ``"45s"``, ``"2w"`` (``None`` stays ``None``)."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise InvalidArtifactError(
                f"older_than {value!r} is not a duration: use a timedelta or a number with a unit, "
                "such as '30d', '12h', '90m', '45s' or '2w'")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise InvalidArtifactError(f"older_than must be a timedelta or a string such as '30d', not {value!r}")
    if seconds <= 0:
        raise InvalidArtifactError(f"older_than must be positive, not {value!r}")
    return seconds


def checked_reason(reason: str | None) -> str | None:
    """A reason (for a delete or an alias change) is a string or ``None``."""
    if reason is not None and not isinstance(reason, str):
        raise InvalidArtifactError(f"reason must be a string, not {type(reason).__name__}")
    return reason


def check_keep_last(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArtifactError(f"keep_last must be a whole number >= 1, not {value!r}")
    return value


def check_pattern(pattern: str) -> str:
    """A retention target: an artifact name, a name prefix ending in ``*`` (``team/*``), or
    ``*`` (every name)."""
    if not isinstance(pattern, str) or not pattern:
        raise InvalidArtifactError("a retention pattern must be a name, a prefix ending in '*', or '*'")
    if pattern.endswith("*"):
        if "*" in pattern[:-1]:
            raise InvalidArtifactError(f"pattern {pattern!r}: '*' may only end it")
        return pattern
    if "*" in pattern:
        raise InvalidArtifactError(f"pattern {pattern!r}: '*' may only end it")
    return validate_name(pattern)


def matches(pattern: str, name: str) -> bool:
    return name.startswith(pattern[:-1]) if pattern.endswith("*") else name == pattern


def policy_for(policies: dict[str, tuple[int | None, float | None]], name: str
               ) -> tuple[int | None, float | None] | None:
    """The stored policy that governs ``name``: an exact name first, else the longest
    matching pattern."""
    if name in policies:
        return policies[name]
    best = max((p for p in policies if p.endswith("*") and matches(p, name)), key=len, default=None)
    return policies[best] if best is not None else None


def format_seconds(seconds: float) -> str:
    """The shortest exact duration string (``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``)."""
    for unit in ("w", "d", "h", "m"):
        count = seconds / _UNITS[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{seconds:g}s"


Rule = Callable[[str], "tuple[int | None, float | None] | None"]


@contextmanager
def _tombstones_kept(store: ArtifactStore) -> Iterator[Callable[[str, list[dict[str, Any]]], None]]:
    """The tombstone writer to hand the catalog: it writes inside the transaction, just before
    the commit. If the transaction fails after it wrote, each file it touched is rewritten from
    what did commit (best effort: the original error is what the caller sees), so ``reindex``
    never deletes a version whose deletion did not commit."""
    written: list[str] = []

    def write(name: str, tombstones: list[dict[str, Any]]) -> None:
        written.append(name)
        store.blobs.write_tombstones(name, tombstones)

    try:
        yield write
    except BaseException:
        for name in dict.fromkeys(written):
            with suppress(TraceletError):
                store.blobs.write_tombstones(name, store.catalog.tombstones_of(name), replace=True)
        raise


def _store(mixin: Lifecycle) -> ArtifactStore:
    """The store a ``Lifecycle`` method runs on (``ArtifactStore`` is its only subclass)."""
    return cast("ArtifactStore", mixin)


class Lifecycle(Quarantine):
    """``ArtifactStore``'s delete, prune and retention methods (a mixin; quarantine, release and
    impact come from ``Quarantine``)."""

    def delete(self, ref: str, *, reason: str | None = None, force: bool = False) -> LoggedArtifact:
        """Delete the version ``ref`` names (a tombstone: see the module docstring); the record
        of the deleted version. ``ProtectedVersionError`` (nothing changed) when an alias points
        at it or it is upstream of an aliased version, unless ``force`` (which removes its
        aliases); ``ArtifactDeletedError`` when it is deleted already."""
        reason = checked_reason(reason)
        store, (name, selector) = _store(self), parse_ref(ref)
        with store._alias_journal_kept(name) as journal, _tombstones_kept(store) as tombstones:
            record, removed = store.catalog.delete_version(name, selector, reason=reason, force=bool(force),
                                                           journal=journal, tombstones=tombstones)
        if removed:
            store._sync_labels(name)
            store.delivery.after_alias_change(name)
        store.delivery.after_status_change()
        return LoggedArtifact(record, store)

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasChange]:
        """Every recorded change of ``name``'s aliases (of one ``alias``), oldest first:
        ``set_alias``, ``remove_alias``, ``log(aliases=...)`` and ``delete(force=True)``."""
        return [AliasChange(alias_name, before, after, datetime.fromtimestamp(at, tz=timezone.utc), by, why)
                for alias_name, before, after, at, by, why in _store(self).catalog.alias_history(
                    validate_name(name), validate_alias(alias) if alias is not None else None)]

    def _tombstones(self, name: str, skipped: list[str]) -> dict[tuple[int, str], dict[str, Any]]:
        """For ``reindex``: ``name``'s deleted versions by (number, version digest); an
        unreadable tombstone file is named in ``skipped``."""
        try:
            return {(int(t["version"]), t["digest"]): t for t in _store(self).blobs.read_tombstones(name)}
        except (ValueError, TypeError, KeyError) as exc:
            skipped.append(f"tombstones of {name}: {exc}")
            return {}

    def _including_deleted(self, ref: str) -> LoggedArtifact:
        """The version ``ref`` names even when it was deleted (alias events about a deleted
        version still reach the trackers that hold it)."""
        return LoggedArtifact(_store(self).catalog.get(*parse_ref(ref), include_deleted=True), _store(self))

    def prune(self, name: str | None = None, *, keep_last: int | None = None,
              older_than: timedelta | str | None = None, dry_run: bool = True) -> PruneReport:
        """Delete the versions of ``name`` (a name, a ``prefix*`` pattern, or every name) beyond
        the newest ``keep_last`` and/or older than ``older_than`` (both, when both are given);
        with no rule, every stored policy (``set_retention``) applies to the names it matches.
        Never the latest version of a name nor a protected one (``PruneReport.kept`` says why).
        ``dry_run`` (the default) changes nothing and reports what a real run would do."""
        keep = check_keep_last(keep_last)
        seconds = parse_older_than(older_than)
        target = check_pattern(name) if name is not None else "*"
        if not target.endswith("*") and target not in _store(self).catalog.names():
            raise ArtifactNotFoundError(f"no artifact named {target!r}")
        rule: Rule
        if keep is not None or seconds is not None:
            def rule(candidate: str) -> tuple[int | None, float | None] | None:
                return (keep, seconds) if matches(target, candidate) else None
        else:
            policies = _store(self).catalog.retention_policies()

            def rule(candidate: str) -> tuple[int | None, float | None] | None:
                return policy_for(policies, candidate) if matches(target, candidate) else None
        with _tombstones_kept(_store(self)) as tombstones:
            plan = _store(self).catalog.prune(rule, now=time.time(), dry_run=bool(dry_run), reason=PRUNE_REASON,
                                              tombstones=tombstones)
        if plan.deleted and not dry_run:
            _store(self).delivery.after_status_change()
        return PruneReport(dry_run=bool(dry_run), deleted=plan.deleted, kept=plan.kept,
                           bytes_freed=plan.bytes_freed)

    def set_retention(self, pattern: str, *, keep_last: int | None = None,
                      older_than: timedelta | str | None = None) -> None:
        """Store a retention policy for a name, a ``prefix*`` pattern or ``*`` (replacing the
        one it had); ``prune()`` with no rule arguments applies it."""
        keep = check_keep_last(keep_last)
        seconds = parse_older_than(older_than)
        if keep is None and seconds is None:
            raise InvalidArtifactError("a retention policy needs keep_last, older_than or both")
        _store(self).catalog.set_retention(check_pattern(pattern), keep, seconds)

    def retention(self) -> dict[str, dict[str, Any]]:
        """Stored policies: ``{pattern: {"keep_last": N or None, "older_than": "30d" or None}}``."""
        return {pattern: {"keep_last": keep, "older_than": None if seconds is None else format_seconds(seconds)}
                for pattern, (keep, seconds) in _store(self).catalog.retention_policies().items()}

    def remove_retention(self, pattern: str) -> None:
        """Remove the stored policy of ``pattern`` (``InvalidArtifactError`` if there is none)."""
        _store(self).catalog.remove_retention(check_pattern(pattern))
