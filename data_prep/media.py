"""Decoding of raw clips: audio (WAV via librosa, video containers via PyAV) and frames
(OpenCV). Every failure is a `ClipError` with a short reason, so a converter can skip the
clip, report it and go on.

No system ffmpeg is needed: PyAV's and OpenCV's wheels bundle their own FFmpeg.
"""

import math
import os
from typing import Dict, Optional, Set, Tuple

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
            # Planar float in the source's own layout, then the mean of the channels: the
            # mono of librosa and of `ffmpeg -ac 1` to PCM. FFmpeg's float downmix to mono
            # instead sums the two channels of a stereo track at 1/sqrt(2) each, a
            # sqrt(2) louder waveform than either.
            resampler = av.AudioResampler(format="fltp", rate=sample_rate)
            chunks = []
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().mean(axis=0))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().mean(axis=0))
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


# A clip whose decoded video covers less than this fraction of what its container (or
# its audio) says is truncated: its few frames would stand for the whole clip.
MIN_VIDEO_COVERAGE = 0.5
# Frames kept either side of each frame the container's frame count points at, so that a
# count that is off by a few (FLV files often say one too many) needs no second pass.
_SLACK = 4


def read_frames(path: str, count: int, size: int, start: Optional[float] = None,
                end: Optional[float] = None,
                fallback_seconds: Optional[float] = None) -> np.ndarray:
    """`count` RGB frames sampled evenly from the clip (or from `[start, end)` seconds),
    resized to `size` x `size`; uint8 `[count, size, size, 3]`.

    Frames are decoded sequentially (seeking by index is unreliable in FLV files) but
    only the frames near the sampled ones are kept, each resized at once, so memory does
    not grow with the clip's length or resolution. The sampled indices are those of
    `sample_indices` over the frames that actually decode.

    Raises `ClipError` for a clip whose decoded frames cover less than
    `MIN_VIDEO_COVERAGE` of its expected length (the container's frame count, or
    `fallback_seconds` of audio when the container gives none), that has fewer than
    `count` distinct frames in the asked span, or that `check_intact` finds cut short.
    """
    import cv2

    if not os.path.exists(path):
        raise ClipError(f"missing file {path}")
    if os.path.getsize(path) == 0:
        raise ClipError("empty file (0 bytes)")
    check_intact(path)
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise ClipError("unreadable video (OpenCV could not open it)")
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        hinted = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if (start is not None or end is not None) and fps <= 0:
            raise ClipError("video has no frame rate; cannot cut a segment")
        # Frames at and after `stop` are never sampled: no need to decode them.
        stop = None if end is None else int(math.ceil(end * fps))
        guess = _span(start, end, fps, hinted if hinted > 0 else stop)
        wanted = set()
        if guess is not None and guess[0] <= guess[1]:
            for i in sample_indices(*guess, count):
                wanted.update(range(i - _SLACK, i + _SLACK + 1))
        kept, decoded = _grab(cap, wanted, stop, size)
    finally:
        cap.release()
    if decoded == 0:
        raise ClipError("no video frames decoded")
    first, last = _span(start, end, fps, decoded)
    if fps > 0:
        _check_coverage(first, last, fps, hinted, start, end, fallback_seconds)
    if last - first + 1 < count:
        got = max(0, last - first + 1)
        raise ClipError(f"only {got} video frame(s) decoded, fewer than the {count} to "
                        "sample")
    indices = sample_indices(first, last, count)
    missing = {int(i) for i in indices} - set(kept)
    if missing:  # the container's frame count was far off: decode again for these
        cap = cv2.VideoCapture(path)
        try:
            more, _ = _grab(cap, missing, max(missing) + 1, size)
        finally:
            cap.release()
        kept.update(more)
        if missing - set(kept):
            raise ClipError(f"video frames {sorted(missing - set(kept))} could not be "
                            "decoded again")
    return np.stack([kept[int(i)] for i in indices])


def _span(start: Optional[float], end: Optional[float], fps: float,
          total: Optional[int]) -> Optional[Tuple[int, int]]:
    """`(first, last)` frame indices of `[start, end)` in a clip of `total` frames (the
    whole clip without `start` / `end`); None when `total` is unknown."""
    if not total:
        return None
    first, last = 0, total - 1
    if start is not None or end is not None:
        first = int(math.floor((start or 0.0) * fps))
        if end is not None:
            last = min(int(math.ceil(end * fps)) - 1, last)
    return first, last


def _grab(cap, wanted: Set[int], stop: Optional[int],
          size: int) -> Tuple[Dict[int, np.ndarray], int]:
    """Decodes frames in order up to `stop` (or the end); returns the `wanted` ones as
    RGB `size` x `size` and how many frames decoded."""
    import cv2

    kept: Dict[int, np.ndarray] = {}
    index = 0
    while stop is None or index < stop:
        if not cap.grab():
            break
        if index in wanted:
            ok, frame = cap.retrieve()
            if ok and frame is not None:
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                kept[index] = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
        index += 1
    return kept, index


def _check_coverage(first: int, last: int, fps: float, hinted: int, start: Optional[float],
                    end: Optional[float], fallback_seconds: Optional[float]) -> None:
    """Raises `ClipError` when the decoded span is far shorter than the expected one."""
    lo = start or 0.0
    if hinted > 0:
        clip_end = hinted / fps
    elif fallback_seconds:
        # The audio of a segment starts at `start`; a whole clip's at 0.
        clip_end = lo + fallback_seconds
    else:
        return
    span_end = clip_end if end is None else min(end, clip_end)
    expected = (span_end - lo) * fps
    got = max(0, last - first + 1)
    if expected > 0 and got < MIN_VIDEO_COVERAGE * expected:
        raise ClipError(
            f"video truncated: {got} frame(s) ({got / fps:.2f} s) decoded of the "
            f"{expected:.0f} ({expected / fps:.2f} s) expected")


# Containers that record no duration: FFmpeg estimates their length from the file's size
# and bit rate, so a copy cut short reports a frame count that matches what it holds and
# the coverage rule cannot see the cut (MPEG program and transport streams, raw
# elementary video streams).
NO_DURATION_FORMATS = ("mpeg", "mpegts", "mpegvideo", "m4v", "h264", "hevc")


def check_intact(path: str) -> None:
    """Raises `ClipError` for a container of `NO_DURATION_FORMATS` whose video does not
    decode cleanly: a copy cut at an arbitrary byte ends inside a packet or a picture,
    which FFmpeg reports ("Packet corrupt", or a decoder error such as "ac-tex damaged").
    Other containers record their duration and are left to the coverage rule. Costs one
    extra decode of such files (PyAV, with FFmpeg's messages captured)."""
    import av
    import av.logging

    try:
        with av.open(path) as container:
            if container.format.name.split(",")[0] not in NO_DURATION_FORMATS:
                return
            if not container.streams.video:
                return  # read_frames reports it
            previous = av.logging.get_level()
            av.logging.set_level(av.logging.WARNING)
            try:
                with av.logging.Capture() as logs:
                    for _ in container.decode(video=0):
                        pass
            finally:
                av.logging.set_level(previous)
    except av.FFmpegError:
        return  # not something PyAV opens: OpenCV's reading decides
    problems = [m.strip() for level, _, m in logs
                if level <= av.logging.ERROR or "Packet corrupt" in m]
    if problems:
        raise ClipError(f"video damaged or cut short: FFmpeg reports {problems[0]!r}"
                        f"{f' and {len(problems) - 1} more' if len(problems) > 1 else ''} "
                        "(a truncated copy? its container records no duration to check "
                        "the length against)")
