"""GMM-guided training (ours): each treatment on a hand-worked example, and tiny runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avgmm import losses, train
from avgmm.errors import UserError
from avgmm.methods import gmm_guided
from avgmm.models import AVLogits
from device_runs import assert_runs_agree, train_on_device_counts

LABELS = jnp.array([0, 1])


def _logits(reliability=None):
    return AVLogits(fused=jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.5]]),
                    audio=jnp.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.0]]),
                    visual=jnp.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]),
                    reliability=reliability)


def test_a_clean_sample_keeps_the_warmup_loss():
    logits = _logits()
    warm, _ = losses.warmup_loss(logits.fused, logits.audio, logits.visual, LABELS)
    for gap in (jnp.array([0.3, -0.2]), jnp.array([-0.5, 0.5])):
        loss, _ = gmm_guided.guided_loss(logits, LABELS, jnp.zeros(2), gap, weak_weight=0.0,
                                         uniform_weight=1.0, reliability_weight=1.0)
        np.testing.assert_allclose(loss, warm, rtol=1e-6)


def test_the_weaker_streams_cross_entropy_is_weighted_by_the_posterior():
    logits = _logits()
    ce = {m: np.asarray(losses.cross_entropy(getattr(logits, m), LABELS))
          for m in ("fused", "audio", "visual")}
    # Sample 0: visual weaker (g > 0), w = 1; sample 1: audio weaker (g < 0), w = 0.5.
    w, gap = jnp.array([1.0, 0.5]), jnp.array([0.4, -0.1])
    loss, terms = gmm_guided.guided_loss(logits, LABELS, w, gap, weak_weight=0.2,
                                         uniform_weight=0.0, reliability_weight=1.0)
    c0, c1 = 1 - 1.0 + 1.0 * 0.2, 1 - 0.5 + 0.5 * 0.2  # 0.2 and 0.6
    expected = ((ce["fused"][0] + ce["audio"][0] + c0 * ce["visual"][0])
                + (ce["fused"][1] + c1 * ce["audio"][1] + ce["visual"][1])) / 2
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(terms["weak_weight_mean"], (c0 + c1) / 2, rtol=1e-6)


def _train_visual_logits(weak_weight, uniform_weight, steps=300):
    """Gradient descent on free visual logits of a sample the GMM calls fully imbalanced
    with the visual stream weaker (its image is noise), everything else fixed."""
    base = _logits()

    def loss(visual):
        logits = base._replace(visual=visual, fused=base.audio + visual)
        return gmm_guided.guided_loss(logits, LABELS, jnp.ones(2), jnp.array([0.9, 0.9]),
                                      weak_weight=weak_weight, uniform_weight=uniform_weight,
                                      reliability_weight=0.0)[0]

    visual = jnp.array([[3.0, -1.0, 0.0], [0.5, 2.0, -2.0]])
    grad = jax.jit(jax.grad(loss))
    for _ in range(steps):
        visual = visual - 0.5 * grad(visual)
    return jax.nn.softmax(visual, axis=-1)


def test_an_all_noise_stream_ends_with_a_flat_vote_only_when_told_to_abstain():
    # Not taught (weak weight 0) and pulled toward uniform: the vote goes flat, except for
    # what the fused loss alone still asks of it.
    flat = _train_visual_logits(weak_weight=0.0, uniform_weight=5.0)
    taught = _train_visual_logits(weak_weight=1.0, uniform_weight=0.0)
    spread = lambda p: float((p.max(-1) - p.min(-1)).mean())  # noqa: E731
    assert spread(flat) < 0.25
    # The warm-up loss teaches the noise stream to vote for the label instead.
    assert spread(taught) > 0.8 and list(np.argmax(taught, -1)) == [0, 1]


def test_reliability_fusion_and_its_targets_hand_worked():
    rel = jnp.log(jnp.array([[0.5, 0.1, 0.4], [0.2, 0.8, 0.0001]]))
    logits = _logits(reliability=rel)
    fused = gmm_guided.reliability_fused(logits)
    p = np.array([[0.5, 0.1, 0.4], [0.2, 0.8, 0.0001]])
    p = p / p.sum(-1, keepdims=True)
    expected = ((1 - p[:, 1:2]) * np.asarray(logits.audio)
                + (1 - p[:, 2:3]) * np.asarray(logits.visual))
    np.testing.assert_allclose(fused, expected, rtol=1e-5)
    # Targets: sample 0 w = 0.8 with the visual stream weaker, sample 1 balanced.
    w, gap = jnp.array([0.8, 0.0]), jnp.array([0.5, -0.3])
    _, terms = gmm_guided.guided_loss(logits, LABELS, w, gap, weak_weight=1.0,
                                      uniform_weight=0.0, reliability_weight=1.0)
    targets = np.array([[0.2, 0.0, 0.8], [1.0, 0.0, 0.0]])
    expected = -(targets * np.log(p)).sum(-1).mean()
    np.testing.assert_allclose(terms["ce_reliability"], expected, rtol=1e-4)


def test_settings_are_validated(tiny_config):
    tiny_config.method = "gmm_guided"
    for field, value in (("weak_weight", -0.1), ("uniform_weight", float("nan")),
                         ("reliability_weight", float("inf"))):
        bad = tiny_config.copy_and_resolve_references()
        bad.gmm_guided[field] = value
        with pytest.raises(UserError, match=f"gmm_guided.{field}"):
            train.train_and_evaluate(bad, "/nonexistent/never/written")
    tiny_config.schedule.warmup_epochs = 3  # no epoch left for the guided phase
    with pytest.raises(UserError, match="schedule.warmup_epochs"):
        train.train_and_evaluate(tiny_config, "/nonexistent/never/written")


@pytest.mark.slow
def test_tiny_run_with_reliability_fusion_on_one_and_four_devices(tiny_config, tmp_path):
    if jax.local_device_count() < 4:
        pytest.skip("needs 4 devices (tests/conftest.py sets them)")
    tiny_config.method = "gmm_guided"
    tiny_config.gmm_guided.reliability_fusion = True
    tiny_config.gmm_guided.uniform_weight = 0.5
    runs = train_on_device_counts(tiny_config, tmp_path)
    records = runs[1]
    assert [r["phase"] for r in records] == ["warmup", "guided", "guided"]
    # A refit at the guided phase's start and after each step (epochs_per_step = 1).
    assert [r["gmm_fit"]["fit_index"] for r in records if "gmm_fit" in r] == [0, 1]
    assert "ce_reliability" in records[0]["train"] and "w_imb_mean" in records[1]["train"]
    assert_runs_agree(runs[1], runs[4])


def test_the_direction_posteriors_say_which_stream_is_not_taught():
    rng = np.random.default_rng(0)
    logits = AVLogits(*(jnp.asarray(rng.normal(size=(3, 4)), jnp.float32) for _ in range(3)))
    labels = jnp.array([0, 1, 2])
    ce = {m: losses.cross_entropy(getattr(logits, m), labels) for m in ("fused", "audio", "visual")}
    # Sample 0 audio-dominant (visual not taught), 1 visual-dominant, 2 balanced.
    w_a, w_v = jnp.array([1.0, 0.0, 0.0]), jnp.array([0.0, 1.0, 0.0])
    loss, terms = gmm_guided.directional_loss(logits, labels, w_a, w_v, weak_weight=0.0,
                                              uniform_weight=0.0, reliability_weight=1.0)
    expected = (ce["fused"] + jnp.array([1.0, 0.0, 1.0]) * ce["audio"]
                + jnp.array([0.0, 1.0, 1.0]) * ce["visual"]).mean()
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert float(terms["w_imb_mean"]) == pytest.approx(2 / 3)


def test_the_gap_sign_direction_is_the_guided_loss_bit_for_bit():
    rng = np.random.default_rng(1)
    logits = AVLogits(*(jnp.asarray(rng.normal(size=(6, 4)), jnp.float32) for _ in range(3)),
                      reliability=jnp.asarray(rng.normal(size=(6, 3)), jnp.float32))
    labels = jnp.array([0, 1, 2, 3, 0, 1])
    w = jnp.array([0.0, 0.3, 0.9, 1.0, 0.5, 0.2])
    gap = jnp.array([0.5, -0.2, 0.0, 0.7, -0.9, 0.1])
    kw = dict(weak_weight=0.2, uniform_weight=0.7, reliability_weight=1.3)
    loss, terms = gmm_guided.guided_loss(logits, labels, w, gap, **kw)
    visual_weak = gap > 0
    # The formula as written before directions existed: the weak stream from the gap's sign.
    c_weak = 1.0 - w + w * 0.2
    c_a, c_v = jnp.where(visual_weak, 1.0, c_weak), jnp.where(visual_weak, c_weak, 1.0)
    ce = {m: losses.cross_entropy(getattr(logits, m), labels) for m in ("fused", "audio", "visual")}
    weak = jnp.where(visual_weak[:, None], logits.visual, logits.audio)
    uniform = -jax.nn.log_softmax(weak, axis=-1).mean(axis=-1)
    targets = jnp.stack([1.0 - w, w * (~visual_weak), w * visual_weak], axis=-1)
    rel = -(targets * jax.nn.log_softmax(logits.reliability, axis=-1)).sum(-1)
    old = (ce["fused"] + c_a * ce["audio"] + c_v * ce["visual"] + 0.7 * w * uniform
           + 1.3 * rel).mean()
    assert float(loss) == float(old)
    assert float(terms["weak_weight_mean"]) == float(jnp.where(visual_weak, c_v, c_a).mean())
