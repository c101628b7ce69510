"""Tests of koopax.dmd_prediction (Dogra & Redman / Tano et al. baselines)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from koopax._src import baselines, prediction, snapshots
from koopax._src.pdt.factory import PREDICTION_RCOND


def _problem():
    rng = np.random.RandomState(0)
    x = jnp.asarray(rng.randn(32, 4), jnp.float32)
    y = jnp.asarray(np.sin(np.asarray(x) @ rng.randn(4, 1)), jnp.float32)
    params = {"w1": jnp.asarray(rng.randn(4, 8) * 0.5, jnp.float32),
              "w2": jnp.asarray(rng.randn(8, 1) * 0.5, jnp.float32)}

    def loss(p):
        return jnp.mean((jnp.tanh(x @ p["w1"]) @ p["w2"] - y) ** 2)

    return params, loss


def _step(tx, loss):
    @jax.jit
    def step(params, state, bump):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = tx.update(grads, state, params, value=value + bump)
        return optax.apply_updates(params, updates), state

    return step


def test_dogra_jumps_every_layer_with_its_own_dmd():
    params, loss = _problem()
    tx = optax.chain(optax.sgd(0.1), baselines.dmd_prediction(
        3, num_snapshots=4, snapshot_every=2, interval=2, rank=2))
    step = _step(tx, loss)
    state = tx.init(params)
    for _ in range(7):                          # first jump completes at step 7
        params, state = step(params, state, jnp.float32(0.0))
    window = state[1].window
    assert state[1].stats.rank.shape == (2,)    # one DMD per leaf
    expected = []
    for leaf, (last, slots) in enumerate(zip(jax.tree.leaves(window.last),
                                             jax.tree.leaves(window.slots))):
        alone = window._replace(last=last, slots=slots,
                                leaf_grams=window.leaf_grams[leaf:leaf + 1])
        disp, info = prediction.predicted_displacement(alone, 3, rank=2, rcond=PREDICTION_RCOND,
                                                     taper=True)
        assert bool(info.finite[0])
        expected.append(last + disp)
    params, state = step(params, state, jnp.float32(0.0))
    assert int(state[1].stats.num_jumps) == 1 and float(state[1].stats.accepted_ratio) == 1.0
    for got, want in zip(jax.tree.leaves(params), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for _ in range(16):
        params, state = step(params, state, jnp.float32(1.0))   # no fallback in 'dogra'
    assert int(state[1].stats.num_jumps) == 5 and not bool(state[1].stopped)
    assert step._cache_size() == 1


def test_tano_falls_back_for_good_once_the_loss_rises():
    params, loss = _problem()
    base = optax.sgd(0.1)
    tx = optax.chain(base, baselines.dmd_prediction(
        3, num_snapshots=4, snapshot_every=2, interval=1, mode="tano", rank=2))
    step = _step(tx, loss)
    state = tx.init(params)
    for _ in range(8):                          # first jump at step 7
        params, state = step(params, state, jnp.float32(0.0))
    assert int(state[1].stats.num_jumps) == 1
    for _ in range(2):                          # the epoch after the jump "rises"
        params, state = step(params, state, jnp.float32(1.0))
    assert bool(state[1].stopped)
    # From now on it is the base optimizer alone.
    ref_params, ref_state = params, base.init(params)
    ref_state = state[0]
    for _ in range(10):
        params, state = step(params, state, jnp.float32(0.0))
        grads = jax.grad(loss)(ref_params)
        u, ref_state = base.update(grads, ref_state, ref_params)
        ref_params = optax.apply_updates(ref_params, u)
    assert int(state[1].stats.num_jumps) == 1
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kwargs, name", [
    (dict(mode="other"), "mode"),
    (dict(per_leaf=1), "per_leaf"),
    (dict(horizon=0), "horizon"),
    (dict(num_snapshots=2), "num_snapshots"),
    (dict(snapshot_every=0), "snapshot_every"),
    (dict(interval=0), "interval"),
    (dict(tolerance=-1.0), "tolerance"),
    (dict(rank=0), "rank"),
])
def test_bad_arguments_raise(kwargs, name):
    kwargs = dict(dict(snapshot_every=2), **kwargs)
    with pytest.raises(ValueError, match=name):
        baselines.dmd_prediction(**kwargs)


def test_window_helper_is_shared():
    tree = {"a": jnp.ones(3)}
    assert snapshots.init_ring(tree, 2).gram.shape == (2, 2)
