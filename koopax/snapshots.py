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
    """An empty window for ``size`` increments of ``params``-shaped trees."""
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
    """How many of the ``m`` slots hold real increments (int32)."""
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
