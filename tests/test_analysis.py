"""avgmm.analyze and avgmm.report on tiny real runs."""

import csv
import json
import os
import statistics

import numpy as np
import pytest

from avgmm import train
from avgmm.analysis import analyze, report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory, tiny_data_dir):
    """Two tiny adaptive runs that differ only in the seed, plus one concat run."""
    from configs import tiny

    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for name, seed, method in (("s0", 0, "adaptive"), ("s1", 1, "adaptive"),
                               ("concat", 0, "concat")):
        config = tiny.get_config()
        config.data.data_dir = tiny_data_dir
        config.seed, config.method = seed, method
        runs[name] = str(root / name)
        train.train_and_evaluate(config, runs[name])
    return root, runs


def test_analyze_writes_plots_and_per_sample_report(two_seeds):
    _, runs = two_seeds
    out = analyze.analyze(runs["s0"], checkpoint="best", split="train")
    names = sorted(os.path.basename(p) for p in out["plots"])
    assert names == ["accuracy.png", "gmm_evolution.png", "gmm_fit_0.png", "gmm_fit_1.png",
                     "losses.png"]
    for path in out["plots"]:
        with open(path, "rb") as f:
            assert f.read(8) == PNG_MAGIC
        assert os.path.getsize(path) > 5000  # a drawn figure, not an empty canvas
    with open(out["imbalance_csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 48  # one row per training clip
    assert len({r["id"] for r in rows}) == 48
    post = np.array([float(r["posterior_imbalanced"]) for r in rows])
    assert np.all((post >= 0) & (post <= 1))
    assert np.all(np.diff(post) <= 1e-6)  # most imbalanced first
    for r in rows:
        np.testing.assert_allclose(float(r["gap"]), float(r["p_audio"]) - float(r["p_visual"]),
                                   atol=2e-6)
        expected = "audio" if float(r["gap"]) > 0 else "visual"
        assert r["dominant_modality"] == expected
        assert r["label"].startswith("class_")


def test_analyze_scores_other_checkpoints_and_splits(two_seeds):
    _, runs = two_seeds
    out = analyze.analyze(runs["concat"], checkpoint=2, split="validation")
    with open(out["imbalance_csv"], newline="") as f:
        assert len(list(csv.DictReader(f))) == 16
    # A concat run has no GMM fits: only the accuracy and loss figures.
    assert sorted(os.path.basename(p) for p in out["plots"]) == ["accuracy.png", "losses.png"]
    with pytest.raises(ValueError, match=r"no checkpoint after epoch 9; saved: \[1, 2, 3\]"):
        analyze.analyze(runs["concat"], checkpoint=9)


def test_analyze_errors_are_clear(tmp_path):
    with pytest.raises(analyze.AnalysisError, match="holds no run"):
        analyze.analyze(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(analyze.AnalysisError, match="no epoch yet"):
        analyze.analyze(str(tmp_path))
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0}\nnot json\n')
    with pytest.raises(analyze.AnalysisError, match=r"metrics.jsonl:2 is not valid JSON"):
        analyze.analyze(str(tmp_path))


def test_report_pools_seeds_into_mean_and_spread(two_seeds, tmp_path):
    root, runs = two_seeds
    results = {}
    for name, path in runs.items():
        with open(os.path.join(path, "results.json")) as f:
            results[name] = json.load(f)
    rows = report.aggregate([report.load(r) for r in report.find_runs([str(root)])])
    assert len(rows) == 2
    full = next(r for r in rows if r["method_name"] == "adaptive")
    concat = next(r for r in rows if r["method"] == "Baseline (Concat)")
    assert full["seeds"] == 2 and concat["seeds"] == 1
    accs = [100 * results[s]["test_accuracy"] for s in ("s0", "s1")]
    assert full["test_accuracy"] == pytest.approx(statistics.fmean(accs))
    assert full["test_accuracy.std"] == pytest.approx(statistics.stdev(accs))
    last = [100 * results[s]["last_epoch"]["accuracy"] for s in ("s0", "s1")]
    assert full["last_epoch.accuracy"] == pytest.approx(statistics.fmean(last))
    assert concat["test_accuracy.std"] is None
    assert full["paper"] is None  # avsynth is not one of the paper's datasets
    md_path, csv_path = report.write(rows, str(tmp_path))
    md = open(md_path).read()
    assert f"{statistics.fmean(accs):.2f} ± {statistics.stdev(accs):.2f}" in md
    assert md.count("\n|") == 4  # header, separator and two rows
    with open(csv_path, newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2 and float(table[0]["seeds"]) in (1, 2)


def test_report_labels_runs_by_their_recorded_variant():
    from avgmm import experiments

    beta0 = experiments.find("beta0")
    assert report.run_label({"method": "adaptive", "variant": "beta0"}) == (beta0.label,
                                                                            "beta0")
    assert report.PAPER[("CREMA-D", "adam_no_reset")] == 75.67
    assert report.run_label({"method": "adaptive", "variant": "adam_no_reset"})[1] == \
        "adam_no_reset"
    assert report.run_label({"method": "adaptive", "variant": "lambda_step"})[1] is None
    # Without a variant: the method's label; a baseline's name is its Table 1 key.
    assert report.run_label({"method": "ogm_ge", "variant": ""}) == ("OGM-GE", "ogm_ge")
    assert report.run_label({"method": "adaptive"})[1] is None


def test_every_variant_name_means_one_experiment_in_every_sweep():
    from avgmm import experiments

    seen = {}
    for sweep in experiments.SWEEPS.values():
        for v in sweep.variants():
            assert seen.setdefault(v.name, v) == v, v.name
            assert all(o.startswith("--config.") for o in v.overrides), v


def test_report_markdown_escapes_pipes_in_labels():
    from avgmm import experiments

    row = {"dataset": "CREMA-D", "method": experiments.find("beta0").label, "seeds": 1,
           "paper": 79.3}
    for metric, _ in report.metrics():
        row[metric], row[metric + ".std"] = 50.0, None
    table = report.markdown([row])  # the columns every run has
    header, _, line = table.splitlines()
    # Split on unescaped pipes only: the row has as many cells as the header.
    import re
    split = lambda s: [c for c in re.split(r"(?<!\\)\|", s)[1:-1]]  # noqa: E731
    assert len(split(line)) == len(split(header))
    assert split(line)[1].strip() == "w/o \\|g\\|^2 (beta = 0)"
    with pytest.raises(report.ReportError, match="no finished run"):
        report.find_runs([os.path.dirname(__file__)])


def test_report_names_each_rows_split_source(tmp_path):
    """Runs whose results.json records the dataset's split source: a line per row under
    the table (and a CSV column), so a seeded random split cannot pass for the standard."""
    from configs import crema

    config = json.loads(crema.get_config().to_json())
    metrics = {"test_accuracy": 0.5, "last_epoch": {"accuracy": 0.5},
               "test_accuracy_audio": 0.4, "test_accuracy_visual": 0.3,
               "peer_protocol_best_test_accuracy": 0.6}
    runs = (("a", 0, "adaptive", "standard: 6896"), ("b", 1, "adaptive", "standard: 6896"),
            ("c", 0, "concat", "seeded random, seed 0"), ("d", 0, "warmup_only", None))
    for name, seed, method, source in runs:
        os.makedirs(tmp_path / name)
        with open(tmp_path / name / "config.json", "w") as f:
            json.dump(dict(config, seed=seed, method=method), f)
        with open(tmp_path / name / "results.json", "w") as f:
            json.dump(dict(metrics, **({"split_source": source} if source else {})), f)
    rows = report.aggregate([report.load(r) for r in report.find_runs([str(tmp_path)])])
    md = report.markdown(rows)
    table, notes = md.split("\n\nSplit source of the runs (from results.json):\n")
    assert table.count("\n|") == 4  # header, separator, three rows
    assert notes.splitlines() == [
        "- CREMA-D, Baseline (Concat): seeded random, seed 0",
        "- CREMA-D, GMM adaptive loss (the paper's method): standard: 6896"]
    _, csv_path = report.write(rows, str(tmp_path / "out"))
    with open(csv_path, newline="") as f:
        table = {r["method"]: r["split_source"] for r in csv.DictReader(f)}
    assert table["Baseline (Concat)"] == "seeded random, seed 0"
    assert table["Warm-up loss only (control)"] == ""


def test_report_counts_each_seed_once(two_seeds, tmp_path, capsys):
    import shutil

    root, runs = two_seeds
    copy = tmp_path / "copy_of_s0"
    shutil.copytree(runs["s0"], copy)
    # The folder and one of its runs named again, plus a copy of seed 0 elsewhere.
    found = report.find_runs([str(root), runs["s0"], str(copy)])
    assert len(found) == 4  # s0, s1, concat, the copy
    rows = report.aggregate([report.load(r) for r in found])
    full = next(r for r in rows if r["method_name"] == "adaptive")
    assert full["seeds"] == 2
    assert "repeats seed 0" in capsys.readouterr().err


def test_figures_name_their_run_and_show_only_the_loss_terms_in_use(two_seeds, tmp_path):
    from avgmm.analysis import plots

    _, runs = two_seeds
    config, records = analyze.load_run(runs["s1"])
    assert analyze.run_label(config) == ("GMM adaptive loss (the paper's method) on "
                                         "avsynth (tiny), seed 1 [configs/tiny.py]")
    config.loss.beta = 0.0
    assert analyze.run_label(config).endswith("[configs/tiny.py + loss.beta=0.0]")
    adaptive = next(r for r in records if r["phase"] == "adaptive")
    terms = plots.loss_terms(adaptive, config.loss.to_dict())
    assert set(terms) == {"total loss", "alpha * w_bal * CE(fused)",
                          "lambda_t * gamma * w_imb * (g - mu_0)^2"}
    assert set(plots.loss_terms(records[0], config.loss.to_dict())) == {
        "total loss", "CE(fused)", "CE(audio)", "CE(visual)"}
    _, concat_records = analyze.load_run(runs["concat"])
    assert plots.phases_title(concat_records) == "concat (fused CE)"
    assert plots.phases_title(records) == "warm-up and adaptive"
    best = max(r["val"]["accuracy"] for r in records)
    assert plots.best_epoch(records) == next(r["epoch"] for r in records
                                             if r["val"]["accuracy"] == best)
    out = analyze.compare([runs["s0"], runs["s1"], runs["concat"]],
                          str(tmp_path / "cmp" / "comparison.png"))
    with open(out, "rb") as f:
        assert f.read(8) == PNG_MAGIC


def test_imbalance_csv_says_which_checkpoint_and_gmm_made_it(two_seeds):
    _, runs = two_seeds
    out = analyze.analyze(runs["s0"], checkpoint="latest", split="train")
    with open(out["imbalance_source"]) as f:
        source = json.load(f)
    assert source["checkpoint"] == "latest" and source["epochs_completed"] == 3
    assert source["split"] == "train"
    assert source["gmm"].startswith("the GMM in force in the checkpoint: fit 1")
    assert {"pi_1", "mu_0", "mu_1"} <= set(source["gmm_params"])


def test_table1_layout_orders_methods_and_shows_the_papers_numbers():
    from avgmm import experiments
    from configs import demo

    def run(variant, seed, acc):
        config = json.loads(demo.get_config().to_json())
        method = "adaptive" if variant.startswith("adaptive") else variant
        config.update(method=method, seed=seed, variant=variant)
        results = {"test_accuracy": acc, "last_epoch": {"accuracy": acc},
                   "test_accuracy_audio": 0.5, "test_accuracy_visual": 0.4,
                   "peer_protocol_best_test_accuracy": acc + 0.01}
        return {"run": f"{variant}{seed}", "config": config, "results": results}

    runs = [run("adaptive_paper", s, 0.8 + s / 100) for s in (0, 1)]
    runs += [run("adaptive_ours", 0, 0.9), run("ogm_ge", 0, 0.7), run("ogm_ge", 1, 0.72),
             run("concat", 0, 0.6), run("warmup_only", 0, 0.85)]
    rows = report.table1_rows(report.aggregate(runs, paper=False))
    names = [r["method"] for r in rows]
    # The paper's order, the rows it has that we did not run in place, ours at the end.
    assert names[:2] == ["Baseline (Concat)", "G-Blending (not run)"]
    assert names[2] == "OGM-GE"
    assert names.index("OPM&OGM (not run)") < names.index("Warm-up loss only (control)")
    assert names[-2] == experiments.find("adaptive_paper").label
    assert names[-1] == experiments.find("adaptive_ours").label
    ogm = rows[2]
    assert ogm["seeds"] == 2 and ogm["test_accuracy"] == pytest.approx(71.0)
    assert (ogm["paper_crema_d"], ogm["paper_ave"]) == (68.95, 66.14)
    assert (rows[-2]["paper_crema_d"], rows[-2]["paper_ave"]) == (80.65, 70.90)
    assert rows[-1]["paper_crema_d"] is None  # our loss is not the paper's row
    md = report.table1_markdown(rows)
    assert "| OGM-GE | 2 | 71.00 ± 1.41 |" in md
    assert "| MLA (not run) | 0 |  |  |  |  |  | 79.70 |  |" in md
