"""What the MLflow backend makes natively from a version: an MLflow Model folder, dataset inputs.

:func:`flavored_model` writes the folder MLflow's own ``save_model`` of that flavor writes:
``MLmodel`` (flavor plus ``pyfunc``, the signature inferred from the ``input_example``, the
logged model's ``model_id`` and ``run_id``), ``input_example.json`` and
``serving_input_example.json``, and the environment files (``conda.yaml``,
``python_env.yaml``, ``requirements.txt``). PyTorch, xgboost, lightgbm and tensorflow go
through their flavor's ``save_model``; an sklearn model tracelet holds as pickle is wrapped
as it is (never unpickled here), its example and environment files written with MLflow's own
helpers; one held in a safe format (skops) is loaded with tracelet's serializer and saved by
``mlflow.sklearn.save_model``.

:func:`dataset_inputs` gives the run's MLflow dataset inputs for a version: a ``dataset``
version's DataFrames and the version's tracelet inputs that are ``dataset`` versions.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import warnings
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.models import Model

from .._errors import TraceletError
from .._model import ArtifactType

if TYPE_CHECKING:
    from .._logged import LoggedArtifact

__all__ = ["FLAVORS", "FlavorError", "dataset_inputs", "flavored_model", "model_entry"]

logger = logging.getLogger(__name__)


class FlavorError(Exception):
    """Why a model version cannot become an MLflow Model (it then stays run files)."""


#: tracelet framework -> MLflow flavor module, for the frameworks MLflow has a flavor for.
FLAVORS = {"pytorch": "pytorch", "sklearn": "sklearn", "xgboost": "xgboost", "lightgbm": "lightgbm",
           "tensorflow": "tensorflow"}


def model_entry(artifact: LoggedArtifact) -> Any:
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


def _torch_model(artifact: LoggedArtifact, entry: Any, dest: Path, mlflow_model: Model) -> None:
    import torch  # Deferred for import perf
    from mlflow.models import infer_signature

    cls = _import_class(str(entry.extra.get("model_class", "")))
    try:
        module = cls()
    except TypeError as exc:
        raise FlavorError(f"{cls.__qualname__}() needs arguments ({exc}); MLflow's pytorch flavor "
                          "needs the module itself, tracelet stores its state_dict") from exc
    try:
        module.load_state_dict(artifact.load(entry.name))
    except RuntimeError as exc:  # e.g. nn.Sequential(): made without its layers
        raise FlavorError(f"{cls.__qualname__}() made without arguments does not take the stored "
                          f"state_dict ({str(exc).splitlines()[0]})") from exc
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
                              serialization_format="pickle", pip_requirements=[_requirement("torch")],
                              mlflow_model=mlflow_model)


def _sklearn_model(artifact: LoggedArtifact, entry: Any, dest: Path, mlflow_model: Model) -> None:
    """The sklearn flavor: a model held in a safe format is loaded (tracelet's own checks)
    and saved by MLflow; one held as pickle is wrapped as it is, never unpickled here, with
    the example and environment files MLflow's ``save_model`` writes."""
    if entry.serializer != "pickle":
        model = artifact.load(entry.name)
        mlflow.sklearn.save_model(model, str(dest), input_example=_input_example(artifact, entry.name),
                                  serialization_format="skops" if entry.serializer == "skops" else "cloudpickle",
                                  mlflow_model=mlflow_model)
        return
    import yaml  # Deferred for import perf
    from mlflow.models import infer_signature
    from mlflow.models.utils import _save_example
    from mlflow.utils.environment import _process_pip_requirements, _PythonEnv

    example = _input_example(artifact, entry.name)
    dest.mkdir(parents=True)
    artifact.download(dest / "tracelet", paths=[entry.path])
    (dest / "tracelet" / entry.path).replace(dest / "model.pkl")
    (dest / "tracelet").rmdir()
    saved = _save_example(mlflow_model, example, str(dest))  # input_example.json, serving_input_example.json
    if saved is not None:
        mlflow_model.signature = infer_signature(example)
    mlflow.pyfunc.add_to_model(mlflow_model, loader_module="mlflow.sklearn", model_path="model.pkl",
                               conda_env="conda.yaml", python_env="python_env.yaml")
    mlflow_model.add_flavor("sklearn", pickled_model="model.pkl", sklearn_version=package_version("scikit-learn"),
                            serialization_format="pickle", code=None)
    mlflow_model.save(str(dest / "MLmodel"))
    conda_env, requirements, _constraints = _process_pip_requirements(
        [_requirement("scikit-learn"), _requirement("cloudpickle")])
    (dest / "conda.yaml").write_text(yaml.safe_dump(conda_env, default_flow_style=False))
    (dest / "requirements.txt").write_text("\n".join(requirements))
    _PythonEnv.current().to_yaml(str(dest / "python_env.yaml"))


def _native_model(artifact: LoggedArtifact, entry: Any, dest: Path, mlflow_model: Model) -> None:
    """xgboost / lightgbm / tensorflow through their flavor's ``save_model`` (the model is
    loaded with tracelet's own safe serializer first)."""
    framework = entry.extra["framework"]
    flavor = importlib.import_module(f"mlflow.{FLAVORS[framework]}")  # Deferred: imports the framework
    model = artifact.load(entry.name)
    example = _input_example(artifact, entry.name)
    flavor.save_model(model, str(dest), input_example=example, mlflow_model=mlflow_model)


def flavored_model(artifact: LoggedArtifact, dest: Path, mlflow_model: Model | None = None) -> str | None:
    """Write ``artifact``'s model as an MLflow Model folder at ``dest``; the flavor, or None
    when the version holds no model of a framework MLflow has a flavor for. Raises
    ``FlavorError`` (saying why) when it has one that cannot be rebuilt. ``mlflow_model`` is
    the ``MLmodel`` to fill (with the logged model's ids, as ``log_model`` passes it)."""
    entry = model_entry(artifact)
    if entry is None:
        return None
    framework = entry.extra["framework"]
    target = mlflow_model if mlflow_model is not None else Model()
    try:
        with warnings.catch_warnings():
            # MLflow's notes while it saves (type hints it cannot check, pickle caveats, ...)
            # are about its own defaults, not errors of this delivery.
            warnings.simplefilter("ignore")
            if framework == "pytorch":
                _torch_model(artifact, entry, dest, target)
            elif framework == "sklearn":
                _sklearn_model(artifact, entry, dest, target)
            else:
                _native_model(artifact, entry, dest, target)
    except FlavorError:
        raise
    except Exception as exc:  # noqa: BLE001 - any framework failure: the version stays run files
        raise FlavorError(f"{type(exc).__name__}: {exc}") from exc
    return FLAVORS[framework]


def dataset_inputs(artifact: LoggedArtifact) -> list[DatasetInput]:
    """The MLflow dataset inputs ``artifact`` gives its run, each tagged ``tracelet.ref``: a
    ``dataset`` version's DataFrames (parquet objects, an MLflow pandas dataset named
    ``<ref>/<object>``, its source the store's blob, context ``tracelet``) and the version's
    tracelet inputs that are ``dataset`` versions (named by ref, source ``tracelet://<ref>``,
    context ``input``)."""
    inputs = []
    frames = [obj for obj in artifact.objects if obj.serializer == "parquet"]
    if artifact.type is ArtifactType.DATASET and frames:
        from mlflow.data.pandas_dataset import from_pandas  # Deferred for import perf

        for obj in frames:
            frame = artifact.load(obj.name)
            with warnings.catch_warnings():  # MLflow notes that a file URI fits two source types
                warnings.simplefilter("ignore", UserWarning)
                pandas_dataset = from_pandas(frame, source=artifact.store.blobs.blob_uri(obj.digest or ""),
                                             name=f"{artifact.ref}/{obj.name}", digest=(obj.digest or "")[-32:])
            inputs.append(DatasetInput(pandas_dataset._to_mlflow_entity(), tags=[
                InputTag("mlflow.data.context", "tracelet"), InputTag("tracelet.ref", artifact.ref)]))
    for ref in artifact.inputs:
        try:
            upstream = artifact.store.get(ref)
        except TraceletError as exc:  # gone since (deleted): the version itself still goes
            logger.warning("mlflow: input %s of %s is not readable here: %s", ref, artifact.ref, exc)
            continue
        if upstream.type is not ArtifactType.DATASET:
            continue
        dataset = Dataset(name=ref, digest=upstream.digest.rsplit(":", 1)[-1][:32], source_type="tracelet",
                          source=json.dumps({"uri": f"tracelet://{ref}"}))
        inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "input"),
                                                  InputTag("tracelet.ref", ref)]))
    return inputs
