"""Pure step functions, written for one device's shard of the global batch.

`avgmm.parallel.Parallel` maps them over the devices (axis `AXIS`); with
`axis_name=None` they run on one device under `jax.jit` (benchmarks, tests).
"""

import functools
from typing import Callable, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from avgmm import losses
from avgmm.data import augment
from avgmm.data.pipeline import DatasetMeta
from avgmm.evaluators import Evaluator, Outputs
from avgmm.methods import Method, StepContext
from avgmm.models import AVClassifier, make_model
from avgmm.state import TrainState

Batch = Dict[str, jnp.ndarray]
AXIS = "batch"  # the device axis of every mapped function


def train_step(state: TrainState, batch: Batch, scalars: Dict[str, jnp.ndarray], *,
               model: AVClassifier, method: Method, phase: str,
               config: ml_collections.ConfigDict,
               axis_name: Optional[str] = AXIS) -> Tuple[TrainState, Dict[str, jnp.ndarray]]:
    """One optimizer step of `method`'s `phase` on this device's shard; `scalars` are
    `step_scalars(...)`."""
    # The seed is an argument, not a constant of the program: runs that differ only in
    # their seed share one compiled step (and the persistent compilation cache).
    step_key = jax.random.fold_in(jax.random.key(scalars["seed"]), state.step)
    # One key per sample from its position in the global batch: the same augmentation
    # whatever the number of devices.
    keys = jax.vmap(lambda p: jax.random.fold_in(step_key, p))(batch["position"])
    frames = augment.train_frames_from_config(batch["frames"], keys, config.data)
    # The method's own randomness: one key per step, the same on every device, apart from
    # the per-sample keys (no batch has 2**31 - 1 samples).
    method_key = jax.random.fold_in(step_key, 2**31 - 1)
    ctx = StepContext(model=model, axis_name=axis_name, key=method_key, frames=frames)
    return method.update(phase, state, batch, scalars, ctx)


def step_scalars(config: ml_collections.ConfigDict, method: Method,
                 epoch: int) -> Dict[str, np.ndarray]:
    """The host scalars of every train step of a 0-based `epoch`: the method's own and
    the run's seed."""
    return dict(method.step_scalars(epoch), seed=np.uint32(config.seed))


def jit_train_step(config: ml_collections.ConfigDict, meta: DatasetMeta, method: Method,
                   phase: str) -> Callable:
    """`train_step(state, batch, scalars)` of one phase jitted for a single device (no
    device axis; the state is donated): benchmarks and tests."""
    model = make_model(config, meta, method.head, axis_name=None)
    return jax.jit(functools.partial(train_step, model=model, method=method, phase=phase,
                                     config=config, axis_name=None), donate_argnums=(0,))


def eval_logits(model: AVClassifier, state: TrainState, batch: Batch, image_size: int):
    """Inference-mode logits of a batch (evaluation frames, running BatchNorm statistics)."""
    frames = augment.eval_frames(batch["frames"], image_size)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return model.apply(variables, batch["audio"].astype(jnp.float32), frames, train=False)


def eval_sums(state: TrainState, batch: Batch, *, model: AVClassifier, method: Method,
              evaluators: Sequence[Evaluator], image_size: int) -> Dict[str, jnp.ndarray]:
    """This shard's sums of every evaluator over its real (unmasked) samples, keyed
    `<evaluator>.<sum>`, and `count`, the number of real samples."""
    logits = eval_logits(model, state, batch, image_size)
    mask = batch["mask"].astype(jnp.float32)
    out = Outputs(fused=method.fused(logits), audio=logits.audio, visual=logits.visual,
                  label=batch["label"], mask=mask, batch=batch)
    sums = {"count": mask.sum()}
    for ev in evaluators:
        sums.update({f"{ev.name}.{k}": v for k, v in ev.sums(out).items()})
    return sums


def sample_outputs(state: TrainState, batch: Batch, *, model: AVClassifier, method: Method,
                   image_size: int) -> Dict[str, jnp.ndarray]:
    """Per sample, in inference mode: the modality gap and true-class probabilities
    (Algorithm 1, step a) and the multimodal and unimodal predictions."""
    logits = eval_logits(model, state, batch, image_size)
    labels = batch["label"]
    return {"gap": losses.modality_gap(logits.audio, logits.visual, labels),
            "p_audio": losses.true_class_probability(logits.audio, labels),
            "p_visual": losses.true_class_probability(logits.visual, labels),
            "pred": method.fused(logits).argmax(-1).astype(jnp.int32),
            "pred_audio": logits.audio.argmax(-1).astype(jnp.int32),
            "pred_visual": logits.visual.argmax(-1).astype(jnp.int32)}
