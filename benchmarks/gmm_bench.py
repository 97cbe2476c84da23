"""Fit time of `avgmm.gmm.fit_gmm` vs scikit-learn's GaussianMixture on gap-like data,
and the cost of one gap collection relative to one training epoch.

Usage: python benchmarks/gmm_bench.py [--sizes 1e4,1e5,1e6,1e7] [--repeats 3]
       [--collection demo|tiny|none] [--json results.jsonl]

Prints one row per N: our fit time after compilation (median of repeats), the
compilation time, scikit-learn's fit time on the same data (float64, one process),
their ratio, the largest difference in fitted parameters, and whether a second fit of
the same size compiled again. Then, with `--collection`, trains the demo (or tiny)
config on avsynth for two epochs and times the second training epoch against one gap
collection over the training split plus the GMM fit. Asserts nothing.
"""

import os
import platform
import statistics
import sys
import tempfile
import time

import jax
import numpy as np
from sklearn.mixture import GaussianMixture

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from avgmm import cli  # noqa: E402

from avgmm import gmm as gmm_lib  # noqa: E402
from avgmm.gmm import fit_gmm  # noqa: E402
from bench_results import append_jsonl  # noqa: E402


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


def collection_vs_epoch(config_name: str):
    """Seconds of a steady-state training epoch and of one gap collection + GMM fit."""
    import importlib

    from avgmm import build, evaluation, methods, run_config
    from avgmm.data import avsynth

    config = importlib.import_module(f"configs.{config_name}").get_config()
    with tempfile.TemporaryDirectory() as tmp:
        builder_config = "default" if config.data.name.endswith("default") else "tiny"
        avsynth.prepare(tmp, builder_config)
        config.data.data_dir = tmp
        ds = run_config.open_dataset(config)
        _, par, template = build.build(config, ds)
        state = par.replicate(template)
        positions = np.arange(config.batch_size, dtype=np.int32)
        scalars = methods.get(config).train_scalars(0)

        def epoch(state, e):
            start = time.perf_counter()
            for batch in ds.train_batches(config.batch_size, e, config.seed):
                batch["position"] = positions
                state, _ = par.train_steps["warmup"](state, par.shard(batch), scalars)
            jax.block_until_ready(state)
            return state, time.perf_counter() - start

        def collect(state):
            start = time.perf_counter()
            device, _ = evaluation.sample_rows(par, state, ds, "train", config.eval_batch_size,
                                               keep=("gap",))
            jax.block_until_ready(gmm_lib.fit_on_devices(par, device["gap"], device["mask"],
                                                         config.gmm))
            return time.perf_counter() - start

        state, _ = epoch(state, 0)  # compiles
        collect(state)  # compiles
        state, t_epoch = epoch(state, 1)
        t_collect = collect(state)
    return {"config": config_name, "train_examples": ds.meta.num_examples["train"],
            "epoch_s": t_epoch, "collection_s": t_collect, "ratio": t_collect / t_epoch}


def main():
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e4,1e5,1e6,1e7")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sklearn_repeats", type=int, default=1)
    parser.add_argument("--json", default=None, help="append one JSON line per row here")
    parser.add_argument("--collection", default="demo", choices=["demo", "tiny", "none"])
    args = parser.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    device = jax.devices()[0]
    print(f"# fit_gmm vs scikit-learn | jax {jax.__version__} on {device.platform} "
          f"({device.device_kind}) | {platform.processor() or platform.machine()}")
    header = (f"{'N':>10} {'ours ms':>9} {'compile ms':>10} {'sklearn ms':>10} "
              f"{'speed-up':>8} {'max |dparam|':>12} {'iters':>9} {'recompiled':>10}")
    print(header)
    for n in sizes:
        x = gap_like(n)
        ours, t_ours, t_compile = time_ours(x, args.repeats)
        compiled = gmm_lib._fit._cache_size()
        fit_gmm(gap_like(n, seed=1))  # a refit on new gaps of the same size
        recompiled = gmm_lib._fit._cache_size() != compiled
        ref, t_ref = time_sklearn(x, args.sklearn_repeats)
        order = np.argsort(np.abs(ref.means_[:, 0]))
        diff = max(
            np.abs(np.asarray(ours.weights) - ref.weights_[order]).max(),
            np.abs(np.asarray(ours.means) - ref.means_[order, 0]).max(),
            np.abs(np.asarray(ours.variances) - ref.covariances_[order, 0, 0]).max())
        row = {"n": n, "ours_ms": 1e3 * t_ours, "compile_ms": 1e3 * t_compile,
               "sklearn_ms": 1e3 * t_ref, "speedup": t_ref / t_ours,
               "max_param_diff": float(diff), "iters_ours": int(ours.n_iter),
               "iters_sklearn": int(ref.n_iter_), "device": device.platform,
               "recompiled_on_refit": recompiled}
        print(f"{n:>10} {row['ours_ms']:>9.2f} {row['compile_ms']:>10.0f} "
              f"{row['sklearn_ms']:>10.1f} {row['speedup']:>7.1f}x {diff:>12.2e} "
              f"{row['iters_ours']:>4}/{row['iters_sklearn']:<4} {str(recompiled):>10}")
        append_jsonl(args.json, {"bench": "gmm", **row})
    if args.collection != "none":
        r = collection_vs_epoch(args.collection)
        print(f"\n# gap collection + GMM fit vs one training epoch ({r['config']} config, "
              f"{r['train_examples']} training examples)")
        print(f"epoch {r['epoch_s']:.2f} s | collection + fit {r['collection_s']:.2f} s | "
              f"ratio {100 * r['ratio']:.0f}%")
        append_jsonl(args.json, {"bench": "gap_collection", **r})


if __name__ == "__main__":
    main()
