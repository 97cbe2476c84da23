"""Equal tuning: the same grid for every method, selection on validation only, and the
tuned table's columns."""

import json
import os
import subprocess
import sys

import pytest

from avgmm import experiments, methods
from avgmm.analysis import tuned
from avgmm.errors import ExperimentError
from avgmm.experiments import tuning

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_method_gets_three_learning_rates_times_its_main_hyper_parameter():
    for v in experiments.table1():
        method = tuning.method_of(v, "adaptive")
        settings = tuning.grid(v, 0.01, "adaptive")
        (field, values), = methods.REGISTRY[method].tuning.items() or [(None, [None])]
        assert len(settings) == 3 * len(values), v.name
        lrs = sorted({s.values["optimizer.learning_rate"] for s in settings})
        assert lrs == pytest.approx([0.01 / 3, 0.01, 0.03])
        assert len({s.name for s in settings}) == len(settings)  # one folder each
        for s in settings:
            assert s.overrides[0] == f"--config.optimizer.learning_rate={s.values['optimizer.learning_rate']!r}"
            if field:
                assert f"--config.{field}={s.values[field]!r}" in s.overrides


def _fake_run(root, variant, setting, seed, val, test):
    run = os.path.join(root, variant, setting, f"seed{seed}")
    os.makedirs(run)
    with open(os.path.join(run, "results.json"), "w") as f:
        json.dump({"best_val_accuracy": val, "test_accuracy": test, "gmm_fits": 2,
                   "gmm_ambiguous_fits": [1], "last_epoch": {"accuracy": test},
                   "peer_protocol_best_test_accuracy": test}, f)
    with open(os.path.join(run, "timing.json"), "w") as f:
        json.dump({"wall": 30.0 + seed, "train": 10.0}, f)
    return run


def test_selection_uses_the_mean_validation_accuracy_never_the_test(tmp_path):
    v = experiments.find("ogm_ge")
    grid = tuning.grid(v, 0.01, "adaptive")
    root = str(tmp_path)
    for i, s in enumerate(grid):
        # Setting 4 is best on validation; setting 5 is best on test.
        for seed in (0, 1):
            _fake_run(root, v.name, s.name, seed, val=0.9 if i == 4 else 0.5 + seed * 0.01,
                      test=0.99 if i == 5 else 0.6)
    chosen = tuning.select(root, [v], {v.name: grid}, seeds=2)[v.name]
    assert chosen["setting"] == grid[4].name and chosen["settings_tried"] == 6
    assert chosen["val_means"][grid[4].name] == pytest.approx(0.9)
    assert list(chosen["overrides"]) == list(grid[4].overrides)
    os.remove(os.path.join(root, v.name, grid[0].name, "seed1", "results.json"))
    with pytest.raises(ExperimentError, match="has no results"):
        tuning.select(root, [v], {v.name: grid}, seeds=2)


def test_tuned_rows_name_the_chosen_setting_the_grid_size_fits_and_cost(tmp_path):
    root = str(tmp_path)
    runs = [_fake_run(root, "adaptive_paper", "learning_rate0.01_gamma1", s, 0.8, 0.7)
            for s in range(3)]
    runs.append(_fake_run(root, "adaptive_paper", "learning_rate0.03_gamma1", 0, 0.1, 0.9))
    selection = {"adaptive_paper": {"setting": "learning_rate0.01_gamma1",
                                    "values": {"optimizer.learning_rate": 0.01,
                                               "loss.gamma": 1.0},
                                    "settings_tried": 9}}
    kept = tuned.selected_runs(runs, root, selection)
    assert sorted(kept) == sorted(runs[:3])  # the other setting's run is left out
    rows = [{"variant": "adaptive_paper", "runs": kept, "seeds": 3, "method_name": "adaptive"}]
    tuned.annotate(rows, selection)
    r = rows[0]
    assert r["setting"] == "learning_rate 0.01, gamma 1" and r["settings_tried"] == 9
    assert r["ambiguous_fits"] == "3/6" and r["seconds_per_run"] == pytest.approx(31.0)


def test_tune_dry_run_lists_every_run_of_the_grid():
    out = subprocess.run(["bash", os.path.join(REPO, "launch.sh"), "table1", "configs/demo.py",
                          "--seeds", "1", "--tune", "--dry-run", "--workdir=/tmp/t1tune"],
                         cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, PYTHON=sys.executable))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1].endswith("--table1 --selection=/tmp/t1tune/selection.json")
    runs = [line for line in lines if " -m avgmm.main " in line]
    expected = sum(len(tuning.grid(v, 0.01, "adaptive")) for v in experiments.table1())
    assert len(runs) == expected
    assert any("/ogm_ge/learning_rate0.03_alpha0.8/seed0 " in line
               and "--config.ogm_ge.alpha=0.8" in line for line in runs)


def test_tune_and_selection_exclude_each_other_and_bad_values_are_one_line():
    for args, message in ((["--tune", "--selection=x.json"], "exclude each other"),
                          (["--seeds=0"], "--seeds='0' is not allowed"),
                          (["--final_seeds"], "--final_seeds needs a value"),
                          (["--workdir="], "--workdir='' is not allowed")):
        out = subprocess.run([sys.executable, "-m", "avgmm.experiments", "run", "table1",
                              "configs/demo.py", *args, "--dry-run"], cwd=REPO,
                             capture_output=True, text=True)
        assert out.returncode == 2 and out.stderr.startswith("error: "), (args, out.stderr)
        assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
