"""KGA overhead figures for the core issue, measured side by side in one run.

* step time of ``chain(adam, kga)`` / ``adam`` on an MLP of ~1M parameters
  (a real training step: forward, backward, optimizer), KGA-Epoch
  (``snapshot_every`` = steps per epoch);
* DMD refresh time / the time of one pass over the snapshot buffer;
* optimizer-state bytes / parameter bytes for kga and efficient kga.

Usage: ``python benchmarks/kga_overhead.py [--steps-per-epoch 100] [--repeats 7]``
Prints medians over repeats. Pure JAX (no flax) so it runs with the core install.
"""

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
from benchmarks.common import mlp_loss, mlp_params  # noqa: E402
from koopax import snapshots, tree_math  # noqa: E402
from koopax.kga import acceleration_operator  # noqa: E402


def make_epoch(tx):
    @jax.jit
    def epoch(p, s, data):
        def body(carry, batch):
            p, s = carry
            loss, g = jax.value_and_grad(mlp_loss)(p, *batch)
            u, s = tx.update(g, s, p, value=loss)
            return (optax.apply_updates(p, u), s), loss
        return jax.lax.scan(body, (p, s), data)[0]
    return epoch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps-per-epoch", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--num-snapshots", type=int, default=6)
    args = ap.parse_args(argv)

    sizes = [784, 1024, 256, 10]  # ~1.07M parameters
    params = mlp_params(jax.random.key(0), sizes)
    n = tree_math.tree_size(params)
    steps = args.steps_per_epoch
    rng = np.random.default_rng(0)
    data = (jnp.asarray(rng.normal(size=(steps, args.batch, 784)), jnp.float32),
            jnp.asarray(rng.integers(0, 10, size=(steps, args.batch)), jnp.int32))
    print(f"MLP {sizes}: {n:,} parameters, batch {args.batch}, {steps} steps/epoch, "
          f"jax {jax.__version__} on {jax.devices()[0].platform}")

    kga_kw = dict(num_snapshots=args.num_snapshots, snapshot_every=steps)
    methods = {
        "adam": optax.adam(1e-3),
        "adam+kga": optax.chain(optax.adam(1e-3), koopax.kga(1.0, **kga_kw)),
        "adam+kga(efficient)": optax.chain(optax.adam(1e-3), koopax.kga(1.0, efficient=True, **kga_kw)),
        "adam+kga(efficient,r=2)": optax.chain(
            optax.adam(1e-3), koopax.kga(1.0, efficient=True, rank=2, **kga_kw)),
        # alpha = 0: snapshots and refreshes only, the per-step projection is skipped.
        "adam+kga(alpha=0)": optax.chain(optax.adam(1e-3), koopax.kga(0.0, **kga_kw)),
    }
    # Warm up: compile, then train until KGA's window is full and it
    # accelerates; timed epochs continue from there. Repeats are interleaved
    # so that machine noise hits every method alike.
    epochs = {name: make_epoch(tx) for name, tx in methods.items()}
    carries = {}
    for name, tx in methods.items():
        carry = (params, tx.init(params))
        for _ in range(args.num_snapshots + 1):
            carry = jax.block_until_ready(epochs[name](*carry, data))
        carries[name] = carry
    results = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name in methods:
            t0 = time.perf_counter()
            carries[name] = jax.block_until_ready(epochs[name](*carries[name], data))
            results[name].append((time.perf_counter() - t0) / steps)
    base = np.median(results["adam"])
    print("\nstep time (median over repeats, after warm-up; ratio measured in this run)")
    for name, ts in results.items():
        print(f"  {name:24s} {1e3 * np.median(ts):8.3f} ms/step   x{np.median(ts) / base:6.3f}")
    kstate = carries["adam+kga"][1][1]
    print(f"  (kga refreshes {int(kstate.num_refreshes)}, stable modes {int(kstate.num_stable)}, "
          f"eigenvalues {np.round(np.asarray(kstate.eigenvalues), 3)})")

    # Refresh vs one pass over the snapshot buffer.
    window = kstate.window
    refresh = jax.jit(lambda g: acceleration_operator(g, epsilon=1e-2, rank=None, num_features=n))
    push = jax.jit(snapshots.push)
    one_pass = jax.jit(lambda w: tree_math.tree_inner_products(w.increments, w.last))

    def med(fn, *a):
        jax.block_until_ready(fn(*a))
        ts = []
        for _ in range(max(args.repeats, 5)):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*a))
            ts.append(time.perf_counter() - t0)
        return np.median(ts)

    t_ref = med(refresh, window.gram)
    t_pass = med(one_pass, window)
    t_push = med(push, window, carries["adam+kga"][0])
    print("\nDMD refresh (h x h algebra) vs one pass over the buffer "
          f"({len(window.increments)} increments x {n:,})")
    print(f"  refresh {1e3 * t_ref:.3f} ms, one pass {1e3 * t_pass:.3f} ms, "
          f"ratio x{t_ref / t_pass:.2f}; snapshot push (incremental Gram) {1e3 * t_push:.3f} ms "
          f"= x{t_push / t_pass:.2f} one pass")

    pbytes = sum(x.nbytes for x in jax.tree.leaves(params))
    print("\noptimizer-state bytes / parameter bytes (koopax state only)")
    for label, kw in [("kga", {}), ("kga bf16 increments", dict(snapshot_dtype=jnp.bfloat16)),
                      ("kga efficient (rank 2)", dict(efficient=True, rank=2)),
                      ("kga efficient (default basis)", dict(efficient=True))]:
        shapes = jax.eval_shape(koopax.kga(1.0, **kga_kw, **kw).init, params)
        sbytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))
        print(f"  {label:30s} x{sbytes / pbytes:.3f}")


if __name__ == "__main__":
    main()
