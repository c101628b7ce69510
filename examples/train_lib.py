"""Training loop shared by :mod:`examples.compare` and the example scripts.

Everything here is plain JAX + Optax around a Flax NNX model split into a
pytree of parameters (what the optimizer sees) and the rest of its state
(batch statistics, RNG counters). One epoch is a single jitted ``lax.scan``
over its pre-shuffled batches, so the wall time of an epoch is compute, not
Python dispatch, and the base optimizer and every koopax method are timed the
same way:

* the epoch function is compiled ahead of time (``jit(...).lower(...).compile()``)
  before anything is timed; compile time is reported separately;
* the timer brackets only the call of the compiled epoch and a
  ``block_until_ready`` on its outputs (data shuffling, evaluation and the
  read-out of diagnostics happen outside it);
* the training step passes ``value=loss`` to ``tx.update``, so transformations
  that read the loss (``koopax.pdt``, the prediction baselines) receive it.

Methods are entries of :data:`METHODS`: a name mapped to a factory building the
koopax transformation that is chained after the base optimizer, from the
hyperparameters and the number of steps per epoch. The ``'pdt'``, ``'dogra'``
and ``'tano'`` entries exist only if the installed koopax provides them.
"""

from __future__ import annotations

import inspect
import math
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import koopax

__all__ = [
    "BASE_OPTIMIZERS",
    "DIAGNOSTIC_KEYS",
    "METHODS",
    "MethodSpec",
    "RunResult",
    "Target",
    "Trainer",
    "build_optimizer",
    "epoch_batches",
    "flops_per_step",
    "make_base_optimizer",
    "read_diagnostics",
    "register_method",
    "time_to_target",
]

BASE_OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine")


# --------------------------------------------------------------------------- optimizers
def _check_positive(value, name, *, integer=False):
    if integer:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0
        kind = "a positive int"
    else:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) \
            and math.isfinite(value) and value > 0
        kind = "a finite number > 0"
    if not ok:
        raise ValueError(f"{name} must be {kind}; got {value!r}.")
    return value


def make_base_optimizer(name: str, learning_rate: float, *, schedule: str = "constant",
                        total_steps: int | None = None) -> optax.GradientTransformation:
    """The base optimizer: ``'sgd'``, ``'momentum'`` (0.9), ``'adam'`` or ``'adamw'``.

    Args:
      name: one of :data:`BASE_OPTIMIZERS`.
      learning_rate: peak learning rate (> 0).
      schedule: ``'constant'`` or ``'cosine'`` (decay to 0 over ``total_steps``).
      total_steps: number of training steps; required by the cosine schedule.
    """
    if name not in BASE_OPTIMIZERS:
        raise ValueError(f"name must be one of {BASE_OPTIMIZERS}; got {name!r}.")
    _check_positive(learning_rate, "learning_rate")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}; got {schedule!r}.")
    lr: Any = learning_rate
    if schedule == "cosine":
        if total_steps is None:
            raise ValueError("total_steps is required with schedule='cosine'.")
        _check_positive(total_steps, "total_steps", integer=True)
        lr = optax.cosine_decay_schedule(learning_rate, total_steps)
    if name == "sgd":
        return optax.sgd(lr)
    if name == "momentum":
        return optax.sgd(lr, momentum=0.9)
    if name == "adam":
        return optax.adam(lr)
    return optax.adamw(lr)


class MethodSpec(NamedTuple):
    """A registry entry: ``factory(hparams, steps_per_epoch)`` -> transformation.

    The transformation is chained after the base optimizer. ``description`` is
    shown by ``--help``.
    """

    factory: Callable[[Mapping[str, Any], int], optax.GradientTransformation]
    description: str


METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, factory, description: str = "") -> None:
    """Adds (or replaces) a method of the registry."""
    if not isinstance(name, str) or not name or "," in name:
        raise ValueError(f"name must be a non-empty string without commas; got {name!r}.")
    if not callable(factory):
        raise ValueError(f"factory must be callable; got {factory!r}.")
    METHODS[name] = MethodSpec(factory, description)


def _snapshot_every(hp, steps_per_epoch):
    every = hp.get("snapshot_every")
    return steps_per_epoch if every is None else every


#: Defaults the harness gives koopax.kga (the library's own, except where noted).
KGA_DEFAULTS = dict(alpha=1.0, num_snapshots=6, epsilon=1e-2, max_gain=10.0)


def _kga_factory(**fixed):
    def factory(hp, steps_per_epoch):
        hp = {**KGA_DEFAULTS, **hp}
        kwargs = _filtered_kwargs(koopax.kga, hp, steps_per_epoch, {})
        kwargs.update({k: (v(hp) if callable(v) else v) for k, v in fixed.items()})
        return koopax.kga(**kwargs)
    return factory


register_method("kga", _kga_factory(),
                "KGA-Epoch (koopax.kga, a snapshot every epoch by default)")
register_method("kga_efficient", _kga_factory(efficient=True),
                "Efficient-KGA (koopax.kga(efficient=True))")


def _kwm_mask(hp):
    # KWM: a weight whose remaining transient movement stays below ``kwm_epsilon``
    # times the rms per-snapshot movement (relative threshold) over the window is
    # dropped; at most ``kwm_capacity`` of the weights stay in the compact buffers.
    # The paper's absolute threshold does not transfer across tasks: 1e-2 masked
    # 91 % of the MNIST-1D MLP (sgd 0.5) and 100 % of the z=x^2+y^2 MLP (sgd
    # 2e-3, acceleration lost). Relative thresholds, 2 seeds, masked fraction at
    # the end / epochs ratio to SGD's best loss (kga alone: 0.85 MNIST-1D, 0.65
    # quadratic): 0.1 -> MNIST-1D 0.53 / 0.85, quadratic 0.95 / not reached;
    # 0.03 -> MNIST-1D 0.50 / 0.88, quadratic 0.63 / 0.70. 0.03 is taken.
    return koopax.masks.kwm(hp.get("kwm_epsilon", 0.03), window=hp.get("kwm_window", 3),
                            relative=hp.get("kwm_relative", True),
                            every=hp.get("kwm_every", 1),
                            capacity=hp.get("kwm_capacity", 0.5))


register_method("kga_kwm", _kga_factory(mask=_kwm_mask),
                "KGA with the Koopman weight mask (koopax.kga(mask=koopax.masks.kwm(...)))")


def _parameters(fn) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return set()


#: Hyperparameter keys read by the factories beyond the koopax functions' own arguments.
EXTRA_HPARAM_KEYS = {"kwm_epsilon", "kwm_window", "kwm_capacity", "kwm_relative",
                     "kwm_every"}


def hparam_keys() -> set[str]:
    """Every hyperparameter key some registered factory reads (for ``--set`` checks)."""
    keys = set(EXTRA_HPARAM_KEYS)
    for fn in (koopax.kga, getattr(koopax, "pdt", None), getattr(koopax, "dmd_prediction", None)):
        if callable(fn):
            keys |= _parameters(fn)
    return keys - {"mask", "mode"}


def _filtered_kwargs(fn, hp, steps_per_epoch, fixed):
    """Keyword arguments of ``fn`` that the hyperparameters provide."""
    names = _parameters(fn)
    kwargs = {k: v for k, v in hp.items() if k in names and v is not None}
    if "snapshot_every" in names:
        kwargs["snapshot_every"] = _snapshot_every(hp, steps_per_epoch)
    kwargs.update(fixed)
    return kwargs


def _optional_factory(fn, **fixed):
    def factory(hp, steps_per_epoch):
        return fn(**_filtered_kwargs(fn, hp, steps_per_epoch, fixed))
    return factory


# ``koopax.pdt`` is also the name of a submodule: only a callable counts.
if callable(getattr(koopax, "pdt", None)):
    register_method("pdt", _optional_factory(koopax.pdt),
                    "PDT: masked DMD weight prediction with rollback (koopax.pdt)")
if callable(getattr(koopax, "dmd_prediction", None)):
    register_method("dogra", _optional_factory(koopax.dmd_prediction, mode="dogra"),
                    "unmasked per-layer DMD jumps (koopax.dmd_prediction(mode='dogra'))")
    register_method("tano", _optional_factory(koopax.dmd_prediction, mode="tano"),
                    "DMD jumps until the loss rises (koopax.dmd_prediction(mode='tano'))")


def build_optimizer(method: str, base: optax.GradientTransformation,
                    hparams: Mapping[str, Any], steps_per_epoch: int
                    ) -> optax.GradientTransformationExtraArgs:
    """``base`` alone (``method='base'``) or ``optax.chain(base, METHODS[method](...))``.

    The result always accepts extra keyword arguments (``value=loss``).
    """
    _check_positive(steps_per_epoch, "steps_per_epoch", integer=True)
    if method == "base":
        return optax.with_extra_args_support(base)
    if method not in METHODS:
        raise ValueError(f"method must be 'base' or one of {sorted(METHODS)}; got {method!r}.")
    return optax.chain(base, METHODS[method].factory(dict(hparams), steps_per_epoch))


# ----------------------------------------------------------------------- diagnostics
#: State fields read after each epoch, under the names used in the results.
DIAGNOSTIC_KEYS = {
    "eigenvalues": ("eigenvalues",),
    "rank": ("rank",),
    "num_stable": ("num_stable",),
    "num_refreshes": ("num_refreshes",),
    "num_nonfinite": ("num_nonfinite",),
    # PDT: fraction of the weights whose prediction passed the mask at the last jump.
    "masked_ratio": ("masked_ratio", "mask_ratio", "accepted_ratio", "masked_fraction"),
    "jumps": ("num_jumps",),
    "rollbacks": ("num_rollbacks", "rollbacks", "rollback_count"),
}


def read_diagnostics(opt_state) -> dict[str, Any]:
    """Diagnostics found in an optimizer state, as host values.

    For each entry of :data:`DIAGNOSTIC_KEYS` the first matching field (by
    name, anywhere in the state) is read; absent fields are left out. Complex
    eigenvalues become ``[[re, im], ...]`` restricted to the DMD rank when the
    state records one.
    """
    out: dict[str, Any] = {}
    for key, names in DIAGNOSTIC_KEYS.items():
        for name in names:
            found = optax.tree_utils.tree_get_all_with_path(opt_state, name)
            if found:
                out[key] = np.asarray(jax.device_get(found[0][1]))
                break
    if "eigenvalues" in out:
        values = out["eigenvalues"]
        groups = values.reshape(-1, values.shape[-1]) if values.ndim else values.reshape(1, 1)
        ranks = np.broadcast_to(out.get("rank", groups.shape[-1]), groups.shape[:1])
        values = np.concatenate([g[: int(r)] for g, r in zip(groups, ranks)])
        out["eigenvalues"] = np.stack([values.real, values.imag], -1).astype(float).tolist()
    for key, value in list(out.items()):
        if isinstance(value, np.ndarray):
            out[key] = (value.item() if value.size == 1
                        else value.astype(float).tolist())
    return out


# ---------------------------------------------------------------------- time to target
class Target(NamedTuple):
    """When a curve first reaches a target loss.

    Attributes:
      epoch: 1-based first epoch whose loss is ``<= target``; ``None`` if never.
      time: cumulative training wall time (s) at the end of that epoch, or ``None``.
      step: training steps taken by the end of that epoch, or ``None``.
    """

    epoch: int | None
    time: float | None
    step: int | None


def time_to_target(losses: Sequence[float], epoch_times: Sequence[float], target: float,
                   steps_per_epoch: int = 1) -> Target:
    """First epoch at which ``losses[e] <= target``, with its cumulative time.

    Args:
      losses: per-epoch training loss (NaN never reaches a target).
      epoch_times: per-epoch training wall time in seconds (same length).
      target: the loss to reach.
      steps_per_epoch: to convert epochs into steps.
    """
    losses = np.asarray(losses, dtype=float)
    times = np.asarray(epoch_times, dtype=float)
    if losses.ndim != 1 or losses.shape != times.shape:
        raise ValueError(
            f"losses and epoch_times must be 1-D of equal length; got {losses.shape} "
            f"and {times.shape}.")
    if not isinstance(target, numbers.Real) or math.isnan(target):
        raise ValueError(f"target must be a number; got {target!r}.")
    _check_positive(steps_per_epoch, "steps_per_epoch", integer=True)
    hit = np.flatnonzero(losses <= target)
    if hit.size == 0:
        return Target(None, None, None)
    e = int(hit[0])
    return Target(e + 1, float(np.sum(times[: e + 1])), (e + 1) * int(steps_per_epoch))


# ----------------------------------------------------------------------------- FLOPs
def flops_of(compiled) -> float | None:
    """FLOPs from a compiled executable's XLA cost analysis (list, dict or None)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    if cost is None:
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not isinstance(cost, Mapping):
        return None
    flops = cost.get("flops")
    return None if flops is None or flops < 0 else float(flops)


def flops_per_step(step_fn, *args) -> float | None:
    """XLA's estimate of the FLOPs of one call of ``jax.jit(step_fn)(*args)``."""
    return flops_of(jax.jit(step_fn).lower(*args).compile())


# ------------------------------------------------------------------------------ data
def epoch_batches(x, y, batch_size: int, *, rng: np.random.Generator, non_iid: bool = False,
                  batches_fn=None):
    """One epoch of shuffled batches stacked as ``(steps, batch, ...)`` arrays.

    ``batches_fn`` (default :func:`examples.datasets.batches`) yields
    ``(x, y)`` batches; incomplete batches are dropped so that every step has
    the same shape.
    """
    if batches_fn is None:
        from examples.datasets import batches as batches_fn
    xs, ys = [], []
    for xb, yb in batches_fn(x, y, batch_size, rng=rng, shuffle=True, drop_last=True,
                             non_iid=non_iid):
        xs.append(np.asarray(xb))
        ys.append(np.asarray(yb))
    if not xs:
        raise ValueError(
            f"batch_size={batch_size} exceeds the {len(x)} training examples.")
    return np.stack(xs), np.stack(ys)


# --------------------------------------------------------------------------- trainer
def _loss_and_metric(out, y, task):
    if task == "classification":
        loss = optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
        metric = jnp.mean(jnp.argmax(out, -1) == y)
        return loss, metric.astype(jnp.float32)
    out = out.reshape(y.shape) if out.size == y.size else out
    loss = jnp.mean((out - y) ** 2)
    return loss, jnp.zeros((), jnp.float32)


class RunResult(NamedTuple):
    """Curves of one training run (lists, one entry per epoch).

    ``train_acc``/``test_acc`` are NaN for regression. ``diagnostics`` is a
    list (per epoch) of :func:`read_diagnostics` dicts.
    """

    train_loss: list
    train_acc: list
    test_loss: list
    test_acc: list
    epoch_time: list
    diagnostics: list
    compile_time: float
    flops_per_step: float | None
    steps_per_epoch: int


class Trainer:
    """Jitted training epochs and evaluation of an NNX model with an Optax ``tx``.

    Args:
      model: a Flax NNX module (put in train mode here; an eval-mode copy of
        its graph is used for evaluation).
      tx: the optimizer; it must accept ``value=`` (see :func:`build_optimizer`).
      task: ``'classification'`` (integer labels, cross-entropy) or
        ``'regression'`` (mean squared error).
    """

    def __init__(self, model: nnx.Module, tx, task: str):
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression'; got {task!r}.")
        self.task = task
        self.tx = tx
        self._compiled_epoch = None
        self._graph = self._eval_graph = None
        self.load(model)
        self._eval = jax.jit(self._eval_batch)

    def load(self, model: nnx.Module) -> None:
        """Takes the parameters of ``model`` and a fresh optimizer state.

        Models loaded into one trainer must share their architecture (the
        compiled epoch is reused, e.g. across seeds).
        """
        if not isinstance(model, nnx.Module):
            raise ValueError(f"model must be a flax.nnx.Module; got {type(model).__name__}.")
        model.eval()
        eval_graph, _, _ = nnx.split(model, nnx.Param, ...)
        model.train()
        graph, params, rest = nnx.split(model, nnx.Param, ...)
        if self._graph is not None and graph != self._graph:
            raise ValueError("model: its architecture differs from the one this trainer "
                             "was built for.")
        self._graph, self._eval_graph = graph, eval_graph
        self.params = nnx.as_pure(params)
        self.rest = nnx.as_pure(rest)
        self.opt_state = self.tx.init(self.params)

    # Pure functions of (params, rest, ...) -------------------------------------------
    @staticmethod
    def _merge(graph, params, rest):
        return nnx.merge(graph, params, rest)

    def loss_fn(self, params, rest, x, y):
        """``(loss, (metric, new_rest))`` of a batch in train mode."""
        model = self._merge(self._graph, params, rest)
        out = model(x)
        loss, metric = _loss_and_metric(out, y, self.task)
        _, _, new_rest = nnx.split(model, nnx.Param, ...)
        return loss, (metric, nnx.as_pure(new_rest))

    def step(self, params, rest, opt_state, x, y):
        """One training step; returns ``(params, rest, opt_state, loss, metric)``."""
        (loss, (metric, rest)), grads = jax.value_and_grad(self.loss_fn, has_aux=True)(
            params, rest, x, y)
        updates, opt_state = self.tx.update(grads, opt_state, params, value=loss)
        params = optax.apply_updates(params, updates)
        return params, rest, opt_state, loss, metric

    def epoch(self, params, rest, opt_state, xs, ys):
        """``lax.scan`` of :meth:`step` over stacked batches ``xs``, ``ys``."""
        def body(carry, batch):
            p, r, s = carry
            p, r, s, loss, metric = self.step(p, r, s, *batch)
            return (p, r, s), (loss, metric)

        (params, rest, opt_state), (losses, metrics) = jax.lax.scan(
            body, (params, rest, opt_state), (xs, ys))
        return params, rest, opt_state, losses, metrics

    def _eval_batch(self, params, rest, x, y):
        model = self._merge(self._eval_graph, params, rest)
        loss, metric = _loss_and_metric(model(x), y, self.task)
        n = y.shape[0]
        return loss * n, metric * n

    # Host-side API ------------------------------------------------------------------
    def compile(self, xs, ys) -> float:
        """Compiles the epoch for batches shaped like ``xs``/``ys``; returns seconds."""
        t0 = time.perf_counter()
        self._compiled_epoch = jax.jit(self.epoch, donate_argnums=(0, 1, 2)).lower(
            self.params, self.rest, self.opt_state, xs, ys).compile()
        return time.perf_counter() - t0

    def warmup(self, xs, ys) -> None:
        """Runs the compiled epoch once on copies of the state (results discarded).

        Takes one-time costs of a first execution out of the timed epochs.
        """
        if self._compiled_epoch is None:
            self.compile(xs, ys)
        state = jax.tree.map(jnp.copy, (self.params, self.rest, self.opt_state))
        jax.block_until_ready(self._compiled_epoch(*state, xs, ys))

    def step_flops(self, x, y) -> float | None:
        """XLA cost-analysis FLOPs of one training step on a batch like ``x``, ``y``."""
        return flops_per_step(self.step, self.params, self.rest, self.opt_state, x, y)

    def run_epoch(self, xs, ys) -> tuple[np.ndarray, np.ndarray, float]:
        """Trains one epoch; returns per-step losses, metrics and the wall time (s)."""
        if self._compiled_epoch is None:
            self.compile(xs, ys)
        xs, ys = jax.device_put(xs), jax.device_put(ys)
        jax.block_until_ready((xs, ys))
        t0 = time.perf_counter()
        out = self._compiled_epoch(self.params, self.rest, self.opt_state, xs, ys)
        jax.block_until_ready(out)
        elapsed = time.perf_counter() - t0
        self.params, self.rest, self.opt_state, losses, metrics = out
        return np.asarray(losses), np.asarray(metrics), elapsed

    def evaluate(self, x, y, batch_size: int = 1024) -> tuple[float, float]:
        """Mean loss and accuracy (NaN for regression) over ``x``, ``y``."""
        total_loss, total_metric, n = 0.0, 0.0, 0
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            loss, metric = self._eval(self.params, self.rest, xb, yb)
            total_loss += float(loss)
            total_metric += float(metric)
            n += len(xb)
        acc = total_metric / n if self.task == "classification" else float("nan")
        return total_loss / n, acc

    def model(self) -> nnx.Module:
        """The trained model (train mode)."""
        return self._merge(self._graph, self.params, self.rest)
