"""The GMM against what people heard and saw: the `human_auc` evaluator and the analysis'
gap histogram split by CREMA-D's human-rated categories."""

import csv
import json
import os
import shutil

import numpy as np
import pytest

import media_fixtures
from avgmm import gmm as gmm_lib
from avgmm.analysis import human_ratings
from avgmm.evaluators import human_auc
from avgmm.methods import gmm_fits
from avgmm.workdir import Workdir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = os.path.join(os.path.dirname(REPO), "shared", "data", "crema_d", "summaryTable.csv")


def _gmm(pi1, mu, var):
    return gmm_lib.GMMParams.unfitted().replace(
        weights=np.array([1 - pi1, pi1], np.float32), means=np.array(mu, np.float32),
        variances=np.array(var, np.float32))


def _pairs_auc(scores, flags):
    """AUC by counting pairs: P(score of a flagged clip > an unflagged one), ties 1/2."""
    pos, neg = scores[flags], scores[~flags]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def test_aucs_against_the_human_flags_by_hand(tmp_path):
    gmm = _gmm(0.3, [0.0, 0.6], [0.01, 0.04])
    gaps = np.array([0.7, 0.5, -0.4, 0.05, 0.65, -0.6, 0.0, 0.3])
    voice = np.array([1, 1, 0, 0, 1, 0, 0, 0], bool)
    face = np.array([0, 0, 1, 0, 0, 1, 0, 0], bool)
    got = human_auc.posterior_aucs(gmm, gaps, {"v": voice, "f": face})
    post = np.asarray(gmm_lib.posteriors(gmm, gaps))[:, 1]
    assert got["v"] == pytest.approx(_pairs_auc(post, voice))
    # The three largest gaps are the voice-only clips and the posterior grows with the
    # gap past the balanced mean: the imbalanced posterior ranks them first.
    assert got["v"] == 1.0
    assert got["f"] == pytest.approx(_pairs_auc(post, face))
    # No flagged clip: no AUC.
    assert human_auc.posterior_aucs(gmm, gaps, {"none": np.zeros(8, bool)}) == {"none": None}
    # The fits a method saved are read back with their training indices and mixture.
    wd = Workdir(str(tmp_path))
    host = {"index": np.array([5, 3, 0]), "id": np.array(["a", "b", "c"]),
            "label": np.zeros(3, np.int32), "gap": np.array([0.5, -0.2, 0.1], np.float32)}
    gmm_fits.save_fit(wd, 0, 3, gmm, host)
    (fit,) = human_auc.saved_fits(wd)
    np.testing.assert_array_equal(fit["index"], [5, 3, 0])
    np.testing.assert_allclose(np.asarray(gmm_lib.posteriors(fit["gmm"], fit["gap"])),
                               np.asarray(gmm_lib.posteriors(gmm, host["gap"])), rtol=1e-6)


def test_gap_histogram_by_human_category(tmp_path):
    rows = [{"gap": g, "human_voice_right": v, "human_face_right": f}
            for g, v, f in ((0.6, True, False), (0.4, True, False), (-0.5, False, True),
                            (0.0, True, True), (0.1, False, False), (-0.2, False, True))]
    assert [human_ratings.category(r) for r in rows] == [
        "voice only right", "voice only right", "face only right", "both right",
        "neither right", "face only right"]
    assert human_ratings.has_ratings(rows) and not human_ratings.has_ratings([{"gap": 0.1}])
    counts = human_ratings.gap_histogram(
        str(tmp_path / "h.png"), rows,
        {"pi_0": 0.7, "pi_1": 0.3, "mu_0": 0.0, "mu_1": 0.5, "var_0": 0.01, "var_1": 0.02},
        "title")
    assert counts == {"voice only right": 2, "face only right": 2, "both right": 1,
                      "neither right": 1}
    assert os.path.getsize(tmp_path / "h.png") > 10_000


def _chosen_clips(per_kind=8):
    """Real table rows: `per_kind` clips of each human category."""
    from data_prep import crema_ratings

    table = crema_ratings.read_table(TABLE)
    kinds = {}
    for name in sorted(table):
        r = crema_ratings.rate(table[name], name.split("_")[2])
        kind = (r["human_voice_right"], r["human_face_right"])
        if len(kinds.setdefault(kind, [])) < per_kind:
            kinds[kind].append(name)
    return [n for names in kinds.values() for n in names]


@pytest.mark.skipif(not os.path.exists(TABLE), reason=f"no real summaryTable.csv at {TABLE}")
def test_a_tiny_crema_run_reports_the_gmm_against_people(tmp_path):
    from avgmm import train
    from avgmm.analysis import analyze
    from avgmm.data import pipeline
    from configs import crema, tiny
    from data_prep import convert, crema_d

    if "clip_fields" not in pipeline.DatasetMeta.__dataclass_fields__:
        pytest.skip("the loader does not carry per-clip fields into batches yet (the "
                    "dataset-registry branch adds them)")
    names = _chosen_clips()
    raw = str(tmp_path / "raw")
    media_fixtures.make_crema_tree(raw, ids=[(n, n.split("_")[2]) for n in names],
                                   broken=False)
    os.makedirs(os.path.join(raw, "processedResults"))
    shutil.copy(TABLE, os.path.join(raw, "processedResults", "summaryTable.csv"))
    splits = tmp_path / "splits"
    splits.mkdir()
    for name, part in (("train.csv", names[:-4]), ("test.csv", names[-4:])):
        (splits / name).write_text("".join(f"{n},{n.split('_')[2]}\r\n" for n in part))
    data_dir = str(tmp_path / "data")
    convert.prepare(crema_d.CremaDAv, raw, data_dir,
                    frames=convert.FrameParams(num_frames=1, frame_size=32), workers=2,
                    split_options={"split_csv_dir": str(splits),
                                   "summary_table": crema_d.summary_table_option(raw, "auto")})
    config = crema.get_config()
    config.data.data_dir = data_dir
    tiny.shrink(config, image_size=32, batch_size=4)
    workdir = str(tmp_path / "run")
    results = train.train_and_evaluate(config, workdir)

    # Recomputed here from the run's files and the prepared records, by counting pairs.
    ds = pipeline.load_dataset("crema_d_av", data_dir, 1)
    train_ids = ds.read("train", range(ds.meta.num_examples["train"]))
    flags = {k: np.asarray(train_ids[k], bool) for k in human_auc.FLAGS}
    assert results["human_flag_counts"] == {
        "train_clips": len(flags["human_only_voice_right"]),
        **{k: int(v.sum()) for k, v in flags.items()}}
    assert results["human_flag_counts"]["human_only_voice_right"] > 0
    assert results["human_flag_counts"]["human_only_face_right"] > 0
    fits = human_auc.saved_fits(Workdir(workdir))
    assert len(fits) == results["gmm_fits"] == 1
    for k in human_auc.FLAGS:
        (fit,) = fits
        post = np.asarray(gmm_lib.posteriors(fit["gmm"], fit["gap"]))[:, 1]
        assert results[f"gmm_fit_aucs_{k}"] == [
            pytest.approx(_pairs_auc(post, flags[k][fit["index"]]))]
        assert 0 <= results[f"final_gmm_auc_{k}"] <= 1
        assert 0 <= results[f"final_gap_auc_{k}"] <= 1
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f)["final_gmm_auc_human_only_face_right"] == \
            results["final_gmm_auc_human_only_face_right"]

    # The analysis: human columns in imbalance.csv and the split histogram.
    out = analyze.analyze(workdir, "best", "train")
    figure = os.path.join(workdir, "plots", "gap_by_human_rating.png")
    assert figure in out["plots"] and os.path.getsize(figure) > 10_000
    with open(out["imbalance_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(flags["human_only_voice_right"])
    voice_only = sum(r["human_voice_right"] == "True" and r["human_face_right"] == "False"
                     for r in rows)
    assert voice_only == results["human_flag_counts"]["human_only_voice_right"]
