"""What a run trains with, assembled from a validated config: its dataset, its method,
the compiled steps on its devices and the initial state."""

from typing import Any, Callable, NamedTuple, Optional

import jax
import ml_collections

from avgmm import methods, optim, state
from avgmm.data import pipeline
from avgmm.parallel import Parallel
from avgmm.run_config import open_dataset, select_devices

__all__ = ["Built", "build", "open_dataset"]


class Built(NamedTuple):
    """A run's method, the compiled steps on its devices, and the initial state on the
    host (`par.replicate(template)` puts it on the devices)."""

    method: methods.Method
    par: Parallel
    template: Any


def build(config: ml_collections.ConfigDict, ds: pipeline.Dataset,
          before_init: Optional[Callable[[methods.Method, Parallel, Any], None]] = None
          ) -> Built:
    """The method, devices and initial state of a (validated) config on a dataset.

    `before_init(method, par, state_shapes)` runs before the initial state is computed,
    with its shapes (`jax.eval_shape`): e.g. to start compiling the steps, which the
    initialization's own compilation then overlaps."""
    method = methods.get(config)
    par = Parallel(select_devices(config), config, ds.meta, method)
    tx = optim.make_optimizer(config, ds.steps_per_epoch(config.batch_size))
    init = state.initializer(config, ds.meta, method)
    if before_init is not None:
        shapes = jax.eval_shape(
            lambda v: state.create_train_state(config, ds.meta, tx, method, init, v),
            init.variables_shapes)
        before_init(method, par, shapes)
    return Built(method, par, state.create_train_state(config, ds.meta, tx, method, init))
