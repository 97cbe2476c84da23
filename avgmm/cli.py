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
from typing import Any, Callable, List, NoReturn

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


def folder_flag(flag: str, value: Any, example: str = "runs/x") -> str:
    """The value of a folder flag (`--workdir`, `--out`), refused when empty or the root of
    the file system (every run and sweep writes many files and folders into it)."""
    text = "" if value is None else str(value)
    if not text.strip() or os.path.abspath(os.path.expanduser(text)) == os.path.abspath(os.sep):
        raise UserError(f"{flag}={text!r} is not allowed: name a folder of its own, e.g. "
                        f"{flag}={example}")
    return text


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser for the scripts that use it (the benchmarks): a mistake is one
    `error:` line and exit status 2 (argparse prints the usage block first)."""

    def error(self, message: str) -> NoReturn:
        usage_error(f"{message}; see --help")
