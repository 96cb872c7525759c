"""One lazy name registry: names -> objects, built-ins by dotted path, entry points, install hints.

Modelled on fsspec's ``registry.py``. A name resolves, in order, to what was registered in this
process (``register``), a built-in given as ``"module:attribute"`` and imported on first use, or
an entry point of the registry's group. Nothing is imported until a name is asked for, so a
registry of tracker backends pulls in no SDK at ``import tracelet_core``. Registering a name
that is taken (registered, built in or an entry point) is refused with ``ConfigurationError``
unless ``clobber=True``; registering the very same object again is allowed.

Tracelet keeps two: backends (``tracelet.backends``, factories) and serializers
(``tracelet.serializers``, instances).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

from ._errors import ConfigurationError, TraceletError

T = TypeVar("T")


class Registry(Generic[T]):
    """Lazy ``name -> T`` lookups for one kind of plug-in (``kind`` names it in messages)."""

    def __init__(self, kind: str, group: str, builtins: dict[str, str], *,
                 hints: dict[str, str] | None = None,
                 prepare: Callable[[object], T] | None = None,
                 unknown: Callable[[str, list[str]], TraceletError] | None = None,
                 keep_loaded: bool = False) -> None:
        self.kind = kind
        self.group = group
        #: name -> ``"module:attribute"``, read on every lookup (not copied)
        self.builtins = builtins
        self.hints = dict(hints or {})
        self._prepare = prepare
        self._unknown = unknown
        self._keep_loaded = keep_loaded
        self._registered: dict[str, T] = {}
        self._loaded: dict[str, T] = {}  # with keep_loaded: built-ins and entry points, once loaded
        self._lock = threading.Lock()

    def _entry_points(self, name: str | None = None) -> list[EntryPoint]:
        found = entry_points(group=self.group)
        return [ep for ep in found if name is None or ep.name == name]

    def register(self, name: str, obj: T, *, clobber: bool = False) -> None:
        """Make ``name`` resolve to ``obj`` in this process; refused where ``name`` is taken by
        something else, unless ``clobber=True``."""
        with self._lock:
            current = self._registered.get(name)
            taken = current is not None and current is not obj
            taken = taken or (current is None and (name in self.builtins or bool(self._entry_points(name))))
            if taken and not clobber:
                raise ConfigurationError(
                    f"{self.kind} name {name!r} is already taken; pass clobber=True to replace it")
            self._registered[name] = obj
            self._loaded.pop(name, None)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._registered.pop(name, None)

    def names(self) -> list[str]:
        """Every name that can be asked for (nothing is imported)."""
        with self._lock:
            registered = set(self._registered)
        return sorted(registered | set(self.builtins) | {ep.name for ep in self._entry_points()})

    def registered(self, name: str) -> T | None:
        """What ``register`` put under ``name`` in this process, if anything."""
        with self._lock:
            return self._registered.get(name)

    def get(self, name: str) -> T:
        """The object ``name`` stands for, importing its module on first use; a
        ``ConfigurationError`` with the install hint where it cannot be imported."""
        with self._lock:
            found = self._registered.get(name, self._loaded.get(name))
        if found is not None:
            return found
        loaded = self._load(name)
        if not self._keep_loaded:
            return loaded
        with self._lock:
            return self._registered.get(name, self._loaded.setdefault(name, loaded))

    def _load(self, name: str) -> T:
        path = self.builtins.get(name)
        if path is not None:
            module_name, _, attribute = path.partition(":")
            try:
                module = importlib.import_module(module_name)  # Deferred: may import an SDK
            except ImportError as exc:
                raise ConfigurationError(
                    f"{self.kind} {name!r} is not available: {exc} ({self.hints.get(name, '')})") from exc
            return self._prepared(getattr(module, attribute))
        found = self._entry_points(name)
        if found:
            try:
                return self._prepared(found[0].load())
            except ImportError as exc:
                hint = self.hints.get(name, f"install the package that provides {name!r}")
                raise ConfigurationError(f"{self.kind} {name!r} cannot be imported ({exc}); {hint}") from exc
        if name in self.hints:
            raise ConfigurationError(
                f"{self.kind} {name!r} is not available in this installation ({self.hints[name]})")
        known = self.names()
        if self._unknown is not None:
            raise self._unknown(name, known)
        raise ConfigurationError(f"unknown {self.kind} {name!r}; available: {', '.join(known) or 'none installed'}")

    def _prepared(self, loaded: object) -> T:
        if self._prepare is not None:
            return self._prepare(loaded)
        return loaded  # type: ignore[return-value]
