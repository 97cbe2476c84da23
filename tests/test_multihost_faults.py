"""A misconfigured multi-process launch, on this machine's CPU: every process says first
who it is and whom it waits for; a missing process is named after a bounded wait
(AVGMM_DISTRIBUTED_TIMEOUT); a JAX_PROCESS_ID given twice and processes that disagree on
JAX_NUM_PROCESSES are refused; each in one line. (A process killed mid-run:
tests/test_multihost.py::test_killed_process_resumes_when_the_job_is_restarted.)"""

import os
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAIT = 6  # AVGMM_DISTRIBUTED_TIMEOUT of these tests, seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(port: int, pid: int, n: int, workdir: str):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
               JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(n),
               JAX_PROCESS_ID=str(pid), AVGMM_DISTRIBUTED_TIMEOUT=str(WAIT))
    env.pop("SLURM_NTASKS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "avgmm.main", f"--config={REPO}/configs/tiny.py",
         f"--workdir={workdir}", "--config.data.data_dir=/nonexistent"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, limit: float):
    start = time.time()
    out, err = proc.communicate(timeout=limit)
    return proc.returncode, out.strip().splitlines(), err.strip().splitlines(), \
        time.time() - start


@pytest.mark.slow
def test_a_missing_process_is_named_after_a_bounded_wait(tmp_path):
    port = _free_port()
    status, out, err, took = _finish(_start(port, 0, 3, str(tmp_path / "w")), 60)
    assert out[0].startswith(f"process 0 of 3 (host {socket.gethostname()}, pid ")
    assert out[0].endswith(f"coordinating at 127.0.0.1:{port}; waiting up to {WAIT} s "
                           "(AVGMM_DISTRIBUTED_TIMEOUT) for process(es) 1, 2")
    assert status == 1 and len(err) == 1, err
    assert f"waited {WAIT} s (AVGMM_DISTRIBUTED_TIMEOUT) for process(es) 1, 2 of 3 to join " \
           f"at 127.0.0.1:{port}: start them, or check JAX_COORDINATOR_ADDRESS, " \
           "JAX_NUM_PROCESSES and JAX_PROCESS_ID" in err[0]
    assert took < WAIT + 40  # python's start-up and imports, then the wait
    # A process whose coordinator never comes says so after the same wait.
    status, out, err, _ = _finish(_start(_free_port(), 1, 2, str(tmp_path / "w")), 60)
    assert out[0].startswith("process 1 of 2 (host ") and "joining the run coordinated by " \
        "process 0 at 127.0.0.1:" in out[0]
    assert status == 1 and len(err) == 1 and "could not reach process 0 at 127.0.0.1:" in err[0]


@pytest.mark.parametrize("ids,counts,message", [
    ((0, 1, 1), (3, 3, 3), "JAX_PROCESS_ID=1 is given to two processes"),
    ((0, 1), (2, 3), "has JAX_NUM_PROCESSES=3 but process 0 has 2"),
])
def test_a_misconfigured_job_stops_every_process_in_one_line(tmp_path, ids, counts, message):
    port = _free_port()
    procs = [_start(port, 0, counts[0], str(tmp_path / "w"))]
    time.sleep(0.5)  # process 0 first: the others then meet it, not each other's timeouts
    procs += [_start(port, i, n, str(tmp_path / "w")) for i, n in zip(ids[1:], counts[1:])]
    results = [_finish(p, 90) for p in procs]
    refused = [r for r in results if r[0] == 2]
    assert refused and refused[0][0] == 2 and results[0][0] == 2, results
    for status, _, err, took in refused:
        assert len(err) == 1 and message in err[0], err
        assert took < WAIT + 40
