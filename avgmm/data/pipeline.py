"""Reads a prepared audio-visual dataset (tfds ArrayRecord) into host batches.

Any dataset with the features `audio` `[F, T]`, `frames` `[T, H, W, 3]` uint8, `label`
and `id` works: the embedded `avsynth` and the prepared CREMA-D / AVE alike. Batches are
plain numpy dicts; frames stay uint8 so that the device does the augmentation and the
normalization (see `augment.py`), which keeps the host side a cheap gather.

Order is a pure function of `(seed, epoch)`, so a resumed run sees the same batches.

Decoding tfds records (protobuf parsing in Python) delivers about 120 CREMA-D-sized
samples/s on 2 CPU cores, too slow to feed a GPU. With `cache_dir`, each split is decoded
once into plain `.npy` files (only the frames the model uses) and then read through
memory maps, which costs a copy per batch and nothing else. Each split's cache is built
under a lock file, so concurrent runs wait for one build and share it; its blocks are
reserved before they are written, so a full disk is a clear error (never a bus error),
and only a complete build is ever renamed into place.
"""

import dataclasses
import errno
import fcntl
import hashlib
import importlib
import json
import os
import queue
import re
import shutil
import sys
import threading
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds
from tqdm.auto import tqdm

from avgmm.data import feature_spec
from avgmm.errors import DatasetNotPreparedError, UserError

Batch = Dict[str, np.ndarray]
SPLITS = ("train", "validation", "test")
# Batch entries for the host only (reports); the rest goes to the devices (the ground-truth
# `imbalanced` flag too: evaluation splits its accuracy into degraded and clean clips).
HOST_KEYS = ("id",)
# Converters of the built-in datasets: named in refusals, and imported (which registers
# their builders) so that the loader knows which dataset version the current code writes.
CONVERTERS = {"crema_d_av": "data_prep.crema_d", "ave_av": "data_prep.ave",
              "av_mnist": "data_prep.av_mnist", "kinetics_sounds_av": "data_prep.kinetics_sounds",
              "vggsound_av": "data_prep.vggsound"}
# The inputs each converter needs, as shown in "prepare it with: ..." lines.
CONVERTER_INPUTS = {
    "crema_d_av": "--raw_dir=<CREMA-D download>",
    "ave_av": "--raw_dir=<AVE download>",
    "av_mnist": "--fsdd_dir=<FSDD recordings folder> --mnist_dir=<MNIST idx files folder>",
    "kinetics_sounds_av": "--raw_dir=<Kinetics-400 download with annotations/>",
    "vggsound_av": "--raw_dir=<downloaded VGGSound clips> --csv=<vggsound.csv>",
}
# A split is decoded into the cache only when its decoded size is at most this many GB
# (config.data.cache_max_gb): above it, a cache would double a large dataset on disk
# (VGGSound's train split decodes to about 100 GB), so the split is read from the
# prepared records instead, slower but with no extra disk.
CACHE_MAX_GB = 32.0
CACHE_FIX = ("set config.data.cache_dir to a folder with room for it, or config.data.cache="
             "False (or a smaller config.data.cache_max_gb) to read the records directly "
             "(slower)")


class CacheError(UserError, OSError):
    """The loader's decoded cache cannot be built; the one-line message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class DatasetMeta:
    """What the model and the trainer need to know about a prepared dataset."""

    name: str
    num_classes: int
    class_names: Sequence[str]
    audio_shape: Sequence[int]  # [F, T]
    frames_shape: Sequence[int]  # [T, H, W, 3] as stored
    num_examples: Mapping[str, int]
    params: Mapping[str, Any]  # preparation parameters recorded with the data
    has_imbalance_flag: bool  # ground-truth `imbalanced` feature (synthetic data)
    # Where the splits come from (`standard: <sha1>`, `seeded random, seed N`); empty for
    # datasets that do not record it.
    split_source: str = ""


class Dataset:
    """Random-access splits of one prepared dataset, with batch iterators.

    Args:
      name: tfds name, e.g. `avsynth/default` or `crema_d_av`.
      data_dir: tfds data directory holding the prepared dataset.
      num_frames: frames per clip given to the model, picked evenly from those stored.
    """

    def __init__(self, name: str, data_dir: str, num_frames: int):
        # Before tfds reads the files: it would import any module their spec names.
        feature_spec.check_prepared(name, data_dir)
        _check_version(name, data_dir)
        # Before tfds too: for a name it has no builder for, its error lists every dataset
        # it knows and suggests unrelated ones.
        if not is_prepared(name, data_dir):
            raise DatasetNotPreparedError(
                f"dataset '{name}' is not prepared in {_show(data_dir)}; prepare it with: "
                f"{prepare_command(name, data_dir)}")
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except Exception as e:  # tfds raises several types for a dataset it cannot read
            raise DatasetNotPreparedError(
                f"dataset '{name}' in {_show(data_dir)} cannot be opened "
                f"({_one_line(e)}); prepare it again with: "
                f"{prepare_command(name, data_dir)}") from e
        if not builder.is_prepared():
            raise DatasetNotPreparedError(
                f"dataset '{name}' is not prepared in {_show(data_dir)} (looked in "
                f"{builder.data_dir}); prepare it with: {prepare_command(name, data_dir)}")
        info = builder.info
        missing = {"audio", "frames", "label", "id"} - set(info.features.keys())
        if missing:
            raise UserError(f"dataset '{name}' lacks the features {sorted(missing)}; "
                             "avgmm needs audio, frames, label and id")
        self.sources = {s: tfds.data_source(name, data_dir=data_dir, split=s)
                        for s in SPLITS if s in info.splits}
        if "train" not in self.sources:
            raise UserError(f"dataset '{name}' has no 'train' split: {list(info.splits)}")
        frames_shape = tuple(info.features["frames"].shape)
        if not 1 <= num_frames <= frames_shape[0]:
            raise UserError(
                f"config.data.num_frames={num_frames} but '{name}' stores "
                f"{frames_shape[0]} frames per clip; use a value in 1..{frames_shape[0]}")
        self.frame_index = evenly_spaced(frames_shape[0], num_frames)
        self.meta = DatasetMeta(
            name=name,
            num_classes=info.features["label"].num_classes,
            class_names=tuple(info.features["label"].names),
            audio_shape=tuple(info.features["audio"].shape),
            frames_shape=frames_shape,
            num_examples={s: len(src) for s, src in self.sources.items()},
            params=dict(info.metadata or {}),
            has_imbalance_flag="imbalanced" in info.features.keys(),
            split_source=str((info.metadata or {}).get("split_source") or ""),
        )
        self.cache: Dict[str, Dict[str, np.ndarray]] = {}
        self._prepared_dir = str(builder.data_dir)
        self.data_dir = data_dir

    def use_cache(self, cache_dir: str, max_gb: float = CACHE_MAX_GB) -> None:
        """Reads every split whose decoded cache takes at most `max_gb` GB from `.npy`
        memory maps under `cache_dir`, decoding it first where missing (once per dataset
        and frame choice); larger splits keep reading the prepared records."""
        key = json.dumps({"name": self.meta.name, "dir": self._prepared_dir,
                          "frames": self.frame_index.tolist(),
                          "examples": self.meta.num_examples,
                          "params": self.meta.params}, sort_keys=True, default=str)
        root = os.path.join(os.path.expanduser(cache_dir), self.meta.name.replace("/", "_"),
                            hashlib.sha1(key.encode()).hexdigest()[:12])
        try:
            small = [s for s in self.sources if self.cache_bytes(s) <= max_gb * 1e9]
            for s in self.sources:
                if s not in small:
                    print(f"{self.meta.name} {s}: reading the prepared records (its decoded "
                          f"cache would take {_size(self.cache_bytes(s))}, above "
                          f"config.data.cache_max_gb={max_gb:g})", flush=True)
            if small:
                os.makedirs(root, exist_ok=True)
            self.cache = {s: self._cached_split(s, os.path.join(root, s)) for s in small}
        except CacheError:
            raise
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise CacheError(f"the disk under {root} filled up while building the "
                                 f"decoded cache; {CACHE_FIX}") from e
            raise CacheError(f"cannot write the decoded cache under {root} ({e}); "
                             f"{CACHE_FIX}") from e

    def cache_bytes(self, split: str) -> int:
        """Disk space the decoded cache of `split` takes (arrays, labels and ids)."""
        n = self.meta.num_examples[split]
        f, t = self.meta.audio_shape
        _, h, w, c = self.meta.frames_shape
        per_clip = 2 * f * t + len(self.frame_index) * h * w * c + 8 + 64
        return n * per_clip + 4096

    def _cached_split(self, split: str, path: str) -> Dict[str, np.ndarray]:
        """Memory maps of a split's decoded arrays, building them on first use.

        Concurrent runs serialize on `<path>.lock`: the first builds, the others wait and
        then reuse its result instead of deleting it under it."""
        if not os.path.exists(os.path.join(path, "complete")):
            with open(path + ".lock", "a") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    print(f"waiting for another run building the decoded cache {path}",
                          flush=True)
                    fcntl.flock(lock, fcntl.LOCK_EX)
                if not os.path.exists(os.path.join(path, "complete")):
                    self._build_split_cache(split, path)
        cached = {k: np.load(os.path.join(path, f"{k}.npy"), mmap_mode="r")
                  for k in ("audio", "frames")}
        cached["label"] = np.load(os.path.join(path, "label.npy"))
        with open(os.path.join(path, "id.json"), encoding="utf-8") as fh:
            cached["id"] = np.asarray(json.load(fh), dtype=object)
        if os.path.exists(os.path.join(path, "imbalanced.npy")):
            cached["imbalanced"] = np.load(os.path.join(path, "imbalanced.npy"))
        return cached

    def _build_split_cache(self, split: str, path: str) -> None:
        """Decodes `split` into `<path>.incomplete` and renames it to `path` when complete;
        the caller holds the split's lock. A failed build leaves nothing behind."""
        tmp = path + ".incomplete"
        shutil.rmtree(tmp, ignore_errors=True)  # an earlier build that died; never trusted
        needed = self.cache_bytes(split)
        free = shutil.disk_usage(os.path.dirname(path)).free
        if needed > free:
            raise CacheError(f"the decoded cache of {self.meta.name} {split} needs "
                             f"{_size(needed)} under {os.path.dirname(path)} but only "
                             f"{_size(free)} is free; {CACHE_FIX}")
        os.makedirs(tmp)
        try:
            self._write_split_cache(split, tmp)
            shutil.rmtree(path, ignore_errors=True)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _write_split_cache(self, split: str, tmp: str) -> None:
        n = self.meta.num_examples[split]
        f, t = self.meta.audio_shape
        _, h, w, c = self.meta.frames_shape
        out = {
            "audio": np.lib.format.open_memmap(os.path.join(tmp, "audio.npy"), "w+",
                                               np.float16, (n, f, t)),
            "frames": np.lib.format.open_memmap(
                os.path.join(tmp, "frames.npy"), "w+", np.uint8,
                (n, len(self.frame_index), h, w, c)),
        }
        for name in out:
            _reserve(os.path.join(tmp, f"{name}.npy"))
        labels, ids, flags = [], [], []
        chunk = 256
        if not sys.stderr.isatty():  # a bar in a log file is noise: one line instead
            print(f"decoding {self.meta.name} {split} ({n} clips) into the cache {tmp}",
                  flush=True)
        with tqdm(total=n, desc=f"caching {self.meta.name} {split}", unit="clip",
                  leave=False, dynamic_ncols=True, disable=not sys.stderr.isatty()) as bar:
            for start in range(0, n, chunk):
                batch = self._read_records(split, range(start, min(start + chunk, n)))
                out["audio"][start:start + len(batch["label"])] = batch["audio"]
                out["frames"][start:start + len(batch["label"])] = batch["frames"]
                labels.append(batch["label"])
                ids.extend(batch["id"].tolist())
                if "imbalanced" in batch:
                    flags.append(batch["imbalanced"])
                bar.update(len(batch["label"]))
        for arr in out.values():
            arr.flush()
        del out
        np.save(os.path.join(tmp, "label.npy"), np.concatenate(labels))
        if flags:
            np.save(os.path.join(tmp, "imbalanced.npy"), np.concatenate(flags))
        with open(os.path.join(tmp, "id.json"), "w", encoding="utf-8") as fh:
            json.dump(ids, fh)
        open(os.path.join(tmp, "complete"), "w").close()

    def read(self, split: str, indices: Sequence[int]) -> Batch:
        """Examples at `indices` of `split`, stacked; frames subsampled to `num_frames`."""
        if split not in self.cache:
            return self._read_records(split, indices)
        idx = np.asarray(indices, np.int64)
        # Sorted reads walk the memory maps forward; the batch keeps the asked order.
        order = np.argsort(idx, kind="stable")
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        cols = self.cache[split]
        batch = {k: cols[k][idx[order]][inverse] for k in cols}
        batch["label"] = batch["label"].astype(np.int32)
        batch["index"] = idx.astype(np.int32)
        return batch

    def _read_records(self, split: str, indices: Sequence[int]) -> Batch:
        src = self.sources[split]
        records = src.__getitems__(list(indices))
        batch = {
            "audio": np.stack([r["audio"] for r in records]),
            "frames": np.stack([r["frames"][self.frame_index] for r in records]),
            "label": np.asarray([r["label"] for r in records], np.int32),
            "index": np.asarray(indices, np.int32),
            "id": np.asarray([r["id"].decode() if isinstance(r["id"], bytes) else str(r["id"])
                              for r in records], dtype=object),
        }
        if self.meta.has_imbalance_flag:
            batch["imbalanced"] = np.asarray([r["imbalanced"] for r in records], bool)
        return batch

    def train_batches(self, batch_size: int, epoch: int, seed: int, prefetch: int = 2,
                      process_index: int = 0, process_count: int = 1,
                      groups: Optional[np.ndarray] = None) -> Iterator[Batch]:
        """Shuffled training batches of one epoch; the incomplete last batch is dropped.

        With `process_count` > 1, each process reads only its slice (rows
        `process_index * batch_size / process_count` onwards) of every global batch; the
        global order is the same whatever the process count. `groups` (ints, one per
        training sample) sorts the shuffled order stably by group: the epoch draws the
        samples of the lowest group first, each group in shuffled order, so batches hold
        one group except where two groups meet."""
        n = self.meta.num_examples["train"]
        order = np.random.default_rng([seed, epoch]).permutation(n)
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape != (n,):
                raise ValueError(f"groups has shape {groups.shape}; the training split has "
                                 f"{n} samples")
            order = order[np.argsort(groups[order], kind="stable")]
        lo, hi = process_rows(batch_size, process_index, process_count)
        chunks = [order[i:i + batch_size][lo:hi]
                  for i in range(0, n - batch_size + 1, batch_size)]
        return _prefetch((self.read("train", c) for c in chunks), prefetch)

    def eval_batches(self, split: str, batch_size: int, prefetch: int = 2,
                     process_index: int = 0, process_count: int = 1) -> Iterator[Batch]:
        """Batches over a whole split in index order; the last one is padded and masked.

        With `process_count` > 1, each process reads only its rows of every padded global
        batch (padding rows repeat the global batch's first row, as `pad_batch` does)."""
        n = self.meta.num_examples[split]
        lo, hi = process_rows(batch_size, process_index, process_count)

        def gen():
            for start in range(0, n, batch_size):
                if process_count == 1:
                    idx = np.arange(start, min(start + batch_size, n))
                    yield pad_batch(self.read(split, idx), batch_size)
                    continue
                idx = start + np.arange(lo, hi)
                real = idx < n
                batch = self.read(split, np.where(real, idx, start))
                batch["mask"] = real
                yield batch

        return _prefetch(gen(), prefetch)

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.meta.num_examples["train"] // batch_size


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


def _size(n: int) -> str:
    """`n` bytes for people: 1.65 GB, 18.0 MB."""
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def process_rows(batch_size: int, process_index: int, process_count: int):
    """`(lo, hi)`: the rows of a global batch that process `process_index` of
    `process_count` reads (the batch divides evenly; the run's config check sees to it)."""
    if not 0 <= process_index < process_count or batch_size % process_count:
        raise ValueError(f"a batch of {batch_size} does not split into {process_count} "
                         f"processes' slices (process {process_index})")
    per = batch_size // process_count
    return process_index * per, (process_index + 1) * per


def evenly_spaced(stored: int, wanted: int) -> np.ndarray:
    """`wanted` indices spread evenly over `stored` frames (centres of equal segments)."""
    return np.floor((np.arange(wanted) + 0.5) * stored / wanted).astype(np.int64)


def pad_batch(batch: Batch, size: int) -> Batch:
    """Pads every array to `size` rows (repeating row 0) and adds a `mask` of real rows."""
    n = len(batch["label"])
    out = {}
    for key, value in batch.items():
        if n < size:
            value = np.concatenate([value, np.repeat(value[:1], size - n, axis=0)])
        out[key] = value
    out["mask"] = np.arange(size) < n
    return out


def _prefetch(iterator: Iterator[Batch], size: int) -> Iterator[Batch]:
    """Runs `iterator` in a background thread, `size` batches ahead."""
    if size <= 0:
        yield from iterator
        return
    q: "queue.Queue[Any]" = queue.Queue(maxsize=size)
    done = object()
    stop = threading.Event()

    def worker():
        try:
            for item in iterator:
                if stop.is_set():
                    return
                q.put(item)
        except BaseException as e:  # surfaced in the consumer
            q.put(e)
        q.put(done)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


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


def load_dataset(name: str, data_dir: str, num_frames: int,
                 expected_params: Optional[Mapping[str, Any]] = None,
                 cache_dir: Optional[str] = None,
                 cache_max_gb: Any = CACHE_MAX_GB) -> Dataset:
    """Opens a prepared dataset; refuses one whose recorded parameters differ from
    `expected_params` (a mapping of parameter name to the value the config asks for; None
    values are not checked). With `cache_dir`, splits whose decoded cache takes at most
    `cache_max_gb` GB are read from that cache (see `Dataset.use_cache`).

    The embedded synthetic `avsynth/<config>` is generated here when it is missing (it
    needs no download), so every entry point can use it on a fresh machine.
    """
    if name.split("/")[0] == "avsynth" and not is_prepared(name, data_dir):
        from avgmm.data import avsynth  # tfds builder module: imported only when needed

        config_name = (name.split(":")[0].split("/") + ["default"])[1]
        print(f"building the synthetic dataset {name} in {_show(data_dir)} (once; it "
              "needs no download)", flush=True)
        avsynth.prepare(os.path.expanduser(data_dir), config_name)
    limit = cache_limit_gb(cache_max_gb)
    ds = Dataset(name, data_dir, num_frames)
    _check_params(ds, name, expected_params)
    if cache_dir:
        ds.use_cache(cache_dir, limit)
    return ds


def is_prepared(name: str, data_dir: str) -> bool:
    """Whether `data_dir` holds a finished build of `name` (`base[/config][:version]`):
    a version folder with its `dataset_info.json`."""
    base, _, version = name.partition(":")
    root = os.path.join(os.path.expanduser(data_dir), *base.split("/"))
    if not os.path.isdir(root):
        return False
    versions = [version] if version else os.listdir(root)
    return any(re.fullmatch(r"\d+\.\d+\.\d+", v)
               and os.path.exists(os.path.join(root, v, "dataset_info.json"))
               for v in versions)


def _show(path: str) -> str:
    """`path` as people type it: the home folder as `~`."""
    path = str(path)
    home = os.path.expanduser("~")
    if home not in ("", "/", "~") and (path == home or path.startswith(home + os.sep)):
        return "~" + path[len(home):]
    return path


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 200 else text[:197] + "..."


def prepare_command(name: str, data_dir: str) -> str:
    """The command that prepares `name` into `data_dir`, for refusals."""
    base = name.split(":")[0].split("/")[0]
    if base == "avsynth":
        return f"python -m avgmm.demo --data_dir={_show(data_dir)}"
    module = CONVERTERS.get(base)
    if module is None:
        return ("python -m data_prep.folder --csv=<clips.csv> --name=" + base +
                f" --data_dir={_show(data_dir)} (or the converter that made it; see "
                "docs/datasets.md)")
    return (f"python -m {module} {CONVERTER_INPUTS[base]} --data_dir={_show(data_dir)}")


def _check_version(name: str, data_dir: str) -> None:
    """Refuses a built-in dataset that exists only in versions older than its
    converter's."""
    base = name.split("/")[0]
    if base not in CONVERTERS:
        return
    try:
        importlib.import_module(CONVERTERS[base])
        current = str(tfds.builder_cls(base).VERSION)
    except Exception:  # converters not installed: tfds reads whatever version is there
        return
    folder = os.path.join(os.path.expanduser(data_dir), base)
    if not os.path.isdir(folder) or os.path.isdir(os.path.join(folder, current)):
        return
    older = sorted(v for v in os.listdir(folder) if re.fullmatch(r"\d+\.\d+\.\d+", v)
                   and os.path.exists(os.path.join(folder, v, "dataset_info.json")))
    if older:
        raise UserError(
            f"dataset '{name}' in {folder} was prepared by an older converter (version "
            f"{', '.join(older)}; this code reads {current}): prepare it again with "
            f"{prepare_command(name, data_dir)}")


def _check_params(ds: Dataset, name: str, expected_params: Optional[Mapping[str, Any]]):
    """Refuses a dataset prepared with other parameters, naming every differing one."""
    expected = {k: v for k, v in (expected_params or {}).items() if v is not None}
    unrecorded = sorted(k for k in expected if k not in ds.meta.params)
    if unrecorded:
        raise UserError(
            f"dataset '{name}' does not record {', '.join(map(repr, unrecorded))} (the "
            "config expects "
            + ", ".join(f"{k}={expected[k]!r}" for k in unrecorded) + "), so an older "
            f"converter made it: prepare it again with {prepare_command(name, ds.data_dir)}")
    differ = [(k, ds.meta.params[k], want) for k, want in sorted(expected.items())
              if not (_same_split if k == "split_source" else _same)(ds.meta.params[k], want)]
    if not differ:
        return
    have_text = ", ".join(f"{k}={have!r}" for k, have, _ in differ)
    want_text = ", ".join(f"{k}={want!r}" for k, _, want in differ)
    keep = " ".join(f"--config.data.expect.{k}={have!r}" for k, have, _ in differ)
    if [k for k, _, _ in differ] == ["split_source"]:
        have = differ[0][1]
        raise UserError(
            f"dataset '{name}' was prepared with {have_text} but the config expects "
            f"{want_text}: prepare it into a new data_dir with the standard split files "
            f"({prepare_command(name, 'NEW_DIR')} --split_csv_dir=DIR, DIR holding "
            f"train.csv and test.csv) or set config.data.expect.split_source={have!r}")
    raise UserError(
        f"dataset '{name}' was prepared with {have_text} but the config expects "
        f"{want_text}: prepare the data again with those values or accept the data's "
        f"with {keep}")


def _same_split(have: Any, want: Any) -> bool:
    """A recorded `kind: detail` split source matches an expected `kind` alone (e.g.
    `standard`) or the whole value (e.g. `standard: <sha1>`, to pin the files)."""
    have, want = str(have), str(want)
    return have == want or (":" not in want and have.split(":", 1)[0].strip() == want)


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return list(a) == list(b)
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)))
    return a == b
