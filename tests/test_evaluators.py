"""Evaluators: each built-in one on a hand-worked batch, and a new one added by a file
alone reaching results.json, the console line and the report."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from avgmm import evaluators, train
from avgmm.analysis import report
from avgmm.errors import UserError
from avgmm.evaluators import base


def _outputs():
    # Four samples, three classes; the last one is padding (mask 0).
    fused = jnp.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 2.0], [5.0, 0.0, 0.0]])
    audio = jnp.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    visual = jnp.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    label = jnp.array([0, 2, 2, 1])
    mask = jnp.array([1.0, 1.0, 1.0, 0.0])
    batch = {"imbalanced": jnp.array([True, True, False, True])}
    return base.Outputs(fused=fused, audio=audio, visual=visual, label=label, mask=mask,
                        batch=batch)


def _evaluate(ev):
    sums = {k: float(v) for k, v in ev.sums(_outputs()).items()}
    return ev.finish(dict(sums, count=3.0))


def test_accuracy_counts_the_real_samples_only():
    out = _evaluate(evaluators.REGISTRY["accuracy"]())
    # Predictions 0, 1, 2 against labels 0, 2, 2: two right; the padded row is ignored.
    assert out["accuracy"] == pytest.approx(2 / 3) and out["count"] == 3
    log_softmax = np.log(np.exp([3.0, 1, 0]) / np.exp([3.0, 1, 0]).sum())
    ce = -(log_softmax[0] + np.log(np.exp(1) / np.exp([0.0, 2, 1]).sum())
           + np.log(np.exp(2) / np.exp([1.0, 0, 2]).sum()))
    assert out["loss"] == pytest.approx(ce / 3, rel=1e-5)


def test_modality_accuracy_and_degraded_subsets():
    out = _evaluate(evaluators.REGISTRY["modality_accuracy"]())
    # Audio predicts 0, 0, 2 (right on samples 1 and 3); visual 1, 1, 0 (never right).
    assert out == {"accuracy_audio": pytest.approx(2 / 3), "accuracy_visual": 0.0}
    out = _evaluate(evaluators.REGISTRY["degraded"]())
    # Degraded: samples 1 and 2 (sample 1 right); clean: sample 3 (right).
    assert out == {"accuracy_degraded": 0.5, "accuracy_clean": 1.0}


def test_gap_statistics_match_numpy():
    out = _evaluate(evaluators.REGISTRY["gap"]())
    o = _outputs()
    p = lambda l: np.exp(np.asarray(l)) / np.exp(np.asarray(l)).sum(-1, keepdims=True)  # noqa
    idx = np.arange(3), np.asarray(o.label)[:3]
    gap = p(o.audio)[:3][idx] - p(o.visual)[:3][idx]
    assert out["gap_mean"] == pytest.approx(gap.mean(), rel=1e-5)
    assert out["gap_std"] == pytest.approx(gap.std(), rel=1e-4)


def test_the_config_must_name_known_evaluators_including_accuracy(tiny_config):
    tiny_config.evaluators = ("accuracy", "no_such_metric")
    with pytest.raises(UserError, match="config.evaluators=.*evaluator names"):
        train.train_and_evaluate(tiny_config, "/nonexistent/never/written")
    tiny_config.evaluators = ("modality_accuracy",)
    with pytest.raises(UserError, match="includes \\('accuracy',\\)"):
        train.train_and_evaluate(tiny_config, "/nonexistent/never/written")


class Top2(base.Evaluator):
    """Top-2 accuracy of the multimodal prediction (docs/extending.md's example)."""

    name = "test_top2"
    fields = (base.Field("accuracy_top2", "top-2 acc", console="top2", headline=True),)

    def sums(self, out):
        top2 = jnp.argsort(out.fused, axis=-1)[:, -2:]
        hit = (top2 == out.label[:, None]).any(-1).astype(jnp.float32)
        return {"hits": (hit * out.mask).sum()}

    def finish(self, totals):
        return {"accuracy_top2": totals["hits"] / max(totals["count"], 1.0)}


def test_a_new_evaluator_alone_reaches_results_console_and_report(tiny_config, tmp_path,
                                                                  capsys):
    tiny_config.method = "concat"
    tiny_config.evaluators = ("accuracy", "modality_accuracy", "test_top2")
    workdir = str(tmp_path / "run")
    results = train.train_and_evaluate(tiny_config, workdir)
    # Top-2 of three classes can only be at least as good as top-1.
    assert results["test_accuracy"] <= results["test_accuracy_top2"] <= 1.0
    assert results["last_epoch"]["accuracy_top2"] >= results["last_epoch"]["accuracy"]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        record = json.loads(f.readline())
    assert set(record["val"]) >= {"accuracy", "accuracy_top2", "accuracy_audio"}
    assert "gap_mean" not in record["val"]  # not configured, not computed
    assert " top2 " in capsys.readouterr().out
    rows = report.aggregate([report.load(workdir)])
    assert "top-2 acc" in report.markdown(rows)
    assert rows[0]["test_accuracy_top2"] == pytest.approx(100 * results["test_accuracy_top2"])
