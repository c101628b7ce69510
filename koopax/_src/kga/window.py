"""KGA: Koopman-based Gradient Acceleration as an Optax transformation.

Every ``snapshot_every`` steps the weights are recorded in a ring window of
increments (:class:`koopax.RingWindow`) and KGA's operator is refreshed from its
Gram matrix. A base displacement ``b`` is then
projected on the DMD basis ``U`` and its components along the *stable* Koopman
modes (``|lambda| < 1 - epsilon``: slowly decaying transients that slow
convergence down) are amplified::

    b' = b + s * U (A~ P_s) U^T b,     s = min(alpha, (max_gain - 1) / |A~ P_s|_2)

(KGA paper, Eqs. 10-13): along a stable eigenvector ``q_k`` the displacement
becomes ``(1 + s lambda_k)`` times the original. Two deliberate departures
from a literal reading of the paper: the component of ``b`` outside
``span(U)`` passes unchanged (Eq. 13 would drop it), and the gain is bounded,
globally by ``s`` and per leaf (a spike in one leaf never leaks into another;
``koopax._src.kga.operator``).

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

A loss-aware safety net (:mod:`koopax._src.kga.safety`): with
``tx.update(..., value=loss)`` each snapshot period's mean loss is compared
with the reference period's; after a rise beyond twice the noise the
correction is rolled back and the gain halved (``valve.num_backoffs``), and
calm periods restore it by 1.25x up to a ceiling below the level that failed.

The defaults (``alpha = 2``, ``h = 6``, the newest increment once per
snapshot, ``rank='svht'``: the one or two dominant slow modes) come from a
search against the tuned base (``BENCHMARKS.md``). A sustained
``max_gain``-fold amplification (``alpha`` far above ``(max_gain - 1) /
|lambda|``) is an unstable iteration that the bounds alone do not prevent:
pass ``value``.

References:
  Anonymous, *Dynamic Training Guided by Training Dynamics* (KGA, KWM),
  OpenReview 7AB077M4TY, 2024, Algorithm 1 and Eqs. 7-13. Tu et al., `On
  dynamic mode decomposition: theory and applications
  <https://arxiv.org/abs/1312.0041>`_, 2014.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from koopax._src import snapshots, tree_math, validation
from koopax._src.kga import engine, settings
from koopax._src.kga.engine import Push
from koopax._src.kga.operator import leaf_squares, slot_coefficients


@dataclasses.dataclass(frozen=True)
class WindowColumns:
    """The window of ``m`` increments as KGA's columns (a :class:`koopax.RingWindow`)."""

    window_size: int
    snapshot_dtype: Any
    strategies = ("each", "increment", "sum")
    selects = True

    @property
    def width(self) -> int:
        return self.window_size

    def init(self, params):
        return snapshots.init_ring(params, self.window_size, self.snapshot_dtype)

    def reference(self, ring):
        """The newest recorded snapshot (parameter dtypes): what the parameters are
        checked against, and what a rollback restores."""
        return ring.last

    def record(self, ring, params, ok):
        new, rows = snapshots.ring_push_rows(ring, params, ok)
        return new, Push(rows, ring.leaf_grams, snapshots.newest_slot(new), jnp.asarray(True))

    def ready(self, ring):
        return snapshots.ring_is_full(ring)

    def dmd_grams(self, ring, blocks):
        order = snapshots.ring_order(ring)
        return blocks.sum_leaves(ring.leaf_grams)[:, order][:, :, order]

    def to_columns(self, ring, coefficients):
        order = snapshots.ring_order(ring)
        return jax.vmap(slot_coefficients, in_axes=(0, None))(coefficients, order)

    def leaf_grams(self, ring):
        return ring.leaf_grams

    def project(self, ring, tree):
        return tree_math.stacked_products(ring.slots, tree), leaf_squares(tree)

    def combine(self, ring, coefficients, like):
        return tree_math.stacked_weighted_sum(ring.slots, coefficients, like)

    def num_features(self, params, blocks):
        return blocks.sizes

    def decide(self, ring, params):
        return None


def kga(
    alpha: jax.typing.ArrayLike = 2.0,
    *,
    num_snapshots: int = 6,
    snapshot_every: int | str = 100,
    apply_every: int | None = None,
    epsilon: jax.typing.ArrayLike = 1e-2,
    rank: int | float | str | None = "svht",
    blocks=None,
    learning_rate=None,
    total_steps: int | None = None,
    snapshot_dtype=None,
    max_gain: jax.typing.ArrayLike = 10.0,
    rcond: float | None = None,
    rollback: bool = True,
    damp_oscillations: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """Koopman-based Gradient Acceleration; place it after the base optimizer.

    ``optax.chain(optax.adam(1e-3), koopax.kga(0.5, snapshot_every=steps_per_epoch))``

    Args:
      alpha: acceleration rate (``0``: exactly the base optimizer), meant for
        about 0.5-5. ``alpha``, ``epsilon`` and ``max_gain`` may be traced
        (``optax.inject_hyperparams``); the others go in its ``static_args``.
      num_snapshots: ``h``, weight snapshots in the DMD window (>= 3): ``h - 1``
        increments, ``h - 2`` DMD pairs.
      snapshot_every: steps between snapshots (at the peak rate, given a
        ``learning_rate`` schedule): steps per epoch gives the paper's
        KGA-Epoch, 1 gives KGA-Iter. Acceleration starts once the window is
        full, after ``h - 1`` periods. ``'auto'`` (needs ``total_steps``)
        fills the window within the first 10 % of the run.
      apply_every: ``k``, steps whose base updates one correction covers (see
        the module docstring): ``1`` every update, ``snapshot_every`` (or
        ``None``) the newest increment at each snapshot (the state holds
        ``h + 1`` parameter-sized buffers; a step between snapshots reads one).
      epsilon: half-width of the neutral band ``1 - eps <= |lambda| <= 1 + eps``.
      rank: DMD rank policy (:func:`koopax.dmd.rank_mask`): ``'svht'``
        (Gavish–Donoho: the one or two dominant slow modes; see the module
        docstring for why), ``None`` every mode above the window's noise, an
        int, or an energy fraction in (0, 1).
      blocks: one DMD for the whole tree (``None``), or one per block of
        leaves: ``'leaf'``, ``'layer'`` (a layer's kernel and bias), or a
        callable ``(path, leaf) -> key`` (``koopax._src.blocks``).
      learning_rate: the base optimizer's learning rate schedule (``count ->
        eta``, needs ``total_steps``): snapshots are then taken at equal
        increments of the integrated rate ``sum eta`` rather than of the
        step count, so that a decaying schedule is not read as decay of the
        dynamics (``koopax._src.clock``). ``None`` or a number: steps.
      total_steps: the run's length in steps (for a schedule, ``'auto'`` and
        the last period's correction, which covers only what is left).
      snapshot_dtype: dtype of the stored increments (default the
        parameters'; ``jnp.bfloat16`` halves the memory).
      max_gain: bound on the amplification, ``|b'_l| <= max_gain |b_l|`` in
        every leaf ``l``.
      rcond: singular values below ``rcond * sigma_1`` of the increment matrix
        are noise (default 1e-3 in float32).
      rollback: undo, bit for bit, a correction after which the loss rose
        beyond its noise, and back off the gain for good
        (``koopax._src.kga.safety``); ``update`` then requires ``value``
        (a ``ValueError`` names it). ``False``: only the bounds protect the run.
      damp_oscillations: move the update along each stable mode whose increments
        flip sign (``|lambda| < 1 - eps``, ``Re lambda < -eps``: weights bouncing
        across a valley) towards that mode's centre, by the factor ``1 / (1 -
        lambda)`` at the full gain (``koopax._src.kga.operator``). ``False``:
        the paper's KGA, which leaves such modes to the base. Measured with a
        snapshot per epoch; with a snapshot every step (KGA-Iter) the
        z=x^2+y^2 MLP ends a little higher with it (9.7 against 9.1 undamped
        and 8.9 for SGD): turn it off there.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update`` needs
      ``params`` and the loss as ``value`` (optional with ``rollback=False``:
      then it only drives the valve). Non-finite snapshots, DMDs or
      corrections are never used (the base update passes, ``num_nonfinite``
      counts it).

    Examples:
      SGD on ``0.5 |w|^2`` (gradient ``w``, learning rate 0.1) moves the weights
      by ``w_{t+1} = 0.9 w_t``: one stable Koopman mode, ``lambda = 0.9``. Once
      the window of ``num_snapshots = 4`` snapshots is full (step 3), KGA
      multiplies the update along it by ``1 + alpha lambda = 1.9``:

      >>> import jax, jax.numpy as jnp, optax, koopax
      >>> tx = optax.chain(optax.sgd(0.1), koopax.kga(1.0, num_snapshots=4, snapshot_every=1))
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> loss = lambda p: 0.5 * jnp.sum(p["w"] ** 2)     # value: the rollback's loss
      >>> state = tx.init(params)
      >>> update = jax.jit(tx.update)
      >>> for step in range(4):
      ...     updates, state = update(params, state, params, value=loss(params))
      ...     print(step, round(float(updates["w"][1] / (-0.1 * params["w"][1])), 3))
      ...     params = optax.apply_updates(params, updates)
      0 1.0
      1 1.0
      2 1.0
      3 1.9
      >>> kga_state = state[1]
      >>> round(float(kga_state.operator.eigenvalues[0, 0].real), 3), int(kga_state.operator.num_stable[0])
      (0.9, 1)

    References:
      Anonymous, *Dynamic Training Guided by Training Dynamics*, OpenReview
      7AB077M4TY, 2024, Algorithm 1 and Eqs. 7-13.
    """
    validation.floating_dtype(snapshot_dtype, "snapshot_dtype")
    cfg = settings.make_settings(
        alpha=alpha, num_snapshots=num_snapshots, snapshot_every=snapshot_every,
        apply_every=apply_every, epsilon=epsilon, rank=rank, max_gain=max_gain, rcond=rcond,
        learning_rate=learning_rate, total_steps=total_steps, blocks=blocks, rollback=rollback,
        damp_oscillations=damp_oscillations)
    return engine.transformation(cfg, WindowColumns(num_snapshots - 1, snapshot_dtype))
