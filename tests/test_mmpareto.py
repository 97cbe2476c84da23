"""MMPareto: the gradient combination against hand-worked 2-D gradients, and a tiny
end-to-end run on 1 and 4 devices."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import device_runs
from avgmm import build, losses, train
from avgmm.data import augment
from avgmm.methods import StepContext, mmpareto
from avgmm.run_config import open_dataset
from avgmm.models import make_model


def _combined(g_mm, g_uni, gamma=1.5):
    g_mm, g_uni = jnp.asarray(g_mm), jnp.asarray(g_uni)
    k_mm, k_uni, cos = mmpareto.pareto_weights(g_mm, g_uni)
    out = mmpareto.combine(g_mm, g_uni, g_mm + g_uni, k_mm, k_uni, gamma)
    return float(k_mm), float(k_uni), float(cos), np.asarray(out)


def test_conflicting_gradients_take_the_min_norm_weights_and_the_sum_norm():
    # g_mm = (1, 0), g_uni = (-1, 1): <g_mm,g_mm> = 1, <g_mm,g_uni> = -1, <g_uni,g_uni> = 2,
    # cos = -1/sqrt(2) < 0 -> min-norm weight of g_mm
    #   c = (2 - (-1)) / (1 + 2 - 2*(-1)) = 3/5 = 0.6, so k = (0.6, 0.4)
    #   (check: 0.6 g_mm + 0.4 g_uni = (0.2, 0.4) is orthogonal to g_mm - g_uni = (2, -1)).
    # new = 2*0.6*(1, 0) + 2*0.4*(-1, 1) = (0.4, 0.8), |new| = sqrt(0.8) = 0.894427
    # |g_mm + g_uni| = |(0, 1)| = 1 > |new| -> scaled by 1/0.894427 = 1.118034
    # grad = 1.5 * 1.118034 * (0.4, 0.8) = (0.670820, 1.341641)
    k_mm, k_uni, cos, out = _combined([1.0, 0.0], [-1.0, 1.0])
    assert cos == pytest.approx(-1 / math.sqrt(2), rel=1e-6)
    assert (k_mm, k_uni) == pytest.approx((0.6, 0.4), rel=1e-6)
    np.testing.assert_allclose(out, [0.670820, 1.341641], rtol=1e-5)


def test_agreeing_gradients_take_equal_weights():
    # g_mm = (3, 0), g_uni = (1, 1): <g_mm,g_uni> = 3 > 0 -> k = (0.5, 0.5),
    # new = (3, 0) + (1, 1) = (4, 1) = the sum, so no rescaling: grad = 1.5 * (4, 1).
    k_mm, k_uni, cos, out = _combined([3.0, 0.0], [1.0, 1.0])
    assert cos == pytest.approx(3 / (3 * math.sqrt(2)), rel=1e-6)
    assert (k_mm, k_uni) == (0.5, 0.5)
    np.testing.assert_allclose(out, [6.0, 1.5], rtol=1e-6)


def test_degenerate_cases_follow_the_reference_solver():
    # Exactly opposite: g_mm = (1, 0), g_uni = (-1, 0): cos = -1, c = (1 + 1) / (1 + 1 + 2)
    # = 0.5; new = (1, 0) + (-1, 0) = (0, 0) and the sum is (0, 0): a zero update (the
    # reference divides 0 by 0 here and gets NaN).
    k_mm, _, cos, out = _combined([1.0, 0.0], [-1.0, 0.0])
    assert cos == -1.0 and k_mm == 0.5
    np.testing.assert_array_equal(out, [0.0, 0.0])
    # Zero unimodal gradient: cos = 0 (not > 0), <g_mm,g_uni> = 0 >= <g_uni,g_uni> = 0
    # -> the solver's end point c = 0.001; new = 0.002 (1, 0), scaled up to |sum| = 1:
    # grad = 1.5 * (1, 0).
    k_mm, _, cos, out = _combined([1.0, 0.0], [0.0, 0.0])
    assert cos == 0.0 and k_mm == pytest.approx(0.001)
    np.testing.assert_allclose(out, [1.5, 0.0], rtol=1e-5)


def test_weights_come_from_the_whole_encoder_and_scaling_from_each_tensor():
    # Two tensors: cos is taken over their concatenation, the norm ratio per tensor.
    # g_mm = {x: (1, 0), y: (0)}, g_uni = {x: (0, 0), y: (2)}: <.,.> = 0 -> not > 0;
    # v1v1 = 1, v2v2 = 4, c = (4 - 0) / (1 + 4) = 0.8 -> k = (0.8, 0.2).
    # x: new = 1.6 (1, 0), |sum x| = 1 < 1.6 -> kept: 1.5 * (1.6, 0) = (2.4, 0)
    # y: new = 0.4 * 2 = 0.8, |sum y| = 2 -> scaled by 2.5: 1.5 * 2 = 3
    g_mm = {"x": jnp.array([1.0, 0.0]), "y": jnp.array([0.0])}
    g_uni = {"x": jnp.array([0.0, 0.0]), "y": jnp.array([2.0])}
    k_mm, k_uni, _ = mmpareto.pareto_weights(g_mm, g_uni)
    assert (float(k_mm), float(k_uni)) == pytest.approx((0.8, 0.2), rel=1e-6)
    g_sum = jax.tree.map(jnp.add, g_mm, g_uni)
    out = mmpareto.combine(g_mm, g_uni, g_sum, k_mm, k_uni, 1.5)
    np.testing.assert_allclose(out["x"], [2.4, 0.0], rtol=1e-6)
    np.testing.assert_allclose(out["y"], [3.0], rtol=1e-6)


@pytest.mark.slow
def test_mmpareto_trains_end_to_end_and_one_and_four_devices_agree(tiny_config, tmp_path):
    if jax.local_device_count() < 4:
        pytest.skip("needs 4 devices")
    config = tiny_config
    config.method = "mmpareto"
    runs = device_runs.train_on_device_counts(config, tmp_path)
    for r in runs[1]:
        t = r["train"]
        assert -1 <= t["cos_audio"] <= 1 and 0 < t["k_mm_audio"] < 1
        assert t["loss"] == pytest.approx(t["ce_fused"] + t["ce_audio"] + t["ce_visual"],
                                          rel=1e-5)
    device_runs.assert_runs_agree(runs[1], runs[4])


def _one_step(config):
    config.method = "mmpareto"
    config.num_devices = 1
    ds = open_dataset(config)
    method, _, state = build.build(config, ds)
    batch = next(iter(ds.train_batches(config.batch_size, 0, 0, 0)))
    batch = {k: jnp.asarray(v) for k, v in batch.items() if k != "id"}
    model = make_model(config, ds.meta, method)
    ctx = StepContext(model=model, axis_name=None, key=jax.random.key(0),
                      frames=augment.eval_frames(batch["frames"], config.data.image_size))
    after, _ = jax.jit(lambda s, b: method.update("mmpareto", s, b, {}, ctx))(state, batch)
    return state, after, batch, ctx


def test_separate_heads_each_train_on_their_own_loss_as_the_reference(tiny_config):
    # code/MMPareto.py backpropagates L_mm + L_a + L_v and skips every `head*` parameter
    # when combining: `head` (the fusion layer) gets dL_mm only, `head_audio` dL_a only,
    # `head_video` dL_v only. First step (zero momentum): p <- p - lr (g + wd p).
    state, after, batch, ctx = _one_step(tiny_config)
    assert set(state.params["head"]) == {"fused", "audio", "visual"}
    (phi_a, phi_v), _ = ctx.features(state, state.params, batch)
    phi_a, phi_v = jax.lax.stop_gradient(phi_a), jax.lax.stop_gradient(phi_v)

    def loss(head, which):
        logits = ctx.head(dict(state.params, head=head), phi_a, phi_v)
        return losses.cross_entropy(getattr(logits, which), batch["label"]).mean()

    head = state.params["head"]
    for layer in ("fused", "audio", "visual"):
        g = jax.grad(loss)(head, layer)
        # The layer's gradient comes from its own loss alone ...
        for other in {"fused", "audio", "visual"} - {layer}:
            assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(g[other]))
        for name in ("kernel", "bias"):
            p = head[layer][name]
            np.testing.assert_allclose(after.params["head"][layer][name],
                                       p - 0.05 * (g[layer][name] + 1e-4 * p),
                                       rtol=1e-4, atol=1e-7, err_msg=f"{layer}/{name}")


def test_split_heads_switch_keeps_the_fusion_layer_halves(tiny_config):
    # heads="split": one layer on [phi_a; phi_v] whose halves are the unimodal logits.
    tiny_config.mmpareto.heads = "split"
    state, after, _, _ = _one_step(tiny_config)
    assert set(state.params["head"]) == {"kernel", "bias"}
    assert not np.allclose(after.params["head"]["kernel"], state.params["head"]["kernel"])


def test_bad_heads_and_gamma_are_refused(tiny_config, tmp_path):
    from avgmm.errors import UserError

    tiny_config.method = "mmpareto"
    tiny_config.mmpareto.heads = "shared"
    with pytest.raises(UserError, match="mmpareto.heads"):
        train.train_and_evaluate(tiny_config, str(tmp_path / "a"))
    tiny_config.mmpareto.heads = "separate"
    tiny_config.mmpareto.gamma = float("nan")
    with pytest.raises(UserError, match="mmpareto.gamma"):
        train.train_and_evaluate(tiny_config, str(tmp_path / "b"))
