"""Concat: the paper's baseline, cross entropy of the fused logits only."""

from avgmm import losses
from avgmm.methods import base


class Concat(base.Method):
    """`L = mean CE(f)` for every epoch ("Baseline (Concat)" of the paper's Table 1)."""

    name = "concat"
    label = "Baseline (Concat)"
    tuning = {}  # no hyper-parameter: the learning rate is all an equal tuning varies

    def loss(self, phase, logits, batch, method_state, scalars):
        return losses.concat_loss(logits.fused, batch["label"])
