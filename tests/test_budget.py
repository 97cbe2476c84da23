"""Every method fits the budget it is given: its schedule is made of shares of
`config.epochs`, so a 10-epoch run holds every part of the authors' schedule (warm-up,
modulated epochs, the plain tail, repeated estimates) that a 100-epoch run does; and
every method's equal-tuning entry is one field with two values."""

import functools
import re
from typing import Any, Dict, List

import pytest

from avgmm import methods, run_config
from avgmm.methods import base
from configs import demo

BUDGETS = (2, 5, 10, 12, 100)
# Methods without any hyper-parameter: an equal tuning varies only their learning rate.
NO_HYPER_PARAMETER = ("concat", "warmup_only", "tcmax")
# The parts of each authors' schedule, in order: the values its `describe(epoch)` (or
# `phase(epoch)`) takes, run by run of equal epochs. With at least as many epochs as
# parts every part must show; with fewer, the first ones (the warm-up and the treatment).
PARTS: Dict[str, List[Dict[str, Any]]] = {
    "ogm_ge": [{"modulated": True}, {"modulated": False}],
    "ogm": [{"modulated": False}, {"modulated": True}, {"modulated": False}],
    "opm": [{"dropping": False}, {"dropping": True}],
    "opm_ogm": [{"dropping": False, "modulated": False},
                {"dropping": True, "modulated": True},
                {"dropping": True, "modulated": False}],
    "pmr": [{"pmr_modulated": True}, {"pmr_modulated": False}],
    "sample_valuation": [{"resampled": False}, {"resampled": True}],
    "greedy": [{"rebalancing_allowed": False}, {"rebalancing_allowed": True}],
    "remix": [{"phase": "warmup"}, {"phase": "remix"}],
    "adaptive": [{"phase": "warmup"}, {"phase": "adaptive"}],
    "gmm_guided": [{"phase": "warmup"}, {"phase": "guided"}],
}


def config_for(method: str, epochs: int):
    """configs/demo.py with `epochs` epochs, the adaptive schedule fitted to them (a 40%
    warm-up, then one-epoch steps), valid for `method`."""
    config = demo.get_config()
    config.method = method
    config.epochs = epochs
    warmup = max(1, round(0.4 * epochs))
    config.schedule.warmup_epochs = warmup
    config.schedule.adaptive_steps = epochs - warmup
    config.schedule.epochs_per_step = 1
    run_config.validate_config(config, 1)
    return config


def runs_of(method: base.Method, keys) -> List[Dict[str, Any]]:
    """The schedule over the budget as runs of equal `keys` values (describe and phase)."""
    runs: List[Dict[str, Any]] = []
    for epoch in range(method.epochs()):
        state = dict(method.describe(epoch), phase=method.phase(epoch))
        state = {k: state[k] for k in keys}
        if not runs or runs[-1] != state:
            runs.append(state)
    return runs


@pytest.mark.parametrize("epochs", BUDGETS)
@pytest.mark.parametrize("name", sorted(PARTS))
def test_every_part_of_the_authors_schedule_happens_inside_the_budget(name, epochs):
    method = methods.get(config_for(name, epochs))
    parts = PARTS[name]
    got = runs_of(method, parts[0].keys())
    assert got == parts[:min(len(parts), epochs)], (name, epochs, got)


@pytest.mark.parametrize("epochs", BUDGETS)
def test_g_blending_estimates_again_inside_the_budget(epochs):
    method = methods.get(config_for("g_blending", epochs))
    estimates = [e for e in range(epochs) if method.describe(e)["g_blending_estimate"]]
    # The online version re-estimates every super-epoch: the demo's 10 epochs get four
    # estimates (0, 3, 6, 9), not one from the untrained model.
    assert estimates[0] == 0 and len(estimates) > 1, estimates
    assert method.super_epoch() < epochs


@pytest.mark.parametrize("epochs", [e for e in BUDGETS if e >= 3])
def test_diagnose_relearn_reinitializes_inside_the_budget(epochs):
    # The authors re-initialize after an epoch > 0, before the next: three epochs at least.
    config = config_for("diagnose_relearn", epochs)
    method = methods.get(config)
    reinits = [e for e in range(epochs) if method.describe(e)["reinitialized"]]
    assert 1 <= len(reinits) <= config.diagnose_relearn.reinit_num, reinits
    # Theirs end two thirds into the run (after 20, 40, 60 of 90); so do ours when the
    # budget has room for all of them.
    if epochs >= 10:
        assert len(reinits) == config.diagnose_relearn.reinit_num
        assert reinits[-1] < epochs - 1


@pytest.mark.parametrize("epochs", BUDGETS)
@pytest.mark.parametrize("name", sorted(methods.REGISTRY))
def test_no_setting_is_an_epoch_count_beyond_the_budget(name, epochs):
    config = config_for(name, epochs)
    method = methods.get(config)
    section = config.get(name)
    for field, value in (section.items() if section is not None else ()):
        if field.endswith("_fraction"):
            assert 0 <= value <= 1, (name, field, value)
        elif re.search(r"epoch|start|end", field):
            assert isinstance(value, int) and 0 <= value <= epochs, (name, field, value)
    spans = method.phase_spans()
    assert spans[0]["first_epoch"] == 1 and spans[-1]["last_epoch"] == epochs
    for epoch in range(epochs):
        method.describe(epoch)


@pytest.mark.parametrize("name", sorted(methods.REGISTRY))
def test_every_method_tunes_one_field_with_its_default_and_one_alternative(name):
    cls = methods.REGISTRY[name]
    if name in NO_HYPER_PARAMETER:
        assert cls.defaults() is None and cls.tuning == {}
        return
    assert len(cls.tuning) == 1, cls.tuning
    (field, values), = cls.tuning.items()
    assert len(values) == 2 and values[0] != values[1], values
    config = config_for(name, 10)
    assert functools.reduce(getattr, field.split("."), config) == values[0]
    for value in values:  # each value is a valid setting
        section, _, leaf = field.rpartition(".")
        functools.reduce(getattr, section.split("."), config)[leaf] = value
        run_config.validate_config(config, 1)


@pytest.mark.parametrize("fraction, budget, epochs", [
    (0.0, 10, 0), (0.06, 100, 6), (0.06, 10, 1), (0.06, 2, 1), (0.51, 10, 5),
    (0.5, 5, 3), (0.25, 2, 1), (10 / 30, 10, 3), (10 / 60, 12, 2), (1.0, 7, 7),
    (0.999, 3, 3)])
def test_a_share_of_the_budget_rounds_half_up_keeps_one_epoch_and_fits(fraction, budget,
                                                                       epochs):
    assert base.epochs_of(fraction, budget) == epochs
