"""TCMax: multimodal classification via total correlation maximization (ICLR 2026).

The fused logits of a concatenation head are `f(a, v) = l_a(a) + l_v(v)`. TCMax scores
every audio of the batch with every visual of the batch and every class, a `B x B x C`
grid `S[j, k, c] = l_a[j, c] + l_v[k, c]`, and maximizes the probability of the true
triples `(i, i, y_i)` under the softmax over the whole grid:

    L = -1/B sum_i log softmax(S)[i, i, y_i] - log B.

The grid's normalizer factorizes, `log Z = logsumexp_c (LSE_j l_a[j, c] + LSE_k l_v[k, c])`,
so the loss costs `O(B C)` (the authors' "faster implementation" for linear fusions
computes the full grid). The grid spans the global batch: the per-class sums run over
every device.

Read: hubaak/TCMax (MIT) `src/utils/losses.py` (`TCMax_loss`), `main.py` (`train_epoch`),
`src/models/fusion_modules.py` (`ConcatFusion.forward_a`, `forward_v`), `scripts/*.sh`,
`README.md`.
"""

from typing import Callable, Tuple

import jax
import jax.numpy as jnp

from avgmm.methods import base


def _identity(x):
    return x


def tcmax_loss(audio: jnp.ndarray, visual: jnp.ndarray, labels: jnp.ndarray, *,
               psum: Callable = _identity,
               pmax: Callable = _identity) -> Tuple[jnp.ndarray, base.Terms]:
    """The TCMax loss of one shard of the batch (its mean over the shard; the mean over
    devices is the global loss) and its logged terms.

    `psum` / `pmax` reduce over the devices (identities on one device), so that the grid
    is the global batch's. Logged besides the loss: the authors' `loss_a`, `loss_v`
    (`-mean_i log sum_k P[i, k, y_i] - log B` and its visual twin) and `log_z`.
    """
    audio = audio.astype(jnp.float32)
    visual = visual.astype(jnp.float32)
    b = psum(jnp.float32(audio.shape[0]))

    def class_lse(x):  # log sum_j exp x[j, c] over the global batch, [C]
        m = pmax(jax.lax.stop_gradient(x.max(axis=0)))
        return m + jnp.log(psum(jnp.exp(x - m).sum(axis=0)))

    lse_a, lse_v = class_lse(audio), class_lse(visual)
    log_z = jax.nn.logsumexp(lse_a + lse_v)
    true_a = jnp.take_along_axis(audio, labels[:, None], axis=-1)[:, 0]
    true_v = jnp.take_along_axis(visual, labels[:, None], axis=-1)[:, 0]
    log_b = jnp.log(b)
    loss = -(true_a + true_v - log_z).mean() - log_b
    loss_a = -(true_a + lse_v[labels] - log_z).mean() - log_b
    loss_v = -(true_v + lse_a[labels] - log_z).mean() - log_b
    return loss, {"loss": loss, "tc_loss_audio": loss_a, "tc_loss_visual": loss_v,
                  "log_z": log_z}


class TCMax(base.Method):
    """The total-correlation objective over the batch's audio x visual x class grid."""

    name = "tcmax"
    label = "TCMax"
    # The released objective has no hyper-parameter (--TCMax_sample_num, a sampled
    # approximation, is in no script). The batch size sets its grid, but it is the
    # config's, shared by every method: tuning it for one would change that method's
    # protocol. The learning rate is all an equal tuning can vary.
    tuning = {}

    def update(self, phase, state, batch, scalars, ctx):
        labels = batch["label"]
        if ctx.axis_name is None:
            pmax = _identity
        else:
            pmax = lambda x: jax.lax.pmax(x, ctx.axis_name)  # noqa: E731

        def loss_fn(params):
            logits, batch_stats = ctx.forward(state, params, batch)
            loss, terms = tcmax_loss(logits.audio, logits.visual, labels, psum=ctx.psum,
                                     pmax=pmax)
            terms.update(base.cross_entropy_terms(logits, labels))
            return loss, (terms, batch_stats, logits)

        # The loss's normalizer is summed over the devices (psum, whose transpose sums
        # the cotangents back): the device mean of the gradients is the global loss's.
        grads, (terms, batch_stats, logits) = self.gradients(state, loss_fn, ctx)
        return self.apply(state, grads, batch_stats, terms, logits, labels, ctx)

