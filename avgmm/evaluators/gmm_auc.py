"""How well a GMM on the final model's training gaps finds the clips the data flags as
degraded: the paper's diagnosis, measured for every method (a method need not fit a GMM
to be diagnosed)."""

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from avgmm import files, gmm as gmm_lib, stats
from avgmm.evaluators import base


def imbalanced_auc(gmm: gmm_lib.GMMParams, gaps: np.ndarray, flags: np.ndarray) -> float:
    """ROC AUC of the imbalanced posterior `p(imbalanced | g)` against a ground-truth flag."""
    post = np.asarray(gmm_lib.imbalanced_posterior(gmm, gaps))
    return stats.roc_auc(post, np.asarray(flags).astype(bool))


# The direction posterior that should find each kind of degraded clip: a degraded image
# makes the audio stream the dominant one, degraded audio the visual one.
DIRECTIONS = (("image_degraded", "visual", 1), ("audio_degraded", "audio", 2))


def direction_aucs(gmm: gmm_lib.GMMParams, gaps: np.ndarray, degraded: np.ndarray,
                   classes: Sequence[str]) -> Dict[str, float]:
    """ROC AUC of `p(audio dominant | g)` against the clips with a degraded image, and of
    `p(visual dominant | g)` against those with degraded audio (`degraded`: the clip
    field's class index, `classes` its names); every other clip, clean or degraded the
    other way, is a negative: a direction must not fire on the other direction's clips.
    Keys `auc_image_degraded`, `auc_audio_degraded`, for the kinds the data has."""
    posteriors = [np.asarray(p) for p in gmm_lib.direction_posteriors(gmm, gaps)]
    degraded = np.asarray(degraded)
    return {f"auc_{subset}": stats.roc_auc(posteriors[column],
                                          degraded == list(classes).index(kind))
            for subset, kind, column in DIRECTIONS if kind in classes}


def direction_classes(meta) -> Optional[Tuple[str, ...]]:
    """The class names of the data's `degraded` clip field (none / visual / audio), or
    None where the data has no such field."""
    kind = meta.clip_fields.get("degraded")
    return kind if isinstance(kind, tuple) else None


class GmmAuc(base.Evaluator):
    """A GMM fitted to the final model's training gaps, and the ROC AUC of its imbalanced
    posterior against the degraded training clips."""

    name = "gmm_auc"
    passes = ("samples", "fit_gmm")
    final_fields = (base.Field("final_gmm_auc_imbalanced", "GMM AUC, final model",
                               percent=False),)

    def applies(self, meta):
        return meta.has_imbalance_flag

    def final(self, ctx):
        device, host = ctx.samples("train", "last")
        fitted = gmm_lib.fit_on_devices(ctx.par, device["gap"], device["mask"],
                                        ctx.config.gmm)
        gmm = ctx.par.fetch(fitted)
        out = {"final_gmm": files.to_python(gmm.to_dict()),
               "final_gmm_auc_imbalanced": imbalanced_auc(gmm, host["gap"],
                                                          host["imbalanced"])}
        classes = direction_classes(ctx.ds.meta)
        if classes is not None and "degraded" in host:
            out.update({f"final_gmm_{k}": v for k, v in direction_aucs(
                gmm, host["gap"], host["degraded"], classes).items()})
        return out
