"""Small test helpers written for koopax (tree comparisons, linear systems, a step)."""

import jax
import numpy as np
import optax


def value_step(tx, loss):
    """A jitted ``(params, state, extra=0) -> (params, state)`` step of ``tx`` on
    ``loss``, passing the loss plus ``extra`` as ``value``."""
    @jax.jit
    def step(params, state, extra=0.0):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = tx.update(grads, state, params, value=value + extra)
        return optax.apply_updates(params, updates), state

    return step


def assert_trees_equal(a, b):
    """Bitwise equality of two pytrees (structure, dtypes and values)."""
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb, (ta, tb)
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype, (x.dtype, y.dtype)
        np.testing.assert_array_equal(x, y)


def assert_trees_close(a, b, rtol=1e-6, atol=0.0):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        wide = np.complex128 if np.iscomplexobj(x) or np.iscomplexobj(y) else np.float64
        np.testing.assert_allclose(np.asarray(x, wide), np.asarray(y, wide), rtol=rtol, atol=atol)


def linear_trajectory(eigenvalues, num_features, num_steps, seed=0, noise=0.0):
    """Snapshots ``w_t = Re sum_k lambda_k^t b_k v_k`` of a real linear system.

    Complex eigenvalues must come in conjugate pairs; the system is
    ``w_{t+1} = A w_t`` with ``A = T diag(lambda) T^-1`` on a random
    ``len(eigenvalues)``-dimensional subspace of R^num_features.
    Returns ``(h, N)`` float64 snapshots.
    """
    rng = np.random.default_rng(seed)
    lam = np.asarray(eigenvalues, complex)
    r = lam.size
    # Real block-diagonal A with the chosen spectrum.
    a = np.zeros((r, r))
    i = 0
    while i < r:
        if abs(lam[i].imag) > 0:
            re, im = lam[i].real, abs(lam[i].imag)
            a[i:i + 2, i:i + 2] = [[re, -im], [im, re]]
            i += 2
        else:
            a[i, i] = lam[i].real
            i += 1
    t = rng.normal(size=(r, r)) + 2 * np.eye(r)
    a = t @ a @ np.linalg.inv(t)
    basis = rng.normal(size=(num_features, r))
    z = rng.normal(size=r)
    out = []
    for _ in range(num_steps):
        out.append(basis @ z)
        z = a @ z
    w = np.array(out)
    if noise:
        w = w + noise * rng.normal(size=w.shape)
    return w


def max_eigenvalue_mismatch(got, ref):
    """Greedy one-to-one matching of two eigenvalue multisets: largest distance."""
    remaining = list(np.asarray(got, complex))
    worst = 0.0
    for r in np.asarray(ref, complex):
        d = [abs(g - r) for g in remaining]
        j = int(np.argmin(d))
        worst = max(worst, d[j])
        remaining.pop(j)
    return worst
