"""The registered training methods; `config.method` names one.

Adding a method: a module with a `Method` subclass (see `base.py`) and one entry in
`_CLASSES` below. Its hyper-parameters appear under `config.<name>` in every config;
`python -m avgmm.methods` lists it, and the Table 1 sweep (`avgmm.experiments`) runs it.
"""

from typing import Any, Dict, Iterable, List, Type

import ml_collections

from avgmm.errors import UserError
from avgmm.methods import (adaptive, agm, concat, diagnose_relearn, g_blending, gmm_guided,
                           greedy, mla, mmpareto, ogm, ogm_ge, opm, opm_ogm, pmr, remix,
                           sample_valuation, tcmax, warmup_only)
from avgmm.methods.base import Method, RunContext, StepContext

# In the order of the rows of Table 1: the baseline and the paper's rows in its order,
# then the methods it does not list, the control, and the paper's method last.
_CLASSES = (concat.Concat, g_blending.GBlending, ogm_ge.OgmGe, greedy.Greedy, pmr.PMR,
            agm.AGM, mla.MLA, diagnose_relearn.DiagnoseRelearn, opm_ogm.OpmOgm, ogm.Ogm,
            opm.Opm, mmpareto.MMPareto, sample_valuation.SampleValuation, remix.Remix,
            tcmax.TCMax, warmup_only.WarmupOnly, gmm_guided.GmmGuided, adaptive.Adaptive)
REGISTRY: Dict[str, Type[Method]] = {cls.name: cls for cls in _CLASSES}

__all__ = ["Method", "RunContext", "StepContext", "REGISTRY", "get", "add_defaults",
           "absent_field_ok", "unused_fields"]


def get(config: ml_collections.ConfigDict) -> Method:
    """The method `config.method` names, built on the config."""
    if config.method not in REGISTRY:
        raise UserError(f"config.method={config.method!r} is not allowed: one of "
                        f"{tuple(REGISTRY)}")
    return REGISTRY[config.method](config)


def add_defaults(config: ml_collections.ConfigDict) -> None:
    """Adds every registered method's hyper-parameters as `config.<name>`."""
    for name, cls in REGISTRY.items():
        defaults = cls.defaults()
        if defaults is not None:
            config[name] = defaults


def absent_field_ok(config: ml_collections.ConfigDict, field: str, value: Any) -> bool:
    """Whether a run saved before `field` (dotted) existed ran as if it had `value`: the
    settings of methods other than `config.method` play no part, and the method's own
    new settings are harmless at their defaults."""
    name, _, rest = field.partition(".")
    if name not in REGISTRY or not rest:
        return False
    if name != config.method:
        return True
    defaults = REGISTRY[name].defaults()
    try:
        return defaults is not None and defaults[rest] == value
    except (KeyError, AttributeError):
        return False


def unused_fields(config: ml_collections.ConfigDict, fields: Iterable[str]) -> List[str]:
    """The dotted `fields` (e.g. a command line's overrides) that the run of `config` never
    reads: the settings of registered methods other than `config.method` (every method
    reads only its own section, `config[cls.name]`)."""
    return [f for f in fields
            if f.partition(".")[0] in REGISTRY and f.partition(".")[0] != config.method]
