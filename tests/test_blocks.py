"""Block operators: one DMD per group of leaves is the same as one transformation per group."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import koopax
from koopax._src.blocks import make_blocks
from helpers import value_step

from helpers import assert_trees_close

# Two independent quadratics with different curvatures: each leaf has its own slow mode.
CURVATURE = {"a": jnp.linspace(0.05, 0.6, 12).reshape(3, 4), "b": jnp.linspace(0.3, 0.9, 5)}


def loss(p):
    return sum(0.5 * jnp.sum(CURVATURE[k] * p[k] ** 2) for k in p)


def run(tx, steps=60):
    params = {"a": jnp.ones((3, 4)), "b": -jnp.ones(5)}
    tx = optax.chain(optax.sgd(0.5), tx)
    state, step = tx.init(params), value_step(tx, loss)
    for _ in range(steps):
        params, state = step(params, state)
    return params, state


def per_leaf(make):
    """The same transformation applied to each leaf on its own."""
    return optax.multi_transform({"a": make(), "b": make()}, {"a": "a", "b": "b"})


@pytest.mark.parametrize("make", [
    lambda **k: koopax.kga(1.0, num_snapshots=5, snapshot_every=3, rollback=False, **k),
    lambda **k: koopax.kga(1.0, num_snapshots=5, snapshot_every=3, apply_every=1,
                           rollback=False, **k),
    lambda **k: koopax.pdt(3, num_snapshots=5, snapshot_every=3, start=4, criteria="none",
                           rollback=False, **k),
], ids=["kga-increment", "kga-each", "pdt"])
def test_one_dmd_per_leaf_is_one_transformation_per_leaf(make):
    blocked, state = run(make(blocks="leaf"))
    separate, _ = run(per_leaf(make))
    whole, _ = run(make())
    assert_trees_close(blocked, separate, rtol=1e-5, atol=1e-7)
    # ... and not the whole-tree operator's result.
    assert max(float(jnp.max(jnp.abs(x - y))) for x, y in
               zip(jax.tree.leaves(blocked), jax.tree.leaves(whole))) > 1e-4
    ranks = koopax.diagnostics(state)["rank"]
    assert ranks.shape == (2,) and int(ranks.min()) >= 1


def test_layer_and_callable_policies():
    params = {"dense": {"kernel": jnp.zeros((3, 2)), "bias": jnp.zeros(2)},
              "norm": {"scale": jnp.zeros(2)}, "head": jnp.zeros(4)}
    layers = make_blocks(params, "layer")
    assert layers.count == 3 and layers.sizes == (8, 4, 2)
    by_top = make_blocks(params, lambda path, leaf: path[0].key)
    assert by_top.ids == layers.ids
    one = make_blocks(params, lambda path, leaf: 0)
    assert one.count == 1 and one.sizes == (14,)


@pytest.mark.parametrize("blocks", ["leaves", 3, ("a",)])
def test_bad_block_policies_name_blocks(blocks):
    with pytest.raises(ValueError, match="blocks"):
        koopax.kga(blocks=blocks)
    with pytest.raises(ValueError, match="blocks"):
        koopax.pdt(snapshot_every=2, blocks=blocks)


def test_an_unhashable_block_key_names_the_leaf():
    with pytest.raises(ValueError, match=r"blocks.*\['w'\]"):
        make_blocks({"w": jnp.zeros(2)}, lambda path, leaf: [1])


def test_efficient_kga_has_one_global_basis():
    """Efficient-KGA's basis is global: it takes no block policy."""
    with pytest.raises(TypeError, match="blocks"):
        koopax.efficient_kga(blocks="leaf")
    np.testing.assert_equal(koopax.efficient_kga().init(
        {"w": jnp.zeros(3)}).operator.rank.shape, (1,))
