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
# # PDT: masked DMD prediction and rollbacks
#
# `koopax.pdt` predicts the weights a few epochs ahead with a DMD of the
# weight increments, and accepts the prediction only for the weights whose
# predicted move agrees in sign and size with the optimizer's own epoch of
# progress (the mask). If the loss rises over the epoch after a jump, the jump
# is rolled back. This notebook plots, per epoch, the **masked ratio** (the
# fraction of weights that took the prediction at the last jump, the state's
# `accepted_ratio`) and the cumulative number of rollbacks, next to the
# training loss of plain SGD.
#
# **Note:** this notebook needs `koopax.pdt`. If the installed koopax does not
# provide it yet, the cells below print a message and do nothing (the test
# suite skips this notebook in that case).
#
# Set `KOOPAX_NB_QUICK=1` for a tiny configuration (used by the tests).

# %%
import os
import sys

sys.path.insert(0, os.path.abspath(".."))
sys.path.insert(0, os.path.abspath("."))

import matplotlib.pyplot as plt
import numpy as np
import optax

import koopax
from examples import train_lib
from examples.datasets import load_dataset
from examples.models import create_model

HAVE_PDT = callable(getattr(koopax, "pdt", None))
QUICK = os.environ.get("KOOPAX_NB_QUICK", "0") == "1"
EPOCHS = 9 if QUICK else 40
BATCH = 64
if not HAVE_PDT:
    print("koopax.pdt is not available in this koopax version: nothing to show.")

# %%
if HAVE_PDT:
    data = load_dataset("digits")

    def train(method):
        xs0, ys0 = train_lib.epoch_batches(data.x_train, data.y_train, BATCH,
                                           rng=np.random.default_rng([0, 0]))
        tx = train_lib.build_optimizer(method, optax.sgd(0.5), dict(num_snapshots=5),
                                       steps_per_epoch=xs0.shape[0])
        model = create_model("mlp", num_classes=10, input_shape=(64,),
                             size="tiny" if QUICK else "full")
        trainer = train_lib.Trainer(model, tx, data.task)
        losses, diags = [], []
        for epoch in range(EPOCHS):
            xs, ys = train_lib.epoch_batches(data.x_train, data.y_train, BATCH,
                                             rng=np.random.default_rng([0, epoch]))
            step_losses, _, _ = trainer.run_epoch(xs, ys)
            losses.append(float(step_losses.mean()))
            diags.append(train_lib.read_diagnostics(trainer.opt_state))
        return np.array(losses), diags

    base_loss, _ = train("base")
    pdt_loss, pdt_diags = train("pdt")
    masked = np.array([d.get("masked_ratio", np.nan) for d in pdt_diags], dtype=float)
    rollbacks = np.array([d.get("rollbacks", 0) for d in pdt_diags], dtype=float)
    jumps = np.array([d.get("jumps", 0) for d in pdt_diags], dtype=float)
    print("jumps", jumps[-1], "rollbacks", rollbacks[-1])

# %%
if HAVE_PDT:
    epochs = np.arange(1, EPOCHS + 1)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(epochs, base_loss, label="sgd")
    axes[0].plot(epochs, pdt_loss, label="sgd + pdt")
    axes[0].set_yscale("log"); axes[0].set_ylabel("train loss"); axes[0].legend()
    axes[1].plot(epochs, masked, "o-")
    axes[1].set_ylabel("masked ratio (accepted fraction at last jump)")
    axes[2].step(epochs, rollbacks, where="post", label="rollbacks")
    axes[2].step(epochs, jumps, where="post", label="jumps")
    axes[2].set_ylabel("cumulative count"); axes[2].legend()
    for ax in axes:
        ax.set_xlabel("epoch"); ax.grid(alpha=0.3)
    plt.tight_layout()
    plt.show()
