"""The converters' command-line conventions (those of `avgmm.cli`; `data_prep` does not
depend on `avgmm`): a mistake is one line `error: ...` on stderr, exit status 2 for a
usage or input mistake (a bad flag, a raw download that is not what the converter
expects, parameters it refuses), 1 for a conversion that failed on its way, 130 for
Ctrl-C."""

import sys
from typing import Any, Callable, List, NoReturn

from absl import app, flags

USAGE_STATUS = 2
FAILED_STATUS = 1


def fail(message: Any, status: int = USAGE_STATUS) -> NoReturn:
    """One `error:` line on stderr, then exit (2: a usage or input mistake)."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(status)


def parse_flags(argv: List[str]) -> List[str]:
    """absl's flag parsing, a mistake told in one line with exit status 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(f"{str(e).strip().rstrip('.')}; see --helpshort")


def run(main: Callable[[List[str]], Any]) -> None:
    """`absl.app.run(main)` with `parse_flags`."""
    app.run(main, flags_parser=parse_flags)
