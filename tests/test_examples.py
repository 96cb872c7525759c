"""Every script in examples/ runs with no arguments on the store ``TRACELET_STORE_URI`` names,
exits 0 and prints what it logged, which is then in that store. Examples are found by glob,
so a new one is run without touching this file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tracelet_core import ArtifactStore

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

#: Examples run with no arguments by another test, under the conditions they need; running them
#: here too would only add minutes. Each maps to the files that show it: the test, and what it runs.
RUN_ELSEWHERE = {
    "dagster_demo.py": [ROOT / "tests" / "test_docs.py", ROOT / "scripts" / "demo.sh"],  # demo.sh, twice
    "prefect_retraining.py": [ROOT / "tests" / "prefect" / "test_prefect_example.py"],  # on a Prefect test server
    "direct_core_api.py": [Path(__file__)],  # twice and with new data, below
}


def run_example(example: Path, store_dir: Path, workdir: Path, *args: str) -> str:
    env = {**os.environ, "TRACELET_STORE_URI": str(store_dir)}
    done = subprocess.run([sys.executable, str(example), *args], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.name not in RUN_ELSEWHERE], ids=lambda p: p.name)
def test_example_runs_with_no_arguments_and_prints_what_it_logged(example: Path, tmp_path: Path) -> None:
    store_dir, workdir = tmp_path / "store", tmp_path / "work"
    workdir.mkdir()
    out = run_example(example, store_dir, workdir)
    with ArtifactStore.open(store_dir) as store:
        logged = store.list()
        assert logged, f"{example.name} logged nothing"
        assert any(a.ref in out or a.name in out for a in logged), out  # it says what it logged
        store.verify()
    assert list(workdir.iterdir()) == [], "examples keep scratch files in a temporary folder, not the working directory"


def test_examples_run_elsewhere_are_run_there() -> None:
    for name, chain in RUN_ELSEWHERE.items():
        assert (ROOT / "examples" / name).exists(), name
        *tests, runner = chain
        assert name in runner.read_text(), (name, runner)
        for test_file in tests:
            assert runner.name in test_file.read_text(), (test_file, runner)


def test_direct_core_api_runs_twice_without_new_versions(tmp_path: Path) -> None:
    example, store_dir = ROOT / "examples" / "direct_core_api.py", tmp_path / "demo"
    first = run_example(example, store_dir, tmp_path)  # no arguments: the store TRACELET_STORE_URI names
    assert "promoted demo/model:v1 to production" in first
    assert "graph LR" in first and "verify: every blob" in first
    second = run_example(example, store_dir, tmp_path, "--store", str(store_dir))
    assert "kept demo/model:v1 in production" in second
    run_example(example, store_dir, tmp_path, "--store", str(store_dir), "--seed", "8")
    with ArtifactStore.open(store_dir) as store:
        assert [v.version for v in store.versions("demo/raw")] == ["v1", "v2"]
        assert store.get("demo/model:production").ref == "demo/model:v1"
        assert store.get("demo/evaluation:v2").inputs == ["demo/features:v2", "demo/model:v2"]
        upstream = store.lineage("demo/evaluation:v2")
        assert {"demo/raw:v2", "demo/features:v2", "demo/model:v2"} <= set(upstream.artifact_refs)
