"""Step-time overhead of KGA with and without a 90 % weight mask (compact mode).

Measures, on a ~1M-parameter MLP-shaped pytree with a diagonal quadratic loss
(so the optimizer step, not a forward pass, dominates), the jitted step time
of

* ``sgd``,
* ``chain(sgd, kga)``,
* ``chain(sgd, kga(mask=norm(theta, capacity=0.11)))`` with ``theta`` the
  90 % quantile of ``|w|`` at initialization (about 90 % of the weights
  masked; capacity 11 % per leaf),
* the same masked KGA with a mask that never fires (``start=10**9``): its
  full phase, the unmasked KGA algebra on a ring-buffer window,

after a warm-up long enough for the window to fill and (masked case) the
transition to compact mode, as the median over repeats of blocks of steps
(blocks include snapshot steps, so the cost is amortized). Prints the ratios
to ``sgd`` and the overhead reduction ``(r_kga - 1) / (r_masked - 1)``.

Usage: ``python benchmarks/mask_overhead.py [--repeats 15] [--block 20]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import koopax  # noqa: E402
from benchmarks import common  # noqa: E402
from koopax import masks  # noqa: E402

SHAPES = common.mlp_shapes(common.MLP_SIZES)


def problem(seed=0):
    return common.quadratic_problem(common.MLP_SIZES, seed)


def make_step(tx, hess, target):
    def step(p, st):
        g = jax.tree.map(lambda x, h, t: h * (x - t), p, hess, target)
        u, st = tx.update(g, st, p)
        return optax.apply_updates(p, u), st

    return jax.jit(step, donate_argnums=(0, 1))


def time_it(tx, params, hess, target, warmup, repeats, block):
    step = make_step(tx, hess, target)
    p, st = jax.tree.map(jnp.copy, params), tx.init(params)
    for _ in range(warmup):
        p, st = step(p, st)
    jax.block_until_ready((p, st))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(block):
            p, st = step(p, st)
        jax.block_until_ready((p, st))
        times.append((time.perf_counter() - t0) / block)
    return float(np.median(times)), st


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--snapshot-every", type=int, default=10)
    args = parser.parse_args(argv)
    params, hess, target = problem()
    n = koopax.tree_math.tree_size(params)
    theta = float(np.quantile(np.abs(np.concatenate(
        [np.ravel(x) for x in jax.tree.leaves(params)])), 0.9))
    common = dict(num_snapshots=6, snapshot_every=args.snapshot_every)
    warmup = 8 * args.snapshot_every
    sgd = optax.sgd(0.5)
    configs = {
        "sgd": sgd,
        "sgd+kga": optax.chain(sgd, koopax.kga(0.5, **common)),
        "sgd+kga(mask 90%)": optax.chain(sgd, koopax.kga(
            0.5, mask=masks.norm(theta, capacity=0.11), **common)),
        # Masked KGA whose mask never fires: the full-phase step (ring window,
        # no lax.cond copies), i.e. unmasked KGA without the shift-register copies.
        "sgd+kga(mask never)": optax.chain(sgd, koopax.kga(
            0.5, mask=masks.norm(theta, capacity=0.11, start=10**9), **common)),
    }
    print(f"params: {n:,}  devices: {jax.devices()}  snapshot_every={args.snapshot_every}")
    results = {}
    for name, tx in configs.items():
        t, st = time_it(tx, params, hess, target, warmup, args.repeats, args.block)
        results[name] = t
        extra = ""
        if name != "sgd":
            s = st[1]
            extra = f"  num_stable={int(s.num_stable)} refreshes={int(s.num_refreshes)}"
            if hasattr(s, "compact"):
                extra += (f" compact={bool(s.compact)} kept={int(s.num_kept):,} "
                          f"masked={float(s.masked_fraction):.3f} "
                          f"overflow={int(s.num_overflow):,}")
        print(f"{name:>20s}: {t * 1e3:8.3f} ms/step{extra}")
    r_full = results["sgd+kga"] / results["sgd"]
    r_mask = results["sgd+kga(mask 90%)"] / results["sgd"]
    r_ring = results["sgd+kga(mask never)"] / results["sgd"]
    print(f"ratio kga/sgd = {r_full:.2f}   ratio kga(mask)/sgd = {r_mask:.2f}   "
          f"overhead reduction = {(r_full - 1) / max(r_mask - 1, 1e-9):.1f}x")
    print(f"ratio kga(mask never: full phase)/sgd = {r_ring:.2f}   "
          f"overhead reduction vs that = {(r_ring - 1) / max(r_mask - 1, 1e-9):.1f}x")


if __name__ == "__main__":
    main()
