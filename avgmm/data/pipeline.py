"""Reads a prepared audio-visual dataset (tfds ArrayRecord) into host batches.

Any dataset with the features `audio` `[F, T]`, `frames` `[T, H, W, 3]` uint8, `label`
and `id` works: the embedded `avsynth` and the prepared CREMA-D / AVE alike. Every other
scalar feature (ground truth such as `imbalanced`) is a clip field that every batch
carries under its name (see `clip_fields`). Batches are plain numpy dicts; frames stay
uint8 so that the device does the augmentation and the normalization (see `augment.py`),
which keeps the host side a cheap gather.

Order is a pure function of `(seed, epoch)`, so a resumed run sees the same batches.
With `cache_dir`, each split is decoded once into memory-mapped `.npy` files (see
`decoded_cache`); `prepared` checks that the data is there and made as the config
expects.
"""

import dataclasses
import errno
import os
import queue
import threading
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds

from avgmm.data import clip_fields as fields_lib
from avgmm.data import decoded_cache, feature_spec, prepared
from avgmm.data.decoded_cache import CACHE_FIX, CACHE_MAX_GB
from avgmm.errors import CacheError, DatasetNotPreparedError, UserError

Batch = Dict[str, np.ndarray]
SPLITS = ("train", "validation", "test")
# Batch entries for the host only (reports); the rest goes to the devices, the clip
# fields too (evaluation splits its accuracy by them).
HOST_KEYS = ("id",)
is_prepared = prepared.is_prepared
prepare_command = prepared.prepare_command


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
    # Per-clip ground truth every batch carries, `{name: kind}`: kind "bool", "int",
    # "float" or the class names (see `clip_fields`).
    clip_fields: Mapping[str, fields_lib.Kind] = dataclasses.field(default_factory=dict)
    # Where the splits come from (`standard: <sha1>`, `seeded random, seed N`); empty for
    # datasets that do not record it.
    split_source: str = ""

    @property
    def has_imbalance_flag(self) -> bool:
        """Whether the data records the ground-truth `imbalanced` flag."""
        return "imbalanced" in self.clip_fields


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
        prepared.check_version(name, data_dir)
        # Before tfds too: for a name it has no builder for, its error lists every dataset
        # it knows and suggests unrelated ones.
        where = prepared.show(data_dir)
        if not is_prepared(name, data_dir):
            raise DatasetNotPreparedError(
                f"dataset '{name}' is not prepared in {where}; prepare it with: "
                f"{prepare_command(name, data_dir)}")
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except Exception as e:  # tfds raises several types for a dataset it cannot read
            raise DatasetNotPreparedError(
                f"dataset '{name}' in {where} cannot be opened ({prepared.one_line(e)}); "
                f"prepare it again with: {prepare_command(name, data_dir)}") from e
        if not builder.is_prepared():
            raise DatasetNotPreparedError(
                f"dataset '{name}' is not prepared in {where} (looked in "
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
            clip_fields=fields_lib.from_features(name, info.features),
            split_source=str((info.metadata or {}).get("split_source") or ""),
        )
        self.cache: Dict[str, Dict[str, np.ndarray]] = {}
        self._prepared_dir = str(builder.data_dir)
        self.data_dir = data_dir

    def use_cache(self, cache_dir: str, max_gb: float = CACHE_MAX_GB) -> None:
        """Reads every split whose decoded cache takes at most `max_gb` GB from `.npy`
        memory maps under `cache_dir`, decoding it first where missing (once per dataset
        and frame choice); larger splits keep reading the prepared records."""
        root = decoded_cache.root(cache_dir, self.meta, self._prepared_dir, self.frame_index)
        try:
            small = [s for s in self.sources if self.cache_bytes(s) <= max_gb * 1e9]
            for s in self.sources:
                if s not in small:
                    print(f"{self.meta.name} {s}: reading the prepared records (its decoded "
                          f"cache would take {decoded_cache.size_text(self.cache_bytes(s))}, "
                          f"above config.data.cache_max_gb={max_gb:g})", flush=True)
            if small:
                os.makedirs(root, exist_ok=True)
            self.cache = {s: decoded_cache.open_split(os.path.join(root, s), self.meta, s,
                                                      len(self.frame_index),
                                                      self._read_records)
                          for s in small}
        except CacheError:
            raise
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise CacheError(f"the disk under {root} filled up while building the "
                                 f"decoded cache; {CACHE_FIX}") from e
            raise CacheError(f"cannot write the decoded cache under {root} ({e}); "
                             f"{CACHE_FIX}") from e

    def cache_bytes(self, split: str) -> int:
        """Disk space the decoded cache of `split` takes (arrays, labels, fields, ids)."""
        return decoded_cache.split_bytes(self.meta, len(self.frame_index), split)

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
        for key, kind in self.meta.clip_fields.items():
            batch[key] = fields_lib.column([r[key] for r in records], kind)
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


def check_data_dir(data_dir: str) -> None:
    """Refuses, in one line, a `config.data.data_dir` that is a file or a folder this user
    cannot read (a missing one is fine: the dataset is then not prepared there)."""
    path = os.path.expanduser(data_dir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"config.data.data_dir={data_dir!r} is a file, not a folder: point "
                        "it at the folder the datasets are prepared in, e.g. ~/avgmm_data")
    if os.path.isdir(path) and not os.access(path, os.R_OK | os.X_OK):
        raise UserError(f"config.data.data_dir={data_dir!r} cannot be read by this user: "
                        "fix its permissions (chmod u+rx) or point config.data.data_dir at a "
                        "readable copy")


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
    check_data_dir(data_dir)
    if name.split("/")[0] == "avsynth" and not is_prepared(name, data_dir):
        from avgmm.data import avsynth  # tfds builder module: imported only when needed

        config_name = (name.split(":")[0].split("/") + ["default"])[1]
        print(f"building the synthetic dataset {name} in {prepared.show(data_dir)} (once; it "
              "needs no download)", flush=True)
        avsynth.prepare(os.path.expanduser(data_dir), config_name)
    limit = decoded_cache.cache_limit_gb(cache_max_gb)
    ds = Dataset(name, data_dir, num_frames)
    prepared.check_params(ds.meta, name, data_dir, expected_params)
    if cache_dir:
        ds.use_cache(cache_dir, limit)
    return ds
