"""The experiment variants and the sweeps made of them, declared once.

A variant is a name, the command-line overrides that make it from any config, and the
label tables print for it (with the key of the paper's row it reproduces, where there is
one). A sweep is a list of variants that `python -m avgmm.experiments run SWEEP CONFIG`
(`./launch.sh SWEEP CONFIG`) runs for N seeds, then summarizes. Every run records its
variant's name (`config.variant`), and `python -m avgmm.report` / `avgmm.study` print the
variant's label from here.

Adding a variant to a sweep: one entry below. Table 1's rows come from the registered
methods (`avgmm.methods`): a new method needs no entry.
"""

import dataclasses
from typing import Callable, Dict, List, Optional, Tuple

from avgmm import methods


@dataclasses.dataclass(frozen=True)
class Variant:
    """One experiment: `name` (its folder and `config.variant`), the overrides that make
    it, its label, and the key of the paper's table row it reproduces (None if none)."""

    name: str
    overrides: Tuple[str, ...]
    label: str
    paper_key: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Sweep:
    """Variants run together and summarized by one command (`summary`: report,
    table1 or study)."""

    name: str
    description: str
    variants: Callable[[], List[Variant]]
    summary: str


def _v(name: str, overrides: str, label: str, paper_key: Optional[str] = None) -> Variant:
    return Variant(name, tuple(overrides.split()), label, paper_key)


# Eq. 10 as printed: no unimodal cross entropy, the gap terms' gradient to both modalities.
PAPER_LOSS = "--config.loss.unimodal_weight=0 --config.loss.gap_gradient=both"
# Ours (the reproduction study's recommendation): the warm-up's unimodal terms kept, the
# gap terms' gradient to the weaker modality only.
OUR_LOSS = "--config.loss.unimodal_weight=1.0 --config.loss.gap_gradient=weaker"

# The paper's Tables 2 and 3 and the readings it leaves open, each against the full method
# (in whatever loss the config file sets).
ABLATIONS = [
    _v("full", "", "GMM adaptive loss (full; SGD, reset state)", "full"),
    _v("alpha0", "--config.loss.alpha=0", "w/o L_MM (alpha = 0)", "alpha0"),
    _v("beta0", "--config.loss.beta=0", "w/o |g|^2 (beta = 0)", "beta0"),
    _v("gamma0", "--config.loss.gamma=0", "w/o |g - mu_0|^2 (gamma = 0)", "gamma0"),
    _v("no_gmm_weights", "--config.loss.use_gmm_weights=False", "w/o GMM weights (w = 1)",
       "no_gmm_weights"),
    _v("concat", "--config.method=concat", "Baseline (Concat)", "concat"),
    _v("sgd_no_reset", "--config.optimizer.reset_between_phases=False", "SGD (same state)",
       "sgd_no_reset"),
    _v("adam_reset", "--config.optimizer.name=adam", "Adam (reset state)", "adam_reset"),
    _v("adam_no_reset",
       "--config.optimizer.name=adam --config.optimizer.reset_between_phases=False",
       "Adam (same state)", "adam_no_reset"),
    _v("lambda_step", "--config.loss.lambda_epoch=step", "lambda epoch restarts each step"),
    _v("lambda_global", "--config.loss.lambda_epoch=global", "lambda epoch global"),
    _v("posteriors_refit", "--config.loss.posteriors_from=refit",
       "posteriors of the refit gaps"),
    _v("unimodal_w1", "--config.loss.unimodal_weight=1.0", "unimodal CE kept (ours), w = 1"),
    _v("reset_schedule", "--config.optimizer.reset_schedule=True",
       "reset restarts LR schedule"),
    _v("gmm_bic", "--config.gmm.select=bic", "GMM selected by BIC"),
]

# The reproduction study: the paper's method as printed, its ablations and open readings,
# and our changes.
STUDY = [
    _v("concat", "--config.method=concat", "Baseline (Concat)", "concat"),
    _v("warmup_only", "--config.method=warmup_only", "Warm-up loss only (control)"),
    _v("paper", PAPER_LOSS, "Adaptive loss, eq. 10 as printed", "full"),
    _v("paper_alpha0", PAPER_LOSS + " --config.loss.alpha=0", "eq. 10, alpha = 0"),
    _v("paper_beta0", PAPER_LOSS + " --config.loss.beta=0", "eq. 10, beta = 0"),
    _v("paper_gamma0", PAPER_LOSS + " --config.loss.gamma=0", "eq. 10, gamma = 0"),
    _v("paper_no_gmm_weights", PAPER_LOSS + " --config.loss.use_gmm_weights=False",
       "eq. 10, no GMM weights"),
    _v("paper_no_reset", PAPER_LOSS + " --config.optimizer.reset_between_phases=False",
       "eq. 10, optimizer not reset"),
    _v("paper_lambda_step", PAPER_LOSS + " --config.loss.lambda_epoch=step",
       "eq. 10, lambda epoch restarts each step"),
    _v("paper_posteriors_refit", PAPER_LOSS + " --config.loss.posteriors_from=refit",
       "eq. 10, posteriors of the refit gaps"),
    _v("paper_gmm_bic", PAPER_LOSS + " --config.gmm.select=bic", "eq. 10, GMM selected by BIC"),
    _v("ours_unimodal", "--config.loss.unimodal_weight=1.0 --config.loss.gap_gradient=both",
       "ours: unimodal CE kept"),
    _v("ours_unimodal_weaker", OUR_LOSS,
       "ours: unimodal CE kept, gap gradient to the weaker modality"),
]


def table1() -> List[Variant]:
    """One row per registered method (its label; the paper's key is the method's name),
    the adaptive method twice: eq. 10 as printed and ours, whatever the config's loss."""
    rows = []
    for name, cls in methods.REGISTRY.items():
        if name == "adaptive":
            rows.append(_v("adaptive_paper", "--config.method=adaptive " + PAPER_LOSS,
                           "Adaptive loss, eq. 10 as printed (the paper's method)", "full"))
            rows.append(_v("adaptive_ours", "--config.method=adaptive " + OUR_LOSS,
                           "Adaptive loss, ours (unimodal CE kept, gap gradient to the "
                           "weaker modality)"))
        else:
            rows.append(_v(name, f"--config.method={name}", cls.label, name))
    return rows


SWEEPS: Dict[str, Sweep] = {s.name: s for s in (
    Sweep("ablations", "the paper's Tables 2 and 3 and the readings it leaves open",
          lambda: list(ABLATIONS), "report"),
    Sweep("table1", "the paper's Table 1: every registered method, one protocol",
          table1, "table1"),
    Sweep("study", "the reproduction study: the paper's loss, its ablations, our changes",
          lambda: list(STUDY), "study"),
)}


def all_variants() -> Dict[str, Variant]:
    """Every declared variant by name (a name means the same experiment in every sweep)."""
    found: Dict[str, Variant] = {}
    for sweep in SWEEPS.values():
        for v in sweep.variants():
            found.setdefault(v.name, v)
    return found


def find(name: str) -> Optional[Variant]:
    """The declared variant `name`, or None."""
    return all_variants().get(name)
