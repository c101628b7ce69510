"""KGA's defaults, searched on top of the tuned base: amortisation, window, alpha.

Every configuration in ``--grid`` runs as its own method row next to the base
(same seeds, epochs interleaved) at the base's tuned learning rate; the figure
is the per-seed ratio of epochs (and time) to the tuned base's best training
loss, median [min, max] over the seeds, plus the test-accuracy difference.
The tuning tasks (``--tasks``) choose the defaults; ``--check`` tasks (not
tuned on) confirm them. Configurations are ``name:key=value,key=value``; the
amortisation ``apply_every`` is ``1``, an int, or ``epoch`` (steps per epoch:
the newest increment, free between snapshots).

Usage::

    python -m benchmarks.kga_defaults [--tasks digits_mlp,mnist1d_mlp,mnist1d_cnn1d]
        [--bases sgd] [--seeds 5] [--grid NAME:K=V,...;...] [--quick]

Writes ``benchmarks/results/kga_defaults/<task>_<base>.json`` and ``summary.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

if __package__ in (None, ""):  # pragma: no cover - run as a file
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import convergence  # noqa: E402
from examples import methods as registry  # noqa: E402
from examples.train import Config, train_and_evaluate  # noqa: E402

#: The grid of issue 11: amortisation k in {1, 10, steps per epoch} at the
#: harness's old setting (alpha 2, h 4) and the window/alpha neighbours.
DEFAULT_GRID = ("each:apply_every=1;sum10:apply_every=10;epoch:apply_every=epoch;"
                "epoch_h6:apply_every=epoch,num_snapshots=6;"
                "epoch_a1:apply_every=epoch,alpha=1.0;"
                "epoch_a4:apply_every=epoch,alpha=4.0")


def parse_grid(text: str) -> dict[str, dict]:
    """``'name:k=v,k=v;name2:...'`` -> ``{name: {k: v}}`` (numbers parsed; ``epoch`` kept)."""
    grid = {}
    for item in filter(None, (t.strip() for t in text.split(";"))):
        name, _, body = item.partition(":")
        opts = {}
        for pair in filter(None, body.split(",")):
            key, _, value = pair.partition("=")
            opts[key.strip()] = _value(value.strip())
        if not name.isidentifier():
            raise ValueError(f"grid: configuration names must be identifiers; got {name!r}.")
        grid[name] = opts
    if not grid:
        raise ValueError("grid: no configuration given.")
    return grid


def _value(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"None": None, "true": True, "false": False}.get(text, text)


def register_grid(grid: dict[str, dict]) -> tuple[str, ...]:
    """Registers each configuration as a method ``kga_<name>`` (KGA over the harness
    defaults; a value ``'epoch'`` is the run's steps per epoch, :data:`examples.methods.EPOCH`)."""
    base = registry.METHODS["kga"]
    names = []
    for name, opts in grid.items():
        method = registry.Method(f"kga_{name}", f"KGA {opts}", base.constructor,
                                 {**base.defaults, **opts})
        registry.register_method(method)
        names.append(method.name)
    return tuple(names)


def run_task(task: str, base: str, grid, seeds: int, out: str, quick: bool) -> dict:
    spec = dict(convergence.TASKS[task])
    lr = spec.pop("lr")[base]
    epochs = 3 if quick else spec.pop("epochs", 30)
    spec.pop("epochs", None)
    config = Config(optimizer=base, learning_rate=lr, epochs=epochs, seeds=seeds,
                    plots=False, progress=False, tune_lr=not quick, **spec)
    names = register_grid(grid)
    results = train_and_evaluate(config.replace(methods=names), None)
    rows = {}
    for name in names:
        s = results["summary"][name]
        rows[name] = dict(options=dict(registry.METHODS[name].defaults),
                          epochs=s["epochs_ratio_paired"], time=s["time_ratio_paired"],
                          acc_diff=s["test_acc_diff"], reached=s["reached"])
    record = dict(task=task, base=base, learning_rate=results["config"]["learning_rate"],
                  sweep=results.get("sweep"), steps_per_epoch=results["steps_per_epoch"],
                  rows=rows)
    with open(os.path.join(out, f"{task}_{base}.json"), "w") as f:
        json.dump(record, f, indent=1, default=str)
    return record


def _fmt(spread_):
    if not spread_ or spread_.get("median") is None:
        return "-"
    lo, hi = (("-" if spread_.get(k) is None else f"{spread_[k]:.2f}") for k in ("min", "max"))
    return f"{spread_['median']:.2f} [{lo}, {hi}]"


def summary_table(records) -> str:
    lines = ["| task | base | lr | config | epochs ratio | time ratio | acc diff | reached |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        for name, row in r["rows"].items():
            acc = "-" if row["acc_diff"] is None else f"{100 * row['acc_diff']:+.1f}"
            lines.append(f"| {r['task']} | {r['base']} | {r['learning_rate']:g} | "
                         f"{name[4:]} | {_fmt(row['epochs'])} | {_fmt(row['time'])} | "
                         f"{acc} | {row['reached']} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.kga_defaults",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="digits_mlp,mnist1d_mlp,mnist1d_cnn1d")
    ap.add_argument("--bases", default="sgd")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--grid", default=DEFAULT_GRID)
    ap.add_argument("--output-dir", default=os.path.join("benchmarks", "results", "kga_defaults"))
    ap.add_argument("--quick", action="store_true", help="3 epochs, 1 seed, no lr sweep")
    args = ap.parse_args(argv)
    grid = parse_grid(args.grid)
    os.makedirs(args.output_dir, exist_ok=True)
    records = []
    for task in filter(None, args.tasks.split(",")):
        for base in filter(None, args.bases.split(",")):
            records.append(run_task(task, base, grid, 1 if args.quick else args.seeds,
                                    args.output_dir, args.quick))
            print(summary_table(records[-1:]), flush=True)
    records = [json.load(open(os.path.join(args.output_dir, f)))
               for f in sorted(os.listdir(args.output_dir)) if f.endswith(".json")]
    table = summary_table(records)
    with open(os.path.join(args.output_dir, "summary.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    return records


if __name__ == "__main__":
    main()
