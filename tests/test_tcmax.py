"""TCMax: the factorized loss against the authors' explicit B x B x C grid and a
hand-worked value, the same loss and gradient on 1 and 4 devices, and a tiny run."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import device_runs
from avgmm.methods import tcmax


def _grid_loss(audio, visual, labels):
    """The authors' TCMax_loss, literally: the full grid in float64 numpy."""
    b = audio.shape[0]
    grid = audio[:, None, :] + visual[None, :, :]  # [j, k, c]
    p = np.exp(grid - grid.mean())
    p = p / p.sum()
    i = np.arange(b)
    loss = -np.log(p[i, i, labels]).mean() - math.log(b)
    loss_a = -np.log(p.sum(axis=1)[i, labels]).mean() - math.log(b)
    loss_v = -np.log(p.sum(axis=0)[i, labels]).mean() - math.log(b)
    return loss, loss_a, loss_v


def test_zero_logits_give_log_of_batch_times_classes():
    # Every grid entry equal: P = 1 / (B^2 C), loss = log(B^2 C) - log B = log(B C);
    # B = 2, C = 3: log 6 = 1.791759. The unimodal terms: sum_k P = B / (B^2 C) = 1 / (B C),
    # -log(1 / (B C)) - log B = log C = log 3 = 1.098612, a uniform cross entropy.
    loss, terms = tcmax.tcmax_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.asarray([0, 2]))
    assert float(loss) == pytest.approx(math.log(6), rel=1e-6)
    assert float(terms["tc_loss_audio"]) == pytest.approx(math.log(3), rel=1e-6)
    assert float(terms["log_z"]) == pytest.approx(math.log(12), rel=1e-6)


def test_factorized_loss_equals_the_full_grid():
    rng = np.random.RandomState(0)
    audio, visual = rng.randn(6, 4) * 3, rng.randn(6, 4) * 3
    labels = rng.randint(0, 4, size=6)
    loss, terms = tcmax.tcmax_loss(jnp.asarray(audio, jnp.float32),
                                   jnp.asarray(visual, jnp.float32), jnp.asarray(labels))
    want = _grid_loss(audio, visual, labels)
    np.testing.assert_allclose([float(loss), float(terms["tc_loss_audio"]),
                                float(terms["tc_loss_visual"])], want, rtol=1e-5)


def test_large_logits_stay_finite():
    audio = jnp.asarray([[500.0, -500.0], [-500.0, 500.0]])
    loss, _ = tcmax.tcmax_loss(audio, audio, jnp.asarray([0, 1]))
    grad = jax.grad(lambda a: tcmax.tcmax_loss(a, a, jnp.asarray([0, 1]))[0])(audio)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(grad)))


def test_four_devices_compute_the_global_batchs_loss_and_gradient():
    if jax.local_device_count() < 4:
        pytest.skip("needs 4 devices")
    rng = np.random.RandomState(1)
    audio = rng.randn(8, 3).astype(np.float32)
    visual = rng.randn(8, 3).astype(np.float32)
    labels = rng.randint(0, 3, size=8)

    def one(a, v):
        return tcmax.tcmax_loss(a, v, jnp.asarray(labels))[0]

    loss1 = float(one(audio, visual))
    g1 = jax.grad(one, argnums=(0, 1))(audio, visual)

    def shard_fn(a, v, y):
        def local(a, v):
            return tcmax.tcmax_loss(a, v, y, psum=lambda x: jax.lax.psum(x, "d"),
                                    pmax=lambda x: jax.lax.pmax(x, "d"))[0]
        return jax.lax.pmean(local(a, v), "d"), jax.grad(local, argnums=(0, 1))(a, v)

    split = lambda x: x.reshape((4, 2) + x.shape[1:])  # noqa: E731
    loss4, g4 = jax.pmap(shard_fn, axis_name="d")(split(audio), split(visual), split(labels))
    np.testing.assert_allclose(np.asarray(loss4), loss1, rtol=1e-6)
    # Each device's loss is its shard's mean; their mean is the global loss, so the
    # global gradient of a device's rows is its own gradient over the device count
    # (the normalizer's cotangents are summed back over the devices by psum).
    for got, want in zip(g4, g1):
        np.testing.assert_allclose(np.asarray(got).reshape(8, 3) / 4, np.asarray(want),
                                   rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_tcmax_trains_end_to_end_and_one_and_four_devices_agree(tiny_config, tmp_path):
    if jax.local_device_count() < 4:
        pytest.skip("needs 4 devices")
    config = tiny_config
    config.method = "tcmax"
    runs = device_runs.train_on_device_counts(config, tmp_path)
    first, last = runs[1][0]["train"], runs[1][-1]["train"]
    # 3 classes, global batch 16: the loss starts near log(16 * 3) = 3.87 and falls.
    assert 3.0 < first["loss"] < 5.0 and last["loss"] < first["loss"]
    device_runs.assert_runs_agree(runs[1], runs[4])
