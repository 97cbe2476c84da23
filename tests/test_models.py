"""Shapes, fusion identity and parameter counts of the two-stream model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avgmm.models import AVClassifier, ResNetTrunk


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("num_frames", [1, 3])
def test_output_shapes_and_fusion_identity(num_frames):
    model = AVClassifier(num_classes=5, width=4, stage_sizes=(1, 1))
    audio = jax.random.normal(jax.random.key(0), (3, 24, 20))
    frames = jax.random.normal(jax.random.key(1), (3, num_frames, 16, 16, 3))
    variables = model.init(jax.random.key(2), audio, frames, train=False)
    out, mutated = model.apply(variables, audio, frames, train=True, mutable=["batch_stats"])
    for logits in (out.fused, out.audio, out.visual):
        assert logits.shape == (3, 5)
    # f = l_a + l_v exactly up to float rounding.
    np.testing.assert_allclose(out.fused, out.audio + out.visual, rtol=1e-6, atol=1e-6)
    assert set(mutated["batch_stats"]) == {"audio_encoder", "visual_encoder"}
    # The unimodal logits are slices of one dense layer with a shared, halved bias.
    head = variables["params"]["head"]
    assert head["kernel"].shape == (2 * 4 * 2, 5) and head["bias"].shape == (5,)
    out_eval = model.apply(variables, audio[..., None], frames, train=False)
    np.testing.assert_allclose(out_eval.fused, out_eval.audio + out_eval.visual, atol=1e-6)


def test_visual_features_average_over_frames():
    """Repeating the same frame Tv times must give the same logits as one frame."""
    model = AVClassifier(num_classes=3, width=4, stage_sizes=(1, 1))
    audio = jax.random.normal(jax.random.key(0), (2, 16, 16))
    one = jax.random.normal(jax.random.key(1), (2, 1, 16, 16, 3))
    variables = model.init(jax.random.key(2), audio, one)
    a = model.apply(variables, audio, one)
    b = model.apply(variables, audio, jnp.repeat(one, 3, axis=1))
    np.testing.assert_allclose(a.visual, b.visual, rtol=1e-5, atol=1e-5)
    # ... and the audio logits do not depend on the frames at all.
    c = model.apply(variables, audio, jnp.flip(one, axis=2))
    np.testing.assert_allclose(a.audio, c.audio, rtol=1e-6)
    assert not np.allclose(a.visual, c.visual)


def test_resnet18_parameter_count_matches_torchvision_trunk():
    # torchvision resnet18: 11,689,512 parameters, minus the 512x1000 classifier (513,000).
    rgb = jax.eval_shape(lambda: ResNetTrunk().init(
        jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
    assert _count(rgb["params"]) == 11_176_512
    # The audio stem takes one channel instead of three: 64 * 7 * 7 * 2 fewer weights.
    full = jax.eval_shape(lambda: AVClassifier(num_classes=6).init(
        jax.random.key(0), jnp.zeros((1, 64, 64)), jnp.zeros((1, 1, 64, 64, 3))))
    params = full["params"]
    assert _count(params["audio_encoder"]) == 11_176_512 - 64 * 49 * 2
    assert _count(params["visual_encoder"]) == 11_176_512
    assert _count(params["head"]) == 1024 * 6 + 6


def test_bad_input_shapes_are_named():
    model = AVClassifier(num_classes=3, width=4, stage_sizes=(1,))
    with pytest.raises(ValueError, match=r"frames must be \[B, Tv, H, W, 3\]"):
        model.init(jax.random.key(0), jnp.zeros((1, 8, 8)), jnp.zeros((1, 8, 8, 3)))


def test_shared_head_applies_one_layer_to_each_modality():
    model = AVClassifier(num_classes=3, width=4, stage_sizes=(1, 1), head_type="shared")
    audio = jax.random.normal(jax.random.key(0), (2, 16, 16))
    frames = jax.random.normal(jax.random.key(1), (2, 1, 16, 16, 3))
    variables = model.init(jax.random.key(2), audio, frames)
    dense = variables["params"]["head"]["dense"]
    assert dense["kernel"].shape == (8, 3)  # one feature width, not the concatenation
    phi_a, phi_v = model.apply(variables, audio, frames, False, method=model.features)
    out = model.apply(variables, audio, frames)
    np.testing.assert_allclose(out.audio, phi_a @ dense["kernel"] + dense["bias"], atol=1e-5)
    np.testing.assert_allclose(out.visual, phi_v @ dense["kernel"] + dense["bias"], atol=1e-5)
    np.testing.assert_allclose(out.fused, out.audio + out.visual, atol=1e-6)


def test_separate_heads_are_the_fusion_layer_and_two_unimodal_layers():
    # MMPareto's reference model: head = Linear(2D, C) on [a; v], head_audio = Linear(D, C)
    # on a, head_video = Linear(D, C) on v - three layers, so fused != audio + visual.
    model = AVClassifier(num_classes=3, width=4, stage_sizes=(1, 1), head_type="separate")
    audio = jax.random.normal(jax.random.key(0), (2, 16, 16))
    frames = jax.random.normal(jax.random.key(1), (2, 1, 16, 16, 3))
    variables = model.init(jax.random.key(2), audio, frames)
    head = variables["params"]["head"]
    assert head["fused"]["kernel"].shape == (16, 3)
    assert head["audio"]["kernel"].shape == head["visual"]["kernel"].shape == (8, 3)
    assert _count(head) == 16 * 3 + 3 + 2 * (8 * 3 + 3)
    phi_a, phi_v = model.apply(variables, audio, frames, False, method=model.features)
    out = model.apply(variables, audio, frames)
    dense = lambda x, p: x @ p["kernel"] + p["bias"]  # noqa: E731
    np.testing.assert_allclose(out.fused, dense(jnp.concatenate([phi_a, phi_v], -1),
                                                head["fused"]), atol=1e-5)
    np.testing.assert_allclose(out.audio, dense(phi_a, head["audio"]), atol=1e-5)
    np.testing.assert_allclose(out.visual, dense(phi_v, head["visual"]), atol=1e-5)
    assert not np.allclose(out.fused, out.audio + out.visual, atol=1e-3)
