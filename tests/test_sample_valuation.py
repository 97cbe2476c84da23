"""Sample-level modality valuation: the Shapley values and copy counts of every outcome,
the loss of a hand-worked batch, the valuation pass against a one-device computation,
and a tiny run on 1 and 4 devices."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import device_runs
from avgmm import build, methods, train
from avgmm.data import augment, pipeline
from avgmm.errors import UserError
from avgmm.methods import sample_valuation as sv
from avgmm.models import SplitFusionHead

# (fused right, audio-only right, visual-only right) -> (phi_a, phi_v), worked by hand from
# phi_a = (v({a}) + v({a, v}) - v({v})) / 2 with v({a, v}) = 2 ("size") or 1 ("correct").
SIZE = {(1, 1, 1): (1.0, 1.0), (1, 1, 0): (1.5, 0.5), (1, 0, 1): (0.5, 1.5),
        (1, 0, 0): (1.0, 1.0), (0, 1, 1): (0.0, 0.0), (0, 1, 0): (0.5, -0.5),
        (0, 0, 1): (-0.5, 0.5), (0, 0, 0): (0.0, 0.0)}
CORRECT = {(1, 1, 1): (0.5, 0.5), (1, 1, 0): (1.0, 0.0), (1, 0, 1): (0.0, 1.0),
           (1, 0, 0): (0.5, 0.5), (0, 1, 1): (0.0, 0.0), (0, 1, 0): (0.5, -0.5),
           (0, 0, 1): (-0.5, 0.5), (0, 0, 0): (0.0, 0.0)}


@pytest.mark.parametrize("value,table", [("size", SIZE), ("correct", CORRECT)])
def test_shapley_values_of_every_outcome(value, table):
    outcomes = list(itertools.product((1, 0), repeat=3))
    f, a, v = (jnp.asarray([o[i] for o in outcomes], bool) for i in range(3))
    phi_a, phi_v = sv.shapley_contributions(f, a, v, value)
    np.testing.assert_array_equal(np.asarray(phi_a), [table[o][0] for o in outcomes])
    np.testing.assert_array_equal(np.asarray(phi_v), [table[o][1] for o in outcomes])


def test_copies_follow_the_authors_open_intervals():
    # (0.4, 1) -> 1, (-0.1, 0.4) -> 2, < -0.1 -> 3; 1, 1.5 and the edges 0.4, -0.1 -> 0.
    phi = jnp.asarray([1.5, 1.0, 0.5, 0.0, -0.5, 0.4, -0.1, 0.99, 0.41, 0.39, -0.09, -0.11])
    np.testing.assert_array_equal(np.asarray(sv.resample_copies(phi)),
                                  [0, 0, 1, 2, 3, 0, 0, 1, 1, 2, 2, 3])
    # With the authors' values, a sample that only the audio gets right gives the visual
    # modality 3 copies (phi_v = -0.5) and the audio 1 (phi_a = 0.5).
    a, v = SIZE[(0, 1, 0)]
    assert np.asarray(sv.resample_copies(jnp.asarray([a, v]))).tolist() == [1.0, 3.0]


def test_loss_adds_each_samples_copies_and_divides_by_the_batch():
    # Two samples, two classes, label 0 each. CE(l) = log(1 + e^(l1 - l0)).
    #   fused (0, 0): log 2 = 0.693147 each; audio-only (1, 0): log(1 + e^-1) = 0.313262;
    #   visual-only (0, 1): log(1 + e) = 1.313262.
    # Sample 1: copies (a, v) = (1, 0) -> 0.693147 + 0.313262 = 1.006409
    # Sample 2: copies (0, 3) -> 0.693147 + 3 * 1.313262 = 4.632933
    # Loss = (1.006409 + 4.632933) / 2 = 2.819671
    fused = jnp.zeros((2, 2))
    audio_only = jnp.asarray([[1.0, 0.0], [1.0, 0.0]])
    visual_only = jnp.asarray([[0.0, 1.0], [0.0, 1.0]])
    labels = jnp.asarray([0, 0])
    loss, terms = sv.valuation_loss(fused, audio_only, visual_only, labels,
                                    jnp.asarray([1.0, 0.0]), jnp.asarray([0.0, 3.0]))
    assert float(loss) == pytest.approx(2.819671, rel=1e-6)
    assert float(terms["copies_visual"]) == 1.5 and float(terms["copies_audio"]) == 0.5
    assert float(terms["ce_fused"]) == pytest.approx(np.log(2), rel=1e-6)


def test_unimodal_predictions_zero_the_other_features_and_keep_the_bias():
    head = SplitFusionHead(num_classes=3)
    phi_a = jnp.asarray([[1.0, 2.0]])
    phi_v = jnp.asarray([[-1.0, 0.5]])
    params = head.init(jax.random.key(0), phi_a, phi_v)
    params = jax.tree.map(lambda x: x + 0.25, params)  # a non-zero bias
    w, b = (np.asarray(params["params"]["kernel"]), np.asarray(params["params"]["bias"]))
    audio_only, visual_only = sv.unimodal_predictions(
        lambda a, v: head.apply(params, a, v), phi_a, phi_v)
    np.testing.assert_allclose(audio_only, np.asarray(phi_a) @ w[:2] + b, rtol=1e-6)
    np.testing.assert_allclose(visual_only, np.asarray(phi_v) @ w[2:] + b, rtol=1e-6)


def test_bad_settings_are_refused(tiny_config, tmp_path):
    tiny_config.method = "sample_valuation"
    tiny_config.sample_valuation.warmup_fraction = float("nan")
    with pytest.raises(UserError, match="sample_valuation.warmup_fraction"):
        train.train_and_evaluate(tiny_config, str(tmp_path / "nan"))
    tiny_config.sample_valuation.warmup_fraction = 0.1
    tiny_config.sample_valuation.value = "accuracy"
    with pytest.raises(UserError, match="sample_valuation.value"):
        train.train_and_evaluate(tiny_config, str(tmp_path / "value"))


def test_valuation_pass_matches_a_one_device_computation(tiny_config):
    config = tiny_config
    config.method = "sample_valuation"
    ds = pipeline.load_dataset(config.data.name, config.data.data_dir, config.data.num_frames)
    built = build.build(config, ds)
    state = built.par.replicate(built.template)
    run = methods.RunContext(par=built.par, ds=ds, config=config, workdir=None, meta={},
                             samples=None, initial_state=built.template)
    state, record = built.method.on_epoch_start(run, state, 5)
    got = built.par.fetch(state.method_state)
    from avgmm.models import make_model

    model = make_model(config, ds.meta, built.method)
    host = built.template
    variables = {"params": host.params, "batch_stats": host.batch_stats}
    copies = {"a": [], "v": []}
    for batch in ds.eval_batches("train", 16):
        real = batch["mask"]
        frames = augment.eval_frames(jnp.asarray(batch["frames"]), config.data.image_size)
        pa, pv = model.apply(variables, jnp.asarray(batch["audio"], jnp.float32), frames,
                             False, method=model.features)
        pa, pv = np.asarray(pa), np.asarray(pv)
        w = np.asarray(host.params["head"]["kernel"])
        b = np.asarray(host.params["head"]["bias"])
        d = pa.shape[1]
        right = [(x.argmax(-1) == batch["label"]).astype(float)
                 for x in (pa @ w[:d] + pv @ w[d:] + b, pa @ w[:d] + b, pv @ w[d:] + b)]
        phi_a = (right[1] + 2 * right[0] - right[2]) / 2
        phi_v = (right[2] + 2 * right[0] - right[1]) / 2
        for key, phi in (("a", phi_a), ("v", phi_v)):
            copies[key].append(np.select([(phi > 0.4) & (phi < 1), (phi > -0.1) & (phi < 0.4),
                                          phi < -0.1], [1, 2, 3], 0)[real])
    np.testing.assert_array_equal(got.copies_audio, np.concatenate(copies["a"]))
    np.testing.assert_array_equal(got.copies_visual, np.concatenate(copies["v"]))
    assert record["valuation"]["copies_audio"] == int(got.copies_audio.sum())


@pytest.mark.slow
def test_sample_valuation_trains_end_to_end_and_one_and_four_devices_agree(tiny_config,
                                                                          tmp_path):
    if jax.local_device_count() < 4:
        pytest.skip("needs 4 devices")
    config = tiny_config
    config.method = "sample_valuation"
    config.sample_valuation.warmup_fraction = 1 / 3  # of 3 epochs: one warm-up epoch
    runs = device_runs.train_on_device_counts(config, tmp_path)
    records = runs[1]
    assert [r["resampled"] for r in records] == [False, True, True]
    assert "valuation" not in records[0]
    warm = records[0]["train"]
    assert warm["copies_audio"] == warm["copies_visual"] == 0
    assert warm["loss"] == pytest.approx(warm["ce_fused"], rel=1e-6)
    for r in records[1:]:
        # 48 samples in 3 batches of 16: every sample trains once an epoch, so the mean
        # copies of the trained batches are the valuation's totals over 48.
        t, v = r["train"], r["valuation"]
        assert t["copies_audio"] * 48 == pytest.approx(v["copies_audio"], abs=1e-4)
        assert t["copies_visual"] * 48 == pytest.approx(v["copies_visual"], abs=1e-4)
        assert t["loss"] > t["ce_fused"] and np.isfinite(t["loss"])
    device_runs.assert_runs_agree(runs[1], runs[4])
    for r1, r4 in zip(runs[1][1:], runs[4][1:]):
        assert r1["valuation"]["copies_audio"] == r4["valuation"]["copies_audio"]
