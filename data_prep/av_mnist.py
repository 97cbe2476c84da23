"""AV-MNIST: spoken digits (FSDD) paired with handwritten digits of the same class.

    python -m data_prep.av_mnist --fsdd_dir=~/free-spoken-digit-dataset/recordings \\
        (--mnist_dir=~/mnist | --digits_dir=DIR | --digits_dir=sklearn) \\
        [--data_dir=~/avgmm_data] [--name=av_mnist] [--test_speakers=george] \\
        [--val_fraction=0.1] [--image_size=28] [--seed=0] \\
        [--visual_noise_fraction=0] [--audio_noise_fraction=0] [--audio_noise_snr_db=-10]

Audio: the Free Spoken Digit Dataset's `recordings/<digit>_<speaker>_<index>.wav`. Images:
MNIST as its four idx files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
`t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, plain or `.gz`), or a folder of
labelled digit images (`<digit>/<name>.png`, any format OpenCV reads), or `sklearn`:
the 1,797 8 x 8 handwritten digits bundled with scikit-learn (offline; upscaled).

Every recording is one clip, paired with an image of the same digit; each image is used
at most once. The `--test_speakers` form the test split and take their images from
MNIST's test set; validation is a seeded, class-stratified `--val_fraction` of the other
speakers' clips, and train the rest, both with images from MNIST's train set. A digits
folder (or sklearn's digits) is partitioned per class instead: the test split's images
first, the rest for train and validation. A clip whose class has no image left is
skipped and reported.

Controlled degradation, the same seeded draw in every split: `--visual_noise_fraction`
of the clips get uniform grey-level noise instead of their image, and another
`--audio_noise_fraction` get white Gaussian noise added to their waveform at
`--audio_noise_snr_db` (-10 dB: noise power 10x the speech's). The features `degraded`
(none / visual / audio) and `imbalanced` (degraded at all) record it per clip.

Audio: 8 kHz mono, tiled then cut to 1 s, clipped to [-1, 1], STFT 126 / hop 125 (Hann,
centred), `log(|S| + 1e-7)` -> 64 x 65. Images: grey levels as read (MNIST and sklearn:
bright ink on black) resized to `--image_size` and replicated to 3 channels; one frame per
clip. The `id` of a clip names both halves: `<recording>+<image>`.
"""

import dataclasses
import gzip
import json
import os
import re
import sys
import time
import zlib
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags
from tqdm.auto import tqdm

from data_prep import convert, folder, media
from data_prep.features import AV_MNIST_AUDIO, fit_length, spectrogram

DIGITS = tuple(str(d) for d in range(10))
DEGRADED = ("none", "visual", "audio")
SKLEARN = "sklearn"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".tif", ".tiff", ".gif")
MNIST_FILES = {("train", "images"): "train-images-idx3-ubyte",
               ("train", "labels"): "train-labels-idx1-ubyte",
               ("test", "images"): "t10k-images-idx3-ubyte",
               ("test", "labels"): "t10k-labels-idx1-ubyte"}
_RECORDING = re.compile(r"^([0-9])_([A-Za-z0-9-]+)_([0-9]+)\.wav$")


@dataclasses.dataclass(frozen=True)
class Recording:
    """One FSDD recording, the clip it becomes."""

    key: str  # file stem, e.g. 3_george_12
    digit: str
    speaker: str
    path: str


@dataclasses.dataclass
class ImagePool:
    """Grey-level digit images by class: `refs[d][i]` names `images[d][i]` (uint8 2-D)."""

    refs: Dict[str, List[str]]
    images: Dict[str, List[np.ndarray]]

    def count(self, digit: str) -> int:
        return len(self.refs.get(digit, []))


# ---------------------------------------------------------------- inputs
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


def read_idx(path: str) -> np.ndarray:
    """An MNIST idx file (plain or gzip) as a uint8 array."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise convert.DataPrepError(f"{path} is unreadable ({e}); download it again") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise convert.DataPrepError(f"{path} is not an unsigned-byte idx file (bad header)")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise convert.DataPrepError(f"{path} is truncated: header says {dims}, holds "
                                    f"{body.size} bytes; download it again")
    return body.reshape(dims)


def find_idx(mnist_dir: str, stem: str) -> str:
    """Path of an idx file, spelled `stem`, with `.` for the last `-`, and/or `.gz`."""
    dotted = stem[::-1].replace("-", ".", 1)[::-1]  # train-images.idx3-ubyte spelling
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if os.path.exists(os.path.join(mnist_dir, name)):
            return os.path.join(mnist_dir, name)
    raise convert.DataPrepError(
        f"--mnist_dir={mnist_dir} lacks the MNIST file {stem} (or {stem}.gz); it needs "
        f"all four of {sorted(MNIST_FILES.values())}")


def load_mnist(mnist_dir: str) -> Dict[str, ImagePool]:
    """MNIST's train and test sets as image pools (`mnist_train:<n>` / `mnist_test:<n>`)."""
    if not os.path.isdir(mnist_dir):
        raise convert.DataPrepError(f"--mnist_dir={mnist_dir} is not a directory")
    pools = {}
    for part in ("train", "test"):
        img_path = find_idx(mnist_dir, MNIST_FILES[(part, "images")])
        lab_path = find_idx(mnist_dir, MNIST_FILES[(part, "labels")])
        images, labels = read_idx(img_path), read_idx(lab_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise convert.DataPrepError(
                f"{img_path} and {lab_path} do not match: {images.shape} images, "
                f"{labels.shape} labels")
        pool = ImagePool({d: [] for d in DIGITS}, {d: [] for d in DIGITS})
        for i, label in enumerate(labels.tolist()):
            if 0 <= label <= 9:
                pool.refs[str(label)].append(f"mnist_{part}:{i}")
                pool.images[str(label)].append(images[i])
        pools[part] = pool
    return pools


def load_digits_folder(digits_dir: str) -> Tuple[ImagePool, List[Dict[str, str]]]:
    """Images of `<digit>/<name>.<ext>` under `digits_dir` (refs: relative paths), and
    failure rows for unreadable images and images outside a digit folder."""
    import cv2

    if not os.path.isdir(digits_dir):
        raise convert.DataPrepError(
            f"--digits_dir={digits_dir} is not a directory (or 'sklearn' for scikit-learn's "
            "bundled digits)")
    pool = ImagePool({d: [] for d in DIGITS}, {d: [] for d in DIGITS})
    bad = []
    paths = []
    for root, _, files in os.walk(digits_dir):
        paths += [os.path.join(root, f) for f in sorted(files)
                  if f.lower().endswith(IMAGE_EXTENSIONS)]
    for path in tqdm(sorted(paths), desc="reading digit images", unit="image",
                     dynamic_ncols=True):
        rel = os.path.relpath(path, digits_dir)
        digit = rel.split(os.sep)[0]
        if digit not in DIGITS or os.sep not in rel:
            bad.append({"image": path, "reason": "not inside a <digit>/ folder (0-9)"})
            continue
        image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if image is None or image.size == 0:
            bad.append({"image": path, "reason": "unreadable image"})
            continue
        pool.refs[digit].append(rel.replace(os.sep, "/"))
        pool.images[digit].append(image)
    if not any(pool.refs.values()):
        raise convert.DataPrepError(
            f"--digits_dir={digits_dir} holds no readable image in <digit>/ folders (0-9)")
    return pool, bad


def load_sklearn_digits() -> ImagePool:
    """scikit-learn's bundled 8 x 8 digits (`sklearn:<n>`), grey levels 0..16 -> 0..255."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise convert.DataPrepError(
            "--digits_dir=sklearn needs scikit-learn (pip install scikit-learn)") from e
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    pool = ImagePool({d: [] for d in DIGITS}, {d: [] for d in DIGITS})
    for i, label in enumerate(digits.target.tolist()):
        pool.refs[str(label)].append(f"sklearn:{i}")
        pool.images[str(label)].append(images[i])
    return pool


def partition_pool(pool: ImagePool, test_needs: Dict[str, int],
                   seed: int) -> Dict[str, ImagePool]:
    """Splits one pool per class into disjoint `test` (up to `test_needs[d]` images, drawn
    with `seed`) and `train` (the rest) pools."""
    out = {p: ImagePool({d: [] for d in DIGITS}, {d: [] for d in DIGITS})
           for p in ("train", "test")}
    for d in DIGITS:
        order = np.random.default_rng([seed, 3, int(d)]).permutation(pool.count(d))
        n_test = min(test_needs.get(d, 0), len(order))
        for rank, i in enumerate(order.tolist()):
            part = out["test" if rank < n_test else "train"]
            part.refs[d].append(pool.refs[d][i])
            part.images[d].append(pool.images[d][i])
    return out


# ---------------------------------------------------------------- processing
def digit_frame(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 `[1, size, size, 3]`: a grey-level image resized and replicated to RGB."""
    import cv2

    image = np.asarray(image, np.uint8)
    shrink = image.shape[0] >= size and image.shape[1] >= size
    resized = cv2.resize(image, (size, size),
                         interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.repeat(resized[None, :, :, None], 3, axis=-1)


def noise_frame(size: int, rng: np.random.Generator) -> np.ndarray:
    """A frame of uniform grey-level noise, the same shape as `digit_frame`'s."""
    grey = rng.integers(0, 256, (size, size), dtype=np.uint8)
    return np.repeat(grey[None, :, :, None], 3, axis=-1)


def add_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """`wave` plus white Gaussian noise whose power is the wave's divided by 10^(snr/10)."""
    power = float(np.mean(np.square(wave, dtype=np.float64)))
    sigma = np.sqrt(power / 10 ** (snr_db / 10))
    return (wave + sigma * rng.standard_normal(len(wave))).astype(np.float32)


def clip_rng(seed: int, stream: int, key: str) -> np.random.Generator:
    """A generator that depends only on the seed, the purpose and the clip."""
    return np.random.default_rng([seed, stream, zlib.crc32(key.encode())])


def draw_degradation(n: int, visual: float, audio: float, rng: np.random.Generator) -> np.ndarray:
    """int `[n]` codes (0 none, 1 visual, 2 audio): exactly `round(visual * n)` visual and
    `round(audio * n)` audio clips, at random, never both."""
    n_visual, n_audio = int(round(visual * n)), int(round(audio * n))
    n_audio = min(n_audio, n - n_visual)
    codes = np.zeros(n, np.int64)
    order = rng.permutation(n)
    codes[order[:n_visual]] = 1
    codes[order[n_visual:n_visual + n_audio]] = 2
    return codes


# ---------------------------------------------------------------- builder
class AvMnist(convert.AVBuilder):
    """AV-MNIST: spoken digits (FSDD) paired with handwritten digits of the same class,
    with a recorded share of clips whose image or audio is replaced by noise."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download the Free Spoken Digit Dataset "
        "(https://github.com/Jakobovski/free-spoken-digit-dataset) and pass its "
        "recordings/ folder as --fsdd_dir; MNIST's four idx files as --mnist_dir.")
    DEFAULT_AUDIO = AV_MNIST_AUDIO
    DEFAULT_OPTIONS = {"image_source": "mnist", "test_speakers": ["george"],
                       "val_fraction": 0.1, "seed": 0, "visual_noise_fraction": 0.0,
                       "audio_noise_fraction": 0.0, "audio_noise_snr_db": -10.0}

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
        return {"imbalanced": tfds.features.Scalar(dtype=np.bool_),
                "degraded": tfds.features.ClassLabel(names=list(DEGRADED))}

    def flat_metadata(self) -> Dict[str, Any]:
        options = dict(self.split_options)
        options["test_speakers"] = ",".join(options["test_speakers"])
        return {**super().flat_metadata(), **options}

    def list_clips(self, manual_dir: str) -> List[Recording]:
        """The recordings; checks the layout and the test speakers before tfds starts."""
        recordings, _ = list_recordings(manual_dir)
        self._check_speakers(recordings, manual_dir)
        return recordings

    def _check_speakers(self, recordings: Sequence[Recording], manual_dir: str) -> None:
        speakers = sorted({r.speaker for r in recordings})
        missing = [s for s in self.split_options["test_speakers"] if s not in speakers]
        if missing:
            raise convert.DataPrepError(
                f"--test_speakers names {missing}, who have no recording in {manual_dir}; "
                f"its speakers are {speakers}")
        if set(speakers) <= set(self.split_options["test_speakers"]):
            raise convert.DataPrepError(
                f"every speaker of {manual_dir} ({speakers}) is a test speaker: leave at "
                "least one for training")

    def _image_pools(self, test_needs: Dict[str, int]) -> Tuple[Dict[str, ImagePool], list]:
        source = self.split_options["image_source"]
        seed = self.split_options["seed"]
        if source == "mnist":
            return load_mnist(self.mnist_dir), []
        if source == SKLEARN:
            return partition_pool(load_sklearn_digits(), test_needs, seed), []
        pool, bad = load_digits_folder(self.digits_dir)
        return partition_pool(pool, test_needs, seed), bad

    def _split_generators(self, dl_manager):
        o = self.split_options
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

        # Only decoded test clips claim an image from a shared folder.
        test_needs: Dict[str, int] = {}
        for r in recordings:
            if split_of[r.key] == "test" and r.key in waves:
                test_needs[r.digit] = test_needs.get(r.digit, 0) + 1
        pools, bad_images = self._image_pools(test_needs)
        failures += bad_images

        # Pair each decoded clip with an unused image of its class, at random.
        examples: Dict[str, List[Dict[str, Any]]] = {s: [] for s in convert.SPLITS}
        for d in DIGITS:
            for p, (part, splits) in enumerate((("test", ("test",)),
                                                ("train", ("train", "validation")))):
                clips = [r for r in recordings if r.digit == d and r.key in waves
                         and split_of[r.key] in splits]
                clips = [clips[i] for i in np.random.default_rng(
                    [o["seed"], 4, int(d), p]).permutation(len(clips))]
                pool = pools[part]
                order = np.random.default_rng([o["seed"], 5, int(d), p]).permutation(
                    pool.count(d))
                for r, i in zip(clips, order.tolist()):
                    examples[split_of[r.key]].append(
                        {"recording": r, "image_ref": pool.refs[d][i],
                         "image": pool.images[d][i]})
                for r in clips[len(order):]:
                    failures.append({
                        "key": r.key, "split": split_of[r.key], "audio": r.path,
                        "reason": f"too few images of digit {d} for the {part} split(s): "
                                  f"{pool.count(d)} images for {len(clips)} clips"})
        degraded_counts = {}
        for s, items in examples.items():
            items.sort(key=lambda e: e["recording"].key)
            codes = draw_degradation(len(items), o["visual_noise_fraction"],
                                     o["audio_noise_fraction"],
                                     np.random.default_rng([o["seed"], 6, convert.SPLITS.index(s)]))
            for e, code in zip(items, codes.tolist()):
                e["degraded"] = code
            degraded_counts[s] = {name: int(np.sum(codes == k))
                                  for k, name in enumerate(DEGRADED)}

        report = os.path.join(os.path.expanduser(str(self._data_dir_root)), self.name,
                              "failures.jsonl")
        os.makedirs(os.path.dirname(report), exist_ok=True)
        with open(report, "w", encoding="utf-8") as f:
            for row in failures:
                f.write(json.dumps(row) + "\n")
        per_split = {s: {"kept": len(examples[s]),
                         "skipped": sum(row.get("split") == s for row in failures)}
                     for s in convert.SPLITS}
        elapsed = time.time() - start
        self.summary.update(
            per_split=per_split, degraded=degraded_counts,
            bad_files=sum("split" not in row for row in failures),
            images_available={p: sum(pools[p].count(d) for d in DIGITS) for p in pools},
            seconds=round(elapsed, 1))
        self.info.metadata["summary"] = self.summary
        line = ", ".join(f"{s}: {v['kept']} kept / {v['skipped']} skipped"
                         for s, v in per_split.items())
        print(f"{self.name}: {line}; {self.summary['bad_files']} other bad file(s) "
              f"({elapsed:.0f} s); failures listed in {report}", flush=True)
        if not examples["train"]:
            raise convert.DataPrepError(f"no training clip could be made; see {report}")
        self._waves = waves
        return {s: self._generate_examples(v) for s, v in examples.items() if v}

    def _splits(self, recordings: Sequence[Recording]) -> Dict[str, str]:
        """Test speakers -> test; a seeded class-stratified validation share of the rest."""
        o = self.split_options
        split_of = {r.key: "test" for r in recordings if r.speaker in o["test_speakers"]}
        rest = [r for r in recordings if r.key not in split_of]
        split_of.update(zip((r.key for r in rest), convert.stratified_split(
            [r.digit for r in rest], o["val_fraction"], 0.0, o["seed"])))
        return split_of

    def _generate_examples(self, items: Sequence[Dict[str, Any]]) -> Iterator[Tuple[str, Dict]]:
        o = self.split_options
        size = self.frames.frame_size
        for e in items:
            r = e["recording"]
            wave = self._waves[r.key]
            if e["degraded"] == 2:
                wave = add_noise(wave, o["audio_noise_snr_db"], clip_rng(o["seed"], 2, r.key))
            if e["degraded"] == 1:
                frames = noise_frame(size, clip_rng(o["seed"], 1, r.key))
            else:
                frames = digit_frame(e["image"], size)
            yield r.key, {"audio": spectrogram(wave, self.audio), "frames": frames,
                          "label": r.digit, "id": f"{r.key}+{e['image_ref']}",
                          "imbalanced": e["degraded"] != 0,
                          "degraded": DEGRADED[e["degraded"]]}

    def _download_and_prepare(self, dl_manager, download_config=None):
        super()._download_and_prepare(dl_manager, download_config=download_config)
        self._waves = {}


def check_options(o: Dict[str, Any]) -> None:
    """One-line errors for impossible conversion options."""
    if o["image_source"] not in ("mnist", "digits_folder", SKLEARN):
        raise convert.DataPrepError(f"image_source={o['image_source']!r}: use mnist, "
                                    f"digits_folder or {SKLEARN}")
    if not o["test_speakers"]:
        raise convert.DataPrepError("--test_speakers is empty: name at least one speaker")
    if not 0 <= o["val_fraction"] < 1:
        raise convert.DataPrepError(f"--val_fraction={o['val_fraction']} must be in [0, 1)")
    for k in ("visual_noise_fraction", "audio_noise_fraction"):
        if not 0 <= o[k] <= 1:
            raise convert.DataPrepError(f"--{k}={o[k]} must be in [0, 1]")
    if o["visual_noise_fraction"] + o["audio_noise_fraction"] > 1:
        raise convert.DataPrepError(
            f"--visual_noise_fraction={o['visual_noise_fraction']} plus "
            f"--audio_noise_fraction={o['audio_noise_fraction']} exceed 1 (a clip has at "
            "most one degraded stream)")


def prepare(fsdd_dir: str, data_dir: str, *, mnist_dir: Optional[str] = None,
            digits_dir: Optional[str] = None, name: str = "av_mnist", image_size: int = 28,
            test_speakers: Sequence[str] = ("george",), val_fraction: float = 0.1,
            seed: int = 0, visual_noise_fraction: float = 0.0,
            audio_noise_fraction: float = 0.0, audio_noise_snr_db: float = -10.0) -> AvMnist:
    """Builds `data_dir/<name>` (idempotent; refuses other options on the same data_dir).

    Exactly one of `mnist_dir` (the four idx files) and `digits_dir` (a `<digit>/` image
    folder, or "sklearn") gives the images.
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
    options = {"image_source": source, "test_speakers": sorted(set(test_speakers)),
               "val_fraction": float(val_fraction), "seed": int(seed),
               "visual_noise_fraction": float(visual_noise_fraction),
               "audio_noise_fraction": float(audio_noise_fraction),
               "audio_noise_snr_db": float(audio_noise_snr_db)}
    check_options(options)
    if source == "mnist":  # a missing idx file stops before any decoding
        if not os.path.isdir(expand(mnist_dir)):
            raise convert.DataPrepError(f"--mnist_dir={mnist_dir} is not a directory")
        for stem in MNIST_FILES.values():
            find_idx(expand(mnist_dir), stem)
    cls = folder.builder_class(name, base=AvMnist)
    return convert.prepare(
        cls, fsdd_dir, data_dir, audio=AV_MNIST_AUDIO,
        frames=convert.FrameParams(num_frames=1, frame_size=image_size), workers=1,
        split_options=options, mnist_dir=expand(mnist_dir),
        digits_dir=digits_dir if source == SKLEARN else expand(digits_dir))


FLAGS = flags.FLAGS


def main(argv):
    del argv
    convert.quiet_library_logs(FLAGS)
    try:
        builder = prepare(
            FLAGS.fsdd_dir, FLAGS.data_dir, mnist_dir=FLAGS.mnist_dir,
            digits_dir=FLAGS.digits_dir, name=FLAGS.name, image_size=FLAGS.image_size,
            test_speakers=[s.strip() for s in FLAGS.test_speakers.split(",") if s.strip()],
            val_fraction=FLAGS.val_fraction, seed=FLAGS.seed,
            visual_noise_fraction=FLAGS.visual_noise_fraction,
            audio_noise_fraction=FLAGS.audio_noise_fraction,
            audio_noise_snr_db=FLAGS.audio_noise_snr_db)
    except (convert.DataPrepError, ValueError) as e:
        sys.exit(f"error: {e}")
    splits = {s: v.num_examples for s, v in builder.info.splits.items()}
    print(f"{builder.name}: {splits} in {builder.data_dir}")


if __name__ == "__main__":
    flags.DEFINE_string("fsdd_dir", None, "FSDD recordings/ folder (<digit>_<speaker>_<n>.wav).")
    flags.DEFINE_string("mnist_dir", None, "Folder with MNIST's four idx files (or .gz).")
    flags.DEFINE_string("digits_dir", None,
                        "Instead of MNIST: a folder of <digit>/<name>.png images, or "
                        "'sklearn' for scikit-learn's bundled 8x8 digits (offline).")
    flags.DEFINE_string("data_dir", "~/avgmm_data", "tfds data directory to write into.")
    flags.DEFINE_string("name", "av_mnist", "tfds name of the new dataset (snake_case).")
    flags.DEFINE_string("test_speakers", "george", "Held-out speaker(s), comma-separated.")
    flags.DEFINE_float("val_fraction", 0.1, "Validation share of the other speakers' clips.")
    flags.DEFINE_integer("image_size", 28, "Stored image height and width.")
    flags.DEFINE_integer("seed", 0, "Seed of the splits, the pairing and the degradation.")
    flags.DEFINE_float("visual_noise_fraction", 0.0, "Share of clips whose image is noise.")
    flags.DEFINE_float("audio_noise_fraction", 0.0,
                       "Share of other clips whose audio is drowned in white noise.")
    flags.DEFINE_float("audio_noise_snr_db", -10.0, "SNR of that noise (dB).")
    flags.mark_flag_as_required("fsdd_dir")
    app.run(main)
