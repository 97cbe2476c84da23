"""Equal tuning for a sweep, sized for a short budget: every variant gets the same number
of settings, the choice is made on validation accuracy only, and the final runs reuse the
runs the choice was made on.

The grid: learning rates around the config's (`LR_FACTORS`) times the two values of the
variant's method's main hyper-parameter (its `tuning` entry): `SETTINGS` settings; a
method without a hyper-parameter gets `SETTINGS` learning rates (`LR_FACTORS_ALONE`).

The protocol, in three stages:
1. screen: every setting on seed 0;
2. confirm: the `CONFIRM_TOP` settings with the best seed-0 validation accuracy on seeds
   1 and 2; the one with the best mean over seeds 0-2 is chosen;
3. final: the chosen setting on the remaining seeds up to `final_seeds` (default 5), so
   that its final seeds 0-4 include the three it was chosen on.
Per variant: SETTINGS + 2 * CONFIRM_TOP + (final_seeds - 3) runs (6 + 4 + 2 = 12).
Never the test split: selection reads `best_val_accuracy` from each run's results. Ties
go to the setting whose name sorts first, so the choice is a function of the validation
accuracies alone (a ledger reproduces it without the grid).

Layout under the sweep's root: `<variant>/<setting>/seed<k>` for every run and
`selection.json` with each variant's choice, the validation means it was made on and how
many settings the variant was given.
"""

import ast
import dataclasses
import itertools
import json
import os
import statistics
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from avgmm import methods
from avgmm.errors import ExperimentError
from avgmm.experiments import ledger
from avgmm.experiments.variants import Variant
from avgmm.files import write_json

# Learning rates tried, as factors of the config's, beside a hyper-parameter ...
LR_FACTORS = (1 / 3, 1.0, 3.0)
# ... and alone (as many as the others' settings, log-spaced around the config's).
LR_FACTORS_ALONE = tuple(3.0 ** (k / 2) for k in range(-3, 3))
# Values each method's `tuning` entry gives its main hyper-parameter.
VALUES_PER_PARAMETER = 2
SETTINGS = len(LR_FACTORS) * VALUES_PER_PARAMETER
SCREEN_SEEDS = (0,)
CONFIRM_TOP = 2
CHOICE_SEEDS = (0, 1, 2)
SELECTION_FILE = "selection.json"
VAL_FIELD = "best_val_accuracy"


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
    """The variant's `SETTINGS` settings: `LR_FACTORS` x the values of its method's
    `tuning` entry, or `LR_FACTORS_ALONE` for a method without one."""
    name = method_of(variant, default_method)
    if name not in methods.REGISTRY:
        raise ExperimentError(f"variant {variant.name} trains an unknown method {name!r}")
    tuned = list(methods.REGISTRY[name].tuning.items())
    factors = LR_FACTORS if tuned else LR_FACTORS_ALONE
    axes: List[Tuple[str, Sequence[Any]]] = [
        ("optimizer.learning_rate", [learning_rate * f for f in factors])] + tuned
    settings = []
    for point in itertools.product(*(values for _, values in axes)):
        values = {field: v for (field, _), v in zip(axes, point)}
        folder = "_".join(f"{field.split('.')[-1]}{_fmt(v)}" for field, v in values.items())
        settings.append(Setting(folder, tuple(f"--config.{field}={v!r}"
                                              for field, v in values.items()), values))
    return settings


# (variant, setting, seed) -> best validation accuracy
Accuracies = Dict[Tuple[str, str, int], float]


def accuracies_of_lines(lines: Iterable[Mapping[str, Any]]) -> Accuracies:
    """The validation accuracies a ledger records, by (variant, setting, seed)."""
    return {(l["variant"], l.get("setting", ""), int(l["seed"])): float(l["results"][VAL_FIELD])
            for l in lines if l["results"].get(VAL_FIELD) is not None}


def accuracies_of_runs(runs: Iterable[Any]) -> Accuracies:
    """The validation accuracies of finished planned runs (`runner.PlannedRun`), read from
    their workdirs' results.json."""
    out: Accuracies = {}
    for r in runs:
        try:
            with open(os.path.join(r.workdir, "results.json"), encoding="utf-8") as f:
                out[(r.variant.name, r.setting, r.seed)] = float(json.load(f)[VAL_FIELD])
        except (OSError, ValueError, KeyError):
            continue
    return out


def top_settings(acc: Accuracies, variant: str, names: Sequence[str]) -> List[str]:
    """The `CONFIRM_TOP` of `names` with the best seed-0 validation accuracy."""
    return sorted(names, key=lambda n: (-acc[(variant, n, SCREEN_SEEDS[0])], n))[:CONFIRM_TOP]


def choose(acc: Accuracies, variant: str, candidates: Sequence[str]) -> Tuple[str, Dict[str, float]]:
    """The candidate with the best mean validation accuracy over `CHOICE_SEEDS`, and every
    candidate's mean."""
    means = {n: statistics.fmean(acc[(variant, n, s)] for s in CHOICE_SEEDS)
             for n in candidates}
    return min(candidates, key=lambda n: (-means[n], n)), means


def missing(acc: Accuracies, variant: str, names: Sequence[str], seeds: Sequence[int]
            ) -> List[Tuple[str, int]]:
    """The (setting, seed) pairs among `names` x `seeds` without a result."""
    return [(n, s) for n in names for s in seeds if (variant, n, s) not in acc]


def selection_of_lines(lines: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Each tuned variant's choice, made again from a ledger alone by the same protocol
    (its screened settings, the top ones confirmed, the best mean chosen); raises where a
    stage is unfinished."""
    acc = accuracies_of_lines(lines)
    out: Dict[str, Any] = {}
    by_variant: Dict[str, Dict[str, Mapping[str, Any]]] = {}
    for l in lines:
        if l.get("setting"):
            by_variant.setdefault(l["variant"], {}).setdefault(l["setting"], l)
    for variant, settings in by_variant.items():
        reused = {l["selected_in"] for l in settings.values() if l.get("selected_in")}
        if reused:  # another sweep's choice, run again here: nothing was chosen here
            name = sorted(settings)[0]
            out[variant] = {"setting": name,
                            "overrides": list(settings[name].get("setting_overrides", [])),
                            "values": _values(settings[name].get("setting_overrides", [])),
                            "settings_tried": "chosen in " + ", ".join(
                                os.path.basename(p) for p in sorted(reused))}
            continue
        screened = sorted(n for n in settings if (variant, n, SCREEN_SEEDS[0]) in acc)
        if not screened:
            raise ExperimentError(f"the ledger has no screening run (seed 0) of {variant}")
        top = top_settings(acc, variant, screened)
        gaps = missing(acc, variant, top, CHOICE_SEEDS)
        if gaps:
            raise ExperimentError(
                f"the ledger has not finished tuning {variant}: missing "
                + ", ".join(f"{n} seed {s}" for n, s in gaps)
                + "; run the tuned sweep again with this ledger")
        chosen, means = choose(acc, variant, top)
        line = settings[chosen]
        out[variant] = {"setting": chosen, "overrides": list(line.get("setting_overrides", [])),
                        "values": _values(line.get("setting_overrides", [])),
                        "settings_tried": len(screened), "val_means": means,
                        "screen": {n: acc[(variant, n, 0)] for n in screened}}
    return out


def _values(overrides: Sequence[str]) -> Dict[str, Any]:
    """`{field: value}` of `--config.FIELD=VALUE` overrides."""
    out = {}
    for o in overrides:
        field, _, value = o[len("--config."):].partition("=")
        try:
            out[field] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[field] = value
    return out


def chosen_lines(lines: Sequence[Mapping[str, Any]], selection: Mapping[str, Any]
                 ) -> List[Mapping[str, Any]]:
    """The lines of each variant's chosen setting (untuned lines as they are)."""
    return [l for l in lines if not l.get("setting")
            or (l["variant"] in selection and selection[l["variant"]]["setting"] == l["setting"])]


def write_selection(root: str, selection: Dict[str, Any]) -> str:
    """Writes `selection.json` under `root`; returns its path."""
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, SELECTION_FILE)
    write_json(path, selection)
    return path


def read_selection(path: str) -> Dict[str, Any]:
    """The choices of a tuned sweep: its `selection.json` (or the one in a sweep's root
    folder), or made again from its ledger (a `.jsonl` file)."""
    if os.path.isdir(path):
        path = os.path.join(path, SELECTION_FILE)
    if path.endswith(".jsonl"):
        if not os.path.exists(path):
            raise ExperimentError(f"cannot read the tuning ledger {path}: no such file")
        return selection_of_lines(ledger.read([path]))
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ExperimentError(f"cannot read the tuning selection {path}: {e}") from e


def planned_count(variants: int, final_seeds: int) -> Dict[str, int]:
    """Runs of the protocol for `variants` variants: per stage and in all."""
    counts = {"screen": variants * SETTINGS * len(SCREEN_SEEDS),
              "confirm": variants * CONFIRM_TOP * (len(CHOICE_SEEDS) - len(SCREEN_SEEDS)),
              "final": variants * max(0, final_seeds - len(CHOICE_SEEDS))}
    counts["total"] = sum(counts.values())
    return counts


def table_runs(paths: Sequence[str]) -> Tuple[List[Dict[str, Any]], Optional[Dict[str, Any]],
                                              List[Dict[str, Any]]]:
    """What a table shows from ledgers alone: the runs (`ledger.as_run`; of a tuned sweep,
    each variant's chosen setting only), the choice made again from the lines (None when
    untuned) and all the lines (for the cost of tuning)."""
    lines = ledger.read(paths)
    if not lines:
        raise ExperimentError(f"{', '.join(paths)} records no run")
    selection = None
    if any(line.get("setting") for line in lines):
        selection = selection_of_lines(lines)
    kept = chosen_lines(lines, selection) if selection else lines
    return [ledger.as_run(line) for line in kept], selection, lines
