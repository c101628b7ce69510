"""Tests for koopax.analysis against direct NumPy computations on systems with known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import koopax
import no_rollback
from koopax import analysis

from examples import landscape
from koopax._src import masks

from helpers import linear_trajectory, max_eigenvalue_mismatch

SHAPES = (("b", (4,)), ("w", (3, 4)))  # 16 features per snapshot, two leaves


def _to_tree(flat):
    """``(h, 16)`` rows -> stacked pytree {"b": (h, 4), "w": (h, 3, 4)} (float32)."""
    flat = np.asarray(flat)
    out, i = {}, 0
    for name, shape in SHAPES:
        n = int(np.prod(shape))
        out[name] = jnp.asarray(flat[:, i:i + n].reshape((-1,) + shape), jnp.float32)
        i += n
    return out


def _flat(tree):
    """Stacked pytree -> ``(h, N)`` float64 rows (leaves in jax.tree order)."""
    leaves = jax.tree.leaves(tree)
    return np.concatenate([np.asarray(x, np.float64).reshape(x.shape[0], -1) for x in leaves], 1)


def _np_dmd_eigenvalues(x, y, rank):
    """Textbook exact DMD in float64: A~ = U^T Y V S^-1 on columns x, y."""
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    u, s, v = u[:, :rank], s[:rank], vt[:rank].T
    return np.linalg.eigvals(u.T @ y @ v / s)


# --------------------------------------------------------------------------
# stack_snapshots
# --------------------------------------------------------------------------


def test_stack_snapshots_list_equals_stacked():
    rng = np.random.default_rng(0)
    stacked = _to_tree(rng.normal(size=(5, 16)))
    listed = [jax.tree.map(lambda x, i=i: np.asarray(x[i]), stacked) for i in range(5)]
    got = analysis.stack_snapshots(listed)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(stacked)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert analysis.stack_snapshots(stacked)["w"].shape == (5, 3, 4)


@pytest.mark.parametrize("bad, error, match", [
    ([], ValueError, "empty"),
    ([{"w": np.zeros(2)}, {"w": np.zeros(3)}], ValueError, "snapshot 1"),
    ({"w": np.zeros((3, 2), np.int32)}, TypeError, "floating"),
    ({"a": np.zeros((3, 2)), "b": np.zeros((4, 2))}, ValueError, "leading"),
    ({}, ValueError, "no leaves"),
])
def test_stack_snapshots_rejects(bad, error, match):
    with pytest.raises(error, match=match):
        analysis.stack_snapshots(bad)


# --------------------------------------------------------------------------
# Eigenvalues over training
# --------------------------------------------------------------------------

CHOSEN = [np.exp(0.3j), np.exp(-0.3j), 0.6, 1.1]  # neutral pair, stable, unstable


def test_eigenvalue_history_recovers_chosen_spectrum():
    w = linear_trajectory(CHOSEN, 16, 10, seed=1)
    hist = analysis.eigenvalue_history(_to_tree(w), window=7)
    assert hist.epochs.tolist() == [6, 7, 8, 9]
    assert hist.eigenvalues.shape == (4, 5) and hist.rank.tolist() == [4] * 4
    for row in np.asarray(hist.eigenvalues):
        # float32 method of snapshots: the Gram matrix squares the window's
        # condition number (sigma_4 / sigma_1 ~ 1e-2 here), so ~1e-3 relative.
        assert max_eigenvalue_mismatch(row[:4], CHOSEN) < 1e-2
        assert np.all(row[4:] == 0)
        assert np.all(np.diff(np.abs(row[:4])) <= 1e-6)  # decreasing modulus
    classes = jax.tree.map(np.asarray, hist.classes)
    assert classes.neutral.sum(1).tolist() == [2] * 4
    assert classes.stable.sum(1).tolist() == [1] * 4
    assert classes.unstable.sum(1).tolist() == [1] * 4


def test_eigenvalue_history_matches_numpy_dmd_per_window():
    # Noisy dynamics: full-rank windows, a fixed rank, windows that differ.
    w = linear_trajectory([0.9, 0.7, 0.5], 16, 9, seed=2, noise=0.05)
    hist = analysis.eigenvalue_history(_to_tree(w), window=6, rank=3, epsilon=0.05)
    d = np.diff(_flat(_to_tree(w)), axis=0).T  # (N, 8) increments
    for row, t in zip(np.asarray(hist.eigenvalues), hist.epochs.tolist()):
        win = d[:, t - 5:t]  # the 5 increments of snapshots t-5..t
        ref = _np_dmd_eigenvalues(win[:, :-1], win[:, 1:], 3)
        assert max_eigenvalue_mismatch(row[:3], ref) < 1e-3
        mod = np.abs(row[:3])
        np.testing.assert_array_equal(np.asarray(hist.classes.stable)[t - 5, :3], mod < 0.95)
        np.testing.assert_array_equal(np.asarray(hist.classes.unstable)[t - 5, :3], mod > 1.05)


def test_recorded_eigenvalues_reads_kga_state_in_a_chain():
    params = {"w": jnp.zeros(3)}
    tx = optax.chain(optax.sgd(0.1), no_rollback.kga(num_snapshots=5))
    base, kga_state = tx.init(params)
    values = jnp.array([1.0, 0.5j, 0.25], jnp.complex64)
    states = [(base, kga_state._replace(operator=kga_state.operator._replace(
        eigenvalues=values[None], rank=jnp.asarray([r], jnp.int32)))) for r in (1, 3)]
    hist = analysis.recorded_eigenvalues(states)   # (epochs, blocks, h - 2)
    np.testing.assert_array_equal(np.asarray(hist.eigenvalues),
                                  [[[1.0, 0, 0]], [[1.0, 0.5j, 0.25]]])
    np.testing.assert_array_equal(np.asarray(hist.classes.neutral), [[[1, 0, 0]], [[1, 0, 0]]])
    np.testing.assert_array_equal(np.asarray(hist.classes.stable), [[[0, 0, 0]], [[0, 1, 1]]])
    with pytest.raises(ValueError, match=r"states\[0\]"):
        analysis.recorded_eigenvalues([base])


# --------------------------------------------------------------------------
# PCA plane and loss landscape
# --------------------------------------------------------------------------


def test_pca_plane_matches_numpy_svd():
    rng = np.random.default_rng(3)
    walks = [np.cumsum(rng.normal(size=(n, 16)) * [3.0] + [0.5] * 16, axis=0) for n in (6, 4)]
    plane = landscape.pca_plane(*(_to_tree(x) for x in walks))
    every = np.concatenate([_flat(_to_tree(x)) for x in walks])
    centred = every - every.mean(0)
    p, s, vt = np.linalg.svd(centred, full_matrices=False)
    coords = p[:, :2] * s[:2]
    coords *= np.where(coords[5] - coords[0] < 0, -1.0, 1.0)  # the documented sign rule
    got = np.concatenate([np.asarray(c) for c in plane.coordinates])
    assert [c.shape for c in plane.coordinates] == [(6, 2), (4, 2)]
    np.testing.assert_allclose(got, coords, rtol=1e-4, atol=1e-4 * s[0])
    np.testing.assert_allclose(np.asarray(plane.explained), s[:2] ** 2 / np.sum(s ** 2), rtol=1e-4)
    dirs = np.stack([_flat(jax.tree.map(lambda x: x[None], d))[0] for d in plane.directions])
    np.testing.assert_allclose(np.abs(dirs @ vt[:2].T), np.eye(2), atol=1e-4)
    np.testing.assert_allclose(_flat(jax.tree.map(lambda x: x[None], plane.center))[0],
                               every.mean(0), rtol=1e-5)


def test_pca_plane_of_a_planar_trajectory_explains_everything():
    t = np.arange(8.0)
    rng = np.random.default_rng(4)
    q, _ = np.linalg.qr(rng.normal(size=(16, 2)))
    # Uncorrelated coordinates (odd and even about the middle): the principal axes are q.
    a, b = 2.0 * (t - t.mean()), 0.1 * ((t - t.mean()) ** 2 - np.mean((t - t.mean()) ** 2))
    w = 1.0 + np.outer(a, q[:, 0]) + np.outer(b, q[:, 1])
    plane = landscape.pca_plane(_to_tree(w))
    np.testing.assert_allclose(float(jnp.sum(plane.explained)), 1.0, atol=1e-5)
    coords = np.asarray(plane.coordinates[0])
    np.testing.assert_allclose(np.abs(coords), np.abs(np.stack([a, b], 1)), atol=1e-4)
    np.testing.assert_allclose(coords[:, 0], a, atol=1e-4)  # moves towards positive x


def test_pca_plane_rejects():
    with pytest.raises(TypeError, match="trajectories"):
        landscape.pca_plane()
    with pytest.raises(ValueError, match="num_components"):
        landscape.pca_plane(np.zeros((2, 3), np.float32), num_components=2)
    with pytest.raises(ValueError, match="trajectories"):
        landscape.pca_plane(np.zeros((3, 3), np.float32), np.zeros((3, 4), np.float32))


def test_loss_landscape_of_a_quadratic():
    rng = np.random.default_rng(5)
    m = rng.normal(size=(16, 16))
    hess, grad = m @ m.T / 16, rng.normal(size=16)

    def loss(p):
        x = jnp.concatenate([jnp.ravel(v) for v in jax.tree.leaves(p)])
        return 0.5 * x @ jnp.asarray(hess, jnp.float32) @ x + jnp.asarray(grad, jnp.float32) @ x

    rows = rng.normal(size=(3, 16))
    center, u, v = (jax.tree.map(lambda x: x[i], _to_tree(rows)) for i in range(3))
    xs, ys = np.linspace(-1, 1, 5), np.linspace(-2, 2, 3)
    grid = np.asarray(landscape.loss_landscape(loss, center, (u, v), xs, ys))
    assert grid.shape == (3, 5)
    c, uu, vv = (_flat(_to_tree(rows[i:i + 1]))[0] for i in range(3))
    for i, b in enumerate(ys):
        for j, a in enumerate(xs):
            x = c + a * uu + b * vv
            np.testing.assert_allclose(grid[i, j], 0.5 * x @ hess @ x + grad @ x,
                                       rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(loss_fn=None), TypeError, "loss_fn"),
    (dict(directions=({"w": jnp.zeros(2)},)), ValueError, "directions"),
    (dict(directions=({"w": jnp.zeros(2)}, {"w": jnp.zeros(3)})), ValueError, r"directions\[1\]"),
    (dict(xs=np.zeros((2, 2))), ValueError, "xs"),
    (dict(ys=[np.nan]), ValueError, "ys"),
    (dict(loss_fn=lambda p: p["w"]), ValueError, "scalar"),
])
def test_loss_landscape_rejects(kwargs, error, match):
    args = dict(loss_fn=lambda p: jnp.sum(p["w"]), center={"w": jnp.zeros(2)},
                directions=({"w": jnp.ones(2)}, {"w": jnp.ones(2)}), xs=[0.0], ys=[0.0, 1.0])
    args.update(kwargs)
    with pytest.raises(error, match=match):
        landscape.loss_landscape(**args)


# --------------------------------------------------------------------------
# Neutral reconstruction and mask drop epochs
# --------------------------------------------------------------------------


def _affine(eigenvalues, steps, seed):
    """``w_t = w* + A^t z`` on 16 features, and ``w*``."""
    fixed = np.random.default_rng(seed + 100).normal(size=16)
    return fixed + linear_trajectory(eigenvalues, 16, steps, seed=seed), fixed


def test_neutral_reconstruction_matches_raw_weight_dmd():
    lam = [np.exp(0.25j), np.exp(-0.25j), 0.6, 0.85]
    w, _ = _affine(lam, 9, seed=13)  # all four modes well above the float32 noise floor
    split = analysis.neutral_reconstruction(_to_tree(w))
    # Eq. 14 directly: exact DMD of the raw float64 weights (eigenvalue 1 = the fixed
    # point, plus the chosen four), keeping the modes with |lambda| ~ 1.
    x, y = w[:-1].T, w[1:].T
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    u, s, v = u[:, :5], s[:5], vt[:5].T
    vals, q = np.linalg.eig(u.T @ y @ v / s)
    phi = y @ v / s @ q
    b = np.linalg.lstsq(phi, w[0], rcond=None)[0]
    keep = np.abs(np.abs(vals) - 1) <= 1e-2
    assert keep.sum() == 3
    ref = np.real((vals[keep] ** np.arange(9)[:, None] * b[keep]) @ phi[:, keep].T)
    np.testing.assert_allclose(_flat(split.neutral), ref, atol=2e-3 * np.abs(w).max())
    np.testing.assert_allclose(_flat(split.transient), w - ref, atol=2e-3 * np.abs(w).max())
    assert int(split.rank) == 4 and np.asarray(split.classes.neutral).sum() == 2


def test_neutral_reconstruction_of_a_relaxation_is_the_fixed_point():
    w, fixed = _affine([0.5, 0.8], 8, seed=7)
    split = analysis.neutral_reconstruction(_to_tree(w))
    np.testing.assert_allclose(_flat(split.neutral), np.broadcast_to(fixed, w.shape), atol=1e-4)
    assert not np.asarray(split.classes.neutral).any()


def _first_decided(cond, decisions):
    """First t in ``decisions`` with ``cond[t, j]``, -1 if none, per weight j."""
    out = np.full(cond.shape[1], -1)
    for t in decisions:
        out = np.where((out < 0) & cond[t], t, out)
    return out


def test_mask_drop_epochs_norm_with_start_and_every():
    rng = np.random.default_rng(8)
    w = np.cumsum(rng.normal(scale=0.3, size=(12, 16)), axis=0)
    mask = masks.norm(0.2, start=4, every=3)
    got = analysis.mask_drop_epochs(_to_tree(w), mask, num_snapshots=3)
    decisions = range(3, 12, 3)  # 4 snapshots recorded at the first decision, then every 3
    ref = _first_decided(np.abs(_flat(_to_tree(w))) < 0.2, decisions)
    np.testing.assert_array_equal(_flat(jax.tree.map(lambda x: x[None], got))[0], ref)


def test_mask_drop_epochs_delta():
    rng = np.random.default_rng(9)
    scale = np.exp(-0.4 * np.arange(11))[:, None] * rng.uniform(0.2, 3.0, size=16)
    w = np.cumsum(scale * rng.choice([-1.0, 1.0], size=(11, 16)), axis=0)
    got = analysis.mask_drop_epochs(_to_tree(w), masks.delta(0.05, window=2), num_snapshots=4)
    d = np.abs(np.diff(_flat(_to_tree(w)), axis=0))
    small = np.zeros((11, 16), bool)
    small[2:] = (d[1:] < 0.05) & (d[:-1] < 0.05)  # increments t-2, t-1 of snapshot t
    ref = _first_decided(small, range(3, 11))
    np.testing.assert_array_equal(_flat(jax.tree.map(lambda x: x[None], got))[0], ref)
    assert (ref >= 0).any() and (ref < 0).any()


def test_mask_drop_epochs_kwm_is_remaining_distance():
    # w_{t,j} = w*_j + a_j 0.7^t: KWM's score over the last s = 3 snapshots of the window
    # is the remaining distance |w_{t-2,j} - w*_j| at decision t.
    rng = np.random.default_rng(10)
    amps = rng.uniform(0.05, 2.0, size=16) * rng.choice([-1.0, 1.0], size=16)
    fixed = rng.normal(size=16) * 0.5
    dist = np.abs(amps) * 0.7 ** np.arange(14)[:, None]
    w = fixed + amps * 0.7 ** np.arange(14)[:, None]
    eps = 0.02
    got = analysis.mask_drop_epochs(_to_tree(w), masks.kwm(eps, window=3), num_snapshots=5)
    cond = np.zeros((14, 16), bool)
    cond[2:] = dist[:-2] < eps
    ref = _first_decided(cond, range(4, 14))
    np.testing.assert_array_equal(_flat(jax.tree.map(lambda x: x[None], got))[0], ref)
    assert len(set(ref.tolist())) > 3


@pytest.mark.parametrize("restrict", [True, False])
def test_mask_drop_epochs_restrict_sets_the_relative_threshold(restrict):
    # Two decay rates; KWM with relative=True compares the remaining distance with
    # eps * rms(d_{t-1}) over all N weights, where restrict=True zeroes the increments of
    # the weights dropped already (as compact KGA at capacity 1.0 does). Amplitudes are
    # chosen so that every decision clears its threshold by > 9 % and two weights drop
    # one epoch later under restrict=True.
    amps = np.array([0.073, 0.414, 0.301, 1.995, 1.803, 0.145, 0.402, 0.146,
                     0.108, 0.086, 0.13, 0.162, 0.096, 0.056, 0.073, 0.057])
    amps = amps * np.where(np.arange(16) % 3 == 0, -1.0, 1.0)
    lam = np.r_[np.full(8, 0.436), np.full(8, 0.825)]
    fixed = np.linspace(-0.5, 0.5, 16)
    w = fixed + amps * lam ** np.arange(11)[:, None]
    mask = masks.kwm(3.0, window=3, relative=True)
    got = analysis.mask_drop_epochs(_to_tree(w), mask, num_snapshots=5, restrict=restrict)

    def reference(restricted):
        flat, drop = _flat(_to_tree(w)), np.full(16, -1)
        d = np.diff(flat, axis=0)
        for t in range(4, 11):
            kept = drop < 0 if restricted else np.ones(16, bool)
            threshold = 3.0 * np.sqrt(np.sum(np.where(kept, d[t - 1], 0) ** 2) / 16)
            drop = np.where((drop < 0) & (np.abs(flat[t - 2] - fixed) < threshold), t, drop)
        return drop

    np.testing.assert_array_equal(_flat(jax.tree.map(lambda x: x[None], got))[0],
                                  reference(restrict))
    assert (reference(True) != reference(False)).sum() == 2


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(mask="norm"), TypeError, "mask"),
    (dict(num_snapshots=1), ValueError, "num_snapshots"),
    (dict(restrict=1), ValueError, "restrict"),
    (dict(num_snapshots=9), ValueError, "snapshots"),
])
def test_mask_drop_epochs_rejects(kwargs, error, match):
    args = dict(snapshots=np.ones((5, 3), np.float32), mask=masks.norm(0.1))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        analysis.mask_drop_epochs(**args)


# --------------------------------------------------------------------------
# Variance explained by an early basis
# --------------------------------------------------------------------------


def test_variance_explained_known_angles():
    theta = np.linspace(0, np.pi / 2, 6)
    e = np.eye(16)
    d = [e[0], e[1], e[0] + e[1]] + [np.cos(a) * e[0] + np.sin(a) * e[2] for a in theta]
    w = np.concatenate([np.zeros((1, 16)), np.cumsum(d, axis=0)])
    got = np.asarray(analysis.variance_explained(_to_tree(w), window=4))
    np.testing.assert_allclose(got, [1.0, 1.0, 1.0] + list(np.cos(theta) ** 2), atol=1e-5)


@pytest.mark.parametrize("basis", ["pod", "dmd"])
def test_variance_explained_matches_numpy_projection(basis):
    rng = np.random.default_rng(11)
    w = np.cumsum(rng.normal(size=(12, 16)), axis=0)
    got = np.asarray(analysis.variance_explained(_to_tree(w), window=5, start=2, basis=basis,
                                                 rank=2))
    d = np.diff(_flat(_to_tree(w)), axis=0)
    win = d[2:6].T  # the 4 increments of snapshots 2..6
    if basis == "pod":
        span = np.linalg.svd(win, full_matrices=False)[0][:, :2]
    else:
        u, s, vt = np.linalg.svd(win[:, :-1], full_matrices=False)
        span = win[:, 1:] @ vt[:2].T / s[:2]
    proj = span @ np.linalg.lstsq(span, d.T, rcond=None)[0]
    ref = np.sum(proj ** 2, 0) / np.sum(d ** 2, 1)
    assert got.shape == (11,)
    np.testing.assert_allclose(got, ref, atol=2e-4)


def test_variance_explained_of_low_dimensional_dynamics_is_one():
    w = linear_trajectory([0.95, 0.8, 0.6], 16, 14, seed=12)
    got = np.asarray(analysis.variance_explained(_to_tree(w), window=5))
    np.testing.assert_allclose(got, 1.0, atol=3e-3)  # float32 Gram eigenvalues


@pytest.mark.parametrize("kwargs, match", [
    (dict(basis="svd"), "basis"), (dict(window=1), "window"), (dict(start=-1), "start"),
    (dict(window=2, basis="dmd"), "window"), (dict(start=4), "start"), (dict(rank=0), "rank"),
])
def test_variance_explained_rejects(kwargs, match):
    args = dict(snapshots=np.ones((6, 3), np.float32), window=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        analysis.variance_explained(**args)


# --------------------------------------------------------------------------
# PDT accepted fraction
# --------------------------------------------------------------------------


def test_accepted_fractions_from_pdt_states():
    params = {"w": jnp.zeros(4)}
    tx = optax.chain(optax.sgd(0.1), koopax.pdt(snapshot_every=2))
    base, state = tx.init(params)
    recorded = [(0.0, 0), (0.5, 1), (0.5, 1), (0.25, 2), (0.75, 3)]
    states = [(base, state._replace(stats=state.stats._replace(
        accepted_ratio=jnp.float32(a), num_predictions=jnp.int32(n)))) for a, n in recorded]
    acc = analysis.accepted_fractions(states)
    np.testing.assert_array_equal(np.asarray(acc.predicted), [0, 1, 0, 1, 1])
    np.testing.assert_allclose(np.asarray(acc.ratio), [np.nan, 0.5, np.nan, 0.25, 0.75])
    np.testing.assert_allclose(float(acc.mean), 0.5)


def test_accepted_fractions_from_ratios():
    acc = analysis.accepted_fractions(np.array([np.nan, 0.2, 0.6]))
    np.testing.assert_array_equal(np.asarray(acc.predicted), [0, 1, 1])
    np.testing.assert_allclose(float(acc.mean), 0.4, rtol=1e-6)


@pytest.mark.parametrize("args, error, match", [
    (("abc",), TypeError, "records"),
    (([],), ValueError, "records"),
    (([0.5, 1.5],), ValueError, "records"),
    (([0.5, 0.5], [1, 0]), ValueError, "num_predictions"),
    (([0.5, 0.5], [1]), ValueError, "num_predictions"),
    (([(jnp.zeros(()),)],), ValueError, r"records\[0\]"),
])
def test_accepted_fractions_rejects(args, error, match):
    with pytest.raises(error, match=match):
        analysis.accepted_fractions(*args)


# --------------------------------------------------------------------------
# Argument checks shared by the DMD analyses
# --------------------------------------------------------------------------


@pytest.mark.parametrize("fn, kwargs, match", [
    (analysis.eigenvalue_history, dict(window=2), "window"),
    (analysis.eigenvalue_history, dict(window=9), "window"),
    (analysis.eigenvalue_history, dict(window=3, epsilon=1.5), "epsilon"),
    (analysis.eigenvalue_history, dict(window=3, rank="best"), "rank"),
    (analysis.eigenvalue_history, dict(window=3, rcond=2.0), "rcond"),
    (analysis.neutral_reconstruction, dict(epsilon=-0.1), "epsilon"),
    (analysis.neutral_reconstruction, dict(rank=-1), "rank"),
])
def test_dmd_analyses_reject(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(np.ones((5, 3), np.float32), **kwargs)
