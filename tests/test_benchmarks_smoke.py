"""``python -m benchmarks --quick`` runs every row of the performance table end to end (small
sizes; no thresholds: times are never asserted, only that each row produced numbers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks._runner import TABLE_ORDER

ROOT = Path(__file__).resolve().parent.parent


def test_the_quick_benchmark_prints_every_row(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACELET_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    run = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--json", str(out), "--tmp", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["skipped_modules"] == {}
    for key in TABLE_ORDER:
        cases = {k: v for k, v in report["raw"].items() if k.startswith(key)}
        assert cases, f"no case for {key}"
        for name, case in cases.items():
            assert case["skipped"] is None, (name, case["skipped"])
            assert case["times"], name
            assert not [e for e in case["errors"].values() if e.startswith("error")], (name, case["errors"])
    assert "machine" in run.stdout and "tracelet / this" in run.stdout
    assert list(tmp_path.iterdir()) == [out]  # the run removed its temporary folders
