"""What the processes of a multi-host run exchange on the host.

Process 0 alone touches the workdir (lock, checkpoints, metrics, results): `on_primary`
runs such work there and hands its outcome, or its one-line error, to every process, so
that none waits for a process that stopped. With one process every function here is a
plain call.
"""

import json
from typing import Any, Callable, Dict

import jax
import numpy as np
from jax.experimental import multihost_utils

from avgmm import files
from avgmm.errors import ONE_LINE_ERRORS, PrimaryError


def is_primary() -> bool:
    """Whether this process writes the run's files and prints its progress (process 0)."""
    return jax.process_index() == 0


def _error_classes() -> Dict[str, type]:
    """The one-line errors that cross processes, by name."""
    found, todo = {}, list(ONE_LINE_ERRORS)
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def share_json(obj: Any) -> Any:
    """Process 0's JSON-able `obj`, on every process (others pass anything)."""
    if jax.process_count() == 1:
        return obj
    data = json.dumps(files.to_python(obj)).encode() if is_primary() else b""
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
        except ONE_LINE_ERRORS as e:
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
        raise type(cls.__name__, (cls, PrimaryError), {})(outcome["message"])
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


def gather_rows(rows: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Host arrays of this process's rows -> every process's rows, process 0's first
    (each process passes the same number of rows; strings are carried as bytes)."""
    if jax.process_count() == 1:
        return rows
    out = {}
    for k, v in rows.items():
        v = np.asarray(v)
        if v.dtype == object or v.dtype.kind in "US":
            out[k] = _gather_strings(v)
        else:
            out[k] = np.asarray(multihost_utils.process_allgather(v, tiled=True))
    return out


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
