"""launch.sh: the sweeps' commands and argument errors."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def _launch(*args):
    return subprocess.run(["bash", os.path.join(REPO, "launch.sh"), *args], cwd=REPO,
                          capture_output=True, text=True, env=dict(os.environ, PYTHON=PY))


def test_ablations_dry_run_lists_tables_2_and_3_for_each_seed():
    out = _launch("ablations", "configs/crema.py", "--seeds", "2", "--dry-run",
                  "--config.batch_size=32")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines.pop(0) == "# planned: 30 runs; no estimate (no finished run of this config in --ledger)"
    assert lines.pop() == (f"{PY} -m avgmm.report runs/ablations/crema "
                           "--out=runs/ablations/crema")
    assert len(lines) == 30  # 15 runs per seed
    assert all(line.startswith(f"{PY} -m avgmm.main --config=configs/crema.py")
               for line in lines)
    assert all("--config.batch_size=32" in line for line in lines)
    joined = "\n".join(lines[:15])
    for override in ("--config.loss.alpha=0", "--config.loss.beta=0", "--config.loss.gamma=0",
                     "--config.loss.use_gmm_weights=False", "--config.method=concat",
                     "--config.optimizer.name=adam",
                     "--config.optimizer.reset_between_phases=False",
                     # the paper's open readings
                     "--config.loss.lambda_epoch=step", "--config.loss.lambda_epoch=global",
                     "--config.loss.posteriors_from=refit",
                     "--config.loss.unimodal_weight=1.0",
                     "--config.optimizer.reset_schedule=True", "--config.gmm.select=bic"):
        assert override in joined
    assert "--workdir=runs/ablations/crema/full/seed1 --config.seed=1" in lines[15]


def test_unknown_command_fails_in_one_line_naming_help():
    out = _launch("bogus")
    assert out.returncode == 2
    assert out.stderr == "error: unknown command 'bogus'; ./launch.sh help lists the commands\n"
    assert "ablations|table1|study|guided CONFIG" in _launch("help").stdout


def test_table1_dry_run_lists_every_registered_method_for_each_seed():
    from avgmm import experiments, methods

    out = _launch("table1", "configs/demo.py", "--seeds", "2", "--dry-run", "--workdir=/tmp/t1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines.pop(0).startswith("# planned: ")
    assert lines.pop().endswith("-m avgmm.report /tmp/t1 --out=/tmp/t1 --table1")
    runs = experiments.table1()
    assert len(lines) == 2 * len(runs)
    for name in methods.REGISTRY:  # every method has a row
        assert any(f"--config.method={name}" in line for line in lines), name
    for seed in (0, 1):
        for v in runs:
            assert any(f"--workdir=/tmp/t1/{v.name}/seed{seed} --config.seed={seed} "
                       f"--config.variant={v.name} {' '.join(v.overrides)}" in line
                       for line in lines), (v.name, seed)
