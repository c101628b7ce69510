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
# # Looking at training the way the KGA and PDT papers do
#
# Five analyses of recorded training runs, each a plain function of
# `koopax.analysis` (numbers, tested against direct NumPy computations) and a
# plot from `examples/analyses.py`:
#
# 1. DMD eigenvalues on the unit circle epoch by epoch, with the neutral /
#    stable / unstable bands, next to the loss (KGA paper Fig. 2);
# 2. the weight trajectories of SGD, SGD + KGA and SGD + PDT in their own PCA
#    plane, over the loss landscape of that plane (KGA paper Fig. 6b);
# 3. single-weight stories: a weight, its neutral-mode reconstruction (Eq. 14)
#    and the epoch at which KWM, delta and norm masking drop it (Fig. 13);
# 4. the variance of later increments explained by an early window's basis,
#    the assumption Efficient-KGA rests on (Fig. 14);
# 5. PDT's accepted fraction over training (PDT paper Fig. 5, last column).
#
# The runs: an MLP on scikit-learn's digits, plain SGD (learning rate 0.5,
# batch 64), one snapshot of the weights per epoch. Set `KOOPAX_NB_QUICK=1`
# for a tiny configuration (used by the tests).

# %%
import os
import sys

sys.path.insert(0, os.path.abspath(".."))
sys.path.insert(0, os.path.abspath("."))

import matplotlib.pyplot as plt
import numpy as np

from examples import analyses
from examples.datasets import load_dataset
from koopax import analysis

QUICK = os.environ.get("KOOPAX_NB_QUICK", "0") == "1"
EPOCHS = 10 if QUICK else 40
WINDOW = 5  # snapshots per DMD window: KGA's and PDT's num_snapshots
EPSILON = 1e-2  # half-width of the neutral band 1 - eps <= |lambda| <= 1 + eps
data = load_dataset("digits")
runs = {
    method: analyses.train_run(method, data, epochs=EPOCHS, size="tiny" if QUICK else "full",
                               hparams=dict(num_snapshots=WINDOW))
    for method in ("base", "kga", "pdt")
}
for name, run in runs.items():
    print(f"{name:5s} final train loss {run.losses[-1]:.4f}")

# %% [markdown]
# ## 1. Eigenvalues epoch by epoch
#
# `eigenvalue_history` fits an exact DMD to every window of `WINDOW` consecutive
# snapshots, on the increments `d_t = w_{t+1} - w_t` as koopax does: for
# `w_{t+1} - w* = A (w_t - w*)` they obey `d_{t+1} = A d_t` exactly. Stable
# eigenvalues (inside the circle) are the decaying modes that KGA amplifies,
# neutral ones a steady drift. The paper's DMD of the raw weights has one more
# eigenvalue, `lambda = 1` for the fixed point `w*`, which the increments
# remove: an increment spectrum with no neutral eigenvalue is a trajectory that
# settles.

# %%
history = analysis.eigenvalue_history(runs["base"].snapshots, WINDOW, epsilon=EPSILON)
analyses.plot_eigenvalues(history, runs["base"].losses, epsilon=EPSILON,
                          title="SGD: increment DMD")
plt.show()

# %% [markdown]
# The same spectrum is what KGA itself sees. Its state records the eigenvalues
# of its last DMD refresh (`KGAState.eigenvalues`, `rank`): recomputing them
# from the recorded KGA trajectory with KGA's rank policy (`'svht'`) gives
# the same numbers, one epoch later (KGA takes its snapshot on the first step
# of an epoch, so the state after epoch `e + 1` holds the window ending at
# snapshot `e`).

# %%
recorded = analysis.recorded_eigenvalues(runs["kga"].states, epsilon=EPSILON)
again = analysis.eigenvalue_history(runs["kga"].snapshots, WINDOW, rank="svht",
                                    epsilon=EPSILON)
print("window end | recomputed | recorded by KGA one epoch later")
for t, a in zip(np.asarray(again.epochs), np.asarray(again.eigenvalues)):
    if t < len(recorded.epochs):
        b = np.asarray(recorded.eigenvalues)[t]
        print(f"{t:10d} | {np.round(a[a != 0], 3)} | {np.round(b[b != 0], 3)}")

# %% [markdown]
# ## 2. Trajectories in their PCA plane, over the loss landscape
#
# `pca_plane` takes the top two principal directions of all three centred
# trajectories together; `loss_landscape` evaluates the training loss (on 512
# training examples) on a grid of that plane in one jitted, vmapped call.
# Every run starts from the same initialization and sees the same batches;
# KGA and PDT leave SGD's path once their DMD window is full.

# %%
results = analyses.analyse(runs, data, window=WINDOW, epsilon=EPSILON,
                           grid_size=15 if QUICK else 31, variance_start=1)
plane, grid, xs, ys = results["plane"]
analyses.plot_pca_landscape(plane, grid, xs, ys, labels=["SGD", "SGD + KGA", "SGD + PDT"])
plt.show()
print("variance explained by the plane:", np.round(np.asarray(plane.explained), 3))

# %% [markdown]
# ## 3. Single-weight stories for the masks
#
# `neutral_reconstruction` splits the SGD trajectory (all snapshots) into
# the part carried by the neutral modes plus the fixed point (KGA paper Eq. 14;
# computed through the increments' DMD) and the transient rest, whose size is
# KWM's score. `mask_drop_epochs` replays the decisions `koopax.kga(mask=...)`
# would make with one snapshot per epoch, for the three criteria of
# `koopax.masks`: KWM (relative threshold: 5 % of the rms movement per epoch),
# delta and norm (thresholds: the 10 % quantile of the weights' largest `|d_j|`
# over the last 3 epochs and of the final `|w_j|`, so each drops about 10 % by
# the end). Shown: the weights KWM drops first and last, and the one that
# moves most among those it keeps.

# %%
weights, neutral, drops = results["stories"]
for name, d in drops.items():
    print(f"{name:5s} drops {np.mean(d >= 0):6.1%} of the weights by the last epoch")
picks = analyses.story_weights(drops, weights)
fig, axes = plt.subplots(1, len(picks), figsize=(5 * len(picks), 3.8), squeeze=False)
for ax, j in zip(axes[0], picks):
    analyses.plot_weight_story(ax, weights[:, j], neutral[:, j],
                               {k: v[j] for k, v in drops.items()}, label=f"weight {j}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Variance explained by an early basis
#
# Efficient-KGA computes the POD basis `U` of one early window (here snapshots
# 1 to `WINDOW`) and keeps using it. `variance_explained` measures, for every
# later increment, the fraction of its squared norm inside that span (POD basis,
# and the span of the window's exact DMD modes): inside the window the POD
# basis explains everything by construction; how fast the curve falls after
# it is how fast the assumption wears off.

# %%
analyses.plot_variance_explained(results["variance"], start=1, window=WINDOW,
                                 title="share of each increment in the epoch-1 window's basis")
plt.show()

# %% [markdown]
# ## 5. PDT's accepted fraction over training
#
# At every prediction PDT accepts the DMD prediction only for the weights whose
# predicted move agrees in sign and size with the optimizer's own epoch of
# progress. `accepted_fractions` reads `PDTState.accepted_ratio` and
# `num_predictions` from the recorded states and keeps the epochs in which a
# new prediction was made.

# %%
accepted = results["accepted"]
print("predictions made:", int(np.sum(np.asarray(accepted.predicted))),
      "| mean accepted fraction:", round(float(accepted.mean), 3))
analyses.plot_accepted_fraction(accepted, {"SGD": runs["base"].losses,
                                           "SGD + KGA": runs["kga"].losses,
                                           "SGD + PDT": runs["pdt"].losses})
plt.show()
