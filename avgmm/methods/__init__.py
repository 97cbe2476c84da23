"""The registered training methods; `config.method` names one.

Adding a method: a module with a `Method` subclass (see `base.py`) and one entry in
`_CLASSES` below. Its hyper-parameters appear under `config.<name>` in every config;
`python -m avgmm.methods` lists it, and the Table 1 sweep (`avgmm.experiments`) runs it.
"""

from typing import Any, Dict, Type

import ml_collections

from avgmm.errors import UserError
from avgmm.methods import (adaptive, concat, mla, mmpareto, ogm, ogm_ge, opm, pmr,
                           warmup_only)
from avgmm.methods.base import Method, RunContext, StepContext

# In the order of the rows of Table 1: the baseline first, the paper's method last.
_CLASSES = (concat.Concat, ogm_ge.OgmGe, pmr.PMR, mla.MLA, ogm.Ogm, opm.Opm,
            mmpareto.MMPareto, warmup_only.WarmupOnly, adaptive.Adaptive)
REGISTRY: Dict[str, Type[Method]] = {cls.name: cls for cls in _CLASSES}

__all__ = ["Method", "RunContext", "StepContext", "REGISTRY", "get", "add_defaults",
           "absent_field_ok"]


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
