"""koopax in a plain JAX training loop (no Flax): regression of z = x^2 + y^2.

A 2-32-1 tanh network, parameters in a dict, one ``jax.jit`` step. The only
koopax-specific lines are the optimizer

    tx = optax.chain(optax.sgd(lr), koopax.kga(alpha, snapshot_every=steps_per_epoch))

and the call ``tx.update(grads, opt_state, params, value=loss)``: KGA needs
``params`` (it records weight snapshots); ``value`` is ignored by KGA but read
by the loss-aware transformations, so passing it always is a good habit.

Run ``python -m examples.plain_jax_loop`` (``--help`` for options); it trains
with plain SGD and with SGD + KGA from the same initialisation and batch order
and prints both training losses.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
import optax

import koopax


def make_data(num_points: int, seed: int):
    """``num_points`` samples of ``z = x^2 + y^2`` on ``[-1, 1]^2``."""
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1; got {num_points}.")
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-1.0, 1.0, (num_points, 2)).astype(np.float32)
    z = (xy ** 2).sum(-1, keepdims=True).astype(np.float32)
    return xy, z


def init_params(key, hidden: int = 32):
    """A 2-``hidden``-1 network's parameters (LeCun-normal weights, zero biases)."""
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (2, hidden)) / jnp.sqrt(2.0),
        "b1": jnp.zeros((hidden,)),
        "w2": jax.random.normal(k2, (hidden, 1)) / jnp.sqrt(float(hidden)),
        "b2": jnp.zeros((1,)),
    }


def loss_fn(params, x, z):
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean((h @ params["w2"] + params["b2"] - z) ** 2)


def train(tx, params, x, z, *, epochs: int, batch_size: int, seed: int):
    """Mini-batch training; returns the final params, state and epoch-mean losses."""
    @jax.jit
    def step(params, opt_state, xb, zb):
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, zb)
        updates, opt_state = tx.update(grads, opt_state, params, value=loss)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = tx.init(params)
    steps = len(x) // batch_size
    rng = np.random.default_rng(seed)
    history = []
    for _ in range(epochs):
        perm = rng.permutation(len(x))
        losses = []
        for i in range(steps):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            params, opt_state, loss = step(params, opt_state, x[idx], z[idx])
            losses.append(loss)
        history.append(float(jnp.mean(jnp.stack(losses))))
    return params, opt_state, history


def main(argv=None):
    """Trains SGD and SGD + KGA; prints the losses. Returns both loss curves."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--num-snapshots", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-points", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error("--epochs must be >= 1")
    if args.batch_size < 1 or args.batch_size > args.num_points:
        p.error("--batch-size must lie in [1, --num-points]")

    x, z = make_data(args.num_points, args.seed)
    params = init_params(jax.random.key(args.seed))
    steps_per_epoch = args.num_points // args.batch_size
    optimizers = {
        "sgd": optax.sgd(args.lr),
        "sgd+kga": optax.chain(
            optax.sgd(args.lr),
            koopax.kga(args.alpha, num_snapshots=args.num_snapshots,
                       snapshot_every=steps_per_epoch)),
    }
    curves = {}
    for name, tx in optimizers.items():
        t0 = time.perf_counter()
        _, state, curves[name] = train(tx, params, x, z, epochs=args.epochs,
                                       batch_size=args.batch_size, seed=args.seed)
        elapsed = time.perf_counter() - t0
        line = f"{name:8s} final loss {curves[name][-1]:.5f}  best {min(curves[name]):.5f}"
        if koopax.find_states(state):
            d = koopax.diagnostics(state)     # koopax's state, found by type
            line += (f"  (DMD refreshes {int(d['num_refreshes'])}"
                     f", stable modes {int(d['num_stable'].sum())})")
        print(line + f"  [{elapsed:.1f} s incl. compile]")
    every = max(1, args.epochs // 6)
    print("epoch  " + "  ".join(f"{n:>9s}" for n in curves))
    for e in range(0, args.epochs, every):
        print(f"{e + 1:5d}  " + "  ".join(f"{c[e]:9.5f}" for c in curves.values()))
    return curves


if __name__ == "__main__":
    main()
