"""``python -m benchmarks --quick`` runs every row of the performance table end to end (small
sizes; no thresholds: times are never asserted, only that each row produced numbers)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def table_order() -> list[str]:
    """The runner's ``TABLE_ORDER`` (read from its source: ``benchmarks`` is not installed)."""
    tree = ast.parse((ROOT / "benchmarks" / "_runner.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "TABLE_ORDER" for t in targets):
                assert node.value is not None
                return list(ast.literal_eval(node.value))
    raise AssertionError("TABLE_ORDER not found")


def test_the_quick_benchmark_prints_every_row(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACELET_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    run = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--json", str(out), "--tmp", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["skipped_modules"] == {}
    for key in table_order():
        cases = {k: v for k, v in report["raw"].items() if k.startswith(key)}
        assert cases, f"no case for {key}"
        for name, case in cases.items():
            assert case["skipped"] is None, (name, case["skipped"])
            assert case["times"], name
            assert not [e for e in case["errors"].values() if e.startswith("error")], (name, case["errors"])
    assert "machine" in run.stdout and "tracelet / this" in run.stdout
    assert list(tmp_path.iterdir()) == [out]  # the run removed its temporary folders
