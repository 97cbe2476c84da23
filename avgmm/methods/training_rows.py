"""One inference-mode pass over the training split that gives a row per sample: the
valuations of the sample-level methods (`sample_valuation`, `remix`) that decide, before
an epoch, what each training sample is used for.

Inference mode as in evaluation (BatchNorm running statistics, evaluation frames), so a
sample's row does not depend on the batch it falls in, on the device count or on the
random state: a resumed run computes the same rows.
"""

from typing import Any, Callable, Dict

import jax.numpy as jnp
import numpy as np

from avgmm.data import augment
from avgmm.methods import base
from avgmm.models import AVLogits

# row_fn(head, phi_a, phi_v, batch) -> {name: [B] array}; head(phi_a, phi_v) -> AVLogits.
RowFn = Callable[[Callable[[jnp.ndarray, jnp.ndarray], AVLogits], jnp.ndarray, jnp.ndarray,
                  Dict[str, jnp.ndarray]], Dict[str, jnp.ndarray]]


def training_rows(owner: Any, run: base.RunContext, state,
                  row_fn: RowFn) -> Dict[str, np.ndarray]:
    """`row_fn`'s per-sample arrays over the whole training split, on the host, in dataset
    index order (`[N]` each), on every process; compiled once per `owner` (the method)."""
    par, config = run.par, run.config
    model, size = par.model, config.data.image_size

    def rows(state, batch):
        frames = augment.eval_frames(batch["frames"], size)
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        phi_a, phi_v = model.apply(variables, batch["audio"].astype(jnp.float32), frames,
                                   False, method=model.features)

        def head(a, v):
            return model.apply({"params": state.params}, a, v,
                               method=lambda m, a_, v_: m.head(a_, v_))

        return row_fn(head, phi_a, phi_v, batch)

    _, host = par.sample_rows(f"{owner.name}_rows", rows, state, run.ds, "train",
                              config.eval_batch_size)
    n = run.ds.meta.num_examples["train"]
    if not np.array_equal(host["index"], np.arange(n)):
        raise RuntimeError(f"the training pass returned {len(host['index'])} rows, not one "
                           f"for each of the {n} training samples")
    return host
