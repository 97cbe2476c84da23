"""What a training method is: the interface every method implements.

A method decides, epoch by epoch, which compiled step ("phase") trains; computes the
per-batch loss from the model's outputs and its own state; may transform the gradients
before the optimizer (gradient modulation) or replace the whole update; may run host-side
work at the start of an epoch, such as a pass over the training data that refits a GMM or
recomputes class prototypes; and says whether the optimizer is reset at a phase change.

Its state is one pytree, `TrainState.method_state`, checkpointed and replicated with the
parameters. Its hyper-parameters live under `config.<name>` (`defaults()`), validated
before anything compiles (`validate()`). It owns its schedule: every method trains the
run's budget of `config.epochs` epochs, and `phase(epoch)` says how it splits them. It
may add fields to `results.json` (`results()`) and to the epoch's console line.

Step functions run inside `jax.pmap` on one device's shard of the global batch;
`StepContext` gives them the model, the batch-wide reductions (`pmean`, `psum`, which are
identities on one device) and a per-step random key that is the same on every device.
"""

import dataclasses
import math
from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from avgmm import losses
from avgmm.models import AVClassifier, AVLogits

Terms = Dict[str, jnp.ndarray]
Scalars = Dict[str, np.ndarray]
# need(ok, field, allowed): raises UserError naming config.<field> when not ok.
Need = Callable[[bool, str, str], None]


@dataclasses.dataclass(frozen=True)
class StepContext:
    """What a step function needs besides the state and the batch (static, not traced)."""

    model: Any
    axis_name: Optional[str]
    key: jax.Array  # this step's key, identical on every device
    frames: jnp.ndarray  # the batch's frames after train-time augmentation

    def pmean(self, tree):
        """Mean over the devices (identity without a device axis)."""
        return tree if self.axis_name is None else jax.lax.pmean(tree, self.axis_name)

    def psum(self, tree):
        """Sum over the devices (identity without a device axis)."""
        return tree if self.axis_name is None else jax.lax.psum(tree, self.axis_name)

    def forward(self, state, params, batch) -> Tuple[AVLogits, Any]:
        """Training-mode logits and the updated BatchNorm statistics."""
        variables = {"params": params, "batch_stats": state.batch_stats}
        logits, mutated = self.model.apply(variables, batch["audio"].astype(jnp.float32),
                                           self.frames, train=True, mutable=["batch_stats"])
        return logits, mutated["batch_stats"]

    def features(self, state, params, batch) -> Tuple[Tuple[jnp.ndarray, jnp.ndarray], Any]:
        """Training-mode pooled features `(phi_a, phi_v)` and updated BatchNorm statistics."""
        variables = {"params": params, "batch_stats": state.batch_stats}
        feats, mutated = self.model.apply(
            variables, batch["audio"].astype(jnp.float32), self.frames, True,
            method=self.model.features, mutable=["batch_stats"])
        return feats, mutated["batch_stats"]

    def head(self, params, phi_a: jnp.ndarray, phi_v: jnp.ndarray) -> AVLogits:
        """The fusion head on given features (e.g. after dropping some)."""
        return self.model.apply({"params": params}, phi_a, phi_v,
                                method=lambda m, a, v: m.head(a, v))


@dataclasses.dataclass
class RunContext:
    """What an epoch-start hook may use: the devices (`par.batch_sums` is a mapped pass
    over a split), the data, the run's folder, its checkpointed bookkeeping (`meta`, a
    JSON-able dict), `samples(state, split, keep)`: every sample's inference-mode gap,
    true-class probabilities and predictions (`avgmm.evaluation.sample_rows`), and the
    run's initial state (e.g. to re-initialize towards)."""

    par: Any  # avgmm.parallel.Parallel
    ds: Any  # avgmm.data.pipeline.Dataset
    config: ml_collections.ConfigDict
    workdir: Any  # avgmm.workdir.Workdir
    meta: Dict[str, Any]
    samples: Callable[..., Tuple[Dict[str, Any], Dict[str, Any]]]
    initial_state: Any  # the run's state before its first epoch (host)


class Method:
    """Base class: one phase named after the method, trained on `loss`, no state."""

    name: ClassVar[str] = ""
    # Its name in tables (the paper's, e.g. "OGM-GE").
    label: ClassVar[str] = ""
    # Its one main hyper-parameter and the two values an equal tuning tries besides the
    # learning rate (3 x 2 settings): the default first, then the alternative most worth
    # trying at a short budget, e.g. {"ogm_ge.alpha": (0.1, 0.8)}. {} only for a method
    # without any hyper-parameter (the tuning then tries more learning rates instead).
    tuning: ClassVar[Dict[str, Tuple[Any, ...]]] = {}
    # Fusion head the method trains: "split" (one dense layer on [phi_a; phi_v], whose
    # halves are the unimodal logits), "shared" (one layer applied to each modality) or
    # "separate" (the fusion layer plus a unimodal layer per modality).
    head: ClassVar[str] = "split"
    # The model it trains: `AVClassifier`, or a module with the same constructor fields,
    # inputs and outputs (greedy's `MMTMClassifier`, whose streams exchange features).
    model_class: ClassVar[type] = AVClassifier
    # The shared mapped passes its hooks run ("samples": `run.samples`, "fit_gmm":
    # `gmm.fit_on_devices`): a run compiles them at its start, beside its train steps.
    passes: ClassVar[Tuple[str, ...]] = ()

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    # ---------------------------------------------------------------- configuration
    @classmethod
    def defaults(cls) -> Optional[ml_collections.ConfigDict]:
        """Hyper-parameters under `config.<name>`, or None when the method has none."""
        return None

    @classmethod
    def validate(cls, config: ml_collections.ConfigDict, need: Need) -> None:
        """Checks `config.<name>` (and anything else the method reads) before compiling."""

    @classmethod
    def head_type(cls, config: ml_collections.ConfigDict) -> str:
        """The head the model is built with for `config`: `head`, unless one of the
        method's settings chooses (MMPareto's `heads`)."""
        return cls.head

    # ---------------------------------------------------------------- schedule (host)
    def epochs(self) -> int:
        """The run's epoch budget, the same for every method."""
        return int(self.config.epochs)

    def epochs_of(self, fraction: float) -> int:
        """`fraction` of this run's budget in whole epochs (`epochs_of` below)."""
        return epochs_of(fraction, self.epochs())

    def window(self, start_fraction: float, end_fraction: float) -> Tuple[int, int]:
        """`(first, stop)`: the 0-based epochs `first <= epoch < stop` of a part of the
        schedule given as shares of the budget (e.g. a modulation window). It keeps at
        least one epoch when it fits in the budget: rounding must not remove the method's
        treatment from a short run."""
        first = self.epochs_of(start_fraction)
        return first, min(self.epochs(), max(self.epochs_of(end_fraction), first + 1))

    def phase_spans(self) -> List[Dict[str, Any]]:
        """The schedule as `[{"phase", "first_epoch", "last_epoch"}]`, epochs 1-based
        (epochs completed), one entry per run of consecutive epochs of one phase."""
        spans: List[Dict[str, Any]] = []
        for epoch in range(self.epochs()):
            phase = self.phase(epoch)
            if spans and spans[-1]["phase"] == phase:
                spans[-1]["last_epoch"] = epoch + 1
            else:
                spans.append({"phase": phase, "first_epoch": epoch + 1,
                              "last_epoch": epoch + 1})
        return spans

    def phases(self) -> Tuple[str, ...]:
        """Every phase name `phase()` can return: one compiled train step each."""
        return (self.name,)

    def phase(self, epoch: int) -> str:
        """The phase that trains the 0-based `epoch`."""
        return self.name

    def describe(self, epoch: int) -> Dict[str, Any]:
        """Extra fields of the epoch's metrics record, written before it trains."""
        return {}

    def step_scalars(self, epoch: int) -> Scalars:
        """Host scalars handed to every step of the epoch (changing them never recompiles)."""
        return {}

    def train_scalars(self, epoch: int) -> Scalars:
        """What every train step of the 0-based `epoch` receives: `step_scalars` and the
        run's seed (an argument, not a constant of the program: runs that differ only in
        their seed share one compiled step)."""
        return dict(self.step_scalars(epoch), seed=np.uint32(self.config.seed))

    def resets_optimizer(self, epoch: int) -> bool:
        """Whether the optimizer's moments are re-initialized before the epoch."""
        return False

    # ---------------------------------------------------------------- state and hooks
    def init_state(self, meta) -> Any:
        """The method's state pytree (host arrays) for a dataset (`DatasetMeta`: sizes of
        the splits, number of classes); None when it has none."""
        return None

    def batch_groups(self, run: RunContext, state, epoch: int) -> Optional[np.ndarray]:
        """Per-sample group keys `[N]` (ints) of the training split for the 0-based `epoch`,
        or None (default: plain shuffled batches). The epoch's shuffled order is then
        stably sorted by group, so that batches are drawn group by group (e.g. unimodal
        batches); a pure function of the state, so a resumed run sees the same batches."""
        return None

    def on_epoch_start(self, run: RunContext, state, epoch: int) -> Tuple[Any, Dict[str, Any]]:
        """Host work before the epoch trains (e.g. a pass over the data that updates the
        method's state); returns the (replicated) state and fields for the record."""
        return state, {}

    def epoch_record(self, run: RunContext, state, epoch: int) -> Dict[str, Any]:
        """Fields of the epoch's record written after it trained (e.g. the GMM in force)."""
        return {}

    def mixture(self, method_state) -> Any:
        """The GMM the method's state carries (host), or None (analysis fits one)."""
        return None

    def console_note(self, record: Dict[str, Any]) -> str:
        """Text appended to the epoch's console line (e.g. the GMM fitted before it)."""
        return ""

    def results(self, run: RunContext) -> Dict[str, Any]:
        """The method's own fields of `results.json` (e.g. its GMM fits), from the run's
        checkpointed bookkeeping `run.meta`."""
        return {}

    # ---------------------------------------------------------------- device (per shard)
    def loss(self, phase: str, logits: AVLogits, batch: Dict[str, jnp.ndarray],
             method_state: Any, scalars: Scalars) -> Tuple[jnp.ndarray, Terms]:
        """The per-batch loss of `phase` (a mean over this shard) and its logged terms."""
        raise NotImplementedError

    def transform_grads(self, phase: str, grads: Any, logits: AVLogits,
                        batch: Dict[str, jnp.ndarray], method_state: Any, scalars: Scalars,
                        ctx: StepContext) -> Tuple[Any, Terms]:
        """Changes the device-averaged gradients before the optimizer; identity here."""
        return grads, {}

    def update(self, phase: str, state, batch: Dict[str, jnp.ndarray], scalars: Scalars,
               ctx: StepContext):
        """One optimizer step: loss, gradients averaged over devices, `transform_grads`,
        apply. Methods that need several gradients or updates per batch override this."""
        def loss_fn(params):
            logits, batch_stats = ctx.forward(state, params, batch)
            loss, terms = self.loss(phase, logits, batch, state.method_state, scalars)
            return loss, (terms, batch_stats, logits)

        grads, (terms, batch_stats, logits) = self.gradients(state, loss_fn, ctx)
        grads, more = self.transform_grads(phase, grads, logits, batch, state.method_state,
                                           scalars, ctx)
        return self.apply(state, grads, batch_stats, dict(terms, **more), logits,
                          batch["label"], ctx)

    def gradients(self, state, loss_fn: Callable, ctx: StepContext):
        """`(gradients averaged over the devices, aux)` of `loss_fn(params) -> (loss,
        aux)` at the state's parameters (aux: `(terms, batch_stats, logits)`)."""
        grads, aux = jax.grad(loss_fn, has_aux=True)(state.params)
        return ctx.pmean(grads), aux

    def apply(self, state, grads, batch_stats, terms: Terms, logits: AVLogits,
              labels: jnp.ndarray, ctx: StepContext):
        """The optimizer step with `grads` and the new BatchNorm statistics; returns the
        state and the step's terms (with training accuracy and learning rate), averaged
        over the devices."""
        terms = dict(terms, accuracy=accuracy(self.fused(logits), labels),
                     learning_rate=state.opt_state.hyperparams["learning_rate"])
        return state.apply_gradients(grads=grads, batch_stats=batch_stats), ctx.pmean(terms)

    def fused(self, logits: AVLogits) -> jnp.ndarray:
        """The multimodal prediction's logits (evaluation and training accuracy)."""
        return logits.fused


def epochs_of(fraction: float, budget: int) -> int:
    """A share of an epoch budget in whole epochs: `floor(fraction * budget + 0.5)`
    (halves round up, the same on every platform), at least 1 when `fraction > 0` (an
    authors' schedule part of one epoch or more never vanishes from a short run) and at
    most `budget`.

    Schedule settings of the baselines are shares of `config.epochs`, from the authors'
    epochs at their own epoch count (OGM's six warm-up epochs of 100 are 0.06), so that a
    10-epoch run does what a 100-epoch one does, scaled."""
    epochs = int(math.floor(fraction * budget + 0.5))
    if fraction > 0:
        epochs = max(epochs, 1)
    return max(0, min(epochs, int(budget)))


def need_fraction(need: Need, value: Any, field: str, *, below_one: bool = True) -> None:
    """Checks that `config.<field>` is a share of the budget: a finite number in [0, 1)
    (`below_one`: a warm-up must leave epochs to the rest) or in [0, 1]."""
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and 0 <= value and (value < 1 if below_one else value <= 1))
    need(ok, field, "a share of config.epochs in " + ("[0, 1)" if below_one else "[0, 1]"))


def accuracy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Fraction of this shard's samples whose argmax is the label."""
    return (logits.argmax(-1) == labels).mean()


def cross_entropy_terms(logits: AVLogits, labels: jnp.ndarray) -> Terms:
    """Batch-mean cross entropies of the fused and unimodal logits, for logging."""
    return {"ce_fused": losses.cross_entropy(logits.fused, labels).mean(),
            "ce_audio": losses.cross_entropy(logits.audio, labels).mean(),
            "ce_visual": losses.cross_entropy(logits.visual, labels).mean()}
