"""Deprecated: the pre-``examples.train`` API, kept for the notebooks until they move.

Use :mod:`examples.train` (:class:`~examples.train.Runner`,
:func:`~examples.train.model_task`, :func:`~examples.train.train_and_evaluate`)
and :mod:`examples.methods` instead. Everything here is a thin adapter over
them; there is no second training loop. Three legacy behaviours are kept:
:func:`build_optimizer` drops the hyperparameters the method does not accept
(the new API rejects them), fills the KGA family's ``alpha`` /
``num_snapshots`` with this module's old defaults (1.0 and 6), and pins the
step clock (``clock='steps'``, the harness's default too: it is not given the
base's learning rate nor the run's length that ``clock='rate'`` needs).
"""

from __future__ import annotations

from typing import Any

from examples import methods as _methods
from examples import train as _train
from examples.methods import BASE_OPTIMIZERS, METHODS, SCHEDULES, make_base_optimizer  # noqa: F401
from examples.report import Target, time_to_target  # noqa: F401
from examples.train import epoch_batches, flops_of  # noqa: F401

#: The defaults this module gave the KGA family.
KGA_DEFAULTS = dict(alpha=1.0, num_snapshots=6)


def build_optimizer(method, base, hparams, steps_per_epoch):
    """Legacy :func:`examples.methods.build_optimizer`: unknown keys are dropped."""
    if method == "base":
        return _methods.build_optimizer("base", base, None, steps_per_epoch)
    accepted = _methods.method(method).options()
    legacy = KGA_DEFAULTS if method in _methods.KGA_FAMILY else {}
    options = {k: v for k, v in {**legacy, **dict(hparams or {})}.items()
               if k in accepted and v is not None}
    if "clock" in accepted:
        options.setdefault("clock", "steps")
    return _methods.build_optimizer(method, base, options, steps_per_epoch)


def read_diagnostics(opt_state) -> dict[str, Any]:
    """:func:`examples.methods.read_diagnostics`, with the legacy ``masked_ratio`` key
    (PDT's accepted ratio or a mask's masked fraction, whichever the state has)."""
    out = _methods.read_diagnostics(opt_state)
    for key in ("accepted_ratio", "masked_fraction"):
        if key in out:
            out.setdefault("masked_ratio", out[key])
    return out


class Trainer:
    """Legacy adapter: an NNX ``model`` trained by :class:`examples.train.Runner`."""

    def __init__(self, model, tx, task: str):
        self.tx, self.task = tx, task
        self._runner = None
        self.load(model)

    def load(self, model) -> None:
        """Takes the parameters of ``model`` (same architecture) and a fresh state."""
        task = _train.model_task(model, self.task, steps=None)
        if self._runner is None:
            self._runner = _train.Runner(task, self.tx)
        else:
            self._runner.reset(task.params, task.rest)

    def loss_fn(self, params, rest, x, y):
        """``(loss, (metric, new_rest))`` of a batch in train mode."""
        return self._runner.task.loss_fn(params, rest, x, y)

    def compile(self, xs, ys) -> float:
        return self._runner.compile((xs, ys))

    def warmup(self, xs, ys) -> None:
        self._runner.dry_run((xs, ys))

    def step_flops(self, x, y):
        return self._runner.step_flops((x, y))

    def run_epoch(self, xs, ys):
        """Trains one epoch; returns per-step losses, metrics and the wall time (s)."""
        block = self._runner.run((xs, ys))
        return block.losses, block.metrics, block.seconds

    def evaluate(self, x, y, batch_size: int = 1024):
        loss, metric = self._runner.evaluate(x, y, batch_size)
        return loss, (metric if self.task == "classification" else float("nan"))

    params = property(lambda self: self._runner.params)
    rest = property(lambda self: self._runner.rest)
    opt_state = property(lambda self: self._runner.opt_state)
