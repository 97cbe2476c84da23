"""What an evaluator is: one kind of metric, from its device sums to its results.

Every evaluation of a split (validation and test, each epoch; the test split of the last
and the best-validation model at the end) runs ONE compiled step that computes the model's
outputs once and each configured evaluator's `sums` of them over the real (unpadded)
samples; the sums are added over devices and batches, and each evaluator's `finish` turns
its totals into the split's metrics. Once training is done, each evaluator's `final` may
add fields to `results.json` (e.g. a GMM fitted to the final model's training gaps).

The `fields` an evaluator declares are what the rest of the tool shows: the split metrics
in `metrics.jsonl`, the epoch's console line (`console`), `results.json` (`headline`:
`test_<key>` of the best-validation checkpoint and `last_epoch.<key>`), and the columns of
`python -m avgmm.report` and `python -m avgmm.study`.
"""

import dataclasses
from typing import Any, Callable, ClassVar, Dict, Optional, Tuple

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Field:
    """One metric an evaluator produces."""

    key: str  # its name in a split's metrics (and in results.json)
    label: str  # its name in tables, e.g. "audio-only"
    console: str = ""  # its short name in the epoch's console line ("" = not shown)
    headline: bool = False  # in results.json for the best and the last model
    percent: bool = True  # a fraction shown as % in tables
    column: bool = True  # a headline field with a column in the report's tables


@dataclasses.dataclass(frozen=True)
class Outputs:
    """What the evaluation step computes once per batch (one device's shard), for every
    evaluator: the logits of the multimodal prediction (the method's fusion) and of each
    modality, the labels, the mask of real samples, and the batch itself (its per-clip
    ground-truth fields, e.g. `imbalanced`)."""

    fused: jnp.ndarray
    audio: jnp.ndarray
    visual: jnp.ndarray
    label: jnp.ndarray
    mask: jnp.ndarray  # float32, 1 for real samples, 0 for padding
    batch: Dict[str, jnp.ndarray]

    def correct(self, logits: jnp.ndarray) -> jnp.ndarray:
        """Per-sample 1.0 where `logits` predict the label (padding included)."""
        return (logits.argmax(-1) == self.label).astype(jnp.float32)


@dataclasses.dataclass
class FinalContext:
    """What `Evaluator.final` may use once training is done.

    `samples(split, which)` runs (once, then cached) the per-sample pass of the `last` or
    `best` model over a split: `(device arrays, host rows)` as
    `avgmm.evaluation.sample_rows` returns them.
    """

    par: Any  # avgmm.parallel.Parallel
    ds: Any  # avgmm.data.pipeline.Dataset
    config: Any
    workdir: Any  # avgmm.workdir.Workdir
    samples: Callable[[str, str], Tuple[Dict[str, Any], Dict[str, Any]]]


# Every evaluator class, by name: defining a subclass registers it (avgmm.evaluators
# imports every module of its package, so each built-in one is there).
REGISTRY: Dict[str, type] = {}


class Evaluator:
    """Base class: no sums, no final results. A subclass with a `name` registers itself."""

    name: ClassVar[str] = ""
    fields: ClassVar[Tuple[Field, ...]] = ()  # split metrics
    final_fields: ClassVar[Tuple[Field, ...]] = ()  # what `final` adds to results.json
    # The shared mapped passes `final` runs ("samples": `ctx.samples`, "fit_gmm":
    # `gmm.fit_on_devices`): a run compiles them at its start, beside the others.
    passes: ClassVar[Tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            REGISTRY[cls.name] = cls

    def __init__(self, config: Any = None, meta: Any = None):
        self.config = config
        self.meta = meta  # the dataset's DatasetMeta (its clip fields, classes)

    def applies(self, meta) -> bool:
        """Whether the dataset (`DatasetMeta`) has what this evaluator needs."""
        return True

    def sums(self, out: Outputs) -> Dict[str, jnp.ndarray]:
        """Per-shard sums over the real samples (device; added over devices and batches)."""
        return {}

    def finish(self, totals: Dict[str, float]) -> Dict[str, Any]:
        """The split's metrics from the totals of `sums` (host); `totals["count"]` is the
        number of real samples."""
        return {}

    def final(self, ctx: FinalContext) -> Dict[str, Any]:
        """Fields for `results.json`, computed once on the final models."""
        return {}


def ratio(numerator: float, denominator: float) -> Optional[float]:
    """`numerator / denominator`, or None for an empty subset."""
    return numerator / denominator if denominator else None
