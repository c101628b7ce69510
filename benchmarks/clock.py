"""KGA or PDT on the step clock against the rate clock, on the tuned base under cosine.

``python -m benchmarks clock``: every (task, base) pair of the MLP/CNN suite under
cosine decay, at the base's tuned rate (the committed sweeps':
:data:`benchmarks.damping.TUNED`), with the method on the step clock (a snapshot
every epoch: ``clock='steps'``, the library's default and the harness's) and the
same method on the rate clock (snapshots at equal increments of the integrated
learning rate, the horizon capped at the run's end: ``clock='rate'``), interleaved
with the base in one run per pair (5 seeds, paired), both with the suite's other
options (PDT: ``num_snapshots=5``, :func:`benchmarks.convergence.task_config`;
``--num-snapshots N`` sets another window for both rows, e.g. 6, the library's).

Under cosine decay over 30 epochs the rate clock takes 10 snapshots and none
after epoch 19; the figure is how many seeds reach the tuned base's best
training loss with each clock, and in how many epochs.

Writes ``clock_<method>.{json,md}`` and one run directory per pair under
``--output-dir`` (default ``benchmarks/results/clock``); runs on disk are reused
unless ``--rerun``. ``--quick``: one pair, one seed, one epoch.
"""

from __future__ import annotations

import json
import os

from benchmarks import cli, convergence, damping

PAIRS = tuple(p for p in damping.TUNED if p.endswith(":cosine"))
METHODS = ("pdt", "kga")


def rows(method: str) -> tuple[str, str]:
    """The two rows: the method on the step clock, and on the rate clock."""
    return method, f"{method}_rate"


def pair_config(task, base, rate, schedule, args):
    """The harness config: the base and the method (step clock), plus the rate clock's row."""
    flags = ["--seeds", str(args.seeds), "--schedule", schedule, "--methods", args.method]
    config = convergence.task_config(
        task, base, convergence.parse_args(flags + (["--quick"] if args.quick else [])),
        learning_rate=rate, factors=())
    steps, on_rate = rows(args.method)
    suite = dict(config.options.get(args.method) or {})     # PDT: the suite's 5 snapshots
    if args.num_snapshots is not None:
        suite["num_snapshots"] = args.num_snapshots
    rate_row = dict(optimizer=base, learning_rate=rate, method=args.method,
                    options={**suite, "clock": "rate"})
    config = config.replace(extra_rows={on_rate: rate_row},
                            options={steps: {**suite, "clock": "steps"}},
                            plots=False, progress=not args.no_progress)
    return config.quick() if args.quick else config


def _stem(args) -> str:
    """``pdt`` or ``pdt_h6``: the method, and the window where one is set."""
    return args.method + ("" if args.num_snapshots is None else f"_h{args.num_snapshots}")


def run(args):
    pairs = args.pairs[:1] if args.quick else args.pairs
    args.collect = False        # convergence.run_or_load: what is missing is trained
    keys = rows(args.method)
    table = []
    for text in pairs:
        task, base, rate, schedule = damping.parse_pair(text)
        results = convergence.run_or_load(
            pair_config(task, base, rate, schedule, args),
            os.path.join(args.output_dir, f"{_stem(args)}_{task}_{base}_{schedule}"), args,
            complete=True)
        table.append(damping.pair_row(f"{task} {base} {rate:g} {schedule}", results, keys))
        print(damping.line(table[-1], keys), flush=True)
    text = damping.markdown(table, keys, labels=("step clock", "rate clock"),
                            title=f"{args.method} on the step clock and on the rate clock "
                                  "(tuned base)")
    os.makedirs(args.output_dir, exist_ok=True)
    stem = os.path.join(args.output_dir, f"clock_{_stem(args)}")
    with open(stem + ".json", "w") as f:
        json.dump({"method": args.method, "rows": table}, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(text)
    print(text)
    return table


BENCHMARK = cli.Benchmark(
    "clock", run, description=__doc__.splitlines()[0], epilog=__doc__, output="clock",
    flags=("quick", "progress", "rerun"), options=(
        cli.Option("--method", "pdt", "the method both rows run", choices=METHODS),
        cli.Option("--pairs", list(PAIRS), "task:base:rate[:schedule] pairs", list=True,
                   type=lambda t: (damping.parse_pair(t), t)[1]),
        cli.Option("--seeds", 5, "seeds per pair", type=cli.positive_int, quick=1),
        cli.Option("--num-snapshots", None, "the window of both rows (default: the suite's)",
                   type=cli.positive_int),
    ))


def main(argv=None):
    return cli.main(BENCHMARK, argv)


if __name__ == "__main__":
    main()
