"""Controls for koopax: what a user could do instead, without any DMD.

:func:`period_extrapolation` is the *no-DMD control* of the benchmarks: once per
period it extrapolates the period's displacement linearly, the simplest thing a
Koopman method could be beaten by. KGA amplifies the training displacement
along the slow DMD modes once per snapshot period; this control amplifies the
whole displacement by a fixed ``beta``, with the same cadence, the same place in
the chain (last, after the base optimizer) and one parameter-sized buffer. A
koopax method that does not beat it has not shown that its DMD is worth its cost.

It is the extrapolation step of Lookahead read forwards (Zhang et al. 2019 pull
the weights *back* towards the slow weights, ``beta < 0``; here ``beta > 0``
moves them further along the period's direction).

References:
  M. R. Zhang, J. Lucas, G. Hinton and J. Ba. Lookahead Optimizer: k steps
  forward, 1 step back. NeurIPS 2019. https://arxiv.org/abs/1907.08610
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = ["PeriodExtrapolationState", "period_extrapolation"]


class PeriodExtrapolationState(NamedTuple):
    """State of :func:`period_extrapolation`.

    Attributes:
      count: steps taken (``shape=(), dtype=int32``, saturating).
      reference: the weights at the end of the previous period, after that
        period's extrapolation (initially the initial weights).
    """

    count: jax.Array
    reference: Any


def period_extrapolation(beta: float = 1.0, *, snapshot_every: int
                         ) -> optax.GradientTransformationExtraArgs:
    r"""Every ``snapshot_every`` steps, add ``beta`` times the period's displacement.

    Goes last in the chain, like koopax's transformations:
    ``optax.chain(base, period_extrapolation(beta, snapshot_every=E))``. At a step
    that ends a period (steps ``E, 2E, ...``), with ``u`` the base's update of that
    step, ``w`` the current weights (``params``) and ``r`` the reference:

    .. math::

      w' = w + u + \beta \, (w + u - r), \qquad r \leftarrow w'.

    Every other step passes ``u`` unchanged. ``w + u - r`` is the displacement
    the *optimizer* made over the period: the reference is taken *after* the
    extrapolation (lookahead-style), so a period never re-extrapolates the
    previous period's jump, and with a constant base update ``u`` every period
    moves the weights by exactly ``(1 + beta) E u``. The first reference is the
    initial weights (``init``'s ``params``).

    Jit-safe: the period's end is a traced ``count % E == 0`` selected with
    ``jnp.where``; no Python control flow on traced values. State: one
    parameter-sized buffer and a counter.

    Args:
      beta: the extrapolation factor (``>= 0``; 0 is the base optimizer).
      snapshot_every: the period ``E`` in steps (the harness passes the steps per
        epoch, the cadence of KGA-Epoch).

    Returns:
      A transformation whose ``update`` needs ``params`` and accepts and ignores
      extra keyword arguments (``value=loss``).

    Raises:
      ValueError: if ``beta`` is not a finite number ``>= 0`` or
        ``snapshot_every`` is not a positive int; ``update`` without ``params``.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> tx = optax.chain(optax.sgd(1.0), period_extrapolation(1.0, snapshot_every=2))
      >>> params = {"w": jnp.zeros(())}
      >>> state = tx.init(params)
      >>> for _ in range(4):   # a constant gradient -1: the base moves +1 per step
      ...     updates, state = tx.update({"w": -jnp.ones(())}, state, params)
      ...     params = optax.apply_updates(params, updates)
      ...     print(float(params["w"]))
      1.0
      4.0
      5.0
      8.0
    """
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) \
            or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0; got {beta!r}.")
    if isinstance(snapshot_every, bool) or not isinstance(snapshot_every, numbers.Integral) \
            or snapshot_every < 1:
        raise ValueError(f"snapshot_every must be a positive int; got {snapshot_every!r}.")
    period = int(snapshot_every)

    def init_fn(params):
        return PeriodExtrapolationState(jnp.zeros([], jnp.int32),
                                        jax.tree.map(jnp.array, params))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("period_extrapolation needs params: call "
                             "update(updates, state, params).")
        count = optax.safe_increment(state.count)
        boundary = count % period == 0

        new_updates = jax.tree.map(
            lambda u, w, r: jnp.where(boundary, u + beta * (w + u - r), u).astype(u.dtype),
            updates, params, state.reference)
        reference = jax.tree.map(
            lambda n, w, r: jnp.where(boundary, w + n, r).astype(r.dtype),
            new_updates, params, state.reference)
        return new_updates, PeriodExtrapolationState(count, reference)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
