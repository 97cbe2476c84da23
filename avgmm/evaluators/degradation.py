"""Accuracy by which stream the data degraded on purpose (the clip field `degraded`:
none, visual or audio, e.g. AV-MNIST's benchmark settings): on the clean clips, on the
clips whose image was degraded and on those whose audio was, each for the multimodal
prediction and for the audio-only and visual-only ones. A misleading stream (AV-MNIST's
`conflict`: a wrong digit's image or speech) counts as degraded; the clip field
`degradation` tells it from noise."""

from typing import Dict, Tuple

import jax.numpy as jnp

from avgmm.evaluators import base

# The `degraded` classes, and the name of their subset in the fields.
SUBSETS: Tuple[Tuple[str, str], ...] = (("none", "clean"), ("visual", "image_degraded"),
                                        ("audio", "audio_degraded"))
_LABELS = {"clean": "clean clips", "image_degraded": "degraded image",
           "audio_degraded": "degraded audio"}


def _fields():
    out = []
    for _, subset in SUBSETS:
        out.append(base.Field(f"acc_on_{subset}", _LABELS[subset], headline=True))
        for modality in ("audio", "visual"):
            out.append(base.Field(f"{modality}_acc_on_{subset}",
                                  f"{modality}-only, {_LABELS[subset]}", headline=True,
                                  column=False))
    return tuple(out)


class Degradation(base.Evaluator):
    """Multimodal, audio-only and visual-only accuracy on the clean clips, the clips with
    a degraded image and those with degraded audio (data with a `degraded` clip field)."""

    name = "degradation"
    fields = _fields()

    def applies(self, meta):
        kind = meta.clip_fields.get("degraded")
        return isinstance(kind, tuple) and all(c in kind for c, _ in SUBSETS)

    def sums(self, out):
        classes = self.meta.clip_fields["degraded"]
        degraded = out.batch["degraded"]
        sums: Dict[str, jnp.ndarray] = {}
        for category, subset in SUBSETS:
            member = (degraded == classes.index(category)).astype(jnp.float32) * out.mask
            sums[f"n_{subset}"] = member.sum()
            for name, logits in (("fused", out.fused), ("audio", out.audio),
                                 ("visual", out.visual)):
                sums[f"{name}_{subset}"] = (out.correct(logits) * member).sum()
        return sums

    def finish(self, totals):
        out = {}
        for _, subset in SUBSETS:
            n = totals[f"n_{subset}"]
            out[f"acc_on_{subset}"] = base.ratio(totals[f"fused_{subset}"], n)
            for modality in ("audio", "visual"):
                out[f"{modality}_acc_on_{subset}"] = base.ratio(
                    totals[f"{modality}_{subset}"], n)
        return out
