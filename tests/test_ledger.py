"""Run ledgers: the key of a run, lines that outlive the workdirs, sweeps that skip what a
ledger records, shards that merge into the whole sweep, and tables from ledgers alone."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from avgmm import methods
from avgmm.analysis import study
from avgmm.errors import ExperimentError
from avgmm.experiments import ledger, tuning

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = ["run", "table1", "configs/tiny.py", "--seeds=3", "--variants=concat"]


def _key(*overrides, spec="configs/demo.py"):
    return ledger.run_key(ledger.resolve(spec, ["--config.seed=0", *overrides]))


def test_the_key_follows_what_decides_the_results_and_nothing_else():
    base = _key("--config.method=ogm")
    # How a run executes, what it measures, other methods' settings: the same run.
    for same in ("--config.num_devices=2", "--config.data.data_dir=/elsewhere",
                 "--config.variant=renamed", "--config.checkpoint_keep=5",
                 "--config.log_every_steps=7", "--config.compilation_cache_dir=",
                 "--config.evaluators=('accuracy',)", "--config.mmpareto.gamma=3.0"):
        assert _key("--config.method=ogm", same) == base, same
    # Its own method's settings, the shared ones, the seed and the data: another run.
    for other in ("--config.ogm.alpha=0.1", "--config.optimizer.learning_rate=0.5",
                  "--config.epochs=11", "--config.seed=1", "--config.data.name=x",
                  "--config.method=opm"):
        assert _key("--config.method=ogm", other) != base, other


def test_a_field_added_later_at_the_value_older_runs_had_keeps_their_key():
    config = json.loads(ledger.resolve("configs/demo.py", []).to_json_best_effort())
    key = ledger.run_key(config)
    older = json.loads(json.dumps(config))
    del older["eval_every_epochs"]  # ADDED_FIELDS: runs saved before it ran every epoch
    del older["data"]["expect"]["setting"]  # None: "not checked"
    assert ledger.run_key(older) == key
    older["eval_every_epochs"] = 2
    assert ledger.run_key(older) != key


def _line(variant, seed, setting="", val=0.5, test=0.5, key=None, seconds=10.0, overrides=()):
    return {"ledger": ledger.VERSION, "sweep": "table1", "config": "configs/demo.py",
            "variant": variant, "setting": setting, "seed": seed,
            "key": key or f"{variant}-{setting}-{seed}", "overrides": [],
            "setting_overrides": list(overrides),
            "run_config": {"method": variant, "seed": seed, "data": {"name": "avsynth/default"},
                           "evaluators": ["accuracy"]},
            "results": {"best_val_accuracy": val, "test_accuracy": test,
                        "last_epoch": {"accuracy": test}, "best_epoch": 2, "epochs": 2},
            "epochs": [{"epoch": e, "val": {"accuracy": val, "accuracy_audio": 0.5,
                                            "accuracy_visual": 0.5},
                        "test": {"accuracy": test}} for e in (1, 2)],
            "seconds": seconds, "train_seconds": seconds / 2, "commit": "abc"}


def _write(path, lines):
    with open(path, "w") as f:
        f.write("".join(json.dumps(l) + "\n" for l in lines))
    return str(path)


def test_merged_ledgers_refuse_a_run_recorded_twice_and_a_cut_line(tmp_path):
    a = _write(tmp_path / "a.jsonl", [_line("concat", 0), _line("concat", 1)])
    b = _write(tmp_path / "b.jsonl", [_line("concat", 2), _line("concat", 1)])
    assert len(ledger.read([a])) == 2
    with pytest.raises(ExperimentError, match=r"b.jsonl:2 records concat seed 1 .* already "
                       r"at .*a.jsonl:2"):
        ledger.read([a, b])
    with open(a, "a") as f:
        f.write('{"ledger": 1, "key": "x", "vari')  # a line a killed writer cut off
    with pytest.raises(ExperimentError, match="a.jsonl:3 is not a ledger line"):
        ledger.read([a])


def test_the_tuning_choice_is_made_again_from_a_ledger_on_validation_only(tmp_path):
    lines = []
    names = [f"lr{i}" for i in range(tuning.SETTINGS)]
    for i, name in enumerate(names):  # screening: lr2 and lr4 best on validation
        lines.append(_line("ogm", 0, name, val={2: 0.9, 4: 0.85}.get(i, 0.5), test=0.99 if i == 5
                           else 0.6, overrides=[f"--config.optimizer.learning_rate={i}.0"]))
    path = _write(tmp_path / "t.jsonl", lines)
    with pytest.raises(ExperimentError, match="not finished tuning ogm: missing lr2 seed 1"):
        tuning.read_selection(path)
    # Confirmation: lr4 has the better mean over seeds 0-2, though lr2 led on seed 0.
    lines += [_line("ogm", s, "lr2", val=0.6) for s in (1, 2)]
    lines += [_line("ogm", s, "lr4", val=0.8) for s in (1, 2)]
    lines += [_line("ogm", s, "lr4", val=0.1, test=0.1) for s in (3, 4)]
    chosen = tuning.read_selection(_write(tmp_path / "t.jsonl", lines))["ogm"]
    assert chosen["setting"] == "lr4" and chosen["settings_tried"] == tuning.SETTINGS
    assert chosen["values"] == {"optimizer.learning_rate": 4.0}
    assert chosen["val_means"]["lr4"] == pytest.approx((0.85 + 0.8 + 0.8) / 3)
    kept = tuning.chosen_lines(lines, {"ogm": chosen})
    assert sorted(l["seed"] for l in kept) == [0, 1, 2, 3, 4]


def test_the_report_and_the_study_read_a_ledger_alone(tmp_path):
    lines = [_line(v, s, val=0.5, test=t + 0.01 * s, seconds=20.0)
             for v, t in (("concat", 0.6), ("warmup_only", 0.7)) for s in range(3)]
    path = _write(tmp_path / "l.jsonl", lines)
    out = subprocess.run([sys.executable, "-m", "avgmm.report", path, "--table1",
                          f"--out={tmp_path / 'rep'}"], cwd=REPO, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    row = next(l for l in out.stdout.splitlines() if l.startswith("| Warm-up loss only"))
    assert "| 3 | 71.00 ± 1.00 |" in row and "| 20 |" in row  # 3 seeds, mean, s / run
    variants = study.ledger_runs(path)
    assert sorted(variants) == ["concat", "warmup_only"]
    rows = {r["variant"]: r for r in study.summarize(variants)}
    assert rows["concat"]["test_best_val"] == "61.0 ± 1.0"


def _sweep(args, cwd=REPO, **kw):
    return subprocess.Popen([sys.executable, "-m", "avgmm.experiments", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kw)


def _results(path):
    return {l["key"]: (l["seed"], l["results"]["test_accuracy"],
                       l["results"]["best_val_accuracy"]) for l in ledger.read([path])}


def test_a_killed_sweep_reruns_only_what_its_ledger_lacks_and_shards_merge(
        tmp_path, tiny_data_dir):
    data = f"--config.data.data_dir={tiny_data_dir}"
    # Two shards, each in a folder of its own, merged by concatenation.
    shards = []
    for i in (0, 1):
        path = str(tmp_path / f"shard{i}.jsonl")
        proc = _sweep(SWEEP + [f"--workdir={tmp_path / f'shard{i}'}", f"--ledger={path}",
                               f"--shard={i}/2", data])
        out = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, out
        shards.append(path)
    merged = tmp_path / "merged.jsonl"
    merged.write_text("".join(open(p).read() for p in shards))
    assert [len(ledger.read([p])) for p in shards] == [2, 1]
    # The unsharded sweep, killed once its first run is in the ledger ...
    whole = str(tmp_path / "whole.jsonl")
    proc = _sweep(SWEEP + [f"--workdir={tmp_path / 'first'}", f"--ledger={whole}", data])
    deadline = time.time() + 600
    while not (os.path.exists(whole) and open(whole).read().count("\n") >= 1):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(ledger.read([whole]))
    # ... and restarted from its ledger alone (no workdir of the first attempt).
    proc = _sweep(SWEEP + [f"--workdir={tmp_path / 'second'}", f"--ledger={whole}", data])
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out
    assert f"{done} of 3 planned run(s) recorded already; {3 - done} to run" in out
    assert sorted(os.listdir(tmp_path / "second" / "concat")) == sorted(
        f"seed{l['seed']}" for l in ledger.read([whole])[done:])
    # The restarted sweep and the merged shards hold the same runs with the same results.
    assert _results(whole) == _results(str(merged))
    line = ledger.read([whole])[0]
    assert line["commit"] == ledger.code_commit() and line["sweep"] == "table1"
    assert line["key"] == ledger.run_key(ledger.resolve("configs/tiny.py", line["overrides"]))


def test_shard_and_ledger_options_are_checked_in_one_line(tmp_path):
    for args, message in ((["--shard=2/2", "--ledger=x.jsonl"], "--shard='2/2' is not allowed"),
                          (["--shard=0/2"], "--shard needs --ledger"),
                          ([f"--ledger={tmp_path}"], "is not allowed: name a file"),
                          (["--tune", "--seeds=2"], "--seeds does not apply to --tune"),
                          (["--tune", "--final_seeds=2"], "--final_seeds=2 is not allowed")):
        out = subprocess.run([sys.executable, "-m", "avgmm.experiments", "run", "table1",
                              "configs/demo.py", *args, "--dry-run"], cwd=REPO,
                             capture_output=True, text=True)
        assert out.returncode == 2 and out.stderr.startswith("error: "), (args, out.stderr)
        assert message in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_the_dry_run_plans_the_protocol_and_estimates_hours_from_the_ledger(tmp_path):
    path = _write(tmp_path / "l.jsonl", [_line("concat", s, seconds=36.0) for s in range(3)])
    out = subprocess.run([sys.executable, "-m", "avgmm.experiments", "run", "table1",
                          "configs/demo.py", "--tune", "--dry-run", f"--ledger={path}",
                          "--workdir=/tmp/t1plan"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    n = len(methods.REGISTRY) + 1  # adaptive runs twice
    counts = tuning.planned_count(n, 5)
    assert counts["total"] == n * (tuning.SETTINGS + 4 + 2)
    assert (f"# planned: {counts['total']} runs (screen {counts['screen']}, confirm "
            f"{counts['confirm']}, final {counts['final']}); about "
            f"{counts['total'] * 36 / 3600:.1f} hours one at a time") in out.stdout
    runs = [l for l in out.stdout.splitlines() if " -m avgmm.main " in l]
    assert len(runs) == counts["screen"] and all("/seed0 " in l for l in runs)


def _setting_lines(name, guided_gain, clean_gap, seeds=5):
    """A guided-study ledger: warm-up only at 90% (clean clips `clean_gap` points above),
    gmm_guided `guided_gain` points above it, seed by seed with a little noise."""
    lines = []
    for s in range(seeds):
        wiggle = 0.002 * (s % 3)
        for variant, acc in (("warmup_only", 0.90 + wiggle), ("concat", 0.85 + wiggle),
                             ("guided_weak0", 0.90 + guided_gain / 100 + wiggle + 0.003 * (-1) ** s),
                             ("adaptive_paper", 0.89 + wiggle)):
            line = _line(variant, s, val=acc, test=acc, key=f"{name}-{variant}-{s}")
            line["config"] = f"configs/av_mnist.py:{name}"
            line["results"]["test_accuracy_clean"] = acc + clean_gap / 100
            lines.append(line)
    return lines


def test_the_verdict_pools_only_the_settings_that_can_tell(tmp_path):
    paths = [_write(tmp_path / f"{n}.jsonl", _setting_lines(n, gain, gap))
             for n, gain, gap in (("noise", 3.0, 10.0), ("graded", 0.0, 8.0),
                                  ("two_sided", 5.0, 1.0))]
    out = subprocess.run([sys.executable, "-m", "avgmm.study", *paths,
                          f"--out={tmp_path / 'out'}"], cwd=REPO, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    verdict = (tmp_path / "out" / "verdict.md").read_text()
    rows = {l.split(" | ")[0].strip("| "): l for l in verdict.splitlines()
            if l.startswith("| noise") or l.startswith("| graded") or l.startswith("| two_")}
    assert "| 10.0 | yes | concat 85.2 ± 0.2 |" in rows["noise"]
    assert "| 1.0 | no |" in rows["two_sided"]
    assert ("GMM guidance helps on some settings only: gmm_guided is better than the "
            "warm-up loss alone on noise; level with the warm-up loss alone on graded") in verdict
    assert "two_sided: the warm-up loss is within 2 points" in verdict
    for name in ("noise", "graded", "two_sided"):
        assert (tmp_path / "out" / name / "study.md").exists()


def test_the_committed_ledgers_keep_the_keys_todays_code_gives_their_runs():
    """The project's own ledgers outlive refactors: each recorded request (config file and
    overrides) still resolves to the key it was recorded under. A change that breaks this
    changes what those runs would compute (then the golden method test changes too), or
    adds a field without its old value in ADDED_FIELDS."""
    paths = [os.path.join(REPO, "docs", d, f) for d in ("table1", "gmm_guidance")
             if os.path.isdir(os.path.join(REPO, "docs", d))
             for f in sorted(os.listdir(os.path.join(REPO, "docs", d))) if f.endswith(".jsonl")]
    if not paths:
        pytest.skip("no committed ledger in docs/")
    seen = set()
    for line in ledger.read(paths):
        group = (line["config"], line["variant"], line.get("setting", ""))
        if group in seen:  # one run of each variant and setting is enough
            continue
        seen.add(group)
        config = ledger.resolve(os.path.join(REPO, line["config"]), line["overrides"])
        assert ledger.run_key(config) == line["key"], (line["config"], line["overrides"])
        assert ledger.key_config(config) == line["run_config"], line["overrides"]


def test_a_choice_reused_from_another_sweep_says_where_it_was_made(tmp_path):
    lines = []
    for s in range(5):
        line = _line("ogm", s, "lr4", val=0.7, overrides=["--config.optimizer.learning_rate=4.0"])
        line["selected_in"] = "docs/table1/demo.jsonl"
        lines.append(line)
    chosen = tuning.read_selection(_write(tmp_path / "reuse.jsonl", lines))["ogm"]
    assert chosen["setting"] == "lr4" and chosen["settings_tried"] == "chosen in demo.jsonl"
    assert len(tuning.chosen_lines(lines, {"ogm": chosen})) == 5
