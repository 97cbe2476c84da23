"""Warm-up only: the warm-up loss (eq. 7) for the whole budget, no GMM."""

from avgmm import losses
from avgmm.methods import base


class WarmupOnly(base.Method):
    """`L = mean [CE(f) + CE(l_a) + CE(l_v)]` for every epoch: what the adaptive phase has
    to beat, since it starts from this model."""

    name = "warmup_only"
    label = "Warm-up loss only (control)"
    # Eq. 7 weighs its three cross entropies 1, 1, 1 and reads no setting: the learning
    # rate is all an equal tuning can vary.
    tuning = {}

    def phases(self):
        return ("warmup",)

    def phase(self, epoch):
        return "warmup"

    def loss(self, phase, logits, batch, method_state, scalars):
        return losses.warmup_loss(logits.fused, logits.audio, logits.visual, batch["label"])
