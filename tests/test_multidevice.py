"""Multi-device behaviour on forced CPU devices (see conftest.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import freeze

from avgmm import gmm as gmm_lib
from avgmm import losses
from avgmm.models import AVClassifier

pytestmark = pytest.mark.skipif(jax.local_device_count() < 4, reason="needs 4 devices")


def test_gmm_fit_on_all_gathered_gaps_inside_pmap_matches_one_device():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.05, 1500), rng.normal(0.5, 0.1, 500)])
    x = rng.permutation(x).astype(np.float32)
    n_dev = 4
    shards = x.reshape(n_dev, -1)

    def fit_on_device(local):
        gathered = jax.lax.all_gather(local, "batch").reshape(-1)
        return gmm_lib.fit_gmm(gathered)

    per_device = jax.pmap(fit_on_device, axis_name="batch")(shards)
    single = gmm_lib.fit_gmm(x)
    for k in range(n_dev):
        for leaf_pd, leaf_1 in zip(jax.tree.leaves(per_device), jax.tree.leaves(single)):
            np.testing.assert_allclose(np.asarray(leaf_pd)[k], np.asarray(leaf_1),
                                       rtol=1e-5, atol=1e-6)


def test_synced_batchnorm_and_pmean_loss_match_one_device():
    """A pmapped forward pass with synced BatchNorm equals the whole-batch forward pass."""
    model = AVClassifier(num_classes=4, width=4, stage_sizes=(1, 1))
    synced = AVClassifier(num_classes=4, width=4, stage_sizes=(1, 1), axis_name="batch")
    audio = jax.random.normal(jax.random.key(0), (8, 16, 16))
    frames = jax.random.normal(jax.random.key(1), (8, 1, 16, 16, 3))
    labels = jnp.arange(8) % 4
    variables = model.init(jax.random.key(2), audio, frames)

    def loss_and_stats(m, v, a, f, y):
        out, new = m.apply(v, a, f, train=True, mutable=["batch_stats"])
        return losses.warmup_loss(out.fused, out.audio, out.visual, y)[0], new["batch_stats"]

    loss_1, stats_1 = loss_and_stats(model, variables, audio, frames, labels)

    def per_device(v, a, f, y):
        loss, stats = loss_and_stats(synced, v, a, f, y)
        return jax.lax.pmean(loss, "batch"), stats

    shard = lambda t: t.reshape((4, -1) + t.shape[1:])  # noqa: E731
    replicated = jax.tree.map(lambda t: jnp.stack([t] * 4), freeze(variables))
    loss_4, stats_4 = jax.pmap(per_device, axis_name="batch")(
        replicated, shard(audio), shard(frames), shard(labels))
    np.testing.assert_allclose(loss_4, np.full(4, loss_1), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(stats_1), jax.tree.leaves(stats_4)):
        np.testing.assert_allclose(np.asarray(b)[0], np.asarray(a), rtol=1e-4, atol=1e-5)
