"""Bad arguments raise ValueError/TypeError naming the argument, at the earliest point."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import koopax
import no_rollback
from koopax._src import masks, validation


@pytest.mark.parametrize("kwargs, name", [
    (dict(alpha="1.0"), "alpha"), (dict(alpha=None), "alpha"),
    (dict(alpha=jnp.asarray(-1.0)), "alpha"), (dict(alpha=np.float32(np.inf)), "alpha"),
    (dict(alpha=jnp.ones(2)), "alpha"),
    (dict(epsilon="0.01"), "epsilon"), (dict(epsilon=None), "epsilon"),
    (dict(epsilon=1.5), "epsilon"),
    (dict(apply_every="yes"), "apply_every"), (dict(apply_every=0), "apply_every"),
    (dict(apply_every=True), "apply_every"), (dict(apply_every=2.0), "apply_every"),
    (dict(max_gain="10"), "max_gain"), (dict(max_gain=None), "max_gain"),
    (dict(max_gain=1.0), "max_gain"),
    (dict(rcond="0.1"), "rcond"), (dict(rcond=1.0), "rcond"),
])
def test_kga_rejects(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        no_rollback.kga(**{"snapshot_every": 2, **kwargs})


def test_kga_accepts_scalar_arrays_and_traced_hyperparameters():
    no_rollback.kga(jnp.asarray(2.0), epsilon=np.float32(0.01), max_gain=jnp.asarray(5.0),
               snapshot_every=2)
    params = {"w": jnp.ones(3)}
    partial = optax.inject_hyperparams(no_rollback.kga, static_args=("num_snapshots",
                                                                "snapshot_every"))
    with pytest.raises(TypeError, match="apply_every.*static_args"):
        tx = partial(alpha=1.0, num_snapshots=4, snapshot_every=1, apply_every=2)
        jax.jit(tx.update)(params, tx.init(params), params)
    tx = partial(alpha=1.0, num_snapshots=4, snapshot_every=1)   # apply_every=None: fine
    assert jax.jit(tx.update)(params, tx.init(params), params)[0]["w"].shape == (3,)
    tx = optax.inject_hyperparams(no_rollback.kga, static_args=(
        "num_snapshots", "snapshot_every", "apply_every", "rcond"))(
        alpha=1.0, num_snapshots=4, snapshot_every=1)
    state = tx.init(params)
    updates, _ = jax.jit(tx.update)(params, state, params)
    assert updates["w"].shape == (3,)
    # PDT: the tolerances may be traced, the structural arguments are named.
    tx = optax.inject_hyperparams(koopax.pdt, static_args=(
        "horizon", "num_snapshots", "snapshot_every", "start", "interval", "min_interval",
        "max_interval", "rcond"))(snapshot_every=2, tolerance=0.01, noise_tolerance=2.0)
    state = tx.init(params)
    updates, _ = jax.jit(lambda u, s, p: tx.update(u, s, p, value=jnp.float32(1.0)))(
        params, state, params)
    assert updates["w"].shape == (3,)


@pytest.mark.parametrize("make, name", [
    (lambda: masks.kwm(0.1, drift="yes"), "drift"),
    (lambda: masks.kwm(0.1, drift=1), "drift"),
    (lambda: masks.kwm(0.1, drift=None), "drift"),
    (lambda: masks.kwm(0.1, window=None), "window"),
    (lambda: masks.kwm(0.1, rcond="0.1"), "rcond"),
    (lambda: masks.kwm(0.1, neutral_epsilon="x"), "neutral_epsilon"),
    (lambda: masks.delta(0.1, window=None), "window"),
])
def test_masks_reject(make, name):
    with pytest.raises((ValueError, TypeError), match=name):
        make()


def _transformations():
    return {
        "kga": no_rollback.kga(1.0, num_snapshots=4, snapshot_every=1),
        "kga_efficient": no_rollback.efficient_kga(1.0, num_snapshots=4, snapshot_every=1),
        "kga_masked": no_rollback.masked_kga(masks.norm(0.5, capacity=0.5), 1.0, num_snapshots=4,
                                        snapshot_every=1),
        "pdt": koopax.pdt(snapshot_every=2),
        "dogra": koopax.dmd_prediction(snapshot_every=2),
    }


@pytest.mark.parametrize("name", sorted(_transformations()))
def test_update_rejects_mismatched_trees_and_stale_states(name):
    tx = _transformations()[name]
    params = {"a": jnp.ones((3,)), "b": jnp.ones((2, 2))}
    state = tx.init(params)
    with pytest.raises(ValueError, match="updates"):
        tx.update({"a": jnp.ones((3,))}, state, params)
    with pytest.raises(ValueError, match="updates"):
        tx.update({"a": jnp.ones((4,)), "b": jnp.ones((2, 2))}, state, params)
    other = {"a": jnp.ones((5,)), "b": jnp.ones((2, 2))}
    with pytest.raises(ValueError, match="state"):
        tx.update(other, state, other)


def test_exact_dmd_rejects_a_python_list_of_snapshots():
    w = [jnp.ones(4) * 0.9 ** i for i in range(5)]
    with pytest.raises(TypeError, match="snapshots"):
        koopax.exact_dmd(w)
    assert int(koopax.exact_dmd(jnp.stack(w), rank=1).rank) == 1


def test_number_check_messages():
    with pytest.raises(TypeError, match="alpha"):
        validation.number("1", "alpha", low=0.0)
    with pytest.raises(ValueError, match="max_gain must be a finite number > 1.0"):
        validation.number(1.0, "max_gain", low=1.0, low_open=True)
    validation.number(jnp.asarray(0.5), "alpha", low=0.0)


def test_diagnostics_of_several_instances_are_all_readable():
    tx = optax.chain(optax.sgd(0.1), no_rollback.kga(1.0, num_snapshots=4, snapshot_every=2),
                     koopax.pdt(snapshot_every=2))
    state = tx.init({"w": jnp.ones(3)})
    found = optax.tree_utils.tree_get_all_with_path(state, "num_nonfinite")
    assert sorted(p[-1].tuple_name for p, _ in found) == ["KGAState", "PDTStats"]
    # koopax.find_states finds them by type, koopax.diagnostics refuses to guess.
    states = koopax.find_states(state)
    assert [type(s).__name__ for _, s in states] == ["KGAState", "PDTState"]
    assert [int(koopax.state_diagnostics(s)["num_nonfinite"]) for _, s in states] == [0, 0]
    with pytest.raises(ValueError, match="2 koopax states"):
        koopax.diagnostics(state)
