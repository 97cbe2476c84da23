"""Plots and a per-sample imbalance report of one run, from its workdir.

    python -m avgmm.analyze --workdir=runs/x [--checkpoint=best|latest|EPOCH]
        [--split=train|validation|test] [--noscore]
    python -m avgmm.analyze --compare runs/a runs/b ... [--out=comparison.png]

Writes into `runs/x/plots/`: `gmm_fit_<k>.png` (gap histogram and fitted mixture of every
GMM fit), `gmm_evolution.png`, `accuracy.png` (multimodal, audio-only and visual-only
validation accuracy, phase boundary and refits marked) and `losses.png`; and
`runs/x/imbalance.csv`: for every clip of the split, its id, label, audio and visual
probability of the true class, gap, posterior of the imbalanced component and dominant
modality, most imbalanced first, with `imbalance_source.json` beside it (the checkpoint,
its epochs completed and the GMM that gave the posteriors). Data with human ratings
(CREMA-D prepared with its summary table) also gets the CSV columns `human_*_right` and
`gap_by_human_rating.png`: the scored gaps' histogram split by what people recognized
(voice only, face only, both, neither), with that GMM. Every title names the run
(method, dataset, seed, and the fields changed relative to its dataset's config file).
`--compare` draws the paper's Figure 4 for several runs in one figure. Works on
interrupted runs too (it reads what was saved).
"""

import csv
import glob
import json
import os
import textwrap
from typing import Any, Dict, List, Tuple

import ml_collections
import numpy as np
from absl import flags, logging

from avgmm import build, cli, config_text, evaluation, files
from avgmm import gmm as gmm_lib
from avgmm.analysis import human_ratings, plots, report
from avgmm.errors import AnalysisError
from avgmm.workdir import Workdir
from data_prep import registry


def load_run(workdir: str):
    """`(config, records)` of a workdir, with clear errors for what is missing."""
    config_path = Workdir(workdir).file(Workdir.CONFIG)
    if not os.path.exists(config_path):
        raise AnalysisError(f"{workdir} holds no run (no config.json): pass the --workdir "
                            "of a training run")
    with open(config_path, encoding="utf-8") as f:
        config = ml_collections.ConfigDict(json.load(f))
    try:
        records = Workdir(workdir).read_metrics()
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
    for path in sorted(glob.glob(os.path.join(Workdir(workdir).file(Workdir.GMM_FITS),
                                              "fit_*.npz"))):
        with np.load(path) as z:
            params = {k[4:]: float(z[k]) for k in z.files
                      if k.startswith("gmm_") and k[4:].split("_")[0] in ("pi", "mu", "var")}
            fits.append({"gaps": z["gap"], "params": params, "epoch": int(z["epoch"]),
                         "ambiguous": bool(z["gmm_ambiguous"]) if "gmm_ambiguous" in z.files
                         else False})
    return fits


def run_label(config: ml_collections.ConfigDict) -> str:
    """`<method> on <dataset>, seed N [configs/x.py + field=value, ...]` for titles."""
    plain = json.loads(config.to_json_best_effort())
    method, _ = report.run_label(plain)
    name = plain["data"]["name"]
    label = f"{method} on {report.dataset_name(name)}, seed {plain['seed']}"
    base = registry.config_file(name)  # the config file the dataset's runs start from
    if base is None:
        return label
    try:
        diff = config_text.overrides(
            config_text.load_config_file(os.path.join(config_text.CONFIG_DIR, base)), config)
    except Exception:  # a config file that no longer builds: the label alone still says it
        return label
    diff = {k: v for k, v in diff.items() if k not in config_text.RUNTIME_FIELDS and k != "seed"}
    changes = ", ".join(f"{k}={new!r}" for k, (_, new) in diff.items())
    return label + f" [configs/{base}" + (f" + {changes}" if changes else "") + "]"


def draw_plots(workdir: str, records: List[Dict], fits: List[Dict],
               config: ml_collections.ConfigDict = None) -> List[str]:
    """Writes every figure into `workdir/plots/`; returns their paths. Titles name the
    run when its `config` is given."""
    out = Workdir(workdir).file(Workdir.PLOTS)
    os.makedirs(out, exist_ok=True)
    # Wrapped: a run with several changes makes a label wider than any figure.
    run = textwrap.fill(run_label(config), 100) if config is not None else ""
    loss_config = config.loss.to_dict() if config is not None else {}
    written = []
    for k, fit in enumerate(fits):
        path = os.path.join(out, f"gmm_fit_{k}.png")
        plots.gmm_fit(path, fit["gaps"], fit["params"],
                      (run + "\n" if run else "") +
                      f"GMM {plots.fit_title(k, fit)} on {len(fit['gaps'])} training gaps")
        written.append(path)
    if fits:
        path = os.path.join(out, "gmm_evolution.png")
        plots.gmm_evolution(path, fits, run)
        written.append(path)
    path = os.path.join(out, "accuracy.png")
    plots.accuracy(path, records, run)
    written.append(path)
    path = os.path.join(out, "losses.png")
    plots.losses(path, records, loss_config, run,
                 method=config.method if config is not None else None)
    written.append(path)
    return written


def compare(workdirs: List[str], path: str) -> str:
    """The paper's Figure 4 for several runs (`plots.compare`); returns the path."""
    runs = []
    for workdir in workdirs:
        config, records = load_run(os.path.abspath(os.path.expanduser(workdir)))
        runs.append((run_label(config), records))
    labels = [label for label, _ in runs]
    # Runs that differ only in where they were written: tell them apart by folder.
    runs = [(label + (f" ({os.path.basename(os.path.normpath(w))})"
                      if labels.count(label) > 1 else ""), records)
            for (label, records), w in zip(runs, workdirs)]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    plots.compare(path, runs)
    return path


def score(config: ml_collections.ConfigDict, workdir: str, which: Any,
          split: str) -> List[Dict[str, Any]]:
    """Per-sample gaps and imbalanced posteriors of a checkpoint on a split (see
    `score_with_source`)."""
    return score_with_source(config, workdir, which, split)[0]


def score_with_source(config: ml_collections.ConfigDict, workdir: str, which: Any,
                      split: str) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """Per-sample gaps and imbalanced posteriors of a checkpoint on a split, and how they
    were made (checkpoint, epochs completed, which GMM).

    The posterior uses the GMM saved in that checkpoint; a checkpoint without a fitted
    GMM (concat, warm-up) gets one fitted to the scored gaps, and says so.
    """
    run = build.load_checkpoint(config, workdir, which)
    if run is None:
        raise AnalysisError(f"{workdir} has no {which} checkpoint yet")
    par, ds = run.par, run.ds
    if split not in ds.meta.num_examples:
        raise AnalysisError(f"--split={split}: the dataset has {list(ds.meta.num_examples)}")
    device, host = evaluation.sample_rows(par, run.state, ds, split, config.eval_batch_size,
                                          keep=("gap",))
    mixture = run.method.mixture(run.host_state.method_state)
    epoch = int(run.host_state.epoch)
    fits = int(run.ckpt_meta.get("gmm_fits", 0))
    if mixture is None or bool(mixture.fallback):
        print(f"checkpoint {which} carries no fitted GMM ({config.method}); fitting one to "
              f"the {split} gaps", flush=True)
        mixture = par.fetch(gmm_lib.fit_on_devices(par, device["gap"], device["mask"],
                                                   config.gmm))
        gmm_source = f"fitted by the analysis to the {split} gaps of this checkpoint"
    else:
        gmm_source = (f"the GMM in force in the checkpoint: fit {fits - 1} of the training "
                      "gaps (see gmm_fits/)" if fits else "the GMM saved in the checkpoint")
    source = {"checkpoint": str(which), "epochs_completed": epoch, "split": split,
              "gmm": gmm_source, "gmm_params": files.to_python(mixture.to_dict())}
    post = np.asarray(gmm_lib.imbalanced_posterior(mixture, host["gap"]))
    names = ds.meta.class_names
    # What people recognized from the voice and from the face (CREMA-D's ratings).
    human_fields = sorted(k for k in host if k.startswith("human_") and k.endswith("_right"))
    rows = []
    for i in range(len(host["gap"])):
        gap = float(host["gap"][i])
        row = {"id": host["id"][i], "label": names[int(host["label"][i])],
               "p_audio": float(host["p_audio"][i]), "p_visual": float(host["p_visual"][i]),
               "gap": gap, "posterior_imbalanced": float(post[i]),
               "dominant_modality": "audio" if gap > 0 else ("visual" if gap < 0 else "none")}
        if "imbalanced" in host:
            row["imbalanced_ground_truth"] = bool(host["imbalanced"][i])
        for k in human_fields:
            row[k] = bool(host[k][i])
        rows.append(row)
    rows.sort(key=lambda r: -r["posterior_imbalanced"])
    return rows, source


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
    written = draw_plots(workdir, records, load_fits(workdir), config)
    out = {"plots": written}
    if with_scores:
        rows, source = score_with_source(config, workdir, checkpoint, split)
        wd = Workdir(workdir)
        path = wd.file(Workdir.IMBALANCE_CSV)
        write_csv(path, rows)
        out["imbalance_csv"] = path
        if human_ratings.has_ratings(rows):
            figure = os.path.join(wd.file(Workdir.PLOTS), "gap_by_human_rating.png")
            human_ratings.gap_histogram(
                figure, rows, source["gmm_params"],
                textwrap.fill(run_label(config), 100) + f"\n{split} gaps ({checkpoint} checkpoint) "
                "by what people recognized from the voice and the face")
            out["plots"].append(figure)
        # Which checkpoint and which GMM produced the rows: the CSV stays plain.
        files.write_json(wd.file(Workdir.IMBALANCE_SOURCE), source)
        out["imbalance_source"] = wd.file(Workdir.IMBALANCE_SOURCE)
    return out


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Command-line flags (defined only when run as a program)."""
    flags.DEFINE_string("workdir", None, "Workdir of a training run.")
    flags.DEFINE_string("checkpoint", "best", "best, latest, or an epoch number.")
    flags.DEFINE_enum("split", "train", ["train", "validation", "test"], "Split to score.")
    flags.DEFINE_bool("score", True, "Score a checkpoint into imbalance.csv.")
    flags.DEFINE_bool("compare", False, "Instead: overlay the validation accuracy "
                      "(multimodal, audio-only, visual-only) of the runs given as "
                      "arguments, the paper's Figure 4.")
    flags.DEFINE_string("out", None, "With --compare: the figure's path (default: "
                        "comparison.png in the runs' common parent folder).")


def main(argv):
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    if FLAGS.compare:
        runs = argv[1:] + ([FLAGS.workdir] if FLAGS.workdir else [])
        if not runs:
            cli.usage_error("--compare needs run folders: python -m avgmm.analyze "
                            "--compare RUN_A RUN_B ...")
        if FLAGS["out"].present:
            cli.folder_flag("--out", FLAGS.out, "runs/comparison.png")
        out = FLAGS.out or os.path.join(
            os.path.commonpath([os.path.abspath(os.path.expanduser(r)) for r in runs]),
            "comparison.png")
        try:
            print(compare(runs, out))
        except (AnalysisError, ValueError, FileNotFoundError) as e:
            cli.usage_error(e)
        return
    if len(argv) > 1:
        cli.usage_error(f"unexpected arguments {argv[1:]}; several runs need --compare")
    if not FLAGS.workdir:
        cli.usage_error("--workdir is required (or --compare RUN_A RUN_B ...)")
    cli.folder_flag("--workdir", FLAGS.workdir)
    which = FLAGS.checkpoint
    if which not in ("best", "latest"):
        if not which.isdigit():
            cli.usage_error(f"--checkpoint={which!r}: use best, latest or an epoch number")
        which = int(which)
    try:
        out = analyze(FLAGS.workdir, which, FLAGS.split, FLAGS.score)
    except (AnalysisError, ValueError, FileNotFoundError) as e:
        cli.usage_error(e)
    for path in out["plots"]:
        print(path)
    if "imbalance_csv" in out:
        print(out["imbalance_csv"])
        print(out["imbalance_source"])


if __name__ == "__main__":
    define_flags()
    cli.run(main)
