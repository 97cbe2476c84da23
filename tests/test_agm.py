"""AGM: Shapley responses, scores, coefficients, gradient scaling and clipping against
hand-worked numbers, and a tiny end-to-end run on 1 and 4 devices."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import device_runs
from avgmm import build, losses, train
from avgmm.workdir import Workdir
from avgmm.errors import UserError
from avgmm.methods import agm


def test_shapley_responses_split_the_fused_logits():
    # f = (2, 0), f(a, 0) = (1, 1), f(0, v) = (0, 2):
    # m_a = ((2, 0) - (0, 2) + (1, 1)) / 2 = (1.5, -0.5); m_v = ((2, 0) - (1, 1) + (0, 2)) / 2
    # = (0.5, 0.5); m_a + m_v = f.
    m_a, m_v = agm.shapley_responses(jnp.array([2.0, 0.0]), jnp.array([1.0, 1.0]),
                                     jnp.array([0.0, 2.0]))
    np.testing.assert_allclose(m_a, [1.5, -0.5])
    np.testing.assert_allclose(m_v, [0.5, 0.5])


def test_batch_score_is_the_mean_floored_negative_log_likelihood():
    # Sample 0: logits (ln 3, 0), label 0 -> p = 3/4, -log p = 0.287682.
    # Sample 1: logits (0, 0), label 1 -> ln 2 = 0.693147. Mean 0.490415.
    logits = jnp.array([[math.log(3.0), 0.0], [0.0, 0.0]])
    assert float(agm.batch_score(logits, jnp.array([0, 1]))) == pytest.approx(0.490415,
                                                                             rel=1e-5)
    # p = e^-30 / (1 + e^-30) < 1e-8: floored, -log(1e-8) = 18.420681.
    floored = agm.batch_score(jnp.array([[0.0, -30.0]]), jnp.array([1]))
    assert float(floored) == pytest.approx(18.420681, rel=1e-6)


def test_coefficients_slow_the_modality_ahead_of_its_running_average():
    # s_a = 0.5, s_v = 1.0, running means 0.6 and 0.8, alpha 1:
    # ratio_a = e^(1.0 - 0.5) = 1.648721, optimal_a = e^(0.8 - 0.6) = 1.221403
    #   -> coeff_a = exp(1.221403 - 1.648721) = exp(-0.427318) = 0.652256
    # ratio_v = e^-0.5 = 0.606531, optimal_v = e^-0.2 = 0.818731
    #   -> coeff_v = exp(0.212200) = 1.236395
    got = agm.coefficients(jnp.float32(0.5), jnp.float32(1.0), jnp.float32(0.6),
                           jnp.float32(0.8), 1.0)
    np.testing.assert_allclose([float(g) for g in got], [0.652256, 1.236395], rtol=1e-5)
    # The exponent is capped at 10: equal scores, means 3 apart, alpha 2:
    # optimal_a - ratio_a = e^3 - 1 = 19.09 -> min(., 10) -> coeff_a = e^(2 * 10).
    # coeff_v = exp(2 * (e^-3 - 1)) = exp(-1.900426) = 0.149505.
    got = agm.coefficients(jnp.float32(1.0), jnp.float32(1.0), jnp.float32(0.0),
                           jnp.float32(3.0), 2.0)
    np.testing.assert_allclose([float(g) for g in got], [math.exp(20.0), 0.149505],
                               rtol=1e-5)
    # Alpha 0 switches the modulation off.
    got = agm.coefficients(jnp.float32(0.2), jnp.float32(1.5), jnp.float32(0.9),
                           jnp.float32(0.1), 0.0)
    assert [float(g) for g in got] == [1.0, 1.0]


def test_gradient_of_each_modality_is_scaled_by_its_coefficient_on_a_linear_model():
    # f(a, v) = W_a a + W_v v + b: m_a = W_a a + b/2 and m_v = W_v v + b/2 exactly, so the
    # AGM loss's gradient is the plain one with W_a's times coeff_a, W_v's times coeff_v
    # and b's times (coeff_a + coeff_v) / 2 (the gradient reaches b through all three
    # passes).
    a, v = jnp.array([1.0, 2.0]), jnp.array([-1.0, 0.5])
    params = {"w_a": jnp.array([[0.3, -0.2], [0.1, 0.4]]),
              "w_v": jnp.array([[0.5, 0.0], [-0.3, 0.2]]), "b": jnp.array([0.1, -0.1])}
    label = jnp.array([1])
    c_a, c_v = 0.25, 3.0

    def f(p, x_a, x_v):
        return (p["w_a"] @ x_a + p["w_v"] @ x_v + p["b"])[None]

    def agm_loss(p):
        m_a, m_v = agm.shapley_responses(f(p, a, v), f(p, a, 0 * v), f(p, 0 * a, v))
        out = agm.scale_gradient(m_a, c_a) + agm.scale_gradient(m_v, c_v)
        return losses.cross_entropy(out, label).mean()

    plain = jax.grad(lambda p: losses.cross_entropy(f(p, a, v), label).mean())(params)
    got = jax.grad(agm_loss)(params)
    assert float(agm_loss(params)) == pytest.approx(
        float(losses.cross_entropy(f(params, a, v), label)[0]), rel=1e-6)
    np.testing.assert_allclose(got["w_a"], c_a * plain["w_a"], rtol=1e-6)
    np.testing.assert_allclose(got["w_v"], c_v * plain["w_v"], rtol=1e-6)
    np.testing.assert_allclose(got["b"], 0.5 * (c_a + c_v) * plain["b"], rtol=1e-6)


def test_running_mean_and_conditional_clipping():
    # Mean 0.5 of 3 steps, one more value 1.0 -> (1.5 + 1.0) / 4 = 0.625.
    assert float(agm.running_mean(jnp.float32(0.5), jnp.float32(1.0),
                                  jnp.int32(3))) == pytest.approx(0.625)
    # A head gradient element of 2 > 1: global norm sqrt(4 + 1 + 4) = 3 -> factor 1/3.
    grads = {"head": jnp.array([[2.0], [0.0]]), "enc": jnp.array([1.0, 2.0])}
    out, fired = agm.clip_when_head_grad_large(grads, grads["head"])
    assert float(fired) == 1.0
    np.testing.assert_allclose(out["enc"], [1 / 3, 2 / 3], rtol=1e-5)
    np.testing.assert_allclose(out["head"], [[2 / 3], [0.0]], rtol=1e-5)
    # Head elements within [-1, 1]: untouched however large the other gradients are.
    grads = {"head": jnp.array([[0.9], [-1.0]]), "enc": jnp.array([30.0, 40.0])}
    out, fired = agm.clip_when_head_grad_large(grads, grads["head"])
    assert float(fired) == 0.0
    np.testing.assert_array_equal(out["enc"], [30.0, 40.0])


def test_bad_alpha_is_refused(tiny_config, tmp_path):
    tiny_config.method = "agm"
    tiny_config.agm.alpha = float("nan")
    with pytest.raises(UserError, match="agm.alpha"):
        train.train_and_evaluate(tiny_config, str(tmp_path / "bad"))


@pytest.mark.slow
def test_agm_trains_end_to_end_and_one_and_four_devices_agree(tiny_config, tmp_path):
    if jax.local_device_count() < 4:
        pytest.skip("needs 4 devices")
    config = tiny_config
    config.method = "agm"
    config.schedule.adaptive_steps = 1  # two epochs
    runs = device_runs.train_on_device_counts(config, tmp_path)
    records = runs[1]
    for r in records:
        t = r["train"]
        assert t["coeff_a"] > 0 and t["coeff_v"] > 0 and np.isfinite(t["loss"])
    # The running scores in the final state average every step's scores: with equal
    # epochs, the mean of the epochs' mean scores.
    loaded = build.load_checkpoint(config, str(tmp_path / "d1"))
    final = loaded.host_state.method_state
    assert int(final.steps) == len(records) * loaded.ds.steps_per_epoch(config.batch_size)
    np.testing.assert_allclose(float(final.score_a),
                               np.mean([r["train"]["score_audio"] for r in records]),
                               rtol=1e-4)
    np.testing.assert_allclose(float(final.score_v),
                               np.mean([r["train"]["score_visual"] for r in records]),
                               rtol=1e-4)
    device_runs.assert_runs_agree(runs[1], runs[4])
    assert Workdir(str(tmp_path / "d4")).read_metrics()[-1]["epoch"] == len(records)
