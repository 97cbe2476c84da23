"""What keeps the host from holding up a run: checkpoint saves in the background (in order,
failures reported), compilations started ahead (only what the run uses), evaluation every
few epochs, and an initialization compiled faster to the same bits."""

import errno
import json
import os
import threading
import time

import jax
import numpy as np
import pytest

from avgmm import checkpoints, errors, methods, run_config, state, train
from avgmm.in_order import InOrder
from avgmm.workdir import Workdir


# --------------------------------------------------------------------------- in order
def test_in_order_runs_jobs_in_order_and_stops_at_the_first_failure():
    done, gate = [], threading.Event()
    queue = InOrder("test", waiting=1)
    queue.submit(lambda: (gate.wait(5), done.append(1)))
    queue.submit(lambda: done.append(2))  # waits behind the running job: no blocking
    t0 = time.perf_counter()
    blocked = threading.Thread(target=lambda: queue.submit(lambda: done.append(3)))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()  # a third job waits for a free slot
    gate.set()
    blocked.join(5)
    queue.wait()
    assert done == [1, 2, 3] and time.perf_counter() - t0 < 5

    gate.clear()

    def fail():
        gate.wait(5)
        raise OSError("disk on fire")

    queue.submit(fail)
    queue.submit(lambda: done.append(4))  # queued behind the failure: never runs
    gate.set()
    with pytest.raises(OSError, match="disk on fire"):
        queue.wait()
    with pytest.raises(OSError, match="disk on fire"):
        queue.submit(lambda: done.append(5))
    assert done == [1, 2, 3]
    assert isinstance(queue.close(), OSError)


# --------------------------------------------------------------------------- checkpoints
def _state(k: int):
    return {"w": np.arange(1024, dtype=np.float32) * k, "epoch": np.asarray(k, np.int32)}


def test_background_saves_do_not_block_and_keep_the_best_latest_guarantees(tmp_path,
                                                                           monkeypatch):
    real_save = checkpoints.Checkpointer.save
    calls = []

    def slow_save(self, epoch, st, meta, best):
        time.sleep(0.4)
        calls.append(epoch)
        real_save(self, epoch, st, meta, best)

    monkeypatch.setattr(checkpoints.Checkpointer, "save", slow_save)
    ckpt = checkpoints.SharedCheckpoints(str(tmp_path), keep=3, background=True)
    written = []
    t0 = time.perf_counter()
    ckpt.save(1, _state(1), {"best_val_accuracy": 0.1}, best=True,
              before=lambda: written.append(1))
    assert time.perf_counter() - t0 < 0.2  # returned before the save ran
    for k, best in ((2, False), (3, True), (4, False)):
        ckpt.save(k, _state(k), {"best_val_accuracy": k / 10}, best=best,
                  before=lambda k=k: written.append(k))
    ckpt.wait()
    assert calls == [1, 2, 3, 4] and written == [1, 2, 3, 4]
    assert "latest/4" in ckpt.last_good()
    root = tmp_path / "checkpoints"
    assert sorted(os.listdir(root / "best")) == ["3"]  # the older best went once named
    assert sorted(os.listdir(root / "latest")) == ["2", "3", "4"]
    ckpt.close()

    # A save that fails is raised by the next call, and nothing after it is saved.
    monkeypatch.setattr(checkpoints.Checkpointer, "save", real_save)
    ckpt = checkpoints.SharedCheckpoints(str(tmp_path), keep=3, background=True)
    st, meta = ckpt.resume(_state(0))
    assert int(st["epoch"]) == 4 and meta["best_step"] == 3

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    ckpt._ckpt.latest.save = full
    ckpt.save(5, _state(5), {"best_val_accuracy": 0.5}, best=False)
    with pytest.raises(errors.DiskFullError, match=r"latest/5"):
        ckpt.wait()
    with pytest.raises(errors.DiskFullError, match=r"latest/5"):  # and stays raised
        ckpt.save(6, _state(6), {"best_val_accuracy": 0.6}, best=False)
    ckpt.close()
    assert sorted(os.listdir(root / "latest")) == ["2", "3", "4"]
    again = checkpoints.Checkpointer(str(tmp_path), keep=3)
    st, meta = again.resume(_state(0))
    assert int(st["epoch"]) == 4 and meta["best_step"] == 3
    again.close()


# --------------------------------------------------------------------------- a run
def test_evaluation_every_few_epochs_and_only_the_used_steps_compiled(tiny_config, tmp_path):
    config = tiny_config
    config.method = "concat"
    config.eval_every_epochs = 2
    config.evaluators = ("accuracy", "modality_accuracy")  # no final per-sample pass
    workdir = str(tmp_path / "run")
    results = train.train_and_evaluate(config, workdir)
    records = Workdir(workdir).read_metrics()
    # Epoch 2 (every second) and epoch 3 (the last) are evaluated, epoch 1 is not.
    assert [("val" in r, "test" in r) for r in records] == [(False, False), (True, True),
                                                           (True, True)]
    best = max((2, 3), key=lambda e: (records[e - 1]["val"]["accuracy"], -e))
    assert results["best_epoch"] == best
    assert os.listdir(os.path.join(workdir, "checkpoints", "best")) == [str(best)]
    assert results["test_accuracy"] == records[best - 1]["test"]["accuracy"]
    with open(os.path.join(workdir, "timing.json")) as f:
        timing = json.load(f)
    # Compiled ahead, each once: the train step and the evaluation step, nothing else
    # (no per-sample pass, no GMM fit: neither the method nor the evaluators run them).
    assert timing["step_compilations"] == {"train[concat]": 1, "eval": 1}
    assert timing["compile_in_background"] > 0 and timing["checkpoint_in_background"] > 0
    assert timing["epochs"] == 3 and "evaluation" in timing["device_wait"]

    # A run saved before eval_every_epochs existed ran with 1: it resumes with 1 only.
    path = os.path.join(workdir, "config.json")
    with open(path) as f:
        saved = json.load(f)
    saved.pop("eval_every_epochs")
    with open(path, "w") as f:
        json.dump(saved, f)
    with pytest.raises(errors.UserError, match=r"eval_every_epochs: saved '<absent>' -> now 2"):
        train.train_and_evaluate(config, workdir)
    config.eval_every_epochs = 1
    assert train.train_and_evaluate(config, workdir) == results  # finished: its results


def test_eval_every_epochs_is_validated(tiny_config):
    tiny_config.eval_every_epochs = 0
    with pytest.raises(errors.UserError, match=r"config\.eval_every_epochs=0 is not allowed"):
        run_config.validate_config(tiny_config, num_devices=1)


# --------------------------------------------------------------------------- initialization
@pytest.mark.slow
@pytest.mark.parametrize("method", ["concat", "greedy"])
def test_initialization_compiled_faster_gives_the_same_bits(tiny_config, method):
    # The session runs with optimizations turned down; both compilations here say their
    # level explicitly: XLA's default (-O3) and the initialization's own.
    tiny_config.method = method  # greedy: the MMTM model
    ds = run_config.open_dataset(tiny_config)
    init = state.initializer(tiny_config, ds.meta, methods.get(tiny_config))
    full = {"xla_llvm_disable_expensive_passes": False}
    default = init.lowered.compile(compiler_options=dict(full, xla_backend_optimization_level=3))
    faster = init.lowered.compile(compiler_options=dict(full, **state.INIT_COMPILE_OPTIONS))
    a, b = default(*init.args), faster(*init.args)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
