"""The persistent XLA compilation cache: a second run, or a resumed one, loads its
compiled steps from disk instead of compiling them again.

`config.compilation_cache_dir`: `auto` (the default) is `$AVGMM_COMPILATION_CACHE_DIR`
when set (`off` there turns the cache off), else `$XDG_CACHE_HOME/avgmm/xla`
(`~/.cache/avgmm/xla`); a path uses that folder; an empty string turns the cache off.
Runs may share one folder: entries are keyed by the computation, the compiler options and
the devices, they are zlib-checksummed, and JAX treats an entry it cannot read (another
process still writing it) as a miss, with a warning, and compiles.
"""

import os
import sys
import tempfile
import warnings
from typing import Optional

import jax

ENV = "AVGMM_COMPILATION_CACHE_DIR"


def resolve(setting: str) -> Optional[str]:
    """The folder a `config.compilation_cache_dir` value names, or None (off)."""
    if not setting:
        return None
    if setting != "auto":
        return os.path.abspath(os.path.expanduser(setting))
    if os.environ.get(ENV) == "off":
        return None
    if os.environ.get(ENV):
        return os.path.abspath(os.path.expanduser(os.environ[ENV]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "avgmm", "xla")


def enable(setting: str) -> Optional[str]:
    """Points JAX's persistent cache at the folder `setting` names (process-wide) and
    returns it; every compilation is cached, however quick. None: left as it was.

    A folder that cannot be written is no reason to refuse a run: one line says so and
    the run compiles without the cache (JAX would warn once per compiled program)."""
    path = resolve(setting)
    if path is None:
        return None
    problem = _unwritable(path)
    if problem:
        print(f"warning: the compilation cache {path} cannot be written ({problem}); "
              f"compiling without it (config.compilation_cache_dir, or {ENV}=off, "
              "chooses another folder or none)", file=sys.stderr, flush=True)
        return None
    _one_warning_for_failed_writes()
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def _unwritable(path: str) -> Optional[str]:
    """Why a file cannot be written into `path` (created if missing), or None."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".avgmm-probe-"):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None


_FAILED_WRITE = "Error writing persistent compilation cache entry"


def _one_warning_for_failed_writes() -> None:
    """JAX warns for every program it cannot write into the cache (a disk filling up
    mid-run): the first such warning is shown as one line, the others are dropped."""
    if getattr(warnings.showwarning, "_avgmm_cache", False):
        return
    previous, shown = warnings.showwarning, []

    def show(message, category, filename, lineno, file=None, line=None):
        if _FAILED_WRITE not in str(message):
            return previous(message, category, filename, lineno, file, line)
        if not shown:
            shown.append(True)
            print(f"warning: {' '.join(str(message).split())} (further cache write "
                  "errors are not shown; compiling goes on)", file=sys.stderr, flush=True)
        return None

    show._avgmm_cache = True
    warnings.showwarning = show
