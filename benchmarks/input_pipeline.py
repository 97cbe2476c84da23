"""Samples/s the input pipeline delivers for CREMA-D-sized samples.

Usage: python benchmarks/input_pipeline.py [--examples 512] [--batch 64]
       [--frame_size 224] [--prefetch 2] [--json results.jsonl]

Builds an avsynth variant with CREMA-D's shapes (audio 257x188 float16, 3 stored frames
of 224x224, the loader picking 1), then measures, over one epoch of batches, reading the
tfds records directly and reading the decoded memory-map cache (`config.data.cache`):
  read     host side only: ArrayRecord reads, decoding, batching (with prefetch thread);
  +device  plus the transfer of the batch to the device;
  +augment plus the on-device random resized crop, flip and normalization the train step
           starts with (jitted on its own here).
Compare the last column with the train step's samples/s (benchmarks/train_step.py) at
the same shapes: the loader should deliver at least twice as many. Asserts nothing.
"""

import functools
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from avgmm import cli  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from avgmm.data import augment, avsynth, pipeline  # noqa: E402
from bench_results import append_jsonl  # noqa: E402


def build(data_dir: str, n: int, frame_size: int) -> str:
    config = avsynth.AvsynthConfig(
        name=f"crema_sized_{n}_{frame_size}", num_train=n, num_validation=8, num_test=8,
        freq_bins=257, time_steps=188, num_frames=3, frame_size=frame_size)
    builder = avsynth.Avsynth(config=config, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    return f"avsynth/{config.name}"


@functools.partial(jax.jit, static_argnames=("size",))
def augment_batch(frames, step, size):
    """The train step's first stage: per-sample keys, crop, flip, normalize."""
    key = jax.random.fold_in(jax.random.key(0), step)
    keys = jax.vmap(lambda p: jax.random.fold_in(key, p))(jnp.arange(frames.shape[0]))
    return augment.train_frames(frames, keys, size)


def measure(ds, batch: int, prefetch: int, stage: str, size: int) -> float:
    device = jax.devices()[0]

    count, start, out = 0, time.perf_counter(), None
    for step, b in enumerate(ds.train_batches(batch, epoch=0, seed=0, prefetch=prefetch)):
        if stage != "read":
            arrays = jax.device_put({k: b[k] for k in ("audio", "frames", "label")}, device)
            out = arrays["frames"]
            if stage == "augment":
                out = augment_batch(arrays["frames"], step, size=size)
        count += len(b["label"])
    if out is not None:
        jax.block_until_ready(out)
    return count / (time.perf_counter() - start)


def main():
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--frame_size", type=int, default=224)
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as data_dir:
        name = build(data_dir, args.examples, args.frame_size)
        for source in ("records", "cache"):
            ds = pipeline.load_dataset(name, data_dir, num_frames=1)
            build_s = 0.0
            if source == "cache":
                start = time.perf_counter()
                ds.use_cache(os.path.join(data_dir, "cache"))
                build_s = time.perf_counter() - start
            # Warm-up: compile the augmentation and touch the files once.
            measure(ds, args.batch, args.prefetch, "augment", args.frame_size)
            results[source] = {stage: measure(ds, args.batch, args.prefetch, stage,
                                              args.frame_size)
                               for stage in ("read", "device", "augment")}
            results[source]["cache_build_s"] = build_s
    dev = jax.devices()[0]
    print(f"# input pipeline | CREMA-D-sized samples (audio 257x188, 1 of 3 frames "
          f"{args.frame_size}^2) | batch {args.batch} | prefetch {args.prefetch} | "
          f"{dev.platform} ({dev.device_kind}) | {os.cpu_count()} cores")
    print(f"{'source':>8} {'read samples/s':>15} {'+device':>10} {'+augment':>10} "
          f"{'cache build s':>13}")
    for source, rows in results.items():
        print(f"{source:>8} {rows['read']:>15.0f} {rows['device']:>10.0f} "
              f"{rows['augment']:>10.0f} {rows['cache_build_s']:>13.1f}")
        append_jsonl(args.json, {
            "bench": "input_pipeline", "source": source, "batch": args.batch,
            "examples": args.examples, "frame_size": args.frame_size,
            **{f"{k}_samples_per_s": v for k, v in rows.items() if k != "cache_build_s"},
            "cache_build_s": rows["cache_build_s"], "device": dev.device_kind})


if __name__ == "__main__":
    main()
