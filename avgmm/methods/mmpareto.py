"""MMPareto (Wei and Hu, ICML 2024): multimodal and unimodal gradients integrated per
encoder without conflict.

Each step takes the gradients of three losses: the fused cross entropy and the two
unimodal ones (`logits.audio`, `logits.visual`). On each encoder, the multimodal gradient
and that modality's unimodal gradient are combined with equal weights when they agree
(cosine > 0) and with the two-task min-norm (MGDA) weights when they conflict; the
combination is then scaled up to at least the norm of the plain sum, times `gamma`
(per parameter tensor, as the authors' code). The heads train on the plain sum of the
three losses: with the authors' separate unimodal heads (`heads="separate"`, default) the
fusion layer gets only the multimodal gradient and each unimodal layer only its own
loss's; with `heads="split"` the unimodal logits are the fusion layer's halves. See
docs/methods.md.
"""

import math
from typing import Tuple

import jax
import jax.numpy as jnp
import ml_collections

from avgmm import losses
from avgmm.methods import base

ENCODERS = (("audio_encoder", 1), ("visual_encoder", 2))  # (subtree, unimodal loss index)
HEADS = ("separate", "split")


def _dot(a, b) -> jnp.ndarray:
    """Inner product of two gradient pytrees of the same structure."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def min_norm_two(v1v1: jnp.ndarray, v1v2: jnp.ndarray,
                 v2v2: jnp.ndarray) -> jnp.ndarray:
    """Weight `c` of the first vector in `argmin_c |c x1 + (1 - c) x2|^2`, from the
    inner products, with the reference solver's end points (0.999 and 0.001)."""
    denom = v1v1 + v2v2 - 2.0 * v1v2
    interior = (v2v2 - v1v2) / jnp.where(denom > 0, denom, 1.0)
    return jnp.where(v1v2 >= v1v1, 0.999, jnp.where(v1v2 >= v2v2, 0.001, interior))


def pareto_weights(g_mm, g_uni) -> Tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """`(k_mm, k_uni, cos)`: equal weights 0.5 when the cosine of the two gradient
    pytrees is > 0, the min-norm weights otherwise."""
    v1v1, v1v2, v2v2 = _dot(g_mm, g_mm), _dot(g_mm, g_uni), _dot(g_uni, g_uni)
    # torch.nn.functional.cosine_similarity's guard against zero norms.
    cos = v1v2 / jnp.maximum(jnp.sqrt(v1v1) * jnp.sqrt(v2v2), 1e-8)
    c = min_norm_two(v1v1, v1v2, v2v2)
    k_mm = jnp.where(cos > 0, 0.5, c)
    return k_mm, 1.0 - k_mm, cos


def combine(g_mm, g_uni, g_sum, k_mm: jnp.ndarray, k_uni: jnp.ndarray, gamma: float):
    """Per tensor: `new = 2 k_mm g_mm + 2 k_uni g_uni`, scaled to at least the norm of
    `g_sum` (the gradient of the summed losses) and multiplied by `gamma`."""
    def one(mm, uni, total):
        new = 2.0 * k_mm * mm + 2.0 * k_uni * uni
        new_norm = jnp.linalg.norm(new)
        ratio = jnp.linalg.norm(total) / jnp.where(new_norm > 0, new_norm, 1.0)
        return gamma * new * jnp.maximum(ratio, 1.0)

    return jax.tree.map(one, g_mm, g_uni, g_sum)


class MMPareto(base.Method):
    """Three gradients per batch, integrated per encoder by MMPareto's rule."""

    name = "mmpareto"
    label = "MMPareto"
    # The authors' hard-coded 1.5, then 1.0 (no extra scaling): 1.5 lengthens every
    # encoder step by half, a larger step on a short budget's already large learning rate.
    tuning = {"mmpareto.gamma": (1.5, 1.0)}
    head = "separate"

    @classmethod
    def defaults(cls):
        c = ml_collections.ConfigDict()
        # GeWu-Lab/MMPareto_ICML2024 code/MMPareto.py: `gamma=1.5`, hard-coded (also
        # BalanceBenchmark's MMPareto alpha 1.5).
        c.gamma = 1.5
        # code/models/models.py AVClassifier: `head` (concat fusion) beside `head_audio`
        # and `head_video`, the unimodal losses' own classifiers. "split": the unimodal
        # logits are the fusion layer's halves instead (this project's earlier version).
        c.heads = "separate"
        return c

    @classmethod
    def validate(cls, config, need):
        gamma = config.mmpareto.gamma
        need(math.isfinite(gamma) and gamma > 0, "mmpareto.gamma", "a finite number > 0")
        need(config.mmpareto.heads in HEADS, "mmpareto.heads", f"one of {HEADS}")

    @classmethod
    def head_type(cls, config):
        return config.mmpareto.heads

    def update(self, phase, state, batch, scalars, ctx):
        labels = batch["label"]

        def three_losses(params):
            logits, batch_stats = ctx.forward(state, params, batch)
            ls = jnp.stack([losses.cross_entropy(logits.fused, labels).mean(),
                            losses.cross_entropy(logits.audio, labels).mean(),
                            losses.cross_entropy(logits.visual, labels).mean()])
            return ls, (batch_stats, logits)

        # One forward pass, three backward passes (rows of the Jacobian).
        jac, (batch_stats, logits) = jax.jacrev(three_losses, has_aux=True)(state.params)
        # Devices agree on the gradients before anything is combined from them.
        jac = ctx.pmean(jac)
        g = [jax.tree.map(lambda x, i=i: x[i], jac) for i in range(3)]
        g_sum = jax.tree.map(lambda a, b, c: a + b + c, *g)
        # The heads (and anything else) train on the summed losses: the authors' code
        # skips every parameter named `head*` when combining.
        grads = dict(g_sum)
        terms = base.cross_entropy_terms(logits, labels)
        for enc, i in ENCODERS:
            k_mm, k_uni, cos = pareto_weights(g[0][enc], g[i][enc])
            grads[enc] = combine(g[0][enc], g[i][enc], g_sum[enc], k_mm, k_uni,
                                 self.config.mmpareto.gamma)
            short = enc.split("_")[0]
            terms[f"cos_{short}"] = cos
            terms[f"k_mm_{short}"] = k_mm
        terms["loss"] = terms["ce_fused"] + terms["ce_audio"] + terms["ce_visual"]
        return self.apply(state, grads, batch_stats, terms, logits, labels, ctx)
