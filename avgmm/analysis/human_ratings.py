"""The paper's Figure 2 coloured by what people heard and saw: the gap histogram of a
scored split, split by CREMA-D's human-rated categories (`data_prep.crema_ratings`),
with the GMM that gave the posteriors.

Categories, from the per-clip flags `human_voice_right` and `human_face_right`: voice
only right (the face did not inform people), face only right (the voice did not), both
right, neither right.
"""

from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

from avgmm.analysis import plots

FIELDS = ("human_voice_right", "human_face_right")
CATEGORIES = ("voice only right", "face only right", "both right", "neither right")
COLOURS = {"voice only right": plots.COLOURS["audio"],
           "face only right": plots.COLOURS["visual"],
           "both right": "tab:purple", "neither right": "0.55"}


def has_ratings(rows: Sequence[Mapping[str, Any]]) -> bool:
    return bool(rows) and all(k in rows[0] for k in FIELDS)


def category(row: Mapping[str, Any]) -> str:
    voice, face = bool(row["human_voice_right"]), bool(row["human_face_right"])
    if voice != face:
        return CATEGORIES[0] if voice else CATEGORIES[1]
    return CATEGORIES[2] if voice else CATEGORIES[3]


def gaps_by_category(rows: Sequence[Mapping[str, Any]]) -> Dict[str, np.ndarray]:
    """`{category: gaps}` in `CATEGORIES` order (every category, possibly empty)."""
    out: Dict[str, List[float]] = {c: [] for c in CATEGORIES}
    for row in rows:
        out[category(row)].append(float(row["gap"]))
    return {c: np.asarray(v, np.float64) for c, v in out.items()}


def gap_histogram(path: str, rows: Sequence[Mapping[str, Any]],
                  params: Mapping[str, float], title: str) -> Dict[str, int]:
    """Stacked gap histogram (density of the whole split) by category, and the mixture's
    components; returns the clips per category."""
    import matplotlib.pyplot as plt

    groups = gaps_by_category(rows)
    total = sum(len(g) for g in groups.values())
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    bins = np.linspace(-1, 1, 61)
    # Stacked counts scaled so the whole stack is the split's density, as in Figure 2.
    weights = [np.full(len(g), 1.0 / (max(total, 1) * (bins[1] - bins[0])))
               for g in groups.values()]
    ax.hist(list(groups.values()), bins=bins, weights=weights, stacked=True,
            color=[COLOURS[c] for c in groups],
            label=[f"{c} ({len(g)})" for c, g in groups.items()])
    plots.draw_mixture(ax, params, long_labels=False, prefix="GMM ")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7, loc="best", title="what people recognized", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {c: len(g) for c, g in groups.items()}
