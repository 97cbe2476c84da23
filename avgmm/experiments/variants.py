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
    _v("warmup_only", "--config.method=warmup_only", "Warm-up loss only (control)",
       "warmup_only"),
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


# Does GMM guidance help? The peers, the paper's loss and ours, purification with the same
# budget, and the GMM-guided treatments (gmm_guided), against warm-up only.
GUIDED_PEERS = ("concat", "warmup_only", "mmpareto", "mla", "sample_valuation", "remix")


# The study's final tables: the peers the screening kept, the paper's eq. 10, ours and
# gmm_guided at the defaults the two-sided screening chose (docs/gmm_guidance.md says
# what was dropped and why).
GUIDED_FINAL = ("concat", "warmup_only", "mmpareto", "mla", "sample_valuation",
                "adaptive_paper", "adaptive_ours", "guided_weak0")


def _guided(name: str, label: str, **fields) -> Variant:
    """A gmm_guided variant: the method and its settings."""
    return Variant(name, ("--config.method=gmm_guided",) + tuple(
        f"--config.gmm_guided.{k}={v!r}" for k, v in fields.items()), label)


def guided() -> List[Variant]:
    """The GMM-guidance study's variants (`python -m avgmm.study` compares them with
    warmup_only and the best of `GUIDED_PEERS`, paired by seed)."""
    table = {v.name: v for v in table1()}
    return ([table[name] for name in GUIDED_PEERS]
            + [table["adaptive_paper"], table["adaptive_ours"],
               _v("purification", "--config.method=adaptive " + OUR_LOSS
                  + " --config.schedule.adaptive_steps=2 --config.adaptive.finetune_epochs=2",
                  "ours + GMM purification (2 of the adaptive epochs)"),
               _guided("guided_weak0", "GMM-guided: weak stream not taught where imbalanced",
                       weak_weight=0.0),
               _guided("guided_weak0_uniform", "GMM-guided: weak stream taught to abstain",
                       weak_weight=0.0, uniform_weight=1.0),
               _guided("guided_help", "GMM-guided: weak stream helped (weight 2)",
                       weak_weight=2.0),
               _guided("guided_reliability", "GMM-guided: reliability-aware fusion",
                       weak_weight=1.0, reliability_fusion=True),
               _guided("guided_weak0_reliability",
                       "GMM-guided: not taught + reliability-aware fusion",
                       weak_weight=0.0, reliability_fusion=True)])


SWEEPS: Dict[str, Sweep] = {s.name: s for s in (
    Sweep("ablations", "the paper's Tables 2 and 3 and the readings it leaves open",
          lambda: list(ABLATIONS), "report"),
    Sweep("table1", "the paper's Table 1: every registered method, one protocol",
          table1, "table1"),
    Sweep("study", "the reproduction study: the paper's loss, its ablations, our changes",
          lambda: list(STUDY), "study"),
    Sweep("guided", "does GMM guidance help? peers, eq. 10, ours, purification and the "
          "GMM-guided treatments, paired against warm-up only", guided, "study"),
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
