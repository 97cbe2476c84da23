"""MLA: Multimodal Learning with Alternating Unimodal Adaptation (Zhang, Yoon, Bansal, Yao,
CVPR 2024; authors' code github.com/Cecile-hi/Multimodal-Learning-with-Alternating-
Unimodal-Adaptation, `main.py` `train_epoch` with `--gs_flag`, `utils/utils.py` `GSPlugin`).

Each batch trains the modalities in turn through ONE shared classifier head: an audio
sub-step (`CE(h(phi_a))`, audio encoder and head updated), then a visual sub-step
(`CE(h(phi_v))` with the head the audio sub-step left, visual encoder and head updated;
the audio encoder, whose gradient the authors' pinned PyTorch 1.8.1 zeroes rather than
deletes, takes a momentum and weight-decay step on a zero gradient). At test time the
two unimodal predictions are combined with weights from their entropies.

The paper's gradient modification, a projection of the head's weight gradient by a matrix
`P` that shrinks the directions of the features already seen, never runs in the released
code (its parameter-name test matches nothing); it is a switch, off by default.
"""

from typing import Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from avgmm import losses
from avgmm.methods import base
from avgmm.models import AVLogits, trunk_width

MODALITIES = ("audio", "visual")
FUSIONS = ("entropy", "fixed")


@flax.struct.dataclass
class MLAState:
    """The head's gradient projector `P` `[D, D]`, how many sub-steps have run (the very
    first one neither updates nor applies `P`, as in the authors' code) and the steps per
    epoch (the projector's `alpha` depends on the position in the epoch)."""

    projector: jnp.ndarray
    substeps: jnp.ndarray
    steps_per_epoch: jnp.ndarray


class MLA(base.Method):
    """Alternating unimodal sub-steps through a shared head (head gradients projected on
    request), entropy-weighted test-time fusion."""

    name = "mla"
    label = "MLA"
    # Its only switch that changes training: the released code's plain alternation
    # (default), then the paper's head-gradient projection, which the released code never
    # runs. The others are the test-time fusion (no effect on training), its fixed weight
    # and the projection's alpha schedule (read only with the projection on), and the
    # torch-1.8 idle-step detail.
    tuning = {"mla.gradient_projection": (False, True)}
    head = "shared"

    @classmethod
    def defaults(cls):
        c = ml_collections.ConfigDict()
        # The paper's gradient modification; in the authors' public code it never runs (its
        # parameter-name test `n == "module.weight"` matches no name of the nn.Linear it
        # is given), see docs/methods.md. False (the released code): plain alternating
        # updates; True: the paper's projection.
        c.gradient_projection = False
        # requirements.txt pins torch==1.8.1, whose `optimizer.zero_grad()` zeroes
        # gradients in place (set_to_none=False): after the audio sub-step the audio
        # encoder holds a zero gradient, not None, so the visual sub-step's SGD step also
        # moves it (momentum and weight decay). True: as there; False: an encoder leaves
        # the optimizer alone outside its own sub-step (PyTorch >= 2.0's default).
        c.idle_encoder_steps = True
        # alpha of the projector update: alpha0 * decay ** (1 + batch / batches_per_epoch),
        # GSPlugin.before_update's `1.0 * 0.1 ** (batch_index / len_dataloader + 1)`.
        c.alpha0 = 1.0
        c.alpha_decay = 0.1
        # entropy: the paper's test-time uncertainty fusion (the code's --dynamic);
        # fixed: audio_weight * l_a + (1 - audio_weight) * l_v (the code's av_alpha = 0.5).
        c.fusion = "entropy"
        c.audio_weight = 0.5
        return c

    @classmethod
    def validate(cls, config, need):
        c = config.mla
        need(isinstance(c.gradient_projection, bool), "mla.gradient_projection",
             "True or False")
        need(isinstance(c.idle_encoder_steps, bool), "mla.idle_encoder_steps",
             "True or False")
        need(c.alpha0 > 0, "mla.alpha0", "a number > 0")
        need(0 < c.alpha_decay <= 1, "mla.alpha_decay", "a number in (0, 1]")
        need(c.fusion in FUSIONS, "mla.fusion", f"one of {FUSIONS}")
        need(0 <= c.audio_weight <= 1, "mla.audio_weight", "a number in [0, 1]")

    # ------------------------------------------------------------------ state
    def init_state(self, meta):
        width = trunk_width(self.config)
        num_train = meta.num_examples["train"]
        return MLAState(projector=np.eye(width, dtype=np.float32),
                        substeps=np.zeros((), np.int32),
                        steps_per_epoch=np.asarray(
                            max(1, num_train // self.config.batch_size), np.int32))

    # ------------------------------------------------------------------ device
    def update(self, phase, state, batch, scalars, ctx):
        """One batch: the audio sub-step, then the visual sub-step on the head it left
        (the order of the authors' `train_epoch`); one step of the schedule per batch."""
        start = state
        state, terms_a, logits_a = self.substep("audio", state, batch, ctx)
        state, terms_v, logits_v = self.substep("visual", state, batch, ctx)
        state = state.replace(step=start.step + 1)
        logits = AVLogits(fused=logits_a + logits_v, audio=logits_a, visual=logits_v)
        fused = self.fused(logits)
        w_audio = self.fusion_weights(logits_a, logits_v)[0].mean()
        # The authors log av_alpha * loss_a + (1 - av_alpha) * loss_v with av_alpha = 0.5.
        terms = dict(terms_a, **terms_v, loss=0.5 * (terms_a["ce_audio"] + terms_v["ce_visual"]),
                     ce_fused=losses.cross_entropy(fused, batch["label"]).mean(),
                     fusion_weight_audio=w_audio,
                     accuracy=base.accuracy(fused, batch["label"]),
                     learning_rate=start.opt_state.hyperparams["learning_rate"])
        return state, ctx.pmean(terms)

    def substep(self, modality: str, state, batch, ctx: base.StepContext):
        """One unimodal optimizer step: `CE(h(phi_m))`, gradients of modality `m`'s encoder
        and the head, the head's weight gradient projected (`gradient_projection`).
        Encoders not yet trained in this batch keep their weights and optimizer moments;
        one trained in an earlier sub-step takes the optimizer's step on a zero gradient
        (momentum, weight decay) when `idle_encoder_steps`, else keeps them too. Returns
        the state, its terms and the modality's training logits (computed with the head
        before this sub-step)."""
        c = self.config.mla
        params = state.params
        enc = f"{modality}_encoder"

        def encode(enc_params):
            p = dict(params)
            p[enc] = enc_params
            (phi_a, phi_v), stats = ctx.features(state, p, batch)
            return (phi_a if modality == "audio" else phi_v), stats[enc]

        phi, pullback, enc_stats = jax.vjp(encode, params[enc], has_aux=True)

        def head_loss(head_params, phi):
            out = ctx.head(dict(params, head=head_params), phi, phi).audio
            return losses.cross_entropy(out, batch["label"]).mean(), out

        (loss, logits), (g_head, g_phi) = jax.value_and_grad(
            head_loss, argnums=(0, 1), has_aux=True)(params["head"], phi)
        (g_enc,) = pullback(g_phi.astype(phi.dtype))
        g_head, g_enc = ctx.pmean((g_head, g_enc))

        ms = state.method_state
        projector, alpha = ms.projector, jnp.float32(0.0)
        if c.gradient_projection:
            batch_index = (state.step - state.epoch * ms.steps_per_epoch).astype(jnp.float32)
            alpha = c.alpha0 * c.alpha_decay ** (batch_index / ms.steps_per_epoch + 1.0)
            r = ctx.pmean(jax.lax.stop_gradient(phi).astype(jnp.float32).mean(axis=0))
            first = ms.substeps == 0  # GSPlugin skips its first call (exp_count == 0)
            projector = jnp.where(first, ms.projector,
                                  update_projector(ms.projector, r, alpha))
            kernel = g_head["dense"]["kernel"]
            g_head = dict(g_head, dense=dict(
                g_head["dense"], kernel=jnp.where(first, kernel,
                                                  project_kernel_grad(projector, kernel))))

        grads = {k: (g_enc if k == enc else g_head if k == "head"
                     else jax.tree.map(jnp.zeros_like, v)) for k, v in params.items()}
        stats = dict(state.batch_stats)
        stats[enc] = enc_stats
        new = state.apply_gradients(grads=grads, batch_stats=stats)
        # PyTorch's SGD skips parameters whose gradient is None (no momentum, no weight
        # decay): the encoders still to come in this batch (their gradients were deleted at
        # the end of the last batch). Torch 1.8.1's zero_grad() leaves a zero gradient on
        # the encoders already trained, which SGD does step. The optimizer's step count
        # (hence the learning-rate schedule) advances once per batch, with the last
        # sub-step.
        position = MODALITIES.index(modality)
        idle = set(MODALITIES[:position]) if c.idle_encoder_steps else set()
        keep = {m_ + "_encoder" for m_ in MODALITIES if m_ != modality and m_ not in idle}
        last = modality == MODALITIES[-1]
        new = new.replace(
            params=_select(keep, state.params, new.params, outside_new=True),
            opt_state=_select(keep, state.opt_state, new.opt_state, outside_new=last),
            method_state=ms.replace(projector=projector, substeps=ms.substeps + 1),
            step=state.step)  # `update` counts one step per batch
        terms = {f"ce_{modality}": loss, f"projection_alpha_{modality}": alpha}
        return new, terms, logits

    # ------------------------------------------------------------------ fusion
    def fusion_weights(self, audio: jnp.ndarray,
                       visual: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
        """Per-sample weights `(w_a, w_v)` of the unimodal logits."""
        c = self.config.mla
        if c.fusion == "fixed":
            w = jnp.full(audio.shape[:1], c.audio_weight, jnp.float32)
            return w, 1.0 - w
        return entropy_weights(audio, visual)

    def fused(self, logits: AVLogits) -> jnp.ndarray:
        w_a, w_v = self.fusion_weights(logits.audio, logits.visual)
        return w_a[:, None] * logits.audio + w_v[:, None] * logits.visual


# -------------------------------------------------------------------------- the rules
def entropy(logits: jnp.ndarray) -> jnp.ndarray:
    """Per-sample entropy `-sum_k p_k log p_k` of `softmax(logits)`, `[B]`."""
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -(jnp.exp(log_p) * log_p).sum(-1)


def entropy_weights(audio: jnp.ndarray, visual: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """The paper's uncertainty weights, per sample: `w_m = exp(e_max - e_m) /
    sum_j exp(e_max - e_j)`, i.e. a softmax of the negative entropies (the more certain
    modality weighs more)."""
    w = jax.nn.softmax(-jnp.stack([entropy(audio), entropy(visual)]), axis=0)
    return w[0], w[1]


def update_projector(projector: jnp.ndarray, r: jnp.ndarray, alpha) -> jnp.ndarray:
    """`P <- P - k k^T / (alpha + r^T k)` with `k = P r` (r: the batch-mean feature of
    the modality being trained), then `P <- P / ||P||_F` (GSPlugin.before_update)."""
    k = projector @ r
    p = projector - jnp.outer(k, k) / (alpha + r @ k)
    return p / jnp.linalg.norm(p)


def project_kernel_grad(projector: jnp.ndarray, grad_kernel: jnp.ndarray) -> jnp.ndarray:
    """The head's weight gradient after projection. PyTorch's weight is `[C, D]` and gets
    `G P^T`; our kernel is its transpose `[D, C]`, so it gets `(G P^T)^T = P G_kernel`."""
    return projector @ grad_kernel


def _under(path, names) -> bool:
    return any(isinstance(k, jax.tree_util.DictKey) and k.key in names for k in path)


def _select(keep, old, new, *, outside_new: bool):
    """`new` except the leaves under a parameter subtree named in `keep` (taken from
    `old`); leaves under no parameter subtree (step counts, hyper-parameters) come from
    `new` when `outside_new`, else from `old`."""
    params = {m + "_encoder" for m in MODALITIES} | {"head"}

    def pick(path, o, n):
        if _under(path, keep):
            return o
        if _under(path, params):
            return n
        return n if outside_new else o

    return jax.tree_util.tree_map_with_path(pick, old, new)

