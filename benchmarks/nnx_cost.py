"""What koopax costs on the README's ``nnx.Optimizer`` path, against a plain ``jax.jit`` step.

A small CNN on the scikit-learn digits (8 x 8), AdamW, batch 64. For each
transformation (the base alone, ``chain(base, koopax.kga())``,
``chain(base, koopax.pdt())``, every one with a snapshot per epoch and
``value=loss``) and each path:

* ``nnx``: ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` and an ``nnx.jit`` step
  calling ``optimizer.update(model, grads, value=loss)``;
* ``nnx_cached``: the same step through ``nnx.cached_partial(step, model, optimizer)``;
* ``jit``: the same model split once (``nnx.split``), a ``jax.jit`` step on
  ``(params, opt_state)`` with donated buffers.

Reported: compile time (the first step, traced and compiled, after a warm-up
of JAX itself), the median step time over interleaved epochs (every variant
runs one epoch per round, in turn), both as ratios to the base on the same
path, and the optimizer state's leaf count.

Run ``python -m benchmarks nnx_cost`` (``--rounds``; writes ``nnx_cost.json``).
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import koopax
from benchmarks import cli
from examples.datasets import load_dataset

BATCH = 64


class SmallCNN(nnx.Module):
    """conv 3x3 (16) - relu - conv 3x3 (32) - relu - dense (10) on 8 x 8 x 1 images."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 16, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(16, 32, (3, 3), rngs=rngs)
        self.head = nnx.Linear(8 * 8 * 32, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.conv1(x))
        x = nnx.relu(self.conv2(x))
        return self.head(x.reshape(x.shape[0], -1))


def _loss(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def transformations(steps_per_epoch: int) -> dict:
    base = lambda: optax.adamw(1e-3)
    return {
        "base": lambda: optax.with_extra_args_support(base()),
        "kga": lambda: optax.chain(base(), koopax.kga(snapshot_every=steps_per_epoch)),
        "pdt": lambda: optax.chain(base(), koopax.pdt(snapshot_every=steps_per_epoch)),
    }


def nnx_runner(make_tx, cached: bool = False):
    """The ``nnx.Optimizer`` path; ``cached``: through ``nnx.cached_partial`` (the
    graph is traversed once, not at every call)."""
    model = SmallCNN(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, make_tx(), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(_loss)(model, x, y)
        optimizer.update(model, grads, value=loss)
        return loss

    leaves = len(jax.tree.leaves(nnx.state(optimizer.opt_state)))
    if cached:
        return nnx.cached_partial(step, model, optimizer), leaves
    return (lambda x, y: step(model, optimizer, x, y)), leaves


def jit_runner(make_tx):
    graphdef, params = nnx.split(SmallCNN(nnx.Rngs(0)), nnx.Param)
    tx = make_tx()
    carry = [params, tx.init(params)]

    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(
            lambda p: _loss(nnx.merge(graphdef, p), x, y))(params)
        updates, opt_state = tx.update(grads, opt_state, params, value=loss)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1))

    def run(x, y):
        carry[0], carry[1], loss = step(carry[0], carry[1], x, y)
        return loss

    return run, len(jax.tree.leaves(carry[1]))


PATHS = {"nnx": nnx_runner, "nnx_cached": functools.partial(nnx_runner, cached=True),
         "jit": jit_runner}


def measure(rounds: int) -> dict:
    data = load_dataset("digits")
    x = jnp.asarray(np.asarray(data.x_train).reshape(-1, 8, 8, 1), jnp.float32)
    y = jnp.asarray(data.y_train)
    steps = len(x) // BATCH
    batches = [(x[i * BATCH:(i + 1) * BATCH], y[i * BATCH:(i + 1) * BATCH])
               for i in range(steps)]
    jax.block_until_ready(jax.jit(lambda a: a * 2)(x))     # JAX's own start-up
    runners, compile_s, leaves = {}, {}, {}
    for path, make_runner in PATHS.items():
        for name, make_tx in transformations(steps).items():
            run, leaves[path, name] = make_runner(make_tx)
            t0 = time.perf_counter()
            jax.block_until_ready(run(*batches[0]))
            compile_s[path, name] = time.perf_counter() - t0
            runners[path, name] = run
    times = {key: [] for key in runners}
    for _ in range(rounds):
        for key, run in runners.items():
            t0 = time.perf_counter()
            for xb, yb in batches:
                loss = run(xb, yb)
            jax.block_until_ready(loss)
            times[key].append((time.perf_counter() - t0) / steps)
    rows = []
    for path, name in runners:
        step_s = statistics.median(times[path, name])
        base_s = statistics.median(times[path, "base"])
        rows.append(dict(path=path, method=name, step_ms=1e3 * step_s,
                         step_ratio=step_s / base_s,
                         step_ratio_range=[min(a / b for a, b in zip(times[path, name],
                                                                     times[path, "base"])),
                                           max(a / b for a, b in zip(times[path, name],
                                                                     times[path, "base"]))],
                         compile_s=compile_s[path, name],
                         compile_ratio=compile_s[path, name] / compile_s[path, "base"],
                         state_leaves=leaves[path, name]))
    return dict(environment=dict(jax=jax.__version__, platform=jax.default_backend(),
                                 devices=jax.device_count()),
                steps_per_epoch=steps, rounds=rounds, rows=rows)


def table(result: dict) -> str:
    lines = ["| path | method | step (ms) | step / base [min-max] | compile (s) | "
             "compile / base | state leaves |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lo, hi = r["step_ratio_range"]
        lines.append(f"| {r['path']} | {r['method']} | {r['step_ms']:.2f} | "
                     f"{r['step_ratio']:.2f} [{lo:.2f}-{hi:.2f}] | {r['compile_s']:.2f} | "
                     f"{r['compile_ratio']:.2f} | {r['state_leaves']} |")
    return "\n".join(lines)


def run(args) -> dict:
    result = measure(args.rounds)
    print(table(result))
    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, "nnx_cost.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {path}")
    return result


BENCHMARK = cli.Benchmark(
    "nnx_cost", run, description=__doc__.splitlines()[0], epilog=__doc__, options=(
        cli.Option("--rounds", 15, "interleaved epochs per variant", type=cli.positive_int,
                   quick=2),
    ))


def main(argv=None) -> dict:
    return cli.main(BENCHMARK, argv)


if __name__ == "__main__":
    main()
