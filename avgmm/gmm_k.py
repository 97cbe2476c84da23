"""Three-component 1-D Gaussian mixture (`config.gmm.components=3`): a balanced component
and one per direction of imbalance, fitted by EM in `jnp` beside `avgmm.gmm`'s
two-component closed form, which it leaves untouched.

The recipe is scikit-learn's `GaussianMixture(n_components=3)` step for step, as the
two-component fit's is: hard 3-means labels as the start (Lloyd's algorithm, from
`mean - std, mean, mean + std` and from `min, mean, max`, both deterministic; the better
EM of the two is kept, as scikit-learn's `n_init=2` would), M-step with `reg_covar` added to the
variances, E-step in log space (`logsumexp` over the components), stop when the mean
log-likelihood changes by less than `tol`, and a last E-step for the reported score.

Index convention (components ordered by mean): 0 = balanced (the middle mean), 1 =
audio-dominant (the highest mean: `p_audio >> p_visual`), 2 = visual-dominant (the
lowest). Index 0 stays the balanced one, as for K = 2, so that code reading
`posteriors(...)[:, 0]` as `w_bal` or `means[0]` as `mu_0` reads the same thing.

Fallback chain. Every fit also gets the two-component fit (`avgmm.gmm.fit_gmm` runs it:
the same numbers as `components=2`) and knows the one-Gaussian model; their BICs are `bic_one`
(2 parameters), `bic_two` (5), `bic_three` (8). A fit is *collapsed* when a component
carries less than `MIN_COMPONENT_MASS` samples' worth of responsibility (or the input
is degenerate).
- `select="two"` (keep the components asked for): three unless collapsed, else two
  unless the two-component fit collapsed too, else one. The kept fit is flagged
  `ambiguous` when a smaller model that did not collapse has a BIC at least as low.
- `select="bic"`: the lowest BIC among the fits that did not collapse (three, two, one;
  a tie goes to fewer components); never ambiguous.
Two components are laid out with the balanced one at index 0 and the imbalanced one at
the index of its direction (1 if its mean is above the balanced mean, else 2); the unused
index gets weight 0 (posterior exactly 0). One component: weights `[1, 0, 0]`, every
mean and variance the data's. `fallback` is True whenever fewer than three are kept,
`components_used` says how many.
"""

import functools
from typing import Any, Dict, Tuple

import flax.struct
import jax
import jax.numpy as jnp

from avgmm import gmm_params

K = 3
BALANCED, AUDIO_DOMINANT, VISUAL_DOMINANT = 0, 1, 2


@flax.struct.dataclass
class GMMParams3(gmm_params.GMMParams):
    """A three-component fit: `GMMParams`'s fields with `[3]` weights, means and
    variances (index 0 balanced, 1 audio-dominant, 2 visual-dominant), plus:

    Attributes:
      bic_three: BIC of the three-component EM fit (8 free parameters).
      components_used: how many components the fallback chain kept (3, 2 or 1).
    """

    bic_three: jnp.ndarray
    components_used: jnp.ndarray

    @classmethod
    def unfitted(cls) -> "GMMParams3":
        """Placeholder before the first fit: one standard component, every sample balanced."""
        two = gmm_params.GMMParams.unfitted()
        return cls(weights=jnp.array([1.0, 0.0, 0.0], jnp.float32),
                   means=jnp.zeros((K,), jnp.float32), variances=jnp.ones((K,), jnp.float32),
                   log_likelihood=two.log_likelihood, n_iter=two.n_iter,
                   converged=two.converged, fallback=two.fallback, bic_one=two.bic_one,
                   bic_two=two.bic_two, ambiguous=two.ambiguous,
                   bic_three=jnp.zeros((), jnp.float32),
                   components_used=jnp.ones((), jnp.int32))

    def to_dict(self) -> Dict[str, Any]:
        """`GMMParams.to_dict`'s keys (their meaning by index unchanged: `pi_1` is the
        audio-dominant weight here), the third component's, the imbalanced weight
        `pi_1 + pi_2`, `bic_three` and `components_used`."""
        out = super().to_dict()
        weights, means, variances = (jax.device_get(a) for a in
                                     (self.weights, self.means, self.variances))
        out.update(pi_2=float(weights[2]), mu_2=float(means[2]), var_2=float(variances[2]),
                   pi_imbalanced=float(weights[1]) + float(weights[2]),
                   bic_three=float(jax.device_get(self.bic_three)),
                   components_used=int(jax.device_get(self.components_used)))
        return out


def log_norm_and_resp(params: gmm_params.GMMParams, x: jnp.ndarray
                      ) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """`log p(x)` `[N]` and the responsibilities `[N, K]` of any-K parameters, in log space
    (a weight of 0 gives `log 0 = -inf` and a posterior of exactly 0)."""
    weights, means, variances = params.weights, params.means, params.variances
    diff = x[:, None] - means[None, :]
    weighted = (-0.5 * (gmm_params.LOG_2PI + jnp.log(variances) + diff * diff / variances)
                + jnp.log(weights))
    lpn = jax.nn.logsumexp(weighted, axis=1)
    return lpn, jnp.exp(weighted - lpn[:, None])


def _m_step(x, resp, reg_covar):
    """Weights, means, variances `[K]` from responsibilities `[N, K]` (zero where masked),
    as scikit-learn's `_estimate_gaussian_parameters`."""
    mass = resp.sum(axis=0) + gmm_params.MASS_EPS
    means = (resp * x[:, None]).sum(axis=0) / mass
    variances = (resp * jnp.square(x[:, None] - means)).sum(axis=0) / mass + reg_covar
    return mass / mass.sum(), means, variances


def _starts(x, valid, n):
    """The two 3-means starts `[2, K]`: `mean - std, mean, mean + std`, and `min, mean,
    max`. The first is the two-component fit's; the second seeds a small outer cluster
    (a direction few samples lean to) that the first lets k-means merge away."""
    mean = (x * valid).sum() / n
    std = jnp.sqrt((jnp.square(x - mean) * valid).sum() / n)
    big = jnp.finfo(jnp.float32).max
    low = jnp.min(jnp.where(valid > 0, x, big), initial=big)
    high = jnp.max(jnp.where(valid > 0, x, -big), initial=-big)
    spread = mean + std * jnp.array([-1.0, 0.0, 1.0])
    # Empty input has no min or max: both starts are then the first.
    extremes = jnp.where(valid.sum() > 0, jnp.stack([low, mean, high]), spread)
    return jnp.stack([spread, extremes])


def _k_means_labels(x, valid, start):
    """Hard 3-means partition of 1-D data by Lloyd's algorithm from the centres `start`;
    one-hot `[N, K]`, zero where masked."""
    def assign(centres):
        return jax.nn.one_hot(jnp.argmin(jnp.abs(x[:, None] - centres), axis=1), K) \
            * valid[:, None]

    def update(centres):
        labels = assign(centres)
        count = labels.sum(axis=0)
        # An emptied cluster keeps its centre, as the loop's fixed point needs.
        return jnp.where(count > 0, (labels * x[:, None]).sum(0) / jnp.maximum(count, 1.0),
                         centres)

    def cond(state):
        centres, previous, it = state
        return jnp.any(centres != previous) & (it < gmm_params.KMEANS_MAX_ITERS)

    def body(state):
        centres, _, it = state
        return update(centres), centres, it + 1

    centres, _, _ = jax.lax.while_loop(cond, body, (update(start), start,
                                                    jnp.ones((), jnp.int32)))
    return assign(centres)


def _em(x, valid, n, degenerate, start, max_iters, tol, reg_covar):
    """scikit-learn's EM loop from the 3-means partition of `start`: parameters, score,
    responsibility mass per component, iterations and convergence."""
    params0 = _m_step(x, _k_means_labels(x, valid, start), reg_covar)

    def e_step(wmv):
        lpn, resp = log_norm_and_resp(gmm_params.GMMParams.unfitted().replace(
            weights=wmv[0], means=wmv[1], variances=wmv[2]), x)
        return (lpn * valid).sum() / n, resp * valid[:, None]

    def cond(state):
        _, _, it, converged = state
        return (it < max_iters) & ~converged & ~degenerate

    def body(state):
        wmv, lower_bound, it, _ = state
        new_bound, resp = e_step(wmv)
        return _m_step(x, resp, reg_covar), new_bound, it + 1, \
            jnp.abs(new_bound - lower_bound) < tol

    wmv, _, n_iter, converged = jax.lax.while_loop(
        cond, body, (params0, -jnp.inf, jnp.zeros((), jnp.int32), jnp.zeros((), bool)))
    score, resp = e_step(wmv)
    return wmv, score, resp.sum(axis=0), n_iter, converged


@functools.partial(jax.jit, static_argnames=("max_iters", "tol", "reg_covar", "select"))
def fit_three(x: jnp.ndarray, valid: jnp.ndarray, two: gmm_params.GMMParams, *,
              max_iters: int, tol: float, reg_covar: float, select: str) -> GMMParams3:
    """The three-component fit and its fallback chain (see the module) of the values `x`
    where `valid` (`[N]` float 0/1), `two` being the two-component fit of the same data
    with `select="two"`; `avgmm.gmm.fit_gmm(..., components=3)` checks the arguments,
    fits `two` and calls it."""
    x, n_valid, n, degenerate = gmm_params.masked_values(x, valid)
    # Both starts at once; scikit-learn's n_init keeps the best, and so do we, among
    # the fits that did not collapse (ties and two collapses: the first start's).
    fits = jax.vmap(lambda start: _em(x, valid, n, degenerate, start, max_iters, tol,
                                      reg_covar))(_starts(x, valid, n))
    not_collapsed = jnp.min(fits[2], axis=1) >= gmm_params.MIN_COMPONENT_MASS
    best = jnp.argmax(jnp.where(not_collapsed, fits[1], -jnp.inf))
    (weights, means, variances), score, _, n_iter, converged = jax.tree.map(
        lambda a: a[best], fits)
    ok_three = ~degenerate & not_collapsed[best]
    # With select="two" the two-component fit falls back only where it collapsed.
    ok_two = ~two.fallback

    mean = (x * valid).sum() / n
    var = (jnp.square(x - mean) * valid).sum() / n + reg_covar
    one_score = (gmm_params.component_log_density(x, mean, var) * valid).sum() / n
    log_n = jnp.log(n)
    # BIC = -2 log L + k log n, k = 3 means + 3 variances + 2 free weights.
    bic_three = -2.0 * n * score + 8.0 * log_n
    bic_one, bic_two = two.bic_one, two.bic_two
    inf = jnp.float32(jnp.inf)
    best_smaller = jnp.minimum(bic_one, jnp.where(ok_two, bic_two, inf))
    if select == "bic":
        used = jnp.where(ok_three & (bic_three < best_smaller), 3,
                         jnp.where(ok_two & (bic_two < bic_one), 2, 1))
        ambiguous = jnp.zeros((), bool)
    else:
        used = jnp.where(ok_three, 3, jnp.where(ok_two, 2, 1))
        ambiguous = (((used == 3) & ~(bic_three < best_smaller))
                     | ((used == 2) & ~(bic_two < bic_one)))

    # Three: balanced = middle mean, audio-dominant = highest, visual-dominant = lowest.
    order = jnp.argsort(means)[jnp.array([1, 2, 0])]
    three = (weights[order], means[order], variances[order])
    # Two: the imbalanced component takes the slot of its direction, the other is empty.
    audio_side = two.means[1] >= two.means[0]
    empty = lambda a, fill: jnp.where(  # noqa: E731
        audio_side, jnp.stack([a[0], a[1], fill]), jnp.stack([a[0], fill, a[1]]))
    laid_two = (empty(two.weights, 0.0), empty(two.means, two.means[0]),
                empty(two.variances, two.variances[0]))
    one = (jnp.array([1.0, 0.0, 0.0]), jnp.full((K,), mean), jnp.full((K,), var))
    pick = lambda a3, a2, a1: jnp.where(used == 3, a3, jnp.where(used == 2, a2, a1))  # noqa: E731
    weights, means, variances = (pick(*a) for a in zip(three, laid_two, one))
    return GMMParams3(
        weights=weights, means=means, variances=variances,
        log_likelihood=pick(score, two.log_likelihood, one_score),
        n_iter=jnp.where(used == 2, two.n_iter, n_iter),
        converged=jnp.where(used == 2, two.converged, converged),
        fallback=used < 3, bic_one=bic_one, bic_two=bic_two, ambiguous=ambiguous,
        bic_three=bic_three, components_used=used.astype(jnp.int32))
