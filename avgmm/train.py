"""The training loop (Algorithm 1 for the adaptive method, one phase for the others).

`train_and_evaluate(config, workdir)` is the library entry: it trains `config.method`
(a module of `avgmm.methods`) in `workdir`, resuming what is there, and writes metrics,
checkpoints and `results.json`. Devices are `avgmm.parallel`'s business, step functions
`avgmm.steps`', the optimizer `avgmm.optim`'s.
"""

import functools
import json
import os
import shutil
from typing import Any, Dict, NamedTuple, Optional

import jax
import ml_collections
import numpy as np

from avgmm import compile_cache, evaluation, methods, optim, progress, steps, timing, utils
from avgmm import workdir as workdir_lib
from avgmm.data import pipeline
from avgmm.errors import RunInterrupted, UserError
from avgmm.optim import total_epochs
from avgmm.parallel import Parallel, on_primary, primary_context
from avgmm.run_config import check_batch_fits, open_dataset, select_devices, validate_config
from avgmm.state import create_train_state

_say = progress.say


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       fresh: bool = False) -> Dict[str, Any]:
    """Trains `config.method` in `workdir` (resuming what is there) and returns the final
    metrics also written to `workdir/results.json`.

    The workdir is locked for the whole run: a second run on it is refused
    (`utils.WorkdirBusyError`). In a multi-process run (see `avgmm.parallel`) process 0
    alone locks, reads and writes the workdir. A diverged epoch raises
    `utils.DivergedError`, a full disk `utils.DiskFullError`, a checkpoint with no intact
    fallback `utils.CheckpointError`.
    A mistake in the config or the data raises `UserError` before anything is written: a
    workdir that did not exist is not left behind. Ctrl-C raises `RunInterrupted`.
    """
    timer = timing.RunTimer()
    validate_config(config, len(select_devices(config)))
    compile_cache.enable(config.compilation_cache_dir)
    workdir = os.path.abspath(os.path.expanduser(workdir))
    existed = os.path.exists(workdir)
    try:
        # Opened before the workdir is touched: a dataset that is not there is refused
        # without leaving an empty workdir behind.
        ds = open_dataset(config)
        check_batch_fits(config, ds.meta.num_examples["train"], len(select_devices(config)))
        with primary_context(lambda: workdir_lib.lock(workdir)):
            return _train_and_evaluate(config, workdir, ds, fresh, timer)
    except (UserError, workdir_lib.WorkdirBusyError):
        if not existed and jax.process_index() == 0:
            _remove_if_unused(workdir)
        raise


class _Start(NamedTuple):
    """A run ready for its first epoch to go: restored or fresh, on the devices."""

    method: methods.Method
    par: Parallel
    template: Any  # the initial state on the host: the restore template
    ckpt: Any  # avgmm.parallel.SharedCheckpoints
    state: Any  # replicated
    meta: Dict[str, Any]  # checkpointed bookkeeping: best epochs, GMM fits, ...


def _start(config: ml_collections.ConfigDict, workdir: str, ds: pipeline.Dataset,
           fresh: bool):
    """Prepares the workdir and the state (resuming what is there); returns a `_Start`,
    or the saved results of a run that is already finished."""
    on_primary(lambda: _prepare_workdir(config, workdir, fresh))
    method, par, template = build(config, ds)
    ckpt = par.checkpoints(workdir, keep=config.checkpoint_keep)
    restored = ckpt.resume(template)  # skips damaged checkpoints, repairs a missing best
    meta: Dict[str, Any] = {"best_val_accuracy": -1.0, "best_epoch": -1,
                            "peer_best_test_accuracy": -1.0, "peer_best_epoch": -1,
                            "gmm_fits": 0}
    host_state = template
    if restored is not None:
        host_state, meta = restored
        epochs_done = int(host_state.epoch)
        done = on_primary(lambda: finished_results(config, workdir, epochs_done), share=True)
        if done is not None:
            ckpt.close()
            _say(f"{workdir} is finished ({int(host_state.epoch)} epochs); its results "
                 "(from results.json; --fresh trains it again):")
            return done
        _say(f"resuming {workdir} after epoch {int(host_state.epoch)}")
    # Records are numbered by epochs completed (1-based); keep those up to the checkpoint.
    keep_below = int(host_state.epoch) + 1
    on_primary(lambda: (utils.truncate_metrics(workdir, keep_below),
                        utils.truncate_metrics(workdir, keep_below, utils.STEPS_FILE)))
    return _Start(method, par, template, ckpt, par.replicate(host_state), meta)


def _prepare_workdir(config: ml_collections.ConfigDict, workdir: str, fresh: bool) -> None:
    """`--fresh`'s deletions, the config check against the workdir's, and config.json."""
    if fresh and os.path.isdir(workdir):
        _delete_for_fresh(workdir)
    os.makedirs(workdir, exist_ok=True)
    utils.check_config(config, workdir,
                       absent_ok=lambda field, value: methods.absent_field_ok(config, field,
                                                                               value))
    # Saved once the config has proven usable: a typo fixed on the next try is no conflict.
    utils.save_config(config, workdir)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                        ds: pipeline.Dataset, fresh: bool,
                        timer: timing.RunTimer) -> Dict[str, Any]:
    with timer.span("startup"):
        start = _start(config, workdir, ds, fresh)
    if not isinstance(start, _Start):
        timer.close()
        return start  # finished before: its saved results
    method, par, template, ckpt, state, meta = start
    run = methods.RunContext(par=par, ds=ds, config=config, workdir=workdir, meta=meta)
    writer = utils.MetricWriter(workdir) if par.is_primary else utils.NullMetricWriter()
    n_epochs, steps_per_epoch = total_epochs(config), ds.steps_per_epoch(config.batch_size)
    start_epoch = saved_epoch = int(par.fetch(state.epoch))
    _say(f"{config.method} on {config.data.name} {dict(ds.meta.num_examples)}: "
         f"{n_epochs} epochs of {steps_per_epoch} steps, {par.n} device(s), "
         f"workdir {workdir}")
    if ds.meta.split_source:
        _say(f"split: {ds.meta.split_source}")
    clock = progress.RunClock(n_epochs * steps_per_epoch, start_epoch * steps_per_epoch)
    try:
        for epoch in range(start_epoch, n_epochs):
            phase = method.phase(epoch)
            # Epochs are counted as "epochs completed" (1-based) in every output.
            record: Dict[str, Any] = {"epoch": epoch + 1, "phase": phase,
                                      **method.describe(epoch)}
            if method.resets_optimizer(epoch):
                state = par.reset_optimizer(state, config.optimizer.reset_schedule)
                record["optimizer_reset"] = {"moment_norm": par.moment_norm(state)}
            with timer.span("method_passes"):  # e.g. the GMM refit (Algorithm 1, a-b)
                state, hook_record = method.on_epoch_start(run, state, epoch)
            record.update(hook_record)
            with timer.span("train"):
                # The first step of a phase in this process waits for its compilation.
                compiles = epoch == start_epoch or method.phase(epoch - 1) != phase
                state, record["train"] = _train_epoch(run, state, method, epoch, writer,
                                                      clock, timer, compiles)
            if epoch == start_epoch and config.precompile_phases:
                # After the first epoch: the background work then overlaps training and
                # evaluation rather than the first step's own compilation.
                _precompile_later_phases(run, state, method, epoch + 1, n_epochs)
            # One copy on the host: checked before anything of the epoch is evaluated,
            # written or saved, then saved.
            host_state = par.fetch(state)
            workdir_lib.check_finite(epoch + 1, (host_state.params, host_state.batch_stats,
                                                 host_state.opt_state),
                                     record["train"]["loss"], ckpt.last_good())
            record.update(method.epoch_record(run, state, epoch))
            if epoch == start_epoch:
                _say("evaluating on the validation and test splits (compiles once)")
            with timer.span("evaluation"):
                best = _evaluate_epoch(par, state, ds, config, record, meta)
            writer.write(record, step=epoch + 1)
            _say(_epoch_line(record, n_epochs))
            with timer.span("checkpoint"):
                ckpt.save(epoch + 1, host_state, meta, best=best)
            saved_epoch = epoch + 1
        with timer.span("checkpoint"):
            ckpt.wait()
        with timer.span("evaluation"):
            results = _final_results(config, par, state, template, ds, ckpt, meta, workdir)
        totals = dict(timer.close(), step_compilations=dict(par.traces))
        on_primary(lambda: utils.write_json(os.path.join(workdir, "timing.json"), totals))
        _say(timing.summary(totals))
    except KeyboardInterrupt:
        # The last epoch's checkpoint is finished before the process ends (no exchange:
        # the other processes of a multi-host run may be gone already).
        ckpt.wait(everywhere=False)
        where = (f"after epoch {saved_epoch}" if saved_epoch else
                 "before the first epoch was saved")
        raise RunInterrupted(f"interrupted {where}; run the same command to resume") from None
    finally:
        ckpt.close()
        writer.close()
    return results


def _train_epoch(run: methods.RunContext, state, method: methods.Method, epoch: int,
                 writer: utils.MetricWriter, clock: progress.RunClock,
                 timer: timing.RunTimer, compiles: bool):
    """One epoch of the phase `method` trains `epoch` with; returns the state (epochs
    completed + 1) and the epoch's mean train terms. `compiles`: say that the first step
    waits for the step's compilation."""
    config, ds = run.config, run.ds
    phase = method.phase(epoch)
    steps_per_epoch = ds.steps_per_epoch(config.batch_size)
    if run.par.precompiled(phase):
        compiles = False  # compiled in the background; train_step says if it waits
    state, terms = progress.train_epoch(
        run.par.train_step(phase), state,
        run.par.train_batches(ds, config.batch_size, epoch, config.seed, config.data.prefetch,
                              groups=method.batch_groups(run, state, epoch)),
        run.par.shard, steps.step_scalars(config, method, epoch),
        positions=run.par.positions(config.batch_size), steps=steps_per_epoch,
        batch_size=config.batch_size, desc=f"epoch {epoch + 1}/{total_epochs(config)}",
        log_every=config.log_every_steps, first_step=epoch * steps_per_epoch,
        on_log=functools.partial(_log_steps, writer, epoch + 1, phase), clock=clock,
        compile_note=(f"compiling the {phase} train step (the first step of a phase waits "
                      "for it)") if compiles else None, timer=timer)
    return state.replace(epoch=run.par.replicate(np.int32(epoch + 1))), terms


def _precompile_later_phases(run: methods.RunContext, state, method: methods.Method,
                             from_epoch: int, n_epochs: int) -> None:
    """Hands the train steps of the phases still to come that have not compiled yet to a
    background compilation (their shapes are known), so that a phase change does not
    stall."""
    done = method.phase(from_epoch - 1)
    phases = [p for p in dict.fromkeys(method.phase(e) for e in range(from_epoch, n_epochs))
              if p != done]
    if not phases:
        return
    config = run.config
    if jax.process_count() > 1:
        return  # kept simple where several processes must compile in step
    batch = next(iter(run.par.train_batches(run.ds, config.batch_size, from_epoch,
                                            config.seed, 0)))
    batch["position"] = run.par.positions(config.batch_size)
    _say(f"compiling the {', '.join(phases)} train step(s) in the background")
    run.par.precompile(phases, state, batch, steps.step_scalars(config, method, from_epoch))


class Built(NamedTuple):
    """What a run trains with: its method, the compiled steps on its devices, and the
    initial state on the host (`par.replicate(template)` puts it on the devices)."""

    method: methods.Method
    par: Parallel
    template: Any


def build(config: ml_collections.ConfigDict, ds: pipeline.Dataset) -> Built:
    """The method, devices and initial state of a (validated) config on a dataset."""
    method = methods.get(config)
    par = Parallel(select_devices(config), config, ds.meta, method)
    tx = optim.make_optimizer(config, ds.steps_per_epoch(config.batch_size))
    return Built(method, par, create_train_state(config, ds.meta, tx, method))


def _evaluate_epoch(par: Parallel, state, ds: pipeline.Dataset,
                    config: ml_collections.ConfigDict, record: Dict[str, Any],
                    meta: Dict[str, Any]) -> bool:
    """Validation and test accuracy into `record`; updates the best-so-far in `meta` and
    returns whether this epoch is the best on validation."""
    record["val"] = evaluation.evaluate(par, state, ds, "validation", config.eval_batch_size)
    record["test"] = evaluation.evaluate(par, state, ds, "test", config.eval_batch_size)
    epoch = record["epoch"]
    best = record["val"]["accuracy"] > meta["best_val_accuracy"]
    if best:
        meta.update(best_val_accuracy=record["val"]["accuracy"], best_epoch=epoch)
    if record["test"]["accuracy"] > meta["peer_best_test_accuracy"]:
        meta.update(peer_best_test_accuracy=record["test"]["accuracy"], peer_best_epoch=epoch)
    return best


def _epoch_line(record: Dict[str, Any], n_epochs: int) -> str:
    """The console summary of one epoch."""
    gmm_note = ""
    if "gmm_fit" in record:
        f = record["gmm_fit"]
        gmm_note = (f" | GMM fit {f['fit_index']}: pi_1 {f['pi_1']:.3f} "
                    f"mu_0 {f['mu_0']:+.3f} mu_1 {f['mu_1']:+.3f}")
    val = record["val"]
    return (f"epoch {record['epoch']}/{n_epochs} [{record['phase']}] loss "
            f"{record['train']['loss']:.4f} | val acc {val['accuracy']:.4f} "
            f"(audio {val['accuracy_audio']:.4f}, visual {val['accuracy_visual']:.4f}) | "
            f"{record['train']['samples_per_second']:.0f} samples/s{gmm_note}")


def _log_steps(writer: utils.MetricWriter, epoch: int, phase: str, step: int,
               terms: Dict[str, float], samples_per_second: float) -> None:
    """One `steps.jsonl` record: the mean loss terms, learning rate and samples/s of the
    last `config.log_every_steps` steps (epoch = the epoch in progress, 1-based)."""
    writer.write_steps({"step": step, "epoch": epoch, "phase": phase,
                        "train": dict(terms, samples_per_second=samples_per_second)}, step)


def _remove_if_unused(workdir: str) -> None:
    """Deletes a workdir this call created if it holds nothing but the lock file."""
    try:
        if set(os.listdir(workdir)) <= {workdir_lib.LOCK_NAME}:
            shutil.rmtree(workdir)
    except OSError:
        pass


def finished_results(config: ml_collections.ConfigDict, workdir: str,
                     last_epoch: int) -> Optional[Dict[str, Any]]:
    """The saved results of a run whose checkpoint `last_epoch` is its final epoch, or
    None where the run is not finished (no results.json, or epochs to go)."""
    path = os.path.join(workdir, "results.json")
    if last_epoch != total_epochs(config) or not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None  # a damaged results file is written again by evaluating


def _delete_for_fresh(workdir: str) -> None:
    """`--fresh`: removes the run's outputs and says which."""
    deleted = []
    for name in ("checkpoints", "metrics.jsonl", "steps.jsonl", "tensorboard", "gmm_fits",
                 "results.json", "config.json"):
        target = os.path.join(workdir, name)
        if os.path.isdir(target):
            shutil.rmtree(target)
        elif os.path.exists(target):
            os.remove(target)
        else:
            continue
        deleted.append(name)
    if deleted:
        _say(f"--fresh: deleted {', '.join(deleted)} from {workdir}")
    else:
        _say(f"--fresh: nothing to delete in {workdir}")


def _final_results(config, par: Parallel, state, template, ds, ckpt,
                   meta, workdir: str) -> Dict[str, Any]:
    """Headline (best-validation checkpoint), last epoch, and the peers' protocol."""
    bs = config.eval_batch_size
    _say("final evaluation: the last and the best-validation checkpoints on the test split")
    last = evaluation.evaluate(par, state, ds, "test", bs)
    best_state, _ = ckpt.restore(template, which="best")
    best = evaluation.evaluate(par, par.replicate(best_state), ds, "test", bs)
    results = {
        "method": config.method,
        "dataset": config.data.name,
        # How the dataset's train/test split was made (standard files or a seeded draw).
        "split_source": ds.meta.split_source,
        "epochs": total_epochs(config),
        "test_accuracy": best["accuracy"],  # headline: best-validation checkpoint
        "test_accuracy_audio": best["accuracy_audio"],
        "test_accuracy_visual": best["accuracy_visual"],
        "best_val_accuracy": meta["best_val_accuracy"],
        "best_epoch": meta["best_epoch"],
        "last_epoch": {k: last[k] for k in ("accuracy", "accuracy_audio", "accuracy_visual",
                                            "accuracy_degraded", "accuracy_clean")
                       if k in last},
        # Every public peer picks its epoch on the test set; only comparable with theirs.
        "peer_protocol_best_test_accuracy": meta["peer_best_test_accuracy"],
        "peer_protocol_best_epoch": meta["peer_best_epoch"],
        "gmm_fits": meta["gmm_fits"],
        # Fits whose gaps did not support two components (labelling arbitrary).
        "gmm_ambiguous_fits": list(meta.get("ambiguous_fits", [])),
        "num_devices": par.n,
    }
    if ds.meta.has_imbalance_flag:
        results["test_accuracy_degraded"] = best["accuracy_degraded"]
        results["test_accuracy_clean"] = best["accuracy_clean"]
        # How well each fit's imbalanced posterior found the degraded training clips.
        results["gmm_fit_aucs"] = list(meta.get("fit_aucs", []))
        # How well a GMM on the final model's training gaps finds the degraded clips.
        dev_gaps, dev_mask, host = evaluation.collect_gaps(par, state, ds, "train", bs)
        gmm = par.fetch(par.fit_gmm(dev_gaps, dev_mask))
        results["final_gmm"] = gmm.to_dict()
        results["final_gmm_auc_imbalanced"] = evaluation.gmm_auc(gmm, host)
    results = utils.to_python(results)
    on_primary(lambda: utils.write_json(os.path.join(workdir, "results.json"), results))
    return results


class LoadedRun(NamedTuple):
    """A checkpoint ready to evaluate (`evaluation.evaluate(run.par, run.state, run.ds,
    ...)`), with the host copy of its state and its bookkeeping."""

    par: Parallel
    state: Any  # replicated over par's devices
    host_state: Any
    ckpt_meta: Dict[str, Any]
    ds: pipeline.Dataset
    method: methods.Method


def load_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                    which: Any = "latest") -> Optional[LoadedRun]:
    """A run's checkpoint (`which`: latest, best or an epoch number, i.e. epochs
    completed), or None where the run has no such checkpoint."""
    ds = open_dataset(config)
    method, par, template = build(config, ds)
    ckpt = utils.Checkpointer(workdir)
    try:
        restored = ckpt.restore(template, which)
    finally:
        ckpt.close()
    if restored is None:
        return None
    host_state, ckpt_meta = restored
    return LoadedRun(par, par.replicate(host_state), host_state, ckpt_meta or {}, ds, method)
