"""Small-matrix linear algebra against NumPy/PyDMD references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from koopax._src import linalg

from helpers import max_eigenvalue_mismatch


@pytest.mark.parametrize("seed", range(8))
def test_eigvals_match_numpy_on_leading_block(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 10))
    size = int(rng.integers(1, m + 1))
    a = rng.normal(size=(m, m)).astype(np.float32)
    got = np.asarray(jax.jit(linalg.eigvals)(a, size))
    ref = np.linalg.eigvals(a[:size, :size].astype(np.float64))
    assert np.all(got[size:] == 0)
    scale = np.abs(ref).max()
    assert max_eigenvalue_mismatch(got[:size], ref) < 1e-4 * scale


def test_eigvals_conjugate_pairs_and_repeated_values():
    # Rotation-scaling block (0.9 e^{+-0.15i}), a double eigenvalue 1, and 0.2.
    th = 0.15
    a = np.zeros((5, 5))
    a[:2, :2] = 0.9 * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    a[2, 2] = a[3, 3] = 1.0
    a[4, 4] = 0.2
    t = np.random.default_rng(1).normal(size=(5, 5)) + 3 * np.eye(5)
    a = t @ a @ np.linalg.inv(t)
    got = np.asarray(linalg.eigvals(jnp.asarray(a, jnp.float32)))
    ref = np.array([0.2, 0.9 * np.exp(-0.15j), 0.9 * np.exp(0.15j), 1, 1])
    assert max_eigenvalue_mismatch(got, ref) < 5e-3


def test_eig_vectors_satisfy_eigen_equation():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(7, 7)).astype(np.float32)
    vals, vecs = jax.jit(linalg.eig)(a, 6)
    vals, vecs = np.asarray(vals), np.asarray(vecs)
    sub = a[:6, :6].astype(np.complex128)
    for j in range(6):
        v = vecs[:6, j]
        assert abs(np.linalg.norm(v) - 1) < 1e-5
        assert np.linalg.norm(sub @ v - vals[j] * v) < 1e-4 * np.abs(vals).max()
    assert np.all(vecs[6] == 0) and np.all(vecs[:, 6] == 0)


def _reference_projector(a, radius=None, *, right_of=None):
    """NumPy's spectral projector onto ``|lambda| < radius`` (or ``Re lambda > right_of``)."""
    vals, vecs = np.linalg.eig(a)
    kept = np.abs(vals) < radius if right_of is None else vals.real > right_of
    return (vecs @ np.diag(kept.astype(float)) @ np.linalg.inv(vecs)).real


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.usefixtures("optimised_compiles")
def test_disk_projector_matches_eigen_decomposition(seed):
    rng = np.random.default_rng(seed)
    lam = np.array([0.3, 0.8, 0.97, 1.0, 1.3, -0.5])
    t = rng.normal(size=(6, 6)) + 2 * np.eye(6)
    a = t @ np.diag(lam) @ np.linalg.inv(t)
    got = np.asarray(jax.jit(linalg.disk_projector)(jnp.asarray(a, jnp.float32), 0.99))
    ref = _reference_projector(a, 0.99)
    np.testing.assert_allclose(got, ref, atol=2e-3 * max(1.0, np.abs(ref).max()))
    # A projector: P^2 = P, commuting with a, rank = number of inside eigenvalues.
    np.testing.assert_allclose(got @ got, got, atol=5e-3 * max(1.0, np.abs(ref).max()))
    assert round(float(np.trace(got))) == 4  # 0.3, 0.8, 0.97, -0.5


def test_disk_projector_handles_complex_pairs():
    th = 0.4
    a = np.zeros((4, 4))
    a[:2, :2] = 0.7 * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    a[2:, 2:] = 1.05 * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    t = np.random.default_rng(0).normal(size=(4, 4)) + 2 * np.eye(4)
    a = t @ a @ np.linalg.inv(t)
    got = np.asarray(linalg.disk_projector(jnp.asarray(a, jnp.float32), 0.99))
    np.testing.assert_allclose(got, _reference_projector(a, 0.99), atol=1e-3 * np.abs(got).max())


def test_svht_coefficient_square_matrix_constant():
    # omega(1) ~ 2.858, the known square-matrix constant for unknown noise.
    assert abs(linalg.svht_coefficient(1.0) - 2.86) < 5e-3
    assert abs(linalg.svht_coefficient(0.0) - 1.43) < 1e-12


@pytest.mark.parametrize("rank", ["svht", 2, 0.9, 0.999])
def test_rank_mask_matches_pydmd_compute_rank(rank):
    from pydmd.utils import compute_rank

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3)) @ np.diag([10.0, 3.0, 1.0]) @ rng.normal(size=(3, 9))
    x = x + 0.01 * rng.normal(size=x.shape)
    s = np.linalg.svd(x, compute_uv=False)
    ref = compute_rank(x, 0 if rank == "svht" else rank)
    mask, r = linalg.rank_mask(jnp.asarray(s), rank=rank, matrix_shape=x.shape)
    assert int(r) == ref
    assert np.all(np.asarray(mask) == (np.arange(s.size) < ref))


def test_rank_mask_padding_and_noise_floor():
    s = jnp.array([5.0, 1.0, 1e-5, 0.0, 0.0])
    mask, r = linalg.rank_mask(s, rank=4, matrix_shape=(100, 5), num_valid=3, rcond=1e-3)
    assert int(r) == 2  # third value is below the noise floor, last two padding
    np.testing.assert_array_equal(np.asarray(mask), [True, True, False, False, False])


@pytest.mark.parametrize("bad", [0, -1, 1.0, 1.5, 0.0, True, "3", "auto", [2]])
def test_validate_rank_rejects(bad):
    with pytest.raises((ValueError, TypeError), match="rank"):
        linalg.validate_rank(bad)


def test_eigvals_rejects_non_square():
    with pytest.raises(ValueError, match="square"):
        linalg.eigvals(jnp.zeros((2, 3)))


def _low_rank_plus_noise(n, m, r, seed, noise=0.05):
    """``n x m`` increments: ``r`` decaying directions plus isotropic noise."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(n, r)))[0] if r else np.zeros((n, 0))
    coef = rng.normal(size=(r, m)) * np.linspace(30.0, 10.0, r)[:, None] if r else np.zeros((0, m))
    return basis @ coef + noise * rng.normal(size=(n, m))


@pytest.mark.parametrize("h", range(4, 11))
def test_default_rank_finds_the_true_rank_of_small_windows(h):
    """h snapshots -> m = h - 1 increments -> k = h - 2 DMD pairs."""
    import koopax

    m, k, n = h - 1, h - 2, 4000
    for r in sorted({1, k // 2, k}):
        for seed in range(3):
            x = _low_rank_plus_noise(n, m, r, seed)
            gram = jnp.asarray(x.T @ x, jnp.float32)
            red = koopax.dmd.gram_operator(gram, rank=None, num_features=n)
            assert int(red.rank) == r, (h, r, seed)
            svht = koopax.dmd.gram_operator(gram, rank="svht", num_features=n)
            if r == k >= 3:       # the rule it replaces never keeps a full window
                assert int(svht.rank) < r


@pytest.mark.parametrize("h", [4, 6, 10])
def test_default_rank_sees_no_mode_in_pure_noise(h):
    import koopax

    for seed in range(5):
        x = _low_rank_plus_noise(5000, h - 1, 0, seed)
        red = koopax.dmd.gram_operator(jnp.asarray(x.T @ x, jnp.float32), rank=None,
                                       num_features=5000)
        assert int(red.rank) == 0


def test_default_rank_keeps_a_slowly_decaying_spectrum():
    # Training increments: no cluster of equal values, every direction is signal.
    s = jnp.array([1.0, 0.46, 0.35])
    threshold = linalg.isotropic_noise_threshold(jnp.array([1.2, 1.0, 0.46, 0.35]),
                                                 num_rows=20000)
    assert float(threshold) == 0.0
    assert int(linalg.rank_mask(s, rank=None, matrix_shape=(20000, 3),
                                noise_threshold=threshold)[1]) == 3


def test_fixed_and_energy_ranks_ignore_the_noise_estimate():
    import koopax

    x = _low_rank_plus_noise(3000, 6, 1, 0)
    gram = jnp.asarray(x.T @ x, jnp.float32)
    assert int(koopax.dmd.gram_operator(gram, rank=3, num_features=3000).rank) == 3
    s = np.linalg.svd(x[:, :-1], compute_uv=False)
    energy = np.cumsum(s**2) / np.sum(s**2)
    expected = int(np.searchsorted(energy, 0.999) + 1)
    assert int(koopax.dmd.gram_operator(gram, rank=0.999, num_features=3000).rank) == expected


def test_projectors_are_exact_to_round_off_after_the_early_stop():
    # The sign iteration stops once a step changes X by < 0.1 sqrt(eps): the projector
    # must still be exact to float32 round-off on a well-separated spectrum.
    lam = np.array([0.2, 0.5, 0.8, 1.2, 1.5, -0.4])
    t = np.random.default_rng(5).normal(size=(6, 6)) + 3 * np.eye(6)
    a = t @ np.diag(lam) @ np.linalg.inv(t)
    ref = _reference_projector(a, 0.99)
    got = np.asarray(linalg.disk_projector(jnp.asarray(a, jnp.float32), 0.99))
    np.testing.assert_allclose(got, ref, atol=2e-5 * np.abs(ref).max())
    half = np.asarray(linalg.half_plane_projector(jnp.asarray(a, jnp.float32), 0.3))
    ref_half = _reference_projector(a, right_of=0.3)
    np.testing.assert_allclose(half, ref_half, atol=2e-5 * np.abs(ref_half).max())


def test_a_batch_gives_each_matrix_exactly_its_own_result():
    # The iterations stop at convergence; under vmap a converged matrix is frozen
    # until the batch's last one has converged: the eigenvalues bit for bit what the
    # matrix gets alone, the projectors to round-off (batched LAPACK inverses round
    # differently, as before the early stop).
    rng = np.random.default_rng(7)
    a = jnp.asarray(rng.normal(size=(12, 6, 6)), jnp.float32)
    sizes = jnp.asarray(rng.integers(1, 7, size=12), jnp.int32)
    values = jax.vmap(linalg.eigvals)(a, sizes)
    disks = jax.vmap(lambda x: linalg.disk_projector(x, 1.0))(a)
    for j in range(12):
        np.testing.assert_array_equal(values[j], linalg.eigvals(a[j], sizes[j]))
        np.testing.assert_allclose(disks[j], linalg.disk_projector(a[j], 1.0), atol=1e-5)
