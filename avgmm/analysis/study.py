"""Tables and figures of a reproduction study: several variants, several seeds each.

    python -m avgmm.study ROOT [--out=DIR] [--show=a,b,c] [--split=val|test]
    python -m avgmm.study LEDGER.jsonl [LEDGER.jsonl ...] --out=DIR [...]

`ROOT` holds one folder per variant with one finished run per seed
(`ROOT/<variant>/seed<k>/results.json`, as `launch.sh study` writes them); or a sweep's
ledger (avgmm/experiments/ledger.py) stands in for it, alone. Several ledgers (one per
benchmark setting, e.g. docs/gmm_guidance/noise.jsonl ...) give one study each, in
DIR/<ledger name>/, and `verdict.md`: the settings side by side, which of them can tell,
and whether GMM guidance helps (avgmm/analysis/verdicts.py). For every
variant, mean ± sample std over seeds of:
- test accuracy of the best-validation checkpoint (the headline) and of the last epoch;
- test accuracy of the warm-up model (the epoch that ends the warm-up), so that the
  adaptive phase is judged against the model it starts from;
- where the best-validation epoch lies (how many seeds have it inside the adaptive phase);
- validation audio-only and visual-only accuracy at the end of warm-up and at the end;
- test accuracy on the degraded clips (best-validation checkpoint and last epoch) and on
  the clean ones (last epoch), for data with a ground-truth flag;
- the GMM's imbalanced-posterior ROC AUC against the degraded training clips, per fit.
Writes `study.md` (the tables) and, in the style of the paper's Figures 3 and 4,
`study_accuracy.png` (validation accuracy per epoch, seeds averaged) and `study_gmm.png`
(imbalanced weight and AUC per fit).
"""

import json
import os
import statistics
from typing import Any, Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from absl import flags  # noqa: E402

from avgmm import cli, experiments  # noqa: E402
from avgmm.analysis import comparison, verdicts  # noqa: E402
from avgmm.errors import ExperimentError, StudyError  # noqa: E402
from avgmm.experiments import ledger, tuning  # noqa: E402
from avgmm.experiments.variants import GUIDED_PEERS  # noqa: E402
from avgmm.workdir import Workdir  # noqa: E402


def load_runs(root: str) -> Dict[str, List[Dict[str, Any]]]:
    """`{variant: [run, ...]}` for every finished run below `root/<variant>/`."""
    if not os.path.isdir(root):
        raise StudyError(f"{root} is not a directory")
    variants: Dict[str, List[Dict[str, Any]]] = {}
    for variant in sorted(os.listdir(root)):
        vdir = os.path.join(root, variant)
        if not os.path.isdir(vdir):
            continue
        for seed_dir in sorted(os.listdir(vdir)):
            run = os.path.join(vdir, seed_dir)
            if not os.path.exists(os.path.join(run, "results.json")):
                continue
            with open(os.path.join(run, "results.json"), encoding="utf-8") as f:
                results = json.load(f)
            with open(os.path.join(run, "config.json"), encoding="utf-8") as f:
                config = json.load(f)
            variants.setdefault(variant, []).append(
                {"run": run, "results": results, "config": config,
                 "records": Workdir(run).read_metrics()})
    if not variants:
        raise StudyError(f"{root} holds no finished run (no <variant>/<seed>/results.json)")
    return variants


def ledger_runs(path: str) -> Dict[str, List[Dict[str, Any]]]:
    """`{variant: [run, ...]}` from a sweep's ledger alone (of a tuned sweep: each
    variant's chosen setting, chosen again from the ledger's validation accuracies)."""
    if not os.path.isfile(path):
        raise StudyError(f"{path}: no such ledger file")
    try:
        runs, _, lines = tuning.table_runs([path])
    except ExperimentError as e:
        raise StudyError(str(e)) from e
    configs = sorted({line["config"] for line in lines})
    if len(configs) > 1:
        raise StudyError(f"{path} holds runs of {len(configs)} configs ({', '.join(configs)}): "
                         "one study per config; keep one ledger per sweep command")
    variants: Dict[str, List[Dict[str, Any]]] = {}
    for run in sorted(runs, key=lambda r: (r["config"]["variant"], r["config"]["seed"])):
        variants.setdefault(run["config"]["variant"], []).append(run)
    return variants


def run_summary(run: Dict[str, Any]) -> Dict[str, Any]:
    """The study's numbers of one run (accuracies as fractions)."""
    results, records, config = run["results"], run["records"], run["config"]
    warm = warmup_end(results, config)
    by_epoch = {r["epoch"]: r for r in records}
    last = records[-1]
    out = {
        "test_best_val": results["test_accuracy"],
        "test_last": results["last_epoch"]["accuracy"],
        "best_epoch": results["best_epoch"],
        "epochs": results["epochs"],
        "val_audio_end": last["val"]["accuracy_audio"],
        "val_visual_end": last["val"]["accuracy_visual"],
        "test_degraded": results.get("test_accuracy_degraded"),
        "test_degraded_last": results["last_epoch"].get("accuracy_degraded"),
        "test_clean_last": results["last_epoch"].get("accuracy_clean"),
        "fit_aucs": results.get("gmm_fit_aucs", []),
        "fit_aucs_image": results.get("gmm_fit_aucs_image_degraded", []),
        "fit_aucs_audio": results.get("gmm_fit_aucs_audio_degraded", []),
        "fit_pi1": [r["gmm_fit"]["pi_1"] for r in records if "gmm_fit" in r],
    }
    # (Not where that epoch went unevaluated: config.eval_every_epochs > 1.)
    if warm and "val" in by_epoch.get(warm, {}):
        end_of_warmup = by_epoch[warm]
        out.update(test_warmup=end_of_warmup["test"]["accuracy"],
                   val_audio_warmup=end_of_warmup["val"]["accuracy_audio"],
                   val_visual_warmup=end_of_warmup["val"]["accuracy_visual"],
                   best_in_adaptive=results["best_epoch"] > warm)
    return out


def warmup_end(results: Dict[str, Any], config: Dict[str, Any]) -> Optional[int]:
    """The last epoch of a warm-up phase that another phase follows (the model a later
    phase starts from), from the schedule the run recorded; None without one."""
    spans = results.get("phases")
    if spans is None and config["method"] == "adaptive":  # runs from before `phases`
        return config["schedule"]["warmup_epochs"]
    for span, following in zip(spans or [], (spans or [])[1:]):
        if span["phase"] == "warmup" and following["phase"] != "warmup":
            return span["last_epoch"]
    return None


def _stat(values: Sequence[Optional[float]], scale: float = 100.0, digits: int = 1) -> str:
    values = [scale * v for v in values if v is not None]
    if not values:
        return "-"
    mean = statistics.fmean(values)
    spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{mean:.{digits}f}{spread}"


def summarize(variants: Dict[str, List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """One row per variant: per-run summaries and the pooled cells of the tables."""
    rows = []
    for name, runs in variants.items():
        s = [run_summary(r) for r in runs]
        seeds = sorted({r["config"]["seed"] for r in runs})
        row = {"variant": name, "seeds": len(seeds), "runs": s}
        for key in ("test_best_val", "test_last", "test_warmup", "val_audio_warmup",
                    "val_audio_end", "val_visual_warmup", "val_visual_end", "test_degraded",
                    "test_degraded_last", "test_clean_last"):
            row[key] = _stat([x.get(key) for x in s])
        inside = [x["best_in_adaptive"] for x in s if "best_in_adaptive" in x]
        row["best_in_adaptive"] = f"{sum(inside)}/{len(inside)}" if inside else "-"
        row["best_epoch"] = ", ".join(str(x["best_epoch"]) for x in s)
        for key in ("fit_aucs", "fit_aucs_image", "fit_aucs_audio"):
            n_fits = max((len(x[key]) for x in s), default=0)
            row[key] = " / ".join(
                _stat([x[key][k] if k < len(x[key]) else None for x in s], 1.0, 3)
                .replace(" ± ", "±") for k in range(n_fits)) if n_fits else "-"
        rows.append(row)
    return rows


def _escape(cell: str) -> str:
    return str(cell).replace("|", "\\|")


def tables(rows: List[Dict[str, Any]]) -> str:
    """The study's two Markdown tables: accuracy, then what happens inside training."""
    acc_cols = [("variant", "variant"), ("seeds", "seeds"),
                ("test_best_val", "test acc, best-val ckpt"), ("test_last", "test acc, last"),
                ("test_warmup", "test acc, end of warm-up"),
                ("test_degraded", "degraded clips, best-val"),
                ("test_degraded_last", "degraded clips, last"),
                ("test_clean_last", "clean clips, last"),
                ("best_in_adaptive", "best-val epoch in adaptive phase"),
                ("best_epoch", "best-val epochs")]
    dyn_cols = [("variant", "variant"),
                ("val_audio_warmup", "val audio, end of warm-up"),
                ("val_audio_end", "val audio, end"),
                ("val_visual_warmup", "val visual, end of warm-up"),
                ("val_visual_end", "val visual, end"),
                ("fit_aucs", "GMM AUROC per fit (degraded train clips)"),
                ("fit_aucs_image", "p(audio dominant) AUROC per fit (degraded images)"),
                ("fit_aucs_audio", "p(visual dominant) AUROC per fit (degraded audio)")]
    out = []
    for cols in (acc_cols, dyn_cols):
        out.append("| " + " | ".join(name for _, name in cols) + " |")
        out.append("|" + "---|" * len(cols))
        for r in rows:
            out.append("| " + " | ".join(_escape(r[k]) for k, _ in cols) + " |")
        out.append("")
    return "\n".join(out)


def _curve(runs: List[Dict[str, Any]], split: str, key: str):
    """Mean over seeds of a per-epoch metric (epochs every run has)."""
    n = min(len(r["records"]) for r in runs)
    epochs = [runs[0]["records"][i]["epoch"] for i in range(n)]
    return epochs, [100 * statistics.fmean(r["records"][i][split][key] for r in runs)
                    for i in range(n)]


def figures(variants: Dict[str, List[Dict[str, Any]]], out_dir: str, title: str,
            shown: Optional[Sequence[str]] = None, split: str = "val") -> List[str]:
    """Figure-4-style accuracy curves (of `split`: val or test) and Figure-3-style
    mixture evolution."""
    shown = [v for v in (shown or variants) if v in variants]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=False)
    for ax, (key, name) in zip(axes, (("accuracy", "multimodal"), ("accuracy_audio", "audio-only"),
                                      ("accuracy_visual", "visual-only"))):
        for v in shown:
            epochs, values = _curve(variants[v], split, key)
            ax.plot(epochs, values, "o-", ms=2.5, label=v)
        warm = [warmup_end(r["results"], r["config"]) for r in variants[shown[0]]]
        if warm[0]:
            ax.axvline(warm[0] + 0.5, color="0.5", lw=0.8, ls="--")
        ax.set_title(f"{'validation' if split == 'val' else 'test'} {name} accuracy")
        ax.set_xlabel("epoch (dashed: end of warm-up)")
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{title}: mean over seeds", fontsize=10)
    fig.tight_layout()
    paths = [os.path.join(out_dir, "study_accuracy.png")]
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)

    fitted = [v for v in shown if any(run_summary(r)["fit_aucs"] for r in variants[v])]
    if fitted:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
        for v in fitted:
            s = [run_summary(r) for r in variants[v]]
            n = min(len(x["fit_pi1"]) for x in s)
            ax1.plot(range(n), [statistics.fmean(x["fit_pi1"][k] for x in s) for k in range(n)],
                     "o-", label=v)
            n = min(len(x["fit_aucs"]) for x in s)
            ax2.plot(range(n), [statistics.fmean(x["fit_aucs"][k] for x in s)
                                for k in range(n)], "o-", label=v)
        ax1.set_title("imbalanced weight pi_1 per GMM fit")
        ax2.set_title("AUROC of w_imb vs degraded train clips")
        for ax in (ax1, ax2):
            ax.set_xlabel("GMM fit (adaptive step)")
            ax.grid(alpha=0.3)
        ax2.legend(fontsize=7)
        fig.suptitle(f"{title}: mean over seeds", fontsize=10)
        fig.tight_layout()
        paths.append(os.path.join(out_dir, "study_gmm.png"))
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("out", None, "Where to write study.md and the figures (default ROOT).")
    flags.DEFINE_list("show", [], "Variants drawn in the figures (default: all).")
    flags.DEFINE_enum("split", "val", ["val", "test"], "Split of the accuracy curves.")
    flags.DEFINE_string("reference", "warmup_only", "Variant the paired differences are "
                        "taken against (with the best of --peers).")
    flags.DEFINE_list("peers", list(GUIDED_PEERS), "Variants that are peers (the best one, by mean "
                      "headline accuracy, is the second reference).")


def write_study(variants: Dict[str, List[Dict[str, Any]]], out_dir: str, name: str) -> str:
    """Writes one study's `study.md` and figures into `out_dir`; returns the text."""
    os.makedirs(out_dir, exist_ok=True)
    rows = summarize(variants)
    any_run = next(iter(variants.values()))[0]
    title = f"{any_run['config']['data']['name']} ({name})"
    text = (f"# Study: {title}\n\nAccuracy (%) mean ± sample std over seeds.\n\n"
            + tables(rows))
    labels = {name: (experiments.find(name).label if experiments.find(name) else name)
              for name in variants}
    if FLAGS.reference in variants:
        text += ("\n## Paired differences\n\nPercentage points, mean over seeds with its 95% "
                 "Student-t interval, paired by seed; the best peer is the peer with the "
                 "highest mean headline accuracy.\n\n"
                 + comparison.paired_table(variants, FLAGS.reference, FLAGS.peers, labels)
                 + "\n")
    subsets = comparison.subsets_table(variants, labels)
    if subsets:
        text += ("\n## By degraded stream (test, best-validation checkpoint)\n\n" + subsets
                 + "\n")
    with open(os.path.join(out_dir, "study.md"), "w", encoding="utf-8") as f:
        f.write(text)
    paths = figures(variants, out_dir, title, FLAGS.show or None, FLAGS.split)
    print("wrote", os.path.join(out_dir, "study.md"), *paths)
    return text


def write_verdict(settings: Dict[str, Dict[str, List[Dict[str, Any]]]], out_dir: str) -> str:
    """Writes `verdict.md`: the settings side by side, whether each can tell, and the
    one-sentence verdict on GMM guidance; returns the text."""
    rows = [verdicts.guidance_row(name, variants) for name, variants in settings.items()]
    text = ("# Does GMM guidance help? The verdict over the settings\n\n"
            "Test accuracy (%) at the best-validation checkpoint, mean ± sample std over "
            "seeds; differences in points, paired by seed, with 95% Student-t intervals. "
            f"A setting whose warm-up-only model is within {verdicts.HEADROOM_POINTS:.0f} "
            "points of its own clean-clip accuracy cannot tell (the degraded clips cost too "
            "little for any treatment to show) and is left out of the verdict.\n\n"
            + verdicts.guidance_markdown(rows) + "\n\n**Verdict.** "
            + verdicts.guidance_verdict(rows) + "\n")
    path = os.path.join(out_dir, "verdict.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print("wrote", path)
    return text


def main(argv):
    paths = argv[1:]
    if not paths or (len(paths) > 1 and not all(ledger.is_ledger(p) for p in paths)):
        cli.usage_error("name one study folder, or ledgers (one per setting): python -m "
                        "avgmm.study ROOT|LEDGER... [--out=DIR] [--show=a,b,c] "
                        "[--split=val|test]")
    if FLAGS["out"].present:  # refused before any run is read
        cli.folder_flag("--out", FLAGS.out, "runs/study")
    from_ledger = ledger.is_ledger(paths[0])
    if from_ledger and not FLAGS.out:
        cli.usage_error(f"name the output folder of a ledger's study: python -m avgmm.study "
                        f"{' '.join(paths)} --out=DIR")
    try:
        studies = {verdicts.ledger_name(p): ledger_runs(p) if from_ledger else load_runs(p)
                   for p in paths}
    except StudyError as e:
        cli.usage_error(e)
    if len(studies) == 1:
        name, variants = next(iter(studies.items()))
        if not from_ledger:
            name = os.path.basename(os.path.abspath(paths[0]))
        print(write_study(variants, cli.output_folder("--out", FLAGS.out, paths[0],
                                                      "runs/study"), name))
        return
    for name, variants in studies.items():
        write_study(variants, os.path.join(FLAGS.out, name), name)
    print(write_verdict(studies, FLAGS.out))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
