"""OGM-GE (CVPR 2022) and the TPAMI 2024 OGM: coefficients, noise, schedule, training."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import device_runs

from avgmm import methods, train
from avgmm.errors import UserError
from avgmm.workdir import Workdir
from avgmm.methods import base, ogm, ogm_ge

CTX = base.StepContext(model=None, axis_name=None, key=jax.random.key(0), frames=None)


def test_true_class_score_sums_the_label_probabilities():
    # Sample 0: logits (0, ln 3) -> softmax (1/4, 3/4), label 1 -> 0.75.
    # Sample 1: logits (0, 0)    -> softmax (1/2, 1/2), label 0 -> 0.5.  Sum: 1.25.
    logits = jnp.array([[0.0, np.log(3.0)], [0.0, 0.0]])
    score = ogm_ge.true_class_score(logits, jnp.array([1, 0]), CTX)
    np.testing.assert_allclose(score, 1.25, rtol=1e-6)


@pytest.mark.parametrize("score_a, score_v, alpha, expected", [
    # rho_v = 1.5 / 3 = 0.5 <= 1, so audio dominates: rho_a = 2,
    # k_a = 1 - tanh(0.1 * 2) = 1 - 0.19737532 = 0.80262468, k_v = 1.
    (3.0, 1.5, 0.1, (0.80262468, 1.0, 0.5)),
    # rho_v = 4 / 1 = 4 > 1: k_v = 1 - tanh(0.5 * 4) = 1 - 0.96402758 = 0.03597242.
    (1.0, 4.0, 0.5, (1.0, 0.03597242, 4.0)),
    # A tie (rho_v = 1, not > 1) modulates audio: k_a = 1 - tanh(0.1) = 0.90033200.
    (2.0, 2.0, 0.1, (0.90033200, 1.0, 1.0)),
])
def test_coefficients_match_hand_worked_values(score_a, score_v, alpha, expected):
    got = ogm_ge.ogm_coefficients(jnp.float32(score_a), jnp.float32(score_v), alpha)
    np.testing.assert_allclose([float(g) for g in got], expected, rtol=1e-6)


def _grads(key):
    ka, kv, kh = jax.random.split(key, 3)
    return {
        "audio_encoder": {"conv": {"kernel": 2.0 * jax.random.normal(ka, (8, 8, 16, 16))},
                          "bn": {"scale": jnp.full((16,), 0.3)}},
        "visual_encoder": {"conv": {"kernel": 0.5 * jax.random.normal(kv, (8, 8, 16, 16))},
                           "bn": {"bias": jnp.full((16,), -0.2)}},
        "head": {"kernel": jax.random.normal(kh, (32, 4))},
    }


def _at(tree, path):
    for p in path:
        tree = tree[p]
    return tree


def test_ge_noise_has_the_gradient_std_and_spares_other_parameters():
    g = _grads(jax.random.key(1))
    out = ogm_ge.modulate_encoder_grads(g, jnp.float32(0.25), jnp.float32(1.0),
                                        jnp.float32(1.0), jax.random.key(2))
    for enc, coeff in (("audio_encoder", 0.25), ("visual_encoder", 1.0)):
        orig = np.asarray(g[enc]["conv"]["kernel"])
        noise = np.asarray(out[enc]["conv"]["kernel"]) - coeff * orig
        # Noise std is the std of the UNSCALED gradient (16384 draws: about 0.6 % error),
        # added to both encoders as the authors do, the unmodulated one included.
        np.testing.assert_allclose(noise.std(), orig.std(ddof=1), rtol=0.03)
        assert abs(noise.mean()) < 0.03 * orig.std()
    # Non-4-D parameters (BatchNorm, the fusion layer) are never touched.
    for path in (("audio_encoder", "bn", "scale"), ("visual_encoder", "bn", "bias"),
                 ("head", "kernel")):
        np.testing.assert_array_equal(_at(out, path), _at(g, path))
    # Different noise in the two encoders (keys folded per leaf).
    ka, kv = ("audio_encoder", "conv", "kernel"), ("visual_encoder", "conv", "kernel")
    na = np.asarray(_at(out, ka) - 0.25 * _at(g, ka))
    nv = np.asarray(_at(out, kv) - _at(g, kv))
    assert abs(np.corrcoef(na.ravel(), nv.ravel())[0, 1]) < 0.05


def test_ogm_mode_scales_only_the_dominant_encoder_without_noise():
    g = _grads(jax.random.key(3))
    out = ogm_ge.modulate_encoder_grads(g, jnp.float32(1.0), jnp.float32(0.4),
                                        jnp.float32(0.0), jax.random.key(4))
    np.testing.assert_array_equal(out["audio_encoder"]["conv"]["kernel"],
                                  g["audio_encoder"]["conv"]["kernel"])
    np.testing.assert_allclose(out["visual_encoder"]["conv"]["kernel"],
                               0.4 * g["visual_encoder"]["conv"]["kernel"], rtol=1e-6)


def test_transform_grads_outside_the_window_leaves_gradients_alone(tiny_config):
    tiny_config.method = "ogm_ge"
    method = methods.get(tiny_config)
    g = _grads(jax.random.key(5))
    logits = base.AVLogits(fused=jnp.zeros((2, 3)), audio=jnp.array([[5.0, 0, 0], [5.0, 0, 0]]),
                           visual=jnp.zeros((2, 3)))
    batch = {"label": jnp.array([0, 0])}
    out, terms = method.transform_grads("ogm_ge", g, logits, batch, None,
                                        {"modulate": np.float32(0.0)}, CTX)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(g)):
        np.testing.assert_array_equal(a, b)
    assert float(terms["coeff_a"]) == 1.0 and float(terms["coeff_v"]) == 1.0
    # Inside it audio dominates (softmax(5,0,0)[0] = 0.98670 vs 1/3): k_a < 1.
    _, terms = method.transform_grads("ogm_ge", g, logits, batch, None,
                                      {"modulate": np.float32(1.0)}, CTX)
    rho_a = 2 * 0.98670 / (2 / 3)  # = 2.9601
    np.testing.assert_allclose(float(terms["coeff_a"]), 1 - np.tanh(0.1 * rho_a), rtol=1e-4)


def test_modulation_windows_follow_the_authors_epoch_loops(tiny_config):
    # At the authors' own 100 epochs the shares give their epochs exactly.
    tiny_config.epochs = 100
    tiny_config.method = "ogm_ge"
    cvpr = methods.get(tiny_config)
    # CVPR main.py: modulation_starts (0) <= epoch <= modulation_ends (50), 0-based.
    assert [cvpr.modulates(e) for e in (0, 50, 51)] == [True, True, False]
    tiny_config.method = "ogm"
    tpami = methods.get(tiny_config)
    # TPAMI main.py: warm_up for epoch <= 5, then the window [0, 60].
    assert [tpami.modulates(e) for e in (5, 6, 60, 61)] == [False, True, True, False]
    assert tpami.step_scalars(3) == {"modulate": 0.0}
    assert isinstance(tpami, ogm.Ogm) and tiny_config.ogm.alpha == 0.8


def test_modulation_windows_scale_to_a_short_budget(tiny_config):
    # The demo's 10 epochs: OGM-GE modulates the first 51% (round(5.1) = 5 epochs); OGM
    # warms up 6% (at least one epoch) and modulates up to 61% (round(6.1) = 6).
    tiny_config.epochs = 10
    tiny_config.method = "ogm_ge"
    assert [e for e in range(10) if methods.get(tiny_config).modulates(e)] == [0, 1, 2, 3, 4]
    tiny_config.method = "ogm"
    assert [e for e in range(10) if methods.get(tiny_config).modulates(e)] == [1, 2, 3, 4, 5]
    # Two epochs: the warm-up takes one, the window keeps the other.
    tiny_config.epochs = 2
    assert [methods.get(tiny_config).modulates(e) for e in range(2)] == [False, True]


@pytest.mark.parametrize("field, value", [("warmup_fraction", 1.0),
                                          ("modulation_end_fraction", 0.0),
                                          ("modulation_start_fraction", -0.1)])
def test_bad_schedule_shares_are_refused(tiny_config, tmp_path, field, value):
    tiny_config.method = "ogm"
    tiny_config.ogm[field] = value
    with pytest.raises(UserError, match=f"ogm.{field}"):
        train.train_and_evaluate(tiny_config, str(tmp_path / "bad"))


def test_batch_scores_and_coefficients_agree_on_one_and_four_devices():
    if jax.local_device_count() < 4:
        pytest.skip("needs 4 devices")
    rng = np.random.default_rng(0)
    la = jnp.asarray(rng.normal(size=(16, 5)), jnp.float32)
    lv = jnp.asarray(rng.normal(size=(16, 5)) * 2, jnp.float32)
    y = jnp.asarray(rng.integers(0, 5, 16))

    def coeffs(a, v, labels, ctx):
        return ogm_ge.ogm_coefficients(ogm_ge.true_class_score(a, labels, ctx),
                                       ogm_ge.true_class_score(v, labels, ctx), 0.5)

    single = coeffs(la, lv, y, CTX)
    ctx4 = base.StepContext(model=None, axis_name="batch", key=None, frames=None)
    shard = lambda t: t.reshape((4, -1) + t.shape[1:])  # noqa: E731
    four = jax.pmap(lambda a, v, labels: coeffs(a, v, labels, ctx4), axis_name="batch")(
        shard(la), shard(lv), shard(y))
    for s, f in zip(single, four):
        np.testing.assert_allclose(np.asarray(f), np.full(4, float(s)), rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ogm_ge", "ogm"])
def test_tiny_run_trains_and_logs_the_coefficients(tiny_config, tmp_path, method):
    tiny_config.method = method
    workdir = str(tmp_path / method)
    results = train.train_and_evaluate(tiny_config, workdir)
    records = Workdir(workdir).read_metrics()
    assert len(records) == 3
    # 3 epochs: OGM-GE's window is the first 51% (2 epochs); OGM's warm-up of 6% takes
    # one, its window up to 61% the next.
    expected = [True, True, False] if method == "ogm_ge" else [False, True, False]
    assert [r["modulated"] for r in records] == expected
    for r, on in zip(records, expected):
        t = r["train"]
        assert np.isfinite(t["loss"]) and t["ratio_v"] > 0
        assert 0 < t["coeff_a"] <= 1 and 0 < t["coeff_v"] <= 1
        if not on:
            assert t["coeff_a"] == 1 and t["coeff_v"] == 1
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f) == results
    device_runs.analyze_run(workdir)
    for key in ("test_accuracy", "test_accuracy_audio", "test_accuracy_visual"):
        assert 0.0 <= results[key] <= 1.0

