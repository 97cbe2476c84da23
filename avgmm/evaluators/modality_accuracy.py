"""Unimodal accuracy: how often each modality's own logits predict the label."""

from avgmm.evaluators import base


class ModalityAccuracy(base.Evaluator):
    """Audio-only and visual-only accuracy (the unimodal logits `l_a`, `l_v`)."""

    name = "modality_accuracy"
    fields = (base.Field("accuracy_audio", "audio-only", console="audio", headline=True),
              base.Field("accuracy_visual", "visual-only", console="visual", headline=True))

    def sums(self, out):
        return {"correct_audio": (out.correct(out.audio) * out.mask).sum(),
                "correct_visual": (out.correct(out.visual) * out.mask).sum()}

    def finish(self, totals):
        count = max(totals["count"], 1.0)
        return {"accuracy_audio": totals["correct_audio"] / count,
                "accuracy_visual": totals["correct_visual"] / count}
