"""The static settings every KGA variant shares, validated once.

References:
  Anonymous, *Dynamic Training Guided by Training Dynamics* (KGA, KWM),
  OpenReview 7AB077M4TY, 2024, Algorithm 1.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

from koopax._src import linalg, validation
from koopax._src.blocks import validate_blocks
from koopax._src.clock import Clock, make_clock


@dataclasses.dataclass(frozen=True)
class Settings:
    """The static settings the engine reads (validated by the factories)."""

    alpha: Any
    epsilon: Any
    max_gain: Any
    rank: Any
    rcond: Any
    clock: Clock
    strategy: str          # each | increment | sum
    apply_every: int
    blocks: Any            # the block policy (None, 'leaf', 'layer' or a callable)
    rollback: bool = False  # undo a correction after which the loss rose (needs value)
    damp_oscillations: bool = True  # move oscillating modes to their centre


def make_settings(*, alpha, num_snapshots, snapshot_every, apply_every, epsilon, rank,
                  max_gain, rcond, learning_rate=None, total_steps=None, blocks=None,
                  rank_cap=True, increment=True, rollback=False,
                  damp_oscillations=True) -> Settings:
    """Validates the hyperparameters every KGA variant shares; builds the clock.

    ``apply_every``: ``None`` the newest increment at each snapshot, ``1``
    every update, any other ``k`` the sum of ``k`` updates (``k`` equal to a
    step clock's ``snapshot_every`` is the newest increment too). A variant
    without the increment strategy (``increment=False``) sums instead.

    Examples:
      >>> from koopax._src.kga.settings import make_settings
      >>> common = dict(alpha=2.0, num_snapshots=6, snapshot_every=10, epsilon=0.01,
      ...               rank="svht", max_gain=10.0, rcond=None)
      >>> [make_settings(apply_every=k, **common).strategy for k in (None, 1, 10, 3)]
      ['increment', 'each', 'increment', 'sum']
      >>> make_settings(apply_every=None, increment=False, **common).strategy
      'sum'
    """
    for value, name in ((num_snapshots, "num_snapshots"), (apply_every, "apply_every"),
                        (rank, "rank"), (rcond, "rcond")):
        validation.static(value, name)
    validation.number(alpha, "alpha", low=0.0)
    validation.integer(num_snapshots, "num_snapshots", low=3)
    if apply_every is not None:
        validation.integer(apply_every, "apply_every", low=1)
    validation.number(epsilon, "epsilon", low=0.0, high=1.0, what="a number in [0, 1)")
    linalg.validate_rank(rank)
    max_rank = num_snapshots - 2
    if rank_cap and isinstance(rank, numbers.Integral) and rank > max_rank:
        raise ValueError(f"rank must be <= num_snapshots - 2 = {max_rank} (the number of "
                         f"increment pairs); got {rank}.")
    validation.number(max_gain, "max_gain", low=1.0, low_open=True)
    validation.optional_fraction(rcond, "rcond")
    validate_blocks(blocks)
    validation.boolean(rollback, "rollback")
    validation.boolean(damp_oscillations, "damp_oscillations")
    clock = make_clock(snapshot_every, learning_rate=learning_rate, total_steps=total_steps,
                       num_snapshots=num_snapshots)
    if apply_every is None and clock.counts_rate and increment:
        strategy, apply_every = "increment", clock.snapshot_every
    else:
        apply_every = clock.snapshot_every if apply_every is None else apply_every
        strategy = ("each" if apply_every == 1 else
                    "increment" if (increment and apply_every == clock.snapshot_every
                                    and not clock.counts_rate) else "sum")
    return Settings(alpha, epsilon, max_gain, rank, rcond, clock, strategy, apply_every, blocks,
                    rollback, damp_oscillations)


