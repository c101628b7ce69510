"""Unmasked DMD jump baselines (Dogra & Redman 2020; Tano, Portwood & Ragusa 2020).

Both are PDT's jump with every weight accepted (``criteria='none'``, the
"prediction without selection" baseline of the PDT paper, Fig. 2): snapshots
at the start of every epoch (``snapshot_every`` steps), and on the step that
completes a prediction epoch the weights land on

    w_pred = w_ref + sum_{j=1..tau} A^j d_last = w_ref + X c

with ``w_ref`` the newest snapshot and the DMD of the last weight increments
in the Gram closed form of :mod:`koopax.prediction`. The difference to PDT is
the granularity and the fallback:

* ``mode='dogra'`` (Dogra & Redman 2020): applied every ``interval`` epochs,
  no fallback. **[choice]** One DMD per pytree leaf (a layer's weight or bias
  tensor) by default; their node-wise operators (one least-squares operator
  per neuron's incoming weights) are a finer block-diagonal variant that does
  not map onto arbitrary leaves; ``per_leaf=False`` gives one whole-network
  DMD, which equals ``koopax.pdt(criteria='none', rollback=False)``.
* ``mode='tano'`` (Tano et al. 2020, the "bootstrap" as the KGA paper runs
  it): the same per-layer jump, but predictions stop for good, and the base
  optimizer carries on alone, once the loss passed as ``value`` rises after a
  jump: the mean of ``value`` over the epoch after a jump is compared with its
  mean over the epoch that ended in it; a rise by more than ``tolerance``
  (relative) switches predictions off. Pass the validation loss as ``value``
  (the latest measurement at every step is fine: only epoch means are used);
  ``update`` raises a ``ValueError`` naming ``value`` without it. **[choice]** A finite
  horizon rather than the "converged state" (infinite horizon) estimate.

References:
  Dogra & Redman, `Optimizing Neural Networks via Koopman Operator Theory
  <https://arxiv.org/abs/2006.02361>`_, NeurIPS 2020.
  Tano, Portwood & Ragusa, `Accelerating Training in Artificial Neural
  Networks with Dynamic Mode Decomposition <https://arxiv.org/abs/2006.14371>`_,
  2020.
  Wang et al., *Predictive Differential Training Guided by Training
  Dynamics*, ICLR 2026 (non-selective prediction baseline).
"""

from __future__ import annotations

import numbers

import optax

from koopax._src import validation
from koopax._src.pdt.factory import make
from koopax._src.pdt.rollback import IgnoreRises, StopPredicting

MODES = ("dogra", "tano")


def dmd_prediction(
    horizon: int = 5,
    *,
    num_snapshots: int = 5,
    snapshot_every: int,
    interval: int = 1,
    start: int | None = None,
    mode: str = "dogra",
    per_leaf: bool = True,
    rank: int | float | None = None,
    learning_rate=None,
    total_steps: int | None = None,
    tolerance: float = 0.0,
    rcond: float | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Unmasked DMD jumps every ``interval`` epochs; place it last in the chain.

    Args:
      horizon: ``tau``, snapshots (epochs) to jump ahead.
      num_snapshots: ``h`` snapshots in each DMD window (>= 3).
      snapshot_every: steps per epoch.
      interval: epochs between jumps.
      start: first epoch that may end in a jump; default ``num_snapshots - 1``
        (as soon as the window is full).
      mode: ``'dogra'`` (periodic, no fallback) or ``'tano'`` (stops for good
        once ``value`` rises after a jump).
      per_leaf: one DMD per pytree leaf (default) or one for the whole tree.
      rank: DMD rank policy (as :func:`koopax.pdt`; ``'svht'`` is
        Gavish–Donoho, as the original papers).
      learning_rate, total_steps: as :func:`koopax.pdt`.
      tolerance: ``'tano'``: relative rise of ``value`` that stops predictions.
      rcond: singular-value floor relative to ``sigma_1`` (as :func:`koopax.pdt`).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with a
      :class:`koopax.PDTState` (``stopped`` tells when Tano's fallback fired).
      Non-finite predictions never reach the weights.
    """
    if mode not in MODES:
        raise validation.ArgumentError(f"mode must be one of {MODES}; got {mode!r}.")
    validation.boolean(per_leaf, "per_leaf")
    validation.number(tolerance, "tolerance", low=0.0)
    if start is None:
        start = num_snapshots - 1 if isinstance(num_snapshots, numbers.Integral) else 0
    policy = StopPredicting(tolerance, 0.0) if mode == "tano" else IgnoreRises()
    return make(horizon=horizon, num_snapshots=num_snapshots, snapshot_every=snapshot_every,
                start=start, interval=interval, rank=rank,
                blocks="leaf" if per_leaf else None, learning_rate=learning_rate,
                total_steps=total_steps, criteria="none", quantity_bounds=(1.0, None),
                policy=policy, authors_schedule=False, fit_on="assembled", rcond=rcond)
