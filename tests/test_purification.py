"""GMM-guided purification: the optional fine-tuning phase of the adaptive method."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from avgmm import gmm as gmm_lib
from avgmm import train
from avgmm.analysis import plots, report
from avgmm.errors import UserError
from avgmm.methods import adaptive
from avgmm.models import AVLogits


def _gmm(means, variances, weights=(0.5, 0.5)):
    fitted = gmm_lib.GMMParams.unfitted()
    return fitted.replace(weights=jnp.array(weights, jnp.float32),
                          means=jnp.array(means, jnp.float32),
                          variances=jnp.array(variances, jnp.float32),
                          fallback=jnp.zeros((), bool))


def test_clean_mask_keeps_the_samples_whose_balanced_posterior_reaches_the_threshold():
    # Equal weights and variances 0.01, means 0 (balanced) and 0.5 (imbalanced):
    # log N_1(g) - log N_0(g) = (g^2 - (g - 0.5)^2) / (2 * 0.01) = 50 (g - 0.25), so
    # w_bal = 1 / (1 + exp(50 (g - 0.25))):
    #   g = -0.1: exp(-17.5) ~ 2.5e-8 -> w_bal ~ 1.0
    #   g = 0.2:  exp(-2.5) = 0.082085 -> w_bal = 0.924142
    #   g = 0.25: exp(0) = 1           -> w_bal = 0.5 (kept: >= threshold)
    #   g = 0.26: exp(0.5) = 1.648721  -> w_bal = 0.377541
    #   g = 0.3:  exp(2.5) = 12.182494 -> w_bal = 0.075858
    gmm = _gmm([0.0, 0.5], [0.01, 0.01])
    gaps = np.array([-0.1, 0.2, 0.25, 0.26, 0.3], np.float32)
    np.testing.assert_allclose(gmm_lib.posteriors(gmm, gaps)[:, 0],
                               [1.0, 0.924142, 0.5, 0.377541, 0.075858], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(adaptive.clean_mask(gmm, gaps, 0.5), [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(adaptive.clean_mask(gmm, gaps, 0.3), [1, 1, 1, 1, 0])
    np.testing.assert_array_equal(adaptive.clean_mask(gmm, gaps, 0.95), [1, 0, 0, 0, 0])
    # The one-component fallback (and the unfitted placeholder) keeps everyone.
    np.testing.assert_array_equal(
        adaptive.clean_mask(gmm_lib.GMMParams.unfitted(), gaps, 0.5), [1, 1, 1, 1, 1])


def test_finetune_loss_is_the_mean_fused_ce_of_the_kept_samples_hand_worked():
    # Sample 0: fused [0, 0], label 0 -> CE = ln 2 = 0.693147.
    # Sample 1: fused [0, ln 4], label 0 -> p_0 = 1 / 5 -> CE = ln 5 = 1.609438.
    fused = jnp.array([[0.0, 0.0], [0.0, np.log(4.0)]])
    logits = AVLogits(fused=fused, audio=fused / 2, visual=fused / 2)
    labels = jnp.array([0, 0])
    # Only sample 0 kept: weights mask * 1 device / 1 kept = [1, 0] -> ln 2.
    loss, terms = adaptive.finetune_loss(logits, labels, jnp.array([1.0, 0.0]),
                                         jnp.array([1.0, 0.0]), 0.0)
    np.testing.assert_allclose(loss, 0.693147, rtol=1e-5)
    assert float(terms["kept_fraction"]) == 0.5
    # Both kept: weights [0.5, 0.5] -> (0.693147 + 1.609438) / 2 = 1.151293.
    loss, _ = adaptive.finetune_loss(logits, labels, jnp.array([0.5, 0.5]),
                                     jnp.array([1.0, 1.0]), 0.0)
    np.testing.assert_allclose(loss, 1.151293, rtol=1e-5)


def test_finetune_epochs_are_part_of_the_budget_and_are_validated(tiny_config):
    assert tiny_config.epochs == 3  # 1 warm-up + 2 adaptive
    tiny_config.adaptive.finetune_epochs = 2
    # The schedule no longer adds up to the budget: refused, naming the fix.
    with pytest.raises(UserError, match=r"config\.epochs=3 .* = 5 epochs; set config\.epochs=5"):
        train.train_and_evaluate(tiny_config, "/nonexistent/never/written")
    tiny_config.epochs = 5
    for field, value in (("finetune_epochs", -1), ("finetune_threshold", 1.5)):
        bad = tiny_config.copy_and_resolve_references()
        bad.method = "adaptive"
        bad.adaptive[field] = value
        with pytest.raises(UserError, match=f"adaptive.{field}"):
            train.train_and_evaluate(bad, "/nonexistent/never/written")


def test_report_tells_a_purified_run_from_the_plain_one(tiny_config):
    # Runs without a recorded variant that share a label get the fields that differ.
    def run(finetune, seed):
        config = json.loads(tiny_config.to_json_best_effort())
        config["seed"], config["adaptive"]["finetune_epochs"] = seed, finetune
        return {"run": f"r{finetune}{seed}", "config": config,
                "results": {"test_accuracy": 0.5, "last_epoch": {"accuracy": 0.5},
                            "peer_protocol_best_test_accuracy": 0.5}}

    rows = report.aggregate([run(0, 0), run(0, 1), run(3, 0)], paper=False)
    labels = sorted(r["method"] for r in rows)
    assert labels[0].endswith("[adaptive.finetune_epochs=0]")
    assert labels[1].endswith("[adaptive.finetune_epochs=3]")
    assert sorted(r["seeds"] for r in rows) == [1, 2]


@pytest.mark.slow
def test_tiny_run_with_one_purification_epoch(tiny_config, tmp_path):
    tiny_config.adaptive.finetune_epochs = 1
    tiny_config.epochs = 4
    workdir = str(tmp_path / "purified")
    results = train.train_and_evaluate(tiny_config, workdir)
    assert results["epochs"] == 4 and results["gmm_fits"] == 3
    assert 0.0 <= results["test_accuracy"] <= 1.0
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    assert [r["phase"] for r in records] == ["warmup", "adaptive", "adaptive", "finetune"]
    last = records[-1]
    # One refit at the start of the phase (fit index 2, after the fits 0 and 1).
    assert last["gmm_fit"]["fit_index"] == 2 and last["finetune_epoch"] == 0
    kept = last["finetune_kept_fraction"]
    assert 0.0 < kept <= 1.0
    # The batches' kept share is that of the samples they drew (the last batch is dropped).
    assert 0.0 <= last["train"]["kept_fraction"] <= 1.0
    assert abs(last["train"]["kept_fraction"] - kept) < 0.25
    assert np.isfinite(last["train"]["loss"]) and last["lambda_t"] is None
    # The loss plot knows the phase.
    terms = plots.loss_terms(last, tiny_config.loss.to_dict())
    assert list(terms) == ["total loss", "CE(fused), balanced samples"]
