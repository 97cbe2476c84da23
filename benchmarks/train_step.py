"""Samples/s of the jitted two-stream train step, beside the same model in PyTorch.

Usage: python benchmarks/train_step.py [--shapes reduced|paper|tiny] [--batches 16,64]
       [--dtypes float32,bfloat16] [--losses warmup,adaptive] [--repeats 5]
       [--torch/--notorch] [--json results.jsonl]

For every (shape, batch, dtype, loss): compiles `avgmm.steps.train_step` of the adaptive
method's warm-up or adaptive phase (`avgmm.steps.jit_train_step`: no pmap, one device), times `repeats` steps after a warm-up, and reports the median samples/s, the
model FLOPs per sample from XLA's cost analysis and the achieved FLOP/s; then runs the
PyTorch reference (benchmarks/torch_reference.py, float32) on the same device kind and
batch and reports the ratio JAX / PyTorch. Shapes: `paper` is CREMA-D (audio 257x188,
1 frame 224x224) and AVE (3 frames); `reduced` halves every side for CPUs; `tiny` is for
the CI smoke run. Asserts nothing.
"""

import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.dirname(os.path.abspath(__file__))]
from avgmm import cli  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from avgmm import gmm as gmm_lib  # noqa: E402
from avgmm import methods, optim, state as state_lib, steps  # noqa: E402
from avgmm.data.pipeline import DatasetMeta  # noqa: E402
from configs import default  # noqa: E402
from bench_results import append_jsonl  # noqa: E402

SHAPES = {
    # name: [(label, audio [F, T], frames, frame size, width, stage sizes)]
    "paper": [("CREMA-D", (257, 188), 1, 224, 64, (2, 2, 2, 2)),
              ("AVE", (257, 1004), 3, 224, 64, (2, 2, 2, 2))],
    "reduced": [("CREMA-D/2", (129, 94), 1, 112, 64, (2, 2, 2, 2)),
                ("AVE/2", (129, 502), 3, 112, 64, (2, 2, 2, 2))],
    "tiny": [("tiny", (32, 24), 1, 32, 8, (1, 1))],
}


def build_case(label, audio_shape, tv, size, width, stages, batch, dtype, loss_name,
               num_classes=6):
    """The jitted single-device train step of one case, with its initial state, a random
    batch (frames uint8, audio float16, as the loader delivers them) and its scalars:
    `(step, state, batch, scalars)`. `loss_name`: the adaptive method's warm-up or
    adaptive phase (the latter with a fixed two-component GMM in force)."""
    config = default.get_config()
    config.model.width, config.model.stage_sizes, config.model.dtype = width, stages, dtype
    config.data.num_frames, config.data.image_size = tv, size
    meta = DatasetMeta(name=label, num_classes=num_classes,
                       class_names=[str(i) for i in range(num_classes)],
                       audio_shape=audio_shape, frames_shape=(tv, size, size, 3),
                       num_examples={"train": batch}, params={})
    method = methods.get(config)  # the default config's method: adaptive
    tx = optim.make_optimizer(config, steps_per_epoch=100)
    state = state_lib.create_train_state(config, meta, tx, method)
    if loss_name == "adaptive":
        state = state.replace(method_state=state.method_state.replace(gmm=gmm_lib.GMMParams(
            weights=jnp.array([0.85, 0.15]), means=jnp.array([0.0, 0.5]),
            variances=jnp.array([0.01, 0.04]), log_likelihood=jnp.zeros(()),
            n_iter=jnp.array(1), converged=jnp.array(True), fallback=jnp.array(False),
            bic_one=jnp.zeros(()), bic_two=jnp.zeros(()), ambiguous=jnp.array(False))))
    step = steps.jit_train_step(config, meta, method, loss_name)
    rng = np.random.default_rng(0)
    arrays = {"audio": jnp.asarray(rng.standard_normal((batch,) + tuple(audio_shape)),
                                   jnp.float16),
              "frames": jnp.asarray(rng.integers(0, 256, (batch, tv, size, size, 3)),
                                    jnp.uint8),
              "label": jnp.asarray(rng.integers(0, num_classes, batch), jnp.int32),
              "position": jnp.arange(batch, dtype=jnp.int32)}
    scalars = method.train_scalars(config.schedule.warmup_epochs)
    return step, state, arrays, scalars


def flops_of(compiled) -> float:
    """FLOPs of one call of a compiled function by XLA's cost analysis (NaN if none)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def jax_case(label, audio_shape, tv, size, width, stages, batch, dtype, loss_name, repeats):
    step, state, batch, lam = build_case(label, audio_shape, tv, size, width, stages, batch,
                                         dtype, loss_name)
    flops = flops_of(step.lower(state, batch, lam).compile())
    state, _ = step(state, batch, lam)  # warm-up
    jax.block_until_ready(state)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = step(state, batch, lam)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"samples_per_s": batch["label"].shape[0] / seconds, "step_ms": 1e3 * seconds,
            "flops_per_sample": flops / batch["label"].shape[0],
            "achieved_tflops": flops / seconds / 1e12}


def torch_case(audio_shape, tv, size, width, stages, batch, loss_name, repeats):
    import torch

    import torch_reference as ref

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = ref.AVClassifier(6, width, stages).to(device)
    step = ref.make_step(model, loss_name)
    audio = torch.randn(batch, 1, *audio_shape, device=device)
    frames = torch.randn(batch, 3, tv, size, size, device=device)
    y = torch.randint(0, 6, (batch,), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    step(audio, frames, y)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(audio, frames, y)
        sync()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def main():
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="reduced", choices=sorted(SHAPES))
    parser.add_argument("--batches", default="16")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--losses", default="warmup,adaptive")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--torch", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    have_torch = args.torch
    if have_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("# torch is not installed (pip install -e '.[bench]'): no PyTorch column")
            have_torch = False
    dev = jax.devices()[0]
    print(f"# train step | jax {jax.__version__} on {dev.platform} ({dev.device_kind}) | "
          f"{os.cpu_count()} cores")
    print(f"{'shape':>10} {'batch':>5} {'dtype':>8} {'loss':>8} {'jax samples/s':>13} "
          f"{'GFLOP/sample':>12} {'TFLOP/s':>8} {'torch samples/s':>15} {'jax/torch':>9}")
    torch_cache = {}
    for label, audio_shape, tv, size, width, stages in SHAPES[args.shapes]:
        for batch in (int(b) for b in args.batches.split(",")):
            for loss_name in args.losses.split(","):
                for dtype in args.dtypes.split(","):
                    r = jax_case(label, audio_shape, tv, size, width, stages, batch, dtype,
                                 loss_name, args.repeats)
                    key = (label, batch, loss_name)
                    if have_torch and key not in torch_cache:
                        torch_cache[key] = torch_case(audio_shape, tv, size, width, stages,
                                                      batch, loss_name, args.repeats)
                    t = torch_cache.get(key)
                    ratio = r["samples_per_s"] / t if t else float("nan")
                    print(f"{label:>10} {batch:>5} {dtype:>8} {loss_name:>8} "
                          f"{r['samples_per_s']:>13.1f} {r['flops_per_sample'] / 1e9:>12.2f} "
                          f"{r['achieved_tflops']:>8.3f} "
                          f"{(t if t else float('nan')):>15.1f} {ratio:>9.2f}", flush=True)
                    append_jsonl(args.json, {
                        "bench": "train_step", "shape": label, "batch": batch,
                        "dtype": dtype, "loss": loss_name, **r, "torch_samples_per_s": t,
                        "ratio": ratio, "device": dev.device_kind})


if __name__ == "__main__":
    main()
