"""KGA's operator and its bounded correction: pure functions of small matrices.

The operator (KGA paper, Eqs. 10-13) from the Gram matrix of ``m``
consecutive increments, ``X`` the first ``m - 1`` and ``Y`` the last::

    A~ = reduced DMD operator,   P_s = spectral projector onto |lambda| < 1 - eps, Re lambda > eps,
                                 P_o = spectral projector onto |lambda| < 1 - eps, Re lambda < -eps,
    M = A~ P_s + w A~ P_o (I - A~ P_o)^-1,      K = V S^-1 M S^-1 V^T,

so that ``U M U^T u = X K X^T u`` over the stored increments (no basis is
formed). ``P_s`` keeps the stable modes that decay forward: a stable mode
with ``Re lambda <= eps`` (the increments flip sign from one period to the
next) is an oscillation, not a slow transient, and its gain ``1 + s lambda``
would shrink or reverse the base's progress (Efficient-KGA's per-update
correction then spiked the loss 10-40x on the README's main job).

**[choice]** Such an oscillating mode is *damped* instead (``w = 1 / alpha``,
``damp_oscillations=True``; ``w = 0`` is the paper's KGA): its remaining
displacement ``sum_{j >= 1} lambda^j = lambda / (1 - lambda)`` times the last
one is the way back to the bounce's centre, so at the full gain ``s = alpha``
the update along it takes the factor ``1 / (1 - lambda)``, in ``(1/2, 1)`` for
a real ``lambda`` in ``(-1, 0)``. A smaller ``s`` (the bound, the valve) damps
less, never past the centre and never reversing the base. It is the Koopman
reading of iterate averaging: weights bouncing across a valley at the edge of
stability (a tuned rate) move to its floor. For a complex ``lambda`` with
``Re lambda < 0`` the factor has modulus below 1 too (``|1 - lambda| > 1``).

With blocks (:mod:`koopax._src.blocks`) every block ``b`` has its own
``K_b`` from its own Gram matrix. The correction of a base displacement ``u``
(one update, or the sum of several) is ``delta = X a`` with::

    a_b = s_b K_b X_b^T u_b,     s_b = min(scale * alpha, (max_gain - 1) / |M_b|_2)

(so ``|u_b + delta_b| <= max_gain |u_b|`` in each block), then bounded *per
leaf*: with the window's per-leaf Gram matrices ``G_l``, ``|delta_l|^2 = a^T
G_l a`` costs no pass, and leaf ``l`` receives ``f_l X_l a`` with ``f_l =
min(1, (max_gain - 1) |u_l| / |delta_l|)``. A spike in one leaf therefore never
leaks into another: the projection is per block, the bound per leaf.

References:
  Anonymous, *Dynamic Training Guided by Training Dynamics* (KGA, KWM),
  OpenReview 7AB077M4TY, 2024, Eqs. 7-13. Tu et al., `On dynamic mode
  decomposition: theory and applications <https://arxiv.org/abs/1312.0041>`_, 2014.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from koopax._src import linalg, tree_math
from koopax._src.blocks import Blocks
from koopax._src.dmd import gram_operator, sort_eigenvalues

_HIGHEST = jax.lax.Precision.HIGHEST


class Operator(NamedTuple):
    """KGA's operator over ``m - 1`` stored columns (per block: a leading block axis).

    Attributes:
      coefficients: ``(m-1, m-1)`` float32 ``K`` in time order.
      norm: float32 ``|A~ P_s|_2``.
      eigenvalues: ``(m-1,)`` complex64 DMD eigenvalues by decreasing modulus, 0-padded.
      rank: int32 DMD rank.
      num_stable: int32 amplified eigenvalues: ``|lambda| < 1 - epsilon`` and
        ``Re lambda > epsilon``.
      num_damped: int32 damped eigenvalues: ``|lambda| < 1 - epsilon`` and
        ``Re lambda < -epsilon`` (0 with ``damping = 0``).
      finite: bool, everything above is finite.
    """

    coefficients: jax.Array
    norm: jax.Array
    eigenvalues: jax.Array
    rank: jax.Array
    num_stable: jax.Array
    num_damped: jax.Array
    finite: jax.Array


def acceleration_operator(gram, *, epsilon, rank, num_features, rcond=None,
                          damping=0.0) -> Operator:
    """KGA's operator ``K`` from the ``(m, m)`` Gram matrix of ``m`` consecutive increments.

    ``damping``: ``w``, the weight of the oscillating modes' way to their
    centre (the module docstring); ``0`` leaves them to the base.

    Examples:
      Increments ``d_{t+1} = 0.5 d_t`` (one stable mode): ``M = 0.5`` and, with
      ``|d_0| = 1``, ``K = 0.5``:

      >>> import jax.numpy as jnp
      >>> from koopax._src.kga import operator
      >>> d = jnp.array([[1.0, 0.0], [0.5, 0.0], [0.25, 0.0]])
      >>> op = operator.acceleration_operator(d @ d.T, epsilon=0.01, rank="svht", num_features=2)
      >>> round(float(op.eigenvalues[0].real), 3), int(op.num_stable), round(float(op.norm), 3)
      (0.5, 1, 0.5)

      Increments that flip sign, ``d_{t+1} = -0.8 d_t``, are damped: at ``w = 1``
      the update along them is moved by ``lambda / (1 - lambda) = -0.444``:

      >>> d = jnp.array([[1.0, 0.0], [-0.8, 0.0], [0.64, 0.0]])
      >>> op = operator.acceleration_operator(d @ d.T, epsilon=0.01, rank="svht",
      ...                                     num_features=2, damping=1.0)
      >>> int(op.num_stable), int(op.num_damped), round(float(op.norm), 3)
      (0, 1, 0.444)
    """
    k = gram.shape[0] - 1
    red = gram_operator(gram, rank=rank, num_features=num_features, rcond=rcond)
    # Amplified: stable (|lambda| < 1 - eps) and decaying forward (Re lambda > eps).
    # A mode whose increments flip sign is an oscillation: 1 + alpha lambda < 1 would
    # shrink or reverse the base's progress on it; it is moved to its centre instead.
    disk = linalg.disk_projector(red.operator, 1.0 - epsilon)
    projector = jnp.matmul(disk, linalg.half_plane_projector(red.operator, epsilon),
                           precision=_HIGHEST)
    m_op = jnp.matmul(red.operator, projector, precision=_HIGHEST)
    if not (isinstance(damping, (int, float)) and damping == 0):
        m_op = m_op + damping * _centring(red.operator, disk, epsilon)
    norm = jnp.linalg.norm(m_op, 2)
    vs = red.right_vectors * red.inverse_singular_values[None, :]
    coef = jnp.matmul(jnp.matmul(vs, m_op, precision=_HIGHEST), vs.T, precision=_HIGHEST)
    values = linalg.eigvals(red.operator, red.rank)
    valid = jnp.arange(k) < red.rank
    values = values[sort_eigenvalues(values, valid)]
    inside = valid & (jnp.abs(values) < 1.0 - epsilon)
    num_stable = jnp.sum(inside & (jnp.real(values) > epsilon)).astype(jnp.int32)
    num_damped = jnp.sum(inside & (jnp.real(values) < -epsilon)
                         & (jnp.asarray(damping) > 0)).astype(jnp.int32)
    finite = jnp.all(jnp.isfinite(coef)) & jnp.isfinite(norm) & jnp.all(jnp.isfinite(values))
    return Operator(coef.astype(jnp.float32), norm.astype(jnp.float32),
                    values.astype(jnp.complex64), red.rank, num_stable, num_damped, finite)


def _centring(a, disk, epsilon):
    """``A P_o (I - A P_o)^-1``: each oscillating mode's remaining displacement
    ``lambda / (1 - lambda)`` (``P_o``: ``disk`` times ``Re lambda < -epsilon``).

    ``I - A P_o`` has the eigenvalues ``1 - lambda`` (modulus above 1) on the
    oscillating modes and 1 elsewhere, so the solve is well conditioned.
    """
    eye = jnp.eye(a.shape[0], dtype=a.dtype)
    left = eye - linalg.half_plane_projector(a, -epsilon)
    a_o = jnp.matmul(a, jnp.matmul(disk, left, precision=_HIGHEST), precision=_HIGHEST)
    return jnp.linalg.solve((eye - a_o).T, a_o.T).T


def block_operators(grams, blocks: Blocks, *, epsilon, rank, rcond=None,
                    num_features=None, damping=0.0) -> Operator:
    """:func:`acceleration_operator` of every block's ``(m, m)`` Gram matrix (``grams``
    ``(B, m, m)``), side by side: an :class:`Operator` with a leading block axis.

    ``num_features`` (default the blocks' sizes) is the row count of each
    block's noise threshold. One block is computed directly, several under
    ``vmap`` (one compiled solver whatever their number).
    """
    sizes = blocks.sizes if num_features is None else tuple(num_features)
    solve = functools.partial(acceleration_operator, epsilon=epsilon, rank=rank, rcond=rcond,
                              damping=damping)
    if len(sizes) == 1:
        return jax.tree.map(lambda x: x[None], solve(grams[0], num_features=sizes[0]))
    return jax.vmap(lambda g, n: solve(g, num_features=n))(
        grams, jnp.asarray(sizes, jnp.float32))


class OperatorState(NamedTuple):
    """The installed operator, per block (leading axis ``B``).

    Attributes:
      coefficients: ``(B, c, c)`` float32 ``K_b`` in the columns' own coordinates.
      norm: ``(B,)`` float32 ``|A~_b P_s|_2`` (sets the gain bound).
      eigenvalues: ``(B, m-1)`` complex64 latest DMD eigenvalues, by decreasing
        modulus, 0-padded beyond ``rank``.
      rank: ``(B,)`` int32 DMD rank at the last refresh.
      num_stable: ``(B,)`` int32 amplified (stable) eigenvalues at the last refresh.
      num_damped: ``(B,)`` int32 damped (oscillating) eigenvalues at the last refresh.
    """

    coefficients: jax.Array
    norm: jax.Array
    eigenvalues: jax.Array
    rank: jax.Array
    num_stable: jax.Array
    num_damped: jax.Array


def init_operator(num_blocks: int, columns: int, num_eigenvalues: int) -> OperatorState:
    """No operator yet: zero coefficients (nothing is corrected)."""
    return OperatorState(
        coefficients=jnp.zeros((num_blocks, columns, columns), jnp.float32),
        norm=jnp.zeros((num_blocks,), jnp.float32),
        eigenvalues=jnp.zeros((num_blocks, num_eigenvalues), jnp.complex64),
        rank=jnp.zeros((num_blocks,), jnp.int32),
        num_stable=jnp.zeros((num_blocks,), jnp.int32),
        num_damped=jnp.zeros((num_blocks,), jnp.int32))


def install(current: OperatorState, op: Operator, ready, coefficients):
    """``(operator, refreshed, rejected)``: ``op`` installed where ``ready`` and finite.

    ``coefficients`` is ``op`` in the columns' coordinates. A block whose
    refresh is not finite is switched off (zero operator) and counted in
    ``rejected``; ``refreshed`` is 1 when every block took its new operator.
    """
    good = ready & op.finite
    new = OperatorState(
        coefficients=jnp.where(good[:, None, None], coefficients, 0.0),
        norm=jnp.where(good, op.norm, 0.0),
        eigenvalues=jnp.where(good[:, None], op.eigenvalues, current.eigenvalues),
        rank=jnp.where(good, op.rank, current.rank),
        num_stable=jnp.where(good, op.num_stable, 0),
        num_damped=jnp.where(good, op.num_damped, 0))
    rejected = jnp.any(ready & ~op.finite).astype(jnp.int32)
    return new, jnp.all(good).astype(jnp.int32), rejected


def slot_coefficients(op_coefficients, order):
    """Time-ordered ``K`` over the oldest ``m - 1`` slots, scattered to ``(m, m)`` slot order."""
    m = order.shape[0]
    return jnp.zeros((m, m), jnp.float32).at[order[:-1, None], order[None, :-1]].set(
        op_coefficients)


def gain_scale(alpha, max_gain, norm):
    """``s = min(alpha, (max_gain - 1) / |M|)``: keeps ``|I + s M| <= max_gain``.

    Examples:
      >>> from koopax._src.kga import operator
      >>> float(operator.gain_scale(2.0, 10.0, 0.5)), float(operator.gain_scale(100.0, 10.0, 0.5))
      (2.0, 18.0)
    """
    cap = (max_gain - 1.0) / jnp.maximum(norm, 1e-30)
    return jnp.minimum(jnp.asarray(alpha, jnp.float32), cap).astype(jnp.float32)


class Correction(NamedTuple):
    """Per-leaf coefficients of a correction over the stored columns.

    Attributes:
      coefficients: ``(num_leaves, c)`` float32: leaf ``l`` receives ``X_l a_l``;
        zeros when rejected.
      rejected: bool, the coefficients were not finite (the base passes).
      clipped: bool, some leaf's correction was scaled down by the per-leaf bound.
    """

    coefficients: jax.Array
    rejected: jax.Array
    clipped: jax.Array


def bounded_correction(products, base_sq, leaf_grams, coefficients, scale, max_gain,
                       blocks: Blocks) -> Correction:
    """``a_b = s_b K_b sum_{l in b} P_l`` and the per-leaf bound ``|X_l a_l| <= (max_gain - 1) |u_l|``.

    Args:
      products: ``(num_leaves, c)`` per-leaf ``X_l^T u_l``.
      base_sq: ``(num_leaves,)`` ``|u_l|^2``.
      leaf_grams: ``(num_leaves, c, c)`` ``X_l^T X_l``.
      coefficients: ``(B, c, c)`` ``K_b``.
      scale: ``(B,)`` ``s_b``; max_gain: the bound.
      blocks: which block each leaf belongs to.

    A non-finite ``u`` makes the coefficients non-finite: rejected.

    Examples:
      Two leaves in one block, one column ``x = (1 | 1)``, ``K = 1``: ``u = (1 | 100)``
      gives ``a = 101``; leaf 0 may take at most ``(max_gain - 1) * 1 = 1``:

      >>> import jax.numpy as jnp
      >>> from koopax._src.blocks import Blocks
      >>> from koopax._src.kga import operator
      >>> c = operator.bounded_correction(
      ...     jnp.array([[1.0], [100.0]]), jnp.array([1.0, 1e4]), jnp.ones((2, 1, 1)),
      ...     jnp.ones((1, 1, 1)), jnp.ones(1), 2.0, Blocks((0, 0), (2,)))
      >>> c.coefficients[:, 0].tolist(), bool(c.clipped)
      ([1.0, 100.0], True)
    """
    if blocks.count == 1:
        a = scale[0] * jnp.matmul(coefficients[0], jnp.sum(products, axis=0), precision=_HIGHEST)
        delta_sq = jnp.einsum("i,lij,j->l", a, leaf_grams, a, precision=_HIGHEST)
        a = jnp.broadcast_to(a, products.shape)
    else:
        a = scale[:, None] * jnp.einsum("bij,bj->bi", coefficients,
                                        blocks.sum_leaves(products), precision=_HIGHEST)
        a = blocks.per_leaf(a)                                                # (L, c)
        delta_sq = jnp.einsum("li,lij,lj->l", a, leaf_grams, a, precision=_HIGHEST)
    cap_sq = (max_gain - 1.0) ** 2 * jnp.maximum(base_sq, 0.0)
    over = delta_sq > cap_sq
    factor = jnp.where(over, jnp.sqrt(cap_sq / jnp.maximum(delta_sq, 1e-37)), 1.0)
    per_leaf = factor[:, None] * a
    ok = jnp.all(jnp.isfinite(per_leaf)) & jnp.all(jnp.isfinite(base_sq))
    return Correction(jnp.where(ok, per_leaf, 0.0).astype(jnp.float32), ~ok, ok & jnp.any(over))


def leaf_squares(tree) -> jax.Array:
    """``(num_leaves,)`` float32 ``|x_l|^2``."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((0,), jnp.float32)
    return jnp.stack([tree_math.tree_vdot(x, x) for x in leaves]).astype(jnp.float32)


def residual_products(old_rows, old_grams, applied):
    """``X^T (d - X a)`` per leaf from ``X^T d`` and the previous correction's ``a``.

    The newest increment ``d`` is the base displacement ``u`` plus the
    correction ``X a`` applied at the previous snapshot, so its base part is
    known in the window's coordinates without a pass: ``P_l = X_l^T d_l -
    G_l a_l`` and ``|u_l|^2 = |d_l|^2 - 2 a_l^T X_l^T d_l + a_l^T G_l a_l``.

    Returns ``(products, base_sq - |d_l|^2)``: the caller adds ``|d_l|^2``.
    """
    g_a = jnp.einsum("lij,lj->li", old_grams, applied, precision=_HIGHEST)
    products = old_rows - g_a
    cross = jnp.sum(applied * old_rows, axis=1)
    quad = jnp.sum(applied * g_a, axis=1)
    return products, -2.0 * cross + quad
