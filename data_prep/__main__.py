"""`python -m data_prep --list [--markdown]`: the datasets every converter declares.
`python -m data_prep NAME [ARGS...]`: runs NAME's converter with ARGS (`NAME --help`
lists its flags); `./launch.sh prepare NAME ARGS` is the same command.
"""

import os
import sys

from data_prep import registry

USAGE = ("usage: python -m data_prep --list [--markdown]\n"
         "       python -m data_prep NAME [ARGS...]   (NAME --help: the converter's flags)")


def main(argv) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE + "\n\n" + registry.text_table(registry.entries()),
              file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--list":
        rows = registry.entries()
        print(registry.markdown_table(rows) if "--markdown" in argv[1:]
              else registry.text_table(rows))
        for problem in registry.problems():
            print(f"warning: {problem}", file=sys.stderr)
        return 0
    try:
        entry = registry.for_prepare(argv[0])
    except registry.RegistryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # The converter runs as its own program (`python -m data_prep.x`), exactly as when
    # called directly: its flags are defined only when it is the main module.
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", entry.module, *entry.args, *argv[1:]])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
