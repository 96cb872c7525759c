"""The MLflow backend: a version's files as run artifacts, models in the Model Registry.

Everything goes through an explicit ``MlflowClient`` and run id, never the fluent
``mlflow.start_run`` state, so logging from a watcher thread or another process works.

Where a version goes:

* The MLflow run of the tracelet run that logged it (found by the run tag
  ``tracelet.run_id``, else created): the experiment's run between ``start`` and ``stop``;
  without ``start`` (a delivery from the outbox) the run of the version's producer. The
  MLflow experiment is ``experiment_name`` or the tracelet experiment's name.
* Its files under the artifact path ``<name>/<version>/files/`` and the version's
  description beside them as ``<name>/<version>/tracelet-manifest.json``, so
  ``mlflow.artifacts.download_artifacts(run_id=..., artifact_path="<name>/<version>")``
  reads them. Files sent as references (over the size threshold, or ``force_reference``)
  and the version's own references are listed in the manifest and in a tag.
* Run tags ``tracelet/<name>/<version>/<field>`` for the fields of ``tracelet_tags``
  (``ref``, ``digest``, ``inputs``, ``type``, ``aliases``, ...) plus ``path`` and
  ``references``. A run holds many versions, so the keys carry the version; search with
  ``tags.`tracelet/<name>/<version>/ref` = '<name>:<version>'``. The tags are written
  last, in one batch: a run carries them only once the version is wholly there, and the
  next delivery of the same ref finds them and uploads nothing (idempotent per ref).
* ``model`` versions (with ``register_models``) also become a version of the registered
  model named after the tracelet name (``/`` -> ``.``), sourced from the run's
  ``files`` folder, tagged ``tracelet.ref``/``tracelet.digest``/..., with the tracelet
  aliases mirrored as registry aliases (``.`` -> ``_``; MLflow reserves ``latest`` and
  ``vN``, which are skipped).

SDK errors (``MlflowException``, and the ``OSError`` family that ``requests`` raises)
become ``BackendError`` with the cause chained.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run, RunTag, ViewType
from mlflow.exceptions import MlflowException

from .._backends import (
    MANIFEST_NAME,
    ArtifactResult,
    Backend,
    BackendCopy,
    delivery_target,
    plan_upload,
    sdk_errors,
    tracelet_tags,
)
from .._errors import BackendError
from .._model import ArtifactType

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from .._logged import LoggedArtifact

__all__ = ["MlflowBackend", "registered_model_name", "registry_alias", "run_tag_key"]

logger = logging.getLogger(__name__)

RUN_ID_TAG = "tracelet.run_id"
EXPERIMENT_TAG = "tracelet.experiment"
MAX_TAG_VALUE = 8000  # MLflow's limit on a run tag's value
_ALIAS_RESERVED = re.compile(r"[vV][0-9]+|latest", re.IGNORECASE)


def run_tag_key(name: str, version: str, field: str) -> str:
    """The run tag holding ``field`` of ``name:version`` (``tracelet/<name>/<version>/<field>``)."""
    return f"tracelet/{name}/{version}/{field}"


def registered_model_name(name: str) -> str:
    """The registered model a tracelet name maps to (MLflow forbids ``/`` in model names)."""
    return name.replace("/", ".")


def registry_alias(alias: str) -> str | None:
    """A tracelet alias as an MLflow registry alias, or None where MLflow cannot hold it."""
    mapped = alias.replace(".", "_")
    return None if _ALIAS_RESERVED.fullmatch(mapped) else mapped


def _quoted(value: str) -> str:
    """``value`` as a search-filter string literal (tracelet names and run ids never hold quotes)."""
    if "'" in value or "`" in value:
        raise BackendError(f"mlflow: cannot search for {value!r} (it contains a quote)")
    return f"'{value}'"


def _fit(value: str) -> str:
    return value if len(value) <= MAX_TAG_VALUE else value[:MAX_TAG_VALUE - 40] + f"... (full list in {MANIFEST_NAME})"


def _sdk_errors(action: str) -> AbstractContextManager[None]:
    """Translate what the SDK raises while doing ``action`` into ``BackendError``."""
    return sdk_errors("mlflow", action, (MlflowException, OSError))

def _shareable(uri: str) -> str | None:
    """A tracking URI that may be written to the catalog (none that embeds a password)."""
    return None if urlsplit(uri).password else uri


class MlflowBackend(Backend):
    """Delivers versions to an MLflow tracking server (and its Model Registry).

    ``tracking_uri`` defaults to MLflow's own (``MLFLOW_TRACKING_URI``, resolved when the
    backend is made, so ``tracelet sync`` in another process and folder delivers to the same
    store), ``experiment_name`` to the tracelet experiment's name, ``registry_uri`` to the
    tracking URI; ``artifact_location`` is used for MLflow experiments this backend creates.
    Credentials come from MLflow's environment variables, never from the config.
    """

    name = "mlflow"

    def __init__(self, tracking_uri: str | None = None, experiment_name: str | None = None,
                 registry_uri: str | None = None, register_models: bool = True,
                 artifact_location: str | None = None) -> None:
        self.tracking_uri = tracking_uri if tracking_uri is not None else _shareable(mlflow.get_tracking_uri())
        self.experiment_name = experiment_name
        self.registry_uri = registry_uri
        self.register_models = register_models
        self.artifact_location = artifact_location
        self._lock = threading.RLock()
        self._client: MlflowClient | None = None
        self._started: tuple[str, str] | None = None  # (experiment name, tracelet run id)
        self._runs: dict[tuple[str, str], tuple[str, str]] = {}  # (experiment, tracelet run) -> (id, artifact URI)
        self._opened: list[str] = []  # runs created since start(), ended by stop()

    def config(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "experiment_name": self.experiment_name,
                "registry_uri": self.registry_uri, "register_models": self.register_models,
                "artifact_location": self.artifact_location}

    @property
    def client(self) -> MlflowClient:
        """The client every call goes through (made on first use)."""
        with self._lock:
            if self._client is None:
                self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
            return self._client

    # -- runs -------------------------------------------------------------------------------
    def start(self, experiment_name: str, run_id: str) -> None:
        """Remember the experiment's run; the MLflow run is found or made on the first log,
        so an unreachable tracker never stops an experiment from starting."""
        with self._lock:
            self._started = (experiment_name, run_id)

    def stop(self) -> None:
        """End the MLflow runs this backend made since ``start`` (runs it found are left as
        they are). A tracker that cannot be reached leaves them running, with a warning."""
        with self._lock:
            opened, self._opened = self._opened, []
            self._started = None
            for run_id in opened:
                self._end_run(run_id)

    def _end_run(self, run_id: str) -> None:
        try:
            self.client.set_terminated(run_id, status="FINISHED")
        except (MlflowException, OSError) as exc:
            logger.warning("mlflow: could not end run %s: %s", run_id, exc)

    def _experiment_id(self, name: str) -> str:
        client = self.client
        with _sdk_errors(f"finding experiment {name!r}"):
            found = client.get_experiment_by_name(name)
            if found is None:
                try:
                    return client.create_experiment(name, artifact_location=self.artifact_location)
                except MlflowException as exc:
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    found = client.get_experiment_by_name(name)  # made by another process just now
        if found is None or found.lifecycle_stage != "active":
            raise BackendError(f"mlflow: experiment {name!r} is deleted; restore it or pass experiment_name")
        return str(found.experiment_id)

    def _target(self, artifact: LoggedArtifact) -> tuple[str, str, str]:
        return delivery_target(artifact, self._started, self.experiment_name)

    def _run_for(self, artifact: LoggedArtifact) -> tuple[str, str, bool]:
        """The MLflow run ``artifact`` goes to: (run id, artifact URI, made just now?)."""
        experiment, tracelet_run, run_name = self._target(artifact)
        cached = self._runs.get((experiment, tracelet_run))
        if cached is not None:
            return *cached, False
        experiment_id = self._experiment_id(experiment)
        client = self.client
        with _sdk_errors(f"finding the run of tracelet run {tracelet_run}"):
            found = client.search_runs([experiment_id], f"tags.`{RUN_ID_TAG}` = {_quoted(tracelet_run)}",
                                       run_view_type=ViewType.ACTIVE_ONLY, max_results=1,
                                       order_by=["attributes.start_time ASC"])
            created = not found
            run = found[0] if found else client.create_run(
                experiment_id, run_name=run_name, tags={RUN_ID_TAG: tracelet_run, EXPERIMENT_TAG: run_name})
        run_id, artifact_uri = run.info.run_id, run.info.artifact_uri
        self._runs[(experiment, tracelet_run)] = (run_id, artifact_uri)
        if created and self._started is not None:
            self._opened.append(run_id)
        return run_id, artifact_uri, created

    def _find_copy(self, name: str, version: str) -> Run | None:
        """The (oldest) active run in any experiment whose tags hold ``name:version``."""
        client = self.client
        key = run_tag_key(name, version, "ref")
        with _sdk_errors(f"searching for {name}:{version}"):
            experiment_ids: list[str] = []
            token: str | None = None
            while True:
                page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
                experiment_ids += [e.experiment_id for e in page]
                token = page.token
                if not token:
                    break
            if not experiment_ids:
                return None
            runs = client.search_runs(experiment_ids, f"tags.`{key}` = {_quoted(f'{name}:{version}')}",
                                      run_view_type=ViewType.ACTIVE_ONLY, max_results=1,
                                      order_by=["attributes.start_time ASC"])
        return runs[0] if runs else None

    # -- delivery ---------------------------------------------------------------------------
    def log(self, artifact: LoggedArtifact) -> ArtifactResult:
        with self._lock:
            existing = self._find_copy(artifact.name, artifact.version)
            if existing is not None:
                held = existing.data.tags.get(run_tag_key(artifact.name, artifact.version, "digest"))
                if held != artifact.digest:
                    raise BackendError(f"mlflow run {existing.info.run_id} holds {artifact.ref} with digest "
                                       f"{held}, not {artifact.digest}")
                model = self._register(artifact, existing.info.run_id, existing.info.artifact_uri)
                return self._result(artifact, existing.info.run_id, model)
            run_id, artifact_uri, created = self._run_for(artifact)
            try:
                references = self._upload(artifact, run_id)
                model = self._register(artifact, run_id, artifact_uri)
                self._tag(artifact, run_id, references, model)
            finally:
                if created and self._started is None:
                    self._end_run(run_id)  # a run made for this delivery alone
            return self._result(artifact, run_id, model)

    def _upload(self, artifact: LoggedArtifact, run_id: str) -> dict[str, str]:
        """Upload the files and manifest; returns what went as references (path or name -> URI)."""
        with tempfile.TemporaryDirectory(prefix="tracelet-mlflow-") as tmp:
            plan = plan_upload(artifact, Path(tmp))  # files/ and the manifest, side by side
            with _sdk_errors(f"uploading {artifact.ref} to run {run_id}"):
                self.client.log_artifacts(run_id, tmp, artifact_path=f"{artifact.name}/{artifact.version}")
        return {**plan.references, **{r.name: r.uri for r in plan.external}}

    def _register(self, artifact: LoggedArtifact, run_id: str, artifact_uri: str) -> ModelVersion | None:
        """The registry version of a ``model`` (made once per ref), its aliases mirrored."""
        if not (self.register_models and artifact.type is ArtifactType.MODEL):
            return None
        client = self.client
        model = registered_model_name(artifact.name)
        with _sdk_errors(f"registering {artifact.ref} as {model!r}"):
            try:
                owner = client.get_registered_model(model).tags.get("tracelet.name")
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                try:
                    client.create_registered_model(model, tags={"tracelet.name": artifact.name})
                except MlflowException as again:
                    if again.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                owner = client.get_registered_model(model).tags.get("tracelet.name")
            if owner not in (None, artifact.name):
                raise BackendError(f"mlflow: registered model {model!r} belongs to tracelet name {owner!r}, "
                                   f"not {artifact.name!r}")
            found = client.search_model_versions(
                f"name = {_quoted(model)} and tags.`tracelet.ref` = {_quoted(artifact.ref)}")
            if found:
                version = found[0]
            else:
                source = f"{artifact_uri.rstrip('/')}/{artifact.name}/{artifact.version}/files"
                version = client.create_model_version(model, source=source, run_id=run_id,
                                                      tags=tracelet_tags(artifact),
                                                      description=artifact.description)
            for alias in artifact.aliases:
                mapped = registry_alias(alias)
                if mapped is None:
                    logger.warning("mlflow: alias %r of %s cannot be a registry alias", alias, artifact.ref)
                    continue
                client.set_registered_model_alias(model, mapped, version.version)
        return version

    def _tag(self, artifact: LoggedArtifact, run_id: str, references: dict[str, str],
             model: ModelVersion | None) -> None:
        """Write the version's run tags, in one batch, last: they mark the copy as complete."""
        fields = {key.removeprefix("tracelet."): value for key, value in tracelet_tags(artifact).items()}
        fields["path"] = f"{artifact.name}/{artifact.version}"
        fields["references"] = json.dumps(references, sort_keys=True)
        if model is not None:
            fields["registered_model"] = f"{model.name}/{model.version}"
        tags = [RunTag(run_tag_key(artifact.name, artifact.version, k), _fit(v)) for k, v in fields.items()]
        with _sdk_errors(f"tagging run {run_id} with {artifact.ref}"):
            self.client.log_batch(run_id, tags=tags)

    def _result(self, artifact: LoggedArtifact, run_id: str, model: ModelVersion | None) -> ArtifactResult:
        if model is not None:
            return ArtifactResult(backend=self.name, ok=True, version=str(model.version),
                                  uri=f"models:/{model.name}/{model.version}", size_bytes=artifact.size_bytes)
        return ArtifactResult(backend=self.name, ok=True, version=run_id,
                              uri=f"runs:/{run_id}/{artifact.name}/{artifact.version}/files",
                              size_bytes=artifact.size_bytes)

    # -- reading back -----------------------------------------------------------------------
    def fetch(self, name: str, version: str, dest: Path) -> BackendCopy:
        """Download the run's copy of ``name:version`` (files and manifest) into ``dest``."""
        with self._lock:
            run = self._find_copy(name, version)
        if run is None:
            raise BackendError(f"mlflow holds no copy of {name}:{version}")
        run_id = run.info.run_id
        dest.mkdir(parents=True, exist_ok=True)
        with _sdk_errors(f"downloading {name}:{version} from run {run_id}"):
            local = Path(self.client.download_artifacts(run_id, f"{name}/{version}", str(dest)))
        if not (local / MANIFEST_NAME).is_file():
            raise BackendError(f"mlflow run {run_id} holds {name}:{version} without its {MANIFEST_NAME}")
        manifest = json.loads((local / MANIFEST_NAME).read_text())
        files = local / "files"
        files.mkdir(exist_ok=True)  # absent where every file went as a reference
        tags = run.data.tags
        return BackendCopy(backend=self.name, ref=tags[run_tag_key(name, version, "ref")],
                           digest=tags[run_tag_key(name, version, "digest")], local_path=files,
                           version=run_id, uri=f"runs:/{run_id}/{name}/{version}/files",
                           referenced=dict(manifest.get("referenced", {})))
