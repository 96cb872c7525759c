"""Automagic capture (placeholder; replaced by the real implementation)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


class AutomagicSession:
    """Captures ``torch.save`` calls, Lightning checkpoints and files in watched folders."""

    def __init__(self, log: Callable[[Any], Any], *, capture_saves: bool,
                 watch_dirs: list[Path], watch_interval: float) -> None:
        self._log = log
        self.capture_saves = capture_saves
        self.watch_dirs = watch_dirs
        self.watch_interval = watch_interval
        self.errors: list[str] = []

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
