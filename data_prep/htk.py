"""HTK parameter files (MFCC, filter-bank, ... frames) as the audio side of a clip.

The format, as the HTK Book defines it (The HTK Book, version 2.1, section 5.7.1 "HTK
Format Parameter Files"; the same layout in later editions' "Storage of Parameter
Files" section): a 12-byte header

    nSamples    4-byte int    number of frames (vectors) in the file
    sampPeriod  4-byte int    frame period in 100 ns units (100000 = 10 ms)
    sampSize    2-byte int    bytes per frame
    parmKind    2-byte int    6-bit base kind + qualifier bits

then nSamples frames of sampSize bytes, big-endian (HTK's default byte order). Base kinds:
0 WAVEFORM, 1 LPC, 2 LPREFC, 3 LPCEPSTRA, 4 LPDELCEP, 5 IREFC, 6 MFCC, 7 FBANK,
8 MELSPEC, 9 USER, 10 DISCRETE, 11 PLP; qualifiers (octal) _E 000100, _N 000200,
_D 000400, _A 001000, _C 002000 (compressed), _Z 004000, _K 010000 (CRC checksum),
_0 020000, _V 040000, _T 0100000. A frame is a vector of 4-byte floats, or of 2-byte
integers in the compressed form (_C): there the header's nSamples counts four extra
frames' worth of bytes holding two float vectors A and B (scale and offset), and a value
is `(short + B) / A`. _K appends a 2-byte CRC after the frames (not checked here).

What is read: every float kind, compressed or not. Refused (a `media.ClipError`, so the
clip is reported and skipped): WAVEFORM, IREFC and DISCRETE / _V files (16-bit samples or
vector-quantized indices, not feature vectors), a file whose size is not what its
header says (a truncated copy), and non-finite values. A file written in the machine's
little-endian order (HTK's NATURALWRITEORDER) is recognized by its size: its header
only adds up in that order.

A clip's feature matrix is the frames tiled (repeated) until they cover `clip_seconds`
and cut to exactly `round(clip_seconds / period)` frames, as waveforms are tiled, then
transposed to `[coefficients, frames]`: the "spectrogram" the model reads. The files
tell the frame period and the kind but not the audio's sample rate or the analysis
window; those are recorded as unknown (None).
"""

import dataclasses
import os
import struct
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from data_prep import convert
from data_prep.features import NORMALIZATIONS
from data_prep.media import ClipError

HEADER_BYTES = 12
BASE_KINDS = ("WAVEFORM", "LPC", "LPREFC", "LPCEPSTRA", "LPDELCEP", "IREFC", "MFCC",
              "FBANK", "MELSPEC", "USER", "DISCRETE", "PLP")
QUALIFIERS = (("E", 0o100), ("N", 0o200), ("D", 0o400), ("A", 0o1000), ("C", 0o2000),
              ("Z", 0o4000), ("K", 0o10000), ("0", 0o20000), ("V", 0o40000),
              ("T", 0o100000))
# Qualifiers that say how a file is stored, not what its vectors are.
STORAGE_QUALIFIERS = ("C", "K")
# Kinds whose frames are not float feature vectors.
NOT_FEATURES = ("WAVEFORM", "IREFC", "DISCRETE")
# File names taken for HTK parameter files in a folder CSV's audio column.
EXTENSIONS = (".htk", ".mfc", ".mfcc", ".fbank", ".plp", ".lpc", ".user")
FEATURE_FORMAT = "htk"


@dataclasses.dataclass(frozen=True)
class Header:
    """An HTK header, with the byte order it was read in (`>` or `<`)."""

    frames: int  # nSamples as written (counts A and B in a compressed file)
    period: int  # sampPeriod, 100 ns units
    frame_bytes: int  # sampSize
    kind_code: int  # parmKind
    order: str = ">"

    @property
    def base(self) -> str:
        code = self.kind_code & 0o77
        return BASE_KINDS[code] if code < len(BASE_KINDS) else f"kind {code}"

    @property
    def qualifiers(self) -> Tuple[str, ...]:
        return tuple(q for q, bit in QUALIFIERS if self.kind_code & bit)

    @property
    def kind(self) -> str:
        """e.g. `MFCC_E_D_A`, without the storage qualifiers _C and _K."""
        return "_".join((self.base,) + tuple(q for q in self.qualifiers
                                             if q not in STORAGE_QUALIFIERS))

    @property
    def compressed(self) -> bool:
        return "C" in self.qualifiers

    @property
    def dim(self) -> int:
        """Coefficients per frame."""
        return self.frame_bytes // (2 if self.compressed else 4)

    @property
    def data_frames(self) -> int:
        return self.frames - 4 if self.compressed else self.frames

    def file_bytes(self) -> int:
        return HEADER_BYTES + self.frames * self.frame_bytes + (2 if "K" in self.qualifiers
                                                                 else 0)


def read_header(path: str) -> Header:
    """The header of an HTK parameter file; `ClipError` when it cannot be one."""
    if not os.path.exists(path):
        raise ClipError(f"missing file {path}")
    size = os.path.getsize(path)
    if size < HEADER_BYTES:
        raise ClipError(f"not an HTK parameter file: {size} bytes, shorter than the "
                        f"{HEADER_BYTES}-byte header")
    with open(path, "rb") as f:
        raw = f.read(HEADER_BYTES)
    candidates = [Header(*struct.unpack(order + "iihH", raw), order=order)
                  for order in (">", "<")]
    for h in candidates:
        if h.frames > 0 and h.period > 0 and h.frame_bytes > 0 and h.file_bytes() == size:
            return h
    h = candidates[0]
    if h.frames > 0 and h.period > 0 and h.frame_bytes > 0:
        raise ClipError(f"HTK file truncated or padded: its header says {h.frames} frame(s) "
                        f"of {h.frame_bytes} bytes ({h.file_bytes()} bytes in all) but the "
                        f"file has {size}")
    raise ClipError("not an HTK parameter file: the 12-byte header (nSamples, sampPeriod, "
                    "sampSize, parmKind) does not describe the file in either byte order")


def read_features(path: str) -> Tuple[np.ndarray, Header]:
    """float32 `[frames, coefficients]` of an HTK parameter file, and its header."""
    h = read_header(path)
    if h.base in NOT_FEATURES or "V" in h.qualifiers or h.base.startswith("kind "):
        raise ClipError(f"HTK file of kind {h.kind} holds no feature vectors (only float "
                        "kinds such as MFCC, FBANK, PLP, USER are read)")
    unit = 2 if h.compressed else 4
    if h.frame_bytes % unit:
        raise ClipError(f"HTK sampSize {h.frame_bytes} is not a multiple of {unit} bytes")
    if h.data_frames <= 0:
        raise ClipError("HTK file has no frames")
    with open(path, "rb") as f:
        f.seek(HEADER_BYTES)
        if h.compressed:
            scale = np.fromfile(f, dtype=h.order + "f4", count=h.dim)
            offset = np.fromfile(f, dtype=h.order + "f4", count=h.dim)
            shorts = np.fromfile(f, dtype=h.order + "i2", count=h.data_frames * h.dim)
            if np.any(scale == 0):
                raise ClipError("compressed HTK file has a zero scale")
            values = (shorts.reshape(h.data_frames, h.dim) + offset) / scale
        else:
            values = np.fromfile(f, dtype=h.order + "f4", count=h.data_frames * h.dim)
            values = values.reshape(h.data_frames, h.dim)
    values = values.astype(np.float32)
    if not np.all(np.isfinite(values)):
        raise ClipError("HTK features have NaN or inf values")
    return values, h


def write(path: str, values: np.ndarray, period: int, kind_code: int,
          order: str = ">") -> None:
    """Writes float `[frames, coefficients]` as an uncompressed HTK parameter file."""
    values = np.asarray(values, np.float32)
    with open(path, "wb") as f:
        f.write(struct.pack(order + "iihH", values.shape[0], period, 4 * values.shape[1],
                            kind_code))
        f.write(values.astype(order + "f4").tobytes())


@dataclasses.dataclass(frozen=True)
class HtkParams:
    """How HTK feature files become the `audio` feature (the audio side's parameters,
    in place of `features.AudioParams`)."""

    clip_seconds: float
    period: int  # 100 ns units, the files' sampPeriod
    coefficients: int
    kind: str  # e.g. MFCC_E_D_A
    normalization: str = "none"

    def __post_init__(self):
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization={self.normalization!r}: use one of "
                             f"{NORMALIZATIONS}")
        if not self.clip_seconds > 0 or self.period <= 0 or self.coefficients <= 0:
            raise ValueError(f"clip_seconds, the period and the coefficients must be > 0, "
                             f"got {self.clip_seconds}, {self.period}, {self.coefficients}")

    @property
    def num_frames(self) -> int:
        return max(1, int(round(self.clip_seconds * 1e7 / self.period)))

    @property
    def shape(self) -> Tuple[int, int]:
        """`(F, T)`: coefficients x frames."""
        return (self.coefficients, self.num_frames)

    def as_metadata(self) -> Dict[str, Any]:
        """Recorded with the data; what HTK files do not tell is None."""
        return {"feature_format": FEATURE_FORMAT, "spectrogram_recipe": f"htk:{self.kind}",
                "sample_rate": None, "n_fft": None, "hop_length": None, "center": None,
                "clip_seconds": self.clip_seconds, "normalization": self.normalization,
                "htk_kind": self.kind, "htk_period_100ns": self.period,
                "htk_frame_seconds": self.period * 1e-7, "feature_shape": list(self.shape)}

    @classmethod
    def from_metadata(cls, recorded: Dict[str, Any]) -> "HtkParams":
        return cls(clip_seconds=recorded["clip_seconds"], period=recorded["htk_period_100ns"],
                   coefficients=recorded["feature_shape"][0], kind=recorded["htk_kind"],
                   normalization=recorded["normalization"])

    def read_feature(self, path: str, start: Optional[float] = None,
                     end: Optional[float] = None) -> Tuple[np.ndarray, float]:
        """float16 `[F, T]` of one file (cut to `[start, end)` seconds, then tiled), and
        the seconds its frames cover."""
        values, h = read_features(path)
        if (h.kind, h.period, h.dim) != (self.kind, self.period, self.coefficients):
            raise ClipError(f"HTK file of kind {h.kind}, period {h.period}, {h.dim} "
                            f"coefficients; this dataset has {self.kind}, {self.period}, "
                            f"{self.coefficients}")
        if start is not None or end is not None:
            per_second = 1e7 / self.period
            lo = int(round((start or 0.0) * per_second))
            hi = len(values) if end is None else int(round(end * per_second))
            values = values[lo:hi]
            if not len(values):
                raise ClipError("no HTK frames in the segment")
        seconds = len(values) * self.period * 1e-7
        reps = -(-self.num_frames // len(values))
        spec = np.tile(values, (reps, 1))[:self.num_frames].T
        if self.normalization == "zscore":
            spec = (spec - spec.mean()) / (spec.std() + 1e-9)
        if np.max(np.abs(spec)) > np.finfo(np.float16).max:
            raise ClipError(f"HTK feature values up to {np.max(np.abs(spec)):.4g} do not fit "
                            "float16 storage: prepare with --normalization=zscore")
        return spec.astype(np.float16), seconds


def is_htk_path(path: Optional[str]) -> bool:
    return bool(path) and os.path.splitext(path)[1].lower() in EXTENSIONS


def params_for(paths: Sequence[str], clip_seconds: float,
               normalization: str) -> HtkParams:
    """`HtkParams` of a set of files, which must agree on kind, period and size; an
    unreadable header is left for the decoder to report (the clip is skipped)."""
    first: Optional[Tuple[str, Header]] = None
    for path in paths:
        try:
            h = read_header(path)
        except ClipError:
            continue
        if first is None:
            first = (path, h)
        elif (h.kind, h.period, h.dim) != (first[1].kind, first[1].period, first[1].dim):
            f = first[1]
            raise convert.DataPrepError(
                f"HTK files differ: {first[0]} is {f.kind}, period {f.period} x 100 ns, "
                f"{f.dim} coefficients; {path} is {h.kind}, {h.period}, {h.dim}. One "
                "dataset needs one kind of features")
    if first is None:
        raise convert.DataPrepError(f"none of the {len(paths)} HTK file(s) has a readable "
                                    f"header, e.g. {list(paths)[:3]}")
    h = first[1]
    return HtkParams(clip_seconds=clip_seconds, period=h.period, coefficients=h.dim,
                     kind=h.kind, normalization=normalization)


convert.AUDIO_FORMATS[FEATURE_FORMAT] = HtkParams
