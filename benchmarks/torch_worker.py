"""Times the PyTorch reference's train step for a list of cases, in a process of its own.

Usage: python benchmarks/torch_worker.py CASES.json RESULTS.jsonl DEADLINE

CASES.json: a list of {"key", "audio_shape", "frames", "frame_size", "width", "stages",
"batch", "dtype", "loss", "num_classes", "windows", "repeats"}. For each case, in order,
one JSON line goes to RESULTS.jsonl: the device name, the first call's seconds (cuDNN's
algorithm search, allocations) and the steady-state step time (the median over
`windows` runs of `repeats` back-to-back steps, synchronized at the end of each run), or
why it was skipped or failed. A case whose estimated time would pass DEADLINE (a
`time.time()`) is skipped.

Why its own process: torch and jax each load a cuDNN, and in one process the first one
loaded serves both, which the other may refuse. cuDNN picks its fastest algorithms
(`cudnn.benchmark`, as XLA autotunes its own); bfloat16 is `torch.autocast` around the
forward pass and the loss (parameters and optimizer in float32), as `model.dtype` is in
avgmm; float32 convolutions use TF32 tensor cores where the GPU has them (PyTorch's
default for cuDNN).
"""

import json
import statistics
import sys
import time

import torch

import torch_reference as ref


def _pixels(case) -> float:
    """Input values per step: what the step's cost roughly scales with."""
    f, t = case["audio_shape"]
    return case["batch"] * (f * t + case["frames"] * case["frame_size"] ** 2)


def run_case(case, device: str):
    model = ref.AVClassifier(case["num_classes"], case["width"], case["stages"]).to(device)
    step = ref.make_step(model, case["loss"])
    b = case["batch"]
    audio = torch.randn(b, 1, *case["audio_shape"], device=device)
    frames = torch.randn(b, 3, case["frames"], case["frame_size"], case["frame_size"],
                         device=device)
    y = torch.randint(0, case["num_classes"], (b,), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16,
                              enabled=case["dtype"] == "bfloat16")

    def one():
        with autocast:
            return step(audio, frames, y)

    start = time.perf_counter()
    one()
    sync()
    first_s = time.perf_counter() - start
    times = []
    for _ in range(case["windows"]):
        start = time.perf_counter()
        for _ in range(case["repeats"]):
            one()
        sync()
        times.append((time.perf_counter() - start) / case["repeats"])
    seconds = statistics.median(times)
    return {"first_step_s": first_s, "step_ms": 1e3 * seconds, "samples_per_s": b / seconds}


def main() -> None:
    cases_path, out_path, deadline = sys.argv[1], sys.argv[2], float(sys.argv[3])
    with open(cases_path, encoding="utf-8") as f:
        cases = json.load(f)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.zeros(1, device=device)  # the CUDA context, before anything is timed
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    rate = None  # input values per second of the last case: estimates the next one
    for case in cases:
        row = {"key": case["key"], "device_name": name, "torch": torch.__version__,
               "cudnn_tf32": torch.backends.cudnn.allow_tf32}
        started = time.time()
        if rate is not None:
            estimate = 2 * first_s + (case["windows"] * case["repeats"] + 1) * \
                _pixels(case) / rate
            if started + estimate > deadline:
                row.update(status="skipped",
                           reason=f"skipped: estimated {estimate:.0f} s, "
                                  f"{max(deadline - started, 0):.0f} s left in the budget")
                _write(out_path, row)
                continue
        try:
            result = run_case(case, device)
        except torch.cuda.OutOfMemoryError:
            row.update(status="failed", reason="out of GPU memory")
        except RuntimeError as e:  # cuDNN and CUDA errors
            row.update(status="failed", reason=" ".join(str(e).split())[:200])
        else:
            row.update(status="ok", **result)
            rate, first_s = _pixels(case) / (result["step_ms"] / 1e3), result["first_step_s"]
        if device == "cuda":
            torch.cuda.empty_cache()
        _write(out_path, row)


def _write(path: str, row) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
