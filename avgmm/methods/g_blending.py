"""G-Blending: Gradient-Blending (Wang, Tran, Feiszli, "What Makes Training Multi-modal
Classification Networks Hard?", CVPR 2020), the online version with super-epochs.

The model trains on a blend of three losses, `L = w_f CE(f) + w_a CE(l_a) + w_v CE(l_v)`
(fused and unimodal logits). The weights come from each output's overfitting-to-
generalization behaviour, measured on a part of the training split that the model never
trains on (`V`; the rest is `T`). At the start of every super-epoch (every
`super_epoch_fraction` of the budget, the first epoch included), for each output `k`:

1. its mean cross entropies on `T` and `V` in inference mode (`L^T_N`, `L^V_N`);
2. a copy of the model trains on `CE_k` alone over `T` for a super-epoch (fresh
   optimizer moments, the learning rate in force), then the same losses
   (`L^T_{N+n}`, `L^V_{N+n}`);
3. generalization `dG_k = L^V_N - L^V_{N+n}`, overfitting
   `dO_k = (L^V_{N+n} - L^T_{N+n}) - (L^V_N - L^T_N)`, and `w_k ∝ |dG_k| / dO_k^2`,
   normalized to sum 1.

The copies are discarded; the model then trains the super-epoch with the new weights.

There is no release by the authors. Read: the paper (Section 3, Algorithms 1-2), the
re-implementations GeWu-Lab/BalanceBenchmark (`balancemm/trainer/GBlending_trainer.py`,
`configs/trainer_config.yaml`) and pliang279/MultiBench
(`training_structures/gradient_blend.py`). See docs/methods.md.
"""

import functools
import math
import time
from typing import Any, Callable, Dict, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from avgmm import losses, optim, progress
from avgmm.data import augment
from avgmm.errors import UserError
from avgmm.methods import base

OUTPUTS = ("fused", "audio", "visual")  # the order of the blend weights
# Floor of |dO| before it is squared (MultiBench's floor of the overfitting, 1e-4): a copy
# whose overfitting did not change would otherwise get an infinite weight.
MIN_DELTA_O = 1e-4
# Stream of the held-out draw (apart from the data order's `[seed, epoch]` streams).
HOLDOUT_STREAM = 7919


@flax.struct.dataclass
class GBlendState:
    """The blend weights in force (`OUTPUTS` order) and which training samples are held
    out for their estimation (by dataset index)."""

    weights: jnp.ndarray
    held_out: jnp.ndarray


# ---------------------------------------------------------------------- the rules
def held_out_mask(num_train: int, fraction: float, seed: int) -> np.ndarray:
    """`[num_train]` bool: `round(fraction * num_train)` training samples drawn at random
    (seeded) to be held out."""
    order = np.random.default_rng([seed, HOLDOUT_STREAM]).permutation(num_train)
    mask = np.zeros((num_train,), bool)
    mask[order[:int(round(fraction * num_train))]] = True
    return mask


def blend_weights(before: Dict[str, np.ndarray], after: Dict[str, np.ndarray]
                  ) -> Tuple[Optional[np.ndarray], np.ndarray, np.ndarray]:
    """`(weights, dG, dO)` from the mean losses `{"train": [3], "held_out": [3]}` of each
    output before and after its copy trained.

    `w_k = |dG_k| / max(|dO_k|, 1e-4)^2`, normalized to sum 1 (equal weights when every
    `dG` is 0). Weights are None when a loss is not finite (a diverged copy).
    """
    lt0, lv0 = np.asarray(before["train"], np.float64), np.asarray(before["held_out"], np.float64)
    lt1, lv1 = np.asarray(after["train"], np.float64), np.asarray(after["held_out"], np.float64)
    delta_g = lv0 - lv1
    delta_o = (lv1 - lt1) - (lv0 - lt0)
    if not (np.all(np.isfinite(delta_g)) and np.all(np.isfinite(delta_o))):
        return None, delta_g, delta_o
    raw = np.abs(delta_g) / np.maximum(np.abs(delta_o), MIN_DELTA_O) ** 2
    total = raw.sum()
    weights = raw / total if total > 0 else np.full(raw.shape, 1.0 / raw.size)
    return weights.astype(np.float32), delta_g, delta_o


def sample_weights(held_out: jnp.ndarray, psum: Callable = lambda x: x) -> jnp.ndarray:
    """Per-sample loss weights of a shard from its held-out flags: 0 for held-out samples,
    `devices / kept samples of the global batch` for the others, so that the device mean of
    a weighted sum is the mean over the kept samples (a batch with none kept: all 0)."""
    kept = 1.0 - held_out.astype(jnp.float32)
    devices = psum(jnp.float32(1.0))
    return kept * devices / jnp.maximum(psum(kept.sum()), 1.0)


def blend_loss(logits, labels: jnp.ndarray, weights: jnp.ndarray,
               per_sample: jnp.ndarray) -> Tuple[jnp.ndarray, base.Terms]:
    """`sum_k w_k sum_i s_i CE_k,i` over `OUTPUTS` (`s`: `sample_weights`) and its terms,
    each cross entropy a mean over the kept samples once averaged over devices."""
    ce = {"fused": losses.cross_entropy(logits.fused, labels),
          "audio": losses.cross_entropy(logits.audio, labels),
          "visual": losses.cross_entropy(logits.visual, labels)}
    means = [(per_sample * ce[k]).sum() for k in OUTPUTS]
    loss = sum(w * m for w, m in zip(weights, means))
    terms = {f"ce_{k}": m for k, m in zip(OUTPUTS, means)}
    terms.update({f"w_{k}": weights[i] for i, k in enumerate(OUTPUTS)}, loss=loss)
    return loss, terms


# ---------------------------------------------------------------------- the method
class GBlending(base.Method):
    """Fused and unimodal cross entropies blended with weights re-estimated on held-out
    training data at every super-epoch."""

    name = "g_blending"
    label = "G-Blending"
    # No scalar of the loss to tune (the weights are estimated); what matters at a short
    # budget is how often they are: BalanceBenchmark's share (4 estimates in 10 epochs),
    # then one every tenth of the budget, weights that follow a model that changes fast
    # in few epochs (the copies' total epochs, about 3 x the budget, stay the same).
    tuning = {"g_blending.super_epoch_fraction": (10 / 30, 1 / 10)}

    @classmethod
    def defaults(cls):
        c = ml_collections.ConfigDict()
        # Epochs between estimates, and epochs each copy trains for one, as a share of the
        # budget: BalanceBenchmark's trainer_config.yaml (GBlending super_epoch 10, method
        # online) of the 30 epochs of its global_config.yaml; MultiBench's default
        # gb_epoch is 20. The paper leaves n to the experiment.
        c.super_epoch_fraction = 10 / 30
        # Share of the training split held out as V: MultiBench's v_rate 0.08 (the paper
        # holds out part of the training set; BalanceBenchmark uses its validation
        # loader, which we refuse: it selects the checkpoint).
        c.holdout_fraction = 0.08
        return c

    @classmethod
    def validate(cls, config, need):
        c = config.g_blending
        base.need_fraction(need, c.super_epoch_fraction, "g_blending.super_epoch_fraction",
                           below_one=False)
        need(c.super_epoch_fraction > 0, "g_blending.super_epoch_fraction",
             "a share of config.epochs in (0, 1] (1: one estimate, at the start)")
        need(math.isfinite(c.holdout_fraction) and 0 < c.holdout_fraction < 1,
             "g_blending.holdout_fraction", "a number in (0, 1)")

    # ------------------------------------------------------------------ schedule
    def phases(self):
        # The main step, and one step per output that trains a copy on that loss alone
        # (used only inside the estimate, never returned by `phase`).
        return (self.name,) + tuple(f"estimate_{k}" for k in OUTPUTS)

    def super_epoch(self) -> int:
        """Epochs between estimates, and epochs each copy trains (at least 1)."""
        return self.epochs_of(self.config.g_blending.super_epoch_fraction)

    def estimates(self, epoch: int) -> bool:
        """Whether the weights are re-estimated before the 0-based `epoch`."""
        return epoch % self.super_epoch() == 0

    def describe(self, epoch):
        return {"g_blending_estimate": self.estimates(epoch)}

    # ------------------------------------------------------------------ state and hooks
    def init_state(self, meta):
        c = self.config.g_blending
        n = meta.num_examples["train"]
        mask = held_out_mask(n, c.holdout_fraction, self.config.seed)
        held = int(mask.sum())
        if held < 1 or n - held < self.config.batch_size:
            raise UserError(
                f"config.g_blending.holdout_fraction={c.holdout_fraction!r} is not allowed "
                f"for {n} training samples: it holds out {held}; at least 1 must be held "
                f"out and batch_size={self.config.batch_size} kept")
        return GBlendState(weights=np.full((len(OUTPUTS),), 1.0 / len(OUTPUTS), np.float32),
                           held_out=mask)

    def on_epoch_start(self, run, state, epoch):
        if not self.estimates(epoch):
            return state, {}
        start = time.time()
        measure = _loss_pass(self, run)
        before = measure(state)
        after = {"train": np.zeros(len(OUTPUTS)), "held_out": np.zeros(len(OUTPUTS))}
        for k, name in enumerate(OUTPUTS):
            progress.say(f"G-Blending estimate before epoch {epoch + 1}: training a copy on "
                         f"CE({name}) for {self.super_epoch()} epoch(s)")
            measured = measure(self._train_copy(run, state, name, epoch))
            after["train"][k], after["held_out"][k] = (measured["train"][k],
                                                       measured["held_out"][k])
        weights, delta_g, delta_o = blend_weights(before, after)
        old = run.par.fetch(state.method_state)
        kept_previous = weights is None
        if kept_previous:
            weights = np.asarray(old.weights)
        state = state.replace(method_state=run.par.replicate(old.replace(weights=weights)))
        by_output = lambda v: {k: float(v[i]) for i, k in enumerate(OUTPUTS)}  # noqa: E731
        progress.say("G-Blending weights " + ", ".join(
            f"{k} {w:.3f}" for k, w in by_output(weights).items()))
        return state, {"g_blending": {
            "weights": by_output(weights), "delta_G": by_output(delta_g),
            "delta_O": by_output(delta_o), "kept_previous_weights": kept_previous,
            "seconds": time.time() - start}}

    def _train_copy(self, run: base.RunContext, state, output: str, epoch: int):
        """A copy of the model trained on `CE(output)` over the kept training samples for
        a super-epoch, from fresh optimizer moments (the learning rate in force);
        the data order is that of the epochs it stands for."""
        config = run.config
        # Through the host: the copy's buffers are donated to its steps, never the model's.
        copy = run.par.replicate(optim.reset_optimizer(run.par.fetch(state)))
        step = run.par.train_step(f"estimate_{output}")
        scalars = self.train_scalars(epoch)
        positions = run.par.positions(config.batch_size)
        n = self.super_epoch()
        for e in range(epoch, epoch + n):
            start, losses_ = time.time(), []
            for batch in run.par.train_batches(run.ds, config.batch_size, e, config.seed,
                                               config.data.prefetch):
                batch["position"] = positions
                copy, terms = step(copy, run.par.shard(batch), scalars)
                losses_.append(terms["loss"])
            progress.say(f"  copy CE({output}) epoch {e - epoch + 1}/{n}: loss "
                         f"{float(np.mean(jax.device_get(losses_))):.4f} "
                         f"({time.time() - start:.0f} s)")
        return copy

    # ------------------------------------------------------------------ device
    def update(self, phase, state, batch, scalars, ctx):
        held = state.method_state.held_out[batch["index"]]
        weighted = dict(batch, sample_weight=sample_weights(held, ctx.psum),
                        held_out=held.astype(jnp.float32))
        return super().update(phase, state, weighted, scalars, ctx)

    def loss(self, phase, logits, batch, method_state, scalars):
        labels, per_sample = batch["label"], batch["sample_weight"]
        if phase == self.name:
            weights = method_state.weights
        else:  # estimate_<output>: that output's cross entropy alone
            weights = jnp.asarray([float(f"estimate_{k}" == phase) for k in OUTPUTS])
        loss, terms = blend_loss(logits, labels, weights, per_sample)
        terms["kept_fraction"] = 1.0 - batch["held_out"].mean()
        return loss, terms


def loss_sums(state, batch, *, model, image_size: int) -> Dict[str, jnp.ndarray]:
    """A shard's summed cross entropies (`OUTPUTS` order) of its kept and held-out real
    samples in inference mode (evaluation frames), and their counts."""
    frames = augment.eval_frames(batch["frames"], image_size)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    logits = model.apply(variables, batch["audio"].astype(jnp.float32), frames, False)
    ce = jnp.stack([losses.cross_entropy(getattr(logits, k), batch["label"])
                    for k in OUTPUTS])
    real = batch["mask"].astype(jnp.float32)
    held = state.method_state.held_out[batch["index"]].astype(jnp.float32) * real
    kept = real - held
    return {"train": ce @ kept, "held_out": ce @ held, "n_train": kept.sum(),
            "n_held_out": held.sum()}


def _loss_pass(method: GBlending, run: base.RunContext) -> Callable[[Any], Dict[str, np.ndarray]]:
    """`measure(state)`: the mean cross entropies (`OUTPUTS` order) of the kept (`train`)
    and held-out (`held_out`) training samples in inference mode, summed over the
    devices."""
    fn = functools.partial(loss_sums, model=run.par.model,
                           image_size=run.config.data.image_size)

    def measure(state) -> Dict[str, np.ndarray]:
        per_batch = run.par.batch_sums("g_blending_losses", fn, state, run.ds, "train",
                                       run.config.eval_batch_size)
        totals = functools.reduce(lambda a, b: jax.tree.map(np.add, a, b), per_batch)
        return {"train": np.asarray(totals["train"]) / max(float(totals["n_train"]), 1.0),
                "held_out": (np.asarray(totals["held_out"])
                             / max(float(totals["n_held_out"]), 1.0))}

    return measure
