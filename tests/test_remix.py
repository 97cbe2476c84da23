"""Data Remixing: the confidence rule and the losses on hand-worked numbers, the separate
heads, the loader's grouped (unimodal) batches, and a tiny run on 1 and 4 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import device_runs
from avgmm import build, methods, train
from avgmm.data import pipeline
from avgmm.errors import UserError
from avgmm.methods import remix
from avgmm.models import AVLogits, SeparateHeads


def test_kl_to_uniform_in_bits_with_the_authors_clip():
    # Uniform: 0. p = (0.75, 0.25) from logits (log 3, 0):
    #   0.75 log2(1.5) + 0.25 log2(0.5) = 0.75 * 0.5849625 - 0.25 = 0.1887219.
    # A one-hot 3-class prediction: log2(3) = 1.5849625 (the zeros clipped to 1e-9 add
    # 2e-9 log2(3e-9), about -5.6e-8).
    kl = remix.kl_to_uniform(jnp.asarray([[0.0, 0.0], [np.log(3.0), 0.0]]))
    np.testing.assert_allclose(np.asarray(kl), [0.0, 0.1887219], atol=1e-6)
    one_hot = remix.kl_to_uniform(jnp.asarray([[100.0, 0.0, 0.0]]))
    np.testing.assert_allclose(np.asarray(one_hot), [1.5849625], atol=1e-6)


def test_each_sample_goes_to_its_less_confident_modality():
    # Sample 1: audio uniform (KL 0) < visual peaked -> audio.
    # Sample 2: audio peaked > visual uniform -> visual. Sample 3: a tie -> visual.
    audio = jnp.asarray([[0.0, 0.0], [3.0, 0.0], [1.0, 0.0]])
    visual = jnp.asarray([[3.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    assert np.asarray(remix.assign_modality(audio, visual)).tolist() == [
        remix.AUDIO, remix.VISUAL, remix.VISUAL]


def test_warmup_and_remix_losses_on_a_hand_worked_batch():
    # Two classes, labels 0. CE(0, 0) = log 2 = 0.693147; CE(1, 0) = 0.313262;
    # CE(0, 1) = 1.313262; CE(2, 0) = log(1 + e^-2) = 0.126928.
    zeros, one, other, two = ([[0.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]], [[2.0, 0.0]])
    labels = jnp.asarray([0])
    logits = AVLogits(fused=jnp.asarray(zeros), audio=jnp.asarray(one),
                      visual=jnp.asarray(other))
    # Warm-up: 0.693147 + 0.5 * 0.313262 + 0.25 * 1.313262 = 1.178094
    loss, _ = remix.warmup_loss(logits, labels, 0.5, 0.25)
    assert float(loss) == pytest.approx(1.178094, rel=1e-6)
    # Remix, two samples: the first an audio sample (fused on (a, 0) = (1, 0), audio head
    # (2, 0)): 0.313262 + 2 * 0.126928 = 0.567118; the second a visual sample (fused on
    # (0, v) = (0, 1), visual head (0, 0)): 1.313262 + 0.5 * 0.693147 = 1.659836.
    labels = jnp.asarray([0, 0])
    audio_only = AVLogits(fused=jnp.asarray(one + one), audio=jnp.asarray(two + two),
                          visual=jnp.asarray(zeros + zeros))
    visual_only = AVLogits(fused=jnp.asarray(other + other), audio=jnp.asarray(two + two),
                           visual=jnp.asarray(zeros + zeros))
    modality = jnp.asarray([remix.AUDIO, remix.VISUAL])
    loss, terms = remix.remix_loss(audio_only, visual_only, labels, modality,
                                   gamma_audio=2.0, gamma_visual=0.5)
    assert float(loss) == pytest.approx((0.567118 + 1.659836) / 2, rel=1e-5)
    assert float(terms["loss_audio_samples"]) == pytest.approx(0.567118 / 2, rel=1e-5)
    assert float(terms["audio_fraction"]) == 0.5


def test_remix_loss_gives_no_gradient_to_the_modality_a_sample_does_not_train():
    labels = jnp.asarray([0, 1])
    modality = jnp.asarray([remix.AUDIO, remix.AUDIO])
    head = SeparateHeads(num_classes=2)
    phi_a, phi_v = jnp.ones((2, 3)), jnp.full((2, 3), 2.0)
    params = head.init(jax.random.key(0), phi_a, phi_v)

    def loss(phi_a, phi_v):
        a_only = head.apply(params, phi_a, jnp.zeros_like(phi_v))
        v_only = head.apply(params, jnp.zeros_like(phi_a), phi_v)
        return remix.remix_loss(a_only, v_only, labels, modality, 1.0, 1.0)[0]

    g_a, g_v = jax.grad(loss, argnums=(0, 1))(phi_a, phi_v)
    assert np.abs(np.asarray(g_a)).sum() > 0
    np.testing.assert_array_equal(np.asarray(g_v), 0.0)


def test_separate_heads_fuse_the_concatenation_and_keep_unimodal_layers():
    head = SeparateHeads(num_classes=2)
    phi_a, phi_v = jnp.asarray([[1.0, -1.0]]), jnp.asarray([[0.5, 2.0]])
    params = head.init(jax.random.key(1), phi_a, phi_v)
    params = jax.tree.map(lambda x: x + 0.1, params)
    p = jax.tree.map(np.asarray, params["params"])
    out = head.apply(params, phi_a, phi_v)
    w, b = p["fused"]["kernel"], p["fused"]["bias"]
    np.testing.assert_allclose(out.fused, np.concatenate([phi_a, phi_v], 1) @ w + b, rtol=1e-6)
    np.testing.assert_allclose(out.audio, phi_a @ p["audio"]["kernel"] + p["audio"]["bias"],
                               rtol=1e-6)
    np.testing.assert_allclose(out.visual, phi_v @ p["visual"]["kernel"] + p["visual"]["bias"],
                               rtol=1e-6)
    # The authors zero the other modality's features: the fused logits of (a, 0).
    a_only = head.apply(params, phi_a, jnp.zeros_like(phi_v))
    np.testing.assert_allclose(a_only.fused, phi_a @ w[:2] + b, rtol=1e-6)


def test_grouped_batches_draw_each_group_in_the_epochs_shuffled_order(tiny_data_dir):
    ds = pipeline.load_dataset("avsynth/tiny", tiny_data_dir, num_frames=1)
    n = ds.meta.num_examples["train"]  # 48: three batches of 16
    plain = np.concatenate([b["index"] for b in ds.train_batches(16, 3, seed=7, prefetch=0)])
    groups = (np.arange(n) % 3 == 0).astype(np.int32)  # 16 samples in group 1, 32 in 0
    batches = list(ds.train_batches(16, 3, seed=7, prefetch=0, groups=groups))
    got = np.concatenate([b["index"] for b in batches])
    # Group 0 first, then group 1, each in the order the plain shuffle had them.
    np.testing.assert_array_equal(got, np.concatenate([plain[groups[plain] == 0],
                                                       plain[groups[plain] == 1]]))
    assert [set(groups[b["index"]].tolist()) for b in batches] == [{0}, {0}, {1}]
    again = np.concatenate([b["index"] for b in ds.train_batches(16, 3, 7, 0, groups=groups)])
    np.testing.assert_array_equal(got, again)  # a pure function of (seed, epoch, groups)
    with pytest.raises(ValueError, match="groups has shape"):
        next(iter(ds.train_batches(16, 3, 7, 0, groups=groups[:5])))


def test_batch_groups_follow_the_phase_and_the_switch(tiny_config):
    config = tiny_config
    config.method = "remix"
    config.remix.warmup_fraction = 1 / 3  # of 3 epochs: one warm-up epoch
    ds = pipeline.load_dataset(config.data.name, config.data.data_dir, config.data.num_frames)
    built = build.build(config, ds)
    state = built.par.replicate(built.template)
    run = methods.RunContext(par=built.par, ds=ds, config=config, workdir=None, meta={},
                             samples=None, initial_state=built.template)
    method = built.method
    assert [method.phase(e) for e in range(3)] == ["warmup", "remix", "remix"]
    assert method.on_epoch_start(run, state, 0) == (state, {})
    assert method.batch_groups(run, state, 0) is None
    state, record = method.on_epoch_start(run, state, 1)
    modality = built.par.fetch(state.method_state.modality)
    assert set(np.unique(modality)) <= {remix.AUDIO, remix.VISUAL}
    assert record["remix"]["audio_fraction"] == pytest.approx(np.mean(modality == remix.AUDIO))
    np.testing.assert_array_equal(method.batch_groups(run, state, 1), modality)
    config.remix.reassemble = False
    assert method.batch_groups(run, state, 1) is None


def test_bad_settings_are_refused(tiny_config, tmp_path):
    tiny_config.method = "remix"
    tiny_config.remix.gamma_audio = float("inf")
    with pytest.raises(UserError, match="remix.gamma_audio"):
        train.train_and_evaluate(tiny_config, str(tmp_path / "inf"))
    tiny_config.remix.gamma_audio = 1.0
    tiny_config.remix.warmup_fraction = 1.0
    with pytest.raises(UserError, match="remix.warmup_fraction"):
        train.train_and_evaluate(tiny_config, str(tmp_path / "fraction"))


@pytest.mark.slow
def test_remix_trains_end_to_end_and_one_and_four_devices_agree(tiny_config, tmp_path):
    if jax.local_device_count() < 4:
        pytest.skip("needs 4 devices")
    config = tiny_config
    config.method = "remix"
    # Remixed from the first epoch: one train step to compile per device count (the
    # warm-up's loss and the phase switch are tested above).
    config.remix.warmup_fraction = 0.0
    runs = device_runs.train_on_device_counts(config, tmp_path)
    records = runs[1]
    assert [r["phase"] for r in records] == ["remix", "remix", "remix"]
    for r in records:
        t = r["train"]
        # All 48 samples train once an epoch: the trained share of audio samples is the
        # assignment's.
        assert t["audio_fraction"] == pytest.approx(r["remix"]["audio_fraction"], abs=1e-6)
        assert t["loss"] == pytest.approx(t["loss_audio_samples"] + t["loss_visual_samples"],
                                          rel=1e-5)
    device_runs.assert_runs_agree(runs[1], runs[4])
