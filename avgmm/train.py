"""The training loop: every method's epochs, Algorithm 1 for the adaptive method.

`train_and_evaluate(config, workdir)` is the library entry: it trains `config.method` (a
module of `avgmm.methods`) for `config.epochs` epochs in `workdir`, resuming what is
there, and writes metrics, checkpoints and `results.json`. Each epoch: the method's
host-side work (e.g. the adaptive method's GMM refit, Algorithm 1 steps a-b), one pass of
the phase's train step over the training data (step c), a divergence check, the
evaluators on the validation and test splits (every `config.eval_every_epochs` epochs and
the last), and a checkpoint, saved in a background thread while the next epoch trains.
Every step function the run will use starts compiling at the start, concurrently
(`avgmm.compile_ahead`). Devices are `avgmm.parallel`'s business, step functions
`avgmm.steps`', metrics `avgmm.evaluators`'.
"""

import functools
import os
import sys
from typing import Any, Dict, NamedTuple, Optional, Tuple

import jax
import ml_collections
import numpy as np

from avgmm import compile_ahead, compile_cache, config_defaults, divergence, evaluation
from avgmm import evaluators, files, methods, progress, timing
from avgmm.build import build
from avgmm.checkpoints import SharedCheckpoints
from avgmm.data import pipeline
from avgmm.errors import DiskFullError, RunInterrupted, UserError, WorkdirBusyError
from avgmm.metric_writer import MetricWriter, NullMetricWriter
from avgmm.processes import on_primary, primary_context
from avgmm.run_config import (check_batch_fits, check_train_classes, open_dataset,
                              select_devices, validate_config)
from avgmm.workdir import Workdir

_say = progress.say
# The checkpointed bookkeeping of a run before its first epoch.
_FRESH_META = {"best_val_accuracy": -1.0, "best_epoch": -1, "peer_best_test_accuracy": -1.0,
               "peer_best_epoch": -1}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       fresh: bool = False) -> Dict[str, Any]:
    """Trains `config.method` in `workdir` (resuming what is there) and returns the final
    results also written to `workdir/results.json`.

    The workdir is locked for the whole run: a second run on it is refused
    (`WorkdirBusyError`). In a multi-process run (see `avgmm.parallel`) process 0 alone
    locks, reads and writes the workdir. A diverged epoch raises `DivergedError`, a full
    disk `DiskFullError`, a checkpoint with no intact fallback `CheckpointError`. A mistake
    in the config or the data raises `UserError` before anything is written: a workdir
    that did not exist is not left behind. Ctrl-C raises `RunInterrupted`.
    """
    timer = timing.RunTimer()
    validate_config(config, len(select_devices(config)))
    compile_cache.enable(config.compilation_cache_dir)
    wd = Workdir(workdir)
    existed = os.path.exists(wd.path)
    try:
        # Opened before the workdir is touched: a dataset that is not there is refused
        # without leaving an empty workdir behind.
        ds = open_dataset(config)
        check_train_classes(config, ds)
        check_batch_fits(config, ds.meta.num_examples["train"], len(select_devices(config)))
        with primary_context(wd.lock):
            return _train_and_evaluate(config, wd, ds, fresh, timer)
    except (UserError, WorkdirBusyError):
        if not existed and jax.process_index() == 0:
            wd.remove_if_unused()
        raise


class _Run(NamedTuple):
    """A run ready for its first epoch to go: restored or fresh, on the devices."""

    method: methods.Method
    ctx: methods.RunContext  # par, ds, config, workdir, checkpointed meta, sample pass
    template: Any  # the initial state on the host: the restore template
    ckpt: SharedCheckpoints
    evaluators: Tuple[evaluators.Evaluator, ...]


def _start(config: ml_collections.ConfigDict, wd: Workdir, ds: pipeline.Dataset,
           fresh: bool, timer: timing.RunTimer):
    """Prepares the workdir and the state (resuming what is there); returns `(run,
    replicated state)`, or the saved results of a run that is already finished."""
    on_primary(lambda: _prepare_workdir(config, wd, fresh))
    # A finished run answers before anything is built or compiled (a sweep run again).
    done = on_primary(lambda: _finished_results(config, wd), share=True)
    if done is not None:
        _say(f"{wd.path} is finished ({config.epochs} epochs); its results (from "
             "results.json; --fresh trains it again):")
        return done
    run_evaluators = tuple(evaluators.build(config, ds.meta))

    def start_compiling(method, par, state_shapes):
        par.timer = timer
        if not config.precompile_phases or jax.process_count() > 1:
            return  # kept simple where several processes must compile in step
        # The epoch a resume would start at (a damaged newest checkpoint, set aside by
        # the resume, only makes a phase compile that the run may not need).
        start_epoch = wd.latest_epoch() or 0
        par.compile_ahead(compile_ahead.jobs(par, method, run_evaluators, config, ds,
                                             state_shapes, start_epoch),
                          compile_ahead.workers())

    method, par, template = build(config, ds, before_init=start_compiling)
    ckpt = SharedCheckpoints(wd.path, keep=config.checkpoint_keep, background=True)
    restored = ckpt.resume(template)  # skips damaged checkpoints, repairs a missing best
    meta: Dict[str, Any] = dict(_FRESH_META)
    host_state = template
    if restored is not None:
        host_state, meta = restored
        _say(f"resuming {wd.path} after epoch {int(host_state.epoch)}")
    # Records are numbered by epochs completed (1-based); keep those up to the checkpoint.
    keep_below = int(host_state.epoch) + 1
    on_primary(lambda: (wd.truncate_metrics(keep_below),
                        wd.truncate_metrics(keep_below, Workdir.STEPS)))
    bs = config.eval_batch_size
    ctx = methods.RunContext(
        par=par, ds=ds, config=config, workdir=wd, meta=meta,
        samples=lambda state, split, keep=(): evaluation.sample_rows(
            par, state, ds, split, bs, keep, last_good=ckpt.last_good),
        initial_state=template)
    run = _Run(method, ctx, template, ckpt, run_evaluators)
    return run, par.replicate(host_state)


def _prepare_workdir(config: ml_collections.ConfigDict, wd: Workdir, fresh: bool) -> None:
    """`--fresh`'s deletions, the config check against the workdir's, and config.json."""
    if fresh:
        deleted = wd.delete_outputs()
        _say(f"--fresh: deleted {', '.join(deleted)} from {wd.path}" if deleted else
             f"--fresh: nothing to delete in {wd.path}")
    wd.check_config(config, absent_ok=lambda field, value: (
        config_defaults.added_field_ok(field, value)
        or methods.absent_field_ok(config, field, value)),
        unread=lambda field: bool(methods.unused_fields(config, [field])))
    # Saved once the config has proven usable: a typo fixed on the next try is no conflict.
    wd.save_config(config)


def _train_and_evaluate(config: ml_collections.ConfigDict, wd: Workdir,
                        ds: pipeline.Dataset, fresh: bool,
                        timer: timing.RunTimer) -> Dict[str, Any]:
    with timer.span("startup"):
        started = _start(config, wd, ds, fresh, timer)
    if not isinstance(started, tuple):
        timer.close()
        return started  # finished before: its saved results
    run, state = started
    method, par, meta, ckpt = run.method, run.ctx.par, run.ctx.meta, run.ckpt
    writer = MetricWriter(wd) if par.is_primary else NullMetricWriter()
    n_epochs, steps_per_epoch = method.epochs(), ds.steps_per_epoch(config.batch_size)
    start_epoch = saved_epoch = shown_epoch = int(par.fetch(state.epoch))
    _say(f"{config.method} on {config.data.name} {dict(ds.meta.num_examples)}: "
         f"{n_epochs} epochs of {steps_per_epoch} steps, {par.n} device(s), "
         f"workdir {wd.path}")
    if ds.meta.split_source:
        _say(f"split: {ds.meta.split_source}")
    clock = progress.RunClock(n_epochs * steps_per_epoch, start_epoch * steps_per_epoch)
    blowup = divergence.BlowupGuard(ds.meta.num_classes, on_primary(
        lambda: divergence.BlowupGuard.first_loss_of(wd.read_metrics()), share=True)
        if start_epoch else None, config, ds)
    # The best-validation state of this process's epochs (host): the final evaluation
    # then needs no restore, and need not wait for the last saves.
    best_host = None
    try:
        for epoch in range(start_epoch, n_epochs):
            phase = method.phase(epoch)
            # Epochs are counted as "epochs completed" (1-based) in every output.
            record: Dict[str, Any] = {"epoch": epoch + 1, "phase": phase,
                                      **method.describe(epoch)}
            with timer.span("method_passes"):  # e.g. the GMM refit (Algorithm 1, a-b)
                if method.resets_optimizer(epoch):
                    state = par.reset_optimizer(state, config.optimizer.reset_schedule)
                    record["optimizer_reset"] = {"moment_norm": par.moment_norm(state)}
                state, hook_record = method.on_epoch_start(run.ctx, state, epoch)
            record.update(hook_record)
            with timer.span("train"):
                # The first step of a phase in this process waits for its compilation.
                compiles = epoch == start_epoch or method.phase(epoch - 1) != phase
                state, record["train"] = _train_epoch(run, state, epoch, writer, clock,
                                                      timer, compiles)
            # One copy on the host: checked before anything of the epoch is evaluated,
            # written or saved, then saved.
            host_state = par.fetch(state)
            divergence.check_finite(epoch + 1, {"parameters": host_state.params,
                                                "BatchNorm statistics": host_state.batch_stats,
                                                "optimizer state": host_state.opt_state},
                                    record["train"]["loss"], ckpt.last_good, ds, config)
            blowup.check_train(epoch + 1, record["train"]["loss"], ckpt.last_good)
            with timer.span("method_passes"):
                record.update(method.epoch_record(run.ctx, state, epoch))
            best = False
            if _evaluates(config, epoch):
                if epoch == start_epoch:
                    _say("evaluating on the validation and test splits")
                with timer.span("evaluation"):
                    best = _evaluate_epoch(run, state, record, meta)
                divergence.check_outputs(epoch + 1, record, ckpt.last_good, ds, config)
                blowup.check_outputs(epoch + 1, record, ckpt.last_good)
            with timer.span("progress"):
                _say(_epoch_line(run, record, n_epochs))
            shown_epoch = epoch + 1
            with timer.span("checkpoint"):
                # The record, then the checkpoint, written in the background while the next
                # epoch trains (a resume drops records after its checkpoint).
                ckpt.save(epoch + 1, host_state, meta, best=best,
                          before=functools.partial(writer.write, record, step=epoch + 1))
            if best:
                best_host = host_state
            saved_epoch = epoch + 1
        with timer.span("evaluation"):
            results = _final_results(run, state, best_host)
        with timer.span("checkpoint"):
            ckpt.wait()  # committed before results.json says the run is finished
        on_primary(lambda: wd.write_json(Workdir.RESULTS, results))
        timer.add_background("checkpoint", ckpt.background_seconds)
        totals = dict(timer.close(), step_compilations=dict(par.traces),
                      epochs=n_epochs - start_epoch)
        on_primary(lambda: wd.write_json(Workdir.TIMING, totals))
        _say(timing.summary(totals))
    except KeyboardInterrupt:
        # The last epoch's checkpoint is finished before the process ends (no exchange:
        # the other processes of a multi-host run may be gone already).
        ckpt.wait(everywhere=False)
        where = (f"after epoch {saved_epoch}" if saved_epoch else
                 "before the first epoch was saved")
        if shown_epoch > saved_epoch:  # its line was printed, its checkpoint not written
            where = (f"while epoch {shown_epoch} was being saved ({where}; epoch "
                     f"{shown_epoch} is trained again)")
        raise RunInterrupted(f"interrupted {where}; run the same command to resume") from None
    except DiskFullError:
        # Another write of the run (a GMM fit's file) met the disk that a background save
        # filled first: that save's line names the real last good checkpoint.
        ckpt.wait(everywhere=False)
        raise
    finally:
        par.cancel_ahead()
        # On the way out of a failing run, its error stays the one line told.
        ckpt.close(quiet=sys.exc_info()[0] is not None)
        writer.close()
    return results


def _evaluates(config: ml_collections.ConfigDict, epoch: int) -> bool:
    """Whether the 0-based `epoch` is evaluated: every `config.eval_every_epochs`-th epoch
    (counted 1-based) and the last one."""
    done = epoch + 1
    return done % config.eval_every_epochs == 0 or done == config.epochs


def _train_epoch(run: _Run, state, epoch: int, writer, clock: progress.RunClock,
                 timer: timing.RunTimer, compiles: bool):
    """One pass of the phase's train step over the training data; returns the state
    (epochs completed + 1) and the epoch's mean train terms. `compiles`: say that the
    first step waits for the step's compilation."""
    method, par, config, ds = run.method, run.ctx.par, run.ctx.config, run.ctx.ds
    phase = method.phase(epoch)
    n_steps = ds.steps_per_epoch(config.batch_size)
    step_fn = par.train_step(phase)
    scalars = method.train_scalars(epoch)
    positions = par.positions(config.batch_size)
    if par.compiled_ahead(f"train[{phase}]"):
        compiles = False  # compiled in the background; train_step says if it waits
    reporter = progress.EpochReporter(
        steps=n_steps, batch_size=config.batch_size,
        desc=f"epoch {epoch + 1}/{method.epochs()}", log_every=config.log_every_steps,
        first_step=epoch * n_steps,
        on_log=functools.partial(_log_steps, writer, timer, epoch + 1, phase), clock=clock,
        compile_note=(f"compiling the {phase} train step (the first step of a phase waits "
                      "for it)") if compiles else None, timer=timer)
    try:
        # A method may draw its batches group by group (e.g. Data Remixing's unimodal ones).
        groups = method.batch_groups(run.ctx, state, epoch)
        for batch in reporter.batches(par.train_batches(ds, config.batch_size, epoch,
                                                        config.seed, config.data.prefetch,
                                                        groups=groups)):
            batch["position"] = positions
            state, terms = step_fn(state, par.shard(batch), scalars)
            reporter.step_done(terms)
    finally:
        means = reporter.close()
    return state.replace(epoch=par.replicate(np.int32(epoch + 1))), means


def _evaluate_epoch(run: _Run, state, record: Dict[str, Any], meta: Dict[str, Any]) -> bool:
    """The evaluators' metrics on the validation and test splits into `record`; updates
    the best-so-far in `meta` and returns whether this epoch is the best on validation."""
    for key, split in (("val", "validation"), ("test", "test")):
        record[key] = _evaluate(run, state, split)
    epoch = record["epoch"]
    best = record["val"]["accuracy"] > meta["best_val_accuracy"]
    if best:
        meta.update(best_val_accuracy=record["val"]["accuracy"], best_epoch=epoch)
    if record["test"]["accuracy"] > meta["peer_best_test_accuracy"]:
        meta.update(peer_best_test_accuracy=record["test"]["accuracy"], peer_best_epoch=epoch)
    return best


def _evaluate(run: _Run, state, split: str) -> Dict[str, Any]:
    return evaluation.evaluate(run.ctx.par, state, run.ctx.ds, split,
                               run.ctx.config.eval_batch_size, run.evaluators)


def _epoch_line(run: _Run, record: Dict[str, Any], n_epochs: int) -> str:
    """The console summary of one epoch: loss, the evaluators' console fields on the
    validation split (the first one as the main number), speed, the method's note."""
    val = record.get("val", {})
    shown = [(f.console, val[f.key]) for f in evaluators.console_fields(run.evaluators)
             if val.get(f.key) is not None]
    main = f"val {shown[0][0]} {shown[0][1]:.4f}" if shown else ""
    if "val" not in record:
        main = f"not evaluated (eval_every_epochs={run.ctx.config.eval_every_epochs})"
    rest = ", ".join(f"{name} {value:.4f}" for name, value in shown[1:])
    return (f"epoch {record['epoch']}/{n_epochs} [{record['phase']}] loss "
            f"{record['train']['loss']:.4f} | {main}" + (f" ({rest})" if rest else "")
            + f" | {record['train']['samples_per_second']:.0f} samples/s"
            + run.method.console_note(record))


def _log_steps(writer, timer: timing.RunTimer, epoch: int, phase: str, step: int,
               terms: Dict[str, float], samples_per_second: float) -> None:
    """One `steps.jsonl` record: the mean loss terms, learning rate and samples/s of the
    last `config.log_every_steps` steps (epoch = the epoch in progress, 1-based)."""
    with timer.span("metrics"):
        writer.write_steps({"step": step, "epoch": epoch, "phase": phase,
                            "train": dict(terms, samples_per_second=samples_per_second)},
                           step)


def _finished_results(config: ml_collections.ConfigDict,
                      wd: Workdir) -> Optional[Dict[str, Any]]:
    """The saved results of a run whose newest checkpoint is its final epoch, or None
    where the run is not finished (epochs to go, or no intact results.json)."""
    if wd.latest_epoch() != config.epochs:
        return None
    return wd.read_results()


def _final_results(run: _Run, state, best_host=None) -> Dict[str, Any]:
    """Headline (best-validation checkpoint), last epoch, the peers' protocol, the
    method's own fields and the evaluators' final passes, for results.json. `best_host`:
    the best-validation state where this process trained it (else it is restored)."""
    ctx, method = run.ctx, run.method
    config, par, meta, ds = ctx.config, ctx.par, ctx.meta, ctx.ds
    _say("final evaluation: the last and the best-validation checkpoints on the test split")
    if best_host is None or int(best_host.epoch) != meta["best_epoch"]:
        best_host = run.ckpt.restore(run.template, which="best")[0]
    best_state = par.replicate(best_host)
    states = {"last": state, "best": best_state}
    last, best = _evaluate(run, state, "test"), _evaluate(run, best_state, "test")
    headline = [f.key for f in evaluators.headline_fields([ev.name for ev in run.evaluators])]
    results = {
        "method": config.method,
        "variant": config.variant,
        "dataset": config.data.name,
        # How the dataset's train/test split was made (standard files or a seeded draw).
        "split_source": ds.meta.split_source,
        "epochs": method.epochs(),
        "phases": method.phase_spans(),
        # Headline: the best-validation checkpoint.
        **{f"test_{k}": best[k] for k in headline if k in best},
        "best_val_accuracy": meta["best_val_accuracy"],
        "best_epoch": meta["best_epoch"],
        "last_epoch": {k: last[k] for k in headline if k in last},
        # Every public peer picks its epoch on the test set; only comparable with theirs.
        "peer_protocol_best_test_accuracy": meta["peer_best_test_accuracy"],
        "peer_protocol_best_epoch": meta["peer_best_epoch"],
        "num_devices": par.n,
    }
    results.update(method.results(ctx))
    passes: Dict[Tuple[str, str], Any] = {}

    def samples(split: str, which: str):
        if (split, which) not in passes:
            passes[split, which] = ctx.samples(states[which], split, keep=("gap",))
        return passes[split, which]

    final = evaluators.FinalContext(par=par, ds=ds, config=config, workdir=ctx.workdir,
                                    samples=samples)
    for ev in run.evaluators:
        results.update(ev.final(final))
    return files.to_python(results)
