"""``TraceletCallback``: what a Lightning ``fit`` produces, as versions in the store.

The only module that imports Lightning (both ``lightning.pytorch`` and ``pytorch_lightning``;
the callback is an instance of each installed one's ``Callback``, so either ``Trainer``
accepts it). Put ``TraceletCallback(experiment)`` into ``Trainer(callbacks=[...])``, or let
an experiment with ``automagic_artifacts`` attach one to every ``Trainer`` created while it
is started (never two to one trainer). During ``fit``, on global rank 0:

- each checkpoint the ``i``-th ``ModelCheckpoint`` writes is a new version of
  ``<experiment>/checkpoint`` (``<experiment>/checkpoint-2`` for the second, ...), type
  ``checkpoint``, with metadata ``epoch``, ``global_step``, ``monitor``, ``score`` and the
  logged ``metrics``; alias ``best`` follows ``best_model_path`` and ``last`` follows
  ``last_model_path`` (the newest checkpoint without ``save_last``, or with
  ``save_last="link"``). A file that
  ``save_top_k`` deletes later keeps its version. A checkpoint no ``ModelCheckpoint`` wrote
  (a manual ``trainer.save_checkpoint``) is logged under its file stem, as automagic does;
- what ``validation_step`` returns for the first validation batch of each epoch (tensors,
  arrays, numbers, or a dict / list of them) becomes a version of
  ``<experiment>/validation_samples`` (type ``sample``): at most ``sample_rows`` rows of
  each tensor, ``sample_max_bytes`` in all, stored with the ``torch`` serializer;
- at the end of ``fit``, the hyperparameters (``save_hyperparameters``, the datamodule's
  too) become ``<experiment>/hparams`` (type ``config``) and the trained model
  ``<experiment>/model`` (type ``model``, its ``state_dict`` as ``add_model`` stores it),
  whose input is the ``best`` checkpoint version (``last`` when nothing is best).

A capture that fails never breaks training: it is reported in
``Experiment.automagic_errors`` and logged as a warning on ``tracelet.automagic``.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ._artifact import TraceletArtifact
from ._automagic import (
    CALLBACK_WRAPPER_MARK,
    artifact_name_for,
    call_argument,
    checkpoint_metadata,
    finite_number,
)
from ._capture_guard import suppress_capture
from ._model import ArtifactType
from ._names import MAX_NAME_LENGTH, validate_name

if TYPE_CHECKING:
    from ._experiment import Experiment

__all__ = ["TraceletCallback", "attach_callback", "experiment_prefix"]

_LIGHTNING_MODULES = ("lightning.pytorch", "pytorch_lightning")


def _callback_bases() -> tuple[type, ...]:
    bases: list[type] = []
    for module_name in _LIGHTNING_MODULES:
        try:
            bases.append(importlib.import_module(module_name).Callback)
        except ImportError:
            continue
    if not bases:
        raise ImportError("tracelet_core.lightning needs Lightning: pip install tracelet-artifacts[lightning]")
    return tuple(bases)


_CALLBACK_BASES = _callback_bases()
#: Room left after the prefix for the longest name the callback logs.
_PREFIX_LIMIT = MAX_NAME_LENGTH - len("/validation_samples")


def experiment_prefix(name: str) -> str:
    """The artifact-name prefix of an experiment (``"my run"`` -> ``my_run``)."""
    segments = [artifact_name_for(part, "experiment") for part in name.split("/") if part.strip()]
    prefix = "/".join(segments) or "experiment"
    return validate_name(prefix[:_PREFIX_LIMIT].rstrip("/"))


@dataclass
class _FitState:
    """What one ``fit`` has logged so far (reset by ``setup``)."""

    names: dict[int, str] = field(default_factory=dict)  # id(ModelCheckpoint) -> its artifact
    versions: dict[tuple[str, str], str] = field(default_factory=dict)  # (name, file) -> "vN"
    aliases: dict[tuple[str, str], str] = field(default_factory=dict)  # (name, alias) -> "vN"
    sampled_epochs: set[int] = field(default_factory=set)


class TraceletCallback(*_CALLBACK_BASES):  # type: ignore[misc]
    """Logs a ``fit``'s checkpoints, final model, hyperparameters and validation samples."""

    def __init__(self, experiment: Experiment, *, sample_rows: int = 16,
                 sample_max_bytes: int = 1 << 20) -> None:
        self.experiment: Experiment | None = experiment
        self.prefix = experiment_prefix(experiment.name)
        self.sample_rows = max(int(sample_rows), 1)
        self.sample_max_bytes = max(int(sample_max_bytes), 0)
        self._fit = _FitState()

    # -- Lightning hooks --------------------------------------------------------------------
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit" or not self._logs_for(trainer):
            return
        self._fit = _FitState()
        self._wrap_save_checkpoint(trainer)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Remove the ``save_checkpoint`` wrapper ``setup`` installed."""
        wrapper = trainer.__dict__.get("save_checkpoint")
        if getattr(wrapper, CALLBACK_WRAPPER_MARK, None) is self:
            del trainer.__dict__["save_checkpoint"]

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """A failed ``fit`` logs no final model, and Lightning calls no ``teardown``: the
        wrapper goes now. (A ``ModelCheckpoint(save_on_exception=True)`` saves after this
        hook, as checkpoint callbacks run last: that file is not a version of
        ``<experiment>/checkpoint``; automagic logs it under its file name.)"""
        self.teardown(trainer, pl_module, "fit")

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if (outputs is None or batch_idx != 0 or dataloader_idx != 0 or trainer.sanity_checking
                or not self._logs_for(trainer) or trainer.state.fn != "fit"
                or trainer.current_epoch in self._fit.sampled_epochs):
            return
        self._fit.sampled_epochs.add(trainer.current_epoch)
        self._guarded("validation samples", self._log_samples, trainer, outputs)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._logs_for(trainer):
            return
        self._guarded("hyperparameters", self._log_hparams, trainer, pl_module)
        self._guarded("final model", self._log_model, trainer, pl_module)

    # -- checkpoints ------------------------------------------------------------------------
    def _wrap_save_checkpoint(self, trainer: Any) -> None:
        """Shadow this trainer's ``save_checkpoint`` (an instance attribute, removed by
        ``teardown``) so each checkpoint is logged right after it is written."""
        original = trainer.save_checkpoint
        callback = self

        @functools.wraps(original)
        def save_checkpoint(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            filepath = call_argument(args, kwargs, 0, "filepath")
            callback._guarded(f"checkpoint {filepath!r}", callback._log_checkpoint, trainer, filepath,
                              call_argument(args, kwargs, 1, "weights_only"))
            return result

        setattr(save_checkpoint, CALLBACK_WRAPPER_MARK, self)
        trainer.save_checkpoint = save_checkpoint

    def _log_checkpoint(self, trainer: Any, filepath: Any, weights_only: Any) -> None:
        if not isinstance(filepath, (str, os.PathLike)) or "://" in os.fspath(filepath):
            raise ValueError("not a local file; not captured")
        path = Path(os.path.abspath(os.fspath(filepath)))
        metadata = checkpoint_metadata(trainer, path, weights_only)
        owner = self._owner(trainer, path)
        if owner is None:  # a manual save: named after the file, as automagic names it
            self._log(TraceletArtifact(artifact_name_for(path.stem), ArtifactType.CHECKPOINT,
                                       metadata=metadata).add_file(path))
            self._experiment._mark_captured(path)
            return
        name = self._checkpoint_name(trainer, owner)
        monitor = getattr(owner, "monitor", None)
        score = _score_of(owner, path)
        metadata.update(monitor=monitor, score=score)
        best, last = _same_file(owner.best_model_path, path), _same_file(owner.last_model_path, path)
        # without save_last, and with save_last="link" (last.ckpt links to the file just
        # saved), the newest checkpoint is the last one
        newest_is_last = getattr(owner, "save_last", False) in (False, None, "link")
        aliases = [a for a, on in (("best", best), ("last", last or newest_is_last)) if on]
        version = self._log(TraceletArtifact(name, ArtifactType.CHECKPOINT, metadata=metadata)
                            .add_file(path), aliases=aliases)
        self._fit.versions[(name, str(path))] = version
        for alias in aliases:
            self._fit.aliases[(name, alias)] = version
        self._experiment._mark_captured(path)
        self._follow(name, "best", owner.best_model_path)
        if not newest_is_last:
            self._follow(name, "last", owner.last_model_path)

    def _owner(self, trainer: Any, path: Path) -> Any:
        """The ``ModelCheckpoint`` that is saving ``path`` (it records the path first)."""
        candidates = [cb for cb in trainer.checkpoint_callbacks if hasattr(cb, "best_model_path")]
        for callback in candidates:
            known = [callback.best_model_path, callback.last_model_path,
                     *dict(getattr(callback, "best_k_models", {}) or {})]
            if any(_same_file(p, path) for p in known):
                return callback
        return None

    def _checkpoint_name(self, trainer: Any, owner: Any) -> str:
        """``<prefix>/checkpoint`` for the first ``ModelCheckpoint``, ``-2`` for the second..."""
        names = self._fit.names
        if id(owner) not in names:
            ordered = [cb for cb in trainer.checkpoint_callbacks if hasattr(cb, "best_model_path")]
            index = next(i for i, cb in enumerate(ordered, 1) if cb is owner)
            names[id(owner)] = f"{self.prefix}/checkpoint" + ("" if index == 1 else f"-{index}")
        return names[id(owner)]

    def _follow(self, name: str, alias: str, source: Any) -> None:
        """Point ``alias`` at the version logged from ``source`` when it points elsewhere."""
        if not source:
            return
        version = self._fit.versions.get((name, os.path.abspath(os.fspath(source))))
        if version is None or self._fit.aliases.get((name, alias)) == version:
            return
        self._experiment.store.set_alias(f"{name}:{version}", alias)
        self._fit.aliases[(name, alias)] = version

    # -- samples, hyperparameters, model ------------------------------------------------------
    def _log_samples(self, trainer: Any, outputs: Any) -> None:
        samples, skipped = _bounded(outputs, self.sample_rows, self.sample_max_bytes)
        if not samples:
            return
        metadata: dict[str, Any] = {"captured_by": "lightning", "epoch": int(trainer.current_epoch),
                                    "global_step": int(trainer.global_step), "batch_idx": 0,
                                    "max_rows": self.sample_rows}
        if skipped:
            metadata["skipped"] = skipped
        artifact = TraceletArtifact(f"{self.prefix}/validation_samples", ArtifactType.SAMPLE,
                                    metadata=metadata).add_object(samples, "samples", serializer="torch")
        self._log(artifact)

    def _log_hparams(self, trainer: Any, pl_module: Any) -> None:
        hparams: dict[str, Any] = {}
        datamodule = getattr(trainer, "datamodule", None)
        for source in (datamodule, pl_module):
            found = getattr(source, "hparams", None) if source is not None else None
            if isinstance(found, Mapping):
                hparams.update({str(k): _plain(v) for k, v in found.items()})
        if not hparams:
            return
        metadata = {"captured_by": "lightning", "model_class": _class_path(pl_module)}
        self._log(TraceletArtifact(f"{self.prefix}/hparams", ArtifactType.CONFIG, metadata=metadata)
                  .add_object(hparams, "hparams", serializer="json"))

    def _log_model(self, trainer: Any, pl_module: Any) -> None:
        first = f"{self.prefix}/checkpoint"
        version = self._fit.aliases.get((first, "best")) or self._fit.aliases.get((first, "last"))
        chosen = f"{first}:{version}" if version else None
        metadata: dict[str, Any] = {"captured_by": "lightning", "epoch": int(trainer.current_epoch),
                                    "global_step": int(trainer.global_step)}
        if chosen is not None:
            metadata["checkpoint"] = chosen
        artifact = TraceletArtifact(f"{self.prefix}/model", ArtifactType.MODEL, metadata=metadata)
        with suppress_capture():
            artifact.add_model(pl_module, framework="pytorch")
        self._log(artifact, inputs=[chosen] if chosen else [])

    # -- plumbing ---------------------------------------------------------------------------
    def _logs_for(self, trainer: Any) -> bool:
        """Only global rank 0 logs, and only a callback that still has its experiment."""
        return self.experiment is not None and bool(trainer.is_global_zero)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (``ddp_spawn`` sends callbacks to new processes) without the experiment,
        which holds locks and connections: the copy logs nothing; training goes on."""
        return {**self.__dict__, "experiment": None}

    @property
    def _experiment(self) -> Experiment:
        assert self.experiment is not None  # hooks return early for a pickled copy
        return self.experiment

    def _log(self, artifact: TraceletArtifact, aliases: list[str] | None = None,
             inputs: list[str] | None = None) -> str:
        """Log through the experiment (producer, inputs, trackers); the version, ``vN``."""
        with suppress_capture():
            results = self._experiment.log_artifact(artifact, aliases=aliases, inputs=inputs or ())
        version = results["local"].version
        assert version is not None
        return version

    def _guarded(self, what: str, action: Callable[..., None], *args: Any) -> None:
        try:
            action(*args)
        except Exception as exc:  # noqa: BLE001 - a capture never breaks the user's training
            detail = " ".join(f"{type(exc).__name__}: {exc}".split())
            if self.experiment is not None:
                self.experiment._capture_failed(f"lightning {what}: {detail}")

    def __repr__(self) -> str:
        return f"TraceletCallback({self.prefix!r})"


def attach_callback(trainer: Any, experiment: Experiment) -> TraceletCallback | None:
    """Give ``trainer`` a ``TraceletCallback`` for ``experiment`` unless it has one already
    (of any experiment); the callback attached, or ``None``."""
    callbacks = trainer.callbacks
    if any(isinstance(cb, TraceletCallback) for cb in callbacks):
        return None
    callback = TraceletCallback(experiment)
    callbacks.append(callback)
    return callback


def _same_file(candidate: Any, path: Path) -> bool:
    if not candidate:
        return False
    return os.path.abspath(os.fspath(candidate)) == str(path)


def _score_of(owner: Any, path: Path) -> float | None:
    for candidate, value in dict(getattr(owner, "best_k_models", {}) or {}).items():
        if _same_file(candidate, path):
            return finite_number(value)
    current = getattr(owner, "current_score", None)
    return finite_number(current) if current is not None else None


def _class_path(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _plain(value: Any, depth: int = 0) -> Any:
    """A JSON-able copy of a hyperparameter (unknown objects become their ``repr``)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if finite_number(value) is not None else repr(value)
    if depth < 8 and isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if depth < 8 and isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v, depth + 1) for v in value]
    return repr(value)


def _bounded(outputs: Any, rows: int, max_bytes: int) -> tuple[dict[str, Any], list[str]]:
    """``outputs`` as a dict of small, detached CPU tensors and plain values; the keys left
    out (unsupported types, or over ``max_bytes``)."""
    if isinstance(outputs, Mapping):
        items = [(str(k), v) for k, v in outputs.items()]
    elif isinstance(outputs, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(outputs)]
    else:
        items = [("outputs", outputs)]
    samples: dict[str, Any] = {}
    skipped: list[str] = []
    used = 0
    for key, value in items:
        small = _small(value, rows)
        size = small.numel() * small.element_size() if isinstance(small, torch.Tensor) else 0
        if small is None or used + size > max_bytes:
            skipped.append(key)
            continue
        samples[key] = small
        used += size
    return samples, skipped


def _small(value: Any, rows: int) -> Any:
    if isinstance(value, (bool, int, float, str)):
        return value
    if not isinstance(value, torch.Tensor):
        if type(value).__module__.split(".")[0] != "numpy":
            return None
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):  # an object array, ...
            return None
    tensor = value.detach()
    if tensor.dim() > 0:
        tensor = tensor[:rows]
    # a copy: a slice would drag the whole batch's storage into the saved file
    return tensor.to("cpu", copy=True).contiguous()
