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
  next delivery of the same ref to that run finds them and uploads nothing (idempotent per
  ref; a retry goes to the same run, found by ``tracelet.run_id``, so only that run is read).
* ``model`` versions holding an ``add_model`` entry of a framework MLflow has a flavor for
  (pytorch, sklearn; xgboost, lightgbm, tensorflow where installed) also become an MLflow
  Model (an MLflow 3 logged model of the run: that flavor plus ``pyfunc``, signature
  inferred from the ``input_example``), built by :func:`flavored_model`. tracelet's own
  store keeps its safe format; the MLflow copy is what ``mlflow.pyfunc.load_model`` loads.
  A model that cannot be rebuilt (a torch class that cannot be imported or made without
  arguments) stays run files, and the run tag ``.../flavor_error`` says why.
* ``model`` versions (with ``register_models``) also become a version of the registered
  model named after the tracelet name (``/`` -> ``.``), sourced from that logged model (else
  the run's ``files`` folder), tagged ``tracelet.ref``/``tracelet.digest``/..., with the
  tracelet aliases mirrored as registry aliases (``.`` -> ``_``; MLflow reserves ``latest``
  and ``vN``, which are skipped). Later ``set_alias`` / ``remove_alias`` arrive through the
  outbox and move the registry alias (and the run tag ``.../aliases`` of any version).
* ``config`` versions: their keys (flattened with ``.``) as run params, at most 100 per
  ``log_batch`` and values cut to MLflow's 6,000 characters; a key the run already holds
  with another value is left as it is (MLflow params are immutable) and listed in the run
  tag ``.../params_conflicts``. ``image`` versions: each picture also through
  ``MlflowClient.log_image`` (key ``<name>/<file stem>``, step = the version number).
  ``dataset`` versions: their DataFrames (parquet objects) also as run inputs
  (``MlflowClient.log_inputs``, an MLflow pandas dataset named ``<ref>/<object>``).
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

import importlib
import json
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import mlflow
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus, Param, Run, RunTag, ViewType
from mlflow.exceptions import MlflowException

from .._backends import (
    MANIFEST_NAME,
    ArtifactResult,
    Backend,
    BackendCopy,
    config_params,
    delivery_target,
    media_entries,
    plan_upload,
    sdk_errors,
    tracelet_tags,
)
from .._errors import BackendError
from .._model import ArtifactType

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
DEFAULT_TIMEOUT = 10.0
#: MLflow's HTTP settings tracelet bounds for its own calls (unless the user set them).
_HTTP_ENV = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
             "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "MLFLOW_HTTP_REQUEST_TIMEOUT")
_http_lock = threading.Lock()
_http_users = 0
_http_saved: dict[str, str | None] = {}
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

@contextmanager
def bounded_http(timeout: float | None) -> Iterator[None]:
    """MLflow's HTTP retries and timeout bounded by ``timeout`` for the calls inside.

    MLflow reads them from the environment on each request (its defaults retry for minutes:
    7 retries with exponential back-off, 120 s per request), so they are set while tracelet's
    calls run and restored when the last one ends; variables the user set are kept."""
    global _http_users
    limit = DEFAULT_TIMEOUT if timeout is None else timeout
    wanted = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
              "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(limit / 4)))}
    with _http_lock:
        if _http_users == 0:
            _http_saved.clear()
            for key in _HTTP_ENV:
                if key not in os.environ:
                    _http_saved[key] = None
                    os.environ[key] = wanted[key]
        _http_users += 1
    try:
        yield
    finally:
        with _http_lock:
            _http_users -= 1
            if _http_users == 0:
                for key in _http_saved:
                    os.environ.pop(key, None)
                _http_saved.clear()


def _shareable(uri: str) -> str | None:
    """A tracking URI that may be written to the catalog (none that embeds a password)."""
    return None if urlsplit(uri).password else uri


class FlavorError(Exception):
    """Why a model version cannot become an MLflow Model (it then stays run files)."""


#: tracelet framework -> MLflow flavor module, for the frameworks MLflow has a flavor for.
FLAVORS = {"pytorch": "pytorch", "sklearn": "sklearn", "xgboost": "xgboost", "lightgbm": "lightgbm",
           "tensorflow": "tensorflow"}


def _model_entry(artifact: LoggedArtifact) -> Any:
    """The ``add_model`` object of ``artifact`` (the first of a framework MLflow knows)."""
    for obj in artifact.objects:
        if obj.extra.get("framework") in FLAVORS:
            return obj
    return None


def _input_example(artifact: LoggedArtifact, model_name: str) -> Any:
    """The model's ``input_example`` as a numpy array (or what it was stored as), or None."""
    for obj in artifact.objects:
        if obj.name.startswith(f"{model_name}_input_example") and obj.serializer != "pickle":
            example = artifact.load(obj.name)
            return example.detach().cpu().numpy() if hasattr(example, "detach") else example
    return None


def _import_class(path: str) -> Any:
    """The class ``module.Qualified.Name`` names (the module part found by trying)."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        module = sys.modules.get(module_name)
        if module is None:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
        found: Any = module
        try:
            for attribute in parts[cut:]:
                found = getattr(found, attribute)
        except AttributeError:
            continue
        return found
    raise FlavorError(f"class {path} cannot be imported here")


def _requirement(distribution: str) -> str:
    try:
        return f"{distribution}=={package_version(distribution)}"
    except PackageNotFoundError:
        return distribution


def _torch_model(artifact: LoggedArtifact, entry: Any, dest: Path) -> None:
    import torch  # Deferred for import perf
    from mlflow.models import infer_signature

    cls = _import_class(str(entry.extra.get("model_class", "")))
    try:
        module = cls()
    except TypeError as exc:
        raise FlavorError(f"{cls.__qualname__}() needs arguments ({exc}); MLflow's pytorch flavor "
                          "needs the module itself, tracelet stores its state_dict") from exc
    module.load_state_dict(artifact.load(entry.name))
    module.eval()
    example = _input_example(artifact, entry.name)
    signature = None
    if example is not None:
        with torch.no_grad():
            output = module(torch.as_tensor(example))
        signature = infer_signature(example, output.detach().cpu().numpy() if hasattr(output, "detach") else None)
    # Pickled (``torch.save`` of the module, MLflow's classic format): torch.export's
    # class-free ``pt2`` traces the model, which takes seconds on first use and fails for
    # models with data-dependent control flow, inside a delivery's time limit.
    mlflow.pytorch.save_model(module, str(dest), signature=signature, input_example=example,
                              serialization_format="pickle", pip_requirements=[_requirement("torch")])


def _sklearn_model(artifact: LoggedArtifact, entry: Any, dest: Path) -> None:
    """The sklearn flavor around the skops file (or pickle) tracelet already holds (never loaded here)."""
    from mlflow.models import Model, infer_signature

    if entry.serializer not in {"skops", "pickle"}:
        raise FlavorError(f"an sklearn model stored with {entry.serializer!r} is not one of MLflow's formats")
    file_name = "model.skops" if entry.serializer == "skops" else "model.pkl"
    example = _input_example(artifact, entry.name)
    dest.mkdir(parents=True)
    artifact.download(dest / "tracelet", paths=[entry.path])
    (dest / "tracelet" / entry.path).replace(dest / file_name)
    (dest / "tracelet").rmdir()
    requirements = [_requirement("scikit-learn"), _requirement("mlflow")]
    requirements += [_requirement("skops")] if entry.serializer == "skops" else []
    (dest / "requirements.txt").write_text("\n".join(requirements) + "\n")
    model = Model(signature=infer_signature(example) if example is not None else None)
    mlflow.pyfunc.add_to_model(model, loader_module="mlflow.sklearn", model_path=file_name)
    model.add_flavor("sklearn", pickled_model=file_name, sklearn_version=package_version("scikit-learn"),
                     serialization_format=entry.serializer, code=None)
    model.save(str(dest / "MLmodel"))


def _native_model(artifact: LoggedArtifact, entry: Any, dest: Path) -> None:
    """xgboost / lightgbm / tensorflow through their flavor's ``save_model`` (the model is
    loaded with tracelet's own safe serializer first)."""
    framework = entry.extra["framework"]
    flavor = importlib.import_module(f"mlflow.{FLAVORS[framework]}")  # Deferred: imports the framework
    model = artifact.load(entry.name)
    example = _input_example(artifact, entry.name)
    flavor.save_model(model, str(dest), input_example=example)


def flavored_model(artifact: LoggedArtifact, dest: Path) -> str | None:
    """Write ``artifact``'s model as an MLflow Model folder at ``dest``; the flavor, or None
    when the version holds no model of a framework MLflow has a flavor for. Raises
    ``FlavorError`` (saying why) when it has one that cannot be rebuilt."""
    entry = _model_entry(artifact)
    if entry is None:
        return None
    framework = entry.extra["framework"]
    try:
        with warnings.catch_warnings():
            # MLflow's notes while it saves (type hints it cannot check, pickle caveats, ...)
            # are about its own defaults, not errors of this delivery.
            warnings.simplefilter("ignore")
            if framework == "pytorch":
                _torch_model(artifact, entry, dest)
            elif framework == "sklearn":
                _sklearn_model(artifact, entry, dest)
            else:
                _native_model(artifact, entry, dest)
    except FlavorError:
        raise
    except Exception as exc:  # noqa: BLE001 - any framework failure: the version stays run files
        raise FlavorError(f"{type(exc).__name__}: {exc}") from exc
    return FLAVORS[framework]


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= MAX_PARAM_VALUE else text[:MAX_PARAM_VALUE]


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
        self._runs: dict[tuple[str, str], tuple[str, str, str]] = {}  # (experiment, tracelet run) ->
        # (run id, artifact URI, experiment id)
        self._opened: list[str] = []  # runs made or found running since start(), ended by stop()
        self._tags: dict[str, dict[str, str]] = {}  # run id -> its tags (as found, plus what this backend wrote)
        self._timeout = DEFAULT_TIMEOUT

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
            raise BackendError(f"mlflow: experiment {name!r} is deleted; restore it or pass experiment_name")
        return str(found.experiment_id)

    def _target(self, artifact: LoggedArtifact) -> tuple[str, str, str]:
        return delivery_target(artifact, self._started, self.experiment_name)

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
                experiment_id, run_name=run_name, tags={RUN_ID_TAG: tracelet_run, EXPERIMENT_TAG: run_name})
        run_id, artifact_uri = run.info.run_id, run.info.artifact_uri
        self._runs[(experiment, tracelet_run)] = (run_id, artifact_uri, experiment_id)
        self._tags[run_id] = dict(run.data.tags)  # what it holds: read once, kept up to date
        if self._started is not None and (created or run.info.status == "RUNNING"):
            self._opened.append(run_id)
        return run_id, artifact_uri, experiment_id, created

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
        self._timeout = artifact.store.settings.backend_timeout or DEFAULT_TIMEOUT
        with self._lock, bounded_http(self._timeout):
            run_id, artifact_uri, experiment_id, created = self._run_for(artifact)
            try:
                tags = self._tags.get(run_id, {})
                if not created and run_tag_key(artifact.name, artifact.version, "ref") in tags:
                    return self._held(artifact, run_id, artifact_uri, tags)  # a retry: the tags came last
                references = self._upload(artifact, run_id)
                extra = self._log_native(artifact, run_id, experiment_id)
                model = self._register(artifact, run_id, artifact_uri, extra)
                self._tag(artifact, run_id, references, model, extra)
            finally:
                if created and self._started is None:
                    self._end_run(run_id)  # a run made for this delivery alone
            return self._result(artifact, run_id, model)

    def _held(self, artifact: LoggedArtifact, run_id: str, artifact_uri: str, tags: dict[str, str]) -> ArtifactResult:
        """The result for a version run ``run_id`` already holds (its registry version made
        if that step was cut short)."""
        held = tags.get(run_tag_key(artifact.name, artifact.version, "digest"))
        if held != artifact.digest:
            raise BackendError(f"mlflow run {run_id} holds {artifact.ref} with digest {held}, not {artifact.digest}")
        native = {field: tags.get(run_tag_key(artifact.name, artifact.version, field), "")
                  for field in ("model_source", "model_id")}
        return self._result(artifact, run_id, self._register(artifact, run_id, artifact_uri, native))

    def _log_native(self, artifact: LoggedArtifact, run_id: str, experiment_id: str) -> dict[str, str]:
        """What MLflow shows natively: the model as an MLflow Model, config keys as params,
        pictures as images; returns run-tag fields that say what was made."""
        fields: dict[str, str] = {}
        if artifact.type is ArtifactType.MODEL:
            fields.update(self._log_model(artifact, run_id, experiment_id))
        params = config_params(artifact)
        if params:
            conflicts = self._log_params(run_id, params)
            if conflicts:
                fields["params_conflicts"] = ",".join(conflicts)
        if artifact.type is ArtifactType.DATASET:
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
        """The version's model as an MLflow 3 logged model of the run (made once per ref)."""
        client = self.client
        with _sdk_errors(f"looking for the logged model of {artifact.ref}"):
            found = client.search_logged_models(
                experiment_ids=[experiment_id],
                filter_string=f"tags.`tracelet.ref` = {_quoted(artifact.ref)}", max_results=10)
        for model in found:
            if model.status == LoggedModelStatus.READY and model.tags.get("tracelet.digest") == artifact.digest:
                return {"model_source": model.artifact_location, "model_id": model.model_id}
        with tempfile.TemporaryDirectory(prefix="tracelet-mlflow-model-") as tmp:
            try:
                flavor = flavored_model(artifact, Path(tmp) / "model")
            except FlavorError as exc:
                logger.warning("mlflow: %s stays run files, not an MLflow Model: %s", artifact.ref, exc)
                return {"flavor_error": str(exc)}
            if flavor is None:
                return {}
            with _sdk_errors(f"logging {artifact.ref} as an MLflow Model"):
                model = client.create_logged_model(
                    experiment_id, name=artifact.name.rsplit("/", 1)[-1], source_run_id=run_id, model_type=flavor,
                    tags={"tracelet.ref": artifact.ref, "tracelet.digest": artifact.digest})
                client.log_model_artifacts(model.model_id, str(Path(tmp) / "model"))
                client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        return {"model_source": model.artifact_location, "model_id": model.model_id, "flavor": flavor}

    def _log_inputs(self, artifact: LoggedArtifact, run_id: str) -> None:
        """The version's DataFrames (parquet objects) as the run's dataset inputs, named
        ``<ref>/<object>``, their source the store's blob (``file://`` or ``s3://``)."""
        frames = [obj for obj in artifact.objects if obj.serializer == "parquet"]
        if not frames:
            return
        from mlflow.data.pandas_dataset import from_pandas  # Deferred for import perf
        from mlflow.entities import DatasetInput, InputTag

        inputs = []
        for obj in frames:
            frame = artifact.load(obj.name)
            with warnings.catch_warnings():  # MLflow notes that a file URI fits two source types
                warnings.simplefilter("ignore", UserWarning)
                dataset = from_pandas(frame, source=artifact.store.blobs.blob_uri(obj.digest or ""),
                                      name=f"{artifact.ref}/{obj.name}", digest=(obj.digest or "")[-32:])
            inputs.append(DatasetInput(dataset._to_mlflow_entity(),
                                       tags=[InputTag("mlflow.data.context", "tracelet")]))
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

    def _upload(self, artifact: LoggedArtifact, run_id: str) -> dict[str, str]:
        """Upload the files and manifest; returns what went as references (path or name -> URI)."""
        with tempfile.TemporaryDirectory(prefix="tracelet-mlflow-") as tmp:
            plan = plan_upload(artifact, Path(tmp))  # files/ and the manifest, side by side
            with _sdk_errors(f"uploading {artifact.ref} to run {run_id}"):
                self.client.log_artifacts(run_id, tmp, artifact_path=f"{artifact.name}/{artifact.version}")
        return {**plan.references, **{r.name: r.uri for r in plan.external}}

    def _register(self, artifact: LoggedArtifact, run_id: str, artifact_uri: str,
                  native: dict[str, str]) -> ModelVersion | None:
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
                source = (native.get("model_source")
                          or f"{artifact_uri.rstrip('/')}/{artifact.name}/{artifact.version}/files")
                version = client.create_model_version(model, source=source, run_id=run_id,
                                                      tags=tracelet_tags(artifact),
                                                      description=artifact.description,
                                                      model_id=native.get("model_id") or None)
            for alias in artifact.aliases:
                mapped = registry_alias(alias)
                if mapped is None:
                    logger.warning("mlflow: alias %r of %s cannot be a registry alias", alias, artifact.ref)
                    continue
                client.set_registered_model_alias(model, mapped, version.version)
        return version

    def _tag(self, artifact: LoggedArtifact, run_id: str, references: dict[str, str],
             model: ModelVersion | None, extra: dict[str, str]) -> None:
        """Write the version's run tags, in one batch, last: they mark the copy as complete."""
        fields = {key.removeprefix("tracelet."): value for key, value in tracelet_tags(artifact).items()}
        fields.update(extra)
        fields["path"] = f"{artifact.name}/{artifact.version}"
        fields["references"] = json.dumps(references, sort_keys=True)
        if model is not None:
            fields["registered_model"] = f"{model.name}/{model.version}"
        tags = [RunTag(run_tag_key(artifact.name, artifact.version, k), _fit(v)) for k, v in fields.items()]
        with _sdk_errors(f"tagging run {run_id} with {artifact.ref}"):
            self.client.log_batch(run_id, tags=tags)
        self._tags.setdefault(run_id, {}).update({tag.key: tag.value for tag in tags})

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
        the run tag ``.../aliases``."""
        self._move_alias(artifact, alias, add=True)

    def remove_alias(self, artifact: LoggedArtifact, alias: str) -> None:
        """The registry alias deleted where it still points at this version; the run tag
        ``.../aliases`` without it."""
        self._move_alias(artifact, alias, add=False)

    def _move_alias(self, artifact: LoggedArtifact, alias: str, *, add: bool) -> None:
        self._timeout = artifact.store.settings.backend_timeout or DEFAULT_TIMEOUT
        client = self.client
        with self._lock, bounded_http(self._timeout):
            run = self._find_copy(artifact.name, artifact.version)
            if run is None:
                raise BackendError(f"mlflow holds no copy of {artifact.ref} to move alias {alias!r} on")
            key = run_tag_key(artifact.name, artifact.version, "aliases")
            held = [a for a in run.data.tags.get(key, "").split(",") if a]
            wanted = [a for a in held if a != alias] + ([alias] if add else [])
            registered = run.data.tags.get(run_tag_key(artifact.name, artifact.version, "registered_model"))
            mapped = registry_alias(alias)
            with _sdk_errors(f"moving alias {alias!r} of {artifact.ref}"):
                if registered and mapped is not None:
                    model, _, number = registered.rpartition("/")
                    if add:
                        client.set_registered_model_alias(model, mapped, number)
                    else:
                        try:
                            current = client.get_model_version_by_alias(model, mapped)
                        except MlflowException as exc:
                            if exc.error_code not in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
                                raise
                            current = None
                        if current is not None and str(current.version) == number:
                            client.delete_registered_model_alias(model, mapped)
                if wanted != held:
                    client.set_tag(run.info.run_id, key, _fit(",".join(wanted)))

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
        tags = run.data.tags
        return BackendCopy(backend=self.name, ref=tags[run_tag_key(name, version, "ref")],
                           digest=tags[run_tag_key(name, version, "digest")], local_path=files,
                           version=run_id, uri=f"runs:/{run_id}/{name}/{version}/files",
                           referenced=dict(manifest.get("referenced", {})))
