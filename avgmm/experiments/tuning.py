"""Equal tuning for a sweep: every variant gets the same small grid (learning rates
around the config's, times its method's one main hyper-parameter), the setting with the
best mean validation accuracy over the selection seeds is chosen, and the final runs use
it. Never the test split: selection reads `best_val_accuracy` from each run's results.

Layout under the sweep's root: `<variant>/<setting>/seed<k>` for every run (the grid and
the final runs of the chosen setting share the folder, so the selection seeds are
reused), and `selection.json` with each variant's chosen setting, the validation mean of
every setting and how many settings it was given.
"""

import dataclasses
import itertools
import json
import os
import statistics
from typing import Any, Dict, List, Optional, Sequence, Tuple

from avgmm import methods
from avgmm.errors import ExperimentError
from avgmm.experiments.variants import Variant
from avgmm.files import write_json

# Learning rates tried, as factors of the config's.
LR_FACTORS = (1 / 3, 1.0, 3.0)
SELECTION_FILE = "selection.json"


@dataclasses.dataclass(frozen=True)
class Setting:
    """One point of a variant's grid: its folder name, the overrides that make it and the
    values they set."""

    name: str
    overrides: Tuple[str, ...]
    values: Dict[str, Any]


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def method_of(variant: Variant, default: str) -> str:
    """The method a variant trains: `--config.method=` among its overrides, else the
    config's own."""
    for o in variant.overrides:
        if o.startswith("--config.method="):
            return o.split("=", 1)[1]
    return default


def grid(variant: Variant, learning_rate: float, default_method: str) -> List[Setting]:
    """The variant's settings: `LR_FACTORS` x the values of its method's `tuning` entry."""
    name = method_of(variant, default_method)
    if name not in methods.REGISTRY:
        raise ExperimentError(f"variant {variant.name} trains an unknown method {name!r}")
    axes: List[Tuple[str, Sequence[Any]]] = [
        ("optimizer.learning_rate", [learning_rate * f for f in LR_FACTORS])]
    axes += list(methods.REGISTRY[name].tuning.items())
    settings = []
    for point in itertools.product(*(values for _, values in axes)):
        values = {field: v for (field, _), v in zip(axes, point)}
        folder = "_".join(f"{field.split('.')[-1]}{_fmt(v)}" for field, v in values.items())
        settings.append(Setting(folder, tuple(f"--config.{field}={v!r}"
                                              for field, v in values.items()), values))
    return settings


def _val_accuracy(run_dir: str) -> Optional[float]:
    try:
        with open(os.path.join(run_dir, "results.json"), encoding="utf-8") as f:
            return float(json.load(f)["best_val_accuracy"])
    except (OSError, ValueError, KeyError):
        return None


def select(root: str, variants: Sequence[Variant], grids: Dict[str, List[Setting]],
           seeds: int) -> Dict[str, Any]:
    """Each variant's setting with the best mean validation accuracy over seeds
    0..seeds-1 (ties: the first in grid order); raises if a grid run is missing."""
    selection: Dict[str, Any] = {}
    for v in variants:
        means = {}
        for s in grids[v.name]:
            accs = [_val_accuracy(os.path.join(root, v.name, s.name, f"seed{k}"))
                    for k in range(seeds)]
            if any(a is None for a in accs):
                raise ExperimentError(f"tuning run {v.name}/{s.name} has no results: run "
                                      "the same command again to finish the grid")
            means[s.name] = statistics.fmean(accs)
        best = max(grids[v.name], key=lambda s: means[s.name])
        selection[v.name] = {"setting": best.name, "overrides": list(best.overrides),
                             "values": best.values, "settings_tried": len(grids[v.name]),
                             "selection_seeds": seeds, "val_means": means}
    return selection


def write_selection(root: str, selection: Dict[str, Any]) -> str:
    """Writes `selection.json` under `root`; returns its path."""
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, SELECTION_FILE)
    write_json(path, selection)
    return path


def read_selection(path: str) -> Dict[str, Any]:
    """A `selection.json` (or the one in a sweep's root folder)."""
    if os.path.isdir(path):
        path = os.path.join(path, SELECTION_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ExperimentError(f"cannot read the tuning selection {path}: {e}") from e
