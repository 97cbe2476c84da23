"""How the GMM's diagnosis relates to what people heard and saw: CREMA-D's human ratings
(`data_prep.crema_ratings`) flag the clips whose emotion raters recognized from the voice
alone but not from the face (`human_only_voice_right`) and the reverse
(`human_only_face_right`): real, per-clip modality imbalance, signed.

For each flag, on the training split: the ROC AUC of the imbalanced posterior
`p(imbalanced | g)` of a GMM fitted to the final model's training gaps, the same for every
GMM fit the method made during training (its saved `gmm_fits/`, on the gaps of that
time), and the ROC AUC of the signed gap itself (`g` for voice-only, `-g` for face-only:
does the model lean on the modality people could read?). An AUC is None where the split
has no clip, or only clips, of a flag.
"""

import glob
import os
from typing import Any, Dict, List, Optional

import numpy as np

from avgmm import files, gmm as gmm_lib, stats
from avgmm.evaluators import base
from avgmm.workdir import Workdir

# The flags, with the sign that turns the gap `p_audio - p_visual` into a score for them.
FLAGS = {"human_only_voice_right": 1.0, "human_only_face_right": -1.0}


def _auc(scores: np.ndarray, flags: np.ndarray) -> Optional[float]:
    value = stats.roc_auc(scores, flags)
    return None if np.isnan(value) else value


def posterior_aucs(gmm: gmm_lib.GMMParams, gaps: np.ndarray,
                   flags: Dict[str, np.ndarray]) -> Dict[str, Optional[float]]:
    """`{flag: ROC AUC of p(imbalanced | gap) against it}`."""
    post = np.asarray(gmm_lib.imbalanced_posterior(gmm, gaps))
    return {name: _auc(post, np.asarray(f, bool)) for name, f in flags.items()}


def saved_fits(workdir: Workdir) -> List[Dict[str, Any]]:
    """The GMM fits a method saved during training (`gmm_fits/fit_*.npz`, in order):
    the dataset index and gap of every training clip, and the mixture."""
    out = []
    for path in sorted(glob.glob(os.path.join(workdir.file(Workdir.GMM_FITS), "fit_*.npz"))):
        with np.load(path) as z:
            # Every component the fit had (a third with gmm.components=3).
            ks = range(3 if "gmm_pi_2" in z.files else 2)
            gmm = gmm_lib.GMMParams.unfitted().replace(**{
                field: np.array([z[f"gmm_{key}_{k}"] for k in ks], np.float32)
                for field, key in (("weights", "pi"), ("means", "mu"), ("variances", "var"))})
            out.append({"index": z["index"], "gap": z["gap"], "gmm": gmm})
    return out


class HumanAuc(base.Evaluator):
    """ROC AUC of the GMM's imbalanced posterior (final model and every fit) and of the
    signed gap against the human-rated flags `human_only_voice_right` and
    `human_only_face_right` (CREMA-D prepared with its summary table)."""

    name = "human_auc"
    passes = ("samples", "fit_gmm")
    final_fields = tuple(
        base.Field(f"final_gmm_auc_{flag}", f"GMM AUC vs {who} (people), final model",
                   percent=False)
        for flag, who in (("human_only_voice_right", "voice-only right"),
                          ("human_only_face_right", "face-only right")))

    def applies(self, meta):
        fields = dict(getattr(meta, "clip_fields", None) or {})
        return all(flag in fields for flag in FLAGS)

    def final(self, ctx):
        device, host = ctx.samples("train", "last")
        flags = {name: np.asarray(host[name], bool) for name in FLAGS}
        gmm = ctx.par.fetch(gmm_lib.fit_on_devices(ctx.par, device["gap"], device["mask"],
                                                   ctx.config.gmm))
        out: Dict[str, Any] = {"human_flag_counts": {
            "train_clips": int(len(host["gap"])),
            **{name: int(f.sum()) for name, f in flags.items()}}}
        out["final_gmm_human"] = files.to_python(gmm.to_dict())
        for name, auc in posterior_aucs(gmm, host["gap"], flags).items():
            out[f"final_gmm_auc_{name}"] = auc
        for name, sign in FLAGS.items():
            out[f"final_gap_auc_{name}"] = _auc(sign * np.asarray(host["gap"]), flags[name])
        # The fits made during training, on the gaps of their time: flags by dataset index.
        by_index = {}
        for name, f in flags.items():
            full = np.zeros(int(np.max(host["index"])) + 1, bool)
            full[np.asarray(host["index"])] = f
            by_index[name] = full
        per_fit = {name: [] for name in FLAGS}
        for fit in saved_fits(ctx.workdir):
            aucs = posterior_aucs(fit["gmm"], fit["gap"],
                                  {n: v[fit["index"]] for n, v in by_index.items()})
            for name, auc in aucs.items():
                per_fit[name].append(auc)
        for name, values in per_fit.items():
            out[f"gmm_fit_aucs_{name}"] = values
        return out
