"""The CPU train step under XLA:CPU flag variants, beside PyTorch, in one run.

Usage: python benchmarks/cpu_flags.py [--shapes reduced] [--batch 16] [--loss warmup]
       [--repeats 5] [--variants default,onednn,...] [--json results.jsonl]

Each variant runs `benchmarks/train_step.py` in a fresh process with its `XLA_FLAGS`
(flags are read once, when XLA starts); PyTorch runs once, in the default variant's
process, and every ratio is against that measurement. A variant whose flags this XLA
rejects is reported as such. Asserts nothing.
"""

import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from avgmm import cli  # noqa: E402

from bench_results import append_jsonl  # noqa: E402

VARIANTS = {
    "default": "",
    # oneDNN kernels for convolutions and matmuls (the library PyTorch's CPU build uses).
    "onednn": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true",
    # XNNPACK fusions for dots and elementwise work.
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "fast_math": "--xla_cpu_enable_fast_math=true",
    # One Eigen thread pool for intra-op work switched off (a single thread per op).
    "no_multi_thread_eigen": "--xla_cpu_multi_thread_eigen=false",
    "prefer_256bit": "--xla_cpu_prefer_vector_width=256",
}


def run_variant(name: str, flags: str, args, with_torch: bool, out: str):
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flags).strip())
    cmd = [sys.executable, os.path.join(HERE, "train_step.py"), f"--shapes={args.shapes}",
           f"--batches={args.batch}", "--dtypes=float32", f"--losses={args.loss}",
           f"--repeats={args.repeats}", f"--json={out}",
           "--torch" if with_torch else "--no-torch"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return None, proc.stderr.strip().splitlines()[-1][:120] if proc.stderr else "failed"
    with open(out, encoding="utf-8") as f:
        return [json.loads(line) for line in f], None


def main() -> None:
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="reduced")
    p.add_argument("--batch", default="16")
    p.add_argument("--loss", default="warmup")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch_rate = {}
    print("| variant | XLA_FLAGS | shape | JAX samples/s | PyTorch samples/s | JAX / PyTorch |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(args.variants.split(",")):
            flags = VARIANTS[name]
            rows, err = run_variant(name, flags, args, with_torch=(i == 0),
                                    out=os.path.join(tmp, f"{name}.jsonl"))
            if rows is None:
                print(f"| {name} | `{flags}` | | failed: {err} | | |", flush=True)
                continue
            for r in rows:
                if r.get("torch_samples_per_s"):
                    torch_rate[r["shape"]] = r["torch_samples_per_s"]
                t = torch_rate.get(r["shape"])
                ratio = r["samples_per_s"] / t if t else float("nan")
                print(f"| {name} | `{flags or '(none)'}` | {r['shape']} | "
                      f"{r['samples_per_s']:.1f} | {t or float('nan'):.1f} | {ratio:.2f} |",
                      flush=True)
                append_jsonl(args.json, dict(r, bench="cpu_flags", variant=name,
                                             xla_flags=flags, torch_samples_per_s=t,
                                             ratio=ratio))


if __name__ == "__main__":
    main()
