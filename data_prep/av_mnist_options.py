"""AV-MNIST's conversion options: defaults, the five benchmark settings, and checks.

A setting (`SETTINGS`) fixes the degradation and takes the benchmark's split defaults
(`BENCHMARK_SPLITS`: george tests, jackson validates, an image pairs with at most 2
clips of its split); the options given explicitly override the split defaults, never
the degradation. See `data_prep.av_mnist` for what each option does.
"""

import math
from typing import Any, Dict, Optional

from data_prep import conflict, convert
from data_prep.digit_images import SKLEARN

FRACTIONS = ("visual_noise_fraction", "visual_graded_fraction", "audio_noise_fraction",
             "audio_mix_fraction")  # in the order of degrade.KINDS[1:]
DEGRADATION_DEFAULTS = {"visual_noise_fraction": 0.0, "visual_graded_fraction": 0.0,
                        "visual_strength": [0.3, 1.0], "audio_noise_fraction": 0.0,
                        "audio_noise_snr_db": -10.0, "audio_mix_fraction": 0.0,
                        "audio_mix_snr_db": [-6.0, 0.0]}
DEFAULT_OPTIONS = {"image_source": "mnist", "setting": "", "test_speakers": ["george"],
                   "val_speakers": [], "val_fraction": 0.1, "seed": 0, "max_image_uses": 1,
                   **DEGRADATION_DEFAULTS}
BENCHMARK_SPLITS = {"test_speakers": ["george"], "val_speakers": ["jackson"],
                    "val_fraction": 0.0, "max_image_uses": 2}
SETTINGS = {"noise": {"visual_noise_fraction": 0.3},
            "graded": {"visual_graded_fraction": 0.3},
            "two_sided": {"visual_graded_fraction": 0.2, "audio_mix_fraction": 0.2},
            "none": {},
            # Mixed, not replaced: the wrong digit dominates (confidently wrong) but the
            # right one stays underneath, a cue a fusion can learn to read (docs/data.md).
            "conflict": {"visual_conflict_fraction": 0.2, "audio_conflict_fraction": 0.2,
                         "conflict_mode": "mix", "visual_conflict_weight": 0.7,
                         "audio_conflict_snr_db": -6.0}}
# Every option a caller may give; the conflict ones are kept only where a conflict is
# asked (see `conflict`), so that the other datasets record what they always did.
KNOWN_OPTIONS = {**DEFAULT_OPTIONS, **conflict.DEFAULTS}


def resolve_options(setting: Optional[str], given: Dict[str, Any]) -> Dict[str, Any]:
    """The conversion options: the defaults, then `setting`'s, then those `given` (None
    values count as not given); one-line errors for unknown or clashing ones."""
    given = {k: v for k, v in given.items() if v is not None}
    unknown = sorted(set(given) - set(KNOWN_OPTIONS) | ({"setting"} & set(given)))
    if unknown:
        raise convert.DataPrepError(f"unknown AV-MNIST option(s) {unknown}")
    options = dict(DEFAULT_OPTIONS)
    if setting is not None:
        setting = setting.replace("-", "_")
        if setting not in SETTINGS:
            raise convert.DataPrepError(f"--setting={setting!r}: use one of {list(SETTINGS)}")
        clash = sorted(set(given) & (set(DEGRADATION_DEFAULTS) | set(conflict.DEFAULTS)))
        if clash:
            raise convert.DataPrepError(
                f"--setting={setting} fixes the degradation: drop "
                f"{', '.join('--' + k for k in clash)} or leave out --setting")
        options.update(BENCHMARK_SPLITS, **SETTINGS[setting], setting=setting)
    if given.get("val_speakers") and "val_fraction" not in given:
        options["val_fraction"] = 0.0
    options.update(given)
    for key in ("test_speakers", "val_speakers"):
        options[key] = sorted(set(options[key]))
    for key in ("visual_strength", "audio_mix_snr_db"):
        options[key] = [float(v) for v in options[key]]
    for key in (*FRACTIONS, "val_fraction", "audio_noise_snr_db"):
        options[key] = float(options[key])
    for key in ("seed", "max_image_uses"):
        options[key] = int(options[key])
    options = conflict.resolve(options)
    check_options(options)
    return options


def check_options(o: Dict[str, Any]) -> None:
    """One-line errors for impossible conversion options."""
    if o["image_source"] not in ("mnist", "digits_folder", SKLEARN):
        raise convert.DataPrepError(f"image_source={o['image_source']!r}: use mnist, "
                                    f"digits_folder or {SKLEARN}")
    if not o["test_speakers"]:
        raise convert.DataPrepError("--test_speakers is empty: name at least one speaker")
    both = sorted(set(o["test_speakers"]) & set(o["val_speakers"]))
    if both:
        raise convert.DataPrepError(f"{both} are both test and validation speakers")
    if o["val_speakers"] and o["val_fraction"]:
        raise convert.DataPrepError(
            f"--val_speakers={','.join(o['val_speakers'])} and --val_fraction="
            f"{o['val_fraction']} both choose the validation split: give one")
    if not 0 <= o["val_fraction"] < 1:
        raise convert.DataPrepError(f"--val_fraction={o['val_fraction']} must be in [0, 1)")
    if o["max_image_uses"] < 1:
        raise convert.DataPrepError(f"--max_image_uses={o['max_image_uses']} must be >= 1")
    for k in FRACTIONS:
        if not 0 <= o[k] <= 1:
            raise convert.DataPrepError(f"--{k}={o[k]} must be in [0, 1]")
    conflict.check(o)
    shares = {**{k: o[k] for k in FRACTIONS}, **dict(zip(conflict.FRACTIONS,
                                                         conflict.fractions(o)))}
    if sum(shares.values()) > 1 + 1e-9:
        raise convert.DataPrepError(
            " plus ".join(f"--{k}={v}" for k, v in shares.items() if v) + " exceed 1 (a "
            "clip has at most one degraded or conflicting stream)")
    lo, hi = o["visual_strength"]
    if not 0 < lo <= hi <= 1:
        raise convert.DataPrepError(f"--visual_strength={lo:g},{hi:g}: need 0 < LO <= HI <= 1")
    for k in ("audio_noise_snr_db", "audio_mix_snr_db"):
        values = o[k] if isinstance(o[k], list) else [o[k]]
        if not all(math.isfinite(v) for v in values) or values != sorted(values):
            raise convert.DataPrepError(f"--{k}={','.join(f'{v:g}' for v in values)}: "
                                        "finite dB values, LO <= HI")
