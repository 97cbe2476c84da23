"""Spectrogram recipes and the parameters recorded next to every prepared dataset."""

import dataclasses
from typing import Any, Dict

import numpy as np

LOG_EPS = 1e-7
NORMALIZATIONS = ("none", "zscore")
# How the tiled waveform becomes a time-frequency image (see `log_spectrogram`).
STFT_LOG_MAGNITUDE = "stft_log_magnitude"
SCIPY_PSD_LOG = "scipy_psd_log"
RECIPES = (STFT_LOG_MAGNITUDE, SCIPY_PSD_LOG)
# The fewest time frames and frequency bins a spectrogram may have.
MIN_FRAMES = 8


@dataclasses.dataclass(frozen=True)
class AudioParams:
    """How a waveform becomes the `audio` feature.

    The waveform is tiled (repeated) until it is `clip_seconds` long, cut to exactly that
    and clipped to [-1, 1]. Then, by `spectrogram_recipe`:

    - `stft_log_magnitude` (CREMA-D's recipe): `log(|STFT| + 1e-7)` with a Hann window;
      `center` pads by `n_fft // 2` on both sides as librosa does, or not.
    - `scipy_psd_log` (AVE's recipe, from the PMR reference code):
      `log(psd + 1e-7)` where `psd` is `scipy.signal.spectrogram(x, sample_rate,
      nperseg=n_fft, noverlap=n_fft - hop_length)` with scipy's defaults (Tukey(0.25)
      window, constant detrend, one-sided power spectral density); never centred, so it
      gives 1 + (N - n_fft) // hop frames.

    `zscore` then standardizes each sample: `(S - mean) / (std + 1e-9)`.
    """

    sample_rate: int
    clip_seconds: float
    n_fft: int = 512
    hop_length: int = 353
    center: bool = True
    normalization: str = "none"
    spectrogram_recipe: str = STFT_LOG_MAGNITUDE

    def __post_init__(self):
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization={self.normalization!r}: use one of "
                             f"{NORMALIZATIONS}")
        if self.spectrogram_recipe not in RECIPES:
            raise ValueError(f"spectrogram_recipe={self.spectrogram_recipe!r}: use one of "
                             f"{RECIPES}")
        if self.spectrogram_recipe == SCIPY_PSD_LOG and self.center:
            raise ValueError(f"spectrogram_recipe={SCIPY_PSD_LOG!r} has no centred frames: "
                             "use center=False")
        for name in ("sample_rate", "n_fft", "hop_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.hop_length > self.n_fft and self.spectrogram_recipe == SCIPY_PSD_LOG:
            raise ValueError(f"hop_length={self.hop_length} > n_fft={self.n_fft}: scipy's "
                             "segments must overlap or touch")
        if self.clip_seconds <= 0:
            raise ValueError(f"clip_seconds must be > 0, got {self.clip_seconds}")
        # Absurd settings would make a dataset the model can learn nothing from (a 257 x 1
        # "spectrogram" trains to chance and looks like a result).
        if self.n_fft > self.num_samples:
            raise ValueError(f"n_fft={self.n_fft} exceeds the {self.num_samples} samples of a "
                             f"{self.clip_seconds:g} s clip at {self.sample_rate} Hz: use "
                             f"n_fft <= {self.num_samples} (or longer clips)")
        bins, frames = self.shape
        if frames < MIN_FRAMES:
            raise ValueError(
                f"hop_length={self.hop_length} leaves {frames} time frame(s) in a "
                f"{self.clip_seconds:g} s clip (n_fft={self.n_fft}, center={self.center}); "
                f"at least {MIN_FRAMES} are needed: use hop_length <= {self._max_hop()}")
        if bins < MIN_FRAMES:
            raise ValueError(f"n_fft={self.n_fft} gives {bins} frequency bin(s); at least "
                             f"{MIN_FRAMES} are needed: use n_fft >= {2 * (MIN_FRAMES - 1)}")

    def _max_hop(self) -> int:
        """The largest hop that leaves `MIN_FRAMES` frames."""
        n = self.num_samples if self.center else self.num_samples - self.n_fft
        return max(1, n // (MIN_FRAMES - 1))

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


def log_spectrogram(wave: np.ndarray, params: AudioParams) -> np.ndarray:
    """float32 `[F, T]` log spectrogram of a mono waveform, by `params`'s recipe."""
    x = np.clip(fit_length(np.asarray(wave, np.float32), params.num_samples), -1.0, 1.0)
    if params.spectrogram_recipe == SCIPY_PSD_LOG:
        from scipy import signal

        _, _, psd = signal.spectrogram(x, params.sample_rate, nperseg=params.n_fft,
                                       noverlap=params.n_fft - params.hop_length)
        spec = np.log(psd + LOG_EPS)
    else:
        import librosa

        stft = librosa.stft(x, n_fft=params.n_fft, hop_length=params.hop_length,
                            window="hann", center=params.center)
        spec = np.log(np.abs(stft) + LOG_EPS)
    if params.normalization == "zscore":
        spec = (spec - spec.mean()) / (spec.std() + 1e-9)
    assert spec.shape == params.shape, (spec.shape, params.shape)
    return spec.astype(np.float32)


def spectrogram(wave: np.ndarray, params: AudioParams) -> np.ndarray:
    """The stored `audio` feature: `log_spectrogram` as float16 `[F, T]`."""
    return log_spectrogram(wave, params).astype(np.float16)

