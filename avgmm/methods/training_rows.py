"""One inference-mode pass over the training split that gives a row per sample: the
valuations of the sample-level methods (`sample_valuation`, `remix`) that decide, before
an epoch, what each training sample is used for.

Inference mode as in evaluation (BatchNorm running statistics, evaluation frames), so a
sample's row does not depend on the batch it falls in, on the device count or on the
random state: a resumed run computes the same rows.
"""

from typing import Any, Callable, Dict

import jax
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
    index order (`[N]` each), on every process.

    The pmapped pass is compiled once per `owner` (the method) and set of devices.
    """
    par, ds, config = run.par, run.ds, run.config
    cached = getattr(owner, "_training_rows", None)
    if cached is None or cached[0] is not par:
        from avgmm.state import AXIS, make_model  # avgmm.state imports the methods

        model = make_model(config, ds.meta, axis_name=AXIS)
        size = config.data.image_size

        def rows(state, batch):
            frames = augment.eval_frames(batch["frames"], size)
            variables = {"params": state.params, "batch_stats": state.batch_stats}
            phi_a, phi_v = model.apply(variables, batch["audio"].astype(jnp.float32),
                                       frames, False, method=model.features)

            def head(a, v):
                return model.apply({"params": state.params}, a, v,
                                   method=lambda m, a_, v_: m.head(a_, v_))

            return row_fn(head, phi_a, phi_v, batch)

        cached = (par, jax.pmap(rows, axis_name=AXIS, devices=par.devices))
        owner._training_rows = cached
    fn = cached[1]
    outs, host = [], {"index": [], "mask": []}
    for batch in par.eval_batches(ds, "train", config.eval_batch_size):
        # Device results stay there until the end: reading the next batch overlaps.
        outs.append(fn(state, par.shard(batch)))
        host["index"].append(batch["index"])
        host["mask"].append(batch["mask"])
    for k in outs[0]:
        host[k] = [np.asarray(v).reshape(-1) for v in jax.device_get([o[k] for o in outs])]
    # Padding rows too, dropped after the gather: every process sends as many rows.
    rows = par.gather_rows({k: np.concatenate(v) for k, v in host.items()})
    real = rows.pop("mask").astype(bool)
    rows = {k: v[real] for k, v in rows.items()}
    order = np.argsort(rows["index"], kind="stable")
    rows = {k: v[order] for k, v in rows.items()}
    n = ds.meta.num_examples["train"]
    if not np.array_equal(rows["index"], np.arange(n)):
        raise RuntimeError(f"the training pass returned {len(rows['index'])} rows, not one "
                           f"for each of the {n} training samples")
    return rows
