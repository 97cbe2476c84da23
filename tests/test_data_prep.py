"""Converters on generated raw trees in the exact CREMA-D / AVE layouts (real media)."""

import csv
import hashlib
import json
import os
import subprocess
import sys

import librosa
import numpy as np
import pytest
import tensorflow_datasets as tfds

import media_fixtures
from configs import tiny
from data_prep import ave, convert, crema_d, features, folder, media

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
SMALL = convert.FrameParams(num_frames=3, frame_size=32)


@pytest.fixture(scope="module")
def crema_raw(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("crema_raw"))
    return root, media_fixtures.make_crema_tree(root, per_class=2)


@pytest.fixture(scope="module")
def crema_prepared(crema_raw, tmp_path_factory):
    root, _ = crema_raw
    data_dir = str(tmp_path_factory.mktemp("crema_data"))
    convert.prepare(crema_d.CremaDAv, root, data_dir, frames=SMALL, workers=2)
    return data_dir


@pytest.fixture(scope="module")
def ave_raw(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ave_raw"))
    return root, media_fixtures.make_ave_tree(root)


@pytest.fixture(scope="module")
def ave_prepared(ave_raw, tmp_path_factory):
    root, _ = ave_raw
    data_dir = str(tmp_path_factory.mktemp("ave_data"))
    convert.prepare(ave.AveAv, root, data_dir, frames=SMALL, workers=1)
    return data_dir


def _all(data_dir, name, split):
    src = tfds.data_source(name, data_dir=data_dir, split=split)
    return [src[i] for i in range(len(src))]


def test_crema_counts_shapes_labels_and_failure_report(crema_raw, crema_prepared):
    _, made = crema_raw
    splits = {s: _all(crema_prepared, "crema_d_av", s) for s in ("train", "validation", "test")}
    examples = [ex for v in splits.values() for ex in v]
    ids = [ex["id"].decode() for ex in examples]
    assert sorted(ids) == sorted(made["good"])  # every good clip once, no broken one
    assert all(len(v) > 0 for v in splits.values())
    for ex in examples:
        assert ex["audio"].dtype == np.float16 and ex["audio"].shape == (257, 188)
        assert ex["frames"].dtype == np.uint8 and ex["frames"].shape == (3, 32, 32, 3)
        assert crema_d.EMOTIONS[ex["label"]] == ex["id"].decode().split("_")[2]
        # Moving content: the three sampled frames differ.
        assert not np.array_equal(ex["frames"][0], ex["frames"][2])
    with open(os.path.join(crema_prepared, "crema_d_av", "failures.jsonl")) as f:
        failures = {r["id"]: r["reason"] for r in map(json.loads, f)}
    assert set(failures) == set(made["broken"])
    assert failures["1091_IEO_ANG_LO"] == "empty file (0 bytes)"
    assert failures["1091_IOM_FEA_HI"] == "silent audio"
    assert failures["1091_TIE_DIS_MD"].startswith("unreadable audio")
    assert failures["1091_ITH_HAP_XX"].startswith("unreadable video")
    # An FLV cut to its first 1,500 bytes opens and decodes a corrupt frame or two.
    assert failures["1091_DFA_NEU_XX"].startswith("video truncated: ")
    info = tfds.builder("crema_d_av", data_dir=crema_prepared).info
    summary = info.metadata["summary"]["per_split"]
    assert sum(v["kept"] for v in summary.values()) == len(made["good"])
    assert sum(v["skipped"] for v in summary.values()) == len(made["broken"])
    for key, value in {"sample_rate": 22050, "clip_seconds": 3.0, "n_fft": 512,
                       "hop_length": 353, "normalization": "none", "frame_size": 32,
                       "spectrogram_recipe": "stft_log_magnitude",
                       "num_frames": 3}.items():
        assert info.metadata[key] == value


def test_crema_spectrogram_matches_an_independent_librosa_computation(crema_raw,
                                                                      crema_prepared):
    root, made = crema_raw
    by_id = {ex["id"].decode(): ex for s in ("train", "validation", "test")
             for ex in _all(crema_prepared, "crema_d_av", s)}
    for clip in made["good"][:3]:
        y, _ = librosa.load(os.path.join(root, "AudioWAV", clip + ".wav"), sr=22050)
        y = np.clip(np.tile(y, 3)[:66150], -1, 1)  # tile, cut to 3 s (clips are >= 2 s)
        expected = np.log(np.abs(librosa.stft(y, n_fft=512, hop_length=353)) + 1e-7)
        np.testing.assert_allclose(by_id[clip]["audio"].astype(np.float32), expected,
                                   rtol=2e-3, atol=2e-3)


def test_crema_default_split_is_seeded_and_stratified(crema_raw, tmp_path):
    root, made = crema_raw
    builder = crema_d.CremaDAv(data_dir=str(tmp_path), frames=SMALL)
    a = {c.key: c.split for c in builder.list_clips(root)}
    b = {c.key: c.split for c in crema_d.CremaDAv(data_dir=str(tmp_path / "x"),
                                                  frames=SMALL).list_clips(root)}
    assert a == b
    n = len(made["good"]) + len(made["broken"])
    assert sum(s == "test" for s in a.values()) == round(n * 744 / 7442)
    # Validation takes from every class that can spare a clip.
    val_classes = {k.split("_")[2] for k, s in a.items() if s == "validation"}
    assert len(val_classes) >= 5


def test_crema_random_split_is_recorded_and_refused_by_the_crema_config(crema_prepared):
    from avgmm.data import pipeline
    from configs import crema as crema_config

    meta = tfds.builder("crema_d_av", data_dir=crema_prepared).info.metadata
    assert meta["split_source"] == "seeded random, seed 0"
    expect = dict(crema_config.get_config().data.expect)
    assert expect["split_source"] == "standard"
    with pytest.raises(ValueError) as e:
        pipeline.load_dataset("crema_d_av", crema_prepared, 1, expect)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("dataset 'crema_d_av' was prepared with split_source='seeded "
                              "random, seed 0' but the config expects "
                              "split_source='standard': ")
    assert "python -m data_prep.crema_d --raw_dir=<CREMA-D download> --data_dir=NEW_DIR " \
           "--split_csv_dir=DIR" in message
    assert "config.data.expect.split_source='seeded random, seed 0'" in message
    # The override the message names works, and the meta says which split it is.
    expect["split_source"] = "seeded random, seed 0"
    ds = pipeline.load_dataset("crema_d_av", crema_prepared, 1, expect)
    assert ds.meta.split_source == "seeded random, seed 0"
    # A pinned sha1 must match in full.
    expect["split_source"] = "standard: 0123"
    with pytest.raises(ValueError, match="split_source"):
        pipeline.load_dataset("crema_d_av", crema_prepared, 1, expect)


def test_crema_split_csv_files(tmp_path):
    """Reference split files: an incomplete download is refused; a matching one is used."""
    if not os.path.isdir(os.path.join(SHARED, "crema_d")):
        pytest.skip(f"the reference split files are not at {SHARED} (CI has them there)")
    train_rows = list(csv.reader(open(os.path.join(SHARED, "crema_d", "train.csv"),
                                      newline="")))[:10]
    test_rows = list(csv.reader(open(os.path.join(SHARED, "crema_d", "test.csv"),
                                     newline="")))[:4]
    raw = str(tmp_path / "raw")
    media_fixtures.make_crema_tree(raw, ids=[tuple(r) for r in train_rows + test_rows],
                                   broken=False)
    with pytest.raises(convert.DataPrepError, match=r"name \d+ clip\(s\) that have no WAV"):
        convert.prepare(crema_d.CremaDAv, raw, str(tmp_path / "d0"), frames=SMALL,
                        workers=1, split_options={"split_csv_dir": os.path.join(SHARED,
                                                                                "crema_d")})
    trimmed = tmp_path / "splits"
    trimmed.mkdir()
    for name, rows in (("train.csv", train_rows), ("test.csv", test_rows)):
        with open(trimmed / name, "w", newline="") as f:
            f.write("".join(f"{a},{b}\r\n" for a, b in rows))  # CRLF like the originals
    data_dir = str(tmp_path / "d1")
    convert.prepare(crema_d.CremaDAv, raw, data_dir, frames=SMALL, workers=1,
                    split_options={"split_csv_dir": str(trimmed)})
    test_ids = {ex["id"].decode() for ex in _all(data_dir, "crema_d_av", "test")}
    assert test_ids == {r[0] for r in test_rows}
    rest = {ex["id"].decode() for s in ("train", "validation")
            for ex in _all(data_dir, "crema_d_av", s)}
    assert rest == {r[0] for r in train_rows}
    # The split is recorded as standard + the sha1 of train.csv's then test.csv's bytes,
    # and the CREMA-D config accepts it.
    from avgmm.data import pipeline
    from configs import crema as crema_config

    sha1 = hashlib.sha1((trimmed / "train.csv").read_bytes()
                        + (trimmed / "test.csv").read_bytes()).hexdigest()
    meta = tfds.builder("crema_d_av", data_dir=data_dir).info.metadata
    assert meta["split_source"] == f"standard: {sha1}"
    ds = pipeline.load_dataset("crema_d_av", data_dir, 1,
                               dict(crema_config.get_config().data.expect))
    assert ds.meta.split_source == f"standard: {sha1}"
    # The real reference files (6,698 + 744 rows, CRLF) have this sha1.
    assert crema_d.split_source(os.path.join(SHARED, "crema_d")) == \
        "standard: 689614cad6ce4c86b971d7fe69774b15637ae4ef"


def test_rerun_is_idempotent_and_other_parameters_are_refused(crema_raw, crema_prepared):
    root, _ = crema_raw
    version_dir = os.path.join(crema_prepared, "crema_d_av", str(crema_d.CremaDAv.VERSION))
    before = {f: os.path.getmtime(os.path.join(version_dir, f)) for f in os.listdir(version_dir)}
    convert.prepare(crema_d.CremaDAv, root, crema_prepared, frames=SMALL, workers=2)
    after = {f: os.path.getmtime(os.path.join(version_dir, f)) for f in os.listdir(version_dir)}
    assert before == after
    with pytest.raises(convert.DataPrepError, match=r"already prepared with other parameters"
                                                    r".*frame_size.: 32.*frame_size.: 64"):
        convert.prepare(crema_d.CremaDAv, root, crema_prepared,
                        frames=convert.FrameParams(3, 64), workers=1)


def test_interrupted_conversion_reuses_work_and_is_never_half_visible(crema_raw, tmp_path,
                                                                       monkeypatch):
    root, made = crema_raw
    data_dir = str(tmp_path / "data")
    real_load = np.load
    calls = {"n": 0}

    def failing_load(*args, **kwargs):
        # Reads of decoded clips while the records are written (not the decoding's own).
        if sys._getframe(1).f_code.co_name == "_generate_examples":
            calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt("simulated interruption while writing")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(convert.np, "load", failing_load)
    with pytest.raises(KeyboardInterrupt):
        convert.prepare(crema_d.CremaDAv, root, data_dir, frames=SMALL, workers=1)
    monkeypatch.setattr(convert.np, "load", real_load)
    # Nothing the loader would accept was left behind...
    from avgmm.data import pipeline

    with pytest.raises(FileNotFoundError, match="not prepared|not found"):
        pipeline.load_dataset("crema_d_av", data_dir, 1)
    # ... and the decoded clips are reused: decoding anything again would fail here.
    work = os.path.join(data_dir, "crema_d_av_work")
    assert len([f for f in os.listdir(work) if f.endswith(".npz")]) == len(made["good"])

    def no_decoding(*args, **kwargs):
        raise AssertionError("a finished clip was decoded again")

    monkeypatch.setattr(media, "read_frames", no_decoding)
    monkeypatch.setattr(convert.media, "read_frames", no_decoding)
    original_decode = convert.decode_clip

    def decode_or_fail(clip, *rest):
        key, reason = original_decode(clip, *rest)
        assert reason is None or clip.key in made["broken"], reason
        return key, reason

    monkeypatch.setattr(convert, "decode_clip", decode_or_fail)
    convert.prepare(crema_d.CremaDAv, root, data_dir, frames=SMALL, workers=1)
    ds = pipeline.load_dataset("crema_d_av", data_dir, 1)
    assert sum(ds.meta.num_examples.values()) == len(made["good"])
    assert not os.path.exists(work)  # the cache is removed after a successful build
    assert not [d for d in os.listdir(os.path.join(data_dir, "crema_d_av"))
                if d.startswith("incomplete")]


def test_wrong_raw_dirs_give_one_clear_error(tmp_path):
    with pytest.raises(convert.DataPrepError, match="is not a directory"):
        convert.prepare(crema_d.CremaDAv, str(tmp_path / "nope"), str(tmp_path / "d"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(convert.DataPrepError, match=r"expected the CREMA-D folder AudioWAV/"):
        convert.prepare(crema_d.CremaDAv, str(tmp_path / "empty"), str(tmp_path / "d"))
    (tmp_path / "empty" / "AudioWAV").mkdir()
    (tmp_path / "empty" / "VideoFlash").mkdir()
    with pytest.raises(convert.DataPrepError, match=r"holds no \.wav files"):
        convert.prepare(crema_d.CremaDAv, str(tmp_path / "empty"), str(tmp_path / "d"))
    with pytest.raises(convert.DataPrepError, match=r"expected the folder AVE/"):
        convert.prepare(ave.AveAv, str(tmp_path / "empty"), str(tmp_path / "d"))
    # The command line says the same, without a traceback.
    out = subprocess.run([sys.executable, "-m", "data_prep.crema_d",
                          f"--raw_dir={tmp_path}/empty_not_there",
                          f"--data_dir={tmp_path}/d"], cwd=REPO, capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=REPO))
    assert out.returncode != 0 and "is not a directory" in out.stderr
    assert "Traceback" not in out.stderr


def test_ave_rows_segments_and_normalization(ave_raw, ave_prepared):
    _, made = ave_raw
    splits = {s: _all(ave_prepared, "ave_av", s) for s in ("train", "validation", "test")}
    expected = {s: [line for line in made["splits"][f] if "brokenzz" not in line]
                for s, f in (("train", "trainSet.txt"), ("validation", "valSet.txt"),
                             ("test", "testSet.txt"))}
    for s in splits:
        assert len(splits[s]) == len(expected[s])
    ids = [ex["id"].decode() for v in splits.values() for ex in v]
    # The video with two annotated events gives two samples, one per segment.
    assert sorted(i for i in ids if i.startswith("vid000a")) == ["vid000a_1_6", "vid000a_6_9"]
    for ex in (ex for v in splits.values() for ex in v):
        a = ex["audio"].astype(np.float32)
        assert a.shape == (257, 1004) and ex["frames"].shape == (3, 32, 32, 3)
        assert abs(a.mean()) < 1e-2 and abs(a.std() - 1) < 1e-2  # per-sample z-score
        cat = ave.CATEGORIES[ex["label"]]
        assert cat in media_fixtures.AVE_CATEGORIES
    with open(os.path.join(ave_prepared, "ave_av", "failures.jsonl")) as f:
        failures = [json.loads(line) for line in f]
    assert [r["id"] for r in failures] == ["brokenzz_0_10"]
    meta = tfds.builder("ave_av", data_dir=ave_prepared).info.metadata
    assert meta["hop_length"] == 159 and meta["normalization"] == "zscore"
    assert meta["spectrogram_recipe"] == "scipy_psd_log"
    root, _ = ave_raw
    sha1 = hashlib.sha1(b"".join(open(os.path.join(root, f), "rb").read() for f in
                                 ("trainSet.txt", "valSet.txt", "testSet.txt"))).hexdigest()
    assert meta["split_source"] == f"standard: {sha1}"
    assert meta["summary"]["same_segment_other_label"] == 0


def test_ave_segment_audio_is_the_tiled_segment(ave_raw):
    """The spectrogram of a [start, end) segment is the PMR recipe on the cut waveform
    tiled to 10 s: scipy's power spectral density, log, per-sample z-score."""
    from scipy import signal

    root, _ = ave_raw
    path = os.path.join(root, "AVE", "vid001b.mp4")
    full = media.load_audio(path, 16000)
    seg = media.load_audio(path, 16000, start=2.0, end=7.0)
    np.testing.assert_array_equal(seg, full[32000:112000])
    spec = features.log_spectrogram(seg, ave.AUDIO)
    tiled = np.clip(np.tile(seg, 2)[:160000], -1, 1)
    _, _, psd = signal.spectrogram(tiled, 16000, nperseg=512, noverlap=353)
    ref = np.log(psd + 1e-7)
    ref = (ref - ref.mean()) / (ref.std() + 1e-9)
    assert spec.shape == ref.shape == (257, 1004)
    np.testing.assert_allclose(spec, ref, rtol=1e-5, atol=1e-5)
    # The stored float16 feature is the same up to float16 rounding.
    np.testing.assert_allclose(features.spectrogram(seg, ave.AUDIO), ref,
                               rtol=1e-3, atol=1e-3)


def test_ave_recipe_is_scipys_spectrogram_not_an_stft_magnitude():
    """A synthetic 3.3 s segment with a loud and a quiet tone: tiled to exactly 160,000
    samples, clipped, then scipy.signal.spectrogram with its defaults."""
    from scipy import signal

    rng = np.random.default_rng(0)
    t = np.arange(int(3.3 * 16000)) / 16000
    seg = (1.4 * np.sin(2 * np.pi * 440 * t) + 0.01 * np.sin(2 * np.pi * 3000 * t)
           + 0.001 * rng.standard_normal(len(t))).astype(np.float32)  # clips at +-1
    x = np.clip(np.concatenate([seg] * 4)[:160000], -1.0, 1.0)
    _, _, psd = signal.spectrogram(x, 16000, nperseg=512, noverlap=353)
    ref = np.log(psd + 1e-7)
    ref = (ref - ref.mean()) / (ref.std() + 1e-9)
    spec = features.log_spectrogram(seg, ave.AUDIO)
    assert spec.shape == ave.AUDIO.shape == (257, 1004)
    np.testing.assert_allclose(spec, ref, rtol=1e-5, atol=1e-5)
    assert ave.AUDIO.as_metadata()["spectrogram_recipe"] == "scipy_psd_log"
    # CREMA-D keeps its librosa STFT magnitude recipe.
    assert crema_d.AUDIO.spectrogram_recipe == "stft_log_magnitude"
    assert crema_d.AUDIO.shape == (257, 188)
    with pytest.raises(ValueError, match="center=False"):
        features.AudioParams(16000, 10.0, center=True, spectrogram_recipe="scipy_psd_log")


def _as_old_ave(prepared: str, old_dir: str, drop_recipe: bool = True) -> None:
    """A copy of a prepared AVE set as the previous converter left it: version 1.0.0 and
    no `spectrogram_recipe` in its metadata."""
    import shutil

    src = os.path.join(prepared, "ave_av", str(ave.AveAv.VERSION))
    dst = os.path.join(old_dir, "ave_av", "1.0.0")
    shutil.copytree(src, dst)
    info_path = os.path.join(dst, "dataset_info.json")
    with open(info_path) as f:
        info = json.load(f)
    info["version"] = "1.0.0"
    with open(info_path, "w") as f:
        json.dump(info, f)
    meta_path = os.path.join(dst, "metadata.json")
    with open(meta_path) as f:
        meta = json.load(f)
    if drop_recipe:
        meta.pop("spectrogram_recipe")
        meta["preparation"]["audio"].pop("spectrogram_recipe")
    with open(meta_path, "w") as f:
        json.dump(meta, f)


def test_an_ave_set_from_the_old_converter_is_refused(ave_prepared, tmp_path):
    from avgmm.data import pipeline
    from configs import ave as ave_config

    old = str(tmp_path / "old")
    _as_old_ave(ave_prepared, old)
    expect = dict(ave_config.get_config().data.expect)
    assert expect["spectrogram_recipe"] == "scipy_psd_log"
    with pytest.raises(ValueError) as e:
        pipeline.load_dataset("ave_av", old, 3, expect)
    message = str(e.value)
    assert "\n" not in message
    assert "older converter (version 1.0.0; this code reads 2.0.0)" in message
    assert f"python -m data_prep.ave --raw_dir=<AVE download> --data_dir={old}" in message
    # Where the converter is not importable, tfds reads the old version from its files
    # and the recipe the config expects is missing; the registry cannot name the
    # converter then, so the advice points at the list of them.
    script = (
        "import sys; sys.modules['data_prep.ave'] = None\n"
        "from avgmm.data import pipeline\n"
        f"try:\n    pipeline.load_dataset('ave_av', {old!r}, 3, {expect!r})\n"
        "except ValueError as e:\n    print('REFUSED', e)\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=REPO))
    assert out.returncode == 0, out.stderr[-2000:]
    assert ("REFUSED dataset 'ave_av' does not record 'spectrogram_recipe' (the config "
            "expects spectrogram_recipe='scipy_psd_log')") in out.stdout, out.stdout
    assert "prepare it again with python -m data_prep." in out.stdout
    assert "python -m data_prep --list shows them all" in out.stdout


def test_ave_without_header_and_missing_video(tmp_path):
    raw = str(tmp_path / "raw")
    media_fixtures.make_ave_tree(raw, videos=3, header=False, broken=False)
    rows = ave.read_rows(os.path.join(raw, "Annotations.txt"))
    assert len(rows) == 4 and rows[0][1] == "vid000a"
    os.remove(os.path.join(raw, "AVE", "vid002c.mp4"))
    with pytest.raises(convert.DataPrepError, match=r"name 1 video\(s\) with no mp4.*vid002c"):
        convert.prepare(ave.AveAv, raw, str(tmp_path / "d"), frames=SMALL, workers=1)


def test_folder_converter_with_and_without_splits(crema_raw, ave_raw, tmp_path):
    croot, made = crema_raw
    aroot, _ = ave_raw
    lines = ["video_path,label,split,audio_path"]
    for clip in made["good"]:
        lines.append(f"{croot}/VideoFlash/{clip}.flv,{clip.split('_')[2].lower()},,"
                     f"{croot}/AudioWAV/{clip}.wav")
    for vid in ("vid001b", "vid002c", "vid003d"):  # audio from the mp4 container itself
        lines.append(f"{aroot}/AVE/{vid}.mp4,event,,")
    csv_path = tmp_path / "clips.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    cls = folder.builder_class("my_clips")
    data_dir = str(tmp_path / "data")
    convert.prepare(cls, str(tmp_path), data_dir, frames=SMALL, workers=1,
                    csv_path=str(csv_path))
    counts = {s: len(tfds.data_source("my_clips", data_dir=data_dir, split=s))
              for s in ("train", "validation", "test")}
    assert sum(counts.values()) == len(made["good"]) + 3
    assert counts["validation"] > 0 and counts["test"] > 0
    info = tfds.builder("my_clips", data_dir=data_dir).info
    assert info.features["label"].names == ["ang", "dis", "event", "fea", "hap", "neu", "sad"]
    assert info.metadata["split_source"] == "seeded random, seed 0"
    # Explicit splits are honoured; mixing rows with and without one is refused.
    explicit = ["video_path,label,split"] + [
        f"{croot}/VideoFlash/{c}.flv,{c.split('_')[2]},{'val' if i % 3 else 'train'}"
        for i, c in enumerate(made["good"])]
    (tmp_path / "explicit.csv").write_text("\n".join(explicit) + "\n")
    with pytest.raises(convert.DataPrepError, match="give one in every row or in none"):
        bad = explicit + [f"{croot}/VideoFlash/{made['good'][0]}.flv,ANG"]
        (tmp_path / "bad.csv").write_text("\n".join(bad) + "\n")
        folder.FolderAv(data_dir=str(tmp_path / "x"), csv_path=str(tmp_path / "bad.csv"),
                        frames=SMALL).list_clips("")
    clips = folder.FolderAv(data_dir=str(tmp_path / "y"), csv_path=str(tmp_path / "explicit.csv"),
                            frames=SMALL).list_clips("")
    assert {c.split for c in clips} == {"train", "validation"}


@pytest.mark.parametrize("name", ["crema", "ave"])
def test_trainer_runs_the_paper_configs_on_fixture_data(name, crema_prepared, ave_prepared,
                                                        tmp_path):
    import importlib

    from avgmm import train

    config = importlib.import_module(f"configs.{name}").get_config()
    config.data.data_dir = crema_prepared if name == "crema" else ave_prepared
    if name == "crema":  # the fixture has the seeded random split, not the standard one
        config.data.expect.split_source = "seeded random, seed 0"
    tiny.shrink(config, image_size=32, batch_size=2)
    results = train.train_and_evaluate(config, str(tmp_path / name))
    assert results["gmm_fits"] == 1 and 0 <= results["test_accuracy"] <= 1
    # The loader refuses data prepared with other parameters than the config expects.
    config.data.expect.hop_length = 160
    with pytest.raises(ValueError, match=r"prepared with hop_length=\d+ but the config "
                                         r"expects hop_length=160"):
        train.train_and_evaluate(config, str(tmp_path / (name + "_bad")))


def _all_frames_reference(path, count, size, start=None, end=None):
    """The previous whole-clip rule: decode every frame, then sample evenly."""
    import cv2

    cap = cv2.VideoCapture(path)
    fps, frames = cap.get(cv2.CAP_PROP_FPS), []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    first, last = 0, len(frames) - 1
    if start is not None:
        first = int(np.floor(start * fps))
        last = min(int(np.ceil(end * fps)) - 1, last)
    return np.stack([cv2.resize(cv2.cvtColor(frames[i], cv2.COLOR_BGR2RGB), (size, size),
                                interpolation=cv2.INTER_AREA)
                     for i in media.sample_indices(first, last, count)])


class _NoFrameCount:
    """cv2.VideoCapture whose container reports no frame count."""

    import cv2
    capture = cv2.VideoCapture  # the real one, before the tests patch it

    def __init__(self, path):
        self._cap = self.capture(path)

    def get(self, prop):
        return 0.0 if prop == self.cv2.CAP_PROP_FRAME_COUNT else self._cap.get(prop)

    def __getattr__(self, name):
        return getattr(self._cap, name)


def test_read_frames_samples_the_same_frames_as_a_whole_clip_decode(crema_raw, ave_raw,
                                                                   monkeypatch):
    import cv2

    croot, made = crema_raw
    aroot, _ = ave_raw
    flv = os.path.join(croot, "VideoFlash", made["good"][1] + ".flv")
    mp4 = os.path.join(aroot, "AVE", "vid001b.mp4")
    cases = [(flv, 3, None, None), (flv, 5, None, None), (mp4, 3, 2.0, 7.0),
             (mp4, 4, 0.0, 10.0)]
    for path, count, start, end in cases:
        expected = _all_frames_reference(path, count, 24, start, end)
        np.testing.assert_array_equal(media.read_frames(path, count, 24, start, end),
                                      expected)
    # Without the container's frame count the frames are found by a second pass.
    monkeypatch.setattr(cv2, "VideoCapture", _NoFrameCount)
    for path, count, start, end in cases:
        expected = _all_frames_reference(path, count, 24, start, end)
        np.testing.assert_array_equal(media.read_frames(path, count, 24, start, end),
                                      expected)


def test_truncated_and_too_short_videos_are_rejected(tmp_path, monkeypatch):
    import cv2

    full = str(tmp_path / "full.flv")
    media_fixtures.write_video(full, media_fixtures.moving_frames(60, 48, 64, 0), 30,
                               media_fixtures.tone(2.0, 22050, 300), 22050, "flv")
    cut = str(tmp_path / "cut.flv")
    with open(full, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(1500))
    assert media.read_frames(full, 3, 16).shape == (3, 16, 16, 3)
    # The container says 2 s; one or two frames decode.
    with pytest.raises(media.ClipError, match=r"^video truncated: [12] frame\(s\) "
                                              r"\(0\.0\d s\) decoded of the 6[01] "):
        media.read_frames(cut, 1, 16)
    # Fewer decoded frames than frames to sample, however the clip is cut.
    short = str(tmp_path / "short.flv")
    media_fixtures.write_video(short, media_fixtures.moving_frames(2, 48, 64, 0), 30, None,
                               22050, "flv")
    with pytest.raises(media.ClipError, match=r"only 2 video frame\(s\) decoded, fewer "
                                              r"than the 3 to sample"):
        media.read_frames(short, 3, 16)
    assert media.read_frames(short, 2, 16).shape == (2, 16, 16, 3)
    # A container without a frame count: the audio's length is the expected one.
    monkeypatch.setattr(cv2, "VideoCapture", _NoFrameCount)
    with pytest.raises(media.ClipError, match=r"video truncated: .* of the 60 \(2\.00 s\)"):
        media.read_frames(cut, 1, 16, fallback_seconds=2.0)
    assert media.read_frames(full, 3, 16, fallback_seconds=2.0).shape == (3, 16, 16, 3)


def test_decoding_keeps_only_the_sampled_frames_in_memory(tmp_path):
    """A 2,400-frame clip: decoding it keeps a few frames, not the whole clip (which
    took 3.7 GB for a 10-minute 320 x 240 clip)."""
    import tracemalloc

    import cv2

    path = str(tmp_path / "long.avi")
    h, w = 120, 160
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30, (w, h))
    frames = media_fixtures.moving_frames(60, h, w, seed=3)[..., ::-1]
    for i in range(2400):
        writer.write(np.ascontiguousarray(frames[i % 60]))
    writer.release()
    tracemalloc.start()
    try:
        out = media.read_frames(path, 3, 32)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == (3, 32, 32, 3)
    one_frame = h * w * 3
    # The whole clip is 2,400 frames (138 MB); allow a few dozen small ones.
    assert peak < 20 * one_frame, f"peak {peak / 1e6:.1f} MB while decoding"


def _crema_rows(root, clips, relative_to=None):
    """`video,label,,audio` CSV lines for fixture CREMA-D clips (label: the emotion)."""
    rows = []
    for c in clips:
        video, audio = f"{root}/VideoFlash/{c}.flv", f"{root}/AudioWAV/{c}.wav"
        if relative_to:
            video, audio = (os.path.relpath(p, relative_to) for p in (video, audio))
        rows.append(f"{video},{c.split('_')[2].lower()},,{audio}")
    return rows


def test_folder_duplicates_are_kept_once_and_reported(crema_raw, tmp_path, capsys):
    import shutil

    root, made = crema_raw
    good = made["good"][:6]
    copy_dir = tmp_path / "copies"
    copy_dir.mkdir()
    for ext, sub in (("flv", "VideoFlash"), ("wav", "AudioWAV")):
        shutil.copy(f"{root}/{sub}/{good[1]}.{ext}", copy_dir / f"copy.{ext}")
    rows = _crema_rows(root, good)
    rows += [rows[0],  # the same row twice
             _crema_rows(root, good[2:3], relative_to=str(tmp_path))[0],  # relative path
             f"copies/copy.flv,{good[1].split('_')[2].lower()},,copies/copy.wav"]  # a copy
    csv_path = tmp_path / "clips.csv"
    csv_path.write_text("video_path,label,split,audio_path\n" + "\n".join(rows) + "\n")
    data_dir = str(tmp_path / "data")
    convert.prepare(folder.builder_class("dup_clips"), str(tmp_path), data_dir, frames=SMALL,
                    workers=1, csv_path=str(csv_path))
    splits = tfds.builder("dup_clips", data_dir=data_dir).info.splits
    examples = [ex for s in splits for ex in _all(data_dir, "dup_clips", s)]
    assert len(examples) == len(good)
    # No clip's content is in two examples (hence in two splits).
    assert len({ex["audio"].tobytes() for ex in examples}) == len(good)
    with open(os.path.join(data_dir, "dup_clips", "failures.jsonl")) as f:
        dropped = [json.loads(line) for line in f]
    assert [(r["line"], r["reason"]) for r in dropped] == [
        (8, "duplicate of clips.csv:2 (same file)"),
        (9, "duplicate of clips.csv:4 (same file)"),
        (10, "duplicate of clips.csv:3 (same contents)")]
    out = capsys.readouterr().out
    assert "3 duplicate row(s) dropped" in out and "copy.flv: duplicate of clips.csv:3" in out
    # The same clip under another label is refused in one line naming both rows.
    conflict = rows[:6] + [f"{root}/VideoFlash/{good[0]}.flv,other,,"
                           f"{root}/AudioWAV/{good[0]}.wav"]
    (tmp_path / "conflict.csv").write_text("\n".join(conflict) + "\n")
    with pytest.raises(convert.DataPrepError, match=r"^conflict\.csv:1 and conflict\.csv:7 "
                                                    r"name the same file .* with labels "
                                                    r"'\w+' and 'other'") as err:
        folder.FolderAv(data_dir=str(tmp_path / "x"), csv_path=str(tmp_path / "conflict.csv"),
                        frames=SMALL).list_clips("")
    assert "\n" not in str(err.value)
    # With explicit splits, a clip listed in train and in test stays in train only.
    split_rows = [f"{root}/VideoFlash/{c}.flv,{c.split('_')[2]},train" for c in good]
    split_rows.append(f"{root}/VideoFlash/{good[0]}.flv,{good[0].split('_')[2]},test")
    (tmp_path / "splits.csv").write_text("\n".join(split_rows) + "\n")
    clips = folder.FolderAv(data_dir=str(tmp_path / "y"), csv_path=str(tmp_path / "splits.csv"),
                            frames=SMALL).list_clips("")
    assert [c.split for c in clips if good[0] in c.video_path] == ["train"]


def test_folder_refuses_an_edited_csv_until_overwrite(crema_raw, tmp_path, capsys):
    root, made = crema_raw
    good = made["good"][:5]
    csv_path = tmp_path / "clips.csv"
    csv_path.write_text("\n".join(_crema_rows(root, good[:4])) + "\n")
    data_dir = str(tmp_path / "data")
    cls = folder.builder_class("edited_clips")
    convert.prepare(cls, str(tmp_path), data_dir, frames=SMALL, workers=1,
                    csv_path=str(csv_path))
    meta = tfds.builder("edited_clips", data_dir=data_dir).info.metadata
    source = meta["preparation"]["source"]
    assert set(source) == {"csv_sha1", "media_sha1"}
    # Unchanged: reused as it is.
    convert.prepare(cls, str(tmp_path), data_dir, frames=SMALL, workers=1,
                    csv_path=str(csv_path))
    assert "already prepared" in capsys.readouterr().out
    csv_path.write_text("\n".join(_crema_rows(root, good)) + "\n")
    with pytest.raises(convert.DataPrepError, match=r"already prepared with other parameters "
                                                    r"\(source: .*Pass --overwrite .* a new "
                                                    r"--name") as err:
        convert.prepare(cls, str(tmp_path), data_dir, frames=SMALL, workers=1,
                        csv_path=str(csv_path))
    assert "\n" not in str(err.value)
    # The command line says the same in one line, before decoding anything.
    out = subprocess.run([sys.executable, "-m", "data_prep.folder", f"--csv={csv_path}",
                          f"--data_dir={data_dir}", "--name=edited_clips", "--num_frames=3",
                          "--frame_size=32"], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=REPO))
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "--overwrite" in out.stderr
    convert.prepare(cls, str(tmp_path), data_dir, frames=SMALL, workers=1, overwrite=True,
                    csv_path=str(csv_path))
    counts = [len(tfds.data_source("edited_clips", data_dir=data_dir, split=s))
              for s in tfds.builder("edited_clips", data_dir=data_dir).info.splits]
    assert sum(counts) == 5
    again = tfds.builder("edited_clips", data_dir=data_dir).info.metadata
    assert again["preparation"]["source"]["csv_sha1"] != source["csv_sha1"]


@pytest.mark.parametrize("module,own", [("folder", "--csv"), ("crema_d", "--split_csv_dir"),
                                        ("ave", "--raw_dir"), ("av_mnist", "--fsdd_dir")])
def test_help_lists_every_flag_of_the_converter(module, own):
    out = subprocess.run([sys.executable, "-m", f"data_prep.{module}", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=REPO))
    assert "Traceback" not in out.stderr, out.stderr[-2000:]  # absl's --help exits with 1
    listed = {line.split(":")[0].strip() for line in out.stdout.splitlines()
              if line.lstrip().startswith("--")}
    for flag in (own, "--data_dir") + (() if module == "av_mnist" else
                                        ("--workers", "--num_frames", "--frame_size")):
        assert flag in listed, (flag, sorted(listed))
