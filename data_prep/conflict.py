"""Misleading streams for AV-MNIST: clips whose audio or image carries another digit.

A degraded stream (noise, blur, interfering speech) is *uncertain*: its classifier's
confidence drops and fusion learns to lean on the other stream. A conflicting stream is
*confidently wrong*: it shows or says a different digit than the label, as clearly as a
clean clip does. Two kinds, each on one stream (`STREAM_OF`), recorded in the clip field
`degradation` beside `degrade.KINDS`, so that the `degraded` flag (visual / audio) and
the `degradation` evaluator's subsets cover them:

- `visual_conflict`: the image is that of a wrong digit (`replace`), or a wrong digit's
  image blended over the right one with weight `visual_conflict_weight` (`mix`).
- `audio_conflict`: the speech is a recording of a wrong digit (`replace`), or one mixed
  over the right speech, the clip's own speech `audio_conflict_snr_db` below it (`mix`).

The wrong digit is drawn uniformly among the other 9 classes, per clip and seed; its
image comes from the clip's own split's image share and its recording from the same
split (another speaker's where the split has one), so nothing crosses splits. The
clip field `wrong_digit` (-1: none) and `degradations.jsonl` record it, with the mode,
the wrong image or recording and the strength (the share of the stream that is the
wrong digit: the weight, the interference share of the SNR, or 1 when replaced).

The options exist only in datasets that ask for a conflict (a nonzero fraction), so
that every other AV-MNIST dataset records exactly the options and features it did.
"""

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from data_prep import convert, degrade, digit_images
from data_prep.digit_images import DIGITS

KINDS = ("visual_conflict", "audio_conflict")
STREAM_OF = {"visual_conflict": "visual", "audio_conflict": "audio"}
MODES = ("mix", "replace")
FRACTIONS = ("visual_conflict_fraction", "audio_conflict_fraction")  # in KINDS' order
DEFAULTS: Dict[str, Any] = {"visual_conflict_fraction": 0.0, "audio_conflict_fraction": 0.0,
                            "conflict_mode": "mix", "visual_conflict_weight": 0.7,
                            "audio_conflict_snr_db": -6.0}
NO_DIGIT = -1  # `wrong_digit` of a clip whose streams agree


def asked(options: Mapping[str, Any]) -> bool:
    """Whether the options ask for any conflicting clip."""
    return any(float(options.get(f, 0.0)) > 0 for f in FRACTIONS)


def kinds(options: Mapping[str, Any]) -> Tuple[str, ...]:
    """The `degradation` classes of a dataset made with `options`: the conflict kinds
    are appended only when asked, so that other datasets keep their classes."""
    return degrade.KINDS + KINDS if asked(options) else degrade.KINDS


def stream_of(kind: str) -> str:
    """The stream (`degrade.STREAMS`) a degradation or conflict kind acts on."""
    return STREAM_OF.get(kind) or degrade.STREAM_OF[kind]


def resolve(options: Dict[str, Any]) -> Dict[str, Any]:
    """`options` with the conflict options typed and defaulted when a conflict is asked;
    without one, refuses conflict options that would do nothing and drops the rest."""
    if not asked(options):
        idle = sorted(k for k in DEFAULTS if k in options and options[k] != DEFAULTS[k])
        if idle:
            raise convert.DataPrepError(
                f"{', '.join(f'--{k}={options[k]}' for k in idle)} does nothing without a "
                "conflict: give --visual_conflict_fraction or --audio_conflict_fraction "
                "(or --setting=conflict)")
        return {k: v for k, v in options.items() if k not in DEFAULTS}
    out = {**DEFAULTS, **options}
    for key in (*FRACTIONS, "visual_conflict_weight", "audio_conflict_snr_db"):
        out[key] = float(out[key])
    out["conflict_mode"] = str(out["conflict_mode"])
    return out


def check(o: Mapping[str, Any]) -> None:
    """One-line errors for impossible conflict options (none when none is asked)."""
    if not asked(o):
        return
    for k in FRACTIONS:
        if not 0 <= o[k] <= 1:
            raise convert.DataPrepError(f"--{k}={o[k]} must be in [0, 1]")
    if o["conflict_mode"] not in MODES:
        raise convert.DataPrepError(
            f"--conflict_mode={o['conflict_mode']!r}: use {' or '.join(MODES)}")
    # Below one half the right digit would dominate: ambiguous, not misleading.
    if not 0.5 < o["visual_conflict_weight"] <= 1:
        raise convert.DataPrepError(
            f"--visual_conflict_weight={o['visual_conflict_weight']:g} must be in (0.5, 1]: "
            "the wrong digit must dominate the blend")
    snr = o["audio_conflict_snr_db"]
    if not (math.isfinite(snr) and snr < 0):
        raise convert.DataPrepError(
            f"--audio_conflict_snr_db={snr:g} must be below 0 dB: the wrong digit must be "
            "louder than the clip's own speech")


def fractions(o: Mapping[str, Any]) -> List[float]:
    """The fractions of `FRACTIONS`, 0 where not given, in `draw_kinds`' order after
    `degrade.KINDS[1:]`."""
    return [float(o.get(f, 0.0)) for f in FRACTIONS]


def draw(kind: str, digit: str, speaker: str, o: Mapping[str, Any],
         same_split: Sequence[Tuple[str, str, str]], pool: digit_images.ImagePool,
         rng: np.random.Generator) -> Dict[str, Any]:
    """A conflicting clip's drawing: the wrong digit, its image or recording, the SNR
    and the strength. `same_split` holds `(key, digit, speaker)` of the clip's split and
    `pool` its split's images."""
    wrong = [d for d in DIGITS if d != digit][rng.integers(len(DIGITS) - 1)]
    out: Dict[str, Any] = {"mode": o["conflict_mode"], "wrong_digit": wrong,
                           "wrong_image": None, "snr_db": None, "others": []}
    replace = o["conflict_mode"] == "replace"
    if kind == "visual_conflict":
        if pool.count(wrong) == 0:
            raise convert.DataPrepError(
                f"no image of digit {wrong} in a split that needs one for a conflicting "
                "clip: give more images or a smaller --visual_conflict_fraction")
        i = int(rng.integers(pool.count(wrong)))
        out.update(wrong_image=pool.refs[wrong][i], image=pool.images[wrong][i],
                   strength=1.0 if replace else o["visual_conflict_weight"])
        return out
    others = [c for c in same_split if c[1] == wrong and c[2] != speaker] or \
        [c for c in same_split if c[1] == wrong]
    if not others:
        raise convert.DataPrepError(
            f"no recording of digit {wrong} in a split that needs one for a conflicting "
            "clip: give more recordings or a smaller --audio_conflict_fraction")
    out["others"] = [sorted(others)[rng.integers(len(others))][0]]
    if replace:
        out["strength"] = 1.0
    else:
        out["snr_db"] = o["audio_conflict_snr_db"]
        out["strength"] = degrade.interference_share(out["snr_db"])
    return out


def frame(image: np.ndarray, drawn: Mapping[str, Any], size: int) -> np.ndarray:
    """The conflicting image: the wrong digit's, or blended over `image` at the drawn
    weight (both resized first, so that the strokes line up as digits do)."""
    wrong = digit_images.resize(drawn["image"], size).astype(np.float32)
    weight = 1.0 if drawn["mode"] == "replace" else drawn["strength"]
    right = digit_images.resize(image, size).astype(np.float32)
    grey = np.clip(np.round(weight * wrong + (1.0 - weight) * right), 0, 255).astype(np.uint8)
    return np.repeat(grey[None, :, :, None], 3, axis=-1)


def wave(own: np.ndarray, wrong: np.ndarray, drawn: Mapping[str, Any]) -> np.ndarray:
    """The conflicting speech: the wrong digit's recording, or mixed over `own` with the
    own speech at the drawn SNR below it."""
    if drawn["mode"] == "replace":
        return np.asarray(wrong, np.float32)
    return degrade.mix_in(own, [wrong], drawn["snr_db"])


def record(drawn: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """The `degradations.jsonl` fields of a conflicting clip (none for another clip)."""
    if not drawn:
        return {}
    return {"mode": drawn["mode"], "wrong_digit": int(drawn["wrong_digit"]),
            "wrong_image": drawn["wrong_image"]}
