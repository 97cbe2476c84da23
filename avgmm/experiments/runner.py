"""Running a sweep: every variant for every seed, one `python -m avgmm.main` process each
(a run owns its process: compiled programs and memory go with it), then the summary.

A run's folder is `ROOT/<variant>/seed<k>`. A sweep run again resumes where it stopped:
each run resumes its own checkpoints, and a finished run answers with its saved results
(after checking that its config is the one asked for). `jobs` runs that many processes
at a time, each writing its output to `log.txt` in its folder.
"""

import dataclasses
import os
import shlex
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from avgmm import progress
from avgmm.errors import ExperimentError
from avgmm.experiments import ledger
from avgmm.experiments.variants import SWEEPS, Sweep, Variant


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One process of a sweep: `python -m avgmm.main --config=CONFIG --workdir=WORKDIR
    OVERRIDES...` (`setting`: its tuning setting's folder, "" untuned)."""

    variant: Variant
    seed: int
    workdir: str
    command: Sequence[str]
    config: str = ""
    overrides: Tuple[str, ...] = ()
    setting: str = ""
    setting_overrides: Tuple[str, ...] = ()
    selected_in: str = ""  # where the setting was chosen (another sweep's choice reused)

    def key(self) -> str:
        """The run's ledger key (`avgmm.experiments.ledger.run_key`)."""
        return ledger.run_key(ledger.resolve(self.config, self.overrides))


def plan(sweep: Sweep, config: str, root: str, seeds, extra: Sequence[str] = (),
         python: str = sys.executable, variants: Optional[List[Variant]] = None,
         settings: Optional[Dict[str, List[Tuple[str, Sequence[str]]]]] = None,
         selected_in: str = "") -> List[PlannedRun]:
    """The runs of `sweep` on config file `config` under `root`, seed by seed (all the
    variants of seed 0 first: an interrupted sweep has whole seeds done). `seeds`: a
    count or the seeds themselves. `settings` (tuning): per variant, `(folder, overrides)`
    of each setting to run, in `root/<variant>/<folder>/seed<k>`; `selected_in`: where
    those settings were chosen, when not by this sweep."""
    seed_list = range(seeds) if isinstance(seeds, int) else list(seeds)
    runs = []
    for seed in seed_list:
        for v in variants if variants is not None else sweep.variants():
            for folder, overrides in (settings or {}).get(v.name, [("", ())]):
                workdir = os.path.join(root, v.name, folder, f"seed{seed}") if folder else \
                    os.path.join(root, v.name, f"seed{seed}")
                args = (f"--config.seed={seed}", f"--config.variant={v.name}", *v.overrides,
                        *overrides, *extra)
                command = [python, "-m", "avgmm.main", f"--config={config}",
                           f"--workdir={workdir}", *args]
                runs.append(PlannedRun(v, seed, workdir, command, config, args, folder,
                                       tuple(overrides), selected_in))
    return runs


def shard(runs: List[PlannedRun], index: int, count: int) -> List[PlannedRun]:
    """Every `count`-th planned run from the `index`-th (0-based): shard `index` of
    `count`, whose ledgers concatenated make the whole sweep's."""
    return runs[index::count]


def summary_command(sweep: Sweep, root: str, python: str = sys.executable,
                    selection: Optional[str] = None, ledger: Optional[str] = None
                    ) -> List[str]:
    """The command that summarizes a finished sweep (`selection`: a tuned sweep's
    selection.json, whose chosen settings alone make the table; `ledger`: the sweep's
    ledger, which then is the summary's only source, written into `root`)."""
    source = ledger or root
    if sweep.summary == "study":
        return [python, "-m", "avgmm.study", source] + ([f"--out={root}"] if ledger else [])
    command = [python, "-m", "avgmm.report", source, f"--out={root}"]
    command += ["--table1"] if sweep.summary == "table1" else []
    return command + ([f"--selection={selection}"] if selection and not ledger else [])


def show(command: Sequence[str]) -> str:
    """A command as a shell line."""
    return " ".join(shlex.quote(c) for c in command)


def execute(runs: List[PlannedRun], jobs: int = 1, ledger_path: Optional[str] = None,
            sweep: str = "") -> List[PlannedRun]:
    """Runs every planned run, `jobs` at a time; returns the runs that failed (each failure
    is reported when it happens; the others go on). With `ledger_path`, the runs the
    ledger records are skipped, a finished workdir of the same key is recorded without
    running again, and every run that finishes is appended as it does."""
    failed: List[PlannedRun] = []
    commit = ledger.code_commit()
    pending = list(runs)
    if ledger_path:
        pending = _unrecorded(pending, ledger_path, sweep)
    runs = pending
    start, done = time.time(), 0
    pending = list(runs)
    active: List[tuple] = []
    while pending or active:
        while pending and len(active) < jobs:
            run = pending.pop(0)
            os.makedirs(run.workdir, exist_ok=True)
            with open(os.path.join(run.workdir, ledger.COMMIT_FILE), "w",
                      encoding="utf-8") as f:
                f.write(commit + "\n")
            progress.say(f"[{done + len(active) + 1}/{len(runs)}] {run.variant.name} seed "
                         f"{run.seed}: {show(run.command)}")
            if jobs == 1:
                active.append((run, subprocess.Popen(run.command), None))
            else:
                log = open(os.path.join(run.workdir, "log.txt"), "a", encoding="utf-8")
                active.append((run, subprocess.Popen(run.command, stdout=log,
                                                     stderr=subprocess.STDOUT), log))
        time.sleep(0.2)
        for item in list(active):
            run, proc, log = item
            if proc.poll() is None:
                continue
            active.remove(item)
            done += 1
            if log is not None:
                log.close()
            if proc.returncode != 0:
                failed.append(run)
                progress.say(f"FAILED (exit {proc.returncode}): {run.variant.name} seed "
                             f"{run.seed}" + (f"; see {run.workdir}/log.txt" if log else ""))
            elif ledger_path:
                _record(run, ledger_path, sweep)
            eta = (time.time() - start) / done * (len(runs) - done)
            progress.say(f"{done}/{len(runs)} runs done, sweep ETA {progress.duration(eta)}")
    return failed


def _record(run: PlannedRun, ledger_path: str, sweep: str) -> None:
    """Appends the finished `run` to the ledger."""
    line = ledger.record(run.workdir, sweep=sweep, config_spec=run.config,
                         variant=run.variant.name, setting=run.setting, seed=run.seed,
                         overrides=run.overrides, setting_overrides=run.setting_overrides,
                         selected_in=run.selected_in)
    planned = run.key()
    if line["key"] != planned:
        progress.say(f"warning: {run.workdir} ran a config whose key {line['key']} is not the "
                     f"planned {planned}; recorded as it ran, a later sweep runs it again")
    ledger.append(ledger_path, line)


def _unrecorded(runs: List[PlannedRun], ledger_path: str, sweep: str) -> List[PlannedRun]:
    """The runs the ledger does not record yet; finished workdirs of the same key are
    recorded on the way (a run finished before the sweep had a ledger)."""
    recorded = {line["key"] for line in ledger.read([ledger_path])}
    todo, skipped, adopted = [], 0, 0
    for run in runs:
        key = run.key()
        if key in recorded:
            skipped += 1
            continue
        saved = ledger.finished_config(run.workdir)
        if saved is not None and ledger.run_key(saved) == key:
            _record(run, ledger_path, sweep)
            recorded.add(key)
            adopted += 1
            continue
        todo.append(run)
    progress.say(f"ledger {ledger_path}: {skipped} of {len(runs)} planned run(s) recorded "
                 f"already" + (f", {adopted} recorded from finished workdirs" if adopted
                               else "") + f"; {len(todo)} to run")
    return todo


def get_sweep(name: str) -> Sweep:
    """The declared sweep `name`."""
    if name not in SWEEPS:
        raise ExperimentError(f"unknown sweep {name!r}: one of {', '.join(SWEEPS)} "
                              "(python -m avgmm.experiments list shows them)")
    return SWEEPS[name]
