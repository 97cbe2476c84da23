"""What Table 1 adds to each row: how often its GMM fits were ambiguous and what a run
cost (from the runs' results.json and timing.json, or their ledger lines); for a tuned
sweep also the setting chosen on validation, how many settings the variant was given and,
from a ledger, the runs and hours its row took, tuning included."""

import os
import statistics
from typing import Any, Dict, List, Mapping, Optional, Sequence

from avgmm.errors import ReportError

# Extra columns of a tuned Table 1: (row key, header).
COLUMNS = (("setting", "chosen setting (on validation)"), ("settings_tried", "settings"),
           ("ambiguous_fits", "ambiguous GMM fits"), ("seconds_per_run", "s / run"),
           ("train_vs_concat", "train time vs concat"), ("runs_made", "runs (tuning incl.)"),
           ("hours", "hours (tuning incl.)"))


def selected_runs(runs: List[str], root: str, selection: Dict[str, Any]) -> List[str]:
    """The runs of each variant's chosen setting (`root/<variant>/<setting>/...`)."""
    keep = [os.path.join(os.path.abspath(root), v, chosen["setting"]) + os.sep
            for v, chosen in selection.items()]
    found = [r for r in runs if any(os.path.abspath(r).startswith(k) for k in keep)]
    if not found:
        raise ReportError(f"no finished run of a chosen setting under {root}: run the "
                          "sweep's final seeds first")
    return found


def annotate(rows: List[Dict[str, Any]], selection: Optional[Dict[str, Any]],
             lines: Optional[Sequence[Mapping[str, Any]]] = None) -> None:
    """Adds the cost columns (ambiguous GMM fits, seconds per run, train time vs
    concat) to every row that has runs, and with a tuned sweep's `selection` the chosen
    setting and the settings tried (in place); with the sweep's ledger `lines`, also the
    hours all of the variant's runs took (its tuning included)."""
    for r in rows:
        if not r.get("members"):
            continue
        if selection is not None:
            chosen = selection.get(r.get("variant", ""), {})
            r["setting"] = ", ".join(f"{k.split('.')[-1]} {v:.3g}" if isinstance(v, float)
                                     else f"{k.split('.')[-1]} {v}"
                                     for k, v in chosen.get("values", {}).items())
            r["settings_tried"] = chosen.get("settings_tried")
        results = [m["results"] for m in r["members"]]
        fits = sum(int(x.get("gmm_fits", 0)) for x in results)
        ambiguous = sum(len(x.get("gmm_ambiguous_fits", [])) for x in results)
        r["ambiguous_fits"] = f"{ambiguous}/{fits}" if fits else None
        timings = [m.get("timing") or {} for m in r["members"]]
        walls = [t["wall"] for t in timings if t.get("wall") is not None]
        trains = [t["train"] for t in timings if t.get("train") is not None]
        r["seconds_per_run"] = statistics.fmean(walls) if walls else None
        r["_train_seconds"] = statistics.fmean(trains) if trains else None
        if lines is not None:
            own = [l.get("seconds") or 0.0 for l in lines if l["variant"] == r.get("variant")]
            r["runs_made"] = len(own)
            r["hours"] = sum(own) / 3600
    concat = next((r for r in rows if r.get("method_name") == "concat"
                   and r.get("_train_seconds")), None)
    for r in rows:
        base = concat["_train_seconds"] if concat else None
        own = r.get("_train_seconds")
        r["train_vs_concat"] = own / base if own and base else None


def cell(row: Dict[str, Any], key: str) -> str:
    """One tuned column's cell."""
    value = row.get(key)
    if value is None or value == "":
        return "-" if row.get("seeds") else ""
    if key == "seconds_per_run":
        return f"{value:.0f}"
    if key == "train_vs_concat":
        return f"{value:.2f}x"
    if key == "hours":
        return f"{value:.2f}"
    return str(value)
