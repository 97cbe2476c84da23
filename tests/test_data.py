"""The avsynth builder, the loader and the on-device augmentation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from avgmm.data import augment, avsynth, pipeline


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
        pipeline.load_dataset("avsynth/tiny", str(tmp_path), 1)


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

    from avgmm import train
    from configs import default

    config = default.get_config()
    config.data = ml_collections.ConfigDict({**config.data.to_dict(), field: value})
    with pytest.raises(ValueError, match=rf"config\.data\.{field}=.* is not allowed"):
        train.validate_config(config, num_devices=1)
    train.validate_config(default.get_config(), num_devices=1)


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
