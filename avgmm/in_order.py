"""Work that must not hold up the run but must happen in order: one background thread.

The trainer hands each epoch's checkpoint save to an `InOrder` worker, so that the save
overlaps the next epoch instead of blocking it. Jobs run one after another in the order
they were submitted; the first one that fails stops the worker (the jobs behind it are
dropped: a later save must not land after a failed earlier one) and its exception is
raised by the next `submit` or `wait`.
"""

import collections
import concurrent.futures
import threading
import time
from typing import Callable, Deque, Optional


class InOrder:
    """Runs submitted jobs in one background thread, in order; at most `waiting` jobs
    wait behind the running one (a submit beyond that blocks until the oldest is done,
    which bounds what the waiting jobs hold, e.g. host copies of the state)."""

    def __init__(self, name: str, waiting: int = 1):
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)
        self._pending: Deque[concurrent.futures.Future] = collections.deque()
        self._waiting = waiting
        self._failed = threading.Event()
        self._lock = threading.Lock()
        self.busy_seconds = 0.0  # time the thread spent on jobs

    def _run(self, job: Callable[[], None]) -> None:
        if self._failed.is_set():
            return  # an earlier job failed: nothing after it runs
        t0 = time.perf_counter()
        try:
            job()
        except BaseException:
            self._failed.set()
            raise
        finally:
            with self._lock:
                self.busy_seconds += time.perf_counter() - t0

    def _collect(self, block: bool) -> None:
        """Drops finished jobs from the front (all of them, waiting if `block`); raises
        the first failure."""
        while self._pending and (block or self._pending[0].done()):
            future = self._pending[0]
            future.result()  # raises the job's exception
            self._pending.popleft()

    def submit(self, job: Callable[[], None]) -> None:
        """Queues `job`; raises the failure of an earlier job instead, if there was one."""
        self._collect(block=False)
        while len(self._pending) > self._waiting:
            self._pending[0].result()
            self._pending.popleft()
        self._pending.append(self._pool.submit(self._run, job))

    def wait(self) -> None:
        """Blocks until every queued job is done; raises the first failure."""
        self._collect(block=True)

    def close(self) -> Optional[BaseException]:
        """Lets the queued jobs finish (or stop at a failure) and ends the thread; returns
        the failure instead of raising it (the run is ending anyway)."""
        failure = None
        try:
            self.wait()
        except Exception as e:  # noqa: BLE001  (reported by the caller if it wants)
            failure = e
        self._pending.clear()
        self._pool.shutdown(wait=True)
        return failure
