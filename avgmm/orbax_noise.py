"""Orbax's and asyncio's noise kept off the console: a failed background save or a
damaged checkpoint logs hundreds of lines of tracebacks, which would bury the one line
that says what happened (the checkpointer raises that line itself)."""

import contextlib
import gc
import logging as py_logging
import os
import sys
import threading
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


def _loop_closed(value: BaseException) -> bool:
    return isinstance(value, RuntimeError) and str(value) == "Event loop is closed"


def mute_failed_save_noise() -> None:
    """Installs, once per process, `FailedSaveLogFilter` and hooks that drop the
    `RuntimeError: Event loop is closed` tracebacks which tensorstore prints for writes
    that finish after a failed save has closed their event loop: 40 to 118 of them when
    the first save of a run meets a full disk. They reach three hooks: `sys.excepthook`,
    `sys.unraisablehook` (tensorstore's callbacks into a closed loop, from C++, print
    there without an "Exception ignored" header) and `threading.excepthook`."""
    absl_logger = logging.get_absl_logger()
    if any(isinstance(f, FailedSaveLogFilter) for f in absl_logger.filters):
        return
    absl_logger.addFilter(FailedSaveLogFilter())
    drop_loop_closed_tracebacks()


def drop_loop_closed_tracebacks() -> None:
    """Wraps the three hooks as they are now so that they drop `Event loop is closed`
    and pass everything else on (see `mute_failed_save_noise`)."""
    previous, previous_unraisable = sys.excepthook, sys.unraisablehook
    previous_thread = threading.excepthook

    def hook(kind, value, tb):
        if not _loop_closed(value):
            previous(kind, value, tb)

    def unraisable(info):
        if not _loop_closed(info.exc_value):
            previous_unraisable(info)

    def thread_hook(args):
        if not _loop_closed(args.exc_value):
            previous_thread(args)

    sys.excepthook, sys.unraisablehook, threading.excepthook = hook, unraisable, thread_hook


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
