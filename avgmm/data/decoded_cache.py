"""The loader's decoded cache: each split of a prepared dataset decoded once into plain
`.npy` files (only the frames the model uses), then read through memory maps.

Decoding tfds records (protobuf parsing in Python) delivers about 120 CREMA-D-sized
samples/s on 2 CPU cores, too slow to feed a GPU; a memory-mapped cache costs a copy per
batch and nothing else. Each split's cache is built under a lock file, so concurrent
runs wait for one build and share it; its blocks are reserved before they are written, so
a full disk is a clear error (never a bus error), and only a complete build is ever
renamed into place.

Layout of a split's folder: `audio.npy` (float16), `frames.npy` (uint8), `label.npy`,
`id.json`, one `<field>.npy` per clip field (see `clip_fields`) and the marker
`complete`. The folder's name hashes everything that shapes its contents, the clip
fields and `LAYOUT` included, so a cache written by older code (without a field) is
never read: a new one is built beside it.
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
from typing import Any, Callable, Dict, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from avgmm.data import clip_fields as fields_lib
from avgmm.errors import CacheError, UserError

# Bumped whenever the files of a split's cache change meaning.
LAYOUT = 2
# A split is decoded into the cache only when its decoded size is at most this many GB
# (config.data.cache_max_gb): above it, a cache would double a large dataset on disk
# (VGGSound's train split decodes to about 100 GB), so the split is read from the
# prepared records instead, slower but with no extra disk.
CACHE_MAX_GB = 32.0
CACHE_FIX = ("set config.data.cache_dir to a folder with room for it, or config.data.cache="
             "False (or a smaller config.data.cache_max_gb) to read the records directly "
             "(slower)")
Reader = Callable[[str, Sequence[int]], Dict[str, np.ndarray]]


def cache_limit_gb(value: Any) -> float:
    """`config.data.cache_max_gb` checked: a number >= 0 (`inf`: cache every split)."""
    try:
        limit = float(value)
    except (TypeError, ValueError):
        limit = float("nan")
    if not limit >= 0:  # NaN fails too
        raise UserError(f"config.data.cache_max_gb={value!r} is not allowed: a number of GB "
                        ">= 0 (0: never cache, inf: always)")
    return limit


def root(cache_dir: str, meta, prepared_dir: str, frame_index: np.ndarray) -> str:
    """The folder of one dataset's cache for one choice of frames."""
    key = json.dumps({"name": meta.name, "dir": prepared_dir,
                      "frames": frame_index.tolist(), "examples": meta.num_examples,
                      "params": meta.params, "fields": fields_lib.describe(meta.clip_fields),
                      "layout": LAYOUT}, sort_keys=True, default=str)
    return os.path.join(os.path.expanduser(cache_dir), meta.name.replace("/", "_"),
                        hashlib.sha1(key.encode()).hexdigest()[:12])


def split_bytes(meta, num_frames: int, split: str) -> int:
    """Disk space the decoded cache of `split` takes (arrays, labels, fields and ids)."""
    n = meta.num_examples[split]
    f, t = meta.audio_shape
    _, h, w, c = meta.frames_shape
    per_clip = 2 * f * t + num_frames * h * w * c + 8 + 4 * len(meta.clip_fields) + 64
    return n * per_clip + 4096


def is_complete(path: str, fields: Mapping[str, Any]) -> bool:
    """Whether `path` holds a finished build with every file this code reads."""
    names = ["complete", "audio.npy", "frames.npy", "label.npy", "id.json"]
    return all(os.path.exists(os.path.join(path, f))
               for f in names + [f"{k}.npy" for k in fields])


def open_split(path: str, meta, split: str, num_frames: int,
               read: Reader) -> Dict[str, np.ndarray]:
    """Memory maps of a split's decoded arrays, building them first (from `read`, the
    record reader) where missing or incomplete, and again where damaged (a truncated or
    overwritten file: one line says which, then it is rebuilt).

    Concurrent runs serialize on `<path>.lock`: the first builds, the others wait and
    then reuse its result instead of deleting it under it."""
    fields = meta.clip_fields
    if not is_complete(path, fields):
        with _split_lock(path):
            if not is_complete(path, fields):
                _build(path, meta, split, num_frames, read)
    try:
        return _open(path, meta, split, num_frames)
    except DamagedCacheError as e:
        print(f"the decoded cache {path} is damaged ({e}); rebuilding it", flush=True)
    with _split_lock(path):
        try:  # another run may have rebuilt it while this one waited for the lock
            return _open(path, meta, split, num_frames)
        except DamagedCacheError:
            shutil.rmtree(path, ignore_errors=True)
            _build(path, meta, split, num_frames, read)
    try:
        return _open(path, meta, split, num_frames)
    except DamagedCacheError as e:
        raise CacheError(f"the decoded cache {path} is damaged again right after it was "
                         f"rebuilt ({e}): check the disk under it; {CACHE_FIX}") from None


class DamagedCacheError(Exception):
    """A file of a complete-looking split cache cannot be read or has the wrong shape;
    the message names the file and why."""


@contextlib.contextmanager
def _split_lock(path: str):
    """Holds `<path>.lock` exclusively, saying so when another run holds it."""
    with open(path + ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another run building the decoded cache {path}", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _open(path: str, meta, split: str, num_frames: int) -> Dict[str, np.ndarray]:
    """The split's arrays, each checked against the shape and type the dataset's metadata
    implies; `DamagedCacheError` names the first file that fails."""
    n = meta.num_examples[split]
    f, t = meta.audio_shape
    _, h, w, c = meta.frames_shape
    expected = {"audio": ((n, f, t), np.float16), "frames": ((n, num_frames, h, w, c), np.uint8)}
    cached: Dict[str, np.ndarray] = {}
    for k in ["audio", "frames", "label", *meta.clip_fields]:
        file = os.path.join(path, f"{k}.npy")
        try:
            cached[k] = np.load(file, mmap_mode="r" if k in expected else None)
        except (OSError, ValueError, EOFError) as e:
            raise DamagedCacheError(f"{file}: {_first_line(e)}") from None
        shape, dtype = expected.get(k, ((n,), cached[k].dtype))
        if cached[k].shape[:len(shape)] != shape or cached[k].dtype != dtype:
            raise DamagedCacheError(f"{file} holds {cached[k].dtype} {cached[k].shape}, "
                                    f"expected {np.dtype(dtype)} {shape}")
    file = os.path.join(path, "id.json")
    try:
        with open(file, encoding="utf-8") as fh:
            cached["id"] = np.asarray(json.load(fh), dtype=object)
    except (OSError, ValueError) as e:
        raise DamagedCacheError(f"{file}: {_first_line(e)}") from None
    if cached["id"].shape != (n,):
        raise DamagedCacheError(f"{file} holds {cached['id'].shape[0]} ids, expected {n}")
    return cached


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def _build(path: str, meta, split: str, num_frames: int, read: Reader) -> None:
    """Decodes `split` into `<path>.incomplete` and renames it to `path` when complete;
    the caller holds the split's lock. A failed build leaves nothing behind."""
    tmp = path + ".incomplete"
    shutil.rmtree(tmp, ignore_errors=True)  # an earlier build that died; never trusted
    needed = split_bytes(meta, num_frames, split)
    free = shutil.disk_usage(os.path.dirname(path)).free
    if needed > free:
        raise CacheError(f"the decoded cache of {meta.name} {split} needs "
                         f"{size_text(needed)} under {os.path.dirname(path)} but only "
                         f"{size_text(free)} is free; {CACHE_FIX}")
    os.makedirs(tmp)
    try:
        _write(tmp, meta, split, num_frames, read)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write(tmp: str, meta, split: str, num_frames: int, read: Reader) -> None:
    n = meta.num_examples[split]
    f, t = meta.audio_shape
    _, h, w, c = meta.frames_shape
    out = {
        "audio": np.lib.format.open_memmap(os.path.join(tmp, "audio.npy"), "w+",
                                           np.float16, (n, f, t)),
        "frames": np.lib.format.open_memmap(os.path.join(tmp, "frames.npy"), "w+",
                                            np.uint8, (n, num_frames, h, w, c)),
    }
    for name in out:
        _reserve(os.path.join(tmp, f"{name}.npy"))
    columns: Dict[str, list] = {k: [] for k in ["label", *meta.clip_fields]}
    ids = []
    chunk = 256
    if not sys.stderr.isatty():  # a bar in a log file is noise: one line instead
        print(f"decoding {meta.name} {split} ({n} clips) into the cache {tmp}", flush=True)
    with tqdm(total=n, desc=f"caching {meta.name} {split}", unit="clip", leave=False,
              dynamic_ncols=True, disable=not sys.stderr.isatty()) as bar:
        for start in range(0, n, chunk):
            batch = read(split, range(start, min(start + chunk, n)))
            count = len(batch["label"])
            out["audio"][start:start + count] = batch["audio"]
            out["frames"][start:start + count] = batch["frames"]
            for k in columns:
                columns[k].append(batch[k])
            ids.extend(batch["id"].tolist())
            bar.update(count)
    for arr in out.values():
        arr.flush()
    del out
    for k, parts in columns.items():
        np.save(os.path.join(tmp, f"{k}.npy"), np.concatenate(parts))
    with open(os.path.join(tmp, "id.json"), "w", encoding="utf-8") as fh:
        json.dump(ids, fh)
    open(os.path.join(tmp, "complete"), "w").close()


def _reserve(path: str) -> None:
    """Allocates a memory-mapped file's blocks now: a full disk is then an OSError here
    instead of a bus error when the map is written."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as e:
            # Filesystems without fallocate: the free-space check before the build stands.
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise


def size_text(n: int) -> str:
    """`n` bytes for people: 1.65 GB, 18.0 MB."""
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"
