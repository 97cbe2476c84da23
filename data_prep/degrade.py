"""Controlled degradation of one stream of an AV-MNIST clip, with its recorded strength.

Kinds (`KINDS`), each on one stream (`STREAM_OF`):

- `visual_noise`: the image is replaced by uniform grey-level noise (strength 1: nothing
  of the digit is left).
- `visual_graded`: the image is kept but degraded at a strength `s` in (0, 1]: Gaussian
  blur of `BLUR_SIGMA * s` pixels (per 28 pixels of image), a black square over
  `OCCLUSION_SIDE * s` of each side at a random place, and Gaussian pixel noise of
  `PIXEL_NOISE * s` grey levels. Weak, not empty: a classifier of clean digits still
  reads most of them (see the tests).
- `audio_noise`: white Gaussian noise added at an SNR (dB).
- `audio_mix`: two recordings of other digits (other speakers where the split has any)
  mixed in at an SNR (dB): speech that says something else, not just noise.

The strength of an audio degradation is the share of the degraded waveform's power that
is not the clip's own speech, `1 / (1 + 10^(snr / 10))` (-10 dB: 0.91, 0 dB: 0.5), so
that it reads like the visual one: 0 clean, 1 nothing left.
"""

import zlib
from typing import List, Sequence

import numpy as np

from data_prep import digit_images

KINDS = ("none", "visual_noise", "visual_graded", "audio_noise", "audio_mix")
STREAMS = ("none", "visual", "audio")
STREAM_OF = {"none": "none", "visual_noise": "visual", "visual_graded": "visual",
             "audio_noise": "audio", "audio_mix": "audio"}
BLUR_SIGMA = 1.5
OCCLUSION_SIDE = 0.45
PIXEL_NOISE = 70.0


def clip_rng(seed: int, stream: int, key: str) -> np.random.Generator:
    """A generator that depends only on the seed, the purpose and the clip."""
    return np.random.default_rng([seed, stream, zlib.crc32(key.encode())])


def draw_kinds(n: int, fractions: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """int `[n]` indices into `KINDS`: exactly `round(fractions[k] * n)` clips of kind
    `k + 1` (at most the clips left), at random, one kind per clip."""
    codes = np.zeros(n, np.int64)
    order = rng.permutation(n)
    start = 0
    for k, fraction in enumerate(fractions, start=1):
        count = min(int(round(fraction * n)), n - start)
        codes[order[start:start + count]] = k
        start += count
    return codes


def interference_share(snr_db: float) -> float:
    """Share of a mixture's power that is interference, at speech-to-interference `snr_db`."""
    return float(1.0 / (1.0 + 10.0 ** (snr_db / 10.0)))


def noise_frame(size: int, rng: np.random.Generator) -> np.ndarray:
    """A frame of uniform grey-level noise, the same shape as `digit_frame`'s."""
    grey = rng.integers(0, 256, (size, size), dtype=np.uint8)
    return np.repeat(grey[None, :, :, None], 3, axis=-1)


def graded_frame(image: np.ndarray, size: int, strength: float,
                 rng: np.random.Generator) -> np.ndarray:
    """`digit_frame(image, size)` blurred, occluded and noised at `strength` in [0, 1]."""
    import cv2

    grey = digit_images.resize(image, size).astype(np.float32)
    sigma = BLUR_SIGMA * strength * size / 28.0
    if sigma > 0:
        grey = cv2.GaussianBlur(grey, (0, 0), sigmaX=sigma)
    side = int(round(OCCLUSION_SIDE * strength * size))
    if side > 0:
        top, left = rng.integers(0, size - side + 1, 2)
        grey[top:top + side, left:left + side] = 0.0
    grey += PIXEL_NOISE * strength * rng.standard_normal(grey.shape).astype(np.float32)
    grey = np.clip(np.round(grey), 0, 255).astype(np.uint8)
    return np.repeat(grey[None, :, :, None], 3, axis=-1)


def add_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """`wave` plus white Gaussian noise whose power is the wave's divided by 10^(snr/10)."""
    power = float(np.mean(np.square(wave, dtype=np.float64)))
    sigma = np.sqrt(power / 10 ** (snr_db / 10))
    return (wave + sigma * rng.standard_normal(len(wave))).astype(np.float32)


def mix_in(wave: np.ndarray, others: Sequence[np.ndarray], snr_db: float) -> np.ndarray:
    """`wave` plus the sum of `others` (each first brought to the same power, so that no
    one dominates) scaled to `snr_db` below the wave's power; the mixture is scaled down
    as a whole if it would clip, which keeps the SNR."""
    wave = np.asarray(wave, np.float64)
    mixed = np.zeros_like(wave)
    for other in others:
        other = np.asarray(other, np.float64)
        mixed += other / max(np.sqrt(np.mean(other ** 2)), 1e-12)
    target = np.mean(wave ** 2) / 10 ** (snr_db / 10)
    mixed *= np.sqrt(target / max(np.mean(mixed ** 2), 1e-24))
    out = wave + mixed
    peak = np.abs(out).max()
    if peak > 1.0:
        out /= peak
    return out.astype(np.float32)


def pick_interferers(candidates: Sequence[tuple], digit: str, speaker: str, count: int,
                     rng: np.random.Generator) -> List[str]:
    """Keys of `count` recordings of distinct digits other than `digit`, from
    `candidates` (`(key, digit, speaker)` of the same split): other speakers' where any
    other speaker has one, else the same speaker's."""
    others = [c for c in candidates if c[1] != digit and c[2] != speaker]
    if not others:
        others = [c for c in candidates if c[1] != digit]
    by_digit = {}
    for key, d, _ in sorted(others):
        by_digit.setdefault(d, []).append(key)
    digits = sorted(by_digit)
    chosen = rng.choice(len(digits), size=min(count, len(digits)), replace=False)
    return [by_digit[digits[i]][rng.integers(len(by_digit[digits[i]]))] for i in chosen]
