"""Handwritten digit images for AV-MNIST: the sources, and how they are shared out.

Sources: MNIST's four idx files (plain or `.gz`), a folder of `<digit>/<name>.<ext>`
images, or scikit-learn's bundled 1,797 8 x 8 digits (`sklearn`, offline).

Sharing: an image never pairs with clips of two splits. With one use per image (the
default), the test split takes its images first and train and validation draw from the
rest together. With `max_uses` > 1 each split gets its own share of each digit's images
(`partition_pool`): first enough to pair each of its clips with an image used at most
`max_uses` times, in the order test, validation, train, while images last; then the
images left over in proportion to the splits' clips, so that reuse is as rare and as even
as the pool allows. Within a share, `pair_counts` hands the images out round-robin: each
goes to `floor` or `ceil` of clips / images clips. A clip left without one is skipped.
"""

import dataclasses
import gzip
import math
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
from tqdm.auto import tqdm

from data_prep import convert

DIGITS = tuple(str(d) for d in range(10))
SKLEARN = "sklearn"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".tif", ".tiff", ".gif")
MNIST_FILES = {("train", "images"): "train-images-idx3-ubyte",
               ("train", "labels"): "train-labels-idx1-ubyte",
               ("test", "images"): "t10k-images-idx3-ubyte",
               ("test", "labels"): "t10k-labels-idx1-ubyte"}


@dataclasses.dataclass
class ImagePool:
    """Grey-level digit images by class: `refs[d][i]` names `images[d][i]` (uint8 2-D)."""

    refs: Dict[str, List[str]]
    images: Dict[str, List[np.ndarray]]

    def count(self, digit: str) -> int:
        return len(self.refs.get(digit, []))

    def total(self) -> int:
        return sum(self.count(d) for d in DIGITS)


def empty_pool() -> ImagePool:
    return ImagePool({d: [] for d in DIGITS}, {d: [] for d in DIGITS})


# ---------------------------------------------------------------- sources
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
        pool = empty_pool()
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
    pool = empty_pool()
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
    pool = empty_pool()
    for i, label in enumerate(digits.target.tolist()):
        pool.refs[str(label)].append(f"sklearn:{i}")
        pool.images[str(label)].append(images[i])
    return pool


# ---------------------------------------------------------------- sharing out
def pairing_groups(max_uses: int) -> List[Tuple[str, ...]]:
    """The splits that draw their images from one share, in the order they are served.

    With one use per image, test comes first and train and validation draw from the rest
    together (as the first release did, so its datasets come out the same); an image
    serves one clip, so no image is in two splits. With reuse, each split has its own
    share, so that an image is reused only within its split."""
    if max_uses == 1:
        return [("test",), ("train", "validation")]
    return [("test",), ("validation",), ("train",)]


def allocate(available: int, needs: Sequence[Tuple[str, int]], max_uses: int
             ) -> Dict[str, int]:
    """How many of one digit's `available` images each group gets, `needs` being
    `(group, clips)` in the order groups are served: first `ceil(clips / max_uses)` each,
    while images last; the rest in proportion to the clips (largest remainders first,
    ties to the earlier group), or with one use per image to the last group."""
    order = [g for g, _ in needs]
    clips = dict(needs)
    out, left = {}, available
    for g in order:
        out[g] = min(-(-clips[g] // max_uses), left)
        left -= out[g]
    total = sum(clips.values())
    if max_uses == 1 and order:  # nothing to spread: the last group keeps the rest
        out[order[-1]] += left
    elif left > 0 and total > 0:
        shares = {g: left * clips[g] / total for g in order}
        extra = {g: math.floor(shares[g]) for g in order}
        rest = left - sum(extra.values())
        for g in sorted(order, key=lambda g: (-(shares[g] - extra[g]), order.index(g)))[:rest]:
            extra[g] += 1
        out = {g: out[g] + extra[g] for g in order}
    return out


def partition_pool(pool: ImagePool, needs: Dict[str, Dict[str, int]], max_uses: int,
                   seed: int) -> Dict[str, ImagePool]:
    """Disjoint pools from one: `needs[group][digit]` clips to pair (groups in the order
    they are served), each image used at most `max_uses` times (see `allocate`); the
    images are drawn at random with `seed`. A pool that serves one group is kept whole,
    in its order."""
    if len(needs) == 1:
        return {next(iter(needs)): pool}
    out = {g: empty_pool() for g in needs}
    for d in DIGITS:
        counts = allocate(pool.count(d), [(g, n.get(d, 0)) for g, n in needs.items()],
                          max_uses)
        order = np.random.default_rng([seed, 3, int(d)]).permutation(pool.count(d)).tolist()
        start = 0
        for g, count in counts.items():
            for i in order[start:start + count]:
                out[g].refs[d].append(pool.refs[d][i])
                out[g].images[d].append(pool.images[d][i])
            start += count
    return out


def pair_counts(n_clips: int, n_images: int, max_uses: int,
                rng: np.random.Generator) -> List[int]:
    """The image index of each of `n_clips` clips (in their order): a random order of the
    `n_images` images, repeated round-robin, at most `max_uses` rounds; clips beyond
    `n_images * max_uses` get none (the list is shorter)."""
    if n_images == 0:
        return []
    order = rng.permutation(n_images).tolist()
    return [order[k % n_images] for k in range(min(n_clips, n_images * max_uses))]


def digit_frame(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 `[1, size, size, 3]`: a grey-level image resized and replicated to RGB."""
    return np.repeat(resize(image, size)[None, :, :, None], 3, axis=-1)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 `[size, size]`: area averaging to shrink, bilinear to enlarge."""
    import cv2

    image = np.asarray(image, np.uint8)
    shrink = image.shape[0] >= size and image.shape[1] >= size
    return cv2.resize(image, (size, size),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

