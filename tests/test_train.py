"""End-to-end training on avsynth/tiny: phases, files, devices, resume, errors."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import device_runs
from avgmm import build, checkpoints, methods, optim, run_config, state as state_lib, train
from avgmm.workdir import Workdir
from avgmm.data import pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _records(workdir):
    return Workdir(workdir).read_metrics()


@pytest.mark.parametrize("method", ["concat", "warmup_only", "adaptive"])
def test_every_method_runs_all_phases_and_writes_its_files(tiny_config, tmp_path, method):
    config = tiny_config
    config.method = method
    workdir = str(tmp_path / method)
    results = train.train_and_evaluate(config, workdir)
    records = _records(workdir)
    # Epochs are "epochs completed" (1-based) in metrics, results and checkpoint folders.
    assert [r["epoch"] for r in records] == [1, 2, 3]
    phases = [r["phase"] for r in records]
    expected = {"concat": ["concat"] * 3, "warmup_only": ["warmup"] * 3,
                "adaptive": ["warmup", "adaptive", "adaptive"]}[method]
    assert phases == expected
    for r in records:
        for split in ("val", "test"):
            for key in ("accuracy", "accuracy_audio", "accuracy_visual"):
                assert 0.0 <= r[split][key] <= 1.0
        assert r["val"]["count"] == 16  # padded last batch, every sample counted once
        assert np.isfinite(r["train"]["loss"]) and r["train"]["samples_per_second"] > 0
    assert os.path.exists(os.path.join(workdir, "config.json"))
    assert any(f.startswith("events.out.tfevents")
               for f in os.listdir(os.path.join(workdir, "tensorboard")))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints", "latest"))) == ["1", "2", "3"]
    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    assert saved == results
    for key in ("test_accuracy", "test_accuracy_audio", "test_accuracy_visual",
                "last_epoch", "peer_protocol_best_test_accuracy", "final_gmm_auc_imbalanced"):
        assert key in results
    best_epoch = max(range(3), key=lambda e: (records[e]["val"]["accuracy"], -e)) + 1
    assert results["best_epoch"] == best_epoch
    assert str(best_epoch) in os.listdir(os.path.join(workdir, "checkpoints", "best"))
    assert results["peer_protocol_best_test_accuracy"] == max(r["test"]["accuracy"]
                                                               for r in records)
    fits = [r for r in records if "gmm_fit" in r]
    if method == "adaptive":
        # adaptive_steps = 2 refits, one at the start of each adaptive step.
        assert results["gmm_fits"] == 2 and [r["epoch"] for r in fits] == [2, 3]
        for key in ("bic_one", "bic_two", "ambiguous"):
            assert key in fits[0]["gmm_fit"]
        assert results["gmm_ambiguous_fits"] == [
            r["gmm_fit"]["fit_index"] for r in fits if r["gmm_fit"]["ambiguous"]]
        assert sorted(os.listdir(os.path.join(workdir, "gmm_fits"))) == [
            "fit_000.npz", "fit_001.npz"]
        fit = np.load(os.path.join(workdir, "gmm_fits", "fit_000.npz"))
        assert fit["gap"].shape == (48,) and int(fit["epoch"]) == 1  # after warm-up epoch 1
        np.testing.assert_allclose(fit["gap"], fit["p_audio"] - fit["p_visual"], atol=1e-6)
        # The GMM in force during an epoch is the one fitted at its step's start.
        assert records[1]["gmm"] == {k: v for k, v in records[1]["gmm_fit"].items()
                                     if k in records[1]["gmm"]}
        # Optimizer moments are zero right after the reset at the adaptive phase's start.
        assert records[1]["optimizer_reset"] == {"moment_norm": 0.0}
        assert records[1]["lambda_t"] == 1.0 and records[2]["lambda_t"] == pytest.approx(0.96)
    else:
        assert not fits and "gmm_fits" not in results  # a method without a GMM says nothing
    device_runs.analyze_run(workdir)


def test_one_and_four_devices_agree(tiny_config, tmp_path):
    if jax.local_device_count() < 4:
        pytest.skip("needs 4 devices")
    runs = {}
    for n in (1, 4):
        config = tiny_config
        config.num_devices = n
        train.train_and_evaluate(config, str(tmp_path / f"d{n}"))
        runs[n] = _records(str(tmp_path / f"d{n}"))
    for r1, r4 in zip(runs[1], runs[4]):
        for key in r1["train"]:
            if key != "samples_per_second":
                np.testing.assert_allclose(r4["train"][key], r1["train"][key], rtol=2e-4,
                                           atol=1e-5, err_msg=f"epoch {r1['epoch']} {key}")
        np.testing.assert_allclose(r4["val"]["loss"], r1["val"]["loss"], rtol=2e-4)
        if "gmm_fit" in r1:
            np.testing.assert_allclose(r4["gmm_fit"]["mu_1"], r1["gmm_fit"]["mu_1"],
                                       rtol=1e-3, atol=1e-4)


def _final_params(workdir):
    restored = checkpoints.Checkpointer(workdir).latest
    step = restored.latest_step()
    import orbax.checkpoint as ocp

    out = restored.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    restored.close()
    return out["state"]["params"], step


@pytest.mark.slow
def test_kill_and_resume_gives_the_uninterrupted_result(tiny_config, tmp_path):
    config = tiny_config
    config.epochs = 5
    config.schedule.adaptive_steps = 2
    config.schedule.epochs_per_step = 2  # 1 + 2 x 2 epochs
    straight = str(tmp_path / "straight")
    expected = train.train_and_evaluate(config, straight)

    killed = str(tmp_path / "killed")
    cmd = [sys.executable, "-m", "avgmm.main", f"--config={REPO}/configs/tiny.py",
           f"--workdir={killed}", f"--config.data.data_dir={config.data.data_dir}",
           "--config.epochs=5", "--config.schedule.adaptive_steps=2",
           "--config.schedule.epochs_per_step=2"]
    env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1", PYTHONPATH=REPO)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    latest = os.path.join(killed, "checkpoints", "latest")
    deadline = time.time() + 240
    # Kill it once two epochs are saved, in the middle of the third (or later).
    while time.time() < deadline and proc.poll() is None:
        if os.path.isdir(latest) and len([d for d in os.listdir(latest) if d.isdigit()]) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(killed, "results.json"))

    resumed = train.train_and_evaluate(config, killed)
    assert [r["epoch"] for r in _records(killed)] == [1, 2, 3, 4, 5]
    params_a, step_a = _final_params(straight)
    params_b, step_b = _final_params(killed)
    assert step_a == step_b == 5
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for key in ("test_accuracy", "best_epoch", "gmm_fits"):
        assert resumed[key] == expected[key]
    # Running a finished workdir again trains nothing and reports the same numbers.
    again = train.train_and_evaluate(config, killed)
    assert again["test_accuracy"] == resumed["test_accuracy"]
    assert len(_records(killed)) == 5


def test_workdir_with_another_config_is_refused_unless_fresh(tiny_config, tmp_path):
    config = tiny_config
    config.epochs, config.schedule.adaptive_steps = 1, 0
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(config, workdir)
    config.loss.beta = 0.5
    config.optimizer.learning_rate = 0.01
    with pytest.raises(ValueError, match=r"(?s)loss\.beta: saved 1\.0 -> now 0\.5.*"
                                         r"optimizer\.learning_rate.*--fresh"):
        train.train_and_evaluate(config, workdir)
    train.train_and_evaluate(config, workdir, fresh=True)
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["loss"]["beta"] == 0.5
    assert len(_records(workdir)) == 1


@pytest.mark.parametrize("field,value,message", [
    ("method", "focal", r"config\.method='focal' is not allowed: one of \('concat'"),
    ("schedule.warmup_epochs", -1, r"schedule\.warmup_epochs=-1 .* >= 0"),
    ("loss.alpha", -0.5, r"loss\.alpha=-0\.5 .* >= 0"),
    ("optimizer.name", "rmsprop", r"optimizer\.name='rmsprop' .* \('sgd', 'adam'\)"),
    ("batch_size", 18, r"batch_size=18 .* multiple of the device count \(4\)"),
    ("model.dtype", "float16", r"model\.dtype='float16'"),
    ("data.name", "no_such_dataset", r"no_such_dataset"),
])
def test_bad_config_is_refused_before_compiling(tiny_config, tmp_path, field, value, message):
    if field == "batch_size" and jax.local_device_count() < 4:
        pytest.skip("needs 4 devices")
    config = tiny_config
    node = config
    *parents, leaf = field.split(".")
    for p in parents:
        node = getattr(node, p)
    setattr(node, leaf, value)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        train.train_and_evaluate(config, str(tmp_path / "bad"))
    # Nothing was trained, and nothing was saved that a corrected retry would trip over.
    assert not os.path.exists(tmp_path / "bad" / "checkpoints")
    assert not os.path.exists(tmp_path / "bad" / "config.json")


def _applied_learning_rates(config, ds, n_steps, reset_at, reset_schedule):
    """The learning rate each of `n_steps` SGD steps actually applied (momentum and weight
    decay off, so a step moves every parameter by exactly -lr * grad)."""
    config.optimizer.momentum = 0.0
    config.optimizer.weight_decay = 0.0
    tx = optim.make_optimizer(config, steps_per_epoch=1)
    state = state_lib.create_train_state(config, ds.meta, tx, methods.get(config))
    grads = jax.tree.map(np.ones_like, state.params)
    rates = []
    for step in range(n_steps):
        if step == reset_at:
            state = optim.reset_optimizer(state, reset_schedule)
        before = jax.tree.leaves(state.params)[0]
        state = state.apply_gradients(grads=grads)
        rates.append(float(np.mean(before - jax.tree.leaves(state.params)[0])))
    return np.asarray(rates)


@pytest.mark.parametrize("reset_schedule", [False, True])
def test_reset_keeps_or_restarts_the_learning_rate_schedule(tiny_config, tiny_data_dir,
                                                            reset_schedule):
    # StepLR every 4 epochs (1 step per epoch here), reset after 2: the decay boundary at
    # step 4 lies after the reset, as crema.py's epoch 70 lies after its reset at 30.
    config = tiny_config
    config.optimizer.lr_schedule = "step"
    config.optimizer.lr_step_epochs = 4
    config.optimizer.lr_decay = 0.1
    lr = config.optimizer.learning_rate
    ds = pipeline.load_dataset("avsynth/tiny", tiny_data_dir, 1)
    rates = _applied_learning_rates(config, ds, 8, reset_at=2, reset_schedule=reset_schedule)
    if reset_schedule:  # a new scheduler: the boundary moves to 4 steps after the reset
        expected = [lr] * 6 + [lr * 0.1] * 2
    else:  # the schedule keeps its position: the first step after step 4 is decayed
        expected = [lr] * 4 + [lr * 0.1] * 4
    np.testing.assert_allclose(rates, expected, rtol=1e-4)


def test_reset_optimizer_zeroes_moments_and_keeps_schedule(tiny_config, tiny_data_dir):
    config = tiny_config
    ds = pipeline.load_dataset("avsynth/tiny", tiny_data_dir, 1)
    tx = optim.make_optimizer(config, steps_per_epoch=3)
    state = state_lib.create_train_state(config, ds.meta, tx, methods.get(config))
    grads = jax.tree.map(lambda p: np.ones_like(p), state.params)
    for _ in range(2):
        state = state.apply_gradients(grads=grads)
    assert float(optim.moment_norm(state.opt_state)) > 0
    reset = optim.reset_optimizer(state)
    assert float(optim.moment_norm(reset.opt_state)) == 0.0
    assert int(reset.opt_state.count) == int(state.opt_state.count) == 2
    assert int(reset.step) == 2
    for leaf_a, leaf_b in zip(jax.tree.leaves(reset.params), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(leaf_a, leaf_b)


def test_every_config_file_builds_and_validates():
    import importlib

    configs_dir = os.path.join(REPO, "configs")
    names = sorted(f[:-3] for f in os.listdir(configs_dir)
                   if f.endswith(".py") and f != "__init__.py")
    assert {"default", "demo", "tiny", "crema", "ave", "av_mnist"} <= set(names)
    for name in names:  # every config file, so none rots unnoticed
        config = importlib.import_module(f"configs.{name}").get_config()
        run_config.validate_config(config, num_devices=1)
        assert config.epochs >= 1
    crema = importlib.import_module("configs.crema").get_config()
    assert crema.optimizer.name == "sgd" and crema.optimizer.momentum == 0.9
    assert crema.optimizer.learning_rate == 2e-3 and crema.batch_size == 64
    assert crema.epochs == 100 and crema.model.width == 64


@pytest.mark.parametrize("mode,expected", [
    # warm-up 2 epochs, then 3 adaptive steps of 2 epochs: e for epochs 0..7.
    ("adaptive", [0, 0, 0, 1, 2, 3, 4, 5]),
    ("step", [0, 0, 0, 1, 0, 1, 0, 1]),
    ("global", [0, 0, 2, 3, 4, 5, 6, 7]),
])
def test_lambda_exponent_readings(tiny_config, mode, expected):
    config = tiny_config
    config.schedule.warmup_epochs, config.schedule.adaptive_steps = 2, 3
    config.schedule.epochs_per_step = 2
    config.loss.lambda_epoch = mode
    adaptive = methods.get(config)
    assert [adaptive.lambda_exponent(e) for e in range(8)] == expected


def test_posteriors_from_refit_keeps_the_fit_gaps_in_the_state(tiny_config, tmp_path):
    config = tiny_config
    config.loss.posteriors_from = "refit"
    config.gmm.select = "bic"
    workdir = str(tmp_path / "refit")
    results = train.train_and_evaluate(config, workdir)
    assert results["gmm_fits"] == 2
    run = build.load_checkpoint(config, workdir)
    fit_gaps = np.asarray(run.host_state.method_state.fit_gaps)
    # The state carries the gaps of the last fit, in dataset index order.
    fit = np.load(os.path.join(workdir, "gmm_fits", "fit_001.npz"))
    np.testing.assert_array_equal(fit["index"], np.arange(48))
    np.testing.assert_allclose(fit_gaps, fit["gap"], atol=1e-6)
    assert np.any(fit_gaps != 0)


@pytest.mark.parametrize("field,value", [
    ("loss.lambda_epoch", "epoch"), ("loss.posteriors_from", "train"),
    ("loss.unimodal_weight", -1.0), ("gmm.select", "aic"),
])
def test_open_choice_fields_are_validated(tiny_config, field, value):
    config = tiny_config
    section, leaf = field.split(".")
    setattr(getattr(config, section), leaf, value)
    with pytest.raises(ValueError, match=rf"config\.{field}="):
        run_config.validate_config(config, num_devices=1)


def test_no_step_function_compiles_twice_in_a_run(tiny_config, tmp_path):
    # Three epochs (warm-up, two adaptive steps with a GMM refit each), evaluation of two
    # splits every epoch, the optimizer reset and the final evaluation of the best state:
    # each compiled function is traced (compiled) exactly once.
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(tiny_config, workdir)
    with open(os.path.join(workdir, "timing.json")) as f:
        timing = json.load(f)
    counts = timing["step_compilations"]
    assert set(counts) == {"train[warmup]", "train[adaptive]", "eval", "samples", "fit_gmm",
                           "reset_optimizer", "moment_norm"}
    assert all(n == 1 for n in counts.values()), counts
    assert timing["to_first_step"] > 0 and timing["wall"] >= timing["to_first_step"]


def test_compilation_cache_setting_resolves_to_a_folder_or_none(monkeypatch, tmp_path):
    from avgmm import compile_cache

    assert compile_cache.resolve("") is None
    assert compile_cache.resolve(str(tmp_path / "c")) == str(tmp_path / "c")
    monkeypatch.setenv(compile_cache.ENV, "off")
    assert compile_cache.resolve("auto") is None
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "env"))
    assert compile_cache.resolve("auto") == str(tmp_path / "env")
    monkeypatch.delenv(compile_cache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.resolve("auto") == str(tmp_path / "xdg" / "avgmm" / "xla")
