"""Multi-step DMD prediction from a window of weight increments (Gram closed form).

koopax predicts in the *increment* formulation **[choice]**. The window (see
:mod:`koopax._src.snapshots`) holds the newest snapshot ``w`` and the last ``m``
increments ``d_0, ..., d_{m-1}`` (``d_i = w_{i+1} - w_i``, oldest first, so
``d_{m-1} = w - w_prev``). For affine dynamics ``w_{i+1} - w* = A (w_i - w*)``
the increments obey ``d_{i+1} = A d_i`` exactly, so DMD is fitted on the pairs

    X = [d_0 ... d_{m-2}],   Y = [d_1 ... d_{m-1}],   X = U S V^T (rank r),
    A~ = U^T Y V S^{-1} = S^{-1} V^T (X^T Y) V S^{-1},   A = U A~ U^T,

and the weights ``tau`` snapshots after ``w`` are predicted as ``w`` plus the
sum of the next ``tau`` predicted increments, restricted to ``span(U)``:

    w_pred - w = sum_{j=1..tau} A^j d_{m-1} = U P U^T d_{m-1},
    P = sum_{j=1..tau} A~^j.

Gram closed form. With ``G`` the ``m x m`` Gram matrix of the increments,
``X^T X = G[:-1, :-1] = V S^2 V^T`` and ``X^T Y = G[:-1, 1:]``; ``X^T d_{m-1}
= G[:-1, -1]`` is a Gram column, so ``z = U^T d_{m-1} = S^{-1} V^T G[:-1, -1]``
(because ``U = X V S^{-1}``), and going back through ``U``:

    w_pred - w = X V S^{-1} P z = X c,
    c = V S^{-1} P S^{-1} V^T G[:-1, -1]   (an (m-1)-vector).

Everything but ``X c`` is ``m x m`` algebra (one ``eigh``, ``tau`` small
matrix products); ``X c`` is one pass over the stored increments: ``O(N m)``,
real arithmetic, no eigenvectors of the non-symmetric ``A~`` and no
N-dimensional pseudo-inverse. Because only a *displacement* is predicted, the
rank-r reconstruction error of ``w`` itself never enters (PDT's Eq. 12 as the
authors implement it: ``w + Re{Phi (Lambda^tau - I) Phi^+ w}``). On raw
snapshots that formula also keeps the neutral ``lambda = 1`` mode; in the
increment formulation that mode is the fixed point and contributes no
increment, which is why the sum starts at ``A^1``.

References:
  Wang, Tang, Harris, Qi, Wilson, Mezic, *Predictive Differential Training
  Guided by Training Dynamics*, ICLR 2026 (OpenReview zSTgrLkpRi), Eq. 12.
  Tu, Rowley, Luchtenburg, Brunton, Kutz, `On dynamic mode decomposition:
  theory and applications <https://arxiv.org/abs/1312.0041>`_, JCD 2014.
  Sirovich, *Turbulence and the dynamics of coherent structures*, Q. Appl.
  Math. 1987 (method of snapshots).
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from koopax._src import linalg, snapshots, tree_math, validation
from koopax._src.blocks import make_blocks
from koopax._src.dmd import gram_operator, sort_eigenvalues

_HIGHEST = jax.lax.Precision.HIGHEST


class PredictionCoefficients(NamedTuple):
    """The small-matrix part of a prediction.

    Attributes:
      coefficients: ``(m - 1,)`` float32 ``c``: the predicted displacement is
        ``X c`` over the ``m - 1`` oldest stored increments.
      eigenvalues: ``(m - 1,)`` complex64 eigenvalues of ``A~`` by decreasing
        modulus, 0-padded beyond ``rank`` (diagnostics only).
      rank: int32 DMD rank used.
      finite: bool, every quantity above is finite.
    """

    coefficients: jax.Array
    eigenvalues: jax.Array
    rank: jax.Array
    finite: jax.Array


def _validate_horizon(horizon, name="horizon"):
    if isinstance(horizon, bool) or not isinstance(horizon, numbers.Integral) or horizon < 1:
        raise ValueError(f"{name} must be an int >= 1; got {horizon!r}.")


@functools.partial(jax.jit, static_argnames=("horizon",))
def power_sum(matrix, horizon: int, active_horizon=None):
    """``sum_{j=1..tau} M^j`` for a small square matrix.

    Args:
      matrix: ``(k, k)`` real matrix.
      horizon: static maximal ``tau`` (int >= 1).
      active_horizon: optional traced ``tau <= horizon``; terms beyond it are
        skipped (schedulers shorten the horizon). A fractional ``tau = n + f``
        (a horizon cut at the end of a learning-rate schedule) adds
        ``f M^{n+1}`` to the first ``n`` terms.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src.prediction import power_sum
      >>> float(power_sum(jnp.array([[0.5]]), 3)[0, 0]), float(power_sum(jnp.array([[0.5]]), 3, 1.5)[0, 0])
      (0.875, 0.625)
    """
    _validate_horizon(horizon)
    matrix = jnp.asarray(matrix)
    k = matrix.shape[0]
    tau = horizon if active_horizon is None else active_horizon
    whole = jnp.floor(tau)
    fraction = jnp.asarray(tau - whole, matrix.dtype)

    def body(j, carry):
        power, total = carry
        power = jnp.matmul(power, matrix, precision=_HIGHEST)
        partial = jnp.where((j == whole) & (fraction > 0), total + fraction * power, total)
        total = jnp.where(j < whole, total + power, partial)
        return power, total

    eye = jnp.eye(k, dtype=matrix.dtype)
    _, total = jax.lax.fori_loop(0, horizon, body, (eye, jnp.zeros_like(matrix)))
    return total


def prediction_coefficients(gram, horizon: int, *, num_features: int, rank=None,
                            rcond=None, active_horizon=None, num_valid=None,
                            taper: bool = False) -> PredictionCoefficients:
    """``c`` such that ``X c`` is the ``tau``-step displacement (module docstring).

    Args:
      gram: ``(m, m)`` Gram matrix of the increments ``d_0..d_{m-1}``, oldest
        first (``m >= 2``).
      horizon: ``tau``, snapshots to predict ahead (static int >= 1).
      num_features: static ``N`` (for the rank policy's noise threshold).
      rank: DMD rank policy (:func:`koopax.dmd.rank_mask`).
      rcond: Gram noise floor (default by dtype, see :mod:`koopax.dmd`).
      active_horizon: optional traced ``tau <= horizon``.
      num_valid: number of meaningful pairs (default all ``m - 1``).
      taper: fade singular values between ``rcond`` and ``2 rcond`` times
        ``sigma_1`` out smoothly instead of cutting at ``rcond``
        (:func:`koopax._src.dmd.floor_taper`): the coefficients are then a
        continuous function of ``gram``.
    """
    _validate_horizon(horizon)
    validation.boolean(taper, "taper")
    linalg.validate_rank(rank)
    if isinstance(num_features, bool) or (isinstance(num_features, numbers.Number)
                                          and not (isinstance(num_features, numbers.Integral)
                                                   and num_features >= 1)):
        raise ValueError(f"num_features must be an int >= 1; got {num_features!r}.")
    validation.optional_fraction(rcond, "rcond")
    gram = jnp.asarray(gram, jnp.float32)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] < 2:
        raise ValueError(f"gram must be an (m, m) matrix with m >= 2; got {gram.shape}.")
    k = gram.shape[0] - 1
    red = gram_operator(gram, rank=rank, num_features=num_features, num_valid=num_valid,
                        rcond=rcond, taper=taper)
    vs = red.right_vectors * red.inverse_singular_values[None, :]    # V S^{-1}
    z = jnp.matmul(vs.T, gram[:-1, -1], precision=_HIGHEST)           # U^T d_last
    total = power_sum(red.operator, horizon, active_horizon)          # sum A~^j
    coef = jnp.matmul(vs, jnp.matmul(total, z, precision=_HIGHEST), precision=_HIGHEST)
    values = linalg.eigvals(red.operator, red.rank)
    valid = jnp.arange(k) < red.rank
    values = values[sort_eigenvalues(values, valid)]
    finite = jnp.all(jnp.isfinite(coef)) & jnp.all(jnp.isfinite(values))
    return PredictionCoefficients(coef.astype(jnp.float32), values.astype(jnp.complex64),
                                  red.rank, finite)


def predicted_displacement(window, horizon: int, *, blocks=None, rank=None, rcond=None,
                           active_horizon=None,
                           taper: bool = False) -> tuple[Any, PredictionCoefficients]:
    """``w_pred - w`` for the newest snapshot ``w = window.last``, ``tau`` ahead.

    Args:
      window: a :class:`koopax.RingWindow`.
      horizon, rank, rcond, active_horizon, taper: as :func:`prediction_coefficients`.
      blocks: a ``koopax._src.blocks.Blocks``: one DMD per block of leaves
        (default one for the whole tree).

    Returns ``(displacement, info)``: the displacement is a pytree shaped like
    the snapshots with leaves in float32 (at least), ``info`` the
    :class:`PredictionCoefficients` with a leading block axis. Only meaningful
    once the window is full (:func:`koopax._src.snapshots.ring_is_full`);
    callers check ``info.finite`` and the displacement's finiteness before using it.
    """
    m = snapshots.ring_size(window)
    if m < 2:
        raise ValueError(f"window: need at least 2 increments for one DMD pair; got {m}.")
    if blocks is None:
        blocks = make_blocks(window.last, None)
    order = snapshots.ring_order(window)
    grams = blocks.sum_leaves(window.leaf_grams)[:, order][:, :, order]

    def solve(gram, num_features):
        return prediction_coefficients(gram, horizon, num_features=num_features, rank=rank,
                                       rcond=rcond, active_horizon=active_horizon, taper=taper)

    def empty():     # a block without weights (an empty leaf): nothing to predict
        return PredictionCoefficients(jnp.zeros((m - 1,), jnp.float32),
                                      jnp.zeros((m - 1,), jnp.complex64),
                                      jnp.zeros((), jnp.int32), jnp.asarray(True))

    if blocks.count == 1:
        one = empty() if blocks.sizes[0] == 0 else solve(grams[0], blocks.sizes[0])
        info = jax.tree.map(lambda x: x[None], one)
    else:
        info = jax.vmap(solve)(grams, jnp.asarray(blocks.sizes, jnp.float32))
    like = jax.tree.map(
        lambda x: jnp.zeros(x.shape, tree_math.accumulation_dtype(x.dtype)), window.last)
    per_leaf = jax.vmap(lambda c: snapshots.to_slot_order(window, c))(
        blocks.per_leaf(info.coefficients))
    return tree_math.stacked_weighted_sum(window.slots, per_leaf, like), info
