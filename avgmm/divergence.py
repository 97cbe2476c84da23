"""A diverged run is stopped in one line (`DivergedError`) before anything of the bad
epoch is evaluated, written or saved."""

import math
from typing import Any

import jax
import jax.numpy as jnp

from avgmm.errors import DivergedError


@jax.jit
def _all_finite(tree: Any) -> jnp.ndarray:
    flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
             if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def check_finite(step: int, tree: Any, loss: float, last_good: str) -> None:
    """Raises `DivergedError` when the epoch's mean loss or any floating leaf of `tree`
    (reduced on the device: one scalar comes back) is NaN or inf."""
    if math.isfinite(loss) and bool(_all_finite(tree)):
        return
    raise DivergedError(
        f"training diverged in epoch {step} (loss {loss}; NaN or inf in the loss or the "
        f"parameters): the epoch was neither saved nor evaluated; {last_good}. Lower "
        "config.optimizer.learning_rate and start again with --fresh")
