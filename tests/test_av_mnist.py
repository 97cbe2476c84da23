"""The AV-MNIST converter on real FSDD recordings and real handwritten digits.

The digits are scikit-learn's bundled `load_digits` (1,797 8 x 8 images), written here as
MNIST idx files (gzip and plain) and as a `<digit>/` image folder.
"""

import gzip
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import tiny
from data_prep import av_mnist, convert, degrade, digit_images, features, media

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FSDD = os.path.join(os.path.dirname(REPO), "shared", "data", "fsdd", "recordings")
SPEAKERS = ("george", "jackson", "lucas")
PER_DIGIT = 4  # recordings per digit and speaker: 120 real clips in all
N_TRAIN_IMAGES = 1000  # sklearn digits [0, 1000) are "MNIST train", the rest "MNIST test"
SIZE = 16

pytestmark = pytest.mark.skipif(not os.path.isdir(FSDD),
                                reason=f"the real FSDD recordings are not at {FSDD}")


@pytest.fixture(scope="module")
def digits():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    d = sklearn_datasets.load_digits()
    return np.round(d.images * (255 / 16)).astype(np.uint8), d.target.astype(np.uint8)


def _write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(
        struct.pack(">I", n) for n in array.shape)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


@pytest.fixture(scope="module")
def fsdd_dir(tmp_path_factory):
    """A subset of the real recordings, one corrupt wav and one badly named wav."""
    root = tmp_path_factory.mktemp("fsdd") / "recordings"
    root.mkdir()
    for speaker in SPEAKERS:
        for digit in range(10):
            for i in range(PER_DIGIT):
                name = f"{digit}_{speaker}_{i}.wav"
                shutil.copy(os.path.join(FSDD, name), root / name)
    (root / "5_lucas_99.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 8)
    shutil.copy(os.path.join(FSDD, "1_lucas_0.wav"), root / "one-lucas.wav")
    return str(root)


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory, digits):
    images, labels = digits
    root = tmp_path_factory.mktemp("mnist")
    _write_idx(str(root / "train-images-idx3-ubyte.gz"), images[:N_TRAIN_IMAGES])
    _write_idx(str(root / "train-labels-idx1-ubyte.gz"), labels[:N_TRAIN_IMAGES])
    _write_idx(str(root / "t10k-images-idx3-ubyte"), images[N_TRAIN_IMAGES:])
    _write_idx(str(root / "t10k-labels-idx1-ubyte"), labels[N_TRAIN_IMAGES:])
    return str(root)


@pytest.fixture(scope="module")
def prepared(fsdd_dir, mnist_dir, tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("av_mnist_data"))
    av_mnist.prepare(fsdd_dir, data_dir, mnist_dir=mnist_dir, image_size=SIZE,
                     test_speakers=["george"], val_fraction=0.25, seed=3,
                     visual_noise_fraction=0.3, audio_noise_fraction=0.2)
    return data_dir


def _splits(data_dir, name="av_mnist"):
    out = {}
    for s in tfds.builder(name, data_dir=data_dir).info.splits:
        src = tfds.data_source(name, data_dir=data_dir, split=s)
        out[s] = [src[i] for i in range(len(src))]
    return out


def _image_of(ref, digits):
    images, labels = digits
    part, i = ref.split(":")
    i = int(i) + (0 if part == "mnist_train" else N_TRAIN_IMAGES)
    return images[i], int(labels[i])


def test_splits_pairing_degradation_and_metadata(prepared, fsdd_dir, digits):
    splits = _splits(prepared)
    ids = {s: [ex["id"].decode() for ex in v] for s, v in splits.items()}
    # Without --setting, the converter pairs and degrades as its first release (1.0.0)
    # did: the hash of every split's (id, degraded) rows that release wrote here.
    rows = {s: [[ex["id"].decode(), int(ex["degraded"])] for ex in v]
            for s, v in splits.items()}
    assert hashlib.sha1(json.dumps(rows, sort_keys=True).encode()).hexdigest() == \
        "ad85e5bef83e3e67c3c99e30b6eb0d987426de66"
    speaker = lambda i: i.split("+")[0].split("_")[1]  # noqa: E731
    # The held-out speaker is the whole test split and nowhere else.
    assert len(ids["test"]) == 10 * PER_DIGIT and {speaker(i) for i in ids["test"]} == {"george"}
    rest = ids["train"] + ids["validation"]
    assert "george" not in {speaker(i) for i in rest}
    assert len(rest) == 2 * 10 * PER_DIGIT  # 5_lucas_99 is corrupt, not counted as a clip
    val_skipped = tfds.builder("av_mnist", data_dir=prepared).info.metadata["summary"][
        "per_split"]["validation"]["skipped"]  # the corrupt wav, if drawn for validation
    assert len(ids["validation"]) + val_skipped == 10 * round(0.25 * 2 * PER_DIGIT)
    # Each image once; test images from MNIST's test set, the others from its train set.
    refs = [i.split("+")[1] for v in ids.values() for i in v]
    assert len(refs) == len(set(refs))
    assert all(r.startswith("mnist_test:") for r in (i.split("+")[1] for i in ids["test"]))
    assert all(r.startswith("mnist_train:") for r in (i.split("+")[1] for i in rest))
    for s, examples in splits.items():
        n = len(examples)
        codes = np.array([ex["degraded"] for ex in examples])
        assert (codes == 1).sum() == round(0.3 * n) and (codes == 2).sum() == round(0.2 * n)
        np.testing.assert_array_equal([ex["imbalanced"] for ex in examples], codes != 0)
        for ex, code in zip(examples, codes):
            recording, ref = ex["id"].decode().split("+")
            image, label = _image_of(ref, digits)
            assert ex["label"] == label == int(recording[0])  # same digit in both streams
            assert ex["frames"].shape == (1, SIZE, SIZE, 3) and ex["frames"].dtype == np.uint8
            expected = digit_images.digit_frame(image, SIZE)
            if code == 1:  # noise instead of the image
                assert np.abs(ex["frames"].astype(int) - expected).mean() > 40
            else:
                np.testing.assert_array_equal(ex["frames"], expected)
            clean = features.spectrogram(
                media.load_audio(os.path.join(fsdd_dir, recording + ".wav"), 8000),
                av_mnist.AUDIO).astype(np.float32)
            audio = ex["audio"].astype(np.float32)
            assert audio.shape == (64, 65)
            if code == 2:  # noise 10 dB above the speech raises the whole spectrogram
                assert (audio - clean).mean() > 1.0
            else:
                np.testing.assert_allclose(audio, clean, atol=2e-2)
    info = tfds.builder("av_mnist", data_dir=prepared).info
    for key, value in {"sample_rate": 8000, "clip_seconds": 1.0, "n_fft": 126,
                       "hop_length": 125, "frame_size": SIZE, "num_frames": 1,
                       "test_speakers": "george", "val_fraction": 0.25, "seed": 3,
                       "visual_noise_fraction": 0.3, "audio_noise_fraction": 0.2,
                       "audio_noise_snr_db": -10.0, "image_source": "mnist"}.items():
        assert info.metadata[key] == value, key
    summary = info.metadata["summary"]
    assert summary["per_split"]["test"] == {"kept": 40, "skipped": 0}
    assert summary["degraded"]["test"] == {"none": 20, "visual_noise": 12, "visual_graded": 0,
                                           "audio_noise": 8, "audio_mix": 0}
    with open(os.path.join(prepared, "av_mnist", "failures.jsonl")) as f:
        failures = {os.path.basename(r["audio"]): r["reason"] for r in map(json.loads, f)}
    assert set(failures) == {"5_lucas_99.wav", "one-lucas.wav"}
    assert failures["5_lucas_99.wav"].startswith("unreadable audio")
    assert failures["one-lucas.wav"] == "file name is not <digit>_<speaker>_<index>.wav"


def test_loader_and_trainer_see_the_ground_truth_flag(prepared, tmp_path):
    from avgmm import run_config, train
    from avgmm.data import pipeline
    from configs import av_mnist as av_mnist_config

    config = av_mnist_config.get_config()
    config.data.data_dir = prepared
    config.data.expect.frame_size = SIZE
    ds = pipeline.load_dataset("av_mnist", prepared, 1, dict(config.data.expect))
    assert ds.meta.has_imbalance_flag and ds.meta.num_classes == 10
    batch = ds.read("test", range(40))
    assert batch["imbalanced"].dtype == bool and batch["imbalanced"].sum() == 20
    run_config.validate_config(config, num_devices=1)
    tiny.shrink(config, image_size=SIZE, batch_size=16)
    results = train.train_and_evaluate(config, str(tmp_path / "run"))
    # The GMM's imbalanced posterior is scored against the recorded degradation.
    assert 0 <= results["final_gmm_auc_imbalanced"] <= 1


def test_same_call_is_idempotent_and_other_options_are_refused(prepared, fsdd_dir, mnist_dir):
    version_dir = os.path.join(prepared, "av_mnist", str(av_mnist.AvMnist.VERSION))
    before = sorted(os.listdir(version_dir))
    av_mnist.prepare(fsdd_dir, prepared, mnist_dir=mnist_dir, image_size=SIZE,
                     test_speakers=["george"], val_fraction=0.25, seed=3,
                     visual_noise_fraction=0.3, audio_noise_fraction=0.2)
    assert sorted(os.listdir(version_dir)) == before
    with pytest.raises(convert.DataPrepError, match="already prepared with other parameters"):
        av_mnist.prepare(fsdd_dir, prepared, mnist_dir=mnist_dir, image_size=SIZE,
                         test_speakers=["george"], val_fraction=0.25, seed=3,
                         visual_noise_fraction=0.5)


def test_digit_folder_is_partitioned_and_shortages_are_reported(fsdd_dir, digits, tmp_path):
    import cv2

    images, labels = digits
    root = tmp_path / "digits"
    counts = {d: 0 for d in range(10)}
    for i, (image, label) in enumerate(zip(images, labels.tolist())):
        # Digit 7 gets 6 images: 4 for george's test clips, 2 for 8 train/val clips.
        if counts[label] >= (6 if label == 7 else 15):
            continue
        counts[label] += 1
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / str(label) / f"img{i}.png"), image)
    (root / "3" / "broken.png").write_bytes(b"not a png")
    cv2.imwrite(str(root / "stray.png"), images[0])
    data_dir = str(tmp_path / "data")
    av_mnist.prepare(fsdd_dir, data_dir, digits_dir=str(root), name="av_mnist_folder",
                     image_size=SIZE, test_speakers=["george", "jackson"], val_fraction=0.0,
                     visual_noise_fraction=0.25)
    splits = _splits(data_dir, "av_mnist_folder")
    assert set(splits) == {"train", "test"}  # val_fraction=0: no validation split
    ids = {s: [ex["id"].decode() for ex in v] for s, v in splits.items()}
    refs = {s: [i.split("+")[1] for i in v] for s, v in ids.items()}
    all_refs = refs["train"] + refs["test"]
    assert len(all_refs) == len(set(all_refs))  # each image once, test and train disjoint
    assert all(r.split("/")[0] == i[0] for s in ids for i, r in zip(ids[s], refs[s]))
    # 2 speakers x 4 clips of digit 7 in test use 6 images at most; train gets none left.
    sevens = {s: sum(i.startswith("7_") for i in v) for s, v in ids.items()}
    assert sevens["test"] == 6 and sevens["train"] == 0
    assert len(ids["test"]) == 9 * 8 + 6 and len(ids["train"]) == 9 * PER_DIGIT
    for s, examples in splits.items():
        assert sum(ex["imbalanced"] for ex in examples) == round(0.25 * len(examples))
    with open(os.path.join(data_dir, "av_mnist_folder", "failures.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    short = [r for r in rows if r.get("reason", "").startswith("too few images of digit 7")]
    assert len(short) == 2 + PER_DIGIT
    bad_images = {os.path.basename(r["image"]): r["reason"] for r in rows if "image" in r}
    assert bad_images == {"broken.png": "unreadable image",
                          "stray.png": "not inside a <digit>/ folder (0-9)"}


def test_missing_inputs_give_one_line_errors(fsdd_dir, mnist_dir, tmp_path):
    partial = tmp_path / "mnist"
    shutil.copytree(mnist_dir, partial)
    os.remove(partial / "t10k-labels-idx1-ubyte")
    with pytest.raises(convert.DataPrepError, match=r"lacks the MNIST file "
                                                    r"t10k-labels-idx1-ubyte"):
        av_mnist.prepare(fsdd_dir, str(tmp_path / "d"), mnist_dir=str(partial))
    with pytest.raises(convert.DataPrepError, match=r"--test_speakers names \['nobody'\]"):
        av_mnist.prepare(fsdd_dir, str(tmp_path / "d"), mnist_dir=mnist_dir,
                         test_speakers=["nobody"])
    with pytest.raises(convert.DataPrepError, match="exceed 1"):
        av_mnist.prepare(fsdd_dir, str(tmp_path / "d"), mnist_dir=mnist_dir,
                         visual_noise_fraction=0.6, audio_noise_fraction=0.6)
    with pytest.raises(convert.DataPrepError, match="exactly one of --mnist_dir"):
        av_mnist.prepare(fsdd_dir, str(tmp_path / "d"))
    # The command line says it in one line, without a traceback.
    out = subprocess.run([sys.executable, "-m", "data_prep.av_mnist", f"--fsdd_dir={fsdd_dir}",
                          f"--mnist_dir={partial}", f"--data_dir={tmp_path}/d"], cwd=REPO,
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))
    assert out.returncode != 0 and "lacks the MNIST file t10k-labels" in out.stderr
    assert "Traceback" not in out.stderr


def test_read_idx_refuses_a_truncated_file(tmp_path, digits):
    path = str(tmp_path / "x-idx3-ubyte")
    _write_idx(path, digits[0][:5])
    np.testing.assert_array_equal(digit_images.read_idx(path), digits[0][:5])
    with open(path, "r+b") as f:
        f.truncate(100)
    with pytest.raises(convert.DataPrepError, match="is truncated"):
        digit_images.read_idx(path)


def test_audio_noise_has_the_asked_snr():
    wave = np.sin(np.linspace(0, 200, 8000)).astype(np.float32) * 0.1
    noisy = degrade.add_noise(wave, -10.0, np.random.default_rng(0))
    snr = 10 * np.log10(np.mean(wave ** 2) / np.mean((noisy - wave) ** 2))
    assert abs(snr + 10) < 0.3


@pytest.fixture(scope="module")
def settings_dir(fsdd_dir, tmp_path_factory):
    """The four benchmark settings prepared side by side in one data_dir (sklearn's
    digits; george tests, jackson validates, lucas trains)."""
    data_dir = str(tmp_path_factory.mktemp("settings"))
    for setting in av_mnist.SETTINGS:
        av_mnist.prepare(fsdd_dir, data_dir, digits_dir="sklearn", setting=setting,
                         image_size=SIZE)
    return data_dir


def _degradations(data_dir, name):
    with open(os.path.join(data_dir, name, "degradations.jsonl")) as f:
        return {row["key"]: row for row in map(json.loads, f)}


def test_benchmark_settings_coexist_with_held_out_speakers_and_recorded_degradation(
        settings_dir, fsdd_dir, digits):
    images = digits[0]
    fractions = {"noise": {"visual_noise": 0.3}, "graded": {"visual_graded": 0.3},
                 "two_sided": {"visual_graded": 0.2, "audio_mix": 0.2}, "none": {}}
    for setting, want in fractions.items():
        name = f"av_mnist_{setting}"
        info = tfds.builder(name, data_dir=settings_dir).info
        assert info.metadata["setting"] == setting and info.metadata["val_speakers"] == "jackson"
        assert info.metadata["split_source"] == (
            "speakers: test george, validation jackson; seed 0")
        splits = _splits(settings_dir, name)
        log = _degradations(settings_dir, name)
        refs = {}
        for split, speaker in (("test", "george"), ("validation", "jackson"),
                               ("train", "lucas")):
            examples = splits[split]
            keys = [ex["id"].decode().split("+")[0] for ex in examples]
            assert {k.split("_")[1] for k in keys} == {speaker}, (setting, split)
            # 5_lucas_99 is corrupt; every other recording has an image.
            assert len(examples) == 10 * PER_DIGIT, (setting, split)
            refs[split] = [ex["id"].decode().split("+")[1] for ex in examples]
            # Within a split an image serves at most two clips (sklearn's digits are few).
            assert max(refs[split].count(r) for r in refs[split]) <= 2
            kinds = [degrade.KINDS[ex["degradation"]] for ex in examples]
            for kind in degrade.KINDS[1:]:
                assert kinds.count(kind) == round(want.get(kind, 0.0) * len(examples)), kind
            for ex, key, kind, ref in zip(examples, keys, kinds, refs[split]):
                strength = float(ex["degradation_strength"])
                assert ex["imbalanced"] == (kind != "none")
                assert degrade.STREAMS[ex["degraded"]] == degrade.STREAM_OF[kind]
                image = images[int(ref.split(":")[1])]
                rng = degrade.clip_rng(0, 1, key)
                if kind == "none":
                    assert strength == 0 and key not in log
                    np.testing.assert_array_equal(ex["frames"],
                                                  digit_images.digit_frame(image, SIZE))
                elif kind == "visual_noise":
                    assert strength == 1
                elif kind == "visual_graded":  # weak, not empty: the same digit, degraded
                    assert 0.3 <= strength <= 1.0
                    np.testing.assert_array_equal(
                        ex["frames"], degrade.graded_frame(image, SIZE, strength, rng))
                if kind == "audio_mix":  # two other spoken digits of the same split
                    row = log[key]
                    assert -6 <= row["snr_db"] <= 0 and row["split"] == split
                    assert strength == pytest.approx(degrade.interference_share(row["snr_db"]))
                    others = row["mixed_in"]
                    assert len({o[0] for o in others} | {key[0]}) == 3
                    assert all(o.split("_")[1] == speaker for o in others)
                    wave = lambda k: np.clip(features.fit_length(  # noqa: E731
                        media.load_audio(os.path.join(fsdd_dir, k + ".wav"), 8000), 8000),
                        -1, 1)
                    mixed = degrade.mix_in(wave(key), [wave(o) for o in others], row["snr_db"])
                    np.testing.assert_allclose(
                        ex["audio"].astype(np.float32),
                        features.spectrogram(mixed, av_mnist.AUDIO).astype(np.float32),
                        atol=2e-2)
        # Images never cross splits.
        assert not set(refs["test"]) & set(refs["validation"])
        assert not (set(refs["test"]) | set(refs["validation"])) & set(refs["train"])


def test_the_config_argument_points_at_each_setting(settings_dir):
    from avgmm import config_text
    from avgmm.data import pipeline

    config = config_text.load_config_file(os.path.join(REPO, "configs", "av_mnist.py:two-sided"))
    assert config.data.name == "av_mnist_two_sided"
    config.data.expect.frame_size = SIZE
    ds = pipeline.load_dataset(config.data.name, settings_dir, 1, dict(config.data.expect))
    assert dict(ds.meta.clip_fields) == {
        "degradation": degrade.KINDS, "degradation_strength": "float",
        "degraded": degrade.STREAMS, "imbalanced": "bool"}
    batch = ds.read("test", range(40))
    assert batch["degraded"].dtype == np.int32 and batch["degradation_strength"].dtype == np.float32
    np.testing.assert_array_equal(batch["degraded"] == 1, batch["degradation"] == 2)  # graded
    assert (batch["degraded"] == 2).sum() == 8 and batch["imbalanced"].sum() == 16
    # The data of another setting is refused by this config.
    with pytest.raises(ValueError, match=r"prepared with setting='graded' but the config "
                                         r"expects setting='two_sided'"):
        pipeline.load_dataset("av_mnist_graded", settings_dir, 1, dict(config.data.expect))


def test_a_setting_fixes_the_degradation_and_checks_the_speakers(fsdd_dir, tmp_path):
    with pytest.raises(convert.DataPrepError, match=r"--setting=graded fixes the degradation: "
                                                    r"drop --visual_noise_fraction"):
        av_mnist.prepare(fsdd_dir, str(tmp_path), digits_dir="sklearn", setting="graded",
                         visual_noise_fraction=0.1)
    with pytest.raises(convert.DataPrepError, match=r"--setting='loud': use one of"):
        av_mnist.prepare(fsdd_dir, str(tmp_path), digits_dir="sklearn", setting="loud")
    with pytest.raises(convert.DataPrepError, match=r"--val_speakers names \['nobody'\]"):
        av_mnist.prepare(fsdd_dir, str(tmp_path), digits_dir="sklearn", setting="none",
                         val_speakers=["nobody"])
    with pytest.raises(convert.DataPrepError, match="both choose the validation split"):
        av_mnist.prepare(fsdd_dir, str(tmp_path), digits_dir="sklearn",
                         val_speakers=["jackson"], val_fraction=0.2)
    with pytest.raises(convert.DataPrepError, match="leave at least one for training"):
        av_mnist.prepare(fsdd_dir, str(tmp_path), digits_dir="sklearn",
                         test_speakers=["george"], val_speakers=["jackson", "lucas"])
