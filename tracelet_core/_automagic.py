"""Automagic capture: ``torch.save`` calls, Lightning checkpoints and files in watched folders.

An ``Experiment`` started with ``automagic_artifacts`` (or ``watch_filesystem``) owns one
``AutomagicSession``; everything the session captures goes through the experiment's
``log_artifact``, so captured versions get the same producer, inputs and backend routing as
artifacts logged by hand.

Patches. ``torch.save``, ``Trainer.__init__`` and ``Trainer.save_checkpoint``
(``lightning.pytorch`` and/or ``pytorch_lightning``) are patched once per process by
``_HOOKS``, the only module-level state here: the first session that starts installs the
wrappers, every active session receives each capture, and the last session that stops
restores the originals (the very same objects). torch and Lightning are imported only when a
session that captures saves starts, never by ``import tracelet_core``.

What is captured. ``torch.save(obj, path)`` where ``path`` is a ``str`` or ``os.PathLike``
and the save succeeded; saves into file objects (``BytesIO``, open files) are not captured,
since there is no file to log. A ``Trainer`` created while a session is started gets a
``tracelet_core.lightning.TraceletCallback`` (unless it already has one), which logs its
checkpoints as versions of ``<experiment>/checkpoint``, the final model, the hyperparameters
and validation samples. A trainer without that callback (created before the session
started) is captured by the ``save_checkpoint`` patch: each file as an artifact named after
its stem, on global rank 0 only. Lightning writes its checkpoints through ``torch.save`` into
a ``BytesIO``, so a checkpoint is logged once. A capture that fails never breaks the user's
save: the error is appended to ``AutomagicSession.errors`` and logged as a warning on
``tracelet.automagic``.

Watched folders. A daemon thread scans each folder (recursively, ``stat`` only) every
``watch_interval`` seconds and logs a new or changed file once its size and mtime have been
the same for ``stable_checks`` consecutive scans (``TRACELET_WATCH_STABLE_CHECKS``, default
3). A file that has kept changing for longer than ``max_wait`` seconds
(``TRACELET_WATCH_MAX_WAIT``, default 5) is logged as soon as one scan finds it unchanged;
no file is ever dropped, and ``stop()`` logs whatever is still pending. Files present when
the session starts are the baseline and are not logged unless they change; hidden and
temporary files are skipped.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ._artifact import TraceletArtifact
from ._capture_guard import capture_suppressed, suppress_capture
from ._model import ArtifactType
from ._names import MAX_NAME_LENGTH, validate_name

logger = logging.getLogger("tracelet.automagic")

#: Keys that mark a dict passed to ``torch.save`` as a training checkpoint.
CHECKPOINT_KEYS = frozenset({
    "epoch", "global_step", "step", "iteration", "optimizer", "optimizer_state_dict",
    "optimizer_states", "state_dict", "model_state_dict", "scheduler", "scheduler_state_dict",
    "lr_scheduler", "lr_schedulers", "pytorch-lightning_version",
})

#: Artifact type of a watched file, by extension (anything else is ``custom``).
EXTENSION_TYPES: dict[str, ArtifactType] = {
    **dict.fromkeys((".pt", ".pth", ".ckpt"), ArtifactType.CHECKPOINT),
    **dict.fromkeys((".safetensors", ".bin"), ArtifactType.WEIGHTS),
    **dict.fromkeys((".onnx", ".pkl", ".joblib"), ArtifactType.MODEL),
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".gif", ".webp"), ArtifactType.IMAGE),
    **dict.fromkeys((".wav", ".mp3", ".flac"), ArtifactType.AUDIO),
    **dict.fromkeys((".mp4", ".avi", ".mov"), ArtifactType.VIDEO),
    **dict.fromkeys((".html", ".ipynb", ".pdf"), ArtifactType.REPORT),
    **dict.fromkeys((".yaml", ".yml", ".json", ".toml"), ArtifactType.CONFIG),
    ".py": ArtifactType.CODE,
    **dict.fromkeys((".csv", ".parquet", ".npy", ".npz"), ArtifactType.DATASET),
}

#: Suffixes of files that are still being written (skipped by the watcher).
TEMPORARY_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")

_MIN_INTERVAL = 0.01
_JOIN_TIMEOUT = 10.0
_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def artifact_name_for(stem: str, fallback: str = "artifact") -> str:
    """A valid artifact name from a file stem (``epoch=0-step=10`` -> ``epoch_0-step_10``)."""
    trimmed = _INVALID_NAME_CHARS.sub("_", stem.strip())
    if trimmed.endswith("_") and not stem.strip().endswith("_"):
        trimmed = trimmed[:-1]  # a run of invalid characters at the end: drop, don't pad
    cleaned = trimmed.lstrip("._-")[:MAX_NAME_LENGTH]
    return validate_name(cleaned or fallback)


def type_for_saved(obj: Any) -> ArtifactType:
    """``model`` for a module, ``weights`` for a state dict, ``checkpoint`` for the rest."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.nn.Module):
        return ArtifactType.MODEL
    if isinstance(obj, Mapping):
        if any(isinstance(key, str) and key in CHECKPOINT_KEYS for key in obj):
            return ArtifactType.CHECKPOINT
        if obj and torch is not None and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return ArtifactType.WEIGHTS
    return ArtifactType.CHECKPOINT


def type_for_file(path: Path) -> ArtifactType:
    """The artifact type of a watched file, guessed from its extension."""
    return EXTENSION_TYPES.get(path.suffix.lower(), ArtifactType.CUSTOM)


def is_skipped_file(name: str) -> bool:
    """Hidden, editor-backup and temporary files are never logged by the watcher."""
    return name.startswith((".", "~")) or name.lower().endswith(TEMPORARY_SUFFIXES)


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _local_path(target: object) -> Path | None:
    """An absolute path for a ``str``/``os.PathLike`` destination; ``None`` for anything else."""
    if isinstance(target, (str, os.PathLike)):
        raw = os.fspath(target)
        if isinstance(raw, str):
            return Path(os.path.abspath(raw))
    return None


# -- process-wide patches -------------------------------------------------------------------
_MISSING = object()
_TRAINER_MODULES = ("lightning.pytorch", "pytorch_lightning")


def call_argument(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    """The argument a call passed at position ``index`` or as keyword ``name`` (or ``None``)."""
    return args[index] if len(args) > index else kwargs.get(name)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package, or a broken install
        return False


class _CaptureHooks:
    """The patches of ``torch.save`` and the Lightning ``Trainer``, shared by all sessions.

    Installed by the first ``add`` and removed by the last ``remove``; captures are forwarded
    to every session registered at the time of the save, outside the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: list[AutomagicSession] = []
        self._torch: Any = None
        self._torch_original: Any = None
        self._torch_wrapper: Any = None
        self._trainers: list[tuple[type, str, Any, Any]] = []  # (class, attribute, original, wrapper)
        self._local = threading.local()

    def add(self, session: AutomagicSession) -> list[str]:
        """Register ``session``; returns the problems met while patching (one line each)."""
        with self._lock:
            problems = [] if self._sessions else self._install()
            self._sessions.append(session)
            return problems

    def remove(self, session: AutomagicSession) -> list[str]:
        with self._lock:
            if session not in self._sessions:
                return []
            self._sessions.remove(session)
            return [] if self._sessions else self._uninstall()

    def _active(self) -> list[AutomagicSession]:
        with self._lock:
            return list(self._sessions)

    # -- installing -------------------------------------------------------------------------
    def _install(self) -> list[str]:
        problems: list[str] = []
        if _importable("torch"):
            try:
                import torch  # Deferred for import perf

                self._torch, self._torch_original = torch, torch.save
                self._torch_wrapper = self._wrap_save(torch.save)
                torch.save = self._torch_wrapper
            except Exception as exc:  # noqa: BLE001 - automagic must never break start()
                problems.append(f"cannot patch torch.save: {_one_line(exc)}")
        for module_name in _TRAINER_MODULES:
            if not _importable(module_name):
                continue
            try:
                trainer_cls = importlib.import_module(module_name).Trainer  # Deferred for import perf
                self._patch(trainer_cls, "save_checkpoint", self._wrap_save_checkpoint)
                self._patch(trainer_cls, "__init__", self._wrap_trainer_init)
            except Exception as exc:  # noqa: BLE001 - automagic must never break start()
                problems.append(f"cannot patch {module_name}.Trainer: {_one_line(exc)}")
        return problems

    def _patch(self, cls: type, attribute: str,
               wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        original = cls.__dict__.get(attribute, _MISSING)
        wrapper = wrap(getattr(cls, attribute))
        setattr(cls, attribute, wrapper)
        self._trainers.append((cls, attribute, original, wrapper))

    def _uninstall(self) -> list[str]:
        problems: list[str] = []
        if self._torch is not None:
            if self._torch.save is self._torch_wrapper:
                self._torch.save = self._torch_original
            else:  # someone patched over us: leave theirs; ours forwards to no session now
                problems.append("torch.save was patched again by someone else; not restored")
            self._torch = self._torch_original = self._torch_wrapper = None
        for cls, attribute, original, wrapper in reversed(self._trainers):
            if cls.__dict__.get(attribute) is not wrapper:
                problems.append(f"{cls.__module__}.Trainer.{attribute} was patched "
                                "again by someone else; not restored")
            elif original is _MISSING:
                delattr(cls, attribute)
            else:
                setattr(cls, attribute, original)
        self._trainers.clear()
        return problems

    # -- wrappers ---------------------------------------------------------------------------
    def _wrap_save(self, original: Callable[..., Any]) -> Callable[..., Any]:
        hooks = self

        @functools.wraps(original)
        def save(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            hooks._saved(call_argument(args, kwargs, 0, "obj"), call_argument(args, kwargs, 1, "f"))
            return result

        return save

    def _wrap_save_checkpoint(self, original: Callable[..., Any]) -> Callable[..., Any]:
        hooks = self

        @functools.wraps(original)
        def save_checkpoint(trainer: Any, *args: Any, **kwargs: Any) -> Any:
            depth = getattr(hooks._local, "lightning_depth", 0)
            hooks._local.lightning_depth = depth + 1
            try:
                result = original(trainer, *args, **kwargs)
            finally:
                hooks._local.lightning_depth = depth
            hooks._checkpointed(trainer, call_argument(args, kwargs, 0, "filepath"),
                                call_argument(args, kwargs, 1, "weights_only"))
            return result

        return save_checkpoint

    def _wrap_trainer_init(self, original: Callable[..., Any]) -> Callable[..., Any]:
        hooks = self

        @functools.wraps(original)
        def __init__(trainer: Any, *args: Any, **kwargs: Any) -> None:
            original(trainer, *args, **kwargs)
            hooks._trainer_created(trainer)

        return __init__

    def _trainer_created(self, trainer: Any) -> None:
        """Give a new ``Trainer`` the callback of the newest session that attaches one."""
        attaching = [s for s in self._active() if s.attach_trainer is not None]
        try:
            if attaching and not capture_suppressed():
                attach = attaching[-1].attach_trainer
                assert attach is not None
                attach(trainer)
        except Exception as exc:  # noqa: BLE001 - never break the user's Trainer(...)
            logger.warning("automagic: cannot attach the Lightning callback: %s", _one_line(exc))
            for session in attaching[-1:]:
                session._fail(f"cannot attach the Lightning callback: {_one_line(exc)}")

    def _busy(self) -> bool:
        """True while a capture is being logged or Lightning is saving on this thread."""
        return (capture_suppressed() or getattr(self._local, "capturing", False)
                or getattr(self._local, "lightning_depth", 0) > 0)

    def _saved(self, obj: Any, target: object) -> None:
        """After a successful ``torch.save``: hand a file destination to every session."""
        try:
            if self._busy():
                return
            path = _local_path(target)
            if path is None:
                return  # file objects / BytesIO: nothing on disk to log
            kind = type_for_saved(obj)
            sessions = self._active()
        except Exception as exc:  # noqa: BLE001 - never break the user's torch.save
            logger.warning("automagic: torch.save capture failed: %s", _one_line(exc))
            return
        metadata = {"captured_by": "torch.save", "source_path": str(path)}
        self._forward(sessions, path, kind, metadata, "torch.save")

    def _checkpointed(self, trainer: Any, filepath: object, weights_only: object) -> None:
        """After ``Trainer.save_checkpoint``: log the file on global rank 0."""
        try:
            if getattr(self._local, "capturing", False) or capture_suppressed():
                return
            if not getattr(trainer, "is_global_zero", True) or has_checkpoint_wrapper(trainer):
                return  # a TraceletCallback on this trainer logs its checkpoints itself
            sessions = self._active()
            path = _local_path(filepath)
            if path is None or "://" in str(filepath):
                for session in sessions:
                    session._fail(f"lightning checkpoint {filepath!r}: not a local file; not captured")
                return
            metadata = checkpoint_metadata(trainer, path, weights_only)
        except Exception as exc:  # noqa: BLE001 - never break the user's training
            logger.warning("automagic: lightning capture failed: %s", _one_line(exc))
            return
        self._forward(sessions, path, ArtifactType.CHECKPOINT, metadata, "lightning")

    def _forward(self, sessions: list[AutomagicSession], path: Path, kind: ArtifactType,
                 metadata: dict[str, Any], source: str) -> None:
        self._local.capturing = True
        try:
            for session in sessions:
                session._capture_file(path, kind, metadata, source)
        finally:
            self._local.capturing = False


#: The attribute marking a trainer's ``save_checkpoint`` as wrapped by a ``TraceletCallback``.
CALLBACK_WRAPPER_MARK = "_tracelet_callback"


def has_checkpoint_wrapper(trainer: Any) -> bool:
    """True while a ``TraceletCallback`` captures this trainer's checkpoints."""
    wrapper = getattr(trainer, "__dict__", {}).get("save_checkpoint")
    return getattr(wrapper, CALLBACK_WRAPPER_MARK, None) is not None


def finite_number(value: Any) -> float | None:
    """``value`` as a finite float (a Python number or a one-element tensor), else ``None``."""
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):  # a non-scalar tensor, a string, ...
        return None
    return number if math.isfinite(number) else None


def checkpoint_metadata(trainer: Any, path: Path, weights_only: object) -> dict[str, Any]:
    """What a captured Lightning checkpoint records: where, when (epoch, step), the metrics."""
    metadata: dict[str, Any] = {
        "captured_by": "lightning",
        "source_path": str(path),
        "epoch": int(trainer.current_epoch),
        "global_step": int(trainer.global_step),
    }
    if weights_only is not None:
        metadata["weights_only"] = bool(weights_only)
    metrics: dict[str, float] = {}
    for key, value in dict(getattr(trainer, "callback_metrics", {}) or {}).items():
        number = finite_number(value)
        if number is not None:
            metrics[str(key)] = number
    if metrics:
        metadata["metrics"] = metrics
    return metadata


_HOOKS = _CaptureHooks()


# -- watched folders ------------------------------------------------------------------------
class _FolderWatcher:
    """Finds files in watched folders that are new or changed and stable (no logging here).

    A file is stable once ``stable_checks`` consecutive scans found its ``(size, mtime)``
    unchanged, or, when it has been changing for more than ``max_wait`` seconds (by
    ``clock``), once one scan found it unchanged.
    """

    def __init__(self, roots: list[Path], *, stable_checks: int = 3, max_wait: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.roots = roots
        self.stable_checks = max(int(stable_checks), 1)
        self.max_wait = max(float(max_wait), 0.0)
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[Path, tuple[int, int]] = {}  # signature in the previous scan
        self._done: dict[Path, tuple[int, int]] = {}  # signature already logged (or baseline)
        self._unchanged: dict[Path, int] = {}  # consecutive scans that found it unchanged
        self._changing_since: dict[Path, float] = {}  # when a pending file was first seen changed

    def baseline(self) -> None:
        """Files present now are not new: remember them as already handled."""
        with self._lock:
            current = {path: signature for path, (_, signature) in self._stat_all().items()}
            self._seen = dict(current)
            self._done = dict(current)

    def claim_stable(self, final: bool = False) -> list[tuple[Path, Path]]:
        """``(root, file)`` pairs to log now, marked as handled so no other scan logs them.

        A file is claimed when its ``(size, mtime)`` differs from the one last handled and is
        stable (see the class docstring); with ``final`` every new or changed file is claimed.
        """
        with self._lock:
            now = self.clock()
            current = self._stat_all()
            claims: list[tuple[Path, Path]] = []
            for path, (root, signature) in current.items():
                if self._done.get(path) == signature:
                    self._forget_pending(path)
                    continue
                if self._seen.get(path) == signature:
                    self._unchanged[path] = self._unchanged.get(path, 0) + 1
                else:
                    self._unchanged[path] = 0
                started = self._changing_since.setdefault(path, now)
                unchanged = self._unchanged[path]
                waited_long = unchanged >= 1 and now - started >= self.max_wait
                if final or unchanged >= self.stable_checks or waited_long:
                    claims.append((root, path))
                    self._done[path] = signature
                    self._forget_pending(path)
            self._seen = {path: sig for path, (_, sig) in current.items()}
            for gone in self._done.keys() - current.keys():
                del self._done[gone]
            for gone in self._changing_since.keys() - current.keys():
                self._forget_pending(gone)
            return claims

    def _forget_pending(self, path: Path) -> None:
        self._unchanged.pop(path, None)
        self._changing_since.pop(path, None)

    def release(self, paths: list[Path]) -> None:
        """Claimed files that were not logged after all: the next scan may claim them again."""
        with self._lock:
            for path in paths:
                self._done.pop(path, None)

    def mark_handled(self, path: Path) -> None:
        """``path`` was just logged by another capture: do not log the same bytes again."""
        if not any(root == path.parent or root in path.parents for root in self.roots):
            return
        try:
            stat = path.stat()
        except OSError:
            return
        with self._lock:
            signature = (stat.st_size, stat.st_mtime_ns)
            self._done[path] = self._seen[path] = signature
            self._forget_pending(path)

    def _stat_all(self) -> dict[Path, tuple[Path, tuple[int, int]]]:
        found: dict[Path, tuple[Path, tuple[int, int]]] = {}
        for root in self.roots:
            if not root.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames
                                     if not is_skipped_file(d) and d != "__pycache__")
                for filename in filenames:
                    if is_skipped_file(filename):
                        continue
                    path = Path(dirpath, filename)
                    try:
                        stat = path.stat()
                    except OSError:  # removed between listing and stat
                        continue
                    if os.path.isfile(path):
                        found[path] = (root, (stat.st_size, stat.st_mtime_ns))
        return found


def _watched_name(root: Path, path: Path) -> str:
    """``stem`` for a file directly in ``root``; ``sub/dir/stem`` for one deeper down."""
    stem = artifact_name_for(path.stem)
    folders = path.parent.relative_to(root).parts
    if not folders:
        return stem
    name = "/".join([artifact_name_for(part, "dir") for part in folders] + [stem])
    return name if len(name) <= MAX_NAME_LENGTH else stem


# -- the session ----------------------------------------------------------------------------
class AutomagicSession:
    """Captures ``torch.save`` calls, Lightning checkpoints and files in watched folders.

    ``log`` receives every captured ``TraceletArtifact`` (``Experiment.log_artifact``);
    ``attach_trainer`` (when given) is called with every Lightning ``Trainer`` created while
    the session is started. ``errors`` lists the captures that failed, one line each; they
    never raise. ``stable_checks``, ``max_wait`` and ``clock`` set the watcher's stability
    rule (see ``_FolderWatcher``).
    """

    def __init__(self, log: Callable[[TraceletArtifact], Any], *, capture_saves: bool,
                 watch_dirs: list[Path], watch_interval: float, stable_checks: int = 3,
                 max_wait: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 attach_trainer: Callable[[Any], None] | None = None) -> None:
        self.log = log
        self.capture_saves = capture_saves
        self.attach_trainer = attach_trainer if capture_saves else None
        self.watch_dirs = [Path(d) for d in watch_dirs]
        self.watch_interval = max(float(watch_interval), _MIN_INTERVAL)
        self.stable_checks = stable_checks
        self.max_wait = max_wait
        self.clock = clock
        self.errors: list[str] = []
        self.scans = 0
        self._lock = threading.Lock()
        self._scanned = threading.Condition()
        self._errors_lock = threading.Lock()
        self._active = False
        self._hooked = False
        self._watcher: _FolderWatcher | None = None
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()

    @property
    def active(self) -> bool:
        return self._active

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._active:
                return
            self._active = True
            if self.capture_saves:
                for problem in _HOOKS.add(self):
                    self._fail(problem)
                self._hooked = True
            if self.watch_dirs:
                self._start_watching()

    def stop(self) -> None:
        with self._lock:
            if not self._active:
                return
            try:
                if self._thread is not None:
                    self._stop_event.set()
                    self._thread.join(timeout=max(_JOIN_TIMEOUT, 2 * self.watch_interval))
                    if self._thread.is_alive():
                        self._fail("folder watcher did not stop in time; it finishes in the background")
                if self._watcher is not None:
                    self._log_watched(self._watcher.claim_stable(final=True))
            finally:
                self._thread = None
                self._active = False
                if self._hooked:
                    self._hooked = False
                    for problem in _HOOKS.remove(self):
                        self._fail(problem)

    # -- watched folders --------------------------------------------------------------------
    def _start_watching(self) -> None:
        roots: list[Path] = []
        for folder in self.watch_dirs:
            root = Path(os.path.abspath(folder))
            if root.exists() and not root.is_dir():
                self._fail(f"watch dir {folder} is not a folder; ignored")
                continue
            if not root.exists():  # watched from the moment it appears; never created by us
                self._fail(f"watch dir {folder} does not exist (yet); watching for it")
            roots.append(root)
        if not roots:
            return
        self._watcher = _FolderWatcher(roots, stable_checks=self.stable_checks,
                                       max_wait=self.max_wait, clock=self.clock)
        self._watcher.baseline()
        self._stop_event.clear()
        self._thread = threading.Thread(target=self._watch_loop, name="tracelet-automagic-watch",
                                        daemon=True)
        self._thread.start()

    def _watch_loop(self) -> None:
        while not self._stop_event.wait(self.watch_interval):
            self.scan_once()

    def scan_once(self) -> list[str]:
        """One synchronous scan of the watched folders; returns the names it logged.

        A file is logged by the ``stable_checks``-th consecutive scan that finds its size and
        mtime unchanged (or the first one, once it has been changing for ``max_wait``).
        """
        logged: list[str] = []
        try:
            if self._watcher is not None:
                logged = self._log_watched(self._watcher.claim_stable())
        except Exception as exc:  # noqa: BLE001 - the watcher thread must keep running
            self._fail(f"folder scan failed: {_one_line(exc)}")
        with self._scanned:
            self.scans += 1
            self._scanned.notify_all()
        return logged

    def wait_for_scans(self, count: int, timeout: float) -> bool:
        """Block until ``scans`` reaches ``count`` (False on timeout)."""
        with self._scanned:
            return self._scanned.wait_for(lambda: self.scans >= count, timeout=timeout)

    def _log_watched(self, claims: list[tuple[Path, Path]]) -> list[str]:
        logged: list[str] = []
        for index, (root, path) in enumerate(claims):
            if self._stop_event.is_set() and threading.current_thread() is self._thread:
                if self._watcher is not None:  # stop() runs the final scan: leave them to it
                    self._watcher.release([p for _, p in claims[index:]])
                break
            if not path.is_file():  # deleted since the scan
                continue
            try:
                artifact = TraceletArtifact(
                    _watched_name(root, path), type_for_file(path),
                    metadata={"captured_by": "watcher", "source_path": str(path),
                              "watch_dir": str(root)})
                artifact.add_file(path)
                with suppress_capture():
                    self.log(artifact)
            except Exception as exc:  # noqa: BLE001 - reported, never raised
                self._fail(f"watched file {path}: {_one_line(exc)}")
                continue
            logged.append(artifact.name)
        return logged

    # -- captures from the patches ----------------------------------------------------------
    def _capture_file(self, path: Path, kind: ArtifactType, metadata: dict[str, Any],
                      source: str) -> None:
        if not self._active:
            return
        try:
            artifact = TraceletArtifact(artifact_name_for(path.stem), kind, metadata=dict(metadata))
            artifact.add_file(path)
            self.log(artifact)
        except Exception as exc:  # noqa: BLE001 - a capture never breaks the user's save
            self._fail(f"{source} capture of {path}: {_one_line(exc)}")
            return
        self.mark_handled(path)

    def mark_handled(self, path: Path) -> None:
        """``path`` was logged by a capture: the watcher does not log the same bytes again."""
        if self._watcher is not None:
            self._watcher.mark_handled(path)

    def _fail(self, line: str) -> None:
        with self._errors_lock:
            self.errors.append(line)
        logger.warning("automagic: %s", line)

    def __repr__(self) -> str:
        return (f"AutomagicSession(capture_saves={self.capture_saves}, "
                f"watch_dirs={[str(d) for d in self.watch_dirs]}, active={self._active})")
