"""koopax with Flax Linen and ``flax.training.train_state.TrainState``.

``TrainState.create(apply_fn=..., params=..., tx=optax.chain(optax.sgd(lr),
koopax.kga(...)))`` works as is: ``state.apply_gradients(grads=grads)`` calls
``tx.update(grads, opt_state, params)``, which gives KGA the parameters it
needs. It passes no loss, though, so transformations that read the loss
(``koopax.pdt``'s rollback, ``koopax.dmd_prediction(mode='tano')``) would never
see one: for those, use :func:`apply_gradients_with_value` below, the same
three lines with ``value=loss`` added.

Run ``python -m examples.linen_train_state`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

import koopax
from examples.datasets import batches, load_dataset


class MLP(nn.Module):
    hidden: int = 128
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.num_classes)(x)


def apply_gradients_with_value(state: train_state.TrainState, grads, loss):
    """``state.apply_gradients(grads=grads)`` that also passes ``value=loss`` to ``tx``."""
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params, value=loss)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state)


def make_train_step(pass_loss: bool):
    @jax.jit
    def train_step(state, x, y):
        def loss_fn(params):
            logits = state.apply_fn({"params": params}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        if pass_loss:
            return apply_gradients_with_value(state, grads, loss), loss
        return state.apply_gradients(grads=grads), loss

    return train_step


def main(argv=None):
    """Trains the Linen MLP with SGD + KGA through ``TrainState``. Returns the losses."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=0.5)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--num-snapshots", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pass-loss", action="store_true",
                   help="use apply_gradients_with_value (value=loss) instead of "
                        "TrainState.apply_gradients")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error("--epochs must be >= 1")

    data = load_dataset("digits")
    steps_per_epoch = len(data.x_train) // args.batch_size
    model = MLP(num_classes=data.num_classes)
    params = model.init(jax.random.key(args.seed), jnp.zeros((1,) + data.x_train.shape[1:]))
    tx = optax.chain(
        optax.sgd(args.lr),
        koopax.kga(args.alpha, num_snapshots=args.num_snapshots,
                   snapshot_every=steps_per_epoch),
    )
    state = train_state.TrainState.create(apply_fn=model.apply, params=params["params"],
                                          tx=tx)
    train_step = make_train_step(args.pass_loss)

    rng = np.random.default_rng(args.seed)
    history = []
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        losses = []
        for xb, yb in batches(data.x_train, data.y_train, args.batch_size, rng=rng):
            state, loss = train_step(state, jnp.asarray(xb), jnp.asarray(yb))
            losses.append(loss)
        history.append(float(jnp.mean(jnp.stack(losses))))
        stable = int(koopax.diagnostics(state.opt_state)["num_stable"].sum())
        print(f"epoch {epoch + 1:3d}  train loss {history[-1]:.4f}  "
              f"KGA stable modes {stable}")
    logits = state.apply_fn({"params": state.params}, jnp.asarray(data.x_test))
    acc = float(jnp.mean(jnp.argmax(logits, -1) == data.y_test))
    print(f"test accuracy {100 * acc:.1f}%  ({time.perf_counter() - t0:.1f} s incl. compile)")
    return history


if __name__ == "__main__":
    main()
