"""AGM: Adaptive Gradient Modulation (Li, Li, Hu, Lei, Li, Zhou, "Boosting Multi-modal
Model Performance with Adaptive Gradient Modulation", ICCV 2023).

Each step runs the model three times: once in training mode on both modalities (`f`), and
twice in inference mode with one modality's input set to zeros (`f(a, 0)`, `f(0, v)`).
Their Shapley-style combinations are the modalities' responses,

    m_a = (f - f(0, v) + f(a, 0)) / 2,      m_v = (f - f(a, 0) + f(0, v)) / 2,

so that `m_a + m_v = f`. From them, each modality's score is its batch-mean cross entropy
`s_m`; with `s-bar_m` the running mean of `s_m` over every earlier step of the run,

    coeff_a = exp(alpha * min(exp(s-bar_v - s-bar_a) - exp(s_v - s_a), 10))

(and `coeff_v` with `a` and `v` swapped). The loss is the cross entropy of `m_a + m_v`,
but its gradient reaches `m_a` multiplied by `coeff_a` and `m_v` by `coeff_v`: a modality
that does better than its running average relative to the other is slowed down, one that
does worse is sped up. The gradient flows through all three forward passes, as in the
authors' code. Whenever an element of the fusion layer's weight gradient exceeds 1 in
magnitude, all gradients are clipped to a global norm of 1.

Reference: lihong2303/AGM_ICCV2023, `run/CREMAD_main.py` (`train`),
`model/CREMAD_net.py` (`GradMod`, `Modality_Audio`, `Modality_Visual`, `AVClassifier`),
`tasks/CREMAD_task.py`, `utils/config.py`; GeWu-Lab/BalanceBenchmark
`balancemm/trainer/AGM_trainer.py` (`GradMod_2`) and `configs/trainer_config.yaml`.
See docs/methods.md.
"""

import math
from typing import Any, Callable, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from avgmm import losses
from avgmm.methods import base

# The authors' floor on a true-class probability before its log (`< 1e-8` -> 1e-8).
MIN_PROBABILITY = 1e-8
# The authors' cap on the exponent's argument: `min(optimal_ratio - ratio, 10)`.
MAX_EXPONENT = 10.0


@flax.struct.dataclass
class AGMState:
    """Running means of the modalities' batch scores over every step so far, and how many
    steps they average (the authors' `train_score_a`, `train_score_v`, `iteration`)."""

    score_a: jnp.ndarray
    score_v: jnp.ndarray
    steps: jnp.ndarray


# ---------------------------------------------------------------------- the rules
def shapley_responses(total: jnp.ndarray, pad_visual: jnp.ndarray,
                      pad_audio: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """`(m_a, m_v)` from the logits with both inputs (`total`), with the visual input
    zeroed (`pad_visual = f(a, 0)`) and with the audio input zeroed (`pad_audio`)."""
    m_a = 0.5 * (total - pad_audio + pad_visual)
    m_v = 0.5 * (total - pad_visual + pad_audio)
    return m_a, m_v


def scale_gradient(x: jnp.ndarray, scale: jnp.ndarray) -> jnp.ndarray:
    """`x` in the forward pass; its incoming gradient times `scale` in the backward pass
    (the authors' full backward hook on an identity module)."""
    scale = jax.lax.stop_gradient(scale)
    return jax.lax.stop_gradient(x) + scale * (x - jax.lax.stop_gradient(x))


def batch_score(logits: jnp.ndarray, labels: jnp.ndarray,
                psum: Callable = lambda x: x) -> jnp.ndarray:
    """Mean over the global batch (`psum` over devices) of `-log max(p_y, 1e-8)`, `p` the
    softmax of `logits`: the authors' per-modality score."""
    log_p = -losses.cross_entropy(logits, labels)
    nll = -jnp.maximum(log_p, math.log(MIN_PROBABILITY))
    return psum(nll.sum()) / psum(jnp.float32(nll.shape[0]))


def coefficients(score_a: jnp.ndarray, score_v: jnp.ndarray, mean_a: jnp.ndarray,
                 mean_v: jnp.ndarray, alpha: float) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """`(coeff_a, coeff_v)` from this batch's scores and the running means before it:
    `coeff_a = exp(alpha * min(exp(mean_v - mean_a) - exp(score_v - score_a), 10))`,
    `coeff_v` likewise with the modalities swapped."""
    ratio_a, ratio_v = jnp.exp(score_v - score_a), jnp.exp(score_a - score_v)
    optimal_a, optimal_v = jnp.exp(mean_v - mean_a), jnp.exp(mean_a - mean_v)
    coeff_a = jnp.exp(alpha * jnp.minimum(optimal_a - ratio_a, MAX_EXPONENT))
    coeff_v = jnp.exp(alpha * jnp.minimum(optimal_v - ratio_v, MAX_EXPONENT))
    return coeff_a, coeff_v


def running_mean(mean: jnp.ndarray, value: jnp.ndarray, steps: jnp.ndarray) -> jnp.ndarray:
    """The mean of `steps` earlier values updated with one more (`steps + 1` in all)."""
    n = steps.astype(jnp.float32) + 1.0
    return mean * (n - 1.0) / n + value / n


def clip_when_head_grad_large(grads: Any, head_kernel_grad: jnp.ndarray,
                              max_norm: float = 1.0) -> Tuple[Any, jnp.ndarray]:
    """The authors' conditional clipping: when any element of the fusion layer's weight
    gradient lies outside [-1, 1], every gradient is scaled as torch's
    `clip_grad_norm_(params, 1.0)` does (by `max_norm / (norm + 1e-6)` if that is < 1).
    Returns the gradients and whether the clipping rule fired (0/1)."""
    large = jnp.max(jnp.abs(head_kernel_grad)) > 1.0
    norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
    factor = jnp.minimum(max_norm / (norm + 1e-6), 1.0)
    factor = jnp.where(large, factor, 1.0)
    return jax.tree.map(lambda g: g * factor, grads), large.astype(jnp.float32)


# ---------------------------------------------------------------------- the method
class AGM(base.Method):
    """Cross entropy of the Shapley responses, whose gradients are scaled per modality
    by coefficients adapted to the modalities' scores."""

    name = "agm"
    label = "AGM"
    # alpha scales the exponent of each modality's gradient multiplier,
    # exp(alpha * min(optimal - ratio, 10)): at 1.0 it reaches e^10 (about 22000) up and
    # falls towards 0 down, far wider than the 1/3..3 of the learning-rate grid, which at
    # lr 0.01 (the authors' one command runs 1e-4) only the norm-1 clipping reins in.
    # 0.1 (BalanceBenchmark's) keeps it within e^{+-1} for ratios within 10 of the
    # optimum: step sizes the learning-rate grid itself would try. The argparse default
    # first, that one second.
    tuning = {"agm.alpha": (1.0, 0.1)}

    @classmethod
    def defaults(cls):
        c = ml_collections.ConfigDict()
        # utils/config.py: --alpha default 1.0 (the README's one command, for AV-MNIST,
        # passes 2.5; BalanceBenchmark's trainer_config.yaml uses 0.1). No value is
        # published for the audio-visual datasets.
        c.alpha = 1.0
        # run/CREMAD_main.py clips all gradients to norm 1 whenever a fusion-layer weight
        # gradient element leaves [-1, 1] (in every epoch).
        c.clip_gradients = True
        return c

    @classmethod
    def validate(cls, config, need):
        c = config.agm
        need(math.isfinite(c.alpha) and c.alpha >= 0, "agm.alpha", "a finite number >= 0")
        need(isinstance(c.clip_gradients, bool), "agm.clip_gradients", "True or False")

    def init_state(self, meta):
        zero = np.zeros((), np.float32)
        return AGMState(score_a=zero, score_v=zero.copy(), steps=np.zeros((), np.int32))

    def update(self, phase, state, batch, scalars, ctx):
        c = self.config.agm
        labels = batch["label"]
        ms = state.method_state
        audio = batch["audio"].astype(jnp.float32)

        def loss_fn(params):
            logits, batch_stats = ctx.forward(state, params, batch)
            # Inference mode with the statistics the training pass just updated (the
            # authors switch to eval() after the training forward); gradients still flow.
            frozen = {"params": params, "batch_stats": jax.lax.stop_gradient(batch_stats)}
            pad_visual = ctx.model.apply(frozen, audio, jnp.zeros_like(ctx.frames), False)
            pad_audio = ctx.model.apply(frozen, jnp.zeros_like(audio), ctx.frames, False)
            m_a, m_v = shapley_responses(logits.fused, pad_visual.fused, pad_audio.fused)
            score_a = batch_score(jax.lax.stop_gradient(m_a), labels, ctx.psum)
            score_v = batch_score(jax.lax.stop_gradient(m_v), labels, ctx.psum)
            coeff_a, coeff_v = coefficients(score_a, score_v, ms.score_a, ms.score_v,
                                            c.alpha)
            out = scale_gradient(m_a, coeff_a) + scale_gradient(m_v, coeff_v)
            loss = losses.cross_entropy(out, labels).mean()
            terms = dict(base.cross_entropy_terms(logits, labels), loss=loss,
                         score_audio=score_a, score_visual=score_v,
                         coeff_a=coeff_a, coeff_v=coeff_v)
            return loss, (terms, batch_stats, logits)

        grads, (terms, batch_stats, logits) = self.gradients(state, loss_fn, ctx)
        clipped = jnp.float32(0.0)
        if c.clip_gradients:
            grads, clipped = clip_when_head_grad_large(grads, grads["head"]["kernel"])
        new_ms = AGMState(score_a=running_mean(ms.score_a, terms["score_audio"], ms.steps),
                          score_v=running_mean(ms.score_v, terms["score_visual"], ms.steps),
                          steps=ms.steps + 1)
        terms["clipped"] = clipped
        state, terms = self.apply(state, grads, batch_stats, terms, logits, labels, ctx)
        return state.replace(method_state=new_ms), terms
