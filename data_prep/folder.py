"""Your own clips -> a prepared dataset, with the same processing as the benchmarks.

    python -m data_prep.folder --csv=clips.csv --data_dir=~/avgmm_data [--name=my_av]
        [--sample_rate=22050 --clip_seconds=3 --n_fft=512 --hop_length=353
         --center=true --normalization=none --spectrogram_recipe=stft_log_magnitude]
        [--num_frames=3 --frame_size=224]

`clips.csv` rows: `video_path,label[,split][,audio_path]` (an optional header line
starting with `video_path`). Relative paths are relative to the CSV's folder. Without
an `audio_path`, the audio track of the video is used. An `audio_path` may be a WAV,
MP3, FLAC, OGG or any video container, or an HTK parameter file (`.htk`, `.mfc`, `.mfcc`,
`.fbank`, `.plp`, `.lpc`, `.user`; every row then names one, of one kind): its feature
frames, tiled to `--clip_seconds`, are the "spectrogram" (see `data_prep.htk`).
`split` is train, validation (or val) or test; when no row gives one, a seeded split
stratified by label puts 80% / 10% / 10% of each class into train / validation / test. Then train with
`--config.data.name=<name>` (the classes and shapes are read from the data).

Duplicates are dropped so that no clip lands in two splits: rows naming the same media
(by resolved path, or by identical file contents) and the same label are kept once (the
first row); the rest are printed and listed in `failures.jsonl`. The same media under two
labels is refused. A hash of the CSV and of the resolved media list is recorded with the
dataset: running again with an edited CSV under the same `--name` is refused until you
pass `--overwrite` (rebuild) or choose a new `--name`.
"""

import csv
import hashlib
import json
import os
import re
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import tensorflow_datasets as tfds
from absl import flags

from data_prep import cli, convert, features, htk, registry
from data_prep.features import AudioParams

SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation",
                 "test": "test"}
SPLIT_SEED = 0
# `--name` names the dataset; `folder_av` is the default.
DATASET = registry.DatasetEntry(
    tfds_name="folder_av", prepare_name="folder", display_name="your clips (CSV)",
    inputs="--csv=<clips.csv>", audio=AudioParams(sample_rate=22050, clip_seconds=3.0))


class Row(NamedTuple):
    """One CSV row, paths made absolute."""

    video: str
    label: str
    split: Optional[str]
    audio: Optional[str]
    line: int = 0  # line number in the CSV, for messages


def read_clip_csv(path: str) -> List[Row]:
    """`(video_path, label, split or None, audio_path or None, line)` rows, paths made
    absolute."""
    if not os.path.exists(path):
        raise convert.DataPrepError(f"--csv={path} does not exist")
    base = os.path.dirname(os.path.abspath(path))
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:
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
            absolute = lambda p: os.path.normpath(os.path.join(base, p))  # noqa: E731
            rows.append(Row(absolute(row[0]), row[1], split and SPLIT_ALIASES[split],
                            audio and absolute(audio), lineno))
    if not rows:
        raise convert.DataPrepError(f"{path} lists no clips")
    return rows


def file_digest(path: str) -> str:
    """sha1 of a file's contents."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _media(row: Row) -> Tuple[str, str]:
    """The resolved `(video, audio)` files a row names (audio from the video without one)."""
    return os.path.realpath(row.video), os.path.realpath(row.audio or row.video)


def drop_duplicates(rows: List[Row], csv_path: str, digests: Optional[Dict[str, str]] = None
                    ) -> Tuple[List[Row], List[Dict[str, Any]]]:
    """Rows with each clip once, and a record of each row dropped as a duplicate.

    Two rows are the same clip when they resolve to the same files or to files with the
    same contents; the first row is kept. The same clip under two labels is an error.
    `digests` memoizes file hashes (path -> sha1) across calls.
    """
    digests = {} if digests is None else digests

    def content(path: str) -> str:
        if path not in digests:
            digests[path] = file_digest(path)
        return digests[path]

    first_by_path: Dict[Tuple[str, str], Row] = {}
    first_by_content: Dict[Tuple[str, str], Row] = {}
    kept, dropped = [], []
    name = os.path.basename(csv_path)
    for row in rows:
        files = _media(row)
        same = first_by_path.get(files)
        how = "same file"
        if same is None:
            same = first_by_content.get(tuple(content(p) for p in files))
            how = "same contents"
        if same is None:
            first_by_path[files] = row
            first_by_content[tuple(content(p) for p in files)] = row
            kept.append(row)
            continue
        if same.label != row.label:
            raise convert.DataPrepError(
                f"{name}:{same.line} and {name}:{row.line} name the {how} {row.video} "
                f"with labels {same.label!r} and {row.label!r}: keep one of the two rows")
        dropped.append({"line": row.line, "video": row.video, "audio": row.audio or row.video,
                        "label": row.label, "split": row.split,
                        "reason": f"duplicate of {name}:{same.line} ({how})"})
    return kept, dropped


def source_fingerprint(csv_path: str) -> Dict[str, str]:
    """sha1 of the CSV's bytes and of the resolved media list it names."""
    with open(csv_path, "rb") as f:
        csv_sha1 = hashlib.sha1(f.read()).hexdigest()
    media = [_media(r) for r in read_clip_csv(csv_path)]
    return {"csv_sha1": csv_sha1,
            "media_sha1": hashlib.sha1(json.dumps(media).encode()).hexdigest()}


class FolderAv(convert.AVBuilder):
    """A user's own audio-visual clips listed in a CSV, prepared for avgmm."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "1.1.0": "Records spectrogram_recipe and split_source.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = "List your clips in a CSV and pass it as --csv."
    DEFAULT_AUDIO = DATASET.audio
    RECORDED_KEYS = convert.AVBuilder.RECORDED_KEYS + ("source",)
    OTHER_TARGET = "a new --name"

    def __init__(self, *, csv_path: Optional[str] = None, **kwargs):
        self.csv_path = csv_path
        self._source = None
        self._digests: Dict[str, str] = {}  # list_clips runs twice per conversion
        if csv_path is None:  # opening the prepared dataset: what it was made from
            self._source = (self._recorded_params(kwargs.get("data_dir")) or {}).get("source")
        super().__init__(**kwargs)

    def preparation_metadata(self) -> Dict[str, Any]:
        if self._source is None and self.csv_path is not None:
            self._source = source_fingerprint(self.csv_path)
        return {**super().preparation_metadata(), "source": self._source}

    def class_names(self) -> List[str]:
        if self.csv_path is None:
            raise convert.DataPrepError(f"{self.name}: not prepared yet and no --csv given")
        return sorted({r[1] for r in read_clip_csv(self.csv_path)})

    def list_clips(self, manual_dir: str) -> List[convert.Clip]:
        del manual_dir  # the CSV names every file
        rows = read_clip_csv(self.csv_path)
        given = [r.split is not None for r in rows]
        if any(given) and not all(given):
            raise convert.DataPrepError(
                f"{self.csv_path}: {sum(given)} of {len(rows)} rows give a split; give one "
                "in every row or in none (then a seeded 80/10/10 split is drawn)")
        missing = [r.video for r in rows if not os.path.exists(r.video)]
        missing += [r.audio for r in rows if r.audio and not os.path.exists(r.audio)]
        if missing:
            raise convert.DataPrepError(f"{self.csv_path} names {len(missing)} file(s) that "
                                        f"do not exist, e.g. {missing[:3]}")
        # Before splitting, so that a clip listed twice cannot land in two splits.
        rows, self.dropped = drop_duplicates(rows, self.csv_path, self._digests)
        if all(given):
            splits = [r[2] for r in rows]
            self.split_source = "given in the CSV: " + convert.files_sha1([self.csv_path])
        else:
            splits = convert.stratified_split([r[1] for r in rows], 0.1, 0.1, SPLIT_SEED)
            self.split_source = convert.seeded_split_source(SPLIT_SEED)
        clips = []
        for n, ((video, label, _, audio, _), split) in enumerate(zip(rows, splits)):
            stem = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.splitext(os.path.basename(video))[0])
            # The work cache is keyed by the key: the path hash keeps a row renumbered by
            # an edited CSV from reusing another file's decoded clip.
            tag = hashlib.sha1("|".join(_media(rows[n])).encode()).hexdigest()[:8]
            clips.append(convert.Clip(key=f"{n:06d}_{stem}_{tag}", clip_id=os.path.relpath(
                video, os.path.dirname(os.path.abspath(self.csv_path))), label=label,
                split=split, video_path=video, audio_path=audio or video))
        return clips


def htk_params(csv_path: str, clip_seconds: float,
               normalization: str) -> Optional[htk.HtkParams]:
    """The HTK feature parameters of a CSV whose audio files are HTK parameter files
    (by extension, `htk.EXTENSIONS`), None for media; a mix is refused."""
    rows = read_clip_csv(csv_path)
    is_htk = [htk.is_htk_path(r.audio) for r in rows]
    if not any(is_htk):
        return None
    if not all(is_htk):
        row = rows[is_htk.index(False)]
        raise convert.DataPrepError(
            f"{csv_path}:{row.line} names no HTK file ({row.audio or 'no audio_path'}) "
            f"while other rows do: one dataset takes HTK features ({', '.join(htk.EXTENSIONS)}"
            ") in every row or in none")
    return htk.params_for([r.audio for r in rows if os.path.exists(r.audio)], clip_seconds,
                          normalization)


def builder_class(name: str, base=None):
    """`base` (default `FolderAv`) registered under the tfds name `name` (snake_case)."""
    base = base or FolderAv
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise convert.DataPrepError(f"--name={name!r}: use lower_snake_case, e.g. my_av")
    if name == base.name:
        return base
    # tfds registers a class per name once per process: a second conversion under the
    # same name (a library caller, a test) reuses it.
    if (name, base) not in _MADE:
        camel = "".join(p.capitalize() for p in name.split("_"))
        _MADE[(name, base)] = type(camel, (base,), {"__doc__": base.__doc__,
                                                    "__module__": base.__module__})
    return _MADE[(name, base)]


_MADE: Dict[Tuple[str, type], type] = {}


FLAGS = flags.FLAGS


def main(argv):
    del argv
    convert.quiet_library_logs(FLAGS)
    try:
        cls = builder_class(FLAGS.name)
        csv_path = os.path.abspath(os.path.expanduser(FLAGS.csv))
        audio = htk_params(csv_path, FLAGS.clip_seconds, FLAGS.normalization)
        if audio is not None:
            given = [f"--{n}" for n in ("sample_rate", "n_fft", "hop_length", "center",
                                        "spectrogram_recipe") if FLAGS[n].present]
            if given:
                raise convert.DataPrepError(
                    f"{', '.join(given)}: HTK files are features already; only "
                    "--clip_seconds and --normalization apply to them")
        else:
            audio = AudioParams(sample_rate=FLAGS.sample_rate,
                                clip_seconds=FLAGS.clip_seconds, n_fft=FLAGS.n_fft,
                                hop_length=FLAGS.hop_length, center=FLAGS.center,
                                normalization=FLAGS.normalization,
                                spectrogram_recipe=FLAGS.spectrogram_recipe)
        builder = convert.prepare(
            cls, os.path.dirname(csv_path), FLAGS.data_dir, audio=audio,
            frames=convert.FrameParams(FLAGS.num_frames, FLAGS.frame_size),
            workers=FLAGS.workers, keep_work=FLAGS.keep_work, overwrite=FLAGS.overwrite,
            csv_path=csv_path)
    except (convert.DataPrepError, ValueError) as e:
        cli.fail(e)
    print(f"{builder.name}: {dict((s, v.num_examples) for s, v in builder.info.splits.items())}"
          f" in {builder.data_dir}")


if __name__ == "__main__":
    convert.define_common_flags(raw_dir=False)
    # absl's --help lists only the main module's flags; these are defined in convert.
    flags.adopt_module_key_flags(convert)
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
    cli.run(main)
