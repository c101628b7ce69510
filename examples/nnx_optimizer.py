"""koopax with Flax NNX: ``nnx.Optimizer`` + ``optax.chain(adam, koopax.kga(...))``.

Trains an MLP on the scikit-learn digits with

    optimizer = nnx.Optimizer(model, optax.chain(optax.adam(1e-3), koopax.kga(...)),
                              wrt=nnx.Param)
    optimizer.update(model, grads, value=loss)

``nnx.Optimizer.update(model, grads, /, **kwargs)`` (flax 0.12) forwards its
keyword arguments to ``tx.update(grads, opt_state, params, **kwargs)``, and it
always passes the parameters, which KGA needs. ``value=loss`` is required: KGA
rolls back a correction after which the loss rose (``rollback=False`` opts out).

The step is wrapped once with ``nnx.cached_partial(train_step, model,
optimizer)``: koopax's state holds a few dozen arrays, and a plain ``nnx.jit``
call walks the whole graph (model and optimizer state) in Python at every step;
the cached partial traverses it once (``python -m benchmarks.nnx_cost``).

Run ``python -m examples.nnx_optimizer`` (``--help`` for options).
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
from flax import nnx

import koopax
from examples.datasets import batches, load_dataset
from examples.models import MLP


@nnx.jit
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        logits = model(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads, value=loss)
    return loss


@nnx.jit
def accuracy(model, x, y):
    return jnp.mean(jnp.argmax(model(x), -1) == y)


def main(argv=None):
    """Trains with Adam + KGA; prints losses and KGA diagnostics. Returns the losses."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--num-snapshots", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error("--epochs must be >= 1")

    data = load_dataset("digits")
    steps_per_epoch = len(data.x_train) // args.batch_size
    model = MLP(data.x_train.shape[1], (128,), data.num_classes, rngs=nnx.Rngs(args.seed))
    tx = optax.chain(
        optax.adam(args.lr),
        koopax.kga(args.alpha, num_snapshots=args.num_snapshots,
                   snapshot_every=steps_per_epoch),
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    step = nnx.cached_partial(train_step, model, optimizer)
    rng = np.random.default_rng(args.seed)
    history = []
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        losses = [step(jnp.asarray(xb), jnp.asarray(yb))
                  for xb, yb in batches(data.x_train, data.y_train, args.batch_size, rng=rng)]
        history.append(float(jnp.mean(jnp.stack(losses))))
        # KGA's diagnostics live in the optimizer state.
        d = koopax.diagnostics(nnx.as_pure(optimizer.opt_state))
        stable = int(d["num_stable"].sum())
        eigs = np.asarray(d["eigenvalues"][0])
        rank = int(d["rank"][0])
        top = ", ".join(f"{abs(v):.3f}" for v in eigs[:rank])
        print(f"epoch {epoch + 1:3d}  train loss {history[-1]:.4f}  "
              f"stable modes {stable}  |eigenvalues| [{top}]")
    acc = float(accuracy(model, jnp.asarray(data.x_test), jnp.asarray(data.y_test)))
    print(f"test accuracy {100 * acc:.1f}%  ({time.perf_counter() - t0:.1f} s incl. compile)")
    return history


if __name__ == "__main__":
    main()
