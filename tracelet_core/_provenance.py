"""Provenance of a producing process: git state, Python and library versions, cheaply.

``with_provenance(run)`` returns ``run`` with ``extra`` holding, where available:

- ``git``: ``{"commit", "branch", "dirty"}`` of the repository the working directory is in.
  Commit and branch are read from the ``.git`` files (``HEAD``, loose refs, ``packed-refs``;
  worktrees and ``gitdir:`` files followed), no subprocess. ``dirty`` comes from one
  ``git --no-optional-locks status --porcelain --untracked-files=no`` call (tracked files
  only, no index lock taken), ``None`` when git is missing or slow. Both are cached per
  process and working directory, so a process logging many versions reads git once;
  a tree edited while the process runs keeps the state seen at its first log.
- ``python``: the interpreter version.
- ``packages``: ``{distribution: version}`` for tracelet-artifacts, the orchestrator, and
  numpy, pandas, scikit-learn, torch, lightning only when already imported (``sys.modules``).

Never file contents, remote URLs, environment values or credentials. Keys the caller already
put in ``extra`` win.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from ._model import RunInfo

#: Distribution of each library whose version matters, by the module that shows it is in use.
_LIBRARIES = {
    "numpy": "numpy",
    "pandas": "pandas",
    "sklearn": "scikit-learn",
    "torch": "torch",
    "lightning": "lightning",
    "pytorch_lightning": "pytorch-lightning",
}
#: The orchestrator's distribution, by ``RunInfo.orchestrator``.
_ORCHESTRATORS = {"dagster": "dagster", "prefect": "prefect"}
_GIT_TIMEOUT_S = 2.0

_lock = threading.Lock()
_git_cache: dict[tuple[int, str], dict[str, Any] | None] = {}
_version_cache: dict[str, str | None] = {}


def with_provenance(run: RunInfo) -> RunInfo:
    """``run`` with its provenance added to ``extra`` (the caller's own keys kept)."""
    found = provenance(run.orchestrator)
    missing = {key: value for key, value in found.items() if key not in run.extra}
    return replace(run, extra={**run.extra, **missing}) if missing else run


def provenance(orchestrator: str | None = None) -> dict[str, Any]:
    """``{"git": ..., "python": ..., "packages": ...}`` for this process (``git`` only inside
    a repository)."""
    result: dict[str, Any] = {}
    try:
        cwd = Path.cwd()
    except OSError:  # the working directory was removed
        cwd = None
    git = git_state(cwd) if cwd is not None else None
    if git is not None:
        result["git"] = dict(git)
    result["python"] = platform.python_version()
    result["packages"] = packages(orchestrator)
    return result


def packages(orchestrator: str | None = None) -> dict[str, str]:
    """Versions of tracelet, the orchestrator and the imported libraries that matter."""
    wanted = ["tracelet-artifacts"]
    if orchestrator in _ORCHESTRATORS:
        wanted.append(_ORCHESTRATORS[orchestrator])
    wanted += [dist for module, dist in _LIBRARIES.items() if module in sys.modules]
    found = {}
    for dist in wanted:
        version = _version(dist)
        if version is not None:
            found[dist] = version
    return found


def _version(dist: str) -> str | None:
    with _lock:
        if dist in _version_cache:
            return _version_cache[dist]
    from importlib import metadata  # Deferred for import perf

    try:
        version: str | None = metadata.version(dist)
    except metadata.PackageNotFoundError:
        version = None
    with _lock:
        _version_cache[dist] = version
    return version


def git_state(cwd: Path) -> dict[str, Any] | None:
    """``{"commit", "branch", "dirty"}`` of the repository holding ``cwd`` (cached per process
    and folder), or ``None`` outside a repository."""
    key = (os.getpid(), str(cwd))
    with _lock:
        if key in _git_cache:
            return _git_cache[key]
    state = _read_git(cwd)
    with _lock:
        _git_cache[key] = state
    return state


def _find_git_dir(cwd: Path) -> tuple[Path, Path] | None:
    """``(work tree, git dir)`` of the repository holding ``cwd``."""
    for folder in (cwd, *cwd.parents):
        dot_git = folder / ".git"
        try:
            if dot_git.is_dir():
                return folder, dot_git
            if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
                text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
                if text.startswith("gitdir:"):
                    target = Path(text[len("gitdir:"):].strip())
                    return folder, (target if target.is_absolute() else folder / target).resolve()
                return None
        except OSError:
            return None
    return None


def _resolve_ref(git_dir: Path, common: Path, ref: str) -> str | None:
    for base in (git_dir, common):
        try:
            value = (base / ref).read_text(encoding="utf-8").strip()
        except OSError:
            continue
        return value or None
    try:
        for line in (common / "packed-refs").read_text(encoding="utf-8").splitlines():
            parts = line.split(" ", 1)
            if len(parts) == 2 and parts[1].strip() == ref and not line.startswith(("#", "^")):
                return parts[0]
    except OSError:
        return None
    return None


def _read_git(cwd: Path) -> dict[str, Any] | None:
    found = _find_git_dir(cwd)
    if found is None:
        return None
    work_tree, git_dir = found
    common = git_dir
    try:
        common_text = (git_dir / "commondir").read_text(encoding="utf-8").strip()
        common = (git_dir / common_text).resolve()
    except OSError:
        pass
    try:
        head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    branch: str | None = None
    if head.startswith("ref:"):
        ref = head[4:].strip()
        branch = ref.removeprefix("refs/heads/")
        commit = _resolve_ref(git_dir, common, ref)  # None: a branch with no commit yet
    else:
        commit = head or None  # detached HEAD
    return {"commit": commit, "branch": branch, "dirty": _dirty(work_tree)}


def _dirty(work_tree: Path) -> bool | None:
    """Whether tracked files differ from HEAD (untracked files ignored); ``None`` when git
    cannot tell within ``_GIT_TIMEOUT_S``."""
    try:
        done = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
            cwd=work_tree, capture_output=True, timeout=_GIT_TIMEOUT_S, check=False,
            env={key: value for key, value in os.environ.items() if not key.startswith("GIT_")},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return bool(done.stdout.strip())


def describe_provenance(extra: dict[str, Any]) -> list[tuple[str, str]]:
    """``(label, text)`` rows for a producer's recorded provenance (what ``tracelet show`` prints)."""
    rows: list[tuple[str, str]] = []
    git = extra.get("git")
    if isinstance(git, dict):
        text = f"git {str(git.get('commit') or 'no commit')[:12]}"
        text += f" on {git['branch']}" if git.get("branch") else " (detached)"
        dirty = git.get("dirty")
        text += ", dirty" if dirty is True else ", clean" if dirty is False else ", dirty: unknown"
        rows.append(("code", text))
    if extra.get("python"):
        rows.append(("python", str(extra["python"])))
    packages = extra.get("packages")
    if isinstance(packages, dict) and packages:
        rows.append(("packages", ", ".join(f"{dist} {version}" for dist, version in sorted(packages.items()))))
    return rows
