"""Losses of the method: concat baseline, warm-up (eq. 7), adaptive (eq. 10).

Every loss takes logits and integer labels, returns `(scalar_loss, terms)` where `terms`
is a dict of scalar batch means for logging. Batch losses are means over samples.
"""

from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp

from avgmm import gmm as gmm_lib

Terms = Dict[str, jnp.ndarray]


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Per-sample cross entropy `-log softmax(logits)[y]`, shape `[B]`."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(log_probs, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


def true_class_probability(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """`softmax(logits)[y]` per sample, shape `[B]`."""
    return jnp.exp(-cross_entropy(logits, labels))


def modality_gap(audio_logits: jnp.ndarray, visual_logits: jnp.ndarray,
                 labels: jnp.ndarray) -> jnp.ndarray:
    """Modality gap (eq. 6): `g_i = softmax(l_a)[y_i] - softmax(l_v)[y_i]`, in [-1, 1]."""
    return (true_class_probability(audio_logits, labels)
            - true_class_probability(visual_logits, labels))


def concat_loss(fused_logits: jnp.ndarray, labels: jnp.ndarray) -> Tuple[jnp.ndarray, Terms]:
    """Baseline (Concat): `mean CE(f)`."""
    ce_fused = cross_entropy(fused_logits, labels).mean()
    return ce_fused, {"loss": ce_fused, "ce_fused": ce_fused}


def warmup_loss(fused_logits: jnp.ndarray, audio_logits: jnp.ndarray,
                visual_logits: jnp.ndarray, labels: jnp.ndarray) -> Tuple[jnp.ndarray, Terms]:
    """Warm-up loss (eq. 7): `mean [CE(f) + CE(l_a) + CE(l_v)]`."""
    ce_fused = cross_entropy(fused_logits, labels).mean()
    ce_audio = cross_entropy(audio_logits, labels).mean()
    ce_visual = cross_entropy(visual_logits, labels).mean()
    loss = ce_fused + ce_audio + ce_visual
    return loss, {"loss": loss, "ce_fused": ce_fused, "ce_audio": ce_audio,
                  "ce_visual": ce_visual}


def adaptive_loss(fused_logits: jnp.ndarray, audio_logits: jnp.ndarray,
                  visual_logits: jnp.ndarray, labels: jnp.ndarray,
                  gmm: gmm_lib.GMMParams, *, alpha: float, beta: float, gamma: float,
                  lambda_t: jnp.ndarray | float,
                  use_gmm_weights: bool = True,
                  posterior_gap: Optional[jnp.ndarray] = None,
                  unimodal_weight: float = 0.0,
                  gap_gradient: str = "both") -> Tuple[jnp.ndarray, Terms]:
    """Adaptive loss (eq. 10), per sample and then averaged over the batch.

    `L_i = alpha * w_bal_i * CE_i(f) + lambda_t * (beta * g_i^2
           + gamma * w_imb_i * (g_i - mu_0)^2)`

    The gap `g_i` is differentiable; the posteriors `w_bal_i, w_imb_i` of the current gap
    under `gmm` (the mixture fitted at the start of this adaptive step) and `mu_0` are
    constants. `use_gmm_weights=False` is the Table 2 ablation with `w_bal = w_imb = 1`.

    `posterior_gap` (optional `[B]`) is the gap the posteriors are computed from when it
    is not the current one (`loss.posteriors_from=refit`: each sample's inference-mode gap
    collected for the last GMM fit). `unimodal_weight` w > 0 adds
    `w * (CE(l_a) + CE(l_v))` per sample: not in the paper's eq. 10, our switch.
    `gap_gradient="weaker"` (ours) lets the gap terms' gradient reach only the modality
    whose true-class probability is lower, so that closing the gap can raise the weaker
    modality but never lower the stronger one; the value of every term is unchanged.
    """
    ce_fused = cross_entropy(fused_logits, labels)
    if gap_gradient == "weaker":
        p_a = true_class_probability(audio_logits, labels)
        p_v = true_class_probability(visual_logits, labels)
        audio_leads = p_a >= p_v
        gap = (jnp.where(audio_leads, jax.lax.stop_gradient(p_a), p_a)
               - jnp.where(audio_leads, p_v, jax.lax.stop_gradient(p_v)))
    else:
        gap = modality_gap(audio_logits, visual_logits, labels)
    gmm = jax.tree.map(jax.lax.stop_gradient, gmm)
    if use_gmm_weights:
        source = gap if posterior_gap is None else posterior_gap
        w_bal, w_audio, w_visual = jax.lax.stop_gradient(
            gmm_lib.direction_posteriors(gmm, jax.lax.stop_gradient(source)))
        # For K = 2 one term is exactly 0: w_imb is component 1's posterior, bit for bit.
        w_imb = w_audio + w_visual
    else:
        w_bal = w_imb = jnp.ones_like(gap)
    mu_0 = gmm.means[0]
    weighted_ce = w_bal * ce_fused
    gap_sq = jnp.square(gap)
    gap_shift = w_imb * jnp.square(gap - mu_0)
    per_sample = alpha * weighted_ce + lambda_t * (beta * gap_sq + gamma * gap_shift)
    terms = {}
    if unimodal_weight:
        ce_audio = cross_entropy(audio_logits, labels)
        ce_visual = cross_entropy(visual_logits, labels)
        per_sample = per_sample + unimodal_weight * (ce_audio + ce_visual)
        terms = {"ce_audio": ce_audio.mean(), "ce_visual": ce_visual.mean()}
    loss = per_sample.mean()
    return loss, {
        **terms,
        "loss": loss,
        "ce_fused": ce_fused.mean(),
        "weighted_ce": weighted_ce.mean(),
        "gap_sq": gap_sq.mean(),
        "gap_shift": gap_shift.mean(),
        "gap_mean": gap.mean(),
        "w_imb_mean": w_imb.mean(),
        "lambda_t": jnp.asarray(lambda_t, jnp.float32),
    }
