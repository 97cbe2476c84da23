"""The fitted mixture's parameters (`GMMParams`, a pytree kept in the train state) and
what the two- and three-component EMs (`avgmm.gmm`, `avgmm.gmm_k`) share: the constants of
scikit-learn's recipe and a component's log density."""

import math
from typing import Any, Dict

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

LOG_2PI = math.log(2.0 * math.pi)
# scikit-learn adds 10 * eps to each component's mass so that an empty one divides by
# a positive number.
MASS_EPS = 10.0 * float(np.finfo(np.float32).eps)
KMEANS_MAX_ITERS = 100
# A component carrying less than this many samples' worth of responsibility has no
# usable variance (a single point collapses to reg_covar): fall back to one component.
MIN_COMPONENT_MASS = 2.0


@flax.struct.dataclass
class GMMParams:
    """Fitted two-component mixture; a pytree, so it lives in the train state.

    Attributes:
      weights: `[2]` mixture weights `pi_0, pi_1`.
      means: `[2]` component means `mu_0, mu_1`.
      variances: `[2]` component variances `sigma_0^2, sigma_1^2` (floored by reg_covar).
      log_likelihood: mean log-likelihood per sample of the fitted data (as sklearn's
        `score`).
      n_iter: EM iterations run.
      converged: whether the change in mean log-likelihood fell below `tol`.
      fallback: whether the one-component fallback was used (degenerate input, or the
        BIC preferred one component under `select="bic"`).
      bic_one: BIC of a single Gaussian on the same data (2 free parameters).
      bic_two: BIC of the two-component EM fit (5 free parameters).
      ambiguous: the data do not support two components (`bic_two >= bic_one`) while
        two were kept: which one is "balanced" is then arbitrary.
    """

    weights: jnp.ndarray
    means: jnp.ndarray
    variances: jnp.ndarray
    log_likelihood: jnp.ndarray
    n_iter: jnp.ndarray
    converged: jnp.ndarray
    fallback: jnp.ndarray
    bic_one: jnp.ndarray
    bic_two: jnp.ndarray
    ambiguous: jnp.ndarray

    @classmethod
    def unfitted(cls) -> "GMMParams":
        """Placeholder before the first fit: one standard component, every sample balanced."""
        return cls(weights=jnp.array([1.0, 0.0], jnp.float32),
                   means=jnp.zeros((2,), jnp.float32),
                   variances=jnp.ones((2,), jnp.float32),
                   log_likelihood=jnp.zeros((), jnp.float32),
                   n_iter=jnp.zeros((), jnp.int32),
                   converged=jnp.zeros((), bool),
                   fallback=jnp.ones((), bool),
                   bic_one=jnp.zeros((), jnp.float32),
                   bic_two=jnp.zeros((), jnp.float32),
                   ambiguous=jnp.zeros((), bool))

    def to_dict(self) -> Dict[str, Any]:
        """Plain Python numbers (JSON-safe) for logs and metrics files."""
        arr = lambda a: np.asarray(jax.device_get(a))  # noqa: E731
        weights, means, variances = arr(self.weights), arr(self.means), arr(self.variances)
        return {
            "pi_0": float(weights[0]), "pi_1": float(weights[1]),
            "mu_0": float(means[0]), "mu_1": float(means[1]),
            "var_0": float(variances[0]), "var_1": float(variances[1]),
            "log_likelihood": float(arr(self.log_likelihood)),
            "n_iter": int(arr(self.n_iter)),
            "converged": bool(arr(self.converged)),
            "fallback": bool(arr(self.fallback)),
            "bic_one": float(arr(self.bic_one)),
            "bic_two": float(arr(self.bic_two)),
            "ambiguous": bool(arr(self.ambiguous)),
        }


def component_log_density(x: jnp.ndarray, mean: jnp.ndarray,
                           variance: jnp.ndarray) -> jnp.ndarray:
    """`log N(x | mean, variance)` elementwise."""
    diff = x - mean
    return -0.5 * (LOG_2PI + jnp.log(variance) + diff * diff / variance)


def masked_values(x: jnp.ndarray, valid: jnp.ndarray):
    """`(x, n_valid, n, degenerate)` of the values `x` where `valid` (`[N]` float 0/1): the
    invalid ones zeroed, their count, that count floored at 1 (a divisor), and whether
    they cannot make a mixture (fewer than 2, or all equal)."""
    x = jnp.where(valid > 0, x, 0.0)
    n_valid = valid.sum()
    n = jnp.maximum(n_valid, 1.0)
    big = jnp.finfo(jnp.float32).max
    spread = (jnp.max(jnp.where(valid > 0, x, -big), initial=-big)
              - jnp.min(jnp.where(valid > 0, x, big), initial=big))
    return x, n_valid, n, (n_valid < 2) | ~(spread > 0)
