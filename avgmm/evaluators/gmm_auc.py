"""How well a GMM on the final model's training gaps finds the clips the data flags as
degraded: the paper's diagnosis, measured for every method (a method need not fit a GMM
to be diagnosed)."""

import numpy as np

from avgmm import files, gmm as gmm_lib, stats
from avgmm.evaluators import base


def imbalanced_auc(gmm: gmm_lib.GMMParams, gaps: np.ndarray, flags: np.ndarray) -> float:
    """ROC AUC of the imbalanced posterior `p(imbalanced | g)` against a ground-truth flag."""
    post = np.asarray(gmm_lib.imbalanced_posterior(gmm, gaps))
    return stats.roc_auc(post, np.asarray(flags).astype(bool))


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
        return {"final_gmm": files.to_python(gmm.to_dict()),
                "final_gmm_auc_imbalanced": imbalanced_auc(gmm, host["gap"],
                                                           host["imbalanced"])}
