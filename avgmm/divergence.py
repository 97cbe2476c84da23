"""A diverged run is stopped in one line (`DivergedError`) before anything of the bad
epoch is evaluated, written or saved."""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from avgmm.errors import DivergedError


def _all_finite(tree: Any) -> bool:
    # On the host copy the checkpoint is saved from: nothing to compile, nothing to send
    # back to the device.
    return all(bool(np.isfinite(x).all()) for x in map(np.asarray, jax.tree.leaves(tree))
               if jnp.issubdtype(x.dtype, jnp.inexact))


def check_finite(step: int, tree: Any, loss: float, last_good: str) -> None:
    """Raises `DivergedError` when the epoch's mean loss or any floating leaf of `tree`
    (host arrays) is NaN or inf."""
    if math.isfinite(loss) and _all_finite(tree):
        return
    raise DivergedError(
        f"training diverged in epoch {step} (loss {loss}; NaN or inf in the loss or the "
        f"parameters): the epoch was neither saved nor evaluated; {last_good}. Lower "
        "config.optimizer.learning_rate and start again with --fresh")
