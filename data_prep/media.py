"""Decoding of raw clips: audio (WAV via librosa, video containers via PyAV) and frames
(OpenCV). Every failure is a `ClipError` with a short reason, so a converter can skip the
clip, report it and go on.

No system ffmpeg is needed: PyAV's and OpenCV's wheels bundle their own FFmpeg.
"""

import math
import os
from typing import Optional

import numpy as np

# Shorter audio than this is not a clip but a decoding accident.
MIN_AUDIO_SECONDS = 0.1
# Peak amplitude under which a clip counts as silent (about -80 dBFS).
SILENCE_PEAK = 1e-4


class ClipError(Exception):
    """A clip that cannot be used; `str(e)` is the reason written to the report."""


def load_audio(path: str, sample_rate: int, start: Optional[float] = None,
               end: Optional[float] = None) -> np.ndarray:
    """Mono float32 samples at `sample_rate`, optionally cut to `[start, end)` seconds.

    WAV/FLAC/OGG files are read with librosa (soundfile); video containers (mp4, flv,
    mkv, ...) with PyAV, whose wheels decode AAC/MP3 in-process.
    """
    if not os.path.exists(path):
        raise ClipError(f"missing file {path}")
    if os.path.getsize(path) == 0:
        raise ClipError("empty file (0 bytes)")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".wav", ".flac", ".ogg"):
        wave = _load_with_librosa(path, sample_rate)
    else:
        wave = _load_with_pyav(path, sample_rate)
    if start is not None or end is not None:
        lo = int(round((start or 0.0) * sample_rate))
        hi = len(wave) if end is None else int(round(end * sample_rate))
        wave = wave[lo:hi]
    if len(wave) < MIN_AUDIO_SECONDS * sample_rate:
        raise ClipError(f"audio too short ({len(wave) / sample_rate:.3f} s)")
    if not np.all(np.isfinite(wave)):
        raise ClipError("audio has NaN or inf samples")
    if np.max(np.abs(wave)) < SILENCE_PEAK:
        raise ClipError("silent audio")
    return wave


def _load_with_librosa(path: str, sample_rate: int) -> np.ndarray:
    """soundfile decode + librosa (soxr) resampling: what `librosa.load` does, without its
    deprecated audioread fallback for unreadable files."""
    import librosa
    import soundfile

    try:
        wave, sr = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, ...
        raise ClipError(f"unreadable audio: {type(e).__name__}: {e}") from e
    wave = wave.mean(axis=1)
    if sr != sample_rate and len(wave):
        wave = librosa.resample(wave, orig_sr=sr, target_sr=sample_rate)
    return wave.astype(np.float32)


def _load_with_pyav(path: str, sample_rate: int) -> np.ndarray:
    import av

    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise ClipError("no audio track")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            chunks = []
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except ClipError:
        raise
    except Exception as e:  # av.error.* and OSError for broken containers
        raise ClipError(f"unreadable audio: {type(e).__name__}: {e}") from e
    if not chunks:
        raise ClipError("no audio samples decoded")
    return np.concatenate(chunks).astype(np.float32)


def sample_indices(first: int, last: int, count: int) -> np.ndarray:
    """`count` frame indices spread evenly over `[first, last]` (centres of equal
    segments): a fixed rule, so the same clip always gives the same frames."""
    span = last - first + 1
    return first + np.floor((np.arange(count) + 0.5) * span / count).astype(np.int64)


def read_frames(path: str, count: int, size: int, start: Optional[float] = None,
                end: Optional[float] = None) -> np.ndarray:
    """`count` RGB frames sampled evenly from the clip (or from `[start, end)` seconds),
    resized to `size` x `size`; uint8 `[count, size, size, 3]`.

    Frames are decoded sequentially (seeking by index is unreliable in FLV files).
    """
    import cv2

    if not os.path.exists(path):
        raise ClipError(f"missing file {path}")
    if os.path.getsize(path) == 0:
        raise ClipError("empty file (0 bytes)")
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise ClipError("unreadable video (OpenCV could not open it)")
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise ClipError("no video frames decoded")
    first, last = 0, len(frames) - 1
    if start is not None or end is not None:
        if fps <= 0:
            raise ClipError("video has no frame rate; cannot cut a segment")
        first = min(int(math.floor((start or 0.0) * fps)), last)
        if end is not None:
            last = max(first, min(int(math.ceil(end * fps)) - 1, last))
    out = np.empty((count, size, size, 3), np.uint8)
    for k, i in enumerate(sample_indices(first, last, count)):
        rgb = cv2.cvtColor(frames[i], cv2.COLOR_BGR2RGB)
        out[k] = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return out
