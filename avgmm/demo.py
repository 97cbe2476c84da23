"""The README's main job: concat vs adaptive on the embedded `avsynth` dataset.

`python -m avgmm.demo [--workdir=runs/demo] [--data_dir=~/avgmm_data]` builds avsynth
if it is missing (offline, about 10 s), trains the concat baseline and the adaptive
method with `configs/demo.py`, and prints their test accuracies (multimodal, audio-only,
visual-only) and how well a GMM on each final model's training gaps finds the clips
whose visual stream was degraded (ROC AUC of the imbalanced posterior). Both runs resume
if interrupted.
"""

import json
import os

from absl import flags, logging

from avgmm import cli, config_text, methods, train
from avgmm.data import avsynth

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Command-line flags (defined only when run as a program)."""
    flags.DEFINE_string("workdir", "runs/demo", "Parent directory of the two runs.")
    flags.DEFINE_string("data_dir", "~/avgmm_data", "Where avsynth is (or will be) prepared.")
    flags.DEFINE_list("methods", ["concat", "warmup_only", "adaptive"], "Methods to compare.")
    flags.DEFINE_string("table_out", None, "Also write the results table (Markdown) here, "
                        "e.g. docs/demo/results.md.")


def results_table(results: dict) -> str:
    """Markdown table of the demo's results, one row per method."""
    lines = ["| method | test acc | last-epoch acc | audio-only | visual-only | "
             "degraded clips | GMM AUC, first fit | GMM AUC, final model |",
             "|---|---|---|---|---|---|---|---|"]
    for method, r in results.items():
        first_fit = r.get("gmm_fit_aucs") or []
        lines.append(
            f"| {method} | {r['test_accuracy']:.4f} | {r['last_epoch']['accuracy']:.4f} | "
            f"{r['test_accuracy_audio']:.4f} | {r['test_accuracy_visual']:.4f} | "
            f"{r['test_accuracy_degraded']:.4f} | "
            f"{f'{first_fit[0]:.3f}' if first_fit else '-'} | "
            f"{r['final_gmm_auc_imbalanced']:.3f} |")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        cli.usage_error(f"unexpected arguments {argv[1:]}: every option is a --flag=value")
    cli.folder_flag("--workdir", FLAGS.workdir, "runs/demo")
    unknown = [m for m in FLAGS.methods if m not in methods.REGISTRY]
    if unknown or not FLAGS.methods:
        cli.usage_error(f"--methods={','.join(FLAGS.methods)}: name registered methods, e.g. "
                        "--methods=concat,adaptive (python -m avgmm.methods lists them)")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    data_dir = os.path.expanduser(FLAGS.data_dir)
    print(f"Preparing avsynth in {data_dir} (skipped when already there)...", flush=True)
    avsynth.prepare(data_dir)
    results = {}
    for method in FLAGS.methods:
        config = config_text.load_config_file(config_text.repo_config("demo.py"))
        config.method = method
        config.data.data_dir = data_dir
        results[method] = train.train_and_evaluate(
            config, os.path.join(FLAGS.workdir, method))
    table = results_table(results)
    print("\n" + table)
    for path in [os.path.join(FLAGS.workdir, "demo_results.md")] + (
            [FLAGS.table_out] if FLAGS.table_out else []):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"Written by `python -m avgmm.demo` ({', '.join(FLAGS.methods)}; seed 0).\n\n"
                    + table + "\n")
    with open(os.path.join(FLAGS.workdir, "demo_results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, sort_keys=True)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
