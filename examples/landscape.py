"""The PCA plane of weight trajectories and the loss landscape over it (KGA paper Fig. 6b).

Not Koopman code: a view of the trajectories that :mod:`examples.analyses`
draws beside koopax's analyses (:mod:`koopax.analysis`).
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from koopax import analysis

_HIGHEST = jax.lax.Precision.HIGHEST


class PCAPlane(NamedTuple):
    """The principal plane of one or several weight trajectories.

    Attributes:
      center: pytree like one snapshot, the mean ``w_bar`` of all snapshots.
      directions: tuple of ``num_components`` unit-norm, mutually orthogonal
        pytrees ``v_k`` like one snapshot.
      coordinates: tuple, per trajectory, of ``(T_i, num_components)`` float
        arrays ``<w - w_bar, v_k>``.
      explained: ``(num_components,)`` fraction of the centred variance
        along each direction.
    """

    center: Any
    directions: tuple
    coordinates: tuple
    explained: jax.Array


def pca_plane(*trajectories, num_components: int = 2) -> PCAPlane:
    """Top principal directions of the centred snapshots of all trajectories.

    With ``W`` the ``T x N`` matrix of every snapshot of every trajectory and
    ``C = W - 1 w_bar^T`` its centred version, ``C = P S V^T`` (SVD): the
    directions are the first columns of ``V``, the coordinates ``C V = P S``
    and the explained fractions ``s_k^2 / sum_j s_j^2``. Computed from the
    ``T x T`` Gram matrix ``C C^T = P S^2 P^T``, ``v_k = C^T p_k / s_k``.
    Signs are fixed so that the first trajectory moves towards positive
    coordinates (its last minus first coordinate is ``>= 0``).

    Args:
      *trajectories: one or more trajectories (each as in
        :func:`koopax.analysis.stack_snapshots`), all of one tree structure and shapes:
        e.g. the base optimizer's, KGA's and PDT's, on one picture.
      num_components: directions to return (``< T``).

    Returns:
      A :class:`PCAPlane`.

    Examples:
      A trajectory along the diagonal of the first two axes:

      >>> import jax.numpy as jnp
      >>> from examples import landscape
      >>> w = jnp.array([[t, t, 0.0] for t in range(4)])
      >>> plane = landscape.pca_plane(w, num_components=1)
      >>> [round(float(x), 4) for x in plane.directions[0]]
      [0.7071, 0.7071, 0.0]
      >>> [round(float(x), 4) for x in plane.coordinates[0][:, 0]]
      [-2.1213, -0.7071, 0.7071, 2.1213]
      >>> round(float(plane.explained[0]), 4)
      1.0

    References:
      Li et al., *Visualizing the Loss Landscape of Neural Nets*, NeurIPS 2018.
      Anonymous, *Dynamic Training Guided by Training Dynamics*, 2024, Fig. 6b.
    """
    if not trajectories:
        raise TypeError("trajectories: pass at least one trajectory.")
    if not isinstance(num_components, numbers.Integral) or isinstance(num_components, bool) \
            or num_components < 1:
        raise ValueError(f"num_components must be an int >= 1; got {num_components!r}.")
    stacked = [analysis.stack_snapshots(t, f"trajectories[{i}]")
               for i, t in enumerate(trajectories)]
    like = [(jax.tree.structure(s), [x.shape[1:] for x in jax.tree.leaves(s)]) for s in stacked]
    if any(x != like[0] for x in like):
        raise ValueError("trajectories: all must share one tree structure and leaf shapes.")
    lengths = [jax.tree.leaves(s)[0].shape[0] for s in stacked]
    k = num_components
    if k >= sum(lengths):
        raise ValueError(f"num_components must be < the number of snapshots {sum(lengths)}; "
                         f"got {k}.")
    every = jax.tree.map(lambda *xs: jnp.concatenate(xs), *stacked)
    center, directions, coords, explained = _principal(every, lengths[0], k)
    bounds = np.cumsum([0] + lengths)
    coordinates = tuple(coords[a:b] for a, b in zip(bounds[:-1], bounds[1:]))
    return PCAPlane(center, directions, coordinates, explained)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _principal(every, first_length, k):
    center = jax.tree.map(lambda x: jnp.mean(x, axis=0), every)
    centred = jax.tree.map(lambda x, c: x - c, every, center)
    gram = sum(jnp.tensordot(x, x, axes=(tuple(range(1, x.ndim)),) * 2, precision=_HIGHEST)
               for x in jax.tree.leaves(centred))
    evals, evecs = jnp.linalg.eigh(gram)
    evals, evecs = jnp.maximum(evals[::-1], 0.0), evecs[:, ::-1]
    s = jnp.sqrt(evals[:k])
    coords = evecs[:, :k] * s
    sign = jnp.where(coords[first_length - 1] - coords[0] < 0, -1.0, 1.0)
    coords = coords * sign
    coef = evecs[:, :k] * sign / jnp.where(s > 0, s, 1.0)
    dirs = jax.tree.map(lambda x: jnp.tensordot(coef.T.astype(x.dtype), x, axes=1,
                                                precision=_HIGHEST), centred)
    directions = tuple(jax.tree.map(lambda d, i=i: d[i], dirs) for i in range(k))
    explained = evals[:k] / jnp.maximum(jnp.sum(evals), jnp.finfo(evals.dtype).tiny)
    return center, directions, coords, explained


def _grid_1d(values, name):
    arr = jnp.asarray(values)
    if arr.ndim != 1 or arr.shape[0] < 1 or not jnp.issubdtype(arr.dtype, jnp.number) \
            or jnp.issubdtype(arr.dtype, jnp.complexfloating):
        raise ValueError(f"{name} must be a non-empty 1-D array of real numbers; got shape "
                         f"{arr.shape}.")
    if not bool(jnp.all(jnp.isfinite(arr))):
        raise ValueError(f"{name} must be finite.")
    return arr.astype(jnp.result_type(float))


@functools.partial(jax.jit, static_argnums=0)
def _landscape(loss_fn, center, first, second, xs, ys):
    def point(a, b):
        return loss_fn(jax.tree.map(
            lambda c, u, v: (c + a.astype(c.dtype) * u + b.astype(c.dtype) * v).astype(c.dtype),
            center, first, second))

    return jax.lax.map(lambda b: jax.vmap(lambda a: point(a, b))(xs), ys)


def loss_landscape(loss_fn: Callable, center, directions, xs, ys) -> jax.Array:
    """The loss on a grid of the plane through ``center`` spanned by two directions::

        L[i, j] = loss_fn(center + xs[j] v_1 + ys[i] v_2).

    The grid is evaluated in one jitted call: ``vmap`` over ``xs`` (a row)
    and ``lax.map`` over ``ys`` (row by row, so memory holds one row of
    parameter copies).

    Args:
      loss_fn: ``loss_fn(params) -> scalar``, jit- and vmap-able (close over
        the data, e.g. a fixed evaluation batch).
      center: pytree of parameters (:attr:`PCAPlane.center`).
      directions: a pair ``(v_1, v_2)`` of pytrees like ``center``
        (:attr:`PCAPlane.directions`).
      xs, ys: 1-D arrays of coordinates along ``v_1`` and ``v_2``.

    Returns:
      A ``(len(ys), len(xs))`` array (rows follow ``ys``, as ``contour``
      expects).

    Examples:
      >>> import jax.numpy as jnp
      >>> from examples import landscape
      >>> def loss(p):
      ...     return jnp.sum(p["w"] ** 2)
      >>> center = {"w": jnp.array([1.0, 0.0])}
      >>> plane = ({"w": jnp.array([1.0, 0.0])}, {"w": jnp.array([0.0, 1.0])})
      >>> landscape.loss_landscape(loss, center, plane, jnp.array([-1.0, 0.0]),
      ...                          jnp.array([0.0, 2.0])).tolist()
      [[0.0, 1.0], [4.0, 5.0]]

    References:
      Li et al., *Visualizing the Loss Landscape of Neural Nets*, NeurIPS 2018.
      Anonymous, *Dynamic Training Guided by Training Dynamics*, 2024, Fig. 6b.
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable; got {type(loss_fn).__name__}.")
    center = jax.tree.map(jnp.asarray, center)
    if not jax.tree.leaves(center):
        raise ValueError("center: the pytree has no leaves.")
    if not isinstance(directions, (list, tuple)) or len(directions) != 2:
        raise ValueError("directions must be a pair (v_1, v_2) of pytrees like center.")
    shapes = (jax.tree.structure(center), [x.shape for x in jax.tree.leaves(center)])
    for i, d in enumerate(directions):
        if (jax.tree.structure(d), [np.shape(x) for x in jax.tree.leaves(d)]) != shapes:
            raise ValueError(f"directions[{i}] must have the tree structure and leaf shapes "
                             "of center.")
    xs, ys = _grid_1d(xs, "xs"), _grid_1d(ys, "ys")
    first, second = (jax.tree.map(jnp.asarray, d) for d in directions)
    grid = _landscape(loss_fn, center, first, second, xs, ys)
    if grid.shape != (ys.shape[0], xs.shape[0]):
        raise ValueError(f"loss_fn must return a scalar; got shape {grid.shape[2:]}.")
    return grid


