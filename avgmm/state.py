"""The train state: parameters, optimizer, BatchNorm statistics, the method's state."""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from avgmm.methods import Method
from avgmm.models import make_model


class TrainState(train_state.TrainState):
    """Parameters, optimizer, BatchNorm statistics, the method's own state (e.g. the GMM
    in force) and epochs completed."""

    batch_stats: Any
    method_state: Any
    epoch: jnp.ndarray


def create_train_state(config: ml_collections.ConfigDict, meta, tx: optax.GradientTransformation,
                       method: Method) -> TrainState:
    """Initialized (unreplicated) state for a dataset (`DatasetMeta`); the model never
    sees the device axis here."""
    model = make_model(config, meta, method.head)
    size = config.data.image_size
    audio = jnp.zeros((1,) + tuple(meta.audio_shape), jnp.float32)
    frames = jnp.zeros((1, config.data.num_frames, size, size, 3), jnp.float32)
    variables = jax.jit(functools.partial(model.init, train=False))(
        jax.random.key(config.seed), audio, frames)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables["batch_stats"],
                             method_state=method.init_state(meta),
                             epoch=jnp.zeros((), jnp.int32))
