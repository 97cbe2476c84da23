"""Precomputed features -> a prepared dataset: audio feature matrices and frames as arrays.

    python -m data_prep.arrays --dir=FOLDER --data_dir=~/avgmm_data [--name=arrays_av]
        [--layout=generic|multibench_avmnist] [--audio_axes=FT|TF]
        [--frame_range=LO,HI] [--frame_size=0] [--normalization=none|zscore]
        [--class_names=a,b,...] [--val_fraction=0.1] [--description=TEXT]

For benchmarks distributed as arrays, not media. One row of every array is one clip.

`--layout=generic` (default): in FOLDER, `.npy` files (or the same names as keys of one
`.npz` file in FOLDER):

    audio.npy    N x F x T   audio features (any float or int dtype); --audio_axes=TF
                             for N x T x F (frames first, as feature releases often are)
    frames.npy   N x H x W, N x H x W x C, N x T x H x W or N x T x H x W x C (C 1 or 3;
                             a 4-D array whose last axis is 1 or 3 is N x H x W x C)
    labels.npy   N           class indices (0..K-1) or class names (strings)
    ids.npy      N           optional: clip ids (strings or ints, unique)
    splits.npy   N           optional: train, validation (or val), test

or per split, `train_audio.npy`, `train_frames.npy`, `train_labels.npy`[, `train_ids.npy`]
and the same for `test_` (required) and `validation_` (optional; without it a seeded,
class-stratified `--val_fraction` of train is drawn). Without any split, a seeded
stratified 80 / 10 / 10 split is drawn, as `data_prep.folder` does.

`--layout=multibench_avmnist`: the AV-MNIST folder of MultiBench
(pliang279/MultiBench, `datasets/avmnist/get_data.py`): `image/train_data.npy`,
`image/test_data.npy` (N x 784 or N x 28 x 28 grey levels 0-255), `audio/train_data.npy`,
`audio/test_data.npy` (N x 112 x 112 spectrograms), `train_labels.npy`,
`test_labels.npy` (digits). As MultiBench's loader does, the images are read as 28 x 28
and the validation split is the last twelfth of train (its rows 55,000-60,000 of 60,000).
MultiBench's loader divides both modalities by 255 by default; here the images become
uint8 0-255 and are normalized on the device like every dataset's frames, and the audio
values are stored as given: the audio trunk starts with a bias-free convolution and a
batch norm, which a constant input scale does not change (or pass
`--normalization=zscore`).

Stored: `audio` = the feature matrix as float16 `[F, T]` (the "spectrogram"; with
`--normalization=zscore` standardized per clip first), `frames` = uint8
`[T, S, S, 3]`: grey levels replicated to RGB, values mapped from `--frame_range`
(the values that mean black and white) to 0-255, resized to `--frame_size` when given
(0: keep the arrays' size, which must then be square). uint8 frames (and MultiBench's
images) are 0-255; frames of any other dtype need `--frame_range` (0,1 and 0,255 look
alike to a program), and a value outside it is refused, naming the range seen. A clip with a
non-finite audio value is skipped and listed in `failures.jsonl`.

The dataset records what the arrays tell (`feature_shape`, `num_frames`, `frame_size`,
`normalization` applied here, `spectrogram_recipe: precomputed`, a sha1 of every input
file as `source`) and records as None what they cannot tell: `sample_rate`,
`clip_seconds`, `n_fft`, `hop_length`, `center`. A config for such data leaves those
`config.data.expect` fields unset (`configs/av_mnist_multibench.py`).
"""

import dataclasses
import json
import os
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags

from data_prep import convert, folder
from data_prep.features import NORMALIZATIONS

NAMES = ("audio", "frames", "labels", "ids", "splits")
REQUIRED = ("audio", "frames", "labels")
LAYOUTS = ("generic", "multibench_avmnist")
FEATURE_FORMAT = "arrays"
SPLIT_SEED = 0
# MultiBench's get_dataloader: train rows 0-55,000 train, 55,000-60,000 validation.
MULTIBENCH_VALIDATION = 5000 / 60000
MULTIBENCH_FILES = {("train", "frames"): "image/train_data.npy",
                    ("test", "frames"): "image/test_data.npy",
                    ("train", "audio"): "audio/train_data.npy",
                    ("test", "audio"): "audio/test_data.npy",
                    ("train", "labels"): "train_labels.npy",
                    ("test", "labels"): "test_labels.npy"}
MULTIBENCH_IMAGE = (28, 28)
FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclasses.dataclass(frozen=True)
class ArrayParams:
    """The audio side of an arrays dataset: a feature matrix per clip, as given."""

    feature_shape: Tuple[int, int]  # (F, T) as stored
    normalization: str = "none"
    description: str = ""  # what the features are, in the user's words

    def __post_init__(self):
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization={self.normalization!r}: use one of "
                             f"{NORMALIZATIONS}")

    @property
    def shape(self) -> Tuple[int, int]:
        return tuple(self.feature_shape)

    def as_metadata(self) -> Dict[str, Any]:
        """Recorded with the data; what arrays do not tell is None."""
        return {"feature_format": FEATURE_FORMAT, "spectrogram_recipe": "precomputed",
                "sample_rate": None, "clip_seconds": None, "n_fft": None,
                "hop_length": None, "center": None, "normalization": self.normalization,
                "feature_shape": list(self.feature_shape),
                "feature_description": self.description}

    @classmethod
    def from_metadata(cls, recorded: Dict[str, Any]) -> "ArrayParams":
        return cls(feature_shape=tuple(recorded["feature_shape"]),
                   normalization=recorded["normalization"],
                   description=recorded.get("feature_description", ""))


convert.AUDIO_FORMATS[FEATURE_FORMAT] = ArrayParams


@dataclasses.dataclass
class Group:
    """Arrays of one split (or of all clips, `split` None), rows aligned."""

    split: Optional[str]
    arrays: Dict[str, np.ndarray]
    paths: Dict[str, str]  # name -> file (`file.npz:key` for npz members)


def _load(path: str, key: Optional[str] = None) -> np.ndarray:
    try:
        if key is None:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        with np.load(path, allow_pickle=False) as z:
            return z[key]
    except (OSError, ValueError) as e:
        where = f"{path}:{key}" if key else path
        raise convert.DataPrepError(f"cannot read {where} as a numpy array ({e})") from e


def find_groups(root: str, layout: str) -> List[Group]:
    """The arrays of `root` by split, per `layout` (see the module docstring)."""
    if not os.path.isdir(root):
        raise convert.DataPrepError(f"--dir={root} is not a directory")
    if layout == "multibench_avmnist":
        groups = []
        for split in ("train", "test"):
            arrays, paths = {}, {}
            for name in ("audio", "frames", "labels"):
                path = os.path.join(root, MULTIBENCH_FILES[(split, name)])
                if not os.path.exists(path):
                    raise convert.DataPrepError(
                        f"expected MultiBench's AV-MNIST file {MULTIBENCH_FILES[(split, name)]}"
                        f" in {root} (image/, audio/, train_labels.npy, test_labels.npy)")
                arrays[name], paths[name] = _load(path), path
            frames = arrays["frames"]
            if frames.ndim == 2 and frames.shape[1] == np.prod(MULTIBENCH_IMAGE):
                arrays["frames"] = frames.reshape((-1,) + MULTIBENCH_IMAGE)
            groups.append(Group(split, arrays, paths))
        return groups
    if layout != "generic":
        raise convert.DataPrepError(f"--layout={layout!r}: use one of {LAYOUTS}")
    npzs = sorted(f for f in os.listdir(root) if f.endswith(".npz"))
    if len(npzs) > 1:
        raise convert.DataPrepError(f"{root} holds several .npz files {npzs}: keep one")
    members = {}
    if npzs:
        with np.load(os.path.join(root, npzs[0]), allow_pickle=False) as z:
            members = {k: os.path.join(root, npzs[0]) for k in z.files}

    def lookup(stem: str) -> Optional[Tuple[np.ndarray, str]]:
        path = os.path.join(root, stem + ".npy")
        if os.path.exists(path):
            if stem in members:
                raise convert.DataPrepError(f"{stem} is both {path} and a key of "
                                            f"{members[stem]}: keep one")
            return _load(path), path
        if stem in members:
            return _load(members[stem], stem), f"{members[stem]}:{stem}"
        return None

    per_split = {s for s in convert.SPLITS if lookup(f"{s}_audio") is not None}
    whole = lookup("audio") is not None
    if per_split and whole:
        raise convert.DataPrepError(f"{root} has both audio and <split>_audio arrays: give "
                                    "one set")
    if not per_split and not whole:
        raise convert.DataPrepError(
            f"{root} has no audio array: expected audio.npy, frames.npy, labels.npy "
            "(or train_audio.npy, ...), or those keys in one .npz")
    if per_split and not {"train", "test"} <= per_split:
        raise convert.DataPrepError(f"{root} has per-split arrays for {sorted(per_split)}; "
                                    "train and test are both needed")
    groups = []
    for split in (sorted(per_split, key=convert.SPLITS.index) if per_split else [None]):
        prefix = f"{split}_" if split else ""
        arrays, paths = {}, {}
        for name in NAMES:
            if split and name == "splits":
                continue
            found = lookup(prefix + name)
            if found is None:
                if name in REQUIRED:
                    raise convert.DataPrepError(f"{root} has {prefix}audio but no "
                                                f"{prefix}{name} (.npy or .npz key)")
                continue
            arrays[name], paths[name] = found
        groups.append(Group(split, arrays, paths))
    return groups


def frames_layout(shape: Sequence[int], where: str) -> Tuple[int, int, int, int]:
    """`(T, H, W, C)` of one clip's frames from the array's shape `(N, ...)`."""
    dims = tuple(shape[1:])
    if len(dims) == 2:
        return (1, dims[0], dims[1], 1)
    if len(dims) == 3:
        return (1,) + dims if dims[2] in (1, 3) else dims + (1,)
    if len(dims) == 4 and dims[3] in (1, 3):
        return dims
    raise convert.DataPrepError(
        f"{where} has shape {tuple(shape)}: frames must be N x H x W[x C] or "
        "N x T x H x W[x C] with C 1 or 3")


def check_groups(groups: Sequence[Group], audio_axes: str) -> Tuple[Tuple[int, int],
                                                                    Tuple[int, int, int, int]]:
    """Checks row counts and shapes; returns the audio `(F, T)` and frames `(T, H, W, C)`."""
    audio_shape = frame_shape = None
    for g in groups:
        a, f = g.arrays["audio"], g.arrays["frames"]
        if a.ndim != 3:
            raise convert.DataPrepError(f"{g.paths['audio']} has shape {a.shape}: audio "
                                        "features must be N x F x T (or N x T x F with "
                                        "--audio_axes=TF)")
        shape = tuple(a.shape[1:]) if audio_axes == "FT" else tuple(a.shape[:0:-1])
        fshape = frames_layout(f.shape, g.paths["frames"])
        for name, arr in g.arrays.items():
            if arr.shape[0] != a.shape[0]:
                raise convert.DataPrepError(
                    f"{g.paths[name]} has {arr.shape[0]} rows but {g.paths['audio']} has "
                    f"{a.shape[0]}: every array needs one row per clip")
            if name in ("labels", "ids", "splits") and arr.ndim != 1:
                raise convert.DataPrepError(f"{g.paths[name]} has shape {arr.shape}: "
                                            f"{name} must be one value per clip")
        if audio_shape not in (None, shape) or frame_shape not in (None, fshape):
            raise convert.DataPrepError(
                f"the {g.split} arrays' shapes ({shape}, {fshape}) differ from the others' "
                f"({audio_shape}, {frame_shape})")
        audio_shape, frame_shape = shape, fshape
    return audio_shape, frame_shape


def class_names(groups: Sequence[Group], given: Optional[Sequence[str]]) -> List[str]:
    """Names of the classes: the given ones (indexed by integer labels), or the sorted
    string labels, or `0..max` for integer labels."""
    labels = [np.asarray(g.arrays["labels"]) for g in groups]
    if all(lab.dtype.kind in "iu" for lab in labels):
        top = max(int(lab.max()) for lab in labels if len(lab))
        low = min(int(lab.min()) for lab in labels if len(lab))
        if low < 0:
            raise convert.DataPrepError(f"labels must be class indices >= 0, found {low}")
        if given:
            if top >= len(given):
                raise convert.DataPrepError(f"--class_names names {len(given)} classes but "
                                            f"the labels go up to {top}")
            return list(given)
        return [str(i) for i in range(top + 1)]
    if any(lab.dtype.kind == "f" for lab in labels):
        for lab in labels:
            if lab.dtype.kind == "f" and not np.all(lab == np.round(lab)):
                raise convert.DataPrepError("labels are fractional: give class indices or "
                                            "names")
        for g in groups:
            g.arrays["labels"] = np.asarray(g.arrays["labels"]).astype(np.int64)
        return class_names(groups, given)
    if given:
        raise convert.DataPrepError("--class_names is for integer labels; these labels are "
                                    "names already")
    return sorted({str(x) for lab in labels for x in lab.tolist()})


def label_names(group: Group, names: Sequence[str]) -> List[str]:
    labels = np.asarray(group.arrays["labels"])
    if labels.dtype.kind in "iu":
        return [names[int(i)] for i in labels]
    return [str(x) for x in labels.tolist()]


def to_uint8_frames(frames: np.ndarray, layout: Tuple[int, int, int, int],
                    value_range: Tuple[float, float], size: int) -> np.ndarray:
    """One clip's frames as uint8 `[T, S, S, 3]`: `value_range` mapped to 0-255, grey
    replicated, resized to `size` (0: as stored)."""
    import cv2

    t, h, w, c = layout
    x = np.asarray(frames, np.float32).reshape(t, h, w, c)
    lo, hi = value_range
    x = np.rint((x - lo) * (255.0 / (hi - lo)))
    x = np.clip(x, 0, 255).astype(np.uint8)  # in range by resolve_frame_range
    if c == 1:
        x = np.repeat(x, 3, axis=-1)
    if size and (h, w) != (size, size):
        x = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA)
                      for im in x])
    return x


def resolve_frame_range(groups: Sequence[Group], given: Optional[Tuple[float, float]],
                        layout: str) -> Tuple[float, float]:
    """The frame values meaning black and white: `given`, or 0-255 for uint8 frames and
    MultiBench's images; refuses frames with values outside it, naming the range seen."""
    kinds = {str(g.arrays["frames"].dtype) for g in groups}
    if given is None:
        if kinds != {"uint8"} and layout != "multibench_avmnist":
            lo, hi = frame_span(groups)
            raise convert.DataPrepError(
                f"the frames are {'/'.join(sorted(kinds))} with values in [{lo:g}, {hi:g}]: "
                "pass --frame_range=black,white (e.g. 0,1 or 0,255)")
        given = (0.0, 255.0)
    lo, hi = given
    seen_lo, seen_hi = frame_span(groups)
    if seen_lo < lo or seen_hi > hi:
        raise convert.DataPrepError(
            f"frame values span [{seen_lo:g}, {seen_hi:g}], outside --frame_range={lo:g},"
            f"{hi:g}: pass the range that means black to white")
    return float(lo), float(hi)


def frame_span(groups: Sequence[Group]) -> Tuple[float, float]:
    """Smallest and largest frame value; refuses non-finite ones."""
    seen_lo, seen_hi = np.inf, -np.inf
    for g in groups:
        f = g.arrays["frames"]
        for start in range(0, f.shape[0], 1024):
            block = np.asarray(f[start:start + 1024])
            if not np.all(np.isfinite(block)):
                raise convert.DataPrepError(f"{g.paths['frames']} has NaN or inf values")
            seen_lo, seen_hi = min(seen_lo, float(block.min())), max(seen_hi, float(block.max()))
    return seen_lo, seen_hi


def source_fingerprint(groups: Sequence[Group]) -> Dict[str, str]:
    """sha1 of every input file, by its name relative to the folder's parent."""
    files = sorted({p.split(":")[0] for g in groups for p in g.paths.values()})
    return {os.path.basename(os.path.dirname(p)) + "/" + os.path.basename(p):
            folder.file_digest(p) for p in files}


class ArraysAv(convert.AVBuilder):
    """Audio features and frames given as arrays, prepared for avgmm."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass the folder of arrays as --dir."
    DEFAULT_AUDIO = None  # always given: the shapes come from the arrays
    RECORDED_KEYS = convert.AVBuilder.RECORDED_KEYS + ("source",)
    OTHER_TARGET = "a new --name"

    def __init__(self, *, source: Optional[Dict[str, str]] = None,
                 names: Optional[Sequence[str]] = None, **kwargs):
        self._source = source
        # From the labels when preparing; a prepared dataset records its own.
        self._given_names = list(names or [])
        if source is None:  # opening the prepared dataset
            self._source = (self._recorded_params(kwargs.get("data_dir")) or {}).get("source")
        super().__init__(**kwargs)

    def preparation_metadata(self) -> Dict[str, Any]:
        return {**super().preparation_metadata(), "source": self._source}

    def class_names(self) -> List[str]:
        if self._given_names:
            return self._given_names
        raise convert.DataPrepError(f"{self.name}: not prepared yet and no --dir given")

    def list_clips(self, manual_dir: str) -> List[Group]:
        """The checked groups of arrays (no clip files here)."""
        o = self.split_options
        groups = find_groups(manual_dir, o["layout"])
        check_groups(groups, o["audio_axes"])
        resolve_frame_range(groups, tuple(o["frame_range"]), o["layout"])
        return groups

    def _splits(self, groups: Sequence[Group]) -> Dict[Tuple[Optional[str], int], str]:
        """`{(group split, row): split}` for every row; sets `split_source`."""
        o = self.split_options
        names = self._names()
        out = {}
        if groups[0].split is None:  # one set of arrays
            g = groups[0]
            if "splits" in g.arrays:
                given = [str(s) for s in np.asarray(g.arrays["splits"]).tolist()]
                bad = sorted({s for s in given if s not in folder.SPLIT_ALIASES})
                if bad:
                    raise convert.DataPrepError(f"{g.paths['splits']} has split names {bad}; "
                                                f"use {sorted(folder.SPLIT_ALIASES)}")
                splits = [folder.SPLIT_ALIASES[s] for s in given]
                self.split_source = ("given in the arrays: "
                                     + convert.files_sha1([g.paths["splits"].split(":")[0]]))
            else:
                splits = convert.stratified_split(label_names(g, names), o["val_fraction"],
                                                  o["val_fraction"], SPLIT_SEED)
                self.split_source = convert.seeded_split_source(SPLIT_SEED)
            return {(None, i): s for i, s in enumerate(splits)}
        present = {g.split for g in groups}
        files = sorted({g.paths["labels"].split(":")[0] for g in groups})
        for g in groups:
            n = len(g.arrays["labels"])
            if g.split != "train" or "validation" in present:
                out.update({(g.split, i): g.split for i in range(n)})
            elif o["layout"] == "multibench_avmnist":
                first_val = n - int(round(n * MULTIBENCH_VALIDATION))
                out.update({("train", i): "train" if i < first_val else "validation"
                            for i in range(n)})
            else:
                drawn = convert.stratified_split(label_names(g, names), o["val_fraction"],
                                                 0.0, SPLIT_SEED)
                out.update({("train", i): s for i, s in enumerate(drawn)})
        if "validation" in present:
            self.split_source = "standard: " + convert.files_sha1(files)
        elif o["layout"] == "multibench_avmnist":
            self.split_source = ("standard: " + convert.files_sha1(files)
                                 + "; validation the last twelfth of train (MultiBench)")
        else:
            self.split_source = convert.standard_split_source(files, o["val_fraction"],
                                                              SPLIT_SEED)
        return out

    def _split_generators(self, dl_manager):
        o = self.split_options
        start = time.time()
        groups = self.list_clips(os.path.expanduser(str(dl_manager.manual_dir)))
        split_of = self._splits(groups)
        names = self._names()
        rows: Dict[str, List[Tuple[Group, int, str, str]]] = {s: [] for s in convert.SPLITS}
        seen: Dict[str, str] = {}
        for g in groups:
            labels = label_names(g, names)
            ids = ([str(x) for x in np.asarray(g.arrays["ids"]).tolist()] if "ids" in g.arrays
                   else [f"{g.split or 'clip'}_{i:06d}" for i in range(len(labels))])
            for i, (label, clip_id) in enumerate(zip(labels, ids)):
                if clip_id in seen:
                    raise convert.DataPrepError(f"clip id {clip_id!r} occurs twice "
                                                f"({seen[clip_id]} and {g.paths.get('ids')})")
                seen[clip_id] = g.paths.get("ids", "")
                rows[split_of[(g.split, i)]].append((g, i, label, clip_id))
        failures = []
        kept = {s: [] for s in convert.SPLITS}
        for split, items in rows.items():
            for g, i, label, clip_id in items:
                reason = self._audio_problem(g, i)
                if reason:
                    failures.append({"id": clip_id, "split": split, "row": i,
                                     "file": g.paths["audio"], "reason": reason})
                else:
                    kept[split].append((g, i, label, clip_id))
        report = os.path.join(os.path.expanduser(str(self._data_dir_root)), self.name,
                              "failures.jsonl")
        os.makedirs(os.path.dirname(report), exist_ok=True)
        with open(report, "w", encoding="utf-8") as f:
            for row in failures:
                f.write(json.dumps(row) + "\n")
        per_split = {s: {"kept": len(kept[s]),
                         "skipped": sum(r["split"] == s for r in failures)}
                     for s in convert.SPLITS}
        self.summary.update(per_split=per_split, seconds=round(time.time() - start, 1))
        self.info.metadata["summary"] = self.summary
        self.info.metadata["split_source"] = self.split_source
        line = ", ".join(f"{s}: {v['kept']} kept / {v['skipped']} skipped"
                         for s, v in per_split.items())
        print(f"{self.name}: {line}; failures listed in {report}", flush=True)
        if not kept["train"]:
            raise convert.DataPrepError(f"no training clip is usable; see {report}")
        return {s: self._generate_examples(v) for s, v in kept.items() if v}

    def _audio_problem(self, g: Group, i: int) -> Optional[str]:
        x = np.asarray(g.arrays["audio"][i], np.float32)
        if not np.all(np.isfinite(x)):
            return "audio features have NaN or inf values"
        if self.audio.normalization == "none" and np.max(np.abs(x)) > FLOAT16_MAX:
            return (f"audio features up to {np.max(np.abs(x)):.4g} do not fit float16 "
                    "storage: prepare with --normalization=zscore")
        return None

    def _generate_examples(self, items) -> Iterator[Tuple[str, Dict[str, Any]]]:
        o = self.split_options
        layout = frames_layout(items[0][0].arrays["frames"].shape, "frames")
        for g, i, label, clip_id in items:
            spec = np.asarray(g.arrays["audio"][i], np.float32)
            if o["audio_axes"] == "TF":
                spec = spec.T
            if self.audio.normalization == "zscore":
                spec = (spec - spec.mean()) / (spec.std() + 1e-9)
            frames = to_uint8_frames(g.arrays["frames"][i], layout, tuple(o["frame_range"]),
                                     self.frames.frame_size)
            yield clip_id, {"audio": spec.astype(np.float16), "frames": frames,
                            "label": label, "id": clip_id}


def prepare_arrays(root: str, data_dir: str, name: str = "arrays_av",
                   layout: str = "generic", audio_axes: str = "FT",
                   frame_range: Optional[Tuple[float, float]] = None, frame_size: int = 0,
                   normalization: str = "none", class_names_given: Sequence[str] = (),
                   val_fraction: float = 0.1, description: str = "",
                   overwrite: bool = False) -> ArraysAv:
    """Converts the arrays in `root` into `data_dir/<name>` (see the module docstring)."""
    root = os.path.abspath(os.path.expanduser(root))
    if audio_axes not in ("FT", "TF"):
        raise convert.DataPrepError(f"--audio_axes={audio_axes!r}: use FT or TF")
    if frame_range is not None:
        lo, hi = map(float, frame_range)
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise convert.DataPrepError(f"--frame_range={lo:g},{hi:g}: give black,white "
                                        "with black < white")
    if not 0 < val_fraction < 1:
        raise convert.DataPrepError(f"--val_fraction={val_fraction}: use a value in (0, 1)")
    groups = find_groups(root, layout)
    (f, t), (tv, h, w, _) = check_groups(groups, audio_axes)
    lo, hi = resolve_frame_range(groups, frame_range, layout)
    if not frame_size and h != w:
        raise convert.DataPrepError(f"the frames are {h} x {w}: pass --frame_size=S to "
                                    "store them resized to S x S")
    options = {"layout": layout, "audio_axes": audio_axes, "frame_range": [lo, hi],
               "val_fraction": val_fraction}
    cls = builder_class(name)
    names = class_names(groups, class_names_given or None)
    return convert.prepare(
        cls, root, data_dir, overwrite=overwrite,
        audio=ArrayParams((f, t), normalization, description),
        frames=convert.FrameParams(tv, frame_size or h), split_options=options,
        source=source_fingerprint(groups), workers=1, names=names)


_CLASSES: Dict[str, type] = {}


def builder_class(name: str) -> type:
    """`ArraysAv` registered under the tfds name `name`, once per process."""
    if name not in _CLASSES:
        _CLASSES[name] = folder.builder_class(name, ArraysAv)
    return _CLASSES[name]


FLAGS = flags.FLAGS


def main(argv):
    del argv
    convert.quiet_library_logs(FLAGS)
    value_range = None
    if FLAGS.frame_range:
        try:
            value_range = tuple(float(x) for x in FLAGS.frame_range.split(","))
            if len(value_range) != 2:
                raise ValueError
        except ValueError:
            sys.exit(f"error: --frame_range={FLAGS.frame_range!r}: give black,white, e.g. "
                     "0,255")
    try:
        builder = prepare_arrays(
            FLAGS.dir, FLAGS.data_dir, name=FLAGS.name, layout=FLAGS.layout,
            audio_axes=FLAGS.audio_axes, frame_range=value_range,
            frame_size=FLAGS.frame_size, normalization=FLAGS.normalization,
            class_names_given=[c for c in FLAGS.class_names.split(",") if c],
            val_fraction=FLAGS.val_fraction, description=FLAGS.description,
            overwrite=FLAGS.overwrite)
    except (convert.DataPrepError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(f"{builder.name}: {dict((s, v.num_examples) for s, v in builder.info.splits.items())}"
          f" in {builder.data_dir}")


if __name__ == "__main__":
    flags.DEFINE_string("dir", None, "Folder of the arrays (see the layout above).")
    flags.DEFINE_string("data_dir", "~/avgmm_data", "tfds data directory to write into.")
    flags.DEFINE_string("name", "arrays_av", "tfds name of the new dataset (snake_case).")
    flags.DEFINE_enum("layout", "generic", list(LAYOUTS), "Which files hold the arrays.")
    flags.DEFINE_enum("audio_axes", "FT", ["FT", "TF"],
                      "Axes of each clip's audio features: F x T, or T x F (transposed).")
    flags.DEFINE_string("frame_range", "", "Frame values that mean black,white (needed "
                        "unless the frames are uint8 or MultiBench's), e.g. 0,1.")
    flags.DEFINE_integer("frame_size", 0, "Store frames resized to S x S (0: as given).")
    flags.DEFINE_enum("normalization", "none", list(NORMALIZATIONS),
                      "Per-clip standardization of the audio features.")
    flags.DEFINE_string("class_names", "", "Names of integer labels 0, 1, ... (comma list).")
    flags.DEFINE_float("val_fraction", 0.1, "Validation share drawn from train when the "
                       "arrays give no validation split.")
    flags.DEFINE_string("description", "", "What the audio features are (recorded).")
    flags.DEFINE_bool("overwrite", False, "Delete a dataset already prepared under this name "
                      "and convert again.")
    flags.mark_flag_as_required("dir")
    app.run(main)
