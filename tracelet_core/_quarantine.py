"""Quarantine, release and impact: marking a bad version (and what was built from it) so it
is never loaded again by accident, and answering "what was built from this?".

``ArtifactStore`` gets ``quarantine``, ``release`` and ``impact`` from ``Quarantine`` (a mixin
of ``Lifecycle``); the SQL lives in ``_catalog.quarantine``. A quarantined version stays
listed and gettable; ``LoggedArtifact.quarantine`` says why, and ``load``, ``download`` and
``path`` raise ``QuarantinedError`` unless ``allow_quarantined=True``. Aliases are not moved:
an alias on a quarantined version keeps pointing at it, so a consumer reading through it fails
loudly instead of silently getting another version. The marks are also written beside each
name's manifests (``@quarantine.json``) so ``reindex`` keeps them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, cast

from ._errors import InvalidArtifactError, QuarantinedError, TraceletError
from ._model import RunInfo
from ._names import parse_ref

if TYPE_CHECKING:
    from ._catalog import ImpactRows
    from ._logged import LoggedArtifact
    from ._store import ArtifactStore


@dataclass
class ImpactReport:
    """What was built from a version: ``versions`` (refs, at any depth, the version itself
    excluded), ``aliases`` (``{"name:alias": ref}`` on it or on any of them) and ``runs``
    (every producer that read it or any of them)."""

    ref: str
    versions: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    runs: list[RunInfo] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "versions": self.versions, "aliases": self.aliases,
                "runs": [run.to_dict() for run in self.runs]}


def _report(ref: str, rows: ImpactRows) -> ImpactReport:
    return ImpactReport(ref=ref, versions=list(rows.versions), aliases=dict(rows.aliases), runs=list(rows.runs))


def quarantine_mark(artifact: LoggedArtifact) -> dict[str, Any] | None:
    """``LoggedArtifact.quarantine``: ``None`` or ``{"reason", "at" (ISO time), "source"}``."""
    mark = artifact.store.catalog.quarantine_of(artifact._record.id)
    if mark is None:
        return None
    return {"reason": mark["reason"], "at": datetime.fromtimestamp(mark["at"], tz=timezone.utc).isoformat(),
            "source": mark["source"]}


def quarantine_summary(artifact: LoggedArtifact) -> str | None:
    """``since <at>[, built from <source>]: <reason>`` for a quarantined version (what the CLI,
    the Dagster metadata and the Prefect UI show), else ``None``."""
    mark = quarantine_mark(artifact)
    if mark is None:
        return None
    via = "" if mark["source"] == artifact.ref else f", built from {mark['source']}"
    return f"since {mark['at']}{via}: {mark['reason']}"


def refuse_quarantined(artifact: LoggedArtifact, allow_quarantined: bool) -> None:
    """Raise ``QuarantinedError`` for a read of a quarantined version not explicitly allowed."""
    if allow_quarantined:
        return
    mark = quarantine_mark(artifact)
    if mark is not None:
        via = "" if mark["source"] == artifact.ref else f" (built from {mark['source']}, quarantined)"
        raise QuarantinedError(
            f"{artifact.ref} is quarantined{via}: {mark['reason']} (since {mark['at']}); pass "
            "allow_quarantined=True to read it anyway, or release it", artifact.ref, mark["reason"], mark["source"])


@contextmanager
def _marks_kept(store: ArtifactStore) -> Iterator[Callable[[str, list[dict[str, Any]]], None]]:
    """The mark-file writer to hand the catalog: it writes inside the transaction, just before
    the commit; if the transaction then fails, each file it touched is rewritten from what did
    commit (best effort: the original error is what the caller sees)."""
    written: list[str] = []

    def write(name: str, marks: list[dict[str, Any]]) -> None:
        written.append(name)
        store.blobs.write_quarantine_marks(name, marks)

    try:
        yield write
    except BaseException:
        for name in dict.fromkeys(written):
            with suppress(TraceletError):
                store.blobs.write_quarantine_marks(name, store.catalog.marks_of(name))
        raise


def _store(mixin: Quarantine) -> ArtifactStore:
    return cast("ArtifactStore", mixin)


class Quarantine:
    """``ArtifactStore``'s quarantine, release and impact methods (a mixin)."""

    def impact(self, ref: str) -> ImpactReport:
        """Every version built from ``ref`` at any depth, the aliases on it or on any of them,
        and the runs that read any of them (one recursive catalog query)."""
        label, rows = _store(self).catalog.impact(*parse_ref(ref))
        return _report(label, rows)

    def quarantine(self, ref: str, reason: str, *, downstream: bool = True) -> ImpactReport:
        """Mark the version ``ref`` names quarantined (and, with ``downstream``, every version
        built from it at any depth), in one catalog transaction; its impact (what it found
        downstream, marked or not). Trackers holding a marked version have it tagged
        ``tracelet.status=quarantined`` (through the outbox)."""
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidArtifactError("quarantine needs a reason (a non-empty string)")
        store = _store(self)
        with _marks_kept(store) as marks:
            label, rows = store.catalog.quarantine(*parse_ref(ref), reason, downstream=bool(downstream), marks=marks)
        store.delivery.after_status_change()
        return _report(label, rows)

    def release(self, ref: str) -> list[str]:
        """Lift the quarantine of ``ref`` and the marks its quarantine put on what was built
        from it; the refs no longer quarantined."""
        store = _store(self)
        with _marks_kept(store) as marks:
            _label, lifted = store.catalog.release(*parse_ref(ref), marks=marks)
        store.delivery.after_status_change()
        return lifted

    def _restore_quarantine(self, name: str, skipped: list[str]) -> None:
        """For ``reindex``: bring back ``name``'s quarantine marks from its mark file."""
        store = _store(self)
        try:
            marks = store.blobs.read_quarantine_marks(name)
        except (ValueError, TypeError) as exc:
            skipped.append(f"quarantine marks of {name}: {exc}")
            return
        if marks:
            skipped.extend(store.catalog.restore_marks(name, marks))
