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
    labels.npy   N           class indices (0..K-1) or class names (strings); at least
                             2 classes. Whole-number floats (1.0) are read as indices,
                             with a notice; indices that are not 0..K-1 ({0, 5}) are
                             mapped to 0..K-1 in sorted order, the classes named by
                             their values, with a notice naming the mapping
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
import os
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds
from absl import flags

from data_prep import cli, convert, folder, registry
from data_prep.array_files import (LAYOUTS, MULTIBENCH_VALIDATION, Group, check_groups,
                                   check_labels, find_groups, frames_layout, label_names,
                                   resolve_frame_range, source_fingerprint,
                                   to_uint8_frames)
from data_prep.features import NORMALIZATIONS

FEATURE_FORMAT = "arrays"
SPLIT_SEED = 0
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

# `--name` names the dataset (`arrays_av` by default); MultiBench's AV-MNIST has its own.
DATASETS = (
    registry.DatasetEntry(tfds_name="arrays_av", prepare_name="arrays",
                          display_name="your arrays (npy/npz)",
                          inputs="--dir=<folder of arrays>"),
    registry.DatasetEntry(tfds_name="av_mnist_multibench", prepare_name="av_mnist_multibench",
                          display_name="AV-MNIST (MultiBench arrays)",
                          args=("--layout=multibench_avmnist", "--name=av_mnist_multibench"),
                          inputs="--dir=<MultiBench avmnist folder>",
                          config="av_mnist_multibench.py"),
)

class ArraysAv(convert.AVBuilder):
    """Audio features and frames given as arrays, prepared for avgmm."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass the folder of arrays as --dir."
    DEFAULT_AUDIO = None  # always given: the shapes come from the arrays
    RECORDED_KEYS = convert.AVBuilder.RECORDED_KEYS + ("source",)
    OTHER_TARGET = "a new --name"

    def __init__(self, *, source: Optional[Dict[str, str]] = None,
                 names: Optional[Sequence[str]] = None,
                 class_names_given: Sequence[str] = (), **kwargs):
        self._source = source
        # --class_names: the labels index them as given (no mapping; see check_labels).
        self._class_names_given = list(class_names_given)
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
        # Reread arrays: their labels become class indices again, as prepare_arrays saw
        # them (its notices were printed there).
        check_labels(groups, self._class_names_given or None)
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
        report = convert.write_jsonl_report(self, "failures.jsonl", failures)
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
    names, notices = check_labels(groups, class_names_given or None)
    for line in notices:
        print(f"notice: {line}", flush=True)
    return convert.prepare(
        cls, root, data_dir, overwrite=overwrite,
        audio=ArrayParams((f, t), normalization, description),
        frames=convert.FrameParams(tv, frame_size or h), split_options=options,
        source=source_fingerprint(groups), workers=1, names=names,
        class_names_given=list(class_names_given))


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
            cli.fail(f"--frame_range={FLAGS.frame_range!r}: give black,white, e.g. "
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
        cli.fail(e)
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
    cli.run(main)
