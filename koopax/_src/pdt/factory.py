"""The PDT and unmasked-prediction factories: validation, then the engine.

References:
  Wang, Tang, Harris, Qi, Wilson, Mezic, *Predictive Differential Training
  Guided by Training Dynamics*, ICLR 2026 (OpenReview zSTgrLkpRi; ICLR 2025
  submission eVsSjNRuAp); authors' code github.com/aicip/PDT.
"""

from __future__ import annotations

import numbers

import optax

from koopax._src import linalg, validation
from koopax._src.blocks import validate_blocks
from koopax._src.clock import make_clock
from koopax._src.pdt import engine
from koopax._src.pdt.jump import CRITERIA, Criteria, Predictor
from koopax._src.pdt.rollback import IgnoreRises, Rollback

FIT_ON = ("optimizer", "assembled")
PREDICTION_RCOND = 0.1   # see pdt(rcond=...)


def _check(ok, name, what, value):
    if not ok:
        raise validation.ArgumentError(f"{name} must be {what}; got {value!r}.")


def _is_real(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _is_int(x):
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def validate_intervals(interval, min_interval, max_interval) -> None:
    for value, name in ((min_interval, "min_interval"), (max_interval, "max_interval")):
        validation.static(value, name)
    _check(_is_int(min_interval) and 1 <= min_interval <= interval, "min_interval",
           f"an int in [1, interval={interval}]", min_interval)
    _check(_is_int(max_interval) and max_interval >= interval, "max_interval",
           f"an int >= interval={interval}", max_interval)


def _criteria(criteria, bounds) -> Criteria:
    _check(criteria in CRITERIA, "criteria", f"one of {CRITERIA}", criteria)
    _check(isinstance(bounds, (tuple, list)) and len(bounds) == 2, "quantity_bounds",
           "a pair (lower, upper or None)", bounds)
    lower, upper = bounds
    _check(_is_real(lower) and 0.0 <= lower < float("inf"), "quantity_bounds: lower",
           "a finite number >= 0", lower)
    _check(upper is None or (_is_real(upper) and lower <= upper < float("inf")),
           "quantity_bounds: upper", "None or a finite number >= lower", upper)
    return Criteria(criteria, float(lower), None if upper is None else float(upper))


def make(*, horizon, num_snapshots, snapshot_every, start, interval, rank, blocks,
         learning_rate, total_steps, criteria, quantity_bounds, policy, authors_schedule,
         fit_on, rcond) -> optax.GradientTransformationExtraArgs:
    """Validates the settings shared by :func:`pdt` and :func:`dmd_prediction`; the engine."""
    for value, name in ((horizon, "horizon"), (num_snapshots, "num_snapshots"),
                        (start, "start"), (interval, "interval"), (rank, "rank"),
                        (rcond, "rcond")):
        validation.static(value, name)
    for value, name, low in ((horizon, "horizon", 1), (num_snapshots, "num_snapshots", 3),
                             (start, "start", 0), (interval, "interval", 1)):
        validation.integer(value, name, low=low)
    linalg.validate_rank(rank)
    if _is_int(rank) and rank > num_snapshots - 2:
        raise ValueError(
            f"rank must be <= num_snapshots - 2 = {num_snapshots - 2} (the number of "
            f"increment pairs); got {rank}.")
    validate_blocks(blocks)
    validation.boolean(authors_schedule, "authors_schedule")
    _check(fit_on in FIT_ON, "fit_on", f"one of {FIT_ON}", fit_on)
    validation.optional_fraction(rcond, "rcond")
    clock = make_clock(snapshot_every, learning_rate=learning_rate, total_steps=total_steps,
                       num_snapshots=num_snapshots)
    rcond = PREDICTION_RCOND if rcond is None else rcond
    predictor = Predictor(horizon, rank, rcond, _criteria(criteria, quantity_bounds), fit_on)
    return engine.transformation(engine.Config(
        predictor, policy, clock, blocks, num_snapshots, start, interval, authors_schedule))


def pdt(
    horizon: int = 5,
    *,
    num_snapshots: int = 6,
    snapshot_every: int | str,
    start: int = 5,
    interval: int = 1,
    rank: int | float | None = None,
    blocks=None,
    learning_rate=None,
    total_steps: int | None = None,
    criteria: str = "both",
    quantity_bounds: tuple = (1.0, None),
    rollback: bool = True,
    tolerance: float = 0.0,
    noise_tolerance: float = 2.0,
    min_interval: int | None = None,
    max_interval: int | None = None,
    authors_schedule: bool = False,
    fit_on: str = "assembled",
    rcond: float | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Predictive Differential Training; place it last in the chain.

    ``optax.chain(optax.adam(1e-3), koopax.pdt(snapshot_every=steps_per_epoch))``

    Args:
      horizon: ``tau``, snapshots (epochs) to predict ahead of the reference.
      num_snapshots: ``h``, snapshots in the DMD window (>= 3): ``h - 1``
        increments, ``h - 2`` DMD pairs. The default 6 gives the 4 pairs of
        the paper's ``h = 5`` raw snapshots (the increment formulation needs
        one snapshot more for the same pairs; with 5, 3 pairs: MNIST-1D MLP
        0.83x SGD's epochs instead of 0.67x).
      snapshot_every: steps per "epoch": a snapshot is taken at the start of
        every epoch and a jump happens on the step that completes one (at
        the peak rate, given a ``learning_rate`` schedule; ``'auto'``, given
        ``total_steps``, fills the window within the first 10 % of the run).
      start: first epoch (0-based) that may end in a jump (paper ``T_0 = 5``);
        the window must also be full, i.e. epoch ``>= h - 1``.
      interval: epochs between jumps (``T_i``).
      rank: DMD rank policy (:func:`koopax.dmd.rank_mask`): ``None`` (every
        singular value above the isotropic-noise cluster of the window),
        ``'svht'`` (Gavish–Donoho), an int (<= ``h - 2``), or a float in
        (0, 1) (energy).
      blocks: one DMD for the whole tree (``None``, the paper) or one per
        block of leaves (``'leaf'``, ``'layer'``, or a callable ``(path, leaf)
        -> key``), as the authors' layer-wise trainer.
      learning_rate: the base optimizer's learning-rate schedule (needs
        ``total_steps``): epochs are then equal increments of the integrated
        rate, and the horizon never reaches beyond the run's end (see
        :func:`koopax.kga`).
      total_steps: the run's length in steps.
      criteria: ``'both'`` (paper), ``'quantity'``, ``'direction'`` (the
        ablations) or ``'none'`` (every prediction accepted: unmasked DMD).
      quantity_bounds: ``(lo, hi)`` of the quantity criterion
        ``lo |g| <= |d| <= hi |g|``; ``hi=None`` means ``tau + 1``.
      rollback: restore the pre-jump weights when the loss (``value``) of the
        epoch after a jump exceeds that of the epoch before by more than
        its noise and ``tolerance``, and adapt the interval
        (``koopax._src.pdt.rollback``). ``update`` then requires ``value`` (a
        ``ValueError`` names it). Costs one copy of the parameters in the state.
      tolerance: relative loss increase tolerated after a jump.
      noise_tolerance: rise tolerated after a jump, in standard errors of the
        difference of the two epoch means (0: any rise beyond ``tolerance``).
      min_interval, max_interval: bounds of the adaptive interval (defaults
        ``interval`` and ``max(8, interval)``).
      authors_schedule: also apply the authors' monotone horizon/interval
        rule to the epoch-mean ``value`` (module docstring; with
        ``rollback=False`` this is the authors' trainer).
      fit_on: what the DMD window records after a jump: ``'assembled'``
        (default, the authors' code) the increment to the assembled weights,
        jump included; ``'optimizer'`` the optimizer's own epoch increment
        ``w_sgd - w_ref``, the jump relocating the reference only, so that
        the DMD fits the optimizer's epoch map (more conservative jumps:
        digits at lr 0.1 0.57x vs 0.63x epochs, but lr 0.5 0.70x vs 0.57x,
        MNIST-1D 0.97x vs 0.83x; benchmarks/peer_pdt.py).
      rcond: the prediction's floor (default ``0.1``): singular values of
        the increment window below ``rcond * sigma_1`` are dropped and those
        between ``rcond`` and ``2 rcond`` fade in smoothly
        (:func:`koopax._src.dmd.floor_taper`). Why so high, and why smooth:
        a prediction extrapolates ``horizon`` periods, and a mode at
        ``s * sigma_1`` carries the weights' round-off amplified by
        ``1 / s``; with the Gram route's 1e-3 cut, a tanh MLP on 8 devices
        left the 1-device run by 2e-2 at the first jump (its third mode sat
        at 5e-3 ``sigma_1``), and a hard 0.2 cut flipped a mode in and out
        on a spectrum that sat on it. The taper makes the prediction a
        continuous function of the window: 8 devices and 1 agree to 1.5e-6
        there, and the PDT authors' digits figures stay (``BENCHMARKS.md``).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update`` needs
      ``params`` and (with ``rollback``) the loss as keyword ``value``. The base
      optimizer's state is never modified. Non-finite predictions (or a
      non-finite ``w_sgd``) never reach the weights: the base update passes
      and ``num_nonfinite`` counts the event.
    """
    validation.static(interval, "interval")
    validation.integer(interval, "interval", low=1)
    validation.boolean(rollback, "rollback")
    min_interval = interval if min_interval is None else min_interval
    max_interval = max(8, interval) if max_interval is None else max_interval
    validate_intervals(interval, min_interval, max_interval)
    policy = (Rollback(tolerance, noise_tolerance, min_interval, max_interval) if rollback
              else IgnoreRises())
    for value, name in ((tolerance, "tolerance"), (noise_tolerance, "noise_tolerance")):
        validation.number(value, name, low=0.0)
    return make(horizon=horizon, num_snapshots=num_snapshots, snapshot_every=snapshot_every,
                start=start, interval=interval, rank=rank, blocks=blocks,
                learning_rate=learning_rate, total_steps=total_steps,
                criteria=criteria, quantity_bounds=quantity_bounds, policy=policy,
                authors_schedule=authors_schedule, fit_on=fit_on, rcond=rcond)
