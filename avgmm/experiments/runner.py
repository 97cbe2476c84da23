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
from avgmm.experiments.variants import SWEEPS, Sweep, Variant


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One process of a sweep."""

    variant: Variant
    seed: int
    workdir: str
    command: Sequence[str]


def plan(sweep: Sweep, config: str, root: str, seeds, extra: Sequence[str] = (),
         python: str = sys.executable, variants: Optional[List[Variant]] = None,
         settings: Optional[Dict[str, List[Tuple[str, Sequence[str]]]]] = None
         ) -> List[PlannedRun]:
    """The runs of `sweep` on config file `config` under `root`, seed by seed (all the
    variants of seed 0 first: an interrupted sweep has whole seeds done). `seeds`: a
    count or the seeds themselves. `settings` (tuning): per variant, `(folder, overrides)`
    of each setting to run, in `root/<variant>/<folder>/seed<k>`."""
    seed_list = range(seeds) if isinstance(seeds, int) else list(seeds)
    runs = []
    for seed in seed_list:
        for v in variants if variants is not None else sweep.variants():
            for folder, overrides in (settings or {}).get(v.name, [("", ())]):
                workdir = os.path.join(root, v.name, folder, f"seed{seed}") if folder else \
                    os.path.join(root, v.name, f"seed{seed}")
                command = [python, "-m", "avgmm.main", f"--config={config}",
                           f"--workdir={workdir}", f"--config.seed={seed}",
                           f"--config.variant={v.name}", *v.overrides, *overrides, *extra]
                runs.append(PlannedRun(v, seed, workdir, command))
    return runs


def summary_command(sweep: Sweep, root: str, python: str = sys.executable,
                    selection: Optional[str] = None) -> List[str]:
    """The command that summarizes a finished sweep (`selection`: a tuned sweep's
    selection.json, whose chosen settings alone make the table)."""
    if sweep.summary == "study":
        return [python, "-m", "avgmm.study", root] + (
            [f"--selection={selection}"] if selection else [])
    command = [python, "-m", "avgmm.report", root, f"--out={root}"]
    command += ["--table1"] if sweep.summary == "table1" else []
    return command + ([f"--selection={selection}"] if selection else [])


def show(command: Sequence[str]) -> str:
    """A command as a shell line."""
    return " ".join(shlex.quote(c) for c in command)


def execute(runs: List[PlannedRun], jobs: int = 1) -> List[PlannedRun]:
    """Runs every planned run, `jobs` at a time; returns the runs that failed (each failure
    is reported when it happens; the others go on)."""
    failed: List[PlannedRun] = []
    start, done = time.time(), 0
    pending = list(runs)
    active: List[tuple] = []
    while pending or active:
        while pending and len(active) < jobs:
            run = pending.pop(0)
            progress.say(f"[{done + len(active) + 1}/{len(runs)}] {run.variant.name} seed "
                         f"{run.seed}: {show(run.command)}")
            if jobs == 1:
                active.append((run, subprocess.Popen(run.command), None))
            else:
                os.makedirs(run.workdir, exist_ok=True)
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
            eta = (time.time() - start) / done * (len(runs) - done)
            progress.say(f"{done}/{len(runs)} runs done, sweep ETA {progress.duration(eta)}")
    return failed


def get_sweep(name: str) -> Sweep:
    """The declared sweep `name`."""
    if name not in SWEEPS:
        raise ExperimentError(f"unknown sweep {name!r}: one of {', '.join(SWEEPS)} "
                              "(python -m avgmm.experiments list shows them)")
    return SWEEPS[name]
