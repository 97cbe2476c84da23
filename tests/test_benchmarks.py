"""Smoke runs of every benchmark at tiny sizes, so that none of them rots.

They time nothing that is asserted: only that each runs and prints its table.
"""

import json
import os
import subprocess
import sys

import pytest

from avgmm import timing


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench(tmp_path, *args):
    out_json = tmp_path / "results.jsonl"
    env = dict(os.environ, PYTHONPATH=REPO, JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    env.pop("XLA_FLAGS", None)  # one device, as a user would run it
    proc = subprocess.run(["bash", os.path.join(REPO, "launch.sh"), "bench", *args,
                           f"--json={out_json}"], cwd=REPO, capture_output=True, text=True,
                          env=dict(env, PYTHON=sys.executable), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out_json.read_text().splitlines()]
    return proc.stdout, rows


@pytest.mark.slow
def test_train_step_bench_smoke(tmp_path):
    # The PyTorch column needs the `bench` extra; without torch the JAX column still runs.
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    out, rows = _bench(tmp_path, "train_step", "--shapes=tiny", "--batches=4",
                       "--dtypes=float32", "--losses=adaptive", "--repeats=1")
    assert "jax/torch" in out and len(rows) == 1
    assert rows[0]["samples_per_s"] > 0 and rows[0]["flops_per_sample"] > 0
    if have_torch:
        assert rows[0]["torch_samples_per_s"] > 0
    else:
        assert rows[0]["torch_samples_per_s"] is None and "no PyTorch column" in out


@pytest.mark.slow
def test_gmm_bench_smoke(tmp_path):
    out, rows = _bench(tmp_path, "gmm", "--sizes=2000", "--repeats=1", "--collection=tiny")
    fit = next(r for r in rows if r["bench"] == "gmm")
    assert fit["max_param_diff"] < 1e-3 and fit["recompiled_on_refit"] is False
    assert next(r for r in rows if r["bench"] == "gap_collection")["epoch_s"] > 0


def test_input_pipeline_bench_smoke(tmp_path):
    out, rows = _bench(tmp_path, "input_pipeline", "--examples=16", "--batch=8",
                       "--frame_size=32")
    assert [r["source"] for r in rows] == ["records", "cache"]
    assert all(r["augment_samples_per_s"] > 0 for r in rows)


@pytest.mark.slow
def test_data_prep_bench_smoke(tmp_path):
    out, rows = _bench(tmp_path, "data_prep", "--crema_clips=6", "--ave_videos=2",
                       "--workers=1,2", "--frame_size=32")
    assert {(r["dataset"], r["workers"]) for r in rows} == {
        ("crema_d", 1), ("ave", 1), ("crema_d", 2), ("ave", 2)}
    assert all(r["clips"] > 0 for r in rows)


@pytest.mark.slow
def test_run_bench_smoke(tmp_path):
    out, rows = _bench(tmp_path, "run", "--config=configs/tiny.py",
                       "--overrides=--config.epochs=2 --config.schedule.adaptive_steps=1")
    assert [r["start"] for r in rows] == ["cold", "warm"]
    assert "| compile |" in out and "process launch to first step done" in out
    for r in rows:
        assert r["launch_to_first_step"] > 0 and r["wall"] > 0
    # The warm run found what the cold one compiled in the persistent cache.
    assert rows[1]["compile"] < rows[0]["compile"]
    assert "**fixed host overhead**" in out and "**projected GPU epoch**" in out


@pytest.mark.slow
def test_run_bench_side_by_side_smoke(tmp_path):
    # The same code as its own baseline: both columns, their ratios, identical results.
    out, rows = _bench(tmp_path, "run", "--config=configs/tiny.py", f"--baseline_checkout={REPO}",
                       "--starts=cold", "--gpu_factor=10",
                       "--overrides=--config.epochs=2 --config.schedule.adaptive_steps=1")
    assert [(r["checkout"], r["start"]) for r in rows] == [("before", "cold"), ("after", "cold")]
    assert "| before cold | after cold | after/before cold |" in out
    assert "(host + device / 10)" in out
    assert "results.json, cold: identical before and after" in out


# ------------------------------------------------------------- ./launch.sh bench gpu


def _gpu_bench_module():
    """benchmarks/gpu_bench.py imported as a module (its pure helpers)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gpu_bench", os.path.join(REPO, "benchmarks", "gpu_bench.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _gpu_bench(tmp_path, *args):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=REPO, JAX_DISABLE_MOST_OPTIMIZATIONS="1",
               PYTHON=sys.executable)
    env.pop("XLA_FLAGS", None)  # one device, as a user would run it
    proc = subprocess.run(["bash", os.path.join(REPO, "launch.sh"), "bench", "gpu", "--smoke",
                           f"--out={out}", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "bench_gpu.json").read_text())
    return result, (out / "bench_gpu.md").read_text()


def test_gpu_bench_peaks():
    gb = _gpu_bench_module()
    names = {"NVIDIA H100 80GB HBM3": "H100 SXM", "NVIDIA H100 PCIe": "H100 PCIe",
             "NVIDIA H100 NVL": "H100 NVL", "NVIDIA H200": "H200 SXM",
             "NVIDIA H200 NVL": "H200 NVL", "NVIDIA A100-SXM4-40GB": "A100",
             "NVIDIA A100 80GB PCIe": "A100", "NVIDIA L4": "L4", "NVIDIA L40S": "L40S",
             "NVIDIA A10": "A10", "Tesla V100-SXM2-16GB": "V100 SXM2",
             "Tesla V100-PCIE-32GB": "V100 PCIe", "NVIDIA GeForce RTX 4090": "RTX 4090",
             "NVIDIA GeForce RTX 3090": "RTX 3090", "Tesla T4": "T4"}
    for name, chip in names.items():
        assert gb.peak_for(name).chip == chip, name
    # Chips whose rates differ from a listed neighbour's are unknown, not guessed.
    for name in ("NVIDIA A10G", "NVIDIA GH200 480GB", "NVIDIA GeForce RTX 3090 Ti", "cpu",
                 "NVIDIA L40"):
        assert gb.peak_for(name) is None, name
    h100 = gb.peak_for("NVIDIA H100 80GB HBM3")
    # Dense: half the datasheet's sparse 1,979 (bf16) and 989 (TF32) TFLOP/s.
    assert gb.peak_tflops(h100, "bfloat16") == 989.5
    assert gb.peak_tflops(h100, "float32") == 494.5
    v100 = gb.peak_for("Tesla V100-SXM2-16GB")  # no TF32 or bf16 tensor cores
    assert gb.peak_tflops(v100, "float32") == 15.7
    assert gb.peak_tflops(v100, "bfloat16") is None
    assert gb.peak_tflops(None, "float32") is None


def test_gpu_bench_budget_and_estimates():
    gb = _gpu_bench_module()
    now = [0.0]
    budget = gb.Budget(100.0, clock=lambda: now[0])
    assert budget.left() == 100.0 - gb.RESERVE_S
    now[0] = 50.0
    assert budget.allows(40.0) and not budget.allows(40.5)
    assert budget.skip_reason(70.0) == "skipped: estimated 70 s, 40 s left in the budget"
    sizes, shape = gb.GPU, gb.GPU.crema
    # Nothing measured yet: the prior first call alone.
    assert gb.step_estimate(shape, 64, "float32", sizes, []) == sizes.compile_prior_s
    # One case measured: its first call (30 s) plus 3 x 10 + 1 steps at its rate of
    # 1e6 input values per 0.1 s; the new case has 4x the values: 31 x 0.4 s.
    done = [{"status": "ok", "dtype": "float32", "shape": shape.label, "batch": 64,
             "values_per_step": 1e6,
             "jax": {"first_call_s": 30.0, "step_ms": 100.0, "samples_per_s": 1000.0}}]
    big = gb.Shape("x", (1000, 1000), 0, 1, 6)  # 1e6 values per sample
    assert abs(gb.step_estimate(big, 4, "float32", sizes, done) - (30 + 31 * 0.4)) < 1e-9
    # The epoch: 3 compilations, 6,698 training clips at 1,000/s, a third of that cost
    # for the 670 + 3 x 744 + 6,698 forward passes, 20 s fixed.
    want = 3 * 30 + 6.698 + (670 + 3 * 744 + 6698) / 3 / 1000 + 20
    assert abs(gb.epoch_estimate(sizes, done, 64) - want) < 1e-9
    assert gb.epoch_estimate(sizes, [], 64) == sizes.epoch_prior_s


def test_gpu_bench_smoke(tmp_path):
    # The whole script at tiny sizes on the CPU; a large budget so that a busy machine
    # does not make it skip anything.
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    r, md = _gpu_bench(tmp_path, "--budget_s=900")
    assert r["smoke"] is True and r["skipped"] == []
    assert r["device"]["jax_platform"] == "cpu" and r["device"]["peak"] is None
    assert "peak unknown" in md
    steps = r["steps"]
    assert [(s["shape"], s["batch"], s["dtype"]) for s in steps] == [
        (shape, 4, d) for shape in ("CREMA-D tiny", "AVE tiny")
        for d in ("float32", "bfloat16")]
    for s in steps:
        j = s["jax"]
        assert s["status"] == "ok" and j["step_ms"] > 0 and j["flops_per_sample"] > 0
        assert abs(j["samples_per_s"] - s["batch"] / (j["step_ms"] / 1e3)) < 1e-6 * j[
            "samples_per_s"]
        assert abs(j["tflops"] - j["flops_per_sample"] * j["samples_per_s"] / 1e12) < 1e-9
        assert abs(j["first_call_s"] - (j["trace_lower_s"] + j["compile_s"]
                                        + j["first_step_s"])) < 1e-6
        # A cold first call (tracing and compiling) costs more than a steady step.
        assert j["compile_s"] > 0 and j["first_call_s"] > j["step_ms"] / 1e3
        assert s["peak_percent"] is None
        if have_torch:
            assert s["torch"]["status"] == "ok" and s["torch"]["samples_per_s"] > 0
        else:
            assert s["torch"] is None and s["jax_over_torch"] is None
        row = (f"| {s['shape']} | {s['batch']} | {s['dtype']} | {j['samples_per_s']:.1f} | "
               f"{j['step_ms']:.2f} |")
        assert row in md
    if not have_torch:
        assert r["torch"]["note"] == "torch not installed" and "torch not installed" in md
    flops = {(s["shape"], s["batch"], s["dtype"]): s["jax"]["flops_per_sample"]
             for s in steps}
    # AVE's sample (3 frames, longer audio) costs more than CREMA-D's; bfloat16 does the
    # same arithmetic as float32.
    for dtype in ("float32", "bfloat16"):
        assert flops[("AVE tiny", 4, dtype)] > 2 * flops[("CREMA-D tiny", 4, dtype)]
    assert abs(flops[("CREMA-D tiny", 4, "bfloat16")] / flops[("CREMA-D tiny", 4, "float32")]
               - 1) < 0.1
    data = r["data"]
    assert data["status"] == "ok" and data["clips"] == {"train": 48, "validation": 8,
                                                        "test": 8}
    assert data["records_s"] > 0 and data["cache_s"] > 0 and data["cache_bytes"] > 0
    pipe = r["input_pipeline"]
    assert pipe["status"] == "ok" and [p["batch"] for p in pipe["rows"]] == [4]
    for p in pipe["rows"]:
        step = {s["dtype"]: s["jax"]["samples_per_s"] for s in steps
                if s["shape"] == "CREMA-D tiny" and s["batch"] == p["batch"]}
        assert p["step_samples_per_s"] == step
        assert p["read_samples_per_s"] > 0 and p["device_samples_per_s"] > 0
        assert abs(p["loader_over_fastest_step"]
                   - p["device_samples_per_s"] / max(step.values())) < 1e-9
    ep = r["epoch"]
    assert ep["status"] == "ok" and ep["batch"] == 4 and ep["train_samples_per_s"] > 0
    t = ep["timing"]
    for kind in ("compile", "train", "evaluation", "checkpoint"):
        assert t[kind] > 0, kind
    assert abs(sum(t[k] for k in timing.KINDS + ("other",)) - t["wall"]) < 1e-6
    assert t["wall"] <= ep["call_wall_s"]
    step = next(s["jax"]["samples_per_s"] for s in steps
                if s["shape"] == "CREMA-D tiny" and s["batch"] == 4 and s["dtype"] == "float32")
    assert ep["step_samples_per_s"] == step
    assert abs(ep["train_over_step"] - ep["train_samples_per_s"] / step) < 1e-9
    assert f"| checkpoint | {t['checkpoint']:.1f} |" in md
    assert "## 3. Input pipeline" in md and "## 4. One CREMA-D-sized epoch" in md


def test_gpu_bench_skips_what_overruns(tmp_path):
    # No budget at all: every measurement is skipped, and the tables say so.
    r, md = _gpu_bench(tmp_path, "--budget_s=0")
    assert all(s["status"] == "skipped" and "left in the budget" in s["reason"]
               for s in r["steps"]) and len(r["steps"]) == 4
    assert r["data"]["status"] == "skipped" and r["epoch"]["status"] == "skipped"
    assert len([s for s in r["skipped"] if s.startswith("train step")]) == 4
    assert {s.split(":")[0] for s in r["skipped"]} >= {"data", "input_pipeline", "epoch"}
    assert md.count("skipped: estimated") >= 2 * 4  # both step tables


def test_the_gpu_benchmark_without_a_gpu_says_so_in_one_line_and_ctrl_c_is_clean(tmp_path):
    import signal
    import time

    script = os.path.join(REPO, "benchmarks", "gpu_bench.py")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, script, f"--out={tmp_path / 'full'}"], cwd=REPO,
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith("error: ")
    assert "needs a GPU" in out.stderr and "--smoke" in out.stderr
    assert not (tmp_path / "full").exists()  # nothing started
    proc = subprocess.Popen([sys.executable, script, "--smoke", f"--out={tmp_path / 's'}"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    time.sleep(8)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted", err
