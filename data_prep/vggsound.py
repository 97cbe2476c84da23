"""VGGSound: `vggsound.csv` + the 10 s clips you downloaded -> the prepared dataset `vggsound_av`.

    python -m data_prep.vggsound --raw_dir=~/vggsound/clips [--csv=~/vggsound/vggsound.csv] \
        --data_dir=~/avgmm_data [--workers=N] [--num_frames=3] [--frame_size=224]

`vggsound.csv` is the official annotation file: rows `youtube_id,start_seconds,label,split`
with split `train` or `test`, no header. A clip is looked up anywhere under `--raw_dir`
(sub-folders are searched) by its file name, in this order:

- `<youtube_id>_<start:06d>.mp4`, e.g. `---g-f_I2yQ_000001.mp4` (the public VGGSound
  downloaders' naming);
- `<youtube_id>_<start>.mp4` (unpadded, as the OGM-GE reference code names clips);
- `.mkv`, `.webm` and `.avi` are accepted like `.mp4`.

Classes: the sorted set of labels in the CSV (309 or 310 depending on the CSV's
release). Splits: the CSV's test rows are the test split; validation is a seeded 10% of
the CSV's train rows, drawn per class (seed 0) over the CSV (not over what was
downloaded), so the validation set does not move when more clips are downloaded.

Missing videos (about a fifth of VGGSound is gone from YouTube) are never an error: each
one is listed in `failures.jsonl` with the reason `missing`, and the summary counts them
per split. Clips that cannot be decoded are skipped with their reason, as in every
converter. A row repeating an earlier `(youtube_id, start)` is dropped and listed too.

Audio (the OGM-GE reference code's VGGSound recipe): 16 kHz mono, the first 5 s (tiled if
shorter), librosa STFT n_fft 256 / hop 128, log(|S| + 1e-7) -> 129 x 626. Frames are
sampled evenly over the clip.
"""

import csv
import os
from typing import Any, Dict, List, Optional, Tuple

import tensorflow_datasets as tfds
from absl import flags

from data_prep import cli, convert, registry
from data_prep.features import STFT_LOG_MAGNITUDE, AudioParams
from data_prep.youtube_clips import MediaIndex, clip_names

VALIDATION_FRACTION = 0.1
SPLIT_SEED = 0
# The OGM-GE reference code's dataset/VGGSoundDataset.py recipe: 16 kHz, a 5 s window,
# librosa STFT n_fft 256 / hop 128 (centred), log(|S| + 1e-7) -> 129 x 626. The reference
# draws the window at random at every read; a prepared dataset stores one, the clip's
# first 5 s.
AUDIO = AudioParams(sample_rate=16000, clip_seconds=5.0, n_fft=256, hop_length=128,
                    center=True, normalization="none", spectrogram_recipe=STFT_LOG_MAGNITUDE)
DATASET = registry.DatasetEntry(
    tfds_name="vggsound_av", prepare_name="vggsound", display_name="VGGSound",
    inputs="--raw_dir=<downloaded VGGSound clips> --csv=<vggsound.csv>", audio=AUDIO,
    config="vggsound.py")
Row = Tuple[str, int, str, str, int]  # youtube_id, start, label, split, line


def read_csv(path: str) -> List[Row]:
    """`(youtube_id, start, label, split, line)` rows of `vggsound.csv`."""
    if not os.path.exists(path):
        raise convert.DataPrepError(
            f"{path} does not exist: pass the official vggsound.csv with --csv (or put it "
            "in --raw_dir)")
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            row = [x.strip() for x in row]
            if not row or not any(row):
                continue
            if len(row) != 4:
                raise convert.DataPrepError(
                    f"{path}:{lineno}: expected youtube_id,start_seconds,label,split, got "
                    f"{row!r}")
            try:
                start = int(float(row[1]))
            except ValueError:
                if lineno == 1:  # a header line some copies carry
                    continue
                raise convert.DataPrepError(f"{path}:{lineno}: start_seconds {row[1]!r} is "
                                            "not a number") from None
            if row[3] not in ("train", "test"):
                raise convert.DataPrepError(f"{path}:{lineno}: split {row[3]!r} is not train "
                                            "or test")
            rows.append((row[0], start, row[2], row[3], lineno))
    if not rows:
        raise convert.DataPrepError(f"{path} lists no clips")
    return rows


class VggsoundAv(convert.AVBuilder):
    """VGGSound audio-visual classification (309/310 classes), prepared for avgmm."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download the VGGSound clips (https://www.robots.ox.ac.uk/~vgg/data/vggsound/) as "
        "<youtube_id>_<start:06d>.mp4 files and pass their folder as --raw_dir and the "
        "official vggsound.csv as --csv.")
    DEFAULT_AUDIO = AUDIO

    def __init__(self, *, csv_path: Optional[str] = None, **kwargs):
        self.csv_path = csv_path
        self._index: Optional[MediaIndex] = None
        super().__init__(**kwargs)

    def class_names(self) -> List[str]:
        if self.csv_path is None:
            raise convert.DataPrepError(f"{self.name}: not prepared yet and no --csv given")
        return sorted({r[2] for r in read_csv(self.csv_path)})

    def list_clips(self, manual_dir: str) -> List[convert.Clip]:
        rows = read_csv(self.csv_path)
        if self._index is None or self._index.root != manual_dir:
            self._index = MediaIndex(manual_dir)
        index = self._index
        first: Dict[Tuple[str, int], int] = {}
        kept, self.dropped, self.missing = [], [], []
        for vid, start, label, split, line in rows:
            if (vid, start) in first:
                self.dropped.append({"line": line, "id": f"{vid}_{start}", "video": vid,
                                     "label": label, "split": split,
                                     "reason": f"duplicate of line {first[(vid, start)]}"})
                continue
            first[(vid, start)] = line
            kept.append((vid, start, label, split))
        train = [r for r in kept if r[3] == "train"]
        # Over the CSV's rows, not the downloaded ones: the split stays put as more arrive.
        train_splits = convert.stratified_split([r[2] for r in train], VALIDATION_FRACTION,
                                                0.0, SPLIT_SEED)
        split_of = {(r[0], r[1]): s for r, s in zip(train, train_splits)}
        clips = []
        for vid, start, label, split in kept:
            split = split_of.get((vid, start), split)
            names = clip_names(vid, start)
            path = index.find(names)
            if path is None:
                self.missing.append({"id": f"{vid}_{start}", "label": label, "split": split,
                                     "reason": f"missing: no {names[0]}.mp4 (or "
                                               f"{names[1]}.mp4) under {manual_dir}"})
                continue
            clips.append(convert.Clip(key=names[0], clip_id=names[0], label=label,
                                      split=split, video_path=path, audio_path=path))
        if not clips:
            raise convert.DataPrepError(
                f"none of the {len(kept)} clips {os.path.basename(self.csv_path)} names is "
                f"under {manual_dir} ({len(index)} video files there); name them "
                "<youtube_id>_<start:06d>.mp4, e.g. ---g-f_I2yQ_000001.mp4")
        self.split_source = convert.standard_split_source([self.csv_path], VALIDATION_FRACTION,
                                                          SPLIT_SEED)
        return clips

    def preparation_metadata(self) -> Dict[str, Any]:
        return self.drawn_validation_metadata(VALIDATION_FRACTION, SPLIT_SEED)


FLAGS = flags.FLAGS


def main(argv):
    del argv
    raw = os.path.abspath(os.path.expanduser(FLAGS.raw_dir))
    csv_path = os.path.abspath(os.path.expanduser(FLAGS.csv or
                                                  os.path.join(raw, "vggsound.csv")))
    convert.run_cli(VggsoundAv, FLAGS, csv_path=csv_path, consume_work=FLAGS.consume_work)


if __name__ == "__main__":
    convert.define_common_flags()
    # absl's --help lists only the main module's flags; these are defined in convert.
    flags.adopt_module_key_flags(convert)
    flags.DEFINE_string("csv", None, "The official vggsound.csv (default: in --raw_dir).")
    flags.DEFINE_bool("consume_work", True, "Delete each decoded clip once it is written into "
                      "the dataset (peak disk about one dataset, not two); a build "
                      "interrupted while writing then decodes those clips again.")
    flags.mark_flag_as_required("raw_dir")
    cli.run(main)
