"""The one place that knows about devices and processes: replication, sharding, the
pmapped steps, and what the processes of a multi-host run exchange on the host.

Step functions come from `avgmm.steps`; here they are mapped over axis `batch`
(gradients and metrics averaged, BatchNorm statistics synchronized through the model's
`axis_name`, gaps gathered before the GMM fit). Values every device holds identically
(metrics, evaluation sums) come back as one copy.

Multi-host (`jax.process_count() > 1`, after `jax.distributed.initialize()`): the steps
are mapped over every device of every process (process 0's devices first), so every
collective spans them all; each process reads only its slice of every global batch and
feeds its own devices, and a sample keeps its position in the global batch (its
augmentation key). Process 0 alone touches the workdir (lock, checkpoints, metrics,
results): `on_primary` runs such work there and hands its outcome, or its one-line error,
to every process; `SharedCheckpoints` sends what process 0 restored to every process.
With one process every one of these is a plain call.

Outside the mapped steps nothing computes over the replicated arrays (`fetch` reads one
device's buffer; sums and joins happen on the host): in a multi-process run, a
computation over several local devices that needs communication can deadlock against a
collective another process has entered (seen on CPU with gloo).
"""

import collections
import concurrent.futures
import functools
import json
from typing import Any, Callable, Dict, Optional, Sequence

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from avgmm import optim, progress, steps, utils
from avgmm import workdir as workdir_lib
from avgmm.data import pipeline
from avgmm.errors import UserError
from avgmm.methods import Method
from avgmm.state import AXIS, make_model


def is_primary() -> bool:
    """Whether this process writes the run's files and prints its progress (process 0)."""
    return jax.process_index() == 0


class PrimaryError(Exception):
    """Marks an error that process 0 raised and every other process re-raises (so the
    command line prints it once, from process 0)."""


def _error_classes():
    """The one-line errors that cross processes, by name."""
    found, todo = {}, [UserError, workdir_lib.WorkdirError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def share_json(obj: Any) -> Any:
    """Process 0's JSON-able `obj`, on every process (others pass anything)."""
    if jax.process_count() == 1:
        return obj
    data = json.dumps(utils.to_python(obj)).encode() if is_primary() else b""
    size = int(multihost_utils.broadcast_one_to_all(np.int32(len(data))))
    buf = np.zeros((size,), np.uint8)
    if is_primary():
        buf[:] = np.frombuffer(data, np.uint8)
    return json.loads(bytes(np.asarray(multihost_utils.broadcast_one_to_all(buf))))


def share_arrays(tree: Any) -> Any:
    """Process 0's host arrays, on every process (others pass a tree of the same shapes,
    e.g. the initial state)."""
    if jax.process_count() == 1:
        return tree
    return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(tree))


def on_primary(fn: Callable[[], Any], share: bool = False) -> Any:
    """`fn()` on process 0 only; its one-line error (`UserError`, `WorkdirError`) is
    raised on every process, so that none waits for a process that stopped. Returns
    `fn()`'s result on process 0 and None elsewhere, or, with `share`, its (JSON-able)
    result everywhere."""
    if jax.process_count() == 1:
        return fn()
    result, outcome, failure = None, {}, None
    if is_primary():
        try:
            result = fn()
        except (UserError, workdir_lib.WorkdirError) as e:
            failure, outcome = e, {"error": type(e).__name__, "message": str(e)}
        except BaseException as e:
            failure, outcome = e, {"error": "RuntimeError",
                                   "message": f"process 0 failed: {type(e).__name__}: {e}"}
        if share and failure is None:
            outcome = {"result": result}
    outcome = share_json(outcome)
    if failure is not None:
        raise failure
    if "error" in outcome:
        cls = _error_classes().get(outcome["error"], RuntimeError)
        error = type(cls.__name__, (cls, PrimaryError), {})(outcome["message"])
        raise error
    return outcome.get("result") if share else result


class primary_context:
    """`with primary_context(factory):` holds `factory()`'s context (e.g. the workdir
    lock) on process 0 only; its failure to enter is raised on every process."""

    def __init__(self, factory: Callable[[], Any]):
        self.factory, self.context = factory, None

    def __enter__(self):
        def enter():
            self.context = self.factory()
            self.context.__enter__()
        on_primary(enter)

    def __exit__(self, *exc):
        if self.context is not None:
            return self.context.__exit__(*exc)
        return False


class Parallel:
    """Compiled steps of one method over `devices`, and the moves between host and them."""

    def __init__(self, devices, config: ml_collections.ConfigDict, meta: pipeline.DatasetMeta,
                 method: Method):
        # Every process's devices, process 0's first (`run_config.select_devices`): the
        # order of the device axis, so of the global batch's slices and gathered gaps.
        self.devices = list(devices)
        self.n = len(self.devices)
        self.process_index, self.process_count = jax.process_index(), jax.process_count()
        self.is_primary = self.process_index == 0
        self.local_devices = [d for d in self.devices if d.process_index == self.process_index]
        self.n_local = len(self.local_devices)
        self.mesh = Mesh(np.array(self.local_devices), (AXIS,))
        self.sharding = NamedSharding(self.mesh, P(AXIS))
        model = make_model(config, meta, axis_name=AXIS)
        # How often each step function was traced, i.e. compiled (a test holds it to once).
        self.traces: Dict[str, int] = collections.Counter()

        def pmap(fn, name, **kwargs):
            return jax.pmap(self._counted(name, fn), axis_name=AXIS, devices=self.devices,
                            **kwargs)

        # Metrics are pmean'ed inside: one copy comes back (out_axes None).
        self.train_steps: Dict[str, Callable] = {
            phase: pmap(functools.partial(steps.train_step, model=model, method=method,
                                          phase=phase, config=config), f"train[{phase}]",
                        in_axes=(0, 0, None), out_axes=(0, None), donate_argnums=(0,))
            for phase in method.phases()}
        self.eval_step = pmap(functools.partial(steps.eval_step, model=model, method=method,
                                                image_size=config.data.image_size),
                              "eval", out_axes=None)
        self.gap_step = pmap(functools.partial(steps.gap_step, model=model,
                                               image_size=config.data.image_size), "gaps")
        self.fit_gmm = pmap(functools.partial(steps.fit_gathered_gmm, gmm_config=config.gmm),
                            "fit_gmm")
        self._reset = {flag: pmap(functools.partial(optim.reset_optimizer,
                                                    reset_schedule=flag), "reset_optimizer")
                       for flag in (False, True)}
        self._moment_norm = pmap(lambda s: optim.moment_norm(s.opt_state), "moment_norm",
                                 out_axes=None)
        self._precompiled: Dict[str, concurrent.futures.Future] = {}

    def _counted(self, name: str, fn: Callable) -> Callable:
        def traced(*args, **kwargs):
            self.traces[name] += 1  # Python runs this only while JAX traces the function
            return fn(*args, **kwargs)
        return traced

    def precompile(self, phases: Sequence[str], state, batch: Dict[str, np.ndarray],
                   scalars: Dict[str, Any]) -> None:
        """Compiles the train steps of `phases` in a background thread, so that a later
        phase does not stall at its first step. Only shapes and shardings are read from
        `state` (which the running steps may donate) and from the host `batch`."""
        def abstract(x):
            return jax.ShapeDtypeStruct(np.shape(x), x.dtype,
                                        sharding=getattr(x, "sharding", None))

        args = (jax.tree.map(abstract, state), jax.tree.map(abstract, self.shard(batch)),
                jax.tree.map(abstract, scalars))
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="precompile")
        for phase in phases:
            self._precompiled[phase] = pool.submit(
                lambda p=phase: self.train_steps[p].lower(*args).compile())
        pool.shutdown(wait=False)

    def train_step(self, phase: str) -> Callable:
        """The train step of `phase`: its executable compiled in the background where
        `precompile` was asked for it, else the pmapped function (compiles on first use)."""
        future = self._precompiled.get(phase)
        if future is None:
            return self.train_steps[phase]
        if not future.done():
            progress.say(f"waiting for the {phase} train step, compiling in the background")
        try:
            return future.result()
        except Exception as e:  # noqa: BLE001  (compiling on first use still works)
            progress.say(f"background compilation of the {phase} step failed ({e}); "
                         "compiling it now")
            del self._precompiled[phase]
            return self.train_steps[phase]

    def precompiled(self, phase: str) -> bool:
        """Whether `phase`'s step was handed to the background compilation."""
        return phase in self._precompiled

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
        """Host `[local devices, ...]` -> one row per local device (e.g. gathered gaps)."""
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

    def gather_rows(self, rows: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Host arrays of this process's rows -> every process's rows, process 0's first
        (each process passes the same number of rows; strings are carried as bytes)."""
        if self.process_count == 1:
            return rows
        out = {}
        for k, v in rows.items():
            v = np.asarray(v)
            if v.dtype == object or v.dtype.kind in "US":
                out[k] = _gather_strings(v)
            else:
                out[k] = np.asarray(multihost_utils.process_allgather(v, tiled=True))
        return out

    def checkpoints(self, workdir: str, keep: int) -> "SharedCheckpoints":
        """The run's checkpoints: written and read by process 0, restored everywhere."""
        return SharedCheckpoints(workdir, keep)

    def reset_optimizer(self, state, reset_schedule: bool):
        """`optim.reset_optimizer` on every device's copy."""
        return self._reset[bool(reset_schedule)](state)

    def moment_norm(self, state) -> float:
        """Norm of the optimizer's moment buffers."""
        return float(self._moment_norm(state))


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


def _gather_strings(values: np.ndarray) -> np.ndarray:
    """Every process's strings (object array), process 0's first."""
    encoded = [str(v).encode() for v in values]
    width = max([len(e) for e in encoded] + [1])
    width = int(np.max(multihost_utils.process_allgather(np.int32(width))))
    buf = np.zeros((len(encoded), width), np.uint8)
    for i, e in enumerate(encoded):
        buf[i, :len(e)] = np.frombuffer(e, np.uint8)
    gathered = np.asarray(multihost_utils.process_allgather(buf, tiled=True))
    return np.asarray([bytes(r).rstrip(b"\0").decode() for r in gathered], dtype=object)


class SharedCheckpoints:
    """`utils.Checkpointer` run by process 0 alone (every process holds the same
    replicated state, so its host copy is the whole state); what it restores is sent to
    every process. Its errors (full disk, damaged checkpoints) stop every process."""

    def __init__(self, workdir: str, keep: int):
        self._ckpt: Optional[utils.Checkpointer] = on_primary(
            lambda: utils.Checkpointer(workdir, keep=keep))

    def last_good(self) -> str:
        if self._ckpt is None:
            return "process 0 names the last good checkpoint"
        return self._ckpt.last_good()

    def save(self, epoch: int, state: Any, meta: Dict[str, Any], best: bool) -> None:
        on_primary(lambda: self._ckpt.save(epoch, state, meta, best=best))

    def wait(self, everywhere: bool = True) -> None:
        """Blocks until process 0's saves are committed; `everywhere=False` (on the way
        out of an interrupted run, when the others may be gone) skips the exchange."""
        if not everywhere:
            if self._ckpt is not None:
                self._ckpt.wait()
            return
        on_primary(lambda: self._ckpt.wait())

    def close(self) -> None:
        if self._ckpt is not None:
            self._ckpt.close()

    def _shared(self, load: Callable[[], Any], template: Any):
        found = on_primary(load)
        meta = share_json(None if found is None else found[1])
        if meta is None:
            return None
        return share_arrays(found[0] if found is not None else template), meta

    def resume(self, template: Any):
        """`Checkpointer.resume` on process 0, its result on every process."""
        return self._shared(lambda: self._ckpt.resume(template), template)

    def restore(self, template: Any, which: Any = "latest"):
        """`Checkpointer.restore` on process 0, its result on every process."""
        return self._shared(lambda: self._ckpt.restore(template, which), template)
