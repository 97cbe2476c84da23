"""Losses against NumPy computations written from the equations of the paper (eq. 6-10)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avgmm import gmm as gmm_lib
from avgmm import losses

B, M = 16, 6


def _np_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _np_ce(z, y):
    return -np.log(_np_softmax(z)[np.arange(len(y)), y])


def _np_normal(x, mu, var):
    return np.exp(-0.5 * (x - mu) ** 2 / var) / np.sqrt(2 * np.pi * var)


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    la = rng.normal(0, 2, (B, M)).astype(np.float32)
    lv = rng.normal(0, 2, (B, M)).astype(np.float32)
    y = rng.integers(0, M, B)
    return la + lv, la, lv, y


@pytest.fixture
def gmm():
    return gmm_lib.GMMParams(
        weights=jnp.array([0.8, 0.2]), means=jnp.array([0.02, 0.45]),
        variances=jnp.array([0.01, 0.04]), log_likelihood=jnp.zeros(()),
        n_iter=jnp.array(3), converged=jnp.array(True), fallback=jnp.array(False),
        bic_one=jnp.zeros(()), bic_two=jnp.zeros(()), ambiguous=jnp.array(False))


def test_gap_and_simple_losses(batch):
    f, la, lv, y = batch
    p_a, p_v = _np_softmax(la)[np.arange(B), y], _np_softmax(lv)[np.arange(B), y]
    gap = np.asarray(losses.modality_gap(la, lv, y))
    np.testing.assert_allclose(gap, p_a - p_v, rtol=1e-5, atol=1e-6)
    assert gap.shape == (B,) and np.all(np.abs(gap) <= 1)
    loss, terms = losses.concat_loss(f, y)
    np.testing.assert_allclose(loss, _np_ce(f, y).mean(), rtol=1e-5)
    loss, terms = losses.warmup_loss(f, la, lv, y)
    expected = _np_ce(f, y).mean() + _np_ce(la, y).mean() + _np_ce(lv, y).mean()
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(terms["ce_audio"], _np_ce(la, y).mean(), rtol=1e-5)


@pytest.mark.parametrize("alpha,beta,gamma,lam,use_w", [
    (1.0, 1.0, 1.0, 1.0, True), (0.7, 2.0, 3.0, 0.96**3, True), (1.0, 1.0, 1.0, 0.5, False),
    (0.0, 1.0, 1.0, 1.0, True), (1.0, 0.0, 1.0, 1.0, True), (1.0, 1.0, 0.0, 1.0, True),
])
def test_adaptive_loss_matches_equation_10(batch, gmm, alpha, beta, gamma, lam, use_w):
    f, la, lv, y = batch
    g = _np_softmax(la)[np.arange(B), y] - _np_softmax(lv)[np.arange(B), y]
    pi, mu, var = np.asarray(gmm.weights), np.asarray(gmm.means), np.asarray(gmm.variances)
    dens = np.stack([pi[k] * _np_normal(g, mu[k], var[k]) for k in range(2)], axis=1)
    w = dens / dens.sum(axis=1, keepdims=True) if use_w else np.ones((B, 2))
    per_sample = (alpha * w[:, 0] * _np_ce(f, y)
                  + lam * (beta * g**2 + gamma * w[:, 1] * (g - mu[0]) ** 2))
    loss, terms = losses.adaptive_loss(f, la, lv, y, gmm, alpha=alpha, beta=beta, gamma=gamma,
                                       lambda_t=lam, use_gmm_weights=use_w)
    np.testing.assert_allclose(loss, per_sample.mean(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(terms["w_imb_mean"], w[:, 1].mean(), rtol=1e-5)


def test_all_weights_zero_gives_zero_loss(batch, gmm):
    f, la, lv, y = batch
    loss, _ = losses.adaptive_loss(f, la, lv, y, gmm, alpha=0.0, beta=0.0, gamma=0.0,
                                   lambda_t=1.0)
    assert float(loss) == 0.0
    # With alpha=0 only the gap terms remain, so a sample with equal unimodal logits and
    # mu_0 = 0 costs nothing.
    zero_mu = gmm.replace(means=jnp.array([0.0, 0.45]))
    loss, _ = losses.adaptive_loss(f, la, la, y, zero_mu, alpha=0.0, beta=1.0, gamma=1.0,
                                   lambda_t=1.0)
    assert float(loss) == 0.0


def test_adaptive_gradient_flows_to_logits_not_to_gmm(batch, gmm):
    f, la, lv, y = batch

    def loss_fn(la, lv, gmm_floats):
        weights, means, variances = gmm_floats
        mixture = gmm.replace(weights=weights, means=means, variances=variances)
        return losses.adaptive_loss(la + lv, la, lv, y, mixture, alpha=1.0, beta=1.0,
                                    gamma=1.0, lambda_t=1.0)[0]

    floats = (gmm.weights, gmm.means, gmm.variances)
    g_la, g_lv, g_gmm = jax.grad(loss_fn, argnums=(0, 1, 2))(
        jnp.asarray(la), jnp.asarray(lv), floats)
    assert np.all(np.isfinite(g_la)) and np.all(np.isfinite(g_lv))
    assert np.abs(g_la).sum() > 0 and np.abs(g_lv).sum() > 0
    for leaf in g_gmm:  # the mixture is a constant of the loss
        np.testing.assert_array_equal(leaf, 0.0)

    # The gap terms alone (alpha=0) still send gradient into both unimodal logits: g is
    # differentiable; only the posterior weights are constants.
    def gap_only(la, lv):
        return losses.adaptive_loss(la + lv, la, lv, y, gmm, alpha=0.0, beta=1.0,
                                    gamma=1.0, lambda_t=1.0)[0]

    g_la, g_lv = jax.grad(gap_only, argnums=(0, 1))(jnp.asarray(la), jnp.asarray(lv))
    assert np.abs(g_la).sum() > 0 and np.abs(g_lv).sum() > 0

    # Weights are stop-gradient: the gradient equals the one with the weights fed in as
    # fixed numbers (a finite-difference-free check of stop_gradient placement).
    g = losses.modality_gap(la, lv, y)
    w = gmm_lib.posteriors(gmm, g)

    def fixed_weights(la, lv):
        ce = losses.cross_entropy(la + lv, y)
        gg = losses.modality_gap(la, lv, y)
        return (w[:, 0] * ce + gg**2 + w[:, 1] * (gg - gmm.means[0]) ** 2).mean()

    np.testing.assert_allclose(jax.grad(loss_fn)(jnp.asarray(la), jnp.asarray(lv), floats),
                               jax.grad(fixed_weights)(jnp.asarray(la), jnp.asarray(lv)),
                               rtol=1e-5, atol=1e-7)


def test_posteriors_from_a_given_gap_replace_the_current_gaps(batch, gmm):
    fused, la, lv, y = batch
    # posteriors_from=refit: w_bal, w_imb come from the gap collected for the fit.
    refit_gap = np.linspace(-0.9, 0.9, B).astype(np.float32)
    loss, terms = losses.adaptive_loss(fused, la, lv, y, gmm, alpha=1.0, beta=0.0, gamma=1.0,
                                       lambda_t=1.0, posterior_gap=jnp.asarray(refit_gap))
    w = np.stack([g * _np_normal(refit_gap, m, v) for g, m, v in
                  zip(np.asarray(gmm.weights), np.asarray(gmm.means),
                      np.asarray(gmm.variances))], 1)
    w = w / w.sum(1, keepdims=True)
    gap = _np_softmax(la)[np.arange(B), y] - _np_softmax(lv)[np.arange(B), y]
    expected = w[:, 0] * _np_ce(fused, y) + w[:, 1] * (gap - float(gmm.means[0])) ** 2
    np.testing.assert_allclose(float(loss), expected.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(terms["w_imb_mean"]), w[:, 1].mean(), rtol=1e-5)


def test_unimodal_weight_adds_the_unimodal_cross_entropies(batch, gmm):
    fused, la, lv, y = batch
    kwargs = dict(alpha=1.0, beta=1.0, gamma=1.0, lambda_t=0.9)
    base, _ = losses.adaptive_loss(fused, la, lv, y, gmm, **kwargs)
    loss, terms = losses.adaptive_loss(fused, la, lv, y, gmm, unimodal_weight=0.5, **kwargs)
    extra = 0.5 * (_np_ce(la, y) + _np_ce(lv, y)).mean()
    np.testing.assert_allclose(float(loss), float(base) + extra, rtol=1e-5)
    np.testing.assert_allclose(float(terms["ce_audio"]), _np_ce(la, y).mean(), rtol=1e-5)


def test_weaker_gap_gradient_raises_the_weaker_modality_only(batch, gmm):
    fused, la, lv, y = batch
    kwargs = dict(alpha=0.0, beta=1.0, gamma=1.0, lambda_t=1.0)

    def loss(la, lv, mode):
        return losses.adaptive_loss(fused, la, lv, y, gmm, gap_gradient=mode, **kwargs)[0]

    both = loss(la, lv, "both")
    np.testing.assert_allclose(float(loss(la, lv, "weaker")), float(both), rtol=1e-6)
    ga, gv = jax.grad(loss, argnums=(0, 1))(jnp.asarray(la), jnp.asarray(lv), "weaker")
    p_a = _np_softmax(la)[np.arange(B), y]
    p_v = _np_softmax(lv)[np.arange(B), y]
    audio_leads = p_a >= p_v
    # The leading modality's logits get no gradient from the gap terms...
    np.testing.assert_array_equal(np.asarray(ga)[audio_leads], 0.0)
    np.testing.assert_array_equal(np.asarray(gv)[~audio_leads], 0.0)
    # ...and a descent step raises the weaker modality's true-class probability.
    assert np.all(np.asarray(gv)[audio_leads, y[audio_leads]] < 0)
    assert np.all(np.asarray(ga)[~audio_leads, y[~audio_leads]] < 0)
    assert audio_leads.any() and (~audio_leads).any()
