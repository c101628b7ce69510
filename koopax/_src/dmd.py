"""Exact dynamic mode decomposition by the method of snapshots.

Given snapshots ``w_0, ..., w_{h-1}`` (consecutive pairs ``w_t -> w_{t+1}``),
with ``X = [w_0 ... w_{h-2}]`` and ``Y = [w_1 ... w_{h-1}]``, exact DMD
(Schmid 2010; Tu et al. 2014) is

    X = U S V^T (rank r),   A~ = U^T Y V S^{-1},   A~ Q = Q Lambda,
    Phi = Y V S^{-1} Q (exact modes),   b = Phi^+ w_0,
    w_t ~ Re sum_k b_k lambda_k^t phi_k.

The snapshot dimension N is huge and h is small, so everything is computed
from the ``h x h`` Gram matrix ``G = W^T W`` (method of snapshots): ``eigh`` of
``X^T X = G[:-1, :-1] = V S^2 V^T`` gives V and S, and

    A~ = S^{-1} V^T (X^T Y) V S^{-1},   X^T Y = G[:-1, 1:],

so U is never formed, and modes are linear combinations of the stored
snapshots. ``G`` is a sum of per-leaf Gram matrices: a pytree is never
flattened or concatenated.

Numerics: the Gram route squares the condition number, so singular values
below ``rcond * sigma_1`` (default ``1e-3`` in float32, ``1e-6`` in float64)
are treated as noise and dropped whatever the rank policy. Raw weight
snapshots share a large common component; for training dynamics koopax's
transformations therefore run DMD on increments ``w_{t+1} - w_t`` (see
:mod:`koopax._src.snapshots`), while :func:`exact_dmd` is the textbook quantity on
whatever snapshots it is given.

References:
  Schmid, `Dynamic mode decomposition of numerical and experimental data
  <https://doi.org/10.1017/S0022112010001217>`_, JFM 2010.
  Tu, Rowley, Luchtenburg, Brunton, Kutz, `On dynamic mode decomposition:
  theory and applications <https://arxiv.org/abs/1312.0041>`_, JCD 2014.
  Kutz, Brunton, Brunton, Proctor, *Dynamic Mode Decomposition*, SIAM 2016.
  Avila & Mezic, `Data-driven analysis and forecasting of highway traffic
  dynamics <https://doi.org/10.1038/s41467-020-15582-5>`_, Nat. Commun. 2020
  (neutral / stable / unstable eigenvalue classes).
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from koopax._src import linalg, tree_math, validation

_HIGHEST = jax.lax.Precision.HIGHEST


def default_rcond(dtype) -> float:
    """Noise floor for singular values obtained through a Gram matrix."""
    return 1e-6 if jnp.dtype(dtype) == jnp.float64 else 1e-3


class ReducedOperator(NamedTuple):
    """The DMD operator in POD coordinates, from Gram blocks alone.

    Attributes:
      right_vectors: ``V``, ``(k, k)``, columns sorted by singular value.
      singular_values: ``S``, ``(k,)``, descending (zero beyond ``rank``).
      inverse_singular_values: ``S^{-1}`` on the kept values, 0 elsewhere.
      operator: ``A~``, ``(k, k)``, zero outside its leading ``rank`` block.
      rank: number of kept singular values (int32 scalar).
    """

    right_vectors: jax.Array
    singular_values: jax.Array
    inverse_singular_values: jax.Array
    operator: jax.Array
    rank: jax.Array


def floor_taper(singular_values, rcond):
    """Weights in ``[0, 1]`` that fade singular values out smoothly towards the floor.

    ``f(s) = smoothstep((s / sigma_1 - rcond) / rcond)``: 0 at or below
    ``rcond * sigma_1``, 1 from ``2 rcond * sigma_1`` up, ``3x^2 - 2x^3`` in
    between. Used in place of the hard floor by the predictions
    (:func:`koopax.pdt`), whose output must not jump when a singular value
    crosses the floor under round-off: with the taper the reduced operator,
    and everything computed from it, is a continuous function of the Gram
    matrix, so 8 devices and 1 agree to round-off times a bounded factor
    (``1 / rcond``) instead of by a whole mode.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src.dmd import floor_taper
      >>> floor_taper(jnp.array([1.0, 0.3, 0.15, 0.05]), 0.1).round(3).tolist()
      [1.0, 1.0, 0.5, 0.0]
    """
    s = jnp.asarray(singular_values)
    return linalg.smoothstep((s / jnp.maximum(s[0], jnp.finfo(s.dtype).tiny) - rcond) / rcond)


def reduced_operator(gram_xx, gram_xy, *, rank, matrix_shape, num_valid=None, rcond=None,
                     noise_threshold=None, taper=False):
    """``A~ = S^{-1} V^T (X^T Y) V S^{-1}`` from ``X^T X`` and ``X^T Y``.

    Args:
      gram_xx: ``(k, k)`` symmetric ``X^T X``.
      gram_xy: ``(k, k)`` ``X^T Y``.
      rank: rank policy (see :func:`koopax.dmd.rank_mask`).
      matrix_shape: static ``(N, k)`` shape of ``X`` (for ``rank='svht'``).
      num_valid: number of meaningful snapshot pairs (padding beyond).
      rcond: noise floor relative to ``sigma_1``; default by dtype.
      noise_threshold: the isotropic-noise threshold of the default policy
        (:func:`gram_operator` computes it from the whole window).
      taper: fade the values between ``rcond`` and ``2 rcond`` times
        ``sigma_1`` out smoothly (:func:`floor_taper`) instead of cutting at
        ``rcond``: ``S^{-1}`` becomes ``f(S) S^{-1}``.
    """
    dtype = gram_xx.dtype
    if rcond is None:
        rcond = default_rcond(dtype)
    evals, evecs = jnp.linalg.eigh(gram_xx)
    evals, evecs = evals[::-1], evecs[:, ::-1]
    s = jnp.sqrt(jnp.maximum(evals, 0.0))
    mask, r = linalg.rank_mask(s, rank=rank, matrix_shape=matrix_shape, num_valid=num_valid,
                               rcond=rcond, noise_threshold=noise_threshold)
    s_inv = jnp.where(mask, 1.0 / jnp.where(mask, s, 1.0), 0.0)
    if taper:
        s_inv = s_inv * floor_taper(s, rcond)
    vs = evecs * s_inv[None, :]
    atilde = jnp.matmul(jnp.matmul(vs.T, gram_xy, precision=_HIGHEST), vs, precision=_HIGHEST)
    return ReducedOperator(evecs, jnp.where(mask, s, 0.0), s_inv, atilde, r)


def gram_operator(gram, *, rank, num_features: int, num_valid=None, rcond=None, taper=False):
    """The reduced DMD operator of a window of ``m`` snapshots from its ``m x m`` Gram matrix.

    ``X`` is the first ``m - 1`` snapshots and ``Y`` the last ``m - 1``, so
    ``X^T X = G[:-1, :-1]`` and ``X^T Y = G[:-1, 1:]`` (:func:`reduced_operator`).
    With the default rank policy (``rank=None``) the noise threshold comes
    from the singular values of the whole window, ``sqrt(eig(G))``
    (:func:`koopax._src.linalg.isotropic_noise_threshold`): its ``m`` values show
    a noise cluster that the ``m - 1`` of ``X`` alone may hide.

    Args:
      gram: ``(m, m)`` Gram matrix of the window, oldest snapshot first.
      rank: rank policy (:func:`koopax.dmd.rank_mask`).
      num_features: static ``N``, the size of one snapshot.
      num_valid: meaningful pairs (default all ``m - 1``).
      rcond: noise floor relative to ``sigma_1``; default by dtype.
      taper: a smooth floor (:func:`reduced_operator`).

    Examples:
      >>> import jax.numpy as jnp, koopax
      >>> d = jnp.array([[1.0, 0.0], [0.5, 0.1], [0.25, 0.1]])  # 3 snapshots
      >>> red = koopax.dmd.gram_operator(d @ d.T, rank=1, num_features=2)
      >>> int(red.rank), red.operator.shape
      (1, (2, 2))
    """
    gram = jnp.asarray(gram)
    k = gram.shape[0] - 1
    threshold = None
    if rank is None:
        window = jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(gram)[::-1], 0.0))
        threshold = linalg.isotropic_noise_threshold(
            window, num_rows=num_features, num_valid=None if num_valid is None else num_valid + 1)
    return reduced_operator(gram[:-1, :-1], gram[:-1, 1:], rank=rank,
                            matrix_shape=(num_features, k), num_valid=num_valid, rcond=rcond,
                            noise_threshold=threshold, taper=taper)


class EigenvalueClasses(NamedTuple):
    """Boolean masks of the three eigenvalue classes (Avila & Mezic 2020).

    ``neutral``: ``1 - eps <= |lambda| <= 1 + eps``; ``stable``:
    ``|lambda| < 1 - eps``; ``unstable``: ``|lambda| > 1 + eps``. Padding
    entries (outside ``valid``) are in no class.
    """

    neutral: jax.Array
    stable: jax.Array
    unstable: jax.Array


def classify_eigenvalues(eigenvalues, epsilon=1e-2, valid=None) -> EigenvalueClasses:
    """Splits eigenvalues into neutral, stable and unstable (see EigenvalueClasses)."""
    if isinstance(epsilon, numbers.Real) and not 0.0 <= float(epsilon) < 1.0:
        raise ValueError(f"epsilon must lie in [0, 1); got {epsilon}.")
    mod = jnp.abs(jnp.asarray(eigenvalues))
    valid = jnp.ones(mod.shape, bool) if valid is None else jnp.asarray(valid, bool)
    stable = valid & (mod < 1.0 - epsilon)
    unstable = valid & (mod > 1.0 + epsilon)
    return EigenvalueClasses(valid & ~stable & ~unstable, stable, unstable)


class DMD(NamedTuple):
    """Result of :func:`exact_dmd`.

    Attributes:
      eigenvalues: ``(r,)`` complex DMD eigenvalues, sorted by decreasing
        modulus; entries at index ``>= rank`` are 0.
      modes: pytree shaped like one snapshot with a leading ``(r,)`` axis,
        complex exact modes ``Phi = Y V S^{-1} Q`` (unit-norm eigenvectors
        ``Q`` of ``A~``, as PyDMD); zero beyond ``rank``.
      amplitudes: ``(r,)`` complex ``b = Phi^+ w_0`` (least squares).
      rank: int32 scalar, number of modes kept.
      singular_values: ``(h-1,)`` singular values of ``X`` (zero when dropped).
    """

    eigenvalues: jax.Array
    modes: Any
    amplitudes: jax.Array
    rank: jax.Array
    singular_values: jax.Array


def sort_eigenvalues(values, valid):
    """Order: valid first, decreasing modulus, the positive-imaginary member of a
    conjugate pair first (moduli compared to 6 significant digits so that
    round-off does not decide the order within a pair)."""
    mod = jnp.abs(values)
    key = jnp.round(mod / jnp.maximum(jnp.max(mod), 1e-30) * 1e6)
    key = jnp.where(valid, -key, jnp.inf)
    return jnp.lexsort((-jnp.imag(values), key))


def _num_snapshots(snapshots) -> int:
    leaves = jax.tree.leaves(snapshots)
    if not leaves:
        raise ValueError("snapshots: the pytree has no leaves.")
    if leaves[0].ndim < 1:
        raise ValueError("snapshots: leaves need a leading snapshot axis.")
    return leaves[0].shape[0]


def exact_dmd(snapshots, *, rank=None, rcond=None) -> DMD:
    """Exact DMD of a snapshot sequence, the quantity PyDMD's ``DMD(exact=True)`` computes.

    Args:
      snapshots: an array of shape ``(h, ...)`` or a pytree whose leaves all
        carry the ``h`` snapshots on their leading axis (``h >= 2``).
      rank: ``None`` (every singular value above the isotropic-noise
        cluster of the window, possibly none: see
        :func:`koopax.dmd.rank_mask`), ``'svht'`` (Gavish–Donoho optimal
        hard threshold for unknown noise, PyDMD's ``svd_rank=0``), an int
        (fixed rank; also the static size of the result), or a float in
        ``(0, 1)`` (cumulative energy). Modes beyond the chosen rank are
        zero-padded so that shapes are static under ``jit``.
        Any NaN or infinite entry (or entries so large that their inner
        products overflow) makes the result NaN: see Returns.
      rcond: singular values ``<= rcond * sigma_1`` are dropped (Gram noise
        floor); default ``1e-3`` for float32, ``1e-6`` for float64.

    Returns:
      A :class:`DMD`. Reconstruct or forecast with :func:`reconstruct`, apply
      the operator to a new state with :func:`predict`. For finite snapshots
      every field is finite (a window without dynamics has rank 0 and zero
      eigenvalues). For non-finite snapshots ``eigenvalues``, ``modes``,
      ``amplitudes`` and ``singular_values`` are NaN (same shapes), ``rank``
      is 0, and :func:`reconstruct` / :func:`predict` return NaN: nothing
      raises, eagerly or under ``jit`` (no check on values in Python): test
      ``jnp.isfinite(dmd.eigenvalues).all()``, ``False`` in this case.

    Eigenvalues come from a QR algorithm and eigenvectors from inverse
    iteration (:mod:`koopax._src.linalg`): no LAPACK ``geev``, so this runs under
    ``jit`` on CPU, GPU and TPU.

    Examples:
      >>> import jax.numpy as jnp, koopax
      >>> w = 0.5 ** jnp.arange(4.0)[:, None] * jnp.array([[1.0, 2.0]])  # w_t = 0.5^t w_0
      >>> dmd = koopax.exact_dmd(w, rank=1)
      >>> int(dmd.rank), round(float(dmd.eigenvalues[0].real), 4)
      (1, 0.5)
      >>> bad = koopax.exact_dmd(w.at[2, 0].set(jnp.nan), rank=1)
      >>> int(bad.rank), bool(jnp.isfinite(bad.eigenvalues).all())
      (0, False)
    """
    linalg.validate_rank(rank)
    validation.optional_fraction(rcond, "rcond")
    if isinstance(snapshots, (list, tuple)) and not hasattr(snapshots, "_fields"):
        raise TypeError(
            "snapshots: a list or tuple is ambiguous (a sequence of snapshots, or a pytree "
            "whose leaves carry the snapshot axis): pass jnp.stack(snapshots) for the "
            "first, a dict or NamedTuple for the second.")
    h = _num_snapshots(snapshots)
    if h < 2:
        raise ValueError(f"snapshots: need at least 2 snapshots; got {h}.")
    k = h - 1
    num_features = tree_math.tree_size(snapshots) // h
    cap = min(rank, k) if isinstance(rank, numbers.Integral) else k

    gram = tree_math.stacked_gram(snapshots)
    # Any non-finite snapshot entry makes its diagonal Gram entry inf or NaN, and
    # so does an overflowing inner product: an (h, h) test covers the input. The
    # algebra runs on a zero Gram matrix (rank 0, no NaN inside eigh or the QR
    # iterations), and the result is set to NaN at the end.
    finite = jnp.all(jnp.isfinite(gram))
    gram = jnp.where(finite, gram, 0)
    red = gram_operator(gram, rank=rank, num_features=num_features, rcond=rcond)
    values, vectors = linalg.eig(red.operator, red.rank)
    valid = jnp.arange(k) < red.rank
    order = sort_eigenvalues(values, valid)[:cap]
    values, vectors, valid = values[order], vectors[:, order], valid[order]

    # Exact modes Phi = Y (V S^{-1} Q): coefficients on the snapshots w_1..w_{h-1}.
    coef = jnp.matmul((red.right_vectors * red.inverse_singular_values).astype(values.dtype),
                      vectors, precision=_HIGHEST)
    coef = jnp.where(valid[None, :], coef, 0)
    tail = jax.tree.map(lambda x: x[1:], snapshots)
    modes = tree_math.stacked_combination(tail, coef)

    # b = argmin |Phi b - w_0|: normal equations through the Gram matrix.
    gram_c = gram.astype(coef.dtype)
    normal = jnp.matmul(jnp.matmul(coef.conj().T, gram_c[1:, 1:], precision=_HIGHEST),
                        coef, precision=_HIGHEST)
    both = valid[:, None] & valid[None, :]
    normal = jnp.where(both, normal, jnp.eye(cap, dtype=normal.dtype))
    rhs = jnp.where(valid, jnp.matmul(coef.conj().T, gram_c[1:, 0], precision=_HIGHEST), 0)
    amplitudes = jnp.where(valid, jnp.linalg.solve(normal, rhs), 0)

    def nan_unless_finite(x):
        return jnp.where(finite, x, jnp.full_like(x, jnp.nan))

    values, amplitudes, singular_values = map(
        nan_unless_finite, (values, amplitudes, red.singular_values))
    modes = jax.tree.map(nan_unless_finite, modes)
    return DMD(values, modes, amplitudes, red.rank, singular_values)


def _powers(eigenvalues, times):
    """``lambda_k ** t`` for real (possibly fractional) t, with ``0 ** 0 = 1``."""
    lam = eigenvalues[None, :]
    t = jnp.asarray(times, jnp.float32 if eigenvalues.dtype == jnp.complex64 else jnp.float64)
    t = t[:, None].astype(lam.dtype)
    safe = jnp.where(lam == 0, 1, lam)
    out = jnp.exp(t * jnp.log(safe))
    return jnp.where(lam == 0, (t == 0).astype(lam.dtype), out)


def reconstruct(dmd: DMD, times):
    """``w_t ~ Re sum_k b_k lambda_k^t phi_k`` for each time index in ``times``.

    ``t = 0`` is the first snapshot; with ``h`` snapshots, ``t = h - 1 + s``
    forecasts ``s`` steps beyond the last one. Returns a real pytree whose
    leaves carry ``len(times)`` on the leading axis.
    """
    times = jnp.atleast_1d(jnp.asarray(times))
    if times.ndim != 1:
        raise ValueError(f"times must be a scalar or a 1-D array; got shape {times.shape}.")
    weights = _powers(dmd.eigenvalues, times) * dmd.amplitudes[None, :]

    def evolve(mode):
        r = mode.shape[0]
        out = jnp.matmul(weights, mode.reshape(r, -1), precision=_HIGHEST)
        return jnp.real(out).reshape((times.shape[0],) + mode.shape[1:])

    return jax.tree.map(evolve, dmd.modes)


def predict(dmd: DMD, state, steps):
    """Applies the DMD operator ``steps`` times to a new state.

    ``w(steps) = Re Phi Lambda^steps Phi^+ w``: the state is expressed in the
    modes by least squares and advanced. ``state`` is one snapshot-shaped
    pytree; returns a pytree of the same shape (real).
    """
    modes = dmd.modes
    leaves_m = jax.tree.leaves(modes)
    r = leaves_m[0].shape[0]
    valid = jnp.arange(r) < dmd.rank
    cdt = dmd.eigenvalues.dtype
    # Phi^H Phi and Phi^H w as sums over leaves.
    normal = sum(
        jnp.matmul(m.reshape(r, -1).conj(), m.reshape(r, -1).T, precision=_HIGHEST)
        for m in leaves_m
    )
    rhs = sum(
        jnp.matmul(m.reshape(r, -1).conj(), x.reshape(-1).astype(cdt), precision=_HIGHEST)
        for m, x in zip(leaves_m, jax.tree.leaves(state), strict=True)
    )
    both = valid[:, None] & valid[None, :]
    normal = jnp.where(both, normal, jnp.eye(r, dtype=normal.dtype))
    coords = jnp.where(valid, jnp.linalg.solve(normal, jnp.where(valid, rhs, 0)), 0)
    weights = coords * _powers(dmd.eigenvalues, jnp.asarray([steps]))[0]

    def evolve(mode, x):
        out = jnp.matmul(weights, mode.reshape(r, -1), precision=_HIGHEST)
        return jnp.real(out).reshape(x.shape).astype(x.dtype)

    return jax.tree.map(evolve, modes, state)
