"""Data Remixing (Ma, Chen, Deng, "Improving Multimodal Learning Balance and Sufficiency
through Data Remixing", ICML 2025).

After a warm-up on `CE(f) + alpha CE(l_a) + beta CE(l_v)` (separate unimodal heads),
every epoch starts with a pass over the training split in inference mode that sends each
sample to the modality whose unimodal prediction is less confident (the smaller KL
divergence from the uniform distribution). The epoch then trains unimodal batches: the
visual samples first, with the audio features zeroed (`CE(f) + gamma_v CE(l_v)`), then the
audio samples with the visual features zeroed (`CE(f) + gamma_a CE(l_a)`). Each sample
trains one modality once per epoch and never meets its other modality in a step.

Read: MatthewMaxy/Remix_ICML2025 `train.py` (`remix`, `kl_divergence`, `train_epoch`,
`special_train_epoch`, `main`), `models/models.py` (`AVClassifier.forward`),
`datasets/dataloader.py`, `scripts/run_train.sh`.
"""

import math
import time
from typing import Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from avgmm import losses
from avgmm.methods import base
from avgmm.methods.training_rows import training_rows

# Group keys of the epoch's order: the authors train the visual subset first.
VISUAL, AUDIO = 0, 1


@flax.struct.dataclass
class RemixState:
    """The modality every training sample trains this epoch (`[N]`, index order):
    `AUDIO` (1) or `VISUAL` (0)."""

    modality: jnp.ndarray


# ---------------------------------------------------------------------- the rules
def kl_to_uniform(logits: jnp.ndarray) -> jnp.ndarray:
    """Per-sample `KL(p || uniform)` in bits, `p = softmax(logits)` clipped to
    `[1e-9, 1]` as the authors' `kl_divergence`: `sum_k p_k log2(p_k C)`."""
    p = jnp.clip(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), 1e-9, 1.0)
    return jnp.sum(p * jnp.log2(p * logits.shape[-1]), axis=-1)


def assign_modality(audio: jnp.ndarray, visual: jnp.ndarray) -> jnp.ndarray:
    """`AUDIO` where the audio prediction is less confident than the visual one
    (`KL_a < KL_v`), else `VISUAL` (ties go to visual, as the authors' `else`); int32."""
    return jnp.where(kl_to_uniform(audio) < kl_to_uniform(visual), AUDIO,
                     VISUAL).astype(jnp.int32)


def warmup_loss(logits, labels: jnp.ndarray, alpha: float,
                beta: float) -> Tuple[jnp.ndarray, base.Terms]:
    """`mean [CE(f) + alpha CE(l_a) + beta CE(l_v)]` (the authors' `train_epoch`)."""
    ce_f = losses.cross_entropy(logits.fused, labels).mean()
    ce_a = losses.cross_entropy(logits.audio, labels).mean()
    ce_v = losses.cross_entropy(logits.visual, labels).mean()
    loss = ce_f + alpha * ce_a + beta * ce_v
    return loss, {"loss": loss, "ce_fused": ce_f, "ce_audio": ce_a, "ce_visual": ce_v}


def remix_loss(audio_only, visual_only, labels: jnp.ndarray, modality: jnp.ndarray,
               gamma_audio: float, gamma_visual: float) -> Tuple[jnp.ndarray, base.Terms]:
    """`mean_i` of each sample's unimodal loss: `CE(f(a_i, 0)) + gamma_a CE(l_a,i)` for
    the audio samples, `CE(f(0, v_i)) + gamma_v CE(l_v,i)` for the visual ones
    (`audio_only`, `visual_only`: the heads' outputs with the other features zeroed)."""
    to_audio = modality == AUDIO
    ce_fa = losses.cross_entropy(audio_only.fused, labels)
    ce_a = losses.cross_entropy(audio_only.audio, labels)
    ce_fv = losses.cross_entropy(visual_only.fused, labels)
    ce_v = losses.cross_entropy(visual_only.visual, labels)
    per = jnp.where(to_audio, ce_fa + gamma_audio * ce_a, ce_fv + gamma_visual * ce_v)
    loss = per.mean()
    n_a = to_audio.astype(jnp.float32)
    # The two subsets' shares of the loss (they add up to it).
    return loss, {"loss": loss, "audio_fraction": n_a.mean(),
                  "loss_audio_samples": (n_a * per).mean(),
                  "loss_visual_samples": ((1.0 - n_a) * per).mean()}


# ---------------------------------------------------------------------- the method
class Remix(base.Method):
    """Each sample trains only its less confident modality, in unimodal batches.

    A warm-up on the fused and weighted unimodal losses first; then, every epoch, the
    visual samples' batches and then the audio samples' (separate unimodal heads)."""

    name = "remix"
    label = "Data Remixing"
    head = "separate"
    # The warm-up's share of the epochs: the authors' 10 of 60, then half the budget. The
    # remix assigns each sample by its unimodal heads' confidence, and on a short budget
    # those heads are still near chance after the authors' share (2 of 10 epochs on the
    # demo): a longer warm-up gives the assignment something to go by.
    tuning = {"remix.warmup_fraction": (10 / 60, 1 / 2)}

    @classmethod
    def defaults(cls):
        c = ml_collections.ConfigDict()
        # scripts/run_train.sh `--warmup 10` of `--epoch 60` (= train.py's default); kept
        # as a share of our budget.
        c.warmup_fraction = 10 / 60
        # train.py: --alpha 0.5 (audio) and --beta 0.5 (visual) weigh the unimodal losses
        # in the warm-up; --gamma2 1 (audio) and --gamma1 1 (visual) in the remixed epochs.
        c.alpha = 0.5
        c.beta = 0.5
        c.gamma_audio = 1.0
        c.gamma_visual = 1.0
        # True: the epoch draws the visual samples first, then the audio ones (unimodal
        # batches, as the authors' two loaders). False: plain shuffled batches, each
        # sample still trained on its own modality only.
        c.reassemble = True
        return c

    @classmethod
    def validate(cls, config, need):
        c = config.remix
        base.need_fraction(need, c.warmup_fraction, "remix.warmup_fraction")
        for field in ("alpha", "beta", "gamma_audio", "gamma_visual"):
            x = c[field]
            need(isinstance(x, (int, float)) and math.isfinite(x) and x >= 0,
                 f"remix.{field}", "a number >= 0")
        need(isinstance(c.reassemble, bool), "remix.reassemble", "True or False")

    # ------------------------------------------------------------------ schedule
    def warmup_epochs(self) -> int:
        """Epochs of the warm-up loss before the first remixed epoch."""
        return self.epochs_of(self.config.remix.warmup_fraction)

    def phases(self):
        return ("warmup", "remix")

    def phase(self, epoch):
        return "warmup" if epoch < self.warmup_epochs() else "remix"

    # ------------------------------------------------------------------ state and hooks
    def init_state(self, meta):
        return RemixState(modality=np.full((meta.num_examples["train"],), VISUAL, np.int32))

    def on_epoch_start(self, run, state, epoch):
        if self.phase(epoch) != "remix":
            return state, {}
        start = time.time()

        def rows(head, phi_a, phi_v, batch):
            logits = head(phi_a, phi_v)
            return {"modality": assign_modality(logits.audio, logits.visual)}

        modality = training_rows(self, run, state, rows)["modality"].astype(np.int32)
        state = state.replace(method_state=run.par.replicate(RemixState(modality=modality)))
        return state, {"remix": {"audio_fraction": float((modality == AUDIO).mean()),
                                 "seconds": time.time() - start}}

    def batch_groups(self, run, state, epoch):
        if self.phase(epoch) != "remix" or not self.config.remix.reassemble:
            return None
        return run.par.fetch(state.method_state.modality)

    # ------------------------------------------------------------------ device
    def update(self, phase, state, batch, scalars, ctx):
        c, labels = self.config.remix, batch["label"]
        modality = state.method_state.modality[batch["index"]]

        def loss_fn(params):
            (phi_a, phi_v), batch_stats = ctx.features(state, params, batch)
            logits = ctx.head(params, phi_a, phi_v)
            if phase == "warmup":
                loss, terms = warmup_loss(logits, labels, c.alpha, c.beta)
            else:
                audio_only = ctx.head(params, phi_a, jnp.zeros_like(phi_v))
                visual_only = ctx.head(params, jnp.zeros_like(phi_a), phi_v)
                loss, terms = remix_loss(audio_only, visual_only, labels, modality,
                                         c.gamma_audio, c.gamma_visual)
                terms.update(base.cross_entropy_terms(logits, labels))
            return loss, (terms, batch_stats, logits)

        grads, (terms, batch_stats, logits) = self.gradients(state, loss_fn, ctx)
        return self.apply(state, grads, batch_stats, terms, logits, labels, ctx)
