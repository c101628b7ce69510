"""When to take a snapshot: in steps, or in the integrated learning rate.

Gradient flow ``dw/ds = -P g(w)`` is autonomous in the integrated step size
``s = sum_{i < t} eta_i`` (``P`` the optimizer's slowly varying
preconditioner), not in the step count ``t``. Under a constant rate the two are
proportional. Under a schedule (warmup, cosine decay) they are not: snapshots
every ``E`` steps see increments that shrink and grow with ``eta`` itself, and a
DMD over them reports the annealing as decay (on a transformer under cosine,
KGA's one stable eigenvalue followed the schedule, 0.86 -> 0.08).

A :class:`Clock` given the base's ``learning_rate`` schedule takes a snapshot
once ``s`` has grown by ``ds = snapshot_every * eta_peak`` since the last one
(``snapshot_every`` steps at the peak rate). Snapshots get sparser as the rate
decays, and the DMD sees equal increments of one flow: for ``L = 1/2 w^T H w``
under SGD its eigenvalues are ``exp(-h_k ds)`` whatever the schedule (to
``O(eta)``). A snapshot falls on the step boundary nearest its target, so a
period is ``ds`` to within half a step's ``eta``. Predictions and corrections are made in the same
time: a period ahead is ``ds`` of integrated rate, and no horizon reaches
beyond what the schedule has left, ``S - s`` with ``S = sum_{t < T} eta_t``
(:attr:`Clock.total_time`).

Without a schedule (``learning_rate`` ``None`` or a number) the clock counts
steps: a snapshot every ``snapshot_every`` steps, as before.

``snapshot_every='auto'`` (given ``total_steps``) fills a window of ``h``
snapshots (``h - 1`` periods) within the first 10 % of the run: ``ds = 0.1 S /
(h - 1)``, or ``E = max(1, floor(0.1 T / (h - 1)))`` steps without a schedule.

References:
  Li, Tai, E, *Stochastic modified equations and adaptive stochastic gradient
  algorithms*, ICML 2017 (SGD as a discretisation of a flow in ``sum eta``).
  Askham & Kutz, `Variable projection methods for an optimized dynamic mode
  decomposition <https://arxiv.org/abs/1704.02343>`_, 2018 (DMD in continuous
  time; koopax resamples instead, on a grid of equal ``ds``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from koopax._src import validation

#: Fraction of the run within which ``snapshot_every='auto'`` fills the window.
AUTO_FILL_FRACTION = 0.1


class ClockState(NamedTuple):
    """The integrated learning rate (rate clocks only; step clocks keep nothing).

    Attributes:
      time: float32 ``s`` before the current step.
      compensation: float32 Kahan compensation of ``time``.
      next_snapshot: float32 grid point of the next snapshot.
    """

    time: jax.Array
    compensation: jax.Array
    next_snapshot: jax.Array


@dataclasses.dataclass(frozen=True)
class Clock:
    """A snapshot clock (see the module docstring); build it with :func:`make_clock`.

    Attributes:
      snapshot_every: steps between snapshots (at the peak rate for a schedule).
      schedule: the base's learning-rate schedule, or ``None`` (step clock).
      period: ``ds`` in integrated rate (rate clock), or ``snapshot_every``.
      total_time: ``S``, the rate integrated over ``total_steps``, or ``None``.
    """

    snapshot_every: int
    schedule: Callable | None
    period: float
    total_time: float | None

    @property
    def counts_rate(self) -> bool:
        return self.schedule is not None

    def init(self) -> ClockState | tuple:
        """The clock's state: ``()`` for a step clock."""
        if not self.counts_rate:
            return ()
        zero = lambda: jnp.zeros((), jnp.float32)  # distinct buffers: a state may be donated
        return ClockState(zero(), zero(), zero())

    def rate(self, count) -> jax.Array:
        """``eta`` of step ``count`` (float32)."""
        return jnp.asarray(self.schedule(count), jnp.float32)

    def due(self, count, state) -> jax.Array:
        """True when the step ``count`` starts with a snapshot."""
        if not self.counts_rate:
            return (count % self.snapshot_every) == 0
        # The step boundary nearest the target: periods of ``ds`` +- eta / 2, unbiased
        # (the first boundary past it made every period one step too long when a sum
        # of rates fell short of ``ds`` by round-off or a slowly decaying rate).
        return state.time + 0.5 * self.rate(count) >= state.next_snapshot

    def ends_period(self, count, state) -> jax.Array:
        """True when the step after ``count`` starts with a snapshot."""
        if not self.counts_rate:
            return (count + 1) % self.snapshot_every == 0
        return self.due(count + 1, self.advance(count, state, self.due(count, state)))

    def advance(self, count, state, took) -> ClockState | tuple:
        """The state after step ``count`` (``took``: it started with a snapshot)."""
        if not self.counts_rate:
            return state
        time, comp = _kahan_add(state, self.rate(count))
        # The next snapshot is a period after this one's own time, not on a fixed grid:
        # every period is then ``ds`` plus an overshoot that drifts with the rate, where
        # a fixed grid alternates long and short periods (a 10-step period at a slowly
        # decaying rate came out 11, 10, 10, ... steps and biased the DMD by 5 %).
        nxt = jnp.where(took, state.time + self.period, state.next_snapshot)
        return ClockState(time, comp, nxt.astype(jnp.float32))

    def periods_left(self, count, state) -> jax.Array | None:
        """``(S - s) / ds``: periods the run has left before step ``count`` (``None``:
        the end is unknown)."""
        if self.total_time is None:
            return None
        now = state.time if self.counts_rate else jnp.asarray(count, jnp.float32)
        return jnp.maximum(self.total_time - now, 0.0) / self.period


def _kahan_add(state: ClockState, value):
    y = value - state.compensation
    t = state.time + y
    return t, (t - state.time) - y


def _schedule_values(schedule, total_steps: int) -> np.ndarray:
    values = np.asarray(jax.device_get(schedule(jnp.arange(total_steps))), np.float64)
    if values.shape != (total_steps,) or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError("learning_rate: the schedule must give a finite rate >= 0 per step "
                         f"over total_steps={total_steps}.")
    if not np.any(values > 0):
        raise ValueError("learning_rate: the schedule is 0 at every step of the run.")
    return values


def make_clock(snapshot_every, *, learning_rate=None, total_steps=None,
               num_snapshots: int | None = None) -> Clock:
    """A validated :class:`Clock`.

    Args:
      snapshot_every: an int >= 1 (steps; at the peak rate for a schedule), or
        ``'auto'`` (needs ``total_steps`` and ``num_snapshots``: the window of
        ``num_snapshots`` fills within the first 10 % of the run).
      learning_rate: the base optimizer's learning rate: ``None`` or a number
        (a step clock) or an optax schedule ``count -> eta`` (a rate clock,
        needs ``total_steps``).
      total_steps: the run's length in steps (``None``: unknown).
      num_snapshots: ``h`` of the transformation (for ``'auto'``).

    Examples:
      Warmup then cosine: snapshots every 10 steps at the peak rate, sparser
      during warmup and as the rate decays:

      >>> import jax.numpy as jnp, optax
      >>> from koopax._src import clock
      >>> sched = optax.warmup_cosine_decay_schedule(0.0, 0.1, 20, 200)
      >>> c = clock.make_clock(10, learning_rate=sched, total_steps=200)
      >>> state, taken = c.init(), []
      >>> for t in range(200):
      ...     due = c.due(t, state)
      ...     taken += [t] if due else []
      ...     state = c.advance(t, state, due)
      >>> taken[:4], taken[-3:]
      ([0, 20, 30, 40], [102, 123, 169])
    """
    validation.static(snapshot_every, "snapshot_every")
    validation.static(total_steps, "total_steps")
    if total_steps is not None:
        validation.integer(total_steps, "total_steps", low=1)
    schedule = None
    if learning_rate is not None and not isinstance(learning_rate, numbers.Real):
        if not callable(learning_rate):
            raise validation.ArgumentError(
                "learning_rate must be None, a number or an optax schedule (a callable "
                f"count -> rate); got {learning_rate!r}.")
        if total_steps is None:
            raise ValueError("total_steps is required with a learning_rate schedule (the "
                             "clock's period is set at the schedule's peak over the run).")
        schedule = learning_rate
    elif learning_rate is not None:
        validation.number(learning_rate, "learning_rate", low=0.0, low_open=True)
    auto = isinstance(snapshot_every, str)
    if auto:
        if snapshot_every != "auto":
            raise ValueError(f"snapshot_every must be an int >= 1 or 'auto'; got "
                             f"{snapshot_every!r}.")
        if total_steps is None:
            raise ValueError("snapshot_every='auto' needs total_steps.")
        if num_snapshots is None:
            raise ValueError("snapshot_every='auto' needs num_snapshots.")
    else:
        validation.integer(snapshot_every, "snapshot_every", low=1)
    periods = None if num_snapshots is None else max(num_snapshots - 1, 1)
    if schedule is None:
        every = (max(1, math.floor(AUTO_FILL_FRACTION * total_steps / periods)) if auto
                 else snapshot_every)
        total = None if total_steps is None else float(total_steps)
        return Clock(every, None, float(every), total)
    values = _schedule_values(schedule, total_steps)
    total = float(values.sum())
    peak = float(values.max())
    period = AUTO_FILL_FRACTION * total / periods if auto else snapshot_every * peak
    every = max(1, round(period / peak))
    return Clock(every, schedule, float(period), total)

