"""The GMM fit that the GMM-guided methods share (Algorithm 1, steps a-b): every training
sample's inference-mode gap, a two- (or, with `gmm.components=3`, three-) component
mixture fitted to them on the devices, the fit's record and file (`gmm_fits/fit_NNN.npz`),
the posteriors the methods read (`direction_posteriors_of`), and what such a method
reports (`FitsGmm`).
"""

import os
import time
from typing import Any, Dict

import flax
import jax.numpy as jnp
import numpy as np

from avgmm import gmm as gmm_lib
from avgmm import files, progress
from avgmm.evaluators import gmm_auc
from avgmm.evaluators.gmm_auc import imbalanced_auc
from avgmm.methods import base
from avgmm.workdir import Workdir

# The per-sample columns a fit's file keeps, where the data has them.
FIT_COLUMNS = ("index", "id", "label", "imbalanced", "degraded", "gap", "p_audio",
               "p_visual")


@flax.struct.dataclass
class GmmState:
    """The GMM in force and every training sample's inference-mode gap it was fitted to
    (by dataset index)."""

    gmm: gmm_lib.GMMParams
    fit_gaps: jnp.ndarray



class FitsGmm:
    """What a method that refits the GMM has in common: its state (`GmmState`), the
    mixture the analysis uses, the fit in the epoch's console line, and its fits in
    results.json (count, ambiguous ones, and their AUROC where the data has a flag)."""

    passes = ("samples", "fit_gmm")  # refit_gmm's

    def init_state(self, meta):
        return GmmState(gmm=gmm_lib.unfitted(gmm_lib.components_of(self.config.gmm)),
                        fit_gaps=np.zeros((meta.num_examples["train"],), np.float32))

    def mixture(self, method_state):
        return method_state.gmm

    def console_note(self, record):
        if "gmm_fit" not in record:
            return ""
        f = record["gmm_fit"]
        if "pi_2" in f:  # three components: balanced, audio-dominant, visual-dominant
            return (f" | GMM fit {f['fit_index']}: pi_a {f['pi_1']:.3f} pi_v {f['pi_2']:.3f} "
                    f"mu_0 {f['mu_0']:+.3f} mu_a {f['mu_1']:+.3f} mu_v {f['mu_2']:+.3f}")
        return (f" | GMM fit {f['fit_index']}: pi_1 {f['pi_1']:.3f} mu_0 {f['mu_0']:+.3f} "
                f"mu_1 {f['mu_1']:+.3f}")

    def results(self, run):
        out = {"gmm_fits": run.meta.get("gmm_fits", 0),
               # Fits whose gaps did not support two components (labelling arbitrary).
               "gmm_ambiguous_fits": list(run.meta.get("ambiguous_fits", []))}
        if run.ds.meta.has_imbalance_flag:
            # How well each fit's imbalanced posterior found the degraded training clips.
            out["gmm_fit_aucs"] = list(run.meta.get("fit_aucs", []))
        for subset, _, _ in gmm_auc.DIRECTIONS:  # per direction, where the data tells
            if f"fit_auc_{subset}s" in run.meta:
                out[f"gmm_fit_aucs_{subset}"] = list(run.meta[f"fit_auc_{subset}s"])
        return out


def posteriors_of(state: GmmState, index: jnp.ndarray):
    """`(w_imb, gap)` of the samples at dataset `index`: the imbalanced posterior of their
    gap at the last fit under the GMM in force, and that gap."""
    _, w_audio, w_visual, gap = direction_posteriors_of(state, index)
    # One of the two is exactly 0 for K = 2, so the sum is component 1's posterior itself.
    return w_audio + w_visual, gap


def direction_posteriors_of(state: GmmState, index: jnp.ndarray):
    """`(w_bal, w_audio_dominant, w_visual_dominant, gap)` of the samples at dataset
    `index`, from their gap at the last fit (`gmm.direction_posteriors`; for K = 2 the
    imbalanced posterior on the side of the imbalanced component's mean)."""
    gap = state.fit_gaps[index]
    return (*gmm_lib.direction_posteriors(state.gmm, gap), gap)


def refit_gmm(run: base.RunContext, state, fit_index: int, epochs_done: int):
    """Algorithm 1, steps a-b: the gaps of every training sample in inference mode, a
    GMM fitted to them on the device, and the fit's record (saved under `gmm_fits/`).

    Returns the state with the new mixture (and the gaps it was fitted to) and the record;
    `run.meta` (checkpointed) gains the fit count, the fit's AUC where the data has a
    ground-truth flag, and whether its labelling was ambiguous.
    """
    par, meta = run.par, run.meta
    start = time.time()
    progress.say(f"GMM fit {fit_index}: collecting the training gaps and fitting")
    device, host = run.samples(state, "train", keep=("gap",))
    host_gaps = {k: host[k] for k in FIT_COLUMNS if k in host}
    fitted = gmm_lib.fit_on_devices(par, device["gap"], device["mask"], run.config.gmm)
    state = state.replace(method_state=GmmState(
        gmm=fitted, fit_gaps=par.replicate(np.asarray(host_gaps["gap"], np.float32))))
    gmm = par.fetch(fitted)
    fit = gmm.to_dict()
    fit.update(fit_index=fit_index, seconds=time.time() - start,
               gap_mean=float(host_gaps["gap"].mean()), gap_std=float(host_gaps["gap"].std()))
    if "imbalanced" in host_gaps:
        auc = imbalanced_auc(gmm, host_gaps["gap"], host_gaps["imbalanced"])
        fit["auc_imbalanced"] = auc
        meta["fit_aucs"] = list(meta.get("fit_aucs", [])) + [auc]
    classes = gmm_auc.direction_classes(run.ds.meta)
    if classes is not None and "degraded" in host_gaps:
        for key, auc in gmm_auc.direction_aucs(gmm, host_gaps["gap"], host_gaps["degraded"],
                                               classes).items():
            fit[key] = auc
            meta[f"fit_{key}s"] = list(meta.get(f"fit_{key}s", [])) + [auc]
    used = fit.get("components_used")
    if fit["fallback"] and used == 2:
        progress.say(f"GMM fit {fit_index}: two components instead of three (one collapsed, "
                     "or gmm.select=bic preferred two): one direction has no samples")
    elif fit["fallback"]:
        progress.say(f"GMM fit {fit_index}: one component (degenerate gaps, or "
                     "gmm.select=bic preferred one): every sample counts as balanced")
    elif fit["ambiguous"] and used == 3:
        progress.say(f"GMM fit {fit_index}: labelling ambiguous: the gaps do not support three "
                     f"components (BIC three {fit['bic_three']:.1f} >= two "
                     f"{fit['bic_two']:.1f} or one {fit['bic_one']:.1f}); gmm.select=bic "
                     "keeps fewer")
    elif fit["ambiguous"]:
        progress.say(f"GMM fit {fit_index}: labelling ambiguous: the gaps do not support two "
                     f"components (BIC two {fit['bic_two']:.1f} >= one {fit['bic_one']:.1f}); "
                     "gmm.select=bic treats them as balanced")
    if par.is_primary:  # every process of a multi-host run holds the same fit
        save_fit(run.workdir, fit_index, epochs_done, gmm, host_gaps)
    meta["gmm_fits"] = fit_index + 1
    meta["ambiguous_fits"] = (list(meta.get("ambiguous_fits", []))
                              + ([fit_index] if fit["ambiguous"] else []))
    return state, fit


def save_fit(workdir: Workdir, fit_index: int, epoch: int, gmm: gmm_lib.GMMParams,
             host: Dict[str, Any]) -> None:
    """Gap array and fitted parameters of one GMM fit, for plots made after the fact."""
    path = workdir.file(Workdir.GMM_FITS)
    os.makedirs(path, exist_ok=True)
    params = {k: np.asarray(v) for k, v in gmm.to_dict().items()}
    arrays = dict(host, id=np.asarray(host["id"], dtype=str))
    tmp = os.path.join(path, f".fit_{fit_index:03d}.npz")
    final = os.path.join(path, f"fit_{fit_index:03d}.npz")
    nbytes = sum(np.asarray(v).nbytes for v in [*arrays.values(), *params.values()])
    # A full disk is one line (`DiskFullError`), as for every other file of the run.
    with files.disk_full_guard(final, nbytes, kept="earlier fits and checkpoints are "
                               "unchanged"):
        try:
            with open(tmp, "wb") as f:
                np.savez(f, epoch=epoch, **arrays,
                         **{f"gmm_{k}": v for k, v in params.items()})
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        os.replace(tmp, final)
