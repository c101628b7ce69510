"""Re-estimating BatchNorm running statistics after a parameter jump.

``nnx.BatchNorm`` stores its running mean and variance as ``nnx.BatchStat``
variables, which are not parameters: an optimizer built with
``nnx.Optimizer(model, tx, wrt=nnx.Param)`` never touches them, and neither does a
Koopman/DMD parameter jump (koopax's PDT step and friends). During ordinary
training the running averages follow the slowly moving weights, but after an
accepted jump they still describe the *pre-jump* network, so inference-mode
predictions (``model.eval()``) can be badly off until enough training steps have
refreshed them. :func:`refresh_batch_stats` re-estimates them from a few training
batches; call it right after an accepted jump (this is the "BatchNorm desync"
that SAM's documentation also points out for its perturbed weights).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from examples.models._common import check_positive_int

__all__ = ["refresh_batch_stats"]


@nnx.jit
def _forward(model: nnx.Module, x: jax.Array) -> None:
    model(x)


def _batch_norms(model: nnx.Module) -> list[nnx.BatchNorm]:
    return [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)]


def _snapshot(model: nnx.Module) -> nnx.State:
    """Copy of the BatchStat state (``nnx.state`` alone returns live variables)."""
    return jax.tree.map(jnp.asarray, nnx.state(model, nnx.BatchStat))


def refresh_batch_stats(
    model: nnx.Module, batches: Iterable[Any], num_batches: int = 10
) -> None:
    """Re-estimates the running statistics of every ``nnx.BatchNorm`` in ``model``.

    Runs forward passes in training mode on the first ``num_batches`` items of
    ``batches`` and sets each BatchNorm's running mean and variance to the
    average, over those batches, of the per-batch statistics (a cumulative
    average, so the stale pre-jump values are discarded entirely rather than
    decayed by the momentum). ``nnx.Param`` leaves are not modified, and each
    BatchNorm's mode (``use_running_average``) and ``momentum`` are restored
    afterwards. The model is updated in place; nothing is returned. A model
    without BatchNorm layers is left untouched and ``batches`` is not consumed.

    Args:
      model: The model, e.g. an :class:`~examples.models.FCN` or
        :class:`~examples.models.ResNet`.
      batches: Iterable of input batches, or of ``(inputs, targets)`` pairs (as
        produced by :func:`examples.datasets.batches`); only the inputs are used.
      num_batches: Maximum number of batches to use.

    Raises:
      ValueError: If ``num_batches`` is not a positive int, or ``batches`` yields
        nothing (the statistics are then left unchanged).
    """
    check_positive_int(num_batches, "num_batches")
    norms = _batch_norms(model)
    if not norms:
        return None
    saved_modes = [(m.use_running_average, m.momentum) for m in norms]
    saved_stats = _snapshot(model)
    totals = None
    count = 0
    try:
        for m in norms:
            # momentum 0: after a call the running stats equal that batch's stats.
            m.use_running_average = False
            m.momentum = 0.0
        for batch in itertools.islice(iter(batches), num_batches):
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            _forward(model, jnp.asarray(inputs))
            stats = _snapshot(model)
            totals = (
                stats if totals is None else jax.tree.map(jnp.add, totals, stats)
            )
            count += 1
        if count == 0:
            raise ValueError("`batches` yielded no batch.")
        nnx.update(model, jax.tree.map(lambda total: total / count, totals))
    except BaseException:
        nnx.update(model, saved_stats)
        raise
    finally:
        for m, (use_running_average, momentum) in zip(norms, saved_modes):
            m.use_running_average = use_running_average
            m.momentum = momentum
    return None
