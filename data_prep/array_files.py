"""Reading a folder of feature arrays for `data_prep.arrays`: where each array is (the
generic and the MultiBench AV-MNIST layouts), their shapes, labels and frame values.

Arrays are opened as memory maps where they can be (`.npy`), so a 3 GB release is not
read into memory to be checked.
"""

import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from data_prep import convert, folder

NAMES = ("audio", "frames", "labels", "ids", "splits")
REQUIRED = ("audio", "frames", "labels")
LAYOUTS = ("generic", "multibench_avmnist")
# MultiBench's get_dataloader: train rows 0-55,000 train, 55,000-60,000 validation.
MULTIBENCH_VALIDATION = 5000 / 60000
MULTIBENCH_FILES = {("train", "frames"): "image/train_data.npy",
                    ("test", "frames"): "image/test_data.npy",
                    ("train", "audio"): "audio/train_data.npy",
                    ("test", "audio"): "audio/test_data.npy",
                    ("train", "labels"): "train_labels.npy",
                    ("test", "labels"): "test_labels.npy"}
MULTIBENCH_IMAGE = (28, 28)


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
    check_dtypes(groups)
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


# What each array may hold (numpy dtype kinds): real numbers for the features, class
# indices (whole numbers, possibly stored as floats) or names for the labels. Complex
# features would lose their imaginary part in the float16 cast without a word.
DTYPE_KINDS = {"audio": ("iuf", "real numbers"),
               "frames": ("iufb", "real numbers (grey or RGB levels)"),
               "labels": ("iufbUS", "class indices 0..K-1 or class names")}
COMPLEX_HINT = " (of a complex spectrogram, store np.abs(x) or its power |x|**2)"
# Float labels are exact whole numbers only up to 2**53; larger ones cannot be told apart.
MAX_LABEL = 2 ** 53
NOTICE_CLASSES = 10  # classes listed in the notice of a mapping


def check_dtypes(groups: Sequence[Group]) -> None:
    """Refuses an array whose values cannot mean what it holds (complex or string audio,
    complex labels), naming the file, before any value is converted."""
    for g in groups:
        for name, (kinds, what) in DTYPE_KINDS.items():
            arr = g.arrays[name]
            if arr.dtype.kind not in kinds:
                hint = COMPLEX_HINT if arr.dtype.kind == "c" else ""
                raise convert.DataPrepError(f"{g.paths[name]} holds {arr.dtype} values: "
                                            f"{name} must be {what}{hint}")


def _first(bad: np.ndarray) -> int:
    return int(np.argmax(bad))


def _indices(g: Group) -> np.ndarray:
    """The numeric labels of `g` as int64 class indices, refused (naming the file, the
    row and the value) when fractional, not finite, negative or too large to be one."""
    lab, where = np.asarray(g.arrays["labels"]), g.paths["labels"]
    if not len(lab):
        return lab.astype(np.int64)
    if lab.dtype.kind == "f":
        bad = ~np.isfinite(lab)
        bad[~bad] = lab[~bad] != np.round(lab[~bad])
        if bad.any():
            row = _first(bad)
            raise convert.DataPrepError(
                f"{where} row {row} has the label {lab[row].item()!r}: labels must be "
                "whole class indices (0, 1, ...) or class names")
    for bad, why in ((lab < 0, "class indices are >= 0"),
                     (lab > MAX_LABEL, "too large to be a class index (> 2**53)")):
        if bad.any():
            row = _first(bad)
            raise convert.DataPrepError(f"{where} row {row} has the label "
                                        f"{lab[row].item()!r}: {why}; give indices "
                                        "0..K-1 or class names")
    return lab.astype(np.int64)


def check_labels(groups: Sequence[Group], given: Optional[Sequence[str]]
                 ) -> Tuple[List[str], List[str]]:
    """Checks the labels of every group and returns the class names and the notices to
    print (one line each).

    Numeric labels become int64 class indices in `groups` (whole-number floats such as
    1.0 with a notice; fractional, negative or non-finite ones refused). With
    `--class_names` (`given`) they index those names. Without, labels that are not
    0..K-1 (e.g. {0, 5}, or 10**12) are mapped to 0..K-1 in sorted order, the classes
    named by their values, with a notice naming the mapping: nothing is allocated per
    integer up to the largest label. String labels are the names. At least 2 distinct
    classes are needed. Every refusal names the file (and the row and value)."""
    files = ", ".join(sorted({g.paths["labels"] for g in groups}))
    kinds = {np.asarray(g.arrays["labels"]).dtype.kind for g in groups}
    notices = []
    if kinds <= set("iuf"):
        indices = [_indices(g) for g in groups]
        values = np.unique(np.concatenate(indices))
        if "f" in kinds:
            notices.append(f"{files}: whole-number float labels (e.g. 1.0) are read as the "
                           "class indices they spell")
        if given:
            for g, idx in zip(groups, indices):
                if len(idx) and idx.max() >= len(given):
                    row = _first(idx >= len(given))
                    raise convert.DataPrepError(
                        f"--class_names names {len(given)} classes but {g.paths['labels']} "
                        f"row {row} has the label {idx[row]}: name every class 0..{idx[row]}")
            names = list(given)
        elif np.array_equal(values, np.arange(len(values))):
            names = [str(int(v)) for v in values]
        else:
            shown = ", ".join(f"{int(v)} -> {i}" for i, v in enumerate(values[:NOTICE_CLASSES]))
            more = f", ... ({len(values)} classes)" if len(values) > NOTICE_CLASSES else ""
            notices.append(f"{files}: the labels are not 0..K-1; mapped to class indices in "
                           f"sorted order, named by their values: {shown}{more}")
            indices = [np.searchsorted(values, idx) for idx in indices]
            names = [str(int(v)) for v in values]
        for g, idx in zip(groups, indices):
            g.arrays["labels"] = idx
        present = [str(int(v)) for v in values[:2]]
    elif kinds <= set("USb"):
        if given:
            raise convert.DataPrepError("--class_names is for integer labels; these labels "
                                        "are names already")
        names = sorted({str(x) for g in groups for x in np.asarray(g.arrays["labels"]).tolist()})
        present = names[:2]
    else:
        raise convert.DataPrepError(f"{files}: the labels are numbers in one file and names "
                                    "in another; give one kind")
    if len(present) < 2:
        found = f"every label is {present[0]!r}" if present else "no label"
        raise convert.DataPrepError(f"{files}: {found}; a classifier needs labels of at "
                                    "least 2 classes")
    return names, notices


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
