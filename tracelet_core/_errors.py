"""tracelet's exception hierarchy.

Every error tracelet raises on purpose derives from ``TraceletError``; errors from fsspec,
SQLAlchemy, serializers or tracker SDKs are translated at the boundary with
``raise Mapped(msg) from exc`` so the cause stays chained::

    TraceletError
    ├── InvalidArtifactError (also ValueError)   bad names, paths, refs, entries, objects
    ├── ArtifactNotFoundError (also KeyError)    unknown name, version, alias or entry
    │   └── ArtifactDeletedError                 a version that was deleted (says when, why)
    ├── ProtectedVersionError                    a delete refused: aliased, or upstream of
    │                                            an aliased version
    ├── IntegrityError                           a blob or manifest does not match its digest
    ├── UnsafeDeserializationError               loading pickle without allow_pickle
    ├── BackendError                             a tracker refused or failed a delivery
    │   ├── TransientBackendError                the tracker did not answer (timeout,
    │   │                                        refused connection): retry later
    │   └── PermanentBackendError                the tracker answered and refused
    ├── ConfigurationError                       settings, URLs or backends that cannot work
    └── StorageError                             transient: the store or catalog kept failing
                                                 (lock contention, lost connection, full disk),
                                                 after retries; nothing was committed
"""

from __future__ import annotations

__all__ = [
    "ArtifactDeletedError",
    "ArtifactNotFoundError",
    "BackendError",
    "ConfigurationError",
    "IntegrityError",
    "InvalidArtifactError",
    "PermanentBackendError",
    "ProtectedVersionError",
    "StorageError",
    "TraceletError",
    "TransientBackendError",
    "UnsafeDeserializationError",
]


class TraceletError(Exception):
    """Base class of every error tracelet raises."""


class InvalidArtifactError(TraceletError, ValueError):
    """A name, path, ref, entry or object that tracelet refuses to store."""


class ArtifactNotFoundError(TraceletError, KeyError):
    """A name, version, alias or entry that does not exist."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class IntegrityError(TraceletError):
    """Stored bytes do not match their recorded digest, or a stored object is missing.

    ``problems`` lists every bad entry found, one line each.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = list(problems or [])


class UnsafeDeserializationError(TraceletError):
    """Loading this entry would run untrusted code (pickle) and it was not allowed."""


class BackendError(TraceletError):
    """A tracker backend failed; the cause is chained."""


# -- delivery errors: why a tracker failed (kept by a failed delivery's result and outbox row) --
class TransientBackendError(BackendError):
    """The tracker did not answer (a timeout, a refused or lost connection): retrying later
    (``tracelet sync``) may succeed."""


class PermanentBackendError(BackendError):
    """The tracker answered and refused (bad credentials, a rejected request): retrying the
    same delivery will not help until something is fixed."""


class ConfigurationError(TraceletError):
    """Settings, URLs or backend names that cannot work."""


class StorageError(TraceletError):
    """Transient: the store's filesystem or the catalog kept failing after retries (an object
    store's errors, a full disk, lock contention, a lost connection); the cause is chained and
    nothing was committed. Retrying later may succeed."""


# -- the catalog's private errors (not in ``__all__``) ----------------------------------------
class CatalogContentionError(StorageError):
    """Another transaction held a lock this one needed (deadlock, lock timeout, serialization
    failure, busy SQLite); the transaction was rolled back and is retried."""


class CatalogError(TraceletError):
    """The catalog database refused a statement for a reason that is neither transient nor a
    setup problem: a constraint or SQL error (a catalog changed outside tracelet, a damaged
    schema, or a tracelet bug). Retrying will not help and no setting fixes it, so it is
    neither a ``StorageError`` nor a ``ConfigurationError``; the driver's error is chained."""


class DraftChangedError(TraceletError):
    """An entry was added to a draft between ``finish`` reading it and sealing it."""


# -- lifecycle (delete, prune) -----------------------------------------------------------------
class ArtifactDeletedError(ArtifactNotFoundError):
    """The version was deleted (``ArtifactStore.delete`` or ``prune``); the message says when
    and why. Its number is never reused; its lineage node stays, marked deleted."""

    def __init__(self, message: str, ref: str = "", deleted_at: float | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message)
        self.ref, self.deleted_at, self.reason = ref, deleted_at, reason


class ProtectedVersionError(TraceletError):
    """A delete refused, nothing changed: an alias points at the version, or it is upstream (at
    any depth) of a version an alias points at. ``delete(force=True)`` deletes it anyway and
    removes its aliases. ``reasons`` says what protects it."""

    def __init__(self, message: str, reasons: list[str] | None = None) -> None:
        super().__init__(message)
        self.reasons: list[str] = list(reasons or [])


# -- life --
class QuarantinedError(TraceletError):
    """A read (``load``, ``download``, ``path``) of a quarantined version, refused: the message
    names the version, the reason and the quarantined source. ``allow_quarantined=True``
    reads it anyway; ``ArtifactStore.release`` lifts the mark."""

    def __init__(self, message: str, ref: str = "", reason: str | None = None, source: str | None = None) -> None:
        super().__init__(message)
        self.ref, self.reason, self.source = ref, reason, source


# -- repro --
class NotReproducibleError(TraceletError):
    """A version cannot be run again: it has no producer, or one no adapter can rerun (an
    ``Experiment``, another orchestrator), the definitions or flow given lack its producer, or its
    record lacks what a rerun needs (the flow parameters). The message says what was recorded
    instead (the git commit and the inputs) so the run can be repeated by hand."""
