"""What PDT costs per epoch, and its jump: ``python -m benchmarks.pdt_jump``.

On a parameter tree of ``--params`` float32 weights under ``optax.sgd``, one
epoch of ``--steps`` training steps is compiled as a ``lax.scan`` (the state
donated, as a training loop's) and timed for:

* ``sgd``: the base optimizer alone;
* ``pdt, no prediction``: ``chain(sgd, koopax.pdt(...))`` on an epoch whose
  window is not full yet (a snapshot on the first step, the epoch clock on
  the others, no prediction);
* ``pdt, jump``: the same on an epoch that ends in a prediction (verdict,
  ``X c``, criteria, assembly, copy of ``w_sgd`` for the rollback);

next to one ``pass``: a linear combination of the ``h - 2`` stored increments
(``X c``), the unit of work of a prediction. The jump costs
``t(jump epoch) - t(epoch without prediction)``; the figure of issue 10 is that
cost in passes. Medians of ``--repeats`` interleaved calls.

Writes ``pdt_jump.json`` under ``--output-dir`` (default
``benchmarks/results``). ``--quick``: 1e5 parameters, 3 repeats.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import cli, common
from examples import report
from koopax._src import snapshots, tree_math


def make_params(num_params, seed=0):
    """Layers ``{"w": (n, 1024)}`` summing to about ``num_params`` weights."""
    rows = max(1, num_params // (4 * 1024))
    key = jax.random.PRNGKey(seed)
    return [{"w": jax.random.normal(jax.random.fold_in(key, i), (rows, 1024)) * 0.1}
            for i in range(4)]


def time_calls(fns, repeats):
    """Median seconds of each function, calls interleaved.

    Each entry is ``(prepare, call)``: ``prepare()`` (untimed) builds the
    arguments, fresh copies of the state, since ``call`` donates them as a
    training loop does (a state that is not donated is copied into the
    update's in-place loops on every call).
    """
    for prepare, call in fns.values():
        jax.block_until_ready(call(*prepare()))
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, (prepare, call) in fns.items():
            args = jax.block_until_ready(prepare())
            t0 = time.perf_counter()
            jax.block_until_ready(call(*args))
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


def _epoch_fn(tx, curvature, steps):
    def step(carry, _):
        params, state = carry
        grads = jax.tree.map(lambda c, w: c * w, curvature, params)
        updates, state = tx.update(grads, state, params, value=jnp.float32(1.0))
        return (optax.apply_updates(params, updates), state), None

    def epoch(params, state):
        return jax.lax.scan(step, (params, state), None, length=steps)[0]

    return jax.jit(epoch, donate_argnums=(0, 1))


def measure(num_params, repeats, steps=10, num_snapshots=6):
    params = make_params(num_params)
    curvature = jax.tree.map(lambda p: jnp.linspace(0.5, 2.0, p.size).reshape(p.shape), params)
    sgd = optax.sgd(0.05)
    tx = optax.chain(sgd, common.method("pdt", dict(start=0, num_snapshots=num_snapshots),
                                        steps))
    run_sgd, run_pdt = _epoch_fn(sgd, curvature, steps), _epoch_fn(tx, curvature, steps)
    fresh = tx.init(params)
    p, state = _copy(params), tx.init(params)
    for _ in range(num_snapshots):              # fill the window: next epoch predicts
        p, state = run_pdt(p, state)
    count = lambda st: int(st[1].stats.num_predictions)
    jumps_before = count(state)
    window = state[1].window
    coef = jnp.full((num_snapshots - 2,), 0.1, jnp.float32)
    one_pass = jax.jit(lambda w: snapshots.ring_combination(w, coef, w.last))
    fns = {
        "sgd": (lambda: (_copy(params), sgd.init(params)), run_sgd),
        "pdt_no_prediction": (lambda: (_copy(params), _copy(fresh)), run_pdt),
        "pdt_jump": (lambda: (_copy(p), _copy(state)), run_pdt),
        "pass": (lambda: (window,), one_pass),
    }
    t = time_calls(fns, repeats)
    _, after = run_pdt(_copy(p), _copy(state))
    assert count(after) == jumps_before + 1, "the timed epoch must predict"
    jump = t["pdt_jump"] - t["pdt_no_prediction"]
    return dict(num_params=tree_math.tree_size(params), steps=steps, seconds=t,
                jump_seconds=jump, jump_in_passes=jump / t["pass"],
                epoch_ratio_no_prediction=t["pdt_no_prediction"] / t["sgd"],
                epoch_ratio_jump=t["pdt_jump"] / t["sgd"])


def run(args):
    rows = [measure(int(n), args.repeats, args.steps) for n in args.params]
    print("| params | sgd epoch | pdt epoch, no prediction | pdt epoch with a jump | one pass "
          "| jump cost | jump / pass |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["seconds"]
        print(f"| {r['num_params']:.2e} | {1e3 * s['sgd']:.1f} ms "
              f"| {1e3 * s['pdt_no_prediction']:.1f} ms ({r['epoch_ratio_no_prediction']:.2f}x) "
              f"| {1e3 * s['pdt_jump']:.1f} ms ({r['epoch_ratio_jump']:.2f}x) "
              f"| {1e3 * s['pass']:.2f} ms | {1e3 * r['jump_seconds']:.1f} ms "
              f"| {r['jump_in_passes']:.1f} |")
    report.write_json(os.path.join(args.output_dir, "pdt_jump.json"), rows)
    return rows


BENCHMARK = cli.Benchmark(
    "pdt_jump", run, description=__doc__.splitlines()[0], epilog=__doc__, options=(
        cli.Option("--params", [1000000, 4000000], "parameter counts", type=cli.positive_int,
                   list=True, quick=[100000]),
        cli.Option("--repeats", 15, "interleaved timed calls", type=cli.positive_int, quick=3),
        cli.Option("--steps", 10, "steps per epoch", type=cli.positive_int),
    ))


def main(argv=None):
    return cli.main(BENCHMARK, argv)


if __name__ == "__main__":
    main()
