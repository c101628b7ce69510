"""Snapshot sequences as stacked pytrees: the input handling of the analyses.

A training run recorded cheaply is a list of parameter pytrees (one per
epoch) or one pytree whose leaves carry the epoch on their leading axis;
:func:`stack_snapshots` turns either into the second, checked.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from koopax._src import linalg, tree_math, validation




def is_sequence(x) -> bool:
    return isinstance(x, (list, tuple)) and not hasattr(x, "_fields")


def check_leaves(tree, name):
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError(f"{name}: the pytree has no leaves.")
    for leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"{name}: leaves must be real floating-point arrays; got "
                            f"{getattr(dtype, 'name', type(leaf).__name__)}.")
    return leaves


def stack_snapshots(snapshots, name: str = "snapshots"):
    """Stacks recorded snapshots into one pytree with the snapshot index first.

    Args:
      snapshots: a list or tuple of snapshot pytrees (one per epoch, all of
        one structure and shapes), or an already stacked pytree / array whose
        leaves carry the ``h`` snapshots on their leading axis. A NamedTuple
        counts as one pytree, not as a sequence.
      name: the argument's name in error messages.

    Returns:
      The stacked pytree of ``jax.Array`` leaves ``(h, ...)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax import analysis
      >>> stacked = analysis.stack_snapshots([{"w": jnp.zeros(3)}, {"w": jnp.ones(3)}])
      >>> stacked["w"].shape
      (2, 3)
    """
    if is_sequence(snapshots):
        if not snapshots:
            raise ValueError(f"{name}: the sequence of snapshots is empty.")
        structure = jax.tree.structure(snapshots[0])
        shapes = [np.shape(x) for x in jax.tree.leaves(snapshots[0])]
        for i, s in enumerate(snapshots):
            if jax.tree.structure(s) != structure or \
                    [np.shape(x) for x in jax.tree.leaves(s)] != shapes:
                raise ValueError(f"{name}: snapshot {i} differs from snapshot 0 in tree "
                                 "structure or leaf shapes.")
        stacked = jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *snapshots)
    else:
        stacked = jax.tree.map(jnp.asarray, snapshots)
    leaves = check_leaves(stacked, name)
    h = leaves[0].shape[0] if leaves[0].ndim else 0
    if any(x.ndim == 0 or x.shape[0] != h for x in leaves):
        raise ValueError(f"{name}: every leaf needs the same leading snapshot axis; got "
                         f"shapes {[x.shape for x in leaves]}.")
    return stacked


def stack_checked(snapshots, name, minimum):
    stacked = stack_snapshots(snapshots, name)
    h = jax.tree.leaves(stacked)[0].shape[0]
    if h < minimum:
        raise ValueError(f"{name}: need at least {minimum} snapshots; got {h}.")
    return stacked, h


def increments(stacked):
    return jax.tree.map(lambda x: x[1:] - x[:-1], stacked)


def num_features(stacked) -> int:
    return tree_math.tree_size(jax.tree.map(lambda x: x[0], stacked))


def check_dmd_options(epsilon, rank, rcond):
    validation.number(epsilon, "epsilon", low=0.0, high=1.0, what="a number in [0, 1)")
    linalg.validate_rank(rank)
    validation.optional_fraction(rcond, "rcond")


