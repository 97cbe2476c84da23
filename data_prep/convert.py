"""Shared machinery of the converters: a tfds builder base, parallel decoding with a
progress bar, a per-clip work cache, and the failure report.

A converter lists its clips (`Clip`: key, id, label, split, media paths, optional
segment), and `AVBuilder` does the rest: decodes every clip in a process pool (one bad
clip never stops the run; it is skipped and written to `failures.jsonl` with its reason),
then writes the ArrayRecord dataset through tfds, which builds in an `incomplete.*`
directory and renames it only when complete, so no half-written dataset is ever visible.

Decoded clips are cached as `.npz` files under `<data_dir>/<name>_work/` while a
conversion runs: an interrupted conversion started again reuses them instead of decoding
again. The cache is deleted after a successful build unless `keep_work=True`.
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple
from unittest import mock

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import writer as tfds_writer
from tqdm.auto import tqdm

from data_prep import cli, media
from data_prep.features import AudioParams, spectrogram

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Clip:
    """One sample to convert."""

    key: str  # unique example key (also the cache file name)
    clip_id: str  # the `id` feature
    label: str
    split: str
    video_path: str
    audio_path: str  # a WAV, or the video container itself
    start: Optional[float] = None  # segment in seconds (AVE events)
    end: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class FrameParams:
    """How frames are stored: `num_frames` sampled evenly, resized to `frame_size`^2."""

    num_frames: int = 3
    frame_size: int = 224

    def __post_init__(self):
        if self.num_frames < 1 or self.frame_size < 8:
            raise ValueError(f"num_frames must be >= 1 and frame_size >= 8, got "
                             f"{self.num_frames} and {self.frame_size}")


class DataPrepError(Exception):
    """The raw download is not what the converter expects; the message says what."""


def files_sha1(paths: Sequence[str]) -> str:
    """sha1 of the files' bytes, read one after the other in the given order."""
    digest = hashlib.sha1()
    for path in paths:
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def standard_split_source(paths: Sequence[str], validation_fraction: float,
                          seed: int) -> str:
    """`split_source` of official split files (their sha1) whose validation split is a
    seeded draw from their train split."""
    return (f"standard: {files_sha1(paths)}; validation {validation_fraction:g} of train, "
            f"seed {seed}")


def seeded_split_source(seed: int) -> str:
    """The `split_source` of a split drawn by the converter itself."""
    return f"seeded random, seed {seed}"


# Audio-side parameter classes besides AudioParams (precomputed features), by the
# `feature_format` they record: data_prep.htk and data_prep.arrays add theirs. Each has
# `shape`, `as_metadata()`, `from_metadata(recorded)` and, to decode clips,
# `read_feature(path, start, end) -> (float16 [F, T], seconds covered)`.
AUDIO_FORMATS: Dict[str, Any] = {}


def audio_from_metadata(recorded: Mapping[str, Any]):
    """The audio parameters a prepared dataset recorded, as their class."""
    kind = recorded.get("feature_format")
    if kind is None:
        return AudioParams(**recorded)
    if kind not in AUDIO_FORMATS:
        raise DataPrepError(f"the dataset records audio features of format {kind!r}, "
                            f"which none of {sorted(AUDIO_FORMATS)} reads")
    return AUDIO_FORMATS[kind].from_metadata(dict(recorded))


def audio_feature(clip: Clip, audio) -> Tuple[np.ndarray, float]:
    """The stored `audio` feature of a clip and the seconds of audio it came from."""
    if hasattr(audio, "read_feature"):  # precomputed features (e.g. HTK files)
        return audio.read_feature(clip.audio_path, clip.start, clip.end)
    wave = media.load_audio(clip.audio_path, audio.sample_rate, clip.start, clip.end)
    return spectrogram(wave, audio), len(wave) / audio.sample_rate


def decode_clip(clip: Clip, audio: AudioParams, frames: FrameParams,
                cache_dir: str) -> Tuple[str, Optional[str]]:
    """Decodes one clip into `cache_dir/<key>.npz`; returns `(key, failure reason or None)`."""
    target = os.path.join(cache_dir, clip.key + ".npz")
    if os.path.exists(target):
        return clip.key, None
    try:
        spec, seconds = audio_feature(clip, audio)
        images = media.read_frames(clip.video_path, frames.num_frames, frames.frame_size,
                                   clip.start, clip.end, fallback_seconds=seconds)
    except media.ClipError as e:
        return clip.key, str(e)
    except Exception as e:  # a decoder bug must not stop thousands of other clips
        return clip.key, f"unexpected {type(e).__name__}: {e}"
    tmp = os.path.join(cache_dir, f".{clip.key}.{os.getpid()}.npz")
    with open(tmp, "wb") as f:
        np.savez(f, audio=spec, frames=images, seconds=np.float64(seconds))
    os.replace(tmp, target)
    return clip.key, None


def _decode_star(args) -> Tuple[str, Optional[str], Optional[float]]:
    """`decode_clip`, plus the seconds of audio the clip had (from its decoded file)."""
    key, reason = decode_clip(*args)
    return key, reason, None if reason else stored_seconds(os.path.join(args[3], key + ".npz"))


def stored_seconds(path: str) -> Optional[float]:
    """The seconds of audio a decoded clip came from, or None (decoded by older code)."""
    try:
        with np.load(path) as z:
            return float(z["seconds"]) if "seconds" in z.files else None
    except (OSError, ValueError):
        return None


def _die_with_parent(parent: int) -> None:
    """Pool initializer: the worker is killed when the converter dies, even by SIGKILL
    (Linux's PR_SET_PDEATHSIG; elsewhere a killed converter leaves its workers to finish
    their clip and exit when they find the pool gone)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the converter died before the line above ran
        os._exit(1)


def decode_all(clips: Sequence[Clip], audio: AudioParams, frames: FrameParams,
               cache_dir: str, workers: int, desc: str = "decoding"
               ) -> Tuple[Dict[str, str], Dict[str, float]]:
    """Decodes every clip (in parallel when `workers > 1`) with a progress bar and ETA.

    Returns `({key: reason}` for the clips that failed, `{key: seconds of audio})` for
    the others (where known). Worker processes die with the converter (Linux).
    """
    os.makedirs(cache_dir, exist_ok=True)
    tasks = [(c, audio, frames, cache_dir) for c in clips]
    failures: Dict[str, str] = {}
    seconds: Dict[str, float] = {}

    def record(key: str, reason: Optional[str], covered: Optional[float]) -> None:
        if reason:
            failures[key] = reason
        elif covered is not None:
            seconds[key] = covered
        bar.update()

    bar = tqdm(total=len(tasks), desc=desc, unit="clip", dynamic_ncols=True)
    try:
        if workers <= 1:
            for result in map(_decode_star, tasks):
                record(*result)
        else:
            # fork starts a worker in milliseconds (spawn re-imports tfds, librosa and cv2
            # in each, about 2 s); the workers only decode files and write npz files. A
            # process that has imported JAX (multithreaded) must not fork: spawn there.
            forkable = ("fork" in multiprocessing.get_all_start_methods()
                        and "jax" not in sys.modules)
            method = "fork" if forkable else "spawn"
            ctx = multiprocessing.get_context(method)
            with concurrent.futures.ProcessPoolExecutor(
                    workers, mp_context=ctx, initializer=_die_with_parent,
                    initargs=(os.getpid(),)) as pool:
                chunk = max(1, min(16, len(tasks) // (4 * workers)))
                for result in pool.map(_decode_star, tasks, chunksize=chunk):
                    record(*result)
    finally:
        bar.close()
    return failures, seconds


def stratified_split(labels: Sequence[str], val_fraction: float, test_fraction: float,
                     seed: int) -> List[str]:
    """Seeded per-class split into 'train' / 'validation' / 'test'.

    Each class gives `round(fraction * n)` items to validation and test; a class that can
    spare one (small custom datasets) gives at least one to each non-zero fraction.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out = np.full(len(labels), "train", dtype=object)
    for c in sorted(set(labels.tolist())):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = len(idx)
        n_test = int(round(test_fraction * n))
        n_val = int(round(val_fraction * n))
        if val_fraction > 0 and n_val == 0 and n - n_test >= 2:
            n_val = 1
        if test_fraction > 0 and n_test == 0 and n - n_val >= 2:
            n_test = 1
        out[idx[:n_test]] = "test"
        out[idx[n_test:n_test + n_val]] = "validation"
    return out.tolist()


def write_jsonl_report(builder: tfds.core.DatasetBuilder, filename: str,
                       rows: Sequence[Mapping[str, Any]]) -> str:
    """Writes `rows` as JSON lines to `<data_dir>/<name>/filename` (e.g. the clips a
    conversion skipped, `failures.jsonl`), beside the prepared dataset; returns the path."""
    path = os.path.join(os.path.expanduser(str(builder._data_dir_root)), builder.name,
                        filename)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


class StreamingWriter:
    """Writes a split's records in the order they come into ArrayRecord shards of about
    `SHARD_BYTES`, holding one record in memory: the stand-in for tfds's `Writer` (same
    constructor and `write` / `finalize`) when shuffling is off (see `AVBuilder`)."""

    SHARD_BYTES = 1 << 30

    def __init__(self, serializer, filename_template, hash_salt=None,
                 disable_shuffling: bool = True, example_writer=None, shard_config=None,
                 ignore_duplicates: bool = False):
        del hash_salt, example_writer, shard_config, ignore_duplicates  # no shuffling
        if not disable_shuffling:
            raise ValueError("StreamingWriter writes in order: use it with shuffling off")
        self._serializer = serializer
        self._template = filename_template
        self._shards: List[Tuple[str, int]] = []  # temporary path, records
        self._writer = None
        self._shard_bytes = 0
        self._total_bytes = 0

    def write(self, key, example) -> None:
        del key  # the order of the calls is the order of the records
        data = self._serializer.serialize_example(example=example)
        if self._writer is None or self._shard_bytes >= self.SHARD_BYTES:
            self._close_shard()
            from array_record.python import array_record_module

            path = os.path.join(os.fspath(self._template.data_dir),
                                f".{self._template.split}-{len(self._shards)}.tmp")
            self._writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
            self._shards.append((path, 0))
            self._shard_bytes = 0
        self._writer.write(data)
        path, count = self._shards[-1]
        self._shards[-1] = (path, count + 1)
        self._shard_bytes += len(data)
        self._total_bytes += len(data)

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def finalize(self) -> Tuple[List[int], int]:
        """Names the shards `<split>.array_record-0000i-of-0000n`; returns their record
        counts and the total serialized size, as tfds's `Writer.finalize` does."""
        self._close_shard()
        if not self._shards:
            raise AssertionError("No examples were yielded.")
        n = len(self._shards)
        for i, (path, _) in enumerate(self._shards):
            os.replace(path, os.fspath(self._template.sharded_filepath(shard_index=i,
                                                                       num_shards=n)))
        return [count for _, count in self._shards], self._total_bytes


class AVBuilder(tfds.core.GeneratorBasedBuilder):
    """Base of the audio-visual converters (subclasses: CREMA-D, AVE, folder).

    Subclasses define `VERSION`, `MANUAL_DOWNLOAD_INSTRUCTIONS`, `DEFAULT_AUDIO`,
    `class_names()` and `list_clips(manual_dir)`, which also sets `split_source` (where
    the splits come from: `standard: <sha1 of the split files>` or
    `seeded random, seed N`; recorded in the metadata for the loader and the runs).
    Preparation parameters are builder arguments (not tfds configs) and recorded in the
    dataset's metadata; opening an already prepared dataset without arguments reads them
    back from there, so `tfds.data_source(name, data_dir=...)` works whatever they were.
    """

    DEFAULT_AUDIO: AudioParams
    # Recorded preparation entries that must match to reuse a prepared dataset.
    RECORDED_KEYS: Tuple[str, ...] = ("audio", "frames", "split_options")
    OTHER_TARGET = "another --data_dir"  # the other way out of a parameter mismatch

    def __init__(self, *, audio: Optional[AudioParams] = None,
                 frames: Optional[FrameParams] = None, workers: int = 0,
                 keep_work: bool = False, split_options: Optional[Mapping[str, Any]] = None,
                 consume_work: bool = False, **kwargs):
        recorded = None
        if audio is None and frames is None:
            recorded = self._recorded_params(kwargs.get("data_dir"))
        if recorded is not None:
            audio = audio_from_metadata(recorded["audio"])
            frames = FrameParams(**recorded["frames"])
            split_options = recorded.get("split_options", split_options)
            self._class_names = recorded.get("class_names")
        else:
            self._class_names = None
        self.audio = audio or self.DEFAULT_AUDIO
        self.frames = frames or FrameParams()
        self.workers = workers or os.cpu_count() or 1
        self.keep_work = keep_work
        self.split_options = dict(split_options or {})
        self.summary: Dict[str, Any] = {}
        self.split_source = ""
        # Rows `list_clips` left out before decoding (duplicates), with their reasons.
        self.dropped: List[Dict[str, Any]] = []
        # Clips the annotations name but the download lacks (videos gone from YouTube);
        # rows with `split` and `reason`, counted per split and listed in failures.jsonl.
        self.missing: List[Dict[str, Any]] = []
        # Delete each clip's decoded npz as soon as tfds has taken it, so that the decode
        # cache shrinks while the records grow: peak disk about one dataset instead of two.
        self.consume_work = consume_work
        super().__init__(**kwargs)

    @classmethod
    def _recorded_params(cls, data_dir: Optional[str]) -> Optional[Dict[str, Any]]:
        root = os.path.expanduser(data_dir or os.path.join("~", "tensorflow_datasets"))
        path = os.path.join(root, cls.name, str(cls.VERSION), "metadata.json")
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("preparation")

    # ------------------------------------------------------------ subclass interface
    def class_names(self) -> List[str]:
        raise NotImplementedError

    def list_clips(self, manual_dir: str) -> List[Clip]:
        raise NotImplementedError

    # ------------------------------------------------------------ tfds
    def _names(self) -> List[str]:
        if self._class_names is None:
            self._class_names = list(self.class_names())
        return self._class_names

    def preparation_metadata(self) -> Dict[str, Any]:
        """Every parameter of the conversion, as stored next to the data."""
        return {"audio": self.audio.as_metadata(),
                "frames": dataclasses.asdict(self.frames),
                "split_options": self.split_options, "class_names": self._names()}

    def drawn_validation_metadata(self, fraction: float, seed: int) -> Dict[str, Any]:
        """`preparation_metadata` of a builder whose validation split is a seeded draw of
        `fraction` of the standard train split, recorded with the split options."""
        meta = AVBuilder.preparation_metadata(self)
        meta["split_options"] = {**self.split_options, "validation_fraction": fraction,
                                 "split_seed": seed}
        return meta

    def extra_features(self) -> Dict[str, Any]:
        """Features beyond audio, frames, label and id (e.g. ground-truth flags)."""
        return {}

    def clip_features(self, clip: Clip) -> Dict[str, Any]:
        """The values of `extra_features` for one clip."""
        return {}

    def flat_metadata(self) -> Dict[str, Any]:
        """Parameters recorded at the top level of the metadata, where loaders check them."""
        return {**self.audio.as_metadata(), **dataclasses.asdict(self.frames)}

    def _info(self) -> tfds.core.DatasetInfo:
        f, t = self.audio.shape
        n, s = self.frames.num_frames, self.frames.frame_size
        flat = self.flat_metadata()
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            # Raw bytes: tfds would otherwise store uint8 as int64 varints and float16 as
            # float32 lists, several times slower to write and to read.
            features=tfds.features.FeaturesDict({
                "audio": tfds.features.Tensor(shape=(f, t), dtype=np.float16,
                                              encoding=tfds.features.Encoding.BYTES),
                "frames": tfds.features.Tensor(shape=(n, s, s, 3), dtype=np.uint8,
                                               encoding=tfds.features.Encoding.BYTES),
                "label": tfds.features.ClassLabel(names=self._names()),
                "id": tfds.features.Text(),
                **self.extra_features(),
            }),
            # Flat copies of the parameters so that loaders can check them by name.
            metadata=tfds.core.MetadataDict(preparation=self.preparation_metadata(),
                                            summary=self.summary,
                                            split_source=self.split_source, **flat),
            # Records in clip order: the trainer shuffles anyway, and skipping tfds's
            # shuffle buckets saves a full extra write and read of the data.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        manual_dir = os.path.expanduser(str(dl_manager.manual_dir))
        clips = self.list_clips(manual_dir)
        work = os.path.join(os.path.expanduser(str(self._data_dir_root)),
                            f"{self.name}_work")
        start = time.time()
        failures, seconds = decode_all(clips, self.audio, self.frames, work, self.workers,
                                       desc=f"{self.name}: decoding")
        elapsed = time.time() - start
        report = write_jsonl_report(self, "failures.jsonl", [
            {"key": c.key, "id": c.clip_id, "split": c.split, "audio": c.audio_path,
             "video": c.video_path, "reason": failures[c.key]}
            for c in clips if c.key in failures] + self.dropped + self.missing)
        per_split = {}
        for split in SPLITS:
            in_split = [c for c in clips if c.split == split]
            per_split[split] = {"kept": sum(c.key not in failures for c in in_split),
                                "skipped": sum(c.key in failures for c in in_split)}
            if self.missing:
                per_split[split]["missing"] = sum(r["split"] == split for r in self.missing)
        self.summary.update(per_split=per_split, dropped=len(self.dropped),
                            missing=len(self.missing),
                            seconds=round(elapsed, 1),
                            clips_per_second=round(len(clips) / max(elapsed, 1e-9), 2))
        self.info.metadata["summary"] = self.summary
        self.info.metadata["split_source"] = self.split_source
        line = ", ".join(f"{s}: {v['kept']} kept / {v['skipped']} skipped"
                         for s, v in per_split.items())
        if self.dropped:
            line += f"; {len(self.dropped)} duplicate row(s) dropped"
        if self.missing:
            line += f"; {len(self.missing)} clip(s) missing from the download"
        print(f"{self.name}: {line} ({elapsed:.0f} s, {self.workers} workers); "
              f"failures listed in {report}", flush=True)
        for row in self.dropped:
            print(f"  dropped {row['video']}: {row['reason']}", flush=True)
        self._report_padded(clips, seconds, os.path.dirname(report))
        self._work_dir = work
        kept = {split: [c for c in clips if c.split == split and c.key not in failures]
                for split in SPLITS}
        if not kept["train"]:
            raise DataPrepError(f"no training clip could be decoded; see {report}")
        empty = [s for s in SPLITS if not kept[s]]
        if empty:
            print(f"warning: {self.name} has no usable clips for {empty}; those splits are "
                  "left out", flush=True)
        return {s: self._generate_examples(v, work) for s, v in kept.items() if v}

    def _report_padded(self, clips: Sequence[Clip], seconds: Mapping[str, float],
                       folder: str) -> None:
        """Lists in `padded.jsonl`, and counts in one line, the kept clips with less than
        half of `clip_seconds` of audio: their audio is mostly repeats of itself."""
        length = getattr(self.audio, "clip_seconds", None)
        if not length:
            return
        short = [c for c in clips if seconds.get(c.key, length) < length / 2]
        path = os.path.join(folder, "padded.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for c in short:
                f.write(json.dumps({"key": c.key, "id": c.clip_id, "split": c.split,
                                    "audio": c.audio_path, "seconds": round(seconds[c.key], 3),
                                    "clip_seconds": length}) + "\n")
        self.summary["padded"] = len(short)
        if short:
            first = short[0]
            print(f"{self.name}: {len(short)} kept clip(s) have less than half of the "
                  f"{length:g} s of audio and are mostly repeats of it (e.g. "
                  f"{first.audio_path}: {seconds[first.key]:.2f} s); listed in {path}",
                  flush=True)

    def _generate_examples(self, clips: Sequence[Clip], work: str) -> Iterator[Tuple[str, Dict]]:
        for c in clips:
            path = os.path.join(work, c.key + ".npz")
            with np.load(path) as arrays:
                example = {"audio": arrays["audio"], "frames": arrays["frames"],
                           "label": c.label, "id": c.clip_id, **self.clip_features(c)}
            yield c.key, example
            if self.consume_work:  # the writer has stored it by the time we resume
                os.remove(path)

    def _download_and_prepare(self, dl_manager, download_config=None):
        # tfds's own writer passes every split through a shuffler that keeps 1 GB in
        # memory and spills the rest to temporary bucket files, which it reads back with
        # TensorFlow (not a dependency here) and sorts a bucket at a time in memory: a
        # split above 1 GB would fail, and fit in memory only whole. With shuffling off
        # none of that is needed: records go straight into their shards.
        with mock.patch.object(tfds_writer, "Writer", StreamingWriter):
            super()._download_and_prepare(dl_manager, download_config=download_config)
        if not self.keep_work and getattr(self, "_work_dir", None):
            shutil.rmtree(self._work_dir, ignore_errors=True)


def prepare(builder_cls, raw_dir: str, data_dir: str, overwrite: bool = False,
            **builder_kwargs) -> AVBuilder:
    """Converts `raw_dir` into `data_dir/<name>` unless it is already prepared with the
    same parameters; refuses to mix parameters with an existing dataset unless
    `overwrite`, which deletes it (and its work cache) and converts again."""
    raw_dir = os.path.expanduser(raw_dir)
    data_dir = os.path.expanduser(data_dir)
    if not os.path.isdir(raw_dir):
        raise DataPrepError(f"--raw_dir={raw_dir} is not a directory: point it at the "
                            f"unpacked download ({builder_cls.MANUAL_DOWNLOAD_INSTRUCTIONS})")
    builder = builder_cls(data_dir=data_dir, file_format="array_record", **builder_kwargs)
    # An interrupted tfds build leaves `incomplete.*` directories; they are never read.
    base = os.path.join(data_dir, builder.name)
    if os.path.isdir(base):
        for entry in os.listdir(base):
            if entry.startswith("incomplete."):
                shutil.rmtree(os.path.join(base, entry), ignore_errors=True)
    recorded = builder_cls._recorded_params(data_dir)
    if recorded is not None and overwrite:
        print(f"--overwrite: deleting {base} to convert it again", flush=True)
        shutil.rmtree(base)
        shutil.rmtree(f"{base}_work", ignore_errors=True)
        # A fresh builder: the first one read the old dataset's info from disk.
        builder = builder_cls(data_dir=data_dir, file_format="array_record", **builder_kwargs)
        recorded = None
    if recorded is not None:
        wanted = builder.preparation_metadata()
        diff = {k: (recorded.get(k), wanted[k]) for k in builder_cls.RECORDED_KEYS
                if recorded.get(k) != wanted[k]}
        if diff:
            lines = "; ".join(f"{k}: prepared {a} vs asked {b}" for k, (a, b) in diff.items())
            raise DataPrepError(
                f"{builder.data_dir} is already prepared with other parameters ({lines}). "
                f"Pass --overwrite to convert it again, or use {builder_cls.OTHER_TARGET}.")
        print(f"{builder.name} is already prepared in {builder.data_dir}", flush=True)
        return builder
    # Check the layout before tfds starts (it would only say the directory is empty).
    builder.list_clips(raw_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=raw_dir))
    return builder


def define_common_flags(raw_dir: bool = True) -> None:
    """absl flags shared by the converters' command lines."""
    from absl import flags

    if raw_dir:
        flags.DEFINE_string("raw_dir", None, "The unpacked raw download.")
    flags.DEFINE_string("data_dir", "~/avgmm_data", "tfds data directory to write into.")
    flags.DEFINE_integer("workers", 0, "Decoding processes (0: all cores).")
    flags.DEFINE_integer("num_frames", 3, "Frames stored per clip (evenly sampled).")
    flags.DEFINE_integer("frame_size", 224, "Stored frame height and width.")
    flags.DEFINE_bool("keep_work", False, "Keep the per-clip decode cache after the build.")
    flags.DEFINE_bool("overwrite", False, "Delete a dataset already prepared under this name "
                      "(other parameters or inputs) and convert again.")


def quiet_library_logs(flag_values) -> None:
    """tfds logs every file it writes at INFO; keep WARNING unless --verbosity was given."""
    from absl import logging

    if not flag_values["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def run_cli(builder_cls, flag_values, split_options: Optional[Mapping[str, Any]] = None,
            **builder_kwargs):
    """Shared body of the converters' command lines; a DataPrepError exits with its message.
    `builder_kwargs` go to the builder (e.g. the VGGSound converter's `csv_path`)."""
    quiet_library_logs(flag_values)
    try:
        builder = prepare(
            builder_cls, flag_values.raw_dir, flag_values.data_dir,
            frames=FrameParams(flag_values.num_frames, flag_values.frame_size),
            audio=builder_cls.DEFAULT_AUDIO, workers=flag_values.workers,
            keep_work=flag_values.keep_work, overwrite=flag_values.overwrite,
            split_options=split_options, **builder_kwargs)
    except DataPrepError as e:
        cli.fail(e)
    splits = {s: builder.info.splits[s].num_examples for s in builder.info.splits}
    print(f"{builder.name}: {splits} in {builder.data_dir}")
