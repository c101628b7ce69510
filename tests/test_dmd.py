"""Exact DMD against known linear systems, an independent NumPy DMD, and PyDMD."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import koopax
from koopax._src import snapshots

from helpers import linear_trajectory, max_eigenvalue_mismatch


def numpy_exact_dmd(w, r):
    """Textbook exact DMD with a full SVD (independent of koopax's Gram route)."""
    x, y = w[:-1].T, w[1:].T
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    u, s, v = u[:, :r], s[:r], vt[:r].T
    atilde = u.T @ y @ v / s
    vals, vecs = np.linalg.eig(atilde)
    modes = y @ v / s @ vecs
    amps = np.linalg.lstsq(modes, x[:, 0], rcond=None)[0]
    return vals, modes, amps


SPECTRA = {
    "real": [0.97, 0.8, 0.5],
    "complex_pair": [0.9 * np.exp(0.3j), 0.9 * np.exp(-0.3j), 0.6],
    "neutral_and_unstable": [1.0, 1.02, 0.7 * np.exp(1j), 0.7 * np.exp(-1j)],
}


@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_recovers_chosen_eigenvalues(name):
    lam = np.asarray(SPECTRA[name], complex)
    w = linear_trajectory(lam, num_features=200, num_steps=10, seed=1)
    dmd = jax.jit(lambda s: koopax.exact_dmd(s, rank=lam.size))(jnp.asarray(w, jnp.float32))
    assert int(dmd.rank) == lam.size
    assert max_eigenvalue_mismatch(dmd.eigenvalues, lam) < 2e-3
    # Sorted by decreasing modulus.
    mod = np.abs(np.asarray(dmd.eigenvalues))
    assert np.all(np.diff(mod) <= 1e-6)


@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_gavish_donoho_finds_the_true_rank_without_noise(name):
    lam = np.asarray(SPECTRA[name], complex)
    w = linear_trajectory(lam, num_features=300, num_steps=12, seed=2)
    dmd = koopax.exact_dmd(jnp.asarray(w, jnp.float32))
    assert int(dmd.rank) == lam.size
    valid = np.asarray(dmd.eigenvalues)[: lam.size]
    assert max_eigenvalue_mismatch(valid, lam) < 2e-3
    assert np.all(np.asarray(dmd.eigenvalues)[lam.size:] == 0)


def _normalized(modes):
    # Remove the arbitrary complex scale of each mode (unit norm, first entry real>0).
    modes = modes / np.linalg.norm(modes, axis=0, keepdims=True)
    phase = modes[np.argmax(np.abs(modes), axis=0), np.arange(modes.shape[1])]
    return modes * (np.abs(phase) / phase)


def _match_order(ref_vals, vals):
    return [int(np.argmin(np.abs(np.asarray(vals) - r))) for r in ref_vals]


@pytest.mark.parametrize("noise", [0.0, 1e-3])
def test_matches_numpy_reference_modes_amplitudes_and_reconstruction(noise):
    lam = SPECTRA["complex_pair"]
    w = linear_trajectory(lam, num_features=150, num_steps=9, seed=3, noise=noise)
    vals, modes, amps = numpy_exact_dmd(w, 3)
    dmd = koopax.exact_dmd(jnp.asarray(w, jnp.float32), rank=3)
    order = _match_order(vals, dmd.eigenvalues)
    got_vals = np.asarray(dmd.eigenvalues)[order]
    got_modes = np.asarray(dmd.modes)[order].T
    np.testing.assert_allclose(got_vals, vals, atol=1e-4)
    np.testing.assert_allclose(_normalized(got_modes), _normalized(modes), atol=2e-3)
    # Amplitude x mode is scale free.
    np.testing.assert_allclose(got_modes * np.asarray(dmd.amplitudes)[order], modes * amps,
                               atol=2e-3 * np.abs(modes * amps).max())
    rec = np.asarray(koopax.reconstruct(dmd, jnp.arange(w.shape[0])))
    ref_rec = (modes @ (amps[:, None] * vals[:, None] ** np.arange(w.shape[0]))).real.T
    np.testing.assert_allclose(rec, ref_rec, atol=1e-3 * np.abs(ref_rec).max())


@pytest.mark.parametrize("svd_rank", [0, 3, 0.99])
def test_matches_pydmd(svd_rank):
    from pydmd import DMD as PyDMD

    lam = [0.95, 0.85 * np.exp(0.2j), 0.85 * np.exp(-0.2j), 0.4]
    w = linear_trajectory(lam, num_features=120, num_steps=15, seed=4, noise=1e-4)
    ref = PyDMD(svd_rank=svd_rank, exact=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.fit(w.T)
    rank = "svht" if svd_rank == 0 else svd_rank
    dmd = koopax.exact_dmd(jnp.asarray(w, jnp.float32), rank=rank)
    r = int(dmd.rank)
    assert r == ref.eigs.size
    got = np.asarray(dmd.eigenvalues)[:r]
    assert max_eigenvalue_mismatch(got, ref.eigs) < 1e-3
    rec = np.asarray(koopax.reconstruct(dmd, jnp.arange(w.shape[0])))
    np.testing.assert_allclose(rec, ref.reconstructed_data.real.T,
                               atol=2e-3 * np.abs(w).max())


def test_pytree_equals_flattened_array():
    lam = [0.9, 0.7 * np.exp(0.5j), 0.7 * np.exp(-0.5j)]
    w = linear_trajectory(lam, num_features=60, num_steps=8, seed=5).astype(np.float32)
    tree = {"a": w[:, :24].reshape(8, 4, 6), "b": (w[:, 24:54].reshape(8, 30), w[:, 54:])}
    flat = koopax.exact_dmd(jnp.asarray(w), rank=3)
    dmd = jax.jit(lambda t: koopax.exact_dmd(t, rank=3))(jax.tree.map(jnp.asarray, tree))
    np.testing.assert_allclose(dmd.eigenvalues, flat.eigenvalues, atol=1e-5)
    np.testing.assert_allclose(dmd.amplitudes, flat.amplitudes, rtol=1e-3, atol=1e-4)
    modes = np.concatenate([np.asarray(dmd.modes["a"]).reshape(3, -1),
                            np.asarray(dmd.modes["b"][0]), np.asarray(dmd.modes["b"][1])], 1)
    np.testing.assert_allclose(modes, np.asarray(flat.modes), atol=1e-4)
    assert dmd.modes["a"].shape == (3, 4, 6)


def test_rank_options_shapes_and_energy():
    lam = [0.99, 0.9, 0.5, 0.2]
    w = linear_trajectory(lam, num_features=100, num_steps=10, seed=6)
    w = jnp.asarray(w, jnp.float32)
    assert koopax.exact_dmd(w, rank=2).eigenvalues.shape == (2,)
    assert int(koopax.exact_dmd(w, rank=2).rank) == 2
    full = koopax.exact_dmd(w)
    assert full.eigenvalues.shape == (9,)
    s = np.linalg.svd(np.asarray(w[:-1]).T, compute_uv=False)
    energy = np.cumsum(s**2) / np.sum(s**2)
    expected = int(np.searchsorted(energy, 0.9999) + 1)
    assert int(koopax.exact_dmd(w, rank=0.9999).rank) == expected


def test_predict_forecasts_the_linear_system():
    lam = [0.95, 0.8 * np.exp(0.3j), 0.8 * np.exp(-0.3j)]
    w = linear_trajectory(lam, num_features=80, num_steps=16, seed=7)
    fit = jnp.asarray(w[:10], jnp.float32)
    dmd = koopax.exact_dmd(fit, rank=3)
    ahead = np.asarray(koopax.predict(dmd, jnp.asarray(w[9], jnp.float32), 5))
    np.testing.assert_allclose(ahead, w[14], atol=1e-3 * np.abs(w).max())
    forecast = np.asarray(koopax.reconstruct(dmd, 9 + 5))[0]
    np.testing.assert_allclose(forecast, w[14], atol=1e-3 * np.abs(w).max())


def test_classify_eigenvalues():
    lam = jnp.array([1.0, 0.995, 0.5, 1.2, 0.0 + 0.98j, 0.0])
    cls = koopax.classify_eigenvalues(lam, 0.01, valid=jnp.arange(6) < 5)
    np.testing.assert_array_equal(cls.neutral, [True, True, False, False, False, False])
    np.testing.assert_array_equal(cls.stable, [False, False, True, False, True, False])
    np.testing.assert_array_equal(cls.unstable, [False, False, False, True, False, False])


def test_increment_window_gram_is_exact_and_incremental():
    rng = np.random.default_rng(0)
    params = {"w": jnp.zeros((5, 3)), "b": jnp.zeros((4,))}
    window = snapshots.init_ring(params, 3)
    traj = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
            for _ in range(6)]
    push = jax.jit(snapshots.ring_push)
    for p in traj:
        window = push(window, p)
    assert int(window.num_valid) == 3 and bool(snapshots.ring_is_full(window))
    flat = [np.concatenate([np.ravel(x) for x in jax.tree.leaves(p)]) for p in traj]
    incs = np.diff(np.array(flat), axis=0)[-3:]
    np.testing.assert_allclose(snapshots.ring_gram(window), incs @ incs.T, rtol=1e-5, atol=1e-5)
    stored = np.array([np.concatenate([np.ravel(x) for x in jax.tree.leaves(d)])
                       for d in snapshots.ring_increments(window)])
    np.testing.assert_allclose(stored, incs, rtol=1e-6, atol=1e-6)


def test_bf16_increments_keep_the_dynamics():
    # Weights with a large common offset and small decaying increments: the
    # increments survive bfloat16 storage, the eigenvalues stay close.
    lam = [0.9, 0.6]
    w = 100.0 + 1e-2 * linear_trajectory(lam, num_features=400, num_steps=6, seed=8)
    params = jnp.zeros((400,), jnp.float32)
    win32 = snapshots.init_ring(params, 5)
    win16 = snapshots.init_ring(params, 5, jnp.bfloat16)
    for x in w:
        win32 = snapshots.ring_push(win32, jnp.asarray(x, jnp.float32))
        win16 = snapshots.ring_push(win16, jnp.asarray(x, jnp.float32))
    for win, tol in ((win32, 2e-2), (win16, 5e-2)):
        gram = snapshots.ring_gram(win)
        red = koopax.dmd.gram_operator(gram, rank=2, num_features=400)
        vals = np.linalg.eigvals(np.asarray(red.operator)[:2, :2])
        assert max_eigenvalue_mismatch(vals, lam) < tol


@pytest.mark.parametrize("kwargs, name", [
    (dict(rank=0), "rank"), (dict(rank=1.5), "rank"), (dict(rcond=2.0), "rcond")])
def test_exact_dmd_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        koopax.exact_dmd(jnp.ones((4, 3)), **kwargs)


def test_exact_dmd_rejects_too_few_snapshots():
    with pytest.raises(ValueError, match="snapshots"):
        koopax.exact_dmd(jnp.ones((1, 3)))


def _nonfinite_cases():
    w = np.asarray(linear_trajectory([0.9, 0.6], num_features=12, num_steps=6, seed=9),
                   np.float32)
    one_nan, one_inf, huge = w.copy(), w.copy(), w.copy()
    one_nan[3, 5] = np.nan
    one_inf[0, 0] = -np.inf
    huge[2] = 1e30  # finite entries whose inner products overflow float32
    tree = {"a": w[:, :4], "b": one_nan[:, 4:]}  # the NaN sits in one leaf only
    return {"all_nan": np.full_like(w, np.nan), "one_nan": one_nan, "one_inf": one_inf,
            "overflow": huge, "pytree_leaf": tree}


# One rank policy and one mode (eager / jit) per case: the NaN path is the same
# for every policy, and each exact_dmd compilation costs seconds on 2 cores.
@pytest.mark.parametrize("case, rank, jit", [
    ("all_nan", None, False), ("one_nan", 2, True), ("one_inf", "svht", True),
    ("overflow", None, True), ("pytree_leaf", 2, False)])
def test_nonfinite_snapshots_give_a_nan_dmd_of_rank_zero(case, rank, jit):
    # Non-finite input is not read as "no dynamics" (rank 0 with zero
    # eigenvalues, what a finite window without increments gives): every float
    # field is NaN, rank is 0, shapes are those of a finite input, nothing raises.
    snaps = jax.tree.map(jnp.asarray, _nonfinite_cases()[case])
    fit = lambda s: koopax.exact_dmd(s, rank=rank)  # noqa: E731
    dmd = jax.jit(fit)(snaps) if jit else fit(snaps)
    clean = jax.eval_shape(fit, jax.tree.map(jnp.zeros_like, snaps))
    assert jax.tree.map(jnp.shape, dmd) == jax.tree.map(lambda x: x.shape, clean)
    assert int(dmd.rank) == 0
    for field in (dmd.eigenvalues, dmd.amplitudes, dmd.singular_values,
                  *jax.tree.leaves(dmd.modes)):
        assert np.all(np.isnan(np.asarray(field))), field
    # The documented check (the finite case is test_finite_snapshots_... below).
    assert not bool(jnp.all(jnp.isfinite(dmd.eigenvalues)))
    # Downstream use propagates the NaN instead of forecasting zeros.
    first = jax.tree.map(lambda x: x[0], snaps)
    assert all(np.all(np.isnan(np.asarray(x)))
               for x in jax.tree.leaves(koopax.reconstruct(dmd, jnp.arange(3))))
    assert all(np.all(np.isnan(np.asarray(x)))
               for x in jax.tree.leaves(koopax.predict(dmd, first, 2)))


def test_finite_snapshots_give_finite_fields():
    # The contrast: finite windows never produce a NaN field, with dynamics or
    # without (a constant window has no increments: rank 0 and zeros).
    lam = [0.9, 0.6]
    w = jnp.asarray(linear_trajectory(lam, num_features=12, num_steps=6, seed=9), jnp.float32)
    dmd = koopax.exact_dmd(w)
    assert int(dmd.rank) == 2 and bool(jnp.all(jnp.isfinite(dmd.eigenvalues)))
    flat = koopax.exact_dmd(jnp.zeros((5, 7)))
    assert int(flat.rank) == 0
    for field in (flat.eigenvalues, flat.amplitudes, flat.singular_values, flat.modes):
        assert np.all(np.asarray(field) == 0)
