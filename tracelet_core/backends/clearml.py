"""The ClearML backend: each version as one artifact of a ClearML task.

Where a version goes:

* A ClearML task of the tracelet experiment: ``task_name`` (else the experiment's name) in
  ``project`` (else ``tracelet``), type ``custom``, tagged ``tracelet``, with the user
  properties ``tracelet.run_id`` and ``tracelet.experiment``. The task is opened on the first
  delivery after ``start`` and closed by ``stop``; a delivery without ``start`` opens and
  closes a task of its own. Online the task is made with ``Task.create`` (a handle of this
  backend, never the process's main task). Offline ClearML only has ``Task.init``, which
  makes *the* task of the process, so offline one backend at a time holds a task per
  process and a delivery made while another ClearML task is open fails with
  ``BackendError`` (the outbox keeps it; ``tracelet sync`` delivers it from its own
  process). Tasks are opened without framework hooks (ClearML would otherwise patch
  ``torch.save``), stream capture, argparse binding, resource monitoring or repository
  detection (which may look up outside hosts and run ``git``). ClearML reports through a
  subprocess by default, which makes closing a task take ~12 s; set
  ``sdk.development.report_use_subprocess: false`` in ``clearml.conf`` to report in-process.
* One artifact named after the ref (``name:vN``): a folder holding the files at their
  artifact paths under ``files/`` and the version's description as
  ``tracelet-manifest.json``, which ClearML uploads as a zip archive (``upload_artifact``
  with ``wait_on_upload``). Its metadata (ClearML keeps strings) carries the ``tracelet.*``
  tags, ``tracelet.description``, ``tracelet.metadata`` (the version's metadata as JSON) and
  ``tracelet.references``, a JSON object path -> URI of the files sent as references to the
  store's blobs (over the size threshold, or ``force_reference``) and of the version's own
  references. ClearML can only link remote URLs (not ``file://``) as artifacts, so the
  references are listed rather than linked.
* ``model`` versions are delivered the same way offline: ``OutputModel.update_weights``
  fails in ClearML 2.1 offline (it asks the placeholder model whether it is published
  before taking its offline branch: ``'DummyModel' object has no attribute 'locked'``;
  ``tests/backends/test_clearml.py`` keeps that evidence), and no public offline path
  registers a model. Online they also become an ``OutputModel`` of the task (the version's
  files as its weights package, tagged with the ref).
* Natively, too: a ``config`` version's keys (flattened with ``.``) through
  ``task.connect`` (ClearML's ``General`` hyperparameters), and the pictures, sounds and
  clips of ``image`` / ``audio`` / ``video`` versions as debug samples
  (``Logger.report_image`` / ``report_media``, title = the name, series = the file,
  iteration = the version number). Alias moves arrive through the outbox on the task
  holding the version, as the task tag ``<name>:<alias>@<version>`` (a task can hold
  several versions of one name; ``add_tags`` / ``set_tags``, which offline ClearML writes
  to the session's ``task.json``; user properties cannot change offline).

Idempotent per ref: a backend returns its earlier result for a version it delivered, and a
marker per project and ref under ``<ClearML cache>/tracelet-deliveries/`` (task id and
digest), written right after the upload (which ClearML offline has already written to the
session's ``task.json``), lets a retry from another process (``tracelet sync``) find the
earlier copy and ``fetch`` find the task.

Read back: ``fetch`` finds the task (marker, else the tracelet-tagged tasks: the offline
sessions, or the project's tasks online), opens it with ``Task.get_task(task_id=...)`` and
extracts the artifact with ``Artifact.get_local_copy()``; offline this works from the
session folder, also in a fresh process.

SDK errors (``ValueError``, ``OSError``, ``RuntimeError`` including ClearML's
``UsageError``, and its session errors) become ``BackendError`` with the cause chained.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearml import Task
from clearml.backend_api.session.errors import SessionError
from clearml.config import get_cache_dir, get_offline_dir

from .._backends import (
    ArtifactResult,
    BackendCopy,
    RunPerStartBackend,
    config_params,
    media_entries,
    plan_upload,
    release_displaced_aliases,
    sdk_errors,
    tracelet_tags,
)
from .._errors import BackendError
from .._model import ArtifactType
from .._trackers import status_tag

if TYPE_CHECKING:
    from .._logged import LoggedArtifact

__all__ = ["ClearMLBackend", "alias_tag"]

DEFAULT_PROJECT = "tracelet"
MARKER_FOLDER = "tracelet-deliveries"
TASK_TAG = "tracelet"
REFERENCES_KEY = "tracelet.references"
#: Every framework hook ClearML's Task.init knows, off; ``detect_repository`` only counts
#: when given in this dict (``auto_connect_frameworks=False`` still detects the repository).
NO_FRAMEWORKS = dict.fromkeys(
    ["matplotlib", "tensorflow", "tensorboard", "pytorch", "xgboost", "scikit", "fastai", "lightgbm", "hydra",
     "detect_repository", "tfdefines", "joblib", "megengine", "catboost", "gradio"], False)
_TRUE = {"1", "true", "yes", "on"}

#: ClearML offline has one task per process (Task.init's); this guards opening and closing it.
_offline_lock = threading.Lock()


def alias_tag(name: str, alias: str, version: str) -> str:
    """The task tag saying that ``alias`` of ``name`` is ``version`` of the task
    (``data/clean:production@v2``; a task can hold several versions of one name)."""
    return f"{name}:{alias}@{version}"


def _sdk_errors(action: str) -> AbstractContextManager[None]:
    """Translate what the SDK raises while doing ``action`` into ``BackendError``."""
    return sdk_errors("clearml", action, (ValueError, OSError, RuntimeError, SessionError))

class ClearMLBackend(RunPerStartBackend):
    """Delivers versions to ClearML as task artifacts (online, or offline into session folders).

    ``offline`` defaults to ClearML's own setting (``CLEARML_OFFLINE_MODE`` or an earlier
    ``Task.set_offline``); ``True`` / ``False`` switch ClearML's process-wide mode. The server
    and credentials come from ClearML's configuration, never from this config.
    """

    name = "clearml"

    def __init__(self, project: str | None = None, task_name: str | None = None,
                 offline: bool | None = None) -> None:
        self.project = project or DEFAULT_PROJECT
        self.task_name = task_name
        self.offline = offline
        super().__init__()
        self._task: Any = None  # the open clearml Task
        self._delivered: dict[tuple[str, str], ArtifactResult] = {}  # (ref, digest) -> result

    def config(self) -> dict[str, Any]:
        return {"project": self.project, "task_name": self.task_name, "offline": self.offline}

    # -- where -----------------------------------------------------------------------------
    def _offline(self) -> bool:
        """Whether ClearML runs offline for this backend (switching ClearML's process-wide
        mode to match when ``offline`` was given, or CLEARML_OFFLINE_MODE was set after
        ClearML read it at import)."""
        wanted = self.offline
        if wanted is None:
            wanted = Task.is_offline() or os.environ.get("CLEARML_OFFLINE_MODE", "").lower() in _TRUE
        if wanted != Task.is_offline():
            with _sdk_errors("switching offline mode"):
                Task.set_offline(wanted)
        return wanted

    def _marker(self, ref: str) -> Path:
        """Where this backend notes which task holds ``ref`` (and its digest)."""
        key = "\n".join(["offline" if self._offline() else "online", self.project, ref])
        return Path(get_cache_dir()) / MARKER_FOLDER / f"{hashlib.sha256(key.encode()).hexdigest()}.json"

    # -- tasks ------------------------------------------------------------------------------
    def _end_run(self) -> None:
        self._close()

    def _open(self, experiment_name: str, run_id: str | None) -> Any:
        if self._task is not None:
            return self._task
        current: Any
        task: Any
        task_name = self.task_name or experiment_name
        with _sdk_errors(f"opening a task in {self.project!r}"):
            if self._offline():
                with _offline_lock:
                    current = Task.current_task()
                    if current is not None:
                        raise BackendError(
                            f"clearml: offline ClearML has one task per process and task {current.id} "
                            f"({current.name!r}) is open; close it, or deliver later with `tracelet sync`")
                    task = Task.init(project_name=self.project, task_name=task_name, task_type="custom",
                                     tags=[TASK_TAG], reuse_last_task_id=False, auto_connect_frameworks=NO_FRAMEWORKS,
                                     auto_resource_monitoring=False, auto_connect_streams=False,
                                     auto_connect_arg_parser=False)
            else:
                task = Task.create(project_name=self.project, task_name=task_name, task_type="custom",
                                   add_task_init_call=False, packages="", detect_repository=False)
                task.add_tags([TASK_TAG])
                task.mark_started(force=True)
            task.set_user_properties(**{"tracelet.run_id": run_id or "", "tracelet.experiment": experiment_name})
        self._task = task
        return task

    def _close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        with _sdk_errors(f"closing task {task.id}"):
            if self._offline():
                with _offline_lock:
                    task.close()
            else:
                task.mark_completed(force=True)

    # -- delivery ---------------------------------------------------------------------------
    def log(self, artifact: LoggedArtifact) -> ArtifactResult:
        key = (artifact.ref, artifact.digest)
        with self._lock:
            if key in self._delivered:
                return self._delivered[key]
            marker = self._marker(artifact.ref)
            noted = json.loads(marker.read_text()) if marker.is_file() else {}
            if noted.get("digest") == artifact.digest:  # delivered by an earlier process (tracelet sync)
                result = ArtifactResult(**noted["result"])
                self._delivered[key] = result
                return result
            producer = artifact.producer
            experiment, run_id = self._context or (producer.name if producer else None,
                                                   producer.run_id if producer else None)
            one_shot = self._context is None
            try:
                task = self._open(experiment or "tracelet", run_id)
                result = self._upload(task, artifact)
                if artifact.aliases:  # the version's own aliases, as alias moves tag them
                    with _sdk_errors(f"tagging the aliases of {artifact.ref}"):
                        task.add_tags([alias_tag(artifact.name, a, artifact.version) for a in artifact.aliases])
                marker.parent.mkdir(parents=True, exist_ok=True)
                partial = marker.with_suffix(".partial")
                partial.write_text(json.dumps({"ref": artifact.ref, "digest": artifact.digest, "task_id": task.id,
                                               "result": result.to_dict()}))
                partial.replace(marker)
                self._delivered[key] = result
                release_displaced_aliases(self, artifact)
            finally:
                if one_shot:
                    self._close()
            return result

    def _upload(self, task: Any, artifact: LoggedArtifact) -> ArtifactResult:
        with tempfile.TemporaryDirectory(prefix="tracelet-clearml-") as tmp:
            plan = plan_upload(artifact, Path(tmp) / "version")
            plan.root.mkdir(parents=True, exist_ok=True)
            references = {**plan.references, **{ref.name: ref.uri for ref in plan.external}}
            metadata = {**tracelet_tags(artifact), REFERENCES_KEY: json.dumps(references, sort_keys=True),
                        "tracelet.description": artifact.description or "",
                        "tracelet.metadata": json.dumps(artifact.metadata, sort_keys=True, default=str)}
            with _sdk_errors(f"uploading {artifact.ref}"):
                uploaded = task.upload_artifact(artifact.ref, artifact_object=str(plan.root.parent),
                                                metadata=metadata, wait_on_upload=True)
                if not uploaded:
                    raise BackendError(f"clearml: uploading {artifact.ref} failed (ClearML did not say why)")
                url = str(task.artifacts[artifact.ref].url)
            self._log_native(task, artifact, plan.root)
        return ArtifactResult(backend=self.name, ok=True, version=task.id,
                              uri=Path(url).as_uri() if url.startswith("/") else url, size_bytes=artifact.size_bytes)

    def _log_native(self, task: Any, artifact: LoggedArtifact, root: Path) -> None:
        """Config keys as hyperparameters, media as debug samples, models as OutputModels
        (online only: see the module docstring)."""
        params = config_params(artifact)
        with _sdk_errors(f"reporting {artifact.ref} natively"):
            if params:
                task.connect({key: value for key, value in params.items()})
            media = media_entries(artifact)
            if media:
                reporter = task.get_logger()
                for kind, path in media:
                    local = str(artifact.path(path))  # lasts beyond this delivery: ClearML uploads later
                    if kind == "image":
                        reporter.report_image(artifact.name, path, iteration=artifact.version_number, local_path=local)
                    else:
                        reporter.report_media(artifact.name, path, iteration=artifact.version_number, local_path=local)
                reporter.flush()
            if artifact.type is ArtifactType.MODEL and not self._offline():
                from clearml import OutputModel  # Deferred: only online

                model = OutputModel(task=task, name=artifact.name, comment=artifact.description or "",
                                    tags=[f"tracelet.ref:{artifact.ref}"])
                model.update_weights_package(weights_path=str(root), auto_delete_file=False, async_enable=False)

    # -- alias moves (through the outbox) ---------------------------------------------------
    def set_alias(self, artifact: LoggedArtifact, alias: str) -> None:
        """Tag the task holding the version ``<name>:<alias>``."""
        self._move_alias(artifact, alias, add=True)

    def remove_alias(self, artifact: LoggedArtifact, alias: str) -> None:
        """Take the tag ``<name>:<alias>`` off the task holding the version."""
        self._move_alias(artifact, alias, add=False)

    def _move_alias(self, artifact: LoggedArtifact, alias: str, *, add: bool) -> None:
        tag = alias_tag(artifact.name, alias, artifact.version)
        with self._lock, _sdk_errors(f"moving alias {alias!r} of {artifact.ref}"):
            task_id = self._task_holding(artifact)
            task = self._task if self._task is not None and self._task.id == task_id else Task.get_task(task_id=task_id)
            tags = list(task.get_tags() or [])
            if add and tag not in tags:
                task.add_tags([tag])
            elif not add and tag in tags:
                task.set_tags([t for t in tags if t != tag])

    def _task_holding(self, artifact: LoggedArtifact) -> str:
        """The task the version was delivered to: from this backend's marker, else the
        outbox's record of the delivery."""
        marker = self._marker(artifact.ref)
        if marker.is_file():
            noted = json.loads(marker.read_text())
            if noted.get("digest") == artifact.digest:
                return str(noted["task_id"])
        for row in artifact.store.deliveries(artifact.ref):
            if row.backend == self.name and row.result and row.result.get("version"):
                return str(row.result["version"])
        raise BackendError(f"clearml: no task is known to hold {artifact.ref}")

    # -- read back --------------------------------------------------------------------------
    def _candidate_tasks(self, ref: str) -> list[str]:
        """Ids of tasks that may hold ``ref``: the one its marker names, then every tracelet task."""
        marker = self._marker(ref)
        ids = [json.loads(marker.read_text())["task_id"]] if marker.is_file() else []
        if self._offline():
            ids += [p.name for p in sorted(Path(get_offline_dir()).glob("offline-*")) if p.is_dir()]
        else:
            tasks: list[Any] = Task.get_tasks(project_name=self.project, tags=[TASK_TAG])
            ids += [t.id for t in tasks]
        return list(dict.fromkeys(ids))

    def fetch(self, name: str, version: str, dest: Path) -> BackendCopy:
        ref = f"{name}:{version}"
        with _sdk_errors(f"looking for {ref}"):
            candidates = self._candidate_tasks(ref)
        unreadable: list[str] = []
        task: Any
        for task_id in candidates:
            try:
                task = Task.get_task(task_id=task_id)
            except (ValueError, OSError, RuntimeError, SessionError) as exc:  # gone since (a stale marker)
                unreadable.append(f"{task_id}: {exc}")
                continue
            held = task.artifacts.get(ref)
            if held is None:
                continue
            with _sdk_errors(f"reading {ref} from task {task_id}"):
                extracted = Path(held.get_local_copy(raise_on_error=True))
                shutil.copytree(extracted, dest / "version")
            metadata = dict(held.metadata)
            url = str(held.url)
            return BackendCopy(backend=self.name, ref=metadata.get("tracelet.ref", ""),
                               digest=metadata.get("tracelet.digest", ""), local_path=dest / "version" / "files",
                               version=task_id, uri=Path(url).as_uri() if url.startswith("/") else url,
                               referenced=json.loads(metadata.get(REFERENCES_KEY) or "{}"))
        also = f" (unreadable: {'; '.join(unreadable)})" if unreadable else ""
        raise BackendError(f"clearml: no task in project {self.project!r} holds {ref}{also}")

    # -- lifecycle status (through the outbox) ------------------------------------------------
    def set_status(self, artifact: LoggedArtifact, status: str) -> ArtifactResult:
        """The task holding the version gets the tag ``tracelet.status=<status>:<ref>`` (one per
        version, replacing its previous status tag)."""
        tag = status_tag(artifact.ref, status)
        with self._lock, _sdk_errors(f"marking {artifact.ref} {status}"):
            task_id = self._task_holding(artifact)
            task = self._task if self._task is not None and self._task.id == task_id else Task.get_task(task_id=task_id)
            tags = list(task.get_tags() or [])
            kept = [t for t in tags if not (t.startswith("tracelet.status=") and t.endswith(f":{artifact.ref}"))]
            if kept + [tag] != tags:
                task.set_tags([*kept, tag])
        return ArtifactResult(backend=self.name, ok=True, version=artifact.ref)
