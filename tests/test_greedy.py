"""Greedy: conditional learning speeds, the re-balancing schedule and the MMTM gates
against hand-worked numbers, the MMTM model, and a tiny end-to-end run on 1 and 4
devices."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import device_runs
from avgmm import train
from avgmm.data import pipeline
from avgmm.errors import UserError
from avgmm.methods import greedy
from avgmm.models import ResNetTrunk, mmtm


def _tree(audio_enc, visual_enc, head_a, head_v, squeeze, fc_a, fc_v):
    return {"audio_encoder": {"w": jnp.array(audio_enc)},
            "visual_encoder": {"w": jnp.array(visual_enc)},
            "head": {"audio": {"kernel": jnp.array(head_a)},
                     "visual": {"kernel": jnp.array(head_v)}},
            "mmtm_0": {"fc_squeeze": {"kernel": jnp.array(squeeze)},
                       "fc_audio": {"kernel": jnp.array(fc_a)},
                       "fc_visual": {"kernel": jnp.array(fc_v)}}}


def test_group_speeds_and_their_difference():
    params = _tree([3.0, 4.0], [1.0, 0.0], [0.0, 2.0], [2.0, 0.0], [1.0, 1.0], [1.0], [2.0])
    grads = _tree([0.3, 0.4], [0.1, 0.0], [0.0, 0.0], [0.0, 0.2], [0.1, 0.1], [0.5], [0.2])
    # main audio (audio encoder + audio head): (0.09 + 0.16 + 0) / (25 + 4) = 0.00862069
    # main visual: (0.01 + 0.04) / (1 + 4) = 0.01
    # bypass audio (fc_squeeze + fc_audio): (0.02 + 0.25) / (2 + 1) = 0.09
    # bypass visual (fc_squeeze + fc_visual): (0.02 + 0.04) / (2 + 4) = 0.01
    speeds = greedy.group_speeds(grads, params)
    np.testing.assert_allclose(speeds, [0.00862069, 0.01, 0.09, 0.01], rtol=1e-5)
    # d = log10(0.09 / 0.00862069) - log10(0.01 / 0.01) = log10(10.44) = 1.018700
    assert float(greedy.speed_difference(speeds)) == pytest.approx(1.018700, rel=1e-5)
    # No gradient yet on a group: 0, not NaN.
    assert float(greedy.speed_difference(jnp.zeros(4))) == 0.0


def test_rebalancing_schedule_follows_the_reference_callback():
    state = greedy.Greedy(None).init_state(None)
    state = jax.tree.map(jnp.asarray, state)
    step = lambda s, speeds, unlocked: greedy.advance(  # noqa: E731
        s, jnp.array(speeds, jnp.float32), jnp.float32(unlocked), threshold=0.5, window=2)
    # Locked: sums (1, 1, 10, 1), d = log10(10) - log10(1) = 1 > 0.5 but no re-balancing.
    state = step(state, [1, 1, 10, 1], 0)
    assert float(state.d_speed) == pytest.approx(1.0) and not bool(state.rebalancing)
    # Unlocked: sums (2, 2, 10, 2), d = log10(5) = 0.698970 > 0.5: audio leans on its
    # bypass -> the next steps re-balance audio.
    state = step(state, [1, 1, 0, 1], 1)
    assert float(state.d_speed) == pytest.approx(0.698970, rel=1e-5)
    assert bool(state.rebalancing) and int(state.caring) == mmtm.AUDIO
    # Two re-balancing steps (window 2): the sums pause (the speeds are ignored).
    state = step(state, [100, 100, 100, 100], 1)
    assert bool(state.rebalancing)
    state = step(state, [100, 100, 100, 100], 1)
    assert not bool(state.rebalancing)
    np.testing.assert_allclose(state.sums, [2, 2, 10, 2])
    # Measuring again: sums (2, 2, 10, 20), d = log10(5) - log10(10) = -0.301030: below.
    state = step(state, [0, 0, 0, 18], 1)
    assert float(state.d_speed) == pytest.approx(-0.301030, rel=1e-5)
    assert not bool(state.rebalancing)
    # Sums (2, 2, 10, 100): d = log10(5) - log10(50) = -1 -> visual.
    state = step(state, [0, 0, 0, 80], 1)
    assert bool(state.rebalancing) and int(state.caring) == mmtm.VISUAL


def _mmtm_params():
    # Two channels per stream, hidden int(2 * 4 / 4) = 2. fc_squeeze passes the audio
    # channel means through (the visual ones are ignored); fc_audio = identity with bias
    # (0, ln 3); fc_visual = identity.
    squeeze = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    eye = jnp.eye(2)
    return {"fc_squeeze": {"kernel": squeeze, "bias": jnp.zeros(2)},
            "fc_audio": {"kernel": eye, "bias": jnp.array([0.0, math.log(3.0)])},
            "fc_visual": {"kernel": eye, "bias": jnp.zeros(2)}}


def test_mmtm_gates_running_means_and_rebalancing_step():
    module = mmtm.MMTM(ratio=4)
    # Audio [B=1, H=1, W=2, C=2]: channel means (2, -3). Visual: one clip of two frames.
    x_a = jnp.array([[[[1.0, -2.0], [3.0, -4.0]]]])
    x_v = jnp.array([[[[1.0, 1.0]]], [[[3.0, 5.0]]]])
    variables = module.init(jax.random.key(0), x_a, x_v, 1, False, mmtm.NONE)
    variables = {"params": _mmtm_params(), "batch_stats": variables["batch_stats"]}
    (out_a, out_v), mutated = module.apply(variables, x_a, x_v, 1, True, mmtm.NONE,
                                           mutable=["batch_stats"])
    # hidden = relu((2, -3)) = (2, 0); gate_a = sigmoid((2, ln 3)) = (0.880797, 0.75);
    # gate_v = sigmoid((2, 0)) = (0.880797, 0.5), shared by both frames.
    np.testing.assert_allclose(out_a, [[[[0.880797, -1.5], [2.642391, -3.0]]]], rtol=1e-5)
    np.testing.assert_allclose(out_v, [[[[0.880797, 0.5]]], [[[2.642391, 2.5]]]], rtol=1e-5)
    stats = mutated["batch_stats"]
    np.testing.assert_allclose(stats["avg_audio"], [0.880797, 0.75], rtol=1e-5)
    assert float(stats["count"]) == 1.0
    # A re-balancing step for audio on audio channel means (0, 0): gate_a would be
    # sigmoid((0, ln 3)) = (0.5, 0.75); the running mean becomes ((0.5, 0.75) + (0.880797,
    # 0.75)) / 2 = (0.690399, 0.75), and that is what gates the audio stream.
    x_a2 = jnp.array([[[[1.0, 2.0], [-1.0, -2.0]]]])
    variables = {"params": _mmtm_params(), "batch_stats": stats}
    (out_a, out_v), mutated = module.apply(variables, x_a2, x_v, 1, True, mmtm.AUDIO,
                                           mutable=["batch_stats"])
    np.testing.assert_allclose(out_a, [[[[0.690399, 1.5], [-0.690399, -1.5]]]], rtol=1e-5)
    np.testing.assert_allclose(out_v, [[[[0.5, 0.5]]], [[[1.5, 2.5]]]], rtol=1e-5)
    # The audio stream then gets nothing through the MMTM: no gradient reaches fc_audio.
    grads = jax.grad(lambda p: module.apply({"params": p, "batch_stats": stats}, x_a2, x_v,
                                            1, True, mmtm.AUDIO, mutable=["batch_stats"])
                     [0][0].sum())(_mmtm_params())
    assert not np.any(np.asarray(grads["fc_audio"]["kernel"]))
    # Inference mode leaves the running means alone.
    _, mutated = module.apply({"params": _mmtm_params(), "batch_stats": stats}, x_a2, x_v,
                              1, False, mmtm.NONE, mutable=["batch_stats"])
    assert float(mutated["batch_stats"]["count"]) == 1.0


def test_mmtm_model_keeps_the_resnet_trunks_and_averages_the_two_classifiers():
    model = mmtm.MMTMClassifier(num_classes=3, width=4, stage_sizes=(1, 1, 1))
    audio, frames = jnp.ones((2, 20, 24)), jnp.ones((2, 2, 16, 16, 3))
    variables = model.init(jax.random.key(0), audio, frames)
    size = lambda tree: sum(x.size for x in jax.tree.leaves(tree))  # noqa: E731
    trunk = ResNetTrunk(stage_sizes=(1, 1, 1), width=4).init(
        jax.random.key(0), jnp.ones((1, 20, 24, 1)), False)
    assert size(variables["params"]["audio_encoder"]) == size(trunk["params"])
    # An MMTM after stages 2 and 3 (widths 8 and 16): squeeze (2 (8 + 8) / 4 = 8 wide) and
    # two excitations.
    assert sorted(k for k in variables["params"] if k.startswith("mmtm")) == ["mmtm_0",
                                                                               "mmtm_1"]
    assert variables["params"]["mmtm_1"]["fc_squeeze"]["kernel"].shape == (32, 16)
    logits = model.apply(variables, audio, frames)
    np.testing.assert_allclose(logits.fused, 0.5 * (logits.audio + logits.visual), rtol=1e-6)


def test_bad_settings_are_refused(tiny_config, tmp_path):
    tiny_config.method = "greedy"
    tiny_config.greedy.threshold = float("nan")
    with pytest.raises(UserError, match="greedy.threshold"):
        train.train_and_evaluate(tiny_config, str(tmp_path / "bad"))
    tiny_config.greedy.threshold = 0.01
    tiny_config.model.stage_sizes = (1,)
    with pytest.raises(UserError, match="model.stage_sizes"):
        train.train_and_evaluate(tiny_config, str(tmp_path / "bad2"))


@pytest.mark.slow
def test_greedy_trains_end_to_end_and_one_and_four_devices_agree(tiny_config, tmp_path):
    if jax.local_device_count() < 4:
        pytest.skip("needs 4 devices")
    config = tiny_config
    config.method = "greedy"
    config.epochs = 2  # the first only measures
    config.greedy.threshold = 0.0  # every measuring step (|d| > 0) starts a re-balancing
    config.greedy.window = 2
    runs = device_runs.train_on_device_counts(config, tmp_path)
    records = runs[1]
    assert [r["rebalancing_allowed"] for r in records] == [False, True]
    assert records[0]["train"]["rebalancing"] == 0
    # In the second epoch, steps 1, 4, 7, ... measure and steps 2-3, 5-6, ... re-balance.
    ds = pipeline.load_dataset(config.data.name, config.data.data_dir, config.data.num_frames)
    n = ds.steps_per_epoch(config.batch_size)
    t = records[1]["train"]
    assert t["rebalancing"] == pytest.approx((n - math.ceil(n / 3)) / n)
    assert t["rebalancing_audio"] + t["rebalancing_visual"] == pytest.approx(t["rebalancing"])
    device_runs.assert_runs_agree(runs[1], runs[4])
