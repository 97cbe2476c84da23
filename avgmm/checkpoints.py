"""Checkpoints of a run: orbax saves of the train state with a checksum and bookkeeping,
the best/latest pair that survives a crash at any moment, and the wrapper a run saves
through (multi-process, in the background). Loading a run's checkpoint for analysis:
`avgmm.build.load_checkpoint`.

Layout under the workdir's `checkpoints/`: `latest/<epoch>` (the last `keep` epochs, for
resuming), `best/<epoch>` (the best-validation state), `damaged/` (checkpoints that failed
their checksum, set aside for inspection).
"""

import copy
import os
import shutil
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import jax
import orbax.checkpoint as ocp
from absl import logging

from avgmm import orbax_noise
from avgmm.errors import CheckpointError, DiskFullError
from avgmm.files import disk_full_guard, to_python, tree_digest, tree_nbytes
from avgmm.in_order import InOrder
from avgmm.processes import on_primary, share_arrays, share_json
from avgmm.workdir import Workdir


def _this_process_only(name: str, root: str) -> Dict[str, Any]:
    """Checkpoint manager options for a checkpointer that this process runs alone.

    In a multi-process run (`SharedCheckpoints`) orbax would otherwise wait
    at barriers for every process; it cannot create the folder itself then."""
    if jax.process_count() == 1:
        return {"create": True}
    os.makedirs(os.path.join(root, name), exist_ok=True)
    return {"create": False, "multiprocessing_options": ocp.options.MultiprocessingOptions(
        primary_host=jax.process_index(), active_processes={jax.process_index()},
        barrier_sync_key_prefix=f"avgmm_{name}")}


class Checkpointer:
    """Orbax checkpoints of the (unreplicated) train state plus a JSON `meta` dict.

    `latest/` keeps the last few epochs for resuming; `best/` the best-validation state.
    Every checkpoint's meta holds `state_sha256` (checked on every restore) and
    `best_step`, the step of the best checkpoint in force when it was written. The best
    one is written and committed before the latest one that names it, and an older best
    is deleted only once a committed latest checkpoint names a newer one: whatever moment
    a run is killed at, the newest latest checkpoint names a best that exists.
    `resume` skips damaged checkpoints and repairs a missing best.
    """

    def __init__(self, workdir: str, keep: int = 2,
                 say: Optional[Callable[[str], None]] = None):
        self.root = Workdir(workdir).file(Workdir.CHECKPOINTS)
        self._say = say or logging.warning
        self.latest = ocp.CheckpointManager(
            os.path.join(self.root, "latest"),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep,
                                                 **_this_process_only("latest", self.root)))
        # No max_to_keep: the previous best must outlive the save of a new one (see above).
        self.best = ocp.CheckpointManager(
            os.path.join(self.root, "best"),
            options=ocp.CheckpointManagerOptions(**_this_process_only("best", self.root)))
        self.best_step: Optional[int] = None
        # (path, bytes, step) of the latest save in flight.
        self._pending: Optional[Tuple[str, int, int]] = None
        # The newest latest checkpoint known to be complete: a save in flight (or failed
        # in the background) is already listed by orbax but is not one to go back to.
        self._committed: Optional[int] = self.latest.latest_step()
        orbax_noise.mute_failed_save_noise()
        self._failed_loads = 0  # reads that raised (see orbax_noise.quiet_asyncio)

    def path(self, which: str, step: int) -> str:
        return os.path.join(self.root, which, str(step))

    @staticmethod
    def _args(state, meta):
        return ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  meta=ocp.args.JsonSave(to_python(meta)))

    def last_good(self) -> str:
        """Where a run can go back to, for messages: the newest committed checkpoint (a
        save still in flight is waited for first; one that failed is not named)."""
        if self._pending:
            try:
                self.wait()
            except DiskFullError:
                pass  # the message at hand is another one; this save is not named
        return self._describe(self._committed if self._pending else self.latest.latest_step())

    def _describe(self, step: Optional[int]) -> str:
        if step is None:
            return "no checkpoint was saved yet"
        return f"the last good checkpoint is {self.path('latest', step)}"

    def save(self, epoch: int, state: Any, meta: Mapping[str, Any], best: bool) -> None:
        """Saves `state` after epoch `epoch` (a step number) in `latest/` and, if `best`,
        first in `best/`; the latest save is committed in orbax's background (`wait`).
        A full disk raises `DiskFullError`; earlier checkpoints stay."""
        self.wait()  # the previous latest save is committed: it names self.best_step
        for step in self.best.all_steps():
            if step != self.best_step:
                self.best.delete(step)
        nbytes = tree_nbytes(state)
        meta = dict(meta, state_sha256=tree_digest(state),
                    best_step=epoch if best else self.best_step)
        kept = self.last_good()
        if best:
            with disk_full_guard(self.path("best", epoch), nbytes, kept):
                self.best.save(epoch, args=self._args(state, meta))
                self.best.wait_until_finished()
            self.best_step = epoch
        with disk_full_guard(self.path("latest", epoch), nbytes, kept):
            self.latest.save(epoch, args=self._args(state, meta))
        self._pending = (self.path("latest", epoch), nbytes, epoch)

    def _load(self, manager: ocp.CheckpointManager, step: int, template: Any):
        """`(state, meta)` of one step; raises if it cannot be read or fails its checksum."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        try:
            restored = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except Exception:
            self._failed_loads += 1
            raise
        state, meta = restored["state"], dict(restored["meta"])
        expected = meta.get("state_sha256")  # absent in checkpoints of older versions
        if expected is not None and tree_digest(state) != expected:
            raise CheckpointError("its arrays do not match the checksum saved with them")
        return state, meta

    def restore(self, template: Any, which: Any = "latest") -> Optional[Tuple[Any, Dict]]:
        """`(state, meta)` of the newest checkpoint (`latest`), the best-validation one
        (`best`) or the one saved after epoch `which` (an int); None if there is none.
        A damaged checkpoint raises `CheckpointError`."""
        manager = self.best if which == "best" else self.latest
        if which == "best":
            step = self.best_step if self.best_step is not None else manager.latest_step()
        elif which == "latest":
            step = manager.latest_step()
        else:
            step = int(which)
            if step not in manager.all_steps():
                raise ValueError(f"no checkpoint after epoch {step}; saved: "
                                 f"{sorted(manager.all_steps())} (older ones are not kept)")
        if step is None:
            return None
        try:
            return self._load(manager, step, template)
        except Exception as e:  # any failure to read it back is damage to report
            path = self.path("best" if manager is self.best else "latest", step)
            raise CheckpointError(f"checkpoint {path} is damaged ({_reason(e)}); delete it, "
                                  "or resume the run to fall back to an intact one") from e

    def _set_aside(self, which: str, step: int) -> str:
        """Moves a damaged checkpoint to `checkpoints/damaged/` (kept for inspection) so
        that its step can be saved again."""
        src = self.path(which, step)
        dst = os.path.join(self.root, "damaged", f"{which}-{step}")
        n = 1
        while os.path.exists(dst):
            n += 1
            dst = os.path.join(self.root, "damaged", f"{which}-{step}.{n}")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.move(src, dst)
        (self.best if which == "best" else self.latest).reload()
        return dst

    def resume(self, template: Any) -> Optional[Tuple[Any, Dict]]:
        """`(state, meta)` of the newest intact latest checkpoint, None if there is none.

        Damaged newer ones are set aside with one line each. The best checkpoint that meta
        names is checked too: if it is missing or damaged, it is saved again from the
        latest checkpoint of the same step or, failing that, the newest intact older best
        takes its place and meta's `best_*` entries are taken from it. Raises
        `CheckpointError` when no intact checkpoint is left to resume from.
        """
        with orbax_noise.quiet_asyncio(lambda: self._failed_loads):
            return self._resume(template)

    def _resume(self, template: Any) -> Optional[Tuple[Any, Dict]]:
        steps = sorted(self.latest.all_steps(), reverse=True)
        found, failures = None, []
        for step in steps:
            try:
                found = (step,) + self._load(self.latest, step, template)
                break
            except Exception as e:  # noqa: BLE001 (a damaged file raises anything)
                failures.append((step, e))
        if steps and found is None:
            why = "; ".join(f"{self.path('latest', s)}: {_reason(e)}" for s, e in failures)
            raise CheckpointError(f"no intact checkpoint to resume from ({why}); delete "
                                  f"{self.root} or pass --fresh to start over")
        for step, e in failures:
            dst = self._set_aside("latest", step)
            self._say(f"skipped damaged checkpoint {self.path('latest', step)} "
                      f"({_reason(e)}); moved to {dst}, resuming from the one before")
        if found is None:
            for step in self.best.all_steps():  # a best saved before its latest: redone
                self.best.delete(step)
            return None
        step, state, meta = found
        self._committed = step
        if "best_step" in meta:
            meta = self._check_best(step, state, meta, template)
        else:  # written by a version that did not record it
            self.best_step = self.best.latest_step()
        return state, meta

    def _check_best(self, step: int, state: Any, meta: Dict, template: Any) -> Dict:
        named = meta["best_step"]
        problem = "it is missing"
        if named in self.best.all_steps():
            try:
                self._load(self.best, named, template)
                problem = None
            except Exception as e:  # noqa: BLE001
                problem = f"it is damaged ({_reason(e)})"
                self._set_aside("best", named)
        if problem is not None:
            source = None
            if named == step:
                source = (state, meta)
            elif named in self.latest.all_steps():
                try:
                    source = self._load(self.latest, named, template)
                except Exception:  # noqa: BLE001
                    source = None
            if source is not None:
                self.best.save(named, args=self._args(*source))
                self.best.wait_until_finished()
                self._say(f"best checkpoint {self.path('best', named)} was not usable "
                          f"({problem}); saved it again from {self.path('latest', named)}")
            else:
                meta = self._fall_back_best(step, named, problem, meta, template)
                named = meta["best_step"]
        self.best_step = named
        for s in self.best.all_steps():  # newer bests belong to epochs about to be redone
            if s != named:
                self.best.delete(s)
        return meta

    def _fall_back_best(self, step: int, named: int, problem: str, meta: Dict,
                        template: Any) -> Dict:
        for s in sorted((s for s in self.best.all_steps() if s <= step), reverse=True):
            try:
                _, best_meta = self._load(self.best, s, template)
            except Exception:  # noqa: BLE001
                continue
            meta = dict(meta, **{k: v for k, v in best_meta.items() if k.startswith("best_")})
            meta["best_step"] = s
            self._say(f"best checkpoint {self.path('best', named)} is not usable ({problem}) "
                      f"and no latest checkpoint of that step is left; the best is now "
                      f"{self.path('best', s)}")
            return meta
        raise CheckpointError(
            f"best checkpoint {self.path('best', named)} is not usable ({problem}) and no "
            f"other copy is intact; delete {self.root} or pass --fresh to start over")

    def wait(self) -> None:
        """Blocks until pending saves are committed; a full disk raises `DiskFullError`."""
        path, nbytes, step = self._pending or (self.root, 0, self._committed)
        with disk_full_guard(path, nbytes, self._describe(self._committed)):
            self.latest.wait_until_finished()
            self.best.wait_until_finished()
        self._pending, self._committed = None, step

    def close(self, quiet: bool = False) -> None:
        """Finishes pending saves and releases orbax's threads; a full disk met by a save
        still in flight raises `DiskFullError` (never orbax's own traceback). `quiet`: the
        run is already failing with its own one-line error, which an earlier save's
        failure, raised again by orbax here, must not replace."""
        path, nbytes, _ = self._pending or (self.root, 0, None)
        try:
            with disk_full_guard(path, nbytes, self._describe(self._committed)):
                try:
                    self.latest.close()
                finally:
                    self.best.close()  # raises a failed best save again
        except Exception:  # noqa: BLE001
            if not quiet:
                raise


def _reason(e: BaseException) -> str:
    """First line of an exception, for one-line messages."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


class SharedCheckpoints:
    """`Checkpointer` run by process 0 alone (every process holds the same
    replicated state, so its host copy is the whole state); what it restores is sent to
    every process. Its errors (full disk, damaged checkpoints) stop every process.

    With `background`, each save runs in a background thread (`avgmm.in_order`), in
    order, while the run goes on: `save` returns at once (it waits only when a save is
    already queued behind a running one), a failed save is raised by the next `save` or
    `wait`, and `wait` returns once every save is committed. The best/latest guarantees
    are `Checkpointer.save`'s, each save being one call of it."""

    def __init__(self, workdir: str, keep: int, background: bool = False):
        self._ckpt: Optional[Checkpointer] = on_primary(
            lambda: Checkpointer(workdir, keep=keep))
        self._saves = (InOrder("checkpoint") if background and self._ckpt is not None
                       else None)
        self._last_good = self._ckpt.last_good() if self._ckpt is not None else ""

    @property
    def background_seconds(self) -> float:
        """Seconds spent saving in the background thread."""
        return self._saves.busy_seconds if self._saves is not None else 0.0

    def last_good(self) -> str:
        if self._ckpt is None:
            return "process 0 names the last good checkpoint"
        # A save in flight is waited for (a divergence in the epoch after it must name
        # it); one that failed is not named, and is raised by the next save or wait.
        if self._saves is not None:
            try:
                self._saves.wait()
            except Exception:  # noqa: BLE001
                pass
        # Kept up to date by the saves: asking orbax while one runs would race with it.
        return self._last_good

    def save(self, epoch: int, state: Any, meta: Dict[str, Any], best: bool,
             before: Optional[Callable[[], None]] = None) -> None:
        """Saves `state` (a host copy nothing changes afterwards) after epoch `epoch`;
        `before()` runs first, in the same order (e.g. writing the epoch's metrics record,
        which then exists for every saved epoch)."""
        meta = copy.deepcopy(meta)  # the run goes on updating its own

        def save():
            if before is not None:
                before()
            self._ckpt.save(epoch, state, meta, best=best)
            self._ckpt.wait()  # committed here, so that a failure is this save's
            self._last_good = self._ckpt.last_good()

        on_primary(lambda: self._saves.submit(save) if self._saves is not None else save())

    def wait(self, everywhere: bool = True) -> None:
        """Blocks until process 0's saves are committed; `everywhere=False` (on the way
        out of an interrupted run, when the others may be gone) skips the exchange."""
        def wait():
            if self._saves is not None:
                self._saves.wait()
            self._ckpt.wait()

        if not everywhere:
            if self._ckpt is not None:
                wait()
            return
        on_primary(wait)

    def close(self, quiet: bool = False) -> None:
        """Lets queued saves finish, then closes (a failed save was, or will not be,
        reported: the run is ending). `quiet`: see `Checkpointer.close`."""
        if self._saves is not None:
            self._saves.close()
        if self._ckpt is not None:
            self._ckpt.close(quiet)

    def _shared(self, load: Callable[[], Any], template: Any):
        def loaded():
            if self._saves is not None:
                self._saves.wait()
            found = load()
            self._last_good = self._ckpt.last_good()
            return found

        found = on_primary(loaded)
        meta = share_json(None if found is None else found[1])
        if meta is None:
            return None
        return share_arrays(found[0] if found is not None else template), meta

    def resume(self, template: Any):
        """`Checkpointer.resume` on process 0, its result on every process."""
        return self._shared(lambda: self._ckpt.resume(template), template)

    def restore(self, template: Any, which: Any = "latest"):
        """`Checkpointer.restore` on process 0, its result on every process."""
        return self._shared(lambda: self._ckpt.restore(template, which), template)
