"""Per-clip ground truth (clip fields) from the dataset's features to every batch."""

import hashlib
import json
import os

import numpy as np
import pytest

import toy_converter
from avgmm.data import decoded_cache, pipeline

COUNT = 7  # clips per split: an eval batch of 4 leaves a padded one


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("toy"))
    toy_converter.prepare(data_dir, COUNT)
    return data_dir


def _expected(indices):
    """The fields the toy converter writes for clips `indices` (see its docstring)."""
    i = np.asarray(indices)
    return {"hard": i % 3 == 0, "level": i % 3, "step": 10 * i, "weight": i / 4}


def test_meta_lists_every_scalar_feature_with_its_kind(toy_dir, tiny_data_dir):
    ds = pipeline.load_dataset("toy_av", toy_dir, 1)
    assert dict(ds.meta.clip_fields) == {"hard": "bool", "level": ("low", "mid", "high"),
                                         "step": "int", "weight": "float"}
    assert not ds.meta.has_imbalance_flag
    tiny = pipeline.load_dataset("avsynth/tiny", tiny_data_dir, 1)
    assert dict(tiny.meta.clip_fields) == {"imbalanced": "bool"}
    assert tiny.meta.has_imbalance_flag


def test_train_and_eval_batches_carry_the_fields(toy_dir):
    ds = pipeline.load_dataset("toy_av", toy_dir, 1)
    dtypes = {"hard": np.bool_, "level": np.int32, "step": np.int32, "weight": np.float32}
    seen = []
    for batch in ds.train_batches(3, epoch=0, seed=1, prefetch=0):
        want = _expected(batch["index"])
        for key, dtype in dtypes.items():
            assert batch[key].dtype == dtype, key
            np.testing.assert_allclose(batch[key], want[key], err_msg=key)
        seen += batch["index"].tolist()
    assert len(seen) == 6 and len(set(seen)) == 6  # 2 full batches of 3, shuffled
    batches = list(ds.eval_batches("test", 4, prefetch=0))
    last = batches[-1]  # 3 real rows and one padding row repeating row 0
    np.testing.assert_array_equal(last["mask"], [True, True, True, False])
    np.testing.assert_array_equal(last["level"], [1, 2, 0, 1])  # clips 4, 5, 6, then 4
    np.testing.assert_array_equal(last["step"], [40, 50, 60, 40])
    # The devices get the fields; only the ids stay on the host.
    assert set(batches[0]) - set(pipeline.HOST_KEYS) == {
        "audio", "frames", "label", "index", "mask", "hard", "level", "step", "weight"}


def test_cached_fields_equal_record_reads(toy_dir, tmp_path):
    direct = pipeline.load_dataset("toy_av", toy_dir, 1)
    cached = pipeline.load_dataset("toy_av", toy_dir, 1, cache_dir=str(tmp_path))
    assert set(cached.cache) == {"train", "test"}
    idx = [6, 0, 3, 3]
    a, b = direct.read("train", idx), cached.read("train", idx)
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        assert a[key].dtype == b[key].dtype, key


def test_a_cache_from_before_the_fields_is_never_read(toy_dir, tmp_path):
    ds = pipeline.load_dataset("toy_av", toy_dir, 1)
    # The key the loader used before clip fields were cached (name, folder, frames,
    # examples, parameters): its folder is not the one read now.
    old_key = json.dumps({"name": ds.meta.name, "dir": ds._prepared_dir,
                          "frames": ds.frame_index.tolist(),
                          "examples": ds.meta.num_examples, "params": ds.meta.params},
                         sort_keys=True, default=str)
    old_root = os.path.join(str(tmp_path), "toy_av",
                            hashlib.sha1(old_key.encode()).hexdigest()[:12])
    new_root = decoded_cache.root(str(tmp_path), ds.meta, ds._prepared_dir, ds.frame_index)
    assert os.path.dirname(new_root) == os.path.dirname(old_root) and new_root != old_root
    # A finished cache that lacks a field's file (older code, or a file lost) is rebuilt
    # rather than read without it.
    ds.use_cache(str(tmp_path))
    os.remove(os.path.join(new_root, "test", "level.npy"))
    again = pipeline.load_dataset("toy_av", toy_dir, 1, cache_dir=str(tmp_path))
    np.testing.assert_array_equal(again.read("test", range(COUNT))["level"],
                                  _expected(range(COUNT))["level"])
    assert os.path.exists(os.path.join(new_root, "test", "level.npy"))


def test_a_feature_named_like_a_loader_entry_is_refused():
    import tensorflow_datasets as tfds

    from avgmm.data import clip_fields
    from avgmm.errors import UserError

    features = {"label": tfds.features.ClassLabel(names=["a"]),
                "mask": tfds.features.Scalar(dtype=np.bool_)}
    with pytest.raises(UserError, match=r"dataset 'x' has a feature named 'mask'"):
        clip_fields.from_features("x", features)
    # Non-scalar and text features are not clip fields.
    features = {"emb": tfds.features.Tensor(shape=(3,), dtype=np.float32),
                "note": tfds.features.Text(), "ok": tfds.features.Scalar(dtype=np.int32)}
    assert clip_fields.from_features("x", features) == {"ok": "int"}
