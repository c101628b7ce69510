"""Statistics, the terminal table and the plots of :func:`examples.train.train_and_evaluate`.

Time to target: the target of a seed is the minimum over epochs of ``base``'s
epoch-mean training loss; a run reaches it at the first epoch whose epoch-mean
training loss is ``<=`` the target. With ``results['target'] == 'test_loss'``
(``Config(target='test_loss')``) both are the loss on the test (validation)
split after each epoch instead; every summary row records which
(``target_on``) and the table's headers say it (``tgt(train)``,
``tgt(val)``). A seed that never reaches it counts as infinitely late, so a
median reads 'not reached' when half or more of the seeds miss it. Two ratios
to the base are reported: the ratio of the medians over seeds
(``epochs_ratio``, ``time_ratio``, the table's ``x base``) and the per-seed
(paired) ratios with their median, min and max (``epochs_ratio_paired``,
``time_ratio_paired``).
"""

from __future__ import annotations

import math
import numbers
import os
import platform
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Target", "environment", "format_table", "sanitize", "save_plots", "summarize",
           "time_to_target"]

#: Diagnostics averaged over seeds (last epoch) into the summary.
SUMMARY_DIAGNOSTICS = ("accepted_ratio", "masked_fraction", "rollbacks", "num_refreshes",
                       "num_stable", "num_nonfinite")
LEGEND = ("accepted: fraction of the weights whose prediction PDT/dogra/tano accepted at "
          "the last jump; masked: fraction of the weights a KGA mask excluded from "
          "acceleration")


# ---------------------------------------------------------------------- time to target
class Target(NamedTuple):
    """When a curve first reaches a target loss.

    Attributes:
      epoch: 1-based first epoch whose loss is ``<= target``; ``None`` if never.
      time: cumulative training wall time (s) at the end of that epoch, or ``None``.
      step: training steps taken by the end of that epoch, or ``None``.
    """

    epoch: int | None
    time: float | None
    step: int | None


def time_to_target(losses: Sequence[float], epoch_times: Sequence[float], target: float,
                   steps_per_epoch: int = 1) -> Target:
    """First epoch at which ``losses[e] <= target``, with its cumulative time.

    Args:
      losses: per-epoch training loss (NaN never reaches a target).
      epoch_times: per-epoch training wall time in seconds (same length).
      target: the loss to reach.
      steps_per_epoch: to convert epochs into steps.
    """
    losses = np.asarray(losses, dtype=float)
    times = np.asarray(epoch_times, dtype=float)
    if losses.ndim != 1 or losses.shape != times.shape:
        raise ValueError(
            f"losses and epoch_times must be 1-D of equal length; got {losses.shape} "
            f"and {times.shape}.")
    if not isinstance(target, numbers.Real) or math.isnan(target):
        raise ValueError(f"target must be a number; got {target!r}.")
    if not (isinstance(steps_per_epoch, numbers.Integral) and steps_per_epoch > 0):
        raise ValueError(f"steps_per_epoch must be a positive int; got {steps_per_epoch!r}.")
    hit = np.flatnonzero(losses <= target)
    if hit.size == 0:
        return Target(None, None, None)
    e = int(hit[0])
    return Target(e + 1, float(np.sum(times[: e + 1])), (e + 1) * int(steps_per_epoch))


# -------------------------------------------------------------------------- summary
def loss_array(curve) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in curve], dtype=float)


def median_or_none(values):
    """Median with ``None`` (not reached) as +inf; ``None`` if the median is inf."""
    arr = np.array([np.inf if v is None else v for v in values], dtype=float)
    if arr.size == 0:
        return None
    med = float(np.median(arr))
    return med if math.isfinite(med) else None


def spread(values) -> dict[str, float | None]:
    """``{median, min, max}`` with ``None`` as +inf (``None`` where the result is inf)."""
    arr = np.array([np.inf if v is None else v for v in values], dtype=float)
    if arr.size == 0:
        return dict(median=None, min=None, max=None)
    out = dict(median=float(np.median(arr)), min=float(arr.min()), max=float(arr.max()))
    return {k: (v if math.isfinite(v) else None) for k, v in out.items()}


def _ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def _best(curve):
    """The lowest finite value of a loss curve, or NaN."""
    losses = loss_array(curve)
    return float(np.nanmin(losses)) if np.isfinite(losses).any() else float("nan")


def _hits(runs, targets, spe, key):
    """Per run: its :class:`Target` (and the target and hit recorded in the run)."""
    hits = []
    for run, target in zip(runs, targets, strict=True):
        hit = Target(None, None, None) if math.isnan(target) else time_to_target(
            loss_array(run[key]), run["epoch_time"], target, spe)
        run["target"] = None if math.isnan(target) else target
        run["reached"] = hit._asdict()
        hits.append(hit)
    return hits


def _nanmedian(values):
    arr = np.array([np.nan if v is None else v for v in values], dtype=float)
    if not np.isfinite(arr).any():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmedian(arr))


def _row_summary(runs, hits, info):
    flops = info["flops_per_step"]
    epochs, times = [h.epoch for h in hits], [h.time for h in hits]
    last = [r["diagnostics"][-1] if r["diagnostics"] else {} for r in runs]
    final_acc = [r["test_acc"][-1] for r in runs if r["test_acc"][-1] is not None]
    s = dict(
        reached=sum(e is not None for e in epochs),
        num_seeds=len(runs),
        learning_rate=info.get("learning_rate"),
        epochs_to_target=median_or_none(epochs),
        time_to_target=median_or_none(times),
        flops_to_target=None if flops is None else median_or_none(
            [None if h.step is None else h.step * flops for h in hits]),
        final_train_loss=_nanmedian([r["train_loss"][-1] for r in runs]),
        best_train_loss=_nanmedian([_best(r["train_loss"]) for r in runs]),
        final_test_loss=_nanmedian([r["test_loss"][-1] for r in runs]),
        best_test_loss=_nanmedian([_best(r["test_loss"]) for r in runs]),
        final_test_acc_mean=float(np.mean(final_acc)) if final_acc else None,
        final_test_acc_std=float(np.std(final_acc)) if final_acc else None,
        train_time=float(np.median([sum(r["epoch_time"]) for r in runs])),
        compile_time=info["compile_time"],
        flops_per_step=flops,
    )
    for key in SUMMARY_DIAGNOSTICS:
        vals = [d[key] for d in last if key in d]
        if vals:
            s[key] = float(np.mean(vals))
    return s


#: The loss names of ``results['target']`` and how tables and plots call them.
TARGET_LABELS = {"train_loss": "train", "test_loss": "val"}


def summarize(results, target: str | None = None) -> dict[str, dict[str, Any]]:
    """Per-row summary; adds each run's target and time-to-target in place.

    ``results`` holds ``names``, ``steps_per_epoch``, ``info`` and ``runs``
    (with a ``'base'`` row), as :func:`examples.train.train_and_evaluate` makes them.
    ``target``: the loss the targets are on, ``'train_loss'`` or ``'test_loss'``
    (default ``results['target']``, else ``'train_loss'``); each row's
    ``target_on`` says which.
    """
    key = target or results.get("target") or "train_loss"
    if key not in TARGET_LABELS:
        raise ValueError(f"target must be one of {tuple(TARGET_LABELS)}; got {key!r}.")
    spe = results["steps_per_epoch"]
    targets = [_best(run[key]) for run in results["runs"]["base"]]
    hits = {name: _hits(results["runs"][name], targets, spe, key) for name in results["names"]}
    summary = {name: dict(_row_summary(results["runs"][name], hits[name],
                                       results["info"][name]), target_on=key)
               for name in results["names"]}
    base, base_hits = summary["base"], hits["base"]
    for name, s in summary.items():
        s["test_acc_diff"] = (None if s["final_test_acc_mean"] is None
                              or base["final_test_acc_mean"] is None
                              else s["final_test_acc_mean"] - base["final_test_acc_mean"])
        s["epochs_ratio"] = _ratio(s["epochs_to_target"], base["epochs_to_target"])
        s["time_ratio"] = _ratio(s["time_to_target"], base["time_to_target"])
        s["flops_ratio"] = _ratio(s["flops_to_target"], base["flops_to_target"])
        s["epochs_ratios"] = [_ratio(h.epoch, b.epoch) for h, b in zip(hits[name], base_hits)]
        s["time_ratios"] = [_ratio(h.time, b.time) for h, b in zip(hits[name], base_hits)]
        s["epochs_ratio_paired"] = spread(s["epochs_ratios"])
        s["time_ratio_paired"] = spread(s["time_ratios"])
    return summary


# ---------------------------------------------------------------------------- table
def fmt(value, spec, none="-"):
    return none if value is None else format(value, spec)


def format_table(summary, *, task="classification") -> str:
    """The terminal table of :func:`summarize`'s output.

    The time-to-target headers name the loss the target is on: ``tgt(train)``
    (the base's best training loss) or ``tgt(val)`` (its best test/validation loss).
    """
    nr = "not reached"
    on = TARGET_LABELS[next(iter(summary.values()), {}).get("target_on", "train_loss")]
    header = ["method", "final train", "final test", "test acc", f"epochs->tgt({on})",
              "x base", f"time->tgt({on}) s", "x base", f"GFLOP->tgt({on})", "train s",
              "compile s", "stable", "accepted", "masked", "rollbacks"]
    classification = task in ("classification", "language_model")
    if not classification:
        header.remove("test acc")
    rows = []
    for name, s in summary.items():
        reached = f"{s['reached']}/{s['num_seeds']}"
        acc = (f"{100 * s['final_test_acc_mean']:.1f}±{100 * s['final_test_acc_std']:.1f}%"
               if s.get("final_test_acc_mean") is not None else "-")
        row = [
            name,
            fmt(s["final_train_loss"], ".4f"),
            fmt(s["final_test_loss"], ".4f"),
            acc,
            (f"{s['epochs_to_target']:g} ({reached})" if s["epochs_to_target"] is not None
             else f"{nr} ({reached})"),
            fmt(s["epochs_ratio"], ".2f"),
            fmt(s["time_to_target"], ".2f", nr),
            fmt(s["time_ratio"], ".2f"),
            fmt(None if s["flops_to_target"] is None else s["flops_to_target"] / 1e9,
                ".3g", nr if s["flops_per_step"] is not None else "n/a"),
            f"{s['train_time']:.2f}",
            f"{s['compile_time']:.1f}",
            fmt(s.get("num_stable"), ".1f"),
            fmt(s.get("accepted_ratio"), ".2f"),
            fmt(s.get("masked_fraction"), ".2f"),
            fmt(s.get("rollbacks"), ".1f"),
        ]
        if not classification:
            del row[3]
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class _Figures:
    """Shared drawing of :func:`save_plots`: one colour per row, min-max bands."""

    def __init__(self, results, output_dir):
        self.plt = _pyplot()
        self.results, self.output_dir = results, output_dir
        self.colors = {n: f"C{i % 10}" for i, n in enumerate(results["names"])}
        targets = [r.get("target") for r in results["runs"]["base"]]
        known = [t for t in targets if t is not None]
        self.target = median_or_none(known) if known else None
        self.target_on = results.get("target") or "train_loss"
        self.paths = []

    def band(self, ax, x, curves, name):
        y = np.stack([loss_array(c) for c in curves])
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, lo, hi = np.nanmean(y, 0), np.nanmin(y, 0), np.nanmax(y, 0)
        ax.plot(x, mean, color=self.colors[name], label=name)
        ax.fill_between(x, lo, hi, color=self.colors[name], alpha=0.2, linewidth=0)

    def save(self, fig, fname):
        fig.tight_layout()
        path = os.path.join(self.output_dir, fname)
        fig.savefig(path, dpi=110)
        self.plt.close(fig)
        self.paths.append(path)

    def curves(self, fname, key, xlabel, ylabel, *, x="epoch", log=True, names=None,
               title=None):
        runs = self.results["runs"]
        fig, ax = self.plt.subplots(figsize=(6.4, 4.2))
        for name in names or self.results["names"]:
            curves = [[d.get(key) for d in r["diagnostics"]] if key not in r else r[key]
                      for r in runs[name]]
            xs = (np.mean([np.cumsum(r["epoch_time"]) for r in runs[name]], 0)
                  if x == "time" else np.arange(1, len(curves[0]) + 1))
            self.band(ax, xs, curves, name)
        if self.target is not None and key == self.target_on:
            ax.axhline(self.target, color="k", ls=":", lw=1, label="base best (median)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        n = len(self.results["seeds"])
        ax.set_title(title or f"{ylabel}: mean, band = min-max over {n} seed(s)",
                     fontsize=None if title is None else 8)
        self.save(fig, fname)

    def eigenvalues(self, names):
        plt = self.plt
        fig, axes = plt.subplots(2, len(names), figsize=(4.6 * len(names), 8.2), squeeze=False)
        theta = np.linspace(0, 2 * np.pi, 200)
        cmap = plt.get_cmap("viridis")
        for j, name in enumerate(names):
            diags = self.results["runs"][name][0]["diagnostics"]
            ax, ax2 = axes[0, j], axes[1, j]
            ax.plot(np.cos(theta), np.sin(theta), "k-", lw=0.8)
            ax.plot(0.99 * np.cos(theta), 0.99 * np.sin(theta), "k:", lw=0.6)
            for e, d in enumerate(diags):
                eig = np.array(d.get("eigenvalues", []), dtype=float).reshape(-1, 2)
                if eig.size:
                    c = cmap(e / max(len(diags) - 1, 1))
                    ax.scatter(eig[:, 0], eig[:, 1], color=c, s=14)
                    ax2.scatter(np.full(len(eig), e + 1), np.hypot(eig[:, 0], eig[:, 1]),
                                color=c, s=10)
            sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(1, max(len(diags), 1)))
            fig.colorbar(sm, ax=ax, label="epoch")
            ax.set_aspect("equal")
            ax.set_xlim(-1.15, 1.15)
            ax.set_ylim(-1.15, 1.15)
            ax.set_title(f"{name}: DMD eigenvalues (seed {self.results['seeds'][0]})")
            ax.set_xlabel("Re")
            ax.set_ylabel("Im")
            ax2.axhline(1.0, color="k", lw=0.8)
            ax2.set_xlabel("epoch")
            ax2.set_ylabel("|eigenvalue|")
            ax2.grid(alpha=0.3)
        self.save(fig, "eigenvalues.png")


def _rows_with(results, key):
    return [n for n in results["names"]
            if any(key in d for d in results["runs"][n][0]["diagnostics"])]


def save_plots(results, output_dir, *, task="classification") -> list[str]:
    """Writes the PNG plots into ``output_dir``; returns their paths.

    ``loss_vs_epoch.png``, ``loss_vs_time.png``, ``test_metric.png``,
    ``test_loss_vs_epoch.png`` when the target is on the test (validation) loss
    (and the test metric is an accuracy), and where a row has them
    ``eigenvalues.png`` (KGA), ``accepted_ratio.png`` (PDT and the prediction
    baselines) and ``masked_fraction.png`` (KGA masks).
    """
    figs = _Figures(results, output_dir)
    figs.curves("loss_vs_epoch.png", "train_loss", "epoch", "train loss")
    figs.curves("loss_vs_time.png", "train_loss", "training wall time (s, compile excluded)",
                "train loss", x="time")
    if task in ("classification", "language_model"):
        figs.curves("test_metric.png", "test_acc", "epoch", "test accuracy", log=False)
        if figs.target_on == "test_loss":
            figs.curves("test_loss_vs_epoch.png", "test_loss", "epoch", "test (val) loss")
    else:
        figs.curves("test_metric.png", "test_loss", "epoch", "test loss")
    with_eigs = _rows_with(results, "eigenvalues")
    if with_eigs:
        figs.eigenvalues(with_eigs)
    for key, label, title in [
            ("accepted_ratio", "accepted ratio",
             "PDT / dogra / tano: fraction of the weights whose prediction was accepted "
             "(last jump)"),
            ("masked_fraction", "masked fraction",
             "KGA masks: fraction of the weights excluded from acceleration")]:
        rows = _rows_with(results, key)
        if rows:
            figs.curves(f"{key}.png", key, "epoch", label, log=False, names=rows, title=title)
    return figs.paths


# ------------------------------------------------------------------------------ JSON
def environment() -> dict[str, Any]:
    """Versions and machine of this run."""
    import jax

    import koopax

    return dict(jax=jax.__version__, koopax=koopax.__version__, backend=jax.default_backend(),
                devices=[str(d) for d in jax.devices()], cpu_count=os.cpu_count(),
                python=platform.python_version(), platform=platform.platform())


def sanitize(obj):
    """JSON-safe copy: numpy scalars/arrays to Python, NaN/inf to ``None``."""
    if isinstance(obj, dict):
        return {str(k): sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return sanitize(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        obj = float(obj)
        return obj if math.isfinite(obj) else None
    return obj
