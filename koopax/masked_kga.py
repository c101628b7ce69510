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

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from koopax.control import maybe_apply, maybe_record
from koopax import masks, tree_math, validation
from koopax.kga import (NO_PARAMS_MSG, _gain_scale, acceleration_operator,
                        initial_operator_fields, install_operator)

_HIGHEST = jax.lax.Precision.HIGHEST


class RingWindow(NamedTuple):
    """Increment window as a ring buffer: no buffer is moved when a snapshot arrives.

    A shift register (:class:`koopax.snapshots.IncrementWindow`) permutes its
    buffers on every push, which makes XLA copy the whole window through the
    ``lax.cond`` that gates snapshot steps, on *every* step. Here increment
    number ``t`` (0-based) is written in place into slot ``t mod m`` of
    stacked leaves ``(m, *shape)``, and the Gram matrix is kept in slot order.

    Attributes:
      last: newest snapshot (parameter dtype).
      slots: pytree with leaves ``(m, *shape)`` of increments in slot order.
      gram: ``(m, m)`` float32 ``<slot_i, slot_j>``.
      num_snapshots: int32 snapshots recorded.
    """

    last: Any
    slots: Any
    gram: jax.Array
    num_snapshots: jax.Array


def _ring_init(like, m, dtype):
    return RingWindow(
        last=jax.tree.map(lambda p: jnp.zeros(p.shape, p.dtype), like),
        slots=jax.tree.map(lambda p: jnp.zeros((m,) + p.shape, dtype or p.dtype), like),
        gram=jnp.zeros((m, m), jnp.float32),
        num_snapshots=jnp.zeros((), jnp.int32))


def _rows(slot_leaf):
    return slot_leaf.reshape(slot_leaf.shape[0], -1)


def _slot_products(slots, tree):
    """``(m,)`` float32 ``<slot_i, tree>``.

    Written as multiply-and-reduce rather than a matrix-vector product: XLA's
    CPU layout assignment otherwise transposes the slot buffers on every step.
    """
    out = None
    for s, x in zip(jax.tree.leaves(slots), jax.tree.leaves(tree), strict=True):
        dt = tree_math.accumulation_dtype(jnp.result_type(s, x))
        part = jnp.sum(_rows(s).astype(dt) * jnp.ravel(x).astype(dt)[None, :], axis=1)
        out = part if out is None else out + part
    return out.astype(jnp.float32)


def _slot_combination(slots, coefficients, like):
    """``sum_i coefficients[i] slot_i`` with the shapes and dtypes of ``like``."""
    def combine(s, ref):
        dt = tree_math.accumulation_dtype(jnp.result_type(s, ref))
        rows = _rows(s).astype(dt)
        out = sum(coefficients[i].astype(dt) * rows[i] for i in range(rows.shape[0]))
        return out.reshape(ref.shape).astype(ref.dtype)

    return jax.tree.map(combine, slots, like)


def _slot_gram(slots):
    gram = None
    for s in jax.tree.leaves(slots):
        r = _rows(s).astype(tree_math.accumulation_dtype(s.dtype))
        part = jnp.matmul(r, r.T, precision=_HIGHEST)
        gram = part if gram is None else gram + part
    gram = gram.astype(jnp.float32)
    return 0.5 * (gram + gram.T)


def _ring_push(ring, params):
    """Writes ``params - last`` in place into the slot of the next increment."""
    m = ring.gram.shape[0]
    # The first snapshot's "increment" lands in slot m - 1 and is overwritten
    # (slot and Gram row and column) before the window counts as full.
    slot = (ring.num_snapshots - 1) % m

    def write(s, p, last):
        dt = tree_math.accumulation_dtype(jnp.result_type(p, last))
        inc = (p.astype(dt) - last.astype(dt)).astype(s.dtype)
        return jax.lax.dynamic_update_index_in_dim(s, inc, slot, 0)

    slots = jax.tree.map(write, ring.slots, params, ring.last)
    new = jax.tree.map(lambda s: jax.lax.dynamic_index_in_dim(s, slot, 0, keepdims=False),
                       slots)
    row = _slot_products(slots, new)
    gram = ring.gram.at[slot, :].set(row).at[:, slot].set(row)
    last = jax.tree.map(lambda p, l: p.astype(l.dtype), params, ring.last)
    return RingWindow(last, slots, gram, ring.num_snapshots + 1)


def _ring_full(ring):
    return ring.num_snapshots > ring.gram.shape[0]


def _ring_order(ring):
    """Slots oldest first (valid once full)."""
    m = ring.gram.shape[0]
    return (jnp.maximum(ring.num_snapshots - 1, 0) + jnp.arange(m)) % m


def _ring_inputs(ring):
    """:class:`koopax.masks.MaskInputs` of the ring, increments oldest first."""
    m = ring.gram.shape[0]
    order = _ring_order(ring)
    incs = tuple(jax.tree.map(lambda s: jnp.take(s, order[i], axis=0), ring.slots)
                 for i in range(m))
    return masks.MaskInputs(ring.last, incs, ring.gram[order][:, order])


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
      operator_norm, eigenvalues, rank, num_stable, num_refreshes,
      num_nonfinite: as in :class:`koopax.KGAState`.
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


def _accelerate_full(carry, coefficients, scale):
    """``u + scale Z^T K Z u`` over the ring slots; keeps ``u`` if the coefficients
    are non-finite (see :func:`koopax.kga._accelerate` for why that suffices)."""
    u, rejected, slots = carry
    coef = scale * jnp.matmul(coefficients, _slot_products(slots, u), precision=_HIGHEST)
    ok = jnp.all(jnp.isfinite(coef))
    delta = _slot_combination(slots, jnp.where(ok, coef, 0.0), like=u)
    return jax.tree.map(lambda x, d: x + d, u, delta), rejected | ~ok, slots


def _accelerate_compact(carry, coefficients, scale):
    """``u_I + scale Z_I^T K Z_I u_I`` on the kept entries; the rest passes unchanged.

    ``carry`` holds the full window's slot buffers; the compact slots are their
    prefixes (:func:`compact_slots`). The compact ``(m, c_l)`` views are small
    dense matrices, so the two passes are matrix products here (about 2x faster
    than the multiply-and-reduce of :func:`_slot_products` at ``c_l ~ 1e5``).
    """
    u, rejected, full_slots, indices = carry
    slots = _prefix_views(full_slots, indices)
    # Padding slots of the stored increments are 0, so what ``uc`` holds there
    # (the leaf's last entry) never reaches the products, unless it is not
    # finite: then the coefficients are not either and ``u`` passes unchanged.
    uc = masks.gather(u, indices, padding="any")
    acc = [tree_math.accumulation_dtype(jnp.result_type(s, x)) for s, x in zip(slots, uc)]
    products = sum(jnp.matmul(s.astype(dt), x.astype(dt), precision=_HIGHEST).astype(jnp.float32)
                   for s, x, dt in zip(slots, uc, acc))
    coef = scale * jnp.matmul(coefficients, products, precision=_HIGHEST)
    ok = jnp.all(jnp.isfinite(coef))
    coef = jnp.where(ok, coef, 0.0)
    dc = tuple(jnp.matmul(coef.astype(dt), s.astype(dt), precision=_HIGHEST).astype(x.dtype)
               for s, x, dt in zip(slots, uc, acc))
    return masks.scatter_add(u, indices, dc), rejected | ~ok, full_slots, indices


def masked_kga(
    mask: masks.Mask,
    alpha=1.0,
    *,
    num_snapshots: int = 6,
    snapshot_every: int = 100,
    epsilon=1e-2,
    rank=None,
    snapshot_dtype=None,
    max_gain=10.0,
    rcond=None,
) -> optax.GradientTransformationExtraArgs:
    """KGA on the weights ``mask`` keeps; called by ``koopax.kga(..., mask=mask)``.

    Arguments as in :func:`koopax.kga` (full variant; already validated there)
    plus ``mask``, a :class:`koopax.masks.Mask`. ``num_snapshots`` must be at
    least ``mask.min_snapshots``.
    """
    if not isinstance(mask, masks.Mask):
        raise ValueError(f"mask must be a koopax.masks.Mask or None; got {type(mask).__name__}.")
    if num_snapshots < mask.min_snapshots:
        raise ValueError(
            f"num_snapshots must be >= {mask.min_snapshots} for the {mask.name} mask "
            f"(its window); got {num_snapshots}.")
    m = num_snapshots - 1
    k = m - 1
    start = max(num_snapshots, mask.start or 0)
    common = dict(epsilon=epsilon, rank=rank, rcond=rcond)

    def statics(params):
        leaves = jax.tree.leaves(params)
        sizes = tuple(int(np.prod(np.shape(x), dtype=np.int64)) for x in leaves)
        return sizes, masks.leaf_capacities(mask.capacity, params)

    def install(state, op, order, ready):
        """Installs ``op`` (chronological ``K``) in slot order if ready and finite."""
        coefs = jnp.zeros((m, m), jnp.float32)
        coefs = coefs.at[order[:-1, None], order[None, :-1]].set(op.coefficients)
        return install_operator(state, op, ready, coefs)

    def init_fn(params):
        sizes, caps = statics(params)
        compact_like = tuple(
            jnp.zeros((c,), x.dtype) for x, c in zip(jax.tree.leaves(params), caps))
        return MaskedKGAState(
            count=jnp.zeros((), jnp.int32),
            compact=jnp.array(False),
            window=_ring_init(params, m, snapshot_dtype),
            compact_window=_ring_init(compact_like, m, snapshot_dtype)._replace(slots=None),
            indices=tuple(masks._padding(n, c) for n, c in zip(sizes, caps)),
            last_decision=jnp.zeros((), jnp.int32),
            num_kept=jnp.zeros((), jnp.int32),
            num_overflow=jnp.zeros((), jnp.int32),
            masked_fraction=jnp.zeros((), jnp.float32),
            num_mask_updates=jnp.zeros((), jnp.int32),
            **initial_operator_fields(m, k),
        )

    def record_full(state, params, sizes, caps):
        window = _ring_push(state.window, params)
        state = state._replace(window=window)
        due = _ring_full(window) & (window.num_snapshots >= start)

        def to_compact(state):
            w = state.window
            excluded = mask.exclude(_ring_inputs(w))
            keep = jax.tree.map(jnp.logical_not, excluded)
            indices, num_kept, num_wanted = masks.compact_indices(keep, caps)
            slots = tuple(
                masks.gather_rows(_rows(s), i)
                for s, i in zip(jax.tree.leaves(w.slots), indices))
            cw = RingWindow(last=masks.gather(w.last, indices), slots=None,
                            gram=_slot_gram(slots), num_snapshots=w.num_snapshots)
            return state._replace(
                compact=jnp.array(True), compact_window=cw, indices=indices,
                window=_store_compact(w, slots),
                last_decision=w.num_snapshots, num_kept=num_kept,
                num_overflow=num_wanted - num_kept,
                masked_fraction=(1.0 - num_wanted / sum(sizes)).astype(jnp.float32),
                num_mask_updates=state.num_mask_updates + 1)

        return maybe_apply(due, to_compact, state)

    def record_compact(state, params, sizes, caps):
        cw = state.compact_window._replace(slots=compact_slots(state))
        cw = _ring_push(cw, masks.gather(params, state.indices))
        state = state._replace(compact_window=cw._replace(slots=None),
                               window=_store_compact(state.window, cw.slots))
        due = (cw.num_snapshots - state.last_decision) >= mask.every

        def shrink(state):
            cw = state.compact_window._replace(slots=compact_slots(state))
            excluded = mask.exclude(_ring_inputs(cw))
            keep = tuple(jnp.logical_not(e) for e in excluded)
            indices, positions, num_kept = masks.recompact(state.indices, keep, sizes)
            slots = tuple(
                masks.gather_rows(s, p)
                for s, p in zip(cw.slots, positions))
            cw = RingWindow(last=masks.take(cw.last, positions), slots=None,
                            gram=_slot_gram(slots), num_snapshots=cw.num_snapshots)
            excluded_total = sum(sizes) - num_kept - state.num_overflow
            return state._replace(
                compact_window=cw, window=_store_compact(state.window, slots),
                indices=indices, last_decision=cw.num_snapshots,
                num_kept=num_kept,
                masked_fraction=(excluded_total / sum(sizes)).astype(jnp.float32),
                num_mask_updates=state.num_mask_updates + 1)

        return maybe_apply(due, shrink, state)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(NO_PARAMS_MSG)
        validation.same_tree(updates, params)
        validation.state_fits(state.window.last, params)
        sizes, caps = statics(params)
        take = (state.count % snapshot_every) == 0

        def record(state, params):
            was_compact = state.compact
            state, params = maybe_apply(
                ~was_compact, lambda c: (record_full(*c, sizes, caps), c[1]), (state, params))
            state, params = maybe_apply(
                was_compact, lambda c: (record_compact(*c, sizes, caps), c[1]), (state, params))
            # One operator for whichever window is live (a single compiled refresh).
            live = jax.tree.map(lambda a, b: jnp.where(state.compact, a, b),
                                (state.compact_window.gram, state.compact_window.num_snapshots),
                                (state.window.gram, state.window.num_snapshots))
            ring = RingWindow(None, None, *live)
            order = _ring_order(ring)
            op = acceleration_operator(ring.gram[order][:, order], num_features=sum(caps),
                                       **common)
            return install(state, op, order, _ring_full(ring))

        def record_if_finite(state, params):
            # Checked on snapshot steps only; a non-finite snapshot is skipped and counted.
            ok = tree_math.tree_all_finite(params)
            state, _ = maybe_apply(ok, lambda c: (record(*c), c[1]), (state, params))
            return state._replace(num_nonfinite=state.num_nonfinite + (~ok).astype(jnp.int32))

        state = maybe_record(take, record_if_finite, state, params)
        scale = _gain_scale(alpha, max_gain, state.operator_norm)
        usable = (scale > 0) & (state.num_stable > 0)

        updates, rejected, full_slots = maybe_apply(
            ~state.compact & _ring_full(state.window) & usable,
            lambda c: _accelerate_full(c, state.coefficients, scale),
            (updates, jnp.array(False), state.window.slots))
        updates, rejected, full_slots, indices = maybe_apply(
            state.compact & _ring_full(state.compact_window) & usable,
            lambda c: _accelerate_compact(c, state.coefficients, scale),
            (updates, rejected, full_slots, state.indices))
        state = state._replace(window=state.window._replace(slots=full_slots), indices=indices)
        return updates, state._replace(
            count=optax.safe_increment(state.count),
            num_nonfinite=state.num_nonfinite + rejected.astype(jnp.int32),
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def kept_weights(state: MaskedKGAState, params):
    """Bool pytree shaped like ``params``: True where KGA accelerates the weight.

    Before the first mask decision every weight is accelerated.
    """
    inside = masks.kept(state.indices, params)
    return jax.tree.map(lambda x: x | ~state.compact, inside)
