"""The paper's method (Algorithm 1): warm-up (eq. 7), then adaptive steps, each a GMM
fitted to every training sample's modality gap followed by epochs of the adaptive loss
(eq. 10) weighted by the mixture's posteriors; optionally a final GMM-guided purification
phase (`finetune`): one more GMM fit, then epochs of cross entropy on the samples it
calls balanced.

Its hyper-parameters keep their historical places: `config.loss` (eq. 10 and the readings
the paper leaves open), `config.gmm` (the fit) and `config.schedule` (the phases); the
purification phase's are under `config.adaptive`.
"""

from typing import Any, Dict

import jax.numpy as jnp
import ml_collections
import numpy as np

from avgmm import gmm as gmm_lib
from avgmm import losses, progress
from avgmm.methods import base, gmm_fits

LAMBDA_EPOCHS = ("adaptive", "step", "global")
POSTERIORS_FROM = ("batch", "refit")
GAP_GRADIENTS = ("both", "weaker")


class Adaptive(gmm_fits.FitsGmm, base.Method):
    """Warm-up, then GMM refits and the adaptive loss; optimizer reset between them."""

    name = "adaptive"
    label = "GMM adaptive loss (the paper's method)"
    # Eq. 10's weight of the pull toward the balanced mean: the paper's 1, then 0.5, a
    # weaker pull (eq. 10 as printed trails the warm-up loss alone, docs/study.md).
    tuning = {"loss.gamma": (1.0, 0.5)}

    @classmethod
    def defaults(cls):
        c = ml_collections.ConfigDict()
        # GMM-guided purification (the seed paper's later versions): epochs of fine-tuning
        # after the adaptive steps on the samples the last GMM calls balanced. 0 = off (the
        # paper's Algorithm 1). Part of config.epochs, like the warm-up and the steps.
        c.finetune_epochs = 0
        # A sample is kept when its balanced posterior w_bal >= this (0.5: the more
        # probable component is the balanced one).
        c.finetune_threshold = 0.5
        return c

    @classmethod
    def validate(cls, config, need):
        need(config.schedule.warmup_epochs >= 1, "schedule.warmup_epochs",
             ">= 1 for method=adaptive: the first GMM is fitted to a warmed-up model's gaps")
        for f in ("alpha", "beta", "gamma"):
            need(config.loss[f] >= 0, f"loss.{f}", "a number >= 0")
        need(0 < config.loss.lambda_decay <= 1, "loss.lambda_decay", "a number in (0, 1]")
        need(config.loss.lambda_epoch in LAMBDA_EPOCHS, "loss.lambda_epoch",
             f"one of {LAMBDA_EPOCHS}")
        need(config.loss.posteriors_from in POSTERIORS_FROM, "loss.posteriors_from",
             f"one of {POSTERIORS_FROM}")
        need(config.loss.unimodal_weight >= 0, "loss.unimodal_weight", "a number >= 0")
        need(config.loss.gap_gradient in GAP_GRADIENTS, "loss.gap_gradient",
             f"one of {GAP_GRADIENTS}")
        a = config.adaptive
        need(isinstance(a.finetune_epochs, int) and a.finetune_epochs >= 0,
             "adaptive.finetune_epochs", "an integer >= 0")
        need(0.0 <= a.finetune_threshold <= 1.0, "adaptive.finetune_threshold",
             "a number in [0, 1]")
        s, finetune = config.schedule, config.adaptive.finetune_epochs
        planned = s.warmup_epochs + s.adaptive_steps * s.epochs_per_step + finetune
        need(planned == config.epochs, "epochs",
             f"the adaptive schedule's total: warm-up {s.warmup_epochs} + "
             f"{s.adaptive_steps} steps x {s.epochs_per_step} + {finetune} purification = "
             f"{planned} epochs; set config.epochs={planned} or change config.schedule")

    # ------------------------------------------------------------------ schedule
    def phases(self):
        # "finetune" only trains when adaptive.finetune_epochs > 0; a pmapped step is
        # compiled at its first call, so listing it costs nothing otherwise.
        return ("warmup", "adaptive", "finetune")

    def _adaptive_epoch(self, epoch: int) -> int:
        """Adaptive epochs completed before the 0-based `epoch`; -1 during warm-up."""
        e = epoch - self.config.schedule.warmup_epochs
        return e if e >= 0 else -1

    def _finetune_epoch(self, epoch: int) -> int:
        """Purification epochs completed before the 0-based `epoch`; -1 before them."""
        s = self.config.schedule
        e = epoch - s.warmup_epochs - s.adaptive_steps * s.epochs_per_step
        return e if e >= 0 else -1

    def phase(self, epoch):
        if self._finetune_epoch(epoch) >= 0:
            return "finetune"
        return "adaptive" if self._adaptive_epoch(epoch) >= 0 else "warmup"

    def adaptive_step(self, epoch: int) -> int:
        """Index of the GMM fit in force during `epoch` (-1 in warm-up; during the
        purification phase, the index of its own fit, `schedule.adaptive_steps`)."""
        e = self._adaptive_epoch(epoch)
        return e // self.config.schedule.epochs_per_step if e >= 0 else -1

    def describe(self, epoch):
        if self._finetune_epoch(epoch) >= 0:
            return {"adaptive_step": self.adaptive_step(epoch),
                    "finetune_epoch": self._finetune_epoch(epoch)}
        return {"adaptive_step": self.adaptive_step(epoch)}

    def lambda_exponent(self, epoch: int) -> int:
        """The `e` of `lambda_t = lambda_decay ** e` for a 0-based epoch.

        `loss.lambda_epoch`: `adaptive` counts adaptive epochs completed across steps;
        `step` restarts at 0 with each GMM refit (Algorithm 1's inner loop read literally);
        `global` counts every epoch completed, warm-up included. 0 in warm-up.
        """
        e = self._adaptive_epoch(epoch)
        if e < 0:
            return 0
        if self.config.loss.lambda_epoch == "step":
            return e % self.config.schedule.epochs_per_step
        if self.config.loss.lambda_epoch == "global":
            return epoch
        return e

    def step_scalars(self, epoch):
        return {"lambda_t": np.float32(self.config.loss.lambda_decay
                                       ** self.lambda_exponent(epoch))}

    def resets_optimizer(self, epoch):
        return self._adaptive_epoch(epoch) == 0 and self.config.optimizer.reset_between_phases

    # ------------------------------------------------------------------ state and hooks
    def on_epoch_start(self, run, state, epoch):
        f = self._finetune_epoch(epoch)
        if f > 0:  # the purification phase keeps the one fit made at its start
            return state, {}
        e = self._adaptive_epoch(epoch)
        if f < 0 and (e < 0 or e % self.config.schedule.epochs_per_step):
            return state, {}
        state, fit = gmm_fits.refit_gmm(run, state, self.adaptive_step(epoch), epoch)
        record: Dict[str, Any] = {"gmm_fit": fit}
        if f == 0:
            kept = float(np.mean(clean_mask(run.par.fetch(state.method_state.gmm),
                                            run.par.fetch(state.method_state.fit_gaps),
                                            self.config.adaptive.finetune_threshold)))
            progress.say(f"GMM purification: {kept:.1%} of the training samples are "
                         f"balanced (w_bal >= {self.config.adaptive.finetune_threshold}) "
                         "and fine-tuned on")
            record["finetune_kept_fraction"] = kept
        return state, record

    def epoch_record(self, run, state, epoch):
        adaptive = self.phase(epoch) == "adaptive"
        lam = float(self.step_scalars(epoch)["lambda_t"]) if adaptive else None
        record = {"lambda_t": lam, "gmm": run.par.fetch(state.method_state.gmm).to_dict()}
        if self.phase(epoch) == "finetune":
            # Fraction of the whole training set in the purified set (fixed for the phase:
            # one fit, its gaps); the step term `kept_fraction` is the trained batches'.
            record["finetune_kept_fraction"] = float(np.mean(clean_mask(
                run.par.fetch(state.method_state.gmm),
                run.par.fetch(state.method_state.fit_gaps),
                self.config.adaptive.finetune_threshold)))
        return record

    # ------------------------------------------------------------------ device
    def update(self, phase, state, batch, scalars, ctx):
        if phase == "finetune":
            # Per-sample loss weights normalized by the number of kept samples over the
            # whole batch (all devices): the device-averaged gradient is then that of the
            # mean over the kept samples, whatever the number of devices.
            mask = clean_mask(state.method_state.gmm,
                              state.method_state.fit_gaps[batch["index"]],
                              self.config.adaptive.finetune_threshold)
            kept = ctx.psum(mask.sum())
            devices = ctx.psum(jnp.float32(1.0))
            batch = dict(batch, finetune_weight=mask * devices / jnp.maximum(kept, 1.0),
                         finetune_mask=mask)
        return super().update(phase, state, batch, scalars, ctx)

    def loss(self, phase, logits, batch, method_state, scalars):
        labels = batch["label"]
        if phase == "finetune":
            return finetune_loss(logits, labels, batch["finetune_weight"],
                                 batch["finetune_mask"], self.config.loss.unimodal_weight)
        if phase == "warmup":
            return losses.warmup_loss(logits.fused, logits.audio, logits.visual, labels)
        c = self.config.loss
        posterior_gap = None
        if c.posteriors_from == "refit":
            posterior_gap = method_state.fit_gaps[batch["index"]]
        return losses.adaptive_loss(
            logits.fused, logits.audio, logits.visual, labels, method_state.gmm,
            alpha=c.alpha, beta=c.beta, gamma=c.gamma, lambda_t=scalars["lambda_t"],
            use_gmm_weights=c.use_gmm_weights, posterior_gap=posterior_gap,
            unimodal_weight=c.unimodal_weight, gap_gradient=c.gap_gradient)


# ---------------------------------------------------------------------- purification
def clean_mask(gmm: gmm_lib.GMMParams, gaps, threshold: float) -> jnp.ndarray:
    """1.0 for the samples whose balanced posterior `w_bal = p(balanced | g)` under `gmm`
    is at least `threshold`, else 0.0 (`[N]` float32)."""
    w_bal = gmm_lib.posteriors(gmm, gaps)[:, 0]
    return (w_bal >= threshold).astype(jnp.float32)


def finetune_loss(logits, labels, weights, mask, unimodal_weight: float):
    """Purification loss: `sum_i weight_i [CE(f_i) + u (CE(l_a,i) + CE(l_v,i))]`, the
    weights being the clean mask times (devices / kept samples of the whole batch), so
    that the device mean is the mean over the kept samples (`u = loss.unimodal_weight`,
    0 by default: fused cross entropy only). Logged, each a mean over the kept samples
    once averaged over devices: the loss and the three cross entropies; and
    `kept_fraction`, the kept share of the batch."""
    ce_f = losses.cross_entropy(logits.fused, labels)
    ce_a = losses.cross_entropy(logits.audio, labels)
    ce_v = losses.cross_entropy(logits.visual, labels)
    per_sample = ce_f + unimodal_weight * (ce_a + ce_v) if unimodal_weight else ce_f
    loss = (weights * per_sample).sum()
    return loss, {"loss": loss, "ce_fused": (weights * ce_f).sum(),
                  "ce_audio": (weights * ce_a).sum(), "ce_visual": (weights * ce_v).sum(),
                  "kept_fraction": mask.mean()}
