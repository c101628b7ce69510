"""KGA: identity at alpha=0, per-mode gain against a NumPy reference, safety.

The optax contract (recompilation, dtypes, inject_hyperparams, apply_if_finite,
sharding, orbax, ...) is checked once for every transformation in
tests/test_contract.py."""

import functools

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import koopax
import no_rollback
from koopax._src import tree_math

from helpers import assert_trees_equal


def quadratic_problem(n=40, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    h = jnp.asarray(q @ np.diag(np.geomspace(1e-3, 1.0, n)) @ q.T, jnp.float32)
    params = {"w": jnp.asarray(rng.normal(size=(n // 2, 2)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}

    def loss(p):
        w = p["w"].reshape(-1)
        return 0.5 * w @ h @ w + 0.05 * jnp.sum(p["b"] ** 2)

    return loss, params


def train(tx, loss, params, steps, nan_at=None, value=False):
    state = tx.init(params)

    @jax.jit
    def step(p, s, poison):
        g = jax.grad(loss)(p)
        g = jax.tree.map(lambda x: jnp.where(poison, jnp.nan, x), g)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    losses = []
    for i in range(steps):
        params, state = step(params, state, jnp.asarray(i == nan_at))
        losses.append(float(loss(params)))
    return params, state, np.array(losses), step


FACTORIES = {   # every update corrected (apply_every=1) unless the name says otherwise
    "kga": functools.partial(no_rollback.kga, apply_every=1),
    "efficient": functools.partial(no_rollback.efficient_kga, apply_every=1),
    "efficient-fixed": functools.partial(no_rollback.efficient_kga, refresh_every=None,
                                         apply_every=1),
    "kga-increment": functools.partial(no_rollback.kga, apply_every=None),
    "kga-sum": functools.partial(no_rollback.kga, apply_every=2),
}
KGA_VARIANTS = [pytest.param(f, id=k) for k, f in FACTORIES.items()]


@pytest.mark.parametrize("variant", KGA_VARIANTS)
def test_alpha_zero_is_exactly_the_base_optimizer(variant):
    loss, params = quadratic_problem()
    base, _, _, _ = train(optax.sgd(0.5), loss, params, 60)
    tx = optax.chain(optax.sgd(0.5), variant(0.0, num_snapshots=4, snapshot_every=3))
    got, state, _, _ = train(tx, loss, params, 60)
    assert_trees_equal(got, base)
    kstate = state[1]
    assert int(kstate.num_refreshes) >= 10  # refreshed many times, never applied
    assert int(kstate.num_nonfinite) == 0


@pytest.mark.parametrize("variant", KGA_VARIANTS)
def test_kga_reaches_lower_loss_than_sgd_on_a_quadratic(variant):
    loss, params = quadratic_problem()
    _, _, base, _ = train(optax.sgd(0.5), loss, params, 400)
    # KGA's default rank (Gavish–Donoho) keeps the dominant slow mode.
    tx = optax.chain(optax.sgd(0.5), variant(1.0, num_snapshots=6, snapshot_every=10))
    _, state, got, _ = train(tx, loss, params, 400)
    assert got[-1] < 0.85 * base[-1]   # the per-leaf bound costs the fixed basis a little
    assert got[200] < base[200]
    assert int(state[1].num_refreshes) >= 30
    # The window's whole signal (rank=None, PDT's default): still faster.
    tx = optax.chain(optax.sgd(0.5), variant(1.0, num_snapshots=6, snapshot_every=10,
                                                rank=None))
    _, state, got, _ = train(tx, loss, params, 400)
    assert got[-1] < 0.95 * base[-1] and got[200] < base[200]


def numpy_kga_reference(snaps, u, alpha, epsilon, damp=True):
    """KGA per the paper with exact eigen-decomposition (NumPy, float64): stable modes
    that decay forward gain ``1 + alpha lambda``; with ``damp`` oscillating ones
    (``Re lambda < -eps``) gain ``1 / (1 - lambda)``, their centre."""
    d = np.diff(snaps, axis=0).T  # N x m increments
    x, y = d[:, :-1], d[:, 1:]
    uu, s, vt = np.linalg.svd(x, full_matrices=False)
    r = int(np.sum(s > 1e-6 * s[0]))
    uu, s, v = uu[:, :r], s[:r], vt[:r].T
    atilde = uu.T @ y @ v / s
    lam, q = np.linalg.eig(atilde)
    inside = np.abs(lam) < 1 - epsilon
    stable, oscillating = inside & (lam.real > epsilon), inside & (lam.real < -epsilon)
    c = np.linalg.inv(q) @ (uu.T @ u)
    gain = np.where(stable, alpha * lam, 0.0) + (
        np.where(oscillating, lam / (1 - lam), 0.0) if damp else 0.0)
    return (u + uu @ (q @ (gain * c))).real, lam


def linear_increment_snapshots(n=30, h=6, eigenvalues=(0.9, 0.5, 1.0)):
    """``h`` snapshots whose increments follow ``eigenvalues`` (0.9, 0.5 and 1.0) exactly."""
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(n, 3)))
    lam = np.array(eigenvalues)
    coef = rng.normal(size=3) + 1.0
    incs = np.array([basis @ (coef * lam**t) for t in range(h - 1)])
    return rng, basis, lam, np.concatenate([np.zeros((1, n)), np.cumsum(incs, 0)]) + 3.0


def window_corrector(snaps, alpha, **kwargs):
    """KGA's state after recording ``snaps`` (a snapshot per step), and ``correct(u)``:
    the update that state makes of ``u`` at a step that records no snapshot."""
    n, h = snaps.shape[1], snaps.shape[0]
    make = functools.partial(no_rollback.kga, alpha, num_snapshots=h, **kwargs)
    tx = make(snapshot_every=1)
    state, update = tx.init(jnp.zeros(n)), jax.jit(tx.update)
    for w in snaps:
        _, state = update(jnp.zeros(n), state, jnp.asarray(w, jnp.float32))
    at_rest = state._replace(count=jnp.int32(1))        # count 1: no snapshot is due
    probe = make(snapshot_every=1000, apply_every=1)
    return state, lambda u: np.asarray(
        probe.update(jnp.asarray(u, jnp.float32), at_rest, jnp.zeros(n))[0])


@pytest.mark.usefixtures("optimised_compiles")
def test_update_matches_the_paper_equations_and_scales_stable_modes():
    # Weights follow an exactly linear increment dynamics with eigenvalues
    # 0.9, 0.5 (stable) and 1.0 (neutral); KGA must scale stable components by
    # (1 + alpha lambda) and leave the rest.
    rng, basis, lam, snaps = linear_increment_snapshots()
    n = snaps.shape[1]
    state, correct = window_corrector(snaps, 0.7, epsilon=0.02, rank=3)
    assert int(state.operator.num_stable[0]) == 2 and int(state.operator.rank[0]) == 3
    got_lam = np.sort(np.asarray(state.operator.eigenvalues[0])[:3].real)
    np.testing.assert_allclose(got_lam, np.sort(lam), atol=1e-3)
    u = rng.normal(size=n)
    ref, _ = numpy_kga_reference(snaps, u, 0.7, 0.02)
    np.testing.assert_allclose(correct(u), ref, atol=2e-4 * np.abs(ref).max())
    # Along the stable eigenvector of lambda = 0.9 the gain is 1 + 0.7 * 0.9.
    v = basis[:, 0]
    np.testing.assert_allclose(correct(v), (1 + 0.7 * 0.9) * v, atol=1e-3)
    # Orthogonal to the DMD basis: unchanged.
    w_perp = rng.normal(size=n)
    w_perp -= basis @ (basis.T @ w_perp)
    np.testing.assert_allclose(correct(w_perp), w_perp, atol=1e-4)


@pytest.mark.parametrize("damp", [True, False])
@pytest.mark.parametrize("eigenvalues", [(0.9, -0.6, 1.0), (-0.6, 1.0, 1.01)])
def test_an_oscillating_mode_is_moved_to_its_centre(damp, eigenvalues):
    """Increments that flip sign (lambda = -0.6) are a bounce, not a transient: the
    update along that mode takes ``1 / (1 - lambda) = 0.625`` (its remaining
    displacement, to the centre); ``damp_oscillations=False`` (the paper) leaves it.
    A decaying mode (0.9) still gains ``1 + alpha lambda``, neutral ones 1; with no
    decaying mode at all the oscillating one is still damped."""
    rng, basis, lam, snaps = linear_increment_snapshots(eigenvalues=eigenvalues)
    state, correct = window_corrector(snaps, 0.7, epsilon=0.02, rank=3,
                                      damp_oscillations=damp)
    assert int(state.operator.num_stable[0]) == int(0.9 in eigenvalues)
    assert int(state.operator.num_damped[0]) == int(damp)
    u = rng.normal(size=snaps.shape[1])
    ref, _ = numpy_kga_reference(snaps, u, 0.7, 0.02, damp=damp)
    np.testing.assert_allclose(correct(u), ref, atol=2e-4 * np.abs(ref).max())
    gains = {0.9: 1 + 0.7 * 0.9, -0.6: 1 / 1.6 if damp else 1.0, 1.0: 1.0, 1.01: 1.0}
    for k, value in enumerate(lam):
        np.testing.assert_allclose(correct(basis[:, k]), gains[value] * basis[:, k], atol=1e-3)


def test_the_damping_follows_the_gain_and_never_reverses_the_base():
    """Below the full gain (``s = min(alpha, (max_gain - 1) / |M|) < alpha``: the
    bound caps it), an oscillating mode is damped less, never past its centre."""
    _, basis, _, snaps = linear_increment_snapshots(eigenvalues=(0.9, -0.6, 1.0))
    v = basis[:, 1]
    for alpha, max_gain in ((0.7, 10.0), (50.0, 1.5), (1e6, 10.0)):
        _, correct = window_corrector(snaps, alpha, epsilon=0.02, rank=3, max_gain=max_gain)
        gain = float(correct(v) @ v)
        assert 1 / 1.6 - 1e-3 <= gain <= 1.0 + 1e-4, (alpha, max_gain, gain)
        if alpha == 0.7:
            assert gain == pytest.approx(1 / 1.6, abs=1e-3)
        else:       # s << alpha: almost the base
            assert gain > 0.95


@pytest.mark.parametrize("variant", KGA_VARIANTS[:2])
def test_gain_is_bounded_whatever_alpha(variant):
    loss, params = quadratic_problem()
    tx = optax.chain(optax.sgd(0.5),
                     variant(1e6, num_snapshots=5, snapshot_every=5, max_gain=3.0))
    probe_tx = variant(1e6, num_snapshots=5, snapshot_every=10**6, max_gain=3.0)

    @jax.jit
    def step(p, state, key):
        g = jax.grad(loss)(p)
        base = jax.tree.map(lambda x: -0.5 * x, g)
        u, state = tx.update(g, state, p)
        # A random probe through the same KGA state (no snapshot taken).
        leaves, tdef = jax.tree.flatten(p)
        keys = jax.random.split(key, len(leaves))
        probe = tdef.unflatten([jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])
        out, _ = probe_tx.update(probe, state[1]._replace(count=jnp.int32(1)), p)
        ratios = jnp.stack([
            jnp.sqrt(tree_math.tree_vdot(u, u) / tree_math.tree_vdot(base, base)),
            jnp.sqrt(tree_math.tree_vdot(out, out) / tree_math.tree_vdot(probe, probe))])
        return optax.apply_updates(p, u), state, ratios

    state = tx.init(params)
    p = params
    worst = 0.0
    for i in range(60):
        p, state, ratios = step(p, state, jax.random.key(i))
        worst = max(worst, float(jnp.max(ratios)))
    assert worst <= 3.0 * (1 + 1e-4)
    assert worst > 1.5  # the bound is actually reached: acceleration is on
    assert int(state[1].operator.num_stable.sum()) >= 1


def test_bf16_snapshot_storage():
    loss, params = quadratic_problem()
    tx = no_rollback.kga(1.0, num_snapshots=6, snapshot_every=10, snapshot_dtype=jnp.bfloat16)
    state = tx.init(params)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(state.columns.slots))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.columns.last))
    _, _, base, _ = train(optax.sgd(0.5), loss, params, 300)
    _, st, got, _ = train(optax.chain(optax.sgd(0.5), tx), loss, params, 300)
    assert got[-1] < 0.9 * base[-1]


@pytest.mark.parametrize("variant", KGA_VARIANTS[:2])
def test_unguarded_nan_gradient_is_counted_and_never_enters_the_state(variant):
    # (Guarded by optax.apply_if_finite: tests/test_contract.py.)
    loss, params = quadratic_problem()
    tx = optax.chain(optax.sgd(0.5), variant(1.0, num_snapshots=4, snapshot_every=5))
    _, state, _, _ = train(tx, loss, params, 61, nan_at=60)
    assert int(state[1].num_nonfinite) >= 1
    leaves = [x for x in jax.tree.leaves(state[1]) if jnp.issubdtype(x.dtype, jnp.inexact)]
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)


def test_non_finite_acceleration_falls_back_to_the_base_update():
    loss, params = quadratic_problem()
    tx = optax.chain(optax.sgd(0.5), no_rollback.kga(5.0, num_snapshots=4, snapshot_every=5,
                                                apply_every=1))
    _, state, _, _ = train(tx, loss, params, 40)
    kstate = state[1]._replace(count=jnp.int32(1))
    assert int(kstate.operator.num_stable.sum()) >= 1
    # A corrupted operator (as a bad DMD would give) makes the finite update
    # overflow once amplified: the base update must come back unchanged.
    huge = jax.tree.map(lambda x: jnp.full(x.shape, 3e30, x.dtype), params)
    kstate = kstate._replace(operator=kstate.operator._replace(
        coefficients=kstate.operator.coefficients * 1e30))
    tx_k = no_rollback.kga(5.0, num_snapshots=4, snapshot_every=5, apply_every=1)
    out, new = jax.jit(tx_k.update)(huge, kstate, params)
    assert_trees_equal(out, huge)
    assert int(new.num_nonfinite) == int(kstate.num_nonfinite) + 1
    # A non-finite snapshot is not recorded.
    bad = jax.tree.map(lambda x: x.at[0].set(jnp.inf), params)
    st0 = state[1]._replace(count=jnp.int32(0))
    _, new = tx_k.update(jax.tree.map(jnp.zeros_like, params), st0, bad)
    assert int(new.num_nonfinite) == int(st0.num_nonfinite) + 1
    assert_trees_equal(new.columns, st0.columns)


def test_state_diagnostics_are_readable_with_tree_get():
    loss, params = quadratic_problem()
    tx = optax.chain(optax.sgd(0.5), no_rollback.kga(1.0, num_snapshots=5, snapshot_every=5))
    _, state, _, _ = train(tx, loss, params, 40)
    assert optax.tree_utils.tree_get(state, "num_refreshes") > 0
    assert optax.tree_utils.tree_get(state, "eigenvalues").shape == (1, 3)
    assert int(optax.tree_utils.tree_get(state, "num_stable")[0]) == int(
        state[1].operator.num_stable[0]) >= 1
    assert int(koopax.diagnostics(state)["num_stable"][0]) >= 1


BAD_ARGS = [
    (dict(alpha=-1.0), "alpha"),
    (dict(alpha=float("nan")), "alpha"),
    (dict(num_snapshots=2), "num_snapshots"),
    (dict(num_snapshots=4.0), "num_snapshots"),
    (dict(snapshot_every=0), "snapshot_every"),
    (dict(apply_every=0), "apply_every"),
    (dict(epsilon=1.0), "epsilon"),
    (dict(epsilon=-0.1), "epsilon"),
    (dict(rank=0), "rank"),
    (dict(rank=2.0), "rank"),
    (dict(num_snapshots=4, rank=3), "rank"),
    (dict(snapshot_dtype=jnp.int32), "snapshot_dtype"),
    (dict(max_gain=1.0), "max_gain"),
    (dict(rcond=1.5), "rcond"),
    (dict(damp_oscillations="yes"), "damp_oscillations"),
]


@pytest.mark.parametrize("kwargs, name", BAD_ARGS)
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        no_rollback.kga(**kwargs)


def test_state_memory_multiples():
    params = {"w": jnp.zeros((1000, 100)), "b": jnp.zeros((100,))}
    pbytes = sum(x.nbytes for x in jax.tree.leaves(params))

    def ratio(factory=no_rollback.kga, **kw):
        shapes = jax.eval_shape(factory(1.0, **kw).init, params)
        return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes)) / pbytes

    h = 8
    # last snapshot + (h - 1) increments (+ the stored correction or the sum buffer)
    assert ratio(num_snapshots=h, apply_every=1) <= h + 0.01
    assert ratio(num_snapshots=h, apply_every=1, snapshot_dtype=jnp.bfloat16) \
        <= 1 + (h - 1) / 2 + 0.01
    assert ratio(num_snapshots=h) <= h + 1 + 0.01
    assert ratio(num_snapshots=h, snapshot_dtype=jnp.bfloat16) <= 1 + h / 2 + 0.01
    assert ratio(num_snapshots=h, apply_every=3) <= h + 1 + 0.01
    assert ratio(no_rollback.efficient_kga, num_snapshots=h, rank=3) <= 3 + 1 + 0.01


def _sub_jaxprs(params):
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jex.core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jex.core.Jaxpr):
                yield item


def _while_operands(jaxpr):
    """Every variable that enters a ``while`` anywhere in ``jaxpr`` (sub-jaxprs included)."""
    found = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "while":
            found.update(v for v in eqn.invars if not isinstance(v, jex.core.Literal))
        for sub in _sub_jaxprs(eqn.params):
            found |= _while_operands(sub)
    return found


@pytest.mark.parametrize("apply_every", [None, 4])   # both: the newest increment
def test_no_gate_carries_the_update(apply_every):
    """With the default strategy the snapshot gate (a 0/1-trip loop) must not carry the
    update: a loop operand is a materialised buffer, so the base update would no longer
    fuse with apply_updates and every step would pay a parameter-sized write and read.
    (``apply_every=1`` reads the update twice, for its products and its correction, and
    the sum strategy accumulates it in a buffer: both materialise it anyway.)"""
    params = {"w": jnp.ones((8, 4)), "b": jnp.ones(4)}
    tx = no_rollback.kga(1.0, num_snapshots=4, snapshot_every=4, apply_every=apply_every)
    state = tx.init(params)
    closed = jax.make_jaxpr(lambda u, s, p: tx.update(u, s, p))(params, state, params)
    num_update_leaves = len(jax.tree.leaves(params))
    update_vars = set(closed.jaxpr.invars[:num_update_leaves])
    assert _while_operands(closed.jaxpr), "expected a snapshot gate"
    assert not (update_vars & _while_operands(closed.jaxpr))


def test_the_valve_closes_its_period_inside_the_snapshot_gate():
    """The valve's period statistics and rise test (a square root among them) run in the
    snapshot gate only: computed at every step and selected, they were dozens of scalar
    kernels per step, more than a small model's step costs."""
    params = {"w": jnp.ones((8, 4))}
    for factory in (no_rollback.kga, no_rollback.efficient_kga):
        tx = factory(1.0, num_snapshots=4, snapshot_every=4)
        state = tx.init(params)
        closed = jax.make_jaxpr(lambda u, s, p, v: tx.update(u, s, p, value=v))(
            params, state, params, jnp.float32(1.0))
        top = {eqn.primitive.name for eqn in closed.jaxpr.eqns}
        assert "while" in top and "sqrt" not in top, (factory.__name__, sorted(top))
