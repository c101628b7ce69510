"""Static-capacity compaction: what makes a weight mask pay under ``jit``.

Multiplying by a 0/1 mask saves nothing under ``jit``. The
cost shrinks only when the arrays shrink, so each mask carries a static
``capacity``: every parameter leaf of size ``n_l`` gets ``c_l`` slots
(``c_l = ceil(f n_l)`` for a fraction ``f``, rounded up to a multiple of
128 and capped at ``n_l``; an int capacity ``C`` means ``f = C / N``). The
kept weights' positions in the raveled leaf are gathered with
:func:`compact_indices` into a sorted int32 vector of length ``c_l``
(padding ``n_l``, out of range, so gathers fill 0 and scatters drop), and
the Koopman algebra runs on the compact view (a tuple of 1-D leaves): kept
weights beyond the capacity are treated as masked and counted as overflow.
Compaction is per leaf: no parameter tree is ever flattened or concatenated.

Under a mesh with Explicit axes a leaf's sharding is part of its type, and a
reshape that merges a sharded dimension is refused. :func:`flatten` therefore
replicates such a leaf before raveling it, and :func:`unflatten` reshapes and
re-shards the result to its leaf's sharding (**[choice]**: the compact view of
arbitrary positions has no sharding it could keep; under Auto axes or no
mesh both are plain reshapes, and XLA does the equivalent itself).

References:
  Anonymous, *Dynamic Training Guided by Training Dynamics* (KGA, KWM),
  OpenReview 7AB077M4TY, 2024, §3.3 (masked weights leave the DMD and KGA).
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec


# Per-leaf capacities are rounded up to a multiple of this (bucket sizes).
CAPACITY_BUCKET = 128


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def validate_capacity(capacity):
    """Checks a capacity: a float in (0, 1] or an int >= 1."""
    if _is_int(capacity):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1 when an int; got {capacity}.")
        return
    if isinstance(capacity, numbers.Real) and not isinstance(capacity, bool):
        if not 0.0 < float(capacity) <= 1.0:
            raise ValueError(f"capacity must lie in (0, 1] when a float; got {capacity}.")
        return
    raise ValueError(f"capacity must be a float in (0, 1] or an int >= 1; got {capacity!r}.")


def leaf_capacities(capacity, params) -> tuple:
    """Static per-leaf slot counts for ``capacity`` (see the module docstring).

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import compaction
      >>> params = {"a": jnp.zeros(1000), "b": jnp.zeros(100)}
      >>> compaction.leaf_capacities(0.1, params)  # ceil(0.1 n), up to a multiple of 128, <= n
      (128, 100)
      >>> compaction.leaf_capacities(550, params)  # an int: the same fraction 550 / 1100 per leaf
      (512, 100)
    """
    validate_capacity(capacity)
    sizes = [int(np.prod(np.shape(x), dtype=np.int64)) for x in jax.tree.leaves(params)]
    total = sum(sizes)
    if any(n >= 2**30 for n in sizes):
        raise ValueError("params: leaves of 2**30 entries or more are not supported by masks.")
    if _is_int(capacity):
        if capacity >= total:
            return tuple(sizes)
        fraction = capacity / total
    else:
        fraction = float(capacity)
    caps = []
    for n in sizes:
        c = math.ceil(fraction * n)
        c = math.ceil(c / CAPACITY_BUCKET) * CAPACITY_BUCKET
        caps.append(min(n, c))
    return tuple(caps)


def _explicit_sharding(x):
    """``x``'s typed sharding when it splits a dimension over Explicit mesh axes, else None."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    spec = getattr(sharding, "spec", ())
    return sharding if any(p is not None for p in spec) else None


def flatten(x, lead=0):
    """``x`` reshaped to ``(*x.shape[:lead], -1)``; replicated first where its type is sharded.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import compaction
      >>> compaction.flatten(jnp.zeros((2, 3, 4)), lead=1).shape
      (2, 12)
    """
    sharding = _explicit_sharding(x)
    if sharding is not None:
        x = jax.sharding.reshard(x, NamedSharding(sharding.mesh, PartitionSpec()))
    return jnp.reshape(x, (*x.shape[:lead], math.prod(x.shape[lead:])))


def unflatten(flat, like):
    """``flat`` reshaped to ``like``'s shape, with ``like``'s typed sharding (:func:`flatten`)."""
    out = jnp.reshape(flat, jnp.shape(like))
    sharding = _explicit_sharding(like)
    return out if sharding is None else jax.sharding.reshard(out, sharding)


def padding_indices(n, cap):
    # Padding slots hold the out-of-range index ``n``: a gather in fill mode
    # reads 0 there and a scatter drops them. One repeated value (not
    # ``n + j``) keeps the vector free of iota constants, which XLA would
    # otherwise materialize on every step (hoisted out of the gated loops).
    return jnp.full((cap,), n, jnp.int32)


_MODES = {"fill": jax.lax.GatherScatterMode.FILL_OR_DROP,
          "clip": jax.lax.GatherScatterMode.CLIP}


def _gather_1d(x, idx, mode):
    """``x[idx]`` for a 1-D ``x`` and sorted, non-negative int32 ``idx``.

    ``lax.gather`` directly: ``jnp`` indexing would add a pass that wraps
    negative indices, which these never are. ``mode="fill"`` reads 0 at
    out-of-range (padding) indices; ``"clip"`` reads ``x[n - 1]`` there, for
    callers that multiply padding by stored zeros anyway (no mask pass).
    """
    dims = jax.lax.GatherDimensionNumbers(offset_dims=(), collapsed_slice_dims=(0,),
                                          start_index_map=(0,))
    return jax.lax.gather(x, idx[:, None], dims, (1,), mode=_MODES[mode],
                          fill_value=0 if mode == "fill" else None, indices_are_sorted=True)


def gather_rows(rows, idx):
    """``rows[:, idx]`` for ``(m, n)`` rows, 0 at out-of-range (padding) indices."""
    return jax.vmap(lambda r: _gather_1d(r, idx, "fill"))(rows)


def compact_indices(keep, capacities):
    """Positions of the kept weights in every raveled leaf, at most ``capacities[l]`` each.

    Args:
      keep: bool pytree (True = accelerate).
      capacities: static per-leaf slot counts (:func:`leaf_capacities`).

    Returns:
      ``(indices, num_kept, num_wanted)``: a tuple of sorted int32 vectors
      (kept positions unique, then padding ``n_l``, out of range, repeated),
      the int32 number of weights that fit and
      the number the criterion kept (their difference is the overflow; the
      first kept weights of a leaf in raveled order fit).

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import compaction
      >>> keep = {"w": jnp.array([True, False, True, True])}
      >>> indices, num_kept, num_wanted = compaction.compact_indices(keep, (2,))
      >>> indices[0].tolist(), int(num_kept), int(num_wanted)  # room for 2 of 3
      ([0, 2], 2, 3)
      >>> compaction.compact_indices(keep, (4,))[0][0].tolist()  # padding: 4, out of range
      [0, 2, 3, 4]
    """
    leaves = jax.tree.leaves(keep)
    if len(leaves) != len(capacities):
        raise ValueError(
            f"capacities must have one entry per leaf ({len(leaves)}); got {len(capacities)}.")
    out, fit, wanted = [], jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32)
    for leaf, cap in zip(leaves, capacities):
        flat = flatten(leaf).astype(bool)
        n = flat.shape[0]
        count = jnp.sum(flat, dtype=jnp.int32)
        out.append(jnp.nonzero(flat, size=cap, fill_value=n)[0].astype(jnp.int32))
        fit = fit + jnp.minimum(count, cap)
        wanted = wanted + count
    return tuple(out), fit, wanted


def recompact(indices, keep, sizes):
    """Shrinks compact ``indices`` to the entries where the compact ``keep`` is True.

    Returns ``(new_indices, positions, num_kept)``: ``positions[l]`` are the
    slots of the old compact vectors that survive (padding out of range), for
    :func:`take` on every stored compact vector.
    """
    new, positions, total = [], [], jnp.zeros((), jnp.int32)
    for idx, kp, n in zip(indices, keep, sizes):
        cap = idx.shape[0]
        kp = kp & (idx < n)
        count = jnp.sum(kp, dtype=jnp.int32)
        pos = jnp.nonzero(kp, size=cap, fill_value=cap)[0].astype(jnp.int32)
        # Past ``count`` the positions are ``cap`` (out of range): padding ``n``.
        new.append(jnp.where(pos < cap, _gather_1d(idx, pos, "clip"), n))
        positions.append(pos)
        total = total + count
    return tuple(new), tuple(positions), total


def take(compact, positions):
    """``compact[l][positions[l]]`` per leaf, 0 where a position is out of range."""
    return tuple(_gather_1d(c, p, "fill") for c, p in zip(compact, positions))


def gather(tree, indices, *, padding="zero"):
    """The compact view of ``tree``: a tuple of ``(c_l,)`` leaves.

    ``padding="zero"`` reads 0 at padding slots; ``"any"`` leaves them
    unspecified (one pass less; for products with vectors that are 0 there).

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import compaction
      >>> indices = (jnp.array([1, 3, 4], jnp.int32),)  # 4 is padding
      >>> compaction.gather({"w": jnp.array([10.0, 20.0, 30.0, 40.0])}, indices)[0].tolist()
      [20.0, 40.0, 0.0]
    """
    modes = {"zero": "fill", "any": "clip"}
    if padding not in modes:
        raise ValueError(f"padding must be 'zero' or 'any'; got {padding!r}.")
    mode = modes[padding]
    return tuple(_gather_1d(flatten(x), i, mode)
                 for x, i in zip(jax.tree.leaves(tree), indices, strict=True))


def scatter_add(tree, indices, compact):
    """``tree`` with ``compact`` added at ``indices`` (padding dropped).

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import compaction
      >>> indices = (jnp.array([1, 3, 4], jnp.int32),)  # 4 is padding
      >>> tree = {"w": jnp.array([10.0, 20.0, 30.0, 40.0])}
      >>> compaction.scatter_add(tree, indices, (jnp.array([1.0, 2.0, 99.0]),))["w"].tolist()
      [10.0, 21.0, 30.0, 42.0]
    """
    dims = jax.lax.ScatterDimensionNumbers(update_window_dims=(), inserted_window_dims=(0,),
                                           scatter_dims_to_operand_dims=(0,))
    leaves, treedef = jax.tree.flatten(tree)
    out = [
        unflatten(jax.lax.scatter_add(flatten(x), i[:, None], c.astype(x.dtype), dims,
                                      indices_are_sorted=True,
                                      mode=jax.lax.GatherScatterMode.FILL_OR_DROP), x)
        for x, i, c in zip(leaves, indices, compact, strict=True)]
    return jax.tree.unflatten(treedef, out)


def kept(indices, params):
    """Bool pytree shaped like ``params``: True where a weight is in ``indices``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import compaction
      >>> indices = (jnp.array([1, 3, 4], jnp.int32),)  # 4 is padding
      >>> compaction.kept(indices, {"w": jnp.zeros(4)})["w"].tolist()
      [False, True, False, True]
    """
    leaves, treedef = jax.tree.flatten(params)
    out = [
        unflatten(jnp.zeros(jnp.size(x), bool).at[i].set(True, mode="drop"), x)
        for x, i in zip(leaves, indices, strict=True)]
    return jax.tree.unflatten(treedef, out)
