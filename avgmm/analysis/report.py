"""Results tables in the layout of the paper's Tables 1-3, from finished runs.

    python -m avgmm.report runs/a runs/b ... [--out=DIR] [--name=report] [--nopaper]
        [--table1]

Each argument is a workdir or a folder of workdirs (searched recursively for
`results.json`), or a sweep's ledger (`.jsonl`, avgmm/experiments/ledger.py; several:
concatenated shards), which is all a table needs; a tuned sweep's ledger gives the runs of
each variant's setting chosen again from its validation accuracies, with the setting, the
number tried and the cost of the tuning. Runs whose configs differ only in the seed form
one row: mean and sample standard deviation (n - 1) over distinct seeds (a run found twice, or two runs
with the same config and seed, count once, with a warning). A row's label is the label
of the experiment variant its runs recorded (`avgmm.experiments`), else its method's;
where the variant reproduces one of the paper's rows on CREMA-D or AVE, the paper's
number stands beside ours. The columns are the headline fields of the evaluators the
runs used (`avgmm.evaluators`). Writes `<name>.md` and `<name>.csv` (`--name`, default
report) into `--out` (default: the common parent of the runs). `--table1` lays the rows out as the paper's
Table 1: one row per method in the paper's order, the paper's CREMA-D and AVE numbers
beside every row whatever the data, and the paper's rows we did not run listed with
their numbers only. Where `results.json` records the dataset's `split_source`, a line
under the table names it for every row.
"""

import csv
import json
import os
import statistics
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import flags

from avgmm import cli, config_text, evaluators, experiments, methods
from avgmm.analysis import tuned
from avgmm.experiments import ledger, tuning
from avgmm.errors import ExperimentError, ReportError
from avgmm.files import flatten_dict
from data_prep import registry

# Tables 1-3 of the paper (accuracy %, the peers' protocol), by the key of the variant
# that reproduces the row (Table 1's baselines: the method's registered name).
PAPER = {
    ("CREMA-D", "g_blending"): 69.89, ("CREMA-D", "ogm_ge"): 68.95, ("AVE", "ogm_ge"): 66.14,
    ("CREMA-D", "greedy"): 68.37, ("CREMA-D", "pmr"): 68.55, ("AVE", "pmr"): 67.72,
    ("CREMA-D", "agm"): 70.16, ("CREMA-D", "mla"): 79.70,
    ("CREMA-D", "diagnose_relearn"): 75.13, ("CREMA-D", "opm_ogm"): 75.10,
    ("CREMA-D", "full"): 80.65, ("AVE", "full"): 70.90,
    ("CREMA-D", "concat"): 67.47, ("AVE", "concat"): 64.56,
    ("CREMA-D", "alpha0"): 76.88, ("AVE", "alpha0"): 63.93,
    ("CREMA-D", "beta0"): 79.30, ("AVE", "beta0"): 68.66,
    ("CREMA-D", "gamma0"): 78.63, ("AVE", "gamma0"): 68.66,
    ("CREMA-D", "no_gmm_weights"): 77.42, ("AVE", "no_gmm_weights"): 67.16,
    ("CREMA-D", "adam_reset"): 79.91, ("AVE", "adam_reset"): 70.90,
    ("CREMA-D", "sgd_no_reset"): 78.76, ("AVE", "sgd_no_reset"): 67.91,
    ("CREMA-D", "adam_no_reset"): 75.67, ("AVE", "adam_no_reset"): 66.67,
}
# The rows of the paper's Table 1, in its order, with the paper's names for those that
# no registered method implements.
TABLE1 = ("concat", "g_blending", "ogm_ge", "greedy", "pmr", "agm", "mla",
          "diagnose_relearn", "opm_ogm", "full")
PAPER_ROW_NAMES = {"g_blending": "G-Blending", "greedy": "Greedy", "agm": "AGM",
                   "diagnose_relearn": "D&R", "opm_ogm": "OPM&OGM",
                   "full": "GMM adaptive loss (the paper's method)"}
PEERS = ("peer_protocol_best_test_accuracy", "best test over epochs (peers' protocol)")
GROUPING_IGNORES = set(config_text.RUNTIME_FIELDS) | {"seed"}


def metrics(evaluator_names: Optional[Sequence[str]] = None) -> List[Tuple[str, str]]:
    """`(results.json field, column)` of the report: the headline accuracy at the
    best-validation checkpoint and at the last epoch, the evaluators' other headline
    fields, and the peers' protocol."""
    fields = evaluators.headline_fields(evaluator_names, columns=True)
    first, rest = fields[0], fields[1:]
    return ([(f"test_{first.key}", f"{first.label} (best val)"),
             (f"last_epoch.{first.key}", f"{first.label} (last epoch)")]
            + [(f"test_{f.key}", f.label) for f in rest] + [PEERS])


def find_runs(paths: Sequence[str]) -> List[str]:
    """Workdirs with a `results.json` at or below each path, each once (a run named twice,
    directly and through its parent or a link, is kept once)."""
    runs, seen = [], set()
    for p in paths:
        p = os.path.expanduser(p)
        if not os.path.isdir(p):
            raise ReportError(f"{p} is not a directory")
        found = sorted(d for d, _, files in os.walk(p, followlinks=True)
                       if "results.json" in files)
        if not found:
            raise ReportError(f"{p} holds no finished run (no results.json below it)")
        for d in found:
            real = os.path.realpath(d)
            if real not in seen:
                seen.add(real)
                runs.append(d)
    return runs


def _distinct_seeds(members: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One run per seed: copies of a run (same config and seed in two folders) would be
    counted as independent seeds. Warns about each one left out."""
    kept: Dict[Any, Dict[str, Any]] = {}
    for m in members:
        seed = m["config"].get("seed")
        if seed in kept:
            print(f"warning: {m['run']} repeats seed {seed} of {kept[seed]['run']} with the "
                  "same config; counted once", file=sys.stderr)
            continue
        kept[seed] = m
    return list(kept.values())


def run_label(config: Dict[str, Any]) -> Tuple[str, Optional[str]]:
    """`(label, paper key)` of a run: its recorded variant's, else its method's (and the
    method's name as the paper key, which is how Table 1's rows are keyed)."""
    variant = experiments.find(config.get("variant") or "")
    if variant is not None:
        return variant.label, variant.paper_key
    cls = methods.REGISTRY.get(config["method"])
    label = (cls.label if cls is not None and cls.label else config["method"])
    return label, (config["method"] if config["method"] != "adaptive" else None)


def dataset_name(name: str) -> str:
    """A dataset's display name (the converters' registry; the name itself if unknown)."""
    return registry.display_name(name)


def _get(d: Dict[str, Any], dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def load(run: str) -> Dict[str, Any]:
    """A finished run's config and results."""
    try:
        with open(os.path.join(run, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        with open(os.path.join(run, "results.json"), encoding="utf-8") as f:
            results = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ReportError(f"cannot read the run in {run}: {e}") from e
    try:
        with open(os.path.join(run, "timing.json"), encoding="utf-8") as f:
            timing = json.load(f)
    except (OSError, ValueError):
        timing = {}
    return {"run": run, "config": config, "results": results, "timing": timing}


def _stat(values: List[float]) -> Tuple[Optional[float], Optional[float]]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def aggregate(runs: Sequence[Dict[str, Any]], paper: bool = True) -> List[Dict[str, Any]]:
    """One row per config (seeds pooled): mean and sample std of every metric."""
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for r in runs:
        flat = {k: v for k, v in flatten_dict(r["config"], "").items()
                if k.replace("/", ".") not in GROUPING_IGNORES}
        key = json.dumps([r["config"].get("variant", ""), flat], sort_keys=True)
        groups.setdefault(key, []).append(r)
    names = sorted({n for r in runs for n in r["config"].get("evaluators", ())}) or None
    rows = []
    for members in groups.values():
        members = _distinct_seeds(members)
        config = members[0]["config"]
        label, key = run_label(config)
        dataset = dataset_name(config["data"]["name"])
        row = {"dataset": dataset, "method": label, "key": key, "config": config,
               "method_name": config["method"], "variant": config.get("variant", ""),
               "seeds": len(members), "runs": [m["run"] for m in members],
               "members": members}
        sources = [m["results"]["split_source"] for m in members
                   if m["results"].get("split_source")]
        row["split_source"] = "; ".join(
            s + (f" ({sources.count(s)} runs)" if len(set(sources)) > 1 else "")
            for s in sorted(set(sources)))
        for metric, _ in metrics(names):
            values = [100.0 * float(v) for v in (_get(m["results"], metric) for m in members)
                      if v is not None]
            row[metric], row[metric + ".std"] = _stat(values)
        if paper:
            row["paper"] = PAPER.get((dataset, key)) if key else None
        rows.append(row)
    _disambiguate(rows)
    # Declared variants in their sweeps' order, then runs without one in the methods' order.
    order = [v.name for v in experiments.table1()] + list(experiments.all_variants())
    by_method = list(methods.REGISTRY)

    def rank(r):
        if r["variant"] in order:
            return order.index(r["variant"])
        known = r["method_name"] in by_method
        return len(order) + (by_method.index(r["method_name"]) if known else len(by_method))

    rows.sort(key=lambda r: (r["dataset"], rank(r), r["method"]))
    return rows


def _disambiguate(rows: List[Dict[str, Any]]) -> None:
    """Rows that share a label (runs without a recorded variant) get the config fields
    that tell them apart."""
    by_label: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for r in rows:
        by_label.setdefault((r["dataset"], r["method"]), []).append(r)
    for same in by_label.values():
        if len(same) < 2:
            continue
        flats = [config_text.flat(r["config"]) for r in same]
        keys = sorted({k for f in flats for k in f if k not in GROUPING_IGNORES
                       and len({json.dumps(g.get(k)) for g in flats}) > 1})
        for r, f in zip(same, flats):
            r["method"] += " [" + ", ".join(f"{k}={f.get(k)!r}" for k in keys) + "]"


def _escape(cell: str) -> str:
    """A Markdown table cell: `|` would end the cell (labels such as `w/o |g|^2`)."""
    return cell.replace("|", "\\|")


def _cell(row, metric) -> str:
    if row.get(metric) is None:
        return "-"
    std = row.get(metric + ".std")
    return f"{row[metric]:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def _columns(rows: List[Dict[str, Any]]) -> List[Tuple[str, str]]:
    """The metrics some row has."""
    names = sorted({n for r in rows if r.get("config")
                    for n in r["config"].get("evaluators", ())}) or None
    return [(m, c) for m, c in metrics(names) if any(r.get(m) is not None for r in rows)]


def markdown(rows: List[Dict[str, Any]], paper: bool = True) -> str:
    """The rows as a Markdown table, with the split source of each row below it."""
    columns = _columns(rows)
    header = ["dataset", "method", "seeds"] + [name for _, name in columns]
    if paper:
        header.append("paper (best test over epochs)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["dataset"], r["method"], str(r["seeds"])]
        cells += [_cell(r, m) for m, _ in columns]
        if paper:
            cells.append("" if r.get("paper") is None else f"{r['paper']:.2f}")
        lines.append("| " + " | ".join(_escape(c) for c in cells) + " |")
    sources = [f"- {r['dataset']}, {r['method']}: {r['split_source']}" for r in rows
               if r.get("split_source")]
    if sources:
        # Runs on a seeded random split are not comparable with the standard split's.
        lines += ["", "Split source of the runs (from results.json):"] + sources
    return "\n".join(lines)


def table1_rows(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The rows in the paper's Table 1 order, each with the paper's CREMA-D and AVE numbers
    (`paper_crema_d`, `paper_ave`); the paper's rows that were not run are added with their
    numbers only (`seeds` 0)."""
    out = []
    for r in rows:
        key = r.get("key")
        out.append(dict(r, paper_crema_d=PAPER.get(("CREMA-D", key)) if key else None,
                        paper_ave=PAPER.get(("AVE", key)) if key else None))
    ran = {r.get("key") for r in rows}
    for key in TABLE1:
        if key not in ran:
            cls = methods.REGISTRY.get(key)
            name = cls.label if cls is not None else PAPER_ROW_NAMES.get(key, key)
            out.append({"dataset": "", "method": f"{name} (not run)", "key": key, "seeds": 0,
                        "paper_crema_d": PAPER.get(("CREMA-D", key)),
                        "paper_ave": PAPER.get(("AVE", key))})
    out.sort(key=lambda r: (_table1_rank(r), r["seeds"] == 0, r["method"]))
    return out


def _table1_rank(row: Dict[str, Any]) -> int:
    """The paper's rows in its order; methods it does not list (warm-up only, MMPareto,
    ...) after OPM&OGM; the adaptive method's rows last, the paper's loss first."""
    if row.get("method_name") == "adaptive" or row.get("key") == "full":
        return 2 * len(TABLE1) + (row.get("key") != "full")
    if row.get("key") in TABLE1:
        return 2 * TABLE1.index(row["key"])
    return 2 * TABLE1.index("full") - 1


def table1_markdown(rows: List[Dict[str, Any]]) -> str:
    """`table1_rows` as Markdown: our numbers, then the paper's beside them, ambiguous GMM
    fits and cost (and, for a tuned sweep, the chosen setting and the settings tried)."""
    columns = _columns([r for r in rows if r["seeds"]])
    extra = [(k, h) for k, h in tuned.COLUMNS if any(k in r for r in rows)]
    header = (["method", "seeds"] + [name for _, name in columns]
              + ["paper CREMA-D", "paper AVE"] + [h for _, h in extra])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["method"], str(r["seeds"])]
        cells += [_cell(r, m) if r["seeds"] else "" for m, _ in columns]
        cells += ["" if r.get(k) is None else f"{r[k]:.2f}"
                  for k in ("paper_crema_d", "paper_ave")]
        cells += [tuned.cell(r, k) for k, _ in extra]
        lines.append("| " + " | ".join(_escape(c) for c in cells) + " |")
    datasets = sorted({r["dataset"] for r in rows if r["seeds"]})
    lines += ["", f"Our runs: {', '.join(datasets)}. The paper's columns are its Table 1 "
              "(CREMA-D and AVE, best test accuracy over epochs, the peers' protocol): "
              "compare them with our peers'-protocol column, on the same dataset only."]
    return "\n".join(lines)


def write(rows: List[Dict[str, Any]], out_dir: str, paper: bool = True,
          table1: bool = False, name: str = "report") -> Tuple[str, str]:
    """Writes `<name>.md` and `<name>.csv` into `out_dir`; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    md_path = os.path.join(out_dir, name + ".md")
    csv_path = os.path.join(out_dir, name + ".csv")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write("Accuracy (%) on the test split; mean ± sample std over seeds.\n\n")
        f.write((table1_markdown(rows) if table1 else markdown(rows, paper)) + "\n")
    fields = ["dataset", "method", "variant", "seeds"]
    for m, _ in _columns([r for r in rows if r["seeds"]]):
        fields += [m, m + ".std"]
    if table1:
        fields += ["paper_crema_d", "paper_ave"]
    elif paper:
        fields.append("paper")
    fields.append("split_source")
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return md_path, csv_path


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Command-line flags (defined only when run as a program)."""
    flags.DEFINE_string("out", None, "Where to write report.md and report.csv.")
    flags.DEFINE_string("name", "report", "File name (without extension) of the Markdown "
                        "and CSV tables, e.g. demo for docs/table1/demo.md.")
    flags.DEFINE_bool("paper", True, "Show the paper's number beside matching rows.")
    flags.DEFINE_bool("table1", False, "Lay the table out as the paper's Table 1, with its "
                      "CREMA-D and AVE numbers beside every method.")
    flags.DEFINE_string("selection", None, "A tuned sweep's selection.json: only the runs "
                        "of each variant's chosen setting, with that setting, the number of "
                        "settings tried, ambiguous GMM fits and the cost per run.")


def main(argv):
    paths = argv[1:]
    if FLAGS["out"].present:  # refused before any run is read
        cli.folder_flag("--out", FLAGS.out, "runs/report")
    if not paths:
        cli.usage_error("name the runs: python -m avgmm.report RUN_OR_FOLDER [...] "
                        "[--out=DIR]")
    lines = None
    try:
        if all(ledger.is_ledger(p) for p in paths):
            if FLAGS.selection:
                raise ReportError("--selection does not apply to ledgers: a ledger's "
                                  "tuning choice is made again from its own lines")
            for p in paths:
                if not os.path.isfile(p):
                    raise ReportError(f"{p}: no such ledger file")
            runs, selection, lines = tuning.table_runs(paths)
        else:
            found = find_runs(paths)
            selection = None
            if FLAGS.selection:
                selection = tuning.read_selection(FLAGS.selection)
                found = tuned.selected_runs(found, os.path.dirname(os.path.abspath(
                    FLAGS.selection)), selection)
            runs = [load(r) for r in found]
    except (ReportError, ExperimentError) as e:
        cli.usage_error(e)
    rows = aggregate(runs, FLAGS.paper)
    if selection is not None or FLAGS.table1:
        tuned.annotate(rows, selection, lines)
    if lines is not None:
        default = os.path.dirname(os.path.abspath(paths[0]))
    elif len(runs) == 1:
        default = os.path.dirname(os.path.abspath(runs[0]["run"]))
    else:
        default = os.path.commonpath([os.path.abspath(r["run"]) for r in runs])
    out = cli.output_folder("--out", FLAGS.out, default, "runs/report")
    if FLAGS.table1:
        rows = table1_rows(rows)
        print(table1_markdown(rows))
    else:
        print(markdown(rows, FLAGS.paper))
    for path in write(rows, out, FLAGS.paper, FLAGS.table1, FLAGS.name):
        print(path)
