"""The one KGA engine: the update sequence every KGA variant shares.

A variant is a *column store* (:class:`Columns`): where the stored columns
``X`` live (a window of increments, a streaming basis, a compact masked
window), how a snapshot is recorded into them and how ``X^T u`` and ``X a``
are computed. The engine owns the rest, once:

1. the snapshot clock (:mod:`koopax._src.clock`: in steps, or in the
   integrated learning rate under a schedule);
2. at a snapshot, inside one gate that carries the state only: record, the
   DMD refresh per block (:mod:`koopax._src.kga.operator`), the valve's
   period, and for the ``increment`` strategy the correction of the newest
   increment, kept in ``pending``;
3. the correction strategy (``apply_every``): ``each`` update (two passes
   over the columns per step), the newest ``increment`` (one select per step),
   or the ``sum`` of ``k`` updates (one buffer);
4. the valve (:mod:`koopax._src.loss_tracking`), the counters and the checks.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import optax

from koopax._src import loss_tracking, tree_math, validation
from koopax._src.blocks import Blocks, make_blocks
from koopax._src.kga.settings import Settings
from koopax._src.control import maybe_apply, maybe_record
from koopax._src.kga import operator as op_lib
from koopax._src.kga import safety
from koopax._src.restore import restore_updates

NO_PARAMS_MSG = ("koopax's KGA needs the current parameters: call "
                 "`tx.update(updates, state, params)` (nnx.Optimizer does this).")


class Push(NamedTuple):
    """What recording a snapshot tells the ``increment`` strategy.

    Attributes:
      rows: ``(num_leaves, c)`` per-leaf ``<old column_j, d>`` of the new
        increment ``d`` with the columns as they were before the push.
      old_grams: ``(num_leaves, c, c)`` per-leaf Gram matrices before the push.
      newest: index of the newest column after the push.
      allowed: bool, the newest increment may be corrected.
    """

    rows: jax.Array
    old_grams: jax.Array
    newest: jax.Array
    allowed: jax.Array


class Columns(Protocol):
    """The per-variant part of KGA (see the module docstring)."""

    strategies: tuple[str, ...]
    selects: bool          # record() skips a non-finite snapshot by selects (else gated)
    width: int             # c, the number of stored columns
    window_size: int       # m, increments in the DMD window
    snapshot_dtype: Any    # dtype of the stored columns (None: the parameters')

    def init(self, params) -> Any: ...
    def reference(self, store) -> Any: ...   # the newest snapshot (rollback target)
    def record(self, store, params, ok) -> tuple[Any, Push]: ...
    def ready(self, store) -> jax.Array: ...
    def dmd_grams(self, store, blocks: Blocks) -> jax.Array: ...
    def to_columns(self, store, coefficients) -> jax.Array: ...
    def leaf_grams(self, store) -> jax.Array: ...
    def project(self, store, tree) -> tuple[jax.Array, jax.Array]: ...
    def combine(self, store, coefficients, like) -> Any: ...
    def num_features(self, params, blocks: Blocks) -> tuple: ...
    def decide(self, store, params) -> tuple[Any, jax.Array] | None: ...


class KGAState(NamedTuple):
    """State of :func:`koopax.kga`, :func:`koopax.efficient_kga` and :func:`koopax.masked_kga`.

    Attributes:
      count: int32, steps taken.
      clock: the snapshot clock's state (``()`` for a step clock).
      columns: the variant's column store (:class:`koopax.RingWindow` for
        ``kga``, :class:`koopax.BasisColumns`, :class:`koopax.MaskedColumns`).
      operator: :class:`koopax.OperatorState`, per block: ``K_b`` in the
        columns' coordinates, ``eigenvalues``, ``rank``, ``num_stable``.
      applied: ``(num_leaves, c)`` float32 per-leaf coefficients of the last
        correction (``increment`` strategy; zeros otherwise).
      pending: parameter-shaped; ``increment``: the newest increment's
        correction (zero when none is due), added at its snapshot step;
        ``sum``: the base updates summed since the last correction;
        ``()`` for ``each``.
      valve: :class:`koopax.Valve` (``valve.alpha_factor`` multiplies the gain).
      rollback: :class:`koopax.KGARollback` (``()`` with ``rollback=False``).
      num_refreshes: int32 successful DMD refreshes.
      num_nonfinite: int32 events where a non-finite snapshot, DMD or
        correction was rejected (the base update was used instead); a
        non-finite base update shows as the non-finite snapshot after it
        (also when that snapshot step rolls back).
      num_clipped: int32 corrections the per-leaf bound scaled down.
    """

    count: jax.Array
    clock: Any
    columns: Any
    operator: op_lib.OperatorState
    applied: jax.Array
    pending: Any
    valve: loss_tracking.Valve
    rollback: Any
    num_refreshes: jax.Array
    num_nonfinite: jax.Array
    num_clipped: jax.Array


def _init(cfg: Settings, columns: Columns, params) -> KGAState:
    blocks = make_blocks(params, cfg.blocks)
    store = columns.init(params)
    width = columns.width
    # ``increment``: the stored correction, in ``snapshot_dtype`` (the parameters' dtype
    # with a rollback: it also holds the restoring update); ``sum``: a sum of updates.
    dtype = columns.snapshot_dtype if cfg.strategy == "increment" and not cfg.rollback else None
    pending = () if cfg.strategy == "each" else jax.tree.map(
        lambda p: jnp.zeros_like(p, dtype=dtype), params)
    zero = lambda: jnp.zeros((), jnp.int32)   # distinct buffers: a state may be donated
    return KGAState(
        count=zero(), clock=cfg.clock.init(), columns=store,
        operator=op_lib.init_operator(blocks.count, width, columns.window_size - 1),
        applied=jnp.zeros((len(jax.tree.leaves(params)), width), jnp.float32),
        pending=pending, valve=loss_tracking.init_valve(),
        rollback=safety.init_rollback() if cfg.rollback else (),
        num_refreshes=zero(), num_nonfinite=zero(), num_clipped=zero())


def _refresh(cfg: Settings, columns: Columns, blocks: Blocks, state: KGAState, params, ok,
             count=True):
    """Installs the operator of the current columns (kept as it was unless ``ok``).

    ``count`` False: a second refresh of the same snapshot (after a mask
    decision) replaces the operator without counting another refresh.
    """
    store = state.columns
    op = op_lib.block_operators(columns.dmd_grams(store, blocks), blocks, epsilon=cfg.epsilon,
                                rank=cfg.rank, rcond=cfg.rcond,
                                num_features=columns.num_features(params, blocks),
                                damping=_damping(cfg))
    new, refreshed, rejected = op_lib.install(
        state.operator, op, columns.ready(store), columns.to_columns(store, op.coefficients))
    keep = lambda n, o: jnp.where(ok, n, o)
    return state._replace(
        operator=jax.tree.map(keep, new, state.operator),
        num_refreshes=state.num_refreshes + jnp.where(ok & count, refreshed, 0),
        num_nonfinite=state.num_nonfinite + jnp.where(ok, rejected, 0))


def _damping(cfg: Settings):
    """``w = 1 / alpha`` (0 at ``alpha = 0`` or without ``damp_oscillations``): at the
    full gain ``s = alpha`` an oscillating mode moves exactly to its centre."""
    if not cfg.damp_oscillations:
        return 0.0
    alpha = jnp.asarray(cfg.alpha, jnp.float32)
    return jnp.where(alpha > 0, 1.0 / jnp.where(alpha > 0, alpha, 1.0), 0.0)


def usable_scale(cfg: Settings, state: KGAState, ready):
    """``(s, active)``: each block's gain scale (valve included), and whether a correction applies."""
    scale = state.valve.alpha_factor * op_lib.gain_scale(cfg.alpha, cfg.max_gain,
                                                         state.operator.norm)
    modes = state.operator.num_stable + state.operator.num_damped
    return scale, ready & jnp.any((scale > 0) & (modes > 0))


def _count(state: KGAState, corr: op_lib.Correction) -> KGAState:
    return state._replace(num_nonfinite=state.num_nonfinite + corr.rejected.astype(jnp.int32),
                          num_clipped=state.num_clipped + corr.clipped.astype(jnp.int32))


def _correct_increment(cfg, columns, blocks, state: KGAState, push: Push, ok, ahead):
    """``increment``: the newest increment's correction ``X a``, kept in ``pending``.

    No nested gate (a nested loop would copy the columns): the correction's
    pass runs at every snapshot and is selected elementwise.
    """
    store = state.columns
    grams = columns.leaf_grams(store)
    products, cross = op_lib.residual_products(push.rows, push.old_grams, state.applied)
    base_sq = jnp.take(jnp.take(grams, push.newest, axis=1), push.newest, axis=1) + cross
    scale, active = usable_scale(cfg, state, columns.ready(store) & ok & push.allowed)
    if ahead is not None:
        scale = scale * jnp.clip(ahead, 0.0, 1.0)
    corr = op_lib.bounded_correction(products, base_sq, grams, state.operator.coefficients,
                                     scale, cfg.max_gain, blocks)
    corr = corr._replace(coefficients=jnp.where(active, corr.coefficients, 0.0),
                         rejected=active & corr.rejected, clipped=active & corr.clipped)
    delta = columns.combine(store, corr.coefficients, like=state.pending)
    delta = jax.tree.map(lambda d: jnp.where(active, d, jnp.zeros_like(d)), delta)
    return _count(state._replace(applied=corr.coefficients, pending=delta), corr)


def _record(cfg: Settings, columns: Columns, blocks: Blocks, state: KGAState, params, ok,
            ahead):
    """Record (``ok`` False: nothing changes), refresh, correct the increment, decide."""
    store, push = columns.record(state.columns, params, ok)
    state = _refresh(cfg, columns, blocks, state._replace(columns=store), params, ok)
    if cfg.strategy == "increment":
        state = _correct_increment(cfg, columns, blocks, state, push, ok, ahead)
    decided = columns.decide(state.columns, params)
    if decided is None:
        return state
    store, changed = decided
    state = state._replace(columns=store)
    return maybe_apply(changed,
                       lambda st: _refresh(cfg, columns, blocks, st, params, True, count=False),
                       state)


def _snapshot(cfg: Settings, columns: Columns, blocks: Blocks, state: KGAState, params, ahead,
              allowed=True):
    """A snapshot step; a non-finite ``params`` is skipped and counted.

    A store that records with selects (``columns.selects``: the ring) takes
    the finiteness flag into the same pass; the others are gated. ``allowed``
    False (a rollback or a restoring step) records nothing.
    """
    finite = tree_math.tree_all_finite(params)
    ok = finite & allowed
    if columns.selects:
        state = _record(cfg, columns, blocks, state, params, ok, ahead)
    else:
        state, _ = maybe_apply(
            ok, lambda c: (_record(cfg, columns, blocks, *c, True, ahead), c[1]),
            (state, params))
    return state._replace(num_nonfinite=state.num_nonfinite + (~finite).astype(jnp.int32))


def _guarded_snapshot(cfg, columns, blocks, state: KGAState, params, ahead):
    """A snapshot step with the rollback (``cfg.rollback``): judge, then record or restore.

    Everything is selected, not gated (a nested gate would copy the columns):
    the restoring update (to the snapshot of the period's start) is stored in
    ``pending`` and replaces the update of this step (:func:`_apply`).
    """
    rb = state.rollback
    roll, valve = safety.verdict(state.valve, rb)
    restore = roll | rb.restoring
    step = restore_updates(params, columns.reference(state.columns), params)
    state = _snapshot(cfg, columns, blocks, state._replace(valve=valve), params, ahead,
                      allowed=~restore)
    if cfg.strategy == "increment":   # the correction just made, or none
        active = jnp.any(state.applied != 0)
        state = state._replace(
            pending=jax.tree.map(lambda r, d: jnp.where(restore, r.astype(d.dtype), d), step,
                                 state.pending),
            applied=jnp.where(restore, 0.0, state.applied))
    else:                             # the period's updates will be corrected
        active = usable_scale(cfg, state, columns.ready(state.columns))[1]
    return state._replace(rollback=safety.RollbackState(
        pending=jnp.where(restore, False, active), replace=restore,
        restoring=roll, num_rollbacks=rb.num_rollbacks + roll.astype(jnp.int32)))


def correct_target(cfg, columns, blocks, state: KGAState, updates, target, ready):
    """``updates + X a``, ``a`` the bounded correction of ``target`` over the columns.

    ``target`` is the base displacement (the update itself, or a sum of
    updates). Two passes over the columns, gated on ``ready`` and a usable
    operator; the columns are read inside the gate, so no buffer is copied.
    """
    scale, active = usable_scale(cfg, state, ready)

    def correct(c):
        st, u, tgt = c
        products, squares = columns.project(st.columns, tgt)
        corr = op_lib.bounded_correction(products, squares, columns.leaf_grams(st.columns),
                                         st.operator.coefficients, scale, cfg.max_gain, blocks)
        delta = columns.combine(st.columns, corr.coefficients, like=u)
        return _count(st, corr), jax.tree.map(lambda a, d: a + d, u, delta), tgt

    state, updates, _ = maybe_apply(active, correct, (state, updates, target))
    return state, updates


def _correct_sum(cfg, columns, blocks, state: KGAState, updates, ready):
    """Every ``apply_every`` steps corrects ``pending``, the sum of the last
    ``apply_every`` base updates; this step's update starts or extends the sum."""
    due = (state.count % cfg.apply_every) == 0
    state, corrected = correct_target(cfg, columns, blocks, state, updates, state.pending,
                                      ready & due)
    pending = jax.tree.map(lambda p, u: jnp.where(due, u, p + u).astype(p.dtype),
                           state.pending, updates)
    return state._replace(pending=pending), corrected


def check_update_args(updates, params, like, value, message=NO_PARAMS_MSG):
    """Update-time checks: ``params`` given and matching ``updates`` and the state."""
    if params is None:
        raise ValueError(message)
    validation.same_tree(updates, params)
    validation.state_fits(like, params)
    return validation.scalar_loss(value)


def _apply(cfg, columns, blocks, state: KGAState, updates, take, params):
    """This step's update: the base's, corrected by the strategy, or a restoring one."""
    replace = state.rollback.replace if cfg.rollback else jnp.asarray(False)
    if cfg.strategy == "increment":
        return state, jax.tree.map(
            lambda u, d: jnp.where(take, jnp.where(replace, d.astype(u.dtype),
                                                   u + d.astype(u.dtype)), u),
            updates, state.pending)
    ready = columns.ready(state.columns) & ~replace
    if cfg.strategy == "sum":
        state = state._replace(pending=jax.tree.map(
            lambda p: jnp.where(replace, jnp.zeros_like(p), p), state.pending))
        state, corrected = _correct_sum(cfg, columns, blocks, state, updates, ready)
    else:
        state, corrected = correct_target(cfg, columns, blocks, state, updates, updates, ready)
    if not cfg.rollback:
        return state, corrected
    saved = columns.reference(state.columns)
    corrected, _ = maybe_apply(
        replace, lambda c: (restore_updates(c[1], saved, c[0]), c[1]), (corrected, params))
    return state, corrected


def _update(cfg: Settings, columns: Columns, updates, state: KGAState, params=None, *,
            value=None, **extra_args):
    del extra_args
    value = check_update_args(updates, params, columns.reference(state.columns), value)
    if cfg.rollback and value is None:
        raise ValueError(safety.NEEDS_VALUE)
    blocks = make_blocks(params, cfg.blocks)
    due = cfg.clock.due(state.count, state.clock)
    ahead = cfg.clock.periods_left(state.count, state.clock)
    restoring = state.rollback.restoring if cfg.rollback else jnp.asarray(False)
    take = due | restoring

    def snapshot(st, p):
        if cfg.rollback:
            return _guarded_snapshot(cfg, columns, blocks, st, p, ahead)
        if value is not None:
            st = st._replace(valve=loss_tracking.close_period(st.valve))
        return _snapshot(cfg, columns, blocks, st, p, ahead)

    # The gate carries the state only: the updates' own fusion is not broken.
    state = maybe_record(take, snapshot, state, params)
    state, corrected = _apply(cfg, columns, blocks, state, updates, take, params)
    if cfg.rollback:          # a restoring update replaces one step's update only
        state = state._replace(rollback=state.rollback._replace(replace=jnp.zeros((), bool)))
    if value is not None:     # a restoring step's loss belongs to no period
        state = state._replace(valve=loss_tracking.observe(state.valve, value, restoring))
    return corrected, state._replace(count=optax.safe_increment(state.count),
                                     clock=cfg.clock.advance(state.count, state.clock, due))


def transformation(cfg: Settings, columns: Columns) -> optax.GradientTransformationExtraArgs:
    """The engine over ``columns`` as an Optax transformation."""
    if cfg.strategy not in columns.strategies:
        raise ValueError(f"apply_every={cfg.apply_every} asks for the {cfg.strategy!r} "
                         f"strategy, which this variant does not support.")
    return optax.GradientTransformationExtraArgs(functools.partial(_init, cfg, columns),
                                                 functools.partial(_update, cfg, columns))
