"""AV-MNIST's `conflict` setting: clips whose image or speech carries a wrong digit.

The data tests run on a subset of the real FSDD recordings (3 speakers, 4 recordings per
digit: 40 clips per split) and scikit-learn's digits; they skip, saying so, without the
recordings. The option and drawing tests need neither.
"""

import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from data_prep import av_mnist, av_mnist_options, conflict, convert, degrade, digit_images
from data_prep import features, media

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FSDD = os.path.join(os.path.dirname(REPO), "shared", "data", "fsdd", "recordings")
SPEAKERS = {"test": "george", "validation": "jackson", "train": "lucas"}
PER_DIGIT = 4
SIZE = 16
needs_fsdd = pytest.mark.skipif(not os.path.isdir(FSDD),
                                reason=f"the real FSDD recordings are not at {FSDD}")


@pytest.fixture(scope="module")
def fsdd_dir(tmp_path_factory):
    if not os.path.isdir(FSDD):
        pytest.skip(f"the real FSDD recordings are not at {FSDD}")
    root = tmp_path_factory.mktemp("fsdd") / "recordings"
    root.mkdir()
    for speaker in SPEAKERS.values():
        for digit in range(10):
            for i in range(PER_DIGIT):
                name = f"{digit}_{speaker}_{i}.wav"
                shutil.copy(os.path.join(FSDD, name), root / name)
    return str(root)


@pytest.fixture(scope="module")
def sklearn_images():
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    return np.round(d.images * (255 / 16)).astype(np.uint8), d.target


@pytest.fixture(scope="module")
def conflict_dir(fsdd_dir, tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("conflict"))
    av_mnist.prepare(fsdd_dir, data_dir, digits_dir="sklearn", setting="conflict",
                     image_size=SIZE)
    return data_dir


def _examples(data_dir, name):
    import tensorflow_datasets as tfds

    out = {}
    for s in tfds.builder(name, data_dir=data_dir).info.splits:
        src = tfds.data_source(name, data_dir=data_dir, split=s)
        out[s] = [src[i] for i in range(len(src))]
    return out


def _log(data_dir, name):
    with open(os.path.join(data_dir, name, "degradations.jsonl")) as f:
        return {row["key"]: row for row in map(json.loads, f)}


def _wave(fsdd_dir, key):
    return np.clip(features.fit_length(
        media.load_audio(os.path.join(fsdd_dir, key + ".wav"), 8000), 8000), -1, 1)


def _spectrogram(wave):
    return features.spectrogram(wave, av_mnist.AUDIO).astype(np.float32)


def _check_split(examples, log, split, fsdd_dir, images, labels, mode, visual_n, audio_n):
    """Counts, wrong digits, recorded ground truth and the media of one split."""
    kinds = degrade.KINDS + conflict.KINDS
    seen = Counter()
    for ex in examples:
        key, ref = ex["id"].decode().split("+")
        assert key.split("_")[1] == SPEAKERS[split]  # the held-out speakers are unchanged
        kind = kinds[ex["degradation"]]
        seen[kind] += 1
        label, wrong = int(ex["label"]), int(ex["wrong_digit"])
        assert degrade.STREAMS[ex["degraded"]] == conflict.stream_of(kind)
        assert ex["imbalanced"] == (kind != "none")
        image = images[int(ref.split(":")[1])]
        if kind == "none":
            assert wrong == conflict.NO_DIGIT and key not in log
            assert float(ex["degradation_strength"]) == 0
            np.testing.assert_array_equal(ex["frames"], digit_images.digit_frame(image, SIZE))
            continue
        row = log[key]
        assert 0 <= wrong <= 9 and wrong != label  # the wrong digit is never the label
        assert (row["split"], row["kind"], row["mode"], row["wrong_digit"]) == (
            split, kind, mode, wrong)
        assert float(ex["degradation_strength"]) == pytest.approx(row["strength"])
        if kind == "visual_conflict":
            index = int(row["wrong_image"].split(":")[1])
            assert labels[index] == wrong
            drawn = {"mode": mode, "image": images[index], "strength": row["strength"]}
            np.testing.assert_array_equal(ex["frames"], conflict.frame(image, drawn, SIZE))
            np.testing.assert_allclose(ex["audio"].astype(np.float32),
                                       _spectrogram(_wave(fsdd_dir, key)), atol=2e-2)
        else:
            (other,) = row["mixed_in"]
            assert int(other[0]) == wrong and other.split("_")[1] == SPEAKERS[split]
            drawn = {"mode": mode, "snr_db": row["snr_db"]}
            expected = conflict.wave(_wave(fsdd_dir, key), _wave(fsdd_dir, other), drawn)
            np.testing.assert_allclose(ex["audio"].astype(np.float32), _spectrogram(expected),
                                       atol=2e-2)
            np.testing.assert_array_equal(ex["frames"], digit_images.digit_frame(image, SIZE))
    assert seen == Counter({"none": len(examples) - visual_n - audio_n,
                            "visual_conflict": visual_n, "audio_conflict": audio_n})


@needs_fsdd
def test_conflict_setting_has_its_fractions_wrong_digits_and_ground_truth(
        conflict_dir, fsdd_dir, sklearn_images):
    import tensorflow_datasets as tfds

    images, labels = sklearn_images
    name = "av_mnist_conflict"
    info = tfds.builder(name, data_dir=conflict_dir).info
    assert info.metadata["setting"] == "conflict" and info.metadata["conflict_mode"] == "mix"
    assert info.metadata["split_source"] == "speakers: test george, validation jackson; seed 0"
    log = _log(conflict_dir, name)
    splits = _examples(conflict_dir, name)
    for split, examples in splits.items():
        assert len(examples) == 10 * PER_DIGIT
        # 20% each, disjoint: exact counts, one kind per clip.
        _check_split(examples, log, split, fsdd_dir, images, labels, "mix", 8, 8)
    assert info.metadata["summary"]["degraded"]["test"]["visual_conflict"] == 8
    for row in log.values():
        want = 0.7 if row["kind"] == "visual_conflict" else degrade.interference_share(-6.0)
        assert row["strength"] == pytest.approx(want)


@needs_fsdd
def test_conflict_is_deterministic_given_the_seed(conflict_dir, fsdd_dir, tmp_path):
    again = str(tmp_path / "again")
    av_mnist.prepare(fsdd_dir, again, digits_dir="sklearn", setting="conflict",
                     image_size=SIZE)
    assert _log(again, "av_mnist_conflict") == _log(conflict_dir, "av_mnist_conflict")
    first, second = (_examples(d, "av_mnist_conflict") for d in (conflict_dir, again))
    for split in first:
        for a, b in zip(first[split], second[split]):
            assert a["id"] == b["id"] and a["wrong_digit"] == b["wrong_digit"]
            np.testing.assert_array_equal(a["frames"], b["frames"])
            np.testing.assert_array_equal(a["audio"], b["audio"])
    other = str(tmp_path / "seed1")
    av_mnist.prepare(fsdd_dir, other, digits_dir="sklearn", setting="conflict",
                     image_size=SIZE, seed=1)
    assert _log(other, "av_mnist_conflict") != _log(conflict_dir, "av_mnist_conflict")


@needs_fsdd
def test_replace_mode_puts_the_wrong_digit_alone(fsdd_dir, sklearn_images, tmp_path):
    images, labels = sklearn_images
    data_dir = str(tmp_path / "data")
    av_mnist.prepare(fsdd_dir, data_dir, digits_dir="sklearn", name="av_mnist_replaced",
                     image_size=SIZE, test_speakers=["george"], val_speakers=["jackson"],
                     max_image_uses=2, visual_conflict_fraction=0.25,
                     audio_conflict_fraction=0.1, conflict_mode="replace")
    log = _log(data_dir, "av_mnist_replaced")
    for split, examples in _examples(data_dir, "av_mnist_replaced").items():
        _check_split(examples, log, split, fsdd_dir, images, labels, "replace", 10, 4)
    assert {row["strength"] for row in log.values()} == {1.0}


@needs_fsdd
def test_clip_fields_and_the_degradation_evaluator_read_the_conflict(conflict_dir):
    import jax.numpy as jnp

    from avgmm import config_text
    from avgmm.data import pipeline
    from avgmm.evaluators import base, degradation

    config = config_text.load_config_file(os.path.join(REPO, "configs", "av_mnist.py:conflict"))
    assert config.data.name == "av_mnist_conflict"
    config.data.expect.frame_size = SIZE
    ds = pipeline.load_dataset(config.data.name, conflict_dir, 1, dict(config.data.expect))
    assert dict(ds.meta.clip_fields) == {
        "degradation": degrade.KINDS + conflict.KINDS, "degradation_strength": "float",
        "degraded": degrade.STREAMS, "imbalanced": "bool", "wrong_digit": "int"}
    batch = ds.read("test", range(40))
    assert batch["wrong_digit"].dtype == np.int32
    np.testing.assert_array_equal(batch["wrong_digit"] >= 0, batch["degradation"] >= 5)
    evaluator = degradation.Degradation(config, ds.meta)
    assert evaluator.applies(ds.meta)
    label = jnp.asarray(batch["label"])
    heard = jnp.where(batch["degradation"] == 6, batch["wrong_digit"], label)
    seen = jnp.where(batch["degradation"] == 5, batch["wrong_digit"], label)
    # Each stream's prediction is what it carries: the right digit, or the wrong one.
    out = base.Outputs(fused=jnp.eye(10)[label], audio=jnp.eye(10)[heard],
                       visual=jnp.eye(10)[seen], label=label, mask=jnp.ones(40),
                       batch={k: jnp.asarray(v) for k, v in batch.items()
                              if k in ("degraded", "degradation")})
    totals = {k: float(v) for k, v in evaluator.sums(out).items()}
    assert totals["n_clean"] == 24 and totals["n_image_degraded"] == 8
    assert totals["n_audio_degraded"] == 8
    result = evaluator.finish(totals)
    assert result["acc_on_image_degraded"] == result["acc_on_audio_degraded"] == 1.0
    assert result["visual_acc_on_image_degraded"] == 0.0  # confidently wrong
    assert result["audio_acc_on_image_degraded"] == 1.0
    assert result["audio_acc_on_audio_degraded"] == 0.0
    assert result["visual_acc_on_clean"] == result["audio_acc_on_clean"] == 1.0


def test_the_wrong_digit_is_uniform_among_the_other_nine():
    pool = digit_images.empty_pool()
    for d in digit_images.DIGITS:
        pool.refs[d] = [f"img:{d}"]
        pool.images[d] = [np.full((8, 8), int(d), np.uint8)]
    same_split = [(f"{d}_x_{i}", d, "x") for d in digit_images.DIGITS for i in range(2)]
    options = conflict.resolve({"visual_conflict_fraction": 0.2})
    for kind in conflict.KINDS:
        wrong = Counter()
        for k in range(1800):
            label = digit_images.DIGITS[k % 10]
            drawn = conflict.draw(kind, label, "y", options, same_split, pool,
                                  degrade.clip_rng(0, 9, f"{k}"))
            assert drawn["wrong_digit"] != label
            if kind == "visual_conflict":
                assert drawn["wrong_image"] == f"img:{drawn['wrong_digit']}"
            else:
                assert drawn["others"][0][0] == drawn["wrong_digit"]
            wrong[(label, drawn["wrong_digit"])] += 1
        # 180 draws per label over 9 digits: 20 each expected; all 90 pairs appear.
        assert len(wrong) == 90 and max(wrong.values()) < 40


@pytest.mark.parametrize("given, message", [
    ({"setting": "conflict", "conflict_mode": "replace"},
     "--setting=conflict fixes the degradation: drop --conflict_mode"),
    ({"conflict_mode": "replace"}, "--conflict_mode=replace does nothing without a "
                                   "conflict: give --visual_conflict_fraction"),
    ({"audio_conflict_fraction": 0.2, "conflict_mode": "swap"},
     "--conflict_mode='swap': use mix or replace"),
    ({"visual_conflict_fraction": 0.2, "visual_conflict_weight": 0.5},
     r"--visual_conflict_weight=0.5 must be in \(0.5, 1\]"),
    ({"audio_conflict_fraction": 0.2, "audio_conflict_snr_db": 3},
     "--audio_conflict_snr_db=3 must be below 0 dB"),
    ({"visual_conflict_fraction": 1.2}, r"--visual_conflict_fraction=1.2 must be in \[0, 1\]"),
    ({"visual_noise_fraction": 0.5, "audio_conflict_fraction": 0.6},
     "--visual_noise_fraction=0.5 plus --audio_conflict_fraction=0.6 exceed 1"),
])
def test_bad_conflict_options_give_one_line_errors(given, message):
    given = dict(given, image_source="sklearn")
    with pytest.raises(convert.DataPrepError, match=message) as e:
        av_mnist_options.resolve_options(given.pop("setting", None), given)
    assert "\n" not in str(e.value)


def test_other_datasets_keep_their_options_and_classes():
    for setting in ("noise", "two_sided", None):
        options = av_mnist_options.resolve_options(setting, {"image_source": "sklearn"})
        assert not set(options) & set(conflict.DEFAULTS)
        assert conflict.kinds(options) == degrade.KINDS


def test_the_command_line_says_a_bad_option_in_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "data_prep", "av_mnist_conflict", f"--fsdd_dir={tmp_path}",
         "--digits_dir=sklearn", "--visual_conflict_weight=0.9", f"--data_dir={tmp_path}/d"],
        cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert ("error: --setting=conflict fixes the degradation: drop "
            "--visual_conflict_weight or leave out --setting") in out.stderr
