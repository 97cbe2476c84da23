"""The exception that marks a user's mistake (a config value, a missing dataset, a
workdir holding another run) rather than a bug.

The command line prints a `UserError` as one line, `error: <message>`, and exits with
status 2; anything else keeps its traceback. It derives from ValueError so that library
callers catching ValueError keep working.
"""


class UserError(ValueError):
    """Something the user asked for cannot be done; the message names the field and the
    fix in one line."""


class DatasetNotPreparedError(UserError, FileNotFoundError):
    """The config names a dataset that is not prepared in its data_dir."""


class CacheError(UserError, OSError):
    """The loader's decoded cache cannot be built; the one-line message says how to fix it."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run; the message says how far it got and how to go on."""
