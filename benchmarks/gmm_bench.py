"""Fit time of `avgmm.gmm.fit_gmm` vs scikit-learn's GaussianMixture on gap-like data.

Usage: python benchmarks/gmm_bench.py [--sizes 1e4,1e5,1e6,1e7] [--repeats 3]
       [--json results.jsonl]

Prints one row per N: our fit time after compilation (median of repeats), the
compilation time, scikit-learn's fit time on the same data (float64, one process),
their ratio, and the largest difference in fitted parameters. Asserts nothing.
"""

import argparse
import json
import platform
import statistics
import time

import jax
import numpy as np
from sklearn.mixture import GaussianMixture

from avgmm.gmm import fit_gmm


def gap_like(n: int, seed: int = 0) -> np.ndarray:
    """85% balanced gaps around 0, 15% imbalanced around 0.5 (the paper's Figure 2)."""
    rng = np.random.default_rng(seed)
    balanced = rng.random(n) < 0.85
    x = np.where(balanced, rng.normal(0.0, 0.08, n), rng.normal(0.5, 0.15, n))
    return np.clip(x, -1, 1).astype(np.float32)


def time_ours(x: np.ndarray, repeats: int):
    xd = jax.device_put(x)
    start = time.perf_counter()
    params = jax.block_until_ready(fit_gmm(xd))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        params = jax.block_until_ready(fit_gmm(xd))
        times.append(time.perf_counter() - start)
    run = statistics.median(times)
    return params, run, first - run


def time_sklearn(x: np.ndarray, repeats: int):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        g = GaussianMixture(n_components=2, random_state=0).fit(x[:, None].astype(np.float64))
        times.append(time.perf_counter() - start)
    return g, statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e4,1e5,1e6,1e7")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sklearn_repeats", type=int, default=1)
    parser.add_argument("--json", default=None, help="append one JSON line per row here")
    args = parser.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    device = jax.devices()[0]
    print(f"# fit_gmm vs scikit-learn | jax {jax.__version__} on {device.platform} "
          f"({device.device_kind}) | {platform.processor() or platform.machine()}")
    header = (f"{'N':>10} {'ours ms':>9} {'compile ms':>10} {'sklearn ms':>10} "
              f"{'speed-up':>8} {'max |dparam|':>12} {'iters':>9}")
    print(header)
    for n in sizes:
        x = gap_like(n)
        ours, t_ours, t_compile = time_ours(x, args.repeats)
        ref, t_ref = time_sklearn(x, args.sklearn_repeats)
        order = np.argsort(np.abs(ref.means_[:, 0]))
        diff = max(
            np.abs(np.asarray(ours.weights) - ref.weights_[order]).max(),
            np.abs(np.asarray(ours.means) - ref.means_[order, 0]).max(),
            np.abs(np.asarray(ours.variances) - ref.covariances_[order, 0, 0]).max())
        row = {"n": n, "ours_ms": 1e3 * t_ours, "compile_ms": 1e3 * t_compile,
               "sklearn_ms": 1e3 * t_ref, "speedup": t_ref / t_ours,
               "max_param_diff": float(diff), "iters_ours": int(ours.n_iter),
               "iters_sklearn": int(ref.n_iter_), "device": device.platform}
        print(f"{n:>10} {row['ours_ms']:>9.2f} {row['compile_ms']:>10.0f} "
              f"{row['sklearn_ms']:>10.1f} {row['speedup']:>7.1f}x {diff:>12.2e} "
              f"{row['iters_ours']:>4}/{row['iters_sklearn']:<4}")
        if args.json:
            with open(args.json, "a", encoding="utf-8") as f:
                f.write(json.dumps({"bench": "gmm", **row}) + "\n")


if __name__ == "__main__":
    main()
