"""What every command line of avgmm shares: a mistake is one line, and one set of exit
statuses.

A program (`python -m avgmm.main`, `analyze`, `report`, `study`, `demo`, `experiments`;
the converters of `data_prep` follow the same rules through `data_prep.cli`) answers a
mistake with one line `error: ...` on stderr, naming the value and the fix, and exits:

    0    done
    1    a started run failed (`WorkdirError`: busy workdir, divergence, full disk,
         damaged checkpoints, a multi-host peer lost)
    2    a usage or config mistake (`UserError`, an unknown or malformed flag)
    130  interrupted with Ctrl-C

Anything else is a bug and keeps its traceback.
"""

import argparse
import os
import sys
from typing import Any, Callable, List, NoReturn, Optional

from absl import app, flags

from avgmm.errors import UserError, WorkdirError

DONE_STATUS = 0
FAILED_STATUS = 1
USAGE_STATUS = 2
INTERRUPTED_STATUS = 130


def say_error(message: Any) -> None:
    """Prints `error: <message>` as one line on stderr."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def usage_error(message: Any) -> NoReturn:
    """A usage mistake: one `error:` line, exit status 2."""
    say_error(message)
    sys.exit(USAGE_STATUS)


def parse_flags(argv: List[str]) -> List[str]:
    """absl's flag parsing with a mistake (unknown flag, missing or malformed value, a
    required flag not given) told in one line, exit status 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        usage_error(f"{str(e).strip().rstrip('.')}; see --helpshort")


def run(main: Callable[[List[str]], Any]) -> None:
    """`absl.app.run(main)` with `parse_flags`; a `UserError` out of `main` exits 2 and a
    `WorkdirError` 1, each as one line."""
    def guarded(argv: List[str]) -> Any:
        try:
            return main(argv)
        except UserError as e:
            usage_error(e)
        except WorkdirError as e:
            say_error(e)
            sys.exit(FAILED_STATUS)
    app.run(guarded, flags_parser=parse_flags)


def _resolved(path: str) -> str:
    """`path` with `~` expanded, symbolic links and `..` resolved. A leading `//` is the
    root on Linux and macOS (POSIX leaves it to the system, and `realpath` keeps it as it
    is), so it is read as `/`: `--workdir=//` must not slip past the check below."""
    path = os.path.expanduser(path)
    if path.startswith("//"):
        path = os.sep + path.lstrip("/")
    return os.path.realpath(path)


def _same_folder(a: str, b: str) -> bool:
    """Whether two resolved paths name one folder (compared by inode where both exist, so
    that a bind mount or a second name of the same folder is caught too)."""
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def repository_root() -> str:
    """The folder holding the `avgmm` package: the repository's root in a checkout."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def forbidden_folder(path: Any) -> Optional[str]:
    """Why `path` cannot be a folder that a command fills with its outputs (a run's
    workdir, a sweep's root, a report's or study's folder), or None when it can.

    The one place that decides, for every command that writes. Refused: an empty value,
    and any path that resolves to the root of the file system, the home directory itself
    or avgmm's repository root (`//`, `/.`, `$ROOT/` with an empty ROOT, `~`, `.` in those
    folders): a run writes and, with `--fresh`, deletes many entries there, mixed with the
    user's own files."""
    text = "" if path is None else str(path)
    if not text.strip():
        return "it is empty"
    resolved = _resolved(text)
    for what, folder in (("the root of the file system", os.sep),
                         ("the home directory", "~"),
                         ("the root of avgmm's repository", repository_root())):
        if _same_folder(resolved, _resolved(folder)):
            return f"it is {what}" + (f" ({resolved})" if resolved != text else "")
    return None


def folder_flag(flag: str, value: Any, example: str = "runs/x") -> str:
    """The value of a folder flag (`--workdir`, `--out`), refused (`UserError`) when
    `forbidden_folder` says it cannot hold the command's outputs."""
    text = "" if value is None else str(value)
    why = forbidden_folder(text)
    if why:
        raise UserError(f"{flag}={text!r} is not allowed: {why}; name a folder of its "
                        f"own, e.g. {flag}={example}")
    return text


def output_folder(flag: str, given: Optional[str], default: str, example: str) -> str:
    """The folder a command writes into: `given` (its `flag`'s value) or, when that is not
    set, `default` (derived from the inputs, e.g. their common parent folder), either one
    checked by `forbidden_folder`."""
    if given is not None:
        return folder_flag(flag, given, example)
    why = forbidden_folder(default)
    if why:
        raise UserError(f"the default output folder {default!r} is not allowed: {why}; "
                        f"name one with {flag}, e.g. {flag}={example}")
    return default


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser for the scripts that use it (the benchmarks): a mistake is one
    `error:` line and exit status 2 (argparse prints the usage block first)."""

    def error(self, message: str) -> NoReturn:
        usage_error(f"{message}; see --help")
