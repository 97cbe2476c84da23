"""`python -m avgmm.experiments`: list the declared sweeps, or run one.

    python -m avgmm.experiments list [SWEEP]
    python -m avgmm.experiments run SWEEP CONFIG [--seeds=N] [--workdir=ROOT] [--jobs=J]
        [--tune [--final_seeds=F] | --selection=PATH] [--variants=a,b] [--dry-run]
        [--config.FIELD=VALUE ...]

`run` trains every variant of SWEEP on CONFIG for seeds 0..N-1 (default 3; ablations 1),
each in ROOT/<variant>/seed<k> (ROOT defaults to runs/<sweep>/<config name>), then writes
the summary (the report, Table 1 or the study). Run again, it resumes where it stopped.
`--tune`: every variant gets the same grid (learning rates 1/3, 1 and 3 times the
config's, times its method's main hyper-parameter), N seeds per setting, in
ROOT/<variant>/<setting>/seed<k>; the setting with the best mean validation accuracy is
chosen (ROOT/selection.json) and run for seeds 0..F-1 (default 5), and the summary shows
those runs with the chosen setting and the number of settings tried. `--selection=PATH`
runs another sweep's chosen settings (its selection.json) for seeds 0..N-1.
`--variants=a,b` runs only those variants of the sweep (e.g. to screen candidates).
`--dry-run` prints the commands instead. Extra `--config.` overrides go to every run.
Mistakes are one line `error: ...` with exit status 2.
"""

import ast
import os
import subprocess
import sys
from typing import Any, Dict, List

from avgmm import config_text, progress
from avgmm.errors import UserError
from avgmm.experiments import runner, tuning
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


def _default_root(sweep_name: str, config: str) -> str:
    """runs/<sweep>/<config file name>[_<config argument>], e.g. runs/study/av_mnist_graded."""
    path, _, argument = config.partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    return os.path.join("runs", sweep_name, name + (f"_{argument}" if argument else ""))


def _options(args: List[str], sweep_name: str, config: str) -> Dict[str, Any]:
    """The options of `run` after SWEEP and CONFIG, checked."""
    opts = {"seeds": 1 if sweep_name == "ablations" else 3, "jobs": 1, "dry": False,
            "tune": False, "final_seeds": 5, "selection": None, "extra": [], "only": None,
            "root": _default_root(sweep_name, config)}
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        name, eq, value = arg.partition("=")
        if name in _VALUED and not eq:
            if not rest or rest[0].startswith("--"):
                raise UserError(f"{name} needs a value, e.g. {name}={_VALUED[name]}")
            value = rest.pop(0)
        if name in ("--seeds", "--jobs", "--final_seeds"):
            opts[name[2:]] = _int(name, value, 1)
        elif name == "--workdir":
            if not value.strip() or os.path.abspath(value) == os.path.abspath(os.sep):
                raise UserError(f"--workdir={value!r} is not allowed: name a folder for the "
                                "sweep's runs, e.g. --workdir=runs/mine")
            opts["root"] = value
        elif name == "--selection":
            opts["selection"] = value
        elif name == "--variants":
            opts["only"] = [v for v in value.split(",") if v]
        elif arg == "--dry-run":
            opts["dry"] = True
        elif arg == "--tune":
            opts["tune"] = True
        elif arg.startswith("--config.") and eq:
            opts["extra"].append(arg)
        else:
            raise UserError(f"unknown option {arg!r}: use --seeds=N, --workdir=ROOT, "
                            "--jobs=J, --tune, --final_seeds=F, --selection=PATH, "
                            "--variants=a,b, --dry-run or --config.FIELD=VALUE")
    if opts["tune"] and opts["selection"]:
        raise UserError("--tune and --selection exclude each other: --tune chooses the "
                        "settings, --selection runs settings chosen before")
    return opts


_VALUED = {"--seeds": "2", "--workdir": "runs/mine", "--jobs": "2", "--final_seeds": "5",
           "--selection": "runs/table1/demo/selection.json", "--variants": "concat,mla"}


def run(args: List[str]) -> int:
    """`run SWEEP CONFIG [options]`; returns the exit status."""
    if len(args) < 2 or args[0].startswith("-") or args[1].startswith("-"):
        raise UserError("run needs a sweep and a config file: python -m avgmm.experiments "
                        "run SWEEP CONFIG [--seeds=N] (sweeps: " + ", ".join(SWEEPS) + ")")
    sweep, config = runner.get_sweep(args[0]), args[1]
    if not os.path.exists(config.split(":")[0]):
        raise UserError(f"config file {config!r} not found, e.g. configs/demo.py")
    opts = _options(args[2:], sweep.name, config)
    root, seeds, jobs = opts["root"], opts["seeds"], opts["jobs"]
    python = os.environ.get("PYTHON") or sys.executable
    variants = sweep.variants()
    if opts["only"] is not None:
        unknown = [n for n in opts["only"] if n not in {v.name for v in variants}]
        if unknown or not opts["only"]:
            raise UserError(f"--variants: {', '.join(unknown) or 'none named'} not in sweep "
                            f"{sweep.name} (python -m avgmm.experiments list {sweep.name})")
        variants = [v for v in variants if v.name in opts["only"]]
    if opts["tune"] or opts["selection"]:
        return _run_tuned(sweep, config, variants, opts, python)
    planned = runner.plan(sweep, config, root, seeds, opts["extra"], python=python,
                          variants=variants)
    summary = runner.summary_command(sweep, root, python=python)
    if opts["dry"]:
        print("\n".join(runner.show(r.command) for r in planned))
        print(runner.show(summary))
        return 0
    progress.say(f"sweep {sweep.name}: {len(planned)} runs ({seeds} seed(s) x "
                 f"{len(variants)} variants) under {root}, {jobs} at a time")
    return _execute(planned, jobs, root) or subprocess.call(summary)


def _execute(planned, jobs: int, root: str) -> int:
    """Runs the planned runs; 0, or the exit status that reports what failed."""
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
    return 0


def _run_tuned(sweep, config: str, variants, opts: Dict[str, Any], python: str) -> int:
    """`--tune` (grid, selection on validation, final seeds) or `--selection=PATH`."""
    root, jobs = opts["root"], opts["jobs"]
    selection_path = os.path.join(root, tuning.SELECTION_FILE)
    summary = runner.summary_command(sweep, root, python=python, selection=selection_path)
    if opts["selection"]:
        chosen = tuning.read_selection(opts["selection"])
        missing = [v.name for v in variants if v.name not in chosen]
        if missing:
            raise UserError(f"{opts['selection']} has no chosen setting for "
                            f"{', '.join(missing)}; tune them first (--tune)")
        final_seeds = opts["seeds"]
        if opts["dry"]:
            settings = {v.name: [(chosen[v.name]["setting"], chosen[v.name]["overrides"])]
                        for v in variants}
            for r in runner.plan(sweep, config, root, final_seeds, opts["extra"], python,
                                 variants, settings):
                print(runner.show(r.command))
            print(runner.show(summary))
            return 0
        chosen = {v.name: dict(chosen[v.name], selected_in=opts["selection"])
                  for v in variants}
        tuning.write_selection(root, chosen)
    else:
        config_file = config_text.load_config_file(config)
        lr = float(_override(opts["extra"], "optimizer.learning_rate",
                             config_file.optimizer.learning_rate))
        method = str(_override(opts["extra"], "method", config_file.method))
        grids = {v.name: tuning.grid(v, lr, method) for v in variants}
        settings = {name: [(s.name, s.overrides) for s in g] for name, g in grids.items()}
        planned = runner.plan(sweep, config, root, opts["seeds"], opts["extra"], python,
                              variants, settings)
        final_seeds = opts["final_seeds"]
        if opts["dry"]:
            print("\n".join(runner.show(r.command) for r in planned))
            print(f"# then each variant's setting with the best mean validation accuracy "
                  f"(written to {selection_path}) for seeds 0..{final_seeds - 1}")
            print(runner.show(summary))
            return 0
        progress.say(f"tuning {sweep.name}: {len(planned)} runs ({opts['seeds']} seed(s) x "
                     f"{sum(len(g) for g in grids.values())} settings of {len(variants)} "
                     f"variants) under {root}, {jobs} at a time")
        status = _execute(planned, jobs, root)
        if status:
            return status
        chosen = tuning.select(root, variants, grids, opts["seeds"])
        progress.say(f"chosen on validation: {tuning.write_selection(root, chosen)}")
    settings = {v.name: [(chosen[v.name]["setting"], chosen[v.name]["overrides"])]
                for v in variants}
    final = runner.plan(sweep, config, root, final_seeds, opts["extra"], python, variants,
                        settings)
    progress.say(f"final runs: {len(final)} ({final_seeds} seeds x {len(variants)} "
                 "variants at their chosen settings)")
    return _execute(final, jobs, root) or subprocess.call(summary)


def _override(extra: List[str], field: str, default: Any) -> Any:
    """The value an extra `--config.FIELD=VALUE` sets, else `default`."""
    for arg in extra:
        name, _, value = arg.partition("=")
        if name == f"--config.{field}":
            try:
                return ast.literal_eval(value)
            except (ValueError, SyntaxError):
                return value
    return default


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
