"""KGA's safety net: an exact rollback of a correction that made the loss rise.

With ``value=loss`` the engine keeps running statistics of the loss over each
snapshot period (:mod:`koopax._src.loss_tracking`). At a snapshot, when the
period that ends rose beyond twice its noise over the last kept period
(``L - L_ref > 2 sqrt(e^2 + e_ref^2)``) and a correction acted on it (the
newest increment's correction added at the previous snapshot, or the
per-update corrections of the period), that correction is undone:

* the weights return, bit for bit, to the snapshot recorded at the period's
  start (``koopax._src.restore``; the period's work is discarded, and a
  second step completes the restoration where one cannot land exactly);
* the snapshot that ends the rolled-back period is not recorded, so the DMD
  never fits the rejected trajectory, and the period's loss is not the next
  reference;
* the gain backs off (``alpha_factor`` halves) with memory: it never climbs
  back to a level that failed (``loss_tracking.close_period``).

A rise in a period without a correction backs off without a rollback. The
base optimizer's own state (momentum, moments) is left as it is, as in PDT.
Without ``value`` (``rollback=False``) only the bounds hold: every leaf's
correction is at most ``max_gain - 1`` times that leaf's base displacement
over the corrected span, and a non-finite input falls back to the base update.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from koopax._src import loss_tracking

NEEDS_VALUE = ("koopax's KGA rolls back a correction after which the loss rose: pass the "
               "loss as `tx.update(..., value=loss)` (nnx.Optimizer: "
               "`optimizer.update(model, grads, value=loss)`), or build it with "
               "rollback=False (then only the per-leaf bound protects the run).")


class RollbackState(NamedTuple):
    """KGA's rollback bookkeeping.

    Attributes:
      pending: bool, a correction acted on the current period (it awaits its verdict).
      replace: bool, this step's update is a restoring one (not the base's).
      restoring: bool, the next step completes a restoration.
      num_rollbacks: int32 corrections undone.
    """

    pending: jax.Array
    replace: jax.Array
    restoring: jax.Array
    num_rollbacks: jax.Array


def init_rollback() -> RollbackState:
    false = lambda: jnp.zeros((), bool)   # distinct buffers: a state may be donated
    return RollbackState(false(), false(), false(), jnp.zeros((), jnp.int32))


def verdict(valve: loss_tracking.Valve, rollback: RollbackState):
    """``(roll, valve)`` at a snapshot: undo the pending correction?, and the closed period.

    On a restoring step nothing is judged and the valve stays as it is.
    """
    rose, _ = loss_tracking.period_rose(valve)
    roll = rose & rollback.pending & ~rollback.restoring
    closed = loss_tracking.close_period(valve, discard=roll)
    valve = jax.tree.map(lambda c, o: jnp.where(rollback.restoring, o, c), closed, valve)
    return roll, valve
