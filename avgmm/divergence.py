"""A diverged run is stopped in one line (`DivergedError`) before anything of the bad
epoch is evaluated, written or saved, and the line says what is non-finite (or blew up)
and where it came from.

Three places see NaN or inf: the epoch's mean loss and the train state after the epoch
(`check_finite`), the model's inference-mode outputs on the validation and test splits
(`check_outputs`), and the per-sample gaps a GMM refit collects (`check_gaps`). Every
hyper-parameter is checked finite before compiling (`run_config`), so what is left is
either the data (NaN or inf in the inputs, e.g. a damaged decoded cache) or the updates
blowing up (the learning rate, or one of the method's own settings set far from its
default): the inputs are scanned to tell which, and the method's settings are compared
with their defaults.

A run can also blow up without NaN: a huge learning rate drives the loss from 1.6e3 to
6e9 and the validation loss to 1e24, all finite, and the model is at chance. `BlowupGuard`
stops such a run like a NaN: an epoch whose mean training loss, or whose validation or
test loss, is more than `BLOWUP_FACTOR` times the run's reference loss (the larger of the
first epoch's training loss and ln K, the loss of guessing among K classes; ln K alone
for the first epoch) is never evaluated further, saved or made the best.
"""

import math
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import jax
import numpy as np

from avgmm.errors import DivergedError

LOWER_LR = "Lower config.optimizer.learning_rate and start again with --fresh"
# A finite loss this many times the reference is a blow-up: a training loss that grows
# 1000-fold from its first epoch, or starts 1000 times above chance, is not learning; a
# healthy run's losses (validation ones of an overfitting model included) stay within a
# few dozen times the first epoch's.
BLOWUP_FACTOR = 1e3
# A method's number this many times its default (or more, in magnitude) is extreme.
EXTREME_FACTOR = 1e3
# Seconds the inputs of a split may be scanned for NaN at a divergence (a split read from
# the prepared records, not from the decoded cache, may be slow to read whole).
SCAN_SECONDS = 60.0


def _all_finite(tree: Any) -> bool:
    # On the host copy the checkpoint is saved from: nothing to compile, nothing to send
    # back to the device.
    return all(bool(np.isfinite(x).all()) for x in map(np.asarray, jax.tree.leaves(tree))
               if np.issubdtype(x.dtype, np.inexact))


def _named(last_good: Union[str, Callable[[], str]]) -> str:
    """The last good checkpoint's description; a callable is asked only now, on the error
    path (asking may wait for a save in flight, which a healthy epoch must not)."""
    return last_good() if callable(last_good) else last_good


def check_finite(step: int, tree: Union[Mapping[str, Any], Any], loss: float,
                 last_good: Union[str, Callable[[], str]], ds: Any = None,
                 config: Any = None) -> None:
    """Raises `DivergedError` when the epoch's mean loss or any floating leaf of `tree`
    (host arrays) is NaN or inf. `tree`: a dict naming its parts (e.g. "parameters",
    "optimizer state") or one pytree; `last_good`: the checkpoint to go back to, or a
    callable that names it; `ds` (the dataset, optional): its training inputs are scanned
    for NaN or inf to say where it came from; `config` (optional): its method's extreme
    settings are named as the likely cause."""
    if math.isfinite(loss) and _all_finite(tree):
        return
    parts = dict(tree) if isinstance(tree, Mapping) else {"the train state": tree}
    what = [f"the epoch's mean loss is {loss}"] if not math.isfinite(loss) else []
    what += [f"NaN or inf in the {name} (first: {first})" for name, part in parts.items()
             if (first := first_nonfinite(part)) is not None]
    cause, remedy = _diagnosis(ds, "train", config)
    raise DivergedError(
        f"training diverged in epoch {step} ({'; '.join(what)}): {cause}; the epoch was "
        f"neither saved nor evaluated; {_named(last_good)}. {remedy}")


def check_outputs(step: int, record: Mapping[str, Any], last_good: Union[str, Callable[[], str]],
                  ds: Any = None, config: Any = None) -> None:
    """Raises `DivergedError` when the model's inference-mode loss on the validation or
    test split of an epoch (`record["val"]`, `record["test"]`) is NaN or inf: a model
    whose outputs overflow is not saved, even if its parameters are finite."""
    bad = {split: record[key]["loss"] for key, split in (("val", "validation"), ("test", "test"))
           if key in record and "loss" in record[key]
           and not math.isfinite(record[key]["loss"])}
    if not bad:
        return
    cause, remedy = _diagnosis(ds, next(iter(bad)), config)
    raise DivergedError(
        f"training diverged in epoch {step} (the model's outputs are NaN or inf on the "
        + " and the ".join(f"{s} split (loss {v})" for s, v in bad.items())
        + f", although its parameters are finite): {cause}; the epoch was not saved; "
        f"{_named(last_good)}. {remedy}")


def check_gaps(host: Mapping[str, np.ndarray], split: str, ds: Any = None,
               last_good: Optional[Callable[[], str]] = None) -> None:
    """Raises `DivergedError` when a pass over `split` (`evaluation.sample_rows`, e.g.
    the gaps a GMM refit collects) finds NaN or inf gaps: names how many, the first
    clip, whether its inputs are at fault, and the last good checkpoint."""
    gaps = np.asarray(host["gap"])
    bad = ~np.isfinite(gaps)
    if not bad.any():
        return
    first = int(np.flatnonzero(bad)[0])
    clip = _clip_name(host, first)
    index = int(host["index"][first]) if "index" in host else None
    inputs = None
    if ds is not None and index is not None:
        inputs = _nonfinite_audio(ds, split, [int(i) for i in np.asarray(host["index"])[bad]])
    cause = (_data_cause(ds, split, inputs) if inputs else
             "their inputs are finite: the model's outputs overflowed")
    remedy = _data_remedy(ds, split, inputs) if inputs else LOWER_LR
    where = last_good() if last_good is not None else "no checkpoint is named"
    raise DivergedError(
        f"the model diverged: {int(bad.sum())} of {len(gaps)} modality gaps on the {split} "
        f"split are NaN or inf (first: {clip}); {cause}; nothing after this pass was "
        f"trained or saved; {where}. {remedy}")


def first_nonfinite(tree: Any) -> Optional[str]:
    """The path of the first floating leaf of a host or device pytree holding NaN or inf,
    with the count of bad values, e.g. `audio/conv_init/kernel (3 of 432 values)`; None
    when every value is finite."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = np.asarray(jax.device_get(leaf))
        if not np.issubdtype(a.dtype, np.inexact):
            continue
        bad = int(np.size(a) - np.isfinite(a).sum())
        if bad:
            name = "/".join(str(next((getattr(k, a) for a in ("key", "name", "idx")
                                      if hasattr(k, a)), k)) for k in path)
            return f"{name or 'the value'} ({bad} of {np.size(a)} values)"
    return None


def scan_inputs(ds: Any, split: str, seconds: float = SCAN_SECONDS) -> Dict[str, Any]:
    """Scans the audio of `split` for NaN or inf (frames are uint8, always finite), for at
    most `seconds`. Returns `{"bad": [indices], "scanned": n, "total": N}`."""
    total = ds.meta.num_examples[split]
    bad: List[int] = []
    start, scanned = time.monotonic(), 0
    for lo in range(0, total, 256):
        idx = list(range(lo, min(lo + 256, total)))
        bad += _nonfinite_audio(ds, split, idx)
        scanned = idx[-1] + 1
        if time.monotonic() - start > seconds:
            break
    return {"bad": bad, "scanned": scanned, "total": total}


def _nonfinite_audio(ds: Any, split: str, indices: Sequence[int]) -> List[int]:
    """The indices among `indices` whose audio input holds NaN or inf (as the loader
    reads them: from the decoded cache where there is one)."""
    if not indices:
        return []
    audio = np.asarray(ds.read(split, list(indices))["audio"], np.float32)
    finite = np.isfinite(audio.reshape(len(indices), -1)).all(axis=1)
    return [int(i) for i, ok in zip(indices, finite) if not ok]


def _clip_name(host: Mapping[str, np.ndarray], row: int) -> str:
    parts = []
    if "id" in host:
        parts.append(f"clip {host['id'][row]!s}")
    if "index" in host:
        parts.append(f"index {int(host['index'][row])}")
    return ", ".join(parts) or f"row {row}"


def _diagnosis(ds: Any, split: str, config: Any = None):
    """`(cause, remedy)` of a divergence, from a scan of the split's inputs and, with
    finite inputs, the method's settings (an extreme one is named before the learning
    rate is blamed)."""
    if ds is None or split not in ds.meta.num_examples:
        return _updates_cause("the inputs were not checked", config)
    scan = scan_inputs(ds, split)
    if scan["bad"]:
        return _data_cause(ds, split, scan["bad"]), _data_remedy(ds, split, scan["bad"])
    checked = (f"all {scan['total']}" if scan["scanned"] == scan["total"] else
               f"the first {scan['scanned']} of {scan['total']}")
    return _updates_cause(f"the {split} inputs are finite ({checked} clips checked) and "
                          "every hyper-parameter was checked finite, so the updates blew "
                          "up", config)


def _updates_cause(found: str, config: Any) -> Tuple[str, str]:
    """`(cause, remedy)` when the updates blew up: the method's extreme settings when it
    has any, else the learning rate."""
    extreme = extreme_settings(config) if config is not None else []
    if not extreme:
        return found, LOWER_LR
    return (f"{found}: the likely cause is {' and '.join(extreme)}, far from "
            f"{'its default' if len(extreme) == 1 else 'their defaults'}",
            f"Bring {'it' if len(extreme) == 1 else 'them'} near the default (not the "
            "learning rate) and start again with --fresh")


def extreme_settings(config: Any) -> List[str]:
    """The numbers of `config.method`'s own section that are `EXTREME_FACTOR` times their
    default or more in magnitude (or as many times smaller than a default above 1), as
    `config.mmpareto.gamma=1e+30 (default 1.5)`."""
    from avgmm import methods  # the registry imports the methods, which import this module

    cls = methods.REGISTRY.get(getattr(config, "method", None))
    defaults = cls.defaults() if cls is not None else None
    if defaults is None or cls.name not in config:
        return []
    out = []
    for key, default in defaults.items():
        value = config[cls.name].get(key)
        if (isinstance(default, bool) or not isinstance(default, (int, float))
                or isinstance(value, bool) or not isinstance(value, (int, float))):
            continue
        scale = max(abs(default), 1.0)
        tiny = abs(default) > 1.0 and 0 < abs(value) * EXTREME_FACTOR <= abs(default)
        if abs(value) >= EXTREME_FACTOR * scale or tiny:
            out.append(f"config.{cls.name}.{key}={value:g} (default {default:g})")
    return out


class BlowupGuard:
    """Stops a run whose losses blow up while staying finite (see the module docstring).

    Args:
      num_classes: K; ln K is the reference before the first epoch's loss is known.
      first_loss: the run's first-epoch training loss when resuming (None: fresh).
      config, ds: to name the cause (the method's extreme settings, the inputs).
    """

    def __init__(self, num_classes: int, first_loss: Optional[float], config: Any = None,
                 ds: Any = None):
        self.chance = math.log(max(num_classes, 2))
        self.first_loss = first_loss
        self.config, self.ds = config, ds

    @staticmethod
    def first_loss_of(records: Sequence[Mapping[str, Any]]) -> Optional[float]:
        """The first epoch's training loss among a workdir's metrics records (a resume's
        reference), or None."""
        return next((float(r["train"]["loss"]) for r in records
                     if r.get("epoch") == 1 and "loss" in r.get("train", {})), None)

    def _reference(self) -> Tuple[float, str]:
        if self.first_loss is None or abs(self.first_loss) <= self.chance:
            return self.chance, f"ln K = {self.chance:.3g}, the loss of guessing"
        return abs(self.first_loss), f"the first epoch's training loss {self.first_loss:.3g}"

    def _raise(self, step: int, what: str, split: str, saved: str,
               last_good: Union[str, Callable[[], str]]) -> None:
        reference, named = self._reference()
        cause, remedy = _diagnosis(self.ds, split, self.config)
        raise DivergedError(
            f"training diverged in epoch {step} ({what} is more than {BLOWUP_FACTOR:g} "
            f"times {named}, though finite): {cause}; the epoch was {saved}; "
            f"{_named(last_good)}. {remedy}")

    def check_train(self, step: int, loss: float,
                    last_good: Union[str, Callable[[], str]]) -> None:
        """After `check_finite`: raises `DivergedError` when the epoch's mean training
        loss blew up; the first epoch's loss becomes the reference otherwise."""
        reference, _ = self._reference()
        if abs(loss) > BLOWUP_FACTOR * reference:
            self._raise(step, f"the epoch's mean loss {loss:.3g}", "train",
                        "neither saved nor evaluated", last_good)
        if self.first_loss is None:
            self.first_loss = float(loss)

    def check_outputs(self, step: int, record: Mapping[str, Any],
                      last_good: Union[str, Callable[[], str]]) -> None:
        """After `check_outputs`: raises `DivergedError` when the validation or test loss
        of the epoch (`record["val"]`, `record["test"]`) blew up, before it is saved or
        made the best."""
        reference, _ = self._reference()
        for key, split in (("val", "validation"), ("test", "test")):
            loss = record.get(key, {}).get("loss")
            if loss is not None and abs(loss) > BLOWUP_FACTOR * reference:
                self._raise(step, f"the {split} loss {loss:.3g}", split, "not saved",
                            last_good)


def _cache_dir(ds: Any, split: str) -> Optional[str]:
    """The decoded cache folder the loader reads a split from, or None."""
    audio = getattr(ds, "cache", {}).get(split, {}).get("audio")
    filename = getattr(audio, "filename", None)
    return os.path.dirname(filename) if filename else None


def _source(ds: Any, split: str) -> str:
    """Where the loader reads a split's audio from."""
    cache = _cache_dir(ds, split)
    if cache:
        return f"the decoded cache {cache}"
    return f"the prepared dataset {ds.meta.name} in {getattr(ds, 'data_dir', '?')}"


def _data_cause(ds: Any, split: str, bad: Sequence[int]) -> str:
    return (f"the audio input of {len(bad)} {split} clip(s) holds NaN or inf (first: index "
            f"{bad[0]}), read from {_source(ds, split)}")


def _data_remedy(ds: Any, split: str, bad: Sequence[int]) -> str:
    """Rebuild the decoded cache when the prepared records are intact, else prepare the
    dataset again."""
    cache = _cache_dir(ds, split)
    if cache is not None and hasattr(ds, "_read_records"):
        records = np.asarray(ds._read_records(split, [bad[0]])["audio"], np.float32)
        if np.isfinite(records).all():
            return (f"The prepared records are finite: delete the decoded cache {cache} "
                    "(the next run rebuilds it) and run the same command again")
    return (f"The prepared dataset {ds.meta.name} holds them: prepare it again (with "
            "--overwrite) from intact files, then start again with --fresh")
