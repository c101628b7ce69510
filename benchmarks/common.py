"""Shared helpers of the benchmark scripts: problems, compiled blocks, interleaved timing.

The measuring approach of every script:

* a *block* is ``steps`` training steps compiled as one ``lax.scan`` (one jitted
  call); koopax methods take one snapshot per block (``snapshot_every = steps``,
  i.e. KGA-Epoch with a block as the "epoch");
* every method is compiled, then trained until its snapshot window is full, so the
  timed blocks include acceleration, DMD refreshes, mask decisions and jumps;
* repeats are interleaved (one block of every method per repeat) so that machine
  noise hits every method alike; times are medians over repeats;
* ratios are always between methods measured side by side in the same run.

The runner is the harness's (:class:`examples.train.Runner`, re-exported here with
:class:`examples.train.Task`): one training loop for the harness and the benchmarks.

Not a script: imported by :mod:`benchmarks.overhead`, :mod:`benchmarks.memory`,
the overhead benchmark.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples import methods as registry
from examples.train import Runner, Task, model_task

#: The ~1.07M-parameter MLP (784-1024-256-10) of the step-time figures.
MLP_SIZES = (784, 1024, 256, 10)
#: Default learning rates of the base optimizers.
BASE_LEARNING_RATES = {"adam": 1e-3, "sgd": 0.05}


# ----------------------------------------------------------------------------- problems
def mlp_params(key, sizes):
    """A list of ``{"w", "b"}`` layers, ``w ~ N(0, 1 / fan_in)``, ``b = 0``."""
    params = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        k = jax.random.fold_in(key, i)
        params.append({"w": jax.random.normal(k, (a, b)) / np.sqrt(a), "b": jnp.zeros(b)})
    return params


def mlp_loss(params, x, y):
    """Mean softmax cross-entropy of a ReLU MLP."""
    h = x
    for layer in params[:-1]:
        h = jax.nn.relu(h @ layer["w"] + layer["b"])
    logits = h @ params[-1]["w"] + params[-1]["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def mlp_size(sizes) -> int:
    """Number of parameters (weights and biases) of an MLP with layer widths ``sizes``."""
    return int(sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:])))


def scaled_mlp_sizes(target: float, sizes=MLP_SIZES) -> tuple:
    """``sizes`` with every width but the output scaled to about ``target`` parameters."""
    if not target >= 100:
        raise ValueError(f"target must be >= 100 parameters; got {target!r}.")
    scale = math.sqrt(target / mlp_size(sizes))
    return tuple(max(1, round(s * scale)) for s in sizes[:-1]) + (sizes[-1],)


def mlp_shapes(sizes) -> dict:
    """``{"l1": {"w": (a, b), "b": (b,)}, ...}``: the leaf shapes of an MLP."""
    return {f"l{i + 1}": {"w": (a, b), "b": (b,)}
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))}


def quadratic_problem(sizes=MLP_SIZES, seed=0):
    """``(params, hess, target)`` of the loss ``1/2 sum h (w - w*)^2`` on MLP-shaped leaves.

    ``w ~ N(0, 1)``, ``h ~ U(0.01, 0.2)``, ``w* = w + N(0, 1)`` (every leaf,
    biases included). Fixed draws (reproducible).
    """
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s), jnp.float32),
                          mlp_shapes(sizes), is_leaf=lambda x: isinstance(x, tuple))
    hess = jax.tree.map(lambda p: jnp.asarray(rng.uniform(0.01, 0.2, size=p.shape), jnp.float32),
                        params)
    target = jax.tree.map(lambda p: p + jnp.asarray(rng.normal(size=p.shape), jnp.float32),
                          params)
    return params, hess, target


def _mlp_grad(params, rest, consts, batch):
    del consts
    loss, grads = jax.value_and_grad(mlp_loss)(params, *batch)
    return loss, grads, rest, jnp.zeros((), jnp.float32)


def image_batches(steps, batch, shape, seed=0):
    """``(xs, ys)``: ``steps`` batches of ``N(0, 1)`` inputs of ``shape`` and 10-class labels."""
    rng = np.random.default_rng(seed)
    xs = jnp.asarray(rng.normal(size=(steps, batch) + tuple(shape)), jnp.float32)
    ys = jnp.asarray(rng.integers(0, 10, size=(steps, batch)), jnp.int32)
    return xs, ys


def mlp_task(sizes=MLP_SIZES, *, batch, steps, seed=0) -> Task:
    """Cross-entropy training of a ReLU MLP on random inputs and labels."""
    params = mlp_params(jax.random.key(seed), sizes)
    data = image_batches(steps, batch, (sizes[0],), seed)
    name = f"mlp{tuple(sizes)}-batch{batch}-steps{steps}"
    return Task(name, params, (), (), data, steps, _mlp_grad)


def _quadratic_grad(params, rest, consts, batch):
    # The loss value is not computed: the methods timed on this problem (KGA and
    # its masked variants) do not read it, and the base step stays one pass.
    del batch
    hess, target = consts
    grads = jax.tree.map(lambda w, h, t: h * (w - t), params, hess, target)
    zero = jnp.zeros((), jnp.float32)
    return zero, grads, rest, zero


def quadratic_task(sizes=MLP_SIZES, *, steps, seed=0) -> Task:
    """The diagonal quadratic of :func:`quadratic_problem` (gradient only, no data)."""
    params, hess, target = quadratic_problem(sizes, seed)
    name = f"quadratic{tuple(sizes)}-steps{steps}"
    return Task(name, params, (), (hess, target), None, steps, _quadratic_grad)


def flax_task(model_name, *, batch, steps, image_shape=(32, 32, 3), seed=0) -> Task:
    """Cross-entropy training of a tiny ``examples.models`` zoo model on random images.

    The model is split as the harness splits it (:func:`examples.train.model_task`):
    ``nnx.Param`` s are the parameters, everything else (BatchNorm statistics) is ``rest``.
    """
    from examples.models import create_model

    model = create_model(model_name, num_classes=10, input_shape=tuple(image_shape),
                         size="tiny", seed=seed)
    name = f"{model_name}-tiny{tuple(image_shape)}-batch{batch}-steps{steps}"
    return model_task(model, "classification", steps=steps, name=name,
                      data=image_batches(steps, batch, image_shape, seed))


def split_flax_model(model_name, image_shape=(32, 32, 3), seed=0, abstract=False):
    """``(graph, params, rest)`` of a tiny zoo model in train mode, as pure pytrees.

    ``abstract=True``: ``jax.ShapeDtypeStruct`` leaves (``nnx.eval_shape``, no compute).
    """
    from flax import nnx

    from examples.models import create_model

    def create():
        return create_model(model_name, num_classes=10, input_shape=tuple(image_shape),
                            size="tiny", seed=seed)

    model = nnx.eval_shape(create) if abstract else create()
    model.train()
    graph, params, rest = nnx.split(model, nnx.Param, ...)
    return graph, nnx.as_pure(params), nnx.as_pure(rest)


# ----------------------------------------------------------------------------- optimizers
# Every method is the registry's (examples.methods), on the step clock: a snapshot every
# ``steps`` steps (one per timed block), the run's length unknown to it.
def method(name: str, options: dict, steps: int):
    """The registry's koopax method ``name`` with ``options``, a snapshot every ``steps``
    steps (``clock='steps'`` where the method has a clock)."""
    entry = registry.method(name)
    options = dict(options)
    if "clock" in entry.options():
        options.setdefault("clock", "steps")
    return entry.build(options, steps)


def base_optimizer(name: str, learning_rate: float | None = None):
    """``optax.adam`` or ``optax.sgd`` (default learning rate from :data:`BASE_LEARNING_RATES`)."""
    if name not in BASE_LEARNING_RATES:
        raise ValueError(f"base must be one of {sorted(BASE_LEARNING_RATES)}; got {name!r}.")
    lr = BASE_LEARNING_RATES[name] if learning_rate is None else learning_rate
    return registry.make_base_optimizer(name, lr)


def optimizer(base: str, learning_rate: float | None, name: str, options: dict | None,
              steps: int):
    """:func:`base_optimizer` alone (``name='base'``, accepting ``value=``) or
    ``optax.chain(base, method(name, options, steps))``."""
    tx = base_optimizer(base, learning_rate)
    if name == "base":
        return registry.build_optimizer("base", tx, None, steps)
    return optax.chain(tx, method(name, options or {}, steps))


# ----------------------------------------------------------------------------- running
# The runner is the harness's (examples.train.Runner): a task's block of ``steps``
# training steps compiled as one ``lax.scan``; ``Runner.run()`` trains one block.


class RunnerPool:
    """Warmed-up runners, shared between benchmark sections by (task name, method name)."""

    def __init__(self):
        self._runners: dict[tuple[str, str], Runner] = {}

    def get(self, task: Task, name: str, make_tx: Callable[[], Any], warmup_blocks: int) -> Runner:
        """The runner of method ``name`` on ``task`` (built on first use), warmed up."""
        key = (task.name, name)
        if key not in self._runners:
            self._runners[key] = Runner(task, make_tx(), name)
        runner = self._runners[key]
        runner.warm_up(warmup_blocks)
        return runner

    def drop(self, task_name: str) -> None:
        """Forgets the runners of ``task_name`` (frees their buffers)."""
        for key in [k for k in self._runners if k[0] == task_name]:
            del self._runners[key]


def time_interleaved(runners: dict[str, Runner], repeats: int) -> dict[str, list[float]]:
    """Seconds per step of one block of every runner, ``repeats`` rounds, interleaved."""
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, runner in runners.items():
            times[name].append(runner.run().seconds_per_step)
    return times


def median_call(fn, args, repeats: int) -> float:
    """Median wall time (seconds) of ``fn(*args)`` after one untimed call (compilation)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def step_stats(times: list[float], base_times: list[float]) -> dict:
    """Median step time and its ratio to the base: of the medians (``ratio``), the median,
    min and max of the paired ratios (each repeat's block over the base's block of the
    same round) and of the fastest blocks (``ratio_best``: other processes on a shared
    machine only ever add time, so the fastest block is the least disturbed)."""
    med, base = float(np.median(times)), float(np.median(base_times))
    paired = np.asarray(times) / np.asarray(base_times)
    return {"ms_per_step": 1e3 * med, "ms_per_step_best": 1e3 * float(np.min(times)),
            "ratio": med / base, "ratio_best": float(np.min(times) / np.min(base_times)),
            "ratio_paired": float(np.median(paired)), "ratio_paired_min": float(paired.min()),
            "ratio_paired_max": float(paired.max()), "times_s": [float(t) for t in times]}


DIAGNOSTIC_FIELDS = ("num_refreshes", "num_stable", "num_nonfinite", "compact",
                     "masked_fraction", "num_kept", "num_overflow", "num_jumps",
                     "num_rollbacks", "stopped", "accepted_ratio")


def diagnostics(state) -> dict:
    """Scalar diagnostics of a koopax state: the fields of :data:`DIAGNOSTIC_FIELDS` it
    has (:func:`examples.methods.read_diagnostics`)."""
    if state is None:
        return {}
    found = registry.read_diagnostics(state, {field: field for field in DIAGNOSTIC_FIELDS})
    return {k: v for k, v in found.items() if not isinstance(v, list)}


# ----------------------------------------------------------------------------- sizes
def tree_bytes(tree) -> int:
    """Bytes of the array leaves of ``tree`` (arrays or ``jax.ShapeDtypeStruct`` s)."""
    return int(sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(tree)))


def abs_quantile(params, q: float) -> float:
    """The ``q``-quantile of ``|w|`` over all leaves of ``params``."""
    values = np.concatenate([np.abs(np.ravel(np.asarray(x))) for x in jax.tree.leaves(params)])
    return float(np.quantile(values, q))
