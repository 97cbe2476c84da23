"""The README's main job, end to end (slow: about 3 minutes on 2 cores)."""

import json
import os
import subprocess
import sys

import pytest

from avgmm import demo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_results_table_layout():
    row = {"test_accuracy": 0.9, "test_accuracy_audio": 0.8, "test_accuracy_visual": 0.5,
           "test_accuracy_degraded": 0.6, "last_epoch": {"accuracy": 0.85},
           "final_gmm_auc_imbalanced": 0.75, "gmm_fit_aucs": []}
    table = demo.results_table({"concat": row, "adaptive": dict(row, gmm_fit_aucs=[0.9, 0.8])})
    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[2] == "| concat | 0.9000 | 0.8500 | 0.8000 | 0.5000 | 0.6000 | - | 0.750 |"
    assert lines[3].endswith("| 0.6000 | 0.900 | 0.750 |")


@pytest.mark.slow
def test_demo_runs_both_methods(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "avgmm.demo", f"--workdir={tmp_path}/runs",
         f"--data_dir={tmp_path}/data"], cwd=REPO, capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=REPO), timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    for method in ("concat", "warmup_only", "adaptive"):
        assert f"| {method} |" in out.stdout
    with open(tmp_path / "runs" / "demo_results.json") as f:
        results = json.load(f)
    assert results["adaptive"]["gmm_fits"] == 3
    for r in results.values():
        assert 0.5 < r["test_accuracy"] <= 1.0  # far above chance (1/6) on avsynth
