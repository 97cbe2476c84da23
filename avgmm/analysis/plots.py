"""Figures of a run, drawn from its files (Agg backend: no display needed).

Each function takes plain arrays or the records of `metrics.jsonl` and writes one PNG:
the gap histogram with the fitted mixture (the paper's Figure 2), the mixture across
adaptive steps (Figure 3), unimodal and multimodal accuracy through both phases
(Figure 4), and the loss terms.
"""

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

COLOURS = {"balanced": "tab:red", "imbalanced": "tab:green", "sum": "black",
           "multimodal": "black", "audio": "tab:blue", "visual": "tab:orange"}


def _normal(x: np.ndarray, mean: float, var: float) -> np.ndarray:
    return np.exp(-0.5 * (x - mean) ** 2 / var) / math.sqrt(2 * math.pi * var)


def draw_mixture(ax, params: Mapping[str, float], long_labels: bool = True,
                 prefix: str = "") -> None:
    """The mixture's weighted component densities (dashed) and their sum over the gap
    range, on `ax`; `long_labels` puts each component's parameters in the legend. A
    three-component fit (`pi_2` present) names its outer ones by direction, each in the
    colour of the stream that dominates it."""
    x = np.linspace(-1, 1, 800)
    total = np.zeros_like(x)
    names = ((0, "balanced"), (1, "audio-dominant"), (2, "visual-dominant")) \
        if "pi_2" in params else ((0, "balanced"), (1, "imbalanced"))
    colours = dict(COLOURS, **{"audio-dominant": COLOURS["audio"],
                               "visual-dominant": COLOURS["visual"]})
    for k, name in names:
        w, mu, var = params[f"pi_{k}"], params[f"mu_{k}"], params[f"var_{k}"]
        if w <= 0:
            continue
        y = w * _normal(x, mu, var)
        total += y
        label = (f"{name}: w={w:.3f}, mu={mu:+.3f}, std={math.sqrt(var):.3f}" if long_labels
                 else f"{prefix}{name}")
        ax.plot(x, y, "--", color=colours[name], lw=1, label=label)
    ax.plot(x, total, color=COLOURS["sum"], lw=1.2, label=f"{prefix}mixture")
    ax.set_xlim(-1, 1)
    ax.set_xlabel("modality gap g = p_audio(y) - p_visual(y)")
    ax.set_ylabel("density")


def _draw_fit(ax, gaps: np.ndarray, params: Mapping[str, float], title: str) -> None:
    ax.hist(gaps, bins=60, range=(-1, 1), density=True, color="0.8", label="gaps")
    draw_mixture(ax, params)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="best")


def gmm_fit(path: str, gaps: np.ndarray, params: Mapping[str, float], title: str) -> None:
    """Histogram of the gaps with both weighted component densities and their sum."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    _draw_fit(ax, gaps, params, title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gmm_evolution(path: str, fits: Sequence[Dict], run: str = "") -> None:
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
        _draw_fit(ax, fit["gaps"], fit["params"], fit_title(i, fit).replace(" [", "\n["))
        ax.legend().set_visible(False)
        ax.xaxis.label.set_size(7)
        ax.title.set_size(8)
        if i == 0:
            # One legend for all panels: the per-fit weights and means are in the
            # bottom panel; names only here.
            handles, names = ax.get_legend_handles_labels()
            ax.legend(handles, [n.split(":")[0] for n in names], fontsize=6, loc="best")
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
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if run:
        fig.suptitle(run, fontsize=9)
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


def evaluated(records: List[Dict]) -> List[Dict]:
    """The records of evaluated epochs (all of them unless `config.eval_every_epochs` > 1)."""
    return [r for r in records if "val" in r]


def best_epoch(records: List[Dict]) -> int:
    """The evaluated epoch (1-based) with the best validation accuracy; the first one on
    ties, as the trainer picks its best checkpoint."""
    records = evaluated(records)
    best = max(r["val"]["accuracy"] for r in records)
    return next(r["epoch"] for r in records if r["val"]["accuracy"] == best)


def phases_title(records: List[Dict]) -> str:
    """What the epochs shown trained with, e.g. `warm-up and adaptive`, `concat`."""
    names = {"concat": "concat (fused CE)", "warmup": "warm-up", "adaptive": "adaptive"}
    seen = list(dict.fromkeys(r["phase"] for r in records))  # in order of appearance
    return " and ".join(names.get(p, p) for p in seen)


def _outside_legend(ax) -> None:
    # Right of the axes: a legend inside would cover curves near the top.
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole


def accuracy(path: str, records: List[Dict], run: str = "") -> None:
    """Validation accuracy per epoch: multimodal, audio-only, visual-only; phase start,
    refits and the best-validation epoch marked."""
    shown = evaluated(records)
    epochs = [r["epoch"] for r in shown]
    fig, ax = plt.subplots(figsize=(8.4, 4.2))
    for key, name in (("accuracy", "multimodal"), ("accuracy_audio", "audio"),
                      ("accuracy_visual", "visual")):
        ax.plot(epochs, [100 * r["val"][key] for r in shown], "o-", ms=3,
                color=COLOURS[name], label=f"{name} (val)")
    _mark_phases(ax, records)
    best = best_epoch(records)
    best_acc = 100 * next(r["val"]["accuracy"] for r in shown if r["epoch"] == best)
    ax.plot([best], [best_acc], "*", ms=13, color="gold", mec="black", zorder=5,
            label=f"best validation (epoch {best})")
    ax.set_xlabel("epochs completed")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title((run + "\n" if run else "") + f"accuracy, {phases_title(records)}",
                 fontsize=9)
    ax.grid(alpha=0.3)
    _outside_legend(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare(path: str, runs: Sequence[Tuple[str, List[Dict]]]) -> None:
    """The paper's Figure 4 for several runs: validation accuracy of the multimodal,
    audio-only and visual-only predictions per epoch, one panel each, one line per run."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, records) in enumerate(runs):
        records = evaluated(records)
        epochs = [r["epoch"] for r in records]
        for ax, key in zip(axes, ("accuracy", "accuracy_audio", "accuracy_visual")):
            ax.plot(epochs, [100 * r["val"][key] for r in records], "o-", ms=2.5,
                    color=colours[i % len(colours)], label=name)
    for ax, title in zip(axes, ("multimodal", "audio-only", "visual-only")):
        ax.set_title(f"{title} (validation)")
        ax.set_xlabel("epochs completed")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center",
               ncol=min(len(labels), 3), bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.06 + 0.04 * (len(labels) - 1) // 3, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# The methods whose loss `_paper_loss_terms` spells out term by term; every other
# method's figure shows the loss-like terms it logs (`_logged_loss_terms`).
PAPER_LOSS_METHODS = ("concat", "warmup_only", "adaptive")
# Readable names of logged terms; a term not named here is shown under its own key.
TERM_NAMES = {
    "ce_fused": "CE(fused)", "ce_audio": "CE(audio)", "ce_visual": "CE(visual)",
    "ce_audio_only": "CE(audio), audio-only copies",
    "ce_visual_only": "CE(visual), visual-only copies",
    "proto_ce_audio": "prototype CE(audio)", "proto_ce_visual": "prototype CE(visual)",
    "proto_entropy_audio": "prototype entropy (audio)",
    "proto_entropy_visual": "prototype entropy (visual)",
    "tc_loss_audio": "TC loss (audio)", "tc_loss_visual": "TC loss (visual)",
    "loss_audio_samples": "loss of the audio-trained samples",
    "loss_visual_samples": "loss of the visual-trained samples",
    "weighted_ce": "w_bal * CE(fused)", "gap_sq": "g^2", "gap_shift": "w_imb * (g - mu_0)^2",
}


def _is_loss_term(key: str) -> bool:
    """Whether a logged train term is a loss (or part of one), not a coefficient, a
    weight, a rate or a count."""
    return (key.startswith(("ce_", "proto_ce_", "proto_entropy_", "tc_loss_", "loss_"))
            or key in ("weighted_ce", "gap_sq", "gap_shift"))


def loss_terms(record: Dict, loss_config: Mapping[str, Any],
               method: Optional[str] = None) -> Dict[str, float]:
    """The terms of an epoch's loss under readable names. For the paper's loss
    (`PAPER_LOSS_METHODS`; also when `method` is not given and the record has the
    paper's terms): as they enter it (weights applied), terms switched off (e.g. beta = 0)
    left out. For every other method: the total and each loss-like term it logs."""
    if method in PAPER_LOSS_METHODS or (method is None and _has_paper_terms(record)):
        return _paper_loss_terms(record, loss_config)
    return _logged_loss_terms(record)


def _has_paper_terms(record: Dict) -> bool:
    need = {"concat": ("ce_fused",), "warmup": ("ce_fused", "ce_audio", "ce_visual"),
            "finetune": ("ce_fused",),
            "adaptive": ("weighted_ce", "gap_sq", "gap_shift")}.get(record["phase"])
    return need is not None and all(k in record["train"] for k in need)


def _logged_loss_terms(record: Dict) -> Dict[str, float]:
    t = record["train"]
    out = {"total loss": t["loss"]}
    for key in sorted(k for k in t if _is_loss_term(k)):
        out[TERM_NAMES.get(key, key)] = t[key]
    return out


def _paper_loss_terms(record: Dict, loss_config: Mapping[str, Any]) -> Dict[str, float]:
    t, phase = record["train"], record["phase"]
    out = {"total loss": t["loss"]}
    if phase in ("concat", "warmup"):
        out["CE(fused)"] = t["ce_fused"]
        if phase == "warmup":
            out["CE(audio)"] = t["ce_audio"]
            out["CE(visual)"] = t["ce_visual"]
        return out
    if phase == "finetune":  # GMM purification: CE on the samples the GMM calls balanced
        out["CE(fused), balanced samples"] = t["ce_fused"]
        w = loss_config.get("unimodal_weight", 0.0)
        if w:
            out["w * CE(audio), balanced samples"] = w * t["ce_audio"]
            out["w * CE(visual), balanced samples"] = w * t["ce_visual"]
        return out
    lam = record.get("lambda_t")
    lam = t.get("lambda_t", 1.0) if lam is None else lam
    alpha, beta = loss_config.get("alpha", 1.0), loss_config.get("beta", 1.0)
    gamma = loss_config.get("gamma", 1.0)
    weights = loss_config.get("use_gmm_weights", True)
    if alpha:
        out["alpha * w_bal * CE(fused)" if weights else "alpha * CE(fused)"] = (
            alpha * t["weighted_ce"])
    if beta:
        out["lambda_t * beta * g^2"] = lam * beta * t["gap_sq"]
    if gamma:
        out["lambda_t * gamma * w_imb * (g - mu_0)^2" if weights else
            "lambda_t * gamma * (g - mu_0)^2"] = lam * gamma * t["gap_shift"]
    w = loss_config.get("unimodal_weight", 0.0)
    if w and "ce_audio" in t:
        out["w * CE(audio)"] = w * t["ce_audio"]
        out["w * CE(visual)"] = w * t["ce_visual"]
    return out


def losses(path: str, records: List[Dict], loss_config: Optional[Mapping[str, Any]] = None,
           run: str = "", method: Optional[str] = None) -> None:
    """The terms of each epoch's training loss (epoch means; `loss_terms`), each where its
    phase has it."""
    epochs = np.array([r["epoch"] for r in records])
    per_epoch = [loss_terms(r, loss_config or {}, method) for r in records]
    paper = method in PAPER_LOSS_METHODS or (method is None and
                                             all(_has_paper_terms(r) for r in records))
    names = list(dict.fromkeys(k for terms in per_epoch for k in terms))
    fig, ax = plt.subplots(figsize=(8.8, 4.2))
    for name in names:
        values = np.array([terms.get(name, np.nan) for terms in per_epoch], float)
        values[values <= 0] = np.nan  # log scale
        if np.all(np.isnan(values)):
            continue
        ax.plot(epochs, values, "o-", ms=3, label=name,
                color="black" if name == "total loss" else None)
    _mark_phases(ax, records)
    ax.set_yscale("log")
    ax.set_xlabel("epochs completed")
    ax.set_ylabel("training loss (epoch mean, log scale)")
    ax.set_title((run + "\n" if run else "") + ("loss terms as they enter the loss" if paper
                                                 else "the loss and the loss terms logged"),
                 fontsize=9)
    ax.grid(alpha=0.3, which="both")
    _outside_legend(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
