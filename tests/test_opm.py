"""OPM (TPAMI 2024): drop probabilities, masks, feature rescaling, training."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avgmm import train
from avgmm.workdir import Workdir
from avgmm.methods import opm


@pytest.mark.parametrize("score_a, score_v, q_base, lam, expected", [
    # s_a / s_v - 1 = 3/2 - 1 = 0.5: r_a = tanh(0.5) = 0.46211716,
    # q_a = 0.5 (1 + 0.5 * 0.46211716) = 0.61552929; s_v / s_a - 1 < 0: q_v = 0.
    (3.0, 2.0, 0.5, 0.5, (0.61552929, 0.0)),
    # s_v / s_a - 1 = 3: r_v = tanh(3) = 0.99505475, q_v = 0.5 (1 + 0.49752738) = 0.74876369.
    (1.0, 4.0, 0.5, 0.5, (0.0, 0.74876369)),
    # A tie: r = tanh(0) = 0 for both, nothing is dropped.
    (2.0, 2.0, 0.5, 0.5, (0.0, 0.0)),
    # 0.8 (1 + 1 * 0.99505475) = 1.596 is clipped to 1.
    (1.0, 4.0, 0.8, 1.0, (0.0, 1.0)),
])
def test_drop_probabilities_match_hand_worked_values(score_a, score_v, q_base, lam, expected):
    q = opm.drop_probabilities(jnp.float32(score_a), jnp.float32(score_v), q_base, lam)
    np.testing.assert_allclose([float(x) for x in q], expected, rtol=1e-6, atol=1e-7)


def test_dropped_features_are_masked_and_rescaled_by_one_minus_theta():
    phi_a = jnp.ones((2, 2))
    phi_v = jnp.full((2, 2), 2.0)
    m_a, m_v = jnp.array([0.0, 1.0]), jnp.array([1.0, 1.0])
    # theta = (2 * 0.6 + 2 * 0) / (2 + 2) = 0.3, scale = 1 / 0.7 = 1.4285714.
    a, v = opm.drop_features(phi_a, phi_v, 0.6, 0.0, m_a, m_v, jnp.bool_(True))
    np.testing.assert_allclose(a, [[0, 0], [1.4285714, 1.4285714]], rtol=1e-6)
    np.testing.assert_allclose(v, np.full((2, 2), 2.8571429), rtol=1e-6)
    # Not executed: the features pass unchanged (theta = 0).
    a, v = opm.drop_features(phi_a, phi_v, 0.6, 0.0, jnp.ones(2), jnp.ones(2), jnp.bool_(False))
    np.testing.assert_array_equal(a, phi_a)
    np.testing.assert_array_equal(v, phi_v)


def test_keep_masks_drop_at_rate_q_and_do_not_depend_on_the_device_split():
    positions = jnp.arange(20000, dtype=jnp.int32)
    key = jax.random.key(7)
    m_a, m_v = opm.keep_masks(key, positions, jnp.float32(0.6), jnp.float32(0.0),
                              jnp.bool_(True))
    # 20000 Bernoulli(0.4) draws: std of the mean 0.0035.
    assert abs(float(m_a.mean()) - 0.4) < 0.015
    assert float(m_v.min()) == 1.0  # q_v = 0: never dropped
    m_a_off, _ = opm.keep_masks(key, positions, jnp.float32(0.6), jnp.float32(0.0),
                                jnp.bool_(False))
    assert float(m_a_off.min()) == 1.0
    # A device holding positions 8..15 draws the same masks as the whole batch.
    part, _ = opm.keep_masks(key, positions[8:16], jnp.float32(0.6), jnp.float32(0.0),
                             jnp.bool_(True))
    np.testing.assert_array_equal(part, m_a[8:16])


def test_drop_probabilities_agree_on_one_and_four_devices():
    if jax.local_device_count() < 4:
        pytest.skip("needs 4 devices")
    from avgmm.methods import base
    from avgmm.methods.ogm_ge import true_class_score

    rng = np.random.default_rng(1)
    la = jnp.asarray(rng.normal(size=(16, 5)) * 2, jnp.float32)
    lv = jnp.asarray(rng.normal(size=(16, 5)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 5, 16))

    def q(a, v, labels, ctx):
        return opm.drop_probabilities(true_class_score(a, labels, ctx),
                                      true_class_score(v, labels, ctx), 0.5, 0.5)

    single = q(la, lv, y, base.StepContext(None, None, None, None))
    ctx4 = base.StepContext(model=None, axis_name="batch", key=None, frames=None)
    shard = lambda t: t.reshape((4, -1) + t.shape[1:])  # noqa: E731
    four = jax.pmap(lambda a, v, labels: q(a, v, labels, ctx4), axis_name="batch")(
        shard(la), shard(lv), shard(y))
    assert float(single[0]) + float(single[1]) > 0  # one modality is dominant here
    for s, f in zip(single, four):
        np.testing.assert_allclose(np.asarray(f), np.full(4, float(s)), rtol=1e-6)


def test_bad_drop_settings_are_refused(tiny_config, tmp_path):
    from avgmm.errors import UserError

    tiny_config.method = "opm"
    tiny_config.opm.lam = 1.0  # q_base (1 + lam) = 1: theta could reach 1
    with pytest.raises(UserError, match="opm.lam"):
        train.train_and_evaluate(tiny_config, str(tmp_path / "bad"))


@pytest.mark.slow
def test_tiny_run_drops_after_the_warm_up(tiny_config, tmp_path):
    tiny_config.method = "opm"
    # The default warm-up, 6% of the budget, is one of the 3 epochs (at least one).
    tiny_config.opm.p_exe = 1.0  # every batch drops: the kept fractions show it
    workdir = str(tmp_path / "opm")
    results = train.train_and_evaluate(tiny_config, workdir)
    records = Workdir(workdir).read_metrics()
    assert [r["dropping"] for r in records] == [False, True, True]
    warm = records[0]["train"]
    assert warm["executed"] == 0 and warm["kept_audio"] == 1 and warm["kept_visual"] == 1
    for r in records[1:]:
        t = r["train"]
        assert t["executed"] == 1 and np.isfinite(t["loss"])
        # Only the dominant modality is ever dropped, with probability <= 0.75.
        assert 0 <= t["q_a"] <= 0.75 and 0 <= t["q_v"] <= 0.75
        # q >= q_base = 0.5 for the dominant one: some of its 16 samples a batch are dropped.
        assert t["q_a"] + t["q_v"] >= 0.5 and t["kept_audio"] + t["kept_visual"] < 1.9
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f) == results
    for key in ("test_accuracy", "test_accuracy_audio", "test_accuracy_visual"):
        assert 0.0 <= results[key] <= 1.0
