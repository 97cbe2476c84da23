"""Figures of a run, drawn from its files (Agg backend: no display needed).

Each function takes plain arrays or the records of `metrics.jsonl` and writes one PNG:
the gap histogram with the fitted mixture (the paper's Figure 2), the mixture across
adaptive steps (Figure 3), unimodal and multimodal accuracy through both phases
(Figure 4), and the loss terms.
"""

import math
from typing import Dict, List, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLOURS = {"balanced": "tab:red", "imbalanced": "tab:green", "sum": "black",
           "multimodal": "black", "audio": "tab:blue", "visual": "tab:orange"}


def _normal(x: np.ndarray, mean: float, var: float) -> np.ndarray:
    return np.exp(-0.5 * (x - mean) ** 2 / var) / math.sqrt(2 * math.pi * var)


def _draw_fit(ax, gaps: np.ndarray, params: Mapping[str, float], title: str) -> None:
    ax.hist(gaps, bins=60, range=(-1, 1), density=True, color="0.8", label="gaps")
    x = np.linspace(-1, 1, 800)
    total = np.zeros_like(x)
    for k, name in ((0, "balanced"), (1, "imbalanced")):
        w, mu, var = params[f"pi_{k}"], params[f"mu_{k}"], params[f"var_{k}"]
        if w <= 0:
            continue
        y = w * _normal(x, mu, var)
        total += y
        ax.plot(x, y, "--", color=COLOURS[name],
                label=f"{name}: w={w:.3f}, mu={mu:+.3f}, std={math.sqrt(var):.3f}")
    ax.plot(x, total, color=COLOURS["sum"], lw=1.2, label="mixture")
    ax.set_xlim(-1, 1)
    ax.set_xlabel("modality gap g = p_audio(y) - p_visual(y)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")


def gmm_fit(path: str, gaps: np.ndarray, params: Mapping[str, float], title: str) -> None:
    """Histogram of the gaps with both weighted component densities and their sum."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    _draw_fit(ax, gaps, params, title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gmm_evolution(path: str, fits: Sequence[Dict]) -> None:
    """All fits as small multiples, plus the imbalanced weight and means across fits.

    `fits`: dicts with `gaps`, `params` (pi_k, mu_k, var_k), `epoch` (epochs completed
    when the fit was made) and `ambiguous` (the gaps did not support two components).
    """
    n = len(fits)
    cols = min(4, n)
    rows = math.ceil(n / cols) + 1
    fig = plt.figure(figsize=(3.2 * cols + 0.5, 2.6 * rows))
    for i, fit in enumerate(fits):
        ax = fig.add_subplot(rows, cols, i + 1)
        _draw_fit(ax, fit["gaps"], fit["params"], fit_title(i, fit))
        ax.legend().set_visible(False)
        ax.xaxis.label.set_size(7)
    ax = fig.add_subplot(rows, 1, rows)
    steps = np.arange(n)
    ax.plot(steps, [f["params"]["pi_1"] for f in fits], "o-", color=COLOURS["imbalanced"],
            label="imbalanced weight pi_1")
    ax.plot(steps, [f["params"]["mu_1"] for f in fits], "s--", color=COLOURS["imbalanced"],
            alpha=0.6, label="imbalanced mean mu_1")
    ax.plot(steps, [f["params"]["mu_0"] for f in fits], "s--", color=COLOURS["balanced"],
            alpha=0.6, label="balanced mean mu_0")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xticks(steps)
    ax.set_xlabel("GMM fit (adaptive step)")
    ax.set_ylabel("value")
    ax.set_title("mixture across adaptive steps")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def fit_title(index: int, fit: Dict) -> str:
    """`fit k (after epoch N)`, flagged when the labelling of the components is arbitrary."""
    flag = " [ambiguous: 1 component by BIC]" if fit.get("ambiguous") else ""
    return f"fit {index} (after epoch {fit['epoch']}){flag}"


def _mark_phases(ax, records: List[Dict]) -> None:
    # Records are numbered by epochs completed: epoch N's line is drawn between N-1 and N.
    first_adaptive = next((r["epoch"] for r in records if r["phase"] == "adaptive"), None)
    if first_adaptive is not None:
        ax.axvline(first_adaptive - 0.5, color="0.3", lw=1.2, label="adaptive phase starts")
    refits = [r["epoch"] - 0.5 for r in records if "gmm_fit" in r]
    for i, x in enumerate(refits):
        ax.axvline(x, color=COLOURS["imbalanced"], ls=":", lw=1,
                   label="GMM refit" if i == 0 else None)


def accuracy(path: str, records: List[Dict]) -> None:
    """Validation accuracy per epoch: multimodal, audio-only, visual-only."""
    epochs = [r["epoch"] for r in records]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for key, name in (("accuracy", "multimodal"), ("accuracy_audio", "audio"),
                      ("accuracy_visual", "visual")):
        ax.plot(epochs, [100 * r["val"][key] for r in records], "o-", ms=3,
                color=COLOURS[name], label=f"{name} (val)")
    _mark_phases(ax, records)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("accuracy through warm-up and adaptive training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


LOSS_TERMS = ("loss", "ce_fused", "ce_audio", "ce_visual", "weighted_ce", "gap_sq",
              "gap_shift")


def losses(path: str, records: List[Dict]) -> None:
    """Every training loss term per epoch (terms absent in a phase are not drawn there)."""
    epochs = np.array([r["epoch"] for r in records])
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for term in LOSS_TERMS:
        values = np.array([r["train"].get(term, np.nan) for r in records], float)
        if np.all(np.isnan(values)):
            continue
        ax.plot(epochs, values, "o-", ms=3, label=term)
    _mark_phases(ax, records)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (epoch mean, log scale)")
    ax.set_title("loss terms")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
