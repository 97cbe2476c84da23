"""A run whose losses blow up while staying finite fails like a NaN divergence: one line,
exit status 1, nothing of the blown-up epoch saved or made the best (avgmm.divergence,
docs/reliability.md)."""

import os
import subprocess
import sys

import pytest

from avgmm import divergence, errors, evaluation, train
from avgmm.workdir import Workdir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO)


def test_a_huge_learning_rate_is_divergence_without_nan(tiny_data_dir, tmp_path):
    """The loss grows from 1.6e3 to 6e9, every number finite: today's run saved it."""
    workdir = str(tmp_path / "blown")
    proc = subprocess.run(
        [sys.executable, "-m", "avgmm.main", f"--config={REPO}/configs/tiny.py",
         f"--workdir={workdir}", f"--config.data.data_dir={tiny_data_dir}",
         "--config.optimizer.learning_rate=100"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    # Exit status 1 and one line, as for NaN (test_workdir.py::test_divergence_stops_...).
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: training diverged in epoch 1 (the epoch's mean loss "), \
        lines[0]
    assert "is more than 1000 times ln K = 1.1, the loss of guessing, though finite" in lines[0]
    assert "Lower config.optimizer.learning_rate" in lines[0]
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    assert Workdir(workdir).read_metrics() == []
    assert not os.listdir(os.path.join(workdir, "checkpoints", "best"))


def test_a_blown_up_validation_loss_stops_the_run_before_that_epoch_is_best(
        tiny_config, tmp_path, monkeypatch):
    """Epoch 2's validation loss is 1e24 (finite): epoch 1 stays the last good and the best."""
    config = tiny_config
    config.method, config.epochs = "concat", 2
    real = evaluation.evaluate
    calls = {"n": 0}

    def blown_in_epoch_2(par, state, ds, split, *args):
        out = real(par, state, ds, split, *args)
        calls["n"] += 1
        if calls["n"] > 2:  # epoch 2's validation and test passes
            out = dict(out, loss=1e24, accuracy=1.0)  # would be the best by accuracy
        return out

    monkeypatch.setattr(evaluation, "evaluate", blown_in_epoch_2)
    workdir = str(tmp_path / "run")
    with pytest.raises(errors.DivergedError, match=r"training diverged in epoch 2 \(the "
                       r"validation loss 1e\+24 is more than 1000 times the first epoch's "
                       r"training loss .* though finite\).*the epoch was not saved; the last "
                       r"good checkpoint is .*latest/1\."):
        train.train_and_evaluate(config, workdir)
    assert Workdir(workdir).latest_epoch() == 1
    assert [r["epoch"] for r in Workdir(workdir).read_metrics()] == [1]
    assert os.listdir(os.path.join(workdir, "checkpoints", "best")) == ["1"]
    assert not os.path.exists(os.path.join(workdir, "results.json"))


def test_an_extreme_method_setting_is_named_instead_of_the_learning_rate(tiny_config,
                                                                        tmp_path):
    config = tiny_config
    config.method, config.epochs = "mmpareto", 1
    config.mmpareto.gamma = 1e30
    with pytest.raises(errors.DivergedError) as e:
        train.train_and_evaluate(config, str(tmp_path / "run"))
    message = str(e.value)
    assert message.startswith("training diverged in epoch 1 ("), message
    assert "the likely cause is config.mmpareto.gamma=1e+30 (default 1.5)" in message
    assert "learning_rate" not in message
    assert message.endswith("Bring it near the default (not the learning rate) and start "
                            "again with --fresh")


def test_the_blowup_guard_takes_the_first_epoch_as_reference():
    guard = divergence.BlowupGuard(num_classes=4, first_loss=None)
    guard.check_train(1, 5.0, "x")  # 5 < 1000 ln 4: the reference is now 5
    guard.check_train(2, 4000.0, "x")  # 800 times the first epoch: still learning, maybe
    with pytest.raises(errors.DivergedError, match=r"epoch 3 \(the epoch's mean loss 6e\+03 "
                       r"is more than 1000 times the first epoch's training loss 5"):
        guard.check_train(3, 6000.0, "x")
    guard.check_outputs(3, {"val": {"loss": 40.0}, "test": {"loss": 60.0}}, "x")
    # A resume reads the reference from the first epoch's metrics record.
    assert divergence.BlowupGuard.first_loss_of(
        [{"epoch": 1, "train": {"loss": 2.5}}, {"epoch": 2, "train": {"loss": 1.0}}]) == 2.5
    with pytest.raises(errors.DivergedError, match=r"\(the test loss 3e\+03 is more than "
                       r"1000 times the first epoch's training loss 2.5"):
        divergence.BlowupGuard(4, 2.5).check_outputs(7, {"test": {"loss": 3000.0}}, "x")
