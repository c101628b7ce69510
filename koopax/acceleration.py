"""KGA's operator and how a correction is applied: pure functions shared by every KGA.

The operator (KGA paper, Eqs. 10-13) from the Gram matrix of ``m``
consecutive increments, ``X`` the first ``m - 1`` and ``Y`` the last::

    A~ = reduced DMD operator,   P_s = spectral projector onto |lambda| < 1 - eps,
    M = A~ P_s,                  K = V S^-1 M S^-1 V^T,

so that ``U M U^T u = X K X^T u`` over the stored increments (no basis is
formed). The correction of a base displacement ``b`` (one update, or the sum
of ``k`` of them: :func:`koopax.kga`'s ``apply_every``) is ``delta = s X K X^T b``
with ``s = min(alpha, (max_gain - 1) / |M|_2)`` (so ``|b + delta| <= max_gain |b|``
globally) and then bounded *per leaf*: with ``a = s K X^T b`` and the window's
per-leaf Gram matrices ``G_l``, ``|delta_l|^2 = a^T G_l a`` costs no pass, and
leaf ``l`` receives ``f_l X_l a`` with ``f_l = min(1, (max_gain - 1) |b_l| / |delta_l|)``.
A spike in one leaf can therefore never leak into another one (issue 13): the
projection ``X^T b`` is global, the bound is local.

References:
  Anonymous, *Dynamic Training Guided by Training Dynamics* (KGA, KWM),
  OpenReview 7AB077M4TY, 2024, Eqs. 7-13. Tu et al., *On dynamic mode
  decomposition: theory and applications*, 2014.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from koopax import linalg, loss_tracking, tree_math, validation
from koopax.control import maybe_apply
from koopax.dmd import gram_operator, sort_eigenvalues

_HIGHEST = jax.lax.Precision.HIGHEST

NO_PARAMS_MSG = (
    "koopax's KGA needs the current parameters: call "
    "`tx.update(updates, state, params)` (nnx.Optimizer does this)."
)


class Operator(NamedTuple):
    """KGA's operator over ``m - 1`` stored columns.

    Attributes:
      coefficients: ``(m-1, m-1)`` float32 ``K`` in time order.
      norm: float32 ``|A~ P_s|_2``.
      eigenvalues: ``(m-1,)`` complex64 DMD eigenvalues by decreasing modulus, 0-padded.
      rank: int32 DMD rank.
      num_stable: int32 kept eigenvalues with ``|lambda| < 1 - epsilon``.
      finite: bool, everything above is finite.
    """

    coefficients: jax.Array
    norm: jax.Array
    eigenvalues: jax.Array
    rank: jax.Array
    num_stable: jax.Array
    finite: jax.Array


def acceleration_operator(gram, *, epsilon, rank, num_features, rcond=None) -> Operator:
    """KGA's operator ``K`` from the ``(m, m)`` Gram matrix of ``m`` consecutive increments.

    Examples:
      Increments ``d_{t+1} = 0.5 d_t`` (one stable mode): ``M = 0.5`` and, with
      ``|d_0| = 1``, ``K = 0.5``:

      >>> import jax.numpy as jnp
      >>> from koopax import acceleration
      >>> d = jnp.array([[1.0, 0.0], [0.5, 0.0], [0.25, 0.0]])
      >>> op = acceleration.acceleration_operator(d @ d.T, epsilon=0.01, rank="svht", num_features=2)
      >>> round(float(op.eigenvalues[0].real), 3), int(op.num_stable), round(float(op.norm), 3)
      (0.5, 1, 0.5)
    """
    k = gram.shape[0] - 1
    red = gram_operator(gram, rank=rank, num_features=num_features, rcond=rcond)
    projector = linalg.disk_projector(red.operator, 1.0 - epsilon)
    m_op = jnp.matmul(red.operator, projector, precision=_HIGHEST)
    norm = jnp.linalg.norm(m_op, 2)
    vs = red.right_vectors * red.inverse_singular_values[None, :]
    coef = jnp.matmul(jnp.matmul(vs, m_op, precision=_HIGHEST), vs.T, precision=_HIGHEST)
    values = linalg.eigvals(red.operator, red.rank)
    valid = jnp.arange(k) < red.rank
    values = values[sort_eigenvalues(values, valid)]
    num_stable = jnp.sum(valid & (jnp.abs(values) < 1.0 - epsilon)).astype(jnp.int32)
    finite = jnp.all(jnp.isfinite(coef)) & jnp.isfinite(norm) & jnp.all(jnp.isfinite(values))
    return Operator(coef.astype(jnp.float32), norm.astype(jnp.float32),
                    values.astype(jnp.complex64), red.rank, num_stable, finite)


def operator_fields(size: int, num_eigenvalues: int) -> dict:
    """Initial operator and diagnostic fields shared by the KGA states."""
    return dict(
        coefficients=jnp.zeros((size, size), jnp.float32),
        operator_norm=jnp.zeros((), jnp.float32),
        eigenvalues=jnp.zeros((num_eigenvalues,), jnp.complex64),
        rank=jnp.zeros((), jnp.int32),
        num_stable=jnp.zeros((), jnp.int32),
        num_refreshes=jnp.zeros((), jnp.int32),
        num_nonfinite=jnp.zeros((), jnp.int32),
        num_clipped=jnp.zeros((), jnp.int32),
    )


def install_operator(state, op: Operator, ready, coefficients, recorded=True):
    """Puts a refreshed operator into a KGA state if ``ready`` and finite.

    ``coefficients`` is ``op`` in the state's own coordinates. A non-finite
    refresh disables acceleration (zero operator) and is counted. ``recorded``
    False (a skipped snapshot) keeps the state's operator and counters as they were.
    """
    good = ready & op.finite
    new = state._replace(
        coefficients=jnp.where(good, coefficients, 0.0),
        operator_norm=jnp.where(good, op.norm, 0.0),
        eigenvalues=jnp.where(good, op.eigenvalues, state.eigenvalues),
        rank=jnp.where(good, op.rank, state.rank),
        num_stable=jnp.where(good, op.num_stable, 0),
        num_refreshes=state.num_refreshes + good.astype(jnp.int32),
        num_nonfinite=state.num_nonfinite + (ready & ~op.finite).astype(jnp.int32),
    )
    if recorded is True:
        return new
    keep = {f: jnp.where(recorded, getattr(new, f), getattr(state, f))
            for f in ("coefficients", "operator_norm", "eigenvalues", "rank", "num_stable",
                      "num_refreshes", "num_nonfinite")}
    return new._replace(**keep)


def slot_coefficients(op_coefficients, order):
    """Time-ordered ``K`` over the oldest ``m - 1`` slots, scattered to ``(m, m)`` slot order."""
    m = order.shape[0]
    return jnp.zeros((m, m), jnp.float32).at[order[:-1, None], order[None, :-1]].set(
        op_coefficients)


def gain_scale(alpha, max_gain, norm):
    """``s = min(alpha, (max_gain - 1) / |M|)``: keeps ``|I + s M| <= max_gain``.

    Examples:
      >>> from koopax import acceleration
      >>> float(acceleration.gain_scale(2.0, 10.0, 0.5)), float(acceleration.gain_scale(100.0, 10.0, 0.5))
      (2.0, 18.0)
    """
    cap = (max_gain - 1.0) / jnp.maximum(norm, 1e-30)
    return jnp.minimum(jnp.asarray(alpha, jnp.float32), cap).astype(jnp.float32)


class Correction(NamedTuple):
    """Per-leaf coefficients of a correction over stored columns.

    Attributes:
      coefficients: ``(num_leaves, c)`` float32: leaf ``l`` receives ``X_l a_l``;
        zeros when rejected.
      rejected: bool, the coefficients were not finite (the base passes).
      clipped: bool, some leaf's correction was scaled down by the per-leaf bound.
    """

    coefficients: jax.Array
    rejected: jax.Array
    clipped: jax.Array


def bounded_correction(products, base_sq, leaf_grams, coefficients, scale, max_gain) -> Correction:
    """``a = scale K sum_l P_l`` and the per-leaf bound ``|X_l a_l| <= (max_gain - 1) |b_l|``.

    Args:
      products: ``(num_leaves, c)`` per-leaf ``X_l^T b_l``.
      base_sq: ``(num_leaves,)`` ``|b_l|^2``.
      leaf_grams: ``(num_leaves, c, c)`` ``X_l^T X_l``.
      coefficients: ``(c, c)`` ``K``.
      scale, max_gain: ``s`` and the bound.

    A non-finite ``b`` makes the coefficients non-finite: rejected.

    Examples:
      Two leaves, one column ``x = (1 | 1)``, ``K = 1``: ``b = (1 | 100)`` gives
      ``a = 101``; leaf 0 may take at most ``(max_gain - 1) * 1 = 1``:

      >>> import jax.numpy as jnp
      >>> from koopax import acceleration
      >>> c = acceleration.bounded_correction(
      ...     jnp.array([[1.0], [100.0]]), jnp.array([1.0, 1e4]), jnp.ones((2, 1, 1)),
      ...     jnp.ones((1, 1)), 1.0, 2.0)
      >>> c.coefficients[:, 0].tolist(), bool(c.clipped)
      ([1.0, 100.0], True)
    """
    a = scale * jnp.matmul(coefficients, jnp.sum(products, axis=0), precision=_HIGHEST)
    delta_sq = jnp.einsum("i,lij,j->l", a, leaf_grams, a, precision=_HIGHEST)
    cap_sq = (max_gain - 1.0) ** 2 * jnp.maximum(base_sq, 0.0)
    over = delta_sq > cap_sq
    factor = jnp.where(over, jnp.sqrt(cap_sq / jnp.maximum(delta_sq, 1e-37)), 1.0)
    per_leaf = factor[:, None] * a[None, :]
    ok = jnp.all(jnp.isfinite(per_leaf)) & jnp.all(jnp.isfinite(base_sq))
    return Correction(jnp.where(ok, per_leaf, 0.0).astype(jnp.float32), ~ok, ok & jnp.any(over))


def leaf_squares(tree) -> jax.Array:
    """``(num_leaves,)`` float32 ``|x_l|^2``."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((0,), jnp.float32)
    return jnp.stack([tree_math.tree_vdot(x, x) for x in leaves]).astype(jnp.float32)


def add_combination(updates, columns, correction: Correction):
    """``u + X a`` per leaf over stacked ``columns`` (one pass)."""
    delta = tree_math.stacked_weighted_sum(columns, correction.coefficients, like=updates)
    return jax.tree.map(lambda u, d: u + d, updates, delta)


def residual_products(old_rows, old_grams, applied):
    """``X^T (d - X a)`` per leaf from ``X^T d`` and the previous correction's ``a``.

    The newest increment ``d`` is the base displacement ``b`` plus the
    correction ``X a`` applied at the previous snapshot, so its base part is
    known in the window's coordinates without a pass: ``P_l = X_l^T d_l -
    G_l a_l`` and ``|b_l|^2 = |d_l|^2 - 2 a_l^T X_l^T d_l + a_l^T G_l a_l``.

    Returns ``(products, base_sq)`` given ``|d_l|^2`` as the caller's diagonal.
    """
    g_a = jnp.einsum("lij,lj->li", old_grams, applied, precision=_HIGHEST)
    products = old_rows - g_a
    cross = jnp.sum(applied * old_rows, axis=1)
    quad = jnp.sum(applied * g_a, axis=1)
    return products, -2.0 * cross + quad


def validate(*, alpha, num_snapshots, snapshot_every, apply_every, epsilon, rank,
             snapshot_dtype, max_gain, rcond, max_rank=None) -> None:
    """The hyperparameter checks shared by :func:`koopax.kga` and its variants."""
    for value, name in ((num_snapshots, "num_snapshots"), (snapshot_every, "snapshot_every"),
                        (apply_every, "apply_every"), (rank, "rank"), (rcond, "rcond")):
        validation.static(value, name)
    validation.number(alpha, "alpha", low=0.0)
    validation.integer(num_snapshots, "num_snapshots", low=3)
    validation.integer(snapshot_every, "snapshot_every", low=1)
    if apply_every is not None:
        validation.integer(apply_every, "apply_every", low=1)
    validation.number(epsilon, "epsilon", low=0.0, high=1.0, what="a number in [0, 1)")
    linalg.validate_rank(rank)
    if max_rank is not None and isinstance(rank, numbers.Integral) and rank > max_rank:
        raise ValueError(f"rank must be <= num_snapshots - 2 = {max_rank} (the number of "
                         f"increment pairs); got {rank}.")
    if snapshot_dtype is not None:
        try:
            dt = jnp.dtype(snapshot_dtype)
        except TypeError as e:
            raise ValueError(f"snapshot_dtype must be a floating dtype; got {snapshot_dtype!r}.") from e
        if not jnp.issubdtype(dt, jnp.floating):
            raise ValueError(f"snapshot_dtype must be a floating dtype; got {snapshot_dtype!r}.")
    validation.number(max_gain, "max_gain", low=1.0, low_open=True)
    validation.optional_fraction(rcond, "rcond")


def check_update_args(updates, params, like, value):
    """Update-time checks: ``params`` given and matching ``updates`` and the state; scalar ``value``."""
    if params is None:
        raise ValueError(NO_PARAMS_MSG)
    validation.same_tree(updates, params)
    validation.state_fits(like, params)
    if value is not None and jnp.ndim(value) != 0:
        raise ValueError(f"value must be a scalar loss; got shape {jnp.shape(value)}.")


# --------------------------------------------------------------------------
# State-level steps shared by the KGA variants (states carry the fields of
# :func:`operator_fields` plus ``valve``).
# --------------------------------------------------------------------------


def count_correction(state, correction: Correction):
    """Adds a correction's rejections and clips to the state's counters."""
    return state._replace(
        num_nonfinite=state.num_nonfinite + correction.rejected.astype(jnp.int32),
        num_clipped=state.num_clipped + correction.clipped.astype(jnp.int32))


def record_if_finite(record, carry, params):
    """``record(carry, params)`` unless ``params`` is not finite (skipped and counted).

    ``carry`` is ``(state, updates)``; ``record`` returns the same structure.
    """
    ok = tree_math.tree_all_finite(params)
    (state, updates), _ = maybe_apply(ok, lambda c: (record(*c), c[1]), (carry, params))
    return state._replace(num_nonfinite=state.num_nonfinite + (~ok).astype(jnp.int32)), updates


def close_valve(state, value):
    """Ends the valve's period (at a snapshot, inside its gate); nothing without ``value``.

    Inside the snapshot gate, not computed at every step and selected: the
    period's statistics and rise test are dozens of scalar kernels, which
    cost a tiny model more than its step.
    """
    if value is None:
        return state
    return state._replace(valve=loss_tracking.close_period(state.valve))


def track_value(state, value):
    """Folds this step's ``value`` into the valve's period (after the snapshot gate)."""
    if value is None:
        return state
    return state._replace(valve=state.valve._replace(
        stats=loss_tracking.track(state.valve.stats, value)))


def usable_scale(state, alpha, max_gain, ready):
    """``(s, active)``: the valve's scale times the gain scale, and whether a correction applies now."""
    scale = state.valve.scale * gain_scale(alpha, max_gain, state.operator_norm)
    return scale, ready & (scale > 0) & (state.num_stable > 0)


def correct_target(state, updates, target, columns_of, ready, alpha, max_gain):
    """``updates + X a`` with ``a`` the bounded correction of ``target`` over the columns.

    ``target`` is the base displacement (the update itself, or a sum of
    updates); ``columns_of(state)`` gives the stacked columns ``X`` and their
    per-leaf Gram matrices (read inside the gate, so no buffer is copied).
    Two passes over the columns, gated on ``ready`` and a usable operator.
    """
    scale, active = usable_scale(state, alpha, max_gain, ready)

    def correct(c):
        st, u, tgt = c
        columns, leaf_grams = columns_of(st)
        corr = bounded_correction(tree_math.stacked_products(columns, tgt), leaf_squares(tgt),
                                  leaf_grams, st.coefficients, scale, max_gain)
        return count_correction(st, corr), add_combination(u, columns, corr), tgt

    state, updates, _ = maybe_apply(active, correct, (state, updates, target))
    return state, updates


def correct_sum(state, updates, base, columns_of, ready, apply_every, alpha, max_gain):
    """Every ``apply_every`` steps corrects ``state.pending``, the sum of the last
    ``apply_every`` base updates; ``base`` (this step's) starts or extends the sum."""
    due = (state.count % apply_every) == 0
    state, updates = correct_target(state, updates, state.pending, columns_of, ready & due,
                                    alpha, max_gain)
    pending = jax.tree.map(lambda p, u: jnp.where(due, u, p + u).astype(p.dtype),
                           state.pending, base)
    return state._replace(pending=pending), updates


def correct_updates(state, updates, base, columns_of, ready, apply_every, alpha, max_gain):
    """``apply_every == 1``: corrects ``base`` now; otherwise the pending sum when due."""
    if apply_every == 1:
        return correct_target(state, updates, base, columns_of, ready, alpha, max_gain)
    return correct_sum(state, updates, base, columns_of, ready, apply_every, alpha, max_gain)
