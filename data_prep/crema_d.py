"""CREMA-D: `AudioWAV/*.wav` + `VideoFlash/*.flv` -> the prepared dataset `crema_d_av`.

    python -m data_prep.crema_d --raw_dir=~/CREMA-D --data_dir=~/avgmm_data \
        [--split_csv_dir=DIR] [--summary_table=auto|PATH|none] [--workers=N] \
        [--num_frames=3] [--frame_size=224]

Clips are named `<actor>_<sentence>_<EMO>_<level>`; the class is EMO (ANG, DIS, FEA,
HAP, NEU, SAD). Splits: by default a seeded split with the paper's sizes (6,698 train /
744 test out of 7,442); with `--split_csv_dir`, the `train.csv` / `test.csv` files
(`<id>,<EMO>` rows) shipped by the public reference code, for results comparable with
published numbers. Validation is 10% of train, drawn per class with a fixed seed. The
metadata records the split as `split_source`: `standard: <sha1 of train.csv + test.csv>`
or `seeded random, seed 0`; `configs/crema.py` expects the standard one.
Audio: 22,050 Hz, 3 s, STFT 512 / hop 353, log(|S| + 1e-7) -> 257 x 188.

Human ratings: with CREMA-D's `processedResults/summaryTable.csv` (found in the raw tree
by default, or `--summary_table=PATH`), every clip also records what people recognized
from the voice alone, the face alone and both, and whether exactly one modality informed
them (`human_only_voice_right`, `human_only_face_right`); see `data_prep.crema_ratings`
for the rule.
"""

import csv
import os
import re
from typing import Any, Dict, List, Optional

import numpy as np
import tensorflow_datasets as tfds
from absl import flags

from data_prep import cli, convert, crema_ratings, registry
from data_prep.features import STFT_LOG_MAGNITUDE, AudioParams

EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
PAPER_TRAIN, PAPER_TEST = 6698, 744
VALIDATION_FRACTION = 0.1
SPLIT_SEED = 0
_NAME = re.compile(r"^\d+_[A-Z]+_([A-Z]{3})_[A-Z]+$")
AUDIO = AudioParams(sample_rate=22050, clip_seconds=3.0, n_fft=512, hop_length=353,
                    center=True, normalization="none", spectrogram_recipe=STFT_LOG_MAGNITUDE)
DATASET = registry.DatasetEntry(
    tfds_name="crema_d_av", prepare_name="crema_d", display_name="CREMA-D",
    inputs="--raw_dir=<CREMA-D download>", audio=AUDIO, config="crema.py")


def read_split_csv(path: str) -> Dict[str, str]:
    """`{clip_id: EMO}` from a reference split file (`<id>,<EMO>` rows, CRLF or LF)."""
    out = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row or not row[0].strip():
                continue
            if len(row) < 2 or row[1].strip() not in EMOTIONS:
                raise convert.DataPrepError(
                    f"{path}:{lineno}: expected '<clip id>,<EMO>' with EMO in {EMOTIONS}, "
                    f"got {row!r}")
            out[row[0].strip()] = row[1].strip()
    return out


def split_source(csv_dir: str) -> str:
    """`standard: <sha1>` of the split files: sha1 over the bytes of `train.csv` followed
    by those of `test.csv`, so a result names the exact split it was trained on."""
    paths = [os.path.join(csv_dir, name) for name in ("train.csv", "test.csv")]
    return f"standard: {convert.files_sha1(paths)}"


class CremaDAv(convert.AVBuilder):
    """CREMA-D audio-visual emotion recognition (6 classes), prepared for avgmm."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "1.1.0": "Records spectrogram_recipe and split_source; same audio and frames.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download CREMA-D (https://github.com/CheyneyComputerScience/CREMA-D) and pass "
        "its root, the directory holding AudioWAV/ and VideoFlash/, as --raw_dir.")
    DEFAULT_AUDIO = AUDIO

    def __init__(self, **kwargs):
        self._rated: Dict[str, Dict[str, Any]] = {}  # clip key -> human-rating features
        super().__init__(**kwargs)

    def class_names(self) -> List[str]:
        return list(EMOTIONS)

    def _summary_table(self) -> Optional[str]:
        return self.split_options.get("summary_table")

    def extra_features(self) -> Dict[str, Any]:
        if not self._summary_table():
            return {}
        return {**{k: tfds.features.Scalar(dtype=np.bool_)
                   for k in crema_ratings.BOOL_FEATURES},
                **{k: tfds.features.Scalar(dtype=np.float32)
                   for k in crema_ratings.FLOAT_FEATURES}}

    def clip_features(self, clip: convert.Clip) -> Dict[str, Any]:
        return self._rated[clip.key] if self._summary_table() else {}

    def flat_metadata(self) -> Dict[str, Any]:
        flat = super().flat_metadata()
        path = self._summary_table()
        if path:
            flat["human_ratings"] = (f"{os.path.basename(path)}: "
                                     f"{crema_ratings.table_sha1(path)}"
                                     if os.path.exists(path) else os.path.basename(path))
        return flat

    def list_clips(self, manual_dir: str) -> List[convert.Clip]:
        audio_dir = os.path.join(manual_dir, "AudioWAV")
        video_dir = os.path.join(manual_dir, "VideoFlash")
        for d in (audio_dir, video_dir):
            if not os.path.isdir(d):
                raise convert.DataPrepError(
                    f"expected the CREMA-D folder {os.path.basename(d)}/ in {manual_dir} "
                    f"(it holds {'<clip>.wav' if d == audio_dir else '<clip>.flv'} files); "
                    "is --raw_dir the CREMA-D root?")
        wavs = sorted(f[:-4] for f in os.listdir(audio_dir) if f.endswith(".wav"))
        if not wavs:
            raise convert.DataPrepError(f"{audio_dir} holds no .wav files")
        labels = {}
        for clip in wavs:
            m = _NAME.match(clip)
            if m and m.group(1) in EMOTIONS:
                labels[clip] = m.group(1)
        if not labels:
            raise convert.DataPrepError(
                f"no file in {audio_dir} is named <actor>_<sentence>_<EMO>_<level>.wav")
        split_of = self._splits(labels)
        self._rated = {}
        if self._summary_table():
            path = self._summary_table()
            self._rated = crema_ratings.rate_clips(crema_ratings.read_table(path), labels, path)
            self.summary["human_ratings"] = crema_ratings.proportions(
                list(self._rated.values()))
        clips = []
        for clip, split in split_of.items():
            clips.append(convert.Clip(
                key=clip, clip_id=clip, label=labels[clip], split=split,
                video_path=os.path.join(video_dir, clip + ".flv"),
                audio_path=os.path.join(audio_dir, clip + ".wav")))
        return clips

    def _splits(self, labels: Dict[str, str]) -> Dict[str, str]:
        csv_dir: Optional[str] = self.split_options.get("split_csv_dir")
        if csv_dir:
            train = read_split_csv(os.path.join(csv_dir, "train.csv"))
            test = read_split_csv(os.path.join(csv_dir, "test.csv"))
            named = {**train, **test}
            absent = sorted(c for c in named if c not in labels)
            if absent:
                raise convert.DataPrepError(
                    f"the split files in {csv_dir} name {len(absent)} clip(s) that have no "
                    f"WAV in AudioWAV/, e.g. {absent[:3]}; is --raw_dir the complete "
                    "CREMA-D download?")
            for clip, emo in named.items():
                if labels[clip] != emo:
                    raise convert.DataPrepError(
                        f"{clip} is labelled {emo} in the split files but its name says "
                        f"{labels[clip]}")
            train_ids, test_ids = sorted(train), sorted(test)
            self.split_source = split_source(csv_dir)
        else:
            ids = sorted(labels)
            order = np.random.default_rng(SPLIT_SEED).permutation(len(ids))
            n_test = int(round(len(ids) * PAPER_TEST / (PAPER_TRAIN + PAPER_TEST)))
            test_ids = sorted(ids[i] for i in order[:n_test])
            train_ids = sorted(ids[i] for i in order[n_test:])
            self.split_source = convert.seeded_split_source(SPLIT_SEED)
        split_of = dict(zip(train_ids, convert.stratified_split(
            [labels[c] for c in train_ids], VALIDATION_FRACTION, 0.0, SPLIT_SEED)))
        split_of.update({c: "test" for c in test_ids})
        return split_of


FLAGS = flags.FLAGS


def summary_table_option(raw_dir: str, value: str) -> Optional[str]:
    """The summary table to use: `auto` finds `processedResults/summaryTable.csv` in the
    raw tree (None when absent), `none` uses none, anything else is a path."""
    if value == "none":
        return None
    if value == "auto":
        found = os.path.join(os.path.expanduser(raw_dir), crema_ratings.RELATIVE_PATH)
        return os.path.abspath(found) if os.path.isfile(found) else None
    path = os.path.abspath(os.path.expanduser(value))
    if not os.path.isfile(path):
        raise convert.DataPrepError(f"--summary_table={value} does not exist")
    return path


def main(argv):
    del argv
    options = {}
    if FLAGS.split_csv_dir:
        options["split_csv_dir"] = os.path.abspath(os.path.expanduser(FLAGS.split_csv_dir))
    try:
        table = summary_table_option(FLAGS.raw_dir, FLAGS.summary_table)
    except convert.DataPrepError as e:
        cli.fail(e)
    if table:
        options["summary_table"] = table
        how = " (found in the raw tree)" if FLAGS.summary_table == "auto" else ""
        print(f"human ratings from {table}{how}; --summary_table=none prepares without them",
              flush=True)
    convert.run_cli(CremaDAv, FLAGS, split_options=options)


if __name__ == "__main__":
    convert.define_common_flags()
    # absl's --help lists only the main module's flags; these are defined in convert.
    flags.adopt_module_key_flags(convert)
    flags.DEFINE_string("split_csv_dir", None,
                        "Directory with the reference train.csv / test.csv split files.")
    flags.DEFINE_string("summary_table", "auto",
                        "CREMA-D's summaryTable.csv (human ratings per clip): auto finds "
                        "processedResults/summaryTable.csv under --raw_dir; none skips it.")
    flags.mark_flag_as_required("raw_dir")
    cli.run(main)
