# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # KGA vs plain Optax on MNIST-1D
#
# We train the same small 1-D CNN on MNIST-1D with `optax.sgd` and `optax.adam`,
# alone and chained with `koopax.kga` (a DMD of the weight increments, refreshed
# once per epoch, amplifies the slowly decaying components of each update).
# Every pair of runs shares its initialisation and batch order. Epochs are
# jitted `lax.scan`s compiled before timing (see `examples/train_lib.py`), so the
# wall-time axis excludes compilation.
#
# Set `KOOPAX_NB_QUICK=1` to run a tiny configuration (used by the tests).

# %%
import os
import sys

sys.path.insert(0, os.path.abspath(".."))  # repository root, for `examples`
sys.path.insert(0, os.path.abspath("."))

import matplotlib.pyplot as plt
import numpy as np
import optax

from examples import train_lib
from examples.datasets import load_dataset
from examples.models import create_model

QUICK = os.environ.get("KOOPAX_NB_QUICK", "0") == "1"
EPOCHS = 2 if QUICK else 40
SEEDS = [0] if QUICK else [0, 1]
BATCH = 64
data = load_dataset("mnist1d", num_samples=1000 if QUICK else 4000)
print(data.x_train.shape, data.x_test.shape)

# %%
def train(base_name, lr, method, seed):
    base = train_lib.make_base_optimizer(base_name, lr)
    xs0, ys0 = train_lib.epoch_batches(data.x_train, data.y_train, BATCH,
                                       rng=np.random.default_rng([seed, 0]))
    tx = train_lib.build_optimizer(method, base, dict(alpha=1.0, num_snapshots=6),
                                   steps_per_epoch=xs0.shape[0])
    model = create_model("cnn1d", num_classes=10, input_shape=data.x_train.shape[1:],
                         size="tiny" if QUICK else "full", seed=seed)
    trainer = train_lib.Trainer(model, tx, data.task)
    trainer.compile(xs0, ys0)
    losses, times, accs = [], [], []
    for epoch in range(EPOCHS):
        xs, ys = train_lib.epoch_batches(data.x_train, data.y_train, BATCH,
                                         rng=np.random.default_rng([seed, epoch]))
        step_losses, _, elapsed = trainer.run_epoch(xs, ys)
        losses.append(float(step_losses.mean()))
        times.append(elapsed)
        accs.append(trainer.evaluate(data.x_test, data.y_test)[1])
    return dict(loss=np.array(losses), time=np.cumsum(times), acc=np.array(accs))

runs = {}
# Quick mode (tests) runs the SGD pair only.
for base_name, lr in [("sgd", 0.1)] + ([] if QUICK else [("adam", 1e-3)]):
    for method in ["base", "kga"]:
        label = base_name if method == "base" else f"{base_name} + kga"
        runs[label] = [train(base_name, lr, method, s) for s in SEEDS]
        print(f"{label:12s} final train loss "
              f"{np.mean([r['loss'][-1] for r in runs[label]]):.4f}  test acc "
              f"{100 * np.mean([r['acc'][-1] for r in runs[label]]):.1f}%")

# %% [markdown]
# Training loss per epoch and per second of (compiled) training, mean over
# seeds with a min-max band. The dotted lines mark each base optimizer's best
# loss, the target of the time-to-target comparison in `examples/compare.py`.

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for i, (label, rs) in enumerate(runs.items()):
    color = f"C{i}"
    loss = np.stack([r["loss"] for r in rs])
    t = np.mean([r["time"] for r in rs], 0)
    epochs = np.arange(1, EPOCHS + 1)
    for ax, x in [(axes[0], epochs), (axes[1], t)]:
        ax.plot(x, loss.mean(0), color=color, label=label)
        ax.fill_between(x, loss.min(0), loss.max(0), color=color, alpha=0.2)
    axes[2].plot(epochs, np.mean([r["acc"] for r in rs], 0), color=color, label=label)
    if "+" not in label:
        axes[0].axhline(loss.min(1).mean(), color=color, ls=":")
for ax, xl in zip(axes, ["epoch", "training wall time (s)", "epoch"]):
    ax.set_xlabel(xl)
    ax.grid(alpha=0.3)
    ax.legend()
axes[0].set_yscale("log"); axes[1].set_yscale("log")
axes[0].set_ylabel("train loss"); axes[2].set_ylabel("test accuracy")
plt.tight_layout()
plt.show()

# %% [markdown]
# For the full, multi-seed measurement with the time-to-target table, run
# `python -m examples.compare --dataset mnist1d --model cnn1d --optimizer adam --lr 1e-3`.
