"""Test-session settings: one JAX persistent compilation cache for the run.

Most of the suite's time is XLA compiling the same small steps again: in
each test that builds a fresh step for the same tiny config, in each
``gcnjax`` subprocess, in each pytest-xdist worker. A compilation cache in a
temporary directory, made fresh for every pytest run (never a previous
run's) and shared through the environment with the workers and every
subprocess, compiles each of them once. A cached executable is the one XLA
compiled for the same HLO and flags, so no result depends on the cache.

``GCNJAX_TEST_COMPILE_CACHE=0`` turns it off (to time the suite without it).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_OWNER = "GCNJAX_TEST_COMPILE_CACHE_OWNER"


def _enabled() -> bool:
    return os.environ.get("GCNJAX_TEST_COMPILE_CACHE", "1") != "0"


# The tests run tiny programs many times over: XLA:CPU's compile, not the run,
# is their cost. Two flags halve it and leave the arithmetic as it is (no
# fast-math either way): LLVM's optimisation passes off, and XLA:CPU's older
# loop emitter for fused element-wise ops instead of the fusion emitters
# (their MLIR pipeline is most of what compiling a small step still costs;
# the multi-grid command test's step compiles in half the time without it).
# The programs they make run slower: at the tests' sizes, by far less than
# the compile saves (experiments/RESULTS.md, "The test suite's time").
# GCNJAX_TEST_XLA_OPT=1 keeps XLA's defaults. As gcnjax's own defaults, they
# are added only for the jaxlib they were measured on, and a flag the user
# set keeps the user's value (gcnjax.xla_flags.add_flags).
_FAST_COMPILE = {"xla_backend_optimization_level": "0", "xla_cpu_use_fusion_emitters": "false"}
# The few tests whose cost is running one compiled program long (statistical
# chains of many thousand chains and hundreds of steps), not compiling it,
# compile that program with LLVM's optimisation back on, through the
# ``run_optimised_jit`` fixture: per program, not per process. No fast-math
# either way: the numbers agree to float rounding (the decoupled-MALA test's
# 20 000 samples had the same variance to the last digit at both levels).
_RUN_OPTIMISED = {"xla_backend_optimization_level": 3}


def pytest_configure(config):
    if os.environ.get("GCNJAX_TEST_XLA_OPT", "0") != "1":
        from gcnjax.xla_flags import add_flags

        add_flags(_FAST_COMPILE)
    # The controller (or a plain run) makes the directory; xdist workers and
    # subprocesses inherit it through the environment.
    if _enabled() and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="gcnjax-test-xla-cache-")
        os.environ[_OWNER] = str(os.getpid())
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        # Every executable, however quick to compile or small.
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
        import jax

        jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
        jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                          int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))


def pytest_unconfigure(config):
    if os.environ.get(_OWNER) == str(os.getpid()):
        shutil.rmtree(os.environ.pop("JAX_COMPILATION_CACHE_DIR"), ignore_errors=True)
        del os.environ[_OWNER]


@pytest.fixture(scope="session")
def run_optimised_jit():
    """``jit(fn, **jit_kwargs)``: ``jax.jit`` with XLA's optimisation level
    back at its default for this one program, for a test that runs a small
    program for a long time (where the session's fast-compile flags would
    cost more in the run than they save in the compile)."""
    import jax

    def jit(fn, **jit_kwargs):
        return jax.jit(fn, compiler_options=_RUN_OPTIMISED, **jit_kwargs)

    return jit


@pytest.fixture
def image_folder(tmp_path):
    """``make(n, size, channels=3, name="images")``: a folder of ``n`` random
    ``size``×``size`` PNGs (uint8 noise, seed 0) under ``tmp_path``, as a user's data folder."""
    import numpy as np
    from PIL import Image

    def make(n: int, size: int, channels: int = 3, name: str = "images"):
        folder = tmp_path / name
        folder.mkdir()
        rng = np.random.default_rng(0)
        shape = (size, size) if channels == 1 else (size, size, channels)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{i}.png")
        return folder

    return make
