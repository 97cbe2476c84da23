"""Statistics of the modality gap `g = p_audio(y) - p_visual(y)` over a split."""

import math

from avgmm import losses
from avgmm.evaluators import base


class Gap(base.Evaluator):
    """Mean and spread of the per-sample modality gap."""

    name = "gap"
    fields = (base.Field("gap_mean", "gap mean", percent=False),
              base.Field("gap_std", "gap std", percent=False))

    def sums(self, out):
        gap = losses.modality_gap(out.audio, out.visual, out.label)
        return {"gap": (gap * out.mask).sum(), "gap_sq": (gap * gap * out.mask).sum()}

    def finish(self, totals):
        count = max(totals["count"], 1.0)
        mean = totals["gap"] / count
        return {"gap_mean": mean,
                "gap_std": math.sqrt(max(totals["gap_sq"] / count - mean**2, 0.0))}
