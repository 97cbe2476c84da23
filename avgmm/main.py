"""Command-line entry (smoke for now): one forward/backward pass of the model."""

import time

import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

from avgmm import losses
from avgmm.models import AVClassifier

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                lock_config=True)


def main(argv):
    del argv
    config = FLAGS.config
    model = AVClassifier(num_classes=6, width=config.model.width,
                         stage_sizes=tuple(config.model.stage_sizes))
    audio = jax.random.normal(jax.random.key(0), (4, 64, 48))
    frames = jax.random.normal(jax.random.key(1), (4, 1, 64, 64, 3))
    labels = jnp.arange(4) % 6
    variables = model.init(jax.random.key(2), audio, frames)

    def loss_fn(params):
        out, _ = model.apply({**variables, "params": params}, audio, frames, train=True,
                             mutable=["batch_stats"])
        return losses.warmup_loss(out.fused, out.audio, out.visual, labels)

    start = time.time()
    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
    print({k: round(float(v), 4) for k, v in terms.items()},
          f"grad norm {float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads)))):.3f}",
          f"({time.time() - start:.1f}s)")


if __name__ == "__main__":
    app.run(main)
