"""The train state and the model it trains."""

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from avgmm.data import pipeline
from avgmm import methods
from avgmm.methods import Method
from avgmm.models import AVClassifier

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
AXIS = "batch"  # the device axis of every pmapped function


class TrainState(train_state.TrainState):
    """Parameters, optimizer, BatchNorm statistics, the method's own state (e.g. the GMM
    in force) and epochs completed."""

    batch_stats: Any
    method_state: Any
    epoch: jnp.ndarray


def make_model(config: ml_collections.ConfigDict, meta: pipeline.DatasetMeta,
               axis_name: Optional[str] = AXIS) -> AVClassifier:
    """The two-stream classifier its method trains (`Method.model_class`, with the
    method's fusion head), sized from the config and the dataset's metadata."""
    method = methods.REGISTRY[config.method]
    return method.model_class(num_classes=meta.num_classes, width=config.model.width,
                              stage_sizes=tuple(config.model.stage_sizes),
                              axis_name=axis_name, dtype=DTYPES[config.model.dtype],
                              head_type=method.head)


def create_train_state(config: ml_collections.ConfigDict, meta: pipeline.DatasetMeta,
                       tx: optax.GradientTransformation, method: Method) -> TrainState:
    """Initialized (unreplicated) state; the model never sees the pmap axis here."""
    model = make_model(config, meta, axis_name=None)
    size = config.data.image_size
    audio = jnp.zeros((1,) + tuple(meta.audio_shape), jnp.float32)
    frames = jnp.zeros((1, config.data.num_frames, size, size, 3), jnp.float32)
    variables = jax.jit(functools.partial(model.init, train=False))(
        jax.random.key(config.seed), audio, frames)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables["batch_stats"],
                             method_state=method.init_state(meta),
                             epoch=jnp.zeros((), jnp.int32))
