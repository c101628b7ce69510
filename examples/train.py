"""The training harness: one runner and ``train_and_evaluate(config, workdir)``.

:class:`Runner` is the one training loop of the repository: the harness
(:mod:`examples.compare`), the benchmarks (:mod:`benchmarks.common`,
:mod:`benchmarks.convergence`) and the tests all train through it. It holds a
:class:`Task` (parameters, non-trainable state, a gradient function) and an
Optax ``tx``, compiles a *block* of steps as one jitted ``lax.scan`` and times
it:

* the block is compiled ahead of time (``jit(...).lower(...).compile()``)
  before anything is timed; compile time is reported separately;
* the timer brackets only the call of the compiled block and a
  ``block_until_ready`` on its outputs (data transfer, evaluation and the
  read-out of diagnostics happen outside it);
* every step passes ``value=loss`` to ``tx.update``, so transformations that
  read the loss (``koopax.pdt``, the prediction baselines) receive it.

:func:`train_and_evaluate` trains the base optimizer (``base``, and optionally
the base at other learning rates, rows ``base@F*lr``) and every method of
``config.methods`` chained after it, over ``config.seeds`` seeds. Every seed
uses the same initialisation and batch order for all of them (paired runs),
and their epochs are interleaved (epoch e of every run, then epoch e + 1), so
that machine noise hits every method alike and time ratios are side by side.
``config.extra_rows`` adds rows with another base optimizer (and optionally a
method on top of it), interleaved the same way: e.g. schedule-free AdamW beside
the tuned AdamW. Summaries, tables and plots are :mod:`examples.report`'s.

An "epoch" is one block of steps: one pass over the training data by default,
or ``config.steps_per_epoch`` steps drawn from a stream of passes (the step-based
training of the language model: 1500 steps evaluated every 50 are 30 "epochs").
Evaluation (on the test or validation split) follows every block, at the
parameters :func:`examples.methods.eval_params` gives (a schedule-free base's
averaged iterate).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples import methods as registry
from examples import report, tune

__all__ = [
    "Block",
    "Config",
    "Runner",
    "TASK_KINDS",
    "TARGETS",
    "Task",
    "base_lr_name",
    "batch_stream",
    "epoch_batches",
    "flops_of",
    "load_data",
    "model_factory",
    "model_task",
    "task_kind",
    "train_and_evaluate",
]

DEFAULT_METHODS = ("kga", "kga_efficient") + (("pdt",) if "pdt" in registry.METHODS else ())
#: The losses a run's target can be on: the epoch-mean training loss or the loss on
#: the test (validation) split after each epoch.
TARGETS = ("train_loss", "test_loss")
#: The keys of an :attr:`Config.extra_rows` entry.
EXTRA_ROW_KEYS = frozenset({"optimizer", "learning_rate", "method", "options"})


# ------------------------------------------------------------------------------ config
@dataclasses.dataclass(frozen=True)
class Config:
    """What :func:`train_and_evaluate` runs. ``Config()`` is the main job.

    The main job: digits, MLP(64-256-10), SGD. ``learning_rate``: SGD's training
    loss after 30 epochs kept improving over lr in {0.02, 0.05, 0.1, 0.2, 0.3,
    0.5, 1.0}; 0.5 is taken (97 % test accuracy, well inside the stable range).

    Attributes:
      dataset, data_path: :func:`examples.datasets.load_dataset`'s name and ``path``.
      train_subset: train on the first N training examples only (``None``: all).
      model, size, hidden: :func:`examples.models.create_model`'s name and size;
        ``hidden`` the MLP's hidden sizes (``mlp`` only). A VAE (``conv_vae``) is
        trained as the ``'vae'`` task on the dataset's inputs (labels unused),
        every other model as the dataset's own task (:func:`task_kind`).
      optimizer, learning_rate, schedule: the base optimizer
        (:func:`examples.methods.make_base_optimizer`).
      batch_size, epochs, seeds: seeds are ``0, ..., seeds - 1``.
      methods: names of :data:`examples.methods.METHODS`, each chained after the base.
      options: per method, its options (``{'kga': {'rank': 3}}``), over the
        registry's defaults; a key the method does not accept is an error.
      base_lr_factors: also train the base at ``learning_rate * f`` (rows ``base@f*lr``).
      non_iid: class-sorted batches.
      steps_per_epoch: steps per "epoch" (one training block, followed by an
        evaluation); ``None``: one pass over the training data. Otherwise the
        batches are a stream of passes (:func:`batch_stream`) cut into blocks of
        this many steps, e.g. 50 for a 1500-step run evaluated 30 times.
      target: the loss time-to-target is measured on (:data:`TARGETS`):
        ``'train_loss'`` (the base's best epoch-mean training loss) or
        ``'test_loss'`` (its best loss on the test/validation split); also the
        score of the learning-rate sweep.
      extra_rows: more rows, each ``name -> {'optimizer': a base optimizer,
        'learning_rate': its rate (default ``learning_rate``), 'method': a method
        chained after it (optional), 'options': the method's options}``, trained
        beside the others with ``schedule``; a row the sweep does not tune.
      tune_lr: first sweep the base's learning rate by factors of 2 from
        ``learning_rate`` until the best is interior (:mod:`examples.tune`, at
        most ``tune_max_steps`` steps), then train everything at the best rate.
      plots: write the PNG plots; progress: show progress bars.
    """

    dataset: str = "digits"
    data_path: str | None = None
    train_subset: int | None = None
    model: str = "mlp"
    size: str = "full"
    hidden: tuple[int, ...] | None = None
    optimizer: str = "sgd"
    learning_rate: float = 0.5
    schedule: str = "constant"
    batch_size: int = 64
    epochs: int = 30
    seeds: int = 3
    methods: tuple[str, ...] = DEFAULT_METHODS
    options: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    base_lr_factors: tuple[float, ...] = ()
    non_iid: bool = False
    steps_per_epoch: int | None = None
    target: str = "train_loss"
    extra_rows: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    tune_lr: bool = False
    tune_max_steps: int = 6
    plots: bool = True
    progress: bool = True

    def __post_init__(self):
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "base_lr_factors", tuple(self.base_lr_factors))
        object.__setattr__(self, "options", {m: dict(o) for m, o in self.options.items()})
        if self.hidden is not None:
            object.__setattr__(self, "hidden", tuple(self.hidden))
            if self.model != "mlp":
                raise ValueError(f"hidden applies to model 'mlp' only; got model {self.model!r}.")
        for name in ("batch_size", "epochs", "seeds", "tune_max_steps"):
            registry.check_positive(getattr(self, name), name, integer=True)
        for name in ("train_subset", "steps_per_epoch"):
            if getattr(self, name) is not None:
                registry.check_positive(getattr(self, name), name, integer=True)
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}; got {self.target!r}.")
        registry.check_positive(self.learning_rate, "learning_rate")
        if self.optimizer not in registry.BASE_OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {registry.BASE_OPTIMIZERS}; "
                             f"got {self.optimizer!r}.")
        if self.schedule not in registry.SCHEDULES:
            raise ValueError(f"schedule must be one of {registry.SCHEDULES}; "
                             f"got {self.schedule!r}.")
        unknown = [m for m in self.methods if m not in registry.METHODS]
        if unknown:
            raise ValueError(f"methods: unknown {unknown}; available: {sorted(registry.METHODS)}.")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods: duplicates in {list(self.methods)}.")
        stray = sorted(set(self.options) - set(self.methods))
        if stray:
            raise ValueError(f"options: methods {stray} are not in methods {list(self.methods)}.")
        for name in self.methods:   # unknown options, missing required ones
            registry.options_for(name, self.options.get(name))
        for f in self.base_lr_factors:
            registry.check_positive(f, "base_lr_factors")
            if f == 1.0:
                raise ValueError("base_lr_factors: factor 1 is the base run itself.")
        object.__setattr__(self, "extra_rows", {
            name: self._extra_row(name, row) for name, row in self.extra_rows.items()})

    def _extra_row(self, name, row) -> dict[str, Any]:
        """An :attr:`extra_rows` entry, checked and completed."""
        taken = {"base", *self.methods, *map(base_lr_name, self.base_lr_factors)}
        if not isinstance(name, str) or not name or name in taken:
            raise ValueError(f"extra_rows: row name {name!r} is empty or taken by "
                             f"{sorted(taken)}.")
        if not isinstance(row, Mapping) or "optimizer" not in row \
                or set(row) - EXTRA_ROW_KEYS:
            raise ValueError(f"extra_rows: row {name!r} must be a mapping with 'optimizer' "
                             f"and keys from {sorted(EXTRA_ROW_KEYS)}; got {row!r}.")
        if row["optimizer"] not in registry.BASE_OPTIMIZERS:
            raise ValueError(f"extra_rows: row {name!r}: optimizer must be one of "
                             f"{registry.BASE_OPTIMIZERS}; got {row['optimizer']!r}.")
        out = dict(optimizer=row["optimizer"], method=row.get("method"),
                   learning_rate=registry.check_positive(
                       row.get("learning_rate", self.learning_rate),
                       f"extra_rows[{name!r}].learning_rate"),
                   options=dict(row.get("options") or {}))
        if out["method"] is not None:
            registry.options_for(out["method"], out["options"])
        elif out["options"]:
            raise ValueError(f"extra_rows: row {name!r} has options but no method.")
        return out

    def row_names(self) -> list[str]:
        """The rows :func:`train_and_evaluate` trains, in order: ``'base'``, the
        ``base@f*lr`` rows, the methods, the extra rows."""
        return ["base", *map(base_lr_name, self.base_lr_factors), *self.methods,
                *self.extra_rows]

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)

    def quick(self) -> Config:
        """A smoke test of this config: 1 epoch (one pass), 1 seed, tiny model, 4 batches
        of data."""
        return self.replace(epochs=1, seeds=1, size="tiny", train_subset=4 * self.batch_size,
                            steps_per_epoch=None)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def base_lr_name(factor: float) -> str:
    """Row name of the base optimizer trained at ``factor`` times the learning rate."""
    return f"base@{factor:g}*lr"


# ------------------------------------------------------------------------------ tasks
class Task(NamedTuple):
    """A training problem for :class:`Runner`.

    Attributes:
      name: identifies the task (the benchmarks share runners by task name).
      params: the trainable pytree (the optimizer sees this).
      rest: non-trainable state threaded through the steps (BatchNorm statistics).
      consts: fixed arrays passed to every block (not returned, not donated).
      data: one block of stacked batches (leading axis ``steps``), or ``None``
        (the block is then called with the batches of :meth:`Runner.run`, or
        with none when the gradient needs no data).
      steps: steps per block (``None``: the leading axis of the block's batches).
      grad_fn: ``grad_fn(params, rest, consts, batch) -> (loss, grads, rest, metric)``.
      eval_fn: ``eval_fn(params, rest, consts, x, y) -> (loss_sum, metric_sum)``
        over a batch, for :meth:`Runner.evaluate` (optional).
      loss_fn: ``loss_fn(params, rest, x, y) -> (loss, (metric, rest))`` in train
        mode (optional; e.g. for loss landscapes).
    """

    name: str
    params: Any
    rest: Any
    consts: Any
    data: Any
    steps: int | None
    grad_fn: Callable
    eval_fn: Callable | None = None
    loss_fn: Callable | None = None


#: The task kinds of :func:`model_task`.
TASK_KINDS = ("classification", "regression", "vae", "language_model")
#: The kinds whose metric is an accuracy (per example, or per token).
ACCURACY_KINDS = ("classification", "language_model")
#: Stream tag of the VAE's reparameterisation noise (``fold_in`` of the seed's key), so
#: that the noise is not the initialisation's stream (``nnx.Rngs(seed)``).
_NOISE_STREAM = 0x7AE


def task_kind(model: str, data) -> str:
    """The :func:`model_task` kind of training ``model`` (a zoo name) on ``data``:
    ``'vae'`` for the VAE models, else the dataset's own task."""
    from examples.models import VAE_MODELS

    return "vae" if model in VAE_MODELS else data.task


def _noise_keys(seed: int):
    """``(train_key, eval_key)`` of a seed: raw ``uint32[2]`` keys (copyable, donatable)."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), _NOISE_STREAM)
    train_key, eval_key = jax.random.split(key)
    return train_key, eval_key


def _loss_and_metric(out, y, kind):
    # A language model's logits (N, T, V) and next tokens (N, T): the mean over
    # every token of the cross-entropy, the per-token accuracy.
    if kind in ACCURACY_KINDS:
        loss = optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
        metric = jnp.mean(jnp.argmax(out, -1) == y)
        return loss, metric.astype(jnp.float32)
    out = out.reshape(y.shape) if out.size == y.size else out
    return jnp.mean((out - y) ** 2), jnp.zeros((), jnp.float32)


def model_task(model, kind: str, *, steps: int | None, name: str = "model", data=None,
               seed: int = 0) -> Task:
    """The :class:`Task` of training a Flax NNX ``model``.

    ``nnx.Param`` s are the parameters, everything else (BatchNorm statistics,
    RNG counters) is ``rest``. Training runs the model in train mode,
    evaluation an eval-mode copy of its graph.

    The ``'vae'`` kind draws the reparameterisation noise from explicit keys
    carried in ``rest`` (``{'model': ..., 'key': ..., 'eval_key': ...}``, raw
    ``uint32[2]`` keys derived from ``seed``): every training step splits
    ``key`` and uses one half, so the noise of step ``t`` depends only on
    ``seed`` and ``t``, and every optimizer trained from the same task (a
    :meth:`Runner.reset` with its ``rest``) sees the same noise. Evaluation
    uses the fixed ``eval_key`` (the same noise at every epoch).

    Args:
      model: a Flax NNX module (left in train mode).
      kind: one of :data:`TASK_KINDS`: ``'classification'`` (integer labels,
        cross-entropy; metric = accuracy), ``'language_model'`` (next-token logits
        ``(N, T, V)`` against int tokens ``(N, T)``: mean cross-entropy over every
        token; metric = per-token accuracy), ``'regression'`` (mean squared error;
        metric = 0) or ``'vae'`` (a VAE ``model(x, key) -> (logits, mean,
        log_var)`` such as :class:`examples.models.ConvVAE`; loss = the negative
        ELBO per example, :func:`examples.models.vae.negative_elbo`, the batch's
        labels unused; metric = its KL term, not an accuracy).
      steps: steps per block (``None``: the batches' leading axis).
      seed: seeds the ``'vae'`` kind's noise keys (ignored by the others).
    """
    from flax import nnx

    if kind not in TASK_KINDS:
        raise ValueError(f"kind must be one of {TASK_KINDS}; got {kind!r}.")
    if not isinstance(model, nnx.Module):
        raise ValueError(f"model must be a flax.nnx.Module; got {type(model).__name__}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int; got {seed!r}.")
    if kind == "vae":
        return _vae_task(model, steps=steps, name=name, data=data, seed=int(seed))
    eval_graph, graph, params, rest = _split_modes(model)

    def loss_fn(p, r, x, y):
        m = nnx.merge(graph, p, r)
        loss, metric = _loss_and_metric(m(x), y, kind)
        _, _, new_rest = nnx.split(m, nnx.Param, ...)
        return loss, (metric, nnx.as_pure(new_rest))

    def eval_fn(p, r, consts, x, y):
        del consts
        loss, metric = _loss_and_metric(nnx.merge(eval_graph, p, r)(x), y, kind)
        n = y.shape[0]
        return loss * n, metric * n

    return Task(name, nnx.as_pure(params), nnx.as_pure(rest), (), data, steps,
                _grad_fn(loss_fn), eval_fn, loss_fn)


def _split_modes(model):
    """``(eval_graph, graph, params, rest)`` of ``model``: its eval-mode graph, then its
    train-mode split (``model`` is left in train mode)."""
    from flax import nnx

    model.eval()
    eval_graph, _, _ = nnx.split(model, nnx.Param, ...)
    model.train()
    return (eval_graph, *nnx.split(model, nnx.Param, ...))


def _grad_fn(loss_fn):
    """A :class:`Task` ``grad_fn`` from ``loss_fn(p, r, x, y) -> (loss, (metric, rest))``."""
    def grad_fn(p, r, consts, batch):
        del consts
        (loss, (metric, r)), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, r, *batch)
        return loss, grads, r, metric

    return grad_fn


def _vae_task(model, *, steps, name, data, seed) -> Task:
    """:func:`model_task`'s ``'vae'`` kind (its docstring has the noise keys)."""
    from flax import nnx

    from examples.models.vae import negative_elbo

    eval_graph, graph, params, model_rest = _split_modes(model)
    train_key, eval_key = _noise_keys(seed)
    rest = dict(model=nnx.as_pure(model_rest), key=train_key, eval_key=eval_key)

    def loss_fn(p, r, x, y):
        del y  # unsupervised: the labels are not used
        key, noise = jax.random.split(r["key"])
        m = nnx.merge(graph, p, r["model"])
        logits, mean, log_var = m(x, noise)
        terms = negative_elbo(logits, x, mean, log_var)
        _, _, new_rest = nnx.split(m, nnx.Param, ...)
        return terms.loss, (terms.kl, dict(r, model=nnx.as_pure(new_rest), key=key))

    def eval_fn(p, r, consts, x, y):
        del consts, y
        m = nnx.merge(eval_graph, p, r["model"])
        logits, mean, log_var = m(x, r["eval_key"])
        terms = negative_elbo(logits, x, mean, log_var)
        n = x.shape[0]
        return terms.loss * n, terms.kl * n

    return Task(name, nnx.as_pure(params), rest, (), data, steps, _grad_fn(loss_fn), eval_fn,
                loss_fn)


# ----------------------------------------------------------------------------- runner
class Block(NamedTuple):
    """What one trained block returns: per-step losses and metrics, wall seconds."""

    losses: np.ndarray
    metrics: np.ndarray
    seconds: float

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / max(len(self.losses), 1)


def flops_of(compiled) -> float | None:
    """FLOPs from a lowered or compiled computation's XLA cost analysis (list, dict or None)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not isinstance(cost, Mapping):
        return None
    flops = cost.get("flops")
    return None if flops is None or flops < 0 else float(flops)


def _shapes(tree):
    return jax.tree.map(lambda x: (tuple(np.shape(x)), str(getattr(x, "dtype", type(x)))), tree)


class Runner:
    """A compiled block of ``tx`` on ``task``, and its training carry.

    The runner owns copies of the parameters (they are donated to the block).
    The block is compiled on the first :meth:`run` (or :meth:`compile`); one
    compiled block serves every :meth:`reset` with parameters of the same
    shapes (e.g. other seeds).

    Attributes:
      compile_s: compile time of the block (seconds), ``None`` before compiling.
      blocks_run: blocks trained since the last :meth:`reset`.
    """

    def __init__(self, task: Task, tx, name: str = ""):
        self.task, self.tx, self.name = task, tx, name
        self._structure = _shapes((task.params, task.rest))
        self._block = self._eval = None
        self.compile_s = None
        self.reset()
        if task.data is not None:
            self.compile()

    # Pure functions ---------------------------------------------------------------
    def step(self, params, rest, opt_state, consts, batch):
        """One training step: ``(params, rest, opt_state), (loss, metric)``."""
        loss, grads, rest, metric = self.task.grad_fn(params, rest, consts, batch)
        updates, opt_state = self.tx.update(grads, opt_state, params, value=loss)
        return (optax.apply_updates(params, updates), rest, opt_state), (loss, metric)

    def block(self, params, rest, opt_state, consts, data):
        """``lax.scan`` of :meth:`step` over the block's batches ``data``."""
        def body(carry, batch):
            return self.step(*carry, consts, batch)

        return jax.lax.scan(body, (params, rest, opt_state), data, length=self.task.steps)

    # Host side --------------------------------------------------------------------
    def reset(self, params=None, rest=None) -> None:
        """Fresh copies of ``params``/``rest`` (default the task's), a fresh ``tx.init``."""
        params = self.task.params if params is None else params
        rest = self.task.rest if rest is None else rest
        if _shapes((params, rest)) != self._structure:
            raise ValueError(f"{self.name or 'runner'}: params/rest differ in structure or "
                             "shapes from the task this runner was compiled for.")
        params, rest = jax.tree.map(jnp.copy, (params, rest))
        self.carry = (params, rest, self.tx.init(params))
        self.blocks_run = 0

    def compile(self, data=None) -> float:
        """Compiles the block for batches shaped like ``data`` (default the task's)."""
        data = self.task.data if data is None else data
        t0 = time.perf_counter()
        self._block = jax.jit(self.block, donate_argnums=(0, 1, 2)).lower(
            *self.carry, self.task.consts, data).compile()
        self.compile_s = time.perf_counter() - t0
        return self.compile_s

    def run(self, data=None) -> Block:
        """Trains one block on ``data`` (default the task's); only the call is timed."""
        data = self.task.data if data is None else data
        if self._block is None:
            self.compile(data)
        data = jax.block_until_ready(jax.device_put(data))
        t0 = time.perf_counter()
        out = jax.block_until_ready(self._block(*self.carry, self.task.consts, data))
        seconds = time.perf_counter() - t0
        self.carry, (losses, metrics) = out
        self.blocks_run += 1
        return Block(np.asarray(losses), np.asarray(metrics), seconds)

    def warm_up(self, blocks: int) -> None:
        """Trains until ``blocks`` blocks have run since the last reset."""
        while self.blocks_run < blocks:
            self.run()

    def dry_run(self, data=None) -> None:
        """Runs the compiled block once on copies of the carry (results discarded).

        Takes one-time costs of a first execution out of the timed blocks.
        """
        data = self.task.data if data is None else data
        if self._block is None:
            self.compile(data)
        carry = jax.tree.map(jnp.copy, self.carry)
        jax.block_until_ready(self._block(*carry, self.task.consts, data))

    def step_flops(self, batch) -> float | None:
        """XLA's cost-analysis FLOPs of one training step on ``batch``.

        Counted on the lowered (not yet optimised) step, which costs no compilation:
        on the digits MLP 0.4 % (sgd), 2 % (kga) and 10 % (pdt) below the compiled
        step's count. The compiled count where the lowered one is missing.
        """
        lowered = jax.jit(self.step).lower(*self.carry, self.task.consts, batch)
        flops = flops_of(lowered)
        return flops_of(lowered.compile()) if flops is None else flops

    def eval_params(self):
        """The parameters evaluation uses (:func:`examples.methods.eval_params`): a
        schedule-free base's averaged iterate, else the trained parameters."""
        return registry.eval_params(self.opt_state, self.params)

    def evaluate(self, x, y, batch_size: int = 1024) -> tuple[float, float]:
        """Mean loss and metric over ``x``, ``y`` (the task's ``eval_fn``) at
        :meth:`eval_params`, in batches of ``batch_size`` examples."""
        if self.task.eval_fn is None:
            raise ValueError(f"task {self.task.name!r} has no eval_fn.")
        if self._eval is None:
            self._eval = jax.jit(self.task.eval_fn)
        params = self.eval_params()
        total_loss, total_metric, n = 0.0, 0.0, 0
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            loss, metric = self._eval(params, self.rest, self.task.consts, xb, yb)
            total_loss += float(loss)
            total_metric += float(metric)
            n += len(xb)
        return total_loss / n, total_metric / n

    def memory_stats(self) -> dict:
        """XLA's memory analysis of the compiled block (bytes; empty where unavailable)."""
        try:
            stats = self._block.memory_analysis()
        except (AttributeError, NotImplementedError, RuntimeError):
            return {}
        if stats is None:
            return {}
        return {k: int(getattr(stats, k)) for k in dir(stats)
                if k.endswith("_in_bytes") and not k.startswith("host_")}

    @property
    def params(self):
        return self.carry[0]

    @property
    def rest(self):
        return self.carry[1]

    @property
    def opt_state(self):
        return self.carry[2]

    def method_state(self):
        """The state of the koopax transformation of ``chain(base, method)`` (else None)."""
        state = self.opt_state
        if isinstance(state, tuple) and len(state) == 2 \
                and type(state[1]).__module__.partition(".")[0] == "koopax":
            return state[1]
        return None


# ------------------------------------------------------------------------------- data
def epoch_batches(x, y, batch_size: int, *, rng: np.random.Generator, non_iid: bool = False):
    """One epoch of shuffled batches stacked as ``(steps, batch, ...)`` arrays.

    Incomplete batches are dropped so that every step has the same shape.
    """
    from examples.datasets import batches

    xs, ys = [], []
    for xb, yb in batches(x, y, batch_size, rng=rng, shuffle=True, drop_last=True,
                          non_iid=non_iid):
        xs.append(np.asarray(xb))
        ys.append(np.asarray(yb))
    if not xs:
        raise ValueError(f"batch_size={batch_size} exceeds the {len(x)} training examples.")
    return np.stack(xs), np.stack(ys)


def batch_stream(x, y, batch_size: int, *, seed: int, steps: int | None = None,
                 non_iid: bool = False):
    """The blocks of training batches of one seed, an endless generator.

    Pass ``p`` over the data is :func:`epoch_batches` shuffled by
    ``np.random.default_rng([seed, p])``. ``steps=None``: each block is one pass
    (block ``e`` is pass ``e``, the harness's epochs). Otherwise the passes are
    concatenated into one stream of batches and each block is the next ``steps``
    of them, ``(steps, batch, ...)`` arrays (a block may span passes): with
    ``steps`` equal to the batches per pass the two coincide. Every method of a
    seed trains on the same blocks (paired runs).
    """
    if steps is not None:
        registry.check_positive(steps, "steps", integer=True)
    passes = itertools.count()

    def one_pass():
        rng = np.random.default_rng([seed, next(passes)])
        return epoch_batches(x, y, batch_size, rng=rng, non_iid=non_iid)

    if steps is None:
        while True:
            yield one_pass()
    xs, ys = one_pass()
    pos = 0
    while True:
        parts, need = [], steps
        while need:
            take = min(need, len(xs) - pos)
            parts.append((xs[pos:pos + take], ys[pos:pos + take]))
            pos, need = pos + take, need - take
            if pos == len(xs):
                (xs, ys), pos = one_pass(), 0
        yield tuple(np.concatenate(p) for p in zip(*parts))


def load_data(config: Config):
    """The dataset of ``config`` (its first ``train_subset`` training examples).

    digits come as 8x8x1 images for the image models
    (:data:`examples.models.IMAGE_MODELS`), flat 64-vectors otherwise.
    """
    from examples.datasets import load_dataset
    from examples.models import IMAGE_MODELS

    kwargs = {} if config.data_path is None else dict(path=config.data_path)
    if config.dataset == "digits" and config.model in IMAGE_MODELS:
        kwargs["as_images"] = True
    data = load_dataset(config.dataset, **kwargs)
    if config.train_subset is not None:
        n = min(len(data.x_train), config.train_subset)
        data = data._replace(x_train=data.x_train[:n], y_train=data.y_train[:n])
    return data


def model_factory(config: Config, data) -> Callable[[int], Any]:
    """``seed -> model`` of ``config``'s architecture for ``data``."""
    from examples.models import create_model

    num_classes = data.num_classes if data.task in ACCURACY_KINDS else (
        int(np.prod(np.shape(data.y_train)[1:])) or 1)
    input_shape = tuple(np.shape(data.x_train)[1:])
    overrides = {} if config.hidden is None else dict(hidden_sizes=config.hidden)
    if task_kind(config.model, data) == "vae":
        num_classes = None   # a VAE reconstructs its input

    def make(seed):
        return create_model(config.model, num_classes=num_classes, input_shape=input_shape,
                            size=config.size, seed=seed, **overrides)

    return make


# ------------------------------------------------------------------ train_and_evaluate
def _finite_or_none(x):
    x = float(x)
    return x if np.isfinite(x) else None


def _terminal() -> bool:
    """Whether progress goes to a terminal (tqdm's stream, stderr)."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def _progress(config, **kwargs):
    """A tqdm bar on a terminal only: in a log file its carriage returns would make one
    line of every update (a non-terminal gets :func:`_log` lines instead)."""
    from tqdm.auto import tqdm

    return tqdm(disable=not (config.progress and _terminal()), **kwargs)


def _log(config, text: str) -> None:
    """A progress line where there is no bar (``config.progress`` and not a terminal)."""
    if config.progress and not _terminal():
        print(text, flush=True)


def _rows(config) -> dict[str, dict[str, Any]]:
    """Every row of ``config``: ``name -> {optimizer, learning_rate, method, options}``
    (``method`` ``'base'`` for the base alone)."""
    rows = {"base": dict(optimizer=config.optimizer, learning_rate=config.learning_rate,
                         method="base", options=None)}
    for f in config.base_lr_factors:
        rows[base_lr_name(f)] = dict(rows["base"], learning_rate=config.learning_rate * f)
    for name in config.methods:
        rows[name] = dict(rows["base"], method=name, options=config.options.get(name))
    for name, row in config.extra_rows.items():
        rows[name] = dict(row, method=row["method"] or "base", options=row["options"] or None)
    return rows


def _runners(config, data, make_model, first, measure=True):
    """``{name: Runner}`` of every row (:func:`_rows`), compiled and warmed up
    (``measure=False``: no FLOPs count and no untimed first call, for the sweep)."""
    steps = int(first[0].shape[0])
    task = model_task(make_model(0), task_kind(config.model, data), steps=steps)
    rows = _rows(config)
    runners, info = {}, {}
    for name in _progress(config, iterable=list(rows), desc="compile", leave=False):
        row = rows[name]
        total = steps * config.epochs
        base = registry.make_base_optimizer(
            row["optimizer"], row["learning_rate"], schedule=config.schedule,
            total_steps=total)
        rate = registry.rate_schedule(row["learning_rate"], config.schedule, total)
        runner = Runner(task, registry.build_optimizer(row["method"], base, row["options"],
                                                       steps, learning_rate=rate,
                                                       total_steps=total), name)
        compile_s = runner.compile(first)
        flops = runner.step_flops(jax.tree.map(lambda a: a[0], first)) if measure else None
        if measure:
            runner.dry_run(first)
        runners[name] = runner
        info[name] = dict(compile_time=compile_s, flops_per_step=flops,
                          learning_rate=row["learning_rate"], optimizer=row["optimizer"])
    _log(config, "compiled " + ", ".join(f"{n} ({i['compile_time']:.1f} s)"
                                          for n, i in info.items()))
    return runners, info


def _train(config: Config, data, make_model, measure=True) -> dict[str, Any]:
    """Every run of every seed, epochs interleaved; returns the raw results."""
    def stream(seed):
        return batch_stream(data.x_train, data.y_train, config.batch_size, seed=seed,
                            steps=config.steps_per_epoch, non_iid=config.non_iid)

    streams = {0: stream(0)}
    first = next(streams[0])
    steps = int(first[0].shape[0])
    runners, info = _runners(config, data, make_model, first, measure)
    names, seeds = list(runners), list(range(config.seeds))
    kind = task_kind(config.model, data)
    classification = kind in ACCURACY_KINDS
    runs = {name: [] for name in names}
    bar = _progress(config, total=len(seeds) * config.epochs * len(names), desc="train",
                    unit="epoch")
    t_start = time.perf_counter()
    for seed in seeds:
        task = model_task(make_model(seed), kind, steps=steps, seed=seed)
        curves = {}
        for name, runner in runners.items():
            runner.reset(task.params, task.rest)
            curves[name] = dict(seed=seed, train_loss=[], train_acc=[], test_loss=[],
                                test_acc=[], epoch_time=[], diagnostics=[])
        batches = streams.pop(seed) if seed in streams else stream(seed)
        for epoch in range(config.epochs):
            block_data = jax.device_put(first if (seed, epoch) == (0, 0) else next(batches))
            for name, runner in runners.items():
                block = runner.run(block_data)
                test_loss, test_acc = runner.evaluate(data.x_test, data.y_test)
                c = curves[name]
                c["train_loss"].append(_finite_or_none(np.mean(block.losses)))
                c["train_acc"].append(_finite_or_none(np.mean(block.metrics))
                                      if classification else None)
                c["test_loss"].append(_finite_or_none(test_loss))
                c["test_acc"].append(_finite_or_none(test_acc) if classification else None)
                c["epoch_time"].append(block.seconds)
                c["diagnostics"].append(registry.read_diagnostics(runner.opt_state))
                bar.set_postfix_str(f"seed={seed} {name} loss={np.mean(block.losses):.4f}")
                bar.update(1)
        for name in names:
            runs[name].append(curves[name])
        _log(config, f"seed {seed}: {config.epochs} epochs of {len(names)} rows trained "
                     f"({time.perf_counter() - t_start:.1f} s since the first seed)")
    bar.close()
    return dict(names=names, seeds=seeds, steps_per_epoch=steps, info=info, runs=runs,
                target=config.target)


def train_and_evaluate(config: Config, workdir: str | None = None) -> dict[str, Any]:
    """Trains the base and every method of ``config``; summarises; writes ``workdir``.

    Returns the results: ``names`` (run rows), ``seeds``, ``steps_per_epoch``,
    ``info`` (compile time, FLOPs per step, learning rate per row), ``runs``
    (per row, per seed: the per-epoch curves and diagnostics), ``summary``
    (:func:`examples.report.summarize`), ``config``, ``dataset``,
    ``environment``, ``total_wall_time`` and ``target`` (the loss the
    time-to-target is on, ``config.target``). With a ``workdir``, writes
    ``results.json`` there and (``config.plots``) the PNG plots of
    :func:`examples.report.save_plots`.
    """
    t_start = time.perf_counter()
    data = load_data(config)
    make_model = model_factory(config, data)
    sweep = None
    if config.tune_lr:
        base_only = config.replace(methods=(), options={}, base_lr_factors=(), tune_lr=False,
                                   extra_rows={})
        sweep = tune.tune_learning_rate(
            config.learning_rate,
            lambda rate: tune.sweep_score(
                _train(base_only.replace(learning_rate=rate), data, make_model, False),
                key=config.target),
            max_steps=config.tune_max_steps)
        config = config.replace(learning_rate=sweep["learning_rate"])
    results = _train(config, data, make_model)
    results["sweep"] = sweep
    # ``task``: the kind trained (a VAE on digits is 'vae', labels unused), which
    # decides the report's columns (accuracy for 'classification' only).
    kind = task_kind(config.model, data)
    results.update(summary=report.summarize(results), config=config.to_dict(),
                   environment=report.environment(),
                   dataset=dict(name=getattr(data, "name", config.dataset), task=kind,
                                num_train=len(data.x_train), num_test=len(data.x_test)))
    results["plots"] = []
    if workdir is not None:
        os.makedirs(workdir, exist_ok=True)
        if config.plots:
            results["plots"] = report.save_plots(results, workdir, task=kind)
    results["total_wall_time"] = time.perf_counter() - t_start
    if workdir is not None:
        report.write_json(os.path.join(workdir, "results.json"), results)
    return results
