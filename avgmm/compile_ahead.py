"""A run's compilations, started together at its start.

Compiled one after another as the run meets them, a cold start waits for the model's
initialization, then the first phase's train step; the evaluation step stalls the end of
the first epoch, the per-sample step and the GMM fit the first refit, each later phase its
first epoch. XLA releases the interpreter while it compiles, so `jobs` lists every shared
step function the run will use, with the shapes it will be called with, and the trainer
hands them to `Parallel.compile_ahead` before it initializes the model: the first train
step compiles beside the initialization, the others behind it, while the run goes on.
Nothing the run will not use is compiled: the train steps of the phases still to come,
the evaluation step, and the per-sample step and GMM fit only where the method's hooks
(`Method.passes`) or an evaluator's final pass (`Evaluator.passes`) run them. A method's
own passes (e.g. PMR's prototypes) compile at their first use, as before.
"""

import math
import os
from typing import Any, Callable, List, Sequence, Tuple

import jax
import ml_collections
import numpy as np

from avgmm import evaluation, gmm
from avgmm.data import pipeline
from avgmm.evaluators import Evaluator
from avgmm.methods import Method

Job = Tuple[str, Callable, Tuple[Any, ...]]


def workers() -> int:
    """Background compilations at a time: one core stays with the run's own thread (which
    compiles the model's initialization meanwhile)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def jobs(par, method: Method, evaluators: Sequence[Evaluator],
         config: ml_collections.ConfigDict, ds: pipeline.Dataset, state_shapes: Any,
         start_epoch: int) -> List[Job]:
    """`(name, mapped function, abstract arguments)` of every shared step function a run
    starting at the 0-based `start_epoch` will call, the most urgent first: the first
    phase's train step, the evaluation step, what the method's hooks run, the later
    phases, what the evaluators' final passes run. `state_shapes`: the initial state's
    shapes (`jax.eval_shape`)."""
    epochs = range(start_epoch, method.epochs())
    if not epochs:
        return []
    state = par.replicated_spec(state_shapes)
    batch = next(iter(par.train_batches(ds, config.batch_size, start_epoch, config.seed, 0)))
    batch["position"] = par.positions(config.batch_size)
    batch = par.abstract(par.shard(batch))
    first_epochs = {}  # phase -> its first epoch still to train, in schedule order
    for e in epochs:
        first_epochs.setdefault(method.phase(e), e)
    train = [(f"train[{phase}]", par.train_steps[phase],
              (state, batch, par.abstract(method.train_scalars(e))))
             for phase, e in first_epochs.items()]
    eval_batch = next(iter(par.eval_batches(ds, "validation", config.eval_batch_size, 0)))
    eval_batch = par.abstract(par.shard(eval_batch))
    passes = {
        evaluation.SAMPLES: lambda: (evaluation.SAMPLES,
                                     par.rows_function(evaluation.SAMPLES,
                                                       evaluation.samples_fn(par)),
                                     (state, eval_batch)),
        "fit_gmm": lambda: ("fit_gmm", gmm.mapped_fit(par, config.gmm),
                            _gap_specs(par, ds, config.eval_batch_size, eval_batch)),
    }
    method_passes = [passes[p]() for p in dict.fromkeys(method.passes) if p in passes]
    final_passes = [passes[p]() for p in dict.fromkeys(p for ev in evaluators for p in ev.passes)
                    if p in passes and p not in method.passes]
    eval_job = (evaluation.EVAL, par.sums_function(evaluation.EVAL,
                                                   evaluation.eval_fn(par, evaluators)),
                (state, eval_batch))
    return train[:1] + [eval_job] + method_passes + train[1:] + final_passes


def _gap_specs(par, ds: pipeline.Dataset, batch_size: int, eval_batch: Any):
    """The `[local devices, rows]` gaps and mask a per-sample pass over the training split
    leaves on the devices (padding included), as the GMM fit receives them."""
    rows = math.ceil(ds.meta.num_examples["train"] / batch_size) * (batch_size // par.n)
    mask = eval_batch["mask"]
    shape = (par.n_local, rows)
    # Gaps are float32 whatever the model's dtype (`losses.cross_entropy`).
    return (jax.ShapeDtypeStruct(shape, np.float32, sharding=mask.sharding),
            jax.ShapeDtypeStruct(shape, mask.dtype, sharding=mask.sharding))
