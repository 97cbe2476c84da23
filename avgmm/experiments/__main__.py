"""`python -m avgmm.experiments`: list the declared sweeps, or run one.

    python -m avgmm.experiments list [SWEEP]
    python -m avgmm.experiments run SWEEP CONFIG [--seeds=N] [--workdir=ROOT] [--jobs=J]
        [--dry-run] [--config.FIELD=VALUE ...]

`run` trains every variant of SWEEP on CONFIG for seeds 0..N-1 (default 3; ablations 1),
each in ROOT/<variant>/seed<k> (ROOT defaults to runs/<sweep>/<config name>), then writes
the summary (the report, Table 1 or the study). Run again, it resumes where it stopped.
`--dry-run` prints the commands instead. Extra `--config.` overrides go to every run.
Mistakes are one line `error: ...` with exit status 2.
"""

import os
import subprocess
import sys
from typing import List

from avgmm import progress
from avgmm.errors import UserError
from avgmm.experiments import runner
from avgmm.experiments.variants import SWEEPS

USAGE = __doc__.split("\n\n")[1]


def _int(flag: str, value: str, low: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if number < low or str(number) != value.strip():
        raise UserError(f"{flag}={value!r} is not allowed: an integer >= {low}")
    return number


def run(args: List[str]) -> int:
    """`run SWEEP CONFIG [options]`; returns the exit status."""
    if len(args) < 2 or args[0].startswith("-") or args[1].startswith("-"):
        raise UserError("run needs a sweep and a config file: python -m avgmm.experiments "
                        "run SWEEP CONFIG [--seeds=N] (sweeps: " + ", ".join(SWEEPS) + ")")
    sweep, config = runner.get_sweep(args[0]), args[1]
    if not os.path.exists(config.split(":")[0]):
        raise UserError(f"config file {config!r} not found, e.g. configs/demo.py")
    seeds = 1 if sweep.name == "ablations" else 3
    root = os.path.join("runs", sweep.name,
                        os.path.splitext(os.path.basename(config.split(":")[0]))[0])
    jobs, dry, extra = 1, False, []
    rest = list(args[2:])
    while rest:
        arg = rest.pop(0)
        name, eq, value = arg.partition("=")
        if name in ("--seeds", "--workdir", "--jobs") and not eq:
            if not rest or rest[0].startswith("--"):
                raise UserError(f"{name} needs a value, e.g. {name}=2")
            value = rest.pop(0)
        if name == "--seeds":
            seeds = _int(name, value, 1)
        elif name == "--jobs":
            jobs = _int(name, value, 1)
        elif name == "--workdir":
            if not value.strip() or os.path.abspath(value) == os.path.abspath(os.sep):
                raise UserError(f"--workdir={value!r} is not allowed: name a folder for the "
                                "sweep's runs, e.g. --workdir=runs/mine")
            root = value
        elif arg == "--dry-run":
            dry = True
        elif arg.startswith("--config.") and eq:
            extra.append(arg)
        else:
            raise UserError(f"unknown option {arg!r}: use --seeds=N, --workdir=ROOT, "
                            "--jobs=J, --dry-run or --config.FIELD=VALUE")
    python = os.environ.get("PYTHON") or sys.executable
    planned = runner.plan(sweep, config, root, seeds, extra, python=python)
    summary = runner.summary_command(sweep, root, python=python)
    if dry:
        print("\n".join(runner.show(r.command) for r in planned))
        print(runner.show(summary))
        return 0
    progress.say(f"sweep {sweep.name}: {len(planned)} runs ({seeds} seed(s) x "
                 f"{len(planned) // seeds} variants) under {root}, {jobs} at a time")
    try:
        failed = runner.execute(planned, jobs)
    except KeyboardInterrupt:
        print(f"interrupted; run the same command to resume the sweep under {root}",
              file=sys.stderr)
        return 130
    if failed:
        print(f"error: {len(failed)} run(s) failed: "
              + ", ".join(f"{r.variant.name} seed {r.seed}" for r in failed)
              + "; fix the cause and run the same command again (finished runs are kept)",
              file=sys.stderr)
        return 1
    return subprocess.call(summary)


def list_sweeps(args: List[str]) -> int:
    """`list [SWEEP]`: the sweeps, or one sweep's variants with their overrides."""
    if not args:
        for sweep in SWEEPS.values():
            print(f"{sweep.name:10s} {len(sweep.variants()):3d} variants  {sweep.description}")
        return 0
    for v in runner.get_sweep(args[0]).variants():
        print(f"{v.name:24s} {v.label}\n{'':24s} {' '.join(v.overrides) or '(the config as is)'}")
    return 0


def main(argv: List[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    try:
        if argv[0] == "run":
            return run(argv[1:])
        if argv[0] == "list":
            return list_sweeps(argv[1:])
        raise UserError(f"unknown command {argv[0]!r}: list or run")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
