"""Test configuration: 8 virtual CPU devices for the sharding tests.

The flag must be set before JAX initialises its backends; tests that need a
single device simply use the default device.

Every test compiles without XLA's optimisation passes
(``jax_disable_most_optimizations``): the suite's tiny programs spend most of
their time compiling, and the passes buy nothing at their sizes (the suite ran
about a fifth faster without them); ``optimised_compiles`` turns them back on
for a test.
"""

import os

import pytest

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()


@pytest.fixture(scope="session", autouse=True)
def _unoptimised_compiles():
    import jax

    jax.config.update("jax_disable_most_optimizations", True)


@pytest.fixture
def optimised_compiles():
    """XLA's optimisation passes back on for one test: a comparison with a reference
    whose tolerance was set on the programs users run (optimised)."""
    import jax

    jax.config.update("jax_disable_most_optimizations", False)
    yield
    jax.config.update("jax_disable_most_optimizations", True)


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """Each module's compiled programs are dropped after it (the suite's peak memory
    grew with every cached executable: 6.4 GB for the whole run without this)."""
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
