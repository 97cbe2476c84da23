"""What a running job tells its operator: step-level metrics every `log_every_steps`
steps (`steps.jsonl` and TensorBoard), a tqdm bar on a terminal, plain periodic lines with
ETAs when the output goes to a file, and one line before each pause that would otherwise
look like a hang (compilation, GMM fits, the final evaluation). It reports; the loop that
trains is `avgmm.train`'s."""

import sys
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

import jax
import numpy as np
from tqdm.auto import tqdm

from avgmm import timing


def say(message: str) -> None:
    """A timestamped progress line on stdout (above any progress bar); in a multi-host
    run only process 0 prints."""
    if jax.process_index() != 0:
        return
    tqdm.write(time.strftime("[%H:%M:%S] ") + message, file=sys.stdout)
    sys.stdout.flush()


def interactive() -> bool:
    """Whether progress goes to a terminal (bars) or to a file (plain lines); the other
    processes of a multi-host run show neither."""
    return sys.stderr.isatty() and jax.process_index() == 0


def duration(seconds: float) -> str:
    """`1:02:03` / `2:03` for people."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class RunClock:
    """Seconds per training step measured so far, for the run's ETA (evaluation time is
    included through the wall time of finished epochs)."""

    def __init__(self, total_steps: int, done_steps: int):
        self.total_steps = total_steps
        self.done_steps = done_steps
        self.start = time.time()
        self.start_steps = done_steps

    def eta(self, done_steps: int) -> Optional[float]:
        steps = done_steps - self.start_steps
        if steps <= 0:
            return None
        return (time.time() - self.start) / steps * (self.total_steps - done_steps)


class EpochReporter:
    """Reports the steps of one epoch as they finish: a tqdm bar on a terminal; every
    `log_every` steps the mean terms of those steps and their samples/s to
    `on_log(global_step, terms, samples_per_s)` and, without a terminal, a plain line with
    the epoch's and the run's ETA; at the end the epoch's mean of every term.

    samples/s counts from the first step's completion, so a step function's compilation
    (the first step of each phase) is not in it. `timer` (an `avgmm.timing.RunTimer`) is
    told the time spent waiting for batches and when the run's first step finished.
    """

    def __init__(self, *, steps: int, batch_size: int, desc: str, log_every: int,
                 first_step: int, on_log: Callable[[int, Dict[str, float], float], None],
                 clock: RunClock, compile_note: Optional[str] = None, timer: Any = None):
        self.steps, self.batch_size, self.desc = steps, batch_size, desc
        self.log_every, self.first_step, self.on_log = log_every, first_step, on_log
        self.clock, self.compile_note = clock, compile_note
        self.timer = timing.OFF if timer is None else timer
        self.terms: List[Any] = []
        self._bar = tqdm(total=steps, desc=desc, leave=False, dynamic_ncols=True,
                         disable=not interactive())
        self._t0: Optional[float] = None
        self._window_start, self._window_from = None, 0
        self._loop_start = time.time()

    def batches(self, batches: Iterable[Dict[str, np.ndarray]]) -> Iterator[Dict[str, np.ndarray]]:
        """`batches`, with the time spent waiting for each counted as input, and the
        compilation note said before the first step."""
        it = iter(batches)
        while True:
            with self.timer.span("input"):
                batch = next(it, None)
            if batch is None:
                return
            if not self.terms and self.compile_note:
                say(self.compile_note)
            yield batch

    def step_done(self, step_terms: Dict[str, Any]) -> None:
        """Counts a finished step (its terms may still be on the device)."""
        self.terms.append(step_terms)
        self._bar.update(1)
        done = len(self.terms)
        if done == 1:
            jax.block_until_ready(step_terms)
            self.timer.first_step_done()
            self._t0 = self._window_start = time.time()
            self._window_from = 1
            return
        if self.log_every > 0 and done % self.log_every == 0:
            recent = jax.device_get(self.terms[self._window_from:done])
            now = time.time()
            rate = (done - self._window_from) * self.batch_size / max(now - self._window_start,
                                                                      1e-9)
            mean = {k: float(np.mean([t[k] for t in recent])) for k in recent[0]}
            self.on_log(self.first_step + done, mean, rate)
            if not interactive():
                epoch_eta = (now - self._t0) / (done - 1) * (self.steps - done)
                run_eta = self.clock.eta(self.first_step + done)
                say(f"{self.desc} step {done}/{self.steps} | loss {mean['loss']:.4f} | "
                    f"{rate:.0f} samples/s | epoch ETA {duration(epoch_eta)}"
                    + (f", run ETA {duration(run_eta)}" if run_eta is not None else ""))
            self._window_start, self._window_from = now, done

    def close(self) -> Dict[str, float]:
        """Ends the bar; returns the epoch's mean of every term and `samples_per_second`."""
        self._bar.close()
        host_terms = jax.device_get(self.terms)
        end = time.time()
        n = len(host_terms)
        if not n:  # the first step failed (or was interrupted): nothing to average
            return {}
        if n > 1:
            rate = (n - 1) * self.batch_size / max(end - self._t0, 1e-9)
        else:  # one step: its time includes whatever compilation it needed
            rate = n * self.batch_size / max(end - self._loop_start, 1e-9)
        means = {k: float(np.mean([t[k] for t in host_terms])) for k in host_terms[0]}
        return dict(means, samples_per_second=rate)
