"""PDT: Predictive Differential Training as an Optax transformation.

One "epoch" is ``snapshot_every`` optimizer steps **[choice]**. The weights are
recorded at the start of every epoch into a window of increments (see
:mod:`koopax.snapshots`). On the step that completes a prediction epoch, with
``w_ref`` the newest snapshot (this epoch's start), ``w_sgd = params + u`` the
weights the base update ``u`` of this step leads to, and ``d`` the DMD
prediction of the move ``tau`` snapshots ahead of ``w_ref``
(:mod:`koopax.prediction`, Gram closed form ``d = X c``):

    g = w_sgd - w_ref                                  (one epoch of the optimizer)
    direction_j: sign(d_j) == sign(g_j)                (dynamic consistency)
    quantity_j:  lo |g_j| <= |d_j| <= hi |g_j|,  lo = 1, hi = tau + 1
    mask = direction & quantity   (criteria='both'; or one of them, or none)
    u' = where(mask, w_ref + d - params, u)

so that ``optax.apply_updates(params, u')`` lands on ``where(mask, w_ref + d,
w_sgd)`` (PDT paper Eqs. 8-9 of the 2025 version / 6-7 of 2026, in the form
the authors' code runs: inclusive lower bound, upper factor ``tau + 1``, sign
of the final displacement). The next epoch's snapshot is the assembled
weights, so the DMD keeps fitting the PDT-modified trajectory, as the authors
do. The base optimizer's state (momentum, Adam moments, count) is left as is,
as in the authors' code.

Rollback scheduler **[choice]** (opt-in through the loss: pass it as the
keyword argument ``value``, as ``nnx.Optimizer.update(model, grads,
value=loss)`` does). At a jump the state keeps ``w_sgd`` and the mean of
``value`` over the epoch that ends with the jump (``L_pre``). At the end of
the next epoch (``snapshot_every`` more steps) its mean ``L_post`` is
compared: if ``L_post - L_pre > tolerance |L_pre|`` the weights are restored
to ``w_sgd`` bit for bit (the epoch after the jump is discarded), the newest
snapshot (the jumped weights) is popped from the window so that the DMD never
sees the rejected move, and the interval doubles (up to ``max_interval``);
after a successful jump it shrinks by one epoch (down to ``min_interval``).
Without ``value`` (``None``) nothing is ever rolled back.

Bit-exact restoration. ``apply_updates`` computes ``fl(p + u)`` in the
parameter dtype, and no single ``u`` reaches every ``s`` from every ``p``
(``p = 1, s = 1e-8`` in float32: ``fl(1 + u)`` is 0 or ``6e-8``). koopax
restores in at most two steps: the decision step returns ``u = fl(s - p)``
where ``fl(p + fl(s - p))`` is exactly ``s`` (checked bitwise, the same
arithmetic ``apply_updates`` does) and ``u = -p`` elsewhere (``p + (-p)`` is
exactly ``+0``); if any weight took the second path, the next step returns
``u = s - p'`` with ``p'`` in ``{s, +0}``, which is exact (``s - s = 0``,
``0 + s = s``). During that extra step the base update is discarded and the
epoch clock stands still. Exactness needs the updates to have at least the
parameters' precision and ``tx`` to be last in the chain; ``-0.0`` comes back
as ``+0.0``.

Also available: the authors' monotone scheduler (``authors_schedule=True``,
their distributed trainers): after every epoch, if the epoch-mean loss rose
over the previous one, shorten the horizon (not below 3) and/or lengthen the
interval, more when it also rose over the one before; nothing is ever undone.

References:
  Wang, Tang, Harris, Qi, Wilson, Mezic, *Predictive Differential Training
  Guided by Training Dynamics*, ICLR 2026 (OpenReview zSTgrLkpRi; ICLR 2025
  submission eVsSjNRuAp); authors' code github.com/aicip/PDT.
  Schmid, *Dynamic mode decomposition of numerical and experimental data*,
  JFM 2010.
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from koopax import linalg, prediction, snapshots, tree_math

NO_PARAMS_MSG = (
    "koopax.pdt needs the current parameters: call "
    "`tx.update(updates, state, params)` (nnx.Optimizer does this)."
)

CRITERIA = ("both", "quantity", "direction", "none")


class PDTState(NamedTuple):
    """State of :func:`pdt` (and of :func:`koopax.dmd_prediction`).

    Attributes:
      count: int32, update calls so far (restore steps included).
      phase: int32, step within the current epoch (``0`` records a snapshot).
      epoch: int32, epochs completed.
      windows: tuple of increment windows, one per DMD group (the whole
        parameter tree, or one per leaf for per-layer DMD).
      snapshot_fresh: bool, this epoch's start snapshot was recorded.
      epochs_since_jump: int32, epochs completed since the last jump.
      interval: int32, current prediction interval (epochs).
      horizon: int32, current horizon ``tau`` (changes only with
        ``authors_schedule``).
      loss_sum, loss_count: running sum / count of ``value`` this epoch (a
        non-finite value counts as +inf, so the epoch mean is +inf: a rise).
      pre_jump_loss: float32 mean ``value`` of the epoch that ended in the
        last jump.
      loss_history: ``(2,)`` float32 epoch-mean losses ``L_{t-2}, L_{t-1}``.
      num_losses: int32 epoch means recorded in ``loss_history``.
      saved: the weights ``w_sgd`` of the last jump (parameter dtypes), or
        ``None`` when nothing can be rolled back.
      pending: bool, the last jump still awaits its verdict.
      restoring: bool, the next step completes a rollback.
      snapshots_at_jump: int32, snapshots recorded when the jump happened.
      stopped: bool, predictions switched off for good (``mode='tano'``).
      accepted_ratio: float32 fraction of weights that took the prediction at
        the last jump.
      num_jumps, num_rollbacks: int32 counters.
      num_nonfinite: int32 events where a non-finite snapshot, prediction or
        ``w_sgd`` was rejected (the base update was used instead).
      eigenvalues: ``(groups, h - 2)`` complex64 eigenvalues of the increment
        DMD at the last prediction, by decreasing modulus, 0-padded.
      rank: ``(groups,)`` int32 DMD rank at the last prediction.
    """

    count: jax.Array
    phase: jax.Array
    epoch: jax.Array
    windows: tuple
    snapshot_fresh: jax.Array
    epochs_since_jump: jax.Array
    interval: jax.Array
    horizon: jax.Array
    loss_sum: jax.Array
    loss_count: jax.Array
    pre_jump_loss: jax.Array
    loss_history: jax.Array
    num_losses: jax.Array
    saved: Any
    pending: jax.Array
    restoring: jax.Array
    snapshots_at_jump: jax.Array
    stopped: jax.Array
    accepted_ratio: jax.Array
    num_jumps: jax.Array
    num_rollbacks: jax.Array
    num_nonfinite: jax.Array
    eigenvalues: jax.Array
    rank: jax.Array


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _is_int(x):
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


class _Pair:
    """Two values returned from one ``tree.map`` leaf function (itself a leaf)."""

    def __init__(self, first, second):
        self.first, self.second = first, second


def _unzip(tree):
    is_pair = lambda x: isinstance(x, _Pair)
    return (jax.tree.map(lambda t: t.first, tree, is_leaf=is_pair),
            jax.tree.map(lambda t: t.second, tree, is_leaf=is_pair))


def _same_bits(a, b):
    """Elementwise bitwise equality of two arrays of the same float dtype."""
    uint = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}[a.dtype.itemsize]
    return jax.lax.bitcast_convert_type(a, uint) == jax.lax.bitcast_convert_type(b, uint)


def restore_updates(params, saved, updates):
    """Updates that move ``params`` to ``saved`` exactly, in one or two steps.

    Returns ``(updates, done)``: ``done`` is True when
    ``optax.apply_updates(params, updates)`` equals ``saved`` bit for bit;
    otherwise the mismatching weights land on ``+0`` and a second call from
    there is exact (module docstring).
    """
    def leaf(p, s, u):
        ct = jnp.result_type(p, u)
        step = (s.astype(ct) - p.astype(ct)).astype(u.dtype)
        land = jnp.asarray(p + step).astype(p.dtype)      # what apply_updates does
        ok = _same_bits(land, s)
        return _Pair(jnp.where(ok, step, (-p).astype(u.dtype)), jnp.all(ok))

    new, oks = _unzip(jax.tree.map(leaf, params, saved, updates))
    oks = jax.tree.leaves(oks)
    done = jnp.stack(oks).all() if oks else jnp.array(True)
    return new, done


def _pop(window: snapshots.IncrementWindow) -> snapshots.IncrementWindow:
    """Removes the newest snapshot from a window (inverse of ``push``)."""
    newest = window.increments[-1]

    def back(last, d):
        dt = tree_math.accumulation_dtype(jnp.result_type(last, d))
        return (last.astype(dt) - d.astype(dt)).astype(last.dtype)

    last = jax.tree.map(back, window.last, newest)
    zeros = jax.tree.map(jnp.zeros_like, newest)
    m = len(window.increments)
    gram = jnp.zeros((m, m), window.gram.dtype).at[1:, 1:].set(window.gram[:-1, :-1])
    # A full window lost its oldest increment at the push: m - 1 remain.
    count = jnp.maximum(jnp.minimum(window.num_snapshots - 1, m), 0)
    return snapshots.IncrementWindow(last, (zeros,) + window.increments[:-1], gram, count)


def _authors_rule(loss, history, num_losses, horizon, interval, max_interval):
    """The authors' monotone scheduler (ALGORITHM-NOTES §2.5) on one epoch loss."""
    have = num_losses >= 2
    up1 = have & (loss > history[1])
    strong = up1 & (loss > history[0])
    mild = up1 & ~strong
    tau, t_i = horizon, interval
    tau_s = jnp.where(tau > 4, tau - 2, jnp.where(tau == 4, 3, tau))
    t_s = jnp.where(tau > 4, t_i, jnp.where(tau == 4, t_i + 1, t_i + 2))
    tau_m = jnp.where(tau > 3, tau - 1, tau)
    t_m = jnp.where(tau > 3, t_i, t_i + 1)
    tau = jnp.where(strong, tau_s, jnp.where(mild, tau_m, tau))
    t_i = jnp.where(strong, t_s, jnp.where(mild, t_m, t_i))
    return tau.astype(jnp.int32), jnp.minimum(t_i, max_interval).astype(jnp.int32)


def _validate(horizon, num_snapshots, snapshot_every, start, interval, rank, criteria,
              quantity_bounds, rollback, tolerance, min_interval, max_interval,
              authors_schedule, rcond):
    if not _is_int(horizon) or horizon < 1:
        raise ValueError(f"horizon must be an int >= 1; got {horizon!r}.")
    if not _is_int(num_snapshots) or num_snapshots < 3:
        raise ValueError(f"num_snapshots must be an int >= 3; got {num_snapshots!r}.")
    if not _is_int(snapshot_every) or snapshot_every < 1:
        raise ValueError(f"snapshot_every must be an int >= 1; got {snapshot_every!r}.")
    if not _is_int(start) or start < 0:
        raise ValueError(f"start must be an int >= 0; got {start!r}.")
    if not _is_int(interval) or interval < 1:
        raise ValueError(f"interval must be an int >= 1; got {interval!r}.")
    linalg.validate_rank(rank)
    if _is_int(rank) and rank > num_snapshots - 2:
        raise ValueError(
            f"rank must be <= num_snapshots - 2 = {num_snapshots - 2} (the number of "
            f"increment pairs); got {rank}.")
    if criteria not in CRITERIA:
        raise ValueError(f"criteria must be one of {CRITERIA}; got {criteria!r}.")
    if not isinstance(quantity_bounds, (tuple, list)) or len(quantity_bounds) != 2:
        raise ValueError(
            f"quantity_bounds must be a pair (lower, upper or None); got {quantity_bounds!r}.")
    lower, upper = quantity_bounds
    if not isinstance(lower, numbers.Real) or not 0.0 <= lower < float("inf"):
        raise ValueError(f"quantity_bounds: lower must be a finite number >= 0; got {lower!r}.")
    if upper is not None and (not isinstance(upper, numbers.Real)
                              or not lower <= upper < float("inf")):
        raise ValueError(
            f"quantity_bounds: upper must be None or a finite number >= lower; got {upper!r}.")
    if not isinstance(rollback, bool):
        raise ValueError(f"rollback must be a bool; got {rollback!r}.")
    if not isinstance(tolerance, numbers.Real) or not 0.0 <= tolerance < float("inf"):
        raise ValueError(f"tolerance must be a finite number >= 0; got {tolerance!r}.")
    if not _is_int(min_interval) or not 1 <= min_interval <= interval:
        raise ValueError(
            f"min_interval must be an int in [1, interval={interval}]; got {min_interval!r}.")
    if not _is_int(max_interval) or max_interval < interval:
        raise ValueError(
            f"max_interval must be an int >= interval={interval}; got {max_interval!r}.")
    if not isinstance(authors_schedule, bool):
        raise ValueError(f"authors_schedule must be a bool; got {authors_schedule!r}.")
    if rcond is not None and (not isinstance(rcond, numbers.Real) or not 0.0 <= rcond < 1.0):
        raise ValueError(f"rcond must lie in [0, 1); got {rcond!r}.")


# ---------------------------------------------------------------------------
# The engine shared by pdt and the unmasked baselines
# ---------------------------------------------------------------------------


def _predictive(*, horizon, num_snapshots, snapshot_every, start, interval, rank, criteria,
                quantity_bounds, on_rise, tolerance, min_interval, max_interval,
                authors_schedule, per_leaf, rcond):
    """Builds the transformation; ``on_rise`` is 'rollback', 'stop' or 'none'."""
    m = num_snapshots - 1          # increments in the window
    k = m - 1                      # DMD pairs
    lower, upper = quantity_bounds
    last_phase = snapshot_every - 1
    keep_saved = on_rise == "rollback"

    def split(tree):
        return tuple(jax.tree.leaves(tree)) if per_leaf else (tree,)

    def merge(groups, like):
        if per_leaf:
            return jax.tree.unflatten(jax.tree.structure(like), list(groups))
        return groups[0]

    def init_fn(params):
        groups = split(params)
        i32 = lambda v: jnp.asarray(v, jnp.int32)
        f32 = lambda v: jnp.asarray(v, jnp.float32)
        return PDTState(
            count=i32(0), phase=i32(0), epoch=i32(0),
            windows=tuple(snapshots.init_window(g, m) for g in groups),
            snapshot_fresh=jnp.asarray(False),
            epochs_since_jump=i32(max_interval), interval=i32(interval), horizon=i32(horizon),
            loss_sum=f32(0.0), loss_count=i32(0), pre_jump_loss=f32(jnp.nan),
            loss_history=jnp.zeros((2,), jnp.float32), num_losses=i32(0),
            saved=(jax.tree.map(jnp.zeros_like, params) if keep_saved else None),
            pending=jnp.asarray(False), restoring=jnp.asarray(False),
            snapshots_at_jump=i32(0), stopped=jnp.asarray(False),
            accepted_ratio=f32(0.0), num_jumps=i32(0), num_rollbacks=i32(0),
            num_nonfinite=i32(0),
            eigenvalues=jnp.zeros((len(groups), k), jnp.complex64),
            rank=jnp.zeros((len(groups),), jnp.int32),
        )

    def criteria_mask(d, g, tau):
        if criteria == "none":
            return jnp.ones(d.shape, bool)
        direction = jnp.sign(d) == jnp.sign(g)
        hi = (tau + 1).astype(jnp.float32) if upper is None else upper
        quantity = (lower * jnp.abs(g) <= jnp.abs(d)) & (jnp.abs(d) <= hi * jnp.abs(g))
        if criteria == "direction":
            return direction
        if criteria == "quantity":
            return quantity
        return direction & quantity

    def jump(updates, windows, params, w_sgd, tau):
        """Returns (updates, jumped, nonfinite, ratio, eigenvalues, ranks)."""
        infos, masks, targets = [], [], []
        for window, s_group in zip(windows, split(w_sgd)):
            disp, info = prediction.predicted_displacement(
                window, horizon, rank=rank, rcond=rcond, active_horizon=tau)
            infos.append(info)

            def per_leaf_target(ref, dd, s):
                acc = tree_math.accumulation_dtype(ref.dtype)
                ref = ref.astype(acc)
                g = s.astype(acc) - ref
                return _Pair(criteria_mask(dd, g, tau), ref + dd)

            mask_g, target_g = _unzip(jax.tree.map(per_leaf_target, window.last, disp, s_group))
            masks.append(mask_g)
            targets.append(target_g)
        mask = merge(masks, params)
        target = merge(targets, params)
        finite = jnp.stack([i.finite for i in infos]).all() & tree_math.tree_all_finite(target)

        def moved(u, p, t, msk):
            acc = tree_math.accumulation_dtype(p.dtype)
            return jnp.where(msk, (t - p.astype(acc)).astype(u.dtype), u)

        new = jax.tree.map(moved, updates, params, target, mask)
        new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, updates)
        accepted = sum(jnp.sum(x) for x in jax.tree.leaves(mask))
        ratio = accepted.astype(jnp.float32) / max(tree_math.tree_size(params), 1)
        values = jnp.stack([i.eigenvalues for i in infos])
        ranks = jnp.stack([i.rank for i in infos])
        # A prediction that no weight accepts is not a jump (nothing to judge).
        return new, finite & (accepted > 0), ~finite, ratio, values, ranks

    def no_jump(updates, windows, params, w_sgd, tau):
        return (updates, jnp.asarray(False), jnp.asarray(False), jnp.asarray(0.0, jnp.float32),
                jnp.zeros((len(windows), k), jnp.complex64),
                jnp.zeros((len(windows),), jnp.int32))

    def restore_step(updates, state, params, value):
        new, _ = restore_updates(params, state.saved, updates)
        return new, state._replace(restoring=jnp.asarray(False),
                                   count=optax.safe_increment(state.count))

    def normal_step(updates, state, params, value):
        use_value = value is not None
        # 1. Start of an epoch: record the snapshot (finite weights only).
        phase0 = state.phase == 0
        params_ok = tree_math.tree_all_finite(params)
        record = phase0 & params_ok & ~state.stopped
        windows = jax.lax.cond(
            record,
            lambda ws, p: tuple(snapshots.push(w, g) for w, g in zip(ws, split(p))),
            lambda ws, p: ws, state.windows, params)
        fresh = jnp.where(phase0, record, state.snapshot_fresh)
        nonfinite = state.num_nonfinite + (phase0 & ~params_ok).astype(jnp.int32)

        # 2. Loss bookkeeping.
        loss_sum, loss_count = state.loss_sum, state.loss_count
        if use_value:
            v = jnp.asarray(value, jnp.float32)
            # A NaN/inf loss makes the epoch mean +inf: a jump followed by a
            # non-finite loss is a rise (rolled back / stops Tano), never ignored.
            loss_sum = loss_sum + jnp.where(jnp.isfinite(v), v, jnp.inf)
            loss_count = loss_count + 1
        state = state._replace(windows=windows, snapshot_fresh=fresh, num_nonfinite=nonfinite,
                               loss_sum=loss_sum, loss_count=loss_count)
        w_sgd = optax.apply_updates(params, updates)

        def epoch_end(updates, state):
            has_loss = state.loss_count > 0
            loss = state.loss_sum / jnp.maximum(state.loss_count, 1).astype(jnp.float32)
            # Verdict on the previous jump.
            judged = state.pending & has_loss & jnp.isfinite(state.pre_jump_loss)
            rose = loss - state.pre_jump_loss > tolerance * jnp.abs(state.pre_jump_loss)
            failed, succeeded = judged & rose, judged & ~rose
            do_rollback = failed if on_rise == "rollback" else jnp.asarray(False)
            stopped = state.stopped | (failed if on_rise == "stop" else False)
            interval_now = state.interval
            if on_rise == "rollback":
                interval_now = jnp.where(do_rollback,
                                         jnp.minimum(2 * interval_now, max_interval),
                                         jnp.where(succeeded,
                                                   jnp.maximum(interval_now - 1, min_interval),
                                                   interval_now))
            tau = state.horizon
            history, num_losses = state.loss_history, state.num_losses
            if authors_schedule:
                tau_a, int_a = _authors_rule(loss, history, num_losses, tau, interval_now,
                                             max_interval)
                tau = jnp.where(has_loss, tau_a, tau)
                interval_now = jnp.where(has_loss, int_a, interval_now)
                history = jnp.where(has_loss, jnp.stack([history[1], loss]), history)
                num_losses = num_losses + has_loss.astype(jnp.int32)
            since = state.epochs_since_jump + 1
            full = jnp.stack([snapshots.is_full(w) for w in state.windows]).all()
            sgd_ok = tree_math.tree_all_finite(w_sgd)
            eligible = (~do_rollback & ~stopped & (state.epoch >= start) & full
                        & state.snapshot_fresh & (since >= interval_now))
            nonfinite = state.num_nonfinite + (eligible & ~sgd_ok).astype(jnp.int32)
            predicted = eligible & sgd_ok
            new, jumped, bad, ratio, values, ranks = jax.lax.cond(
                predicted, jump, no_jump, updates, state.windows, params, w_sgd, tau)

            # Rollback: restore w_sgd of the last jump, forget the jumped snapshot.
            saved, windows, restoring = state.saved, state.windows, jnp.asarray(False)
            if keep_saved:
                def roll(new, windows):
                    upd, done = restore_updates(params, state.saved, new)
                    popped = tuple(_pop(w) for w in windows)
                    can_pop = windows[0].num_snapshots > state.snapshots_at_jump
                    windows = jax.tree.map(lambda a, b: jnp.where(can_pop, a, b),
                                           popped, windows)
                    return upd, windows, ~done

                new, windows, restoring = jax.lax.cond(
                    do_rollback, roll, lambda n, w: (n, w, jnp.asarray(False)), new, windows)
                saved = jax.tree.map(lambda s, w: jnp.where(jumped, w, s), state.saved, w_sgd)
            pending = jumped & has_loss if (use_value and on_rise != "none") else \
                jnp.asarray(False)
            return new, state._replace(
                phase=jnp.zeros((), jnp.int32),
                epoch=state.epoch + 1,
                windows=windows,
                epochs_since_jump=jnp.where(jumped | do_rollback, 0, since).astype(jnp.int32),
                interval=interval_now.astype(jnp.int32),
                horizon=tau.astype(jnp.int32),
                loss_sum=jnp.zeros((), jnp.float32),
                loss_count=jnp.zeros((), jnp.int32),
                pre_jump_loss=jnp.where(jumped, loss, state.pre_jump_loss),
                loss_history=history,
                num_losses=num_losses,
                saved=saved,
                pending=pending,
                restoring=restoring,
                snapshots_at_jump=jnp.where(jumped, state.windows[0].num_snapshots,
                                            state.snapshots_at_jump),
                stopped=stopped,
                accepted_ratio=jnp.where(predicted & ~bad, ratio, state.accepted_ratio),
                num_jumps=state.num_jumps + jumped.astype(jnp.int32),
                num_rollbacks=state.num_rollbacks + do_rollback.astype(jnp.int32),
                num_nonfinite=nonfinite + bad.astype(jnp.int32),
                eigenvalues=jnp.where(predicted, values, state.eigenvalues),
                rank=jnp.where(predicted, ranks, state.rank),
            )

        def mid_epoch(updates, state):
            return updates, state._replace(phase=state.phase + 1)

        updates, state = jax.lax.cond(state.phase == last_phase, epoch_end, mid_epoch,
                                      updates, state)
        return updates, state._replace(count=optax.safe_increment(state.count))

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(NO_PARAMS_MSG)
        if not keep_saved:
            return normal_step(updates, state, params, value)
        return jax.lax.cond(
            state.restoring,
            lambda u, s, p: restore_step(u, s, p, value),
            lambda u, s, p: normal_step(u, s, p, value),
            updates, state, params)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def pdt(
    horizon: int = 5,
    *,
    num_snapshots: int = 5,
    snapshot_every: int,
    start: int = 5,
    interval: int = 1,
    rank: int | float | None = None,
    criteria: str = "both",
    quantity_bounds: tuple = (1.0, None),
    rollback: bool = True,
    tolerance: float = 0.0,
    min_interval: int | None = None,
    max_interval: int | None = None,
    authors_schedule: bool = False,
    rcond: float | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Predictive Differential Training; place it last in the chain.

    ``optax.chain(optax.adam(1e-3), koopax.pdt(snapshot_every=steps_per_epoch))``

    Args:
      horizon: ``tau``, snapshots (epochs) to predict ahead of the reference.
      num_snapshots: ``h``, snapshots in the DMD window (>= 3): ``h - 1``
        increments, ``h - 2`` DMD pairs (increment formulation; the paper's
        ``h = 5`` raw snapshots give 4 pairs, here 3).
      snapshot_every: steps per "epoch": a snapshot is taken at the start of
        every epoch and a jump happens on the step that completes one.
      start: first epoch (0-based) that may end in a jump (paper ``T_0 = 5``);
        the window must also be full, i.e. epoch ``>= h - 1``.
      interval: epochs between jumps (``T_i``).
      rank: DMD rank policy: ``None`` Gavish–Donoho, int (<= ``h - 2``), or
        a float in (0, 1) (energy).
      criteria: ``'both'`` (paper), ``'quantity'``, ``'direction'`` (the
        ablations) or ``'none'`` (every prediction accepted: unmasked DMD).
      quantity_bounds: ``(lo, hi)`` of the quantity criterion
        ``lo |g| <= |d| <= hi |g|``; ``hi=None`` means ``tau + 1``.
      rollback: restore the pre-jump weights when the loss (``value``) of the
        epoch after a jump exceeds that of the epoch before by more than
        ``tolerance`` (relative), and adapt the interval (module docstring).
        Without ``value`` nothing is rolled back. Costs one copy of the
        parameters in the state.
      tolerance: relative loss increase tolerated after a jump.
      min_interval, max_interval: bounds of the adaptive interval (defaults
        ``interval`` and ``max(8, interval)``).
      authors_schedule: also apply the authors' monotone horizon/interval
        rule to the epoch-mean ``value``.
      rcond: Gram noise floor of the DMD (default 1e-3 in float32).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update`` needs
      ``params`` and takes the loss as keyword ``value``. The base
      optimizer's state is never modified. Non-finite predictions (or a
      non-finite ``w_sgd``) never reach the weights: the base update passes
      and ``num_nonfinite`` counts the event.
    """
    min_interval = interval if min_interval is None else min_interval
    max_interval = max(8, interval) if max_interval is None else max_interval
    _validate(horizon, num_snapshots, snapshot_every, start, interval, rank, criteria,
              quantity_bounds, rollback, tolerance, min_interval, max_interval,
              authors_schedule, rcond)
    return _predictive(
        horizon=horizon, num_snapshots=num_snapshots, snapshot_every=snapshot_every,
        start=start, interval=interval, rank=rank, criteria=criteria,
        quantity_bounds=tuple(quantity_bounds), on_rise="rollback" if rollback else "none",
        tolerance=float(tolerance), min_interval=min_interval, max_interval=max_interval,
        authors_schedule=authors_schedule, per_leaf=False, rcond=rcond)
