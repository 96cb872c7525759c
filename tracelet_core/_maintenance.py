"""Integrity and repair of a store: ``verify`` (re-hash), ``gc`` (collect what nothing needs)
and ``reindex`` (rebuild the catalog from the manifests, tombstones and alias journals).

``ArtifactStore.verify``, ``.gc`` and ``.reindex`` call these; they use only the store's blob
store and catalog, so a damaged catalog can be rebuilt from the files alone.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._blobstore import PENDING_SUFFIX
from ._catalog import AliasTarget, VersionRecord, entries_digest, entry_row
from ._errors import ArtifactNotFoundError, IntegrityError, InvalidArtifactError
from ._hashing import hash_bytes
from ._logged import entry_from_dict, entry_to_dict
from ._names import validate_name

if TYPE_CHECKING:
    from ._store import ArtifactStore

DEFAULT_GC_GRACE_SECONDS = 3600.0


class ReindexReport(list[str]):
    """The refs ``reindex`` added (a list), in ``skipped`` what it could not use and why, and in
    ``unsettled_aliases`` (``{"name:alias": ref or None}``) each alias whose journal recorded a
    move that never committed (a writer died during it), with the target it chose."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped: list[str] = []
        self.unsettled_aliases: dict[str, str | None] = {}

    @property
    def clean(self) -> bool:
        """Nothing skipped and no alias left unsettled."""
        return not self.skipped and not self.unsettled_aliases


@dataclass
class GcReport:
    """What ``gc`` removed (or would remove, on a dry run)."""

    dry_run: bool
    blobs: list[str] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)
    temp_files: list[str] = field(default_factory=list)
    bytes_freed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "blobs": self.blobs, "manifests": self.manifests,
                "temp_files": self.temp_files, "bytes_freed": self.bytes_freed}



def verify(store: ArtifactStore, ref: str | None = None) -> list[str]:
    """Re-hash manifests and blobs of one version (or all); the refs checked.

    Raises ``IntegrityError`` whose ``problems`` name every bad manifest and entry.
    """
    records = [store.get(ref)._record] if ref is not None else store.catalog.get_by_ids(store.catalog.all_version_ids())
    problems: list[str] = []
    blob_status: dict[str, str | None] = {}
    for record in records:
        problems.extend(_check_manifest(store, record))
        for data in record.entries:
            digest = data.get("digest")
            if data.get("kind") == "reference" or not digest:
                continue
            if digest not in blob_status:
                blob_status[digest] = store.blobs.check_blob(digest, data.get("size"))
            if blob_status[digest] is not None:
                problems.append(f"{record.ref}: {data['path']} ({digest}) {blob_status[digest]}")
    if problems:
        raise IntegrityError(f"{len(problems)} problem(s) found:\n  " + "\n  ".join(problems), problems)
    return [r.ref for r in records]


def _check_manifest(store: ArtifactStore, record: VersionRecord) -> list[str]:
    """The manifest must match its digest, and the catalog's entries must match it."""
    try:
        manifest = store.blobs.read_manifest(record.name, record.version, record.manifest_digest)
    except (IntegrityError, ArtifactNotFoundError) as exc:
        return [f"{record.ref}: {exc}"]  # the message names the manifest

    def canonical(entries: list[dict[str, Any]]) -> list[str]:
        return sorted(json.dumps(e, sort_keys=True) for e in entries)

    problems = []
    if canonical(manifest.get("entries") or []) != canonical(record.entries):
        problems.append(f"{record.ref}: catalog entries differ from the manifest")
    if entries_digest(record.entries) != record.digest:
        problems.append(f"{record.ref}: catalog entries do not hash to the version digest")
    return problems


def gc(store: ArtifactStore, dry_run: bool = True, grace_seconds: float = DEFAULT_GC_GRACE_SECONDS) -> GcReport:
    """Remove blobs no version or draft needs, older than ``grace_seconds`` (in-flight logs
    are younger) or used by a deleted version, stray manifests of uncommitted versions, and
    leftovers of killed writers."""
    report = GcReport(dry_run=dry_run)
    cutoff = time.time() - grace_seconds
    deleted = store.catalog.deleted_digests()  # the grace period protects never-used blobs only
    sizes = {d: size for d, m, size in store.blobs.iter_blobs() if (m is not None and m <= cutoff) or d in deleted}
    candidates = sorted(set(sizes) - store.catalog.referenced_digests())
    if not dry_run:  # deleted under the catalog's lock, which logs re-check their blobs under
        candidates = store.catalog.collect_blobs(candidates, store.blobs.delete_blob)
    report.blobs = candidates
    report.bytes_freed = sum(sizes[d] for d in candidates)
    _collect_manifests(store, cutoff, report)
    if not dry_run:
        report.temp_files = store.blobs.clean_tmp(grace_seconds)
    return report


def _stray_manifests(store: ArtifactStore, committed: dict[tuple[str, int], str], *,
                     promote: bool) -> list[tuple[str, int, str, bool]]:
    """Manifests no committed version has: ``(name, version, path, pending)``. A pending
    manifest of a committed version (its writer died before renaming it) is promoted (with
    ``promote``) instead. Versions above the newest committed one only: a final manifest
    without a row below it means a lost catalog, which ``reindex`` (not gc) must repair."""
    newest = _newest(committed)
    stray = []
    for name, version, path in store.blobs.iter_manifests(pending=True):
        if committed.get((name, version)) != _manifest_digest(store, path):
            stray.append((name, version, path, True))
        elif promote:
            store.blobs.promote_manifest(name, version, path)
    stray.extend((name, version, path, False) for name, version, path in store.blobs.iter_manifests()
                 if (name, version) not in committed and version > newest.get(name, version))
    return stray


def _collect_manifests(store: ArtifactStore, cutoff: float, report: GcReport) -> None:
    """Remove (unless a dry run) stray manifests last written before ``cutoff``: found
    against the catalog as read now, then judged again, and removed, under the lock every
    commit shares (``Catalog.collect_manifests``). A version that commits in between keeps
    its manifest: its commit re-writes, under that lock, a pending manifest gc removed before
    (``ArtifactStore._blob_check``), and once it committed gc sees it here."""
    stray = [m for m in _stray_manifests(store, store.catalog.manifest_keys(), promote=not report.dry_run)
             if store.blobs.collect_manifest(m[2], cutoff, dry_run=True)]
    if not stray:
        return

    def collect(committed: dict[tuple[str, int], str]) -> None:
        newest = _newest(committed)
        for name, version, path, pending in stray:
            if pending and committed.get((name, version)) == _manifest_digest(store, path):
                continue  # committed meanwhile: its writer (or the next gc) promotes it
            if not pending and ((name, version) in committed or version <= newest.get(name, version)):
                continue
            if not report.dry_run:
                store.blobs.discard_manifest(path)
            if path not in report.manifests:  # a body retried after lock contention
                report.manifests.append(path)

    if report.dry_run:
        collect(store.catalog.manifest_keys())
    else:
        store.catalog.collect_manifests(collect)


def _newest(committed: dict[tuple[str, int], str]) -> dict[str, int]:
    newest: dict[str, int] = {}
    for name, version in committed:
        newest[name] = max(newest.get(name, 0), version)
    return newest


def _manifest_digest(store: ArtifactStore, path: str) -> str | None:
    try:
        return hash_bytes(store.blobs.read_manifest_at(path))
    except FileNotFoundError:
        return None


def reindex(store: ArtifactStore) -> ReindexReport:
    """Rebuild missing catalog rows from the manifests in the store, oldest first; the
    refs added. Lineage edges and aliases (from each name's alias journal) follow; a version
    in its name's tombstone file comes back deleted.

    A manifest that cannot be read, and a pending one (its version's commit was never
    seen) whose blobs are not all stored, is skipped and named in ``skipped`` of the
    returned list; so is an unreadable alias journal."""
    result = ReindexReport()
    found: list[tuple[dict[str, Any], bytes, list[dict[str, Any]], str]] = []
    finals = list(store.blobs.iter_manifests())
    final_keys = {(name, version) for name, version, _ in finals}
    pendings = [m for m in store.blobs.iter_manifests(pending=True) if (m[0], m[1]) not in final_keys]
    pendings.sort(key=lambda m: m[2])  # several for one version (crashed writers): the first usable
    for name, version, path in finals + pendings:
        try:
            validate_name(name)
            data = store.blobs.read_manifest_at(path)
            manifest = json.loads(data)
            if manifest.get("name") != name or int(manifest.get("version")) != version:
                raise ValueError("name or version disagrees with its location")
            entry_dicts = [entry_to_dict(entry_from_dict(e)) for e in manifest["entries"]]
            if entries_digest(entry_dicts) != manifest.get("digest"):
                raise ValueError("its entries do not hash to its digest")
            if path.endswith(PENDING_SUFFIX):
                missing = [e["path"] for e in entry_dicts
                           if e.get("digest") and not store.blobs.has_blob(e["digest"])]
                if missing:
                    raise ValueError(f"its version never committed and blobs are gone: {missing}")
        except (ValueError, KeyError, TypeError, AttributeError, InvalidArtifactError, IntegrityError) as exc:
            result.skipped.append(f"{path}: {exc}")
            continue
        found.append((manifest, data, entry_dicts, path))
    found.sort(key=lambda item: (float(item[0]["created_at"]), item[0]["name"], int(item[0]["version"])))
    added: list[tuple[str, int, list[str]]] = []
    stones = {name: store._tombstones(name, result.skipped) for name in dict.fromkeys(m["name"] for m, *_ in found)}
    for manifest, data, entry_dicts, path in found:
        try:
            stone = stones[manifest["name"]].get((int(manifest["version"]), manifest["digest"]))
            inserted = store.catalog.insert_reindexed(manifest, hash_bytes(data),
                                                     [entry_row(e) for e in entry_dicts], stone)
        except (ValueError, KeyError, TypeError, InvalidArtifactError) as exc:
            result.skipped.append(f"{path}: {exc}")
            continue
        if inserted:
            added.append((manifest["name"], int(manifest["version"]), list(manifest.get("inputs") or [])))
            if path.endswith(PENDING_SUFFIX):
                store.blobs.promote_manifest(manifest["name"], int(manifest["version"]), path)
    journals = {name: _journal_targets(store, name, result) for name in dict.fromkeys(n for n, _, _ in added)}
    for name, version, inputs in added:
        store.catalog.link_reindexed_inputs(name, version, inputs, journals[name])
    for name in dict.fromkeys(n for n, _, _ in added):
        store._restore_quarantine(name, result.skipped)
        _restore_labels(store, name, result)
    result.extend(f"{name}:v{version}" for name, version, _ in added)
    return result


def _restore_labels(store: ArtifactStore, name: str, result: ReindexReport) -> None:
    """Bring back ``name``'s tags and alias history from its labels file."""
    try:
        labels = store.blobs.read_labels(name)
        if labels is not None:
            result.skipped.extend(store.catalog.restore_labels(name, labels))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        result.skipped.append(f"labels of {name}: {exc}")


def _journal_targets(store: ArtifactStore, name: str, result: ReindexReport) -> dict[str, int]:
    """Each alias of ``name``'s journal resolved to the first recorded target whose
    version exists with the recorded digest (a journal one move ahead of a crashed
    commit falls back to the previous target)."""
    try:
        journal = _read_alias_journal(store, name)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        result.skipped.append(f"alias journal of {name}: {exc}")
        return {}
    digests = {v.version_number: v.digest for v in store.versions(name)}
    chosen: dict[str, int] = {}
    for alias, targets in journal.items():
        for position, target in enumerate(targets):
            number = int(target["version"])
            if number in digests and target.get("digest") in (None, digests[number]):
                chosen[alias] = number
                if position > 0:  # the newest target never committed: the move was in flight
                    result.unsettled_aliases[f"{name}:{alias}"] = f"{name}:v{number}"
                break
        else:
            if targets:
                result.unsettled_aliases[f"{name}:{alias}"] = None
    return chosen


def _read_alias_journal(store: ArtifactStore, name: str) -> dict[str, list[AliasTarget]]:
    """``{alias: [target, previous target]}``; a missing journal is empty, a corrupt
    one raises ``ValueError``."""
    data = store.blobs.read_alias_journal(name)
    if data is None:
        return {}
    if isinstance(data, dict) and data.get("format") == 2:
        return {str(alias): list(targets) for alias, targets in data["aliases"].items()}
    return {str(alias): [{"version": int(number)}] for alias, number in data.items()}  # format 1
