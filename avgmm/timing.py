"""Where a run's wall time goes: compilation, input, train steps, evaluation, the
method's passes over the data (gap collection and GMM fits), checkpointing, writing
metrics, progress lines.

Compilation is measured by JAX itself (its tracing, lowering and compile events, which
include loading an executable from the persistent cache); it happens inside other work
(the first step of a phase, the first evaluation) and is taken out of that work's share.
Work done in a background thread (compilations started ahead, checkpoint saves) is not
part of the split: the run's thread counts only the time it waited for it, under the kind
of work that waited (`compile` for a step still compiling). The background seconds are
reported beside the split (`compile_in_background`, `checkpoint_in_background`), and
`device_wait` says, per kind, how long the run's thread waited for results of the device
(the end of an evaluation or gap pass): the rest of that kind's time is host work.
`workdir/timing.json` holds the totals of the last process that ran in the workdir.
"""

import contextlib
import threading
import time
from typing import Dict, Iterator, List, Optional

import jax.monitoring

_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
KINDS = ("startup", "compile", "input", "train", "evaluation", "method_passes", "checkpoint",
         "metrics", "progress")


class RunTimer:
    """Seconds per kind of work since `start` (a `time.time()`, e.g. the process start)."""

    def __init__(self, start: Optional[float] = None):
        self.start = time.time() if start is None else start
        self.totals: Dict[str, float] = {k: 0.0 for k in KINDS}
        self._stack: List[str] = []
        self.first_step_at: Optional[float] = None
        self.background_compile = 0.0
        self.background: Dict[str, float] = {}
        self.device: Dict[str, float] = {}
        self.compilations = 0
        self._thread = threading.get_ident()
        self._lock = threading.Lock()
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event: str, duration: float, **_) -> None:
        if event not in _COMPILE_EVENTS:
            return
        if threading.get_ident() != self._thread:
            # Compiled in the background while the run went on: not part of the split.
            with self._lock:
                self.background_compile += duration
            return
        self.totals["compile"] += duration
        if event == _COMPILE_EVENTS[-1]:
            self.compilations += 1
        if self._stack:  # compiled while doing that: not that work's time
            self.totals[self._stack[-1]] -= duration

    @contextlib.contextmanager
    def span(self, kind: str) -> Iterator[None]:
        """Adds the block's wall time to `kind`, less what nested spans and compilation
        inside it took (each second is counted once, under the innermost kind)."""
        self._stack.append(kind)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - t0
            self.totals[kind] += elapsed
            self._stack.pop()
            if self._stack:
                self.totals[self._stack[-1]] -= elapsed

    @contextlib.contextmanager
    def device_wait(self) -> Iterator[None]:
        """Counts the block's wall time as waiting for the device inside the current kind
        of work (`device_wait[kind]`); the kind's own total keeps it."""
        kind = self._stack[-1] if self._stack else "other"
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.device[kind] = self.device.get(kind, 0.0) + time.perf_counter() - t0

    def add_background(self, kind: str, seconds: float) -> None:
        """Seconds of `kind` done in a background thread (not part of the split);
        callable from any thread."""
        with self._lock:
            self.background[kind] = self.background.get(kind, 0.0) + seconds

    def first_step_done(self) -> None:
        """Marks the end of the run's first training step (compilation included)."""
        if self.first_step_at is None:
            self.first_step_at = time.time()

    def close(self) -> Dict[str, float]:
        """Stops listening; returns the totals with `wall` and `to_first_step` seconds."""
        jax.monitoring.unregister_event_duration_listener(self._on_event)
        out = dict(self.totals, wall=time.time() - self.start, started_at=self.start,
                   compilations=self.compilations,
                   compile_in_background=self.background_compile,
                   device_wait=dict(self.device),
                   **{f"{k}_in_background": v for k, v in self.background.items()})
        out["other"] = out["wall"] - sum(self.totals.values())
        if self.first_step_at is not None:
            out["first_step_at"] = self.first_step_at
            out["to_first_step"] = self.first_step_at - self.start
        return out


def summary(t: Dict[str, float]) -> str:
    """One line: the wall time and each kind's share of it."""
    wall = max(t["wall"], 1e-9)
    parts = [f"{k} {t[k]:.1f} s ({100 * t[k] / wall:.0f}%)" for k in KINDS + ("other",)
             if t.get(k, 0) >= 0.05]
    first = (f"; first step after {t['to_first_step']:.1f} s" if "to_first_step" in t
             else "")
    return f"time: {t['wall']:.1f} s: " + ", ".join(parts) + first


class _Off:
    """A timer that records nothing (library calls outside a timed run)."""

    @contextlib.contextmanager
    def span(self, kind: str) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def device_wait(self) -> Iterator[None]:
        yield

    def add_background(self, kind: str, seconds: float) -> None:
        pass

    def first_step_done(self) -> None:
        pass


OFF = _Off()
