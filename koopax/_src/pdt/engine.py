"""The PDT engine: epochs, snapshots, jumps and their verdicts, as one Optax update.

One "epoch" is a snapshot period **[choice]**: ``snapshot_every`` steps (or,
given a learning-rate schedule, ``snapshot_every`` steps' worth of the
integrated rate at its peak; ``koopax._src.clock``). The weights are recorded
at the start of every epoch into a window of increments
(:class:`koopax.RingWindow`); on the step that completes an epoch the engine
judges the previous jump (``koopax._src.pdt.rollback``), applies the authors'
scheduler if asked (``koopax._src.pdt.schedule``) and, when a prediction is
due, jumps (``koopax._src.pdt.jump``). The next epoch's snapshot is the
assembled weights, so the DMD keeps fitting the PDT-modified trajectory, as
the authors do. The base optimizer's state (momentum, Adam moments, count) is
never modified. Every gate is a loop of 0 or 1 trips (``koopax._src.control``):
the window passes through in place.

A horizon never reaches beyond the run: given ``total_steps``, a prediction
``tau`` periods ahead of the epoch's start is cut to the periods the run has
left (a fractional horizon at the end of a schedule).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from koopax._src import loss_tracking, snapshots, tree_math, validation
from koopax._src.blocks import make_blocks
from koopax._src.clock import Clock
from koopax._src.control import maybe_apply, maybe_record
from koopax._src.pdt import jump as jump_lib
from koopax._src.pdt import rollback as rb
from koopax._src.pdt.schedule import apply_authors_rule
from koopax._src.restore import restore_updates

_NEVER = 1 << 20      # "epochs since the last prediction" before the first one


class ScheduleState(NamedTuple):
    """Where training stands in epochs, and when the next prediction is due.

    Attributes:
      epoch: int32 epochs completed.
      snapshot_fresh: bool, this epoch's start snapshot was recorded.
      epochs_since_prediction: int32 (capped at ``2**20``).
      interval: int32 current prediction interval (epochs).
      horizon: int32 current horizon ``tau`` (changes only with ``authors_schedule``).
      loss_history: ``(2,)`` float32 ``L_{t-2}, L_{t-1}`` (``authors_schedule``).
      num_losses: int32 epochs with a loss so far (``authors_schedule``).
    """

    epoch: jax.Array
    snapshot_fresh: jax.Array
    epochs_since_prediction: jax.Array
    interval: jax.Array
    horizon: jax.Array
    loss_history: jax.Array
    num_losses: jax.Array


class PDTStats(NamedTuple):
    """PDT's diagnostics.

    Attributes:
      accepted_ratio: float32 fraction of the weights that took the prediction
        at the last prediction.
      num_predictions: int32 predictions made (finite ones).
      num_jumps: int32 predictions that moved at least one weight.
      num_rollbacks: int32 jumps undone.
      num_nonfinite: int32 events where a non-finite snapshot, prediction or
        ``w_sgd`` was rejected (the base update was used instead).
      eigenvalues: ``(B, h - 2)`` complex64 eigenvalues of each block's
        increment DMD at the last prediction, by decreasing modulus, 0-padded.
      rank: ``(B,)`` int32 DMD rank per block at the last prediction.
    """

    accepted_ratio: jax.Array
    num_predictions: jax.Array
    num_jumps: jax.Array
    num_rollbacks: jax.Array
    num_nonfinite: jax.Array
    eigenvalues: jax.Array
    rank: jax.Array


class PDTState(NamedTuple):
    """State of :func:`koopax.pdt` and :func:`koopax.dmd_prediction`.

    Attributes:
      count: int32 update calls (restore steps included).
      steps: int32 training steps (the clock's count; a restore step is not one).
      clock: the snapshot clock's state (``()`` for a step clock).
      window: the increment window (:class:`koopax.RingWindow`).
      schedule: :class:`koopax.PDTSchedule`, epochs and the next prediction.
      loss: the running statistics of ``value`` over this epoch.
      rollback: the last jump, while it can be undone.
      stopped: bool, predictions switched off for good (``mode='tano'``).
      stats: :class:`koopax.PDTStats`, the diagnostics.
    """

    count: jax.Array
    steps: jax.Array
    clock: Any
    window: snapshots.RingWindow
    schedule: ScheduleState
    loss: loss_tracking.LossStats
    rollback: rb.RollbackState
    stopped: jax.Array
    stats: PDTStats


@dataclasses.dataclass(frozen=True)
class Config:
    """The engine's static settings (validated by the factories)."""

    predictor: jump_lib.Predictor
    policy: Any            # rb.Rollback | rb.StopPredicting | rb.IgnoreRises
    clock: Clock
    blocks: Any
    num_snapshots: int
    start: int
    interval: int
    authors_schedule: bool


def _init(cfg: Config, params) -> PDTState:
    blocks = make_blocks(params, cfg.blocks)
    i32 = lambda v: jnp.asarray(v, jnp.int32)
    f32 = lambda v: jnp.asarray(v, jnp.float32)
    m = cfg.num_snapshots - 1
    return PDTState(
        count=i32(0), steps=i32(0), clock=cfg.clock.init(),
        window=snapshots.init_ring(params, m),
        schedule=ScheduleState(i32(0), jnp.asarray(False), i32(_NEVER), i32(cfg.interval),
                               i32(cfg.predictor.horizon), jnp.zeros((2,), jnp.float32), i32(0)),
        loss=loss_tracking.init_stats(),
        rollback=rb.init_rollback(params, cfg.policy.keeps_weights),
        stopped=jnp.asarray(False),
        stats=PDTStats(f32(0.0), i32(0), i32(0), i32(0), i32(0),
                       jnp.zeros((blocks.count, m - 1), jnp.complex64),
                       jnp.zeros((blocks.count,), jnp.int32)))


def _horizon(cfg: Config, state: PDTState):
    """``tau``, cut to what the run has left after this epoch (plus the epoch itself)."""
    tau = state.schedule.horizon
    left = cfg.clock.periods_left(state.steps, state.clock)
    if left is None:
        return tau
    return jnp.minimum(tau.astype(jnp.float32), left + 1.0)


def _restore(cfg: Config, state: PDTState, updates, window, params):
    """Updates restoring the saved ``w_sgd``, and the window without the jumped snapshot.

    The restoration always takes its second step (the caller sets
    ``restoring``; ``koopax._src.restore``), whether or not the first was
    already exact: how many steps it takes must not depend on the rounding of
    the weights, or a run on 8 devices and the same run on 1 would fall one
    step out of phase after a rollback.
    """
    upd = restore_updates(params, state.rollback.saved, updates)
    if cfg.predictor.fit_on == "optimizer":   # the newest increment is w_sgd - w_ref: keep it out
        window = window._replace(last=jax.tree.map(lambda s, l: s.astype(l.dtype),
                                                   state.rollback.saved, window.last))
    can_pop = window.num_snapshots > state.rollback.snapshots_at_jump
    window = jax.tree.map(lambda a, b: jnp.where(can_pop, a, b), snapshots.ring_pop(window),
                          window)
    return upd, window


def _next_schedule(cfg: Config, sched: ScheduleState, verdict, loss, has_loss, predicted):
    interval, horizon = verdict.interval, sched.horizon
    history, num_losses = sched.loss_history, sched.num_losses
    if cfg.authors_schedule:       # takes effect from the next epoch's prediction
        horizon, interval, history, num_losses = apply_authors_rule(
            loss, has_loss, history, num_losses, horizon, interval)
    since = jnp.minimum(sched.epochs_since_prediction + 1, _NEVER)
    return sched._replace(
        epoch=sched.epoch + 1,
        epochs_since_prediction=jnp.where(predicted | verdict.rollback, 0, since).astype(jnp.int32),
        interval=interval.astype(jnp.int32), horizon=horizon.astype(jnp.int32),
        loss_history=history, num_losses=num_losses)


def _epoch_end(cfg: Config, updates, state: PDTState, params, use_value: bool):
    """The last step of an epoch: verdict, prediction, rollback, schedule."""
    blocks = make_blocks(params, cfg.blocks)
    loss, noise, has_loss = loss_tracking.summary(state.loss)
    sched, policy = state.schedule, cfg.policy
    verdict = policy.judge(state.rollback, state.stopped, sched.interval, loss, noise, has_loss)
    since = jnp.minimum(sched.epochs_since_prediction + 1, _NEVER)
    predict = (~verdict.rollback & ~verdict.stopped & (sched.epoch >= cfg.start)
               & snapshots.ring_is_full(state.window) & sched.snapshot_fresh
               & (since >= verdict.interval))
    w_sgd = optax.apply_updates(params, updates) if policy.restores else None
    tau = _horizon(cfg, state)

    def jump(carry, p):
        u, window, _ = carry
        return jump_lib.jump(cfg.predictor, blocks, u, window, p, tau)

    updates, window, result = maybe_record(
        predict, jump, (updates, state.window,
                        jump_lib.no_jump(blocks.count, cfg.num_snapshots - 2)), params)
    predicted, jumped = predict & result.finite, predict & result.moved
    rollback = state.rollback
    restoring = jnp.asarray(False)
    if policy.restores:
        updates, window = maybe_record(
            verdict.rollback, lambda c, p: _restore(cfg, state, *c, p), (updates, window), params)
        restoring = verdict.rollback         # always a second restoring step (_restore)
        rollback = rollback._replace(saved=jax.tree.map(
            lambda s, w: jnp.where(jumped, w, s), rollback.saved, w_sgd))
    judges = use_value and not isinstance(policy, rb.IgnoreRises)
    rollback = rollback._replace(
        pending=(jumped & has_loss) if judges else jnp.asarray(False), restoring=restoring,
        snapshots_at_jump=jnp.where(jumped, state.window.num_snapshots,
                                    rollback.snapshots_at_jump),
        pre_jump=jnp.where(jumped, jnp.stack([loss, noise]), rollback.pre_jump))
    stats = state.stats
    stats = stats._replace(
        accepted_ratio=jnp.where(predicted, result.ratio, stats.accepted_ratio),
        num_predictions=stats.num_predictions + predicted.astype(jnp.int32),
        num_jumps=stats.num_jumps + jumped.astype(jnp.int32),
        num_rollbacks=stats.num_rollbacks + verdict.rollback.astype(jnp.int32),
        num_nonfinite=stats.num_nonfinite + (predict & ~result.finite).astype(jnp.int32),
        eigenvalues=jnp.where(predicted, result.eigenvalues, stats.eigenvalues),
        rank=jnp.where(predicted, result.ranks, stats.rank))
    return updates, state._replace(
        window=window, schedule=_next_schedule(cfg, sched, verdict, loss, has_loss, predicted),
        loss=loss_tracking.init_stats(), rollback=rollback, stopped=verdict.stopped,
        stats=stats)


def _record(state: PDTState, params) -> PDTState:
    """Start of an epoch: push the snapshot if it is finite (a non-finite one is
    counted, also once predictions have stopped for good)."""
    ok = tree_math.tree_all_finite(params)
    window = maybe_record(ok & ~state.stopped, snapshots.ring_push, state.window, params)
    return state._replace(
        window=window, schedule=state.schedule._replace(snapshot_fresh=ok & ~state.stopped),
        stats=state.stats._replace(
            num_nonfinite=state.stats.num_nonfinite + (~ok).astype(jnp.int32)))


def _training_step(cfg: Config, updates, state: PDTState, params, value):
    """A training step: snapshot on an epoch's first step, verdict/jump on its last."""
    due = cfg.clock.due(state.steps, state.clock)
    state = state._replace(schedule=state.schedule._replace(
        snapshot_fresh=jnp.where(due, False, state.schedule.snapshot_fresh)))
    if value is not None:
        state = state._replace(loss=loss_tracking.track(state.loss, value))
    end = cfg.clock.ends_period(state.steps, state.clock)

    def boundary(carry, p):
        # One gated region per step: two in sequence, each carrying the window,
        # made XLA copy the window between them on every step.
        u, s = carry
        s = maybe_record(due, _record, s, p)
        return maybe_record(
            end, lambda c, p_: _epoch_end(cfg, c[0], c[1], p_, value is not None), (u, s), p)

    updates, state = maybe_record(due | end, boundary, (updates, state), params)
    return updates, state._replace(
        count=optax.safe_increment(state.count), steps=optax.safe_increment(state.steps),
        clock=cfg.clock.advance(state.steps, state.clock, due))


def _restore_step(updates, state: PDTState, params):
    new = restore_updates(params, state.rollback.saved, updates)
    return new, state._replace(rollback=state.rollback._replace(restoring=jnp.asarray(False)),
                               count=optax.safe_increment(state.count))


NO_PARAMS_MSG = ("koopax's PDT needs the current parameters: call "
                 "`tx.update(updates, state, params)` (nnx.Optimizer does this).")


def _update(cfg: Config, updates, state: PDTState, params=None, *, value=None, **extra_args):
    del extra_args
    if params is None:
        raise ValueError(NO_PARAMS_MSG)
    validation.same_tree(updates, params)
    validation.state_fits(state.window.last, params)
    value = validation.scalar_loss(value)
    if value is None and not isinstance(cfg.policy, rb.IgnoreRises):
        raise ValueError(cfg.policy.needs_value)
    if not cfg.policy.restores:
        return _training_step(cfg, updates, state, params, value)
    # Loops of 0 or 1 trips, not lax.cond: the window passes through in place.
    restoring = state.rollback.restoring
    carry = maybe_apply(restoring, lambda c: _restore_step(*c) + (c[2],),
                        (updates, state, params))
    return maybe_apply(~restoring,
                       lambda c: _training_step(cfg, c[0], c[1], c[2], value) + (c[2],),
                       carry)[:2]


def transformation(cfg: Config) -> optax.GradientTransformationExtraArgs:
    """The engine as an Optax transformation."""
    return optax.GradientTransformationExtraArgs(functools.partial(_init, cfg),
                                                 functools.partial(_update, cfg))
