"""Sample-level modality valuation and re-sampling (Wei, Feng, Wang, Hu, "Enhancing
Multimodal Cooperation via Sample-level Modality Valuation", CVPR 2024).

Each modality's contribution to each training sample's prediction is its Shapley value
in the two-player game whose value is the correctness of the prediction from a subset of
the modalities (the other modality's pooled features set to zero before the fusion
layer). After a warm-up, before every epoch, every training sample is valued in inference
mode; a modality whose contribution is low gets 1 to 3 extra unimodal copies of the
sample (the other modality's features zeroed), trained with the fused cross entropy.

The authors append the copies to the training set (longer epochs); we add them to the
sample's own loss, `CE(f) + k_a CE(f_a-only) + k_v CE(f_v-only)`, which gives the
re-sampled epoch's summed gradient in the same number of steps (docs/methods.md).

Read: GeWu-Lab/Valuate-and-Enhance-Multimodal-Cooperation `code/sample_level.py`
(`execute_modulation`, `train_epoch`, `main`), `code/datasets/dataloader.py`
(`AV_KS_Dataset_sample_level`), `code/models/models.py` (`exec_drop`, `forward`); and
GeWu-Lab/BalanceBenchmark `balancemm/trainer/Sample_trainer.py`,
`balancemm/evaluation/modalitys.py` (`Calculate_Shapley_Sample`),
`balancemm/datasets/__init__.py` (`create_dataset_sample_level`).
"""

import time
from typing import Tuple

import flax
import jax.numpy as jnp
import ml_collections
import numpy as np

from avgmm import losses
from avgmm.methods import base
from avgmm.methods.training_rows import training_rows

VALUES = ("size", "correct")


@flax.struct.dataclass
class ValuationState:
    """Extra unimodal copies of every training sample (`[N]` each, index order): audio-only
    copies (visual features zeroed) and visual-only copies; zero until the first valuation."""

    copies_audio: jnp.ndarray
    copies_visual: jnp.ndarray


# ---------------------------------------------------------------------- the rules
def shapley_contributions(correct_fused: jnp.ndarray, correct_audio: jnp.ndarray,
                          correct_visual: jnp.ndarray,
                          value: str = "size") -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Per-sample Shapley values `(phi_a, phi_v)` of the two modalities.

    With `v(empty) = 0`, `v({m}) = 1` if the m-only prediction is right, and `v({a, v}) =
    2` (`value="size"`: the authors' code, `|S|` for a right prediction) or 1
    (`value="correct"`: BalanceBenchmark) if the bimodal one is right:
    `phi_a = (v({a}) + v({a, v}) - v({v})) / 2`, `phi_v` alike.
    """
    full = 2.0 if value == "size" else 1.0
    v_av = full * correct_fused.astype(jnp.float32)
    v_a = correct_audio.astype(jnp.float32)
    v_v = correct_visual.astype(jnp.float32)
    return 0.5 * (v_a + v_av - v_v), 0.5 * (v_v + v_av - v_a)


def resample_copies(contribution: jnp.ndarray) -> jnp.ndarray:
    """Extra unimodal copies of a sample from its modality's contribution, the authors'
    thresholds: 1 in (0.4, 1), 2 in (-0.1, 0.4), 3 below -0.1, else none (float32)."""
    c = contribution
    return jnp.where((c > 0.4) & (c < 1.0), 1.0,
                     jnp.where((c > -0.1) & (c < 0.4), 2.0,
                               jnp.where(c < -0.1, 3.0, 0.0))).astype(jnp.float32)


def valuation_loss(fused: jnp.ndarray, audio_only: jnp.ndarray, visual_only: jnp.ndarray,
                   labels: jnp.ndarray, copies_audio: jnp.ndarray,
                   copies_visual: jnp.ndarray) -> Tuple[jnp.ndarray, base.Terms]:
    """`mean_i [CE(f_i) + k_a,i CE(f_a-only,i) + k_v,i CE(f_v-only,i)]`: each sample and its
    extra unimodal copies, divided by the batch size (the re-sampled epoch's sum of
    per-sample gradients, spread over the original number of batches)."""
    ce_f = losses.cross_entropy(fused, labels)
    ce_a = losses.cross_entropy(audio_only, labels)
    ce_v = losses.cross_entropy(visual_only, labels)
    loss = (ce_f + copies_audio * ce_a + copies_visual * ce_v).mean()
    return loss, {"loss": loss, "ce_fused": ce_f.mean(), "ce_audio_only": ce_a.mean(),
                  "ce_visual_only": ce_v.mean(), "copies_audio": copies_audio.mean(),
                  "copies_visual": copies_visual.mean()}


def unimodal_predictions(head, phi_a: jnp.ndarray, phi_v: jnp.ndarray):
    """`(audio-only, visual-only)` logits of the fusion layer: the audio-only prediction
    has the visual features set to zero, and conversely (the authors' `exec_drop`; the
    bias is kept)."""
    return (head(phi_a, jnp.zeros_like(phi_v)).fused,
            head(jnp.zeros_like(phi_a), phi_v).fused)


# ---------------------------------------------------------------------- the method
class SampleValuation(base.Method):
    """Fused CE plus extra unimodal copies of each sample's low-contributing modality.

    After a warm-up, the training set is valued before every epoch (Shapley values of the
    modalities per sample) and the copies follow the authors' thresholds."""

    name = "sample_valuation"
    label = "Sample-level valuation"
    # The warm-up's share of the epochs: the authors' 5 of 60, then twice that. Half of it
    # would round to the same one epoch on a 10- or 12-epoch budget; a longer warm-up
    # values the samples with a model that has learned something.
    tuning = {"sample_valuation.warmup_fraction": (5 / 60, 1 / 6)}

    @classmethod
    def defaults(cls):
        c = ml_collections.ConfigDict()
        # sample_level.py: `--warmup 5` of `--epochs 60`; kept as a share of our budget
        # (BalanceBenchmark: `modulation_starts: 1`).
        c.warmup_fraction = 5 / 60
        # size: v({a, v}) = 2 for a right prediction (sample_level.py `value_all = 2.0`);
        # correct: 1 (BalanceBenchmark's Calculate_Shapley_Sample).
        c.value = "size"
        return c

    @classmethod
    def validate(cls, config, need):
        c = config.sample_valuation
        base.need_fraction(need, c.warmup_fraction, "sample_valuation.warmup_fraction")
        need(c.value in VALUES, "sample_valuation.value", f"one of {VALUES}")

    # ------------------------------------------------------------------ schedule
    def warmup_epochs(self) -> int:
        """Epochs trained on the fused cross entropy alone before the first valuation."""
        return self.epochs_of(self.config.sample_valuation.warmup_fraction)

    def resamples(self, epoch: int) -> bool:
        """Whether the 0-based `epoch` is valued and re-sampled."""
        return epoch >= self.warmup_epochs()

    def describe(self, epoch):
        return {"resampled": self.resamples(epoch)}

    # ------------------------------------------------------------------ state and hooks
    def init_state(self, meta):
        zeros = np.zeros((meta.num_examples["train"],), np.float32)
        return ValuationState(copies_audio=zeros, copies_visual=zeros.copy())

    def on_epoch_start(self, run, state, epoch):
        if not self.resamples(epoch):
            return state, {}
        start = time.time()
        value = self.config.sample_valuation.value

        def rows(head, phi_a, phi_v, batch):
            labels = batch["label"]
            fused = head(phi_a, phi_v).fused
            audio_only, visual_only = unimodal_predictions(head, phi_a, phi_v)
            phi_audio, phi_visual = shapley_contributions(
                fused.argmax(-1) == labels, audio_only.argmax(-1) == labels,
                visual_only.argmax(-1) == labels, value)
            return {"contribution_audio": phi_audio, "contribution_visual": phi_visual}

        got = training_rows(self, run, state, rows)
        new = ValuationState(copies_audio=np.asarray(resample_copies(got["contribution_audio"])),
                             copies_visual=np.asarray(resample_copies(
                                 got["contribution_visual"])))
        state = state.replace(method_state=run.par.replicate(new))
        return state, {"valuation": {
            "contribution_audio": float(got["contribution_audio"].mean()),
            "contribution_visual": float(got["contribution_visual"].mean()),
            "copies_audio": int(new.copies_audio.sum()),
            "copies_visual": int(new.copies_visual.sum()),
            "seconds": time.time() - start}}

    # ------------------------------------------------------------------ device
    def update(self, phase, state, batch, scalars, ctx):
        ms, labels = state.method_state, batch["label"]
        copies_a = ms.copies_audio[batch["index"]]
        copies_v = ms.copies_visual[batch["index"]]

        def loss_fn(params):
            (phi_a, phi_v), batch_stats = ctx.features(state, params, batch)
            logits = ctx.head(params, phi_a, phi_v)
            audio_only, visual_only = unimodal_predictions(
                lambda a, v: ctx.head(params, a, v), phi_a, phi_v)
            loss, terms = valuation_loss(logits.fused, audio_only, visual_only, labels,
                                         copies_a, copies_v)
            return loss, (terms, batch_stats, logits)

        grads, (terms, batch_stats, logits) = self.gradients(state, loss_fn, ctx)
        return self.apply(state, grads, batch_stats, terms, logits, labels, ctx)
