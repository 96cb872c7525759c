"""The Aim backend: a version's files as run artifacts, its identity as run params.

Where a version goes:

* The Aim run of the tracelet run that logged it (found by the run param
  ``tracelet_run.run_id``, else created in experiment ``experiment`` or the tracelet
  experiment's name): the experiment's run between ``start`` and ``stop``; without
  ``start`` (a delivery from the outbox) the run of the version's producer.
* Its files as run artifacts named ``<name>/<version>/files/<path>`` and the version's
  description as ``<name>/<version>/tracelet-manifest.json``, stored under the run's
  artifacts URI (``artifacts_uri``, default ``file://<repo>/aim-artifacts``), set with
  ``Run.set_artifacts_uri`` before the first ``log_artifact``.
* Run params ``run["tracelet"][<ref>]``: ``ref``, ``digest``, ``inputs``, ``type``,
  ``aliases``, ``producer``, the artifact path, the uploaded files and the references
  (path or name -> URI). They are written last: a run holds them only once the version is
  wholly there, and the next delivery of the same ref finds them and uploads nothing.

Aim traps handled here: ``log_artifact`` swallows errors in Aim's safe mode, so every
upload is checked in ``run.artifacts``; another process sees a run's params only once the
run is indexed, so runs are read from their own chunk through a fresh ``Repo`` (a reused
one serves cached reads) and indexed when this backend closes them, so ``Repo.get_run``
elsewhere sees them; Aim caches a repo's run listing for half a second, so that cache is
cleared before each scan; and ``Artifact.download`` drops the folder part of the name, so
each file is downloaded into its own folder.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import warnings
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from .._backends import MANIFEST_NAME, ArtifactResult, Backend, BackendCopy, delivery_target, plan_upload, sdk_errors
from .._errors import BackendError, ConfigurationError

with warnings.catch_warnings():
    # Aim's structured-DB models still call SQLAlchemy 1.x's declarative_base() at import.
    warnings.filterwarnings("ignore", message=r"The ``declarative_base\(\)`` function", category=DeprecationWarning)
    from aim import Repo, Run  # Deferred: this module is imported only when "aim" is asked for
    from aim.sdk.index_manager import RepoIndexManager

if TYPE_CHECKING:
    from .._logged import LoggedArtifact

__all__ = ["AimBackend"]

logger = logging.getLogger(__name__)

PARAM = "tracelet"  # run["tracelet"][<ref>] describes one delivered version
RUN_PARAM = "tracelet_run"  # run["tracelet_run"] = {"run_id": ..., "name": ...}


def _run_hashes(repo: Repo) -> list[str]:
    """Every run of ``repo``, as of now. Aim caches each repo's run listing for 0.5 s,
    process-wide and keyed by path, so a run made a moment ago can be missing from it (and
    ``Run(hash)`` then raises ``MissingRunError``): clear that cache first."""
    forget = getattr(Repo._all_run_hashes, "cache_clear", None)
    if forget is not None:
        forget()
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

    def _run_for(self, artifact: LoggedArtifact, views: list[_RunView]) -> tuple[Run, bool]:
        """The Aim run for ``artifact`` open for writing, and whether it was opened just now."""
        experiment, tracelet_run, run_name = self._target(artifact)
        if tracelet_run in self._open:
            return self._open[tracelet_run], False
        existing = [v.hash for v in views if v.run_id == tracelet_run]
        with _sdk_errors(f"opening the run of tracelet run {tracelet_run}"):
            if existing:
                run = Run(existing[0], repo=self.repo)
            else:
                run = Run(repo=self.repo, experiment=experiment)
                try:
                    run.name = run_name
                    run[RUN_PARAM] = {"run_id": tracelet_run, "name": run_name}
                except Exception:
                    run.close()
                    raise
        if self._started is not None:
            self._open[tracelet_run] = run
        return run, True

    # -- delivery ---------------------------------------------------------------------------
    def log(self, artifact: LoggedArtifact) -> ArtifactResult:
        with self._lock:
            views = self._scan()
            open_hashes = {run.hash: run for run in self._open.values()}
            for view in views:
                held = open_hashes[view.hash].get(PARAM, {}) if view.hash in open_hashes else view.versions
                record = held.get(artifact.ref)
                if record is not None:
                    if record.get("digest") != artifact.digest:
                        raise BackendError(f"aim run {view.hash} holds {artifact.ref} with digest "
                                           f"{record.get('digest')}, not {artifact.digest}")
                    return self._result(artifact, view.hash, record["uri"])
            run, opened = self._run_for(artifact, views)
            try:
                record = self._upload(artifact, run)
                with _sdk_errors(f"recording {artifact.ref} in run {run.hash}"):
                    run[PARAM, artifact.ref] = record
                    if run.get((PARAM, artifact.ref)) != record:  # Aim's safe mode swallows errors
                        raise BackendError(f"aim: run {run.hash} did not keep the params of {artifact.ref}")
                return self._result(artifact, run.hash, record["uri"])
            finally:
                if opened and self._started is None:
                    self._close(run)  # a run opened for this delivery alone

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
