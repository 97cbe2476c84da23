"""MLA: entropy fusion weights, the head-gradient projector, the alternation inside one
train step, and a tiny end-to-end run."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import device_runs

from avgmm import build, losses, train
from avgmm.data import augment
from avgmm.methods import StepContext, mla
from avgmm.models import AVLogits
from avgmm.run_config import open_dataset
from avgmm.models import make_model


# ------------------------------------------------------------------ test-time fusion
def test_entropy_weights_favour_the_more_certain_modality_hand_worked():
    # Audio logits [0, 0]: p = [0.5, 0.5], entropy e_a = ln 2 = 0.693147.
    # Visual logits [ln 4, 0]: p = [0.8, 0.2],
    #   e_v = -(0.8 ln 0.8 + 0.2 ln 0.2) = 0.8 * 0.223144 + 0.2 * 1.609438 = 0.500402.
    # w_a = exp(-e_a) / (exp(-e_a) + exp(-e_v)) = 0.5 / (0.5 + 0.606287) = 0.451960,
    # w_v = 1 - w_a = 0.548040 (exp(e_max - e_m) normalized gives the same numbers).
    # Fused = w_a [0, 0] + w_v [ln 4, 0] = [0.548040 * 1.386294, 0] = [0.759749, 0].
    audio = jnp.array([[0.0, 0.0]])
    visual = jnp.array([[np.log(4.0), 0.0]])
    w_a, w_v = mla.entropy_weights(audio, visual)
    np.testing.assert_allclose(w_a, [0.451960], rtol=1e-5)
    np.testing.assert_allclose(w_v, [0.548040], rtol=1e-5)
    config = _config_stub("entropy")
    fused = mla.MLA(config).fused(AVLogits(fused=audio + visual, audio=audio, visual=visual))
    np.testing.assert_allclose(fused, [[0.759749, 0.0]], rtol=1e-5, atol=1e-7)


def test_entropy_weights_are_per_sample_and_fixed_fusion_averages():
    # Two samples with the certainty swapped: the weights swap with them (the authors'
    # code computed one pair of weights for the whole batch).
    audio = jnp.array([[0.0, 0.0], [np.log(4.0), 0.0]])
    visual = jnp.array([[np.log(4.0), 0.0], [0.0, 0.0]])
    w_a, w_v = mla.entropy_weights(audio, visual)
    np.testing.assert_allclose(w_a, [0.451960, 0.548040], rtol=1e-5)
    np.testing.assert_allclose(w_a + w_v, [1.0, 1.0], rtol=1e-6)
    # fixed, audio_weight 0.5: 0.5 * [0, 0] + 0.5 * [ln 4, 0] = [0.693147, 0].
    fused = mla.MLA(_config_stub("fixed")).fused(
        AVLogits(fused=audio + visual, audio=audio, visual=visual))
    np.testing.assert_allclose(fused[0], [0.693147, 0.0], rtol=1e-5, atol=1e-7)


def _config_stub(fusion):
    import ml_collections

    config = ml_collections.ConfigDict()
    config.mla = mla.MLA.defaults()
    config.mla.fusion = fusion
    return config


# ------------------------------------------------------------------ gradient projector
def test_projector_update_and_kernel_projection_hand_worked():
    # P = I (2 x 2), r = [1, 0], alpha = 1: k = P r = [1, 0], r.k = 1,
    # P - k k^T / (1 + 1) = [[0.5, 0], [0, 1]], ||.||_F = sqrt(1.25) = 1.118034,
    # P = [[0.447214, 0], [0, 0.894427]].
    p1 = mla.update_projector(jnp.eye(2), jnp.array([1.0, 0.0]), 1.0)
    np.testing.assert_allclose(p1, [[0.447214, 0.0], [0.0, 0.894427]], rtol=1e-5, atol=1e-7)
    # Kernel gradient G ([D, C] = [[1, 2], [3, 4]]) -> P G: the direction already seen
    # (feature 0) is shrunk twice as much as the unseen one.
    # Row 0: 0.447214 * [1, 2] = [0.447214, 0.894427]; row 1: 0.894427 * [3, 4]
    # = [2.683282, 3.577709].
    g = mla.project_kernel_grad(p1, jnp.array([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_allclose(g, [[0.447214, 0.894427], [2.683282, 3.577709]], rtol=1e-5)
    # The other modality's mean feature r = [0, 1], alpha = 0.1: k = [0, 0.894427],
    # r.k = 0.894427, k k^T = [[0, 0], [0, 0.8]], / (0.1 + 0.894427) -> 0.804483;
    # P = [[0.447214, 0], [0, 0.089944]], ||.||_F = sqrt(0.2 + 0.00809) = 0.456169,
    # P = [[0.980369, 0], [0, 0.197172]].
    p2 = mla.update_projector(p1, jnp.array([0.0, 1.0]), 0.1)
    np.testing.assert_allclose(p2, [[0.980369, 0.0], [0.0, 0.197172]], rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ the alternation
@pytest.fixture
def mla_setup(tiny_config):
    """`setup(**mla_settings)`: the method, a fresh state, a batch and a step context."""
    def setup(**settings):
        tiny_config.method = "mla"
        tiny_config.num_devices = 1
        tiny_config.mla.update(settings)
        ds = open_dataset(tiny_config)
        method, _, state = build.build(tiny_config, ds)
        batch = next(iter(ds.train_batches(tiny_config.batch_size, 0, 0, 0)))
        batch = {k: jnp.asarray(v) for k, v in batch.items() if k != "id"}
        model = make_model(tiny_config, ds.meta, method)
        ctx = StepContext(model=model, axis_name=None, key=jax.random.key(0),
                          frames=augment.eval_frames(batch["frames"],
                                                     tiny_config.data.image_size))
        return method, state, batch, ctx

    return setup


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(b)))


def _momentum(state):
    return state.opt_state.inner_state[1][0].trace


def _variant(method, **settings):
    """The same method with other `config.mla` settings (same model, state layout)."""
    config = method.config.copy_and_resolve_references()
    config.mla.update(settings)
    return mla.MLA(config)


def _substeps(method, ctx):
    return {m: jax.jit(lambda s, b, m=m: method.substep(m, s, b, ctx)[0])
            for m in mla.MODALITIES}


def test_audio_substep_moves_only_the_audio_encoder_and_head(mla_setup):
    method, state, batch, ctx = mla_setup()
    update = jax.jit(lambda s, b: method.update("mla", s, b, {}, ctx))
    # One full step first, so every momentum buffer is non-zero.
    state, terms = update(state, batch)
    assert int(state.step) == 1 and int(state.opt_state.count) == 1
    assert int(state.method_state.substeps) == 2
    after = _substeps(method, ctx)["audio"](state, batch)
    assert not _same(state.params["audio_encoder"], after.params["audio_encoder"])
    assert not _same(state.params["head"], after.params["head"])
    # The visual encoder (not trained yet in this batch: its gradient is None in the
    # authors' loop), its BatchNorm statistics and its momentum are untouched; the
    # optimizer's step count (the schedule) waits for the visual sub-step.
    assert _same(state.params["visual_encoder"], after.params["visual_encoder"])
    assert _same(state.batch_stats["visual_encoder"], after.batch_stats["visual_encoder"])
    assert _same(_momentum(state)["visual_encoder"], _momentum(after)["visual_encoder"])
    assert not _same(_momentum(state)["audio_encoder"], _momentum(after)["audio_encoder"])
    assert int(after.opt_state.count) == 1 and int(after.step) == 1


def test_visual_substep_steps_the_audio_encoder_on_a_zero_gradient_as_torch_1_8(mla_setup):
    # The authors pin torch 1.8.1: zero_grad() after the audio sub-step zeroes the audio
    # encoder's gradient in place (set_to_none=False), and SGD steps every parameter whose
    # gradient is not None: d = 0 + wd p, buf <- 0.9 buf + d, p <- p - lr buf
    # (e.g. p = 1, buf = 0.5, lr = 0.1, wd = 0.01: buf = 0.46, p = 0.954).
    method, state, batch, ctx = mla_setup()
    state, _ = jax.jit(lambda s, b: method.update("mla", s, b, {}, ctx))(state, batch)
    after = _substeps(method, ctx)["visual"](state, batch)
    lr, mu, wd = 0.05, 0.9, 1e-4  # configs/tiny.py and the default optimizer
    for p, buf, p_new, buf_new in zip(_leaves(state.params["audio_encoder"]),
                                      _leaves(_momentum(state)["audio_encoder"]),
                                      _leaves(after.params["audio_encoder"]),
                                      _leaves(_momentum(after)["audio_encoder"])):
        expected_buf = mu * buf + wd * p
        np.testing.assert_allclose(buf_new, expected_buf, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(p_new, p - lr * expected_buf, rtol=1e-5, atol=1e-9)
    assert not _same(state.params["audio_encoder"], after.params["audio_encoder"])
    # Its BatchNorm statistics do not move (no forward pass of it in this sub-step).
    assert _same(state.batch_stats["audio_encoder"], after.batch_stats["audio_encoder"])
    # Switched off (PyTorch >= 2.0's set_to_none=True): the audio encoder stays put.
    after = _substeps(_variant(method, idle_encoder_steps=False), ctx)["visual"](state, batch)
    assert _same(state.params["audio_encoder"], after.params["audio_encoder"])
    assert _same(_momentum(state)["audio_encoder"], _momentum(after)["audio_encoder"])
    assert not _same(state.params["visual_encoder"], after.params["visual_encoder"])


def test_default_head_gradient_is_not_projected_as_in_the_released_code(mla_setup):
    # GSPlugin.before_update tests `n == "module.weight"` on fc_out.named_parameters()
    # (names "weight", "bias"): never true, so the released code steps the head on its
    # plain gradient. The visual sub-step after the audio one (the first one GSPlugin
    # would have projected) must give p - lr (0.9 buf + g + wd p) with g the plain
    # gradient of CE(h(phi_v)).
    method, state, batch, ctx = mla_setup()
    sub = _substeps(method, ctx)
    first = sub["audio"](state, batch)
    after = sub["visual"](first, batch)

    def head_loss(kernel):
        (_, phi_v), _ = ctx.features(first, first.params, batch)
        head = dict(first.params["head"], dense=dict(first.params["head"]["dense"],
                                                     kernel=kernel))
        out = ctx.head(dict(first.params, head=head), phi_v, phi_v).audio
        return losses.cross_entropy(out, batch["label"]).mean()

    p = first.params["head"]["dense"]["kernel"]
    g = jax.grad(head_loss)(p)
    buf = _momentum(first)["head"]["dense"]["kernel"]
    expected = p - 0.05 * (0.9 * buf + g + 1e-4 * p)
    np.testing.assert_allclose(after.params["head"]["dense"]["kernel"], expected,
                               rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(after.method_state.projector,
                                  np.eye(after.method_state.projector.shape[0]))
    # With the paper's projection the same sub-step gives another head.
    sub = _substeps(_variant(method, gradient_projection=True), ctx)
    projected = sub["visual"](sub["audio"](state, batch), batch)
    assert not np.allclose(projected.params["head"]["dense"]["kernel"], expected,
                           rtol=1e-4, atol=1e-7)


def test_update_is_audio_then_visual_and_counts_one_step(mla_setup):
    method, state, batch, ctx = mla_setup(gradient_projection=True)
    update = jax.jit(lambda s, b: method.update("mla", s, b, {}, ctx))
    sub = _substeps(method, ctx)
    # The very first sub-step leaves the projector at I (GSPlugin's exp_count == 0).
    first = sub["audio"](state, batch)
    np.testing.assert_array_equal(first.method_state.projector,
                                  np.eye(first.method_state.projector.shape[0]))
    after, terms = update(state, batch)
    manual = sub["visual"](first, batch)
    reversed_ = sub["audio"](sub["visual"](state, batch), batch)
    np.testing.assert_allclose(after.params["head"]["dense"]["kernel"],
                               manual.params["head"]["dense"]["kernel"], rtol=1e-6)
    assert not np.allclose(after.params["head"]["dense"]["kernel"],
                           reversed_.params["head"]["dense"]["kernel"], rtol=1e-6, atol=0)
    # The second sub-step updated the projector: normalized to Frobenius norm 1.
    np.testing.assert_allclose(np.linalg.norm(after.method_state.projector), 1.0, rtol=1e-5)
    assert int(after.step) == int(state.step) + 1
    assert 0.0 < float(terms["fusion_weight_audio"]) < 1.0
    assert float(terms["projection_alpha_visual"]) == pytest.approx(0.1)  # 0.1 ** (0/n + 1)


# ------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_tiny_mla_run_trains_and_writes_results(tiny_config, tmp_path):
    tiny_config.method = "mla"
    workdir = str(tmp_path / "mla")
    results = train.train_and_evaluate(tiny_config, workdir)
    for k in ("test_accuracy", "test_accuracy_audio", "test_accuracy_visual"):
        assert 0.0 <= results[k] <= 1.0, k
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    assert [r["phase"] for r in records] == ["mla"] * 3
    for r in records:
        assert np.isfinite(r["train"]["loss"])
        assert 0.0 < r["train"]["fusion_weight_audio"] < 1.0
    device_runs.analyze_run(workdir)


@pytest.mark.slow
def test_one_and_four_devices_agree(tiny_config, tmp_path):
    # The projector's mean feature and the gradients are batch-wide (pmean): the same
    # run on 1 and on 4 devices gives the same losses and accuracies.
    tiny_config.method = "mla"
    tiny_config.epochs = 1
    records = {}
    for n in (1, 4):
        tiny_config.num_devices = n
        workdir = str(tmp_path / f"d{n}")
        train.train_and_evaluate(tiny_config, workdir)
        with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
            records[n] = [json.loads(line) for line in f]
    for one, four in zip(records[1], records[4]):
        for k in ("loss", "ce_audio", "ce_visual", "fusion_weight_audio"):
            np.testing.assert_allclose(four["train"][k], one["train"][k], rtol=2e-4, err_msg=k)
        assert four["val"]["accuracy"] == pytest.approx(one["val"]["accuracy"], abs=1e-6)
