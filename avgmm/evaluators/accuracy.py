"""Accuracy and cross entropy of the multimodal prediction (the method's fusion); the
validation accuracy selects the best checkpoint."""

from avgmm import losses
from avgmm.evaluators import base


class Accuracy(base.Evaluator):
    """Multimodal accuracy and fused cross entropy; the sample count."""

    name = "accuracy"
    fields = (base.Field("accuracy", "test acc", console="acc", headline=True),
              base.Field("loss", "loss", percent=False),
              base.Field("count", "samples", percent=False))

    def sums(self, out):
        return {"correct": (out.correct(out.fused) * out.mask).sum(),
                "ce_fused": (losses.cross_entropy(out.fused, out.label) * out.mask).sum()}

    def finish(self, totals):
        count = max(totals["count"], 1.0)
        return {"accuracy": totals["correct"] / count, "loss": totals["ce_fused"] / count,
                "count": int(totals["count"])}
