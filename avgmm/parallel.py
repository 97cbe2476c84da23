"""The one place that knows about devices: replication, sharding, the mapped train steps,
and mapped passes over a split that any method or evaluator can use.

Step functions come from `avgmm.steps`; here they are mapped over axis `steps.AXIS`
(gradients and metrics averaged, BatchNorm statistics synchronized through the model's
`axis_name`). Values every device holds identically (metrics, sums) come back as one copy.

Multi-host (`jax.process_count() > 1`, after `jax.distributed.initialize()`): the steps
are mapped over every device of every process (process 0's devices first), so every
collective spans them all; each process reads only its slice of every global batch and
feeds its own devices, and a sample keeps its position in the global batch (its
augmentation key). What the processes exchange on the host is `avgmm.processes`'.

Outside the mapped functions nothing computes over the replicated arrays (`fetch` reads
one device's buffer; sums and joins happen on the host): in a multi-process run, a
computation over several local devices that needs communication can deadlock against a
collective another process has entered (seen on CPU with gloo).
"""

import collections
import concurrent.futures
import functools
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from avgmm import optim, processes, progress, steps, timing
from avgmm.data import pipeline
from avgmm.methods import Method
from avgmm.models import make_model

AXIS = steps.AXIS
# Batch entries that are not per-sample columns (a per-sample pass keeps every other one:
# index, id, label, mask and the data's per-clip ground-truth fields).
_NOT_COLUMNS = ("audio", "frames", "position")


class Parallel:
    """Compiled steps of one method over `devices`, and the moves between host and them."""

    def __init__(self, devices, config: ml_collections.ConfigDict, meta: pipeline.DatasetMeta,
                 method: Method):
        # Every process's devices, process 0's first (`run_config.select_devices`): the
        # order of the device axis, so of the global batch's slices and gathered arrays.
        self.devices = list(devices)
        self.n = len(self.devices)
        self.process_index, self.process_count = jax.process_index(), jax.process_count()
        self.is_primary = self.process_index == 0
        self.local_devices = [d for d in self.devices if d.process_index == self.process_index]
        self.n_local = len(self.local_devices)
        self.mesh = Mesh(np.array(self.local_devices), (AXIS,))
        self.sharding = NamedSharding(self.mesh, P(AXIS))
        self.config, self.meta, self.method = config, meta, method
        self.model = make_model(config, meta, method, axis_name=AXIS)
        # How often each mapped function was traced, i.e. compiled (a test holds it to once).
        self.traces: Dict[str, int] = collections.Counter()
        self._mapped: Dict[str, Callable] = {}
        # Metrics are pmean'ed inside: one copy comes back (out_axes None).
        self.train_steps: Dict[str, Callable] = {
            phase: self._pmap(functools.partial(steps.train_step, model=self.model,
                                                method=method, phase=phase, config=config),
                              f"train[{phase}]", in_axes=(0, 0, None), out_axes=(0, None),
                              donate_argnums=(0,))
            for phase in method.phases()}
        self._reset = {flag: self._pmap(functools.partial(optim.reset_optimizer,
                                                          reset_schedule=flag),
                                        "reset_optimizer")
                       for flag in (False, True)}
        self._moment_norm = self._pmap(lambda s: optim.moment_norm(s.opt_state),
                                       "moment_norm", out_axes=None)
        # Compilations started ahead (`compile_ahead`) by function name, those still to
        # lower, and the threads that compile them.
        self._ahead: Dict[str, concurrent.futures.Future] = {}
        self._to_lower: Dict[str, Tuple[Callable, Tuple[Any, ...]]] = {}
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        # Told how long the run waits for compilations and for the device.
        self.timer = timing.OFF

    def _pmap(self, fn: Callable, name: str, **kwargs) -> Callable:
        def traced(*args, **kw):
            self.traces[name] += 1  # Python runs this only while JAX traces the function
            return fn(*args, **kw)
        return jax.pmap(traced, axis_name=AXIS, devices=self.devices, **kwargs)

    def map(self, name: str, build: Callable[[str], Callable], **kwargs) -> Callable:
        """The function `build(axis_name)` mapped over the run's devices (`jax.pmap`
        keyword arguments in `kwargs`), compiled once per run: later calls with the same
        `name` return the same mapped function (so `name` must always mean the same
        computation), or its executable where it was compiled ahead."""
        return self._executable(name, self.mapped(name, build, **kwargs))

    def mapped(self, name: str, build: Callable[[str], Callable], **kwargs) -> Callable:
        """`map`'s mapped function itself (what `compile_ahead` compiles)."""
        if name not in self._mapped:
            self._mapped[name] = self._pmap(build(AXIS), name, **kwargs)
        return self._mapped[name]

    def sums_function(self, name: str, fn: Callable) -> Callable:
        """The mapped function `batch_sums` runs for `fn` (summed over the devices)."""
        return self.mapped(name, lambda axis: lambda s, b: jax.lax.psum(fn(s, b), axis),
                           out_axes=None)

    def rows_function(self, name: str, fn: Callable) -> Callable:
        """The mapped function `sample_rows` runs for `fn`."""
        return self.mapped(name, lambda axis: fn)

    # ------------------------------------------------------------------ compiling ahead
    def compile_ahead(self, jobs: Sequence[Tuple[str, Callable, Tuple[Any, ...]]],
                      workers: int) -> None:
        """Compiles mapped functions in background threads, `workers` at a time, while the
        run goes on: `jobs` are `(name, mapped function, abstract arguments)`, the most
        urgent first, names as `train_step`'s (`train[<phase>]`) and `map`'s. Tracing and
        lowering hold the interpreter, XLA's compilation does not: the first job is lowered
        here and now, the others when the run's thread first waits for a compilation (or
        needs one of them), and each compiles in the background once lowered. A function
        asked for before its compilation ended waits for it (counted as compilation). Only
        shapes, dtypes and shardings are read from the arguments (`abstract` and
        `replicated_spec` make them)."""
        if not jobs:
            return
        self._pool = concurrent.futures.ThreadPoolExecutor(max(1, workers),
                                                           thread_name_prefix="compile_ahead")
        self._to_lower = {name: (fn, args) for name, fn, args in jobs[1:]}
        self._lower(*jobs[0])

    def _lower(self, name: str, fn: Callable, args: Tuple[Any, ...]) -> None:
        """Lowers `fn` for `args` and hands its compilation to the background threads."""
        try:
            lowered = fn.lower(*args)
        except Exception as e:  # noqa: BLE001  (compiling on first use still works)
            progress.say(f"could not prepare {name} for compiling ahead ({e}); it compiles "
                         "at its first use")
            return
        self._ahead[name] = self._pool.submit(lowered.compile)

    def _lower_the_rest(self) -> None:
        """Lowers every job still waiting for it (see `compile_ahead`)."""
        while self._to_lower:
            name = next(iter(self._to_lower))
            self._lower(name, *self._to_lower.pop(name))
        if self._pool is not None:
            self._pool.shutdown(wait=False)  # what is queued still compiles

    @staticmethod
    def abstract(tree):
        """Shapes, dtypes and shardings of a tree of arrays (what `compile_ahead` takes)."""
        def spec(x):
            return jax.ShapeDtypeStruct(np.shape(x), x.dtype,
                                        sharding=getattr(x, "sharding", None))
        return jax.tree.map(spec, tree)

    def replicated_spec(self, tree):
        """What `replicate(tree)` puts on the devices, as shapes (`tree` may itself be
        shapes, e.g. `jax.eval_shape` of the initial state): for `compile_ahead`."""
        def spec(x):
            dtype = x.dtype
            if not jax.dtypes.issubdtype(dtype, jax.dtypes.extended):
                dtype = jax.dtypes.canonicalize_dtype(dtype)  # as device_put stores it
            return jax.ShapeDtypeStruct((self.n_local,) + tuple(np.shape(x)), dtype,
                                        sharding=self.sharding)
        return jax.tree.map(spec, tree)

    def compiled_ahead(self, name: str) -> bool:
        """Whether `name` was handed to `compile_ahead`."""
        return name in self._ahead or name in self._to_lower

    def cancel_ahead(self) -> None:
        """Drops the compilations not started yet (the run ends)."""
        self._to_lower.clear()
        for future in self._ahead.values():
            future.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def _executable(self, name: str, mapped: Callable) -> Callable:
        """`name`'s executable compiled ahead (waiting for it if it is not done), else the
        mapped function, which compiles on first use."""
        if name in self._to_lower:
            self._lower_the_rest()
        future = self._ahead.get(name)
        if future is None:
            return mapped
        if not future.done():
            progress.say(f"waiting for {name}, compiling in the background")
            with self.timer.span("compile"):
                self._lower_the_rest()  # meanwhile, so that those compile beside it
                concurrent.futures.wait([future])
        try:
            compiled = future.result()
        except Exception as e:  # noqa: BLE001  (compiling on first use still works)
            progress.say(f"background compilation of {name} failed ({e}); compiling it now")
            del self._ahead[name]
            return mapped

        use = [compiled]

        def call(*args):
            if use[0] is mapped:
                return mapped(*args)
            try:
                return compiled(*args)
            except TypeError as e:  # arguments other than those it was compiled for
                progress.say(f"{name} was compiled ahead for other arguments ({e}); "
                             "compiling it now")
                use[0] = mapped
                self._ahead.pop(name, None)
                return mapped(*args)
        return call

    # ------------------------------------------------------------------ train steps
    def train_step(self, phase: str) -> Callable:
        """The train step of `phase`: its executable compiled ahead where `compile_ahead`
        was asked for it, else the mapped function (compiles on first use)."""
        return self._executable(f"train[{phase}]", self.train_steps[phase])

    def reset_optimizer(self, state, reset_schedule: bool):
        """`optim.reset_optimizer` on every device's copy."""
        return self._reset[bool(reset_schedule)](state)

    def moment_norm(self, state) -> float:
        """Norm of the optimizer's moment buffers."""
        return float(self._moment_norm(state))

    # ------------------------------------------------------------------ passes over a split
    def batch_sums(self, name: str, fn: Callable, state, ds: pipeline.Dataset, split: str,
                   batch_size: int) -> List[Dict[str, np.ndarray]]:
        """`fn(state, batch)` (per-shard sums, e.g. of masked per-sample values) over every
        padded batch of `split`, summed over the devices: one host dict per batch, fetched
        in one transfer at the end. Compiled once per `name`."""
        mapped = self._executable(name, self.sums_function(name, fn))
        sums = [mapped(state, self.shard(batch))
                for batch in _bar(self.eval_batches(ds, split, batch_size),
                                  math.ceil(ds.meta.num_examples[split] / batch_size),
                                  f"{name} {split}")]
        with self.timer.device_wait():
            return jax.device_get(sums)

    def sample_rows(self, name: str, fn: Callable, state, ds: pipeline.Dataset, split: str,
                    batch_size: int, keep: Sequence[str] = ()) -> Tuple[Dict, Dict]:
        """`fn(state, batch)` (per-sample arrays) over every sample of `split`.

        Returns `(device, host)`: `device` holds the outputs named in `keep` and `mask`
        as `[local devices, n]` arrays left on the devices (for a mapped computation over
        the whole split, e.g. a GMM fit that gathers them), padding included and masked;
        `host` holds every output, the sample's index, id and label and the data's
        per-clip ground-truth fields, on every process, for the split's real samples in
        dataset index order. Compiled once per `name`."""
        mapped = self._executable(name, self.rows_function(name, fn))
        outs, masks, host = [], [], {}
        for batch in _bar(self.eval_batches(ds, split, batch_size),
                          math.ceil(ds.meta.num_examples[split] / batch_size),
                          f"{name} {split}"):
            sharded = self.shard(batch)
            # Device results stay there until the end: no per-batch sync, so reading the
            # next batch overlaps the forward pass.
            outs.append(mapped(state, sharded))
            masks.append(sharded["mask"])
            # Padding rows too, dropped after the gather: every process sends as many rows.
            for k, v in batch.items():
                if k not in _NOT_COLUMNS:
                    host.setdefault(k, []).append(v)
        with self.timer.device_wait():
            outs, masks = jax.device_get((outs, masks))
        device = {}
        for k in outs[0]:
            values = [np.asarray(o[k]) for o in outs]  # [local devices, n, ...] each
            host[k] = [v.reshape((-1,) + v.shape[2:]) for v in values]
            if k in keep:  # joined on the host: no computation outside the mapped steps
                device[k] = self.put(np.concatenate(values, axis=1))
        if keep:
            device["mask"] = self.put(np.concatenate([np.asarray(m) for m in masks], axis=1))
        host = processes.gather_rows({k: np.concatenate(v) for k, v in host.items()})
        real = host.pop("mask").astype(bool)
        host = {k: v[real] for k, v in host.items()}
        order = np.argsort(host["index"], kind="stable")
        return device, {k: v[order] for k, v in host.items()}

    # ------------------------------------------------------------------ host <-> devices
    def replicate(self, tree):
        """Host tree -> one copy per local device (leading axis), on the pmap sharding
        (every process holds the same values)."""
        return jax.device_put(
            jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (self.n_local,) +
                                                   np.shape(x)), tree), self.sharding)

    @staticmethod
    def fetch(tree):
        """One device's copy of a replicated tree, on the host.

        Read from the first device's buffer, not computed as `x[0]`: outside the mapped
        steps nothing computes over several devices, since such a computation can
        deadlock against the collectives of another process in a multi-process run."""
        return jax.tree.map(_first_copy, tree)

    def put(self, array: np.ndarray):
        """Host `[local devices, ...]` -> one row per local device."""
        return jax.device_put(array, self.sharding)

    def shard(self, batch: Dict[str, np.ndarray]):
        """This process's rows of a global batch (from `train_batches` or `eval_batches`)
        `[B / processes, ...]` -> `[local devices, B / devices, ...]` on its devices
        (host-only entries such as clip ids stay behind)."""
        return jax.device_put(
            {k: v.reshape((self.n_local, -1) + v.shape[1:]) for k, v in batch.items()
             if k not in pipeline.HOST_KEYS}, self.sharding)

    def train_batches(self, ds: pipeline.Dataset, batch_size: int, epoch: int, seed: int,
                      prefetch: int = 2, groups: Optional[np.ndarray] = None):
        """This process's slice of every global training batch of `epoch` (`groups`: see
        `Dataset.train_batches`)."""
        return ds.train_batches(batch_size, epoch, seed, prefetch,
                                process_index=self.process_index,
                                process_count=self.process_count, groups=groups)

    def eval_batches(self, ds: pipeline.Dataset, split: str, batch_size: int,
                     prefetch: int = 2):
        """This process's slice of every padded global batch of `split` (with `mask`)."""
        return ds.eval_batches(split, batch_size, prefetch, process_index=self.process_index,
                               process_count=self.process_count)

    def positions(self, batch_size: int) -> np.ndarray:
        """Positions in the global batch of this process's rows (their augmentation keys)."""
        lo, hi = pipeline.process_rows(batch_size, self.process_index, self.process_count)
        return np.arange(lo, hi, dtype=np.int32)


def _bar(iterable, total: int, desc: str):
    """A progress bar on a terminal, nothing in a log file."""
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True,
                disable=not progress.interactive())


def _first_copy(x):
    """Row 0 of a `[devices, ...]` array (device or host) as a host array of its own (a
    copy: the device buffer may be donated to the next step while it is saved)."""
    if not isinstance(x, jax.Array):
        return np.array(np.asarray(x)[0])
    for shard in x.addressable_shards:
        rows = shard.index[0] if shard.index else slice(None)
        if (rows.start or 0) == 0:
            return np.array(np.asarray(shard.data)[0])
    raise ValueError(f"no local copy of row 0 of an array of shape {x.shape}")
