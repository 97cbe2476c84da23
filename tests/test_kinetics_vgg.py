"""The VGGSound and Kinetics-Sounds converters on generated downloads in their exact
layouts (missing, broken and duplicate clips included), their configs, and the loader's
cache policy for large splits."""

import json
import os
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds

import media_fixtures
from avgmm.data import pipeline
from avgmm.errors import UserError
from configs import ks as ks_config
from configs import vggsound as vgg_config
from data_prep import convert, kinetics_sounds, media, vggsound
from data_prep.youtube_clips import clip_names

SMALL = convert.FrameParams(num_frames=3, frame_size=32)
SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def vgg_raw(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("vgg_raw"))
    return media_fixtures.make_vggsound_tree(root)


@pytest.fixture(scope="module")
def vgg_prepared(vgg_raw, tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("vgg_data"))
    convert.prepare(vggsound.VggsoundAv, vgg_raw["clips"], data_dir, frames=SMALL,
                    workers=2, csv_path=vgg_raw["csv"], consume_work=True)
    return data_dir


@pytest.fixture(scope="module")
def ks_raw(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ks_raw"))
    return root, media_fixtures.make_kinetics_tree(root)


@pytest.fixture(scope="module")
def ks_prepared(ks_raw, tmp_path_factory):
    root, _ = ks_raw
    data_dir = str(tmp_path_factory.mktemp("ks_data"))
    # Tiny limits stand for a real split's size (over 1 GB): tfds's shuffler would spill
    # to bucket files it reads with TensorFlow (absent here), so it must not be used; the
    # streaming writer then puts one record per shard, which must keep the clip order.
    with mock.patch("tensorflow_datasets.core.shuffle.MAX_MEM_BUFFER_SIZE", 1), \
            mock.patch.object(convert.StreamingWriter, "SHARD_BYTES", 1):
        convert.prepare(kinetics_sounds.KineticsSoundsAv, root, data_dir, frames=SMALL,
                        workers=2, classes=media_fixtures.KS_CLASSES)
    return data_dir


def _all(data_dir, name, split):
    src = tfds.data_source(name, data_dir=data_dir, split=split)
    return [src[i] for i in range(len(src))]


def _failures(data_dir, name):
    with open(os.path.join(data_dir, name, "failures.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_vggsound_keeps_good_clips_and_reports_missing_broken_and_duplicates(
        vgg_raw, vgg_prepared):
    name = "vggsound_av"
    splits = {s: _all(vgg_prepared, name, s) for s in SPLITS}
    ids = sorted(ex["id"].decode() for v in splits.values() for ex in v)
    assert ids == sorted(vgg_raw["good"])  # the unpadded, sub-folder clip included
    info = tfds.builder(name, data_dir=vgg_prepared).info
    names = info.features["label"].names
    assert names == sorted(media_fixtures.VGG_LABELS)  # the CSV's sorted label set
    for ex in splits["train"] + splits["test"]:
        assert ex["audio"].shape == (129, 626) and ex["audio"].dtype == np.float16
        assert ex["frames"].shape == (3, 32, 32, 3)
        assert not np.array_equal(ex["frames"][0], ex["frames"][2])
    assert len(splits["test"]) == 3  # the CSV's test rows that were downloaded
    # Validation: one train row per label (10%, at least 1), drawn over the CSV's rows,
    # so it may hit a missing or broken clip, which the summary then counts there.
    per_split = tfds.builder(name, data_dir=vgg_prepared).info.metadata["summary"]["per_split"]
    assert sum(per_split["validation"].values()) == 3
    assert len(splits["validation"]) == per_split["validation"]["kept"] >= 1
    failures = {r["id"]: r for r in _failures(vgg_prepared, name)}
    for clip in vgg_raw["missing"]:
        assert failures[clip]["reason"].startswith("missing: no ")
    assert failures["brokenCCCCC_000005"]["reason"] == "empty file (0 bytes)"
    assert failures[vgg_raw["duplicate"][0]]["reason"].startswith("duplicate of line 1")
    summary = info.metadata["summary"]
    assert summary["missing"] == 2 and summary["dropped"] == 1
    assert summary["per_split"]["test"] == {"kept": 3, "skipped": 0, "missing": 1}
    assert sum(v["skipped"] for v in summary["per_split"].values()) == 1
    assert sum(v["kept"] + v["skipped"] + v["missing"] for v in summary["per_split"].values()) \
        == 3 * 5 + 2 + 1  # every row of the CSV but the duplicate, once
    assert info.metadata["split_source"].startswith("standard: ")
    # consume_work: the decode cache went away as the records were written.
    assert not os.path.exists(os.path.join(vgg_prepared, "vggsound_av_work"))


def test_kinetics_sounds_layout_classes_and_split(ks_raw, ks_prepared):
    _, made = ks_raw
    name = "kinetics_sounds_av"
    splits = {s: _all(ks_prepared, name, s) for s in SPLITS}
    info = tfds.builder(name, data_dir=ks_prepared).info
    names = info.features["label"].names
    assert names == sorted(media_fixtures.KS_CLASSES)
    ids = [ex["id"].decode() for v in splits.values() for ex in v]
    assert sorted(ids) == sorted(made["good"])  # no other class, no test row
    for s, examples in splits.items():
        split_ids = [ex["id"].decode() for ex in examples]
        assert split_ids == sorted(split_ids, key=made["good"].index), s  # clip order kept
        for ex in examples:
            assert ex["audio"].shape == (257, 1004)
            # The label is the annotation's, and the folder agrees.
            assert names[ex["label"]] == media_fixtures.KS_CLASSES[int(ex["id"][1:2])]
    shards = [f for f in os.listdir(os.path.join(ks_prepared, name, "1.0.0"))
              if "-train.array_record-" in f]
    assert len(shards) == len(splits["train"]) > 1  # one record per shard (SHARD_BYTES=1)
    assert len(splits["test"]) == 3  # the Kinetics val rows (underscore folders)
    summary = info.metadata["summary"]
    # One train row per class (drawn over the annotations: kept, skipped or missing).
    assert sum(summary["per_split"]["validation"].values()) == 3
    assert summary["kinetics_test_rows_unused"] == 1
    assert summary["missing"] == 1 and summary["per_split"]["train"]["missing"] == 1
    failures = {r["id"]: r["reason"] for r in _failures(ks_prepared, name)}
    assert failures[made["missing"][0]].startswith("missing: no ")
    assert failures[made["broken"][0]] == "empty file (0 bytes)"
    assert made["other_class"][0] not in failures


def test_kinetics_sounds_class_list_and_override(tmp_path):
    assert len(kinetics_sounds.CLASSES) == 31
    assert len(set(kinetics_sounds.CLASSES)) == 31
    path = tmp_path / "classes.txt"
    path.write_text("# mine\nplaying_bagpipes\n\nsinging\n")
    assert kinetics_sounds.read_classes(str(path)) == ["playing bagpipes", "singing"]
    path.write_text("singing\nsinging\n")
    with pytest.raises(convert.DataPrepError, match="distinct"):
        kinetics_sounds.read_classes(str(path))


def test_kinetics_sounds_refuses_annotations_without_a_class(ks_raw, tmp_path):
    root, _ = ks_raw
    builder = kinetics_sounds.KineticsSoundsAv(data_dir=str(tmp_path), frames=SMALL,
                                               audio=kinetics_sounds.KINETICS_SOUNDS_AUDIO)
    with pytest.raises(convert.DataPrepError, match=r"no clip of 28 class\(es\)"):
        builder.list_clips(root)  # the built-in 31: the tree has 3 of them


def test_clip_names_cover_the_downloader_layouts():
    assert clip_names("abc", 7) == ["abc_000007", "abc_7"]
    assert clip_names("abc", 7, 17)[:2] == ["abc_000007_000017", "abc_7_17"]


def test_conversion_resumes_from_decoded_clips_and_skips_a_finished_one(vgg_raw, tmp_path,
                                                                          monkeypatch):
    data_dir = str(tmp_path)
    kwargs = dict(frames=SMALL, workers=1, csv_path=vgg_raw["csv"])

    def crash(self, clips, work):  # dies after decoding, while writing the records
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(convert.AVBuilder, "_generate_examples", crash)
        with pytest.raises(KeyboardInterrupt):
            convert.prepare(vggsound.VggsoundAv, vgg_raw["clips"], data_dir, **kwargs)
    decoded = os.listdir(os.path.join(data_dir, "vggsound_av_work"))
    assert len(decoded) == len(vgg_raw["good"])

    calls = []
    real = media.load_audio
    monkeypatch.setattr(media, "load_audio", lambda *a, **k: calls.append(a) or real(*a, **k))
    builder = convert.prepare(vggsound.VggsoundAv, vgg_raw["clips"], data_dir, **kwargs)
    assert calls == [(os.path.join(vgg_raw["clips"], "brokenCCCCC_000005.mp4"), 16000,
                      None, None)]  # only the broken clip, which never decoded, is retried
    assert sum(s.num_examples for s in builder.info.splits.values()) == len(vgg_raw["good"])
    # A finished conversion run again converts nothing.
    calls.clear()
    convert.prepare(vggsound.VggsoundAv, vgg_raw["clips"], data_dir, **kwargs)
    assert calls == []


def test_large_split_streams_from_records_with_identical_batches(vgg_prepared, tmp_path):
    cached = pipeline.load_dataset("vggsound_av", vgg_prepared, 2,
                                   cache_dir=str(tmp_path / "all"), cache_max_gb=float("inf"))
    assert set(cached.cache) == {"train", "validation", "test"}
    # A limit between the test split's decoded size and the train split's.
    limit = (cached.cache_bytes("test") + cached.cache_bytes("train")) / 2 / 1e9
    streamed = pipeline.load_dataset("vggsound_av", vgg_prepared, 2,
                                     cache_dir=str(tmp_path / "some"), cache_max_gb=limit)
    assert set(streamed.cache) == {"validation", "test"}
    built = os.listdir(os.path.join(str(tmp_path / "some"), "vggsound_av"))
    assert len(built) == 1
    assert sorted(os.listdir(os.path.join(str(tmp_path / "some"), "vggsound_av", built[0]))) \
        == ["test", "test.lock", "validation", "validation.lock"]
    for a, b in zip(cached.train_batches(4, epoch=1, seed=0, prefetch=0),
                    streamed.train_batches(4, epoch=1, seed=0, prefetch=0)):
        assert sorted(a) == sorted(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    for value in (-1, "lots", float("nan")):
        with pytest.raises(UserError, match="cache_max_gb"):
            pipeline.cache_limit_gb(value)


def test_configs_load_validate_and_match_their_converters():
    from avgmm import config_text, run_config

    for module, builder, audio in (
            (ks_config, kinetics_sounds.KineticsSoundsAv, kinetics_sounds.KINETICS_SOUNDS_AUDIO),
            (vgg_config, vggsound.VggsoundAv, vggsound.VGGSOUND_AUDIO)):
        config = module.get_config()
        run_config.validate_config(config, 1)
        assert pipeline.cache_limit_gb(config.data.cache_max_gb) == pipeline.CACHE_MAX_GB
        assert config.data.name == builder.name
        assert pipeline.CONVERTERS[builder.name] == builder.__module__
        assert builder.DEFAULT_AUDIO == audio
        assert {k: config.data.expect[k] for k in audio.as_metadata()} == audio.as_metadata()
        assert (config.optimizer.learning_rate, config.batch_size,
                config.data.num_frames) == (1e-3, 64, 3)
        assert "cache_max_gb" in config_text.render(config, module.__file__, [])
