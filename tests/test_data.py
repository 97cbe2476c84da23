"""The avsynth builder, the loader and the on-device augmentation."""

import errno
import hashlib
import json
import os
import re
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from avgmm.data import augment, avsynth, decoded_cache, pipeline
from avgmm.errors import CacheError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_avsynth_features_splits_and_flag(tiny_data_dir):
    src = tfds.data_source("avsynth/tiny", data_dir=tiny_data_dir, split="train")
    assert len(src) == 48
    ex = src[0]
    assert ex["audio"].dtype == np.float16 and ex["audio"].shape == (16, 16)
    assert ex["frames"].dtype == np.uint8 and ex["frames"].shape == (3, 16, 16, 3)
    assert ex["id"].decode().startswith("train_")
    ds = pipeline.load_dataset("avsynth/tiny", tiny_data_dir, num_frames=1)
    assert ds.meta.num_classes == 3 and ds.meta.num_examples == {
        "train": 48, "validation": 16, "test": 16}
    assert ds.meta.params["degraded_fraction"] == pytest.approx(0.15)
    batch = ds.read("train", range(48))
    flags = batch["imbalanced"]
    assert flags.dtype == bool and 0 < flags.sum() < len(flags)
    assert list(batch["id"][:2]) == [src[0]["id"].decode(), src[1]["id"].decode()]


def test_degraded_clips_have_no_visual_signal():
    """Without noise the structure is visible: clean clips show their class colour as a
    patch, degraded ones are flat grey; audio always carries the class template."""
    config = avsynth.AvsynthConfig(name="x", degraded_fraction=0.5, audio_noise=0.0,
                                   visual_noise=0.0)
    examples = list(avsynth.generate(config, 200, np.random.default_rng(0)))
    templates, colours = avsynth._class_patterns(config)
    for ex in examples:
        frames = ex["frames"]
        np.testing.assert_allclose(ex["audio"], templates[ex["label"]], atol=1e-2)
        if ex["imbalanced"]:
            assert np.all(frames == 127)
        else:
            patch = np.all(frames[0] == np.clip(colours[ex["label"]], 0, 255).astype(np.uint8),
                           axis=-1)
            assert patch.sum() == (config.frame_size // 3) ** 2
    frac = np.mean([ex["imbalanced"] for ex in examples])
    assert 0.4 < frac < 0.6


def test_loader_batches_padding_and_determinism(tiny_data_dir):
    ds = pipeline.load_dataset("avsynth/tiny", tiny_data_dir, num_frames=2)
    a = list(ds.train_batches(16, epoch=0, seed=1, prefetch=2))
    b = list(ds.train_batches(16, epoch=0, seed=1, prefetch=0))
    c = list(ds.train_batches(16, epoch=1, seed=1, prefetch=0))
    assert len(a) == 3 and a[0]["frames"].shape == (16, 2, 16, 16, 3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["index"], y["index"])
        np.testing.assert_array_equal(x["audio"], y["audio"])
    assert not np.array_equal(a[0]["index"], c[0]["index"])
    assert sorted(np.concatenate([x["index"] for x in a]).tolist()) == list(range(48))
    evals = list(ds.eval_batches("validation", 12))
    assert [int(x["mask"].sum()) for x in evals] == [12, 4]
    assert evals[-1]["label"].shape == (12,)
    np.testing.assert_array_equal(np.concatenate([x["index"][x["mask"]] for x in evals]),
                                  np.arange(16))


def test_loader_errors_name_the_problem(tiny_data_dir, tmp_path):
    with pytest.raises(ValueError, match=r"num_frames=4 .* stores 3 frames"):
        pipeline.load_dataset("avsynth/tiny", tiny_data_dir, num_frames=4)
    with pytest.raises(ValueError, match=r"prepared with frame_size=16 but the config "
                                         r"expects frame_size=224"):
        pipeline.load_dataset("avsynth/tiny", tiny_data_dir, 1, {"frame_size": 224})
    with pytest.raises(FileNotFoundError, match="not prepared|not found"):
        pipeline.load_dataset("crema_d_av", str(tmp_path), 1)


def test_evenly_spaced_frames():
    np.testing.assert_array_equal(pipeline.evenly_spaced(3, 1), [1])
    np.testing.assert_array_equal(pipeline.evenly_spaced(3, 3), [0, 1, 2])
    np.testing.assert_array_equal(pipeline.evenly_spaced(10, 3), [1, 5, 8])


def test_train_augmentation_shapes_range_and_keys():
    frames = jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 2, 20, 24, 3)),
                         jnp.uint8)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(4))
    out = augment.train_frames(frames, keys, 16)
    assert out.shape == (4, 2, 16, 16, 3) and out.dtype == jnp.float32
    lo = (0 - augment.IMAGENET_MEAN) / augment.IMAGENET_STD
    hi = (1 - augment.IMAGENET_MEAN) / augment.IMAGENET_STD
    assert np.all(np.asarray(out) >= np.asarray(lo) - 1e-4)
    assert np.all(np.asarray(out) <= np.asarray(hi) + 1e-4)
    np.testing.assert_array_equal(out, augment.train_frames(frames, keys, 16))
    # Each sample's result depends only on its own key: a sub-batch gives the same rows.
    np.testing.assert_allclose(augment.train_frames(frames[2:], keys[2:], 16), out[2:],
                               atol=1e-5)
    other = augment.train_frames(frames, keys[::-1], 16)
    assert not np.allclose(other, out)


def test_eval_frames_is_a_plain_resize_and_normalization():
    frames = jnp.full((1, 1, 8, 8, 3), 255, jnp.uint8)
    out = augment.eval_frames(frames, 8)
    np.testing.assert_allclose(out[0, 0, 0, 0], (1 - augment.IMAGENET_MEAN) / augment.IMAGENET_STD,
                               rtol=1e-6)
    assert augment.eval_frames(frames, 16).shape == (1, 1, 16, 16, 3)


def _keys(n, seed=0):
    return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(n))


def test_augment_false_is_exactly_the_eval_resize():
    frames = jnp.asarray(np.random.default_rng(1).integers(0, 256, (3, 1, 20, 24, 3)),
                         jnp.uint8)
    out = augment.train_frames(frames, _keys(3), 16, augment=False)
    np.testing.assert_array_equal(out, augment.eval_frames(frames, 16))
    # The config fields reach it: data.augment=False in a config does the same.
    from configs import default

    data = default.get_config().data
    data.image_size, data.augment = 16, False
    np.testing.assert_array_equal(augment.train_frames_from_config(frames, _keys(3), data), out)
    data.augment = True
    assert not np.allclose(augment.train_frames_from_config(frames, _keys(3), data), out)


def test_flip_false_never_flips():
    """With a crop of the whole frame, the only change left is the flip."""
    ramp = np.tile(np.linspace(0, 255, 20)[None, :, None], (20, 1, 3))  # left-right ramp
    frames = jnp.asarray(np.broadcast_to(ramp, (32, 1, 20, 20, 3)), jnp.uint8)
    plain = np.asarray(augment.eval_frames(frames, 16))
    whole = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0))
    kept = np.asarray(augment.train_frames(frames, _keys(32), 16, flip=False, **whole))
    np.testing.assert_allclose(kept, plain, atol=1e-4)
    flipped = np.asarray(augment.train_frames(frames, _keys(32), 16, flip=True, **whole))
    mirrored = [np.allclose(f, plain[0, :, :, ::-1], atol=1e-4) for f in flipped]
    same = [np.allclose(f, plain[0], atol=1e-4) for f in flipped]
    assert all(m or s for m, s in zip(mirrored, same))
    assert 5 < sum(mirrored) < 27  # about half: the flip=True draw does flip


@pytest.mark.parametrize("scale", [(0.3, 0.5), (0.8, 1.0)])
def test_crop_area_stays_in_the_scale_range(scale):
    boxes = jax.vmap(lambda k: augment._crop_box(k, 40, 40, scale, (3 / 4, 4 / 3)))(
        _keys(300))
    top, left, h, w = (np.asarray(b) for b in boxes)
    area = h * w / 1600
    tol = 0.03  # each side is rounded to whole pixels
    assert area.min() >= scale[0] - tol and area.max() <= scale[1] + tol
    assert area.min() < scale[0] + 0.05 and area.max() > scale[1] - 0.05  # the range is used
    assert np.all(top + h <= 40) and np.all(left + w <= 40)
    default = jax.vmap(lambda k: augment._crop_box(k, 40, 40, (0.08, 1.0), (3 / 4, 4 / 3)))(
        _keys(300))
    default_area = np.asarray(default[2]) * np.asarray(default[3]) / 1600
    assert np.mean((default_area < scale[0] - tol) | (default_area > scale[1] + tol)) > 0.2


@pytest.mark.parametrize("field,value", [("crop_scale", (0.5, 0.2)), ("crop_scale", (0.0, 1.0)),
                                         ("crop_scale", (0.5, 1.5)), ("crop_scale", 0.5),
                                         ("crop_ratio", (0.0, 1.0)), ("crop_ratio", (2.0, 1.0)),
                                         ("augment", 1), ("flip", "no")])
def test_bad_augmentation_fields_are_refused_before_compiling(field, value):
    import ml_collections

    from avgmm import run_config
    from configs import default

    config = default.get_config()
    config.data = ml_collections.ConfigDict({**config.data.to_dict(), field: value})
    with pytest.raises(ValueError, match=rf"config\.data\.{field}=.* is not allowed"):
        run_config.validate_config(config, num_devices=1)
    run_config.validate_config(default.get_config(), num_devices=1)


def test_cached_reads_equal_record_reads(tiny_data_dir, tmp_path):
    direct = pipeline.load_dataset("avsynth/tiny", tiny_data_dir, num_frames=2)
    cached = pipeline.load_dataset("avsynth/tiny", tiny_data_dir, num_frames=2,
                                   cache_dir=str(tmp_path / "cache"))
    assert set(cached.cache) == {"train", "validation", "test"}
    for split, idx in (("train", [5, 0, 47, 5, 12]), ("test", list(range(16)))):
        a, b = direct.read(split, idx), cached.read(split, idx)
        assert set(a) == set(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
            assert a[key].dtype == b[key].dtype, key
    # Only the frames the model uses are cached; a second open reuses the files.
    frames = cached.cache["train"]["frames"]
    assert frames.shape == (48, 2, 16, 16, 3) and isinstance(frames, np.memmap)
    again = pipeline.load_dataset("avsynth/tiny", tiny_data_dir, num_frames=2,
                                  cache_dir=str(tmp_path / "cache"))
    assert again.cache["train"]["frames"].filename == frames.filename
    # Another frame choice is another cache.
    one = pipeline.load_dataset("avsynth/tiny", tiny_data_dir, num_frames=1,
                                cache_dir=str(tmp_path / "cache"))
    assert one.cache["train"]["frames"].filename != frames.filename


def test_unwritable_cache_dir_names_the_fix(tiny_data_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match=r"config\.data\.cache_dir .* config\.data\.cache=False"):
        pipeline.load_dataset("avsynth/tiny", tiny_data_dir, 1, cache_dir=str(blocker / "x"))


def test_full_disk_refuses_before_building_the_cache(tiny_data_dir, tmp_path, monkeypatch):
    import collections

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(decoded_cache.shutil, "disk_usage",
                        lambda p: usage(10**6, 10**6 - 1000, 1000))
    cache = tmp_path / "cache"
    with pytest.raises(CacheError) as err:
        pipeline.load_dataset("avsynth/tiny", tiny_data_dir, 1, cache_dir=str(cache))
    message = str(err.value)
    assert "\n" not in message and str(cache) in message
    assert re.search(r"needs \d+\.\d MB under .* but only 0\.0 MB is free", message), message
    assert "config.data.cache_dir" in message and "config.data.cache=False" in message
    assert not [p for p in cache.rglob("*") if p.is_dir() and p.name.startswith("train")]


def test_disk_filling_up_during_the_build_leaves_no_cache(tiny_data_dir, tmp_path,
                                                          monkeypatch):
    real_save = np.save

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(decoded_cache.np, "save", full_disk)
    cache = tmp_path / "cache"
    with pytest.raises(CacheError, match=r"filled up .* config\.data\.cache=False"):
        pipeline.load_dataset("avsynth/tiny", tiny_data_dir, 1, cache_dir=str(cache))
    # Nothing half-built is left for a later run to trust or trip over.
    leftovers = [p.name for p in cache.rglob("*") if p.is_dir() and p.name != "avsynth_tiny"
                 and p.parent.name != "avsynth_tiny"]
    assert leftovers == [], leftovers
    monkeypatch.setattr(decoded_cache.np, "save", real_save)
    ds = pipeline.load_dataset("avsynth/tiny", tiny_data_dir, 1, cache_dir=str(cache))
    direct = pipeline.load_dataset("avsynth/tiny", tiny_data_dir, 1)
    np.testing.assert_array_equal(ds.read("train", range(48))["frames"],
                                  direct.read("train", range(48))["frames"])


CONCURRENT_CACHE = """
import hashlib, json, os, sys, time
import numpy as np
from avgmm.data import pipeline

data_dir, cache_dir, go, out = sys.argv[1:]
read = pipeline.Dataset._read_records

def slow_read(self, split, indices):  # widens the window in which two builds overlap
    time.sleep(0.3)
    return read(self, split, indices)

pipeline.Dataset._read_records = slow_read
open(out + ".ready", "w").close()
while not os.path.exists(go):
    time.sleep(0.01)
ds = pipeline.load_dataset("avsynth/tiny", data_dir, 2, cache_dir=cache_dir)
digest = {s: {k: hashlib.sha1(np.ascontiguousarray(v).tobytes()).hexdigest()
              for k, v in ds.cache[s].items() if k != "id"} for s in ds.cache}
json.dump(digest, open(out, "w"))
"""


def test_two_runs_building_the_same_cache_share_it(tiny_data_dir, tmp_path):
    script = tmp_path / "build.py"
    script.write_text(CONCURRENT_CACHE)
    go = tmp_path / "go"
    outs = [tmp_path / f"out{i}.json" for i in range(2)]
    env = dict(os.environ, PYTHONPATH=REPO)
    procs = [subprocess.Popen([sys.executable, str(script), tiny_data_dir,
                               str(tmp_path / "cache"), str(go), str(o)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for o in outs]
    deadline = time.time() + 120
    while not all(os.path.exists(f"{o}.ready") for o in outs) and time.time() < deadline:
        time.sleep(0.05)
    go.touch()
    logs = [p.communicate(timeout=180)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    a, b = (json.loads(o.read_text()) for o in outs)
    assert a == b and set(a) == {"train", "validation", "test"}
    direct = pipeline.load_dataset("avsynth/tiny", tiny_data_dir, num_frames=2)
    frames = direct.read("train", range(48))["frames"]
    assert a["train"]["frames"] == hashlib.sha1(frames.tobytes()).hexdigest()


def _copy_as_unregistered(tiny_data_dir, data_dir, name):
    """avsynth/tiny copied under a name no builder class is registered for: tfds then
    rebuilds its features from the files alone, as for a dataset someone shared."""
    import glob
    import shutil

    src = glob.glob(os.path.join(tiny_data_dir, "avsynth", "tiny", "*", "dataset_info.json"))
    src = os.path.dirname(src[0])
    dst = os.path.join(data_dir, name, os.path.basename(src))
    shutil.copytree(src, dst)
    with open(os.path.join(dst, "dataset_info.json")) as f:
        info = json.load(f)
    info["name"] = name
    info.pop("configName", None)
    with open(os.path.join(dst, "dataset_info.json"), "w") as f:
        json.dump(info, f)
    for file in os.listdir(dst):
        if file.startswith("avsynth-"):
            os.rename(os.path.join(dst, file),
                      os.path.join(dst, file.replace("avsynth-", name + "-")))
    return dst


def test_dataset_naming_a_foreign_feature_module_is_refused_unimported(
        tiny_data_dir, tmp_path, monkeypatch):
    data_dir = str(tmp_path / "data")
    dst = _copy_as_unregistered(tiny_data_dir, data_dir, "shared_av")
    ds = pipeline.load_dataset("shared_av", data_dir, 1)  # the untouched copy opens
    assert ds.meta.num_examples["train"] == 48
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    marker = tmp_path / "imported"
    (module_dir / "avgmm_probe_feature.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(module_dir))
    with open(os.path.join(dst, "features.json")) as f:
        spec = json.load(f)
    spec["featuresDict"]["features"]["imbalanced"]["pythonClassName"] = (
        "avgmm_probe_feature.Probe")
    with open(os.path.join(dst, "features.json"), "w") as f:
        json.dump(spec, f)
    with pytest.raises(ValueError, match=r"names the feature class "
                                         r"'avgmm_probe_feature\.Probe' for 'imbalanced'") as e:
        pipeline.load_dataset("shared_av", data_dir, 1)
    assert "\n" not in str(e.value)
    assert not marker.exists() and "avgmm_probe_feature" not in sys.modules
    # A known class in the wrong place is refused too: the loader reads `label` as labels.
    spec["featuresDict"]["features"]["imbalanced"]["pythonClassName"] = (
        "tensorflow_datasets.core.features.scalar.Scalar")
    spec["featuresDict"]["features"]["label"]["pythonClassName"] = (
        "tensorflow_datasets.core.features.text_feature.Text")
    with open(os.path.join(dst, "features.json"), "w") as f:
        json.dump(spec, f)
    with pytest.raises(ValueError, match=r"gives feature 'label' the class"):
        pipeline.load_dataset("shared_av", data_dir, 1)


def test_config_cache_limit_reaches_the_loader(tiny_config, tmp_path):
    from avgmm import run_config

    tiny_config.data.cache_dir = str(tmp_path / "cache")
    tiny_config.data.cache_max_gb = 0.0  # every split is above it: read the records
    ds = run_config.open_dataset(tiny_config)
    assert ds.cache == {}
    tiny_config.data.cache_max_gb = 32.0
    ds = run_config.open_dataset(tiny_config)
    assert set(ds.cache) == set(ds.sources)
