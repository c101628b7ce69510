"""KGA: Koopman-based Gradient Acceleration as an Optax transformation.

Every ``snapshot_every`` steps the weights are recorded in a ring window of
increments (:mod:`koopax.snapshots`) and KGA's operator is refreshed from its
Gram matrix (:mod:`koopax.acceleration`). A base displacement ``b`` is then
projected on the DMD basis ``U`` and its components along the *stable* Koopman
modes (``|lambda| < 1 - epsilon``: slowly decaying transients that slow
convergence down) are amplified::

    b' = b + s * U (A~ P_s) U^T b,     s = min(alpha, (max_gain - 1) / |A~ P_s|_2)

(KGA paper, Eqs. 10-13): along a stable eigenvector ``q_k`` the displacement
becomes ``(1 + s lambda_k)`` times the original. Two deliberate departures
from a literal reading of the paper: the component of ``b`` outside
``span(U)`` passes unchanged (Eq. 13 would drop it), and the gain is bounded,
globally by ``s`` and per leaf (a spike in one leaf never leaks into another;
:func:`koopax.acceleration.bounded_correction`).

*Which* displacement (``apply_every``): between two refreshes the operator is
fixed and the correction linear, so correcting the sum of ``k`` consecutive
base updates once gives the same total displacement, to first order in the
change of trajectory, as correcting each of them:

* ``apply_every=1``: every update (the paper); two passes over the window per step;
* ``apply_every=snapshot_every``: the newest increment, which the window
  already holds: the correction is added once per snapshot, and in the
  window's coordinates (``X^T b = X^T d - G a_prev``, the previous
  correction ``X a_prev`` being part of ``d``) it costs one pass over the
  window at the snapshot. The correction is kept in one parameter-sized
  buffer (``state.pending``) and added by a select in the update's own fused
  pass, so a step between snapshots reads one buffer more than the base
  step (carrying the update through the snapshot gate instead would
  materialise it at every step);
* any other ``k``: the base updates are summed in one parameter-sized buffer.

A loss-aware safety valve (:mod:`koopax.loss_tracking`): with
``tx.update(..., value=loss)`` each snapshot period's mean loss is compared
with the previous one; a rise beyond twice the noise halves ``alpha`` (counted
in ``valve.num_backoffs``), calm periods restore it by 1.25x up to ``alpha``.
Without ``value`` nothing changes.

Defaults (``benchmarks/kga_defaults.py``, SGD on top of the tuned learning
rate, 5 seeds): ``alpha = 2``, ``h = 6`` and ``apply_every = snapshot_every``
reach the tuned base's best training loss in 0.63x / 0.93x / 0.83x its epochs
on digits MLP / MNIST-1D MLP / MNIST-1D 1D CNN; correcting every update
instead gives the same epochs (0.67x / 0.97x / 0.90x at ``h = 4``) at two
passes over the window per step. The rank default ``'svht'`` (the one or two
dominant slow modes): KGA amplifies every stable mode it keeps, and the
noisier modes of the whole window (``rank=None``) cost more than they bring
(12 MLP/CNN runs: 0.70x vs 0.75x epochs). A sustained ``max_gain``-fold
amplification (``alpha`` far above ``(max_gain - 1) / |lambda|``) is an
unstable iteration that the bounds alone do not prevent: pass ``value``.

References:
  Anonymous, *Dynamic Training Guided by Training Dynamics* (KGA, KWM),
  OpenReview 7AB077M4TY, 2024, Algorithm 1 and Eqs. 7-13. Tu et al., `On
  dynamic mode decomposition: theory and applications
  <https://arxiv.org/abs/1312.0041>`_, 2014.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from koopax import acceleration, loss_tracking, snapshots, tree_math
from koopax.control import maybe_apply, maybe_record


class KGAState(NamedTuple):
    """State of :func:`kga`.

    Attributes:
      count: int32, steps taken.
      window: the increment ring (``h - 1`` slots) and its per-leaf Gram matrices.
      coefficients: ``(h-1, h-1)`` float32 ``K`` in slot order: the
        correction of ``b`` is ``s Z^T K Z b`` over the slots ``Z`` (the
        newest slot's row and column are zero).
      applied: ``(num_leaves, h-1)`` float32 per-leaf coefficients of the
        last correction in slot order (``apply_every == snapshot_every``;
        zeros otherwise).
      pending: parameter-shaped; ``apply_every == snapshot_every``: the
        correction of the newest increment (in ``snapshot_dtype``), added at
        its snapshot step (zero when none is due); ``1 < apply_every !=
        snapshot_every``: the base updates summed since the last correction;
        ``()`` when ``apply_every == 1``.
      valve: :class:`koopax.loss_tracking.Valve` (``valve.scale`` multiplies
        ``alpha``; ``valve.num_backoffs``).
      operator_norm: float32 ``|A~ P_s|_2`` (sets the gain bound).
      eigenvalues: ``(h-2,)`` complex64 latest DMD eigenvalues of the
        increment dynamics, by decreasing modulus, 0-padded beyond ``rank``.
      rank: int32 DMD rank used at the last refresh.
      num_stable: int32 number of stable eigenvalues at the last refresh.
      num_refreshes: int32 successful DMD refreshes.
      num_nonfinite: int32 events where a non-finite snapshot, DMD or
        correction was rejected (the base update was used instead).
      num_clipped: int32 corrections the per-leaf bound scaled down.
    """

    count: jax.Array
    window: snapshots.RingWindow
    coefficients: jax.Array
    applied: jax.Array
    pending: Any
    valve: loss_tracking.Valve
    operator_norm: jax.Array
    eigenvalues: jax.Array
    rank: jax.Array
    num_stable: jax.Array
    num_refreshes: jax.Array
    num_nonfinite: jax.Array
    num_clipped: jax.Array


def _columns(state):
    return state.window.slots, state.window.leaf_grams


@dataclasses.dataclass(frozen=True)
class KGAConfig:
    """The static settings of :func:`kga` (validated there)."""

    alpha: Any
    num_snapshots: int
    snapshot_every: int
    apply_every: int
    epsilon: Any
    rank: Any
    snapshot_dtype: Any
    max_gain: Any
    rcond: Any

    @property
    def slots(self) -> int:
        return self.num_snapshots - 1

    @property
    def strategy(self) -> str:
        """``each`` (every update), ``increment`` (the newest increment), ``sum`` (a buffer)."""
        if self.apply_every == 1:
            return "each"
        return "increment" if self.apply_every == self.snapshot_every else "sum"


def _init(cfg: KGAConfig, params) -> KGAState:
    m = cfg.slots
    return KGAState(
        count=jnp.zeros((), jnp.int32),
        window=snapshots.init_ring(params, m, cfg.snapshot_dtype),
        applied=jnp.zeros((len(jax.tree.leaves(params)), m), jnp.float32),
        pending=_pending(cfg, params),
        valve=loss_tracking.init_valve(),
        **acceleration.operator_fields(m, m - 1))


def _pending(cfg: KGAConfig, params):
    """The increment strategy's stored correction (in ``snapshot_dtype``) or the sum buffer."""
    if cfg.strategy == "each":
        return ()
    dtype = cfg.snapshot_dtype if cfg.strategy == "increment" else None
    return jax.tree.map(lambda p: jnp.zeros_like(p, dtype=dtype), params)


def _refresh(cfg: KGAConfig, state: KGAState, window, ok=True) -> KGAState:
    """Installs ``window`` and the operator of its Gram matrix (slot order), if ``ok``."""
    op = acceleration.acceleration_operator(
        snapshots.ring_gram(window), num_features=tree_math.tree_size(window.last),
        epsilon=cfg.epsilon, rank=cfg.rank, rcond=cfg.rcond)
    coefs = acceleration.slot_coefficients(op.coefficients, snapshots.ring_order(window))
    return acceleration.install_operator(state._replace(window=window), op,
                                         snapshots.ring_is_full(window), coefs, recorded=ok)


def _record(cfg: KGAConfig, carry, params):
    """Push (skipped, as selects, when ``params`` is not finite) and refresh."""
    state, updates = carry
    ok = tree_math.tree_all_finite(params)
    window = snapshots.ring_push_rows(state.window, params, ok)[0]
    state = _refresh(cfg, state, window, ok)
    return _count_skip(state, ok), updates


def _count_skip(state, ok):
    return state._replace(num_nonfinite=state.num_nonfinite + (~ok).astype(jnp.int32))


def _record_and_correct(cfg: KGAConfig, state: KGAState, params) -> KGAState:
    """``increment``: push, refresh, and keep the newest increment's correction.

    The correction ``X a`` is stored in ``state.pending`` (zero when none is
    due) and added to the update outside the gate, so the gate carries the
    state only. No nested gate (a nested loop would copy the window): the
    correction's pass runs at every snapshot and is selected elementwise.
    """
    ok = tree_math.tree_all_finite(params)
    old = state.window
    window, rows = snapshots.ring_push_rows(old, params, ok)
    state = _count_skip(_refresh(cfg, state, window, ok), ok)
    slot = snapshots.newest_slot(window)
    products, cross = acceleration.residual_products(rows, old.leaf_grams, state.applied)
    base_sq = window.leaf_grams[:, slot, slot] + cross
    scale, active = acceleration.usable_scale(state, cfg.alpha, cfg.max_gain,
                                              snapshots.ring_is_full(window) & ok)
    corr = acceleration.bounded_correction(products, base_sq, window.leaf_grams,
                                           state.coefficients, scale, cfg.max_gain)
    corr = corr._replace(coefficients=jnp.where(active, corr.coefficients, 0.0),
                         rejected=active & corr.rejected, clipped=active & corr.clipped)
    delta = tree_math.stacked_weighted_sum(window.slots, corr.coefficients, like=state.pending)
    delta = jax.tree.map(lambda d: jnp.where(active, d, jnp.zeros_like(d)), delta)
    return acceleration.count_correction(
        state._replace(applied=corr.coefficients, pending=delta), corr)


def _update(cfg: KGAConfig, updates, state, params=None, value=None, **extra_args):
    del extra_args
    acceleration.check_update_args(updates, params, state.window.last, value)
    take = (state.count % cfg.snapshot_every) == 0
    close = functools.partial(acceleration.close_valve, value=value)
    if cfg.strategy == "increment":
        # The gate carries the state only; one select adds the stored
        # correction, so the base update stays fused with apply_updates
        # (carrying it through the gate would materialise it every step).
        state = maybe_record(take, lambda st, p: _record_and_correct(cfg, close(st), p),
                             state, params)
        corrected = jax.tree.map(lambda u, d: jnp.where(take, u + d.astype(u.dtype), u),
                                 updates, state.pending)
    else:   # the gate carries the state only: the updates' own fusion is not broken
        state = maybe_record(take, lambda st, p: _record(cfg, (close(st), None), p)[0],
                             state, params)
        state, corrected = acceleration.correct_updates(
            state, updates, updates, _columns, snapshots.ring_is_full(state.window),
            cfg.apply_every, cfg.alpha, cfg.max_gain)
    state = acceleration.track_value(state, value)
    return corrected, state._replace(count=optax.safe_increment(state.count))


def kga(
    alpha: jax.typing.ArrayLike = 2.0,
    *,
    num_snapshots: int = 6,
    snapshot_every: int = 100,
    apply_every: int | None = None,
    epsilon: jax.typing.ArrayLike = 1e-2,
    rank: int | float | str | None = "svht",
    snapshot_dtype=None,
    max_gain: jax.typing.ArrayLike = 10.0,
    rcond: float | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Koopman-based Gradient Acceleration; place it after the base optimizer.

    ``optax.chain(optax.adam(1e-3), koopax.kga(0.5, snapshot_every=steps_per_epoch))``

    Args:
      alpha: acceleration rate (``0``: exactly the base optimizer), meant for
        about 0.5-5. ``alpha``, ``epsilon`` and ``max_gain`` may be traced
        (``optax.inject_hyperparams``); the others go in its ``static_args``.
      num_snapshots: ``h``, weight snapshots in the DMD window (>= 3): ``h - 1``
        increments, ``h - 2`` DMD pairs.
      snapshot_every: steps between snapshots: steps per epoch gives the
        paper's KGA-Epoch, 1 gives KGA-Iter. Acceleration starts once the
        window is full, after ``(h - 1) * snapshot_every`` steps.
      apply_every: ``k``, steps whose base updates one correction covers (see
        the module docstring): ``1`` every update, ``snapshot_every`` (or
        ``None``) the newest increment at each snapshot (the state holds
        ``h + 1`` parameter-sized buffers; a step between snapshots reads one).
      epsilon: half-width of the neutral band ``1 - eps <= |lambda| <= 1 + eps``.
      rank: DMD rank policy (:func:`koopax.linalg.rank_mask`): ``'svht'``
        (Gavish–Donoho: the one or two dominant slow modes; see the module
        docstring for why), ``None`` every mode above the window's noise, an
        int, or an energy fraction in (0, 1).
      snapshot_dtype: dtype of the stored increments (default the
        parameters'; ``jnp.bfloat16`` halves the memory).
      max_gain: bound on the amplification, ``|b'_l| <= max_gain |b_l|`` in
        every leaf ``l``.
      rcond: singular values below ``rcond * sigma_1`` of the increment matrix
        are noise (default 1e-3 in float32).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update`` needs
      ``params`` and reads an optional scalar ``value`` (the valve). Non-finite
      snapshots, DMDs or corrections are never used (the base update passes,
      ``num_nonfinite`` counts it).

    Examples:
      SGD on ``0.5 |w|^2`` (gradient ``w``, learning rate 0.1) moves the weights
      by ``w_{t+1} = 0.9 w_t``: one stable Koopman mode, ``lambda = 0.9``. Once
      the window of ``num_snapshots = 4`` snapshots is full (step 3), KGA
      multiplies the update along it by ``1 + alpha lambda = 1.9``:

      >>> import jax, jax.numpy as jnp, optax, koopax
      >>> tx = optax.chain(optax.sgd(0.1), koopax.kga(1.0, num_snapshots=4, snapshot_every=1))
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> state = tx.init(params)
      >>> update = jax.jit(tx.update)
      >>> for step in range(4):
      ...     updates, state = update(params, state, params)
      ...     print(step, round(float(updates["w"][1] / (-0.1 * params["w"][1])), 3))
      ...     params = optax.apply_updates(params, updates)
      0 1.0
      1 1.0
      2 1.0
      3 1.9
      >>> kga_state = state[1]
      >>> round(float(kga_state.eigenvalues[0].real), 3), int(kga_state.num_stable)
      (0.9, 1)

    References:
      Anonymous, *Dynamic Training Guided by Training Dynamics*, OpenReview
      7AB077M4TY, 2024, Algorithm 1 and Eqs. 7-13.
    """
    acceleration.validate(alpha=alpha, num_snapshots=num_snapshots,
                          snapshot_every=snapshot_every, apply_every=apply_every,
                          epsilon=epsilon, rank=rank, snapshot_dtype=snapshot_dtype,
                          max_gain=max_gain, rcond=rcond, max_rank=num_snapshots - 2)
    cfg = KGAConfig(alpha, num_snapshots, snapshot_every,
                    snapshot_every if apply_every is None else apply_every, epsilon, rank,
                    snapshot_dtype, max_gain, rcond)
    return optax.GradientTransformationExtraArgs(functools.partial(_init, cfg),
                                                 functools.partial(_update, cfg))
