"""Docs that run: every Python block in README.md and docs/, the strict docs build, and the
README's first command (scripts/demo.sh) with its "a second run creates no new versions"."""

from __future__ import annotations

import html
import os
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


def test_docs_site_builds_strictly(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    pages = {p.relative_to(tmp_path / "site").as_posix() for p in (tmp_path / "site").glob("**/index.html")}
    for page in ("index.html", "concepts/index.html", "reference/index.html", "cli/index.html",
                 "comparison/index.html", "troubleshooting/index.html"):
        assert page in pages, sorted(pages)
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    assert "ArtifactStore" in reference and "set_alias" in reference  # generated from docstrings
    for adapter_name in ("TraceletIOManager", "TraceletResource", "tracelet_sensor", "tracelet_task", "load_artifact"):
        assert adapter_name in reference, adapter_name
    text = html.unescape(re.sub(r"<[^>]+>", "", reference))
    assert "blobs: BlobStore" not in text and "record: VersionRecord" not in text  # no private constructors
    home = html.unescape(re.sub(r"<[^>]+>", "", (tmp_path / "site" / "index.html").read_text()))
    assert home.index("pip install tracelet-artifacts") < home.index("scripts/demo.sh")  # install first


def test_every_docs_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs").glob("**/*.md"):
        assert f": {page.relative_to(ROOT / 'docs').as_posix()}" in nav, page


def test_cli_reference_covers_every_command() -> None:
    import typer

    from tracelet_core.cli import app

    reference = (ROOT / "docs" / "cli.md").read_text()
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    assert len(commands) >= 10
    for name in commands:
        assert f"## {name}\n" in reference and f"tracelet {name}" in reference, name


def run_demo(*args: str, env: dict[str, str]) -> str:
    """``bash scripts/demo.sh`` with this interpreter (no install: it is the one running the tests)."""
    done = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_demo_runs_the_dagster_pipeline_and_a_second_run_creates_nothing(tmp_path: Path) -> None:
    store_dir, page = tmp_path / "default-store", tmp_path / "lineage.html"
    env = {**os.environ, "TRACELET_PYTHON": sys.executable, "TRACELET_STORE_URI": str(store_dir),
           "TRACELET_DEMO_PAGE": str(page)}
    first = run_demo(env=env)  # the default store (TRACELET_STORE_URI)
    assert "this run created 5 new version(s)" in first
    assert "demo/model:v1" in first and "[production]" in first
    assert "dagster: demo__model (run " in first and "demo/raw_data:v1 (dataset)" in first  # the tree
    assert f"lineage page: {page}" in first and page.read_text().count('class="node ') == 10

    second = run_demo(f"--store={store_dir}", env=env)
    assert "this run created no new versions" in second and "B  new" not in second
    with ArtifactStore.open(store_dir) as store:
        for name in ("demo/raw_data", "demo/features", "demo/model", "demo/evaluation", "demo/promotion"):
            assert [v.version for v in store.versions(name)] == ["v1"], name
        assert store.get("demo/evaluation:v1").inputs == ["demo/features:v1", "demo/model:v1"]
        assert store.get("demo/model:production").ref == "demo/model:v1"


def fake_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A venv whose python only records how it was called (to watch setup.sh decide)."""
    venv, calls = tmp_path / "venv", tmp_path / "calls.log"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    python.chmod(0o755)
    return venv, calls


def run_setup(venv: Path, *extras: str) -> str:
    done = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh"), *extras], env={**os.environ,
                          "TRACELET_VENV": str(venv)}, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def test_setup_installs_once_then_skips_pip_until_the_pins_change(tmp_path: Path) -> None:
    venv, calls = fake_venv(tmp_path)
    run_setup(venv, "demo", "test")
    assert calls.read_text().splitlines() == [
        "-m pip install --quiet --disable-pip-version-check torch==2.13.0",
        "-m pip install --quiet --disable-pip-version-check -c constraints.txt -e .[demo]"]
    calls.unlink()
    assert "skipping pip" in run_setup(venv, "demo", "test") and not calls.exists()

    (venv / ".tracelet-installed-demo").write_text("stale\n")  # pyproject.toml or constraints changed
    run_setup(venv, "demo", "test")
    assert calls.read_text().count("pip install") == 2
    calls.unlink()
    (venv / ".tracelet-installed-test").write_text((venv / ".tracelet-installed-demo").read_text())
    (venv / ".tracelet-installed-demo").unlink()
    assert "has .[test]" in run_setup(venv, "demo", "test") and not calls.exists()  # the test stack covers the demo
    run_setup(venv)  # test.sh: the default extra is the test stack
    assert not calls.exists()
