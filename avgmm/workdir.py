"""Guards around a run's workdir: one run at a time, a full disk and a diverged model
reported in one line each (`WorkdirError` and its subclasses, which the CLI prints as
`error: ...`)."""

import contextlib
import errno
import fcntl
import hashlib
import math
import os
import shutil
import socket
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

LOCK_NAME = ".lock"


class WorkdirError(RuntimeError):
    """A problem with the run's workdir or its outcome, told in one line."""


class WorkdirBusyError(WorkdirError):
    """Another live process holds the workdir."""


class DiskFullError(WorkdirError):
    """The workdir's device ran out of space while writing."""


class CheckpointError(WorkdirError):
    """A checkpoint cannot be read back intact."""


class DivergedError(WorkdirError):
    """The loss or the parameters became NaN or inf."""


# --------------------------------------------------------------------------- lock
@contextlib.contextmanager
def lock(workdir: str) -> Iterator[str]:
    """Holds an exclusive `flock` on `workdir/.lock` for the life of the block.

    The kernel drops the lock when its process dies, so a killed run never blocks the next
    one; the file's `pid host` content only serves the message when the holder is alive.
    """
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").split()
            pid, host = (holder + ["?", "?"])[:2]
            raise WorkdirBusyError(f"workdir {workdir} is in use by process {pid} on {host}; "
                                   "wait for it or use another --workdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the flock


# --------------------------------------------------------------------------- disk full
def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` or anything it was raised from is ENOSPC (orbax and tensorstore wrap
    the OSError, sometimes only as text)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc) or "ENOSPC" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _size(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def free_bytes(path: str) -> int:
    """Free space on the device of `path` (or of its nearest existing parent)."""
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    return shutil.disk_usage(path or ".").free


@contextlib.contextmanager
def disk_full_guard(path: str, needed_bytes: int, kept: str = "") -> Iterator[None]:
    """Turns ENOSPC raised in the block into a `DiskFullError` naming `path`, the space
    the write needs and, in `kept`, what is still intact."""
    try:
        yield
    except Exception as e:
        if not is_disk_full(e):
            raise
        raise DiskFullError(
            f"no space left on the device of {path}: the write needs about "
            f"{_size(needed_bytes)}, {_size(free_bytes(path))} are free"
            f"{'; ' + kept if kept else ''}. Free some space (or use another --workdir) "
            "and run the same command again") from e


# --------------------------------------------------------------------------- state checks
def tree_digest(tree: Any) -> str:
    """sha256 over the dtype, shape and bytes of every leaf (host or device arrays).

    Integers count as int64: a Python int in the restore template (the initial `step`)
    comes back with another integer width than the array that was saved.
    """
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        a = np.asarray(jax.device_get(leaf))
        if np.issubdtype(a.dtype, np.integer):
            a = a.astype(np.int64)
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def tree_nbytes(tree: Any) -> int:
    return int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree)))


@jax.jit
def _all_finite(tree: Any) -> jnp.ndarray:
    flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
             if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def check_finite(step: int, tree: Any, loss: float, last_good: str) -> None:
    """Raises `DivergedError` when the epoch's mean loss or any floating leaf of `tree`
    (reduced on the device: one scalar comes back) is NaN or inf."""
    if math.isfinite(loss) and bool(_all_finite(tree)):
        return
    raise DivergedError(
        f"training diverged in epoch {step} (loss {loss}; NaN or inf in the loss or the "
        f"parameters): the epoch was neither saved nor evaluated; {last_good}. Lower "
        "config.optimizer.learning_rate and start again with --fresh")
