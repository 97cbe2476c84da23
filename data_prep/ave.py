"""AVE: `AVE/<id>.mp4` + annotation and split files -> the prepared dataset `ave_av`.

    python -m data_prep.ave --raw_dir=~/AVE_Dataset --data_dir=~/avgmm_data \
        [--workers=N] [--num_frames=3] [--frame_size=224]

Rows of `trainSet.txt` / `valSet.txt` / `testSet.txt` are
`Category&VideoID&Quality&StartTime&EndTime` (a header line is skipped where present);
valSet is the validation split. The 28 classes are the categories of `Annotations.txt`
in sorted order (`CATEGORIES`).

Policy for repeated ids: every row is one sample, cut to its own annotated
[start, end] segment, so a video with two events gives two samples (45 ids in AVE).
Rows of one id with identical segments and different labels are kept as given and
counted in the conversion summary (`same_segment_other_label`).
Audio (the PMR reference recipe): the mp4's track (decoded in-process by PyAV), 16 kHz
mono, the segment tiled to exactly 10 s and clipped to [-1, 1], then
`scipy.signal.spectrogram(x, 16000, nperseg=512, noverlap=353)` (a power spectral
density), log(psd + 1e-7), per-sample z-score -> 257 x 1004. Frames are sampled evenly
inside the segment.
"""

import collections
import os
from typing import List, Tuple

import tensorflow_datasets as tfds
from absl import flags

from data_prep import cli, convert, registry
from data_prep.features import SCIPY_PSD_LOG, AudioParams

# The 28 AVE categories, sorted: the label order of the prepared dataset.
CATEGORIES = (
    "Accordion", "Acoustic guitar", "Baby cry, infant cry", "Banjo", "Bark", "Bus", "Cat",
    "Chainsaw", "Church bell", "Clock", "Female speech, woman speaking",
    "Fixed-wing aircraft, airplane", "Flute", "Frying (food)", "Goat", "Helicopter",
    "Horse", "Male speech, man speaking", "Mandolin", "Motorcycle", "Race car, auto racing",
    "Rodents, rats, mice", "Shofar", "Toilet flush", "Train horn", "Truck", "Ukulele",
    "Violin, fiddle")
SPLIT_FILES = {"train": "trainSet.txt", "validation": "valSet.txt", "test": "testSet.txt"}
Row = Tuple[str, str, str, float, float]
# nperseg 512, noverlap 353 -> hop 159: 257 x 1004 for 10 s at 16 kHz.
AUDIO = AudioParams(sample_rate=16000, clip_seconds=10.0, n_fft=512, hop_length=159,
                    center=False, normalization="zscore", spectrogram_recipe=SCIPY_PSD_LOG)
DATASET = registry.DatasetEntry(
    tfds_name="ave_av", prepare_name="ave", display_name="AVE",
    inputs="--raw_dir=<AVE download>", audio=AUDIO, config="ave.py")


def read_rows(path: str) -> List[Row]:
    """`(category, video_id, quality, start, end)` rows; a header line is skipped."""
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split("&")
            if lineno == 1 and parts[:2] == ["Category", "VideoID"]:
                continue
            if len(parts) != 5:
                raise convert.DataPrepError(
                    f"{path}:{lineno}: expected Category&VideoID&Quality&StartTime&EndTime, "
                    f"got {line!r}")
            try:
                start, end = float(parts[3]), float(parts[4])
            except ValueError as e:
                raise convert.DataPrepError(f"{path}:{lineno}: bad start/end in {line!r}") from e
            if not end > start:
                raise convert.DataPrepError(f"{path}:{lineno}: segment end {end} <= start "
                                            f"{start}")
            rows.append((parts[0], parts[1], parts[2], start, end))
    return rows


class AveAv(convert.AVBuilder):
    """AVE audio-visual event classification (28 classes), prepared for avgmm."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "2.0.0": "Audio by the PMR reference recipe (scipy power spectral density, "
                 "spectrogram_recipe=scipy_psd_log) instead of a Hann STFT magnitude.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download the AVE dataset (https://github.com/YapengTian/AVE-ECCV18) and pass the "
        "directory holding AVE/ (the mp4 files), Annotations.txt, trainSet.txt, "
        "valSet.txt and testSet.txt as --raw_dir.")
    DEFAULT_AUDIO = AUDIO

    def class_names(self) -> List[str]:
        return list(CATEGORIES)

    def list_clips(self, manual_dir: str) -> List[convert.Clip]:
        video_dir = os.path.join(manual_dir, "AVE")
        annotations = os.path.join(manual_dir, "Annotations.txt")
        for path, what in ((video_dir, "the folder AVE/ with <id>.mp4 files"),
                           (annotations, "Annotations.txt")):
            if not os.path.exists(path):
                raise convert.DataPrepError(
                    f"expected {what} in {manual_dir}; is --raw_dir the AVE root (the "
                    "folder with AVE/, Annotations.txt and the split files)?")
        names = set(self._names())
        unknown = sorted({r[0] for r in read_rows(annotations)} - names)
        if unknown:
            raise convert.DataPrepError(f"{annotations} has categories outside AVE's 28: "
                                        f"{unknown}")
        clips, absent = [], []
        same_segment_other_label = 0
        for split, filename in SPLIT_FILES.items():
            path = os.path.join(manual_dir, filename)
            if not os.path.exists(path):
                raise convert.DataPrepError(f"expected the split file {filename} in "
                                            f"{manual_dir}")
            seen = collections.defaultdict(set)
            for n, (cat, vid, _, start, end) in enumerate(read_rows(path)):
                if cat not in names:
                    raise convert.DataPrepError(f"{path}: category {cat!r} of {vid} is not "
                                                "one of AVE's 28")
                if any(label != cat for label in seen[(vid, start, end)]):
                    same_segment_other_label += 1
                seen[(vid, start, end)].add(cat)
                mp4 = os.path.join(video_dir, vid + ".mp4")
                if not os.path.exists(mp4):
                    absent.append(vid)
                    continue
                clips.append(convert.Clip(
                    key=f"{split}_{n:05d}_{vid}", clip_id=f"{vid}_{start:g}_{end:g}",
                    label=cat, split=split, video_path=mp4, audio_path=mp4,
                    start=start, end=end))
        if absent:
            raise convert.DataPrepError(
                f"the split files name {len(absent)} video(s) with no mp4 in {video_dir}, "
                f"e.g. {sorted(set(absent))[:3]}; is the AVE download complete?")
        self.summary["same_segment_other_label"] = same_segment_other_label
        self.split_source = "standard: " + convert.files_sha1(
            [os.path.join(manual_dir, f) for f in SPLIT_FILES.values()])
        return clips


FLAGS = flags.FLAGS


def main(argv):
    del argv
    convert.run_cli(AveAv, FLAGS)


if __name__ == "__main__":
    convert.define_common_flags()
    # absl's --help lists only the main module's flags; these are defined in convert.
    flags.adopt_module_key_flags(convert)
    flags.mark_flag_as_required("raw_dir")
    cli.run(main)
