"""Byte-level snapshots of a store folder, to prove a refused operation changed nothing."""

from __future__ import annotations

from pathlib import Path


def snapshot_tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (but the SQLite catalog's own files) with its bytes."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith("catalog.db")
    }
