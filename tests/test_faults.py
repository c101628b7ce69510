"""The fault matrix: every transformation with its defaults (tiny windows) against the
faults a training run meets, on an odd pytree (a nested tuple, a scalar, an empty
leaf, a (1, 1, 1, 1) leaf), over a long run.

Fault classes (each a column of one run, injected at a known step):

* a NaN and an Inf gradient under ``optax.apply_if_finite`` (the step is skipped);
* a NaN loss ``value`` with finite gradients (a rise: the safety nets react);
* a finite spike of 1e4 in one leaf's gradient (the per-leaf bounds);
* 1200 steps: everything stays finite, counters stay within the steps taken;
* an unguarded NaN gradient: koopax passes the base's non-finite update through
  unchanged and counts it;
* ``vmap`` over two seeds: each lane is that seed's run.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import koopax
from koopax import masks

STEPS = 1200
NAN_AT, INF_AT, NAN_VALUE_AT, SPIKE_AT = 300, 600, 900, 1100

CONFIGS = {
    "kga": lambda: koopax.kga(num_snapshots=5, snapshot_every=3),
    "kga-each": lambda: koopax.kga(num_snapshots=5, snapshot_every=3, apply_every=1),
    "efficient": lambda: koopax.efficient_kga(num_snapshots=5, snapshot_every=3),
    "kwm": lambda: koopax.masked_kga(masks.kwm(0.03, window=3, relative=True, capacity=0.5),
                                     num_snapshots=5, snapshot_every=3),
    "norm": lambda: koopax.masked_kga(masks.norm(0.05), num_snapshots=5, snapshot_every=3),
    "pdt": lambda: koopax.pdt(num_snapshots=5, snapshot_every=3),
    "dogra": lambda: koopax.dmd_prediction(num_snapshots=5, snapshot_every=3),
    "tano": lambda: koopax.dmd_prediction(num_snapshots=5, snapshot_every=3, mode="tano"),
}


def odd_params(seed):
    rng = np.random.default_rng(seed)
    f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
    return {"nest": ((f(3, 4), (f(),)),), "empty": jnp.zeros((0,), jnp.float32),
            "one": f(1, 1, 1, 1), "b": f(4)}


def loss(p):
    (w, (s,)), = p["nest"]
    coupling = 0.1 * jnp.tanh(jnp.sum(w) * s)
    return (0.5 * jnp.sum(jnp.linspace(0.2, 1.0, 12).reshape(3, 4) * w ** 2) + 0.3 * s ** 2
            + jnp.sum(p["one"] ** 2) + 0.5 * jnp.sum((p["b"] - 1.0) ** 2) + coupling
            + jnp.sum(p["empty"]))


def poisoned_grads(g, i):
    """NaN / Inf gradients at NAN_AT / INF_AT, a 1e4 spike in leaf 'b' at SPIKE_AT."""
    bad = jnp.where(i == NAN_AT, jnp.nan, jnp.where(i == INF_AT, jnp.inf, 1.0))
    g = jax.tree.map(lambda x: x * bad, g)
    return {**g, "b": jnp.where(i == SPIKE_AT, 1e4, 1.0) * g["b"]}


def guarded_run(make, params):
    """The whole run in one scan: apply_if_finite around SGD-momentum + koopax."""
    tx = optax.apply_if_finite(optax.chain(optax.sgd(0.05, momentum=0.9), make()), 5)

    def step(carry, i):
        p, s = carry
        value, g = jax.value_and_grad(loss)(p)
        value = jnp.where(i == NAN_VALUE_AT, jnp.nan, value)
        u, s = tx.update(poisoned_grads(g, i), s, p, value=value)
        new = optax.apply_updates(p, u)
        leaves = jax.tree.leaves(new)
        finite = jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]).all()
        return (new, s), (finite, value)

    return jax.lax.scan(step, (params, tx.init(params)), jnp.arange(STEPS))


#: Dogra et al.'s fixed-horizon prediction never looks at the loss: on this problem its
#: jumps (each bounded per leaf) compound until the loss overflows. The weights stay
#: finite (checked); the loss statistics hold the inf loss it was given. This is the
#: baseline's failure that PDT's criteria and rollback exist for.
DIVERGES = {"dogra"}

_RUNS = {}


def guarded(name):
    if name not in _RUNS:
        _RUNS[name] = jax.jit(lambda p: guarded_run(CONFIGS[name], p))(odd_params(0))
    return _RUNS[name]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_long_run_with_every_fault_stays_finite(name):
    (params, state), (finite, _) = guarded(name)
    assert bool(np.all(np.asarray(finite))), np.flatnonzero(~np.asarray(finite))[:5]
    koopax_state = koopax.find_states(state)[0][1]
    assert name in DIVERGES or all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree.leaves(koopax_state)
               if np.issubdtype(np.asarray(x).dtype, np.inexact))
    d = koopax.diagnostics(state)
    for counter in ("num_refreshes", "num_predictions", "num_jumps", "num_rollbacks"):
        if counter in d:
            assert 0 <= int(d[counter]) <= STEPS
    if name not in DIVERGES:
        assert float(loss(params)) < float(loss(odd_params(0)))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_nan_loss_is_a_rise_that_the_safety_nets_see(name):
    """A NaN loss with finite gradients: the weights stay finite (above) and the
    transformations that judge the loss react (KGA backs off, PDT rolls back or
    Tano stops where a jump was pending)."""
    (_, state), _ = guarded(name)
    d = koopax.diagnostics(state)
    if "num_backoffs" in d:
        assert int(d["num_backoffs"]) >= 1


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_an_unguarded_nan_gradient_passes_through_and_is_counted(name):
    tx = optax.chain(optax.sgd(0.05), CONFIGS[name]())
    params = odd_params(0)
    state = tx.init(params)

    @jax.jit
    def step(p, s, poison):
        value, g = jax.value_and_grad(loss)(p)
        g = jax.tree.map(lambda x: jnp.where(poison, jnp.nan, x), g)
        base = jax.tree.map(lambda x: -0.05 * x, g)
        u, s = tx.update(g, s, p, value=value)
        return optax.apply_updates(p, u), s, u, base

    for i in range(40):
        params, state, u, base = step(params, state, jnp.asarray(i == 30))
        finite = all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(base))
        if finite:
            assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(u)), i
        elif i == 30:       # the non-finite step: the base's update, unchanged
            for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(base)):
                np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    assert int(koopax.diagnostics(state)["num_nonfinite"]) >= 1


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_vmap_over_seeds_is_each_seeds_run(name, request):
    steps = 36   # 12 snapshots: corrections or jumps from the 6th on
    if name == "dogra":   # its loss rises: a run that amplifies round-off
        request.getfixturevalue("optimised_compiles")
    tx = optax.chain(optax.sgd(0.05, momentum=0.9), CONFIGS[name]())

    def run(p):
        def step(carry, _):
            p, s = carry
            value, g = jax.value_and_grad(loss)(p)
            u, s = tx.update(g, s, p, value=value)
            return (optax.apply_updates(p, u), s), None
        return jax.lax.scan(step, (p, tx.init(p)), None, length=steps)[0][0]

    seeds = [odd_params(0), odd_params(1)]
    lanes = jax.jit(jax.vmap(run))(jax.tree.map(lambda *x: jnp.stack(x), *seeds))
    for lane, p in enumerate(seeds):
        alone = jax.jit(run)(p)
        for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(lanes)):
            # Batched small solvers round differently (vmap's batched QR and dots).
            # Far from the minimum every decision (rollback verdicts, acceptance) is
            # robust to that rounding; another seed's run differs at O(1).
            np.testing.assert_allclose(np.asarray(b)[lane], a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("factory, kwargs, name", [
    (koopax.kga, dict(num_snapshots="5"), "num_snapshots"),
    (koopax.kga, dict(snapshot_every=True), "snapshot_every"),
    (koopax.efficient_kga, dict(num_snapshots=2.5), "num_snapshots"),
    (lambda **k: koopax.masked_kga(masks.norm(0.1), **k), dict(num_snapshots="5"),
     "num_snapshots"),
    (koopax.pdt, dict(snapshot_every="3"), "snapshot_every"),
    (koopax.dmd_prediction, dict(snapshot_every=3, num_snapshots="5"), "num_snapshots"),
    (koopax.kga, dict(rollback="yes"), "rollback"),
    (koopax.kga, dict(learning_rate="0.1"), "learning_rate"),
])
def test_wrong_types_raise_errors_naming_the_argument(factory, kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        factory(**kwargs)
