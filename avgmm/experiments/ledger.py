"""Run ledgers: one JSON line per finished run of a sweep, the evidence that outlives the
workdirs (which are too big to keep, and go with the machine).

A line holds what was asked (sweep, config file, variant, tuning setting, seed, the
command line's overrides), the run's key, the config fields that decide its results, every
field of its `results.json`, the per-epoch accuracies the study's tables and figures read,
its seconds and the commit it ran at. `python -m avgmm.report LEDGER` and
`python -m avgmm.study LEDGER` build their tables from ledgers alone, and a sweep given
`--ledger=FILE` skips the runs recorded there.

The key is a hash of the fields that decide a run's results (`key_config`): the resolved
config less the fields that only change how it executes or what is measured
(`NOT_DECIDING`), less the sections of the methods it does not train (a run reads only its own), less
fields at the value runs had before the field existed (None, "not checked", or
`config_defaults.ADDED_FIELDS`). A refactor that leaves results unchanged (the golden
method test is the judge) leaves the keys unchanged, so a ledger outlives it; a changed
default of the method a run trains changes the key, and the run is done again.

Ledgers from several shards of one sweep are merged by concatenation; a run recorded
twice is refused (`read`).
"""

import copy
import datetime
import hashlib
import json
import os
import subprocess
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import ml_collections

from avgmm import config_defaults, config_text, methods
from avgmm.errors import ExperimentError
from avgmm.workdir import Workdir

VERSION = 1
# The per-epoch fields a line keeps (what `avgmm.study` reads): per split, these metrics.
EPOCH_SPLITS = ("val", "test")
EPOCH_METRICS = ("accuracy", "accuracy_audio", "accuracy_visual")
# Where a sweep's runner notes the commit a run was started at (the run's own folder).
COMMIT_FILE = "commit.txt"
# Besides the runtime fields: what is measured about a run and how much of it is kept on
# disk, which change its results.json's extra fields at most, never its training.
NOT_DECIDING = tuple(config_text.RUNTIME_FIELDS) + ("evaluators", "checkpoint_keep",
                                                    "eval_batch_size")


def resolve(config_spec: str, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """The config `python -m avgmm.main --config=SPEC OVERRIDES...` runs, parsed by the
    same flag machinery (so a value means here what it means there)."""
    from absl import flags
    from ml_collections import config_flags

    argv = ["avgmm", f"--config={config_spec}", *overrides]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values,
                                    lock_config=True, sys_argv=argv)
    try:
        values(argv)
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
        raise ExperimentError(f"cannot resolve the config of {config_spec} "
                              f"{' '.join(overrides)}: {e}") from e
    return values.config


def key_config(config: Any) -> Dict[str, Any]:
    """The fields of a config (a ConfigDict or its `config.json` data) that decide the
    run's results, nested as in `config.json`."""
    data = (config_text.config_to_dict(config) if isinstance(config, ml_collections.ConfigDict)
            else copy.deepcopy(dict(config)))
    method = data.get("method")
    for name in methods.REGISTRY:
        if name != method:
            data.pop(name, None)
    for field in NOT_DECIDING:
        _drop(data, field)
    for field, value in list(config_text.flat(data).items()):
        if value is None or config_defaults.added_field_ok(field, value):
            _drop(data, field)
    return data


def _drop(data: Dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        data = data.get(part)
        if not isinstance(data, dict):
            return
    data.pop(leaf, None)


def run_key(config: Any) -> str:
    """The run's key: a hash of `key_config(config)`."""
    text = json.dumps(key_config(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def code_commit(where: Optional[str] = None) -> str:
    """The commit of the code that runs (`where`: a folder of its checkout; default
    avgmm's), with `+modified` when tracked files differ from it; "unknown" outside git."""
    where = where or os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=30)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("+modified" if dirty else "")


def _epochs(records: Iterable[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """The per-epoch fields a line keeps."""
    out = []
    for r in records:
        e: Dict[str, Any] = {"epoch": r["epoch"]}
        if "phase" in r:
            e["phase"] = r["phase"]
        for split in EPOCH_SPLITS:
            if isinstance(r.get(split), Mapping):
                e[split] = {k: r[split][k] for k in EPOCH_METRICS if k in r[split]}
        if isinstance(r.get("gmm_fit"), Mapping) and "pi_1" in r["gmm_fit"]:
            e["gmm_fit"] = {"pi_1": r["gmm_fit"]["pi_1"]}
        out.append(e)
    return out


def finished_config(workdir: str) -> Optional[Dict[str, Any]]:
    """The saved config of a finished run in `workdir` (one with a results.json), else
    None."""
    wd = Workdir(workdir)
    if not os.path.exists(wd.file(Workdir.RESULTS)):
        return None
    try:
        with open(wd.file(Workdir.CONFIG), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def record(workdir: str, *, sweep: str, config_spec: str, variant: str, setting: str,
           seed: int, overrides: Sequence[str], setting_overrides: Sequence[str] = (),
           selected_in: str = "", commit: Optional[str] = None) -> Dict[str, Any]:
    """The ledger line of the finished run in `workdir` (`selected_in`: where its setting
    was chosen, when another sweep chose it; `commit`: the commit it ran at; default: the
    one its runner noted in the workdir, else "unknown")."""
    wd = Workdir(workdir)
    try:
        with open(wd.file(Workdir.CONFIG), encoding="utf-8") as f:
            config = json.load(f)
        with open(wd.file(Workdir.RESULTS), encoding="utf-8") as f:
            results = json.load(f)
    except (OSError, ValueError) as e:
        raise ExperimentError(f"cannot record the run in {workdir}: {e}") from e
    timing = _json(wd.file(Workdir.TIMING)) or {}
    if commit is None:
        try:
            with open(wd.file(COMMIT_FILE), encoding="utf-8") as f:
                commit = f.read().strip() or "unknown"
        except OSError:
            commit = "unknown"
    return {
        "ledger": VERSION, "sweep": sweep, "config": config_spec, "variant": variant,
        "setting": setting, "seed": int(seed), "key": run_key(config),
        "overrides": list(overrides), "setting_overrides": list(setting_overrides),
        **({"selected_in": selected_in} if selected_in else {}), "run_config": key_config(config),
        "results": results, "epochs": _epochs(wd.read_metrics()),
        "seconds": timing.get("wall"), "train_seconds": timing.get("train"),
        "commit": commit,
        "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _json(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def append(path: str, line: Mapping[str, Any]) -> None:
    """Appends one line to the ledger at `path` (created with its folder), on disk before
    this returns: a sweep killed right after keeps it."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    text = json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def read(paths: Sequence[str]) -> List[Dict[str, Any]]:
    """The lines of one or more ledgers (concatenated shards); a missing file is empty.
    Refuses, in one message, a line that is not a ledger line and a run recorded twice."""
    lines: List[Dict[str, Any]] = []
    where: Dict[str, str] = {}
    for path in paths:
        if not os.path.exists(path):
            continue
        if os.path.isdir(path):
            raise ExperimentError(f"--ledger={path} is a folder: name a file, e.g. "
                                  "docs/table1/demo.jsonl")
        with open(path, encoding="utf-8") as f:
            for number, text in enumerate(f, 1):
                if not text.strip():
                    continue
                here = f"{path}:{number}"
                try:
                    line = json.loads(text)
                    ok = isinstance(line, dict) and line.get("ledger") == VERSION and all(
                        k in line for k in ("key", "variant", "seed", "results", "config"))
                except ValueError:
                    ok = False
                if not ok:
                    raise ExperimentError(f"{here} is not a ledger line (version {VERSION}); "
                                          "was the file cut off? delete that line and run "
                                          "the sweep again to redo the run")
                if line["key"] in where:
                    raise ExperimentError(
                        f"{here} records {line['variant']} seed {line['seed']} (key "
                        f"{line['key']}) again, already at {where[line['key']]}: merged "
                        "ledgers must hold each run once; delete one of the two lines")
                where[line["key"]] = here
                lines.append(line)
    return lines


def as_run(line: Mapping[str, Any]) -> Dict[str, Any]:
    """A line as the analysis reads a finished run: `run` (where it is from), `config`
    (its deciding fields, with its variant and seed), `results`, `records` (per epoch),
    `timing`."""
    config = copy.deepcopy(line["run_config"])
    config["variant"] = line["variant"]
    return {"run": f"ledger:{line['variant']}/{line.get('setting') or '-'}/seed{line['seed']}",
            "config": config, "results": line["results"], "records": line.get("epochs", []),
            "timing": {"wall": line.get("seconds"), "train": line.get("train_seconds")},
            "setting": line.get("setting", "")}


def is_ledger(path: str) -> bool:
    """Whether a path names a ledger file (JSON lines) rather than a folder of runs."""
    return path.endswith(".jsonl") or os.path.isfile(path)

