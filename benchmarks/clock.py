"""KGA or PDT on the step clock against the rate clock, on the tuned base under cosine.

``python -m benchmarks clock``: every (task, base) pair of the MLP/CNN suite under
cosine decay, at the base's tuned rate (the committed sweeps':
:data:`benchmarks.damping.TUNED`), with the method on the step clock (a snapshot
every epoch: ``clock='steps'``, the library's default and the harness's) and the
same method on the rate clock (snapshots at equal increments of the integrated
learning rate, the horizon capped at the run's end: ``clock='rate'``), interleaved
with the base in one run per pair (5 seeds, paired), both with the suite's other
options (PDT: ``num_snapshots=5``, :func:`benchmarks.convergence.task_config`;
``--num-snapshots N`` sets another window for both rows, e.g. 6, the library's;
``--horizon T`` PDT's horizon for both rows).

Under cosine decay over 30 epochs the rate clock takes 10 snapshots and none
after epoch 19; the figure is how many seeds reach the tuned base's best
training loss with each clock, and in how many epochs.

Writes ``clock_<method>.{json,md}`` and one run directory per pair under
``--output-dir`` (default ``benchmarks/results/clock``); runs on disk are reused
unless ``--rerun``. ``--quick``: one pair, one seed, one epoch.
"""

from __future__ import annotations

from benchmarks import cli, damping

PAIRS = tuple(p for p in damping.TUNED if p.endswith(":cosine"))
METHODS = ("pdt", "kga")


def rows(method: str) -> tuple[str, str]:
    """The two rows: the method on the step clock, and on the rate clock."""
    return method, f"{method}_rate"


def pair_config(task, base, rate, schedule, args):
    """The harness config: the base and the method (step clock), plus the rate clock's row."""
    both = {key: value for key, value in (("num_snapshots", args.num_snapshots),
                                          ("horizon", args.horizon)) if value is not None}
    return damping.two_row_config(task, base, rate, schedule, args, args.method,
                                  {**both, "clock": "steps"}, rows(args.method)[1],
                                  {**both, "clock": "rate"})


def _stem(args) -> str:
    """``pdt``, ``pdt_h6`` or ``pdt_h6_tau6``: the method, the window and the horizon
    where they are set."""
    return (args.method + ("" if args.num_snapshots is None else f"_h{args.num_snapshots}")
            + ("" if args.horizon is None else f"_tau{args.horizon}"))


def run(args):
    if args.horizon is not None and args.method != "pdt":
        raise ValueError(f"--horizon is PDT's; got --method {args.method}.")
    return damping.run_pairs(
        args, pair_config, rows(args.method), prefix=f"{_stem(args)}_",
        stem=f"clock_{_stem(args)}", data={"method": args.method},
        labels=("step clock", "rate clock"),
        title=f"{args.method} on the step clock and on the rate clock (tuned base)")


BENCHMARK = cli.Benchmark(
    "clock", run, description=__doc__.splitlines()[0], epilog=__doc__, output="clock",
    flags=("quick", "progress", "rerun"), options=(
        cli.Option("--method", "pdt", "the method both rows run", choices=METHODS),
        cli.Option("--pairs", list(PAIRS), "task:base:rate[:schedule] pairs", list=True,
                   type=lambda t: (damping.parse_pair(t), t)[1]),
        cli.Option("--seeds", 5, "seeds per pair", type=cli.positive_int, quick=1),
        cli.Option("--num-snapshots", None, "the window of both rows (default: the suite's)",
                   type=cli.positive_int),
        cli.Option("--horizon", None, "PDT's horizon in both rows (default: the suite's)",
                   type=cli.positive_int),
    ))


def main(argv=None):
    return cli.main(BENCHMARK, argv)


if __name__ == "__main__":
    main()
