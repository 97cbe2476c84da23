"""A diverged run is stopped in one line (`DivergedError`) before anything of the bad
epoch is evaluated, written or saved, and the line says what is non-finite and where it
came from.

Three places see NaN or inf: the epoch's mean loss and the train state after the epoch
(`check_finite`), the model's inference-mode outputs on the validation and test splits
(`check_outputs`), and the per-sample gaps a GMM refit collects (`check_gaps`). Every
hyper-parameter is checked finite before compiling (`run_config`), so what is left is
either the data (NaN or inf in the inputs, e.g. a damaged decoded cache) or the updates
blowing up (the learning rate): the inputs are scanned to tell which.
"""

import math
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import jax
import numpy as np

from avgmm.errors import DivergedError

LOWER_LR = "Lower config.optimizer.learning_rate and start again with --fresh"
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
                 last_good: Union[str, Callable[[], str]], ds: Any = None) -> None:
    """Raises `DivergedError` when the epoch's mean loss or any floating leaf of `tree`
    (host arrays) is NaN or inf. `tree`: a dict naming its parts (e.g. "parameters",
    "optimizer state") or one pytree; `last_good`: the checkpoint to go back to, or a
    callable that names it; `ds` (the dataset, optional): its training inputs are scanned
    for NaN or inf to say where it came from."""
    if math.isfinite(loss) and _all_finite(tree):
        return
    parts = dict(tree) if isinstance(tree, Mapping) else {"the train state": tree}
    what = [f"the epoch's mean loss is {loss}"] if not math.isfinite(loss) else []
    what += [f"NaN or inf in the {name} (first: {first})" for name, part in parts.items()
             if (first := first_nonfinite(part)) is not None]
    cause, remedy = _diagnosis(ds, "train")
    raise DivergedError(
        f"training diverged in epoch {step} ({'; '.join(what)}): {cause}; the epoch was "
        f"neither saved nor evaluated; {_named(last_good)}. {remedy}")


def check_outputs(step: int, record: Mapping[str, Any], last_good: Union[str, Callable[[], str]],
                  ds: Any = None) -> None:
    """Raises `DivergedError` when the model's inference-mode loss on the validation or
    test split of an epoch (`record["val"]`, `record["test"]`) is NaN or inf: a model
    whose outputs overflow is not saved, even if its parameters are finite."""
    bad = {split: record[key]["loss"] for key, split in (("val", "validation"), ("test", "test"))
           if key in record and "loss" in record[key]
           and not math.isfinite(record[key]["loss"])}
    if not bad:
        return
    cause, remedy = _diagnosis(ds, next(iter(bad)))
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


def _diagnosis(ds: Any, split: str):
    """`(cause, remedy)` of a divergence, from a scan of the split's inputs."""
    if ds is None or split not in ds.meta.num_examples:
        return "the inputs were not checked", LOWER_LR
    scan = scan_inputs(ds, split)
    if scan["bad"]:
        return _data_cause(ds, split, scan["bad"]), _data_remedy(ds, split, scan["bad"])
    checked = (f"all {scan['total']}" if scan["scanned"] == scan["total"] else
               f"the first {scan['scanned']} of {scan['total']}")
    return (f"the {split} inputs are finite ({checked} clips checked) and every "
            "hyper-parameter was checked finite, so the updates blew up", LOWER_LR)


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
