"""Accuracy on the clips the data flags as degraded (`imbalanced`: a stream made
uninformative on purpose) and on the others."""

import jax.numpy as jnp

from avgmm.evaluators import base


class Degraded(base.Evaluator):
    """Multimodal accuracy on the degraded clips and on the clean ones."""

    name = "degraded"
    fields = (base.Field("accuracy_degraded", "degraded clips", headline=True),
              base.Field("accuracy_clean", "clean clips", headline=True))

    def applies(self, meta):
        return meta.has_imbalance_flag

    def sums(self, out):
        flagged = out.batch["imbalanced"].astype(jnp.float32) * out.mask
        correct = out.correct(out.fused) * out.mask
        return {"count_degraded": flagged.sum(), "correct_degraded": (correct * flagged).sum(),
                "correct": correct.sum()}

    def finish(self, totals):
        degraded = totals["count_degraded"]
        clean = totals["count"] - degraded
        return {"accuracy_degraded": base.ratio(totals["correct_degraded"], degraded),
                "accuracy_clean": base.ratio(totals["correct"] - totals["correct_degraded"],
                                             clean)}
