"""Running loss statistics and the rise test shared by KGA's valve and PDT.

The loss ``value`` of each step is folded into Welford's running mean and sum
of squared deviations over a period (an epoch, or the steps between two
snapshots); a period *rose* over a reference period when::

    L - L_ref > max(tolerance |L_ref|, noise_tolerance sqrt(e^2 + e_ref^2))

with ``e`` the standard errors of the two means, or when ``L`` is not finite.

A period that holds a single loss (a snapshot every step: KGA-Iter) has no
spread of its own. KGA's valve then takes the per-step spread of the loss from
the run's successive differences (von Neumann's estimator, ``s^2 ~ (L_t -
L_{t-1})^2 / 2``, robust to the loss's slow descent), averaged with weight
``SPREAD_WEIGHT`` per step; with a zero spread every minibatch fluctuation
upwards read as a rise (KGA-Iter on z = x^2 + y^2: a median of 70 rollbacks a
seed in 25 epochs; 24 now).

References:
  Welford, *Note on a method for calculating corrected sums of squares and
  products*, Technometrics 4(3), 1962.
  von Neumann, Kent, Bellinson, Hart, *The mean square successive
  difference*, Ann. Math. Statist. 12(2), 1941.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class LossStats(NamedTuple):
    """Running statistics of the loss over a period.

    Attributes:
      count: int32 losses seen.
      mean: float32 running mean (+inf once a non-finite loss was seen).
      m2: float32 running sum of squared deviations.
    """

    count: jax.Array
    mean: jax.Array
    m2: jax.Array


def init_stats() -> LossStats:
    """Empty statistics."""
    return LossStats(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32),
                     jnp.zeros((), jnp.float32))


def track(stats: LossStats, value) -> LossStats:
    """Folds one loss into the statistics (a non-finite loss counts as +inf).

    Examples:
      >>> from koopax._src import loss_tracking
      >>> stats = loss_tracking.init_stats()
      >>> for v in (1.0, 2.0, 3.0):
      ...     stats = loss_tracking.track(stats, v)
      >>> mean, error, seen = loss_tracking.summary(stats)
      >>> float(mean), round(float(error), 4), bool(seen)  # std 1, 3 samples
      (2.0, 0.5774, True)
    """
    v = jnp.asarray(value, jnp.float32)
    v = jnp.where(jnp.isfinite(v), v, jnp.inf)
    n = stats.count + 1
    delta = v - stats.mean
    mean = stats.mean + delta / n.astype(jnp.float32)
    return LossStats(n, mean, stats.m2 + delta * (v - mean))


def summary(stats: LossStats):
    """``(mean, standard error, seen)`` of the period."""
    n = jnp.maximum(stats.count, 1).astype(jnp.float32)
    var = stats.m2 / jnp.maximum(n - 1.0, 1.0)
    noise = jnp.sqrt(jnp.maximum(var, 0.0) / n)
    return stats.mean, jnp.where(jnp.isfinite(noise), noise, 0.0), stats.count > 0


def rose(loss, noise, ref_loss, ref_noise, *, tolerance, noise_tolerance):
    """True when ``loss`` is worse than ``ref_loss`` beyond tolerance and noise, or not finite.

    Examples:
      >>> from koopax._src import loss_tracking
      >>> rose = lambda l, e: bool(loss_tracking.rose(l, e, 1.0, 0.1, tolerance=0.0,
      ...                                               noise_tolerance=2.0))
      >>> rose(1.2, 0.1), rose(1.4, 0.1), rose(float("nan"), 0.0)
      (False, True, True)
    """
    margin = jnp.maximum(tolerance * jnp.abs(ref_loss),
                         noise_tolerance * jnp.sqrt(noise**2 + ref_noise**2))
    both = jnp.isfinite(loss) & jnp.isfinite(ref_loss)
    return ~jnp.isfinite(loss) | (both & (loss - ref_loss > margin))


class Valve(NamedTuple):
    """KGA's loss-aware safety valve.

    Attributes:
      stats: the current period's :class:`LossStats`.
      reference: ``(mean, standard error)`` float32 of the latest period
        with a finite mean that was kept (a rolled-back period is not).
      has_reference: bool, ``reference`` is set.
      alpha_factor: float32 factor in ``(0, 1]`` on the gain.
      ceiling: float32, ``alpha_factor`` never climbs back to a level that failed:
        after a rise at level ``f`` it stays below ``f sqrt(BACKOFF)``.
      num_backoffs: int32 periods whose loss rose, each halving ``alpha_factor``.
      last_loss: float32 loss of the latest step.
      has_last_loss: bool, ``last_loss`` holds a finite loss to difference with.
      spread: float32 ``(sum, weight)`` of the exponential average of
        ``(L_t - L_{t-1})^2 / 2``: the per-step variance is ``sum / weight``.
    """

    stats: LossStats
    reference: jax.Array
    has_reference: jax.Array
    alpha_factor: jax.Array
    ceiling: jax.Array
    num_backoffs: jax.Array
    last_loss: jax.Array
    has_last_loss: jax.Array
    spread: jax.Array


BACKOFF = 0.5
RECOVERY = 1.25
NOISE_TOLERANCE = 2.0
SPREAD_WEIGHT = 0.1


def init_valve() -> Valve:
    """A valve at ``alpha_factor = 1`` with no reference period."""
    return Valve(init_stats(), jnp.zeros((2,), jnp.float32), jnp.array(False),
                 jnp.ones((), jnp.float32), jnp.ones((), jnp.float32),
                 jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32), jnp.array(False),
                 jnp.zeros((2,), jnp.float32))


def observe(valve: Valve, value, skip=False) -> Valve:
    """Folds one step's loss into the period and into the per-step spread.

    ``skip`` (a traced bool: a restoring step, whose loss belongs to no
    period) leaves the statistics as they were and forgets the last loss, so
    the jump of a restoration is never read as noise.

    Examples:
      >>> from koopax._src import loss_tracking as lt
      >>> valve = lt.init_valve()
      >>> for v in (1.0, 1.2, 1.0, 1.2):
      ...     valve = lt.observe(valve, v)
      >>> round(float(lt.step_variance(valve)), 4)   # (0.2)^2 / 2 at every step
      0.02
    """
    v = jnp.asarray(value, jnp.float32)
    skip = jnp.asarray(skip, bool)
    stats = jax.tree.map(lambda t, o: jnp.where(skip, o, t), track(valve.stats, v), valve.stats)
    finite = jnp.isfinite(v)
    both = finite & valve.has_last_loss & ~skip
    half_square = 0.5 * (v - jnp.where(both, valve.last_loss, v)) ** 2
    averaged = (1.0 - SPREAD_WEIGHT) * valve.spread + SPREAD_WEIGHT * jnp.stack(
        [half_square, jnp.ones((), jnp.float32)])
    spread = jnp.where(both & jnp.isfinite(half_square), averaged, valve.spread)
    keep = finite & ~skip
    return valve._replace(stats=stats, last_loss=jnp.where(keep, v, 0.0).astype(jnp.float32),
                          has_last_loss=keep, spread=spread.astype(jnp.float32))


def step_variance(valve: Valve) -> jax.Array:
    """The per-step variance of the loss from successive differences (0 before any)."""
    total, weight = valve.spread[0], valve.spread[1]
    return jnp.where(weight > 0, total / jnp.where(weight > 0, weight, 1.0), 0.0)


def period_rose(valve: Valve):
    """``(rose, seen)``: the current period's mean loss rose over the reference
    beyond twice the noise of their difference, and the period saw a loss.

    The noise is the *reference* period's standard error, counted for both
    means (``sqrt(2) e_ref``): the current period's own spread would include
    the very rise under test (a correction that spikes the loss inflates its
    period's variance and would hide itself).
    """
    mean, _, seen = summary(valve.stats)
    ref_mean, ref_noise = valve.reference[0], valve.reference[1]
    up = seen & valve.has_reference & rose(mean, ref_noise, ref_mean, ref_noise, tolerance=0.0,
                                           noise_tolerance=NOISE_TOLERANCE)
    return up, seen


def close_period(valve: Valve, discard=False) -> Valve:
    """Ends a period: back off if its loss rose over the reference, else recover.

    A rise (:func:`period_rose`) at level ``f`` sets ``alpha_factor = f BACKOFF``
    (``BACKOFF = 0.5``) and lowers the ceiling below the failed level, to the
    geometric mean of the two, ``f sqrt(BACKOFF)``: the factor never climbs
    back to a level that failed, so a gain that destabilises training is
    searched down, not retried. A period that did not rise multiplies the
    factor by ``RECOVERY = 1.25`` up to the ceiling. A period without any loss
    (``value`` never passed) changes nothing. ``discard`` (a traced bool: the
    period was rolled back) keeps the previous reference.

    Examples:
      >>> from koopax._src import loss_tracking as lt
      >>> valve = lt.init_valve()
      >>> for losses in ([2.0, 2.0], [1.0, 1.0], [3.0, 3.0], [1.0, 1.0], [0.9, 0.9]):
      ...     for v in losses:
      ...         valve = lt.observe(valve, v)
      ...     valve = lt.close_period(valve)
      ...     print(round(float(valve.alpha_factor), 4), round(float(valve.ceiling), 4),
      ...           int(valve.num_backoffs))
      1.0 1.0 0
      1.0 1.0 0
      0.5 0.7071 1
      0.625 0.7071 1
      0.7071 0.7071 1
    """
    up, seen = period_rose(valve)
    mean, noise, _ = summary(valve.stats)
    # One loss has no spread of its own: its standard error is the per-step one.
    noise = jnp.where(valve.stats.count < 2, jnp.sqrt(step_variance(valve)), noise)
    ceiling = jnp.where(up, valve.alpha_factor * BACKOFF ** 0.5, valve.ceiling)
    factor = jnp.where(up, valve.alpha_factor * BACKOFF,
                       jnp.where(seen, jnp.minimum(valve.alpha_factor * RECOVERY, ceiling),
                                 valve.alpha_factor))
    new_ref = seen & jnp.isfinite(mean) & ~jnp.asarray(discard, bool)
    reference = jnp.where(new_ref, jnp.stack([mean, noise]), valve.reference)
    return valve._replace(stats=init_stats(), reference=reference.astype(jnp.float32),
                          has_reference=valve.has_reference | new_ref,
                          alpha_factor=factor.astype(jnp.float32),
                          ceiling=ceiling.astype(jnp.float32),
                          num_backoffs=valve.num_backoffs + up.astype(jnp.int32))
