"""Greedy: the balanced multi-modal learning algorithm of Wu, Jastrzebski, Cho, Geras,
"Characterizing and Overcoming the Greedy Nature of Learning in Multi-modal Deep Neural
Networks", ICML 2022.

The model (`avgmm.models.mmtm.MMTMClassifier`) joins the two ResNets by multimodal
transfer modules, so each modality's stream has a "main" path (its own encoder and
classifier) and a "bypass" (the MMTM layers through which the other modality feeds it).
The loss is `CE(l_a) + CE(l_v)`, each stream's own classifier. After every step's backward
pass, each modality's conditional learning speed is tracked by cumulative sums over steps
of `||g||^2 / ||w||^2` of its main and bypass parameters (`M_main_m`, `M_bypass_m`; the
shared MMTM squeeze layers count in both bypasses), and

    d = log10(M_bypass_a / M_main_a) - log10(M_bypass_v / M_main_v).

From the second epoch on, when `|d| > threshold` the next `window` steps are re-balancing
steps for the modality that relies more on its bypass (`d > 0`: audio): its MMTM gates
are replaced by their running means, so its stream learns from its own input; the sums
pause meanwhile.

Reference: nyukat/greedy_multimodal_learning (`src/callbacks.py`
`Bias_Mitigation_Strong`, `src/balanced_mmtm.py`, `src/model.py`, `train.py`,
`configs/training_guided.gin`); GeWu-Lab/BalanceBenchmark
(`balancemm/trainer/Greedy_trainer.py`, `balancemm/models/avclassify_model.py`
`BaseClassifierGreedyModel`, `MMTM`, `configs/trainer_config.yaml`). See docs/methods.md.
"""

import math
from typing import Any, Tuple

import flax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from avgmm.methods import base
from avgmm.models import mmtm

# Order of the speed sums in `GreedyState.sums`.
SUMS = ("main_audio", "main_visual", "bypass_audio", "bypass_visual")


@flax.struct.dataclass
class GreedyState:
    """The cumulative speed sums (`SUMS` order), the last speed difference `d`, and the
    re-balancing schedule: whether the next step re-balances, for which modality
    (`mmtm.AUDIO` / `mmtm.VISUAL`), and how many re-balancing steps have run."""

    sums: jnp.ndarray
    d_speed: jnp.ndarray
    rebalancing: jnp.ndarray
    caring: jnp.ndarray
    window_step: jnp.ndarray


# ---------------------------------------------------------------------- the rules
def _groups(path: Tuple[str, ...]) -> Tuple[str, ...]:
    """The speed groups (`SUMS` names) a parameter, named by its path, belongs to."""
    top = path[0]
    if top in ("audio_encoder", "visual_encoder"):
        return (f"main_{top.split('_')[0]}",)
    if top == "head":
        return (f"main_{path[1]}",)
    if top.startswith("mmtm"):
        return {"fc_audio": ("bypass_audio",), "fc_visual": ("bypass_visual",),
                "fc_squeeze": ("bypass_audio", "bypass_visual")}[path[1]]
    return ()


def group_speeds(grads: Any, params: Any) -> jnp.ndarray:
    """`[4]` (`SUMS` order): for each group, `sum ||g||^2 / sum ||w||^2` over its
    parameters (the reference's ratio of the summed squares)."""
    g2 = {k: jnp.float32(0.0) for k in SUMS}
    w2 = {k: jnp.float32(0.0) for k in SUMS}
    flat_g = traverse_util.flatten_dict(grads)
    for path, w in traverse_util.flatten_dict(params).items():
        for group in _groups(path):
            g2[group] = g2[group] + jnp.sum(jnp.square(flat_g[path].astype(jnp.float32)))
            w2[group] = w2[group] + jnp.sum(jnp.square(w.astype(jnp.float32)))
    return jnp.stack([g2[k] / w2[k] for k in SUMS])


def speed_difference(sums: jnp.ndarray) -> jnp.ndarray:
    """`log10(M_bypass_a / M_main_a) - log10(M_bypass_v / M_main_v)`; 0 where it is not
    finite (a group without gradient yet)."""
    d = jnp.log10(sums[2] / sums[0]) - jnp.log10(sums[3] / sums[1])
    return jnp.where(jnp.isfinite(d), d, 0.0)


def advance(state: GreedyState, speeds: jnp.ndarray, unlocked: jnp.ndarray,
            threshold: float, window: int) -> GreedyState:
    """The schedule after one step's backward pass (`Bias_Mitigation_Strong`):

    - locked (first epochs): the sums grow, no re-balancing;
    - unlocked, not re-balancing: the sums grow and `d` is recomputed; `|d| > threshold`
      starts re-balancing for audio (`d > 0`) or visual, from the next step on;
    - re-balancing: the sums pause; it ends after `window` re-balancing steps.
    """
    measuring = jnp.logical_or(unlocked <= 0, jnp.logical_not(state.rebalancing))
    sums = jnp.where(measuring, state.sums + speeds, state.sums)
    d = jnp.where(measuring, speed_difference(sums), state.d_speed)
    starts = (unlocked > 0) & measuring & (jnp.abs(d) > threshold)
    step = jnp.where(state.rebalancing, state.window_step + 1, 0)
    continues = (unlocked > 0) & state.rebalancing & (step < window)
    caring = jnp.where(d > 0, mmtm.AUDIO, mmtm.VISUAL).astype(jnp.int32)
    return GreedyState(sums=sums, d_speed=d, rebalancing=starts | continues,
                       caring=jnp.where(starts, caring, state.caring),
                       window_step=jnp.where(starts, 0, step).astype(jnp.int32))


# ---------------------------------------------------------------------- the method
class Greedy(base.Method):
    """`CE(l_a) + CE(l_v)` on an MMTM model; re-balancing steps for the modality that
    leans on its bypass when the conditional learning speeds drift apart."""

    name = "greedy"
    label = "Greedy"
    head = "late"
    model_class = mmtm.MMTMClassifier
    # threshold: the authors' 0.01, then 1.0. |d| stayed between 0.34 and 0.51 on the
    # demo data, so every threshold below that (0.1, BalanceBenchmark's 0.001) re-balances
    # 5 steps of every 6 alike; 1.0 re-balances only when the speeds drift far apart (never
    # there), which asks whether that many re-balancing steps pay off in a short run.
    tuning = {"greedy.threshold": (0.01, 1.0)}

    @classmethod
    def defaults(cls):
        c = ml_collections.ConfigDict()
        # configs/training_guided.gin: Bias_Mitigation_Strong.epsilon=0.01 (BalanceBenchmark's
        # Greedy alpha: 0.001).
        c.threshold = 0.01
        # training_guided.gin: curation_windowsize=5 (BalanceBenchmark window_size 5).
        c.window = 5
        # training_guided.gin: starting_epoch=2 of the 1-based epochs: the first epoch only
        # measures, of up to 300 (early stopping). As a share of the budget it is one epoch
        # below 450 epochs (a share > 0 is at least one epoch).
        c.warmup_fraction = 1 / 300
        return c

    @classmethod
    def validate(cls, config, need):
        c = config.greedy
        need(math.isfinite(c.threshold) and c.threshold >= 0, "greedy.threshold",
             "a finite number >= 0")
        need(isinstance(c.window, int) and c.window >= 1, "greedy.window", "an integer >= 1")
        base.need_fraction(need, c.warmup_fraction, "greedy.warmup_fraction")
        need(len(config.model.stage_sizes) >= 2, "model.stage_sizes",
             "at least two stages for method=greedy (an MMTM joins the streams after every "
             "stage but the first)")

    def unlocked(self, epoch: int) -> bool:
        """Whether re-balancing steps may run in the 0-based `epoch`."""
        return epoch >= self.epochs_of(self.config.greedy.warmup_fraction)

    def describe(self, epoch):
        return {"rebalancing_allowed": self.unlocked(epoch)}

    def step_scalars(self, epoch):
        return {"unlocked": np.float32(self.unlocked(epoch))}

    def init_state(self, meta):
        return GreedyState(sums=np.zeros((len(SUMS),), np.float32),
                           d_speed=np.zeros((), np.float32),
                           rebalancing=np.zeros((), bool),
                           caring=np.full((), mmtm.NONE, np.int32),
                           window_step=np.zeros((), np.int32))

    def update(self, phase, state, batch, scalars, ctx):
        c = self.config.greedy
        labels = batch["label"]
        ms = state.method_state
        caring = jnp.where(ms.rebalancing, ms.caring, mmtm.NONE)

        def loss_fn(params):
            variables = {"params": params, "batch_stats": state.batch_stats}
            logits, mutated = ctx.model.apply(
                variables, batch["audio"].astype(jnp.float32), ctx.frames, True, caring,
                mutable=["batch_stats"])
            terms = base.cross_entropy_terms(logits, labels)
            loss = terms["ce_audio"] + terms["ce_visual"]  # the reference's blend_loss
            return loss, (dict(terms, loss=loss), mutated["batch_stats"], logits)

        grads, (terms, batch_stats, logits) = self.gradients(state, loss_fn, ctx)
        new_ms = advance(ms, group_speeds(grads, state.params), scalars["unlocked"],
                         c.threshold, c.window)
        rebalanced = (caring != mmtm.NONE).astype(jnp.float32)
        terms.update(d_speed=new_ms.d_speed, rebalancing=rebalanced,
                     rebalancing_audio=rebalanced * (caring == mmtm.AUDIO),
                     rebalancing_visual=rebalanced * (caring == mmtm.VISUAL))
        state, terms = self.apply(state, grads, batch_stats, terms, logits, labels, ctx)
        return state.replace(method_state=new_ms), terms
