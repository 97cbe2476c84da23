"""Equal tuning: the same number of settings for every method, the screen-confirm-choose
protocol on validation only, and the tuned table's columns."""

import json
import os
import subprocess
import sys

import pytest

from avgmm import experiments, methods
from avgmm.analysis import report, tuned
from avgmm.experiments import runner, tuning

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_method_gets_the_same_number_of_settings_around_the_config_learning_rate():
    for v in experiments.table1():
        method = tuning.method_of(v, "adaptive")
        settings = tuning.grid(v, 0.01, "adaptive")
        assert len(settings) == tuning.SETTINGS, v.name
        (field, values), = methods.REGISTRY[method].tuning.items() or [(None, [None])]
        factors = tuning.LR_FACTORS if field else tuning.LR_FACTORS_ALONE
        lrs = sorted({s.values["optimizer.learning_rate"] for s in settings})
        assert lrs == pytest.approx(sorted(0.01 * f for f in factors))
        assert min(lrs) < 0.01 < max(lrs) and 0.01 in lrs
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
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump({"method": "adaptive", "seed": seed, "variant": variant}, f)
    return run


def test_the_protocol_confirms_the_best_two_of_seed_0_and_chooses_on_the_mean(tmp_path):
    v = experiments.find("ogm_ge")
    grid = tuning.grid(v, 0.01, "adaptive")
    root = str(tmp_path)
    sweep = experiments.SWEEPS["table1"]
    settings = {v.name: [(s.name, s.overrides) for s in grid]}
    planned = runner.plan(sweep, "configs/demo.py", root, [0], variants=[v],
                          settings=settings)
    for i, r in enumerate(planned):  # seed 0: settings 1 and 3 lead; 5 is best on test
        _fake_run(root, v.name, r.setting, 0, val={1: 0.9, 3: 0.8}.get(i, 0.5),
                  test=0.99 if i == 5 else 0.6)
    acc = tuning.accuracies_of_runs(planned)
    top = tuning.top_settings(acc, v.name, [s.name for s in grid])
    assert top == [grid[1].name, grid[3].name]
    assert tuning.missing(acc, v.name, top, tuning.CHOICE_SEEDS) == [
        (top[0], 1), (top[0], 2), (top[1], 1), (top[1], 2)]
    for seed in (1, 2):
        _fake_run(root, v.name, grid[1].name, seed, val=0.5, test=0.9)
        _fake_run(root, v.name, grid[3].name, seed, val=0.8, test=0.1)
    confirm = runner.plan(sweep, "configs/demo.py", root, [0, 1, 2], variants=[v],
                          settings={v.name: [(n, ()) for n in top]})
    best, means = tuning.choose(tuning.accuracies_of_runs(confirm), v.name, top)
    assert best == grid[3].name and means[best] == pytest.approx(0.8)


def test_tuned_rows_name_the_chosen_setting_the_grid_size_fits_and_cost(tmp_path):
    root = str(tmp_path)
    runs = [_fake_run(root, "adaptive_paper", "learning_rate0.01_gamma1", s, 0.8, 0.7)
            for s in range(3)]
    runs.append(_fake_run(root, "adaptive_paper", "learning_rate0.03_gamma1", 0, 0.1, 0.9))
    selection = {"adaptive_paper": {"setting": "learning_rate0.01_gamma1",
                                    "values": {"optimizer.learning_rate": 0.01,
                                               "loss.gamma": 1.0},
                                    "settings_tried": 6}}
    kept = tuned.selected_runs(runs, root, selection)
    assert sorted(kept) == sorted(runs[:3])  # the other setting's run is left out
    rows = [{"variant": "adaptive_paper", "runs": kept, "seeds": 3, "method_name": "adaptive",
             "members": [report.load(r) for r in kept]}]
    tuned.annotate(rows, selection)
    r = rows[0]
    assert r["setting"] == "learning_rate 0.01, gamma 1" and r["settings_tried"] == 6
    assert r["ambiguous_fits"] == "3/6" and r["seconds_per_run"] == pytest.approx(31.0)


def test_tune_dry_run_lists_the_screening_of_every_setting():
    out = subprocess.run(["bash", os.path.join(REPO, "launch.sh"), "table1", "configs/demo.py",
                          "--tune", "--dry-run", "--workdir=/tmp/t1tune"],
                         cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, PYTHON=sys.executable))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1].endswith("--table1 --selection=/tmp/t1tune/selection.json")
    assert lines[0].startswith("# planned: ")
    runs = [line for line in lines if " -m avgmm.main " in line]
    expected = sum(len(tuning.grid(v, 0.01, "adaptive")) for v in experiments.table1())
    assert len(runs) == expected == len(experiments.table1()) * tuning.SETTINGS
    assert any("/ogm_ge/learning_rate0.03_alpha" in line and "/seed0 " in line
               and "--config.ogm_ge.alpha=" in line for line in runs)


def test_tune_and_selection_exclude_each_other_and_bad_values_are_one_line():
    for args, message in ((["--tune", "--selection=x.json"], "exclude each other"),
                          (["--seeds=0"], "--seeds='0' is not allowed"),
                          (["--selection=nowhere.jsonl"], "no such file"),
                          (["--final_seeds"], "--final_seeds needs a value"),
                          (["--workdir="], "--workdir='' is not allowed")):
        out = subprocess.run([sys.executable, "-m", "avgmm.experiments", "run", "table1",
                              "configs/demo.py", *args, "--dry-run"], cwd=REPO,
                             capture_output=True, text=True)
        assert out.returncode == 2 and out.stderr.startswith("error: "), (args, out.stderr)
        assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
