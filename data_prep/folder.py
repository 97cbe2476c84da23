"""Your own clips -> a prepared dataset, with the same processing as the benchmarks.

    python -m data_prep.folder --csv=clips.csv --data_dir=~/avgmm_data [--name=my_av]
        [--sample_rate=22050 --clip_seconds=3 --n_fft=512 --hop_length=353
         --center=true --normalization=none --spectrogram_recipe=stft_log_magnitude]
        [--num_frames=3 --frame_size=224]

`clips.csv` rows: `video_path,label[,split][,audio_path]` (an optional header line
starting with `video_path`). Relative paths are relative to the CSV's folder. Without
an `audio_path`, the audio track of the video is used. `split` is train, validation (or
val) or test; when no row gives one, a seeded split stratified by label puts 80% / 10% /
10% of each class into train / validation / test. Then train with
`--config.data.name=<name>` (the classes and shapes are read from the data).
"""

import csv
import os
import re
import sys
from typing import List, Optional, Tuple

import tensorflow_datasets as tfds
from absl import app, flags

from data_prep import convert
from data_prep import features
from data_prep.features import AudioParams

SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation",
                 "test": "test"}
SPLIT_SEED = 0
Row = Tuple[str, str, Optional[str], Optional[str]]


def read_clip_csv(path: str) -> List[Row]:
    """`(video_path, label, split or None, audio_path or None)` rows, paths made absolute."""
    if not os.path.exists(path):
        raise convert.DataPrepError(f"--csv={path} does not exist")
    base = os.path.dirname(os.path.abspath(path))
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            row = [x.strip() for x in row]
            if not row or not any(row):
                continue
            if lineno == 1 and row[0] == "video_path":
                continue
            if len(row) < 2 or not row[0] or not row[1]:
                raise convert.DataPrepError(
                    f"{path}:{lineno}: expected video_path,label[,split][,audio_path], "
                    f"got {row!r}")
            split = row[2] if len(row) > 2 and row[2] else None
            if split is not None and split not in SPLIT_ALIASES:
                raise convert.DataPrepError(f"{path}:{lineno}: split {split!r} is not one of "
                                            f"{sorted(SPLIT_ALIASES)}")
            audio = row[3] if len(row) > 3 and row[3] else None
            absolute = lambda p: p if os.path.isabs(p) else os.path.join(base, p)  # noqa: E731
            rows.append((absolute(row[0]), row[1], split and SPLIT_ALIASES[split],
                         audio and absolute(audio)))
    if not rows:
        raise convert.DataPrepError(f"{path} lists no clips")
    return rows


class FolderAv(convert.AVBuilder):
    """A user's own audio-visual clips listed in a CSV, prepared for avgmm."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "1.1.0": "Records spectrogram_recipe and split_source.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = "List your clips in a CSV and pass it as --csv."
    DEFAULT_AUDIO = AudioParams(sample_rate=22050, clip_seconds=3.0)

    def __init__(self, *, csv_path: Optional[str] = None, **kwargs):
        self.csv_path = csv_path
        super().__init__(**kwargs)

    def class_names(self) -> List[str]:
        if self.csv_path is None:
            raise convert.DataPrepError(f"{self.name}: not prepared yet and no --csv given")
        return sorted({r[1] for r in read_clip_csv(self.csv_path)})

    def list_clips(self, manual_dir: str) -> List[convert.Clip]:
        del manual_dir  # the CSV names every file
        rows = read_clip_csv(self.csv_path)
        given = [r[2] is not None for r in rows]
        if any(given) and not all(given):
            raise convert.DataPrepError(
                f"{self.csv_path}: {sum(given)} of {len(rows)} rows give a split; give one "
                "in every row or in none (then a seeded 80/10/10 split is drawn)")
        if all(given):
            splits = [r[2] for r in rows]
            self.split_source = "given in the CSV: " + convert.files_sha1([self.csv_path])
        else:
            splits = convert.stratified_split([r[1] for r in rows], 0.1, 0.1, SPLIT_SEED)
            self.split_source = convert.seeded_split_source(SPLIT_SEED)
        missing = [r[0] for r in rows if not os.path.exists(r[0])]
        missing += [r[3] for r in rows if r[3] and not os.path.exists(r[3])]
        if missing:
            raise convert.DataPrepError(f"{self.csv_path} names {len(missing)} file(s) that "
                                        f"do not exist, e.g. {missing[:3]}")
        clips = []
        for n, ((video, label, _, audio), split) in enumerate(zip(rows, splits)):
            stem = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.splitext(os.path.basename(video))[0])
            clips.append(convert.Clip(key=f"{n:06d}_{stem}", clip_id=os.path.relpath(
                video, os.path.dirname(os.path.abspath(self.csv_path))), label=label,
                split=split, video_path=video, audio_path=audio or video))
        return clips


def builder_class(name: str, base=None):
    """`base` (default `FolderAv`) registered under the tfds name `name` (snake_case)."""
    base = base or FolderAv
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise convert.DataPrepError(f"--name={name!r}: use lower_snake_case, e.g. my_av")
    if name == base.name:
        return base
    camel = "".join(p.capitalize() for p in name.split("_"))
    return type(camel, (base,), {"__doc__": base.__doc__, "__module__": base.__module__})


FLAGS = flags.FLAGS


def main(argv):
    del argv
    convert.quiet_library_logs(FLAGS)
    try:
        cls = builder_class(FLAGS.name)
        audio = AudioParams(sample_rate=FLAGS.sample_rate, clip_seconds=FLAGS.clip_seconds,
                            n_fft=FLAGS.n_fft, hop_length=FLAGS.hop_length,
                            center=FLAGS.center, normalization=FLAGS.normalization,
                            spectrogram_recipe=FLAGS.spectrogram_recipe)
        csv_path = os.path.abspath(os.path.expanduser(FLAGS.csv))
        builder = convert.prepare(
            cls, os.path.dirname(csv_path), FLAGS.data_dir, audio=audio,
            frames=convert.FrameParams(FLAGS.num_frames, FLAGS.frame_size),
            workers=FLAGS.workers, keep_work=FLAGS.keep_work, csv_path=csv_path)
    except (convert.DataPrepError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(f"{builder.name}: {dict((s, v.num_examples) for s, v in builder.info.splits.items())}"
          f" in {builder.data_dir}")


if __name__ == "__main__":
    convert.define_common_flags(raw_dir=False)
    flags.DEFINE_string("csv", None, "CSV of video_path,label[,split][,audio_path].")
    flags.DEFINE_string("name", "folder_av", "tfds name of the new dataset (snake_case).")
    flags.DEFINE_integer("sample_rate", 22050, "Audio sample rate (Hz).")
    flags.DEFINE_float("clip_seconds", 3.0, "Audio is tiled / cut to this length.")
    flags.DEFINE_integer("n_fft", 512, "STFT size.")
    flags.DEFINE_integer("hop_length", 353, "STFT hop.")
    flags.DEFINE_bool("center", True, "Centred STFT frames (librosa's default).")
    flags.DEFINE_enum("normalization", "none", ["none", "zscore"], "Per-sample normalization.")
    flags.DEFINE_enum("spectrogram_recipe", features.STFT_LOG_MAGNITUDE, features.RECIPES,
                      "stft_log_magnitude (CREMA-D's) or scipy_psd_log (AVE's; needs "
                      "--center=false).")
    flags.mark_flag_as_required("csv")
    app.run(main)
