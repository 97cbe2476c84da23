"""What a run trains with, assembled from a validated config: its dataset, its method,
the compiled steps on its devices and the initial state."""

from typing import Any, NamedTuple

import ml_collections

from avgmm import methods, optim
from avgmm.data import pipeline
from avgmm.parallel import Parallel
from avgmm.run_config import open_dataset, select_devices
from avgmm.state import create_train_state

__all__ = ["Built", "build", "open_dataset"]


class Built(NamedTuple):
    """A run's method, the compiled steps on its devices, and the initial state on the
    host (`par.replicate(template)` puts it on the devices)."""

    method: methods.Method
    par: Parallel
    template: Any


def build(config: ml_collections.ConfigDict, ds: pipeline.Dataset) -> Built:
    """The method, devices and initial state of a (validated) config on a dataset."""
    method = methods.get(config)
    par = Parallel(select_devices(config), config, ds.meta, method)
    tx = optim.make_optimizer(config, ds.steps_per_epoch(config.batch_size))
    return Built(method, par, create_train_state(config, ds.meta, tx, method))
