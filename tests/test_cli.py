"""The command line: mistakes answered in one line with exit status 2, Ctrl-C, finished
runs, --fresh and --print_config."""

import json
import os
import subprocess
import sys

import pytest

from avgmm import config_text, errors, evaluation, main, run_config, train
from avgmm.workdir import Workdir
from avgmm.data import pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, home=None, timeout=240):
    env = dict(os.environ, PYTHONPATH=REPO)
    if home:
        env["HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "avgmm.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: ")
    return lines[0]


def test_missing_dataset_is_one_line_with_the_command_and_leaves_no_workdir(tmp_path):
    workdir = tmp_path / "runs" / "x"
    proc = _cli("--config=configs/crema.py", f"--workdir={workdir}", home=tmp_path)
    line = _one_error_line(proc)
    assert line == ("error: dataset 'crema_d_av' is not prepared in ~/avgmm_data; prepare "
                    "it with: python -m data_prep.crema_d --raw_dir=<CREMA-D download> "
                    "--data_dir=~/avgmm_data")
    assert not workdir.exists() and not (tmp_path / "runs").exists()


def test_unknown_override_is_one_line_with_the_suggestion(tmp_path):
    proc = _cli("--config=configs/tiny.py", f"--workdir={tmp_path}/x",
                "--config.loss.betta=0")
    line = _one_error_line(proc)
    assert line == ('error: --config.loss.betta: config.loss has no field \'betta\'; did you '
                    'mean "beta" instead of "betta"?')


def test_print_config_shows_values_comments_and_overrides_and_every_expect_field():
    proc = _cli("--config=configs/demo.py", "--print_config", "--config.loss.beta=0",
                "--config.data.expect.sample_rate=8000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("# configs/demo.py with ")
    assert "loss.beta=0.0 (file: 1.0)" in lines[0]
    beta = next(line for line in lines if line.startswith("loss.beta = "))
    assert beta.startswith("loss.beta = 0.0  # [overridden; file: 1.0]")
    assert any(line.startswith("data.expect.sample_rate = 8000  # [overridden") for line in lines)
    method = next(line for line in lines if line.startswith("method = "))
    assert "concat (baseline), warmup_only" in method  # the comment of configs/default.py


def test_batch_larger_than_the_data_names_the_largest_that_fits(tiny_config, tmp_path,
                                                                capsys):
    tiny_config.batch_size = 96  # avsynth/tiny has 48 training clips
    tiny_config.data.cache = False  # no cache-building bars on stderr
    workdir = tmp_path / "run"
    assert main.run(tiny_config, str(workdir)) == 2
    err = capsys.readouterr().err.strip()
    n = len(run_config.select_devices(tiny_config))
    assert err == ("error: config.batch_size=96 exceeds the 48 training examples of "
                   f"'avsynth/tiny': use --config.batch_size={48 // n * n} or less")
    assert not workdir.exists()


def test_user_errors_exit_2_with_optional_traceback_and_bugs_keep_theirs(
        tiny_config, tmp_path, capsys, monkeypatch):
    tiny_config.method = "focal"
    assert main.run(tiny_config, str(tmp_path / "a")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config.method='focal' is not allowed") and "\n" == err[-1]
    assert err.count("\n") == 1
    assert main.run(tiny_config, str(tmp_path / "a"), tracebacks=True) == 2
    assert "Traceback" in capsys.readouterr().err

    def bug(*args, **kwargs):
        raise ValueError("a bug, not the user's mistake")

    monkeypatch.setattr(train, "train_and_evaluate", bug)
    with pytest.raises(ValueError, match="a bug"):
        main.run(tiny_config, str(tmp_path / "b"))


def test_preparation_mismatch_names_every_differing_field(tiny_data_dir):
    with pytest.raises(errors.UserError) as e:
        pipeline.load_dataset("avsynth/tiny", tiny_data_dir, 1,
                              {"frame_size": 224, "num_frames": 5, "sample_rate": None})
    message = str(e.value)
    assert "\n" not in message
    assert "prepared with frame_size=16, num_frames=3 but the config expects " \
           "frame_size=224, num_frames=5" in message
    assert "--config.data.expect.frame_size=16 --config.data.expect.num_frames=3" in message
    assert "sample_rate" not in message  # None: not checked


def test_runs_saved_before_the_expect_fields_existed_still_resume():
    saved = {"data": {"expect": {}, "name": "x"}}
    now = {"data": {"expect": {"sample_rate": None, "split_source": None}, "name": "x"}}
    assert config_text.config_diff(saved, now) == {}
    now["data"]["expect"]["sample_rate"] = 8000
    assert config_text.config_diff(saved, now) == {"data.expect.sample_rate": ("<absent>", 8000)}


def test_avsynth_is_built_on_first_use(tmp_path, capsys):
    ds = pipeline.load_dataset("avsynth/tiny", str(tmp_path), 1)
    assert ds.meta.num_examples["train"] == 48
    assert "building the synthetic dataset avsynth/tiny" in capsys.readouterr().out


def test_ctrl_c_finished_run_and_fresh(tiny_config, tmp_path, capsys, monkeypatch):
    tiny_config.epochs, tiny_config.schedule.adaptive_steps = 2, 1
    tiny_config.data.cache = False  # no cache-building bars on stderr
    workdir = str(tmp_path / "run")
    real_evaluate = evaluation.evaluate
    calls = {"val": 0}

    def interrupted_in_epoch_2(par, state, ds, split, *args):
        if split == "validation":
            calls["val"] += 1
            if calls["val"] == 2:
                raise KeyboardInterrupt
        return real_evaluate(par, state, ds, split, *args)

    monkeypatch.setattr(evaluation, "evaluate", interrupted_in_epoch_2)
    assert main.run(tiny_config, workdir) == 130
    err = capsys.readouterr().err
    assert err == "interrupted after epoch 1; run the same command to resume\n"
    monkeypatch.setattr(evaluation, "evaluate", real_evaluate)
    assert main.run(tiny_config, workdir) == 0
    out = capsys.readouterr().out
    results = json.loads(out[out.index("\n{") + 1:])
    assert [r["epoch"] for r in Workdir(workdir).read_metrics()] == [1, 2]

    def no_evaluation(*args, **kwargs):
        raise AssertionError("a finished run was evaluated again")

    monkeypatch.setattr(evaluation, "evaluate", no_evaluation)
    assert main.run(tiny_config, workdir) == 0
    out = capsys.readouterr().out
    assert f"{workdir} is finished (2 epochs)" in out
    assert json.loads(out[out.index("\n{") + 1:]) == results

    monkeypatch.setattr(evaluation, "evaluate", real_evaluate)
    train.train_and_evaluate(tiny_config, workdir, fresh=True)
    out = capsys.readouterr().out
    assert (f"--fresh: deleted checkpoints, metrics.jsonl, tensorboard, gmm_fits, "
            f"results.json, timing.json, predictions.csv, config.json from {workdir}") in out


def test_step_metrics_progress_lines_and_announced_pauses(tiny_config, tmp_path, capsys):
    tiny_config.log_every_steps = 1  # avsynth/tiny: 3 steps of 16 per epoch, 3 epochs
    tiny_config.data.cache = False
    # Compiled on first use, so that each phase's compilation is a pause to announce
    # (compiling ahead: tests/test_host_overhead.py).
    tiny_config.precompile_phases = False
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(tiny_config, workdir)
    out = capsys.readouterr().out
    with open(os.path.join(workdir, Workdir.STEPS)) as f:
        steps = [json.loads(line) for line in f]
    # The first step of each epoch opens the window (its time may hold compilation).
    assert [r["step"] for r in steps] == [2, 3, 5, 6, 8, 9]
    assert [r["epoch"] for r in steps] == [1, 1, 2, 2, 3, 3]
    assert {"loss", "learning_rate", "samples_per_second"} <= set(steps[0]["train"])
    assert [r["epoch"] for r in Workdir(workdir).read_metrics()] == [1, 2, 3]
    # Output to a file (not a terminal): plain lines with the ETAs.
    assert "epoch 1/3 step 2/3 | loss " in out and "epoch ETA " in out and "run ETA " in out
    for pause in ("compiling the warmup train step", "compiling the adaptive train step",
                  "GMM fit 0: collecting the training gaps", "final evaluation"):
        assert pause in out
