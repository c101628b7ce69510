"""KGA restricted to the weights a mask keeps, on compact vectors: ``kga(..., mask=...)``.

The update is KGA's (see :mod:`koopax.kga`) on the kept weights ``I`` only::

    u'_I = u_I + s X_I K X_I^T u_I,     u'_j = u_j  for j not in I,

with ``X_I`` the stored increments restricted to ``I`` and ``K`` the operator
of their Gram matrix. The restriction is a real compaction, not a 0/1
multiply: every parameter leaf keeps a static number ``c_l`` of slots
(:func:`koopax.masks.leaf_capacities`), the kept positions are an int32 index
vector per leaf, and the window stores compact increments of length ``c_l``.
A step gathers ``u_I``, does the two passes ``X_I^T u_I`` and ``X_I c`` over
compact vectors and scatter-adds the change back (``.at[idx].add``); a
snapshot gathers ``w_I``. Cost per step: ``O(h C)`` for ``C = sum c_l``
slots plus the gather/scatter, instead of ``O(h N)``.

Phases (all state shapes static, one compiled step):

1. *Full*: plain KGA on parameter-shaped increments until the first decision,
   at the first snapshot where the window is full and at least
   ``mask.start`` snapshots were taken.
2. *Transition*, at that snapshot: the criterion runs on the full window
   (params, increments, Gram), the kept weights are compacted (weights
   beyond a leaf's capacity are treated as masked and counted in
   ``num_overflow``), and the full window's increments are gathered into the
   compact window, so acceleration continues without a gap (the Gram
   matrix is recomputed on the compact vectors).
3. *Compact*: every ``mask.every`` snapshots the criterion runs again on the
   compact window; the kept set only shrinks (a weight out of the compact
   window has no recorded increments to rejoin with), the index vectors and
   all stored compact vectors are shrunk in place and the Gram matrix is
   recomputed. The full window stays in the state, unused (static shapes).

The window is a ring buffer (:class:`RingWindow`, written in place) and the
DMD refresh uses ``C`` as the row count in the rank policy's noise threshold
in both phases (identical to :func:`koopax.kga` when ``C = N``).
The phase gates are 0/1-trip while loops (``lax.cond`` would copy the window
through the untaken branch on every step), so a compact step executes only
compact work and no buffer is copied.

References:
  Anonymous, *Dynamic Training Guided by Training Dynamics* (KGA, KWM),
  OpenReview 7AB077M4TY, 2024, Algorithms 1-2, Eqs. 10-15.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from koopax import acceleration, loss_tracking, masks, snapshots, tree_math
from koopax.control import maybe_apply, maybe_record
from koopax.snapshots import RingWindow

_HIGHEST = jax.lax.Precision.HIGHEST


def _rows(slot_leaf):
    return slot_leaf.reshape(slot_leaf.shape[0], -1)


def _inputs(ring):
    """:class:`koopax.masks.MaskInputs` of a ring, increments oldest first."""
    return masks.MaskInputs(ring.last, snapshots.ring_increments(ring), snapshots.ring_gram(ring))


def compact_slots(state: "MaskedKGAState") -> tuple:
    """The compact window's slots: ``(m, c_l)`` views of the full window's buffers.

    The compact increments live in the first ``c_l`` entries of each raveled
    slot of the full window (unused once the window is compact), so masking
    never needs a second ``m x N`` buffer.
    """
    return _prefix_views(state.window.slots, state.indices)


def _prefix_views(full_slots, indices):
    """``(m, c_l)`` prefixes of the full slot buffers, ``c_l`` the length of ``indices[l]``."""
    return tuple(_rows(s)[:, :i.shape[0]]
                 for s, i in zip(jax.tree.leaves(full_slots), indices, strict=True))


def _store_compact(window, slots):
    """``window`` with ``slots`` (``(m, c_l)`` per leaf) written into its buffers' prefixes."""
    full = jax.tree.leaves(window.slots)
    new = [jax.lax.dynamic_update_slice(_rows(f), c.astype(f.dtype), (0, 0)).reshape(f.shape)
           for f, c in zip(full, slots, strict=True)]
    return window._replace(slots=jax.tree.unflatten(jax.tree.structure(window.slots), new))


class MaskedKGAState(NamedTuple):
    """State of :func:`masked_kga`.

    Attributes:
      count: int32 steps taken.
      compact: bool, True once the mask has been applied (compact phase).
      window: full ring window (used only in the full phase).
      compact_window: ring window over the compact view (``last``: tuple of
        ``(c_l,)`` leaves); its slots (``(m, c_l)`` per leaf) are stored in the
        full window's buffers (:func:`compact_slots`) and ``slots`` is None.
      indices: tuple of int32 ``(c_l,)`` kept positions per raveled leaf,
        sorted; padding slots hold ``n_l`` (out of range).
      last_decision: int32 snapshot count at the latest mask decision.
      num_kept: int32 weights accelerated.
      num_overflow: int32 weights the criterion kept at the transition but no
        slot could hold (treated as masked).
      masked_fraction: float32 fraction of all weights the criterion excluded.
      num_mask_updates: int32 mask decisions taken.
      coefficients: ``(m, m)`` float32 ``K`` in slot order: the update is
        ``u + s Z^T K Z u`` with ``Z`` the live window's slots (the newest
        slot's row and column are zero).
      valve, operator_norm, eigenvalues, rank, num_stable, num_refreshes,
      num_nonfinite, num_clipped, applied: as in :class:`koopax.KGAState`
      (``applied`` in the live window's slot coordinates).
    """

    count: jax.Array
    compact: jax.Array
    window: RingWindow
    compact_window: RingWindow
    indices: tuple
    last_decision: jax.Array
    num_kept: jax.Array
    num_overflow: jax.Array
    masked_fraction: jax.Array
    num_mask_updates: jax.Array
    coefficients: jax.Array
    operator_norm: jax.Array
    eigenvalues: jax.Array
    rank: jax.Array
    num_stable: jax.Array
    num_refreshes: jax.Array
    num_nonfinite: jax.Array
    num_clipped: jax.Array
    valve: loss_tracking.Valve
    applied: jax.Array


def _correct_compact(carry, coefficients, scale, max_gain):
    """``u_I + f_l Z_I^T a`` on the kept entries; the rest passes unchanged.

    ``carry`` holds the full window's slot buffers; the compact slots are their
    prefixes (:func:`compact_slots`). The compact ``(m, c_l)`` views are small
    dense matrices, so the two passes are matrix products here (about 2x faster
    than multiply-and-reduce at ``c_l ~ 1e5``). The per-leaf bound uses the
    kept entries' norm ``|u_I,l|``.
    """
    u, state, full_slots, indices = carry
    slots = _prefix_views(full_slots, indices)
    uc = masks.gather(u, indices)
    acc = [tree_math.accumulation_dtype(jnp.result_type(s, x)) for s, x in zip(slots, uc)]
    products = jnp.stack([jnp.matmul(s.astype(dt), x.astype(dt), precision=_HIGHEST)
                          .astype(jnp.float32) for s, x, dt in zip(slots, uc, acc)])
    corr = acceleration.bounded_correction(
        products, acceleration.leaf_squares(uc), state.compact_window.leaf_grams,
        coefficients, scale, max_gain)
    dc = tuple(jnp.matmul(a.astype(dt), s.astype(dt), precision=_HIGHEST).astype(x.dtype)
               for a, s, x, dt in zip(corr.coefficients, slots, uc, acc))
    return (masks.scatter_add(u, indices, dc), acceleration.count_correction(state, corr),
            full_slots, indices)


def _compact_add(updates, full_slots, indices, correction):
    """``u_I + X_I a`` scattered back (the compact slots are prefixes of ``full_slots``)."""
    slots = _prefix_views(full_slots, indices)
    dc = tuple(jnp.matmul(a, s.astype(jnp.float32), precision=_HIGHEST)
               for a, s in zip(correction.coefficients, slots))
    dc = tuple(d.astype(u.dtype) for d, u in zip(dc, jax.tree.leaves(updates)))
    return masks.scatter_add(updates, indices, dc)


def _compact_ring(last, slots, num_snapshots):
    """A compact ring (slots held elsewhere) over ``slots`` (``(m, c_l)`` per leaf)."""
    m = slots[0].shape[0] if slots else 1
    return RingWindow(last=last, slots=None, leaf_grams=tree_math.stacked_leaf_grams(slots),
                      num_snapshots=num_snapshots,
                      num_valid=jnp.minimum(jnp.maximum(num_snapshots - 1, 0), m).astype(jnp.int32))


@dataclasses.dataclass(frozen=True)
class _Config:
    mask: masks.Mask
    alpha: Any
    snapshot_every: int
    increment: bool
    slots: int
    start: int
    snapshot_dtype: Any
    max_gain: Any
    common: dict


def _statics(cfg, params):
    leaves = jax.tree.leaves(params)
    sizes = tuple(int(np.prod(np.shape(x), dtype=np.int64)) for x in leaves)
    return sizes, masks.leaf_capacities(cfg.mask.capacity, params)


def _init(cfg, params):
    sizes, caps = _statics(cfg, params)
    compact_like = tuple(
        jnp.zeros((c,), x.dtype) for x, c in zip(jax.tree.leaves(params), caps))
    return MaskedKGAState(
        count=jnp.zeros((), jnp.int32),
        compact=jnp.array(False),
        window=snapshots.init_ring(params, cfg.slots, cfg.snapshot_dtype),
        compact_window=snapshots.init_ring(compact_like, cfg.slots, cfg.snapshot_dtype)._replace(
            slots=None),
        indices=tuple(masks.padding_indices(n, c) for n, c in zip(sizes, caps)),
        last_decision=jnp.zeros((), jnp.int32),
        num_kept=jnp.zeros((), jnp.int32),
        num_overflow=jnp.zeros((), jnp.int32),
        masked_fraction=jnp.zeros((), jnp.float32),
        num_mask_updates=jnp.zeros((), jnp.int32),
        valve=loss_tracking.init_valve(),
        applied=jnp.zeros((len(sizes), cfg.slots), jnp.float32),
        **acceleration.operator_fields(cfg.slots, cfg.slots - 1),
    )


def _to_compact(cfg, state, sizes, caps):
    w = state.window
    keep = jax.tree.map(jnp.logical_not, cfg.mask.exclude(_inputs(w)))
    indices, num_kept, num_wanted = masks.compact_indices(keep, caps)
    slots = tuple(masks.gather_rows(_rows(s), i)
                  for s, i in zip(jax.tree.leaves(w.slots), indices))
    return state._replace(
        compact=jnp.array(True), indices=indices, window=_store_compact(w, slots),
        compact_window=_compact_ring(masks.gather(w.last, indices), slots, w.num_snapshots),
        last_decision=w.num_snapshots, num_kept=num_kept,
        num_overflow=num_wanted - num_kept,
        masked_fraction=(1.0 - num_wanted / sum(sizes)).astype(jnp.float32),
        num_mask_updates=state.num_mask_updates + 1)


def _shrink(cfg, state, sizes):
    cw = state.compact_window._replace(slots=compact_slots(state))
    keep = tuple(jnp.logical_not(e) for e in cfg.mask.exclude(_inputs(cw)))
    indices, positions, num_kept = masks.recompact(state.indices, keep, sizes)
    slots = tuple(masks.gather_rows(s, p) for s, p in zip(cw.slots, positions))
    excluded_total = sum(sizes) - num_kept - state.num_overflow
    return state._replace(
        compact_window=_compact_ring(masks.take(cw.last, positions), slots,
                                     cw.num_snapshots),
        window=_store_compact(state.window, slots), indices=indices,
        last_decision=cw.num_snapshots, num_kept=num_kept,
        masked_fraction=(excluded_total / sum(sizes)).astype(jnp.float32),
        num_mask_updates=state.num_mask_updates + 1)


def _push_full(cfg, state, params):
    """Pushes the full window; returns the state, the rows and the old Gram matrices."""
    old = state.window.leaf_grams
    window, rows = snapshots.ring_push_rows(state.window, params)
    return state._replace(window=window), rows, old


def _push_compact(cfg, state, params):
    cw = state.compact_window._replace(slots=compact_slots(state))
    old = cw.leaf_grams
    cw, rows = snapshots.ring_push_rows(cw, masks.gather(params, state.indices))
    return state._replace(compact_window=cw._replace(slots=None),
                          window=_store_compact(state.window, cw.slots)), rows, old


def _decide(cfg, state, sizes, caps):
    """The mask decisions due at this snapshot (transition, then shrinking)."""
    first = (~state.compact & snapshots.ring_is_full(state.window)
             & (state.window.num_snapshots >= cfg.start))
    again = state.compact & (
        (state.compact_window.num_snapshots - state.last_decision) >= cfg.mask.every)
    state = maybe_apply(again, lambda st: _shrink(cfg, st, sizes), state)
    return maybe_apply(first, lambda st: _to_compact(cfg, st, sizes, caps), state), first | again


def _refresh(cfg, state, caps):
    """One operator for whichever window is live (a single compiled refresh)."""
    grams, count, valid = jax.tree.map(
        lambda a, b: jnp.where(state.compact, a, b),
        (state.compact_window.gram, state.compact_window.num_snapshots,
         state.compact_window.num_valid),
        (state.window.gram, state.window.num_snapshots, state.window.num_valid))
    ring = RingWindow(None, None, grams[None], count, valid)
    order = snapshots.ring_order(ring)
    op = acceleration.acceleration_operator(snapshots.ring_gram(ring),
                                            num_features=sum(caps), **cfg.common)
    return acceleration.install_operator(
        state, op, snapshots.ring_is_full(ring),
        acceleration.slot_coefficients(op.coefficients, order))


def _record(cfg, carry, params, sizes, caps):
    """Push, refresh, correct the newest increment (``cfg.increment``), decide, refresh.

    The correction's coefficients stay valid through a shrinking decision: the
    kept weights' slots are the same slots restricted, so ``X_I a`` is the
    restriction of ``X a``. The snapshot of the first decision corrects
    nothing (no weight is chosen yet; ``applied = 0`` keeps the next
    correction exact).
    """
    state, updates = carry
    num_leaves = len(sizes)
    carry = (state, jnp.zeros((num_leaves, cfg.slots), jnp.float32),
             jnp.zeros((num_leaves, cfg.slots, cfg.slots), jnp.float32), params)
    was_compact = state.compact
    carry = maybe_apply(~was_compact, lambda c: (*_push_full(cfg, c[0], c[3]), c[3]), carry)
    state, rows, old, _ = maybe_apply(was_compact,
                                      lambda c: (*_push_compact(cfg, c[0], c[3]), c[3]), carry)
    state = _refresh(cfg, state, caps)
    if cfg.increment:   # not at the transition: the mask has not chosen the weights yet
        transition = (~state.compact & snapshots.ring_is_full(state.window)
                      & (state.window.num_snapshots >= cfg.start))
        state, updates = _correct_increment(cfg, state, updates, rows, old, ~transition)
    state, decided = _decide(cfg, state, sizes, caps)
    return maybe_apply(decided, lambda st: _refresh(cfg, st, caps), state), updates


def _correct_increment(cfg, state, updates, rows, old, allowed):
    """Corrects the newest increment in the live window's coordinates (see koopax.kga)."""
    cw, w = state.compact_window, state.window
    live = RingWindow(None, None, *jax.tree.map(
        lambda a, b: jnp.where(state.compact, a, b),
        (cw.leaf_grams, cw.num_snapshots, cw.num_valid),
        (w.leaf_grams, w.num_snapshots, w.num_valid)))
    slot = snapshots.newest_slot(live)
    products, cross = acceleration.residual_products(rows, old, state.applied)
    base_sq = live.leaf_grams[:, slot, slot] + cross
    scale, active = acceleration.usable_scale(
        state, cfg.alpha, cfg.max_gain, snapshots.ring_is_full(live) & allowed)
    state = state._replace(applied=jnp.zeros_like(state.applied))

    def correct(c):
        st, u, full_slots = c
        corr = acceleration.bounded_correction(products, base_sq, live.leaf_grams,
                                               st.coefficients, scale, cfg.max_gain)
        u = jax.lax.cond(st.compact, lambda: _compact_add(u, full_slots, st.indices, corr),
                         lambda: acceleration.add_combination(u, full_slots, corr))
        return acceleration.count_correction(st._replace(applied=corr.coefficients), corr), \
            u, full_slots

    state, updates, full_slots = maybe_apply(
        active, correct, (state._replace(window=state.window._replace(slots=None)),
                          updates, state.window.slots))
    return state._replace(window=state.window._replace(slots=full_slots)), updates


def _full_columns(state):
    return state.window.slots, state.window.leaf_grams


def _update(cfg, updates, state, params=None, value=None, **extra_args):
    del extra_args
    acceleration.check_update_args(updates, params, state.window.last, value)
    sizes, caps = _statics(cfg, params)
    take = (state.count % cfg.snapshot_every) == 0
    close = functools.partial(acceleration.close_valve, value=value)
    state, updates = maybe_record(
        take, lambda c, p: acceleration.record_if_finite(
            lambda cc, pp: _record(cfg, cc, pp, sizes, caps), (close(c[0]), c[1]), p),
        (state, updates), params)
    state = acceleration.track_value(state, value)
    if cfg.increment:
        return updates, state._replace(count=optax.safe_increment(state.count))
    state, updates = acceleration.correct_target(
        state, updates, updates, _full_columns,
        ~state.compact & snapshots.ring_is_full(state.window), cfg.alpha, cfg.max_gain)
    scale, active = acceleration.usable_scale(
        state, cfg.alpha, cfg.max_gain, state.compact & snapshots.ring_is_full(state.compact_window))
    updates, state, full_slots, indices = maybe_apply(
        active, lambda c: _correct_compact(c, c[1].coefficients, scale, cfg.max_gain),
        (updates, state._replace(window=state.window._replace(slots=None)),
         state.window.slots, state.indices))
    state = state._replace(window=state.window._replace(slots=full_slots), indices=indices)
    return updates, state._replace(count=optax.safe_increment(state.count))


def masked_kga(
    mask: masks.Mask,
    alpha=2.0,
    *,
    num_snapshots: int = 6,
    snapshot_every: int = 100,
    apply_every: int | None = None,
    epsilon=1e-2,
    rank="svht",
    snapshot_dtype=None,
    max_gain=10.0,
    rcond=None,
) -> optax.GradientTransformationExtraArgs:
    """KGA on the weights ``mask`` keeps, on compact vectors.

    Args:
      mask: a :class:`koopax.masks.Mask` (``masks.kwm``, ``masks.norm``,
        ``masks.delta``); ``num_snapshots`` must be at least ``mask.min_snapshots``.
      alpha, num_snapshots, snapshot_every, epsilon, rank: as in :func:`koopax.kga`.
      snapshot_dtype, max_gain, rcond: as in :func:`koopax.kga`.
      apply_every: ``1`` corrects every update (on compact vectors), ``None``
        or ``snapshot_every`` the newest increment at each snapshot (nothing
        between snapshots). Other values: ValueError.

    Examples:
      Norm masking keeps the weights with ``|w| >= 0.5``; the small one is
      never accelerated:

      >>> import jax, jax.numpy as jnp, optax, koopax
      >>> tx = optax.chain(optax.sgd(0.1), koopax.masked_kga(
      ...     koopax.masks.norm(0.5), 1.0, num_snapshots=4, snapshot_every=1))
      >>> params = {"w": jnp.array([0.1, -2.0, 3.0])}
      >>> state = tx.init(params)
      >>> for _ in range(6):
      ...     updates, state = tx.update(params, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> koopax.masked_kga_kept(state[1], params)["w"].tolist(), int(state[1].num_kept)
      ([False, True, True], 2)

    References:
      Anonymous, *Dynamic Training Guided by Training Dynamics*, OpenReview
      7AB077M4TY, 2024, Algorithms 1-2, Eqs. 10-15.
    """
    if not isinstance(mask, masks.Mask):
        raise ValueError(f"mask must be a koopax.masks.Mask; got {type(mask).__name__}.")
    acceleration.validate(alpha=alpha, num_snapshots=num_snapshots,
                          snapshot_every=snapshot_every, apply_every=apply_every,
                          epsilon=epsilon,
                          rank=rank, snapshot_dtype=snapshot_dtype, max_gain=max_gain,
                          rcond=rcond, max_rank=num_snapshots - 2)
    if num_snapshots < mask.min_snapshots:
        raise ValueError(
            f"num_snapshots must be >= {mask.min_snapshots} for the {mask.name} mask "
            f"(its window); got {num_snapshots}.")
    if apply_every not in (1, None, snapshot_every):
        raise ValueError(f"apply_every must be 1, None or snapshot_every={snapshot_every} "
                         f"for masked KGA; got {apply_every!r}.")
    cfg = _Config(mask, alpha, snapshot_every, apply_every != 1, num_snapshots - 1,
                  max(num_snapshots, mask.start or 0), snapshot_dtype, max_gain,
                  dict(epsilon=epsilon, rank=rank, rcond=rcond))
    return optax.GradientTransformationExtraArgs(functools.partial(_init, cfg),
                                                 functools.partial(_update, cfg))


def masked_kga_kept(state: MaskedKGAState, params):
    """Bool pytree shaped like ``params``: True where KGA accelerates the weight.

    Before the first mask decision every weight is accelerated.
    """
    inside = masks.kept(state.indices, params)
    return jax.tree.map(lambda x: x | ~state.compact, inside)
