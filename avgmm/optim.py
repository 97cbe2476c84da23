"""Optimizer and learning-rate schedule, and the optimizer reset between phases."""

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate_schedule(config: ml_collections.ConfigDict,
                           steps_per_epoch: int) -> optax.Schedule:
    """`optimizer.lr_schedule`: constant, step (StepLR) or cosine over the whole run."""
    o = config.optimizer
    if o.lr_schedule == "constant":
        return optax.constant_schedule(o.learning_rate)
    if o.lr_schedule == "step":
        return optax.exponential_decay(o.learning_rate, o.lr_step_epochs * steps_per_epoch,
                                       o.lr_decay, staircase=True)
    return optax.cosine_decay_schedule(o.learning_rate,
                                       max(1, config.epochs * steps_per_epoch))


def make_optimizer(config: ml_collections.ConfigDict,
                   steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with momentum or Adam, weight decay added to the gradient (as in PyTorch).

    The learning rate is an injected hyper-parameter whose schedule keeps its own step
    count in the optimizer state; `reset_optimizer` decides whether a reset keeps it.
    """
    o = config.optimizer

    def build(learning_rate):
        if o.name == "sgd":
            opt = optax.sgd(learning_rate, momentum=o.momentum or None)
        else:
            opt = optax.adam(learning_rate)
        return optax.chain(optax.add_decayed_weights(o.weight_decay), opt)

    return optax.inject_hyperparams(build)(
        learning_rate=learning_rate_schedule(config, steps_per_epoch))


def reset_optimizer(state, reset_schedule: bool = False):
    """Fresh optimizer moments (zero momentum / Adam moments) of a `TrainState`.

    `reset_schedule=False` keeps the learning-rate schedule where it was: the injected
    hyper-parameters and the schedule's own step count (`hyperparams_states`, which drives
    it; the outer `count` alone does not) are carried over. True re-creates optimizer and
    schedule together, as building both anew in PyTorch would.
    """
    fresh = state.tx.init(state.params)
    if not reset_schedule:
        old = state.opt_state
        fresh = fresh._replace(count=old.count, hyperparams=old.hyperparams,
                               hyperparams_states=old.hyperparams_states)
    return state.replace(opt_state=fresh)


def moment_norm(opt_state) -> jnp.ndarray:
    """Norm of the optimizer's moment buffers (0 right after a reset)."""
    leaves = [x for x in jax.tree.leaves(opt_state.inner_state)
              if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating) and x.ndim > 0]
    return jnp.sqrt(sum((jnp.sum(jnp.square(x)) for x in leaves), jnp.zeros((), jnp.float32)))
