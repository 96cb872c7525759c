"""``ArtifactStore``: log, find, alias, trace, verify and collect garbage.

A log commits in a fixed order, so a crash at any point leaves either a whole version or
none: (1) every file is hashed and its blob written (create-if-absent, atomic); (2) under the
catalog's write lock the next version number is allocated and the manifest written; (3) the
catalog row, entries, lineage edges and aliases are inserted in the same transaction and
committed. Blobs without a committed version are orphans that ``gc`` removes after a grace
period; a lost catalog is rebuilt from the manifests by ``reindex``.
"""

from __future__ import annotations

import builtins
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _maintenance
from ._artifact import TraceletArtifact, coerce_type, validate_tag
from ._blobstore import BlobStore, open_blob_store
from ._catalog import (
    AliasJournal,
    AliasTarget,
    Catalog,
    CommitHooks,
    DeliverySpec,
    DraftRecord,
    PreparedManifest,
    VersionRecord,
    VersionRequest,
    entries_digest,
    entry_order,
    entry_row,
)
from ._delivery import Delivery
from ._diff import VersionDiff, diff_versions
from ._errors import (
    ArtifactNotFoundError,
    ConfigurationError,
    DraftChangedError,
    IntegrityError,
    InvalidArtifactError,
    StorageError,
    TraceletError,
)
from ._lifecycle import Lifecycle, checked_reason
from ._lineage import LineageGraph
from ._lineage_walk import trace_lineage
from ._logged import LoggedArtifact, entry_to_dict
from ._maintenance import DEFAULT_GC_GRACE_SECONDS, GcReport, ReindexReport
from ._model import ArtifactFile, ArtifactObject, RunInfo
from ._names import parse_ref, validate_alias, validate_name
from ._provenance import with_provenance
from ._settings import TraceletSettings
from ._storecache import MAX_SHARED_STORES, StoreCache
from ._uris import redact_uri

if TYPE_CHECKING:
    from ._catalog import AliasEventRecord, DeliveryRecord
    from ._trackers import ArtifactResult

MANIFEST_FORMAT = 1
PROGRESS_MIN_BYTES = 8 * 1024 * 1024

InputRef = str | LoggedArtifact
#: Blobs a log found already stored: digest -> (its source, if any; size; artifact path).
ReusedBlobs = dict[str, tuple[Path | None, int, str]]


class ContentScopedKey(str):
    """An idempotency key that holds for one content only: ``ArtifactStore.log`` appends the
    version's digest to it, so a retry that logs the same entries finds the version it logged
    and one that logs other entries makes a new one (nothing outside the store hashes them)."""


def content_scoped_key(key: str) -> ContentScopedKey:
    """``key`` marked to be scoped to the content it is logged with (see ``ContentScopedKey``)."""
    return ContentScopedKey(key)


#: The process's open stores, for ``ArtifactStore.shared`` (and through it, the adapters).
_shared: StoreCache[ArtifactStore] = StoreCache(MAX_SHARED_STORES)


class ArtifactStore(Lifecycle):
    """Versioned, content-addressed artifacts on fsspec with a SQL catalog (lifecycle: ``_lifecycle``)."""

    def __init__(self, blobs: BlobStore, catalog: Catalog, settings: TraceletSettings,
                 cache_dir: Path) -> None:
        self.blobs = blobs
        self.catalog = catalog
        self.settings = settings
        self.cache_dir = cache_dir
        self.show_progress = False
        #: Delivery to trackers (the outbox): called after each commit and alias change.
        self.delivery = Delivery(self)

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        uri: str | os.PathLike[str] | None = None,
        catalog_url: str | None = None,
        *,
        settings: TraceletSettings | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> ArtifactStore:
        """Open (creating if needed) the store at ``uri`` (default ``TRACELET_STORE_URI``)."""
        settings = settings or TraceletSettings.load()
        store_uri = str(uri) if uri is not None else settings.resolved_store_uri()
        if not store_uri.strip():
            raise ConfigurationError("the store URI is empty; pass a folder or fsspec URL")
        options = storage_options if storage_options is not None else (settings.storage_options or {})
        catalog_url = catalog_url or settings.catalog_url
        durable = settings.durability != "none"
        blobs = open_blob_store(store_uri, options, durable=durable, cache_dir=settings.cache_dir,
                                cache_max_bytes=settings.cache_max_bytes)
        catalog_url = catalog_url or blobs.default_catalog_url
        if not catalog_url:
            raise ConfigurationError(
                f"store {redact_uri(store_uri)!r} is remote: set TRACELET_CATALOG_URL (or catalog_url=) to a "
                "SQLAlchemy URL, e.g. postgresql://user@host/db"
            )
        return cls(blobs, Catalog(catalog_url, durable=durable), settings, blobs.cache_dir)

    @classmethod
    def shared(cls, uri: str | None = None, catalog_url: str | None = None) -> ArtifactStore:
        """The store at ``uri`` opened once per process and kept (``_storecache``: keyed by the
        URI, the catalog URL and the ``TRACELET_*`` settings, bounded, lock protected): what
        adapters and unpickled versions use in worker processes."""
        return _shared.get(uri, catalog_url, lambda settings: cls.open(uri, catalog_url, settings=settings))

    @classmethod
    def restore_version(cls, uri: str, catalog_url: str | None, record: VersionRecord) -> LoggedArtifact:
        """A version unpickled in this process (``LoggedArtifact.__reduce__``), on the shared store."""
        return LoggedArtifact(record, cls.shared(uri, catalog_url))

    def reopen_args(self) -> tuple[str, str | None]:
        """``(uri, catalog_url)`` that reopen this store in another process; the catalog URL
        is ``None`` where that process should read its own settings (the settings' own URL,
        the default SQLite file of a local store, or any URL holding a password)."""
        url = self.catalog.url_for_other_processes
        if url is None or url == self.settings.catalog_url:
            return self.uri, None
        if url == self.blobs.default_catalog_url:
            return self.uri, None
        return self.uri, url

    @property
    def uri(self) -> str:
        return self.blobs.uri

    def close(self) -> None:
        self.catalog.dispose()
        if self.blobs.stat_cache is not None:
            self.blobs.stat_cache.close()

    def __enter__(self) -> ArtifactStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ArtifactStore(uri={self.uri!r}, catalog={self.catalog.engine.url!r})"

    # -- progress ---------------------------------------------------------------------------
    @contextmanager
    def progress(self, label: str, total: int) -> Iterator[Callable[[int], None]]:
        """A byte-counting callback; shows a rich progress bar (on stderr) for large CLI
        transfers."""
        if not self.show_progress or total < PROGRESS_MIN_BYTES:
            yield lambda _n: None
            return
        from rich.console import Console  # Deferred for import perf
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), transient=True, console=Console(stderr=True)) as bar:
            task = bar.add_task(label, total=total)
            yield lambda n: bar.advance(task, n)

    # -- logging ----------------------------------------------------------------------------
    def _stage_blobs(self, artifact: TraceletArtifact, rehash: bool = False
                     ) -> tuple[list[dict[str, Any]], ReusedBlobs]:
        """Hash and store every file and object; the manifest entries, sorted by path, and
        the blobs that were already stored (``gc`` might collect those before the commit:
        ``_blob_check`` looks again under the catalog's lock). Files the stat cache knows
        unchanged are not read again unless ``rehash``."""
        staged = artifact.staged_entries
        total = sum(s.entry.size for s in staged)
        rows: list[dict[str, Any]] = []
        reused: ReusedBlobs = {}
        with self.progress(f"log {artifact.name}", total) as advance:
            for item in staged:
                entry = item.entry
                if item.source is None:
                    assert entry.digest is not None
                    if not self.blobs.has_blob(entry.digest):
                        raise IntegrityError(f"blob of {entry.path!r} ({entry.digest}) is missing from the store",
                                             [f"{entry.path}: missing"])
                    advance(entry.size)
                    rows.append(entry_to_dict(entry))
                    reused[entry.digest] = (None, entry.size, entry.path)
                    continue
                try:
                    digest, size, written = self.blobs.ingest(item.source, advance, rehash=rehash,
                                                     cached=isinstance(entry, ArtifactFile))
                except FileNotFoundError as exc:
                    raise InvalidArtifactError(f"{item.source} disappeared before it was logged") from exc
                except IsADirectoryError as exc:
                    raise InvalidArtifactError(f"{item.source} is now a directory") from exc
                if not written:
                    reused[digest] = (item.source, size, entry.path)
                if isinstance(entry, ArtifactFile):
                    stored: ArtifactFile | ArtifactObject = ArtifactFile(
                        path=entry.path, size=size, digest=digest, description=entry.description)
                else:
                    stored = ArtifactObject(
                        name=entry.name, path=entry.path, serializer=entry.serializer, size=size,
                        digest=digest, python_type=entry.python_type,
                        description=entry.description, extra=entry.extra)
                rows.append(entry_to_dict(stored))
        self.blobs.finish_ingest()
        rows.extend(entry_to_dict(ref) for ref in artifact.references)
        return sorted(rows, key=entry_order), reused

    def _blob_check(self, reused: ReusedBlobs, keep_manifest: Callable[[], None] | None = None
                    ) -> Callable[[], None]:
        """What the catalog runs under its lock (which ``gc`` deletes under) before it records
        entries: a re-used blob that ``gc`` collected meanwhile is stored again from its
        source, or the log fails with nothing committed; ``keep_manifest`` puts back a
        manifest written before the lock that ``gc`` removed meanwhile."""
        def check() -> None:
            if keep_manifest is not None:
                keep_manifest()
            for digest, (source, size, path) in reused.items():
                if self.blobs.has_blob(digest):
                    continue
                if source is None:
                    raise IntegrityError(f"blob of {path!r} ({digest}) is missing from the store",
                                         [f"{path}: missing"])
                self.blobs.put_file(source, digest, size)
        return check

    @staticmethod
    def _input_refs(inputs: Iterable[InputRef]) -> list[tuple[str, str]]:
        refs: list[tuple[str, str]] = []
        for item in inputs:
            ref = item.ref if isinstance(item, LoggedArtifact) else item
            parsed = parse_ref(ref)
            if parsed not in refs:
                refs.append(parsed)
        return refs

    @staticmethod
    def _checked_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
        try:
            return json.loads(json.dumps(metadata, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise InvalidArtifactError(f"artifact metadata must be JSON-serializable: {exc}") from exc

    def log(
        self,
        artifact: TraceletArtifact,
        *,
        producer: RunInfo | None = None,
        inputs: Iterable[InputRef] = (),
        aliases: Iterable[str] = (),
        idempotency_key: str | None = None,
        deliveries: Sequence[DeliverySpec] = (),
        partition: str | None = None,
        rehash: bool = False,
    ) -> LoggedArtifact:
        """Commit ``artifact`` as the next version of its name (or return the identical latest).

        Files logged before and unchanged since (same size, mtime, inode and device, per this
        machine's stat cache) are not read again; ``rehash=True`` reads and hashes every file.

        ``idempotency_key`` makes a retry of the same step return the version it logged; one
        made with ``content_scoped_key`` does so only when the retry logs the same content.
        ``partition`` (an orchestrator partition key, kept verbatim) is recorded with the
        version, and identical content is then compared with that partition's newest version.
        ``deliveries`` are the backends it is routed to: recorded as pending in the same
        transaction, so ``sync`` can deliver them even if this process dies right after."""
        if not isinstance(artifact, TraceletArtifact):
            raise InvalidArtifactError(f"log() needs a TraceletArtifact, got {type(artifact).__name__}")
        alias_list = [validate_alias(a) for a in dict.fromkeys(aliases)]
        input_refs = self._input_refs(inputs)
        metadata = self._checked_metadata(artifact.metadata)
        self.catalog.check_type(artifact.name, artifact.type.value)  # before any blob is written
        if input_refs:
            self.catalog.resolve_refs(input_refs)  # fail before writing any blob
        rows, reused = self._stage_blobs(artifact, rehash)
        if isinstance(idempotency_key, ContentScopedKey):
            idempotency_key = f"{idempotency_key}:{entries_digest(rows)}"
        logged = self._commit(name=artifact.name, type_=artifact.type.value,
                              description=artifact.description, metadata=metadata, entry_dicts=rows,
                              producer=producer, input_refs=input_refs, aliases=alias_list,
                              idempotency_key=idempotency_key, deliveries=deliveries, partition=partition,
                              reused=reused)
        if artifact.tags:  # labels, not content: added to the existing version on dedup too
            self.catalog.add_tags(logged._record.id, artifact.tags)
        if artifact.tags or alias_list:
            self._sync_labels(artifact.name)
        return logged

    def _commit(self, *, name: str, type_: str, description: str | None, metadata: dict[str, Any],
                entry_dicts: list[dict[str, Any]], producer: RunInfo | None,
                input_refs: Sequence[tuple[str, str]], aliases: Sequence[str],
                idempotency_key: str | None, deliveries: Sequence[DeliverySpec] = (),
                partition: str | None = None, sealed_draft: DraftRecord | None = None,
                reused: ReusedBlobs | None = None) -> LoggedArtifact:
        digest = entries_digest(entry_dicts)
        producer = with_provenance(producer) if producer is not None else None
        size_bytes = sum(int(e.get("size") or 0) for e in entry_dicts)

        def write_manifest(version: int, created_at: float, input_labels: list[str], token: str | None = None) -> str:
            return self.blobs.write_manifest(name, version, {
                "format": MANIFEST_FORMAT, "name": name, "version": version, "type": type_,
                "digest": digest, "description": description, "metadata": metadata,
                "size_bytes": size_bytes, "created_at": created_at, "entries": entry_dicts,
                "producer": producer.to_dict() if producer else None, "inputs": input_labels,
                "idempotency_key": idempotency_key, "partition": partition,
            }, token)

        # Write the manifest before taking the catalog's write lock, for the version number
        # the catalog predicts: no writer then waits behind this one's (possibly remote) PUT.
        # Only when another writer took that number first is it written again under the lock.
        token = uuid.uuid4().hex[:12]
        prepared: PreparedManifest | None = None
        keep_manifest: Callable[[], None] | None = None
        guess = self.catalog.commit_preview(name, digest, type_, input_refs, idempotency_key, partition)
        if isinstance(guess, VersionRecord):
            if not (aliases or deliveries or sealed_draft or (producer and input_refs)):
                logged = LoggedArtifact(guess, self)  # the dedup answer: nothing to record, no write
                logged.created = False
                return logged
            guess = None
        if guess is not None:
            created_at = time.time()
            number, labels = guess
            prepared = PreparedManifest(number, labels, created_at, write_manifest(number, created_at, labels, token))

            def keep_manifest() -> None:  # under the lock gc removes stray manifests in: the same bytes again
                if not self.blobs.has_small(self.blobs.pending_manifest_path(name, number, token)):
                    write_manifest(number, created_at, labels, token)
        request = VersionRequest(
            name=name, type=type_, digest=digest, size_bytes=size_bytes, description=description, metadata=metadata,
            entry_rows=[entry_row(e) for e in entry_dicts], producer=producer, inputs=tuple(input_refs),
            aliases=tuple(aliases), idempotency_key=idempotency_key, partition=partition, sealed_draft=sealed_draft,
            deliveries=tuple(deliveries), prepared=prepared)
        try:
            with self._alias_journal_kept(name) as journal:
                record, created = self.catalog.commit_version(request, CommitHooks(
                    write_manifest=write_manifest, check_blobs=self._blob_check(reused or {}, keep_manifest),
                    journal=journal))
        except BaseException:
            if prepared is not None:
                self.blobs.discard_manifest(self.blobs.pending_manifest_path(name, prepared.version, token))
            raise
        used = prepared is not None and created and (record.version, record.manifest_digest) == (
            prepared.version, prepared.digest)
        if prepared is not None and not used:
            self.blobs.discard_manifest(self.blobs.pending_manifest_path(name, prepared.version, token))
        if created:
            # The version is committed: nothing may fail the log now. A pending manifest that
            # cannot be renamed (a full disk, a lost bucket) is promoted by the next gc, and
            # reads and reindex already accept it.
            with suppress(StorageError):
                self.blobs.promote_manifest(name, record.version, self.blobs.pending_manifest_path(
                    name, record.version, token if used else None))
        logged = LoggedArtifact(record, self)
        logged.created = created
        self.delivery.after_commit(logged)
        return logged

    def _alias_journal(self, name: str) -> AliasJournal:
        return lambda after, before: self._write_alias_journal(name, after, before)

    @contextmanager
    def _alias_journal_kept(self, name: str) -> Iterator[AliasJournal]:
        """The journal writer to hand the catalog: it writes the alias journal inside the
        transaction, just before it commits. If the transaction fails after it wrote the
        journal, the journal is rewritten from what did commit."""
        written: builtins.list[bool] = []

        def journal(after: dict[str, AliasTarget], before: dict[str, AliasTarget]) -> None:
            written.append(True)
            self._write_alias_journal(name, after, before)

        try:
            yield journal
        except BaseException:
            if written:  # best effort: the original error is what the caller must see
                with suppress(TraceletError):
                    self._sync_alias_journal(name)
            raise

    def _sync_labels(self, name: str) -> None:
        """Persist ``name``'s tags and alias history beside its manifests for ``reindex``
        (``@labels.json``), after a change of either. Best effort: the catalog is the record,
        the file its copy for a lost catalog (a process that dies first leaves it one change
        behind)."""
        with suppress(TraceletError, OSError):
            self.blobs.write_labels(name, self.catalog.labels_of(name))

    def _sync_alias_journal(self, name: str) -> None:
        """Persist the committed aliases of ``name`` for ``reindex``."""
        self.catalog.with_alias_map(name, self._alias_journal(name))

    def _write_alias_journal(self, name: str, after: dict[str, AliasTarget],
                             before: dict[str, AliasTarget]) -> None:
        """Write ``manifests/<name>/@aliases.json`` so ``reindex`` restores aliases: each
        alias's new target and, where it moved, its previous one. Written inside the
        transaction that changes them, so it never falls behind the catalog; a crash just
        before that commit leaves it one move ahead, which ``reindex`` detects by the
        version digests recorded with each target (the previous target is used then)."""
        journal = {alias: [target] + ([before[alias]] if before.get(alias, target) != target else [])
                   for alias, target in after.items()}
        self.blobs.write_alias_journal(name, {"format": 2, "aliases": journal})

    # -- reading ----------------------------------------------------------------------------
    def get(self, ref: str, version: str | None = None, *, partition: str | None = None) -> LoggedArtifact:
        """``get("name:v3")``, ``get("name:production")`` or ``get("name", version="v3")``;
        with ``partition``, ``latest`` means the newest version of that partition."""
        name, selector = parse_ref(ref, version)
        return LoggedArtifact(self.catalog.get(name, selector, partition), self)

    def exists(self, ref: str) -> bool:
        """Whether ``ref`` (``name``, ``name:vN``, ``name:alias``) names a version here; a
        malformed ref still raises ``InvalidArtifactError``."""
        try:
            self.get(ref)
        except ArtifactNotFoundError:
            return False
        return True

    def list(self, name: str | None = None, type: Any = None, *,
             tag: str | None = None) -> builtins.list[LoggedArtifact]:
        """The latest version of every name (or of ``name`` and the names under it); with
        ``tag``, the latest version carrying that tag."""
        if name is not None:
            validate_name(name)
        type_value = coerce_type(type).value if type is not None else None
        if tag is not None:
            records = self.catalog.latest_with_tag(validate_tag(tag), name, type_value)
        else:
            records = self.catalog.latest(name, type_value)
        return [LoggedArtifact(r, self) for r in records]

    def versions(self, name: str, *, partition: str | None = None,
                 tag: str | None = None) -> builtins.list[LoggedArtifact]:
        """Every version of ``name`` (of one ``partition``, carrying ``tag``), oldest first."""
        tag = validate_tag(tag) if tag is not None else None
        return [LoggedArtifact(r, self) for r in self.catalog.versions(validate_name(name), partition, tag)]

    def set_alias(self, ref: str, alias: str, *, reason: str | None = None) -> LoggedArtifact:
        """Point ``alias`` at the version ``ref`` names, moving it (recorded in ``alias_history``)."""
        name, selector = parse_ref(ref)
        validate_alias(alias)
        with self._alias_journal_kept(name) as journal:
            record = self.catalog.set_alias(name, selector, alias, journal=journal, reason=checked_reason(reason))
        self._sync_labels(name)
        self.delivery.after_alias_change(name)
        return LoggedArtifact(record, self)

    def remove_alias(self, name: str, alias: str, *, reason: str | None = None) -> None:
        validate_name(name)
        validate_alias(alias)
        with self._alias_journal_kept(name) as journal:
            self.catalog.remove_alias(name, alias, journal=journal, reason=checked_reason(reason))
        self._sync_labels(name)
        self.delivery.after_alias_change(name)

    def record_consumption(self, run: RunInfo, inputs: Iterable[InputRef]) -> None:
        """Note that ``run`` read these versions (lineage of runs that log nothing)."""
        refs = self._input_refs(inputs)
        if refs:  # the run's row may be made here, before it logs: it carries the provenance
            self.catalog.record_consumption(with_provenance(run), refs)

    def consumed(self, run: RunInfo) -> builtins.list[LoggedArtifact]:
        """The versions ``run`` recorded reading (``record_consumption`` or logged inputs)."""
        ids = self.catalog.consumed_by_run(run)
        return [LoggedArtifact(r, self) for r in self.catalog.get_by_ids(ids)] if ids else []

    def diff(self, a: str | LoggedArtifact, b: str | LoggedArtifact, *, content: bool = True,
             allow_pickle: bool | None = None) -> VersionDiff:
        """What changed from version ``a`` to ``b`` (``_diff``): entries, metadata, tags, aliases,
        inputs, producer and, unless ``content=False``, the content of changed entries."""
        before, after = (v if isinstance(v, LoggedArtifact) else self.get(v) for v in (a, b))
        allowed = self.settings.allow_pickle if allow_pickle is None else allow_pickle
        return diff_versions(before, after, content=content, allow_pickle=allowed)

    # -- lineage ----------------------------------------------------------------------------
    def lineage(self, ref: str | LoggedArtifact, direction: str = "upstream",
                depth: int | None = None) -> LineageGraph:
        """Versions and runs upstream (what it was made from) or downstream (what used it)."""
        start = ref if isinstance(ref, LoggedArtifact) else self.get(ref)
        return trace_lineage(self.catalog, start._record, direction, depth)

    # -- integrity (``_maintenance``) -------------------------------------------------------
    def verify(self, ref: str | None = None) -> builtins.list[str]:
        """Re-hash manifests and blobs of one version (or all); the refs checked.

        Raises ``IntegrityError`` whose ``problems`` name every bad manifest and entry.
        """
        return _maintenance.verify(self, ref)

    def gc(self, dry_run: bool = True, grace_seconds: float = DEFAULT_GC_GRACE_SECONDS) -> GcReport:
        """Remove blobs no version or draft needs, older than ``grace_seconds`` (in-flight logs
        are younger) or used by a deleted version, stray manifests of uncommitted versions, and
        leftovers of killed writers."""
        return _maintenance.gc(self, dry_run, grace_seconds)

    def reindex(self) -> ReindexReport:
        """Rebuild missing catalog rows from the manifests in the store, oldest first; the refs
        added, and in ``skipped`` what could not be used and why (``_maintenance.reindex``)."""
        return _maintenance.reindex(self)

    # -- parallel writers (upsert / finish) ---------------------------------------------------
    def upsert(self, artifact: TraceletArtifact, group: str) -> DraftRecord:
        """Add ``artifact``'s entries to the open draft ``(name, group)``; ``finish`` seals it."""
        if not isinstance(group, str) or not group:
            raise InvalidArtifactError("upsert needs a non-empty group key")
        metadata = self._checked_metadata(artifact.metadata)
        self.catalog.check_type(artifact.name, artifact.type.value)
        rows, reused = self._stage_blobs(artifact)
        return self.catalog.draft_add(name=artifact.name, group=group, type_=artifact.type.value,
                                      description=artifact.description, metadata_=metadata,
                                      entry_rows=[entry_row(e) for e in rows],
                                      check_blobs=self._blob_check(reused))

    def finish(self, name: str, group: str, aliases: Iterable[str] = (), *,
               producer: RunInfo | None = None, inputs: Iterable[InputRef] = ()) -> LoggedArtifact:
        """Seal the draft ``(name, group)`` into one version."""
        validate_name(name)
        alias_list = [validate_alias(a) for a in dict.fromkeys(aliases)]
        input_refs = self._input_refs(inputs)
        while True:  # an upsert landing while we seal it: read the draft again, never lose it
            draft = self.catalog.draft_get(name, group)
            entry_dicts = sorted(draft.entries, key=entry_order)
            missing = [e["path"] for e in entry_dicts if e.get("digest") and not self.blobs.has_blob(e["digest"])]
            if missing:
                raise IntegrityError(f"draft {name!r} refers to missing blobs: {missing}", missing)
            try:
                return self._commit(name=name, type_=draft.type, description=draft.description,
                                    metadata=draft.metadata, entry_dicts=entry_dicts, producer=producer,
                                    input_refs=input_refs, aliases=alias_list,
                                    idempotency_key=f"draft:{group}:{draft.created_at!r}", sealed_draft=draft)
            except DraftChangedError:
                continue

    def drafts(self) -> builtins.list[DraftRecord]:
        return self.catalog.drafts()

    # -- delivery to backends (the outbox) -------------------------------------------------
    def deliveries(self, ref: str | None = None, status: str | None = None) -> builtins.list[DeliveryRecord]:
        """Outbox rows: every delivery (of one version), optionally of one status."""
        return self.delivery.deliveries(self._including_deleted(ref)._record.id if ref is not None else None, status)

    def record_delivery(self, artifact: LoggedArtifact, result: ArtifactResult) -> None:
        """Store the outcome of a delivery attempt in the outbox (a backend also calls this to
        confirm a delivery it returned with ``confirmed=False``)."""
        self.delivery.record(artifact, result)

    def alias_events(self, name: str | None = None, status: str | None = None) -> builtins.list[AliasEventRecord]:
        """Alias-event outbox rows (of one name, of one status; default: not yet delivered)."""
        return self.delivery.alias_events(validate_name(name) if name else None, status)

    def sync(self, backends: Iterable[str] | None = None) -> builtins.list[ArtifactResult]:
        """Retry every pending, failed or unconfirmed delivery (optionally only to some
        backends), then every alias event not yet delivered (``Delivery.sync``)."""
        return self.delivery.sync(backends)
