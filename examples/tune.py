"""The tuned base as the reference: a learning-rate sweep by factors of 2.

A user compares koopax with the learning rate they would have tuned, not with
an arbitrary one. :func:`tune_learning_rate` sweeps the base optimizer's rate
from the configured one by factors of 2, up or down, until the best is
*interior* (neither neighbour is better). A rate's score is the mean over the
seeds of the run's best epoch-mean training loss within the epoch budget; a run
with a non-finite epoch loss (diverged) scores ``inf``, the worst, so a rate at
which any seed diverges is never the best. Every koopax method is then run on
top of that rate (``Config(tune_lr=True)`` in :func:`examples.train.train_and_evaluate`;
``python -m benchmarks.convergence --tune``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Sweep", "interior_best", "sweep_score", "tune_learning_rate"]


class Sweep(NamedTuple):
    """The outcome of a sweep.

    Attributes:
      best: the best exponent ``k`` (rate ``start * factor**k``).
      scores: every exponent tried -> its score (lower is better; ``inf`` = diverged).
      interior: both neighbours of ``best`` were tried and neither is better.
    """

    best: int
    scores: dict[int, float]
    interior: bool


def interior_best(score: Callable[[int], float], *, max_steps: int = 6,
                  known: Mapping[int, float] | None = None) -> Sweep:
    """The exponent ``k`` minimising ``score(k)``, walking from 0 until it is interior.

    ``score(k)`` is the score of the rate ``start * 2**k`` (lower is better,
    ``inf`` or NaN the worst); it is called at most once per ``k`` and not at
    all for the exponents of ``known``. From ``k = 0``: the side whose
    neighbour is better is followed one step at a time while the score
    improves; when ``score(0)`` is not finite the walk goes down (smaller rates)
    until it is. At most ``max_steps`` steps are taken from 0; a best found at
    that limit is not interior.
    """
    scores = {int(k): _clean(v) for k, v in (known or {}).items()}

    def s(k):
        if k not in scores:
            scores[k] = _clean(score(k))
        return scores[k]

    k = 0
    if s(1) < s(0):
        step = 1
    elif s(-1) < s(0) or not math.isfinite(s(0)):
        step = -1
    else:
        return Sweep(0, scores, math.isfinite(s(0)))
    for _ in range(max_steps):
        nxt = k + step
        if s(nxt) < s(k) or (step < 0 and not math.isfinite(s(k))):
            k = nxt
        else:
            break
    else:
        return Sweep(k, scores, False)
    interior = (math.isfinite(s(k)) and s(k + 1) >= s(k) and s(k - 1) >= s(k))
    return Sweep(k, scores, interior)


def _clean(value) -> float:
    value = float(value)
    return math.inf if math.isnan(value) else value


def sweep_score(results: Mapping[str, Any], name: str = "base") -> float:
    """Score of the row ``name`` of :func:`examples.train.train_and_evaluate`'s results.

    The mean over seeds of each run's best epoch-mean training loss; ``inf`` if
    any run has a non-finite epoch loss (diverged).
    """
    best = []
    for run in results["runs"][name]:
        losses = run["train_loss"]
        if not losses or any(v is None or not math.isfinite(v) for v in losses):
            return math.inf
        best.append(min(losses))
    return float(np.mean(best)) if best else math.inf


def tune_learning_rate(start: float, score_rate: Callable[[float], float], *,
                       max_steps: int = 6, known: Mapping[float, float] | None = None
                       ) -> dict[str, Any]:
    """:func:`interior_best` over learning rates ``start * 2**k``.

    Args:
      start: the configured rate.
      score_rate: ``rate -> score`` (e.g. :func:`sweep_score` of a base-only run).
      max_steps: most doublings or halvings from ``start``.
      known: rates already scored (``{rate: score}``; rates that are not
        ``start * 2**k`` are ignored).

    Returns:
      ``dict(learning_rate, start, interior, scores={rate: score})`` with the rates
      in increasing order.
    """
    pre = {}
    for rate, value in (known or {}).items():
        k = math.log2(rate / start)
        if abs(k - round(k)) < 1e-9:
            pre[round(k)] = value
    sweep = interior_best(lambda k: score_rate(start * 2.0 ** k), max_steps=max_steps,
                          known=pre)
    return dict(learning_rate=start * 2.0 ** sweep.best, start=start, interior=sweep.interior,
                scores={start * 2.0 ** k: sweep.scores[k] for k in sorted(sweep.scores)})
