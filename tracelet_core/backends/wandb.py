"""The Weights & Biases backend: each version as a ``wandb.Artifact`` logged by a W&B run.

Where a version goes:

* A W&B run of the tracelet experiment: ``name`` = the experiment's name, ``group`` = the
  tracelet run id, ``config["tracelet.run_id"]``, in ``project`` (else W&B's
  ``WANDB_PROJECT``, else ``tracelet``; fixed when the backend is made, so a retry from the
  outbox goes to the same project as the first try). The run is opened on the first delivery
  after ``start`` (an experiment that routes nothing to W&B leaves no empty run) and
  finished by ``stop``; a delivery without ``start`` opens and finishes a run of its own.
  Every run is a handle of this backend (``reinit="create_new"``), never ``wandb.run``, so
  several experiments and threads can log at once.
* One artifact version: name = the tracelet name with ``/`` written ``--`` (see
  :func:`wandb_artifact_name`; reversible), type = the tracelet type (``model`` for
  ``model``, ``checkpoint`` and ``weights``, so the W&B Registry accepts them; the tracelet
  type stays in the metadata's ``tracelet.type``), description, aliases =
  the tracelet aliases plus ``tracelet-<version>`` (W&B reserves ``vN``), metadata = the
  version's metadata plus the ``tracelet.*`` tags (ref, digest, inputs, producer, ...).
  Files are added at their artifact paths with the version's description as
  ``tracelet-manifest.json``; files over the size threshold (or ``force_reference``) are
  added as references to the store's blobs and the version's own references as references
  (``checksum=False``: W&B records the URI and never opens it, so no cloud client is made).
  Lineage is the ``tracelet.inputs`` metadata; ``use_artifact`` cannot resolve an input
  offline, so it is not called.

Natively, too: a ``config`` version's keys (flattened with ``.``) go into the run's config
(``run.config.update``), and the pictures, sounds and clips of ``image`` / ``audio`` /
``video`` versions are logged as ``wandb.Image`` / ``wandb.Audio`` / ``wandb.Video`` under
``<name>/<file>`` (a file W&B cannot decode is skipped with a warning). Alias moves arrive
through the outbox: online the artifact version's aliases are edited through ``wandb.Api``;
offline the version is logged again with its current aliases (identical content: ``wandb
sync`` makes no new version, it moves the alias) and each move is recorded in the run's
summary as ``tracelet.alias/<name>/<alias>`` = ``{"ref": ..., "at": ...}`` (``ref`` None
for a removal, which W&B cannot apply offline: take the alias off after ``wandb sync``).

Delivered, unconfirmed: offline W&B writes its run file when the run finishes, so a
delivery into a run that stays open returns ``confirmed=False`` (the outbox keeps it
``unconfirmed``, and ``tracelet sync`` delivers it again if the process dies first); when
the run finishes the backend confirms it in the version's store.

Idempotent per ref: a second delivery of the same version by the same backend returns the
first result; across processes (``tracelet sync``) a marker under
``<dir>/wandb/tracelet-deliveries/`` written after the run finished says the version is in a
run file already, so a retry logs nothing. Markers are written only after ``finish``: W&B
offline keeps records in memory until the run finishes, so a process killed before that
left nothing on disk and the retry must log again. Online, W&B also keeps one version per
content digest, so a retry that re-logs identical content makes no new version.

Read back: online through ``wandb.Api().artifact(...)``; offline W&B cannot read anything
back (``use_artifact`` and ``wandb.Api`` need the server), so ``fetch`` raises
``BackendError`` saying so. Offline copies live in the run's ``.wandb`` file (the result's
``uri``) and in ``WANDB_DATA_DIR/artifacts/staging`` until ``wandb sync``.

SDK errors (``wandb.Error``, ``ValueError`` from W&B's validators, ``OSError``) become
``BackendError`` with the cause chained.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import wandb
from wandb.errors import Error as WandbError
from wandb.sdk.artifacts.artifact_manifest_entry import ArtifactManifestEntry
from wandb.sdk.lib.paths import LogicalPath

from .._backends import (
    MANIFEST_NAME,
    ArtifactResult,
    BackendCopy,
    RunPerStartBackend,
    config_params,
    media_entries,
    plan_upload,
    sdk_errors,
    tracelet_tags,
)
from .._errors import BackendError
from .._model import ArtifactType

if TYPE_CHECKING:
    from .._logged import LoggedArtifact

__all__ = ["WandbBackend", "tracelet_name", "wandb_alias", "wandb_artifact_name", "wandb_type"]

logger = logging.getLogger(__name__)

MAX_NAME_LENGTH = 128  # W&B's limit on an artifact name
MARKER_FOLDER = "tracelet-deliveries"
DEFAULT_PROJECT = "tracelet"
OFFLINE_MODES = {"offline", "dryrun"}
MODEL_TYPES = {ArtifactType.MODEL, ArtifactType.CHECKPOINT, ArtifactType.WEIGHTS}
ALIAS_SUMMARY = "tracelet.alias"
#: Offline runs record lifecycle status changes under this summary key prefix.
STATUS_SUMMARY = "tracelet.status"


def wandb_type(artifact_type: ArtifactType) -> str:
    """The W&B artifact type of a tracelet type (``model`` for every kind of model)."""
    return "model" if artifact_type in MODEL_TYPES else artifact_type.value


def wandb_artifact_name(name: str) -> str:
    """The W&B artifact name of a tracelet name (W&B forbids ``/``).

    ``/`` becomes ``--``; a literal ``-`` followed by ``-``, ``_`` or ``/`` becomes ``-_`` so
    the mapping stays reversible (:func:`tracelet_name`); other names are unchanged
    (``my-model/train`` -> ``my-model--train``). A result over W&B's 128 characters is cut and
    ends with 12 hex digits of the name's SHA-256 (then not reversible; the metadata's
    ``tracelet.name`` still holds the name).
    """
    out: list[str] = []
    for i, char in enumerate(name):
        following = name[i + 1] if i + 1 < len(name) else ""
        if char == "/":
            out.append("--")
        elif char == "-" and following in ("-", "_", "/"):
            out.append("-_")
        else:
            out.append(char)
    mapped = "".join(out)
    if len(mapped) > MAX_NAME_LENGTH:
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        mapped = f"{mapped[:MAX_NAME_LENGTH - 14]}--{digest}"
    return mapped


def tracelet_name(artifact_name: str) -> str:
    """The tracelet name a (not shortened) W&B artifact name came from."""
    out: list[str] = []
    i = 0
    while i < len(artifact_name):
        char = artifact_name[i]
        following = artifact_name[i + 1] if i + 1 < len(artifact_name) else ""
        if char == "-" and following == "-":
            out.append("/")
            i += 2
        elif char == "-" and following == "_":
            out.append("-")
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def wandb_alias(version: str) -> str:
    """The W&B alias that names a tracelet version (W&B assigns ``vN`` itself)."""
    return f"tracelet-{version}"


def _sdk_errors(action: str) -> AbstractContextManager[None]:
    """Translate what the SDK raises while doing ``action`` into ``BackendError``."""
    return sdk_errors("wandb", action, (WandbError, ValueError, OSError))

class WandbBackend(RunPerStartBackend):
    """Delivers versions to W&B as artifacts (online, or offline into run files).

    ``mode`` defaults to W&B's own (``WANDB_MODE``) where the backend is used; ``project``
    (``WANDB_PROJECT``, else ``tracelet``) and ``dir`` (where W&B writes runs and this
    backend its delivery markers; ``WANDB_DIR``, else the working folder) are resolved when
    the backend is made, so ``tracelet sync`` in another process and folder uses the same.
    The API key comes from W&B's environment, never the config.
    """

    name = "wandb"

    def __init__(self, project: str | None = None, entity: str | None = None, mode: str | None = None,
                 dir: str | None = None) -> None:  # noqa: A002 - W&B's own name for it
        self.project = project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
        self.entity = entity
        self.mode = mode
        self.dir = str(Path(dir or os.environ.get("WANDB_DIR") or os.getcwd()).resolve())
        super().__init__()
        self._run: Any = None  # the open wandb Run
        self._delivered: dict[tuple[str, str], ArtifactResult] = {}  # (ref, digest) -> result
        #: markers to write once the run finished, and whether to confirm them in the store then
        self._unmarked: list[tuple[Path, ArtifactResult, LoggedArtifact | None]] = []

    def config(self) -> dict[str, Any]:
        return {"project": self.project, "entity": self.entity, "mode": self.mode, "dir": self.dir}

    # -- where -----------------------------------------------------------------------------
    @property
    def effective_mode(self) -> str:
        """``online``, ``offline`` or ``disabled``, as W&B will run."""
        mode = (self.mode or os.environ.get("WANDB_MODE") or "online").lower()
        return "offline" if mode in OFFLINE_MODES else mode

    def _marker(self, artifact: LoggedArtifact) -> Path:
        key = "\n".join([self.effective_mode, self.entity or os.environ.get("WANDB_ENTITY") or "",
                         self.project, artifact.ref, artifact.digest])
        return Path(self.dir) / "wandb" / MARKER_FOLDER / f"{hashlib.sha256(key.encode()).hexdigest()}.json"

    # -- runs -------------------------------------------------------------------------------
    def _end_run(self) -> None:
        self._finish()

    def _open(self, experiment_name: str, run_id: str | None) -> Any:
        if self._run is not None:
            return self._run
        Path(self.dir).mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(console="off", disable_git=True, disable_code=True, save_code=False)
        with _sdk_errors("opening a run"):
            self._run = wandb.init(
                project=self.project, entity=self.entity, mode=self.mode,  # type: ignore[arg-type]
                dir=self.dir, name=experiment_name, group=run_id, job_type="tracelet",
                config={"tracelet.run_id": run_id or "", "tracelet.experiment": experiment_name},
                reinit="create_new", settings=settings)
        return self._run

    def _finish(self) -> None:
        """Finish the open run, then mark what it holds as delivered."""
        run, self._run = self._run, None
        if run is None:
            return
        unmarked, self._unmarked = self._unmarked, []
        with _sdk_errors("finishing the run"):
            run.finish()
        for marker, result, confirm in unmarked:
            confirmed = dataclasses.replace(result, confirmed=True)
            marker.parent.mkdir(parents=True, exist_ok=True)
            partial = marker.with_suffix(".partial")
            partial.write_text(json.dumps(confirmed.to_dict()))
            partial.replace(marker)
            if confirm is not None:  # returned unconfirmed: the run file now holds it
                confirm.store.record_delivery(confirm, confirmed)

    # -- delivery ---------------------------------------------------------------------------
    def log(self, artifact: LoggedArtifact) -> ArtifactResult:
        key = (artifact.ref, artifact.digest)
        with self._lock:
            if key in self._delivered:
                return self._delivered[key]
            if self.effective_mode == "disabled":
                raise BackendError("wandb: W&B is disabled (WANDB_MODE=disabled); nothing was delivered")
            experiment, run_id = self._context or (artifact.producer.name if artifact.producer else None,
                                                   artifact.producer.run_id if artifact.producer else None)
            marker = self._marker(artifact)
            if marker.is_file():  # delivered by an earlier process (tracelet sync retrying)
                result = ArtifactResult(**json.loads(marker.read_text()))
                self._delivered[key] = result
                return result
            one_shot = self._context is None
            offline = self.effective_mode == "offline"
            try:
                run = self._open(experiment or "tracelet", run_id)
                result = self._log_to(run, artifact)
                if offline and not one_shot:  # in the run file only once the run finishes
                    result = dataclasses.replace(result, confirmed=False)
                self._delivered[key] = result
                self._unmarked.append((marker, result, artifact if offline and not one_shot else None))
            finally:
                if one_shot:
                    self._finish()
            return dataclasses.replace(result, confirmed=True) if one_shot else result

    def _log_to(self, run: Any, artifact: LoggedArtifact, native: bool = True) -> ArtifactResult:
        """Log ``artifact`` into ``run`` (with its config and media too, when ``native``)."""
        sizes = {e.path: e.size for e in artifact.files} | {e.path: e.size for e in artifact.objects}
        with tempfile.TemporaryDirectory(prefix="tracelet-wandb-") as tmp:
            plan = plan_upload(artifact, Path(tmp))
            with _sdk_errors(f"logging {artifact.ref}"):
                staged = wandb.Artifact(
                    wandb_artifact_name(artifact.name), type=wandb_type(artifact.type),
                    description=artifact.description,
                    metadata={**artifact.metadata, **tracelet_tags(artifact)})
                for path in plan.uploads:  # copied into W&B's staging folder (policy "mutable")
                    staged.add_file(str(plan.root / path), name=path)
                if MANIFEST_NAME not in sizes:
                    staged.add_file(str(plan.manifest), name=MANIFEST_NAME)
                for path, uri in plan.references.items():
                    _add_reference(staged, path, uri, sizes.get(path))
                for ref in plan.external:
                    _add_reference(staged, ref.name, ref.uri, ref.size)
                aliases = [*artifact.aliases, wandb_alias(artifact.version)]
                logged = run.log_artifact(staged, aliases=aliases)
            if native:
                self._log_native(run, artifact, plan.root)
            with _sdk_errors(f"logging {artifact.ref}"):
                if self.effective_mode == "offline":
                    # W&B assigns no version offline: the content digest names the copy, and the
                    # run file that holds it (until `wandb sync`) is where it is.
                    sync_file = Path(run.settings.sync_file).as_uri()
                    return ArtifactResult(backend=self.name, ok=True, version=staged.digest,
                                          uri=f"{sync_file}#{staged.name}:{aliases[-1]}",
                                          size_bytes=artifact.size_bytes)
                logged.wait()
                return ArtifactResult(backend=self.name, ok=True, version=logged.version,
                                      uri=f"wandb-artifact://{logged.qualified_name}",
                                      size_bytes=artifact.size_bytes)

    def _log_native(self, run: Any, artifact: LoggedArtifact, root: Path) -> None:
        """Config keys into the run config, media as W&B media objects."""
        params = config_params(artifact)
        if params:
            with _sdk_errors(f"updating the run config with {artifact.ref}"):
                run.config.update(params, allow_val_change=True)
        media: dict[str, Any] = {}
        kinds = {"image": wandb.Image, "audio": wandb.Audio, "video": wandb.Video}
        for kind, path in media_entries(artifact):
            local = root / path if (root / path).is_file() else artifact.path(path)
            try:
                media[f"{artifact.name}/{path}"] = kinds[kind](str(local))
            except Exception as exc:  # noqa: BLE001 - a file W&B cannot decode stays a file of the artifact
                logger.warning("wandb: %s of %s is not a %s W&B can read (%s); kept as a file only",
                               path, artifact.ref, kind, exc)
        if media:
            with _sdk_errors(f"logging the media of {artifact.ref}"):
                run.log(media)

    # -- alias moves (through the outbox) ---------------------------------------------------
    def set_alias(self, artifact: LoggedArtifact, alias: str) -> None:
        self._move_alias(artifact, alias, add=True)

    def remove_alias(self, artifact: LoggedArtifact, alias: str) -> None:
        self._move_alias(artifact, alias, add=False)

    def _artifact_path(self, name: str, version: str) -> str:
        """``entity/project/artifact:vN``: the W&B artifact version a tracelet version becomes."""
        versioned = f"{wandb_artifact_name(name)}:{wandb_alias(version)}"
        return "/".join(p for p in (self.entity, self.project, versioned) if p)

    @contextmanager
    def _offline_run_of(self, artifact: LoggedArtifact, waits: str) -> Iterator[Any]:
        """The (offline) run a change to ``artifact``'s copy is recorded in: the started run,
        else its producer's run, opened for the change and finished after. Disabled W&B
        raises: the change ``waits`` in the outbox."""
        if self.effective_mode == "disabled":
            raise BackendError(f"wandb: W&B is disabled (WANDB_MODE=disabled); {waits}")
        one_shot = self._context is None
        producer = artifact.producer
        experiment, run_id = self._context or (producer.name if producer else None,
                                               producer.run_id if producer else None)
        try:
            yield self._open(experiment or "tracelet", run_id)
        finally:
            if one_shot:
                self._finish()

    def _move_alias(self, artifact: LoggedArtifact, alias: str, *, add: bool) -> None:
        with self._lock:
            if self.effective_mode == "online":
                path = self._artifact_path(artifact.name, artifact.version)
                with _sdk_errors(f"moving alias {alias!r} of {path}"):
                    found: Any = wandb.Api().artifact(path)
                    if add and alias not in found.aliases:
                        found.aliases.append(alias)
                    elif not add and alias in found.aliases:
                        found.aliases.remove(alias)
                    found.save()
                return
            with self._offline_run_of(artifact, "the alias move waits") as run:
                if add:  # logged again with its aliases: `wandb sync` moves the alias
                    self._log_to(run, artifact, native=False)
                with _sdk_errors(f"recording alias {alias!r} of {artifact.ref}"):
                    run.summary[f"{ALIAS_SUMMARY}/{artifact.name}/{alias}"] = {
                        "ref": artifact.ref if add else None, "at": time.time()}

    # -- read back --------------------------------------------------------------------------
    def fetch(self, name: str, version: str, dest: Path) -> BackendCopy:
        if self.effective_mode != "online":
            raise BackendError(
                f"W&B {self.effective_mode} cannot read artifacts back: offline runs keep {name}:{version} "
                f"in their run files under {self.dir}/wandb until `wandb sync` uploads them; "
                "sync them, then fetch with WANDB_MODE=online")
        path = self._artifact_path(name, version)
        root = dest / "files"
        referenced: dict[str, str] = {}
        with _sdk_errors(f"reading {path}"):
            found: Any = wandb.Api().artifact(path)
            for entry in found.manifest.entries.values():
                if entry.ref:
                    referenced[str(entry.path)] = str(entry.ref)
                elif entry.path != MANIFEST_NAME:
                    entry.download(root=str(root))
            metadata = found.metadata
        return BackendCopy(backend=self.name, ref=str(metadata.get("tracelet.ref", "")),
                           digest=str(metadata.get("tracelet.digest", "")), local_path=root,
                           version=found.version, uri=f"wandb-artifact://{found.qualified_name}",
                           referenced=referenced)

    # -- lifecycle status (through the outbox) ------------------------------------------------
    def set_status(self, artifact: LoggedArtifact, status: str) -> ArtifactResult:
        """Online: the W&B artifact version's metadata ``tracelet.status``. Offline: the run's
        summary key ``tracelet.status/<name>/<version>`` (``wandb sync`` uploads it)."""
        with self._lock:
            if self.effective_mode == "online":
                path = self._artifact_path(artifact.name, artifact.version)
                with _sdk_errors(f"marking {path} {status}"):
                    found: Any = wandb.Api().artifact(path)
                    found.metadata = {**found.metadata, "tracelet.status": status}
                    found.save()
                return ArtifactResult(backend=self.name, ok=True, version=artifact.ref)
            with self._offline_run_of(artifact, "the status change waits") as run, \
                    _sdk_errors(f"recording the status of {artifact.ref}"):
                run.summary[f"{STATUS_SUMMARY}/{artifact.name}/{artifact.version}"] = {
                    "ref": artifact.ref, "status": status, "at": time.time()}
        return ArtifactResult(backend=self.name, ok=True, version=artifact.ref)

def _add_reference(staged: Any, path: str, uri: str, size: int | None) -> None:
    """Add ``uri`` as a reference at ``path`` the way ``add_reference(uri, checksum=False)``
    records it (the URI is the digest), without making the cloud client W&B's handlers make
    (boto3 / google-cloud-storage, which may look up credentials over the network)."""
    staged.manifest.add_entry(ArtifactManifestEntry(path=LogicalPath(path), ref=uri, digest=uri, size=size))

