"""GMM-guided training (ours): the paper's diagnosis, used differently from eq. 10.

The warm-up loss (eq. 7) for `schedule.warmup_epochs` epochs, then the rest of the budget
in the guided phase, the GMM refitted to every training sample's inference-mode gap at
its start and every `schedule.epochs_per_step` epochs (Algorithm 1, steps a-b). In the
guided phase a sample's imbalanced posterior `w = p(imbalanced | g)` and the sign of its
gap (`g > 0`: the visual stream is the weaker one) steer two treatments, each a switch:

- **What a stream cannot know** (`weak_weight`): the weaker modality's unimodal cross
  entropy is weighted `1 - w + w * weak_weight`: 0 stops teaching a stream on the samples
  where it has nothing to say (noise images, drowned speech), 1 is the warm-up loss, above
  1 helps the under-trained stream where the GMM says it lags. With `uniform_weight > 0`
  the weaker stream's logits are also pulled toward the uniform distribution on those
  samples (`w * uniform_weight * CE(uniform, l_weak)`), so that it learns to abstain.
- **Reliability-aware fusion** (`reliability_fusion`): a small head on the pooled
  features (gradient stopped) learns, without labels at test time, to predict the GMM's
  diagnosis (balanced / audio unreliable / visual unreliable; soft targets `1 - w`,
  `w [g < 0]`, `w [g > 0]`; in warm-up every sample is balanced). The prediction is then
  `r_a l_a + r_v l_v` with `r_m = 1 - p(m unreliable)`, instead of `l_a + l_v`.

The fused and the stronger modality's cross entropies keep the warm-up loss's weights.
`direction="posterior"` takes the weaker stream from the mixture's per-direction
posteriors instead of the gap's sign (with `gmm.components=3`, audio-dominant and
visual-dominant are components of their own; `directional_loss`).
The paper's eq. 10 stays `--config.method=adaptive`.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections

from avgmm import losses
from avgmm.methods import base, gmm_fits

DIRECTIONS = ("gap_sign", "posterior")


def guided_loss(logits, labels: jnp.ndarray, w_imb: jnp.ndarray, gap: jnp.ndarray, *,
                weak_weight: float, uniform_weight: float, reliability_weight: float):
    """The guided phase's loss with the direction from the sign of each sample's gap
    (`gmm_guided.direction="gap_sign"`): `w_imb` goes to the audio-dominant side where
    `gap > 0` (the visual stream is the weaker one), else to the visual-dominant side.
    See `directional_loss`."""
    visual_weak = gap > 0
    return directional_loss(logits, labels, jnp.where(visual_weak, w_imb, 0.0),
                            jnp.where(visual_weak, 0.0, w_imb), weak_weight=weak_weight,
                            uniform_weight=uniform_weight,
                            reliability_weight=reliability_weight)


def directional_loss(logits, labels: jnp.ndarray, w_audio_dom: jnp.ndarray,
                     w_visual_dom: jnp.ndarray, *, weak_weight: float, uniform_weight: float,
                     reliability_weight: float):
    """The guided phase's loss (mean over the shard) and its logged terms.

    `w_audio_dom`, `w_visual_dom`: each sample's posterior of "audio dominant" (so the
    visual stream is the weaker one there) and of "visual dominant". With
    `c_v = 1 - w_a + w_a weak_weight`, `c_a = 1 - w_v + w_v weak_weight`:
    `CE(f) + c_a CE(l_a) + c_v CE(l_v) + uniform_weight (w_v CE(uniform, l_a)
    + w_a CE(uniform, l_v)) + reliability_weight CE(r, [1 - w_a - w_v, w_v, w_a])`.
    """
    w_a = jax.lax.stop_gradient(w_audio_dom)
    w_v = jax.lax.stop_gradient(w_visual_dom)
    c_a = 1.0 - w_v + w_v * weak_weight
    c_v = 1.0 - w_a + w_a * weak_weight
    ce_f = losses.cross_entropy(logits.fused, labels)
    ce_a = losses.cross_entropy(logits.audio, labels)
    ce_v = losses.cross_entropy(logits.visual, labels)
    per_sample = ce_f + c_a * ce_a + c_v * ce_v
    visual_weak = w_a > w_v
    terms = {"ce_fused": ce_f.mean(), "ce_audio": ce_a.mean(), "ce_visual": ce_v.mean(),
             "weak_weight_mean": jnp.where(visual_weak, c_v, c_a).mean(),
             "w_imb_mean": (w_a + w_v).mean()}
    if uniform_weight:
        def to_uniform(stream_logits):
            return -jax.nn.log_softmax(stream_logits, axis=-1).mean(axis=-1)
        u_a, u_v = to_uniform(logits.audio), to_uniform(logits.visual)
        per_sample = per_sample + (uniform_weight * w_v * u_a + uniform_weight * w_a * u_v)
        terms["ce_weak_to_uniform"] = (w_v * u_a + w_a * u_v).mean()
    if logits.reliability is not None:
        targets = jnp.stack([1.0 - w_a - w_v, w_v, w_a], axis=-1)
        rel = -(targets * jax.nn.log_softmax(logits.reliability, axis=-1)).sum(-1)
        per_sample = per_sample + reliability_weight * rel
        terms["ce_reliability"] = rel.mean()
    loss = per_sample.mean()
    terms["loss"] = loss
    return loss, terms


def warmup_loss(logits, labels: jnp.ndarray, reliability_weight: float):
    """Eq. 7, plus (with a reliability head) teaching it that every sample is balanced."""
    loss, terms = losses.warmup_loss(logits.fused, logits.audio, logits.visual, labels)
    if logits.reliability is not None:
        rel = -jax.nn.log_softmax(logits.reliability, axis=-1)[:, 0].mean()
        loss = loss + reliability_weight * rel
        terms = dict(terms, ce_reliability=rel, loss=loss)
    return loss, terms


def reliability_fused(logits) -> jnp.ndarray:
    """`r_a l_a + r_v l_v` with `r_m = 1 - p(m unreliable)` from the reliability head."""
    p = jax.nn.softmax(logits.reliability, axis=-1)
    return (1.0 - p[:, 1:2]) * logits.audio + (1.0 - p[:, 2:3]) * logits.visual


class GmmGuided(gmm_fits.FitsGmm, base.Method):
    """Warm-up, then GMM refits steering the weaker stream's loss (and, optionally, a
    label-free reliability-weighted fusion)."""

    name = "gmm_guided"
    label = "GMM-guided (ours)"
    # The main treatment's strength: not teaching the weak stream where the GMM calls a
    # sample imbalanced (0, the default), then halfway to the warm-up loss (0.5). Helping
    # it (2.0) came last in the two-sided screening (docs/gmm_guidance.md).
    tuning = {"gmm_guided.weak_weight": (0.0, 0.5)}

    @classmethod
    def defaults(cls):
        c = ml_collections.ConfigDict()
        # Weight of the weaker stream's unimodal cross entropy on a fully imbalanced sample
        # (1: the warm-up loss; 0: not taught there; > 1: helped).
        c.weak_weight = 0.0
        # Pull of the weaker stream's logits toward uniform on imbalanced samples (0: off).
        c.uniform_weight = 0.0
        # Reliability-aware fusion with a label-free reliability head (see the module).
        c.reliability_fusion = False
        c.reliability_weight = 1.0
        # Which stream is the weaker one on a sample: gap_sign (the sign of its gap, with
        # the imbalanced posterior as the weight) | posterior (the mixture's per-direction
        # posteriors, p(audio dominant | g) and p(visual dominant | g): with
        # gmm.components=3 each direction has a component of its own).
        c.direction = "gap_sign"
        return c

    @classmethod
    def validate(cls, config, need):
        c = config.gmm_guided
        for field in ("weak_weight", "uniform_weight", "reliability_weight"):
            value = c[field]
            need(isinstance(value, (int, float)) and math.isfinite(value) and value >= 0,
                 f"gmm_guided.{field}", "a finite number >= 0")
        need(isinstance(c.reliability_fusion, bool), "gmm_guided.reliability_fusion",
             "True or False")
        need(c.direction in DIRECTIONS, "gmm_guided.direction", " or ".join(DIRECTIONS))
        need(1 <= config.schedule.warmup_epochs < config.epochs, "schedule.warmup_epochs",
             f"in 1..{config.epochs - 1} for method=gmm_guided: the first GMM is fitted to "
             "a warmed-up model's gaps, and the guided phase needs at least one epoch")

    @classmethod
    def head_type(cls, config):
        return "split_reliability" if config.gmm_guided.reliability_fusion else "split"

    # ------------------------------------------------------------------ schedule
    def phases(self):
        return ("warmup", "guided")

    def phase(self, epoch):
        return "warmup" if epoch < self.config.schedule.warmup_epochs else "guided"

    def on_epoch_start(self, run, state, epoch):
        guided = epoch - self.config.schedule.warmup_epochs
        every = self.config.schedule.epochs_per_step
        if guided < 0 or guided % every:
            return state, {}
        state, fit = gmm_fits.refit_gmm(run, state, guided // every, epoch)
        return state, {"gmm_fit": fit}

    def epoch_record(self, run, state, epoch):
        return {"gmm": run.par.fetch(state.method_state.gmm).to_dict()}

    # ------------------------------------------------------------------ device
    def loss(self, phase, logits, batch, method_state, scalars):
        c = self.config.gmm_guided
        if phase == "warmup":
            return warmup_loss(logits, batch["label"], c.reliability_weight)
        strengths = dict(weak_weight=c.weak_weight, uniform_weight=c.uniform_weight,
                         reliability_weight=c.reliability_weight)
        if c.direction == "posterior":
            _, w_a, w_v, _ = gmm_fits.direction_posteriors_of(method_state, batch["index"])
            return directional_loss(logits, batch["label"], w_a, w_v, **strengths)
        # The imbalanced posterior is both directions' (gmm.components=3) or the one
        # imbalanced component's (2); the gap's sign says which stream is weaker.
        w_imb, gap = gmm_fits.posteriors_of(method_state, batch["index"])
        return guided_loss(logits, batch["label"], w_imb, gap, **strengths)

    def fused(self, logits):
        return logits.fused if logits.reliability is None else reliability_fused(logits)
