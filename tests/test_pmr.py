"""PMR: the prototype loss against a hand-worked batch, the prototype update, the
inference-mode prototype pass, and a tiny end-to-end run on 1 and 4 devices."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import device_runs
from avgmm import build, methods
from avgmm.data import augment, pipeline
from avgmm.methods import pmr
from avgmm.models import AVLogits


def _toy():
    # Audio prototypes c0 = (0, 0), c1 = (3, 4); visual c0 = (1, 0), c1 = (-1, 0).
    # Sample 1 (label 0): phi_a = (0, 0), phi_v = (1, 0); sample 2 (label 1): phi_a = (3, 0),
    # phi_v = (1, 0). Fused logits 0: CE(f) = ln 2 = 0.693147.
    phi_a = jnp.array([[0.0, 0.0], [3.0, 0.0]])
    phi_v = jnp.array([[1.0, 0.0], [1.0, 0.0]])
    protos_a = jnp.array([[0.0, 0.0], [3.0, 4.0]])
    protos_v = jnp.array([[1.0, 0.0], [-1.0, 0.0]])
    labels = jnp.array([0, 1])
    zeros = jnp.zeros((2, 2))
    return AVLogits(zeros, zeros, zeros), phi_a, phi_v, labels, protos_a, protos_v


def test_prototype_loss_and_rho_match_a_hand_worked_batch():
    logits, phi_a, phi_v, labels, protos_a, protos_v = _toy()
    # Audio distances: sample 1 [0, 5], sample 2 [3, 4] (|(3,0)-(3,4)| = 4).
    #   p_true: 1/(1+e^-5) = 0.993307 and e^-4/(e^-3+e^-4) = 1/(1+e) = 0.268941
    #   CE: ln(1+e^-5) = 0.006715, ln(1+e) = 1.313262 -> mean 0.659988
    #   entropy: 0.993307*0.006715 + 0.006693*5.006715 = 0.040180;
    #            0.731059*0.313262 + 0.268941*1.313262 = 0.582206 -> mean 0.311193
    # Visual distances: both samples [0, 2].
    #   p_true: 1/(1+e^-2) = 0.880797 and 1/(1+e^2) = 0.119203 (sum exactly 1)
    #   CE: ln(1+e^-2) = 0.126928, ln(1+e^2) = 2.126928 -> mean 1.126928
    # rho = (0.993307 + 0.268941) / 1.0 = 1.262248 > 1: visual is the slower modality.
    # step:  L = 0.693147 + 2 * 1.126928 - 0.01 * 0.311193 = 2.943891
    # ratio: w_v = clip(rho - 1) = 0.262248;
    #        L = 0.693147 + 2 * 0.262248 * 1.126928 - 0.01 * 0.262248 * 0.311193 = 1.283401
    expected = {"step": (2.943891, 2.0), "ratio": (1.283401, 2 * 0.262248)}
    for mode, (loss_value, coef_v) in expected.items():
        loss, terms = pmr.pmr_loss(logits, phi_a, phi_v, labels, protos_a, protos_v,
                                   alpha=2.0, mu=0.01, coefficient=mode,
                                   modulate=1.0, entropy_on=1.0)
        assert float(loss) == pytest.approx(loss_value, rel=1e-5), mode
        assert float(terms["rho"]) == pytest.approx(1.262248, rel=1e-5)
        assert float(terms["proto_ce_audio"]) == pytest.approx(0.659988, rel=1e-5)
        assert float(terms["proto_ce_visual"]) == pytest.approx(1.126928, rel=1e-5)
        assert float(terms["proto_entropy_audio"]) == pytest.approx(0.311193, rel=1e-5)
        assert float(terms["coef_audio"]) == 0.0
        assert float(terms["coef_visual"]) == pytest.approx(coef_v, rel=1e-5)
    # Outside the entropy epochs the bonus is gone; outside the window only CE(f) is left.
    loss, _ = pmr.pmr_loss(logits, phi_a, phi_v, labels, protos_a, protos_v, alpha=2.0,
                           mu=0.01, coefficient="step", modulate=1.0, entropy_on=0.0)
    assert float(loss) == pytest.approx(0.693147 + 2 * 1.126928, rel=1e-5)
    loss, _ = pmr.pmr_loss(logits, phi_a, phi_v, labels, protos_a, protos_v, alpha=2.0,
                           mu=0.01, coefficient="step", modulate=0.0, entropy_on=1.0)
    assert float(loss) == pytest.approx(math.log(2), rel=1e-6)


def test_default_loss_is_the_authors_script_without_the_entropy_term():
    # fanyunfeng-bit/Modal-Imbalance-PMR main_Prototype_grad.py:178 (and BalanceBenchmark's
    # PMR_trainer.py:175): loss = CE(out) + beta * loss_proto_a + lam * loss_proto_v with
    # (beta, lam) = (0, alpha) when ratio_a_p > 1. On the toy batch rho = 1.262248 > 1 and
    # alpha = 2 (bash.sh): 0.693147 + 2 * 1.126928 = 2.947003 - no entropy term, even in
    # the first epochs where the switch would add it.
    logits, phi_a, phi_v, labels, protos_a, protos_v = _toy()
    c = pmr.PMR.defaults()
    assert c.mu == 0.0 and c.alpha == 2.0 and c.coefficient == "step"
    loss, terms = pmr.pmr_loss(logits, phi_a, phi_v, labels, protos_a, protos_v,
                               alpha=c.alpha, mu=c.mu, coefficient=c.coefficient,
                               modulate=1.0, entropy_on=1.0)
    assert float(loss) == pytest.approx(2.947003, rel=1e-5)
    assert float(terms["coef_audio"]) == 0.0 and float(terms["coef_visual"]) == 2.0


def test_gradient_is_finite_on_a_prototype_and_rho_is_not_differentiated():
    logits, phi_a, phi_v, labels, protos_a, protos_v = _toy()

    def loss(pa):
        return pmr.pmr_loss(logits, pa, phi_v, labels, protos_a, protos_v, alpha=2.0,
                            mu=0.0, coefficient="ratio", modulate=1.0, entropy_on=1.0)[0]

    # Audio is the faster modality here and mu = 0: no audio term, so no gradient at all
    # (it would flow through rho if rho were differentiated) - and sample 1 sits exactly
    # on its prototype, where a plain sqrt has an infinite gradient.
    g = jax.grad(loss)(phi_a)
    assert np.all(np.isfinite(g)) and np.all(np.asarray(g) == 0)


def test_coefficients_pick_the_slower_modality():
    # rho = 0.5: audio slower; step gives it 1, ratio clip(1/0.5 - 1) = 1.
    # rho = 0.8: ratio gives audio clip(1.25 - 1) = 0.25. rho = 1: nobody.
    for rho, mode, want in [(0.5, "step", (1, 0)), (0.5, "ratio", (1, 0)),
                            (0.8, "ratio", (0.25, 0)), (1.5, "ratio", (0, 0.5)),
                            (3.0, "ratio", (0, 1)), (1.0, "step", (0, 0))]:
        got = pmr.coefficients(jnp.float32(rho), mode)
        np.testing.assert_allclose([float(g) for g in got], want, rtol=1e-6, atol=1e-7)


def test_prototype_update_blends_and_keeps_unseen_classes():
    sums = np.array([[2.0, 4.0], [0.0, 0.0]])
    counts = np.array([2.0, 0.0])
    old = np.array([[1.0, 1.0], [5.0, 5.0]])
    # Class 0 mean (1, 2); with momentum 0.25: 0.75*(1, 2) + 0.25*(1, 1) = (1, 1.75).
    # Class 1 has no sample and keeps (5, 5).
    np.testing.assert_allclose(pmr.blend_prototypes(sums, counts, old, 0.25, True),
                               [[1.0, 1.75], [5.0, 5.0]])
    # The first prototypes are plain class means.
    np.testing.assert_allclose(pmr.blend_prototypes(sums, counts, old, 0.25, False),
                               [[1.0, 2.0], [5.0, 5.0]])


def test_prototypes_are_inference_mode_class_means_of_the_training_features(tiny_config):
    config = tiny_config
    config.method = "pmr"
    ds = pipeline.load_dataset(config.data.name, config.data.data_dir, config.data.num_frames)
    built = build.build(config, ds)
    state = built.par.replicate(built.template)
    run = methods.RunContext(par=built.par, ds=ds, config=config, workdir=None, meta={},
                             samples=None, initial_state=built.template)
    state, record = built.method.on_epoch_start(run, state, 0)
    got = built.par.fetch(state.method_state)
    # The same features on one device, without pmap.
    from avgmm.models import make_model

    model = make_model(config, ds.meta)
    host = built.template
    variables = {"params": host.params, "batch_stats": host.batch_stats}
    feats, labels = [], []
    for batch in ds.eval_batches("train", 16):
        real = batch["mask"]
        frames = augment.eval_frames(jnp.asarray(batch["frames"]), config.data.image_size)
        a, v = model.apply(variables, jnp.asarray(batch["audio"], jnp.float32), frames, False,
                           method=model.features)
        feats.append((np.asarray(a)[real], np.asarray(v)[real]))
        labels.append(batch["label"][real])
    labels = np.concatenate(labels)
    for k, name in enumerate(("audio", "visual")):
        f = np.concatenate([x[k] for x in feats])
        means = np.stack([f[labels == c].mean(0) for c in range(ds.meta.num_classes)])
        np.testing.assert_allclose(getattr(got, name), means, rtol=1e-4, atol=1e-5)
    assert record["prototypes"]["classes_seen"] == ds.meta.num_classes
    assert bool(got.fitted)


@pytest.mark.slow
def test_pmr_trains_end_to_end_and_one_and_four_devices_agree(tiny_config, tmp_path):
    if jax.local_device_count() < 4:
        pytest.skip("needs 4 devices")
    config = tiny_config
    config.method = "pmr"
    config.pmr.modulation_end_fraction = 2 / 3  # epochs 1-2 modulated, epoch 3 plain CE
    config.pmr.mu = 0.01  # the entropy switch on (off by default, as the authors' script)
    config.pmr.entropy_fraction = 1 / 3  # entropy bonus in epoch 1 only
    runs = device_runs.train_on_device_counts(config, tmp_path)
    records = runs[1]
    assert [r["pmr_modulated"] for r in records] == [True, True, False]
    assert [r["pmr_entropy"] for r in records] == [True, False, False]
    assert ["prototypes" in r for r in records] == [True, True, False]
    assert records[0]["train"]["rho"] > 0
    assert records[2]["train"]["coef_audio"] == records[2]["train"]["coef_visual"] == 0
    device_runs.assert_runs_agree(runs[1], runs[4])
