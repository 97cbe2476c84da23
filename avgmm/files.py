"""Writing files safely: atomic text and JSON, JSON-safe values, and a full disk told in
one line (`DiskFullError`) instead of a traceback."""

import contextlib
import errno
import hashlib
import json
import os
import shutil
from typing import Any, Dict, Iterator, Mapping

import jax
import numpy as np

from avgmm.errors import DiskFullError


def to_python(tree: Any) -> Any:
    """Numpy/JAX scalars and arrays -> Python floats, ints, bools and lists (JSON-safe)."""
    if isinstance(tree, Mapping):
        return {str(k): to_python(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [to_python(v) for v in tree]
    if isinstance(tree, (jax.Array, np.ndarray, np.generic)):
        arr = np.asarray(jax.device_get(tree))
        if arr.ndim == 0:
            return arr.item()
        return arr.tolist()
    return tree


def flatten_dict(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a/b": 1}`."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_dict(v, key + "/"))
        else:
            out[key] = v
    return out


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


def human_size(n: float) -> str:
    """`n` bytes for people (binary units)."""
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
            f"{human_size(needed_bytes)}, {human_size(free_bytes(path))} are free"
            f"{'; ' + kept if kept else ''}. Free some space (or use another --workdir) "
            "and run the same command again") from e


def write_text(path: str, text: str) -> None:
    """Writes `path` atomically (temporary file, then rename); a full disk raises
    `DiskFullError` and leaves the old file as it was."""
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with disk_full_guard(path, len(text.encode()), kept=f"{path} is unchanged"):
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        os.replace(tmp, path)


def write_json(path: str, obj: Any) -> None:
    """`obj` as indented JSON, written atomically (see `write_text`)."""
    write_text(path, json.dumps(to_python(obj), indent=2, sort_keys=True))


def append_line(path: str, line: str) -> None:
    """Appends one line (a JSON record) to `path`; a full disk raises `DiskFullError`."""
    with disk_full_guard(path, len(line.encode())):
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)


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
