"""Two-component 1-D Gaussian mixture fitted by EM in `jnp` (paper eq. 8-9).

`config.gmm.components=3` fits three components instead (`avgmm.gmm_k`, which this
module dispatches to): index 0 balanced, 1 audio-dominant, 2 visual-dominant. Whatever
K, `posteriors` gives the `[N, K]` responsibilities, `imbalanced_posterior` the paper's
`w_imb` and `direction_posteriors` `(w_bal, w_audio_dominant, w_visual_dominant)`.

The recipe follows `sklearn.mixture.GaussianMixture(n_components=2)` step for step, so
that both give the same fit: hard 2-means labels as the start, M-step with `reg_covar`
added to the variances, E-step in log space, stop when the mean log-likelihood changes by
less than `tol`, and report the mean log-likelihood of the data under the final
parameters (scikit-learn's `score`). The 2-means start is Lloyd's algorithm from
`mean -/+ std`, which is deterministic and, in one dimension, reaches the same partition
as scikit-learn's k-means++ start on the data this method sees.

Index 0 is always the *balanced* component (mean closest to 0), index 1 the imbalanced one.

Degenerate input (fewer than 2 samples, all values equal, or a component whose total
responsibility falls below `MIN_COMPONENT_MASS` samples) yields the one-component fallback: weights
`[1, 0]`, both means and variances those of the data, so every sample is balanced
(`w_imb = 0`), `fallback=True` and never a NaN.

Once training has balanced the modalities the gaps become unimodal and the two components
split one peak: "nearest to 0 = balanced" then labels an arbitrary half of it. Every fit
therefore also reports the BIC of the one- and two-component models; a two-component fit
whose BIC is not lower is flagged `ambiguous`, and `select="bic"` replaces it by the
one-component fallback (every sample balanced).
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from avgmm import gmm_k, gmm_params
# GMMParams and MIN_COMPONENT_MASS are part of this module's interface.
from avgmm.gmm_params import (GMMParams, MIN_COMPONENT_MASS,  # noqa: F401
                              KMEANS_MAX_ITERS as _KMEANS_MAX_ITERS,
                              MASS_EPS as _MASS_EPS,
                              component_log_density as _component_log_density)


def _log_norm_and_resp(params_wmv, x):
    """`log p(x)` and both responsibilities, each `[N]`.

    Two components need no `[N, 2]` arrays: with `a, b` the weighted log densities and
    `e = exp(-|a - b|)`, `log p = max(a, b) + log1p(e)` and the posteriors are `1/(1+e)`
    and `e/(1+e)`, which costs one exp and one log1p per sample and stays exact when one
    weight is 0 (`log 0 = -inf` gives `e = 0`).
    """
    weights, means, variances = params_wmv
    a = _component_log_density(x, means[0], variances[0]) + jnp.log(weights[0])
    b = _component_log_density(x, means[1], variances[1]) + jnp.log(weights[1])
    e = jnp.exp(-jnp.abs(a - b))
    inv = 1.0 / (1.0 + e)
    upper_wins = b > a
    r0 = jnp.where(upper_wins, e, 1.0) * inv
    r1 = jnp.where(upper_wins, 1.0, e) * inv
    return jnp.maximum(a, b) + jnp.log1p(e), r0, r1


def _components(params: GMMParams) -> int:
    """K, known statically from the parameters' shape (2: the paper's closed form)."""
    return int(jnp.shape(params.weights)[0])


def posteriors(params: GMMParams, x: jnp.ndarray) -> jnp.ndarray:
    """Posterior responsibilities `[N, K]` (eq. 9), computed in log space; rows sum to 1."""
    x = jnp.asarray(x, jnp.float32).reshape(-1)
    if _components(params) != 2:
        return gmm_k.log_norm_and_resp(params, x)[1]
    _, r0, r1 = _log_norm_and_resp((params.weights, params.means, params.variances), x)
    return jnp.stack([r0, r1], axis=1)


def imbalanced_posterior(params: GMMParams, x: jnp.ndarray) -> jnp.ndarray:
    """`w_imb = p(imbalanced | x)`, `[N]`: component 1's posterior for K = 2 (exactly as
    before K = 3 existed), the sum of both directions' for K = 3."""
    post = posteriors(params, x)
    return post[:, 1] if _components(params) == 2 else post[:, 1:].sum(axis=1)


def direction_posteriors(params: GMMParams, x: jnp.ndarray):
    """`(w_bal, w_audio_dominant, w_visual_dominant)`, each `[N]`, summing to 1.

    Audio-dominant means `p_audio >> p_visual` (a high gap). For K = 3 they are the three
    components' posteriors. For K = 2 the imbalanced posterior goes whole to the side its
    component's mean lies on relative to the balanced one (`mu_1 >= mu_0`: audio): two
    components can only name one direction, and this lets callers read both for any K.
    """
    post = posteriors(params, x)
    if _components(params) != 2:
        return post[:, 0], post[:, 1], post[:, 2]
    audio_side = params.means[1] >= params.means[0]
    w_imb = post[:, 1]
    zero = jnp.zeros_like(w_imb)
    return post[:, 0], jnp.where(audio_side, w_imb, zero), jnp.where(audio_side, zero, w_imb)


def log_prob(params: GMMParams, x: jnp.ndarray) -> jnp.ndarray:
    """Per-sample log-likelihood `log p(x)` under the mixture, `[N]`."""
    x = jnp.asarray(x, jnp.float32).reshape(-1)
    if _components(params) != 2:
        return gmm_k.log_norm_and_resp(params, x)[0]
    return _log_norm_and_resp((params.weights, params.means, params.variances), x)[0]


def _m_step(x, r0, r1, reg_covar):
    """Weights, means, variances from the responsibilities (zero where masked)."""
    def moments(r):
        mass = r.sum() + _MASS_EPS
        mean = (r * x).sum() / mass
        return mass, mean, (r * jnp.square(x - mean)).sum() / mass + reg_covar

    (m0, mu0, var0), (m1, mu1, var1) = moments(r0), moments(r1)
    mass = jnp.stack([m0, m1])
    return mass / mass.sum(), jnp.stack([mu0, mu1]), jnp.stack([var0, var1])


def _e_step(params_wmv, x, valid, n):
    """Mean log-likelihood of the valid samples and responsibilities (zero where masked)."""
    lpn, r0, r1 = _log_norm_and_resp(params_wmv, x)
    return (lpn * valid).sum() / n, r0 * valid, r1 * valid


def _two_means_labels(x, valid, n):
    """Hard 2-means partition of 1-D data by Lloyd's algorithm; `[N]` bool, True = upper."""
    total, total_x = valid.sum(), (x * valid).sum()

    def centers(threshold):
        upper = (x > threshold).astype(x.dtype) * valid
        n_up, sum_up = upper.sum(), (x * upper).sum()
        n_lo, sum_lo = total - n_up, total_x - sum_up
        c_lo = jnp.where(n_lo > 0, sum_lo / jnp.maximum(n_lo, 1.0), threshold)
        c_up = jnp.where(n_up > 0, sum_up / jnp.maximum(n_up, 1.0), threshold)
        return 0.5 * (c_lo + c_up)

    def cond(state):
        threshold, previous, it = state
        return (threshold != previous) & (it < _KMEANS_MAX_ITERS)

    def body(state):
        threshold, _, it = state
        return centers(threshold), threshold, it + 1

    # Starting centres mean -/+ std: their midpoint, the first threshold, is the mean.
    start = total_x / n
    threshold, _, _ = jax.lax.while_loop(
        cond, body, (centers(start), start, jnp.ones((), jnp.int32)))
    return x > threshold


SELECTIONS = ("two", "bic")
# config.gmm.components: the paper's two, or three (a balanced and one per direction).
COMPONENTS = (2, 3)


def unfitted(components: int = 2) -> GMMParams:
    """The placeholder before the first fit, shaped as a `components`-component fit (the
    train state's structure must not change when the first fit replaces it)."""
    return GMMParams.unfitted() if components == 2 else gmm_k.GMMParams3.unfitted()


@functools.partial(jax.jit, static_argnames=("max_iters", "tol", "reg_covar", "select"))
def _fit(x, valid, *, max_iters, tol, reg_covar, select):
    x, n_valid, n, degenerate = gmm_params.masked_values(x, valid)

    upper = _two_means_labels(x, valid, n).astype(jnp.float32) * valid
    params0 = _m_step(x, valid - upper, upper, reg_covar)

    def cond(state):
        _, _, it, converged = state
        return (it < max_iters) & ~converged & ~degenerate

    def body(state):
        params, lower_bound, it, _ = state
        new_bound, r0, r1 = _e_step(params, x, valid, n)
        params = _m_step(x, r0, r1, reg_covar)
        return params, new_bound, it + 1, jnp.abs(new_bound - lower_bound) < tol

    params, _, n_iter, converged = jax.lax.while_loop(
        cond, body, (params0, -jnp.inf, jnp.zeros((), jnp.int32), jnp.zeros((), bool)))
    score, r0, r1 = _e_step(params, x, valid, n)
    fallback = degenerate | (jnp.minimum(r0.sum(), r1.sum()) < MIN_COMPONENT_MASS)

    # One-component fallback: the data's own mean and variance for both components.
    mean = (x * valid).sum() / n
    var = (jnp.square(x - mean) * valid).sum() / n + reg_covar
    one = (jnp.array([1.0, 0.0]), jnp.full((2,), mean), jnp.full((2,), var))
    one_score = (_component_log_density(x, mean, var) * valid).sum() / n
    # BIC = -2 log L + k log n; k = 2 (mean, variance) vs 5 (two of each and a weight).
    log_n = jnp.log(n)
    bic_one = -2.0 * n * one_score + 2.0 * log_n
    bic_two = -2.0 * n * score + 5.0 * log_n
    one_is_better = ~(bic_two < bic_one) & ~fallback
    if select == "bic":
        fallback = fallback | one_is_better
        ambiguous = jnp.zeros((), bool)
    else:
        ambiguous = one_is_better
    weights, means, variances = jax.tree.map(
        lambda a, b: jnp.where(fallback, b, a), params, one)
    score = jnp.where(fallback, one_score, score)

    # Balanced component first: the one whose mean is nearest to 0.
    order = jnp.where(jnp.abs(means[1]) < jnp.abs(means[0]), jnp.array([1, 0]), jnp.array([0, 1]))
    return GMMParams(weights=weights[order], means=means[order], variances=variances[order],
                     log_likelihood=score, n_iter=n_iter, converged=converged,
                     fallback=fallback, bic_one=bic_one, bic_two=bic_two,
                     ambiguous=ambiguous)


def fit_gmm(x: jnp.ndarray, *, mask: Optional[jnp.ndarray] = None, max_iters: int = 100,
            tol: float = 1e-3, reg_covar: float = 1e-6, select: str = "two",
            components: int = 2) -> GMMParams:
    """Fits the two- (or three-) component mixture to 1-D data by EM.

    Args:
      x: `[N]` values (the modality gaps); `[N, 1]` is accepted too.
      mask: optional `[N]` bool/0-1 array; False entries (padding) are ignored. This lets
        callers pad to a fixed size so that successive fits compile once.
      max_iters: cap on EM iterations.
      tol: convergence threshold on the change of the mean log-likelihood.
      reg_covar: non-negative floor added to each variance.
      select: `two` keeps the two-component fit whenever EM gives one (flagging it
        `ambiguous` when its BIC is not lower than one Gaussian's); `bic` keeps it only
        when its BIC is lower, else returns the one-component fallback.
      components: 2 (the paper's mixture, this module's closed form) or 3
        (`avgmm.gmm_k.fit_three`: its own ordering and fallback chain).

    Returns:
      `GMMParams` with index 0 the balanced component (mean nearest 0); for
      `components=3` a `gmm_k.GMMParams3`.

    Raises:
      ValueError: `x` (where not masked) contains NaN or inf, or an argument is out of
        range. Under `jit`/`pmap` tracing no error can be raised: non-finite entries are
        then ignored like masked ones.
    """
    if max_iters < 1:
        raise ValueError(f"max_iters must be >= 1, got {max_iters}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    if not reg_covar >= 0:
        raise ValueError(f"reg_covar must be >= 0, got {reg_covar}")
    if select not in SELECTIONS:
        raise ValueError(f"select must be one of {SELECTIONS}, got {select!r}")
    if components not in COMPONENTS:
        raise ValueError(f"components must be one of {COMPONENTS}, got {components!r}")
    x = jnp.asarray(x, jnp.float32)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1:
        raise ValueError(f"fit_gmm expects 1-D data [N] or [N, 1], got shape {x.shape}")
    valid = jnp.ones(x.shape, bool) if mask is None else jnp.asarray(mask).astype(bool)
    if valid.shape != x.shape:
        raise ValueError(f"mask shape {valid.shape} does not match data shape {x.shape}")
    finite = jnp.isfinite(x)
    if not isinstance(x, jax.core.Tracer) and not isinstance(valid, jax.core.Tracer):
        n_bad = int((valid & ~finite).sum())
        if n_bad:
            bad = np.flatnonzero(np.asarray(valid & ~finite))
            raise ValueError(
                f"fit_gmm got {n_bad} non-finite value(s) (NaN or inf), first at index "
                f"{bad[0]} (value {float(x[bad[0]])}); the gaps must come from finite logits. "
                "Check the model outputs for NaN (e.g. a too-large learning rate).")
    valid = (valid & finite).astype(jnp.float32)
    two = _fit(x, valid, max_iters=int(max_iters), tol=float(tol), reg_covar=float(reg_covar),
               select="two" if components == 3 else select)
    if components == 3:
        # The two-component fit is the three's fallback and gives its bic_one, bic_two.
        return gmm_k.fit_three(x, valid, two, max_iters=int(max_iters), tol=float(tol),
                               reg_covar=float(reg_covar), select=select)
    return two


def fit_gathered(gaps: jnp.ndarray, mask: jnp.ndarray, *, gmm_config,
                 axis_name: str) -> GMMParams:
    """Inside a mapped function: gathers every device's gaps and fits the GMM on the full
    array (Algorithm 1, step b); `gmm_config` is `config.gmm`."""
    gaps = jax.lax.all_gather(gaps, axis_name, tiled=True)
    mask = jax.lax.all_gather(mask, axis_name, tiled=True)
    return fit_gmm(gaps, mask=mask, max_iters=gmm_config.max_iters, tol=gmm_config.tol,
                   reg_covar=gmm_config.reg_covar, select=gmm_config.select,
                   components=components_of(gmm_config))


def components_of(gmm_config) -> int:
    """`gmm_config.components`; 2 for a config saved before the field existed."""
    return int(gmm_config.get("components", 2))


def fit_on_devices(par, gaps, mask, gmm_config) -> GMMParams:
    """The GMM fitted on the devices of `par` (an `avgmm.parallel.Parallel`) to the gaps a
    per-sample pass left there (`[devices, n]` gaps and mask); returns it replicated.
    Every caller shares one compiled fit."""
    return par.map("fit_gmm", functools.partial(_mapped_fit, gmm_config))(gaps, mask)


def mapped_fit(par, gmm_config):
    """The mapped function `fit_on_devices` runs (for `Parallel.compile_ahead`)."""
    return par.mapped("fit_gmm", functools.partial(_mapped_fit, gmm_config))


def _mapped_fit(gmm_config, axis: str):
    return functools.partial(fit_gathered, gmm_config=gmm_config, axis_name=axis)
