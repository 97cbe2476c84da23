"""A study's comparison of its variants with a reference and with the best peer, paired
by seed: the mean difference in accuracy and its 95% interval, at the best-validation
checkpoint (the headline) and at the last epoch; and the accuracy on the clean clips, the
clips with a degraded image and those with degraded audio, multimodal and unimodal."""

import statistics
from typing import Any, Dict, List, Optional, Sequence

from avgmm import stats

SUBSETS = (("clean", "clean clips"), ("image_degraded", "degraded image"),
           ("audio_degraded", "degraded audio"))


def by_seed(runs: List[Dict[str, Any]], get) -> Dict[int, float]:
    """`{seed: get(results)}` of the runs where it is not None."""
    out = {}
    for r in runs:
        value = get(r["results"])
        if value is not None:
            out[r["config"]["seed"]] = float(value)
    return out


def _best_val(results):
    return results.get("test_accuracy")


def _last(results):
    return results.get("last_epoch", {}).get("accuracy")


def best_peer(variants: Dict[str, List[Dict[str, Any]]], peers: Sequence[str],
              reference: str) -> Optional[str]:
    """The peer (other than the reference) with the highest mean headline accuracy."""
    means = {p: statistics.fmean(by_seed(variants[p], _best_val).values())
             for p in peers if p in variants and p != reference
             and by_seed(variants[p], _best_val)}
    return max(means, key=means.get) if means else None


def paired(a: Dict[int, float], b: Dict[int, float]) -> Optional[Dict[str, float]]:
    """The paired difference a - b over the common seeds of two `{seed: accuracy}`, in
    percentage points, with its 95% Student-t interval (`mean`, `lo`, `hi`, `n`); None
    without a common seed."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    d = stats.paired_difference([a[s] for s in seeds], [b[s] for s in seeds])
    return {k: (100 * v if k != "n" else v) for k, v in d.items()}


def format_difference(d: Optional[Dict[str, float]]) -> str:
    """`+1.2 [-0.3, +2.7]` (one seed: no interval)."""
    if d is None:
        return "-"
    if d["n"] < 2:
        return f"{d['mean']:+.1f} (n=1)"
    return f"{d['mean']:+.1f} [{d['lo']:+.1f}, {d['hi']:+.1f}]"


def _diff_cell(a: Dict[int, float], b: Dict[int, float]) -> str:
    return format_difference(paired(a, b))


def paired_table(variants: Dict[str, List[Dict[str, Any]]], reference: str,
                 peers: Sequence[str], labels: Dict[str, str]) -> str:
    """Markdown: per variant, its headline and last-epoch accuracy and the paired
    differences (percentage points, 95% t-interval over seeds) to the reference and to
    the best peer."""
    peer = best_peer(variants, peers, reference)
    ref = variants.get(reference, [])
    other = variants.get(peer, []) if peer else []
    header = ["variant", "seeds", "test acc, best-val ckpt", "test acc, last",
              f"vs {reference} (best-val)", f"vs {reference} (last)",
              f"vs best peer {peer} (best-val)" if peer else "vs best peer",
              f"vs best peer {peer} (last)" if peer else "vs best peer (last)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, runs in variants.items():
        cells = [labels.get(name, name), str(len(runs))]
        for get in (_best_val, _last):
            values = list(by_seed(runs, get).values())
            cells.append(mean_std(values))
        for base in (ref, other):
            for get in (_best_val, _last):
                cells.append(_diff_cell(by_seed(runs, get), by_seed(base, get))
                             if base and runs is not base else "-")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def mean_std(values: List[float]) -> str:
    """`mean ± sample std` in percent of accuracies given as fractions."""
    if not values:
        return "-"
    mean = 100 * statistics.fmean(values)
    return f"{mean:.1f}" + (f" ± {100 * statistics.stdev(values):.1f}" if len(values) > 1
                            else "")


def subsets_table(variants: Dict[str, List[Dict[str, Any]]],
                  labels: Dict[str, str]) -> Optional[str]:
    """Markdown: accuracy on the clean, degraded-image and degraded-audio test clips
    (multimodal / audio-only / visual-only, best-validation checkpoint); None when the
    runs have no such fields."""
    any_results = [r["results"] for runs in variants.values() for r in runs]
    if not any(f"test_acc_on_{s}" in x for x in any_results for s, _ in SUBSETS):
        return None
    header = ["variant"] + [f"{name}: fused / audio / visual" for _, name in SUBSETS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, runs in variants.items():
        cells = [labels.get(name, name)]
        for subset, _ in SUBSETS:
            parts = []
            for field in (f"test_acc_on_{subset}", f"test_audio_acc_on_{subset}",
                          f"test_visual_acc_on_{subset}"):
                values = [r["results"][field] for r in runs
                          if r["results"].get(field) is not None]
                parts.append(f"{100 * statistics.fmean(values):.1f}" if values else "-")
            cells.append(" / ".join(parts))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)
