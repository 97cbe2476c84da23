"""`python -m avgmm.experiments`: list the declared sweeps, or run one.

    python -m avgmm.experiments list [SWEEP]
    python -m avgmm.experiments run SWEEP CONFIG [--seeds=N] [--workdir=ROOT] [--jobs=J]
        [--tune [--final_seeds=F] | --selection=PATH] [--variants=a,b] [--dry-run]
        [--ledger=FILE] [--shard=I/N] [--config.FIELD=VALUE ...]

`run` trains every variant of SWEEP on CONFIG for seeds 0..N-1 (default 3; ablations 1),
each in ROOT/<variant>/seed<k> (ROOT defaults to runs/<sweep>/<config name>), then writes
the summary (the report, Table 1 or the study). Run again, it resumes where it stopped.
`--tune`: every variant gets the same 6 settings (learning rates around the config's,
times the two values of its method's main hyper-parameter), in
ROOT/<variant>/<setting>/seed<k>: all screened on seed 0, the best two confirmed on seeds 1
and 2, the best mean validation accuracy chosen (ROOT/selection.json) and run up to seeds
0..F-1 (default 5; avgmm/experiments/tuning.py); the summary shows those runs with the
chosen setting, the number of settings tried and the cost. `--selection=PATH` runs another
sweep's chosen settings (its selection.json, or its ledger) for seeds 0..N-1.
`--ledger=FILE`: every finished run is appended to FILE (JSON lines), and runs recorded
there are skipped (avgmm/experiments/ledger.py). `--shard=I/N` (with --ledger): only every
N-th planned run from the I-th (0-based); the shards' ledgers, concatenated, make the
sweep's (a tuned sweep's shard stops after each stage until the merged ledger has it).
`--variants=a,b` runs only those variants of the sweep (e.g. to screen candidates).
`--dry-run` prints the commands, the planned run count and, from the ledger's finished
runs of CONFIG, the estimated hours. Extra `--config.` overrides go to every run.
Mistakes are one line `error: ...` with exit status 2.
"""

import ast
import os
import statistics
import subprocess
import sys
from typing import Any, Dict, List, Optional, Tuple

from avgmm import cli, config_text, progress
from avgmm.errors import UserError
from avgmm.experiments import ledger, runner, tuning
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
            "root": _default_root(sweep_name, config), "ledger": None, "shard": (0, 1)}
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
            opts["root"] = cli.folder_flag("--workdir", value, "runs/mine")
        elif name == "--selection":
            opts["selection"] = value
        elif name == "--ledger":
            if not value.strip() or os.path.isdir(value):
                raise UserError(f"--ledger={value!r} is not allowed: name a file (JSON "
                                "lines), e.g. --ledger=docs/table1/demo.jsonl")
            opts["ledger"] = value
        elif name == "--shard":
            opts["shard"] = _shard(value)
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
                            "--ledger=FILE, --shard=I/N, --variants=a,b, --dry-run or "
                            "--config.FIELD=VALUE")
    if opts["tune"] and opts["selection"]:
        raise UserError("--tune and --selection exclude each other: --tune chooses the "
                        "settings, --selection runs settings chosen before")
    if opts["shard"][1] > 1 and not opts["ledger"]:
        raise UserError("--shard needs --ledger=FILE: the shards' ledgers, concatenated, "
                        "are the sweep's results")
    if opts["tune"] and opts["final_seeds"] < len(tuning.CHOICE_SEEDS):
        raise UserError(f"--final_seeds={opts['final_seeds']} is not allowed with --tune: "
                        f"at least {len(tuning.CHOICE_SEEDS)}, the seeds the choice is made on")
    if opts["tune"] and any(a.partition("=")[0] == "--seeds" for a in args):
        raise UserError("--seeds does not apply to --tune, whose protocol fixes the "
                        "screening seeds; --final_seeds=F sets the final ones")
    return opts


def _shard(value: str) -> tuple:
    """`I/N` -> (I, N), 0 <= I < N."""
    index, _, count = value.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise UserError(f"--shard={value!r} is not allowed: I/N with 0 <= I < N, e.g. "
                        "--shard=0/4 ... --shard=3/4 (a SLURM array: "
                        "--shard=$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
    return i, n


_VALUED = {"--seeds": "2", "--workdir": "runs/mine", "--jobs": "2", "--final_seeds": "5",
           "--selection": "runs/table1/demo/selection.json", "--variants": "concat,mla",
           "--ledger": "docs/table1/demo.jsonl", "--shard": "0/2"}


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
    summary = runner.summary_command(sweep, root, python=python, ledger=opts["ledger"])
    if opts["dry"]:
        print(_plan_line(config, {"runs": len(_shard_of(planned, opts))}, opts))
        print("\n".join(runner.show(r.command) for r in _shard_of(planned, opts)))
        print(runner.show(summary))
        return 0
    progress.say(f"sweep {sweep.name}: {len(planned)} runs ({seeds} seed(s) x "
                 f"{len(variants)} variants) under {root}, {jobs} at a time"
                 + _shard_note(opts))
    status = _execute(_shard_of(planned, opts), jobs, root, opts, sweep.name)
    if status or opts["shard"][1] > 1:
        return status
    return subprocess.call(summary)


def _shard_of(planned, opts: Dict[str, Any]):
    return runner.shard(planned, *opts["shard"])


def _shard_note(opts: Dict[str, Any]) -> str:
    i, n = opts["shard"]
    return f"; shard {i}/{n}: one planned run in {n}" if n > 1 else ""


def _execute(planned, jobs: int, root: str, opts: Dict[str, Any], sweep: str) -> int:
    """Runs the planned runs; 0, or the exit status that reports what failed."""
    try:
        failed = runner.execute(planned, jobs, opts["ledger"], sweep)
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


def _plan_line(config: str, counts: Dict[str, int], opts: Dict[str, Any]) -> str:
    """`# planned: N runs (...), about H hours one at a time (...)`: the estimate is the
    mean seconds of the ledger's finished runs of the same config file."""
    parts = ", ".join(f"{k} {v}" for k, v in counts.items() if k not in ("runs", "total"))
    total = counts.get("total", counts.get("runs", 0))
    line = f"# planned: {total} runs" + (f" ({parts})" if parts else "") + _shard_note(opts)
    lines = [l for l in ledger.read([opts["ledger"]]) if l["config"] == config
             and l.get("seconds")] if opts["ledger"] else []
    if not lines:
        return line + "; no estimate (no finished run of this config in --ledger)"
    seconds = statistics.fmean(l["seconds"] for l in lines)
    return (line + f"; about {total * seconds / 3600:.1f} hours one at a time (mean "
            f"{seconds:.0f} s over the ledger's {len(lines)} runs of {config})")


def _run_tuned(sweep, config: str, variants, opts: Dict[str, Any], python: str) -> int:
    """`--tune` (the protocol of avgmm/experiments/tuning.py: screen, confirm, final
    seeds) or `--selection=PATH` (settings chosen before, for seeds 0..N-1)."""
    root, jobs = opts["root"], opts["jobs"]
    selection_path = os.path.join(root, tuning.SELECTION_FILE)
    summary = runner.summary_command(sweep, root, python=python, selection=selection_path,
                                     ledger=opts["ledger"])
    if opts["selection"]:
        chosen = tuning.read_selection(opts["selection"])
        missing = [v.name for v in variants if v.name not in chosen]
        if missing:
            raise UserError(f"{opts['selection']} has no chosen setting for "
                            f"{', '.join(missing)}; tune them first (--tune)")
        settings = {v.name: [(chosen[v.name]["setting"], chosen[v.name]["overrides"])]
                    for v in variants}
        planned = _shard_of(runner.plan(sweep, config, root, opts["seeds"], opts["extra"],
                                        python, variants, settings,
                                        selected_in=opts["selection"]), opts)
        if opts["dry"]:
            print(_plan_line(config, {"runs": len(planned)}, opts))
            for r in planned:
                print(runner.show(r.command))
            print(runner.show(summary))
            return 0
        tuning.write_selection(root, {v.name: dict(chosen[v.name],
                                                   selected_in=opts["selection"])
                                      for v in variants})
        status = _execute(planned, jobs, root, opts, sweep.name)
        return status or (0 if opts["shard"][1] > 1 else subprocess.call(summary))

    config_file = config_text.load_config_file(config)
    lr = float(_override(opts["extra"], "optimizer.learning_rate",
                         config_file.optimizer.learning_rate))
    method = str(_override(opts["extra"], "method", config_file.method))
    grids = {v.name: tuning.grid(v, lr, method) for v in variants}
    final_seeds = list(range(len(tuning.CHOICE_SEEDS), opts["final_seeds"]))

    def stage(name: str, settings, seeds) -> Tuple[Optional[int], tuning.Accuracies]:
        """Runs this shard's part of a stage; the exit status where the sweep stops here
        (a failure, or other shards' runs missing from the ledger), else None, and the
        stage's validation accuracies."""
        planned = runner.plan(sweep, config, root, seeds, opts["extra"], python, variants,
                              settings)
        progress.say(f"tuning {sweep.name}, {name}: {len(planned)} runs under {root}, "
                     f"{jobs} at a time" + _shard_note(opts))
        status = _execute(_shard_of(planned, opts), jobs, root, opts, sweep.name)
        if status:
            return status, {}
        done = _accuracies(planned, opts)
        gaps = [r for r in planned if (r.variant.name, r.setting, r.seed) not in done]
        if gaps:
            if opts["shard"][1] > 1:
                progress.say(f"{name}: this shard's runs are done; {len(gaps)} run(s) of "
                             f"other shards are not in {opts['ledger']} yet: concatenate "
                             "the shards' ledgers into it and run this command again")
                return 0, done
            raise UserError(f"{name}: {len(gaps)} run(s) finished without a validation "
                            f"accuracy, e.g. {gaps[0].workdir}")
        return None, done

    screen = {n: [(s.name, s.overrides) for s in g] for n, g in grids.items()}
    if opts["dry"]:
        print(_plan_line(config, tuning.planned_count(len(variants), opts["final_seeds"]),
                         opts))
        for r in _shard_of(runner.plan(sweep, config, root, tuning.SCREEN_SEEDS,
                                       opts["extra"], python, variants, screen), opts):
            print(runner.show(r.command))
        print(f"# then, per variant, its {tuning.CONFIRM_TOP} best settings on validation "
              f"(seed 0) for seeds 1-2, the best mean over seeds 0-2 (written to "
              f"{selection_path}) for seeds {len(tuning.CHOICE_SEEDS)}.."
              f"{opts['final_seeds'] - 1}")
        print(runner.show(summary))
        return 0
    status, acc = stage("screen (seed 0, every setting)", screen, tuning.SCREEN_SEEDS)
    if status is not None:
        return status
    by_name = {n: {s.name: s for s in g} for n, g in grids.items()}
    top = {n: tuning.top_settings(acc, n, list(by_name[n])) for n in grids}
    confirm = {n: [(t, by_name[n][t].overrides) for t in top[n]] for n in grids}
    confirm_seeds = [s for s in tuning.CHOICE_SEEDS if s not in tuning.SCREEN_SEEDS]
    status, confirmed = stage(f"confirm (the best {tuning.CONFIRM_TOP} settings, seeds "
                              f"{confirm_seeds[0]}-{confirm_seeds[-1]})", confirm,
                              confirm_seeds)
    if status is not None:
        return status
    acc.update(confirmed)
    chosen = {}
    for v in variants:
        best, means = tuning.choose(acc, v.name, top[v.name])
        s = by_name[v.name][best]
        chosen[v.name] = {"setting": best, "overrides": list(s.overrides), "values": s.values,
                          "settings_tried": len(grids[v.name]), "val_means": means}
    progress.say(f"chosen on validation: {tuning.write_selection(root, chosen)}")
    final = {n: [(c["setting"], c["overrides"])] for n, c in chosen.items()}
    if final_seeds:
        status, _ = stage(f"final (the chosen setting, seeds {final_seeds[0]}-"
                          f"{final_seeds[-1]})", final, final_seeds)
        if status is not None:
            return status
    return subprocess.call(summary)


def _accuracies(planned, opts: Dict[str, Any]) -> tuning.Accuracies:
    """Validation accuracies of the planned runs: from the ledger (every shard's, once
    merged) where there is one, else from their workdirs."""
    if opts["ledger"]:
        keys = {r.key() for r in planned}
        return tuning.accuracies_of_lines(l for l in ledger.read([opts["ledger"]])
                                          if l["key"] in keys)
    return tuning.accuracies_of_runs(planned)


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
