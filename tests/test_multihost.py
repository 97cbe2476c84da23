"""Multi-host data parallel on JAX's distributed runtime, on this machine's CPU.

Two local processes with 2 CPU devices each (coordinator on 127.0.0.1) must train like one
process with 4 devices: the same per-step losses through warm-up and adaptive epochs,
the same GMM refits and accuracies; process 0 alone writes the workdir; and a run whose
process is killed resumes when both are started again.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from avgmm import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROCESSES, DEVICES_PER_PROCESS = 2, 2

pytestmark = pytest.mark.skipif(jax.local_device_count() < 4,
                                reason="the one-process reference needs 4 devices")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(config, workdir: str, log_dir: str, extra=(), tag: str = ""):
    """Starts the run as two processes of a distributed job; returns their Popen objects
    (stdout and stderr of process i in `log_dir/<tag>p<i>.log`)."""
    port = _free_port()
    cmd = [sys.executable, "-m", "avgmm.main", f"--config={REPO}/configs/tiny.py",
           f"--workdir={workdir}", f"--config.data.data_dir={config.data.data_dir}",
           "--config.log_every_steps=1", *extra]
    procs = []
    for i in range(PROCESSES):
        env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
                   JAX_DISABLE_MOST_OPTIMIZATIONS="1",
                   XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES_PER_PROCESS}",
                   JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                   JAX_NUM_PROCESSES=str(PROCESSES), JAX_PROCESS_ID=str(i))
        env.pop("SLURM_NTASKS", None)
        log = open(os.path.join(log_dir, f"{tag}p{i}.log"), "w")
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log,
                                      stderr=subprocess.STDOUT))
        log.close()
    return procs


def _wait(procs, log_dir: str, timeout: float = 240):
    deadline = time.time() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
    logs = [open(os.path.join(log_dir, f"p{i}.log")).read() for i in range(len(procs))]
    assert [p.returncode for p in procs] == [0] * len(procs), "\n\n".join(
        f"--- process {i} (exit {p.returncode}):\n{log[-3000:]}"
        for i, (p, log) in enumerate(zip(procs, logs)))
    return logs


def _jsonl(path: str):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _terms(record):
    return {k: v for k, v in record["train"].items() if k != "samples_per_second"}


@pytest.mark.slow
def test_two_processes_train_like_one_process_with_four_devices(tiny_config, tmp_path):
    config = tiny_config
    config.log_every_steps = 1
    config.num_devices = 4
    one = str(tmp_path / "one")
    expected = train.train_and_evaluate(config, one)

    two = str(tmp_path / "two")
    logs = _wait(_launch(config, two, str(tmp_path)), str(tmp_path))
    # Process 0 prints the progress and the results; process 1 says nothing of its own.
    assert "epoch 3/3" in logs[0] and '"test_accuracy"' in logs[0]
    assert "epoch 3/3" not in logs[1] and '"test_accuracy"' not in logs[1]
    assert "4 device(s)" in logs[0]

    steps_one, steps_two = _jsonl(f"{one}/steps.jsonl"), _jsonl(f"{two}/steps.jsonl")
    assert [r["step"] for r in steps_two] == [r["step"] for r in steps_one]
    assert {r["phase"] for r in steps_two} == {"warmup", "adaptive"}
    for a, b in zip(steps_one, steps_two):
        for key, value in _terms(a).items():
            np.testing.assert_allclose(b["train"][key], value, rtol=2e-4, atol=1e-5,
                                       err_msg=f"step {a['step']} {key}")
    epochs_one, epochs_two = _jsonl(f"{one}/metrics.jsonl"), _jsonl(f"{two}/metrics.jsonl")
    assert [r["epoch"] for r in epochs_two] == [1, 2, 3]
    for a, b in zip(epochs_one, epochs_two):
        for split in ("val", "test"):
            assert b[split]["count"] == a[split]["count"]  # every sample once, none twice
            np.testing.assert_allclose(b[split]["loss"], a[split]["loss"], rtol=2e-4)
            np.testing.assert_allclose(b[split]["accuracy"], a[split]["accuracy"], atol=1e-6)
        if "gmm_fit" in a:
            for key in ("mu_0", "mu_1", "pi_1", "gap_mean"):
                np.testing.assert_allclose(b["gmm_fit"][key], a["gmm_fit"][key],
                                           rtol=1e-3, atol=1e-4, err_msg=key)
    # The fit saw every training sample's gap, in dataset order, with its id.
    fit_one = np.load(f"{one}/gmm_fits/fit_000.npz")
    fit_two = np.load(f"{two}/gmm_fits/fit_000.npz")
    np.testing.assert_array_equal(fit_two["index"], fit_one["index"])
    np.testing.assert_array_equal(fit_two["id"], fit_one["id"])
    np.testing.assert_allclose(fit_two["gap"], fit_one["gap"], rtol=1e-3, atol=1e-4)
    with open(f"{two}/results.json", encoding="utf-8") as f:
        results = json.load(f)
    assert results["num_devices"] == 4 and results["gmm_fits"] == expected["gmm_fits"]
    np.testing.assert_allclose(results["test_accuracy"], expected["test_accuracy"], atol=1e-6)
    assert os.path.exists(f"{two}/timing.json")


@pytest.mark.slow
def test_killed_process_resumes_when_the_job_is_restarted(tiny_config, tmp_path):
    config = tiny_config
    workdir = str(tmp_path / "run")
    procs = _launch(config, workdir, str(tmp_path), tag="killed-")
    latest = os.path.join(workdir, "checkpoints", "latest")
    deadline = time.time() + 240
    # Kill process 1 once the first epoch is saved, in the middle of the second (or later).
    while time.time() < deadline and procs[1].poll() is None:
        if os.path.isdir(latest) and any(d.isdigit() for d in os.listdir(latest)):
            break
        time.sleep(0.05)
    assert procs[1].poll() is None, "the run ended before it could be killed"
    procs[1].send_signal(signal.SIGKILL)
    procs[1].wait()
    killed = time.time()
    # Process 0 finds its peer gone and stops by itself, in one line, within seconds.
    try:
        procs[0].wait(timeout=30)
    except subprocess.TimeoutExpired:
        procs[0].kill()
        procs[0].wait()
    stopped_after = time.time() - killed
    log = open(os.path.join(str(tmp_path), "killed-p0.log")).read().strip().splitlines()
    assert procs[0].returncode == 1 and stopped_after < 30, (procs[0].returncode, log[-5:])
    assert log[-1] == ("error: process 1 of this multi-process run is gone (killed, crashed "
                       "or its machine unreachable): process 0 stops too; restart the whole "
                       "job with the same command to resume from the last checkpoint"), log
    assert not any("Check failure stack trace" in line for line in log)
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    saved = sorted(int(d) for d in os.listdir(latest) if d.isdigit())
    assert saved and saved[-1] < 3

    logs = _wait(_launch(config, workdir, str(tmp_path)), str(tmp_path))
    assert f"resuming {workdir} after epoch {saved[-1]}" in logs[0]
    assert [r["epoch"] for r in _jsonl(f"{workdir}/metrics.jsonl")] == [1, 2, 3]
    with open(f"{workdir}/results.json", encoding="utf-8") as f:
        assert json.load(f)["epochs"] == 3


def test_launch_multihost_runs_one_task_per_node_through_srun():
    # The dry run checks the flags and the config first (with the project's Python).
    python = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=REPO)
    out = subprocess.run(["bash", os.path.join(REPO, "launch.sh"), "multihost",
                          "configs/crema.py", "--config.seed=1", "--dry-run"], cwd=REPO,
                         env=python, capture_output=True, text=True, check=True).stdout.split()
    assert out[:3] == ["srun", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    assert out[-3:] == ["--config=configs/crema.py", "--config.seed=1", "--workdir=runs/crema"]
    env = {k: v for k, v in python.items() if not k.startswith("SLURM_")}
    refused = subprocess.run(["bash", os.path.join(REPO, "launch.sh"), "multihost",
                              "configs/crema.py"], cwd=REPO, env=env, capture_output=True,
                             text=True)
    assert refused.returncode == 2 and "sbatch --nodes=2" in refused.stderr


def test_an_error_found_by_process_0_stops_every_process_with_one_message(tiny_config,
                                                                           tmp_path):
    from avgmm.workdir import Workdir

    workdir = str(tmp_path / "busy")
    with Workdir(workdir).lock():  # another run holds the workdir
        procs = _launch(tiny_config, workdir, str(tmp_path))
        for p in procs:
            p.wait(timeout=120)
    logs = [open(os.path.join(str(tmp_path), f"p{i}.log")).read() for i in range(2)]
    assert [p.returncode for p in procs] == [1, 1], logs
    assert f"error: workdir {workdir} is in use" in logs[0]
    assert "error:" not in logs[1]  # the same error, printed once


def test_process_slices_of_every_batch_make_up_the_global_batch(tiny_data_dir):
    from avgmm.data import pipeline

    ds = pipeline.load_dataset("avsynth/tiny", tiny_data_dir, num_frames=1)
    whole = list(ds.train_batches(16, epoch=3, seed=7, prefetch=0))
    parts = [list(ds.train_batches(16, epoch=3, seed=7, prefetch=0, process_index=i,
                                   process_count=4)) for i in range(4)]
    assert len(whole) == 3 and all(len(p) == 3 for p in parts)
    for b, batch in enumerate(whole):
        for key in ("index", "label", "audio", "frames"):
            np.testing.assert_array_equal(
                np.concatenate([p[b][key] for p in parts]), batch[key], err_msg=key)
    # validation has 16 clips: batches of 12 leave a last batch of 4 real rows and 8 of
    # padding, so process 1 of 2 holds padding only there.
    whole = list(ds.eval_batches("validation", 12, prefetch=0))
    parts = [list(ds.eval_batches("validation", 12, prefetch=0, process_index=i,
                                  process_count=2)) for i in range(2)]
    for b, batch in enumerate(whole):
        for key in ("index", "label", "mask", "audio"):
            np.testing.assert_array_equal(
                np.concatenate([p[b][key] for p in parts]), batch[key], err_msg=key)
    assert not parts[1][-1]["mask"].any() and parts[0][-1]["mask"].sum() == 4
