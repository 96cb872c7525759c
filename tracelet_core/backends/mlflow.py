"""The MLflow backend: a version's files as run artifacts, models in the Model Registry.

Everything goes through an explicit ``MlflowClient`` and run id, never the fluent
``mlflow.start_run`` state, so logging from a watcher thread or another process works.

Where a version goes:

* The MLflow run of the tracelet run that logged it (found by the run tag
  ``tracelet.run_id``, else created with the context tags MLflow's fluent API adds:
  ``mlflow.user``, ``mlflow.source.*``): the experiment's run between ``start`` and
  ``stop``; without ``start`` (a delivery from the outbox) the run of the version's producer.
  The MLflow experiment is ``experiment`` (else ``MLFLOW_EXPERIMENT_NAME``), else the Dagster
  job or Prefect flow that produced the version (never ``__ephemeral_asset_job__``: then the
  asset's step), else the tracelet experiment's name (see ``delivery_target``).
* Its files under the artifact path ``<name>/<version>/files/`` and the version's
  description beside them as ``<name>/<version>/tracelet-manifest.json`` (inputs, producer,
  what went as references), so ``mlflow.artifacts.download_artifacts(run_id=...,
  artifact_path="<name>/<version>")`` reads them.
* One run tag per version, ``tracelet/<name>/<version>``, its value compact JSON: ``ref``,
  ``digest``, ``type``, ``aliases`` and what was made (``registered_model``, ``model_id``,
  ``flavor``, or ``flavor_error`` / ``params_conflicts``); no local paths. It is written
  last: a run carries it only once the version is wholly there, and the next delivery of the
  same ref to that run finds it and uploads nothing (idempotent per ref; a retry goes to the
  same run, found by ``tracelet.run_id``, so only that run is read).
* ``model`` versions holding an ``add_model`` entry of a framework MLflow has a flavor for
  (pytorch, sklearn; xgboost, lightgbm, tensorflow where installed) also become an MLflow
  Model the way ``mlflow.<flavor>.log_model`` makes one (module ``_mlflow_native``): an
  MLflow 3 logged model with the run's context tags and params plus the version's metadata,
  its ``MLmodel`` naming its ``model_id`` and run, the example and environment files, and
  linked as the run's output (the run page's "Logged models"). tracelet's own store keeps
  its safe format; the MLflow copy is what ``mlflow.pyfunc.load_model`` loads. A model that
  cannot be rebuilt (a torch class that cannot be imported or made without arguments) stays
  run files, and the record's ``flavor_error`` says why.
* ``model`` versions (with ``register_models``) also become a version of the registered
  model named after the tracelet name (``/`` -> ``.``), sourced from that logged model (its
  ``model_id`` set; else the run's ``files`` folder), tagged ``tracelet.ref`` /
  ``tracelet.digest`` / ..., with the tracelet aliases mirrored as registry aliases (``.`` ->
  ``_``; MLflow reserves ``latest`` and ``vN``, which are skipped). Later ``set_alias`` /
  ``remove_alias`` arrive through the outbox and move the registry alias, the
  ``tracelet.aliases`` tags of the model version and logged model, and the record's aliases.
* ``config`` versions: their keys (flattened with ``.``) as run params, at most 100 per
  ``log_batch`` and values cut to MLflow's 6,000 characters; a key the run already holds
  with another value is left as it is (MLflow params are immutable) and listed in the
  record's ``params_conflicts``. ``image`` versions: each picture also through
  ``MlflowClient.log_image`` (key ``<name>/<file stem>``, step = the version number).
  Dataset inputs of the run (``MlflowClient.log_inputs``, tagged ``tracelet.ref``): a
  ``dataset`` version's DataFrames (parquet objects, an MLflow pandas dataset named
  ``<ref>/<object>``) and the version's tracelet inputs that are ``dataset`` versions.
* Runs this backend made or delivered to while they were running are ended ``FINISHED`` by
  ``stop`` (also under ``tracelet sync``, which starts and stops backends itself).

A tracker that does not answer: every call runs with MLflow's HTTP retries and timeout
bounded by the delivery's ``TRACELET_BACKEND_TIMEOUT`` (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``
1, no back-off, ``MLFLOW_HTTP_REQUEST_TIMEOUT`` a quarter of it), so ``log`` fails with a
``BackendError`` inside the limit instead of retrying for minutes; values the user set in
the environment are left alone.

SDK errors (``MlflowException``, and the ``OSError`` family that ``requests`` raises)
become ``BackendError`` with the cause chained.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import mlflow
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Param, Run, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from .._backends import (
    MANIFEST_NAME,
    ArtifactResult,
    Backend,
    BackendCopy,
    config_params,
    delivery_target,
    flatten,
    media_entries,
    plan_upload,
    release_displaced_aliases,
    sdk_errors,
    tracelet_tags,
)
from .._errors import BackendError
from .._model import ArtifactType
from ._mlflow_http import DEFAULT_TIMEOUT, bounded_http
from ._mlflow_native import FlavorError, dataset_inputs, flavored_model

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from .._logged import LoggedArtifact

__all__ = ["MlflowBackend", "flavored_model", "registered_model_name", "registry_alias", "run_tag_key"]

logger = logging.getLogger(__name__)

RUN_ID_TAG = "tracelet.run_id"
EXPERIMENT_TAG = "tracelet.experiment"
MAX_TAG_VALUE = 8000  # MLflow's limit on a run tag's value
MAX_PARAM_VALUE = 6000  # MLflow's limit on a param's value
MAX_PARAMS_PER_BATCH = 100  # MLflow's limit on params in one log_batch
_ALIAS_RESERVED = re.compile(r"[vV][0-9]+|latest", re.IGNORECASE)


def run_tag_key(name: str, version: str, field: str | None = None) -> str:
    """The run tag holding the record of ``name:version`` (``tracelet/<name>/<version>``);
    with ``field``, a tag of its own beside it (``tracelet/<name>/<version>/<field>``)."""
    base = f"tracelet/{name}/{version}"
    return f"{base}/{field}" if field else base


def version_record(tags: dict[str, str], name: str, version: str) -> dict[str, Any] | None:
    """The record run tag of ``name:version`` parsed (``ref``, ``digest``, ``type``,
    ``aliases``, ...), or None where the run holds no such (whole) record."""
    raw = tags.get(run_tag_key(name, version))
    try:
        record = json.loads(raw) if raw else None
    except ValueError:
        return None
    return record if isinstance(record, dict) and record.get("ref") == f"{name}:{version}" else None


def _record_value(record: dict[str, Any]) -> str:
    """``record`` as a run tag value: compact JSON, within MLflow's limit (a long list of
    param conflicts becomes its count)."""
    text = json.dumps(record, separators=(",", ":"))
    if len(text) > MAX_TAG_VALUE and "params_conflicts" in record:
        text = json.dumps({**record, "params_conflicts": len(record["params_conflicts"])}, separators=(",", ":"))
    return text


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


def _context_tags(tags: dict[str, str]) -> dict[str, str]:
    """``tags`` plus the context tags MLflow's fluent API adds to what it makes
    (``mlflow.user``, ``mlflow.source.name`` / ``type`` / ``git.commit``, ...)."""
    from mlflow.tracking.context import registry  # Deferred for import perf

    return {key: str(value) for key, value in registry.resolve_tags(tags).items()}


def _sdk_errors(action: str) -> AbstractContextManager[None]:
    """Translate what the SDK raises while doing ``action`` into ``BackendError``."""
    return sdk_errors("mlflow", action, (MlflowException, OSError))

def _shareable(uri: str) -> str | None:
    """A tracking URI that may be written to the catalog (none that embeds a password)."""
    return None if urlsplit(uri).password else uri



def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= MAX_PARAM_VALUE else text[:MAX_PARAM_VALUE]


class MlflowBackend(Backend):
    """Delivers versions to an MLflow tracking server (and its Model Registry).

    ``tracking_uri`` defaults to MLflow's own (``MLFLOW_TRACKING_URI``, resolved when the
    backend is made, so ``tracelet sync`` in another process and folder delivers to the same
    store); ``experiment`` to MLflow's ``MLFLOW_EXPERIMENT_NAME`` (resolved the same way), else
    the Dagster job or Prefect flow that produced the version, else the tracelet experiment's
    name (``experiment_name`` is the older spelling of ``experiment``); ``registry_uri`` to the
    tracking URI; ``artifact_location`` is used for MLflow experiments this backend creates.
    Credentials come from MLflow's environment variables, never from the config.
    """

    name = "mlflow"

    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None,
                 registry_uri: str | None = None, register_models: bool = True,
                 artifact_location: str | None = None, experiment_name: str | None = None) -> None:
        self.tracking_uri = tracking_uri if tracking_uri is not None else _shareable(mlflow.get_tracking_uri())
        self.experiment = experiment or experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or None
        self.registry_uri = registry_uri
        self.register_models = register_models
        self.artifact_location = artifact_location
        self._lock = threading.RLock()
        self._client: MlflowClient | None = None
        self._started: tuple[str, str] | None = None  # (experiment name, tracelet run id)
        self._runs: dict[tuple[str, str], tuple[str, str, str]] = {}  # (experiment, tracelet run) ->
        # (run id, artifact URI, experiment id)
        self._opened: list[str] = []  # runs made or found running since start(), ended by stop()
        self._tags: dict[str, dict[str, str]] = {}  # run id -> its tags (as found, plus what this backend wrote)
        self._timeout = DEFAULT_TIMEOUT

    def config(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "experiment": self.experiment,
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
        """End the MLflow runs this backend made, or found still running, since ``start``
        (so a run whose deliveries came late through ``sync`` ends too). A tracker that cannot
        be reached leaves them running, with a warning; the next ``sync`` ends them."""
        with self._lock:
            opened, self._opened = list(dict.fromkeys(self._opened)), []
            self._started = None
            self._runs.clear()
            self._tags.clear()
            for run_id in opened:
                self._end_run(run_id)

    def _end_run(self, run_id: str) -> None:
        try:
            with bounded_http(self._timeout):
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
            raise BackendError(f"mlflow: experiment {name!r} is deleted; restore it or pass experiment=")
        return str(found.experiment_id)

    def _target(self, artifact: LoggedArtifact) -> tuple[str, str, str]:
        return delivery_target(artifact, self._started, self.experiment)

    def _run_for(self, artifact: LoggedArtifact) -> tuple[str, str, str, bool]:
        """The MLflow run ``artifact`` goes to: (run id, artifact URI, experiment id, made
        just now?)."""
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
                experiment_id, run_name=run_name,
                tags=_context_tags({RUN_ID_TAG: tracelet_run, EXPERIMENT_TAG: run_name}))
        run_id, artifact_uri = run.info.run_id, run.info.artifact_uri
        self._runs[(experiment, tracelet_run)] = (run_id, artifact_uri, experiment_id)
        self._tags[run_id] = dict(run.data.tags)  # what it holds: read once, kept up to date
        if self._started is not None and (created or run.info.status == "RUNNING"):
            self._opened.append(run_id)
        return run_id, artifact_uri, experiment_id, created

    def _find_copy(self, name: str, version: str) -> Run | None:
        """The (oldest) active run in any experiment whose tags hold ``name:version``."""
        client = self.client
        key = run_tag_key(name, version)
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
            runs = client.search_runs(experiment_ids, f"tags.`{key}` LIKE {_quoted('%')}",
                                      run_view_type=ViewType.ACTIVE_ONLY, max_results=1,
                                      order_by=["attributes.start_time ASC"])
        return runs[0] if runs else None

    # -- delivery ---------------------------------------------------------------------------
    def log(self, artifact: LoggedArtifact) -> ArtifactResult:
        self._timeout = artifact.store.settings.backend_timeout or DEFAULT_TIMEOUT
        with self._lock, bounded_http(self._timeout):
            run_id, artifact_uri, experiment_id, created = self._run_for(artifact)
            try:
                held = version_record(self._tags.get(run_id, {}), artifact.name, artifact.version)
                if not created and held is not None:
                    return self._held(artifact, run_id, artifact_uri, held)  # a retry: the record came last
                self._upload(artifact, run_id)
                extra = self._log_native(artifact, run_id, experiment_id)
                model = self._register(artifact, run_id, artifact_uri, extra)
                self._tag(artifact, run_id, model, extra)
                release_displaced_aliases(self, artifact)  # the registry alias moved; the tags follow
            finally:
                if created and self._started is None:
                    self._end_run(run_id)  # a run made for this delivery alone
            return self._result(artifact, run_id, model)

    def _held(self, artifact: LoggedArtifact, run_id: str, artifact_uri: str,
              record: dict[str, Any]) -> ArtifactResult:
        """The result for a version run ``run_id`` already holds (its registry version made
        if that step was cut short)."""
        if record.get("digest") != artifact.digest:
            raise BackendError(f"mlflow run {run_id} holds {artifact.ref} with digest {record.get('digest')}, "
                               f"not {artifact.digest}")
        native = {"model_id": str(record.get("model_id") or "")}
        if native["model_id"]:
            with _sdk_errors(f"reading the logged model of {artifact.ref}"):
                native["model_source"] = self.client.get_logged_model(native["model_id"]).artifact_location
        return self._result(artifact, run_id, self._register(artifact, run_id, artifact_uri, native))

    def _log_native(self, artifact: LoggedArtifact, run_id: str, experiment_id: str) -> dict[str, Any]:
        """What MLflow shows natively: the model as an MLflow Model, config keys as params,
        pictures as images, datasets as run inputs; returns record fields that say what was
        made (``model_id``, ``flavor``, ``flavor_error``, ``params_conflicts``) and, not
        recorded, the logged model's ``model_source``."""
        fields: dict[str, Any] = {}
        params = config_params(artifact)
        if params:
            conflicts = self._log_params(run_id, params)
            if conflicts:
                fields["params_conflicts"] = conflicts
        if artifact.type is ArtifactType.MODEL:
            fields.update(self._log_model(artifact, run_id, experiment_id))
        self._log_inputs(artifact, run_id)
        media = [path for kind, path in media_entries(artifact) if kind == "image"]
        if media:
            from PIL import Image  # Deferred for import perf

            with _sdk_errors(f"logging the images of {artifact.ref}"):
                for path in media:
                    with Image.open(artifact.path(path)) as picture:
                        self.client.log_image(run_id, picture.copy(), key=f"{artifact.name}/{Path(path).stem}",
                                              step=artifact.version_number)
        return fields

    def _log_model(self, artifact: LoggedArtifact, run_id: str, experiment_id: str) -> dict[str, str]:
        """The version's model as an MLflow 3 logged model, made as ``mlflow.<flavor>.log_model``
        makes one (once per ref): the run's context tags and params plus the version's
        metadata, the ``MLmodel`` naming its ``model_id`` and run, and the run's output."""
        client = self.client
        with _sdk_errors(f"looking for the logged model of {artifact.ref}"):
            found = client.search_logged_models(
                experiment_ids=[experiment_id],
                filter_string=f"tags.`tracelet.ref` = {_quoted(artifact.ref)}", max_results=10)
        for model in found:
            if model.status == LoggedModelStatus.READY and model.tags.get("tracelet.digest") == artifact.digest:
                return {"model_source": model.artifact_location, "model_id": model.model_id}
        with tempfile.TemporaryDirectory(prefix="tracelet-mlflow-model-") as tmp:
            folder = Path(tmp) / "model"
            try:
                flavor = flavored_model(artifact, folder, Model(run_id=run_id))
            except FlavorError as exc:
                logger.warning("mlflow: %s stays run files, not an MLflow Model: %s", artifact.ref, exc)
                return {"flavor_error": str(exc)[:500]}
            if flavor is None:
                return {}
            with _sdk_errors(f"logging {artifact.ref} as an MLflow Model"):
                model = client.create_logged_model(
                    experiment_id, name=artifact.name.rsplit("/", 1)[-1], source_run_id=run_id, model_type=flavor,
                    params=self._model_params(artifact, run_id),
                    tags=_context_tags({"tracelet.ref": artifact.ref, "tracelet.digest": artifact.digest,
                                        "tracelet.aliases": ",".join(artifact.aliases)}))
                saved = Model.load(str(folder / "MLmodel"))  # the ids the folder was saved without
                saved.model_id, saved.model_uuid = model.model_id, model.model_id
                saved.artifact_path, saved.run_id = model.artifact_location, run_id
                saved.save(str(folder / "MLmodel"))
                client.log_model_artifacts(model.model_id, str(folder))
                client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=artifact.version_number)])
                client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        return {"model_source": model.artifact_location, "model_id": model.model_id, "flavor": flavor}

    def _model_params(self, artifact: LoggedArtifact, run_id: str) -> dict[str, str]:
        """The logged model's params, as ``log_model`` gives them: the run's params, plus the
        version's metadata (flattened with ``.``) and the model's framework and class."""
        params = {key: _param_value(value) for key, value in flatten(artifact.metadata).items()
                  if isinstance(value, (str, int, float, bool))}
        for obj in artifact.objects:
            if obj.extra.get("framework"):
                params.update({"framework": str(obj.extra["framework"]),
                               "model_class": str(obj.extra.get("model_class", ""))})
                break
        with _sdk_errors(f"reading the params of run {run_id}"):
            params.update(self.client.get_run(run_id).data.params)
        return params

    def _log_inputs(self, artifact: LoggedArtifact, run_id: str) -> None:
        """The run's MLflow dataset inputs for ``artifact`` (see ``dataset_inputs``)."""
        inputs = dataset_inputs(artifact)
        if inputs:
            with _sdk_errors(f"logging the datasets of {artifact.ref} as run inputs"):
                self.client.log_inputs(run_id, datasets=inputs)

    def _log_params(self, run_id: str, params: dict[str, Any]) -> list[str]:
        """Log ``params`` the run does not hold yet; the keys it holds with another value."""
        client = self.client
        with _sdk_errors(f"logging params to run {run_id}"):
            held = client.get_run(run_id).data.params
            fresh = [Param(key, _param_value(value)) for key, value in params.items()]
            conflicts = [p.key for p in fresh if p.key in held and held[p.key] != p.value]
            todo = [p for p in fresh if p.key not in held]
            for start in range(0, len(todo), MAX_PARAMS_PER_BATCH):
                client.log_batch(run_id, params=todo[start:start + MAX_PARAMS_PER_BATCH])
        return conflicts

    def _upload(self, artifact: LoggedArtifact, run_id: str) -> None:
        """Upload the files and the manifest (which lists what went as references)."""
        with tempfile.TemporaryDirectory(prefix="tracelet-mlflow-") as tmp:
            plan_upload(artifact, Path(tmp))  # files/ and the manifest, side by side
            with _sdk_errors(f"uploading {artifact.ref} to run {run_id}"):
                self.client.log_artifacts(run_id, tmp, artifact_path=f"{artifact.name}/{artifact.version}")

    def _register(self, artifact: LoggedArtifact, run_id: str, artifact_uri: str,
                  native: dict[str, Any]) -> ModelVersion | None:
        """The registry version of a ``model`` (made once per ref), sourced from its logged
        model where ``native`` names one, its aliases mirrored."""
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
                source = (self._model_source(native)
                          or f"{artifact_uri.rstrip('/')}/{artifact.name}/{artifact.version}/files")
                version = client.create_model_version(model, source=source, run_id=run_id,
                                                      tags=tracelet_tags(artifact),
                                                      description=artifact.description,
                                                      model_id=native.get("model_id") or None)
                if native.get("model_id"):  # the logged model lists its registry versions, as MLflow's do
                    client.set_logged_model_tags(native["model_id"], {"mlflow.modelVersions": json.dumps(
                        [{"name": version.name, "version": str(version.version)}])})
            for alias in artifact.aliases:
                mapped = registry_alias(alias)
                if mapped is None:
                    logger.warning("mlflow: alias %r of %s cannot be a registry alias", alias, artifact.ref)
                    continue
                client.set_registered_model_alias(model, mapped, version.version)
        return version

    def _model_source(self, native: dict[str, Any]) -> str | None:
        """A registry version's source for the logged model ``native`` names: ``models:/<id>``,
        as ``mlflow.register_model`` gives it (the version page's "Source model" link), where
        the registry can resolve it (a server, or a local store MLflow's default client
        reaches: MLflow's SQL registry looks the id up there); else its artifact location."""
        if not native.get("model_id"):
            return None
        registry = self.registry_uri or self.tracking_uri or ""
        if urlsplit(registry).scheme in ("http", "https", "databricks") or registry == mlflow.get_tracking_uri():
            return f"models:/{native['model_id']}"
        return native.get("model_source") or None

    def _tag(self, artifact: LoggedArtifact, run_id: str, model: ModelVersion | None,
             extra: dict[str, Any]) -> None:
        """Write the version's record run tag, last: it marks the copy as complete. One tag
        per version (``tracelet/<name>/<version>``), its value compact JSON: ``ref``,
        ``digest``, ``type``, ``aliases`` and what was made (registry version, logged model);
        inputs, producer and references are in the manifest beside the files."""
        record: dict[str, Any] = {"ref": artifact.ref, "digest": artifact.digest, "type": artifact.type.value,
                                  "aliases": list(artifact.aliases)}
        record.update({key: value for key, value in extra.items() if key != "model_source"})
        if model is not None:
            record["registered_model"] = f"{model.name}/{model.version}"
        tag = RunTag(run_tag_key(artifact.name, artifact.version), _record_value(record))
        with _sdk_errors(f"tagging run {run_id} with {artifact.ref}"):
            self.client.log_batch(run_id, tags=[tag])
        self._tags.setdefault(run_id, {})[tag.key] = tag.value

    def _result(self, artifact: LoggedArtifact, run_id: str, model: ModelVersion | None) -> ArtifactResult:
        if model is not None:
            return ArtifactResult(backend=self.name, ok=True, version=str(model.version),
                                  uri=f"models:/{model.name}/{model.version}", size_bytes=artifact.size_bytes)
        return ArtifactResult(backend=self.name, ok=True, version=run_id,
                              uri=f"runs:/{run_id}/{artifact.name}/{artifact.version}/files",
                              size_bytes=artifact.size_bytes)

    # -- alias moves (through the outbox) ---------------------------------------------------
    def set_alias(self, artifact: LoggedArtifact, alias: str) -> None:
        """The registry alias (``.`` -> ``_``) on the version's model version, and the alias in
        the version's record run tag and its ``tracelet.aliases`` tags (model version, logged
        model)."""
        self._move_alias(artifact, alias, add=True)

    def remove_alias(self, artifact: LoggedArtifact, alias: str) -> None:
        """The registry alias deleted where it still points at this version; the alias taken
        out of the record run tag and the ``tracelet.aliases`` tags."""
        self._move_alias(artifact, alias, add=False)

    def _move_alias(self, artifact: LoggedArtifact, alias: str, *, add: bool) -> None:
        self._timeout = artifact.store.settings.backend_timeout or DEFAULT_TIMEOUT
        client = self.client
        with self._lock, bounded_http(self._timeout):
            run = self._find_copy(artifact.name, artifact.version)
            record = version_record(run.data.tags, artifact.name, artifact.version) if run is not None else None
            if run is None or record is None:
                raise BackendError(f"mlflow holds no copy of {artifact.ref} to move alias {alias!r} on")
            held = [str(a) for a in record.get("aliases", [])]
            wanted = [a for a in held if a != alias] + ([alias] if add else [])
            registered = str(record.get("registered_model") or "")
            mapped = registry_alias(alias)
            with _sdk_errors(f"moving alias {alias!r} of {artifact.ref}"):
                if registered:
                    model, _, number = registered.rpartition("/")
                    if mapped is not None:
                        self._move_registry_alias(model, mapped, number, add=add)
                    client.set_model_version_tag(model, number, "tracelet.aliases", ",".join(wanted))
                if record.get("model_id"):
                    client.set_logged_model_tags(str(record["model_id"]), {"tracelet.aliases": ",".join(wanted)})
                if wanted != held:
                    client.set_tag(run.info.run_id, run_tag_key(artifact.name, artifact.version),
                                   _record_value({**record, "aliases": wanted}))

    def _move_registry_alias(self, model: str, alias: str, number: str, *, add: bool) -> None:
        """Point registry ``alias`` of ``model`` at version ``number``, or delete it where it
        points there."""
        client = self.client
        if add:
            client.set_registered_model_alias(model, alias, number)
            return
        try:
            current = client.get_model_version_by_alias(model, alias)
        except MlflowException as exc:
            if exc.error_code not in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
                raise
            return
        if str(current.version) == number:
            client.delete_registered_model_alias(model, alias)

    # -- reading back -----------------------------------------------------------------------
    def fetch(self, name: str, version: str, dest: Path) -> BackendCopy:
        """Download the run's copy of ``name:version`` (files and manifest) into ``dest``."""
        with self._lock, bounded_http(self._timeout):
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
        record = version_record(run.data.tags, name, version) or {}
        return BackendCopy(backend=self.name, ref=str(record.get("ref", "")),
                           digest=str(record.get("digest", "")), local_path=files,
                           version=run_id, uri=f"runs:/{run_id}/{name}/{version}/files",
                           referenced=dict(manifest.get("referenced", {})))

    # -- lifecycle status (through the outbox) ------------------------------------------------
    def set_status(self, artifact: LoggedArtifact, status: str) -> ArtifactResult:
        """Run tag ``tracelet/<name>/<version>/status`` and, on its registered model version,
        the tag ``tracelet.status``."""
        self._timeout = artifact.store.settings.backend_timeout or DEFAULT_TIMEOUT
        with self._lock, bounded_http(self._timeout):
            run = self._find_copy(artifact.name, artifact.version)
            if run is None:
                raise BackendError(f"mlflow holds no copy of {artifact.ref} to mark {status}")
            record = version_record(run.data.tags, artifact.name, artifact.version) or {}
            registered = str(record.get("registered_model") or "")
            with _sdk_errors(f"marking {artifact.ref} {status}"):
                self.client.set_tag(run.info.run_id, run_tag_key(artifact.name, artifact.version, "status"), status)
                if registered:
                    model, _, number = registered.rpartition("/")
                    self.client.set_model_version_tag(model, number, "tracelet.status", status)
        return ArtifactResult(backend=self.name, ok=True, version=artifact.ref)
