"""One command for a GPU: the paper-shape train step beside PyTorch, the input pipeline,
one CREMA-D-sized epoch through the trainer, and compile times, in a fixed time budget.

Usage: python benchmarks/gpu_bench.py [--out runs/bench_gpu] [--budget_s 480]
       [--data_dir DIR] [--smoke]

Measures, most important first, and skips (saying so) what would overrun the budget:
  1. the train step of the adaptive method's adaptive phase (eq. 10; on-device
     augmentation, forward, loss, backward, SGD), `avgmm.steps.jit_train_step` on one
     device, at CREMA-D's shapes (audio 257x188, one 224x224 frame) and AVE's (audio
     257x1004, three frames), full-width ResNet-18, float32 and bfloat16, batch 64 and
     256, beside the PyTorch reference (benchmarks/torch_reference.py) on the same GPU;
     samples/s, FLOPs per sample (XLA's cost analysis of the compiled step, used for both
     columns), achieved TFLOP/s and their share of the chip's dense peak (PEAKS below);
  2. compile times of each variant: tracing and lowering, XLA compilation, the first
     step, against the steady-state step;
  3. the input pipeline (the real loader, reading its decoded cache) on generated
     CREMA-D-shaped clips, host only and with the transfer to the device, against the
     train step's samples/s at the same batch;
  4. one CREMA-D-sized epoch (6,698 training clips, 670 validation, 744 test, generated
     with the real shapes) end to end through `train_and_evaluate`: training, evaluation,
     checkpoint, final evaluation, and its `timing.json` split.
Order: CREMA-D steps at batch 64, input pipeline, epoch, AVE steps at batch 64, both
shapes at batch 256; PyTorch's cases run first, in a process of their own
(benchmarks/torch_worker.py), within a quarter of the budget. The data are generated in
another process (benchmarks/sized_data.py) while the steps are measured. Writes
`bench_gpu.json` and `bench_gpu.md` under --out after every section.

`--smoke`: the whole script at tiny sizes (tiny shapes, a 2-stage width-4 ResNet, a few
dozen clips, batch 4) on the CPU, GPU or not, in about a minute of CPU time.
"""

import os
import time

STARTED = time.monotonic()  # the budget counts from here, imports included

# Before jax is imported: JAX would otherwise take 75% of the GPU's memory at its first
# use, leaving too little to the PyTorch process (the larger cases need tens of GB).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import dataclasses  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple  # noqa: E402

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path[:0] = [REPO, BENCH]
from avgmm import cli  # noqa: E402

import flax  # noqa: E402
import jax  # noqa: E402

# Everything this benchmark takes from avgmm, in one place (the trainer's internals are
# being restructured: an adaptation is a line here). The single-device step
# (`avgmm.steps.jit_train_step`, the state and the method) is built by train_step.py.
from avgmm.data.pipeline import load_dataset  # noqa: E402
from avgmm.train import train_and_evaluate  # noqa: E402
from configs import crema as crema_config  # noqa: E402
from input_pipeline import measure as loader_rate  # noqa: E402
from train_step import build_case, flops_of  # noqa: E402

LOSS = "adaptive"  # the phase whose step is timed (the warm-up's costs the same)
OUT_NAME = "bench_gpu"


@dataclasses.dataclass(frozen=True)
class Peak:
    """A chip's dense (no sparsity) peak TFLOP/s by its vendor."""

    chip: str
    bf16: Optional[float]  # bfloat16 tensor cores (FP32 accumulate); None: none
    tf32: Optional[float]  # TF32 tensor cores; None: float32 runs on the FP32 units
    fp32: float  # FP32 units, no tensor cores
    source: str


# Device names (`jax.devices()[0].device_kind`, `torch.cuda.get_device_name`) -> peak, the
# first pattern that matches wins. Datasheets give tensor-core rates "with sparsity";
# dense rates are half of those.
PEAKS: Tuple[Tuple[str, Peak], ...] = (
    # NVIDIA H200 datasheet (2024): H200 NVL FP32 60, TF32 835*, BF16 1,671* (*sparse).
    (r"\bH200 NVL\b", Peak("H200 NVL", 835.5, 417.5, 60.0, "NVIDIA H200 datasheet")),
    # Same datasheet: H200 SXM FP32 67, TF32 989*, BF16 1,979* (*sparse).
    (r"\bH200\b", Peak("H200 SXM", 989.5, 494.5, 67.0, "NVIDIA H200 datasheet")),
    # NVIDIA H100 datasheet: H100 NVL FP32 60, TF32 835*, BF16 1,671* (*sparse).
    (r"\bH100 NVL\b", Peak("H100 NVL", 835.5, 417.5, 60.0, "NVIDIA H100 datasheet")),
    # Same datasheet: H100 PCIe FP32 51, TF32 756*, BF16 1,513* (*sparse).
    (r"\bH100 PCIe\b", Peak("H100 PCIe", 756.5, 378.0, 51.0, "NVIDIA H100 datasheet")),
    # Same datasheet: H100 SXM FP32 67, TF32 989*, BF16 1,979* (*sparse); the SXM part
    # names itself e.g. "NVIDIA H100 80GB HBM3".
    (r"\bH100\b", Peak("H100 SXM", 989.5, 494.5, 67.0, "NVIDIA H100 datasheet")),
    # NVIDIA A100 datasheet: 40 GB and 80 GB, SXM and PCIe alike: FP32 19.5, TF32 156,
    # BF16 312 (dense).
    (r"\bA100\b", Peak("A100", 312.0, 156.0, 19.5, "NVIDIA A100 datasheet")),
    # NVIDIA L40S datasheet: FP32 91.6, TF32 183, BF16 362.05 (dense).
    (r"\bL40S\b", Peak("L40S", 362.05, 183.0, 91.6, "NVIDIA L40S datasheet")),
    # NVIDIA L4 datasheet: FP32 30.3, TF32 120*, BF16 242* (*sparse).
    (r"\bL4\b", Peak("L4", 121.0, 60.0, 30.3, "NVIDIA L4 datasheet")),
    # NVIDIA A10 datasheet: FP32 31.2, TF32 62.5, BF16 125 (dense). (Not the A10G.)
    (r"\bA10\b", Peak("A10", 125.0, 62.5, 31.2, "NVIDIA A10 datasheet")),
    # NVIDIA V100 datasheet: FP32 16.4 (V100S PCIe), 15.7 (SXM2), 14 (PCIe); its tensor
    # cores do FP16 only: no BF16, no TF32.
    (r"\bV100S\b", Peak("V100S PCIe", None, None, 16.4, "NVIDIA V100 datasheet")),
    (r"\bV100\b.*SXM", Peak("V100 SXM2", None, None, 15.7, "NVIDIA V100 datasheet")),
    (r"\bV100\b", Peak("V100 PCIe", None, None, 14.0, "NVIDIA V100 datasheet")),
    # NVIDIA Ada Lovelace GPU architecture whitepaper: RTX 4090 FP32 82.6, TF32 82.6,
    # BF16 with FP32 accumulate 165.2 (dense).
    (r"\bRTX 4090\b", Peak("RTX 4090", 165.2, 82.6, 82.6, "NVIDIA Ada whitepaper")),
    # NVIDIA Ampere GA102 GPU architecture whitepaper: RTX 3090 FP32 35.6, TF32 35.6,
    # BF16 with FP32 accumulate 71 (dense).
    (r"\bRTX 3090\b(?! Ti)", Peak("RTX 3090", 71.0, 35.6, 35.6, "NVIDIA GA102 whitepaper")),
    # NVIDIA T4 datasheet: FP32 8.1; FP16/INT8 tensor cores only.
    (r"\bT4\b", Peak("T4", None, None, 8.1, "NVIDIA T4 datasheet")),
)


def peak_for(device_name: str) -> Optional[Peak]:
    """The peak of a device by its name, or None for a chip not in PEAKS (CPUs too)."""
    for pattern, peak in PEAKS:
        if re.search(pattern, device_name, re.IGNORECASE):
            return peak
    return None


def peak_tflops(peak: Optional[Peak], dtype: str) -> Optional[float]:
    """The dense peak a step of `dtype` can reach: bfloat16 on the bf16 tensor cores,
    float32 on the TF32 ones where the chip has them (XLA's and cuDNN's default for
    float32 convolutions), else on the FP32 units. None: unknown or no such units."""
    if peak is None:
        return None
    if dtype == "bfloat16":
        return peak.bf16
    return peak.tf32 if peak.tf32 is not None else peak.fp32


@dataclasses.dataclass(frozen=True)
class Shape:
    label: str
    audio: Tuple[int, int]  # [F, T]
    frames: int  # frames per clip the model sees
    size: int  # frame side
    classes: int

    def values(self, batch: int) -> int:
        """Input values per step (audio plus frame pixels): what a step's cost scales
        with, used to estimate a case from a measured one."""
        return batch * (self.audio[0] * self.audio[1] + self.frames * self.size ** 2)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What one mode measures, and its priors for cases nothing has been measured like."""

    crema: Shape
    ave: Shape
    width: int
    stages: Tuple[int, ...]
    batches: Tuple[int, ...]
    dtypes: Tuple[str, ...]
    windows: int  # timed runs of `repeats` back-to-back steps; the median counts
    repeats: int
    clips: Tuple[int, int, int]  # train, validation, test of the generated data
    budget_s: float
    compile_prior_s: float  # one step variant's first call, before any was measured
    epoch_prior_s: float  # the epoch, before the step's rate is known
    loader_prior: float  # samples/s of the loader, before it was measured


# CREMA-D: configs/crema.py (one frame) with data_prep/crema_d.py's audio (257 x 188) and
# the paper's 6,698 training clips, of which the converter keeps 10% for validation: 670
# (here on top of the 6,698, so that the epoch has the paper's size); test 744.
# AVE: configs/ave.py (three frames) with data_prep/ave.py's audio (257 x 1004).
GPU = Sizes(crema=Shape("CREMA-D", (257, 188), 1, 224, 6),
            ave=Shape("AVE", (257, 1004), 3, 224, 28), width=64, stages=(2, 2, 2, 2),
            batches=(64, 256), dtypes=("float32", "bfloat16"), windows=3, repeats=10,
            clips=(6698, 670, 744), budget_s=480.0, compile_prior_s=90.0,
            epoch_prior_s=240.0, loader_prior=1000.0)
SMOKE = Sizes(crema=Shape("CREMA-D tiny", (32, 24), 1, 32, 6),
              ave=Shape("AVE tiny", (32, 64), 3, 32, 28), width=4, stages=(1, 1),
              batches=(4,), dtypes=("float32", "bfloat16"), windows=1, repeats=2,
              clips=(48, 8, 8), budget_s=300.0, compile_prior_s=20.0,
              epoch_prior_s=60.0, loader_prior=100.0)
RESERVE_S = 10.0  # kept for writing the results and removing the data
TORCH_SHARE = 0.25  # of the budget, at most, for the PyTorch cases


class Budget:
    """Seconds left of a run's budget; `allows(estimate)` says whether work of that
    estimated length still fits (RESERVE_S kept back)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic,
                 start: Optional[float] = None):
        self.seconds, self.clock = seconds, clock
        self.start = clock() if start is None else start

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        return self.seconds - RESERVE_S - self.elapsed()

    def allows(self, estimate: float) -> bool:
        return estimate <= self.left()

    def skip_reason(self, estimate: float) -> str:
        return (f"skipped: estimated {estimate:.0f} s, {max(self.left(), 0):.0f} s left "
                "in the budget")


def step_estimate(shape: Shape, batch: int, dtype: str, sizes: Sizes,
                  done: Sequence[Dict[str, Any]]) -> float:
    """Seconds a JAX step case is expected to take: the slowest first call measured so far
    (or the prior) plus its timed steps at the input-values rate of the last measured
    case of the same dtype (else of any dtype; none yet: the prior alone)."""
    ok = [r for r in done if r.get("status") == "ok"]
    first = max([r["jax"]["first_call_s"] for r in ok], default=sizes.compile_prior_s)
    same = [r for r in ok if r["dtype"] == dtype] or ok
    if not same:
        return first
    last = same[-1]
    rate = last["values_per_step"] / (last["jax"]["step_ms"] / 1e3)
    steps = sizes.windows * sizes.repeats + 1
    return first + steps * shape.values(batch) / rate


def epoch_estimate(sizes: Sizes, done: Sequence[Dict[str, Any]], batch: int) -> float:
    """Seconds the epoch is expected to take: three compilations (train, evaluation and
    gap steps) at the slowest measured first call, the training clips at the measured
    float32 rate, about as many forward passes (val, test, the final evaluations, the
    final gap pass: 1/3 of a train step each), and 20 s of startup and checkpoints."""
    base = [r for r in done if r.get("status") == "ok" and r["dtype"] == "float32"
            and r["shape"] == sizes.crema.label and r["batch"] == batch]
    if not base:
        return sizes.epoch_prior_s
    first = max(r["jax"]["first_call_s"] for r in done if r.get("status") == "ok")
    train, val, test = sizes.clips
    clip_s = 1.0 / base[0]["jax"]["samples_per_s"]
    return 3 * first + clip_s * (train + (val + 3 * test + train) / 3) + 20.0


# ---------------------------------------------------------------------------- measuring


def jax_step_case(shape: Shape, batch: int, dtype: str, sizes: Sizes) -> Dict[str, Any]:
    """Compiles one step variant ahead of time (trace + lower, then compile, each timed),
    runs its first step, then `windows` runs of `repeats` back-to-back steps."""
    step, state, arrays, scalars = build_case(
        shape.label, shape.audio, shape.frames, shape.size, sizes.width, sizes.stages,
        batch, dtype, LOSS, num_classes=shape.classes)
    t0 = time.perf_counter()
    lowered = step.lower(state, arrays, scalars)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    state, terms = compiled(state, arrays, scalars)
    jax.block_until_ready((state, terms))
    t3 = time.perf_counter()
    times = []
    for _ in range(sizes.windows):
        start = time.perf_counter()
        for _ in range(sizes.repeats):
            state, terms = compiled(state, arrays, scalars)
        jax.block_until_ready((state, terms))
        times.append((time.perf_counter() - start) / sizes.repeats)
    seconds = statistics.median(times)
    flops = flops_of(compiled)
    return {"trace_lower_s": t1 - t0, "compile_s": t2 - t1, "first_step_s": t3 - t2,
            "first_call_s": t3 - t0, "step_ms": 1e3 * seconds,
            "samples_per_s": batch / seconds, "flops_per_sample": flops / batch,
            "tflops": flops / seconds / 1e12}


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
        return "out of device memory"
    return f"{type(e).__name__}: {text[:200]}"


def step_cases(sizes: Sizes, shape: Shape,
               batches: Sequence[int]) -> List[Tuple[Shape, int, str]]:
    return [(shape, b, d) for b in batches for d in sizes.dtypes]


def run_torch(cases: Sequence[Tuple[Shape, int, str]], sizes: Sizes, budget: Budget,
              tmp: str, cpu: bool) -> Dict[str, Dict[str, Any]]:
    """The PyTorch reference's rows by case key, from its own process (on the CPU if
    `cpu`), which gets at most TORCH_SHARE of the budget."""
    spec = [{"key": _key(s, b, d), "audio_shape": list(s.audio), "frames": s.frames,
             "frame_size": s.size, "width": sizes.width, "stages": list(sizes.stages),
             "batch": b, "dtype": d, "loss": LOSS, "num_classes": s.classes,
             "windows": sizes.windows, "repeats": sizes.repeats} for s, b, d in cases]
    spec_path, out_path = os.path.join(tmp, "torch_cases.json"), os.path.join(
        tmp, "torch_results.jsonl")
    with open(spec_path, "w", encoding="utf-8") as f:
        json.dump(spec, f)
    seconds = max(0.0, min(budget.left(), TORCH_SHARE * budget.seconds))
    failure = None
    if seconds > 0:
        deadline = time.time() + seconds
        try:
            env = dict(os.environ, CUDA_VISIBLE_DEVICES="") if cpu else None
            proc = subprocess.run([sys.executable, os.path.join(BENCH, "torch_worker.py"),
                                   spec_path, out_path, str(deadline)], capture_output=True,
                                  text=True, timeout=seconds + 60, env=env)
            if proc.returncode:
                failure = f"the PyTorch process failed: {proc.stderr.strip()[-300:]}"
        except subprocess.TimeoutExpired:
            failure = f"the PyTorch process ran past its {seconds + 60:.0f} s and was stopped"
    rows = {}
    if os.path.exists(out_path):
        with open(out_path, encoding="utf-8") as f:
            rows = {r["key"]: r for r in map(json.loads, f)}
    for case in spec:  # cases the worker never reached (it failed, or time ran out)
        rows.setdefault(case["key"], {
            "status": "failed" if failure else "skipped",
            "reason": failure or "skipped: no time left in PyTorch's share of the budget"})
    return rows


def _key(shape: Shape, batch: int, dtype: str) -> str:
    return f"{shape.label}|{batch}|{dtype}"


def start_data(sizes: Sizes, data_dir: str, name: str) -> subprocess.Popen:
    """Generates the CREMA-D-shaped data and its decoded cache in another process."""
    train, val, test = sizes.clips
    s = sizes.crema
    cmd = [sys.executable, os.path.join(BENCH, "sized_data.py"), f"--data_dir={data_dir}",
           f"--name={name}", f"--train={train}", f"--validation={val}", f"--test={test}",
           f"--freq_bins={s.audio[0]}", f"--time_steps={s.audio[1]}", "--num_frames=1",
           f"--frame_size={s.size}", f"--num_classes={s.classes}",
           f"--json_out={os.path.join(data_dir, 'generation.json')}"]
    # Host work only: it must not take a GPU context (or memory) from the measurements.
    with open(os.path.join(data_dir, "generation.log"), "w", encoding="utf-8") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, JAX_PLATFORMS="cpu",
                                         CUDA_VISIBLE_DEVICES=""))


def wait_data(proc: subprocess.Popen, data_dir: str, budget: Budget,
              need_after: float) -> Dict[str, Any]:
    """Waits for the data while `need_after` seconds of work still fit after the wait;
    returns the generation's record (status ok, or why not)."""
    started = time.perf_counter()
    while proc.poll() is None and budget.allows(need_after):
        time.sleep(0.2)
    waited = time.perf_counter() - started
    if proc.poll() is None:
        proc.kill()
        proc.wait()
        return {"status": "skipped", "reason": "skipped: the data generation had not "
                f"finished with {max(budget.left(), 0):.0f} s left in the budget"}
    if proc.returncode != 0:
        with open(os.path.join(data_dir, "generation.log"), encoding="utf-8") as f:
            tail = f.read()[-500:]
        return {"status": "failed", "reason": f"the data generation failed: {tail}"}
    with open(os.path.join(data_dir, "generation.json"), encoding="utf-8") as f:
        record = json.load(f)
    return dict(record, status="ok", waited_s=waited,
                method="avsynth's tfds builder with a bank of 64 random clips "
                       "(benchmarks/sized_data.py), then the loader's own cache build")


def pipeline_section(sizes: Sizes, data_dir: str, name: str) -> List[Dict[str, Any]]:
    """Loader samples/s (host only; with the transfer to the device) over one epoch of
    the generated training split, at each batch size."""
    ds = load_dataset(f"avsynth/{name}", data_dir, num_frames=1,
                      cache_dir=os.path.join(data_dir, "avgmm_cache"))
    return [{"batch": batch,
             "read_samples_per_s": loader_rate(ds, batch, 2, "read", sizes.crema.size),
             "device_samples_per_s": loader_rate(ds, batch, 2, "device", sizes.crema.size)}
            for batch in sizes.batches]


def link(result: Dict[str, Any]) -> None:
    """Puts the CREMA-D step's samples/s (of the steps measured so far) beside the
    loader's at each batch, with the loader's rate over the faster step's, and beside the
    epoch's training rate (float32, the epoch's batch)."""
    label = result["sizes"]["crema"]["label"]

    def step_rates(batch: int) -> Dict[str, float]:
        return {r["dtype"]: r["jax"]["samples_per_s"] for r in result["steps"]
                if r["status"] == "ok" and r["shape"] == label and r["batch"] == batch}

    for row in result["input_pipeline"].get("rows", []):
        step = step_rates(row["batch"])
        fastest = max(step.values(), default=None)
        row["step_samples_per_s"] = step
        row["loader_over_fastest_step"] = (row["device_samples_per_s"] / fastest
                                           if fastest else None)
    epoch = result["epoch"]
    if epoch.get("status") == "ok":
        step = step_rates(epoch["batch"]).get("float32")
        epoch["step_samples_per_s"] = step
        epoch["train_over_step"] = epoch["train_samples_per_s"] / step if step else None


def epoch_config(sizes: Sizes, data_dir: str, name: str, batch: int):
    """configs/crema.py on the generated data: one epoch (the warm-up's), one device, no
    persistent compilation cache (a cold start), smoke sizes shrunk."""
    config = crema_config.get_config()
    config.data.name = f"avsynth/{name}"
    config.data.data_dir = data_dir
    config.data.cache_dir = ""  # <data_dir>/avgmm_cache, where sized_data.py built it
    for field in list(config.data.expect.keys()):
        config.data.expect[field] = None  # generated data record no CREMA-D preprocessing
    config.epochs = 1
    config.schedule.warmup_epochs, config.schedule.adaptive_steps = 1, 0
    config.compilation_cache_dir = ""
    config.num_devices = 1
    config.batch_size = batch
    if sizes is SMOKE:
        config.model.width, config.model.stage_sizes = sizes.width, sizes.stages
        config.data.image_size = sizes.crema.size
        config.eval_batch_size = batch
    return config


def epoch_section(sizes: Sizes, data_dir: str, name: str, batch: int) -> Dict[str, Any]:
    """One epoch through `train_and_evaluate` in a fresh workdir: its timing.json split,
    the train samples/s from its metrics and the wall time around the call."""
    workdir = os.path.join(data_dir, "epoch_run")
    shutil.rmtree(workdir, ignore_errors=True)
    config = epoch_config(sizes, data_dir, name, batch)
    start = time.perf_counter()
    results = train_and_evaluate(config, workdir)
    wall = time.perf_counter() - start
    with open(os.path.join(workdir, "timing.json"), encoding="utf-8") as f:
        timing = json.load(f)
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        record = json.loads(f.readline())
    return {"status": "ok", "batch": config.batch_size,
            "eval_batch": config.eval_batch_size, "call_wall_s": wall, "timing": timing,
            "train_samples_per_s": record["train"]["samples_per_second"],
            "test_accuracy": results["test_accuracy"]}


# ------------------------------------------------------------------------------ output

KINDS = ("startup", "compile", "input", "train", "evaluation", "method_passes",
         "checkpoint", "other")


def _f(value: Optional[float], fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def markdown(r: Dict[str, Any]) -> str:
    """The Markdown report of a result dict (the JSON's content)."""
    dev, peak = r["device"], r["device"]["peak"]
    torch_note = r["torch"]["note"]
    lines = [f"# GPU benchmark (`./launch.sh bench gpu{' --smoke' if r['smoke'] else ''}`)",
             "",
             f"Device: JAX {dev['jax_platform']} `{dev['jax_device_kind']}`; PyTorch "
             f"`{dev['torch_device_name'] or '-'}`. Peak: " +
             (f"{peak['chip']}, dense bf16 {_f(peak['bf16'])} / TF32 {_f(peak['tf32'])} / "
              f"FP32 {_f(peak['fp32'])} TFLOP/s ({peak['source']})" if peak else
              "peak unknown") + ".",
             f"jax {r['versions']['jax']}, jaxlib {r['versions']['jaxlib']}, flax "
             f"{r['versions']['flax']}, torch {r['versions']['torch'] or '-'}; "
             f"{r['host']['cpus']} CPU cores; {r['started']}; budget {r['budget_s']:.0f} s, "
             f"used {r['elapsed_s']:.0f} s.", ""]
    if torch_note:
        lines += [f"PyTorch: {torch_note}.", ""]
    lines += ["## 1. Train step", "",
              f"`avgmm.steps.jit_train_step` ({LOSS} phase, eq. 10, with the on-device "
              f"augmentation) on one device, ResNet-18 width {r['sizes']['width']} stages "
              f"{tuple(r['sizes']['stages'])}; the median over {r['sizes']['windows']} runs "
              f"of {r['sizes']['repeats']} back-to-back steps. FLOPs: XLA's cost analysis "
              "of the compiled step, used for both columns.", "",
              "| shape | batch | dtype | JAX samples/s | JAX ms/step | GFLOP/sample | "
              "JAX TFLOP/s | JAX % of peak | PyTorch samples/s | PyTorch TFLOP/s | "
              "JAX / PyTorch |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in r["steps"]:
        head = f"| {s['shape']} | {s['batch']} | {s['dtype']} |"
        t = s.get("torch") or {}
        if s["status"] != "ok":
            lines.append(f"{head} {s['reason']} | | | | | | | |")
            continue
        j = s["jax"]
        torch_cells = ("torch not installed | - | -" if torch_note == "torch not installed"
                       else f"{t['reason']} | - | -" if t.get("status") != "ok" else
                       f"{t['samples_per_s']:.1f} | {_f(t['tflops'], '.3g')} | "
                       f"{_f(s['jax_over_torch'], '.2f')}")
        lines.append(f"{head} {j['samples_per_s']:.1f} | {j['step_ms']:.2f} | "
                     f"{j['flops_per_sample'] / 1e9:.3g} | {j['tflops']:.3g} | "
                     f"{_f(s['peak_percent'])} | {torch_cells} |")
    if not peak:
        lines += ["", "% of peak: peak unknown for this device."]
    lines += ["", "## 2. Compile times", "",
              "JAX: tracing and lowering, XLA compilation, the first step (seconds), the "
              "steady-state step (ms). PyTorch: its first step (cuDNN's algorithm search "
              "and allocations), then the steady state.", "",
              "| shape | batch | dtype | JAX trace + lower s | JAX compile s | JAX first "
              "step s | JAX first call s | JAX steady ms | PyTorch first step s | "
              "PyTorch steady ms |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in r["steps"]:
        head = f"| {s['shape']} | {s['batch']} | {s['dtype']} |"
        if s["status"] != "ok":
            lines.append(f"{head} {s['reason']} | | | | | | |")
            continue
        j, t = s["jax"], s.get("torch") or {}
        ok = t.get("status") == "ok"
        lines.append(f"{head} {j['trace_lower_s']:.1f} | {j['compile_s']:.1f} | "
                     f"{j['first_step_s']:.2f} | {j['first_call_s']:.1f} | "
                     f"{j['step_ms']:.2f} | {_f(t.get('first_step_s') if ok else None, '.2f')}"
                     f" | {_f(t.get('step_ms') if ok else None, '.2f')} |")
    lines += ["", "## 3. Input pipeline against the train step", ""]
    data = r["data"]
    if data.get("status") == "ok":
        c = data["clips"]
        shape = _shape_text(r["sizes"]["crema"])
        lines += [f"Data: {c['train']:,} train + {c['validation']:,} validation + "
                  f"{c['test']:,} test clips of CREMA-D's shapes ({shape}), "
                  f"written by {data['method']}: records {data['records_s']:.1f} s "
                  f"({_size(data['records_bytes'])}), decoded cache "
                  f"{data['cache_s']:.1f} s ({_size(data['cache_bytes'])}), in a "
                  "separate process while the steps were measured (waited "
                  f"{data['waited_s']:.1f} s for it).", ""]
    else:
        lines += [f"Data: {data.get('reason', 'not generated')}.", ""]
    pipe = r["input_pipeline"]
    if pipe.get("status") == "ok":
        lines += ["The loader reading its decoded cache over one epoch of the training "
                  "split (prefetch 2); + transfer: each batch also put on the device. "
                  "Step: the CREMA-D train step's samples/s at that batch.", "",
                  "| batch | loader read samples/s | + transfer samples/s | step float32 "
                  "samples/s | step bfloat16 samples/s | loader / fastest step |",
                  "|---|---|---|---|---|---|"]
        for p in pipe["rows"]:
            st = p["step_samples_per_s"]
            lines.append(f"| {p['batch']} | {p['read_samples_per_s']:.0f} | "
                         f"{p['device_samples_per_s']:.0f} | {_f(st.get('float32'))} | "
                         f"{_f(st.get('bfloat16'))} | "
                         f"{_f(p['loader_over_fastest_step'], '.2f')} |")
    else:
        lines.append(f"Input pipeline: {pipe.get('reason')}.")
    lines += ["", "## 4. One CREMA-D-sized epoch through the trainer", ""]
    ep = r["epoch"]
    if ep.get("status") == "ok":
        t = ep["timing"]
        lines += [f"`train_and_evaluate` on configs/crema.py with the generated data: one "
                  f"warm-up epoch, batch {ep['batch']}, evaluation batch {ep['eval_batch']}, "
                  "one device, cold (no persistent compilation cache); training, "
                  "validation + test evaluation, checkpoint, the final evaluations. "
                  f"Train {ep['train_samples_per_s']:.1f} samples/s (from the first "
                  f"step's end; the step alone, section 1: "
                  f"{_f(ep['step_samples_per_s'])}); first step after "
                  f"{t.get('to_first_step', 0):.1f} s; "
                  f"{t['compilations']} XLA compilations.", "",
                  "| work | s | % |", "|---|---|---|"]
        for kind in KINDS:
            lines.append(f"| {kind} | {t[kind]:.1f} | {100 * t[kind] / t['wall']:.0f} |")
        lines.append(f"| wall (`train_and_evaluate`) | {t['wall']:.1f} | 100 |")
    else:
        lines.append(f"Epoch: {ep.get('reason')}.")
    if r["skipped"]:
        lines += ["", "## Skipped or failed", ""] + [f"- {s}" for s in r["skipped"]]
    return "\n".join(lines) + "\n"


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _shape_text(shape: Dict[str, Any]) -> str:
    f, t = shape["audio"]
    return (f"audio {f}x{t}, {shape['frames']} frame(s) of {shape['size']}x{shape['size']}")


def write(result: Dict[str, Any], out: str, budget: Budget) -> None:
    result["elapsed_s"] = budget.elapsed()
    link(result)
    result["skipped"] = _skipped(result)
    with open(os.path.join(out, f"{OUT_NAME}.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(out, f"{OUT_NAME}.md"), "w", encoding="utf-8") as f:
        f.write(markdown(result))


def _skipped(r: Dict[str, Any]) -> List[str]:
    out = [f"train step {s['shape']} batch {s['batch']} {s['dtype']}: {s['reason']}"
           for s in r["steps"] if s["status"] != "ok"]
    out += [f"PyTorch {s['shape']} batch {s['batch']} {s['dtype']}: {s['torch']['reason']}"
            for s in r["steps"] if s.get("torch") and s["torch"].get("status") != "ok"
            and r["torch"]["note"] is None]
    for section in ("data", "input_pipeline", "epoch"):
        if r[section].get("status") not in ("ok", "pending", "running"):
            out.append(f"{section}: {r[section].get('reason')}")
    return out


# -------------------------------------------------------------------------------- main


def main() -> None:
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench_gpu")
    p.add_argument("--budget_s", type=float, default=None,
                   help="seconds for everything (default 480; --smoke 300)")
    p.add_argument("--data_dir", default=None,
                   help="where the generated data go and stay (default: a temporary "
                        "folder, removed at the end)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for the test suite")
    args = p.parse_args()
    sizes = SMOKE if args.smoke else GPU
    if args.smoke:  # the same tiny run on every machine, GPU or not
        jax.config.update("jax_platforms", "cpu")
    elif jax.devices()[0].platform != "gpu":
        # The full sizes on a CPU would run for the whole budget and measure nothing the
        # tables are for.
        cli.usage_error(f"./launch.sh bench gpu needs a GPU, and jax sees only "
                        f"{jax.devices()[0].platform} devices here; --smoke runs the same "
                        "script at tiny sizes on the CPU (install jax[cuda12] on a GPU "
                        "machine: pip install -e '.[cuda12]')")
    budget = Budget(args.budget_s if args.budget_s is not None else sizes.budget_s,
                    start=STARTED)
    # Compile times are those of a cold start: no persistent compilation cache.
    jax.config.update("jax_enable_compilation_cache", False)
    os.makedirs(args.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="avgmm_bench_gpu_")
    data_dir = os.path.abspath(args.data_dir or os.path.join(tmp, "data"))
    os.makedirs(data_dir, exist_ok=True)
    train, val, test = sizes.clips
    name = f"bench_{train}_{val}_{test}_{sizes.crema.audio[0]}x{sizes.crema.audio[1]}_" \
           f"{sizes.crema.size}"
    dev = jax.devices()[0]
    have_torch = importlib.util.find_spec("torch") is not None
    result: Dict[str, Any] = {
        "schema": 1, "smoke": args.smoke, "budget_s": budget.seconds,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "sizes": dataclasses.asdict(sizes),
        "device": {"jax_platform": dev.platform, "jax_device_kind": dev.device_kind,
                   "jax_device_count": jax.device_count(), "torch_device_name": None,
                   "peak": None,
                   "jax_default_matmul_precision": jax.config.jax_default_matmul_precision},
        "versions": {"jax": jax.__version__, "jaxlib": _version("jaxlib"),
                     "flax": flax.__version__, "torch": _version("torch") if have_torch
                     else None, "python": platform.python_version()},
        "host": {"cpus": os.cpu_count()},
        "torch": {"note": None if have_torch else "torch not installed"},
        "steps": [], "data": {"status": "pending"}, "input_pipeline": {"status": "pending"},
        "epoch": {"status": "pending"}}
    peak = peak_for(dev.device_kind)
    result["device"]["peak"] = dataclasses.asdict(peak) if peak else None
    try:
        _run(Run(sizes, budget, result, args.out, peak), tmp, data_dir, name, have_torch)
    finally:
        write(result, args.out, budget)
        if args.data_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(markdown(result))
    print(f"wrote {os.path.join(args.out, OUT_NAME)}.json and .md")


def _version(package: str) -> Optional[str]:
    try:
        from importlib.metadata import version
        return version(package)
    except Exception:  # not installed
        return None


class Run:
    """One benchmark run: the budget, the result dict and where it is written."""

    def __init__(self, sizes: Sizes, budget: Budget, result: Dict[str, Any], out: str,
                 peak: Optional[Peak]):
        self.sizes, self.budget, self.result, self.out, self.peak = (sizes, budget, result,
                                                                     out, peak)
        self.torch_rows: Dict[str, Dict[str, Any]] = {}

    def say(self, message: str) -> None:
        print(f"[{self.budget.elapsed():5.0f} s] {message}", flush=True)

    def save(self) -> None:
        write(self.result, self.out, self.budget)

    def steps(self, cases: Sequence[Tuple[Shape, int, str]]) -> None:
        """The JAX rows of `cases`, each measured or skipped, with PyTorch's beside."""
        for shape, batch, dtype in cases:
            row: Dict[str, Any] = {"shape": shape.label, "batch": batch, "dtype": dtype,
                                   "values_per_step": shape.values(batch)}
            estimate = step_estimate(shape, batch, dtype, self.sizes, self.result["steps"])
            if not self.budget.allows(estimate):
                row.update(status="skipped", reason=self.budget.skip_reason(estimate))
            else:
                self.say(f"JAX step {shape.label} batch {batch} {dtype}")
                try:
                    row.update(status="ok", jax=jax_step_case(shape, batch, dtype,
                                                              self.sizes))
                except Exception as e:  # noqa: BLE001 - one case's failure is a row
                    row.update(status="failed", reason=_one_line(e))
            self.result["steps"].append(compare(row, self.torch_rows.get(
                _key(shape, batch, dtype)), self.peak))
            self.save()


def compare(row: Dict[str, Any], torch_row: Optional[Dict[str, Any]],
            peak: Optional[Peak]) -> Dict[str, Any]:
    """A step row with PyTorch's beside it, the share of the peak and the ratio; PyTorch's
    TFLOP/s from the FLOPs XLA counted for the same step."""
    row["torch"] = torch_row
    if row["status"] != "ok":
        return row
    j = row["jax"]
    row["peak_tflops"] = top = peak_tflops(peak, row["dtype"])
    row["peak_percent"] = 100 * j["tflops"] / top if top else None
    row["jax_over_torch"] = None
    if torch_row and torch_row.get("status") == "ok":
        torch_row["tflops"] = j["flops_per_sample"] * torch_row["samples_per_s"] / 1e12
        row["jax_over_torch"] = j["samples_per_s"] / torch_row["samples_per_s"]
    return row


def _run(run: Run, tmp: str, data_dir: str, name: str, have_torch: bool) -> None:
    sizes, budget, result = run.sizes, run.budget, run.result
    data_proc = start_data(sizes, data_dir, name)
    result["data"] = {"status": "running"}
    try:
        # By importance: the paper's batch at CREMA-D's shapes, then (after the loader and
        # the epoch) at AVE's, then the larger batch.
        small, large = sizes.batches[:1], sizes.batches[1:]
        crema = step_cases(sizes, sizes.crema, small)
        later = (step_cases(sizes, sizes.ave, small) + step_cases(sizes, sizes.crema, large)
                 + step_cases(sizes, sizes.ave, large))
        if have_torch:
            run.say("PyTorch reference (its own process)")
            run.torch_rows = run_torch(crema + later, sizes, budget, tmp,
                                       cpu=sizes is SMOKE)
            names = {r.get("device_name") for r in run.torch_rows.values()} - {None}
            result["device"]["torch_device_name"] = next(iter(names), None)
        run.steps(crema)
        # The loader and the epoch need the data (and the epoch a few compilations).
        batch = sizes.batches[0]
        pipe_est = 4 * sum(sizes.clips) / sizes.loader_prior
        run.say("waiting for the generated data")
        result["data"] = wait_data(data_proc, data_dir, budget, pipe_est)
        if result["data"]["status"] != "ok":
            no_data = {"status": "skipped", "reason": "skipped: no generated data"}
            result["input_pipeline"], result["epoch"] = dict(no_data), dict(no_data)
        else:
            if budget.allows(pipe_est):
                run.say("input pipeline")
                result["input_pipeline"] = {"status": "ok", "rows": pipeline_section(
                    sizes, data_dir, name)}
            else:
                result["input_pipeline"] = {"status": "skipped",
                                            "reason": budget.skip_reason(pipe_est)}
            run.save()
            ep_est = epoch_estimate(sizes, result["steps"], batch)
            if budget.allows(ep_est):
                run.say("one epoch through the trainer")
                try:
                    result["epoch"] = epoch_section(sizes, data_dir, name, batch)
                except Exception as e:  # noqa: BLE001 - reported, the rest goes on
                    result["epoch"] = {"status": "failed", "reason": _one_line(e)}
            else:
                result["epoch"] = {"status": "skipped", "reason": budget.skip_reason(ep_est)}
        run.save()
        run.steps(later)
    finally:
        if data_proc.poll() is None:
            data_proc.kill()
            data_proc.wait()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # what was measured so far is written by main's `finally`
        print("interrupted", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # Not sys.exit: XLA's threads, stopped mid-compilation, can crash the interpreter's
        # teardown (a segmentation fault after the line above).
        os._exit(cli.INTERRUPTED_STATUS)
