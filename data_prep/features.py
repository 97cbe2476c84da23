"""Spectrogram recipes and the parameters recorded next to every prepared dataset."""

import dataclasses
from typing import Any, Dict

import numpy as np

LOG_EPS = 1e-7
NORMALIZATIONS = ("none", "zscore")


@dataclasses.dataclass(frozen=True)
class AudioParams:
    """How a waveform becomes the `audio` feature (SPEC §6).

    The waveform is tiled (repeated) until it is `clip_seconds` long, cut to exactly that,
    clipped to [-1, 1], and turned into `log(|STFT| + 1e-7)` with a Hann window; `center`
    pads by `n_fft // 2` on both sides as librosa does (CREMA-D's recipe) or not (AVE's,
    which gives 1 + (N - n_fft) // hop frames). `zscore` then standardizes each sample.
    """

    sample_rate: int
    clip_seconds: float
    n_fft: int = 512
    hop_length: int = 353
    center: bool = True
    normalization: str = "none"

    def __post_init__(self):
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization={self.normalization!r}: use one of "
                             f"{NORMALIZATIONS}")
        for name in ("sample_rate", "n_fft", "hop_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.clip_seconds <= 0:
            raise ValueError(f"clip_seconds must be > 0, got {self.clip_seconds}")

    @property
    def num_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))

    @property
    def shape(self):
        """`(F, T)` of the spectrogram."""
        n = self.num_samples if self.center else self.num_samples - self.n_fft
        return (self.n_fft // 2 + 1, 1 + n // self.hop_length)

    def as_metadata(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def fit_length(wave: np.ndarray, num_samples: int) -> np.ndarray:
    """Tiles `wave` until it has `num_samples` samples, then cuts it to exactly that."""
    reps = -(-num_samples // len(wave))
    return np.tile(wave, reps)[:num_samples]


def spectrogram(wave: np.ndarray, params: AudioParams) -> np.ndarray:
    """float16 `[F, T]` log-magnitude spectrogram of a mono waveform."""
    import librosa

    x = np.clip(fit_length(np.asarray(wave, np.float32), params.num_samples), -1.0, 1.0)
    stft = librosa.stft(x, n_fft=params.n_fft, hop_length=params.hop_length,
                        window="hann", center=params.center)
    spec = np.log(np.abs(stft) + LOG_EPS)
    if params.normalization == "zscore":
        spec = (spec - spec.mean()) / (spec.std() + 1e-9)
    assert spec.shape == params.shape, (spec.shape, params.shape)
    return spec.astype(np.float16)


CREMA_D_AUDIO = AudioParams(sample_rate=22050, clip_seconds=3.0, n_fft=512, hop_length=353,
                            center=True, normalization="none")
AVE_AUDIO = AudioParams(sample_rate=16000, clip_seconds=10.0, n_fft=512, hop_length=159,
                        center=False, normalization="zscore")
# 8 kHz (FSDD's native rate), 1 s; a 126-point STFT with hop 125 gives 64 x 65.
AV_MNIST_AUDIO = AudioParams(sample_rate=8000, clip_seconds=1.0, n_fft=126, hop_length=125,
                             center=True, normalization="none")
