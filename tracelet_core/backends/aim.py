"""The Aim backend: a version's files as run artifacts, its identity as run params.

Where a version goes:

* The Aim run of the tracelet run that logged it (found by the run param
  ``tracelet_run.run_id``, else created in experiment ``experiment`` or the tracelet
  experiment's name): the experiment's run between ``start`` and ``stop``; without
  ``start`` (a delivery from the outbox) the run of the version's producer.
* Its files as run artifacts named ``<name>/<version>/files/<path>`` and the version's
  description as ``<name>/<version>/tracelet-manifest.json``, stored under the run's
  artifacts URI (``artifacts_uri``, default ``file://<repo>/aim-artifacts``), set with
  ``Run.set_artifacts_uri`` before the first ``log_artifact``. Each one's ``path`` (where
  Aim says it came from) is the store's: the blob's URI, ``tracelet://<ref>`` for the
  manifest.
* Run params ``run["tracelet"][<ref>]``: ``ref``, ``digest``, ``inputs``, ``type``,
  ``aliases``, ``producer``, the artifact path, the uploaded files and the references
  (path or name -> URI). They are written last: a run holds them only once the version is
  wholly there, and the next delivery of the same ref finds them and uploads nothing.
* Natively, too: a ``config`` version's keys (flattened with ``.``) in the run's
  ``hparams``; the pictures and sounds of ``image`` / ``audio`` versions tracked as
  ``aim.Image`` / ``aim.Audio``, one list per version (Aim shows them side by side; name =
  the tracelet name, context ``{"kind": "image"}`` / ``{"kind": "audio"}``, step = the
  version number, caption = the file's path; Aim has no video object, clips stay run
  artifacts). Alias moves
  arrive through the outbox in the version's params (``aliases``) and as run tags
``<name>:<alias>`` for the aliases the run's versions of that name hold.

Finding the run costs no scan of the repo: the run of a tracelet run is the one this
backend has open, else the one the outbox recorded for an earlier delivery of that run
(``ArtifactResult.version`` is the run hash), else the one noted in
``<repo>/.aim/tracelet-runs/`` when this backend made it (written before anything is
uploaded, so a retry after a crash or a failed first delivery goes to the same run), else a
new one. Only ``fetch`` (given a name and version, not a delivery) reads the runs of
the repo.

Aim traps handled here: ``log_artifact`` swallows errors in Aim's safe mode, so every
upload is checked in ``run.artifacts``; another process sees a run's params only once the
run is indexed, so runs are read from their own chunk through a fresh ``Repo`` (a reused
one serves cached reads) and indexed when this backend closes them, so ``Repo.get_run``
elsewhere sees them; Aim caches a repo's run listing for half a second, so that cache is
cleared before each scan; and ``Artifact.download`` drops the folder part of the name, so
each file is downloaded into its own folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from .._backends import (
    MANIFEST_NAME,
    ArtifactResult,
    Backend,
    BackendCopy,
    config_params,
    delivery_target,
    media_entries,
    plan_upload,
    release_displaced_aliases,
    sdk_errors,
)
from .._errors import BackendError, ConfigurationError
from .._trackers import status_tag

with warnings.catch_warnings():
    # Aim's structured-DB models still call SQLAlchemy 1.x's declarative_base() at import.
    warnings.filterwarnings("ignore", message=r"The ``declarative_base\(\)`` function", category=DeprecationWarning)
    from aim import Audio, Image, Repo, Run  # Deferred: this module is imported only when "aim" is asked for
    from aim.sdk.errors import MissingRunError
    from aim.sdk.index_manager import RepoIndexManager

if TYPE_CHECKING:
    from .._logged import LoggedArtifact

__all__ = ["AimBackend"]

logger = logging.getLogger(__name__)

PARAM = "tracelet"  # run["tracelet"][<ref>] describes one delivered version
RUN_PARAM = "tracelet_run"  # run["tracelet_run"] = {"run_id": ..., "name": ...}
RUN_NOTES = "tracelet-runs"  # <repo>/.aim/tracelet-runs/<sha256 of the tracelet run id> = run hash


def _forget_run_listing() -> None:
    """Aim caches each repo's run listing for 0.5 s, process-wide and keyed by path, so a run
    made a moment ago can be missing from it (and ``Run(hash)`` then raises
    ``MissingRunError``): clear that cache."""
    forget = getattr(Repo._all_run_hashes, "cache_clear", None)
    if forget is not None:
        forget()


def _run_hashes(repo: Repo) -> list[str]:
    """Every run of ``repo``, as of now."""
    _forget_run_listing()
    return sorted(repo.list_all_runs())


def _sdk_errors(action: str) -> AbstractContextManager[None]:
    """Translate what the SDK raises while doing ``action`` into ``BackendError``."""
    return sdk_errors("aim", action, (Exception,))  # Aim raises bare Exceptions, RocksDB errors, ...


@dataclass
class _RunView:
    """What a scan of the repo learns about one run."""

    hash: str
    run_id: str | None
    versions: dict[str, dict[str, Any]]


class AimBackend(Backend):
    """Delivers versions to an Aim repository.

    ``repo`` is the folder holding ``.aim`` (default: Aim's own, the nearest ``.aim`` above
    the working directory, else the working directory), resolved when the backend is made so
    ``tracelet sync`` elsewhere delivers to the same repo.
    """

    name = "aim"

    def __init__(self, repo: str | None = None, experiment: str | None = None,
                 artifacts_uri: str | None = None) -> None:
        remote = repo is not None and "://" in repo
        self.repo = repo if remote and repo is not None else os.path.abspath(repo or Repo.default_repo_path())
        if artifacts_uri is None:
            if remote:
                raise ConfigurationError("aim: a remote repo needs artifacts_uri (e.g. s3://bucket/aim)")
            artifacts_uri = Path(self.repo, "aim-artifacts").as_uri()
        if "://" not in artifacts_uri:
            raise ConfigurationError(f"aim: artifacts_uri needs a scheme (file:// or s3://), got {artifacts_uri!r}")
        self.experiment = experiment
        self.artifacts_uri = artifacts_uri
        self._lock = threading.RLock()
        self._started: tuple[str, str] | None = None  # (experiment name, tracelet run id)
        self._open: dict[str, Run] = {}  # tracelet run id -> the Aim run open for writing

    def config(self) -> dict[str, Any]:
        return {"repo": self.repo, "experiment": self.experiment, "artifacts_uri": self.artifacts_uri}

    # -- runs -------------------------------------------------------------------------------
    def start(self, experiment_name: str, run_id: str) -> None:
        """Remember the experiment's run; the Aim run is found or made on the first log."""
        with self._lock:
            self._started = (experiment_name, run_id)

    def stop(self) -> None:
        """Close the runs this backend opened (and index them, so other readers see them)."""
        with self._lock:
            self._started = None
            opened, self._open = self._open, {}
            for run in opened.values():
                self._close(run)

    def _close(self, run: Run) -> None:
        """Close ``run`` and index it; a failure is logged, never raised over a delivery's
        own outcome (what was delivered is already in the run's chunk)."""
        run_hash = run.hash
        try:
            run.close()
            reader = Repo(self.repo)
            try:
                RepoIndexManager(reader).index(run_hash)  # not the pooled manager: it keeps its Repo
            finally:
                reader.close()
        except Exception as exc:  # noqa: BLE001 - reported; the run stays readable from its chunk
            logger.warning("aim: run %s was not closed and indexed (`aim storage reindex` will index it): %s",
                           run_hash, exc)

    def _scan(self) -> list[_RunView]:
        """Every run's tracelet params, read from the runs' own chunks through a fresh Repo
        (a reused Repo serves cached, stale reads; the repo index lags behind open runs)."""
        if "://" not in self.repo and not Repo.exists(self.repo):
            return []  # nothing delivered yet; the first Run makes the repo
        views = []
        with _sdk_errors(f"reading the runs of {self.repo}"):
            reader = Repo(self.repo)
            try:
                for run_hash in _run_hashes(reader):
                    chunk = reader.request_tree("meta", run_hash, read_only=True, skip_read_optimization=True)
                    attrs = chunk.subtree(("meta", "chunks", run_hash, "attrs"))
                    identity = attrs.get(RUN_PARAM) or {}
                    versions = attrs.get(PARAM) or {}
                    views.append(_RunView(run_hash, identity.get("run_id"), dict(versions)))
            finally:
                reader.close()
        return views

    def _target(self, artifact: LoggedArtifact) -> tuple[str, str, str]:
        return delivery_target(artifact, self._started, self.experiment)

    def _known_run(self, artifact: LoggedArtifact, tracelet_run: str) -> str | None:
        """The run hash the outbox recorded for this version, or for another delivery of the
        same tracelet run (no scan of the repo)."""
        for row in artifact.store.deliveries(artifact.ref):
            if row.backend == self.name and row.result and row.result.get("version"):
                return str(row.result["version"])  # an earlier, interrupted try of this version
        for result in artifact.store.catalog.tracker_results(self.name, tracelet_run):
            if result.get("version"):
                return str(result["version"])
        note = self._run_note(tracelet_run)
        return note.read_text().strip() if note is not None and note.is_file() else None

    def _run_note(self, tracelet_run: str) -> Path | None:
        """Where this backend notes the Aim run it made for ``tracelet_run`` (local repos)."""
        if "://" in self.repo:
            return None
        key = hashlib.sha256(tracelet_run.encode()).hexdigest()
        return Path(self.repo, ".aim", RUN_NOTES, key)

    def _reopen(self, run_hash: str) -> Run | None:
        """The run ``run_hash`` open for writing, or None where the repo lost it."""
        _forget_run_listing()
        try:
            return Run(run_hash, repo=self.repo)
        except MissingRunError:
            return None

    def _run_for(self, artifact: LoggedArtifact) -> tuple[Run, bool]:
        """The Aim run for ``artifact`` open for writing, and whether it was opened just now."""
        experiment, tracelet_run, run_name = self._target(artifact)
        if tracelet_run in self._open:
            return self._open[tracelet_run], False
        known = self._known_run(artifact, tracelet_run)
        with _sdk_errors(f"opening the run of tracelet run {tracelet_run}"):
            run = self._reopen(known) if known else None
            if run is None:
                run = Run(repo=self.repo, experiment=experiment)
                try:
                    run.name = run_name
                    run[RUN_PARAM] = {"run_id": tracelet_run, "name": run_name}
                    note = self._run_note(tracelet_run)
                    if note is not None:
                        note.parent.mkdir(exist_ok=True)
                        note.write_text(run.hash)
                except Exception:
                    run.close()
                    raise
        if self._started is not None:
            self._open[tracelet_run] = run
        return run, True

    # -- delivery ---------------------------------------------------------------------------
    def log(self, artifact: LoggedArtifact) -> ArtifactResult:
        with self._lock:
            run, opened = self._run_for(artifact)
            try:
                held = run.get((PARAM, artifact.ref))
                if held is not None:  # delivered before (the outcome was not recorded)
                    if held.get("digest") != artifact.digest:
                        raise BackendError(f"aim run {run.hash} holds {artifact.ref} with digest "
                                           f"{held.get('digest')}, not {artifact.digest}")
                    return self._result(artifact, run.hash, held["uri"])
                record = self._upload(artifact, run)
                with _sdk_errors(f"recording {artifact.ref} in run {run.hash}"):
                    self._log_native(run, artifact)
                    run[PARAM, artifact.ref] = record
                    if run.get((PARAM, artifact.ref)) != record:  # Aim's safe mode swallows errors
                        raise BackendError(f"aim: run {run.hash} did not keep the params of {artifact.ref}")
                    self._tag_aliases(run, artifact.name)
                release_displaced_aliases(self, artifact)
                return self._result(artifact, run.hash, record["uri"])
            finally:
                if opened and self._started is None:
                    self._close(run)  # a run opened for this delivery alone

    def _log_native(self, run: Run, artifact: LoggedArtifact) -> None:
        """Config keys into ``hparams``, pictures and sounds as Aim objects."""
        params = config_params(artifact)
        if params:
            run["hparams"] = {**(run.get("hparams") or {}), **params}
        tracked: dict[str, list[Any]] = {}
        for kind, path in media_entries(artifact):
            if kind == "video":
                continue  # Aim has no video object
            local = str(artifact.path(path))
            try:
                media = (Image(local, caption=path) if kind == "image"
                         else Audio(local, format=Path(path).suffix.lstrip("."), caption=path))
            except Exception as exc:  # noqa: BLE001 - a file Aim cannot decode stays a run artifact
                logger.warning("aim: %s of %s is not a %s Aim can read (%s); kept as a file only",
                               path, artifact.ref, kind, exc)
                continue
            tracked.setdefault(kind, []).append(media)
        for kind, items in tracked.items():  # one list per version: Aim shows them side by side
            run.track(items, name=artifact.name, step=artifact.version_number, context={"kind": kind})

    # -- alias moves (through the outbox) ---------------------------------------------------
    def set_alias(self, artifact: LoggedArtifact, alias: str) -> None:
        """Tag the run holding the version ``<name>:<alias>``."""
        self._move_alias(artifact, alias, add=True)

    def remove_alias(self, artifact: LoggedArtifact, alias: str) -> None:
        """Take the tag ``<name>:<alias>`` off the run holding the version."""
        self._move_alias(artifact, alias, add=False)

    @staticmethod
    def _tag_aliases(run: Run, name: str) -> None:
        """Run tags ``<name>:<alias>`` for the aliases the run's versions of ``name`` hold (a
        run can hold several versions; each version's own aliases are in its params)."""
        held = {f"{name}:{a}" for record in (run.get(PARAM) or {}).values() if record.get("name") == name
                for a in record.get("aliases", [])}
        tagged = {t for t in run.tags if t.startswith(f"{name}:")}
        for tag in sorted(held - tagged):
            run.add_tag(tag)
        for tag in sorted(tagged - held):
            run.remove_tag(tag)

    @contextmanager
    def _run_holding(self, artifact: LoggedArtifact, doing: str) -> Iterator[Run]:
        """The Aim run that holds ``artifact`` (the one its delivery recorded), under the
        backend's lock: one of this backend's open runs, or reopened and closed after."""
        with self._lock:
            open_runs = {run.hash: run for run in self._open.values()}
            known = next((str(r.result["version"]) for r in artifact.store.deliveries(artifact.ref)
                          if r.backend == self.name and r.result and r.result.get("version")), None)
            if known is None:
                raise BackendError(f"aim: no run is known to hold {artifact.ref}")
            with _sdk_errors(f"{doing} in run {known}"):
                run = open_runs.get(known) or self._reopen(known)
                if run is None:
                    raise BackendError(f"aim: run {known} holding {artifact.ref} is gone from {self.repo}")
                try:
                    yield run
                finally:
                    if known not in open_runs:
                        self._close(run)

    def _move_alias(self, artifact: LoggedArtifact, alias: str, *, add: bool) -> None:
        with self._run_holding(artifact, f"moving alias {alias!r} of {artifact.ref}") as run:
            record = run.get((PARAM, artifact.ref))
            if record is not None:
                aliases = [a for a in record.get("aliases", []) if a != alias] + ([alias] if add else [])
                run[PARAM, artifact.ref] = {**record, "aliases": aliases}
            self._tag_aliases(run, artifact.name)

    def _upload(self, artifact: LoggedArtifact, run: Run) -> dict[str, Any]:
        """Upload files and manifest as run artifacts; returns the params that describe them."""
        base = f"{artifact.name}/{artifact.version}"
        with _sdk_errors(f"setting the artifacts URI of run {run.hash}"):
            if run.artifacts_uri is None:
                run.set_artifacts_uri(self.artifacts_uri)
            artifacts_uri = str(run.artifacts_uri)
        with tempfile.TemporaryDirectory(prefix="tracelet-aim-") as tmp:
            plan = plan_upload(artifact, Path(tmp))
            named = {f"{base}/files/{path}": plan.root / path for path in plan.uploads}
            named[f"{base}/{MANIFEST_NAME}"] = plan.manifest
            with _sdk_errors(f"uploading {artifact.ref} to run {run.hash}"):
                for name, local in named.items():
                    run.log_artifact(str(local), name=name, block=True)
                missing = sorted(set(named) - set(run.artifacts))
                if not missing:
                    self._record_store_paths(run, artifact, base)
            if missing:  # Aim's safe mode logs upload errors instead of raising them
                raise BackendError(f"aim: run {run.hash} did not keep {', '.join(missing)}")
        producer = artifact.producer
        return {
            "ref": artifact.ref, "name": artifact.name, "version": artifact.version,
            "digest": artifact.digest, "type": artifact.type.value, "inputs": artifact.inputs,
            "aliases": artifact.aliases, "producer": producer.key if producer else "",
            "path": base, "uri": f"{artifacts_uri.rstrip('/')}/{base}", "files": plan.uploads,
            "references": {**plan.references, **{r.name: r.uri for r in plan.external}},
            "referenced": plan.references,
        }

    @staticmethod
    def _record_store_paths(run: Run, artifact: LoggedArtifact, base: str) -> None:
        """Each uploaded file's ``path`` (what Aim shows as where it came from) is the store's
        blob (``blob_uri``), and the manifest's the version (``tracelet://<ref>``), not the
        staging folder the upload read them from (gone once the delivery ends)."""
        digests = {entry.path: entry.digest or "" for entry in artifact.files}
        digests.update({entry.path: entry.digest or "" for entry in artifact.objects})
        stored = run.meta_run_tree.subtree("artifacts")
        for name in list(run.artifacts):
            if name.startswith(f"{base}/files/"):
                digest = digests.get(name[len(f"{base}/files/"):])
                if digest:
                    stored.subtree(name)["path"] = artifact.store.blobs.blob_uri(digest)
            elif name == f"{base}/{MANIFEST_NAME}":
                stored.subtree(name)["path"] = f"tracelet://{artifact.ref}"

    def _result(self, artifact: LoggedArtifact, run_hash: str, uri: str) -> ArtifactResult:
        return ArtifactResult(backend=self.name, ok=True, version=run_hash, uri=uri, size_bytes=artifact.size_bytes)

    # -- reading back -----------------------------------------------------------------------
    def fetch(self, name: str, version: str, dest: Path) -> BackendCopy:
        """Download the run's copy of ``name:version`` through a fresh ``Repo`` into ``dest``."""
        ref = f"{name}:{version}"
        with self._lock:
            found = [(v.hash, v.versions[ref]) for v in self._scan() if ref in v.versions]
        if not found:
            raise BackendError(f"aim holds no copy of {ref}")
        run_hash, record = found[0]
        files = dest / "files"
        files.mkdir(parents=True, exist_ok=True)
        prefix = f"{record['path']}/files/"
        with _sdk_errors(f"downloading {ref} from run {run_hash}"):
            reader = Repo(self.repo)
            try:
                chunk = reader.request_tree("meta", run_hash, read_only=True, skip_read_optimization=True)
                artifacts = chunk.subtree(("meta", "chunks", run_hash)).get("artifacts") or {}
                for artifact_name, stored in artifacts.items():
                    if not artifact_name.startswith(prefix):
                        continue
                    relative = PurePosixPath(artifact_name[len(prefix):])
                    # Artifact.download keeps only the file name: give it the file's own folder.
                    stored.download(str(files.joinpath(*relative.parent.parts)))
            finally:
                reader.close()
        return BackendCopy(backend=self.name, ref=record["ref"], digest=record["digest"], local_path=files,
                           version=run_hash, uri=record["uri"], referenced=dict(record.get("referenced") or {}))

    # -- lifecycle status (through the outbox) ------------------------------------------------
    def set_status(self, artifact: LoggedArtifact, status: str) -> ArtifactResult:
        """The version's params record gets ``status``; the run holding it the tag
        ``tracelet.status=<status>:<ref>`` (one per version: a run can hold several)."""
        with self._run_holding(artifact, f"marking {artifact.ref} {status}") as run:
            record = run.get((PARAM, artifact.ref))
            if record is not None:
                run[PARAM, artifact.ref] = {**record, "status": status}
            for tag in [t for t in run.tags if t.startswith("tracelet.status=") and t.endswith(f":{artifact.ref}")]:
                run.remove_tag(tag)
            run.add_tag(status_tag(artifact.ref, status))
        return ArtifactResult(backend=self.name, ok=True, version=artifact.ref)
