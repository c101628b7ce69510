"""A sliding window of weight increments with an incrementally kept Gram matrix.

Consecutive weight snapshots differ by 1e-3..1e-5 relative, so the Gram matrix
of raw snapshots is dominated by ``|w|^2`` and float32 loses the dynamics.
koopax therefore records increments ``d_i = w_{i+1} - w_i``: for affine
dynamics ``w_{i+1} - w* = A (w_i - w*)`` they obey ``d_{i+1} = A d_i``
exactly, with the same eigenvalues except the neutral ``lambda = 1`` of the
fixed point, and their Gram matrix carries no common offset.

The window holds the newest snapshot ``w_t`` (in the parameters' own dtype, so
that the next increment is exact) and the last ``m`` increments, oldest first,
as a tuple of parameter-shaped pytrees (a shift register: static indexing,
each entry shaped and sharded like the parameters, which is what orbax,
``optax.tree.map_params`` and ``nnx.Optimizer`` expect). Recording a snapshot
costs one pass over the window: ``m`` inner products of the new increment with
the retained ones update the Gram matrix ``G_ij = <d_i, d_j>``; no old inner
product is ever recomputed.

Memory: ``N`` entries of the parameter dtype plus ``m N`` of the increment
dtype. Increments may be stored in bfloat16 (``increment_dtype``) because
they are small numbers stored with relative precision; the snapshot itself is
never rounded.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from koopax import tree_math

_HIGHEST = jax.lax.Precision.HIGHEST


class IncrementWindow(NamedTuple):
    """Sliding window of the last ``m`` weight increments.

    Attributes:
      last: the newest recorded snapshot ``w_t`` (parameter dtype).
      increments: tuple of ``m`` pytrees ``d_{t-m}, ..., d_{t-1}``, oldest
        first; entries not yet filled are zeros.
      gram: ``(m, m)`` float32 Gram matrix of ``increments``.
      num_snapshots: int32, snapshots recorded so far.
    """

    last: Any
    increments: tuple
    gram: jax.Array
    num_snapshots: jax.Array


def init_window(params, size: int, increment_dtype=None) -> IncrementWindow:
    """An empty window for ``size`` increments of ``params``-shaped trees.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax import snapshots
      >>> window = snapshots.init_window({"w": jnp.zeros(3)}, 2)
      >>> len(window.increments), window.increments[0]["w"].shape, window.gram.shape
      (2, (3,), (2, 2))
    """
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int >= 1; got {size!r}.")

    def zeros(dtype=None):
        return jax.tree.map(lambda p: jnp.zeros_like(p, dtype=dtype or p.dtype), params)

    return IncrementWindow(
        last=zeros(),
        increments=tuple(zeros(increment_dtype) for _ in range(size)),
        gram=jnp.zeros((size, size), jnp.float32),
        num_snapshots=jnp.zeros((), jnp.int32),
    )


def num_increments(window: IncrementWindow) -> jax.Array:
    """How many of the ``m`` slots hold real increments (int32).

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax import snapshots
      >>> window = snapshots.init_window({"w": jnp.zeros(2)}, 3)
      >>> counts = []
      >>> for t in range(5):
      ...     window = snapshots.push(window, {"w": jnp.full(2, float(t))})
      ...     counts.append(int(snapshots.num_increments(window)))
      >>> counts  # the first snapshot gives no increment; the window holds 3
      [0, 1, 2, 3, 3]
    """
    m = len(window.increments)
    return jnp.clip(window.num_snapshots - 1, 0, m).astype(jnp.int32)


def is_full(window: IncrementWindow) -> jax.Array:
    """True once every slot holds a real increment."""
    return num_increments(window) >= len(window.increments)


def push(window: IncrementWindow, params) -> IncrementWindow:
    """Records the snapshot ``params``: shifts in ``d = params - last``.

    The first snapshot only sets ``last`` (its "increment" is meaningless and
    is never read: :func:`num_increments` does not count it). The new Gram
    row is ``<d, d_j>`` over the retained increments, computed from the
    increment as stored (rounded to the increment dtype) so that the Gram
    matrix is exactly that of the stored vectors.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax import snapshots
      >>> window = snapshots.init_window({"w": jnp.zeros(2)}, 2)
      >>> for w in ([0.0, 0.0], [1.0, 0.0], [1.0, 2.0]):
      ...     window = snapshots.push(window, {"w": jnp.array(w)})
      >>> [d["w"].tolist() for d in window.increments]  # w_1 - w_0, w_2 - w_1
      [[1.0, 0.0], [0.0, 2.0]]
      >>> window.gram.tolist()
      [[1.0, 0.0], [0.0, 4.0]]
      >>> bool(snapshots.is_full(window))
      True
    """
    def increment(p, last, ref):
        dt = tree_math.accumulation_dtype(jnp.result_type(p, last))
        return (p.astype(dt) - last.astype(dt)).astype(ref.dtype)

    new = jax.tree.map(increment, params, window.last, window.increments[0])
    kept = window.increments[1:]
    row = tree_math.tree_inner_products(kept + (new,), new).astype(jnp.float32)
    m = len(window.increments)
    gram = jnp.zeros((m, m), jnp.float32)
    gram = gram.at[: m - 1, : m - 1].set(window.gram[1:, 1:])
    gram = gram.at[m - 1, :].set(row).at[:, m - 1].set(row)
    last = jax.tree.map(lambda p, l: p.astype(l.dtype), params, window.last)
    return IncrementWindow(last, kept + (new,), gram, window.num_snapshots + 1)


class RingWindow(NamedTuple):
    """The increment window as a ring buffer: a snapshot moves no buffer.

    A shift register (:class:`IncrementWindow`) permutes its buffers on every
    push; inside the 0/1-trip loops that gate snapshot steps this makes XLA
    copy the window on *every* step (measured on ``koopax.pdt``: about five
    parameter-sized copies per step at 1e6 weights). Here increment number
    ``t`` (0-based) is written in place into slot ``t mod m`` of stacked
    leaves ``(m, *shape)``; the Gram matrix is kept in slot order and read in
    time order through :func:`ring_order`.

    Attributes:
      last: the newest recorded snapshot ``w_t`` (parameter dtype).
      slots: pytree with leaves ``(m, *shape)``, increments in slot order.
      gram: ``(m, m)`` float32 ``<slot_i, slot_j>``.
      num_snapshots: int32 snapshots recorded (it sets the slot order).
      num_valid: int32 slots that hold real increments (``<= m``; a
        :func:`ring_pop` lowers it).
    """

    last: Any
    slots: Any
    gram: jax.Array
    num_snapshots: jax.Array
    num_valid: jax.Array


def init_ring(params, size: int, increment_dtype=None) -> RingWindow:
    """An empty ring of ``size`` increments of ``params``-shaped trees.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax import snapshots
      >>> ring = snapshots.init_ring({"w": jnp.zeros(3)}, 4)
      >>> ring.slots["w"].shape, int(ring.num_valid)
      ((4, 3), 0)
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be an int >= 1; got {size!r}.")
    return RingWindow(
        last=jax.tree.map(jnp.zeros_like, params),
        slots=jax.tree.map(lambda p: jnp.zeros((size,) + p.shape, increment_dtype or p.dtype),
                           params),
        gram=jnp.zeros((size, size), jnp.float32),
        num_snapshots=jnp.zeros((), jnp.int32),
        num_valid=jnp.zeros((), jnp.int32))


def _ring_size(ring: RingWindow) -> int:
    return ring.gram.shape[0]


def _rows(slot_leaf):
    return slot_leaf.reshape(slot_leaf.shape[0], -1)


def ring_order(ring: RingWindow) -> jax.Array:
    """``(m,)`` slot indices, oldest increment first."""
    m = _ring_size(ring)
    return (jnp.maximum(ring.num_snapshots - 1, 0) + jnp.arange(m)) % m


def ring_is_full(ring: RingWindow) -> jax.Array:
    """True once every slot holds a real increment."""
    return ring.num_valid >= _ring_size(ring)


def ring_gram(ring: RingWindow) -> jax.Array:
    """The Gram matrix in time order (oldest first), as :class:`IncrementWindow` keeps it."""
    order = ring_order(ring)
    return ring.gram[order][:, order]


def _newest_slot(ring):
    return (ring.num_snapshots - 2) % _ring_size(ring)


def ring_push(ring: RingWindow, params) -> RingWindow:
    """Records the snapshot ``params``: writes ``d = params - last`` into the next slot.

    The new Gram row is ``<slot_j, d>`` over the other slots (one
    matrix-vector product per leaf, one pass over the window) and
    ``<d, d>`` on the diagonal, from the increment as stored. The first
    snapshot only sets ``last`` (its row is zero and its slot is rewritten
    before the window is full).
    """
    m = _ring_size(ring)
    slot = (ring.num_snapshots - 1) % m
    first = ring.num_snapshots == 0

    def increment(p, last, s):
        dt = tree_math.accumulation_dtype(jnp.result_type(p, last))
        return (p.astype(dt) - last.astype(dt)).astype(s.dtype)

    incs = jax.tree.map(lambda p, l, s: increment(p, l, s[0]), params, ring.last, ring.slots)
    row = jnp.zeros((m,), jnp.float32)
    for s, d in zip(jax.tree.leaves(ring.slots), jax.tree.leaves(incs)):
        dt = tree_math.accumulation_dtype(s.dtype)
        v = jnp.ravel(d).astype(dt)
        part = jnp.matmul(_rows(s).astype(dt), v, precision=_HIGHEST)
        row = row + part.at[slot].set(jnp.vdot(v, v, precision=_HIGHEST)).astype(jnp.float32)
    row = jnp.where(first, 0.0, row)
    slots = jax.tree.map(lambda s, d: jax.lax.dynamic_update_index_in_dim(s, d, slot, 0),
                         ring.slots, incs)
    gram = ring.gram.at[slot, :].set(row).at[:, slot].set(row)
    last = jax.tree.map(lambda p, l: p.astype(l.dtype), params, ring.last)
    valid = jnp.where(first, 0, jnp.minimum(ring.num_valid + 1, m)).astype(jnp.int32)
    return RingWindow(last, slots, gram, ring.num_snapshots + 1, valid)


def ring_pop(ring: RingWindow) -> RingWindow:
    """Undoes the last :func:`ring_push`: ``last`` steps back by the newest increment.

    The increment that push overwrote is lost: a full window keeps ``m - 1``
    (the slot is zeroed and is the oldest in the new order).
    """
    slot = _newest_slot(ring)

    def back(last, s):
        dt = tree_math.accumulation_dtype(jnp.result_type(last, s))
        newest = jax.lax.dynamic_index_in_dim(s, slot, 0, keepdims=False)
        return (last.astype(dt) - newest.astype(dt)).astype(last.dtype)

    last = jax.tree.map(back, ring.last, ring.slots)
    slots = jax.tree.map(
        lambda s: jax.lax.dynamic_update_index_in_dim(
            s, jnp.zeros(s.shape[1:], s.dtype), slot, 0), ring.slots)
    gram = ring.gram.at[slot, :].set(0.0).at[:, slot].set(0.0)
    return RingWindow(last, slots, gram, jnp.maximum(ring.num_snapshots - 1, 0),
                      jnp.maximum(ring.num_valid - 1, 0).astype(jnp.int32))


def ring_combination(ring: RingWindow, coefficients, like):
    """``sum_i c_i d_i`` over the oldest ``len(c)`` increments, dtypes of ``like``.

    One pass over the slots (coefficients scattered to slot order).
    """
    m = _ring_size(ring)
    order = ring_order(ring)
    c = jnp.zeros((m,), jnp.float32).at[order[: coefficients.shape[0]]].set(
        coefficients.astype(jnp.float32))

    def combine(s, ref):
        dt = tree_math.accumulation_dtype(jnp.result_type(s, ref))
        rows = _rows(s).astype(dt)
        out = sum(c[i].astype(dt) * rows[i] for i in range(m))
        return out.reshape(ref.shape).astype(ref.dtype)

    return jax.tree.map(combine, ring.slots, like)
