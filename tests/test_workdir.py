"""Workdir reliability: one run per workdir, damaged or missing checkpoints, a half-written
metrics line, divergence and a full disk."""

import errno
import glob
import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from avgmm import checkpoints, errors, files, run_config, train
from avgmm.metric_writer import MetricWriter
from avgmm.workdir import Workdir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY_ENV = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1", PYTHONPATH=REPO)


# --------------------------------------------------------------------------- helpers
def _state(k: int):
    return {"w": np.arange(4096, dtype=np.float32) * k, "epoch": np.asarray(k, np.int32)}


def _checkpointer(root, steps=(1, 2, 3), best=(1, 2)):
    """A Checkpointer holding small states saved after `steps` (best ones in `best`)."""
    ckpt = checkpoints.Checkpointer(str(root), keep=3, say=lambda m: None)
    for k in steps:
        ckpt.save(k, _state(k), {"best_val_accuracy": k / 10}, best=k in best)
    ckpt.wait()
    return ckpt


def _flip_byte(step_dir: str) -> str:
    """Flips one byte in the middle of the largest array data file of a checkpoint."""
    files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"),
                                  recursive=True) if os.path.isfile(f)]
    target = max(files, key=os.path.getsize)
    with open(target, "r+b") as f:
        f.seek(os.path.getsize(target) // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x10]))
    return target


def _truncate_files(step_dir: str) -> None:
    for path in glob.glob(os.path.join(step_dir, "state", "**", "manifest.ocdbt"),
                          recursive=True):
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)


def _params(workdir, which="latest"):
    import orbax.checkpoint as ocp

    manager = getattr(checkpoints.Checkpointer(workdir), which)
    step = manager.latest_step()
    out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                        meta=ocp.args.JsonRestore()))
    manager.close()
    return out["state"]["params"], out["meta"], step


# --------------------------------------------------------------------------- lock
def test_a_second_run_on_a_busy_workdir_is_refused(tiny_config, tmp_path):
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    # Another process holds the lock the way a run does: flock plus "pid host".
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, socket, sys, time\n"
         f"fd = os.open({os.path.join(workdir, '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "os.write(fd, f'{os.getpid()} {socket.gethostname()}'.encode())\n"
         "print('locked', flush=True)\ntime.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        message = (rf"workdir {workdir} is in use by process {holder.pid} on "
                   rf"{socket.gethostname()}; wait for it or use another --workdir")
        with pytest.raises(errors.WorkdirBusyError, match=message):
            train.train_and_evaluate(tiny_config, workdir)
        with pytest.raises(errors.WorkdirBusyError):
            train.train_and_evaluate(tiny_config, workdir, fresh=True)
        assert os.listdir(workdir) == [".lock"]  # no config.json, metrics or checkpoints
    finally:
        holder.kill()
        holder.wait()
    # The dead holder's lock is taken over; its stale "pid host" is replaced by ours.
    with Workdir(workdir).lock():
        with open(os.path.join(workdir, ".lock")) as f:
            assert f.read().split() == [str(os.getpid()), socket.gethostname()]
        with pytest.raises(errors.WorkdirBusyError, match=f"process {os.getpid()} "):
            with Workdir(workdir).lock():
                pass


# --------------------------------------------------------------------------- checkpoints
def test_damaged_checkpoints_are_skipped_with_a_line_each(tmp_path):
    ckpt = _checkpointer(tmp_path)
    flipped = _flip_byte(ckpt.path("latest", 3))
    ckpt.close()
    said = []
    ckpt = checkpoints.Checkpointer(str(tmp_path), keep=3, say=said.append)
    with pytest.raises(errors.CheckpointError, match=r"latest/3 is damaged"):
        ckpt.restore(_state(0), which=3)
    state, meta = ckpt.resume(_state(0))
    assert int(state["epoch"]) == 2 and meta["best_step"] == 2
    np.testing.assert_array_equal(np.asarray(state["w"]), _state(2)["w"])
    assert len(said) == 1 and "skipped damaged checkpoint" in said[0] and "/latest/3" in said[0]
    assert sorted(ckpt.latest.all_steps()) == [1, 2]  # step 3 can be saved again
    assert os.path.isdir(os.path.join(tmp_path, "checkpoints", "damaged", "latest-3"))
    assert flipped  # the flipped file went with it
    ckpt.close()

    # Truncated files in every checkpoint: one line naming the folder to delete.
    for step in (1, 2):
        _truncate_files(os.path.join(tmp_path, "checkpoints", "latest", str(step)))
    ckpt = checkpoints.Checkpointer(str(tmp_path), keep=3, say=said.append)
    root = os.path.join(tmp_path, "checkpoints")
    with pytest.raises(errors.CheckpointError, match=rf"no intact checkpoint .* delete {root} "
                                                    r"or pass --fresh"):
        ckpt.resume(_state(0))
    ckpt.close()


def test_best_named_by_latest_always_exists_after_a_crash_between_saves(tmp_path):
    ckpt = _checkpointer(tmp_path, steps=(1,), best=(1,))

    class Killed(Exception):
        pass

    def die(*args, **kwargs):
        raise Killed

    # Killed after best/2 is committed, before latest/2 is written.
    ckpt.latest.save = die
    with pytest.raises(Killed):
        ckpt.save(2, _state(2), {"best_val_accuracy": 0.2}, best=True)
    ckpt.close()
    assert sorted(os.listdir(tmp_path / "checkpoints" / "best")) == ["1", "2"]
    ckpt = checkpoints.Checkpointer(str(tmp_path), keep=3, say=lambda m: None)
    state, meta = ckpt.resume(_state(0))
    assert int(state["epoch"]) == 1 and meta["best_step"] == 1
    assert ckpt.best.all_steps() == [1]  # the unconfirmed best/2 is dropped
    best_state, best_meta = ckpt.restore(_state(0), which="best")
    assert int(best_state["epoch"]) == 1 and best_meta["best_val_accuracy"] == 0.1
    ckpt.close()


def test_full_disk_during_a_save_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    ckpt = _checkpointer(tmp_path, steps=(1,), best=(1,))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    ckpt.latest.save = full
    latest2 = os.path.join(tmp_path, "checkpoints", "latest", "2")
    with pytest.raises(errors.DiskFullError,
                       match=rf"no space left on the device of {latest2}: the write needs "
                             r"about 16\.0 KiB, .* are free; the last good checkpoint is "
                             r".*latest/1\. Free some space"):
        ckpt.save(2, _state(2), {"best_val_accuracy": 0.1}, best=False)
    ckpt.close()
    ckpt = checkpoints.Checkpointer(str(tmp_path), keep=3)
    state, _ = ckpt.resume(_state(0))
    assert int(state["epoch"]) == 1
    ckpt.close()


def test_full_disk_writing_metrics_or_results(tmp_path, monkeypatch):
    results = str(tmp_path / "results.json")
    files.write_json(results, {"old": 1})
    real_open = open

    def full_open(path, mode="r", *args, **kwargs):
        if "w" in mode or "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(files, "open", full_open, raising=False)
    with pytest.raises(errors.DiskFullError, match=rf"device of {results}: .*; {results} "
                                                  r"is unchanged\. Free some space"):
        files.write_json(results, {"new": 2})
    with real_open(results) as f:
        assert json.load(f) == {"old": 1}
    writer = MetricWriter(Workdir(str(tmp_path)))
    with pytest.raises(errors.DiskFullError, match=r"metrics\.jsonl"):
        writer.write({"epoch": 0}, step=1)
    writer.close()


def test_half_written_last_metrics_line_is_dropped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0}\n{"epoch": 1}\n{"epoch": 2, "tra')
    assert Workdir(str(tmp_path)).read_metrics() == [{"epoch": 0}, {"epoch": 1}]
    assert Workdir(str(tmp_path)).run_started()
    Workdir(str(tmp_path)).truncate_metrics(2)
    assert path.read_text() == '{"epoch": 0}\n{"epoch": 1}\n'
    path.write_text('{"epoch": 0}\n{"ep\n{"epoch": 2}\n')  # damage inside still raises
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2 is not valid JSON"):
        Workdir(str(tmp_path)).read_metrics()


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def finished_run(tiny_data_dir, tmp_path_factory):
    """A finished tiny run: (config, workdir, results), copied by the tests that damage it."""
    from configs import tiny

    config = tiny.get_config()
    config.data.data_dir = tiny_data_dir
    workdir = str(tmp_path_factory.mktemp("finished") / "run")
    return config, workdir, train.train_and_evaluate(config, workdir)


def _copy(finished_run, tmp_path):
    """A copy of the finished run as if killed before its results were written (a run
    with results.json and its last checkpoint answers from results.json: it would not
    resume at all)."""
    config, workdir, results = finished_run
    copy = str(tmp_path / "copy")
    shutil.copytree(workdir, copy)
    os.remove(os.path.join(copy, "results.json"))
    return config, workdir, results, copy


def _assert_headline_is_the_named_best(workdir, results):
    records = Workdir(workdir).read_metrics()
    _, best_meta, best_step = _params(workdir, "best")
    assert best_meta["best_step"] == best_step
    # The epoch that results.json names is the checkpoint that was evaluated.
    assert records[best_step - 1]["epoch"] == results["best_epoch"]
    assert results["test_accuracy"] == records[best_step - 1]["test"]["accuracy"]
    assert results["best_val_accuracy"] == records[best_step - 1]["val"]["accuracy"]


def test_resume_skips_a_flipped_byte_and_restores_a_missing_best(finished_run, tmp_path):
    config, straight, expected, workdir = _copy(finished_run, tmp_path)
    _flip_byte(os.path.join(workdir, "checkpoints", "latest", "3"))
    # As if killed after a latest save whose best save never happened.
    best_dir = os.path.join(workdir, "checkpoints", "best")
    for step in os.listdir(best_dir):
        shutil.rmtree(os.path.join(best_dir, step))
    results = train.train_and_evaluate(config, workdir)
    assert results == expected
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f) == expected
    _assert_headline_is_the_named_best(workdir, results)
    params_a, _, step_a = _params(straight)
    params_b, _, step_b = _params(workdir)
    assert step_a == step_b == 3
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert [r["epoch"] for r in Workdir(workdir).read_metrics()] == [
        r["epoch"] for r in Workdir(straight).read_metrics()]


def test_resume_after_truncated_files_and_a_half_written_metrics_line(finished_run, tmp_path):
    config, _, expected, workdir = _copy(finished_run, tmp_path)
    _truncate_files(os.path.join(workdir, "checkpoints", "latest", "3"))
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write('{"epoch": 3, "phase": "adap')
    results = train.train_and_evaluate(config, workdir)
    assert results == expected
    assert len(Workdir(workdir).read_metrics()) == 3
    _assert_headline_is_the_named_best(workdir, results)


# --------------------------------------------------------------------------- divergence
def test_divergence_stops_with_one_line_and_saves_nothing(tiny_data_dir, tmp_path):
    workdir = str(tmp_path / "diverged")
    cmd = [sys.executable, "-m", "avgmm.main", f"--config={REPO}/configs/tiny.py",
           f"--workdir={workdir}", f"--config.data.data_dir={tiny_data_dir}",
           "--config.optimizer.learning_rate=1e6"]
    proc = subprocess.run(cmd, cwd=REPO, env=PY_ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training diverged in epoch 1 "), last
    assert "no checkpoint was saved yet" in last
    assert "Lower config.optimizer.learning_rate" in last
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    assert Workdir(workdir).read_metrics() == []
    latest = os.path.join(workdir, "checkpoints", "latest")
    assert not [d for d in os.listdir(latest) if d.isdigit()]
    assert not os.listdir(os.path.join(workdir, "checkpoints", "best"))


@pytest.mark.parametrize("field,value", [
    ("optimizer.learning_rate", float("inf")), ("optimizer.learning_rate", float("nan")),
    ("optimizer.weight_decay", float("inf")), ("optimizer.lr_decay", 0.0),
    ("optimizer.lr_decay", -0.5), ("seed", -1),
])
def test_unusable_numbers_are_refused_before_compiling(tiny_config, tmp_path, field, value):
    node = tiny_config
    *parents, leaf = field.split(".")
    for p in parents:
        node = getattr(node, p)
    setattr(node, leaf, value)
    with pytest.raises(ValueError, match=rf"config\.{field}=.* is not allowed"):
        run_config.validate_config(tiny_config, num_devices=1)
