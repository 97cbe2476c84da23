"""OGM-GE: On-the-fly Gradient Modulation with Generalization Enhancement (Peng et al.,
"Balanced Multimodal Learning via On-the-fly Gradient Modulation", CVPR 2022).

After the backward pass of the fused cross entropy, each modality's confidence on the
batch is the sum of its true-class softmax scores, computed from its half of the fusion
layer (`s_a = sum_i softmax(l_a,i)[y_i]`, `s_v` likewise). With `rho_v = s_v / s_a` and
`rho_a = 1 / rho_v`, the dominant modality's encoder gradients are scaled by
`k = 1 - tanh(alpha * rho)` (eq. 10; the other modality keeps 1), and Gaussian noise
`N(0, std(g))` is added to every modulated gradient (GE). The authors apply both only to
the encoders' 4-D parameters (convolution kernels) and add the noise to both encoders.

Reference: GeWu-Lab/OGM-GE_CVPR2022, main.py (`train_epoch`); see docs/methods.md.
"""

from typing import Any, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from avgmm import losses
from avgmm.methods import base

MODES = ("OGM_GE", "OGM")
ENCODERS = {"audio_encoder": "audio", "visual_encoder": "visual"}


def true_class_score(logits: jnp.ndarray, labels: jnp.ndarray,
                     ctx: base.StepContext) -> jnp.ndarray:
    """`sum_i softmax(logits_i)[y_i]` over the global batch (summed over devices)."""
    return ctx.psum(losses.true_class_probability(logits, labels).sum())


def ogm_coefficients(score_a: jnp.ndarray, score_v: jnp.ndarray,
                     alpha: float) -> Tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """`(coeff_a, coeff_v, ratio_v)` of eq. 10 from the batch scores.

    `ratio_v = s_v / s_a`; visual is modulated when `ratio_v > 1`, otherwise audio (a tie
    modulates audio, as the authors' `if ratio_v > 1 ... else` does). The coefficient is
    `1 - tanh(alpha * relu(ratio))` of the modulated modality's own ratio, as in the paper
    and both of the authors' repositories (no `ratio - 1` offset).
    """
    ratio_v = score_v / score_a
    ratio_a = 1.0 / ratio_v
    k_v = 1.0 - jnp.tanh(alpha * jax.nn.relu(ratio_v))
    k_a = 1.0 - jnp.tanh(alpha * jax.nn.relu(ratio_a))
    visual_dominant = ratio_v > 1
    coeff_v = jnp.where(visual_dominant, k_v, 1.0)
    coeff_a = jnp.where(visual_dominant, 1.0, k_a)
    return coeff_a, coeff_v, ratio_v


def modulate_encoder_grads(grads: Any, coeff_a: jnp.ndarray, coeff_v: jnp.ndarray,
                           noise_on: jnp.ndarray, key: jax.Array) -> Any:
    """Scales each encoder's 4-D gradients (convolution kernels) by its coefficient and,
    where `noise_on` (a 0/1 scalar), adds `N(0, std(g) + 1e-8)` noise, `std` being the
    unbiased standard deviation of the unscaled gradient tensor (torch's `Tensor.std`).

    Only 4-D leaves of `audio_encoder`/`visual_encoder` change: the authors skip
    BatchNorm parameters and the fusion layer. The noise key is the step's key (the same
    on every device), folded with the leaf's position, so replicas stay identical.
    """
    flat = traverse_util.flatten_dict(grads)
    coeffs = {"audio": coeff_a, "visual": coeff_v}
    out = {}
    for i, (path, g) in enumerate(sorted(flat.items())):
        modality = ENCODERS.get(path[0])
        if modality is None or g.ndim != 4:
            out[path] = g
            continue
        std = jnp.std(g, ddof=1) + 1e-8
        noise = jax.random.normal(jax.random.fold_in(key, i), g.shape, g.dtype) * std
        out[path] = g * coeffs[modality] + noise_on * noise
    return traverse_util.unflatten_dict(out)


class OgmGe(base.Method):
    """Fused cross entropy; encoder gradients modulated in a window of epochs given as
    shares of the budget (`modulation_start_fraction` to `modulation_end_fraction`)."""

    name = "ogm_ge"
    label = "OGM-GE"
    # The modulation's strength matters most once the window is scaled to the budget: the
    # README's 0.1 (VGGSound, the default) and its 0.8 (CREMA-D, a dataset as small as
    # ours), i.e. the dominant encoder's gradient kept at about 0.9 or 0.34 at rho = 1.
    tuning = {"ogm_ge.alpha": (0.1, 0.8)}

    @classmethod
    def defaults(cls):
        c = ml_collections.ConfigDict()
        # main.py / README "default modulation setting": --alpha 0.1 (README recommends
        # 0.1 for VGGSound and 0.8 for CREMA-D), --modulation OGM_GE,
        # --modulation_starts 0 --modulation_ends 50 (of --epochs 100).
        c.alpha = 0.1
        c.mode = "OGM_GE"  # OGM_GE (modulation + noise) | OGM (modulation only)
        # That window as shares of the budget: main.py modulates while
        # `modulation_starts <= epoch <= modulation_ends`, epochs 0..50 of 100, so it ends
        # after 51 epochs of 100 (the same epochs at 100, the first half of a short run).
        c.modulation_start_fraction = 0 / 100
        c.modulation_end_fraction = (50 + 1) / 100
        return c

    @classmethod
    def validate(cls, config, need):
        c = config[cls.name]
        need(c.alpha >= 0, f"{cls.name}.alpha", "a number >= 0")
        need(c.mode in MODES, f"{cls.name}.mode", f"one of {MODES}")
        base.need_fraction(need, c.modulation_start_fraction,
                           f"{cls.name}.modulation_start_fraction")
        base.need_fraction(need, c.modulation_end_fraction,
                           f"{cls.name}.modulation_end_fraction", below_one=False)
        need(c.modulation_end_fraction > c.modulation_start_fraction,
             f"{cls.name}.modulation_end_fraction",
             f"a share > {cls.name}.modulation_start_fraction")

    def _settings(self) -> ml_collections.ConfigDict:
        return self.config[self.name]

    def modulation_window(self) -> Tuple[int, int]:
        """`(first, stop)`: gradients are modulated in the 0-based epochs
        `first <= epoch < stop` (at least one when the budget has room)."""
        c = self._settings()
        return self.window(c.modulation_start_fraction, c.modulation_end_fraction)

    def modulates(self, epoch: int) -> bool:
        """Whether gradients are modulated in the 0-based `epoch`."""
        first, stop = self.modulation_window()
        return first <= epoch < stop

    def describe(self, epoch):
        return {"modulated": self.modulates(epoch)}

    def step_scalars(self, epoch):
        return {"modulate": np.float32(self.modulates(epoch))}

    def loss(self, phase, logits, batch, method_state, scalars):
        # The authors back-propagate the fused cross entropy only (loss_a/loss_v are logged).
        loss, terms = losses.concat_loss(logits.fused, batch["label"])
        terms.update(base.cross_entropy_terms(logits, batch["label"]))
        return loss, terms

    def transform_grads(self, phase, grads, logits, batch, method_state, scalars, ctx):
        c = self._settings()
        labels = batch["label"]
        score_a = true_class_score(jax.lax.stop_gradient(logits.audio), labels, ctx)
        score_v = true_class_score(jax.lax.stop_gradient(logits.visual), labels, ctx)
        coeff_a, coeff_v, ratio_v = ogm_coefficients(score_a, score_v, c.alpha)
        on = scalars["modulate"]
        # Outside the window the gradients pass unchanged (no scaling, no noise).
        coeff_a = jnp.where(on > 0, coeff_a, 1.0)
        coeff_v = jnp.where(on > 0, coeff_v, 1.0)
        noise_on = on * (1.0 if c.mode == "OGM_GE" else 0.0)
        grads = modulate_encoder_grads(grads, coeff_a, coeff_v, noise_on, ctx.key)
        return grads, {"coeff_a": coeff_a, "coeff_v": coeff_v, "ratio_v": ratio_v}
