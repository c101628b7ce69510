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
# # Training dynamics through the Koopman lens
#
# 1. KGA's DMD eigenvalues (of the per-epoch weight increments), read from the
#    optimizer state at the end of every epoch and drawn on the unit circle:
#    eigenvalues inside the circle (`|λ| < 1 - ε`) are the stable, decaying
#    modes that KGA amplifies.
# 2. `koopax.exact_dmd` on recorded weight snapshots of a few individual
#    weights, and `koopax.reconstruct` of their trajectories.
#
# Set `KOOPAX_NB_QUICK=1` for a tiny configuration (used by the tests).

# %%
import os
import sys

sys.path.insert(0, os.path.abspath(".."))
sys.path.insert(0, os.path.abspath("."))

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import koopax
from examples import train_lib
from examples.datasets import load_dataset
from examples.models import create_model

QUICK = os.environ.get("KOOPAX_NB_QUICK", "0") == "1"
EPOCHS = 7 if QUICK else 40
BATCH = 64
data = load_dataset("digits")
xs0, ys0 = train_lib.epoch_batches(data.x_train, data.y_train, BATCH,
                                   rng=np.random.default_rng([0, 0]))
steps_per_epoch = xs0.shape[0]
tx = train_lib.build_optimizer("kga", optax.sgd(0.5), dict(alpha=1.0, num_snapshots=4),
                               steps_per_epoch)
model = create_model("mlp", num_classes=10, input_shape=(64,),
                     size="tiny" if QUICK else "full")
trainer = train_lib.Trainer(model, tx, data.task)

eigs, snapshots, losses = [], [], []
for epoch in range(EPOCHS):
    snapshots.append(jax.tree.map(np.asarray, trainer.params))
    xs, ys = train_lib.epoch_batches(data.x_train, data.y_train, BATCH,
                                     rng=np.random.default_rng([0, epoch]))
    step_losses, _, _ = trainer.run_epoch(xs, ys)
    losses.append(float(step_losses.mean()))
    eigs.append(np.array(train_lib.read_diagnostics(trainer.opt_state)["eigenvalues"]))
snapshots.append(jax.tree.map(np.asarray, trainer.params))
print("train loss per epoch:", np.round(losses, 4))

# %%
fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
theta = np.linspace(0, 2 * np.pi, 300)
ax.plot(np.cos(theta), np.sin(theta), "k-", lw=0.8)
cmap = plt.get_cmap("viridis")
for e, ev in enumerate(eigs):
    if ev.size:
        ax.scatter(ev[:, 0], ev[:, 1], color=cmap(e / max(EPOCHS - 1, 1)), s=18)
        ax2.scatter(np.full(len(ev), e + 1), np.hypot(ev[:, 0], ev[:, 1]),
                    color=cmap(e / max(EPOCHS - 1, 1)), s=14)
ax.set_aspect("equal"); ax.set_xlim(-1.15, 1.15); ax.set_ylim(-1.15, 1.15)
ax.set_title("KGA DMD eigenvalues (colour = epoch)")
ax2.axhline(1.0, color="k", lw=0.8)
ax2.set_xlabel("epoch"); ax2.set_ylabel("|eigenvalue|"); ax2.grid(alpha=0.3)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Exact DMD of a few weights
#
# We pick 8 weights of the first layer, stack their values at the start of
# every epoch (plus the final one) into snapshots of shape `(h, 8)`, and fit
# an exact DMD. `koopax.reconstruct(dmd, t)` rebuilds the trajectory from the
# modes; times beyond the last snapshot would be a forecast.

# %%
leaf = jax.tree.leaves(snapshots[0])[1]  # a weight matrix
flat_index = np.linspace(0, leaf.size - 1, 8).astype(int)
track = np.stack([np.asarray(jax.tree.leaves(s)[1]).reshape(-1)[flat_index]
                  for s in snapshots])            # (h, 8)
dmd = koopax.exact_dmd(jnp.asarray(track))
times = np.arange(len(track))
rebuilt = np.asarray(koopax.reconstruct(dmd, times))
print("DMD rank", int(dmd.rank), "eigenvalues", np.round(np.asarray(dmd.eigenvalues), 3))
print("max reconstruction error", float(np.abs(rebuilt - track).max()))

fig, ax = plt.subplots(figsize=(7, 4))
for j in range(track.shape[1]):
    ax.plot(times, track[:, j], "o", color=f"C{j}", ms=4)
    ax.plot(times, rebuilt[:, j], "-", color=f"C{j}", lw=1)
ax.set_xlabel("epoch (snapshot index)"); ax.set_ylabel("weight value")
ax.set_title("recorded weights (dots) and DMD reconstruction (lines)")
plt.tight_layout()
plt.show()
