"""Small dense linear algebra that runs on every backend, inside ``jit``.

DMD on a window of ``h`` snapshots reduces every N-dimensional question to an
``h x h`` (at most ~32 x 32) matrix problem. Two of those problems are
non-symmetric: the eigenvalues of the reduced operator and the projector onto
its stable invariant subspace. LAPACK's ``geev`` behind ``jnp.linalg.eig`` is a
CPU routine (on GPU JAX runs it as a host/device hybrid, on TPU it does not
exist), so koopax never calls it. Instead, for these tiny matrices:

* eigenvalues come from a shifted QR algorithm written with ``jnp.linalg.qr``
  (Householder QR exists on CPU, GPU and TPU), in complex arithmetic so that
  conjugate pairs need no double-shift bookkeeping;
* eigenvectors, when asked for (``exact_dmd``), come from inverse iteration
  with ``jnp.linalg.solve`` at the computed eigenvalues;
* the spectral projector onto the eigenvalues inside a disk comes from the
  matrix sign function (Newton iteration with Frobenius scaling), which needs
  only inverses and is well defined even when the operator is nearly defective
  (several eigenvalues near 1), where an eigenvector basis is ill-conditioned.

Everything is fixed-shape: a matrix of static size ``m`` carries its active
part in the leading ``size x size`` block (``size`` may be traced), and the
inactive rows/columns are zero.

References:
  Golub & Van Loan, *Matrix Computations*, 4th ed., 2013 (shifted QR, inverse
  iteration). Higham, *Functions of Matrices*, SIAM 2008, ch. 5 (matrix sign
  function, Newton iteration, scaling). Gavish & Donoho, `The Optimal Hard
  Threshold for Singular Values is 4/sqrt(3) <https://arxiv.org/abs/1305.5870>`_,
  IEEE TIT 2014.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


def _matmul(a, b):
    return jnp.matmul(a, b, precision=_HIGHEST)


def _complex_dtype(dtype):
    return jnp.complex128 if jnp.dtype(dtype) == jnp.float64 else jnp.complex64


# --------------------------------------------------------------------------
# Rank selection
# --------------------------------------------------------------------------


def smoothstep(x):
    """``3 x^2 - 2 x^3`` on ``x`` clipped to ``[0, 1]``: a C^1 step from 0 to 1.

    What koopax's soft floors and mask fades use in place of a hard cut, so
    that their output is a continuous function of the data.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import linalg
      >>> linalg.smoothstep(jnp.array([-1.0, 0.0, 0.5, 1.0, 2.0])).tolist()
      [0.0, 0.0, 0.5, 1.0, 1.0]

    References:
      Ebert, Musgrave, Peachey, Perlin, Worley, *Texturing and Modeling: A
      Procedural Approach*, 3rd ed., 2003 (the ``smoothstep`` polynomial).
    """
    x = jnp.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def svht_coefficient(beta):
    """Gavish–Donoho coefficient for unknown noise: ``tau = omega(beta) * median``.

    ``omega(beta) ~ 0.56 beta^3 - 0.95 beta^2 + 1.82 beta + 1.43`` with
    ``beta = min(n, m) / max(n, m)`` the aspect ratio of the matrix.
    """
    return 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43


#: Named rank policies besides ``None`` (the default, see :func:`rank_mask`).
RANK_POLICIES = ("svht",)


def known_noise_coefficient(beta):
    """Gavish–Donoho coefficient for a known noise level: ``tau = lambda*(beta) sqrt(n) sigma``.

    ``lambda*(beta) = sqrt(2 (beta + 1) + 8 beta / (beta + 1 + sqrt(beta^2 + 14 beta + 1)))``
    (``lambda*(1) = 4 / sqrt(3)``, ``lambda*(0) = sqrt(2)``), ``n`` the larger dimension.
    """
    return (2.0 * (beta + 1.0) + 8.0 * beta / (beta + 1.0 + (beta**2 + 14.0 * beta + 1.0) ** 0.5)
            ) ** 0.5


def validate_rank(rank, name: str = "rank"):
    """Checks a rank policy: ``None``, ``'svht'``, an int >= 1 or a float in (0, 1)."""
    if rank is None or (isinstance(rank, str) and rank in RANK_POLICIES):
        return
    what = f"{name} must be None, 'svht', an int >= 1 or a float in (0, 1); got {rank!r}."
    if isinstance(rank, bool) or isinstance(rank, str):
        raise ValueError(what)
    if isinstance(rank, numbers.Integral):
        if rank < 1:
            raise ValueError(f"{name} must be >= 1 when an int; got {rank}.")
        return
    if isinstance(rank, numbers.Real):
        if not 0.0 < float(rank) < 1.0:
            raise ValueError(f"{name} must lie in (0, 1) when a float; got {rank}.")
        return
    raise TypeError(what)


def isotropic_noise_threshold(singular_values, *, num_rows: int, num_valid=None):
    """The singular-value threshold of the isotropic noise in a tall window, or 0 if none.

    Isotropic noise of level ``sigma`` in ``n`` dimensions gives an ``n x m``
    matrix (``n >> m``) whose singular values all lie in the Marchenko–Pastur
    bulk ``sqrt(n) sigma (1 +- sqrt(m / n))``: they are nearly equal. The
    bulk is the trailing run of values within ``(1 + t) / (1 - t)`` of the
    smallest, ``t = sqrt(m / n) + 2 / sqrt(n)`` (the edge ratio plus a
    finite-size margin that holds the largest-over-smallest ratio of 99.9 %
    of Gaussian matrices from ``n = 32`` to ``1e5``, ``m = 2..9``). When it
    holds at least two values the noise level ``sqrt(n) sigma`` is their mean
    and the threshold is Gavish–Donoho's for a known noise level,
    ``lambda*(beta) sqrt(n) sigma`` (:func:`known_noise_coefficient`); a
    single trailing value carries no evidence of noise, and the threshold is
    0. So is it when ``t >= 1/2`` (too few rows to see a bulk).

    Args:
      singular_values: ``(m,)`` singular values of the window, descending.
      num_rows: ``n`` (a number, or a traced scalar: one value per block under ``vmap``).
      num_valid: number of meaningful entries (the rest padding).
    """
    s = jnp.asarray(singular_values)
    m = s.shape[0]
    if isinstance(num_rows, numbers.Real):     # a static size: Python arithmetic
        t = (m / num_rows) ** 0.5 + 2.0 / num_rows**0.5
        if t >= 0.5:
            return jnp.zeros((), s.dtype)
        coefficient = known_noise_coefficient(m / num_rows)
    else:
        rows = jnp.maximum(jnp.asarray(num_rows, jnp.float32), 1.0)
        t = jnp.sqrt(m / rows) + 2.0 / jnp.sqrt(rows)
        coefficient = known_noise_coefficient(m / rows)
    nv = jnp.asarray(m if num_valid is None else num_valid, jnp.int32)
    valid = jnp.arange(m) < nv
    smallest = jnp.take(s, jnp.maximum(nv - 1, 0))
    bulk = valid & (s <= (1.0 + t) / (1.0 - t) * smallest)
    size = jnp.sum(bulk)
    level = jnp.sum(jnp.where(bulk, s, 0.0)) / jnp.maximum(size, 1)
    threshold = coefficient * level
    return jnp.where((size >= 2) & (smallest > 0) & (t < 0.5), threshold, 0.0).astype(s.dtype)


def rank_mask(singular_values, *, rank, matrix_shape, num_valid=None, rcond=0.0,
              noise_threshold=None):
    """Which singular values (sorted descending) a rank policy keeps.

    Args:
      singular_values: ``(k,)`` non-negative, sorted in descending order.
      rank: the policy.

        * ``None`` (default): keep the values above ``noise_threshold``
          (:func:`isotropic_noise_threshold` of the whole window; 0 when
          not given), possibly none. Why: DMD windows hold 2-10 values.
          Gavish–Donoho's rule for an unknown noise level thresholds at
          ``omega(beta) * median(sigma)`` and assumes most values are noise;
          with 3 values the median *is* ``sigma_2`` and ``omega > 1``, so it
          returns rank 1 by construction whatever the data. What a handful
          of values can still show is the signature of isotropic noise in
          ``n >> m`` dimensions, a cluster of nearly equal values at the
          bottom; without one, every value above the numerical floor is
          signal (training increments decay slowly in every direction).
        * ``'svht'``: Gavish–Donoho unknown noise
          (``sigma_i > omega(beta) * median(sigma)``, at least one kept, as
          PyDMD's ``svd_rank=0``).
        * an int: fixed rank; a float in (0, 1): the smallest rank whose
          cumulative energy ``sum sigma^2`` reaches it.
      matrix_shape: ``(rows, cols)`` of the matrix whose singular values
        these are (for ``beta``; ``rows`` may be traced).
      num_valid: number of meaningful entries (the rest are padding); default
        all.
      rcond: singular values ``<= rcond * sigma_1`` are dropped in every policy
        (numerical noise floor).
      noise_threshold: with ``rank=None``, values at or below it are noise.

    Returns:
      ``(mask, rank)``: a boolean prefix mask of shape ``(k,)`` and its count.
    """
    validate_rank(rank)
    s = jnp.asarray(singular_values)
    k = s.shape[0]
    idx = jnp.arange(k)
    nv = jnp.asarray(k if num_valid is None else num_valid, jnp.int32)
    valid = idx < nv
    s = jnp.where(valid, s, 0.0)
    floor = (s > rcond * s[0]) & (s > 0)
    if rank is None:
        threshold = 0.0 if noise_threshold is None else noise_threshold
        keep = jnp.sum((s > threshold) & valid)
    elif rank == "svht":
        rows, cols = matrix_shape
        if isinstance(rows, numbers.Real):
            beta = min(rows, cols) / max(rows, cols)
        else:
            rows = jnp.maximum(jnp.asarray(rows, jnp.float32), 1.0)
            beta = jnp.minimum(rows, cols) / jnp.maximum(rows, cols)
        lo = jnp.take(s, jnp.maximum(nv - 1, 0) // 2)
        hi = jnp.take(s, nv // 2)
        tau = svht_coefficient(beta) * 0.5 * (lo + hi)
        keep = jnp.maximum(jnp.sum((s > tau) & valid), 1)
    elif isinstance(rank, numbers.Integral):
        keep = jnp.minimum(rank, nv)
    else:
        energy = s**2
        cumulative = jnp.cumsum(energy) / jnp.maximum(jnp.sum(energy), 1e-30)
        keep = jnp.searchsorted(cumulative, rank) + 1
    mask = (idx < keep) & floor & valid
    # Keep the mask a prefix (floor and validity are monotone in idx).
    return mask, jnp.sum(mask).astype(jnp.int32)


# --------------------------------------------------------------------------
# Eigenvalues and eigenvectors of small non-symmetric matrices
# --------------------------------------------------------------------------


def _leading_block(m, size):
    idx = jnp.arange(m)
    return (idx[:, None] < size) & (idx[None, :] < size)


@functools.partial(jax.jit, static_argnames=("max_iterations",))
def eigvals(a, size=None, *, max_iterations: int = 60):
    """Eigenvalues of the leading ``size x size`` block of a real square matrix.

    Shifted QR algorithm in complex arithmetic with deflation from the bottom:
    for ``k = size-1, ..., 1`` iterate ``H - mu I = QR``, ``H <- RQ + mu I`` on
    the active block ``H[:k+1, :k+1]`` (Wilkinson shift ``mu`` from its
    trailing 2 x 2 block, an exceptional shift every 11 iterations) until the
    off-diagonal part of row ``k`` is negligible (or ``max_iterations``);
    then ``H[k, k]`` is an eigenvalue. A stage stops at convergence, and a
    batch (``vmap`` over seeds or blocks) runs until its last matrix has
    converged, the others frozen: each matrix gets exactly its own result,
    and nothing compiles per call. About 3 iterations per eigenvalue (a
    fixed 60 made a KGA refresh of a 5 x 5 operator cost 0.9 ms on CPU).

    Args:
      a: ``(m, m)`` real matrix.
      size: active size (int, may be traced); default ``m``.
      max_iterations: QR iterations allowed per eigenvalue.

    Returns:
      ``(m,)`` complex eigenvalues, entries ``>= size`` set to 0 (unordered).
    """
    a = jnp.asarray(a)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"a must be a square matrix; got shape {a.shape}.")
    m = a.shape[0]
    if size is None:
        size = m
    size = jnp.asarray(size, jnp.int32)
    cdt = _complex_dtype(a.dtype)
    eye = jnp.eye(m, dtype=cdt)
    idx = jnp.arange(m)
    h = jnp.where(_leading_block(m, size), a, 0).astype(cdt)
    eps = jnp.finfo(a.dtype).eps
    tiny = jnp.finfo(a.dtype).tiny
    scale = jnp.maximum(jnp.max(jnp.abs(h)), tiny)

    def stage(i, h):
        k = m - 1 - i
        active = _leading_block(m, k + 1)
        row = (idx < k).astype(h.dtype)
        live = (k >= 1) & (k < size)

        def offdiag(h):
            return jnp.sqrt(jnp.sum(jnp.abs(h[k] * row) ** 2))

        def unconverged(carry):
            it, h = carry
            return live & (it < max_iterations) & (offdiag(h) > 4 * eps * scale)

        def qr_step(carry):
            it, h = carry
            p, q, r, s = h[k - 1, k - 1], h[k - 1, k], h[k, k - 1], h[k, k]
            half_trace = 0.5 * (p + s)
            disc = jnp.sqrt(0.25 * (p - s) ** 2 + q * r)
            mu1, mu2 = half_trace + disc, half_trace - disc
            mu = jnp.where(jnp.abs(mu1 - s) < jnp.abs(mu2 - s), mu1, mu2)
            exceptional = (it % 11) == 10
            mu = jnp.where(exceptional, s + 0.75 * offdiag(h), mu)
            shifted = jnp.where(active, h - mu * eye, eye)
            qm, rm = jnp.linalg.qr(shifted)
            return it + 1, jnp.where(active, _matmul(rm, qm) + mu * eye, h)

        # A stage stops once its row has converged: under vmap the loop runs
        # until every matrix has, a converged one frozen, so each gets the
        # result it gets alone.
        return jax.lax.while_loop(unconverged, qr_step, (jnp.zeros((), jnp.int32), h))[1]

    h = jax.lax.fori_loop(0, m, stage, h)
    return jnp.where(idx < size, jnp.diagonal(h), 0)


@functools.partial(jax.jit, static_argnames=("inverse_iterations",))
def eig(a, size=None, *, inverse_iterations: int = 4):
    """Eigenvalues and unit right eigenvectors of the leading block of ``a``.

    Eigenvalues from :func:`eigvals`; each eigenvector from inverse iteration
    ``x <- (A - (lambda + delta) I)^{-1} x``, normalized, with a tiny shift
    ``delta = 1e-5 ||A||``. Eigenvalues closer together than ``delta`` share
    (nearly) the same vector, as for any defective matrix.

    Each vector's phase is fixed so that its largest-modulus component is
    real and positive (deterministic modes and amplitudes).

    Returns:
      ``(eigenvalues (m,), eigenvectors (m, m))``; column ``j`` belongs to
      eigenvalue ``j``; entries of inactive eigenvalues / rows are 0.
    """
    a = jnp.asarray(a)
    m = a.shape[0]
    if size is None:
        size = m
    size = jnp.asarray(size, jnp.int32)
    values = eigvals(a, size)
    cdt = values.dtype
    idx = jnp.arange(m)
    active_rows = idx < size
    block = _leading_block(m, size)
    ac = jnp.where(block, a, 0).astype(cdt)
    scale = jnp.maximum(jnp.max(jnp.abs(ac)), jnp.finfo(a.dtype).tiny)
    start = jnp.where(active_rows, 1.0 + 0.37 * jnp.cos(1.7 * idx + 0.3), 0).astype(cdt)
    start = start + 1j * jnp.where(active_rows, 0.21 * jnp.sin(0.9 * idx), 0)

    def vector(lam):
        shift = lam + 1e-5 * scale
        mat = jnp.where(block, ac - shift * jnp.eye(m, dtype=cdt), jnp.eye(m, dtype=cdt))

        def body(_, x):
            y = jnp.linalg.solve(mat, x)
            return y / jnp.maximum(jnp.linalg.norm(y), jnp.finfo(a.dtype).tiny)

        return jax.lax.fori_loop(0, inverse_iterations, body, start / jnp.linalg.norm(start))

    vectors = jax.vmap(vector)(values).T
    # Canonical phase: the largest-modulus component of each vector is real > 0.
    pivot = jnp.take_along_axis(vectors, jnp.argmax(jnp.abs(vectors), 0)[None], 0)
    vectors = vectors * (jnp.abs(pivot) / jnp.where(pivot == 0, 1, pivot))
    vectors = jnp.where(active_rows[None, :] & active_rows[:, None], vectors, 0)
    return values, vectors


# --------------------------------------------------------------------------
# Spectral projector onto a disk
# --------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("iterations",))
def disk_projector(a, radius, *, iterations: int = 40):
    """Spectral projector of ``a`` onto its eigenvalues with ``|lambda| < radius``.

    The Moebius map ``w = (1 - z) / (1 + z)`` sends the unit disk to the right
    half plane, so with ``B = a / radius`` and ``C = (I + B)^{-1} (I - B)``,
    ``P = (I + sign(C)) / 2`` projects onto the invariant subspace of the
    eigenvalues inside the disk, along the others (an oblique projector that
    commutes with ``a``). ``sign(C)`` is the limit of the scaled Newton
    iteration ``X <- (g X + (g X)^{-1}) / 2`` with ``g = sqrt(|X^{-1}|_F /
    |X|_F)``. No eigenvectors are formed, so near-defective ``a`` is fine;
    eigenvalues on the circle itself (or at ``-radius``, the map's pole) have
    no defined side and make the result inaccurate or non-finite: callers
    check finiteness.

    Args:
      a: ``(m, m)`` real matrix.
      radius: positive scalar.
      iterations: most Newton iterations (it stops at convergence: about 5-8,
        quadratic once scaled; a fixed 40 cost a KGA refresh 0.2 ms on CPU).

    Returns:
      ``(m, m)`` real projector.
    """
    a = jnp.asarray(a)
    m = a.shape[0]
    eye = jnp.eye(m, dtype=a.dtype)
    b = a / radius
    return 0.5 * (eye + _sign(jnp.linalg.solve(eye + b, eye - b), iterations))


def _sign(x, iterations):
    """The matrix sign function by the scaled Newton iteration (Higham 2008, ch. 5).

    It stops once an iteration changes ``X`` by less than ``0.1 sqrt(eps)``
    relative (quadratic convergence: the last iterate is then exact to
    round-off), or after ``iterations``; under ``vmap`` a converged matrix is
    frozen until the batch's last one has converged.
    """
    tol = 0.1 * float(jnp.finfo(x.dtype).eps) ** 0.5

    def unconverged(carry):
        it, _, change = carry
        return (it < iterations) & (change > tol)

    def newton(carry):
        it, x, _ = carry
        xinv = jnp.linalg.inv(x)
        g = jnp.sqrt(jnp.linalg.norm(xinv) / jnp.maximum(jnp.linalg.norm(x), 1e-30))
        g = jnp.where(jnp.isfinite(g) & (g > 0), g, 1.0)
        new = 0.5 * (g * x + xinv / g)
        change = jnp.linalg.norm(new - x) / jnp.maximum(jnp.linalg.norm(new), 1e-30)
        return it + 1, new, change

    start = (jnp.zeros((), jnp.int32), x, jnp.asarray(jnp.inf, x.dtype))
    return jax.lax.while_loop(unconverged, newton, start)[1]


@functools.partial(jax.jit, static_argnames=("iterations",))
def half_plane_projector(a, shift, *, iterations: int = 40):
    """Spectral projector of ``a`` onto its eigenvalues with ``Re lambda > shift``.

    ``P = (I + sign(a - shift I)) / 2``, the matrix sign function by the same
    scaled Newton iteration as :func:`disk_projector` (an eigenvalue on the
    line itself has no defined side). It commutes with ``a`` and with the
    disk projector of ``a``, so their product projects onto the intersection.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import linalg
      >>> p = linalg.half_plane_projector(jnp.diag(jnp.array([0.9, -0.5, 0.0])), 0.02)
      >>> [round(float(x), 4) for x in jnp.diag(p)]
      [1.0, 0.0, 0.0]
    """
    a = jnp.asarray(a)
    eye = jnp.eye(a.shape[0], dtype=a.dtype)
    return 0.5 * (eye + _sign(a - shift * eye, iterations))
