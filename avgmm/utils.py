"""Helpers of the training loop: metric writing, checkpoints, config bookkeeping."""

import json
import os
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp


# --------------------------------------------------------------------------- metrics
class MetricWriter:
    """Writes scalars to `metrics.jsonl` (one object per call) and TensorBoard events.

    TensorBoard files come from tensorboardX, so TensorFlow is not needed.
    """

    def __init__(self, workdir: str):
        from tensorboardX import SummaryWriter  # imported lazily: heavy, protobuf-based

        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, record: Mapping[str, Any], step: int) -> None:
        record = to_python(record)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        for key, value in flatten_dict(record).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._tb.add_scalar(key, value, step)
        self._tb.flush()

    def close(self) -> None:
        self._tb.close()


def read_metrics(workdir: str) -> list:
    """Records of `metrics.jsonl`; an unreadable line raises with its line number."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno} is not valid JSON ({e})") from e
    return records


def truncate_metrics(workdir: str, keep_epochs_below: int) -> None:
    """Drops epoch records at or after `keep_epochs_below` (written after the checkpoint
    that a resumed run restarts from), so the file never holds an epoch twice."""
    path = os.path.join(workdir, "metrics.jsonl")
    records = read_metrics(workdir)
    kept = [r for r in records if r.get("epoch", -1) < keep_epochs_below]
    if len(kept) != len(records):
        with open(path, "w", encoding="utf-8") as f:
            for r in kept:
                f.write(json.dumps(r, sort_keys=True) + "\n")


def to_python(tree: Any) -> Any:
    """Numpy/JAX scalars and arrays -> Python floats, ints, bools and lists (JSON-safe)."""
    if isinstance(tree, Mapping):
        return {str(k): to_python(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [to_python(v) for v in tree]
    if isinstance(tree, (jax.Array, np.ndarray, np.generic)):
        arr = np.asarray(jax.device_get(tree))
        if arr.ndim == 0:
            return arr.item()
        return arr.tolist()
    return tree


def flatten_dict(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_dict(v, key + "/"))
        else:
            out[key] = v
    return out


# --------------------------------------------------------------------------- configs
# Fields that change how a run executes but not what it computes: a resumed run may
# change them freely (1 and N devices give the same results).
RUNTIME_FIELDS = ("num_devices", "data.data_dir", "data.prefetch", "data.cache",
                  "data.cache_dir", "log_every_steps")


def config_to_dict(config: ml_collections.ConfigDict) -> Dict[str, Any]:
    return json.loads(config.to_json_best_effort())


def config_diff(saved: Mapping[str, Any], new: Mapping[str, Any]) -> Dict[str, Tuple[Any, Any]]:
    """`{field: (saved, new)}` for every flattened field that differs."""
    a = flatten_dict(saved, "")
    b = flatten_dict(new, "")
    a = {k.replace("/", "."): v for k, v in a.items()}
    b = {k.replace("/", "."): v for k, v in b.items()}
    return {k: (a.get(k, "<absent>"), b.get(k, "<absent>"))
            for k in sorted(set(a) | set(b))
            if a.get(k, "<absent>") != b.get(k, "<absent>") and k not in RUNTIME_FIELDS}


def run_started(workdir: str) -> bool:
    """Whether a workdir holds trained epochs (metrics or checkpoints), not just a config."""
    latest = os.path.join(workdir, "checkpoints", "latest")
    has_ckpt = os.path.isdir(latest) and any(d.isdigit() for d in os.listdir(latest))
    return has_ckpt or bool(read_metrics(workdir))


def check_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Refuses a workdir whose run was started with a different config."""
    path = os.path.join(workdir, "config.json")
    if not (os.path.exists(path) and run_started(workdir)):
        return
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    diff = config_diff(saved, config_to_dict(config))
    if diff:
        lines = "\n".join(f"  {k}: saved {a!r} -> now {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"workdir {workdir} holds a run with a different config:\n{lines}\n"
            "Resume it with the same config, choose another --workdir, or pass --fresh "
            "to delete its checkpoints and metrics and start over.")


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes the resolved config as `config.json`."""
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config_to_dict(config), f, indent=2, sort_keys=True)


# --------------------------------------------------------------------------- checkpoints
class Checkpointer:
    """Orbax checkpoints of the (unreplicated) train state plus a JSON `meta` dict.

    `latest/` keeps the last few epochs for resuming; `best/` the best-validation state.
    Orbax writes to a temporary directory and renames it, so a run killed mid-save leaves
    the previous checkpoint intact.
    """

    def __init__(self, workdir: str, keep: int = 2):
        opts = lambda n: ocp.CheckpointManagerOptions(max_to_keep=n, create=True)  # noqa: E731
        self.latest = ocp.CheckpointManager(os.path.join(workdir, "checkpoints", "latest"),
                                            options=opts(keep))
        self.best = ocp.CheckpointManager(os.path.join(workdir, "checkpoints", "best"),
                                          options=opts(1))

    @staticmethod
    def _args(state, meta):
        return ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  meta=ocp.args.JsonSave(to_python(meta)))

    def save(self, epoch: int, state: Any, meta: Mapping[str, Any], best: bool) -> None:
        self.latest.save(epoch, args=self._args(state, meta))
        if best:
            self.best.save(epoch, args=self._args(state, meta))

    def restore(self, template: Any, which: Any = "latest") -> Optional[Tuple[Any, Dict]]:
        """`(state, meta)` of the newest checkpoint (`latest`), the best-validation one
        (`best`) or the one saved after epoch `which` (an int); None if there is none."""
        manager = self.best if which == "best" else self.latest
        if which in ("latest", "best"):
            step = manager.latest_step()
        else:
            step = int(which)
            if step not in manager.all_steps():
                raise ValueError(f"no checkpoint after epoch {step}; saved: "
                                 f"{sorted(manager.all_steps())} (older ones are not kept)")
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return restored["state"], dict(restored["meta"])

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()


# --------------------------------------------------------------------------- metrics math
def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for binary `labels` (ties count one half).

    NaN when one class is absent.
    """
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
