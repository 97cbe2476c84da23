"""G-Blending: the OGR weights and the blended loss against hand-worked numbers, held-out
samples that never reach the model, and a tiny end-to-end run on 1 and 4 devices."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import device_runs
from avgmm import build, steps, train
from avgmm.data import pipeline
from avgmm.errors import UserError
from avgmm.methods import g_blending
from avgmm.models import AVLogits


def test_weights_follow_the_generalization_over_squared_overfitting():
    # Outputs (fused, audio, visual); losses on T and V before and after the copies:
    #   fused:  dG = 1.1 - 0.9 = 0.2, dO = (0.9 - 0.5) - (1.1 - 1.0) = 0.3 -> 0.2 / 0.09 = 2.2222
    #   audio:  dG = 1.3 - 1.2 = 0.1, dO = (1.2 - 1.0) - (1.3 - 1.2) = 0.1 -> 0.1 / 0.01 = 10
    #   visual: dG = 1.6 - 1.2 = 0.4, dO = (1.2 - 0.9) - (1.6 - 1.5) = 0.2 -> 0.4 / 0.04 = 10
    # Sum 22.2222: weights (0.1, 0.45, 0.45).
    before = {"train": [1.0, 1.2, 1.5], "held_out": [1.1, 1.3, 1.6]}
    after = {"train": [0.5, 1.0, 0.9], "held_out": [0.9, 1.2, 1.2]}
    weights, delta_g, delta_o = g_blending.blend_weights(before, after)
    np.testing.assert_allclose(delta_g, [0.2, 0.1, 0.4], rtol=1e-9)
    np.testing.assert_allclose(delta_o, [0.3, 0.1, 0.2], rtol=1e-9)
    np.testing.assert_allclose(weights, [0.1, 0.45, 0.45], rtol=1e-6)


def test_weight_edge_cases():
    # A held-out loss that rose (dG = -0.2) counts by its size, as both re-implementations
    # take |dG / dO^2|; an unchanged overfitting (dO = 0) is floored at 1e-4:
    #   fused  dG = -0.2, dO = 0.2 - 0.0 = 0.2 -> 0.2 / 0.04 = 5
    #   audio  dG = 1e-6, dO = 0 -> 1e-6 / 1e-8 = 100
    #   visual dG = 0 -> 0.   Weights (5, 100, 0) / 105.
    before = {"train": [1.0, 1.0, 1.0], "held_out": [1.0, 1.0, 1.0]}
    after = {"train": [1.0, 1.0 - 1e-6, 1.0], "held_out": [1.2, 1.0 - 1e-6, 1.0]}
    weights, _, _ = g_blending.blend_weights(before, after)
    np.testing.assert_allclose(weights, [5 / 105, 100 / 105, 0.0], rtol=1e-4, atol=1e-7)
    # No output generalized at all: equal weights.
    weights, _, _ = g_blending.blend_weights(before, before)
    np.testing.assert_allclose(weights, [1 / 3] * 3, rtol=1e-6)
    # A diverged copy: no weights (the method keeps the previous ones).
    bad = {"train": [1.0, np.nan, 1.0], "held_out": [1.0, 1.0, 1.0]}
    assert g_blending.blend_weights(before, bad)[0] is None


def test_held_out_mask_is_a_seeded_share_of_the_training_split():
    a = g_blending.held_out_mask(100, 0.08, seed=0)
    assert a.dtype == bool and a.sum() == 8
    np.testing.assert_array_equal(a, g_blending.held_out_mask(100, 0.08, seed=0))
    assert not np.array_equal(a, g_blending.held_out_mask(100, 0.08, seed=1))


def test_blend_loss_weights_the_outputs_and_skips_held_out_samples():
    # Four samples, label 0, sample 1 held out: weights (1/3, 0, 1/3, 1/3).
    # Kept samples: CE(f) = CE((0, 0)) = ln 2 = 0.693147, CE(l_a) = CE((ln 3, 0)) =
    # -ln 3/4 = 0.287682, CE(l_v) = CE((0, ln 3)) = -ln 1/4 = 1.386294. The held-out sample
    # has logits (0, 30) everywhere (CE 30) and must not count.
    # L = 0.1 * 0.693147 + 0.45 * 0.287682 + 0.45 * 1.386294 = 0.822604.
    def rows(kept_row):
        r = jnp.asarray([kept_row] * 4)
        return r.at[1].set(jnp.array([0.0, 30.0]))

    logits = AVLogits(fused=rows([0.0, 0.0]), audio=rows([math.log(3.0), 0.0]),
                      visual=rows([0.0, math.log(3.0)]))
    per_sample = g_blending.sample_weights(jnp.array([False, True, False, False]))
    np.testing.assert_allclose(per_sample, [1 / 3, 0, 1 / 3, 1 / 3], rtol=1e-6)
    loss, terms = g_blending.blend_loss(logits, jnp.zeros(4, jnp.int32),
                                        jnp.array([0.1, 0.45, 0.45]), per_sample)
    assert float(loss) == pytest.approx(0.822604, rel=1e-5)
    assert float(terms["ce_audio"]) == pytest.approx(0.287682, rel=1e-5)
    assert float(terms["w_visual"]) == pytest.approx(0.45)


def test_estimates_start_every_super_epoch(tiny_config):
    tiny_config.epochs = 9
    tiny_config.g_blending.super_epoch_fraction = 1 / 3  # 3 epochs of 9
    method = g_blending.GBlending(tiny_config)
    assert [method.estimates(e) for e in range(7)] == [True, False, False, True, False,
                                                       False, True]
    # BalanceBenchmark's 10 of 30 epochs: estimates at epochs 0, 3, 6, 9 of the demo's 10.
    tiny_config.epochs = 10
    tiny_config.g_blending.super_epoch_fraction = 10 / 30
    method = g_blending.GBlending(tiny_config)
    assert [e for e in range(10) if method.estimates(e)] == [0, 3, 6, 9]


def test_bad_settings_are_refused(tiny_config, tmp_path):
    tiny_config.method = "g_blending"
    tiny_config.g_blending.holdout_fraction = float("inf")
    with pytest.raises(UserError, match="g_blending.holdout_fraction"):
        train.train_and_evaluate(tiny_config, str(tmp_path / "bad"))
    tiny_config.g_blending.holdout_fraction = 0.001  # rounds to no held-out sample
    with pytest.raises(UserError, match="holds out 0"):
        train.train_and_evaluate(tiny_config, str(tmp_path / "bad2"))


def test_the_labels_of_held_out_samples_never_reach_the_model(tiny_config):
    config = tiny_config
    config.method = "g_blending"
    config.g_blending.holdout_fraction = 0.25
    ds = pipeline.load_dataset(config.data.name, config.data.data_dir, config.data.num_frames)
    built = build.build(config, ds)
    held_out = np.asarray(built.template.method_state.held_out)
    batch = next(b for b in ds.train_batches(config.batch_size, 0, config.seed, 0)
                 if held_out[b["index"]].any())
    batch = {k: v for k, v in batch.items() if k not in pipeline.HOST_KEYS}
    batch["position"] = np.arange(config.batch_size, dtype=np.int32)
    relabelled = dict(batch, label=np.where(held_out[batch["index"]],
                                            (batch["label"] + 1) % ds.meta.num_classes,
                                            batch["label"]))
    step = steps.jit_train_step(config, ds.meta, built.method, "g_blending")
    scalars = built.method.train_scalars(0)
    copy = lambda: jax.tree.map(jnp.array, built.template)  # noqa: E731 (donated)
    s1, t1 = step(copy(), batch, scalars)
    s2, t2 = step(copy(), relabelled, scalars)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(t1["loss"]) == float(t2["loss"])
    assert float(t1["kept_fraction"]) == pytest.approx(1 - held_out[batch["index"]].mean())


@pytest.mark.slow
def test_g_blending_trains_end_to_end_and_one_and_four_devices_agree(tiny_config, tmp_path):
    if jax.local_device_count() < 4:
        pytest.skip("needs 4 devices")
    config = tiny_config
    config.method = "g_blending"
    config.epochs = 1
    config.g_blending.super_epoch_fraction = 1.0  # an estimate before it: three copies,
    # one epoch each
    config.g_blending.holdout_fraction = 0.25
    runs = device_runs.train_on_device_counts(config, tmp_path)
    records = runs[1]
    assert [r["g_blending_estimate"] for r in records] == [True]
    for r in records:
        est = r["g_blending"]
        assert sum(est["weights"].values()) == pytest.approx(1.0, rel=1e-5)
        # The epoch trained with the weights estimated before it.
        for k, w in est["weights"].items():
            assert r["train"][f"w_{k}"] == pytest.approx(w, rel=1e-5)
        # The weights are |dG| / max(|dO|, 1e-4)^2, normalized.
        raw = {k: abs(est["delta_G"][k]) / max(abs(est["delta_O"][k]), 1e-4) ** 2
               for k in g_blending.OUTPUTS}
        for k in g_blending.OUTPUTS:
            assert est["weights"][k] == pytest.approx(raw[k] / sum(raw.values()), rel=1e-4)
        assert 0.5 < r["train"]["kept_fraction"] < 1.0
    device_runs.assert_runs_agree(runs[1], runs[4])
    for r1, r4 in zip(runs[1], runs[4]):
        for k in g_blending.OUTPUTS:
            np.testing.assert_allclose(r4["g_blending"]["weights"][k],
                                       r1["g_blending"]["weights"][k], rtol=1e-3)
