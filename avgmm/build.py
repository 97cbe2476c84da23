"""What a run trains with, assembled from a validated config: its dataset, its method,
the compiled steps on its devices and the initial state; and a run's checkpoint loaded
with them, for analysis."""

from typing import Any, Callable, Dict, NamedTuple, Optional

import jax
import ml_collections

from avgmm import methods, optim, state
from avgmm.checkpoints import Checkpointer
from avgmm.data import pipeline
from avgmm.parallel import Parallel
from avgmm.run_config import open_dataset, select_devices

__all__ = ["Built", "LoadedRun", "build", "load_checkpoint", "open_dataset"]


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


class LoadedRun(NamedTuple):
    """A checkpoint ready to evaluate, with the host copy of its state and its
    bookkeeping."""

    par: Any  # avgmm.parallel.Parallel
    state: Any  # replicated over par's devices
    host_state: Any
    ckpt_meta: Dict[str, Any]
    ds: Any  # avgmm.data.pipeline.Dataset
    method: Any  # avgmm.methods.Method


def load_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                    which: Any = "latest") -> Optional[LoadedRun]:
    """A run's checkpoint (`which`: latest, best or an epoch number, i.e. epochs
    completed), or None where the run has no such checkpoint."""
    ds = open_dataset(config)
    built = build(config, ds)
    ckpt = Checkpointer(workdir)
    try:
        restored = ckpt.restore(built.template, which)
    finally:
        ckpt.close()
    if restored is None:
        return None
    host_state, ckpt_meta = restored
    return LoadedRun(built.par, built.par.replicate(host_state), host_state, ckpt_meta or {},
                     ds, built.method)
