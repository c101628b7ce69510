"""The one window core: a ring buffer of weight increments with per-leaf Gram matrices.

Consecutive weight snapshots differ by 1e-3..1e-5 relative, so the Gram matrix
of raw snapshots is dominated by ``|w|^2`` and float32 loses the dynamics.
koopax therefore records increments ``d_i = w_{i+1} - w_i``: for affine
dynamics ``w_{i+1} - w* = A (w_i - w*)`` they obey ``d_{i+1} = A d_i``
exactly, with the same eigenvalues except the neutral ``lambda = 1`` of the
fixed point, and their Gram matrix carries no common offset.

The window holds the newest snapshot ``w_t`` (in the parameters' own dtype, so
that the next increment is exact) and the last ``m`` increments in a ring:
increment number ``t`` (0-based) is written in place into slot ``t mod m`` of
stacked leaves ``(m, *shape)``, so a snapshot moves no buffer (a shift
register permutes its buffers on every push, which inside the 0/1-trip loops
that gate snapshot steps makes XLA copy the window on *every* step). Each leaf
keeps its own Gram matrix ``G_l[i, j] = <slot_i, slot_j>_l`` in slot order,
updated by one pass over the window per snapshot (``m`` products of the new
increment with the stored ones, no old product recomputed); the total
``G = sum_l G_l`` is what DMD needs and the per-leaf parts give the norm of any
combination ``|X_l c|^2 = c^T G_l c`` in every leaf without a pass.

Every consumer (KGA, masked KGA, PDT, the baselines) uses this window; its
time order is :func:`ring_order`. Memory: ``N`` entries of the parameter dtype
plus ``m N`` of the increment dtype (``bfloat16`` halves it: increments are
small numbers stored with relative precision; the snapshot is never rounded).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from koopax._src import tree_math


class RingWindow(NamedTuple):
    """The increment window (see the module docstring).

    Attributes:
      last: the newest recorded snapshot ``w_t`` (parameter dtype).
      slots: pytree with leaves ``(m, *shape)``, increments in slot order.
      leaf_grams: ``(num_leaves, m, m)`` float32 ``<slot_i, slot_j>`` per leaf.
      num_snapshots: int32 snapshots recorded (it sets the slot order).
      num_valid: int32 slots that hold real increments (``<= m``; a
        :func:`ring_pop` lowers it).
    """

    last: Any
    slots: Any
    leaf_grams: jax.Array
    num_snapshots: jax.Array
    num_valid: jax.Array

    @property
    def gram(self) -> jax.Array:
        """``(m, m)`` float32 Gram matrix of the slots, in slot order."""
        return jnp.sum(self.leaf_grams, axis=0)


def init_ring(params, size: int, increment_dtype=None) -> RingWindow:
    """An empty ring of ``size`` increments of ``params``-shaped trees.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import snapshots
      >>> ring = snapshots.init_ring({"w": jnp.zeros(3)}, 4)
      >>> ring.slots["w"].shape, ring.leaf_grams.shape, int(ring.num_valid)
      ((4, 3), (1, 4, 4), 0)
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be an int >= 1; got {size!r}.")
    num_leaves = len(jax.tree.leaves(params))
    return RingWindow(
        last=jax.tree.map(jnp.zeros_like, params),
        slots=stacked_zeros(params, size, increment_dtype),
        leaf_grams=jnp.zeros((num_leaves, size, size), jnp.float32),
        num_snapshots=jnp.zeros((), jnp.int32),
        num_valid=jnp.zeros((), jnp.int32))


def stacked_zeros(params, size: int, dtype=None):
    """Zeros with leaves ``(size, *shape)``, sharded like ``params`` on the trailing axes."""
    return jax.tree.map(
        lambda p: jnp.broadcast_to(jnp.zeros_like(p, dtype=dtype or p.dtype)[None],
                                   (size,) + p.shape), params)


def ring_size(ring: RingWindow) -> int:
    """``m``, the number of slots (static)."""
    return ring.leaf_grams.shape[-1]


def ring_order(ring: RingWindow) -> jax.Array:
    """``(m,)`` slot indices, oldest increment first."""
    m = ring_size(ring)
    return (jnp.maximum(ring.num_snapshots - 1, 0) + jnp.arange(m)) % m


def ring_is_full(ring: RingWindow) -> jax.Array:
    """True once every slot holds a real increment."""
    return ring.num_valid >= ring_size(ring)


def ring_gram(ring: RingWindow) -> jax.Array:
    """The Gram matrix in time order (oldest first)."""
    order = ring_order(ring)
    return ring.gram[order][:, order]


def newest_slot(ring: RingWindow) -> jax.Array:
    """Slot of the newest increment."""
    return (ring.num_snapshots - 2) % ring_size(ring)


def ring_push_rows(ring: RingWindow, params, record=True) -> tuple[RingWindow, jax.Array]:
    """:func:`ring_push`, also returning ``(num_leaves, m)`` products ``<old slot_j, d>_l``.

    The products are with the slots as they were *before* the push (the
    overwritten oldest one included): what an amortised consumer needs to
    express the new increment in the previous window's coordinates.
    ``record`` (a traced bool) False leaves the window as it was (every write
    a select in the same pass, so no gate and no copy): how a non-finite
    snapshot is skipped; so is an increment whose products overflow (the
    window's ``num_snapshots`` then does not advance).
    """
    m = ring_size(ring)
    slot = (ring.num_snapshots - 1) % m
    first = ring.num_snapshots == 0

    def increment(p, last, s):
        dt = tree_math.accumulation_dtype(jnp.result_type(p, last))
        return (p.astype(dt) - last.astype(dt)).astype(s.dtype)

    new = jax.tree.map(increment, params, ring.last, ring.slots)
    products = tree_math.stacked_products(ring.slots, new)
    squares = (jnp.stack([tree_math.tree_vdot(d, d) for d in jax.tree.leaves(new)])
               if products.size else products[:, 0])
    # An increment so large that its products overflow is skipped like a non-finite
    # snapshot: the window never holds an inf or NaN Gram entry.
    record = (jnp.asarray(record, bool) & jnp.isfinite(jnp.sum(products))
              & jnp.isfinite(jnp.sum(squares)))     # ``~True`` would be the int -2
    old = jnp.where(first | ~record, 0.0, products)
    rows = old.at[:, slot].set(jnp.where(first, 0.0, squares)) if old.size else old
    # The write must come after every read of the old slots; tying the written
    # values to the products (a zero XLA does not fold, whatever the products
    # are) orders it, so the slots are updated in place instead of copied twice.
    after = jnp.minimum(jnp.abs(jnp.nan_to_num(jnp.sum(rows))), 0.0)
    slots = jax.tree.map(
        lambda s, d: jax.lax.dynamic_update_index_in_dim(
            s, jnp.where(record, d, jax.lax.dynamic_index_in_dim(s, slot, 0, keepdims=False))
            + after.astype(d.dtype), slot, 0),
        ring.slots, new)
    grams = ring.leaf_grams.at[:, slot, :].set(rows).at[:, :, slot].set(rows)
    grams = jnp.where(record, grams, ring.leaf_grams)
    last = jax.tree.map(lambda p, l: jnp.where(record, p.astype(l.dtype), l), params, ring.last)
    valid = jnp.where(first, 0, jnp.minimum(ring.num_valid + 1, m)).astype(jnp.int32)
    return RingWindow(last, slots, grams,
                      ring.num_snapshots + jnp.asarray(record, jnp.int32),
                      jnp.where(record, valid, ring.num_valid).astype(jnp.int32)), old


def ring_push(ring: RingWindow, params) -> RingWindow:
    """Records the snapshot ``params``: writes ``d = params - last`` into the next slot.

    The new Gram rows are ``<slot_j, d>_l`` (one pass over the window), from
    the increment as stored (rounded to the increment dtype), so the Gram
    matrices are exactly those of the stored vectors. The first snapshot only
    sets ``last`` (its row is zero and its slot is rewritten before the
    window is full).

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import snapshots
      >>> ring = snapshots.init_ring({"w": jnp.zeros(2)}, 2)
      >>> for w in ([0.0, 0.0], [1.0, 0.0], [1.0, 2.0]):
      ...     ring = snapshots.ring_push(ring, {"w": jnp.array(w)})
      >>> [ring.slots["w"][i].tolist() for i in snapshots.ring_order(ring)]  # oldest first
      [[1.0, 0.0], [0.0, 2.0]]
      >>> snapshots.ring_gram(ring).tolist(), bool(snapshots.ring_is_full(ring))
      ([[1.0, 0.0], [0.0, 4.0]], True)
    """
    return ring_push_rows(ring, params)[0]


def ring_pop(ring: RingWindow) -> RingWindow:
    """Undoes the last :func:`ring_push`: ``last`` steps back by the newest increment.

    The increment that push overwrote is lost: a full window keeps ``m - 1``
    (the slot is zeroed and is the oldest in the new order).
    """
    slot = newest_slot(ring)

    def back(last, s):
        dt = tree_math.accumulation_dtype(jnp.result_type(last, s))
        newest = jax.lax.dynamic_index_in_dim(s, slot, 0, keepdims=False)
        return (last.astype(dt) - newest.astype(dt)).astype(last.dtype)

    last = jax.tree.map(back, ring.last, ring.slots)
    slots = jax.tree.map(
        lambda s: jax.lax.dynamic_update_index_in_dim(s, jnp.zeros_like(s[0]), slot, 0),
        ring.slots)
    grams = ring.leaf_grams.at[:, slot, :].set(0.0).at[:, :, slot].set(0.0)
    return RingWindow(last, slots, grams, jnp.maximum(ring.num_snapshots - 1, 0),
                      jnp.maximum(ring.num_valid - 1, 0).astype(jnp.int32))


def to_slot_order(ring: RingWindow, coefficients: jax.Array) -> jax.Array:
    """Scatters time-ordered coefficients of the oldest ``len(c)`` increments to slot order."""
    order = ring_order(ring)
    return jnp.zeros((ring_size(ring),), jnp.float32).at[order[: coefficients.shape[0]]].set(
        coefficients.astype(jnp.float32))


def ring_combination(ring: RingWindow, coefficients, like):
    """``sum_i c_i d_i`` over the oldest ``len(c)`` increments, dtypes of ``like``.

    One pass over the slots.
    """
    return tree_math.stacked_weighted_sum(ring.slots, to_slot_order(ring, coefficients), like)


def ring_increments(ring: RingWindow) -> tuple:
    """The ``m`` increments as pytrees, oldest first (copies: for mask decisions)."""
    order = ring_order(ring)
    return tuple(jax.tree.map(lambda s: jnp.take(s, order[i], axis=0), ring.slots)
                 for i in range(ring_size(ring)))
