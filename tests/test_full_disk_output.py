"""A full disk met by a run's first background save is one line, the last and only one on
stderr: no "Event loop is closed" tracebacks, no orbax error raised again on the way out,
no traceback from another write of the run (docs/reliability.md)."""

import errno
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from avgmm import checkpoints, errors, orbax_noise
from avgmm.methods import gmm_fits
from avgmm.workdir import Workdir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL = ValueError("RESOURCE_EXHAUSTED: Failed writing: Failed to write 9721 bytes to file "
                  "17: No space left on device [os_error_code='28']")


def _state(k: int):
    return {"w": np.arange(4096, dtype=np.float32) * k, "epoch": np.asarray(k, np.int32)}


def test_a_failed_best_save_raised_again_by_close_is_one_line_or_silent(tmp_path):
    ckpt = checkpoints.Checkpointer(str(tmp_path), keep=3, say=lambda m: None)
    ckpt.save(1, _state(1), {}, best=True)
    real_close = ckpt.best.close

    def fails(*args):
        raise FULL

    ckpt.best.close = fails  # orbax raises a failed best save again when it closes
    with pytest.raises(errors.DiskFullError, match="no space left on the device of"):
        ckpt.close()
    ckpt.close(quiet=True)  # a failing run's own error stays the one told
    real_close()


def test_event_loop_closed_tracebacks_are_dropped_from_every_hook(monkeypatch):
    import threading

    shown = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: shown.append(value))
    monkeypatch.setattr(sys, "unraisablehook", lambda info: shown.append(info.exc_value))
    monkeypatch.setattr(threading, "excepthook", lambda args: shown.append(args.exc_value))
    orbax_noise.drop_loop_closed_tracebacks()
    closed, other = RuntimeError("Event loop is closed"), ValueError("x")
    for value in (closed, other):
        # tensorstore's callbacks into a closed loop reach sys.unraisablehook (from C++).
        sys.unraisablehook(types.SimpleNamespace(exc_type=type(value), exc_value=value,
                                                 exc_traceback=None, err_msg=None,
                                                 object=None))
        sys.excepthook(type(value), value, None)
        threading.excepthook(types.SimpleNamespace(exc_type=type(value), exc_value=value,
                                                   exc_traceback=None, thread=None))
    assert shown == [other] * 3  # anything else is still shown


def test_a_gmm_fit_meeting_a_full_disk_is_one_line(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gmm_fits.np, "savez", full)
    gmm = types.SimpleNamespace(to_dict=lambda: {"weights": [0.5, 0.5]})
    host = {"gap": np.zeros(3, np.float32), "id": ["a", "b", "c"]}
    with pytest.raises(errors.DiskFullError, match=r"device of .*gmm_fits/fit_000.npz: .*"
                                                   r"earlier fits and checkpoints are unchanged"):
        gmm_fits.save_fit(Workdir(str(tmp_path)), 0, 1, gmm, host)
    assert os.listdir(tmp_path / "gmm_fits") == []  # no half-written file left


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs (root only)")
@pytest.mark.parametrize("method,size", [("concat", "60k"), ("adaptive", "120k")])
def test_a_first_save_meeting_a_full_disk_is_the_only_line(method, size, tiny_data_dir,
                                                           tmp_path):
    """60k: the first save fails inside orbax (tensorstore printed up to 118 "Event loop
    is closed" tracebacks, then orbax's error was raised again by close); 120k with the
    adaptive loss: the GMM fit's file meets the full disk after the first save failed."""
    disk = str(tmp_path / "disk")
    os.makedirs(disk)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", disk],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "avgmm.main", "--config=configs/tiny.py",
             f"--workdir={disk}/run", f"--config.data.data_dir={tiny_data_dir}",
             f"--config.method={method}"], cwd=REPO, capture_output=True, text=True,
            timeout=600, env=dict(os.environ, PYTHONPATH=REPO))
    finally:
        subprocess.run(["umount", disk])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"error: no space left on the device of {disk}/run/"
                               "checkpoints/"), lines[0]
    assert "no checkpoint was saved yet" in lines[0]
