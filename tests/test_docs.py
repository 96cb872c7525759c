"""Docs that run: every Python block in README.md and docs/, and every example."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tracelet_core import ArtifactStore

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


# The README's backends example runs MLflow on SQLite, whose models trip SQLAlchemy 2.1's
# deprecation of ``noload``: MLflow's warning, not ours.
@pytest.mark.filterwarnings(r"ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning")
@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_blocks_in_docs_run(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = PYTHON_BLOCK.findall(doc.read_text())
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__doc__"}
    for block in blocks:
        exec(compile(block, str(doc), "exec"), namespace)  # noqa: S102 - our own docs


def test_quickstart_example_runs_twice_without_new_versions(tmp_path: Path) -> None:
    store_dir = tmp_path / "demo"
    command = [sys.executable, str(ROOT / "examples/quickstart.py"), "--store", str(store_dir)]
    first = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "promoted demo/model:v1 to production" in first.stdout
    assert "graph LR" in first.stdout and "verify: every blob" in first.stdout
    second = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "kept demo/model:v1 in production" in second.stdout
    third = subprocess.run([*command, "--seed", "8"], capture_output=True, text=True, check=True)
    assert third.returncode == 0
    with ArtifactStore.open(store_dir) as store:
        assert [v.version for v in store.versions("demo/raw")] == ["v1", "v2"]
        assert store.get("demo/model:production").ref == "demo/model:v1"
        assert store.get("demo/evaluation:v2").inputs == ["demo/features:v2", "demo/model:v2"]
        upstream = store.lineage("demo/evaluation:v2")
        assert {"demo/raw:v2", "demo/features:v2", "demo/model:v2"} <= set(upstream.artifact_refs)
