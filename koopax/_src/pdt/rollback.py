"""What PDT does when the loss rises after a jump: the rise policies and exact restoration.

A jump is judged at the end of the epoch after it, on the loss passed as
``value``: it is bad when the epoch-mean loss ``L_post`` (standard error
``e_post``) exceeds the mean ``L_pre`` of the epoch that ended in the jump::

    L_post - L_pre > max(tolerance |L_pre|, noise_tolerance sqrt(e_pre^2 + e_post^2))

or ``L_post`` is not finite (:func:`koopax._src.loss_tracking.rose`). The
difference of two epoch means of a mini-batch loss carries sampling noise,
and plain SGD's own epoch-mean loss is not monotone at a high learning rate,
so a rule without the noise term rolls back ordinary fluctuations.

The policies (``koopax.pdt(rollback=...)``, ``koopax.dmd_prediction(mode=...)``):

* :class:`Rollback`: the weights return to the jump's ``w_sgd`` bit for bit
  (the epoch after the jump is discarded), the jumped snapshot leaves the
  window, and the interval doubles (up to ``max_interval``); a jump that
  holds shrinks it by one epoch (down to ``min_interval``);
* :class:`StopPredicting`: a bad jump switches predictions off for good
  (Tano et al.'s bootstrap fallback);
* :class:`IgnoreRises`: nothing (the authors' trainer; Dogra & Redman).

Restoration is bit exact (``koopax._src.restore``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from koopax._src import loss_tracking


class RollbackState(NamedTuple):
    """The last jump, as long as it can be undone.

    Attributes:
      saved: the weights ``w_sgd`` of the last jump (parameter dtypes), or
        ``()`` when the policy never restores.
      pending: bool, the last jump still awaits its verdict.
      restoring: bool, the next step completes a rollback.
      snapshots_at_jump: int32 snapshots recorded when the jump happened.
      pre_jump: ``(2,)`` float32 mean ``value`` of the epoch that ended in
        the jump and its standard error.
    """

    saved: Any
    pending: jax.Array
    restoring: jax.Array
    snapshots_at_jump: jax.Array
    pre_jump: jax.Array


def init_rollback(params, keeps_weights: bool) -> RollbackState:
    return RollbackState(
        saved=jax.tree.map(jnp.zeros_like, params) if keeps_weights else (),
        pending=jnp.asarray(False), restoring=jnp.asarray(False),
        snapshots_at_jump=jnp.zeros((), jnp.int32),
        pre_jump=jnp.array([jnp.nan, 0.0], jnp.float32))


class Verdict(NamedTuple):
    """A policy's judgement of the epoch that ends: roll back, stop, next interval."""

    rollback: jax.Array
    stopped: jax.Array
    interval: jax.Array


def _failed(state: RollbackState, loss, noise, has_loss, tolerance, noise_tolerance):
    judged = state.pending & has_loss
    rose = loss_tracking.rose(loss, noise, state.pre_jump[0], state.pre_jump[1],
                              tolerance=tolerance, noise_tolerance=noise_tolerance)
    return judged, judged & rose


@dataclasses.dataclass(frozen=True)
class Rollback:
    """Undo a bad jump exactly and back off the interval (module docstring)."""

    tolerance: Any = 0.0
    noise_tolerance: Any = 2.0
    min_interval: int = 1
    max_interval: int = 8
    keeps_weights = True
    restores = True
    needs_value = ("koopax.pdt's rollback judges each jump on the loss: pass it as "
                   "`tx.update(..., value=loss)` (nnx.Optimizer: `optimizer.update(model, "
                   "grads, value=loss)`), or build koopax.pdt(rollback=False) to jump "
                   "without a safety net.")

    def judge(self, state: RollbackState, stopped, interval, loss, noise, has_loss) -> Verdict:
        judged, failed = _failed(state, loss, noise, has_loss, self.tolerance,
                                 self.noise_tolerance)
        interval = jnp.where(failed, jnp.minimum(2 * interval, self.max_interval),
                             jnp.where(judged & ~failed,
                                       jnp.maximum(interval - 1, self.min_interval), interval))
        return Verdict(failed, stopped, interval)


@dataclasses.dataclass(frozen=True)
class StopPredicting:
    """A bad jump switches predictions off for good (Tano et al.'s fallback)."""

    tolerance: Any = 0.0
    noise_tolerance: Any = 0.0
    keeps_weights = False
    restores = False
    needs_value = ("koopax.dmd_prediction(mode='tano') stops predicting once the loss rises "
                   "after a jump: pass the (validation) loss as `tx.update(..., value=loss)`, "
                   "or use mode='dogra' (no fallback).")

    def judge(self, state: RollbackState, stopped, interval, loss, noise, has_loss) -> Verdict:
        _, failed = _failed(state, loss, noise, has_loss, self.tolerance, self.noise_tolerance)
        return Verdict(jnp.asarray(False), stopped | failed, interval)


@dataclasses.dataclass(frozen=True)
class IgnoreRises:
    """Jumps are never judged (the authors' trainer; Dogra & Redman)."""

    keeps_weights = False
    restores = False

    def judge(self, state: RollbackState, stopped, interval, loss, noise, has_loss) -> Verdict:
        del state, loss, noise, has_loss
        return Verdict(jnp.asarray(False), stopped, interval)
