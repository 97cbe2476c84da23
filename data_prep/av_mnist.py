"""AV-MNIST: spoken digits (FSDD) paired with handwritten digits of the same class.

    python -m data_prep.av_mnist --fsdd_dir=~/free-spoken-digit-dataset/recordings \\
        (--mnist_dir=~/mnist | --digits_dir=DIR | --digits_dir=sklearn) \\
        [--setting=noise|graded|two_sided|none|conflict] [--data_dir=~/avgmm_data] \\
        [--name=...] [--test_speakers=george] [--val_speakers=jackson | --val_fraction=0.1] \\
        [--max_image_uses=1] [--image_size=28] [--seed=0] [degradation / conflict flags]

Audio: the Free Spoken Digit Dataset's `recordings/<digit>_<speaker>_<index>.wav`. Images:
MNIST as its four idx files, a folder of `<digit>/<name>.png` images, or `sklearn`: the
1,797 8 x 8 handwritten digits bundled with scikit-learn (offline; upscaled).

Splits: the `--test_speakers` form the test split and the `--val_speakers` the
validation split (held-out speakers both); without `--val_speakers`, validation is a
seeded, class-stratified `--val_fraction` of the other speakers' clips. MNIST's test
images go to the test split, its train images to train and validation; a digits folder
(or sklearn's digits) is shared out per class, test first. Images never cross splits;
within a split an image pairs with at most `--max_image_uses` clips (1 by default; see
`digit_images` for how they are shared). A clip left without an image is skipped and
reported (with sklearn's digits and one use each, 1,297 of the 2,000 non-test clips of
5 FSDD speakers get one).

Benchmark settings (`--setting`, each its own dataset, `av_mnist_<setting>` by default,
so all five live in one data_dir): george is the test speaker, jackson the validation
speaker, the other speakers train, and an image pairs with at most 2 clips (scikit-learn's
digits are fewer than FSDD's recordings). Then:

- `noise`: 30% of each split's clips get a pure-noise image (the study's setting);
- `graded`: 30% get an image blurred, occluded and noised at a random strength in
  [0.3, 1] (weak, not empty);
- `two_sided`: 20% get such a graded image and another 20% their speech mixed with two
  other spoken digits at an SNR drawn from [-6, 0] dB;
- `none`: no synthetic degradation (the natural imbalance of speech vs handwriting);
- `conflict`: 20% get a wrong digit's image blended over theirs (weight 0.7) and another
  20% a wrong digit's speech 6 dB above theirs: confidently wrong streams (`conflict`).

A setting fixes the degradation (its flags are refused with it); the split flags above
still apply. Without `--setting` every degradation flag is free (all 0 by default):
`--visual_noise_fraction`, `--visual_graded_fraction` (at `--visual_strength=LO,HI`),
`--audio_noise_fraction` (white noise at `--audio_noise_snr_db`) and
`--audio_mix_fraction` (at `--audio_mix_snr_db=LO,HI`); a clip gets at most one, drawn
with `--seed`, exact counts per split (see `degrade` for each kind); so are the
conflict flags `--visual_conflict_fraction`, `--audio_conflict_fraction`,
`--conflict_mode=mix|replace`, `--visual_conflict_weight`, `--audio_conflict_snr_db`.

Recorded per clip: `degraded` (none / visual / audio), `degradation` (the kind),
`degradation_strength` (0 clean .. 1 nothing left; see `degrade`) and `imbalanced`
(degraded at all), and with a conflict `wrong_digit`;
`<data_dir>/<name>/degradations.jsonl` lists each degraded clip's strength, SNR, the
recordings mixed into it and any wrong digit.

Audio: 8 kHz mono, tiled then cut to 1 s, clipped to [-1, 1], STFT 126 / hop 125 (Hann,
centred), `log(|S| + 1e-7)` -> 64 x 65. Images: grey levels as read (bright ink on black)
resized to `--image_size` and replicated to 3 channels; one frame per clip. The `id` of a
clip names both halves: `<recording>+<image>`.
"""

import dataclasses
import json
import os
import re
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds
from absl import flags
from tqdm.auto import tqdm

from data_prep import cli, conflict, convert, degrade, digit_images, folder, media, registry
from data_prep.av_mnist_options import (DEFAULT_OPTIONS, FRACTIONS, KNOWN_OPTIONS, SETTINGS,
                                        check_options, resolve_options)
from data_prep.digit_images import DIGITS, SKLEARN
from data_prep.features import AudioParams, fit_length, spectrogram

# 8 kHz (FSDD's native rate), 1 s; a 126-point STFT with hop 125 gives 64 x 65.
AUDIO = AudioParams(sample_rate=8000, clip_seconds=1.0, n_fft=126, hop_length=125,
                    center=True, normalization="none")
_RECORDING = re.compile(r"^([0-9])_([A-Za-z0-9-]+)_([0-9]+)\.wav$")
INTERFERERS = 2  # recordings mixed into an `audio_mix` clip

DATASETS = (
    registry.DatasetEntry(
        tfds_name="av_mnist", prepare_name="av_mnist", display_name="AV-MNIST",
        inputs="--fsdd_dir=<FSDD recordings folder> --mnist_dir=<MNIST idx files folder>",
        audio=AUDIO, config="av_mnist.py"),
    *(registry.DatasetEntry(
        tfds_name=f"av_mnist_{s}", prepare_name=f"av_mnist_{s}",
        display_name=f"AV-MNIST ({s.replace('_', '-')})", args=(f"--setting={s}",),
        inputs="--fsdd_dir=<FSDD recordings folder> --digits_dir=sklearn", audio=AUDIO,
        config=f"av_mnist.py:{s}") for s in SETTINGS),
)


@dataclasses.dataclass(frozen=True)
class Recording:
    """One FSDD recording, the clip it becomes."""

    key: str  # file stem, e.g. 3_george_12
    digit: str
    speaker: str
    path: str


def list_recordings(fsdd_dir: str) -> Tuple[List[Recording], List[Dict[str, str]]]:
    """Recordings of `fsdd_dir`, and failure rows for `.wav` files not named
    `<digit>_<speaker>_<index>.wav`."""
    if not os.path.isdir(fsdd_dir):
        raise convert.DataPrepError(
            f"--fsdd_dir={fsdd_dir} is not a directory: point it at the recordings/ folder "
            "of the Free Spoken Digit Dataset")
    recordings, bad = [], []
    for name in sorted(os.listdir(fsdd_dir)):
        if not name.lower().endswith(".wav"):
            continue
        m = _RECORDING.match(name)
        if not m:
            bad.append({"audio": os.path.join(fsdd_dir, name),
                        "reason": "file name is not <digit>_<speaker>_<index>.wav"})
            continue
        recordings.append(Recording(key=name[:-4], digit=m.group(1), speaker=m.group(2),
                                    path=os.path.join(fsdd_dir, name)))
    if not recordings:
        raise convert.DataPrepError(
            f"{fsdd_dir} holds no <digit>_<speaker>_<index>.wav file; is --fsdd_dir the "
            "FSDD recordings/ folder?")
    return recordings, bad


class AvMnist(convert.AVBuilder):
    """AV-MNIST: spoken digits (FSDD) paired with handwritten digits of the same class,
    with a recorded share of clips whose image or audio is degraded."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "First release.",
                     "1.1.0": "Validation speakers, image reuse within a split, graded "
                              "images, mixed-in speech and the four benchmark settings; "
                              "records degradation and degradation_strength. Without "
                              "them, clips pair and degrade exactly as in 1.0.0."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download the Free Spoken Digit Dataset "
        "(https://github.com/Jakobovski/free-spoken-digit-dataset) and pass its "
        "recordings/ folder as --fsdd_dir; MNIST's four idx files as --mnist_dir.")
    DEFAULT_AUDIO = AUDIO
    DEFAULT_OPTIONS = DEFAULT_OPTIONS

    def __init__(self, *, mnist_dir: Optional[str] = None, digits_dir: Optional[str] = None,
                 **kwargs):
        self.mnist_dir = mnist_dir
        self.digits_dir = digits_dir
        super().__init__(**kwargs)
        self.split_options = {**self.DEFAULT_OPTIONS, **self.split_options}
        check_options(self.split_options)

    def class_names(self) -> List[str]:
        return list(DIGITS)

    def extra_features(self) -> Dict[str, Any]:
        kinds = conflict.kinds(self.split_options)
        wrong = ({"wrong_digit": tfds.features.Scalar(dtype=np.int32)}
                 if conflict.asked(self.split_options) else {})
        return {"imbalanced": tfds.features.Scalar(dtype=np.bool_),
                "degraded": tfds.features.ClassLabel(names=list(degrade.STREAMS)),
                "degradation": tfds.features.ClassLabel(names=list(kinds)),
                "degradation_strength": tfds.features.Scalar(dtype=np.float32), **wrong}

    def flat_metadata(self) -> Dict[str, Any]:
        options = dict(self.split_options)
        for key in ("test_speakers", "val_speakers"):
            options[key] = ",".join(options[key])
        return {**super().flat_metadata(), **options}

    def list_clips(self, manual_dir: str) -> List[Recording]:
        """The recordings; checks the layout and the speakers before tfds starts."""
        recordings, _ = list_recordings(manual_dir)
        self._check_speakers(recordings, manual_dir)
        return recordings

    def _check_speakers(self, recordings: Sequence[Recording], manual_dir: str) -> None:
        o = self.split_options
        speakers = sorted({r.speaker for r in recordings})
        for flag in ("test_speakers", "val_speakers"):
            missing = [s for s in o[flag] if s not in speakers]
            if missing:
                raise convert.DataPrepError(
                    f"--{flag} names {missing}, who have no recording in {manual_dir}; "
                    f"its speakers are {speakers}")
        if set(speakers) <= set(o["test_speakers"]) | set(o["val_speakers"]):
            raise convert.DataPrepError(
                f"every speaker of {manual_dir} ({speakers}) is a test or validation "
                "speaker: leave at least one for training")

    def _image_pools(self, needs: Dict[str, Dict[str, int]]
                     ) -> Tuple[Dict[str, digit_images.ImagePool], list]:
        """The image pool of each pairing group (`"+".join(splits)`), disjoint."""
        o = self.split_options
        groups = ["+".join(g) for g in digit_images.pairing_groups(o["max_image_uses"])]

        def share(pool, names):
            wanted = {}
            for name in names:
                splits = name.split("+")
                wanted[name] = {d: sum(needs[s][d] for s in splits) for d in DIGITS}
            return digit_images.partition_pool(pool, wanted, o["max_image_uses"], o["seed"])

        if o["image_source"] == "mnist":  # MNIST's test images for the test split
            mnist = digit_images.load_mnist(self.mnist_dir)
            return {**share(mnist["test"], ["test"]),
                    **share(mnist["train"], [g for g in groups if g != "test"])}, []
        if o["image_source"] == SKLEARN:
            pool, bad = digit_images.load_sklearn_digits(), []
        else:
            pool, bad = digit_images.load_digits_folder(self.digits_dir)
        return share(pool, groups), bad

    def _split_generators(self, dl_manager):
        manual_dir = os.path.expanduser(str(dl_manager.manual_dir))
        start = time.time()
        recordings, failures = list_recordings(manual_dir)
        self._check_speakers(recordings, manual_dir)
        split_of = self._splits(recordings)
        waves: Dict[str, np.ndarray] = {}
        for r in tqdm(recordings, desc=f"{self.name}: decoding", unit="clip",
                      dynamic_ncols=True):
            try:
                wave = media.load_audio(r.path, self.audio.sample_rate)
            except media.ClipError as e:
                failures.append({"key": r.key, "split": split_of[r.key], "audio": r.path,
                                 "reason": str(e)})
                continue
            waves[r.key] = np.clip(fit_length(wave, self.audio.num_samples), -1.0, 1.0)
        decoded = [r for r in recordings if r.key in waves]
        # Only decoded clips claim images.
        needs = {s: {d: sum(r.digit == d and split_of[r.key] == s for r in decoded)
                     for d in DIGITS} for s in convert.SPLITS}
        pools, bad_images = self._image_pools(needs)
        failures += bad_images
        examples = self._pair(decoded, split_of, pools, failures)
        degraded_counts = self._draw_degradation(examples, decoded, split_of, pools)

        report = convert.write_jsonl_report(self, "failures.jsonl", failures)
        # What each degraded clip got, to check or redo it: strength, SNR, speech mixed in.
        with open(os.path.join(os.path.dirname(report), "degradations.jsonl"), "w",
                  encoding="utf-8") as f:
            for s, items in examples.items():
                for e in items:
                    if e["kind"] != "none":
                        f.write(json.dumps({"key": e["recording"].key, "split": s,
                                            "kind": e["kind"], "strength": e["strength"],
                                            "snr_db": e["snr_db"],
                                            "mixed_in": e["others"],
                                            **conflict.record(e["conflict"])}) + "\n")
        per_split = {s: {"kept": len(examples[s]),
                         "skipped": sum(row.get("split") == s for row in failures)}
                     for s in convert.SPLITS}
        elapsed = time.time() - start
        self.summary.update(
            per_split=per_split, degraded=degraded_counts,
            bad_files=sum("split" not in row for row in failures),
            images_available={s: pools[s].total() for s in pools},
            images_used={s: len({e["image_ref"] for e in examples[s]}) for s in examples},
            seconds=round(elapsed, 1))
        self.info.metadata["summary"] = self.summary
        self.split_source = split_source(self.split_options)
        self.info.metadata["split_source"] = self.split_source
        line = ", ".join(f"{s}: {v['kept']} kept / {v['skipped']} skipped"
                         for s, v in per_split.items())
        print(f"{self.name}: {line}; {self.summary['bad_files']} other bad file(s) "
              f"({elapsed:.0f} s); failures listed in {report}", flush=True)
        if not examples["train"]:
            raise convert.DataPrepError(f"no training clip could be made; see {report}")
        self._waves = waves
        return {s: self._generate_examples(v) for s, v in examples.items() if v}

    def _splits(self, recordings: Sequence[Recording]) -> Dict[str, str]:
        """Test speakers -> test; validation speakers -> validation, or without them a
        seeded class-stratified validation share of the rest; train the rest."""
        o = self.split_options
        split_of = {r.key: "test" for r in recordings if r.speaker in o["test_speakers"]}
        split_of.update({r.key: "validation" for r in recordings
                         if r.speaker in o["val_speakers"]})
        rest = [r for r in recordings if r.key not in split_of]
        split_of.update(zip((r.key for r in rest), convert.stratified_split(
            [r.digit for r in rest], o["val_fraction"], 0.0, o["seed"])))
        return split_of

    def _pair(self, decoded: Sequence[Recording], split_of: Dict[str, str],
              pools: Dict[str, digit_images.ImagePool],
              failures: List[Dict[str, Any]]) -> Dict[str, List[Dict[str, Any]]]:
        """Each decoded clip with an image of its class from its group's pool, at random;
        clips beyond what `max_image_uses` allows are reported in `failures`."""
        o = self.split_options
        examples: Dict[str, List[Dict[str, Any]]] = {s: [] for s in convert.SPLITS}
        groups = digit_images.pairing_groups(o["max_image_uses"])
        for d in DIGITS:
            for g, splits in enumerate(groups):
                clips = [r for r in decoded if r.digit == d and split_of[r.key] in splits]
                clips = [clips[i] for i in np.random.default_rng(
                    [o["seed"], 4, int(d), g]).permutation(len(clips))]
                pool = pools["+".join(splits)]
                picks = digit_images.pair_counts(
                    len(clips), pool.count(d), o["max_image_uses"],
                    np.random.default_rng([o["seed"], 5, int(d), g]))
                for r, i in zip(clips, picks):
                    examples[split_of[r.key]].append(
                        {"recording": r, "image_ref": pool.refs[d][i],
                         "image": pool.images[d][i]})
                for r in clips[len(picks):]:
                    failures.append({
                        "key": r.key, "split": split_of[r.key], "audio": r.path,
                        "reason": f"too few images of digit {d} for the {'/'.join(splits)} "
                                  f"split(s): {pool.count(d)} images, each for at most "
                                  f"{o['max_image_uses']} clip(s), for {len(clips)} clips"})
        return examples

    def _draw_degradation(self, examples, decoded, split_of, pools
                          ) -> Dict[str, Dict[str, int]]:
        """Draws each clip's degradation or conflict kind, strength and (for mixed
        speech) the recordings mixed in; returns the counts per split and kind."""
        o = self.split_options
        counts = {}
        kinds = conflict.kinds(o)
        group_of = {s: "+".join(g) for g in digit_images.pairing_groups(o["max_image_uses"])
                    for s in g}
        for p, s in enumerate(convert.SPLITS):
            items = sorted(examples[s], key=lambda e: e["recording"].key)
            examples[s] = items
            # Conflict fractions last: without them the draw is what it always was.
            codes = degrade.draw_kinds(len(items), [o[f] for f in FRACTIONS] +
                                       conflict.fractions(o)[:len(kinds) - len(degrade.KINDS)],
                                       np.random.default_rng([o["seed"], 6, p]))
            same_split = [(r.key, r.digit, r.speaker) for r in decoded if split_of[r.key] == s]
            for e, code in zip(items, codes.tolist()):
                r = e["recording"]
                e["kind"] = kinds[code]
                e["snr_db"] = None
                e["others"] = []
                e["conflict"] = None
                rng = degrade.clip_rng(o["seed"], 8, r.key)
                if e["kind"] == "visual_noise":
                    e["strength"] = 1.0
                elif e["kind"] == "visual_graded":
                    e["strength"] = float(rng.uniform(*o["visual_strength"]))
                elif e["kind"] == "audio_noise":
                    e["snr_db"] = o["audio_noise_snr_db"]
                elif e["kind"] == "audio_mix":
                    e["snr_db"] = float(rng.uniform(*o["audio_mix_snr_db"]))
                    e["others"] = degrade.pick_interferers(same_split, r.digit, r.speaker,
                                                           INTERFERERS, rng)
                elif e["kind"] in conflict.KINDS:
                    e["conflict"] = conflict.draw(e["kind"], r.digit, r.speaker, o, same_split,
                                                  pools[group_of[s]],
                                                  degrade.clip_rng(o["seed"], 9, r.key))
                    e.update(strength=e["conflict"]["strength"], snr_db=e["conflict"]["snr_db"],
                             others=e["conflict"]["others"])
                if e["snr_db"] is not None and e["conflict"] is None:
                    e["strength"] = degrade.interference_share(e["snr_db"])
                if e["kind"] == "none":
                    e["strength"] = 0.0
            counts[s] = {k: int(np.sum(codes == i)) for i, k in enumerate(kinds)}
        return counts

    def _generate_examples(self, items: Sequence[Dict[str, Any]]) -> Iterator[Tuple[str, Dict]]:
        o = self.split_options
        size = self.frames.frame_size
        for e in items:
            r, kind = e["recording"], e["kind"]
            wave = self._waves[r.key]
            wrong = ({"wrong_digit": int(e["conflict"]["wrong_digit"]) if e["conflict"]
                      else conflict.NO_DIGIT} if conflict.asked(o) else {})
            if kind == "audio_noise":
                wave = degrade.add_noise(wave, e["snr_db"], degrade.clip_rng(o["seed"], 2, r.key))
            elif kind == "audio_mix":
                wave = degrade.mix_in(wave, [self._waves[k] for k in e["others"]], e["snr_db"])
            elif kind == "audio_conflict":
                wave = conflict.wave(wave, self._waves[e["others"][0]], e["conflict"])
            if kind == "visual_noise":
                frames = degrade.noise_frame(size, degrade.clip_rng(o["seed"], 1, r.key))
            elif kind == "visual_graded":
                frames = degrade.graded_frame(e["image"], size, e["strength"],
                                              degrade.clip_rng(o["seed"], 1, r.key))
            elif kind == "visual_conflict":
                frames = conflict.frame(e["image"], e["conflict"], size)
            else:
                frames = digit_images.digit_frame(e["image"], size)
            yield r.key, {"audio": spectrogram(wave, self.audio), "frames": frames,
                          "label": r.digit, "id": f"{r.key}+{e['image_ref']}",
                          "imbalanced": kind != "none",
                          "degraded": conflict.stream_of(kind), "degradation": kind,
                          "degradation_strength": np.float32(e["strength"]), **wrong}

    def _download_and_prepare(self, dl_manager, download_config=None):
        super()._download_and_prepare(dl_manager, download_config=download_config)
        self._waves = {}


def split_source(o: Dict[str, Any]) -> str:
    """`speakers: test george, validation jackson; seed 0` (or `validation 0.1 of the
    others`): the recorded `split_source`."""
    validation = (",".join(o["val_speakers"]) if o["val_speakers"]
                  else f"{o['val_fraction']:g} of the others")
    return (f"speakers: test {','.join(o['test_speakers'])}, validation {validation}; "
            f"seed {o['seed']}")


def prepare(fsdd_dir: str, data_dir: str, *, mnist_dir: Optional[str] = None,
            digits_dir: Optional[str] = None, setting: Optional[str] = None,
            name: Optional[str] = None, image_size: int = 28, overwrite: bool = False,
            **options) -> AvMnist:
    """Builds `data_dir/<name>` (idempotent; refuses other options under the same name
    unless `overwrite`). `name` defaults to `av_mnist_<setting>` or `av_mnist`.

    Exactly one of `mnist_dir` (the four idx files) and `digits_dir` (a `<digit>/` image
    folder, or "sklearn") gives the images; `options` are those of `DEFAULT_OPTIONS`.
    """
    if (mnist_dir is None) == (digits_dir is None):
        raise convert.DataPrepError("give exactly one of --mnist_dir (MNIST idx files) and "
                                    "--digits_dir (a <digit>/ image folder, or sklearn)")
    if digits_dir is None:
        source = "mnist"
    elif digits_dir == SKLEARN:
        source = SKLEARN
    else:
        source = "digits_folder"
    expand = lambda p: p and os.path.abspath(os.path.expanduser(p))  # noqa: E731
    fsdd_dir = expand(fsdd_dir)
    if not os.path.isdir(fsdd_dir):
        list_recordings(fsdd_dir)  # raises the one-line error
    options = resolve_options(setting, {**options, "image_source": source})
    if source == "mnist":  # a missing idx file stops before any decoding
        if not os.path.isdir(expand(mnist_dir)):
            raise convert.DataPrepError(f"--mnist_dir={mnist_dir} is not a directory")
        for stem in digit_images.MNIST_FILES.values():
            digit_images.find_idx(expand(mnist_dir), stem)
    name = name or ("av_mnist_" + options["setting"] if options["setting"] else "av_mnist")
    cls = folder.builder_class(name, base=AvMnist)
    return convert.prepare(
        cls, fsdd_dir, data_dir, overwrite=overwrite, audio=AUDIO,
        frames=convert.FrameParams(num_frames=1, frame_size=image_size), workers=1,
        split_options=options, mnist_dir=expand(mnist_dir),
        digits_dir=digits_dir if source == SKLEARN else expand(digits_dir))


FLAGS = flags.FLAGS
_LISTS = ("test_speakers", "val_speakers")
_RANGES = ("visual_strength", "audio_mix_snr_db")


def _range(key: str, text: str) -> List[float]:
    """`LO,HI` (or one value for both) as two floats."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise convert.DataPrepError(f"--{key}={text}: give LO,HI (two numbers)")
    return values * (3 - len(values))


def main(argv):
    del argv
    convert.quiet_library_logs(FLAGS)
    try:
        given = {}
        for key in KNOWN_OPTIONS:
            if key in ("setting", "image_source") or not FLAGS[key].present:
                continue
            value = FLAGS[key].value
            if key in _LISTS:
                value = [s.strip() for s in value.split(",") if s.strip()]
            elif key in _RANGES:
                value = _range(key, value)
            given[key] = value
        builder = prepare(FLAGS.fsdd_dir, FLAGS.data_dir, mnist_dir=FLAGS.mnist_dir,
                          digits_dir=FLAGS.digits_dir, setting=FLAGS.setting, name=FLAGS.name,
                          image_size=FLAGS.image_size, overwrite=FLAGS.overwrite, **given)
    except (convert.DataPrepError, ValueError) as e:
        cli.fail(e)
    splits = {s: v.num_examples for s, v in builder.info.splits.items()}
    print(f"{builder.name}: {splits} in {builder.data_dir}")


if __name__ == "__main__":
    flags.DEFINE_string("fsdd_dir", None, "FSDD recordings/ folder (<digit>_<speaker>_<n>.wav).")
    flags.DEFINE_string("mnist_dir", None, "Folder with MNIST's four idx files (or .gz).")
    flags.DEFINE_string("digits_dir", None,
                        "Instead of MNIST: a folder of <digit>/<name>.png images, or "
                        "'sklearn' for scikit-learn's bundled 8x8 digits (offline).")
    flags.DEFINE_string("data_dir", "~/avgmm_data", "tfds data directory to write into.")
    flags.DEFINE_string("setting", None, "A benchmark setting: noise, graded, two_sided, none "
                        "or conflict (fixes the degradation; names the dataset "
                        "av_mnist_<setting>).")
    flags.DEFINE_string("name", None, "tfds name of the new dataset (snake_case; default "
                        "av_mnist_<setting>, or av_mnist without --setting).")
    flags.DEFINE_string("test_speakers", "george", "Held-out test speaker(s), comma-separated.")
    flags.DEFINE_string("val_speakers", "", "Held-out validation speaker(s) (settings: "
                        "jackson); without them --val_fraction of the other speakers' clips.")
    flags.DEFINE_float("val_fraction", 0.1, "Validation share of the training speakers' clips.")
    flags.DEFINE_integer("max_image_uses", 1, "Clips of one split an image may pair with "
                         "(settings: 2).")
    flags.DEFINE_integer("image_size", 28, "Stored image height and width.")
    flags.DEFINE_integer("seed", 0, "Seed of the splits, the pairing and the degradation.")
    flags.DEFINE_float("visual_noise_fraction", 0.0, "Share of clips whose image is noise.")
    flags.DEFINE_float("visual_graded_fraction", 0.0,
                       "Share of clips whose image is blurred, occluded and noised.")
    flags.DEFINE_string("visual_strength", "0.3,1.0", "LO,HI: range of that strength (0..1).")
    flags.DEFINE_float("audio_noise_fraction", 0.0,
                       "Share of clips whose audio is drowned in white noise.")
    flags.DEFINE_float("audio_noise_snr_db", -10.0, "SNR of that noise (dB).")
    flags.DEFINE_float("audio_mix_fraction", 0.0,
                       "Share of clips whose speech is mixed with two other spoken digits.")
    flags.DEFINE_string("audio_mix_snr_db", "-6,0", "LO,HI: range of that SNR (dB).")
    flags.DEFINE_float("visual_conflict_fraction", 0.0, "Share of clips whose image shows "
                       "a wrong digit (see conflict).")
    flags.DEFINE_float("audio_conflict_fraction", 0.0, "Share of clips whose speech says "
                       "a wrong digit.")
    flags.DEFINE_string("conflict_mode", "mix", "mix (the wrong digit over the right one) "
                        "or replace (the wrong digit alone).")
    flags.DEFINE_float("visual_conflict_weight", 0.7, "mix: the wrong image's weight (0.5, 1].")
    flags.DEFINE_float("audio_conflict_snr_db", -6.0, "mix: the clip's own speech against the "
                       "wrong digit's (dB, below 0).")
    flags.DEFINE_bool("overwrite", False, "Delete a dataset already prepared under this name "
                      "and convert again.")
    flags.mark_flag_as_required("fsdd_dir")
    cli.run(main)
