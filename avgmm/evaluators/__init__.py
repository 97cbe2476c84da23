"""Evaluators: each kind of metric in one module (see `base.py`); `config.evaluators`
names those a run uses.

Adding a metric: a new module here with an `Evaluator` subclass (its `name`, `fields`,
device `sums` and host `finish`, or a `final` pass), and its name in `config.evaluators`
(the defaults in avgmm/config_defaults.py, or `--config.evaluators=...`). The trainer,
results.json, the console line, the report and the study take its fields from it.
`python -m avgmm.evaluators` lists them.
"""

import importlib
import pkgutil
from typing import Dict, List, Sequence

from avgmm.evaluators.base import REGISTRY, Evaluator, FinalContext, Field, Outputs

# Import every module of the package: each registers its evaluators.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["REGISTRY", "Evaluator", "FinalContext", "Field", "Outputs", "build",
           "validate", "fields", "headline_fields", "console_fields"]

REQUIRED = ("accuracy",)


def validate(names: Sequence[str], need) -> None:
    """Checks `config.evaluators` (`need` as in `run_config.validate_config`)."""
    ok = (isinstance(names, (tuple, list)) and all(isinstance(n, str) for n in names)
          and all(n in REGISTRY for n in names))
    need(ok, "evaluators", f"a tuple of evaluator names from {tuple(REGISTRY)}")
    need(all(r in names for r in REQUIRED), "evaluators",
         f"a tuple that includes {REQUIRED} (it selects the best-validation checkpoint)")


def build(config, meta) -> List[Evaluator]:
    """The configured evaluators that apply to the dataset, in the config's order."""
    chosen = [REGISTRY[name](config, meta) for name in config.evaluators]
    return [ev for ev in chosen if ev.applies(meta)]


def fields(names: Sequence[str] = None) -> List[Field]:
    """The split-metric fields of the named evaluators (all registered ones by default)."""
    names = list(REGISTRY) if names is None else names
    return [f for n in names if n in REGISTRY for f in REGISTRY[n].fields]


def headline_fields(names: Sequence[str] = None, columns: bool = False) -> List[Field]:
    """The fields results.json holds for the best and the last model (`columns`: only
    those the report's tables show)."""
    return [f for f in fields(names) if f.headline and (f.column or not columns)]


def console_fields(evaluators: Sequence[Evaluator]) -> List[Field]:
    """The fields the epoch's console line shows, the first one as the main number."""
    return [f for ev in evaluators for f in ev.fields if f.console]


def describe() -> Dict[str, str]:
    """`{name: first docstring paragraph}` of every registered evaluator."""
    return {name: " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
            for name, cls in REGISTRY.items()}
