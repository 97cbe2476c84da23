"""The jnp EM against scikit-learn, its degenerate cases and its BIC model selection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from avgmm import gmm as gmm_lib


def _bimodal(seed: int):
    """A gap-like data set: a balanced peak near 0 and an imbalanced one to one side."""
    rng = np.random.default_rng(seed)
    n = int(rng.choice([300, 1000, 3000, 6698, 20000]))
    w = rng.uniform(0.55, 0.95)
    s0, s1 = rng.uniform(0.03, 0.15), rng.uniform(0.05, 0.2)
    mu0, mu1 = rng.uniform(-0.05, 0.05), rng.choice([-1, 1]) * rng.uniform(0.3, 0.9)
    balanced = rng.random(n) < w
    x = np.where(balanced, rng.normal(mu0, s0, n), rng.normal(mu1, s1, n)).astype(np.float32)
    # Ashman's D: > 2 means clearly separated peaks.
    separation = abs(mu1 - mu0) * np.sqrt(2) / np.sqrt(s0**2 + s1**2)
    return x, separation


def _sklearn(x, seed):
    g = GaussianMixture(n_components=2, random_state=seed).fit(x[:, None].astype(np.float64))
    order = np.argsort(np.abs(g.means_[:, 0]))
    return g, order


@pytest.mark.parametrize("seed", range(24))
def test_matches_sklearn(seed):
    x, separation = _bimodal(seed)
    ours = gmm_lib.fit_gmm(x)
    fits = [_sklearn(x, s) for s in range(3)]
    (ref, order), lls = fits[0], [g.score(x[:, None]) for g, _ in fits]
    ll = lls[0]
    # scikit-learn's k-means++ start is random, so its own fits differ a little between
    # seeds where the peaks overlap; that spread is added to the 1e-4 relative tolerance.
    spread = max(lls) - min(lls)
    assert abs(float(ours.log_likelihood) - ll) <= 1e-4 * abs(ll) + spread
    assert bool(ours.converged) and not bool(ours.fallback)
    # Index 0 is the balanced component, the one whose mean is nearest 0.
    assert abs(float(ours.means[0])) <= abs(float(ours.means[1]))
    if separation > 5 and spread < 1e-9:
        np.testing.assert_allclose(ours.weights, ref.weights_[order], atol=1e-3)
        np.testing.assert_allclose(ours.means, ref.means_[order, 0], atol=1e-3)
        np.testing.assert_allclose(ours.variances, ref.covariances_[order, 0, 0], atol=1e-3)
        assert int(ours.n_iter) == ref.n_iter_
        np.testing.assert_allclose(gmm_lib.posteriors(ours, x),
                                   ref.predict_proba(x[:, None])[:, order], atol=1e-3)
    post = np.asarray(gmm_lib.posteriors(ours, x))
    assert post.shape == (len(x), 2) and np.all((post >= 0) & (post <= 1))
    np.testing.assert_allclose(post.sum(axis=1), 1.0, atol=1e-6)


def test_tight_tolerance_reaches_the_same_maximum_as_sklearn():
    """Both EMs run to convergence land on the same maximum-likelihood estimate."""
    x, _ = _bimodal(101)
    ours = gmm_lib.fit_gmm(x, tol=1e-7, max_iters=2000)
    ref = GaussianMixture(2, tol=1e-10, max_iter=5000, random_state=0).fit(
        x[:, None].astype(np.float64))
    order = np.argsort(np.abs(ref.means_[:, 0]))
    np.testing.assert_allclose(float(ours.log_likelihood), ref.score(x[:, None]), rtol=1e-5)
    np.testing.assert_allclose(ours.means, ref.means_[order, 0], atol=1e-4)


def test_balanced_component_is_index_0_even_when_it_is_the_smaller_one():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0.0, 0.05, 300), rng.normal(0.6, 0.1, 700)])
    p = gmm_lib.fit_gmm(x)
    assert abs(float(p.means[0])) < 0.02 and abs(float(p.means[1]) - 0.6) < 0.02
    np.testing.assert_allclose(p.weights, [0.3, 0.7], atol=0.02)
    # Posterior of the imbalanced component is high at its mean and low at 0.
    post = gmm_lib.posteriors(p, jnp.array([0.0, 0.6]))
    assert post[0, 1] < 0.01 and post[1, 1] > 0.99


def test_mask_ignores_padding_and_pads_compile_once():
    x, _ = _bimodal(7)
    padded = np.concatenate([x, np.full(500, 123.0, np.float32)])
    mask = np.arange(len(padded)) < len(x)
    a, b = gmm_lib.fit_gmm(x), gmm_lib.fit_gmm(padded, mask=mask)
    np.testing.assert_allclose(a.means, b.means, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.log_likelihood, b.log_likelihood, rtol=1e-5)
    # A second fit of another data set of the same (padded) size reuses the compilation.
    misses = gmm_lib._fit._cache_size()
    gmm_lib.fit_gmm(padded * 0.5, mask=mask)
    assert gmm_lib._fit._cache_size() == misses


@pytest.mark.parametrize("x", [
    np.zeros(50, np.float32),  # all values equal
    np.full(7, 0.3, np.float32),
    np.array([0.25], np.float32),  # N < 2
    np.zeros(0, np.float32),  # N = 0
    np.concatenate([np.zeros(200), [0.9]]).astype(np.float32),  # a component of one sample
], ids=["zeros", "constant", "one-sample", "empty", "lone-outlier"])
def test_degenerate_input_falls_back_to_one_component(x):
    p = gmm_lib.fit_gmm(x)
    for leaf in (p.weights, p.means, p.variances, p.log_likelihood):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert bool(p.fallback)
    np.testing.assert_array_equal(p.weights, [1.0, 0.0])
    assert np.all(np.asarray(p.variances) > 0)
    if len(x):
        np.testing.assert_allclose(p.means, [x.mean()] * 2, atol=1e-6)
    post = np.asarray(gmm_lib.posteriors(p, np.array([0.0, 0.5, -1.0])))
    np.testing.assert_array_equal(post[:, 1], 0.0)  # every sample balanced
    np.testing.assert_array_equal(post[:, 0], 1.0)


def test_non_finite_input_raises_a_clear_error():
    x = np.array([0.1, 0.2, np.nan, 0.3], np.float32)
    with pytest.raises(ValueError, match=r"1 non-finite value.*index 2"):
        gmm_lib.fit_gmm(x)
    with pytest.raises(ValueError, match="1-D"):
        gmm_lib.fit_gmm(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="reg_covar"):
        gmm_lib.fit_gmm(np.zeros(4), reg_covar=-1.0)
    # A masked-out NaN is padding, not an error.
    p = gmm_lib.fit_gmm(x, mask=np.isfinite(x))
    assert np.all(np.isfinite(np.asarray(p.means)))


def test_gmm_params_is_a_pytree_usable_under_jit():
    x, _ = _bimodal(5)
    p = gmm_lib.fit_gmm(x)
    leaves, treedef = jax.tree.flatten(p)
    assert len(leaves) == 10
    rebuilt = jax.tree.unflatten(treedef, leaves)
    np.testing.assert_allclose(
        jax.jit(gmm_lib.posteriors)(rebuilt, x), gmm_lib.posteriors(p, x), atol=1e-6)
    # Inside jit the fit works on traced data too, ignoring non-finite entries.
    with_nan = np.concatenate([x, [np.nan]]).astype(np.float32)
    traced = jax.jit(lambda v: gmm_lib.fit_gmm(v))(with_nan)
    np.testing.assert_allclose(traced.means, p.means, rtol=1e-5, atol=1e-6)
    d = p.to_dict()
    assert set(d) >= {"pi_0", "pi_1", "mu_0", "mu_1", "var_0", "var_1", "fallback"}
    assert isinstance(d["mu_0"], float)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bic_of_both_models_matches_sklearn(seed):
    x, _ = _bimodal(seed)
    fit = gmm_lib.fit_gmm(x)
    x64 = x[:, None].astype(np.float64)
    for k, key in ((1, "bic_one"), (2, "bic_two")):
        ref = GaussianMixture(n_components=k, random_state=0, tol=1e-6).fit(x64).bic(x64)
        np.testing.assert_allclose(float(getattr(fit, key)), ref, rtol=2e-3)


def test_unimodal_gaps_are_flagged_and_bic_selection_keeps_one_component():
    # After adaptive training the gaps form one peak: two components split it arbitrarily.
    x = np.random.default_rng(0).normal(0.05, 0.1, 4000).astype(np.float32)
    two = gmm_lib.fit_gmm(x, select="two")
    assert not bool(two.fallback) and bool(two.ambiguous)
    assert float(two.bic_two) >= float(two.bic_one)
    bic = gmm_lib.fit_gmm(x, select="bic")
    assert bool(bic.fallback) and not bool(bic.ambiguous)
    np.testing.assert_allclose(np.asarray(gmm_lib.posteriors(bic, x))[:, 1], 0.0)


def test_bimodal_gaps_keep_two_components_under_bic():
    x, _ = _bimodal(3)
    two, bic = gmm_lib.fit_gmm(x, select="two"), gmm_lib.fit_gmm(x, select="bic")
    assert not bool(two.ambiguous) and not bool(bic.fallback)
    np.testing.assert_allclose(np.asarray(bic.means), np.asarray(two.means))


def test_unknown_selection_is_refused():
    with pytest.raises(ValueError, match="select must be one of"):
        gmm_lib.fit_gmm(np.zeros(4, np.float32), select="aic")
