"""OPM: On-the-fly Prediction Modulation (Wei, Hu, Du, Wen, "On-the-fly Modulation for
Balanced Multimodal Learning", TPAMI 2024).

In the feed-forward pass the dominant modality's pooled features are dropped, sample by
sample, with a probability that grows with the discrepancy between the modalities'
batch confidences `s_u = sum_i softmax(l_u,i)[y_i]` (computed before dropping):

    r_u = tanh(relu(s_u / s_other - 1)),   q_u = clip(q_base (1 + lam r_u), 0, 1) if r_u > 0
                                                 else 0,

so only the dominant modality can be dropped. With probability `p_exe` per batch the drop
is executed: every sample keeps modality `u` with probability `1 - q_u`, and the kept
features are divided by `1 - theta`, `theta = sum_u d_u q_u / sum_u d_u` (`d_u` the feature
widths). The fused cross entropy of the dropped features is the loss. No dropping in the
first `warmup_fraction` of the budget nor at evaluation.

Reference: GeWu-Lab/BML_TPAMI2024, code/models/Classifier.py (`calcu_q`, `Modality_drop`,
`Classifier.forward`), code/main.py and code/scripts/train_opm.sh; see docs/methods.md.
"""

from typing import Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from avgmm import losses
from avgmm.methods import base
from avgmm.methods.ogm_ge import true_class_score


def drop_probabilities(score_a: jnp.ndarray, score_v: jnp.ndarray, q_base: float,
                       lam: float) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """`(q_a, q_v)`: each modality's drop probability (`calcu_q` of the authors)."""
    r_a = jnp.tanh(jax.nn.relu(score_a / score_v - 1.0))
    r_v = jnp.tanh(jax.nn.relu(score_v / score_a - 1.0))
    q_a = jnp.where(r_a > 0, q_base * (1.0 + lam * r_a), 0.0)
    q_v = jnp.where(r_v > 0, q_base * (1.0 + lam * r_v), 0.0)
    return jnp.clip(q_a, 0.0, 1.0), jnp.clip(q_v, 0.0, 1.0)


def keep_masks(key: jax.Array, positions: jnp.ndarray, q_a: jnp.ndarray, q_v: jnp.ndarray,
               execute: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Per-sample keep masks `(m_a, m_v)` in {0, 1}, shape `[B]`: Bernoulli(1 - q_u) when
    `execute`, all ones otherwise. One key per sample from its position in the global
    batch, so the masks do not depend on how the batch is split over devices."""
    keys = jax.vmap(lambda p: jax.random.fold_in(key, p))(positions)
    u = jax.vmap(lambda k: jax.random.uniform(k, (2,)))(keys)
    m_a = jnp.where(execute, u[:, 0] < 1.0 - q_a, True).astype(jnp.float32)
    m_v = jnp.where(execute, u[:, 1] < 1.0 - q_v, True).astype(jnp.float32)
    return m_a, m_v


def drop_features(phi_a: jnp.ndarray, phi_v: jnp.ndarray, q_a: jnp.ndarray,
                  q_v: jnp.ndarray, m_a: jnp.ndarray, m_v: jnp.ndarray,
                  execute: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Features after the drop: masked per sample, and (when `execute`) both modalities
    divided by `1 - theta`, `theta = (d_a q_a + d_v q_v) / (d_a + d_v)`, as the authors'
    `Modality_drop.execute_drop` rescales the whole stacked feature tensor."""
    d_a, d_v = phi_a.shape[-1], phi_v.shape[-1]
    theta = jnp.where(execute, (d_a * q_a + d_v * q_v) / (d_a + d_v), 0.0)
    scale = 1.0 / (1.0 - theta)
    return (phi_a * (m_a * scale)[:, None].astype(phi_a.dtype),
            phi_v * (m_v * scale)[:, None].astype(phi_v.dtype))


class Opm(base.Method):
    """Fused cross entropy on features whose dominant modality is dropped on the fly."""

    name = "opm"
    label = "OPM (TPAMI 2024)"
    # The base drop probability: train_opm.sh's 0.5, then 0.3, fewer of the dominant
    # modality's features dropped, since every dropped sample is a step that modality does
    # not learn from and a short run has few to spare. (0.7 breaks q_base (1 + lam) < 1.)
    tuning = {"opm.q_base": (0.5, 0.3)}

    @classmethod
    def defaults(cls):
        c = ml_collections.ConfigDict()
        # code/scripts/train_opm.sh (= main.py's argparse defaults): --q_base 0.5
        # --lam 0.5 --p_exe 0.7.
        c.q_base = 0.5
        c.lam = 0.5
        c.p_exe = 0.7
        # main.py: `warm_up = 1 if epoch <= 5 else 0` (hard-coded): six epochs of its 100
        # undropped, a share of our budget.
        c.warmup_fraction = 6 / 100
        return c

    @classmethod
    def validate(cls, config, need):
        c = config[cls.name]
        need(c.q_base >= 0 and c.lam >= 0, f"{cls.name}.q_base",
             "q_base >= 0 and lam >= 0")
        # q <= q_base (1 + lam) must stay below 1, or the kept features' rescaling
        # 1 / (1 - theta) could divide by zero.
        need(c.q_base * (1 + c.lam) < 1, f"{cls.name}.lam",
             f"q_base * (1 + lam) < 1 (got {c.q_base} * (1 + {c.lam}))")
        need(0 <= c.p_exe <= 1, f"{cls.name}.p_exe", "a probability in [0, 1]")
        base.need_fraction(need, c.warmup_fraction, f"{cls.name}.warmup_fraction")

    def dropping(self, epoch: int) -> bool:
        """Whether features are dropped in the 0-based `epoch`."""
        return epoch >= self.epochs_of(self.config[self.name].warmup_fraction)

    def describe(self, epoch):
        return {"dropping": self.dropping(epoch)}

    def step_scalars(self, epoch):
        return {"drop": np.float32(self.dropping(epoch))}

    def update(self, phase, state, batch, scalars, ctx):
        c = self.config[self.name]
        labels = batch["label"]
        k_exe, k_mask = jax.random.split(ctx.key)
        # One draw per (global) batch, as the authors' `rand >= 1 - p_exe`.
        execute = (jax.random.uniform(k_exe) >= 1.0 - c.p_exe) & (scalars["drop"] > 0)

        def loss_fn(params):
            (phi_a, phi_v), batch_stats = ctx.features(state, params, batch)
            full = ctx.head(params, phi_a, phi_v)
            # The discrepancy is measured before dropping, without gradient (the authors
            # use detached fusion weights).
            score_a = true_class_score(jax.lax.stop_gradient(full.audio), labels, ctx)
            score_v = true_class_score(jax.lax.stop_gradient(full.visual), labels, ctx)
            q_a, q_v = drop_probabilities(score_a, score_v, c.q_base, c.lam)
            m_a, m_v = keep_masks(k_mask, batch["position"], q_a, q_v, execute)
            dropped = ctx.head(params, *drop_features(phi_a, phi_v, q_a, q_v, m_a, m_v,
                                                      execute))
            # At most one modality has q > 0, so no sample loses both and the authors'
            # removal of such samples never applies.
            loss, terms = losses.concat_loss(dropped.fused, labels)
            terms.update(base.cross_entropy_terms(full, labels))
            terms.update(q_a=q_a, q_v=q_v, executed=execute.astype(jnp.float32),
                         kept_audio=m_a.mean(), kept_visual=m_v.mean(),
                         ratio_v=score_v / score_a)
            return loss, (terms, batch_stats, full)

        grads, (terms, batch_stats, full) = self.gradients(state, loss_fn, ctx)
        # Identity here; OPM & OGM modulates them with the un-dropped logits' scores.
        grads, more = self.transform_grads(phase, grads, full, batch, state.method_state,
                                           scalars, ctx)
        terms.update(more)
        return self.apply(state, grads, batch_stats, terms, full, labels, ctx)
