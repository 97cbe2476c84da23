"""A whole training run, timed by kind of work, started cold and then warm.

Usage: python benchmarks/run_bench.py [--config=configs/demo.py] [--data_dir=DIR]
       [--overrides="--config.schedule.warmup_epochs=1 ..."] [--json results.jsonl]

Runs `python -m avgmm.main` twice in fresh processes on fresh workdirs: first with an
empty persistent compilation cache (cold: everything compiles), then with the cache the
first run filled (warm: what a second run, or a resumed one, sees). The prepared data and
the loader's decoded cache exist before either run, so the two differ only in
compilation. Each run's `timing.json` (avgmm/timing.py) splits its wall time into
startup, compilation, input, train steps, evaluation, the method's passes over the data
(gap collection and GMM fits) and checkpointing; the table prints each as seconds and a
share of the wall time, and the time from the process launch to the end of the first
training step. Asserts nothing.
"""

import ast
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.dirname(os.path.abspath(__file__))]
from avgmm import cli  # noqa: E402

from bench_results import append_jsonl  # noqa: E402

KINDS = ("startup", "compile", "input", "train", "evaluation", "method_passes",
         "checkpoint", "other")


def timed_run(config: str, data_dir: str, workdir: str, cache: str, overrides: str):
    """One training process; its timing.json plus the seconds from launch to the end of
    its first step and to its exit."""
    cmd = [sys.executable, "-m", "avgmm.main", f"--config={config}", f"--workdir={workdir}",
           f"--config.data.data_dir={data_dir}", f"--config.compilation_cache_dir={cache}",
           *shlex.split(overrides)]
    launched = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    ended = time.time()
    if proc.returncode != 0:
        sys.exit(f"error: the timed run failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
    with open(os.path.join(workdir, "timing.json"), encoding="utf-8") as f:
        t = json.load(f)
    t["launch_to_first_step"] = t["first_step_at"] - launched
    t["process_wall"] = ended - launched
    t["imports_and_setup"] = t["started_at"] - launched  # before train_and_evaluate
    return t


def prepare(config_path: str, data_dir: str, overrides: str) -> None:
    """The dataset and the loader's decoded cache, built before anything is timed."""
    from avgmm import config_text, run_config

    config = config_text.load_config_file(config_path)
    config.data.data_dir = data_dir
    for item in shlex.split(overrides):  # only the data fields matter here
        key, _, value = item.removeprefix("--config.").partition("=")
        if key.startswith("data."):
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                pass  # a plain string, e.g. a dataset name
            setattr(config.data, key[len("data."):], value)
    run_config.open_dataset(config)


def main() -> None:
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/demo.py")
    p.add_argument("--data_dir", default=None, help="default: a temporary folder")
    p.add_argument("--overrides", default="", help="extra --config.FIELD=VALUE flags")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or os.path.join(tmp, "data")
        prepare(os.path.join(REPO, args.config), data_dir, args.overrides)
        cache = os.path.join(tmp, "xla_cache")
        runs = {}
        for start in ("cold", "warm"):
            print(f"{start} run of {args.config} ...", flush=True)
            runs[start] = timed_run(args.config, data_dir, os.path.join(tmp, start), cache,
                                    args.overrides)
    cold, warm = runs["cold"], runs["warm"]
    print(f"\n{args.config} {args.overrides}".rstrip())
    print("| work | cold s | cold % | warm s | warm % |")
    print("|---|---|---|---|---|")
    for kind in KINDS:
        print(f"| {kind} | {cold[kind]:.1f} | {100 * cold[kind] / cold['wall']:.0f} | "
              f"{warm[kind]:.1f} | {100 * warm[kind] / warm['wall']:.0f} |")
    print(f"| run wall (train_and_evaluate) | {cold['wall']:.1f} | 100 | {warm['wall']:.1f} "
          "| 100 |")
    for key, name in (("imports_and_setup", "process launch to train_and_evaluate"),
                      ("to_first_step", "train_and_evaluate to first step done"),
                      ("launch_to_first_step", "process launch to first step done"),
                      ("process_wall", "process wall")):
        print(f"| {name} | {cold[key]:.1f} | | {warm[key]:.1f} | |")
    print(f"\ncompilations (XLA executables built or loaded): cold {cold['compilations']}, "
          f"warm {warm['compilations']}; first step {cold['to_first_step'] / warm['to_first_step']:.1f}x "
          f"sooner warm (from train_and_evaluate), "
          f"{cold['launch_to_first_step'] / warm['launch_to_first_step']:.1f}x from launch")
    for start, t in runs.items():
        append_jsonl(args.json, dict(t, bench="run", start=start, config=args.config,
                                     overrides=args.overrides))


if __name__ == "__main__":
    main()
