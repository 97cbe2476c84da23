"""A run's workdir: the one place that names its files, and the rules around them.

    config.json       the resolved config (written once the config has proven usable)
    metrics.jsonl     one JSON record per epoch; steps.jsonl every log_every_steps steps
    tensorboard/      the same scalars as TensorBoard events
    checkpoints/      latest/<epoch>, best/<epoch>, damaged/ (avgmm.checkpoints)
    gmm_fits/         fit_NNN.npz of every GMM fit (the adaptive method)
    results.json      the final results; timing.json where the time went
    predictions.csv   per-clip predictions of the best checkpoint on the test split
    plots/, imbalance.csv, imbalance_source.json   written by `python -m avgmm.analyze`
    .lock             held by the live run (flock)

One run at a time holds the workdir (`Workdir.lock`); a run restarted on it resumes, and
refuses a config other than the one it started with.
"""

import contextlib
import fcntl
import json
import os
import shutil
import socket
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import ml_collections

from avgmm import cli, config_text, files
from avgmm.errors import UserError, WorkdirBusyError


class Workdir:
    """The files of one run, by name (`Workdir(path).file(Workdir.RESULTS)` is its results.json)."""

    CONFIG = "config.json"
    METRICS = "metrics.jsonl"
    STEPS = "steps.jsonl"
    TENSORBOARD = "tensorboard"
    CHECKPOINTS = "checkpoints"
    GMM_FITS = "gmm_fits"
    RESULTS = "results.json"
    TIMING = "timing.json"
    PREDICTIONS = "predictions.csv"
    PLOTS = "plots"
    IMBALANCE_CSV = "imbalance.csv"
    IMBALANCE_SOURCE = "imbalance_source.json"
    LOCK = ".lock"
    # What a run writes, in the order `--fresh` deletes it.
    OUTPUTS = (CHECKPOINTS, METRICS, STEPS, TENSORBOARD, GMM_FITS, RESULTS, TIMING,
               PREDICTIONS, CONFIG)

    def __init__(self, path: str):
        self.path = os.path.abspath(os.path.expanduser(path))

    def file(self, name: str) -> str:
        """The path of `name` inside the workdir."""
        return os.path.join(self.path, name)

    def __repr__(self) -> str:
        return f"Workdir({self.path!r})"

    # ------------------------------------------------------------------ lock
    @contextlib.contextmanager
    def lock(self) -> Iterator[str]:
        """Holds an exclusive `flock` on `.lock` for the life of the block.

        The kernel drops the lock when its process dies, so a killed run never blocks the
        next one; the file's `pid host` content only serves the message when the holder is
        alive. A folder that `cli.forbidden_folder` refuses (the root, the home directory,
        the repository's root) is refused here too, for callers of the library that skip
        the command line's check.
        """
        why = cli.forbidden_folder(self.path)
        if why:
            raise UserError(f"workdir {self.path} is not allowed: {why}; name a folder of "
                            "its own, e.g. runs/x")
        os.makedirs(self.path, exist_ok=True)
        path = self.file(self.LOCK)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 512, 0).decode("utf-8", "replace").split()
                pid, host = (holder + ["?", "?"])[:2]
                raise WorkdirBusyError(f"workdir {self.path} is in use by process {pid} on "
                                       f"{host}; wait for it or use another --workdir") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            yield path
        finally:
            os.close(fd)  # releases the flock

    def remove_if_unused(self) -> None:
        """Deletes the workdir if it holds nothing but the lock file (a refused run)."""
        try:
            if set(os.listdir(self.path)) <= {self.LOCK}:
                shutil.rmtree(self.path)
        except OSError:
            pass

    # ------------------------------------------------------------------ metrics files
    def read_metrics(self, name: str = METRICS) -> List[Dict[str, Any]]:
        """Records of `metrics.jsonl` (or `steps.jsonl`); an unreadable line raises with its
        line number, except a half-written last line (a run killed mid-write), which is
        left out."""
        return _read_records(self.file(name))[0]

    def truncate_metrics(self, keep_epochs_below: int, name: str = METRICS) -> None:
        """Drops epoch records at or after `keep_epochs_below` (written after the checkpoint
        that a resumed run restarts from) and a half-written last line, so the file never
        holds an epoch twice."""
        path = self.file(name)
        records, partial = _read_records(path)
        kept = [r for r in records if r.get("epoch", -1) < keep_epochs_below]
        if len(kept) != len(records) or partial:
            files.write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))

    def latest_epoch(self) -> Optional[int]:
        """The epoch of the newest latest checkpoint (epochs completed), or None."""
        latest = os.path.join(self.file(self.CHECKPOINTS), "latest")
        if not os.path.isdir(latest):
            return None
        return max((int(d) for d in os.listdir(latest) if d.isdigit()), default=None)

    def run_started(self) -> bool:
        """Whether the workdir holds trained epochs (metrics or checkpoints), not just a
        config."""
        return self.latest_epoch() is not None or bool(self.read_metrics())

    # ------------------------------------------------------------------ config
    def save_config(self, config: ml_collections.ConfigDict) -> None:
        """Writes `config.json` atomically."""
        files.write_json(self.file(self.CONFIG), config_text.config_to_dict(config))

    def saved_config(self) -> Optional[Dict[str, Any]]:
        """The JSON data of `config.json`, or None when there is none."""
        if not os.path.exists(self.file(self.CONFIG)):
            return None
        with open(self.file(self.CONFIG), encoding="utf-8") as f:
            return json.load(f)

    def check_config(self, config: ml_collections.ConfigDict,
                     absent_ok: Optional[Callable[[str, Any], bool]] = None,
                     unread: Optional[Callable[[str], bool]] = None) -> None:
        """Refuses a workdir whose run was started with a different config.

        `absent_ok(field, value)`: whether a field the saved config lacks (a run saved
        before the field existed) may have `value` now without changing the run.
        `unread(field)`: whether the run never reads the field (another method's setting),
        so that a value changed, added or renamed there since the run was saved does not
        matter."""
        saved = self.saved_config()
        if saved is None or not self.run_started():
            return
        diff = config_text.config_diff(upgrade_saved_config(saved),
                                       config_text.config_to_dict(config))
        if absent_ok is not None:
            diff = {k: (a, b) for k, (a, b) in diff.items()
                    if not (a == "<absent>" and absent_ok(k, b))}
        if unread is not None:
            diff = {k: v for k, v in diff.items() if not unread(k)}
        if diff:
            fields = "; ".join(f"{k}: saved {a!r} -> now {b!r}" for k, (a, b) in diff.items())
            raise UserError(
                f"workdir {self.path} holds a run with a different config ({fields}): resume "
                "it with the same config, choose another --workdir, or pass --fresh to "
                "delete its checkpoints and metrics and start over")

    # ------------------------------------------------------------------ results
    def read_results(self) -> Optional[Dict[str, Any]]:
        """`results.json`, or None where it is missing or damaged (a damaged one is written
        again by evaluating)."""
        try:
            with open(self.file(self.RESULTS), encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def write_json(self, name: str, obj: Any) -> None:
        """Writes `obj` as the workdir's JSON file `name`, atomically."""
        files.write_json(self.file(name), obj)

    # ------------------------------------------------------------------ --fresh
    def delete_outputs(self) -> Tuple[str, ...]:
        """`--fresh`: removes what a run wrote (config included); returns what it deleted.

        Everything is checked before anything is deleted: an output that is a symbolic link
        (its files live elsewhere: --fresh deletes nothing through links) or that this user
        cannot delete is refused in one line (`UserError`), with the workdir untouched."""
        present = [name for name in self.OUTPUTS if os.path.lexists(self.file(name))]
        for name in present:
            problem = _undeletable(self.file(name))
            if problem:
                raise UserError(f"--fresh cannot start over in {self.path}: {problem}; "
                                "nothing was deleted. Fix it (or delete the run's files "
                                "yourself) and run again")
        for name in present:
            target = self.file(name)
            try:
                if os.path.isdir(target):
                    shutil.rmtree(target)
                else:
                    os.remove(target)
            except OSError as e:
                done = ", ".join(present[:present.index(name)]) or "nothing"
                raise UserError(f"--fresh could not delete {target} ({e.strerror or e}); "
                                f"deleted before it: {done}. Delete it yourself and run "
                                "again") from None
        return tuple(present)


def _undeletable(path: str) -> Optional[str]:
    """Why `path` (and everything under it) cannot be deleted by this process, or None."""
    if os.path.islink(path):
        return (f"{path} is a symbolic link (to {os.readlink(path)}); remove the link, or "
                "empty its target, yourself")
    parent = os.path.dirname(path)
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{parent} is not writable by this user"
    if os.path.isdir(path):
        # os.walk does not follow links: a link inside is deleted as a file, its target
        # untouched.
        for folder, _, _ in os.walk(path):
            if not os.access(folder, os.W_OK | os.X_OK):
                return f"{folder} is not writable by this user"
    return None


def _read_records(path: str) -> Tuple[List[Dict[str, Any]], bool]:
    """`(records, partial)`: partial when the last line is a half-written record."""
    if not os.path.exists(path):
        return [], False
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    # A run killed while appending leaves a last line without its newline; that record
    # belongs to an epoch after the last checkpoint, which a resumed run writes again.
    tail, lines = lines[-1], lines[:-1]
    records = []
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno} is not valid JSON ({e})") from e
    if tail.strip():
        try:
            records.append(json.loads(tail))
        except json.JSONDecodeError:
            return records, True
    return records, False


def upgrade_saved_config(saved: Dict[str, Any]) -> Dict[str, Any]:
    """A `config.json` written before `config.epochs` existed, with the budget it ran:
    its adaptive schedule's epochs (the budget every method had then)."""
    if "epochs" in saved or "schedule" not in saved:
        return saved
    s = saved["schedule"]
    finetune = saved.get("adaptive", {}).get("finetune_epochs", 0)
    return dict(saved, epochs=s["warmup_epochs"] + s["adaptive_steps"] * s["epochs_per_step"]
                + finetune)
