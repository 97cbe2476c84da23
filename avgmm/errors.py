"""Every error class of avgmm, in one place.

Two families reach the command line as one line, `error: <message>`, without a traceback:

- `UserError` (a ValueError, so that library callers catching ValueError keep working):
  something asked for cannot be done (a config value, a dataset that is not prepared, a
  workdir holding another run); exit status 2.
- `WorkdirError`: a started run failed in a way its operator can act on (busy workdir,
  full disk, damaged checkpoints, divergence); exit status 1.

Anything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Something the user asked for cannot be done; the message names the field and the
    fix in one line."""


class DatasetNotPreparedError(UserError, FileNotFoundError):
    """The config names a dataset that is not prepared in its data_dir."""


class CacheError(UserError, OSError):
    """The loader's decoded cache cannot be built; the one-line message says how to fix it."""


class AnalysisError(UserError):
    """A workdir lacks what an analysis needs; the message says what."""


class ReportError(UserError):
    """Nothing to report, or a run that cannot be read; the message says which."""


class StudyError(UserError):
    """A study folder that cannot be summarized; the message says why."""


class ExperimentError(UserError):
    """An unknown sweep or variant, or a sweep's arguments that do not fit."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run; the message says how far it got and how to go on."""


class WorkdirError(RuntimeError):
    """A problem with the run's workdir or its outcome, told in one line."""


class WorkdirBusyError(WorkdirError):
    """Another live process holds the workdir."""


class DiskFullError(WorkdirError):
    """The workdir's device ran out of space while writing."""


class CheckpointError(WorkdirError):
    """A checkpoint cannot be read back intact."""


class DivergedError(WorkdirError):
    """The loss or the parameters became NaN or inf."""


class PrimaryError(Exception):
    """Marks an error that process 0 raised and every other process of a multi-host run
    re-raises (so that the command line prints it once, from process 0)."""


# The one-line errors that cross processes, by name (see avgmm.processes).
ONE_LINE_ERRORS = (UserError, WorkdirError)
