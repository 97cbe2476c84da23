"""avgmm.study tables from run folders, and launch.sh study's commands."""

import json
import os
import subprocess
import sys

import pytest

from avgmm.analysis import study

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(root, variant, seed, method, val, test, best_epoch, aucs=()):
    """A finished run: config, results and one metrics record per epoch (4 epochs)."""
    run = os.path.join(root, variant, f"seed{seed}")
    os.makedirs(run)
    config = {"method": method, "seed": seed, "data": {"name": "av_mnist"},
              "schedule": {"warmup_epochs": 2}}
    records = []
    for e in range(1, 5):
        record = {"epoch": e, "phase": "warmup" if e <= 2 else "adaptive",
                  "val": {"accuracy": val[e - 1], "accuracy_audio": 0.5 + 0.1 * e,
                          "accuracy_visual": 0.9 - 0.1 * e},
                  "test": {"accuracy": test[e - 1]}}
        if method == "adaptive" and e in (3, 4):
            record["gmm_fit"] = {"pi_1": 0.3 / (e - 2), "auc_imbalanced": aucs[e - 3]}
        records.append(record)
    results = {"test_accuracy": test[best_epoch - 1], "best_epoch": best_epoch, "epochs": 4,
               "last_epoch": {"accuracy": test[-1], "accuracy_degraded": 0.3,
                              "accuracy_clean": 0.8}, "gmm_fit_aucs": list(aucs),
               "test_accuracy_degraded": 0.4, "test_accuracy_clean": 0.9}
    for name, obj in (("config.json", config), ("results.json", results)):
        with open(os.path.join(run, name), "w") as f:
            json.dump(obj, f)
    with open(os.path.join(run, "metrics.jsonl"), "w") as f:
        f.write("\n".join(json.dumps(r) for r in records) + "\n")


def test_study_tables_pool_seeds_and_judge_the_adaptive_phase(tmp_path):
    root = str(tmp_path / "study")
    _run(root, "paper", 0, "adaptive", [.5, .7, .8, .6], [.50, .60, .70, .55], 3, (.9, .8))
    _run(root, "paper", 1, "adaptive", [.5, .7, .6, .6], [.40, .62, .50, .45], 2, (.7, .6))
    _run(root, "concat", 0, "concat", [.5, .6, .7, .8], [.5, .6, .7, .8], 4)
    os.makedirs(os.path.join(root, "unfinished", "seed0"))  # no results.json: skipped
    rows = {r["variant"]: r for r in study.summarize(study.load_runs(root))}
    assert set(rows) == {"paper", "concat"}
    paper = rows["paper"]
    assert paper["seeds"] == 2
    assert paper["test_best_val"] == "66.0 ± 5.7"  # 0.70 and 0.62 (epochs 3 and 2)
    assert paper["test_last"] == "50.0 ± 7.1"
    assert paper["test_warmup"] == "61.0 ± 1.4"  # epoch 2 ends the warm-up
    assert paper["best_in_adaptive"] == "1/2" and paper["best_epoch"] == "3, 2"
    assert paper["val_audio_warmup"] == "70.0 ± 0.0" and paper["val_audio_end"] == "90.0 ± 0.0"
    assert paper["fit_aucs"] == "0.800±0.141 / 0.700±0.141"
    assert paper["test_degraded"] == "40.0 ± 0.0" and paper["test_degraded_last"] == "30.0 ± 0.0"
    assert rows["concat"]["best_in_adaptive"] == "-" and rows["concat"]["fit_aucs"] == "-"
    text = study.tables(list(rows.values()))
    assert text.count("\n| paper |") == 2  # one row in each table
    paths = study.figures(study.load_runs(root), str(tmp_path), "test")
    assert all(os.path.getsize(p) > 0 for p in paths) and len(paths) == 2


def test_study_refuses_a_folder_without_runs(tmp_path):
    with pytest.raises(study.StudyError, match="no finished run"):
        study.load_runs(str(tmp_path))


def test_launch_study_dry_run_lists_every_variant_for_each_seed():
    out = subprocess.run(["bash", os.path.join(REPO, "launch.sh"), "study",
                          "configs/av_mnist.py", "--seeds", "2", "--dry-run"], cwd=REPO,
                         capture_output=True, text=True,
                         env=dict(os.environ, PYTHON=sys.executable))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines.pop() == f"{sys.executable} -m avgmm.study runs/study/av_mnist"
    assert lines.pop(0).startswith("# planned: 26 runs")
    assert len(lines) == 2 * 13
    paper = [line for line in lines if "/paper/seed1 " in line]
    assert paper and "--config.loss.unimodal_weight=0 --config.loss.gap_gradient=both" in paper[0]
    for variant in ("concat", "warmup_only", "paper_gamma0", "paper_posteriors_refit",
                    "ours_unimodal"):
        assert any(f"/{variant}/seed0 --config.seed=0" in line for line in lines)
