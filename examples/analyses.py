"""The KGA and PDT papers' analyses of a training run, as matplotlib figures.

The numbers come from :mod:`koopax.analysis`; this module records the runs
(weights and optimizer state after every epoch, with the shared harness of
:mod:`examples.train_lib`) and draws:

* :func:`plot_eigenvalues` -- DMD eigenvalues on the unit circle epoch by
  epoch, the neutral / stable / unstable bands, next to the loss curve (KGA
  paper Fig. 2);
* :func:`plot_pca_landscape` -- trajectories in their PCA plane over the loss
  landscape of that plane (Fig. 6b);
* :func:`plot_weight_story` -- one weight, its neutral-mode reconstruction and
  the epochs at which KWM / delta / norm masking drop it (Fig. 13);
* :func:`plot_variance_explained` -- the share of every increment in an early
  window's basis (Fig. 14);
* :func:`plot_accepted_fraction` -- PDT's accepted fraction over training (PDT
  paper Fig. 5, last column).

Run ``python -m examples.analyses --out runs/analyses`` (``--help`` for
options): it trains SGD, SGD + KGA and SGD + PDT on digits (or MNIST-1D) from
one initialization and batch order and writes one PNG per analysis.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NamedTuple

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples import landscape
from koopax import analysis
from koopax import masks as kmasks

__all__ = [
    "Run",
    "analyse",
    "default_masks",
    "flat_weights",
    "landscape_loss",
    "main",
    "plot_accepted_fraction",
    "plot_eigenvalues",
    "plot_pca_landscape",
    "plot_variance_explained",
    "plot_weight_story",
    "story_weights",
    "train_run",
]

CLASS_COLOURS = {"neutral": "tab:green", "stable": "tab:blue", "unstable": "tab:red"}


def _plt():
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------------ runs
class Run(NamedTuple):
    """A recorded training run.

    Attributes:
      method: ``'base'`` or a :data:`examples.train_lib.METHODS` name.
      losses: ``(E,)`` mean training loss of every epoch.
      snapshots: ``E + 1`` parameter pytrees (numpy): the initialization and
        the weights after every epoch.
      states: ``E`` optimizer states (numpy) after every epoch.
      trainer: the :class:`examples.train_lib.Trainer` (for its ``loss_fn``).
    """

    method: str
    losses: np.ndarray
    snapshots: list
    states: list
    trainer: Any


def train_run(method: str, data, *, epochs: int, learning_rate: float = 0.5,
              batch_size: int = 64, hparams: dict | None = None, model: str = "mlp",
              size: str = "tiny", seed: int = 0) -> Run:
    """Trains ``method`` on ``data`` with SGD, recording weights and state every epoch.

    Every run of one ``seed`` starts from the same initialization and sees the
    same batches, so trajectories of different methods are comparable.
    """
    from examples import train_lib
    from examples.models import create_model

    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1; got {epochs!r}.")
    xs0, _ = train_lib.epoch_batches(data.x_train, data.y_train, batch_size,
                                     rng=np.random.default_rng([seed, 0]))
    tx = train_lib.build_optimizer(method, optax.sgd(learning_rate), dict(hparams or {}),
                                   xs0.shape[0])
    net = create_model(model, num_classes=max(data.num_classes, 1),
                       input_shape=data.x_train.shape[1:], size=size, seed=seed)
    trainer = train_lib.Trainer(net, tx, data.task)
    host = lambda tree: jax.tree.map(np.asarray, jax.device_get(tree))  # noqa: E731
    losses, snapshots, states = [], [host(trainer.params)], []
    for epoch in range(epochs):
        xs, ys = train_lib.epoch_batches(data.x_train, data.y_train, batch_size,
                                         rng=np.random.default_rng([seed, epoch]))
        step_losses, _, _ = trainer.run_epoch(xs, ys)
        losses.append(float(np.mean(step_losses)))
        snapshots.append(host(trainer.params))
        states.append(host(trainer.opt_state))
    return Run(method, np.asarray(losses), snapshots, states, trainer)


def landscape_loss(run: Run, x, y):
    """``loss_fn(params)`` on a fixed batch ``x``, ``y`` (for :func:`examples.landscape.loss_landscape`)."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    trainer = run.trainer

    def loss_fn(params):
        return trainer.loss_fn(params, trainer.rest, x, y)[0]

    return loss_fn


def flat_weights(tree, stacked: bool = True) -> np.ndarray:
    """Every weight of a (stacked) pytree as columns: ``(h, N)``, or ``(N,)`` unstacked."""
    leaves = [np.asarray(x) for x in jax.tree.leaves(tree)]
    if stacked:
        return np.concatenate([x.reshape(x.shape[0], -1) for x in leaves], axis=1)
    return np.concatenate([x.reshape(-1) for x in leaves])


def default_masks(snapshots, *, kwm_epsilon=0.05, quantile=0.1, window=3) -> dict:
    """KWM, delta and norm masks with thresholds set from the run itself.

    KWM uses the relative threshold (``kwm_epsilon`` times the rms movement per
    epoch); the delta threshold is the ``quantile`` of every weight's largest
    ``|d_j|`` over the last ``window`` epochs, the norm threshold that of the
    final ``|w_j|`` (so each drops about that fraction by the last epoch).
    """
    w = flat_weights(analysis.stack_snapshots(snapshots))
    recent = np.abs(np.diff(w[-window - 1:], axis=0)).max(axis=0)
    delta = float(np.quantile(recent, quantile))
    norm = float(np.quantile(np.abs(w[-1]), quantile))
    return {
        "KWM": kmasks.kwm(kwm_epsilon, window=window, relative=True),
        "delta": kmasks.delta(delta, window=window),
        "norm": kmasks.norm(norm),
    }


# ----------------------------------------------------------------------------- plots
def _shade_bands(ax, epsilon, x=None):
    if x is None:  # |lambda| against epochs: horizontal bands
        ax.axhspan(1 - epsilon, 1 + epsilon, color=CLASS_COLOURS["neutral"], alpha=0.15)
        ax.axhline(1.0, color="k", lw=0.6)
        return
    theta = np.linspace(0, 2 * np.pi, 361)
    for radius in (1 - epsilon, 1 + epsilon):
        ax.plot(radius * np.cos(theta), radius * np.sin(theta), color="0.6", lw=0.5)
    ax.fill(np.r_[(1 + epsilon) * np.cos(theta), (1 - epsilon) * np.cos(theta[::-1])],
            np.r_[(1 + epsilon) * np.sin(theta), (1 - epsilon) * np.sin(theta[::-1])],
            color=CLASS_COLOURS["neutral"], alpha=0.15, lw=0)
    ax.plot(np.cos(theta), np.sin(theta), "k-", lw=0.8)


def plot_eigenvalues(history, losses, *, epsilon=1e-2, title="DMD eigenvalues"):
    """Unit circle (colour = epoch), ``|lambda|`` per epoch by class, and the loss curve.

    Args:
      history: a :class:`koopax.analysis.EigenvalueHistory`.
      losses: per-epoch training loss (``losses[e]`` is epoch ``e + 1``).
      epsilon: the neutral band's half-width used for ``history``.
    """
    plt = _plt()
    values = np.asarray(history.eigenvalues).reshape(len(history.epochs), -1)
    classes = {k: np.asarray(getattr(history.classes, k)).reshape(values.shape)
               for k in CLASS_COLOURS}
    epochs = np.asarray(history.epochs)
    fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(15, 4.3))
    _shade_bands(ax0, epsilon, x=True)
    cmap = plt.get_cmap("viridis")
    valid = sum(classes.values()).astype(bool)
    colour = cmap((epochs - epochs.min()) / max(np.ptp(epochs), 1))
    for i in range(len(epochs)):
        v = values[i][valid[i]]
        ax0.scatter(v.real, v.imag, color=colour[i], s=16, zorder=3)
    lim = max(1.15, 1.05 * float(np.abs(values).max(initial=0.0)))
    ax0.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xlabel="Re", ylabel="Im",
            title=f"{title} (colour = epoch)")
    _shade_bands(ax1, epsilon)
    for name, colour_k in CLASS_COLOURS.items():
        rows, cols = np.nonzero(classes[name])
        ax1.scatter(epochs[rows], np.abs(values[rows, cols]), color=colour_k, s=14,
                    label=f"{name} ({len(rows)})")
    ax1.set(xlabel="epoch (newest snapshot of the window)", ylabel="|eigenvalue|")
    ax1.legend(fontsize=8)
    ax2.plot(np.arange(1, len(losses) + 1), losses, "k.-")
    ax2.set(xlabel="epoch", ylabel="train loss", yscale="log", title="loss")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_pca_landscape(plane, grid, xs, ys, labels, *, title="trajectories in their PCA plane"):
    """Loss contours of the plane and each trajectory's path (start o, end *)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    grid = np.asarray(grid)
    levels = np.quantile(grid[np.isfinite(grid)], np.linspace(0, 1, 25))
    cs = ax.contourf(np.asarray(xs), np.asarray(ys), grid, levels=np.unique(levels),
                     cmap="Greys_r", alpha=0.8)
    fig.colorbar(cs, ax=ax, label="loss")
    for i, (coords, label) in enumerate(zip(plane.coordinates, labels)):
        c = np.asarray(coords)
        # Runs share their first epochs: earlier runs are drawn wider to stay visible.
        ax.plot(c[:, 0], c[:, 1], ".-", color=f"C{i}", label=label, ms=4,
                lw=1.2 + 1.6 * (len(labels) - 1 - i))
        ax.plot(*c[0], "o", color=f"C{i}", ms=7)
        ax.plot(*c[-1], "*", color=f"C{i}", ms=12, mec="k")
    ex = np.asarray(plane.explained)
    ax.set(xlabel=f"PC 1 ({100 * ex[0]:.0f} % of variance)",
           ylabel=f"PC 2 ({100 * ex[1]:.0f} % of variance)", title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_weight_story(ax, series, neutral, drops, *, label="weight"):
    """One weight's trajectory, its neutral reconstruction and the masks' drop epochs.

    Args:
      ax: a matplotlib axis.
      series: ``(h,)`` the weight at every snapshot.
      neutral: ``(h,)`` its neutral-mode reconstruction (same snapshots).
      drops: ``{mask name: snapshot index}`` (``-1``: never dropped).
    """
    series, neutral = np.asarray(series), np.asarray(neutral)
    t = np.arange(len(series))
    ax.plot(t, series, "k.-", label=label)
    ax.plot(t, neutral, "--", color=CLASS_COLOURS["neutral"], label="neutral modes (Eq. 14)")
    markers = "v^sD"
    for i, (name, epoch) in enumerate(drops.items()):
        epoch, style = int(epoch), dict(color=f"C{i + 1}", marker=markers[i % 4], ms=9)
        if epoch >= 0:  # a line plus a marker stacked at the top (drops may coincide)
            ax.axvline(epoch, color=style["color"], lw=1.0, ls=":")
            ax.plot(epoch, 0.93 - 0.08 * i, ls="none", mec="k", clip_on=False,
                    transform=ax.get_xaxis_transform(),
                    label=f"{name} drops it (epoch {epoch})", **style)
        else:
            ax.plot([], [], ls="none", mfc="none", label=f"{name}: never", **style)
    ax.set(xlabel="epoch (snapshot)", ylabel="value")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return ax


def plot_variance_explained(fractions, *, start, window, title="variance explained"):
    """``{label: (h - 1,) fractions}`` against the epoch of each increment."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, f in fractions.items():
        f = np.asarray(f)
        ax.plot(np.arange(1, len(f) + 1), f, ".-", label=label)
    ax.axvspan(start + 0.5, start + window - 0.5, color="0.85", label="basis window")
    ax.set(xlabel="epoch of the increment", ylabel="fraction of |d|^2 in the basis",
           ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_accepted_fraction(accepted, losses, *, title="PDT accepted fraction"):
    """PDT's accepted fraction per prediction next to the loss curves ``{label: losses}``."""
    plt = _plt()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
    for label, curve in losses.items():
        ax0.plot(np.arange(1, len(curve) + 1), curve, ".-", label=label)
    ax0.set(xlabel="epoch", ylabel="train loss", yscale="log")
    ax0.legend()
    ratio = np.asarray(accepted.ratio)
    epochs = np.arange(1, len(ratio) + 1)
    ax1.plot(epochs[np.isfinite(ratio)], ratio[np.isfinite(ratio)], "o-", color="C1")
    ax1.axhline(float(accepted.mean), color="C1", ls=":", label=f"mean {float(accepted.mean):.2f}")
    ax1.set(xlabel="epoch", ylabel="fraction of weights taking the prediction", ylim=(0, 1),
            title=title)
    ax1.legend()
    for ax in (ax0, ax1):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- driver
def story_weights(drops, weights, name="KWM"):
    """Flat indices of the weights ``drops[name]`` drops first and last, and of the
    weight that moves most among those it never drops."""
    drop = np.asarray(drops[name])
    moved = np.abs(weights[-1] - weights[0])
    picks = []
    if (drop >= 0).any():
        dropped = np.flatnonzero(drop >= 0)
        picks += [dropped[np.argmin(drop[dropped])], dropped[np.argmax(drop[dropped])]]
    if (drop < 0).any():
        kept = np.flatnonzero(drop < 0)
        picks.append(kept[np.argmax(moved[kept])])
    return list(dict.fromkeys(int(i) for i in picks))


def analyse(runs: dict, data, *, window=4, epsilon=1e-2, grid_size=21, variance_start=1):
    """Every analysis of :mod:`koopax.analysis` on ``{'base': Run, 'kga': Run, 'pdt': Run}``."""
    base = runs["base"]
    out = {"eigenvalues": analysis.eigenvalue_history(base.snapshots, window, epsilon=epsilon)}
    plane = landscape.pca_plane(*(r.snapshots for r in runs.values()))
    span = np.concatenate([np.asarray(c) for c in plane.coordinates])
    lo, hi = span.min(0), span.max(0)
    pad = 0.25 * (hi - lo) + 1e-6
    xs = np.linspace(lo[0] - pad[0], hi[0] + pad[0], grid_size)
    ys = np.linspace(lo[1] - pad[1], hi[1] + pad[1], grid_size)
    loss_fn = landscape_loss(base, data.x_train[:512], data.y_train[:512])
    grid = landscape.loss_landscape(loss_fn, plane.center, plane.directions[:2], xs, ys)
    out["plane"] = (plane, grid, xs, ys)
    split = analysis.neutral_reconstruction(base.snapshots)
    mask_set = default_masks(base.snapshots)
    drops = {name: flat_weights(analysis.mask_drop_epochs(base.snapshots, m,
                                                          num_snapshots=max(window, 4)),
                                stacked=False) for name, m in mask_set.items()}
    out["stories"] = (flat_weights(analysis.stack_snapshots(base.snapshots)),
                      flat_weights(split.neutral), drops)
    out["variance"] = {
        f"{name} ({basis})": analysis.variance_explained(r.snapshots, window,
                                                         start=variance_start, basis=basis)
        for name, r in runs.items() if name != "pdt" for basis in ("pod", "dmd")}
    if "pdt" in runs:
        out["accepted"] = analysis.accepted_fractions(runs["pdt"].states)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", choices=("digits", "mnist1d"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--size", default="tiny", choices=("tiny", "full"))
    parser.add_argument("--window", type=int, default=5, help="snapshots per DMD window")
    parser.add_argument("--out", default=os.path.join("runs", "analyses"))
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    from examples.datasets import load_dataset

    data = load_dataset(args.dataset)
    hp = dict(num_snapshots=args.window)
    runs = {m: train_run(m, data, epochs=args.epochs, learning_rate=args.lr, size=args.size,
                         hparams=hp) for m in ("base", "kga", "pdt")}
    res = analyse(runs, data, window=args.window)
    os.makedirs(args.out, exist_ok=True)
    figs = {"eigenvalues": plot_eigenvalues(res["eigenvalues"], runs["base"].losses),
            "pca_landscape": plot_pca_landscape(*res["plane"], labels=list(runs)),
            "variance_explained": plot_variance_explained(res["variance"], start=1,
                                                          window=args.window),
            "accepted_fraction": plot_accepted_fraction(
                res["accepted"], {k: r.losses for k, r in runs.items()})}
    weights, neutral, drops = res["stories"]
    picks = story_weights(drops, weights)
    fig, axes = _plt().subplots(1, len(picks), figsize=(5 * len(picks), 3.8), squeeze=False)
    for ax, j in zip(axes[0], picks):
        plot_weight_story(ax, weights[:, j], neutral[:, j], {k: v[j] for k, v in drops.items()},
                          label=f"weight {j}")
    fig.tight_layout()
    figs["weight_stories"] = fig
    for name, f in figs.items():
        f.savefig(os.path.join(args.out, f"{name}.png"), dpi=110)
        print("wrote", os.path.join(args.out, f"{name}.png"))
    return res


if __name__ == "__main__":
    main()
