"""A whole training run, timed by kind of work, started cold and then warm; optionally
beside another checkout of the code (before/after a change), interleaved.

Usage: python benchmarks/run_bench.py [--config=configs/demo.py] [--data_dir=DIR]
       [--overrides="--config.method=concat ..."] [--baseline_checkout=PATH]
       [--rounds=1] [--starts=cold,warm] [--gpu_factor=50] [--json results.jsonl]

Runs `python -m avgmm.main` in fresh processes on fresh workdirs: first with an empty
persistent compilation cache (cold: everything compiles), then with the cache the cold
run filled (warm: what a second run, or a resumed one, sees). The prepared data and the
loader's decoded cache exist before any run, so cold and warm differ only in compilation.
With `--baseline_checkout` (e.g. a `git worktree` of the commit before a change), every
round runs that checkout's code and this one's, alternately (the first in each round
alternates too), each with its own compilation cache, so that a loaded machine slows both
alike; ratios are the numbers to quote. Each run's `timing.json` (avgmm/timing.py) splits
its wall time by kind of work.

The tables: (1) seconds of each kind, as before; (2) per epoch (a run's seconds over its
epochs, the run's fixed costs such as startup and the final evaluation spread over them):
the fixed host overhead (startup, checkpointing as far as the run waits for it, the
method's passes less their wait for the device, writing metrics, progress lines, other),
evaluation split into host work and waiting for the device, the train steps, and a
PROJECTED GPU epoch: the host costs as measured plus the device compute (train steps, and
the device waits of evaluation and of the method's passes) divided by `--gpu_factor`
(compilation left out: a warm start loads it). It is a projection, not a measurement: the
factor is the assumed speed-up of this model's device work on a GPU over this machine. The
default, 50, is issue 24's working figure ("divide the train column by 50"); no GPU
number for this model exists yet (benchmarks/README.md section 6). Replace it with the
ratio of this machine's train step to a GPU's (`./launch.sh bench gpu`) when there is one.
A timer without the device split (older code) gets the other checkout's device share of
its evaluation and method passes, marked `~`. (3) the time to the first training step.
Asserts nothing.
"""

import ast
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.dirname(os.path.abspath(__file__))]
from avgmm import cli  # noqa: E402

from bench_results import append_jsonl  # noqa: E402

KINDS = ("startup", "compile", "input", "train", "evaluation", "method_passes",
         "checkpoint", "metrics", "progress", "other")
# What issue 24 counts as the fixed host overhead of an epoch (metrics and progress were
# part of "other" before the timer told them apart).
FIXED = ("startup", "checkpoint", "method_passes_host", "metrics", "progress", "other")
# Rows that use the other checkout's device share where a timer did not measure it.
ESTIMATED = ("method_passes_host", "fixed_host", "evaluation_host", "evaluation_device",
             "method_passes_device", "projected")


def timed_run(checkout: str, config: str, data_dir: str, workdir: str, cache: str,
              overrides: str) -> Dict:
    """One training process of `checkout`'s code; its timing.json plus the seconds from
    launch to the end of its first step and to its exit, and its results.json."""
    cmd = [sys.executable, "-m", "avgmm.main", f"--config={config}", f"--workdir={workdir}",
           f"--config.data.data_dir={data_dir}", f"--config.compilation_cache_dir={cache}",
           *shlex.split(overrides)]
    env = dict(os.environ, PYTHONPATH=checkout)
    launched = time.time()
    proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    ended = time.time()
    if proc.returncode != 0:
        sys.exit(f"error: the timed run failed ({' '.join(cmd)} in {checkout}):\n"
                 f"{proc.stderr[-2000:]}")
    with open(os.path.join(workdir, "timing.json"), encoding="utf-8") as f:
        t = json.load(f)
    with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
        t["results"] = json.load(f)
    if "epochs" not in t:  # older timers: every epoch of the config ran in this process
        with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
            t["epochs"] = json.load(f)["epochs"]
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


def per_epoch(t: Dict, device_share: Optional[Dict[str, float]] = None) -> Dict:
    """A run's seconds per epoch by kind, evaluation and method passes split into host
    work and device waits (`device_share`: the share to assume where the timer did not
    measure it; the result says `estimated`)."""
    n = max(1, t["epochs"])
    out = {k: t.get(k, 0.0) / n for k in KINDS}
    measured = "device_wait" in t
    out["estimated"] = not measured
    for kind in ("evaluation", "method_passes"):
        total = t.get(kind, 0.0)
        if measured:
            device = t["device_wait"].get(kind, 0.0)
        else:
            device = total * (device_share or {}).get(kind, 0.0)
        out[f"{kind}_device"] = device / n
        out[f"{kind}_host"] = (total - device) / n
    out["fixed_host"] = sum(out[k] for k in FIXED)
    out["device"] = out["train"] + out["evaluation_device"] + out["method_passes_device"]
    out["checkpoint_in_background"] = t.get("checkpoint_in_background", 0.0) / n
    return out


def device_shares(t: Dict) -> Dict[str, float]:
    """The device-wait share of evaluation and method passes a run measured."""
    waits = t.get("device_wait", {})
    return {k: waits.get(k, 0.0) / t[k] if t.get(k) else 0.0
            for k in ("evaluation", "method_passes")}


def projected(e: Dict, factor: float) -> float:
    """Projected GPU epoch: host costs as measured, device compute over `factor`."""
    host = e["fixed_host"] + e["evaluation_host"] + e["input"]
    return host + e["device"] / factor


def median_run(runs: List[Dict]) -> Dict:
    """Per-field medians of repeated runs (numbers only; the first run's other fields)."""
    if len(runs) == 1:
        return runs[0]
    out = dict(runs[0])
    for k, v in runs[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = statistics.median(r[k] for r in runs)
        elif isinstance(v, dict) and all(isinstance(x, (int, float)) for x in v.values()):
            out[k] = {kk: statistics.median(r.get(k, {}).get(kk, 0.0) for r in runs)
                      for kk in v}
    return out


def _fmt(x: float) -> str:
    return f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"


def _ratio(a: float, b: float) -> str:
    return f"{b / a:.2f}" if a > 1e-9 else "-"


def main() -> None:
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/demo.py")
    p.add_argument("--data_dir", default=None, help="default: a temporary folder")
    p.add_argument("--overrides", default="", help="extra --config.FIELD=VALUE flags")
    p.add_argument("--baseline_checkout", default=None,
                   help="another checkout of the code (e.g. a git worktree of the commit "
                        "before a change), run beside this one")
    p.add_argument("--rounds", type=int, default=1, help="interleaved repetitions (medians)")
    p.add_argument("--starts", default="cold,warm", help="cold, warm or both")
    p.add_argument("--gpu_factor", type=float, default=50.0,
                   help="assumed GPU speed-up of the device work (see the docstring)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    starts = [s for s in args.starts.split(",") if s]
    if not starts or any(s not in ("cold", "warm") for s in starts):
        sys.exit(f"error: --starts={args.starts}: name cold, warm or both")
    checkouts = {"this": REPO}
    if args.baseline_checkout:
        base = os.path.abspath(os.path.expanduser(args.baseline_checkout))
        if not os.path.isdir(os.path.join(base, "avgmm")):
            sys.exit(f"error: --baseline_checkout={args.baseline_checkout} holds no avgmm "
                     "package; point it at a checkout of the repository")
        checkouts = {"before": base, "after": REPO}
    runs: Dict[tuple, List[Dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or os.path.join(tmp, "data")
        prepare(os.path.join(REPO, args.config), data_dir, args.overrides)
        for r in range(args.rounds):
            order = list(checkouts) if r % 2 == 0 else list(checkouts)[::-1]
            for start in starts:
                for label in order:
                    # Cold: an empty cache of this round; warm: the one its cold run filled.
                    cache = os.path.join(tmp, f"xla_cache_{label}_{r}")
                    if start == "warm" and "cold" not in starts and not os.path.isdir(cache):
                        print(f"filling the cache of {label} ...", flush=True)
                        timed_run(checkouts[label], args.config, data_dir,
                                  os.path.join(tmp, f"fill_{label}_{r}"), cache,
                                  args.overrides)
                    print(f"round {r + 1}: {start} run of {label} ({checkouts[label]}) "
                          f"{args.config} ...", flush=True)
                    t = timed_run(checkouts[label], args.config, data_dir,
                                  os.path.join(tmp, f"{start}_{label}_{r}"), cache,
                                  args.overrides)
                    runs.setdefault((label, start), []).append(t)
                    append_jsonl(args.json, dict(
                        {k: v for k, v in t.items() if k != "results"}, bench="run",
                        start=start, checkout=label, path=checkouts[label], round=r,
                        config=args.config, overrides=args.overrides))
    med = {key: median_run(v) for key, v in runs.items()}
    columns = [(label, start) for start in starts for label in checkouts]
    _print_tables(args, checkouts, starts, columns, med, runs)


def _print_tables(args, checkouts, starts, columns, med, runs) -> None:
    labels = list(checkouts)
    head = " | ".join(f"{label} {start}" for label, start in columns)
    print(f"\n{args.config} {args.overrides}".rstrip()
          + (f"; {args.rounds} interleaved rounds, medians" if args.rounds > 1 else ""))
    for label in labels:
        print(f"- {label}: {checkouts[label]}")

    print(f"\nSeconds by kind of work (timing.json):\n\n| work | {head} |")
    print("|---" * (len(columns) + 1) + "|")
    for kind in KINDS:
        print(f"| {kind} | " + " | ".join(_fmt(med[c].get(kind, 0.0)) for c in columns) + " |")
    for key, name in (("wall", "run wall (train_and_evaluate)"),
                      ("compile_in_background", "compilation in background threads"),
                      ("checkpoint_in_background", "checkpoint saves in the background"),
                      ("imports_and_setup", "process launch to train_and_evaluate"),
                      ("process_wall", "process wall")):
        print(f"| {name} | " + " | ".join(_fmt(med[c].get(key, 0.0)) for c in columns) + " |")

    # Per epoch, with the device share the other checkout measured where one did not.
    shares = {s: next((device_shares(med[(l, s)]) for l in labels
                       if "device_wait" in med[(l, s)]), {}) for s in starts}
    epoch = {c: per_epoch(med[c], shares[c[1]]) for c in columns}
    rows = [("startup", "startup"), ("checkpoint", "checkpoint (the run waits)"),
            ("method_passes_host", "method passes, host"), ("metrics", "metric writing"),
            ("progress", "progress lines"), ("other", "other"),
            ("fixed_host", "**fixed host overhead**"),
            ("evaluation_host", "evaluation, host"), ("input", "input (waiting for batches)"),
            ("train", "train steps (device compute)"),
            ("evaluation_device", "evaluation, device wait"),
            ("method_passes_device", "method passes, device wait"),
            ("compile", "compilation (the run waits)"),
            ("checkpoint_in_background", "checkpoint saves in the background")]
    ratio_head = "".join(f" | after/before {s}" for s in starts) if len(labels) == 2 else ""
    print(f"\nPer epoch (seconds over {med[columns[0]]['epochs']} epochs; `~`: device share "
          f"taken from the other checkout):\n\n| per epoch | {head}{ratio_head} |")
    print("|---" * (len(columns) + 1 + (len(starts) if len(labels) == 2 else 0)) + "|")

    def line(name, values):
        ratios = ""
        if len(labels) == 2:
            ratios = "".join(f" | {_ratio(values[('before', s)], values[('after', s)])}"
                             for s in starts)
        cells = " | ".join(("~" if epoch[c]["estimated"] and name in ESTIMATED else "")
                           + _fmt(values[c]) for c in columns)
        return cells + ratios

    for key, name in rows:
        values = {c: epoch[c][key] for c in columns}
        print(f"| {name} | " + line(key, values) + " |")
    proj = {c: projected(epoch[c], args.gpu_factor) for c in columns}
    print(f"| **projected GPU epoch** (host + device / {args.gpu_factor:g}) | "
          + line("projected", proj) + " |")
    print(f"\nProjected GPU epoch = fixed host overhead + evaluation host + input + (train + "
          f"evaluation device wait + method passes device wait) / {args.gpu_factor:g}: a "
          "projection with an assumed factor (see the script's docstring), not a GPU "
          "measurement.")

    print("\nTime to the first training step (cold: everything compiles):\n")
    print(f"| | {head}{ratio_head} |")
    print("|---" * (len(columns) + 1 + (len(starts) if len(labels) == 2 else 0)) + "|")
    for key, name in (("to_first_step", "train_and_evaluate to first step done"),
                      ("launch_to_first_step", "process launch to first step done"),
                      ("compilations", "XLA executables built or loaded")):
        values = {c: med[c][key] for c in columns}
        print(f"| {name} | " + line(key, values) + " |")
    if len(labels) == 2:
        for start in starts:
            before = [r["results"] for r in runs[("before", start)]]
            after = [r["results"] for r in runs[("after", start)]]
            differ = sorted({k for b, a in zip(before, after) for k in set(b) | set(a)
                             if b.get(k) != a.get(k)})
            print(f"\nresults.json, {start}: "
                  + ("identical before and after" if not differ else
                     f"DIFFERENT in {', '.join(differ)}"))


if __name__ == "__main__":
    main()
