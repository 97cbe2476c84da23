"""The train state: parameters, optimizer, BatchNorm statistics, the method's state."""

import functools
from typing import Any, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn
from flax.training import train_state

from avgmm.methods import Method
from avgmm.models import make_model


class TrainState(train_state.TrainState):
    """Parameters, optimizer, BatchNorm statistics, the method's own state (e.g. the GMM
    in force) and epochs completed."""

    batch_stats: Any
    method_state: Any
    epoch: jnp.ndarray


class Initializer(NamedTuple):
    """The model's initialization, traced and lowered but not compiled yet: its output
    shapes are known (`variables_shapes`) before anything compiles."""

    model: nn.Module
    lowered: Any  # jax.stages.Lowered of model.init
    args: Tuple[Any, ...]

    @property
    def variables_shapes(self):
        return self.lowered.out_info

    def variables(self):
        """Compiles and runs the initialization."""
        return self.lowered.compile(compiler_options=_init_compile_options())(*self.args)


def initializer(config: ml_collections.ConfigDict, meta, method: Method) -> Initializer:
    """The initialization of `make_model`'s model for a dataset (`DatasetMeta`), lowered
    for one sample (the model never sees the device axis here)."""
    model = make_model(config, meta, method)
    size = config.data.image_size
    audio = jnp.zeros((1,) + tuple(meta.audio_shape), jnp.float32)
    frames = jnp.zeros((1, config.data.num_frames, size, size, 3), jnp.float32)
    args = (jax.random.key(config.seed), audio, frames)
    return Initializer(model, jax.jit(functools.partial(model.init, train=False)).lower(*args),
                       args)


# XLA:CPU's default LLVM -O3 spends most of a cold start's first minute on the
# initializers' unrolled random-number code; -O2 compiles it several times faster (36 s
# -> 10 s for the demo model on a busy 2-core machine) and computes the same bits
# (tests/test_host_overhead.py holds the models to that).
INIT_COMPILE_OPTIONS = {"xla_backend_optimization_level": 2}


def _init_compile_options() -> Dict[str, Any]:
    """`INIT_COMPILE_OPTIONS` on the CPU; left alone elsewhere (other backends, and a
    process that turned optimizations down itself)."""
    if jax.default_backend() != "cpu" or jax.config.read("jax_disable_most_optimizations"):
        return {}
    return dict(INIT_COMPILE_OPTIONS)


def create_train_state(config: ml_collections.ConfigDict, meta, tx: optax.GradientTransformation,
                       method: Method, init: Optional[Initializer] = None,
                       variables: Any = None) -> TrainState:
    """Initialized (unreplicated) state for a dataset (`DatasetMeta`). `init`: an
    `initializer` made before (e.g. to read its shapes first); `variables`: the model's
    variables (or their shapes, under `jax.eval_shape`) instead of running it."""
    init = init or initializer(config, meta, method)
    if variables is None:
        variables = init.variables()
    params = variables["params"]
    # TrainState.create's, in one compiled function: run eagerly, the optimizer's
    # initialization compiles one small computation per parameter shape.
    return TrainState(step=0, apply_fn=init.model.apply, params=params, tx=tx,
                      opt_state=jax.jit(tx.init)(params), batch_stats=variables["batch_stats"],
                      method_state=method.init_state(meta), epoch=jnp.zeros((), jnp.int32))
