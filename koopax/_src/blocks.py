"""Block operators: one DMD per group of parameter leaves.

One global operator over a transformer's embeddings, attention, MLP and norm
layers finds one or two modes, set by whichever leaves move most. A block
structure fits one DMD per group of leaves instead (a block-diagonal
operator, as the PDT authors' layer-wise trainer does): the window's Gram
matrix is already a sum of per-leaf Gram matrices ``G = sum_l G_l``, so a
block's Gram matrix ``G_b = sum_{l in b} G_l`` costs nothing more, and every
block's ``h x h`` algebra runs side by side (``vmap``; one compiled solver
whatever the number of blocks).

``blocks`` (an argument of :func:`koopax.kga` and :func:`koopax.pdt`):

* ``None``: one block, the whole tree (the papers);
* ``'leaf'``: one block per leaf (a weight matrix, a bias);
* ``'layer'``: one block per parent of leaves, i.e. the leaves whose paths
  differ only in their last key (a layer's kernel and bias);
* a callable ``(path, leaf) -> key``: leaves with equal (hashable) keys share
  a block.

References:
  Wang, Tang, Harris, Qi, Wilson, Mezic, *Predictive Differential Training
  Guided by Training Dynamics*, ICLR 2026 (PDT-Layerwise); authors' code
  github.com/aicip/PDT (``pdt_layerwise_trainer.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from koopax._src import validation

BLOCK_POLICIES = ("leaf", "layer")


def validate_blocks(blocks) -> None:
    """``None``, ``'leaf'``, ``'layer'`` or a callable ``(path, leaf) -> key``."""
    if blocks is None or callable(blocks) or (isinstance(blocks, str) and blocks in BLOCK_POLICIES):
        return
    raise validation.ArgumentError(
        f"blocks must be None, 'leaf', 'layer' or a callable (path, leaf) -> key; got "
        f"{blocks!r}.")


@dataclasses.dataclass(frozen=True)
class Blocks:
    """A static assignment of leaves to blocks.

    Attributes:
      ids: per leaf (flattening order), its block index.
      sizes: per block, its number of weights (the DMD's ``N``).
    """

    ids: tuple[int, ...]
    sizes: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.sizes)

    def sum_leaves(self, per_leaf: jax.Array) -> jax.Array:
        """``(num_blocks, ...)`` sums of a ``(num_leaves, ...)`` array over each block."""
        if self.count == 1:
            return jnp.sum(per_leaf, axis=0, keepdims=True)
        return jax.ops.segment_sum(per_leaf, jnp.asarray(self.ids, jnp.int32),
                                   num_segments=self.count)

    def per_leaf(self, per_block: jax.Array) -> jax.Array:
        """``(num_leaves, ...)``: each leaf takes its block's row."""
        if self.count == 1:
            return jnp.broadcast_to(per_block, (len(self.ids),) + per_block.shape[1:])
        return jnp.take(per_block, jnp.asarray(self.ids, jnp.int32), axis=0)

    def features(self) -> jax.Array:
        """``(num_blocks,)`` float32 block sizes."""
        return jnp.asarray(self.sizes, jnp.float32)


def _layer_key(path, leaf):
    del leaf
    return tuple(path[:-1])


def make_blocks(params, blocks) -> Blocks:
    """The :class:`Blocks` of ``params`` under the policy ``blocks`` (see module docstring).

    Blocks are numbered in order of their first leaf.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import blocks
      >>> params = {"dense": {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}, "out": {"w": jnp.zeros(2)}}
      >>> blocks.make_blocks(params, "layer")
      Blocks(ids=(0, 0, 1), sizes=(8, 2))
      >>> blocks.make_blocks(params, None).sizes, blocks.make_blocks(params, "leaf").ids
      ((10,), (0, 1, 2))
    """
    validate_blocks(blocks)
    leaves = jax.tree_util.tree_leaves_with_path(params)
    sizes_of = [int(np.prod(np.shape(x), dtype=np.int64)) for _, x in leaves]
    if blocks is None or not leaves:
        return Blocks(tuple(0 for _ in leaves), (sum(sizes_of),))
    key_of: Callable[[Any, Any], Any] | None = (
        {"leaf": None, "layer": _layer_key}[blocks] if isinstance(blocks, str) else blocks)
    ids, index, sizes = [], {}, []
    for i, ((path, leaf), size) in enumerate(zip(leaves, sizes_of)):
        key = i if key_of is None else key_of(path, leaf)
        try:
            hash(key)
        except TypeError:
            raise validation.ArgumentError(
                f"blocks: the key of leaf {jax.tree_util.keystr(path)} must be hashable; got "
                f"{key!r}.") from None
        if key not in index:
            index[key] = len(sizes)
            sizes.append(0)
        ids.append(index[key])
        sizes[index[key]] += size
    return Blocks(tuple(ids), tuple(sizes))
