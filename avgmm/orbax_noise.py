"""Orbax's and asyncio's noise kept off the console: a failed background save or a
damaged checkpoint logs hundreds of lines of tracebacks, which would bury the one line
that says what happened (the checkpointer raises that line itself)."""

import contextlib
import gc
import logging as py_logging
import os
import sys
from typing import Callable

from absl import logging


class FailedSaveLogFilter(py_logging.Filter):
    """Drops orbax's ERROR logs (a failed background save logs its traceback from each of
    its threads, hundreds of lines for a full disk): the failure is raised again where the
    save is waited for, and told there in one line. `--verbosity=0` (INFO) keeps them."""

    def filter(self, record: py_logging.LogRecord) -> bool:
        return not (record.levelno >= py_logging.ERROR
                    and f"{os.sep}orbax{os.sep}" in record.pathname
                    and logging.get_verbosity() < logging.INFO)


def mute_failed_save_noise() -> None:
    """Installs, once per process, `FailedSaveLogFilter` and an excepthook that drops the
    `RuntimeError: Event loop is closed` tracebacks which tensorstore prints for writes
    that finish after a failed save has closed their event loop."""
    absl_logger = logging.get_absl_logger()
    if any(isinstance(f, FailedSaveLogFilter) for f in absl_logger.filters):
        return
    absl_logger.addFilter(FailedSaveLogFilter())
    previous = sys.excepthook

    def hook(kind, value, tb):
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        previous(kind, value, tb)

    sys.excepthook = hook


@contextlib.contextmanager
def quiet_asyncio(failed_loads: Callable[[], int]):
    """Mutes asyncio's logger while damaged checkpoints are tried: each unreadable array
    of a damaged checkpoint logs its own multi-kilobyte traceback, which would bury the
    one line that says what was skipped. `failed_loads()`: reads that failed so far."""
    logger = py_logging.getLogger("asyncio")
    level = logger.level
    logger.setLevel(py_logging.CRITICAL)
    before = failed_loads()
    try:
        yield
    finally:
        if failed_loads() > before:
            # Unretrieved task exceptions are logged when collected (a full collection
            # takes a noticeable part of a second: only after a failed read).
            gc.collect()
        logger.setLevel(level)
