"""Pytree arithmetic for snapshot matrices that are never concatenated.

A snapshot matrix ``X = [x_0, ..., x_{m-1}]`` in koopax is a sequence of pytrees
shaped like the parameters (or a pytree whose leaves carry the snapshot index on
their leading axis). Everything DMD needs from such a matrix is

* the Gram matrix ``X^T Y`` (inner products), a sum of per-leaf products, and
* linear combinations ``X c`` of its columns,

so no function here flattens or concatenates leaves: every reduction is a sum of
per-leaf reductions, which works unchanged under any sharding (the compiler
inserts the all-reduce) and never copies the parameters into one vector.

Inner products are computed in float32 (or the leaves' dtype when wider) with
``precision=HIGHEST`` so that TPU/GPU matmul units do not round to bf16/tf32.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

_HIGHEST = jax.lax.Precision.HIGHEST


class _Pair:
    """Two values returned from one ``tree.map`` leaf function (itself a leaf)."""

    def __init__(self, first, second):
        self.first, self.second = first, second


def unzip(tree):
    """Splits a tree of :func:`pair` values into two trees (the firsts, the seconds).

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src.tree_math import pair, unzip
      >>> unzip({"a": pair(1, 2), "b": pair(3, 4)})
      ({'a': 1, 'b': 3}, {'a': 2, 'b': 4})
    """
    is_pair = lambda x: isinstance(x, _Pair)
    return (jax.tree.map(lambda t: t.first, tree, is_leaf=is_pair),
            jax.tree.map(lambda t: t.second, tree, is_leaf=is_pair))


def pair(first, second) -> _Pair:
    return _Pair(first, second)


def accumulation_dtype(dtype) -> jnp.dtype:
    """The dtype koopax accumulates inner products in: at least float32.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import tree_math
      >>> tree_math.accumulation_dtype(jnp.bfloat16), tree_math.accumulation_dtype(jnp.float64)
      (dtype('float32'), dtype('float64'))
    """
    return jnp.promote_types(jnp.dtype(dtype), jnp.float32)


def tree_size(tree) -> int:
    """Total number of scalar entries in ``tree`` (static).

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import tree_math
      >>> tree_math.tree_size({"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)})
      9
    """
    return int(sum(np.prod(np.shape(x), dtype=np.int64) for x in jax.tree.leaves(tree)))


def tree_vdot(a, b) -> jax.Array:
    """Real inner product ``<a, b>`` of two pytrees with identical structure.

    Written as an elementwise product and a full reduction (no reshape), so
    that it works on arrays with explicit shardings.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import tree_math
      >>> a = {"w": jnp.array([1.0, 2.0]), "b": jnp.array(3.0)}
      >>> b = {"w": jnp.array([4.0, 5.0]), "b": jnp.array(-1.0)}
      >>> float(tree_math.tree_vdot(a, b))  # 1 * 4 + 2 * 5 + 3 * (-1)
      11.0
    """
    parts = []
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        dt = accumulation_dtype(jnp.result_type(x, y))
        parts.append(jnp.sum(x.astype(dt) * y.astype(dt)))
    return sum(parts) if parts else jnp.zeros((), jnp.float32)


def tree_inner_products(columns: Sequence, vector) -> jax.Array:
    """``X^T v`` for a list of pytree columns ``X`` and a pytree ``v``: shape (m,).

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import tree_math
      >>> a = {"w": jnp.array([1.0, 2.0]), "b": jnp.array(3.0)}
      >>> b = {"w": jnp.array([4.0, 5.0]), "b": jnp.array(-1.0)}
      >>> tree_math.tree_inner_products([a, b], a).tolist()  # [<a, a>, <b, a>]
      [14.0, 11.0]
    """
    return jnp.stack([tree_vdot(c, vector) for c in columns])


def tree_combination(columns: Sequence, coefficients: jax.Array, like):
    """``X c = sum_i c_i x_i`` as a pytree with the dtypes of ``like``.

    The sum is accumulated in float32 (at least) and cast once at the end.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import tree_math
      >>> a = {"w": jnp.array([1.0, 2.0]), "b": jnp.array(3.0)}
      >>> b = {"w": jnp.array([4.0, 5.0]), "b": jnp.array(-1.0)}
      >>> c = tree_math.tree_combination([a, b], jnp.array([2.0, -1.0]), like=a)  # 2 a - b
      >>> c["w"].tolist(), float(c["b"])
      ([-2.0, -1.0], 7.0)
    """
    def combine(ref, *leaves):
        dt = accumulation_dtype(ref.dtype)
        acc = jnp.zeros(ref.shape, dt)
        for i, leaf in enumerate(leaves):
            acc = acc + coefficients[i].astype(dt) * leaf.astype(dt)
        return acc.astype(ref.dtype)

    return jax.tree.map(combine, like, *columns)


def stacked_gram(stacked) -> jax.Array:
    """``W^T W`` for a pytree whose leaves carry the snapshot index first.

    Each leaf of shape ``(h, *s)`` contributes ``L L^T`` with ``L`` its
    ``(h, prod(s))`` reshape; the result is the ``(h, h)`` sum over leaves.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import tree_math
      >>> stacked = {"w": jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])}  # 3 snapshots
      >>> tree_math.stacked_gram(stacked).tolist()
      [[1.0, 1.0, 0.0], [1.0, 2.0, 2.0], [0.0, 2.0, 4.0]]
    """
    leaves = jax.tree.leaves(stacked)
    if not leaves:
        raise ValueError("snapshots: the pytree has no leaves.")
    h = leaves[0].shape[0]
    gram = None
    for leaf in leaves:
        if leaf.ndim == 0 or leaf.shape[0] != h:
            raise ValueError(
                "snapshots: every leaf must carry the same number of snapshots on "
                f"its leading axis; got shapes {[x.shape for x in leaves]}."
            )
        dt = accumulation_dtype(leaf.dtype)
        axes = tuple(range(1, leaf.ndim))
        part = jnp.tensordot(leaf.astype(dt), leaf.astype(dt), axes=(axes, axes),
                             precision=_HIGHEST)
        gram = part if gram is None else gram + part
    return gram


def stacked_combination(stacked, coefficients: jax.Array):
    """``sum_i coefficients[i, k] w_i`` for every k: leaves of shape ``(k, *s)``.

    ``stacked`` has leaves ``(h, *s)``, ``coefficients`` is ``(h, k)`` (real or
    complex); the result carries the new index ``k`` first.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import tree_math
      >>> stacked = {"w": jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])}  # 3 snapshots
      >>> coefficients = jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.5]])  # w_0 - w_1, w_2 / 2
      >>> tree_math.stacked_combination(stacked, coefficients)["w"].tolist()
      [[0.0, -1.0], [0.0, 1.0]]
    """
    def combine(leaf):
        dt = jnp.promote_types(accumulation_dtype(leaf.dtype), coefficients.dtype)
        return jnp.tensordot(coefficients.T.astype(dt), leaf.astype(dt), axes=1,
                             precision=_HIGHEST)

    return jax.tree.map(combine, stacked)


def tree_all_finite(tree) -> jax.Array:
    """Scalar bool: every entry of every leaf is finite.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import tree_math
      >>> bool(tree_math.tree_all_finite({"w": jnp.ones(2), "b": jnp.zeros(())}))
      True
      >>> bool(tree_math.tree_all_finite({"w": jnp.array([1.0, jnp.nan])}))
      False
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.array(True)
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]).all()


# ----------------------------------------------------------------------------
# Stacked columns: leaves ``(h, *shape)`` (a ring window's slots, a basis).
# ----------------------------------------------------------------------------


def _trailing(leaf):
    return tuple(range(1, leaf.ndim))


def stacked_products(stacked, tree) -> jax.Array:
    """Per-leaf ``P[l, i] = <stacked_l[i], tree_l>``: shape ``(num_leaves, h)``, float32.

    Summing over ``l`` gives ``X^T v``; the per-leaf parts are what a
    per-leaf bound needs. Written as multiply-and-reduce rather than a
    matrix-vector product: XLA's CPU layout assignment otherwise transposes
    the stacked buffers on every call.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import tree_math
      >>> stacked = {"a": jnp.array([[1.0, 0.0], [0.0, 1.0]]), "b": jnp.array([[2.0], [0.0]])}
      >>> tree_math.stacked_products(stacked, {"a": jnp.array([3.0, 4.0]), "b": jnp.array([1.0])}).tolist()
      [[3.0, 4.0], [2.0, 0.0]]
    """
    parts = []
    for s, x in zip(jax.tree.leaves(stacked), jax.tree.leaves(tree), strict=True):
        dt = accumulation_dtype(jnp.result_type(s, x))
        parts.append(jnp.sum(s.astype(dt) * x.astype(dt)[None], axis=_trailing(s))
                     .astype(jnp.float32))
    if not parts:
        return jnp.zeros((0, 0), jnp.float32)
    return jnp.stack(parts)


def stacked_leaf_grams(stacked) -> jax.Array:
    """Per-leaf Gram matrices ``G[l] = S_l S_l^T``: shape ``(num_leaves, h, h)``, float32.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import tree_math
      >>> g = tree_math.stacked_leaf_grams({"a": jnp.array([[1.0, 2.0], [0.0, 1.0]])})
      >>> g.tolist()
      [[[5.0, 2.0], [2.0, 1.0]]]
    """
    parts = []
    for s in jax.tree.leaves(stacked):
        r = s.astype(accumulation_dtype(s.dtype))
        # Row by row (multiply-and-reduce): a contraction over sharded axes
        # would need an explicit output sharding.
        g = jnp.stack([jnp.sum(r * r[i][None], axis=_trailing(r)) for i in range(r.shape[0])])
        g = g.astype(jnp.float32)
        parts.append(0.5 * (g + g.T))
    if not parts:
        return jnp.zeros((0, 0, 0), jnp.float32)
    return jnp.stack(parts)


def stacked_weighted_sum(stacked, coefficients: jax.Array, like):
    """``sum_i c[l, i] stacked_l[i]`` per leaf, shapes and dtypes of ``like``.

    ``coefficients`` is ``(h,)`` (the same for every leaf) or
    ``(num_leaves, h)``; the sum is accumulated in float32 (at least).

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import tree_math
      >>> stacked = {"a": jnp.array([[1.0, 0.0], [0.0, 1.0]]), "b": jnp.array([[2.0], [3.0]])}
      >>> out = tree_math.stacked_weighted_sum(stacked, jnp.array([[1.0, 2.0], [0.0, 1.0]]),
      ...                                      like={"a": jnp.zeros(2), "b": jnp.zeros(1)})
      >>> out["a"].tolist(), out["b"].tolist()
      ([1.0, 2.0], [3.0])
    """
    leaves, treedef = jax.tree.flatten(stacked)
    refs = treedef.flatten_up_to(like)
    out = []
    for l, (s, ref) in enumerate(zip(leaves, refs)):
        c = coefficients if coefficients.ndim == 1 else coefficients[l]
        dt = accumulation_dtype(jnp.result_type(s, ref))
        rows = s.astype(dt)
        acc = sum(c[i].astype(dt) * rows[i] for i in range(rows.shape[0]))
        out.append(acc.astype(ref.dtype))
    return jax.tree.unflatten(treedef, out)
