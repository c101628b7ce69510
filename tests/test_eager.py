"""Eager calls compile nothing per call and nothing per new instance.

Every small solver (the QR eigenvalue iteration, the sign-function projector,
the power sums) is a module-level ``jit`` with a fixed iteration count, and
the gates are plain Python branches on concrete predicates: a loop that builds
transformations and calls them eagerly compiles once, not once per instance
(hundreds of compiles in one process have ended in ``LLVM ERROR: Unable to
allocate section memory``)."""

import io
import logging
import re

import jax
import jax.numpy as jnp
import optax
import pytest

import koopax

FACTORIES = {
    "kga": lambda: koopax.kga(1.0, num_snapshots=4, snapshot_every=1, rollback=False),
    "kga-blocks": lambda: koopax.kga(1.0, num_snapshots=4, snapshot_every=1, blocks="leaf",
                                     rollback=False),
    "efficient": lambda: koopax.efficient_kga(1.0, num_snapshots=4, snapshot_every=1,
                                              rollback=False),
    "masked": lambda: koopax.masked_kga(koopax.masks.norm(0.5), 1.0, num_snapshots=4,
                                        snapshot_every=1, rollback=False),
    "pdt": lambda: koopax.pdt(num_snapshots=4, snapshot_every=1, start=3, rollback=False),
    "dogra": lambda: koopax.dmd_prediction(num_snapshots=4, snapshot_every=1),
}


class _Compiles:
    def __init__(self):
        self.buffer = io.StringIO()
        self.handler = logging.StreamHandler(self.buffer)

    def __enter__(self):
        logging.getLogger("jax").addHandler(self.handler)
        self.old = jax.config.jax_log_compiles
        jax.config.update("jax_log_compiles", True)
        return self

    def __exit__(self, *exc):
        jax.config.update("jax_log_compiles", self.old)
        logging.getLogger("jax").removeHandler(self.handler)

    @property
    def count(self):
        return len(re.findall(r"Finished XLA compilation", self.buffer.getvalue()))


def _eager_run(make, params, steps=7):
    tx = make()
    state, p = tx.init(params), params
    for _ in range(steps):
        u, state = tx.update(jax.tree.map(lambda x: -0.1 * x, p), state, p)
        p = optax.apply_updates(p, u)
    return p


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_new_instances_called_eagerly_compile_nothing(name):
    params = {"w": jnp.linspace(1.0, 2.0, 12).reshape(4, 3), "b": jnp.full((3,), 0.7)}
    with _Compiles() as compiles:
        first = _eager_run(FACTORIES[name], params)
        warm = compiles.count
        for _ in range(3):
            again = _eager_run(FACTORIES[name], params)
    assert warm > 0                              # the first instance did compile
    assert compiles.count == warm                # later instances reuse every executable
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again)):
        assert bool(jnp.array_equal(a, b))       # and compute the same thing
