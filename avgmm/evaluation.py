"""Evaluation passes over a split: the evaluators' metrics, and every sample's outputs
(modality gap, true-class probabilities, predictions)."""

import functools
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from avgmm import divergence, steps
from avgmm.data import pipeline
from avgmm.evaluators import Evaluator

# The names of the two mapped passes (`Parallel.map`), e.g. for compiling them ahead.
EVAL, SAMPLES = "eval", "samples"


def eval_fn(par, evaluators: Sequence[Evaluator]):
    """The per-shard function of an evaluation pass (`steps.eval_sums`)."""
    return functools.partial(steps.eval_sums, model=par.model, method=par.method,
                             evaluators=tuple(evaluators),
                             image_size=par.config.data.image_size)


def samples_fn(par):
    """The per-shard function of a per-sample pass (`steps.sample_outputs`)."""
    return functools.partial(steps.sample_outputs, model=par.model, method=par.method,
                             image_size=par.config.data.image_size)


def evaluate(par, state, ds: pipeline.Dataset, split: str, batch_size: int,
             evaluators: Sequence[Evaluator]) -> Dict[str, Any]:
    """Every evaluator's metrics of a split, with `state` replicated by `par` (an
    `avgmm.parallel.Parallel`): one compiled step computes the model's outputs once and
    every evaluator's sums; each evaluator finishes its own totals on the host."""
    sums = par.batch_sums(EVAL, eval_fn(par, evaluators), state, ds, split, batch_size)
    # Added up on the host in float64 (no computation outside the mapped steps).
    totals = {k: float(np.sum([np.asarray(s[k], np.float64) for s in sums])) for k in sums[0]}
    out: Dict[str, Any] = {}
    for ev in evaluators:
        own = {k.split(".", 1)[1]: v for k, v in totals.items()
               if k.startswith(ev.name + ".")}
        out.update(ev.finish(dict(own, count=totals["count"])))
    return out


def sample_rows(par, state, ds: pipeline.Dataset, split: str, batch_size: int,
                keep: Sequence[str] = (), last_good: Optional[Callable[[], str]] = None
                ) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """Every sample of a split in inference mode (`steps.sample_outputs`): `(device,
    host)` as `Parallel.sample_rows` returns them (`keep`: outputs left on the devices,
    e.g. the gaps a GMM is fitted to on the devices). Non-finite gaps mean the model
    diverged (or its inputs hold NaN): `DivergedError` naming them, their cause and
    `last_good()`, the checkpoint to go back to."""
    device, host = par.sample_rows(SAMPLES, samples_fn(par), state, ds, split, batch_size,
                                   keep)
    divergence.check_gaps(host, split, ds, last_good)
    return device, host
