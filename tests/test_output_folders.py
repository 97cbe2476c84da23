"""Every command that writes refuses an output folder that means the root of the file
system, the home directory or the repository's root (`avgmm.cli.forbidden_folder`), in one
line with exit status 2 and before anything is written (docs/reliability.md)."""

import os
import subprocess
import sys

import pytest

from avgmm import cli
from avgmm.errors import UserError
from avgmm.workdir import Workdir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _refused(args, home: str) -> str:
    """Runs `python ARGS` with HOME=home; asserts one `error:` line and status 2."""
    env = dict(os.environ, PYTHONPATH=REPO, PYTHON=sys.executable, HOME=home)
    proc = subprocess.run([sys.executable] + list(args), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stderr)
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr, lines
    return lines[0]


# --check_only and --dry-run: a command that wrongly accepts the folder still writes
# nothing there (the test then fails on the status, not by filling the root).
MAIN = ["-m", "avgmm.main", "--config=configs/tiny.py", "--check_only"]
SWEEP = ["-m", "avgmm.experiments", "run", "table1", "configs/tiny.py", "--dry-run"]


@pytest.mark.parametrize("args,why", [
    (MAIN + ["--workdir=//"], "--workdir='//' is not allowed: it is the root of the file system"),
    (MAIN + ["--workdir=//."], "it is the root of the file system"),
    (MAIN + ["--workdir={home}"], "it is the home directory"),
    (MAIN + ["--workdir={home}/"], "it is the home directory"),
    (MAIN + ["--workdir=."], "it is the root of avgmm's repository"),
    (SWEEP + ["--workdir=//"], "--workdir='//' is not allowed: it is the root of the file system"),
    (SWEEP + ["--workdir={home}"], "it is the home directory"),
    (SWEEP + ["--workdir=" + REPO], "it is the root of avgmm's repository"),
    (["-m", "avgmm.report", "runs/none", "--out=/"], "--out='/' is not allowed: it is the root"),
    (["-m", "avgmm.report", "runs/none", "--out={home}"], "it is the home directory"),
    (["-m", "avgmm.report", "runs/none", "--out=" + REPO], "it is the root of avgmm's repository"),
    (["-m", "avgmm.study", "runs/none", "--out="], "--out='' is not allowed: it is empty"),
    (["-m", "avgmm.study", "runs/none", "--out=//"], "it is the root of the file system"),
    (["-m", "avgmm.analyze", "--workdir=//"], "it is the root of the file system"),
    (["-m", "avgmm.analyze", "--compare", "runs/a", "runs/b", "--out={home}"],
     "it is the home directory"),
    # An unknown method: a demo that wrongly accepts the folder stops before training.
    (["-m", "avgmm.demo", "--workdir=//", "--methods=none_such"],
     "it is the root of the file system"),
])
def test_paths_that_mean_the_root_home_or_repository_are_refused_by_every_writer(
        args, why, tmp_path):
    home = str(tmp_path / "home")
    os.makedirs(home)
    line = _refused([a.replace("{home}", home) for a in args], home)
    assert why in line and "name a folder of its own" in line, line
    # Nothing written there but what libraries keep under HOME (matplotlib's cache).
    assert set(os.listdir(home)) <= {".cache", ".config"}, os.listdir(home)


def test_forbidden_folder_sees_through_slashes_links_and_dots(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "runs").mkdir()
    os.symlink("/", tmp_path / "runs" / "to_root")
    for path in ("/", "//", "///", "//.", "/./", "/tmp/..", str(tmp_path / "runs" / "to_root"),
                 "~", str(tmp_path) + "/", str(tmp_path / "runs") + "/..", REPO, REPO + "/.",
                 "", "  "):
        assert cli.forbidden_folder(path), path
    for path in ("runs/x", str(tmp_path / "runs"), "/tmp", os.path.join(REPO, "runs")):
        assert cli.forbidden_folder(path) is None, path
    # Library callers that skip the command line are refused too, before any folder is made.
    with pytest.raises(UserError, match="is not allowed: it is the root"):
        with Workdir("//").lock():
            pass
    # A default output folder (a report's: the runs' common parent) is checked the same way.
    with pytest.raises(UserError, match="default output folder '/' is not allowed"):
        cli.output_folder("--out", None, "/", "runs/report")
    assert cli.output_folder("--out", None, "runs/t", "runs/report") == "runs/t"
