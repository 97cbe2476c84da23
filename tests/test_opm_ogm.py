"""OPM & OGM (TPAMI 2024): defaults and schedule from the two scripts, the combined step
against OPM's step and OGM's hand-computed coefficient, and tiny runs on 1 and 4 devices."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import device_runs
from avgmm import build, losses, methods, train
from avgmm.data import augment
from avgmm.errors import UserError
from avgmm.methods import StepContext
from avgmm.run_config import open_dataset
from avgmm.models import make_model


def test_defaults_are_the_two_scripts_settings(tiny_config):
    c = tiny_config.opm_ogm
    # train_opm.sh: --q_base 0.5 --lam 0.5 --p_exe 0.7; train_ogm.sh: --alpha 0.8
    # --modulation_starts 0 --modulation_ends 60; main.py: OGM_GE, warm_up for epoch <= 5;
    # the epochs as shares of main.py's 100.
    assert (c.q_base, c.lam, c.p_exe) == (0.5, 0.5, 0.7)
    assert (c.alpha, c.mode) == (0.8, "OGM_GE")
    assert (c.modulation_start_fraction, c.modulation_end_fraction) == (0.0, 0.61)
    assert c.warmup_fraction == 0.06


def test_one_warm_up_for_both_and_the_ogm_window(tiny_config):
    tiny_config.method = "opm_ogm"
    tiny_config.epochs = 100  # the authors' budget: their epochs exactly
    m = methods.get(tiny_config)
    # main.py's one `warm_up = 1 if epoch <= 5` switches both off; OGM also needs
    # modulation_starts <= epoch <= modulation_ends (60); OPM drops after it too.
    assert m.describe(5) == {"dropping": False, "modulated": False}
    assert m.describe(6) == {"dropping": True, "modulated": True}
    assert m.describe(61) == {"dropping": True, "modulated": False}
    assert m.step_scalars(61) == {"drop": 1.0, "modulate": 0.0}


@pytest.mark.parametrize("field, value", [("lam", 1.0), ("alpha", math.inf),
                                          ("alpha", -0.1), ("mode", "GE"),
                                          ("warmup_fraction", -1), ("p_exe", 1.5)])
def test_bad_settings_are_refused(tiny_config, tmp_path, field, value):
    tiny_config.method = "opm_ogm"
    tiny_config.opm_ogm[field] = value
    with pytest.raises(UserError, match=f"opm_ogm.{field}"):
        train.train_and_evaluate(tiny_config, str(tmp_path / "bad"))


def _first_update(config, name):
    """The state before and after one `name` step on the first batch (drop and
    modulation on), the batch and the step context."""
    config.method = name
    config.num_devices = 1
    ds = open_dataset(config)
    method, _, state = build.build(config, ds)
    batch = next(iter(ds.train_batches(config.batch_size, 0, 0, 0)))
    batch = {k: jnp.asarray(v) for k, v in batch.items() if k != "id"}
    batch["position"] = jnp.arange(config.batch_size, dtype=jnp.int32)
    model = make_model(config, ds.meta, method)
    ctx = StepContext(model=model, axis_name=None, key=jax.random.key(3),
                      frames=augment.eval_frames(batch["frames"], config.data.image_size))
    scalars = {"drop": np.float32(1), "modulate": np.float32(1)}
    after, terms = jax.jit(lambda s, b: method.update(name, s, b, scalars, ctx))(state, batch)
    return state, after, terms, batch, ctx


def test_combined_step_is_opms_gradient_scaled_by_ogms_coefficient(tiny_config):
    # The TPAMI code with both flags: loss = CE of the dropped features (OPM), then every
    # 4-D encoder gradient of the dominant modality times k = 1 - tanh(alpha * rho), rho
    # its confidence over the other's on the UN-dropped logits (OGM; mode OGM without
    # noise here). First step (zero momentum): p - p' = lr (g + wd p), so
    # (p - p'_combined) / lr - wd p = k (p - p'_opm) / lr - k wd p.
    for name in ("opm", "opm_ogm"):
        tiny_config[name].p_exe = 1.0  # every batch drops: the same masks in both
    tiny_config.opm_ogm.mode = "OGM"
    tiny_config.opm_ogm.alpha = 0.8
    state, plain, _, batch, ctx = _first_update(tiny_config, "opm")
    _, combined, terms, _, _ = _first_update(tiny_config, "opm_ogm")
    # The coefficient by hand from the un-dropped (train-mode) logits.
    logits, _ = ctx.forward(state, state.params, batch)
    s_a = float(losses.true_class_probability(logits.audio, batch["label"]).sum())
    s_v = float(losses.true_class_probability(logits.visual, batch["label"]).sum())
    dominant = "visual" if s_v / s_a > 1 else "audio"
    k = 1 - math.tanh(0.8 * max(s_v / s_a, s_a / s_v))
    assert float(terms[f"coeff_{dominant[0]}"]) == pytest.approx(k, rel=1e-4)
    assert float(terms["ratio_v"]) == pytest.approx(s_v / s_a, rel=1e-4)
    assert float(terms["executed"]) == 1.0 and float(terms["q_a"] + terms["q_v"]) > 0
    lr, wd = 0.05, 1e-4
    flat = lambda t: jax.tree_util.tree_flatten_with_path(t)[0]  # noqa: E731
    checked = 0
    for (path, p), (_, p_opm), (_, p_both) in zip(flat(state.params), flat(plain.params),
                                                  flat(combined.params)):
        g_opm = (np.asarray(p) - np.asarray(p_opm)) / lr - wd * np.asarray(p)
        g_both = (np.asarray(p) - np.asarray(p_both)) / lr - wd * np.asarray(p)
        top = path[0].key
        scale = k if (top == f"{dominant}_encoder" and np.ndim(p) == 4) else 1.0
        np.testing.assert_allclose(g_both, scale * g_opm, rtol=2e-3, atol=1e-6,
                                   err_msg=jax.tree_util.keystr(path))
        checked += top == f"{dominant}_encoder" and np.ndim(p) == 4
    assert checked >= 2


@pytest.mark.slow
def test_tiny_runs_drop_and_modulate_and_agree_on_one_and_four_devices(tiny_config,
                                                                       tmp_path):
    if jax.local_device_count() < 4:
        pytest.skip("needs 4 devices")
    tiny_config.method = "opm_ogm"
    # The defaults on 3 epochs: a warm-up epoch (6%, at least one), OGM's window up to 61%
    # (round(1.83) = 2): epoch 2 modulated, epoch 3 dropping only.
    tiny_config.opm_ogm.p_exe = 1.0
    runs = device_runs.train_on_device_counts(tiny_config, tmp_path)
    records = runs[1]
    assert [r["dropping"] for r in records] == [False, True, True]
    assert [r["modulated"] for r in records] == [False, True, False]
    first, second, third = (r["train"] for r in records)
    assert first["executed"] == 0 and first["coeff_a"] == first["coeff_v"] == 1
    assert second["executed"] == 1 and min(second["coeff_a"], second["coeff_v"]) < 1
    assert third["executed"] == 1 and third["coeff_a"] == third["coeff_v"] == 1
    device_runs.assert_runs_agree(runs[1], runs[4])
