"""Test session setup: several forced CPU devices and fast compilation.

XLA_FLAGS must be set before jax is imported anywhere, which is why this lives here.
"""

import atexit
import os
import shutil
import tempfile

NUM_TEST_DEVICES = 4
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={NUM_TEST_DEVICES}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# A persistent compilation cache of this session alone (subprocesses included): tests
# that compile the same tiny programs share them, and no session depends on what an
# earlier one compiled. Tests of the cache pass their own folder.
_SESSION_CACHE = tempfile.mkdtemp(prefix="avgmm-test-xla-")
atexit.register(shutil.rmtree, _SESSION_CACHE, True)
os.environ["AVGMM_COMPILATION_CACHE_DIR"] = _SESSION_CACHE

import jax  # noqa: E402

# Tiny models run in milliseconds; compilation dominates. This flag roughly halves it.
jax.config.update("jax_disable_most_optimizations", True)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> str:
    """A tfds data dir holding the prepared `avsynth/tiny` (built once per session)."""
    from avgmm.data import avsynth

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    avsynth.prepare(data_dir, "tiny")
    return data_dir


@pytest.fixture
def tiny_config(tiny_data_dir):
    """The tiny config pointed at the session's avsynth/tiny."""
    from configs import tiny

    config = tiny.get_config()
    config.data.data_dir = tiny_data_dir
    return config


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drops every compiled program after each test module. Each XLA:CPU executable keeps
    memory mappings for its code and jit caches keep every executable alive, so one long
    pytest process of this suite grew past the kernel's 65,530 mappings
    (`vm.max_map_count`) and died with a segmentation fault inside XLA."""
    yield
    jax.clear_caches()
