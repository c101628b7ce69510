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
``time_ratio_paired``). Times are training only (compilation excluded);
``time_ratio_with_compile`` adds each row's compile time to its time to the
target, the wall time a user waits (:func:`verdict_lines` reports it).

This is the one report module of the repository: the benchmarks write their
JSON (:func:`write_json`, :func:`sanitize`, :func:`environment`), text tables
(:func:`text_table`, :func:`fmt_spread`) and figures (:func:`pyplot`,
:func:`save_figure`) with it too.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import numbers
import os
import platform
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Target", "environment", "fmt_spread", "format_table", "pyplot", "sanitize",
           "save_figure", "save_plots", "setup_title", "spread", "summarize", "text_table",
           "time_to_target", "verdict_lines", "write_json", "write_text"]

#: Diagnostics summarised over seeds (median of the last epoch's values) into the summary.
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
        # The wall time a user waits for it: the row's compilation, then its training.
        time_to_target_with_compile=median_or_none(
            [None if t is None else info["compile_time"] + t for t in times]),
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
        if vals:   # the median over seeds, as the plots draw it
            s[key] = float(np.median(vals))
    return s


#: The loss names of ``results['target']`` and how tables and plots call them.
TARGET_LABELS = {"train_loss": "train", "test_loss": "val"}
TARGET_TEXT = {"train_loss": "train loss", "test_loss": "validation loss"}


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
        s["time_ratio_with_compile"] = _ratio(s["time_to_target_with_compile"],
                                              base["time_to_target_with_compile"])
        s["flops_ratio"] = _ratio(s["flops_to_target"], base["flops_to_target"])
        s["epochs_ratios"] = [_ratio(h.epoch, b.epoch) for h, b in zip(hits[name], base_hits)]
        s["time_ratios"] = [_ratio(h.time, b.time) for h, b in zip(hits[name], base_hits)]
        s["epochs_ratio_paired"] = spread(s["epochs_ratios"])
        s["time_ratio_paired"] = spread(s["time_ratios"])
    return summary


# ---------------------------------------------------------------------------- tables
def fmt(value, spec, none="-"):
    return none if value is None else format(value, spec)


def fmt_spread(s: Mapping | None, spec: str = ".2f", *, sep: str = ", ", none: str = "-",
               missing: str = "-") -> str:
    """``median [min<sep>max]`` of a :func:`spread` (``none`` without a median, ``missing``
    for a min or max that is ``None``: a seed that never got there)."""
    if not s or s.get("median") is None:
        return none
    lo, hi = (missing if s.get(k) is None else format(s[k], spec) for k in ("min", "max"))
    return f"{format(s['median'], spec)} [{lo}{sep}{hi}]"


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1e4 else f"{value:.3g}"
    return str(value)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *,
               align: str = "right") -> str:
    """A plain-text table: a header line, a rule and one line per row.

    Cells that are not strings are formatted (floats with 3 decimals, ``None``
    as ``-``); ``align`` is ``'right'`` or ``'left'``.
    """
    cells = [[c if isinstance(c, str) else _cell(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    just = str.rjust if align == "right" else str.ljust
    lines = ["  ".join(just(h, w) for h, w in zip(headers, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(just(c, w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


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
    return text_table(header, rows, align="left")


def _base_rate(results) -> str:
    """The base row's learning rate as text (the tuned one after a sweep), ``'?'`` unknown."""
    config = results.get("config") or {}
    info = (results.get("info") or {}).get("base") or {}
    lr = info.get("learning_rate", config.get("learning_rate"))
    return "?" if lr is None else f"{lr:g}"


def _base_label(results) -> str:
    """``'sgd at lr 0.5 (constant; not tuned: --tune sweeps it)'`` or the tuned rate."""
    config, sweep = results.get("config") or {}, results.get("sweep")
    schedule = config.get("schedule", "constant")
    text = (f"{config.get('optimizer', 'the base optimizer')} at lr {_base_rate(results)} "
            f"({schedule}")
    if sweep:
        return text + (f"; tuned: the best of a sweep by factors of 2 from {sweep['start']:g}"
                       f"{'' if sweep.get('interior') else ', NOT interior'})")
    return text + "; not tuned: --tune sweeps it)"


def verdict_lines(results) -> list[str]:
    """The main job's answer: one line per row, against the base.

    "reached the base's best loss in X of its epochs and Y of its time, compile
    included": the ratios of the medians over seeds (the table's ``x base``), the
    time being each row's compilation plus its training to the target.
    """
    summary = results["summary"]
    base = summary["base"]
    on = TARGET_TEXT[base.get("target_on", "train_loss")]
    lines = [f"Against the base, {_base_label(results)}; medians over "
             f"{base['num_seeds']} seed(s):"]
    width = max(len(n) for n in summary)
    for name, s in summary.items():
        if name == "base":
            continue
        head = f"  {name.ljust(width)}  "
        if s["epochs_ratio"] is None:
            lines.append(f"{head}did not reach the base's best {on} (reached in "
                         f"{s['reached']}/{s['num_seeds']} seeds)")
            continue
        lines.append(
            f"{head}reached the base's best {on} in {s['epochs_ratio']:.2f}x its epochs and "
            f"{fmt(s['time_ratio_with_compile'], '.2f')}x its time, compile included "
            f"({fmt(s['time_ratio'], '.2f')}x training alone; compile {s['compile_time']:.1f} s "
            f"vs {base['compile_time']:.1f} s)")
    return lines


# ---------------------------------------------------------------------------- plots
def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def setup_title(results) -> str:
    """One line naming the run's setup: dataset / model / base, rate (tuned or not) / seeds."""
    config = results.get("config") or {}
    dataset = (results.get("dataset") or {}).get("name", config.get("dataset", "?"))
    tuned = "tuned" if results.get("sweep") else "not tuned"
    return (f"{dataset} / {config.get('model', '?')} / {config.get('optimizer', '?')} "
            f"lr {_base_rate(results)} "
            f"({config.get('schedule', 'constant')}, {tuned}) / "
            f"{len(results.get('seeds', []))} seed(s)")


class _Figures:
    """Shared drawing of :func:`save_plots`: one colour per row, medians over seeds with
    a min-max band, the setup in every title."""

    def __init__(self, results, output_dir):
        self.plt = pyplot()
        self.results, self.output_dir = results, output_dir
        self.colors = {n: f"C{i % 10}" for i, n in enumerate(results["names"])}
        targets = [r.get("target") for r in results["runs"]["base"]]
        known = [t for t in targets if t is not None]
        self.target = median_or_none(known) if known else None
        self.target_on = results.get("target") or "train_loss"
        self.summary = results.get("summary") or {}
        self.setup = setup_title(results)
        self.paths = []

    def band(self, ax, x, curves, name, label=None):
        y = np.stack([loss_array(c) for c in curves])
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mid, lo, hi = np.nanmedian(y, 0), np.nanmin(y, 0), np.nanmax(y, 0)
        ax.plot(x, mid, color=self.colors[name], label=label or name)
        ax.fill_between(x, lo, hi, color=self.colors[name], alpha=0.2, linewidth=0)

    def title(self, ax, what):
        ax.set_title(f"{what}\n{self.setup}", fontsize=9)

    def save(self, fig, fname):
        self.paths.append(save_figure(fig, os.path.join(self.output_dir, fname)))

    def reached(self, name, x):
        """Where row ``name`` reaches the target on the ``x`` axis (median over seeds):
        ``(position, label text)`` or ``None``."""
        s = self.summary.get(name) or {}
        if x == "time":
            at, ratio = s.get("time_to_target_with_compile"), s.get("time_ratio_with_compile")
            return None if at is None else (at, f"{at:.1f} s" + (
                "" if name == "base" or ratio is None else f", {ratio:.2f}x"))
        at, ratio = s.get("epochs_to_target"), s.get("epochs_ratio")
        return None if at is None else (at, f"epoch {at:g}" + (
            "" if name == "base" or ratio is None else f", {ratio:.2f}x"))

    def curves(self, fname, key, xlabel, ylabel, *, x="epoch", log=True, names=None,
               what=None):
        runs = self.results["runs"]
        fig, ax = self.plt.subplots(figsize=(7.0, 4.6))
        marks = key == self.target_on and self.target is not None
        for name in names or self.results["names"]:
            curves = [[d.get(key) for d in r["diagnostics"]] if key not in r else r[key]
                      for r in runs[name]]
            if x == "time":   # the row's compilation, then its training
                compile_s = self.results["info"][name]["compile_time"]
                xs = compile_s + np.median([np.cumsum(r["epoch_time"]) for r in runs[name]], 0)
            else:
                xs = np.arange(1, len(curves[0]) + 1)
            hit = self.reached(name, x) if marks else None
            self.band(ax, xs, curves, name,
                      label=None if hit is None else f"{name} (target at {hit[1]})")
            if hit is not None:
                ax.axvline(hit[0], color=self.colors[name], ls="--", lw=0.9, alpha=0.8)
        if marks:
            ax.axhline(self.target, color="k", ls=":", lw=1,
                       label="target: base's best (median)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        n = len(self.results["seeds"])
        self.title(ax, what or (f"{ylabel}: median over {n} seed(s), band = min-max"
                                + ("; dashed: where each row reaches the target" if marks
                                   else "")))
        self.save(fig, fname)

    def eigenvalues(self, names):
        plt = self.plt
        fig, axes = plt.subplots(2, len(names), figsize=(4.4 * len(names) + 1.2, 8.4),
                                 squeeze=False, layout="constrained")
        theta = np.linspace(0, 2 * np.pi, 200)
        cmap = plt.get_cmap("viridis")
        epochs = 1
        for j, name in enumerate(names):
            diags = self.results["runs"][name][0]["diagnostics"]
            epochs = max(epochs, len(diags))
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
            ax.set_aspect("equal")
            ax.set_xlim(-1.15, 1.15)
            ax.set_ylim(-1.15, 1.15)
            ax.set_title(f"{name} (seed {self.results['seeds'][0]})")
            ax.set_xlabel("Re")
            ax.set_ylabel("Im")
            ax2.axhline(1.0, color="k", lw=0.8)
            ax2.set_xlabel("epoch")
            ax2.set_ylabel("|eigenvalue|")
            ax2.grid(alpha=0.3)
        # One colour bar for every panel, right of them: it overlaps no title.
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(1, epochs))
        fig.colorbar(sm, ax=axes.ravel().tolist(), label="epoch", shrink=0.6)
        fig.suptitle(f"DMD eigenvalues after each epoch\n{self.setup}", fontsize=10)
        self.save(fig, "eigenvalues.png")


def save_figure(fig, path: str, *, dpi: int = 110) -> str:
    """Lays out (unless the figure has its own layout engine), writes and closes ``fig``."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def _rows_with(results, key):
    return [n for n in results["names"]
            if any(key in d for d in results["runs"][n][0]["diagnostics"])]


def save_plots(results, output_dir, *, task="classification") -> list[str]:
    """Writes the PNG plots into ``output_dir``; returns their paths.

    ``loss_vs_epoch.png`` and ``loss_vs_time.png`` (the wall time a user waits:
    each row's curve starts after its compilation), with a dashed line where
    each row reaches the target (median over seeds), ``test_metric.png``,
    ``test_loss_vs_epoch.png`` when the target is on the test (validation) loss
    (and the test metric is an accuracy), and where a row has them
    ``eigenvalues.png`` (KGA, PDT), ``accepted_ratio.png`` (PDT and the
    prediction baselines) and ``masked_fraction.png`` (KGA masks). Curves are
    medians over seeds with a min-max band; every title names the setup.
    """
    figs = _Figures(results, output_dir)
    figs.curves("loss_vs_epoch.png", "train_loss", "epoch", "train loss")
    figs.curves("loss_vs_time.png", "train_loss", "wall time (s), compilation included",
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
    for key, label, what in [
            ("accepted_ratio", "accepted ratio",
             "fraction of the weights whose prediction was accepted (last jump)"),
            ("masked_fraction", "masked fraction",
             "fraction of the weights the mask excluded from acceleration")]:
        rows = _rows_with(results, key)
        if rows:
            figs.curves(f"{key}.png", key, "epoch", label, log=False, names=rows,
                        what=f"{', '.join(rows)}: {what} (median, min-max band)")
    return figs.paths


# ------------------------------------------------------------------------------ JSON
def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Versions, device and machine of this run (recorded beside every result).

    ``platform`` is the JAX device platform (``'cpu'``, ``'gpu'``), ``os`` the
    operating system's :func:`platform.platform`.
    """
    import jax
    import optax

    import koopax

    device = jax.devices()[0]
    try:
        cpus_available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus_available = None
    return {
        "jax": jax.__version__, "jaxlib": _version("jaxlib"), "optax": optax.__version__,
        "flax": _version("flax"), "koopax": koopax.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "platform": device.platform,
        "backend": jax.default_backend(), "device_kind": device.device_kind,
        "device_count": jax.device_count(), "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(), "cpus_available": cpus_available,
        "machine": platform.machine(), "system": platform.system(), "os": platform.platform(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def sanitize(obj):
    """JSON-safe copy: numpy and JAX scalars and arrays to Python, NaN/inf to ``None``."""
    if isinstance(obj, Mapping):
        return {str(k): sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    if isinstance(obj, np.ndarray) or type(obj).__module__.startswith("jax"):
        return sanitize(np.asarray(obj).tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        obj = float(obj)
        return obj if math.isfinite(obj) else None
    return obj


def write_json(path: str, data, *, indent: int = 1) -> str:
    """Writes :func:`sanitize` of ``data`` to ``path`` (making its directory); returns it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(sanitize(data), f, indent=indent, allow_nan=False)
        f.write("\n")
    return path


def write_text(path: str, text: str) -> str:
    """Writes ``text`` (ending in one newline) to ``path``; returns it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    return path
