"""Depth study (PDT paper, Fig. 2): unmasked DMD jumps break on deeper MLPs, PDT does not.

Runs the harness on MNIST-1D with SGD (lr 0.5, 30 epochs, 5 seeds) for MLPs of
2, 4 and 6 hidden layers of 128 units, with ``pdt`` (masked prediction with
rollback, its defaults), ``pdt_layer`` (the same with one DMD per layer),
``dogra`` (unmasked per-layer prediction) and ``tano``
(unmasked prediction with the bootstrap fallback), and plots the median
training loss per epoch of every method at every depth (one panel per depth;
non-finite losses are drawn at the top of the axis and marked).

Usage: ``python -m benchmarks depth [--depths 2,4,6] [--seeds 5] [--quick]``.
Writes ``<output-dir>/depth_<L>/`` (the harness's results) and
``<output-dir>/pdt_depth.png`` plus ``pdt_depth.json`` (median curves and
per-method summaries); default output dir ``benchmarks/results/depth``.
"""

from __future__ import annotations

import json
import os

import numpy as np

from benchmarks import cli
from examples import report
from examples.train import Config, train_and_evaluate

METHODS = ("pdt", "pdt_layer", "dogra", "tano")
WIDTH = 128


def median_curve(runs):
    """Median over seeds of the per-epoch train loss (non-finite -> inf)."""
    curves = np.array([[np.inf if v is None else v for v in r["train_loss"]] for r in runs])
    return np.median(curves, axis=0)


def run(args):
    out = {}
    for depth in args.depths:
        run_dir = os.path.join(args.output_dir, f"depth_{depth}")
        path = os.path.join(run_dir, "results.json")
        if args.rerun or not os.path.exists(path):
            config = Config(dataset="mnist1d", model="mlp", hidden=(WIDTH,) * depth,
                            seeds=args.seeds, methods=METHODS, plots=False)
            train_and_evaluate(config.quick() if args.quick else config, run_dir)
        with open(path) as f:
            res = json.load(f)
        out[depth] = dict(
            curves={n: median_curve(res["runs"][n]).tolist() for n in res["names"]},
            summary={n: {k: res["summary"][n].get(k) for k in
                         ("reached", "num_seeds", "epochs_ratio", "time_ratio",
                          "final_train_loss", "final_test_acc_mean", "rollbacks",
                          "accepted_ratio")} for n in res["names"]})
    report.write_json(os.path.join(args.output_dir, "pdt_depth.json"), out)
    plot = save_plot(out, os.path.join(args.output_dir, "pdt_depth.png"))
    for depth, d in out.items():
        print(f"\n{depth} hidden layers x {WIDTH}:")
        for name, s in d["summary"].items():
            print(f"  {name:6s} reached {s['reached']}/{s['num_seeds']}  epochs x "
                  f"{report.fmt(s['epochs_ratio'], '.2f')}  final train "
                  f"{report.fmt(s['final_train_loss'], '.3g')}  test acc "
                  f"{report.fmt(s['final_test_acc_mean'], '.3f')}  rollbacks "
                  f"{report.fmt(s['rollbacks'], '.1f')}")
    print("wrote", plot)
    return out


def save_plot(out, path):
    fig, axes = report.pyplot().subplots(1, len(out), figsize=(4.2 * len(out), 3.6), squeeze=False)
    for ax, (depth, d) in zip(axes[0], out.items()):
        finite = [v for c in d["curves"].values() for v in c if np.isfinite(v)]
        top = 10 * max(finite) if finite else 10.0
        for name, curve in d["curves"].items():
            c = np.asarray(curve, float)
            epochs = np.arange(1, len(c) + 1)
            shown = np.where(np.isfinite(c) & (c < top), c, top)
            line, = ax.plot(epochs, shown, label=name, lw=1.5,
                            ls="-" if name in ("base", "pdt") else "--")
            bad = ~(np.isfinite(c) & (c < top))
            if bad.any():
                ax.plot(epochs[bad], shown[bad], "x", color=line.get_color(), ms=4)
        ax.set_yscale("log")
        ax.set_title(f"{depth} hidden layers x {WIDTH} (MNIST-1D, SGD)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("median train loss (x: diverged / NaN)")
        ax.legend(fontsize=8)
    return report.save_figure(fig, path, dpi=120)


BENCHMARK = cli.Benchmark(
    "depth", run, description=__doc__.splitlines()[0], epilog=__doc__, output="depth",
    flags=("quick", "rerun"), options=(
        cli.Option("--depths", [2, 4, 6], "hidden layers of the MLPs", type=cli.positive_int,
                   list=True),
        cli.Option("--seeds", 5, "seeds", type=cli.positive_int),
    ))


def parse_args(argv=None):
    return cli.parse_args(BENCHMARK, argv)


def main(argv=None):
    return cli.main(BENCHMARK, argv)


if __name__ == "__main__":
    main()
