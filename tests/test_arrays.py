"""Precomputed features: arrays folders (generic and MultiBench's AV-MNIST) and HTK files."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

import media_fixtures
from configs import tiny
from data_prep import array_files, arrays, convert, folder, htk, media

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _all(data_dir, name, split):
    src = tfds.data_source(name, data_dir=data_dir, split=split)
    return [src[i] for i in range(len(src))]


def _by_id(data_dir, name):
    out = {}
    for split in ("train", "validation", "test"):
        for ex in _all(data_dir, name, split):
            out[ex["id"].decode()] = (split, ex)
    return out


# ------------------------------------------------------------------ generic arrays
def test_generic_folder_with_a_splits_array(tmp_path):
    rng = np.random.default_rng(0)
    n = 24
    audio = rng.normal(size=(n, 8, 10)).astype(np.float32) * 3
    frames = rng.integers(0, 256, size=(n, 2, 12, 12), dtype=np.uint8)  # N x T x H x W grey
    labels = np.array(["cat", "dog", "owl"] * 8)
    ids = np.array([f"clip{i:02d}" for i in range(n)])
    splits = np.array((["train"] * 4 + ["val", "test"]) * 4)
    src = tmp_path / "arrs"
    src.mkdir()
    for name, arr in (("audio", audio), ("frames", frames), ("labels", labels),
                      ("ids", ids), ("splits", splits)):
        np.save(src / f"{name}.npy", arr)
    data_dir = str(tmp_path / "data")
    arrays.prepare_arrays(str(src), data_dir, name="my_arrays", description="random")
    seen = _by_id(data_dir, "my_arrays")
    assert len(seen) == n
    for i in range(n):
        split, ex = seen[f"clip{i:02d}"]
        assert split == {"train": "train", "val": "validation", "test": "test"}[splits[i]]
        np.testing.assert_array_equal(ex["audio"], audio[i].astype(np.float16))
        assert ex["frames"].shape == (2, 12, 12, 3) and ex["frames"].dtype == np.uint8
        for c in range(3):  # grey replicated to RGB, 0-255 kept as is
            np.testing.assert_array_equal(ex["frames"][..., c], frames[i])
        assert ["cat", "dog", "owl"][ex["label"]] == labels[i]
    meta = tfds.builder("my_arrays", data_dir=data_dir).info.metadata
    for unknown in ("sample_rate", "clip_seconds", "n_fft", "hop_length", "center"):
        assert meta[unknown] is None
    assert meta["spectrogram_recipe"] == "precomputed"
    assert meta["feature_shape"] == [8, 10] and meta["feature_description"] == "random"
    assert (meta["num_frames"], meta["frame_size"]) == (2, 12)
    assert meta["split_source"].startswith("given in the arrays: ")
    assert set(meta["preparation"]["source"]) == {f"arrs/{k}.npy" for k in array_files.NAMES}

    # The loader checks what the arrays record, and names what they cannot tell.
    from avgmm.data import pipeline

    ds = pipeline.load_dataset("my_arrays", data_dir, 2,
                               {"spectrogram_recipe": "precomputed", "frame_size": 12,
                                "num_frames": 2, "sample_rate": None})
    assert ds.meta.audio_shape == (8, 10) and ds.meta.frames_shape == (2, 12, 12, 3)
    with pytest.raises(ValueError, match=r"prepared with sample_rate=None but the config "
                                         r"expects sample_rate=8000"):
        pipeline.load_dataset("my_arrays", data_dir, 1, {"sample_rate": 8000})
    # The same call again is a no-op; changed arrays under the same name are refused.
    arrays.prepare_arrays(str(src), data_dir, name="my_arrays", description="random")
    np.save(src / "labels.npy", labels[::-1])
    with pytest.raises(convert.DataPrepError, match="already prepared with other parameters "
                                                    r"\(source: "):
        arrays.prepare_arrays(str(src), data_dir, name="my_arrays", description="random")


def test_per_split_npz_time_major_zscore_and_a_bad_row(tmp_path):
    rng = np.random.default_rng(1)
    parts = {}
    for split, n in (("train", 20), ("test", 6)):
        parts[f"{split}_audio"] = rng.normal(5, 2, size=(n, 7, 4))  # N x T x F
        parts[f"{split}_frames"] = rng.uniform(0, 1, size=(n, 9, 9, 1))  # N x H x W x 1
        parts[f"{split}_labels"] = np.arange(n) % 2
    parts["train_audio"][3, 0, 0] = np.nan  # one clip is reported, not kept
    parts["train_frames"][0, 0, 0, 0], parts["train_frames"][1, 0, 0, 0] = 0.0, 1.0
    src = tmp_path / "z"
    src.mkdir()
    np.savez(src / "features.npz", **parts)
    with pytest.raises(convert.DataPrepError,
                       match=r"the frames are float64 with values in \[0, 1\]: pass "
                             r"--frame_range=black,white \(e.g. 0,1 or 0,255\)"):
        arrays.prepare_arrays(str(src), str(tmp_path / "d0"), name="zz")
    with pytest.raises(convert.DataPrepError,
                       match=r"frame values span \[0, 1\], outside --frame_range=0,0.5"):
        arrays.prepare_arrays(str(src), str(tmp_path / "d0"), name="zz", frame_range=(0, .5))
    data_dir = str(tmp_path / "data")
    arrays.prepare_arrays(str(src), data_dir, name="zz", audio_axes="TF",
                          frame_range=(0, 1), frame_size=8, normalization="zscore",
                          class_names_given=["even", "odd"])
    seen = _by_id(data_dir, "zz")
    assert "train_000003" not in seen and len(seen) == 25
    with open(os.path.join(data_dir, "zz", "failures.jsonl")) as f:
        (row,) = [json.loads(line) for line in f]
    assert (row["id"], row["reason"]) == ("train_000003", "audio features have NaN or inf "
                                                          "values")
    split, ex = seen["test_000004"]
    assert split == "test" and ex["label"] == 0  # 4 % 2 -> "even"
    x = parts["test_audio"][4].T  # F x T
    np.testing.assert_allclose(ex["audio"], (x - x.mean()) / (x.std() + 1e-9), atol=2e-3)
    assert ex["frames"].shape == (1, 8, 8, 3)
    import cv2

    grey = np.rint(parts["test_frames"][4][..., 0] * 255).astype(np.uint8)
    np.testing.assert_array_equal(ex["frames"][0, ..., 1],
                                  cv2.resize(grey, (8, 8), interpolation=cv2.INTER_AREA))
    # Validation: a seeded stratified tenth of train, recorded as such.
    counts = {s: len(_all(data_dir, "zz", s)) for s in ("train", "validation", "test")}
    assert counts == {"train": 17, "validation": 2, "test": 6}
    info = tfds.builder("zz", data_dir=data_dir).info
    assert info.features["label"].names == ["even", "odd"]
    assert info.metadata["split_source"].endswith("; validation 0.1 of train, seed 0")


def test_frame_layouts_and_one_line_refusals(tmp_path):
    assert array_files.frames_layout((5, 28, 28), "f") == (1, 28, 28, 1)
    assert array_files.frames_layout((5, 28, 28, 3), "f") == (1, 28, 28, 3)
    assert array_files.frames_layout((5, 4, 28, 28), "f") == (4, 28, 28, 1)
    assert array_files.frames_layout((5, 4, 28, 28, 1), "f") == (4, 28, 28, 1)
    with pytest.raises(convert.DataPrepError, match="frames must be N x H x W"):
        array_files.frames_layout((5, 784), "image.npy")
    src = tmp_path / "a"
    src.mkdir()
    np.save(src / "audio.npy", np.zeros((4, 3, 3), np.float32))
    np.save(src / "frames.npy", np.zeros((4, 8, 6), np.uint8))
    np.save(src / "labels.npy", np.arange(3))
    with pytest.raises(convert.DataPrepError, match=r"labels.npy has 3 rows but .*audio.npy "
                                                    r"has 4"):
        arrays.prepare_arrays(str(src), str(tmp_path / "d"))
    np.save(src / "labels.npy", np.arange(4))
    with pytest.raises(convert.DataPrepError, match=r"the frames are 8 x 6: pass "
                                                    r"--frame_size=S"):
        arrays.prepare_arrays(str(src), str(tmp_path / "d"))
    out = subprocess.run([sys.executable, "-m", "data_prep.arrays", f"--dir={tmp_path}/none",
                          f"--data_dir={tmp_path}/d"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == f"error: --dir={tmp_path}/none is not a " \
                                                  "directory"


# ------------------------------------------------------------------ MultiBench AV-MNIST
def _write_multibench(root, n_train=48, n_test=16, seed=0):
    """MultiBench's avmnist folder, small: flat 784-pixel float images 0-255, 112 x 112
    spectrograms, digit labels; the digit is visible in both modalities."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 10
        images = rng.uniform(0, 40, size=(n, 28, 28))
        spec = rng.uniform(0, 60, size=(n, 112, 112))
        for i, d in enumerate(labels):
            images[i, 2 * d:2 * d + 6, 4:24] = 250.0
            spec[i, 10 * d:10 * d + 10, :] += 150.0
        os.makedirs(os.path.join(root, "image"), exist_ok=True)
        os.makedirs(os.path.join(root, "audio"), exist_ok=True)
        np.save(os.path.join(root, "image", f"{split}_data.npy"),
                images.reshape(n, 784).astype(np.float32))
        np.save(os.path.join(root, "audio", f"{split}_data.npy"), spec.astype(np.float32))
        np.save(os.path.join(root, f"{split}_labels.npy"), labels)
    return root


def test_multibench_avmnist_layout_prepares_and_trains(tmp_path):
    src = _write_multibench(str(tmp_path / "avmnist"))
    data_dir = str(tmp_path / "data")
    arrays.prepare_arrays(src, data_dir, name="av_mnist_multibench",
                          layout="multibench_avmnist")
    counts = {s: len(_all(data_dir, "av_mnist_multibench", s))
              for s in ("train", "validation", "test")}
    # MultiBench's rule: the last twelfth of train (5,000 of 60,000) is validation.
    assert counts == {"train": 44, "validation": 4, "test": 16}
    val_ids = sorted(ex["id"].decode() for ex in _all(data_dir, "av_mnist_multibench",
                                                      "validation"))
    assert val_ids == [f"train_{i:06d}" for i in range(44, 48)]
    images = np.load(os.path.join(src, "image", "test_data.npy"))
    ex = dict(_all(data_dir, "av_mnist_multibench", "test")[3])
    np.testing.assert_array_equal(ex["frames"][0, ..., 0],
                                  np.rint(images[3].reshape(28, 28)).astype(np.uint8))
    assert ex["audio"].shape == (112, 112)

    from avgmm import run_config, train
    from configs import av_mnist_multibench

    config = av_mnist_multibench.get_config()
    config.data.data_dir = data_dir
    run_config.validate_config(config, num_devices=1)
    tiny.shrink(config, image_size=28, batch_size=16)
    results = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert 0 <= results["test_accuracy"] <= 1 and results["gmm_fits"] == 1


# ------------------------------------------------------------------ HTK
def _htk_bytes(frames, period, size, kind, order=">"):
    """The 12-byte header written field by field: nSamples int32, sampPeriod int32,
    sampSize int16, parmKind int16 (HTK Book 5.7.1)."""
    return (struct.pack(order + "i", frames) + struct.pack(order + "i", period)
            + struct.pack(order + "h", size) + struct.pack(order + "H", kind))


def test_htk_header_layout_kinds_and_values(tmp_path):
    values = np.array([[1.5, -2.0, 0.25], [3.0, 4.0, -1.0]], np.float32)
    mfcc_e = 6 | 0o100  # MFCC_E
    path = tmp_path / "a.mfc"
    path.write_bytes(_htk_bytes(2, 100000, 12, mfcc_e) + values.astype(">f4").tobytes())
    assert path.read_bytes()[:12] == bytes.fromhex("00000002" "000186a0" "000c" "0046")
    got, h = htk.read_features(str(path))
    np.testing.assert_array_equal(got, values)
    assert (h.kind, h.period, h.dim, h.order) == ("MFCC_E", 100000, 3, ">")
    # Written by htk.write: the same bytes.
    htk.write(str(tmp_path / "b.mfc"), values, 100000, mfcc_e)
    assert (tmp_path / "b.mfc").read_bytes() == path.read_bytes()
    # Little-endian (NATURALWRITEORDER) is recognized by the size adding up.
    (tmp_path / "le.mfc").write_bytes(_htk_bytes(2, 100000, 12, mfcc_e, "<")
                                      + values.astype("<f4").tobytes())
    got, h = htk.read_features(str(tmp_path / "le.mfc"))
    np.testing.assert_array_equal(got, values)
    assert h.order == "<"
    # Compressed (_C): nSamples counts 4 extra frames for A and B; x = (short + B) / A.
    scale = np.array([2.0, 4.0, 8.0], np.float32)
    offset = np.array([1.0, 0.0, -2.0], np.float32)
    shorts = np.array([[3, -8, 2], [5, 16, -6]], np.int16)
    kind = mfcc_e | 0o400 | 0o2000 | 0o10000  # MFCC_E_D_C_K: 2-byte CRC at the end
    (tmp_path / "c.mfc").write_bytes(
        _htk_bytes(2 + 4, 100000, 6, kind) + scale.astype(">f4").tobytes()
        + offset.astype(">f4").tobytes() + shorts.astype(">i2").tobytes() + b"\x12\x34")
    got, h = htk.read_features(str(tmp_path / "c.mfc"))
    np.testing.assert_allclose(got, [[2.0, -2.0, 0.0], [3.0, 4.0, -1.0]])
    assert h.kind == "MFCC_E_D" and h.qualifiers == ("E", "D", "C", "K")
    # A truncated copy, a waveform and a non-HTK file are reasons, not crashes.
    (tmp_path / "t.mfc").write_bytes(path.read_bytes()[:-5])
    with pytest.raises(media.ClipError, match=r"HTK file truncated or padded: its header "
                                              r"says 2 frame\(s\) of 12 bytes \(36 bytes in "
                                              r"all\) but the file has 31"):
        htk.read_features(str(tmp_path / "t.mfc"))
    (tmp_path / "w.htk").write_bytes(_htk_bytes(4, 625, 2, 0) + b"\x00\x01" * 4)
    with pytest.raises(media.ClipError, match="kind WAVEFORM holds no feature vectors"):
        htk.read_features(str(tmp_path / "w.htk"))
    (tmp_path / "x.htk").write_bytes(b"RIFF" + b"\x00" * 40)
    with pytest.raises(media.ClipError, match="not an HTK parameter file"):
        htk.read_features(str(tmp_path / "x.htk"))


def test_htk_features_are_cut_and_tiled_like_waveforms(tmp_path):
    values = np.arange(12, dtype=np.float32).reshape(4, 3)  # 4 frames of 3 coefficients
    htk.write(str(tmp_path / "a.mfc"), values, 100000, 6)
    params = htk.HtkParams(clip_seconds=0.1, period=100000, coefficients=3, kind="MFCC")
    assert params.shape == (3, 10)
    spec, seconds = params.read_feature(str(tmp_path / "a.mfc"))
    np.testing.assert_array_equal(spec, values[[0, 1, 2, 3, 0, 1, 2, 3, 0, 1]].T)
    assert seconds == pytest.approx(0.04)
    spec, seconds = params.read_feature(str(tmp_path / "a.mfc"), start=0.01, end=0.03)
    np.testing.assert_array_equal(spec, values[[1, 2] * 5].T)
    assert htk.HtkParams.from_metadata(params.as_metadata()) == params
    with pytest.raises(media.ClipError, match="this dataset has MFCC, 100000, 4"):
        htk.HtkParams(0.1, 100000, 4, "MFCC").read_feature(str(tmp_path / "a.mfc"))


def test_htk_audio_folder_csv_prepares(tmp_path):
    rows = ["video_path,label,split,audio_path"]
    rng = np.random.default_rng(2)
    for i in range(6):
        video = tmp_path / f"v{i}.mp4"
        media_fixtures.write_video(str(video), media_fixtures.moving_frames(12, 32, 32, i),
                                   10, None, 16000, "mp4")
        feats = rng.normal(size=(30 + 10 * i, 13)).astype(np.float32)
        htk.write(str(tmp_path / f"v{i}.mfc"), feats, 200000, 6 | 0o100)  # 20 ms MFCC_E
        rows.append(f"v{i}.mp4,{'ab'[i % 2]},{'train' if i < 4 else 'test'},v{i}.mfc")
    (tmp_path / "t.mfc").write_bytes((tmp_path / "v0.mfc").read_bytes()[:-7])
    rows.append("v0.mp4,a,train,t.mfc")  # truncated: reported, not kept
    csv_path = tmp_path / "clips.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    params = folder.htk_params(str(csv_path), 1.0, "none")
    assert params == htk.HtkParams(1.0, 200000, 13, "MFCC_E")
    data_dir = str(tmp_path / "data")
    cls = folder.builder_class("htk_clips")
    convert.prepare(cls, str(tmp_path), data_dir, audio=params,
                    frames=convert.FrameParams(2, 16), workers=1, csv_path=str(csv_path))
    builder = tfds.builder("htk_clips", data_dir=data_dir)
    meta = builder.info.metadata
    assert meta["spectrogram_recipe"] == "htk:MFCC_E" and meta["sample_rate"] is None
    assert meta["htk_frame_seconds"] == pytest.approx(0.02) and meta["feature_shape"] == [13, 50]
    ex = {e["id"].decode(): e for e in _all(data_dir, "htk_clips", "train")}
    assert sorted(ex) == ["v0.mp4", "v1.mp4", "v2.mp4", "v3.mp4"]
    _, h = htk.read_features(str(tmp_path / "v1.mfc"))
    feats, _ = htk.read_features(str(tmp_path / "v1.mfc"))
    np.testing.assert_array_equal(ex["v1.mp4"]["audio"],
                                  np.tile(feats, (2, 1))[:50].T.astype(np.float16))
    with open(os.path.join(data_dir, "htk_clips", "failures.jsonl")) as f:
        (row,) = [json.loads(line) for line in f]
    assert row["audio"].endswith("t.mfc") and row["reason"].startswith("HTK file truncated")
    # Reopened without arguments, the builder reads its HTK parameters back.
    reopened = cls(data_dir=data_dir)
    assert reopened.audio == params
    # A CSV mixing HTK and media audio is refused.
    (tmp_path / "mixed.csv").write_text("\n".join(rows[:3] + ["v2.mp4,a,train,"]) + "\n")
    with pytest.raises(convert.DataPrepError, match=r"mixed.csv:4 names no HTK file"):
        folder.htk_params(str(tmp_path / "mixed.csv"), 1.0, "none")


# ------------------------------------------------------------------ what the arrays hold
def _write_generic(src, labels, audio=None):
    """A generic folder of len(labels) clips: 8 x 10 float audio, 12 x 12 grey frames."""
    rng = np.random.default_rng(2)
    n = len(labels)
    os.makedirs(src, exist_ok=True)
    np.save(os.path.join(src, "audio.npy"),
            rng.normal(size=(n, 8, 10)).astype(np.float32) if audio is None else audio)
    np.save(os.path.join(src, "frames.npy"), rng.integers(0, 256, (n, 12, 12), np.uint8))
    np.save(os.path.join(src, "labels.npy"), labels)
    return str(src)


def _labels_by_id(data_dir, name):
    names = tfds.builder(name, data_dir=data_dir).info.features["label"].names
    return names, {i: names[ex["label"]] for i, (_, ex) in _by_id(data_dir, name).items()}


def test_whole_number_float_labels_are_class_indices_with_a_notice(tmp_path, capsys):
    src = _write_generic(tmp_path / "f", np.array([0.0, 1.0, 2.0] * 8))
    arrays.prepare_arrays(src, str(tmp_path / "d"), name="float_labels")
    assert "notice: " in capsys.readouterr().out
    names, by_id = _labels_by_id(str(tmp_path / "d"), "float_labels")
    assert names == ["0", "1", "2"]
    assert [by_id[f"clip_{i:06d}"] for i in range(6)] == ["0", "1", "2"] * 2
    # A fractional or non-finite label is refused, naming the file, the row and the value.
    for bad, shown in ((1.5, "1.5"), (np.nan, "nan")):
        src = _write_generic(tmp_path / "g", np.array([0.0, 1.0, bad, 1.0]))
        with pytest.raises(convert.DataPrepError,
                           match=rf"labels.npy row 2 has the label {shown}: labels must be "
                                 "whole class indices"):
            arrays.prepare_arrays(src, str(tmp_path / "d2"), name="float_labels2")


def test_sparse_labels_are_mapped_to_dense_classes_with_a_notice(tmp_path, capsys):
    src = _write_generic(tmp_path / "s", np.array([0, 5] * 12))
    arrays.prepare_arrays(src, str(tmp_path / "d"), name="sparse_labels")
    out = capsys.readouterr().out
    assert "the labels are not 0..K-1; mapped to class indices in sorted order, named by " \
           "their values: 0 -> 0, 5 -> 1" in out
    names, by_id = _labels_by_id(str(tmp_path / "d"), "sparse_labels")
    assert names == ["0", "5"]  # 2 classes, not 6 with 4 empty
    assert by_id["clip_000000"] == "0" and by_id["clip_000001"] == "5"


def test_a_huge_label_allocates_nothing_proportional_to_it(tmp_path):
    """A label of 10**12 once made the converter build one class name per integer up to
    it. Run in a process whose heap is capped 2 GiB above its start, so that such an
    allocation fails there instead of filling the machine."""
    src = _write_generic(tmp_path / "h", np.array([0, 1, 10 ** 12] * 8))
    script = f"""
import resource, sys
from data_prep import arrays
def vm_data():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmData:"))
cap = vm_data() + 2 * 2 ** 30
resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
b = arrays.prepare_arrays({src!r}, {str(tmp_path / 'd')!r}, name="huge_label")
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start
print("peak RSS above the start: %.1f MiB" % (grown / 1024))
print("classes", b.info.features["label"].names)
assert grown < 2 * 2 ** 20, grown  # kB
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=REPO))
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "classes ['0', '1', '1000000000000']" in proc.stdout
    assert "1000000000000 -> 2" in proc.stdout


@pytest.mark.parametrize("labels,audio,message", [
    (np.zeros(24, np.int64), None, r"labels.npy: every label is '0'; a classifier needs "
                                   r"labels of at least 2 classes"),
    (np.array(["dog"] * 24), None, r"labels.npy: every label is 'dog'; a classifier needs"),
    (np.arange(24) % 2, np.ones((24, 8, 10), np.complex64),
     r"audio.npy holds complex64 values: audio must be real numbers \(of a complex "
     r"spectrogram, store np.abs\(x\) or its power"),
    (np.arange(24) % 2, np.full((24, 8, 10), "ab"), r"audio.npy holds <U2 values: audio "
                                                    r"must be real numbers"),
    (np.array([0, 1, -1] * 8), None, r"labels.npy row 2 has the label -1: class indices are "
                                     r">= 0"),
])
def test_meaningless_arrays_are_refused_naming_the_file(labels, audio, message, tmp_path):
    src = _write_generic(tmp_path / "m", labels, audio)
    with pytest.raises(convert.DataPrepError, match=message):
        arrays.prepare_arrays(src, str(tmp_path / "d"), name="meaningless")
    assert not os.path.exists(tmp_path / "d" / "meaningless")
    # The command line: one line, exit status 2, no traceback.
    out = subprocess.run([sys.executable, "-m", "data_prep.arrays", f"--dir={src}",
                          f"--data_dir={tmp_path / 'd'}", "--name=meaningless"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert lines[-1].startswith("error: ") and str(src) in lines[-1], lines[-1]


def test_training_on_a_split_of_one_class_is_refused_before_compiling(tmp_path):
    """Every class present somewhere, but the training split holds one of them only."""
    src = _write_multibench(str(tmp_path / "avmnist"), n_train=24, n_test=10)
    np.save(os.path.join(src, "train_labels.npy"), np.full(24, 3))
    data_dir = str(tmp_path / "data")
    arrays.prepare_arrays(src, data_dir, name="av_mnist_multibench",
                          layout="multibench_avmnist")
    from avgmm import train
    from avgmm.errors import UserError
    from configs import av_mnist_multibench

    config = tiny.shrink(av_mnist_multibench.get_config(), image_size=28, batch_size=8)
    config.data.data_dir = data_dir
    with pytest.raises(UserError, match=r"the training split of 'av_mnist_multibench' holds "
                                        r"labels of 1 class \('3'\) only"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")
