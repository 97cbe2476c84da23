"""The three-component EM (`gmm.components=3`): direction labels, scikit-learn parity, the
fallback chain, 1 vs 4 devices, the per-direction posteriors of K = 2, and a tiny run."""

import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from avgmm import config_defaults, gmm as gmm_lib, gmm_k, train
from avgmm.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K2_KEYS = {"pi_0", "pi_1", "mu_0", "mu_1", "var_0", "var_1", "log_likelihood", "n_iter",
           "converged", "fallback", "bic_one", "bic_two", "ambiguous"}


def _three_clusters(seed: int):
    """Gap-like data: a balanced peak near 0, an audio-dominant one above, a visual-dominant
    one below, with random weights, widths and sizes; and the clusters' separation (the
    smallest Ashman's D between neighbours)."""
    rng = np.random.default_rng(seed)
    n = int(rng.choice([300, 1000, 3000, 6698]))
    weights = rng.dirichlet([6.0, 2.0, 2.0])
    mus = np.array([rng.uniform(-0.05, 0.05), rng.uniform(0.3, 0.9), -rng.uniform(0.3, 0.9)])
    sds = rng.uniform(0.03, 0.15, 3)
    c = rng.choice(3, n, p=weights)
    x = rng.normal(mus[c], sds[c]).astype(np.float32)
    d = [abs(mus[0] - mus[k]) * np.sqrt(2) / np.sqrt(sds[0] ** 2 + sds[k] ** 2) for k in (1, 2)]
    return x, min(d), np.bincount(c, minlength=3)


def _sklearn(x, seed):
    g = GaussianMixture(n_components=3, random_state=seed).fit(x[:, None].astype(np.float64))
    # Our index convention: middle mean (balanced), highest (audio), lowest (visual).
    return g, np.argsort(g.means_[:, 0])[[1, 2, 0]]


def test_three_clusters_get_direction_posteriors_near_1_on_their_own_cluster():
    rng = np.random.default_rng(0)
    clusters = {"balanced": rng.normal(0.0, 0.05, 2000),
                "audio": rng.normal(0.6, 0.08, 500),  # p_audio >> p_visual
                "visual": rng.normal(-0.6, 0.08, 700)}
    x = rng.permutation(np.concatenate(list(clusters.values()))).astype(np.float32)
    p = gmm_lib.fit_gmm(x, components=3)
    assert isinstance(p, gmm_k.GMMParams3)
    assert int(p.components_used) == 3 and not bool(p.fallback) and not bool(p.ambiguous)
    np.testing.assert_allclose(p.means, [0.0, 0.6, -0.6], atol=0.02)
    np.testing.assert_allclose(p.weights, [2000 / 3200, 500 / 3200, 700 / 3200], atol=0.01)
    for column, name in ((gmm_k.BALANCED, "balanced"), (gmm_k.AUDIO_DOMINANT, "audio"),
                         (gmm_k.VISUAL_DOMINANT, "visual")):
        w = gmm_lib.direction_posteriors(p, clusters[name])
        assert float(np.mean(np.asarray(w[column]))) > 0.99, name
    w_bal, w_a, w_v = map(np.asarray, gmm_lib.direction_posteriors(p, x))
    np.testing.assert_allclose(w_bal + w_a + w_v, 1.0, atol=1e-6)
    np.testing.assert_allclose(gmm_lib.imbalanced_posterior(p, x), w_a + w_v, atol=1e-7)
    d = p.to_dict()
    assert K2_KEYS | {"pi_2", "mu_2", "var_2", "pi_imbalanced", "bic_three",
                      "components_used"} == set(d)
    assert d["mu_1"] > d["mu_0"] > d["mu_2"] and d["components_used"] == 3


@pytest.mark.parametrize("seed", range(8))
def test_matches_sklearn(seed):
    x, separation, counts = _three_clusters(seed)
    ours = gmm_lib.fit_gmm(x, components=3)
    fits = [_sklearn(x, s) for s in range(3)]
    lls = [g.score(x[:, None]) for g, _ in fits]
    # scikit-learn's k-means++ start is random, and where a cluster is small or the peaks
    # overlap its own fits stop at different points of a flat ridge: that spread is added
    # to the 1e-4 relative tolerance, as in the two-component test.
    spread = max(lls) - min(lls)
    assert abs(float(ours.log_likelihood) - lls[0]) <= 1e-4 * abs(lls[0]) + spread
    assert bool(ours.converged) and int(ours.components_used) == 3
    ref, order = fits[0]
    if separation > 4 and min(counts) >= 50 and spread < 1e-6:
        np.testing.assert_allclose(float(ours.log_likelihood), lls[0], rtol=1e-4)
        np.testing.assert_allclose(ours.weights, ref.weights_[order], atol=1e-3)
        np.testing.assert_allclose(ours.means, ref.means_[order, 0], atol=1e-3)
        np.testing.assert_allclose(ours.variances, ref.covariances_[order, 0, 0], atol=1e-3)
        np.testing.assert_allclose(gmm_lib.posteriors(ours, x),
                                   ref.predict_proba(x[:, None])[:, order], atol=1e-3)
        x64 = x[:, None].astype(np.float64)
        np.testing.assert_allclose(float(ours.bic_three), ref.bic(x64), rtol=2e-3)
    post = np.asarray(gmm_lib.posteriors(ours, x))
    assert post.shape == (len(x), 3) and np.all((post >= 0) & (post <= 1))
    np.testing.assert_allclose(post.sum(axis=1), 1.0, atol=1e-6)


def test_unimodal_gaps_are_ambiguous_and_bic_selection_keeps_one_component():
    x = np.random.default_rng(0).normal(0.05, 0.1, 4000).astype(np.float32)
    kept = gmm_lib.fit_gmm(x, components=3, select="two")
    assert int(kept.components_used) == 3 and bool(kept.ambiguous)
    assert float(kept.bic_three) >= min(float(kept.bic_one), float(kept.bic_two))
    bic = gmm_lib.fit_gmm(x, components=3, select="bic")
    assert int(bic.components_used) == 1 and bool(bic.fallback) and not bool(bic.ambiguous)
    np.testing.assert_array_equal(bic.weights, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(gmm_lib.imbalanced_posterior(bic, x), 0.0)


def test_one_direction_falls_back_to_the_two_component_fit_in_its_directions_slot():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0.0, 0.05, 3000),
                        rng.normal(-0.6, 0.1, 1000)]).astype(np.float32)
    two = gmm_lib.fit_gmm(x)
    bic = gmm_lib.fit_gmm(x, components=3, select="bic")
    assert int(bic.components_used) == 2 and bool(bic.fallback) and not bool(bic.ambiguous)
    # The balanced component at 0, the visual-dominant one at 2, nothing audio-dominant;
    # the numbers are the two-component fit's own.
    np.testing.assert_array_equal(bic.weights, [two.weights[0], 0.0, two.weights[1]])
    np.testing.assert_array_equal(np.asarray(bic.means)[[0, 2]], two.means)
    np.testing.assert_array_equal(np.asarray(bic.variances)[[0, 2]], two.variances)
    assert float(bic.log_likelihood) == float(two.log_likelihood)
    w_bal, w_a, w_v = map(np.asarray, gmm_lib.direction_posteriors(bic, x))
    np.testing.assert_array_equal(w_a, 0.0)
    np.testing.assert_allclose(w_v, np.asarray(gmm_lib.posteriors(two, x))[:, 1], atol=1e-6)


def test_a_collapsed_third_component_falls_back_to_two():
    # Two distinct values: a third cluster is empty, two components are well defined.
    x = np.repeat(np.array([0.0, 0.7], np.float32), 50)
    for select in ("two", "bic"):
        p = gmm_lib.fit_gmm(x, components=3, select=select)
        assert int(p.components_used) == 2 and bool(p.fallback) and not bool(p.ambiguous)
        np.testing.assert_allclose(p.means[:2], [0.0, 0.7], atol=1e-6)
        np.testing.assert_allclose(p.weights, [0.5, 0.5, 0.0], atol=1e-6)
        post = np.asarray(gmm_lib.posteriors(p, np.array([0.0, 0.7])))
        np.testing.assert_allclose(post, [[1, 0, 0], [0, 1, 0]], atol=1e-6)


@pytest.mark.parametrize("x", [
    np.zeros(50, np.float32), np.array([0.25], np.float32), np.zeros(0, np.float32),
    np.concatenate([np.zeros(200), [0.9]]).astype(np.float32),
], ids=["zeros", "one-sample", "empty", "lone-outlier"])
def test_degenerate_input_falls_back_to_one_component(x):
    p = gmm_lib.fit_gmm(x, components=3)
    for leaf in jax.tree.leaves(p):
        assert np.all(np.isfinite(np.asarray(leaf, np.float64)))
    assert bool(p.fallback) and int(p.components_used) == 1
    np.testing.assert_array_equal(p.weights, [1.0, 0.0, 0.0])
    post = np.asarray(gmm_lib.posteriors(p, np.array([0.0, 0.5, -1.0])))
    np.testing.assert_array_equal(post, [[1, 0, 0]] * 3)


class _Devices:
    """The part of `avgmm.parallel.Parallel` that `gmm.fit_on_devices` uses."""

    def __init__(self, n):
        self.devices = jax.local_devices()[:n]

    def map(self, name, build):
        return jax.pmap(build("batch"), axis_name="batch", devices=self.devices)


@pytest.mark.skipif(jax.local_device_count() < 4, reason="needs 4 devices")
def test_the_fit_on_one_and_four_devices_is_the_same():
    x, _, _ = _three_clusters(3)
    pad = (-len(x)) % 4 + 8  # padding, masked, lands on the last device
    gaps = np.concatenate([x, np.full(pad, 9.0, np.float32)])
    mask = np.arange(len(gaps)) < len(x)
    config = config_defaults.get_config().gmm
    config.components = 3
    fits = {n: gmm_lib.fit_on_devices(_Devices(n), gaps.reshape(n, -1), mask.reshape(n, -1),
                                      config) for n in (1, 4)}
    alone = gmm_lib.fit_gmm(x, components=3)
    for a, b, c in zip(*(jax.tree.leaves(f) for f in (fits[1], fits[4], alone))):
        a, b = np.asarray(a), np.asarray(b)
        for k in range(4):  # every device holds the same fit
            np.testing.assert_array_equal(b[k], b[0])
        np.testing.assert_allclose(b[0], a[0], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(a[0], np.asarray(c), rtol=1e-5, atol=1e-6)


def test_two_components_split_the_imbalanced_posterior_by_the_side_of_its_mean():
    rng = np.random.default_rng(2)
    for side in (1.0, -1.0):
        x = np.concatenate([rng.normal(0.0, 0.05, 700),
                            rng.normal(side * 0.5, 0.1, 300)]).astype(np.float32)
        p = gmm_lib.fit_gmm(x)
        w_bal, w_a, w_v = map(np.asarray, gmm_lib.direction_posteriors(p, x))
        post = np.asarray(gmm_lib.posteriors(p, x))
        np.testing.assert_array_equal(w_bal, post[:, 0])
        on, off = (w_a, w_v) if side > 0 else (w_v, w_a)
        np.testing.assert_array_equal(on, post[:, 1])
        np.testing.assert_array_equal(off, 0.0)
        # What the methods read as w_imb is component 1's posterior bit for bit.
        np.testing.assert_array_equal(w_a + w_v, post[:, 1])
        np.testing.assert_array_equal(gmm_lib.imbalanced_posterior(p, x), post[:, 1])
        assert set(p.to_dict()) == K2_KEYS


def test_components_are_validated_and_the_field_keeps_older_runs_keys(tiny_config):
    with pytest.raises(ValueError, match="components must be one of"):
        gmm_lib.fit_gmm(np.zeros(4, np.float32), components=4)
    tiny_config.gmm.components = 4
    with pytest.raises(UserError, match="gmm.components"):
        train.train_and_evaluate(tiny_config, "/nonexistent/never/written")
    assert config_defaults.added_field_ok("gmm.components", 2)
    assert not config_defaults.added_field_ok("gmm.components", 3)
    # A config saved before the field existed reads as two components.
    assert gmm_lib.components_of(ml_collections.ConfigDict({"select": "two"})) == 2


def test_a_tiny_gmm_guided_run_with_three_components(tiny_data_dir, tmp_path):
    workdir = tmp_path / "k3"
    proc = subprocess.run(
        [sys.executable, "-m", "avgmm.main", "--config=configs/tiny.py",
         "--config.method=gmm_guided", "--config.gmm.components=3",
         f"--config.data.data_dir={tiny_data_dir}", f"--workdir={workdir}"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    fits = [r["gmm_fit"] for r in records if "gmm_fit" in r]
    assert fits and all({"pi_2", "mu_2", "bic_three", "components_used"} <= set(f)
                        for f in fits)
    assert all(f["components_used"] in (1, 2, 3) for f in fits)
    with open(workdir / "results.json", encoding="utf-8") as f:
        results = json.load(f)
    assert {"pi_0", "pi_1", "pi_2", "components_used"} <= set(results["final_gmm"])
    saved = np.load(workdir / "gmm_fits" / "fit_000.npz")
    assert "gmm_pi_2" in saved.files


def test_each_direction_finds_its_own_kind_of_degraded_clip_and_not_the_other():
    from avgmm.evaluators import gmm_auc

    rng = np.random.default_rng(3)
    kind = rng.choice(3, 1200, p=[0.6, 0.2, 0.2])  # none, visual (image) degraded, audio
    # A degraded image leaves the audio stream dominant (gap > 0), degraded audio the
    # visual one; half of the degraded clips look balanced (a mild degradation).
    centre = np.array([0.0, 0.6, -0.6])[kind] * (rng.random(1200) < 0.5)
    x = rng.normal(centre, 0.08).astype(np.float32)
    classes = ("none", "visual", "audio")
    three = gmm_auc.direction_aucs(gmm_lib.fit_gmm(x, components=3), x, kind, classes)
    assert three["auc_image_degraded"] > 0.7 and three["auc_audio_degraded"] > 0.7
    # The two-component mixture gives all of its imbalanced posterior to one side: the
    # other side's clips are not found (the blur the directional diagnosis removes).
    two = gmm_auc.direction_aucs(gmm_lib.fit_gmm(x, components=2), x, kind, classes)
    assert min(two.values()) < 0.6 < max(two.values())
    assert gmm_auc.direction_aucs(gmm_lib.fit_gmm(x, components=3), x, kind,
                                  ("none", "visual")).keys() == {"auc_image_degraded"}
