"""Test configuration: 8 virtual CPU devices for the sharding tests.

The flag must be set before JAX initialises its backends; tests that need a
single device simply use the default device.

``fast_compiles``: a module's tests compile without XLA's optimisation passes
(``pytestmark = pytest.mark.usefixtures("fast_compiles")``); tiny models
compile much faster.
"""

import os

import pytest

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()


@pytest.fixture(scope="module")
def fast_compiles():
    """``jax_disable_most_optimizations`` for the tests of one module."""
    import jax

    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """Each module's compiled programs are dropped after it (the suite's peak memory
    grew with every cached executable: 6.4 GB for the whole run without this)."""
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
