"""Tests for koopax.masks and kga(..., mask=...) (compact-mode KGA)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import koopax
import no_rollback
from koopax._src import compaction, masks

from helpers import assert_trees_close


def _tree(rng, shapes=(("b", (7,)), ("w", (3, 5)))):
    return {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes}


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


def _inputs(snaps):
    """MaskInputs from a list of snapshot pytrees (oldest first)."""
    incs = tuple(jax.tree.map(lambda a, b: b - a, x, y) for x, y in zip(snaps[:-1], snaps[1:]))
    flat = np.stack([_flat(d) for d in incs]).astype(np.float64)
    gram = jnp.asarray(flat @ flat.T, jnp.float32)
    return masks.MaskInputs(snaps[-1], incs, gram)


# --------------------------------------------------------------------------
# Criteria on hand-made trees
# --------------------------------------------------------------------------


def test_norm_mask_matches_numpy():
    rng = np.random.default_rng(0)
    params = _tree(rng)
    out = masks.norm(0.7).exclude(masks.MaskInputs(params, (), jnp.zeros((0, 0))))
    np.testing.assert_array_equal(_flat(out), np.abs(_flat(params)) < 0.7)
    assert 0 < _flat(out).sum() < _flat(out).size


def test_delta_mask_matches_numpy():
    rng = np.random.default_rng(1)
    base = _tree(rng)
    snaps = [base]
    for _ in range(4):
        step = jax.tree.map(
            lambda x: jnp.asarray(rng.normal(size=x.shape) * 0.1, jnp.float32), base)
        snaps.append(jax.tree.map(lambda a, b: a + b, snaps[-1], step))
    inputs = _inputs(snaps)
    out = masks.delta(0.08, window=2).exclude(inputs)
    d = np.stack([_flat(x) for x in inputs.increments])
    expected = np.all(np.abs(d[-2:]) < 0.08, axis=0)
    np.testing.assert_array_equal(_flat(out), expected)
    assert 0 < expected.sum() < expected.size
    with pytest.raises(ValueError, match="window"):
        masks.delta(0.1, window=5).exclude(inputs)


def test_monotone_update():
    rng = np.random.default_rng(2)
    params = _tree(rng)
    mk = masks.norm(0.5)
    excl = masks.update(mk, masks.init(params), masks.MaskInputs(params, (), None))
    grown = jax.tree.map(lambda x: x * 10.0, params)  # nothing is small any more
    excl2 = masks.update(mk, excl, masks.MaskInputs(grown, (), None))
    np.testing.assert_array_equal(_flat(excl2), _flat(excl))


# --------------------------------------------------------------------------
# Compaction primitives
# --------------------------------------------------------------------------


def test_leaf_capacities_buckets():
    params = {"a": jnp.zeros((1000,)), "b": jnp.zeros((10,)), "c": jnp.zeros((300,))}
    # Leaves in flatten order a, b, c.
    assert compaction.leaf_capacities(1.0, params) == (1000, 10, 300)
    assert compaction.leaf_capacities(0.1, params) == (128, 10, 128)
    assert compaction.leaf_capacities(0.3, params) == (384, 10, 128)
    assert compaction.leaf_capacities(5000, params) == (1000, 10, 300)
    assert compaction.leaf_capacities(131, params) == (128, 10, 128)


def test_compact_indices_gather_scatter():
    keep = {"a": jnp.array([True, False, True, True, False, True]),
            "b": jnp.array([[False, True], [False, False]])}
    idx, fit, wanted = jax.jit(lambda k: compaction.compact_indices(k, (3, 2)))(keep)
    np.testing.assert_array_equal(idx[0], [0, 2, 3])      # 4th kept weight overflows
    np.testing.assert_array_equal(idx[1], [1, 4])         # padding n (out of range)
    assert int(fit) == 4 and int(wanted) == 5
    tree = {"a": jnp.arange(6.0), "b": jnp.arange(4.0).reshape(2, 2) + 10}
    comp = jax.jit(compaction.gather)(tree, idx)
    np.testing.assert_array_equal(comp[0], [0.0, 2.0, 3.0])
    np.testing.assert_array_equal(comp[1], [11.0, 0.0])
    loose = jax.jit(lambda t, i: compaction.gather(t, i, padding="any"))(tree, idx)
    np.testing.assert_array_equal(loose[0], comp[0])          # no padding in leaf a
    assert float(loose[1][0]) == 11.0                         # kept entry; padding unspecified
    with pytest.raises(ValueError, match="padding"):
        compaction.gather(tree, idx, padding="nan")
    out = jax.jit(compaction.scatter_add)(tree, idx, (jnp.ones(3), jnp.full(2, 5.0)))
    np.testing.assert_array_equal(out["a"], [1.0, 1.0, 3.0, 4.0, 4.0, 5.0])
    np.testing.assert_array_equal(out["b"], [[10.0, 16.0], [12.0, 13.0]])
    kept = jax.jit(compaction.kept)(idx, tree)
    np.testing.assert_array_equal(kept["a"], [True, False, True, True, False, False])
    new_keep = (jnp.array([True, False, True]), jnp.array([True, True]))
    new_idx, taken, count = jax.jit(
        lambda i, k, c: (lambda r: (r[0], compaction.take(c, r[1]), r[2]))(
            compaction.recompact(i, k, (6, 4))))(idx, new_keep, comp)
    np.testing.assert_array_equal(new_idx[0], [0, 3, 6])
    np.testing.assert_array_equal(new_idx[1], [1, 4])
    np.testing.assert_array_equal(taken[0], [0.0, 3.0, 0.0])
    np.testing.assert_array_equal(taken[1], [11.0, 0.0])  # padding slot stays 0
    assert int(count) == 3



def test_compaction_keeps_a_leaf_sharded_over_explicit_axes():
    """Under a mesh with Explicit axes a leaf's sharding is in its type: the
    compact view of a sharded leaf is its unsharded one's, and what goes back
    into the leaf keeps the leaf's sharding."""
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    mesh = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Explicit,))
    host = {"w": np.arange(32.0, dtype=np.float32).reshape(4, 8)}
    keep = {"w": jnp.asarray(host["w"] % 3 == 0)}
    with jax.set_mesh(mesh):
        tree = jax.device_put(host, {"w": NamedSharding(mesh, P(None, "x"))})
        idx, _, _ = jax.jit(lambda k: compaction.compact_indices(k, (16,)))(
            jax.device_put(keep, {"w": NamedSharding(mesh, P(None, "x"))}))
        comp = jax.jit(compaction.gather)(tree, idx)
        out = jax.jit(compaction.scatter_add)(tree, idx, (jnp.ones(16),))
        kept = jax.jit(compaction.kept)(idx, tree)
    positions = np.flatnonzero(host["w"].ravel() % 3 == 0)
    np.testing.assert_array_equal(np.asarray(idx[0])[:positions.size], positions)
    np.testing.assert_array_equal(np.asarray(comp[0])[:positions.size], positions.astype(float))
    np.testing.assert_array_equal(np.asarray(out["w"]), host["w"] + (host["w"] % 3 == 0))
    np.testing.assert_array_equal(np.asarray(kept["w"]), host["w"] % 3 == 0)
    assert out["w"].sharding.spec == P(None, "x") and kept["w"].sharding.spec == P(None, "x")

# --------------------------------------------------------------------------
# KWM on a synthetic trajectory
# --------------------------------------------------------------------------


def _kwm_trajectory(num_snapshots, lam=0.8, n=40, seed=3):
    """Half the weights frozen, half ``w_t = w*_j + a_j lam^t``."""
    rng = np.random.default_rng(seed)
    fixed = rng.normal(size=n)
    amp = np.where(np.arange(n) >= n // 2, rng.uniform(0.5, 1.5, size=n), 0.0)
    snaps = [{"w": jnp.asarray(fixed + amp * lam**t, jnp.float32)} for t in range(num_snapshots)]
    return snaps, amp


def test_kwm_scores_frozen_vs_moving():
    h, s, lam = 7, 3, 0.8
    snaps, amp = _kwm_trajectory(h, lam)
    inputs = _inputs(snaps)
    scores, excl = jax.jit(lambda i: (masks.kwm_scores(i, window=s)["w"],
                                      masks.kwm(1e-3, window=s).exclude(i)["w"]))(inputs)
    scores = np.asarray(scores)
    moving = amp > 0
    assert np.all(scores[~moving] == 0.0)
    # Score = remaining movement max over the last s snapshots = a_j lam^(h-s).
    np.testing.assert_allclose(scores[moving], amp[moving] * lam ** (h - s), rtol=2e-3)
    np.testing.assert_array_equal(np.asarray(excl), ~moving)


def test_kwm_drops_a_mode_at_the_weights_round_off():
    # Two modes on disjoint weights: 0-9 decay at 0.9 (amplitude 1), 10-19 at 0.5
    # (amplitude 3e-2, a weak mode). The same motion on weights near
    # 0 and near 3e3, where float32 rounds each weight to 2.4e-4, as large as the weak
    # increments themselves.
    h, s = 7, 3
    base = np.r_[np.ones(10), 3e-2 * np.ones(10)]
    lam = np.r_[np.full(10, 0.9), np.full(10, 0.5)]

    def scores(offset, **options):
        snaps = [{"w": jnp.asarray(offset + base * lam**t, jnp.float32)} for t in range(h)]
        return np.asarray(masks.kwm_scores(_inputs(snaps), window=s, **options)["w"])

    # Near 0 the weak mode is real and kept: each weight's remaining movement, exact.
    np.testing.assert_allclose(scores(0.0), base * lam ** (h - s), rtol=2e-3)
    # Near 3e3 it lies within 1e4 of eps ||w|| (the floor reaches its cap, 0.5 sigma_1):
    # dropped, the scores are the rank-1 DMD's; the Gram floor alone kept it, and its
    # round-off moved the weak weights' scores by 60 %.
    near = scores(3e3)
    np.testing.assert_allclose(near, scores(3e3, rank=1, roundoff_margin=0.0), rtol=1e-5)
    assert np.all(np.abs(near[10:] / scores(3e3, roundoff_margin=0.0)[10:] - 1) > 1.0)
    with pytest.raises(ValueError, match="roundoff_margin"):
        masks.kwm(1e-3, roundoff_margin=-1.0)
    with pytest.raises(ValueError, match="roundoff_margin"):
        masks.kwm(1e-3, roundoff_margin=jnp.float32(1.0))


def test_kwm_relative_threshold_is_scale_free():
    h, s, lam = 7, 3, 0.8
    snaps, amp = _kwm_trajectory(h, lam)
    inputs = _inputs(snaps)
    newest = _flat(inputs.increments[-1])
    rms = np.sqrt(np.mean(newest.astype(np.float64) ** 2))
    scores = np.asarray(masks.kwm_scores(inputs, window=s)["w"])
    # Threshold between two moving weights' scores, expressed relative to rms(d_m).
    moving = np.sort(scores[amp > 0].ravel())
    cut = 0.5 * (moving[0] + moving[-1])
    rel = cut / rms
    expected = scores < cut
    for scale in (1.0, 1e-3, 1e3):  # rescaling the trajectory changes nothing
        scaled = _inputs([jax.tree.map(lambda x: scale * x, p) for p in snaps])
        out = masks.kwm(rel, window=s, relative=True).exclude(scaled)["w"]
        np.testing.assert_array_equal(np.asarray(out), expected)
    absolute = masks.kwm(rel, window=s).exclude(inputs)["w"]
    assert not np.array_equal(np.asarray(absolute), expected)
    with pytest.raises(ValueError, match="relative"):
        masks.kwm(0.1, relative=1)


def _quadratic(shapes=(("b", (32,)), ("w", (32, 16)))):
    rng = np.random.default_rng(4)
    params = _tree(rng, shapes)
    # Curvature 1 on a third of the weights (converge in a few steps), tiny elsewhere.
    hess = jax.tree.map(
        lambda p: jnp.asarray(np.where(rng.uniform(size=p.shape) < 0.35, 1.0,
                                       rng.uniform(0.01, 0.05, size=p.shape)), jnp.float32),
        params)
    target = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)

    def grad(p):
        return jax.tree.map(lambda x, h, t: h * (x - t), p, hess, target)

    return params, hess, grad


def _make_step(tx, grad):
    @jax.jit
    def step(p, st):
        g = grad(p)
        u, st = tx.update(g, st, p)
        return optax.apply_updates(p, u), st, g, u

    return step


def test_kga_kwm_masks_frozen_weights_and_only_grows():
    params, hess, grad = _quadratic()
    mk = masks.kwm(1e-4, window=4, capacity=0.75)
    tx = optax.chain(optax.sgd(0.9), no_rollback.masked_kga(mk, 0.5, num_snapshots=6, snapshot_every=2,
                                                           apply_every=1))
    step = _make_step(tx, grad)
    p, st = params, tx.init(params)
    kept_hist = []
    for _ in range(60):
        p, st, _, _ = step(p, st)
        s = st[1]
        if bool(s.columns.compact):
            kept_hist.append(_flat(koopax.masked_kga_kept(s, p)))
    assert step._cache_size() == 1
    assert len(kept_hist) > 10
    for a, b in zip(kept_hist[:-1], kept_hist[1:]):
        assert not np.any(b & ~a)  # kept set only shrinks
    fast = _flat(hess) == 1.0
    final = kept_hist[-1]
    assert final[fast].mean() < 0.05      # converged weights are masked
    assert final[~fast].mean() > 0.9      # slowly moving ones are kept
    s = st[1]
    assert int(s.columns.num_kept) == final.sum()
    np.testing.assert_allclose(float(s.columns.masked_fraction),
                               1 - (int(s.columns.num_kept) + int(s.columns.num_overflow)) / final.size)


# --------------------------------------------------------------------------
# kga(..., mask=...)
# --------------------------------------------------------------------------


def test_kga_mask_keeping_everything_equals_kga():
    params, _, grad = _quadratic()
    plain = optax.chain(optax.sgd(0.9), no_rollback.kga(0.5, num_snapshots=5, snapshot_every=2))
    masked = optax.chain(optax.sgd(0.9), no_rollback.masked_kga(masks.norm(0.0, capacity=1.0), 0.5,
                                                           num_snapshots=5, snapshot_every=2))
    out = []
    for tx in (plain, masked):
        step = _make_step(tx, grad)
        p, st = params, tx.init(params)
        for _ in range(40):
            p, st, _, _ = step(p, st)
        out.append((p, st[1]))
    assert int(out[0][1].num_refreshes) > 5 and int(out[0][1].operator.num_stable.sum()) > 0
    assert bool(out[1][1].columns.compact) and int(out[1][1].columns.num_kept) == 32 * 16 + 32
    assert int(out[1][1].columns.num_overflow) == 0 and float(out[1][1].columns.masked_fraction) == 0.0
    assert_trees_close(out[0][0], out[1][0], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def norm_run():
    """One compiled norm-masked KGA update shared by the tests below."""
    params, _, grad = _quadratic()
    mk = masks.norm(0.6, capacity=0.5, start=7)
    tx = optax.chain(optax.sgd(0.9), no_rollback.masked_kga(mk, 0.5, num_snapshots=5, snapshot_every=2,
                                                           apply_every=1))
    update = jax.jit(tx.update)

    def step(p, st, g=None):
        g = grad(p) if g is None else g
        u, st = update(g, st, p)
        return optax.apply_updates(p, u), st, g, u

    return params, grad, tx, step, update


def test_kga_mask_base_update_on_masked_weights_and_no_recompile(norm_run):
    params, _, tx, step, update = norm_run
    p, st = params, tx.init(params)
    saw_full = saw_compact = False
    for _ in range(40):
        p_prev = p
        p, st, g, u = step(p, st)
        s = st[1]
        base = _flat(jax.tree.map(lambda x: -0.9 * x, g))
        if not bool(s.columns.compact):
            saw_full = True
            continue
        saw_compact = True
        kept = _flat(koopax.masked_kga_kept(s, p_prev))
        np.testing.assert_array_equal(_flat(u)[~kept], base[~kept])
    assert saw_full and saw_compact
    assert update._cache_size() == 1
    s = st[1]
    assert 0 < int(s.columns.num_kept) <= 256 + 32
    assert 0.0 < float(s.columns.masked_fraction) < 1.0
    assert (~kept).sum() == _flat(params).size - int(s.columns.num_kept)
    assert int(s.operator.num_stable.sum()) > 0
    assert not np.allclose(_flat(u)[kept], base[kept])  # kept weights accelerated
    # Compact window shapes: capacity 0.5 -> 256 slots for w (512), all 32 for b.
    from koopax._src.kga.masked import compact_slots

    assert [x.shape for x in compact_slots(s.columns)] == [(4, 32), (4, 256)]
    # Masking keeps no second m x N buffer: the compact slots live in the full ones.
    assert s.columns.compact_window.slots is None
    full_bytes = sum(x.nbytes for x in jax.tree.leaves(s.columns.window.slots))
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(s))
    # Beyond the full window: about 2.3x the parameters, plus one fade per slot
    # (0.5x at capacity 0.5); a second compact window would add 2.1x more.
    assert state_bytes < full_bytes + 3.0 * _flat(params).nbytes


def test_kga_mask_nonfinite_inputs_keep_compact_state_clean(norm_run):
    params, grad, tx, step, update = norm_run
    p, st = params, tx.init(params)
    for _ in range(24):
        p, st, _, _ = step(p, st)
    assert bool(st[1].columns.compact) and int(st[1].operator.num_stable.sum()) > 0
    before = int(st[1].num_nonfinite)
    nan_g = jax.tree.map(lambda x: x.at[0].set(jnp.nan), grad(p))
    _, st2, _, u = step(p, st, nan_g)  # count 24: a snapshot step
    s = st2[1]
    from koopax._src.kga.masked import compact_slots

    for leaf in jax.tree.leaves((s.columns.compact_window, compact_slots(s.columns),
                                 s.operator)):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert int(s.num_nonfinite) == before + 1  # the acceleration was rejected
    np.testing.assert_array_equal(_flat(u), _flat(jax.tree.map(lambda x: -0.9 * x, nan_g)))
    # A non-finite snapshot is skipped: the compact window is unchanged.
    nan_p = jax.tree.map(lambda x: x.at[0].set(jnp.nan), p)
    _, st3 = update(grad(p), st, nan_p)
    jax.tree.map(np.testing.assert_array_equal,
                 (st3[1].columns.compact_window, compact_slots(st3[1].columns)),
                 (st[1].columns.compact_window, compact_slots(st[1].columns)))
    assert int(st3[1].num_nonfinite) == before + 1
    assert update._cache_size() == 1


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


@pytest.mark.parametrize("make, name", [
    (lambda: masks.norm(-1.0), "threshold"),
    (lambda: masks.norm(float("nan")), "threshold"),
    (lambda: masks.norm(0.1, capacity=0.0), "capacity"),
    (lambda: masks.norm(0.1, capacity=1.5), "capacity"),
    (lambda: masks.norm(0.1, capacity=True), "capacity"),
    (lambda: masks.norm(0.1, every=0), "every"),
    (lambda: masks.norm(0.1, start=0), "start"),
    (lambda: masks.delta(0.1, window=0), "window"),
    (lambda: masks.kwm(-1e-3), "epsilon"),
    (lambda: masks.kwm(1e-3, neutral_epsilon=1.5), "neutral_epsilon"),
    (lambda: masks.kwm(1e-3, rank=0), "rank"),
    (lambda: no_rollback.masked_kga("norm"), "mask"),
    (lambda: no_rollback.masked_kga(masks.delta(0.1, window=5), num_snapshots=4), "num_snapshots"),
    (lambda: compaction.leaf_capacities(-2, {"a": jnp.zeros(3)}), "capacity"),
])
def test_bad_arguments(make, name):
    with pytest.raises(ValueError, match=name):
        make()


# --------------------------------------------------------------------------
# Continuity: fades and the neutral band
# --------------------------------------------------------------------------


def test_masked_kga_scales_each_weight_by_its_fade():
    """The compact phase's update is ``u + s G X K X^T G^2 u`` (koopax._src.kga.masked):
    the window holds ``G X`` with ``g_j`` the fade of ``|w_j|`` at the latest decision,
    and a weight in the band ``[0.6, 1.2]`` takes part in proportion to ``g_j``."""
    from koopax._src.kga import operator as acceleration
    from koopax._src.kga.masked import compact_slots

    params, _, grad = _quadratic()
    tx = optax.chain(optax.sgd(0.9), no_rollback.masked_kga(
        masks.norm(0.6, margin=1.0), 0.5, num_snapshots=5, snapshot_every=2, apply_every=1))
    update = jax.jit(tx.update)
    p, st, checked = params, tx.init(params), 0
    lowest = np.ones(32 + 512)           # each weight's lowest fade over the decisions so far
    for _ in range(24):
        u = jax.tree.map(lambda g: -0.9 * g, grad(p))
        before = st[1]
        out, st = update(grad(p), st, p)
        if int(st[1].columns.num_mask_updates) > int(before.columns.num_mask_updates):
            norms = np.concatenate([np.abs(np.asarray(x, np.float64)).ravel()
                                    for x in jax.tree.leaves(st[1].columns.window.last)])
            x = np.clip(norms / 0.6 - 1.0, 0.0, 1.0)
            lowest = np.minimum(lowest, x * x * (3 - 2 * x))
        no_snapshot = (int(st[1].columns.compact_window.num_snapshots)
                       == int(before.columns.compact_window.num_snapshots))
        if bool(before.columns.compact) and int(before.operator.num_stable.sum()) > 0 \
                and no_snapshot:
            c = before.columns
            fades = np.concatenate([np.asarray(g, np.float64) for g in c.fades])
            kept = np.concatenate([np.asarray(i) < n for i, n in zip(c.indices, (32, 512))])
            y = np.concatenate([np.asarray(x, np.float64) for x in compact_slots(c)], axis=1)
            gather = lambda t: np.concatenate(
                [np.asarray(x, np.float64) for x in compaction.gather(t, c.indices)])
            scale = float(acceleration.gain_scale(0.5, 10.0, before.operator.norm[0]))
            k = np.asarray(before.operator.coefficients[0], np.float64)
            want = scale * y.T @ (k @ (y @ (fades * gather(u))))
            got = gather(jax.tree.map(jnp.subtract, out, u))
            atol = 4e-7 * np.abs(gather(u)).max()     # out - u: float32 round-off of u
            assert np.abs(want).max() > 30 * atol
            np.testing.assert_allclose(got, want, rtol=2e-3, atol=atol)
            # The fades are the norm mask's, each weight's lowest over the decisions
            # (one at every snapshot); some weights are in the band.
            where = np.concatenate([np.asarray(i) + o for i, o in zip(c.indices, (0, 32))])
            np.testing.assert_allclose(fades[kept], lowest[where[kept]], atol=1e-6)
            assert np.any((fades[kept] > 0.05) & (fades[kept] < 0.95))
            checked += 1
        p = optax.apply_updates(p, out)
    assert checked >= 3


def test_a_fade_never_rises_again():
    """A fade only falls (koopax._src.kga.masked): weight 0 enters the compact phase
    half-faded (``|w| = 1.5``, threshold 1, margin 1) and then grows far above the
    band. Its fade stays at the first decision's; the newest decision's, 1, would
    let a weight that sat at the threshold in one run (and was dropped in another
    that rounded differently) take the whole correction in one run only."""
    tx = no_rollback.masked_kga(masks.norm(1.0, margin=1.0), 0.5, num_snapshots=4,
                                snapshot_every=1, apply_every=1)
    p = {"w": jnp.array([1.5, 5.0, -5.0, 6.0])}
    st, update = tx.init(p), jax.jit(tx.update)
    first, latest = None, None
    for t in range(14):
        rise = 0.4 if t >= 5 else 0.0
        u = {"w": jnp.array([rise, 0.3 * 0.8 ** t, -0.2 * 0.7 ** t, 0.1 * 0.9 ** t])}
        out, st = update(u, st, p)
        p = optax.apply_updates(p, out)
        c = st.columns
        if bool(c.compact):
            at = int(np.flatnonzero(np.asarray(c.indices[0]) == 0)[0])
            latest = float(c.fades[0][at])
            first = latest if first is None else first
    assert 0.3 < first < 0.7                      # smoothstep(0.5) = 0.5 at the first decision
    assert float(p["w"][0]) > 4.0                 # far above the band by the end: a new fade of 1
    assert int(st.columns.num_mask_updates) >= 5
    assert latest <= first


def test_kwm_scores_are_continuous_across_the_neutral_band_edge():
    """One mode at the neutral band's edge ``|lambda| = 1 - eps``: the paper's
    0/1 classes switch its weights' score from the drift to the transient's
    ``b / (1 - lambda)``, 50 times larger; the smooth transient weight moves it
    by a fraction of a percent."""
    eps = 0.02
    scores = []
    for lam in (1 - eps + 1e-5, 1 - eps - 1e-5):
        snaps, amp = _kwm_trajectory(7, lam)
        scores.append(np.asarray(masks.kwm_scores(_inputs(snaps), window=3,
                                                  neutral_epsilon=eps)["w"]))
    moving = amp > 0
    assert scores[0][moving].max() > 0
    np.testing.assert_allclose(scores[0][moving], scores[1][moving], rtol=1e-2)


def test_margin_zero_is_the_papers_hard_mask_and_margin_is_validated():
    inputs = masks.MaskInputs({"w": jnp.array([0.05, 0.1, 0.15, 0.5])}, (), jnp.zeros((0, 0)))
    hard, soft = masks.norm(0.1, margin=0.0), masks.norm(0.1, margin=1.0)
    np.testing.assert_array_equal(masks.fade(hard, inputs)["w"], [0.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(hard.exclude(inputs)["w"], [True, False, False, False])
    np.testing.assert_allclose(masks.fade(soft, inputs)["w"], [0.0, 0.0, 0.5, 1.0])
    # At the threshold itself the fade is 0: the soft mask drops that weight.
    np.testing.assert_array_equal(soft.exclude(inputs)["w"], [True, True, False, False])
    for factory in (lambda m: masks.norm(0.1, margin=m), lambda m: masks.delta(0.1, margin=m),
                    lambda m: masks.kwm(0.1, margin=m)):
        for bad in (-1.0, "1", float("inf"), jnp.asarray(1.0)):
            with pytest.raises(ValueError, match="margin"):
                factory(bad)
