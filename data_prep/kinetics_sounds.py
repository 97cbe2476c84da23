"""Kinetics-Sounds: Kinetics-400 clips of 31 classes -> the prepared dataset `kinetics_sounds_av`.

    python -m data_prep.kinetics_sounds --raw_dir=~/kinetics400 --data_dir=~/avgmm_data \
        [--annotations_dir=DIR] [--classes_file=FILE] [--workers=N] [--num_frames=3]

Input, the usual Kinetics downloader layout:

- clips `<split>/<class name>/<youtube_id>_<start:06d>_<end:06d>.mp4` under `--raw_dir`
  (looked up by file name anywhere under it, so `train/`, `val/`, class folders with
  spaces or underscores, and unpadded `<id>_<start>_<end>.mp4` names all work);
- the Kinetics annotation CSVs (`label,youtube_id,time_start,time_end,split`, with a
  header), every `*.csv` in `--annotations_dir` (default `<raw_dir>/annotations`).

Classes: the 31 of `CLASSES`, or one per line from `--classes_file`. Papers disagree on
Kinetics-Sounds: the original definition (Arandjelovic & Zisserman, "Look, Listen and
Learn", ICCV 2017, appendix A1) has 34 classes; reference code uses 31 (OGM-GE:
github.com/GeWu-Lab/OGM-GE_CVPR2022, main.py `n_classes = 31` and the labels 0-30 of
data/KineticSound/my_train.txt, which ship no names), 32 (CrissCross,
github.com/pritamqu/CrissCross issue #4, which adds "strumming guitar") or 33. `CLASSES`
is the 34 mapped to their Kinetics-400 names (blowing out -> blowing out candles,
dribbling ball -> dribbling basketball, mowing the lawn by pushing lawnmower -> mowing
lawn, stomping -> stomping grapes) less the three with no Kinetics-400 class
(fingerpicking, patting, typing): the 31 names of the OGM-GE-style loaders we found.

Splits: Kinetics `train` rows are the training split, of which a seeded 10% per class
(seed 0, drawn over the annotations, not over what was downloaded) is validation;
Kinetics `val`/`validate` rows are the test split (the reference code evaluates on
Kinetics' validation videos: Kinetics-400's own test labels came out later). Kinetics
`test` rows are not used; the summary counts them.

Missing videos (many Kinetics clips are gone from YouTube) are listed in
`failures.jsonl` with the reason `missing` and counted per split, never fatal.

Audio (the OGM-GE pre-processing/get_ks.py recipe, the same as AVE's): 16 kHz mono tiled
to 10 s, scipy power spectral density (nperseg 512, noverlap 353), log, per-sample
z-score -> 257 x 1004. Frames are sampled evenly over the clip.
"""

import csv
import glob
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import tensorflow_datasets as tfds
from absl import flags

from data_prep import ave, cli, convert, registry
from data_prep.youtube_clips import MediaIndex, clip_names

CLASSES = (
    "blowing nose", "blowing out candles", "bowling", "chopping wood",
    "dribbling basketball", "laughing", "mowing lawn", "playing accordion",
    "playing bagpipes", "playing bass guitar", "playing clarinet", "playing drums",
    "playing guitar", "playing harmonica", "playing keyboard", "playing organ",
    "playing piano", "playing saxophone", "playing trombone", "playing trumpet",
    "playing violin", "playing xylophone", "ripping paper", "shoveling snow",
    "shuffling cards", "singing", "stomping grapes", "tap dancing", "tapping guitar",
    "tapping pen", "tickling")
# Kinetics split names -> ours (Kinetics `test` is not used, see above).
SPLIT_MAP = {"train": "train", "val": "test", "validate": "test", "validation": "test"}
VALIDATION_FRACTION = 0.1
SPLIT_SEED = 0
# The AVE recipe (16 kHz tiled to 10 s, scipy PSD 512 / noverlap 353, log, z-score ->
# 257 x 1004), as the OGM-GE reference code's pre-processing/get_ks.py computes it (its
# assert: shape (257, 1004)).
AUDIO = ave.AUDIO
DATASET = registry.DatasetEntry(
    tfds_name="kinetics_sounds_av", prepare_name="ks", display_name="Kinetics-Sounds",
    inputs="--raw_dir=<Kinetics-400 download with annotations/>", audio=AUDIO,
    config="ks.py")
HEADER = ("label", "youtube_id", "time_start", "time_end", "split")
Row = Tuple[str, str, int, int, str]  # label, youtube_id, start, end, kinetics split


def normalize(label: str) -> str:
    """Kinetics class names as written in the CSVs: spaces, not underscores; no quotes."""
    return " ".join(label.strip().strip('"').replace("_", " ").split())


def read_classes(path: str) -> List[str]:
    """One class name per line (blank lines and `#` comments skipped)."""
    if not os.path.exists(path):
        raise convert.DataPrepError(f"--classes_file={path} does not exist")
    with open(path, encoding="utf-8-sig") as f:
        names = [normalize(x) for x in f if x.strip() and not x.lstrip().startswith("#")]
    if len(set(names)) != len(names) or not names:
        raise convert.DataPrepError(f"{path} must list distinct class names, one per line")
    return names


def read_annotations(paths: Sequence[str]) -> List[Row]:
    """Rows of Kinetics annotation CSVs (`label,youtube_id,time_start,time_end,split`)."""
    rows = []
    for path in paths:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            missing = [h for h in HEADER if h not in header]
            if missing:
                raise convert.DataPrepError(
                    f"{path}: expected a header with {','.join(HEADER)}, got "
                    f"{','.join(header) or 'nothing'}")
            col = {h: header.index(h) for h in HEADER}
            for lineno, row in enumerate(reader, 2):
                if not row or not any(x.strip() for x in row):
                    continue
                try:
                    rows.append((normalize(row[col["label"]]), row[col["youtube_id"]].strip(),
                                 int(float(row[col["time_start"]])),
                                 int(float(row[col["time_end"]])),
                                 row[col["split"]].strip()))
                except (IndexError, ValueError):
                    raise convert.DataPrepError(f"{path}:{lineno}: cannot read {row!r}") from None
    return rows


class KineticsSoundsAv(convert.AVBuilder):
    """Kinetics-Sounds audio-visual action classification (31 classes), prepared for avgmm."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download Kinetics-400 (e.g. https://github.com/cvdfoundation/kinetics-dataset) in "
        "the layout <split>/<class>/<youtube_id>_<start:06d>_<end:06d>.mp4 and pass its "
        "root as --raw_dir, with the annotation CSVs in <raw_dir>/annotations.")
    DEFAULT_AUDIO = AUDIO
    # Another class list is another dataset: refuse to mix them under one name.
    RECORDED_KEYS = convert.AVBuilder.RECORDED_KEYS + ("class_names",)

    def __init__(self, *, annotations_dir: Optional[str] = None,
                 classes: Optional[Sequence[str]] = None, **kwargs):
        self.annotations_dir = annotations_dir
        self.classes = tuple(classes) if classes is not None else CLASSES
        self._index: Optional[MediaIndex] = None
        super().__init__(**kwargs)

    def class_names(self) -> List[str]:
        return sorted(self.classes)

    def list_clips(self, manual_dir: str) -> List[convert.Clip]:
        ann_dir = self.annotations_dir or os.path.join(manual_dir, "annotations")
        paths = sorted(glob.glob(os.path.join(ann_dir, "*.csv")))
        if not paths:
            raise convert.DataPrepError(
                f"no annotation CSV in {ann_dir}: put Kinetics' train.csv / validate.csv "
                "there or pass --annotations_dir")
        if self._index is None or self._index.root != manual_dir:
            self._index = MediaIndex(manual_dir)
        wanted = set(self.class_names())
        rows = [r for r in read_annotations(paths) if r[0] in wanted]
        unused = sum(r[4] not in SPLIT_MAP for r in rows)
        rows = [r for r in rows if r[4] in SPLIT_MAP]
        absent = sorted(wanted - {r[0] for r in rows})
        if absent:
            raise convert.DataPrepError(
                f"the annotations in {ann_dir} have no clip of {len(absent)} class(es), e.g. "
                f"{absent[:3]}; check the names (or --classes_file)")
        first: Dict[Tuple[str, int, int], int] = {}
        kept, self.dropped, self.missing = [], [], []
        for n, (label, vid, start, end, ksplit) in enumerate(rows):
            if (vid, start, end) in first:
                self.dropped.append({"id": f"{vid}_{start}_{end}", "video": vid,
                                     "label": label, "split": SPLIT_MAP[ksplit],
                                     "reason": "duplicate annotation row"})
                continue
            first[(vid, start, end)] = n
            kept.append((label, vid, start, end, SPLIT_MAP[ksplit]))
        train = [r for r in kept if r[4] == "train"]
        drawn = convert.stratified_split([r[0] for r in train], VALIDATION_FRACTION, 0.0,
                                         SPLIT_SEED)
        split_of = {r[1:4]: s for r, s in zip(train, drawn)}
        clips = []
        for label, vid, start, end, split in kept:
            split = split_of.get((vid, start, end), split)
            names = clip_names(vid, start, end)
            path = self._index.find(names)
            if path is None:
                self.missing.append({"id": names[0], "label": label, "split": split,
                                     "reason": f"missing: no {names[0]}.mp4 under "
                                               f"{manual_dir}"})
                continue
            clips.append(convert.Clip(key=names[0], clip_id=names[0], label=label,
                                      split=split, video_path=path, audio_path=path))
        if not clips:
            raise convert.DataPrepError(
                f"none of the {len(kept)} Kinetics-Sounds clips the annotations name is under "
                f"{manual_dir} ({len(self._index)} video files there); expected "
                "<split>/<class>/<youtube_id>_<start:06d>_<end:06d>.mp4")
        self.summary["kinetics_test_rows_unused"] = unused
        self.split_source = convert.standard_split_source(paths, VALIDATION_FRACTION,
                                                          SPLIT_SEED)
        return clips

    def preparation_metadata(self) -> Dict[str, Any]:
        return self.drawn_validation_metadata(VALIDATION_FRACTION, SPLIT_SEED)


FLAGS = flags.FLAGS


def main(argv):
    del argv
    try:
        classes = (read_classes(os.path.expanduser(FLAGS.classes_file))
                   if FLAGS.classes_file else None)
    except convert.DataPrepError as e:
        cli.fail(e)
    annotations = (os.path.abspath(os.path.expanduser(FLAGS.annotations_dir))
                   if FLAGS.annotations_dir else None)
    convert.run_cli(KineticsSoundsAv, FLAGS, annotations_dir=annotations, classes=classes,
                    consume_work=FLAGS.consume_work)


if __name__ == "__main__":
    convert.define_common_flags()
    # absl's --help lists only the main module's flags; these are defined in convert.
    flags.adopt_module_key_flags(convert)
    flags.DEFINE_string("annotations_dir", None, "Folder of the Kinetics annotation CSVs "
                        "(default: <raw_dir>/annotations).")
    flags.DEFINE_string("classes_file", None, "Class names, one per line, instead of the "
                        "31 built-in ones.")
    flags.DEFINE_bool("consume_work", True, "Delete each decoded clip once it is written into "
                      "the dataset (peak disk about one dataset, not two); a build "
                      "interrupted while writing then decodes those clips again.")
    flags.mark_flag_as_required("raw_dir")
    cli.run(main)
