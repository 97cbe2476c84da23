"""Diagnosing and Re-learning (ECCV 2024): purity, k-means, the re-initialization weight
and blend against hand-worked values, the schedule, the hook on a real state, and tiny
runs on 1 and 4 devices."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import device_runs
from avgmm import build, methods, train
from avgmm.data import pipeline
from avgmm.errors import UserError
from avgmm.methods import diagnose_relearn as dr
from avgmm.workdir import Workdir


# ------------------------------------------------------------------ the diagnosis
def test_purity_counts_each_clusters_majority_class():
    # Clusters {0: labels 0, 0, 1}, {1: labels 1, 1}: majorities 2 + 2 of 5 = 0.8 (the
    # authors' purity_score votes each cluster's most frequent label).
    labels = jnp.array([0, 0, 1, 1, 1])
    clusters = jnp.array([0, 0, 0, 1, 1])
    assert float(dr.purity(labels, clusters, 2, 2)) == pytest.approx(0.8)
    # Cluster ids are arbitrary: swapping them changes nothing; one cluster holding
    # everything gives the largest class share, 3/5.
    assert float(dr.purity(labels, 1 - clusters, 2, 2)) == pytest.approx(0.8)
    assert float(dr.purity(labels, jnp.zeros(5, jnp.int32), 2, 2)) == pytest.approx(0.6)


def test_minmax_scale_maps_each_feature_onto_minus_one_one():
    # Column 0: 0, 2, 4 -> -1, 0, 1; column 1 is constant -> -1 (sklearn's
    # MinMaxScaler(feature_range=(-1, 1)) divides by a range of 1 there).
    x = jnp.array([[0.0, 5.0], [2.0, 5.0], [4.0, 5.0]])
    np.testing.assert_allclose(dr.minmax_scale(x), [[-1, -1], [0, -1], [1, -1]], atol=1e-7)


def test_relearn_weight_and_blend_hand_worked():
    # tanh(3 * |0.9 - 0.7|) = tanh(0.6) = 0.5370496; equal purities give 0.
    assert float(dr.relearn_weight(0.9, 0.7, 3.0)) == pytest.approx(0.5370496, rel=1e-6)
    assert float(dr.relearn_weight(0.7, 0.9, 3.0)) == pytest.approx(0.5370496, rel=1e-6)
    assert float(dr.relearn_weight(0.5, 0.5, 3.0)) == 0.0
    # w = 0.25: 0.25 * theta0 + 0.75 * theta, leaf by leaf: 0.25 * 0 + 0.75 * 4 = 3,
    # 0.25 * 2 + 0.75 * (-2) = -1.
    out = dr.blend_toward_init({"a": jnp.array([4.0]), "b": {"c": jnp.array([-2.0])}},
                               {"a": jnp.array([0.0]), "b": {"c": jnp.array([2.0])}}, 0.25)
    np.testing.assert_allclose(out["a"], [3.0])
    np.testing.assert_allclose(out["b"]["c"], [-1.0])


def _blobs(seed, n_per=40, k=4, dim=6, spread=0.3):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(k, dim)) * 5
    x = np.concatenate([m + spread * rng.normal(size=(n_per, dim)) for m in means])
    return x.astype(np.float32), np.repeat(np.arange(k), n_per)


def _same_partition(a, b):
    return np.array_equal(a[:, None] == a[None, :], b[:, None] == b[None, :])


def test_kmeans_finds_the_partition_sklearn_finds():
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    x, y = _blobs(0)
    ours = np.asarray(dr.kmeans(jax.random.key(0), jnp.asarray(x), 4, inits=2))
    theirs = sklearn_cluster.KMeans(n_clusters=4, random_state=0, n_init=2).fit_predict(x)
    assert _same_partition(ours, theirs)
    assert _same_partition(ours, y)  # well separated blobs: the classes themselves
    assert float(dr.feature_purity(jax.random.key(1), jnp.asarray(x), jnp.asarray(y),
                                   4, 1)) == pytest.approx(1.0)


def test_lloyd_step_assigns_averages_and_relocates_an_empty_cluster():
    # Centers 0.5, 11, 100 for the points 0, 1, 10, 13: assignments [0, 0, 1, 1], means
    # 0.5 and 11.5; the center at 100 gets no point and moves onto the point farthest
    # from its center (squared distances 0.25, 0.25, 1, 4: the point 13).
    x = jnp.array([[0.0], [1.0], [10.0], [13.0]])
    labels, centers = dr._lloyd_step(x, jnp.array([[0.5], [11.0], [100.0]]))
    np.testing.assert_array_equal(labels, [0, 0, 1, 1])
    np.testing.assert_allclose(centers[:, 0], [0.5, 11.5, 13.0])


# ------------------------------------------------------------------ the schedule
def _method(tiny_config, **settings):
    tiny_config.method = "diagnose_relearn"
    tiny_config.diagnose_relearn.update(settings)
    return methods.get(tiny_config)


def test_reinit_epochs_follow_the_authors_loop(tiny_config):
    # ours.py: `if epoch % reinit_epoch == 0 and epoch > 0` after training epoch `epoch`
    # (0-based), at most reinit_num times: 20, 40, 60 with ours.sh's 20 (of 90) and 3.
    tiny_config.epochs = 90
    m = _method(tiny_config, reinit_fraction=20 / 90, reinit_num=3)
    assert [e for e in range(100) if m.reinit_index(e)] == [20, 40, 60]
    assert [m.reinit_index(e) for e in (20, 40, 60)] == [1, 2, 3]
    # The hook runs before the next epoch: the record of epoch 21 (0-based) says so.
    assert m.describe(21) == {"reinitialized": True} and not m.describe(20)["reinitialized"]


def test_default_period_is_the_authors_share_of_the_budget(tiny_config):
    # 20 of 90 epochs: round(3 * 20 / 90) = round(0.67) = 1 for the tiny config's 3
    # epochs, 2 for the demo's 10, round(100 * 20 / 90) = 22 for 100, exactly 20 for 90;
    # never less than one (2 epochs: 0.44).
    m = _method(tiny_config)
    assert tiny_config.epochs == 3 and m.period() == 1
    tiny_config.epochs = 100
    assert m.period() == 22
    tiny_config.epochs = 90
    assert m.period() == 20
    tiny_config.epochs = 10
    assert m.period() == 2
    tiny_config.epochs = 2
    assert m.period() == 1


@pytest.mark.parametrize("field, value", [("move_lambda", math.nan),
                                          ("move_lambda", -1.0), ("reinit_num", -1),
                                          ("reinit_fraction", 0.0),
                                          ("reinit_fraction", 1.5), ("kmeans_inits", 0)])
def test_bad_settings_are_refused(tiny_config, tmp_path, field, value):
    _method(tiny_config, **{field: value})
    with pytest.raises(UserError, match=f"diagnose_relearn.{field}"):
        train.train_and_evaluate(tiny_config, str(tmp_path / "bad"))


# ------------------------------------------------------------------ the hook
def test_hook_moves_each_encoder_towards_its_initialization(tiny_config):
    _method(tiny_config, reinit_fraction=1 / 3)
    tiny_config.num_devices = 1
    ds = pipeline.load_dataset(tiny_config.data.name, tiny_config.data.data_dir,
                               tiny_config.data.num_frames)
    built = build.build(tiny_config, ds)
    init = built.template.params
    # Parameters away from the initialization (as after training): theta = theta0 + 1.
    moved = jax.tree.map(lambda p: p + 1.0, init)
    state = built.par.replicate(built.template.replace(params=moved))
    run = methods.RunContext(par=built.par, ds=ds, config=tiny_config, workdir=None, meta={},
                             samples=None, initial_state=built.template)
    method = built.method
    same, record = method.on_epoch_start(run, state, 1)  # after epoch 0: no re-init
    assert record == {} and same is state
    state, record = method.on_epoch_start(run, state, 2)  # after epoch 1: the first
    rec = record["relearn"]
    assert rec["reinit"] == 1
    got = built.par.fetch(state.params)
    for modality in ("audio", "visual"):
        p_train, p_val = rec[f"purity_train_{modality}"], rec[f"purity_validation_{modality}"]
        assert 0 < p_train <= 1 and 0 < p_val <= 1
        w = math.tanh(3.0 * abs(p_train - p_val))
        assert rec[f"weight_{modality}"] == pytest.approx(w, rel=1e-6)
        # w theta0 + (1 - w)(theta0 + 1) = theta0 + (1 - w).
        for a, b in zip(jax.tree.leaves(got[f"{modality}_encoder"]),
                        jax.tree.leaves(init[f"{modality}_encoder"])):
            np.testing.assert_allclose(a, np.asarray(b) + (1.0 - w), rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(got["head"]), jax.tree.leaves(moved["head"])):
        np.testing.assert_array_equal(a, b)


def test_feature_rows_are_every_sample_in_index_order(tiny_config):
    _method(tiny_config)
    tiny_config.num_devices = 1
    ds = pipeline.load_dataset(tiny_config.data.name, tiny_config.data.data_dir,
                               tiny_config.data.num_frames)
    built = build.build(tiny_config, ds)
    run = methods.RunContext(par=built.par, ds=ds, config=tiny_config, workdir=None, meta={},
                             samples=None, initial_state=built.template)
    rows = dr.feature_rows(run, built.par.replicate(built.template), "validation")
    n = ds.meta.num_examples["validation"]
    labels = np.concatenate([b["label"][b["mask"]] for b in ds.eval_batches("validation", 7)])
    np.testing.assert_array_equal(rows["label"], labels)
    assert rows["audio"].shape[0] == rows["visual"].shape[0] == n
    # Inference mode: the features do not depend on the batch they were computed in.
    tiny_config.eval_batch_size = 5
    again = dr.feature_rows(run, built.par.replicate(built.template), "validation")
    np.testing.assert_allclose(again["audio"], rows["audio"], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_one_and_four_devices_train_alike_with_reinitializations(tiny_config, tmp_path):
    if jax.local_device_count() < 4:
        pytest.skip("needs 4 devices")
    _method(tiny_config, reinit_fraction=1 / 3)
    runs = device_runs.train_on_device_counts(tiny_config, tmp_path)
    records = runs[1]
    assert [r["reinitialized"] for r in records] == [False, False, True]
    assert "relearn" in records[2] and records[2]["relearn"]["reinit"] == 1
    for key, value in records[2]["relearn"].items():
        if key.startswith(("purity", "weight")):
            assert runs[4][2]["relearn"][key] == pytest.approx(value, abs=1e-6), key
    device_runs.assert_runs_agree(runs[1], runs[4])
    assert Workdir(str(tmp_path / "d1")).read_metrics()[2]["relearn"]["weight_audio"] >= 0
