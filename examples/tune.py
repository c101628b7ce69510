"""The tuned base as the reference: a learning-rate sweep by factors of 2.

A user compares koopax with the learning rate they would have tuned, not with
an arbitrary one. :func:`tune_learning_rate` sweeps the base optimizer's rate
from the configured one by factors of 2, up or down, until the best is
*interior* (neither neighbour is better). A rate's score is the mean over the
seeds of the run's best epoch-mean training loss within the epoch budget; a run
with a non-finite epoch loss (diverged) scores ``inf``, the worst, so a rate at
which any seed diverges is never the best. Every koopax method is then run on
top of that rate (``Config(tune_lr=True)`` in :func:`examples.train.train_and_evaluate`;
``python -m benchmarks.convergence --tune``). With ``Config(target='test_loss')``
the score is the best loss on the test (validation) split instead. The same
sweep tunes a schedule-free base (``optimizer='schedule_free_adamw'``): its
validation loss is measured at the averaged iterate it is meant to be used at.

:func:`tune_control_beta` picks the no-DMD control's ``beta`` from a few values
(:data:`CONTROL_BETAS`) by the epochs it takes to the target: one harness run
trains the base and the control at every ``beta`` side by side
(:func:`control_rows`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

__all__ = ["CONTROL_BETAS", "Sweep", "control_row_name", "control_rows", "interior_best",
           "sweep_score", "tune_control_beta", "tune_learning_rate"]

#: The control's extrapolation factors tried by :func:`tune_control_beta`.
CONTROL_BETAS = (0.5, 1.0, 2.0)


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


def sweep_score(results: Mapping[str, Any], name: str = "base", *,
                key: str = "train_loss") -> float:
    """Score of the row ``name`` of :func:`examples.train.train_and_evaluate`'s results.

    The mean over seeds of each run's best epoch-mean training loss (``key=
    'test_loss'``: its best loss on the test/validation split, the one to use for
    a schedule-free base, whose training loss is measured at the gradient points,
    not at the averaged iterate it is evaluated at); ``inf`` if any run has a
    non-finite epoch loss (diverged).
    """
    if key not in ("train_loss", "test_loss"):
        raise ValueError(f"key must be 'train_loss' or 'test_loss'; got {key!r}.")
    best = []
    for run in results["runs"][name]:
        losses = run[key]
        if not losses or any(v is None or not math.isfinite(v)
                             for v in (*losses, *run["train_loss"])):
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



def control_row_name(beta: float) -> str:
    """Row name of the control at ``beta`` in :func:`control_rows`: ``'control@<beta>'``."""
    return f"control@{beta:g}"


def control_rows(optimizer: str, learning_rate: float, betas=CONTROL_BETAS
                 ) -> dict[str, dict[str, Any]]:
    """``Config.extra_rows`` of the control at each of ``betas`` on top of a base.

    One harness run with these rows (and no methods) trains the base and every
    ``beta`` side by side; :func:`tune_control_beta` then reads its summary.
    """
    return {control_row_name(b): dict(optimizer=optimizer, learning_rate=learning_rate,
                                      method="control", options=dict(beta=b))
            for b in betas}


def tune_control_beta(summary: Mapping[str, Mapping[str, Any]], betas=CONTROL_BETAS
                      ) -> dict[str, Any]:
    """The control's ``beta``: the fastest to the target, ties by the lowest loss.

    ``summary`` is :func:`examples.report.summarize` of a run with the rows of
    :func:`control_rows`. Each ``beta`` is scored by its row: first the median over
    seeds of the epochs to the base's best loss (a seed that misses it counts as
    infinitely late; a median not reached is ``inf``), then, between equal
    medians, the median over seeds of the best loss the target is on (the row's
    ``target_on``, the training or the validation loss; lower is better). On
    short runs several ``beta`` often reach the target in the same epoch; the
    loss then separates one that overshoots from one that does not. Ties in both
    keep the first of ``betas``.

    Returns:
      ``dict(beta, scores={beta: {epochs_to_target, best_loss}})`` (``None``
      where not finite).

    Examples:
      >>> row = lambda epochs, loss: {"epochs_to_target": epochs,
      ...                             "best_train_loss": loss, "target_on": "train_loss"}
      >>> summary = {"control@0.5": row(8, 1.0), "control@1": row(6, 0.9),
      ...            "control@2": row(6, 0.95)}
      >>> tune_control_beta(summary)["beta"]
      1.0
    """
    betas = tuple(betas)
    if not betas:
        raise ValueError("betas must not be empty.")
    missing = [control_row_name(b) for b in betas if control_row_name(b) not in summary]
    if missing:
        raise ValueError(f"summary: no rows {missing}; run control_rows(...) first.")
    scores = {}
    for beta in betas:
        row = summary[control_row_name(beta)]
        epochs = row["epochs_to_target"]
        loss = row.get(f"best_{row.get('target_on', 'train_loss')}")
        scores[beta] = (math.inf if epochs is None else float(epochs),
                        math.inf if loss is None else _clean(loss))
    best = min(betas, key=lambda b: scores[b])
    return dict(beta=best, scores={
        b: dict(epochs_to_target=None if math.isinf(e) else e,
                best_loss=None if math.isinf(v) else v) for b, (e, v) in scores.items()})
