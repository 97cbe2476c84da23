"""The method interface: registered methods, and the three original methods' results."""

import json
import os

import numpy as np
import pytest
from flax import traverse_util

from avgmm import methods, train
from avgmm.methods import base

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden",
                      "method_reference.npz")


def _final_variables(workdir):
    import orbax.checkpoint as ocp

    latest = os.path.join(workdir, "checkpoints", "latest")
    step = max(int(s) for s in os.listdir(latest) if s.isdigit())
    with ocp.PyTreeCheckpointer() as reader:
        state = reader.restore(os.path.join(latest, str(step), "state"))
    return traverse_util.flatten_dict({"params": state["params"],
                                       "batch_stats": state["batch_stats"]}, sep="/")


@pytest.mark.parametrize("method", ["concat", "warmup_only", "adaptive"])
def test_methods_reproduce_the_trainer_before_they_became_modules(tiny_config, tmp_path,
                                                                  method):
    # The reference was written by the trainer that hard-wired these three methods
    # (tests/golden/make_method_reference.py); the same config must give the same weights.
    tiny_config.method = method
    train.train_and_evaluate(tiny_config, str(tmp_path / method))
    reference = np.load(GOLDEN)
    final = _final_variables(str(tmp_path / method))
    keys = sorted(k[len(method) + 1:] for k in reference.files if k.startswith(method + "/"))
    assert sorted(final) == keys
    for k in keys:
        np.testing.assert_allclose(np.asarray(final[k]), reference[f"{method}/{k}"],
                                   rtol=1e-5, atol=1e-6, err_msg=k)


def test_every_registered_method_is_a_method_with_its_name():
    assert {"concat", "warmup_only", "adaptive"} <= set(methods.REGISTRY)
    for name, cls in methods.REGISTRY.items():
        assert issubclass(cls, base.Method) and cls.name == name
        assert cls(None).phases(), name


def test_a_run_saved_before_method_settings_existed_still_resumes(tiny_config, tmp_path):
    from avgmm import config_text
    from avgmm.workdir import Workdir

    workdir = tmp_path / "old"
    workdir.mkdir()
    saved = config_text.config_to_dict(tiny_config)
    for name in methods.REGISTRY:  # as written before any method had its own settings
        saved.pop(name, None)
    (workdir / "config.json").write_text(json.dumps(saved))
    (workdir / "metrics.jsonl").write_text('{"epoch": 1}\n')  # a started run
    ok = lambda field, value: methods.absent_field_ok(tiny_config, field, value)  # noqa: E731
    Workdir(str(workdir)).check_config(tiny_config, absent_ok=ok)
    # Another method's settings never matter; the method's own only at their defaults.
    tiny_config.ogm_ge.alpha = 0.5
    Workdir(str(workdir)).check_config(tiny_config, absent_ok=ok)
    tiny_config.adaptive.finetune_epochs = 2
    with pytest.raises(ValueError, match=r"adaptive\.finetune_epochs: saved '<absent>'"):
        Workdir(str(workdir)).check_config(tiny_config, absent_ok=ok)


def test_a_run_resumes_after_another_method_renamed_its_settings(tiny_config, tmp_path):
    from avgmm import config_text, train
    from avgmm.workdir import Workdir

    workdir = tmp_path / "old"
    workdir.mkdir()
    saved = config_text.config_to_dict(tiny_config)
    saved["ogm"] = {"alpha": 0.8, "warmup_epochs": 6}  # OGM's settings before a rename
    (workdir / "config.json").write_text(json.dumps(saved))
    (workdir / "metrics.jsonl").write_text('{"epoch": 1}\n')  # a started run
    train._prepare_workdir(tiny_config, Workdir(str(workdir)), fresh=False)
    # The run's own method's settings still have to match.
    saved[tiny_config.method] = dict(saved[tiny_config.method], renamed_setting=1)
    (workdir / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="renamed_setting: saved 1 -> now '<absent>'"):
        train._prepare_workdir(tiny_config, Workdir(str(workdir)), fresh=False)
