"""Plots and a per-sample imbalance report of one run, from its workdir.

    python -m avgmm.analyze --workdir=runs/x [--checkpoint=best|latest|EPOCH]
        [--split=train|validation|test] [--noscore]

Writes into `runs/x/plots/`: `gmm_fit_<k>.png` (gap histogram and fitted mixture of every
GMM fit), `gmm_evolution.png`, `accuracy.png` (multimodal, audio-only and visual-only
validation accuracy, phase boundary and refits marked) and `losses.png`; and
`runs/x/imbalance.csv`: for every clip of the split, its id, label, audio and visual
probability of the true class, gap, posterior of the imbalanced component and dominant
modality, most imbalanced first. Works on interrupted runs too (it reads what was saved).
"""

import csv
import glob
import json
import os
import sys
from typing import Any, Dict, List

import ml_collections
import numpy as np
from absl import app, flags, logging

from avgmm import gmm as gmm_lib
from avgmm import plots, train, utils


class AnalysisError(Exception):
    """The workdir lacks what the analysis needs; the message says what."""


def load_run(workdir: str):
    """`(config, records)` of a workdir, with clear errors for what is missing."""
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        raise AnalysisError(f"{workdir} holds no run (no config.json): pass the --workdir "
                            "of a training run")
    with open(config_path, encoding="utf-8") as f:
        config = ml_collections.ConfigDict(json.load(f))
    try:
        records = utils.read_metrics(workdir)
    except ValueError as e:
        raise AnalysisError(f"unreadable metrics file: {e}") from e
    if not records:
        raise AnalysisError(f"{workdir}/metrics.jsonl has no epoch yet: let the run finish "
                            "at least one epoch")
    return config, records


def load_fits(workdir: str) -> List[Dict[str, Any]]:
    """Every saved GMM fit: gaps, parameters, the epochs completed when it was made, and
    whether its labelling was ambiguous."""
    fits = []
    for path in sorted(glob.glob(os.path.join(workdir, "gmm_fits", "fit_*.npz"))):
        with np.load(path) as z:
            params = {k[4:]: float(z[k]) for k in z.files
                      if k.startswith("gmm_") and k[4:].split("_")[0] in ("pi", "mu", "var")}
            fits.append({"gaps": z["gap"], "params": params, "epoch": int(z["epoch"]),
                         "ambiguous": bool(z["gmm_ambiguous"]) if "gmm_ambiguous" in z.files
                         else False})
    return fits


def draw_plots(workdir: str, records: List[Dict], fits: List[Dict]) -> List[str]:
    """Writes every figure into `workdir/plots/`; returns their paths."""
    out = os.path.join(workdir, "plots")
    os.makedirs(out, exist_ok=True)
    written = []
    for k, fit in enumerate(fits):
        path = os.path.join(out, f"gmm_fit_{k}.png")
        plots.gmm_fit(path, fit["gaps"], fit["params"],
                      f"GMM {plots.fit_title(k, fit)} on {len(fit['gaps'])} training gaps")
        written.append(path)
    if fits:
        path = os.path.join(out, "gmm_evolution.png")
        plots.gmm_evolution(path, fits)
        written.append(path)
    for name, draw in (("accuracy.png", plots.accuracy), ("losses.png", plots.losses)):
        draw(os.path.join(out, name), records)
        written.append(os.path.join(out, name))
    return written


def score(config: ml_collections.ConfigDict, workdir: str, which: Any,
          split: str) -> List[Dict[str, Any]]:
    """Per-sample gaps and imbalanced posteriors of a checkpoint on a split.

    The posterior uses the GMM saved in that checkpoint; a checkpoint without a fitted
    GMM (concat, warm-up) gets one fitted to the scored gaps, and says so.
    """
    ds = train.open_dataset(config)
    if split not in ds.meta.num_examples:
        raise AnalysisError(f"--split={split}: the dataset has {list(ds.meta.num_examples)}")
    devices = train.select_devices(config)
    par = train.Parallel(devices, config, ds.meta)
    tx = train.make_optimizer(config, ds.steps_per_epoch(config.batch_size))
    ckpt = utils.Checkpointer(workdir)
    try:
        restored = ckpt.restore(train.create_train_state(config, ds.meta, tx), which)
    finally:
        ckpt.close()
    if restored is None:
        raise AnalysisError(f"{workdir} has no {which} checkpoint yet")
    host_state, _ = restored
    state = par.replicate(host_state)
    dev_gaps, dev_mask, host = train.collect_gaps(par, state, ds, split,
                                                  config.eval_batch_size)
    mixture = host_state.gmm
    if bool(mixture.fallback):
        print(f"checkpoint {which} carries no fitted GMM ({config.method}); fitting one to "
              f"the {split} gaps", flush=True)
        mixture = par.unreplicate(par.fit_gmm(dev_gaps, dev_mask))
    post = np.asarray(gmm_lib.posteriors(mixture, host["gap"]))[:, 1]
    names = ds.meta.class_names
    rows = []
    for i in range(len(host["gap"])):
        gap = float(host["gap"][i])
        row = {"id": host["id"][i], "label": names[int(host["label"][i])],
               "p_audio": float(host["p_audio"][i]), "p_visual": float(host["p_visual"][i]),
               "gap": gap, "posterior_imbalanced": float(post[i]),
               "dominant_modality": "audio" if gap > 0 else ("visual" if gap < 0 else "none")}
        if "imbalanced" in host:
            row["imbalanced_ground_truth"] = bool(host["imbalanced"][i])
        rows.append(row)
    rows.sort(key=lambda r: -r["posterior_imbalanced"])
    return rows


def write_csv(path: str, rows: List[Dict[str, Any]]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v)
                             for k, v in r.items()})
    os.replace(tmp, path)


def analyze(workdir: str, checkpoint: Any = "best", split: str = "train",
            with_scores: bool = True) -> Dict[str, Any]:
    """Draws the plots and, with `with_scores`, writes `imbalance.csv`; returns paths."""
    workdir = os.path.abspath(os.path.expanduser(workdir))
    config, records = load_run(workdir)
    written = draw_plots(workdir, records, load_fits(workdir))
    out = {"plots": written}
    if with_scores:
        rows = score(config, workdir, checkpoint, split)
        path = os.path.join(workdir, "imbalance.csv")
        write_csv(path, rows)
        out["imbalance_csv"] = path
    return out


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Command-line flags (defined only when run as a program)."""
    flags.DEFINE_string("workdir", None, "Workdir of a training run.")
    flags.DEFINE_string("checkpoint", "best", "best, latest, or an epoch number.")
    flags.DEFINE_enum("split", "train", ["train", "validation", "test"], "Split to score.")
    flags.DEFINE_bool("score", True, "Score a checkpoint into imbalance.csv.")


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    which = FLAGS.checkpoint
    if which not in ("best", "latest"):
        if not which.isdigit():
            sys.exit(f"error: --checkpoint={which!r}: use best, latest or an epoch number")
        which = int(which)
    try:
        out = analyze(FLAGS.workdir, which, FLAGS.split, FLAGS.score)
    except (AnalysisError, ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    for path in out["plots"]:
        print(path)
    if "imbalance_csv" in out:
        print(out["imbalance_csv"])


if __name__ == "__main__":
    define_flags()
    flags.mark_flag_as_required("workdir")
    app.run(main)
