"""KGA with and without damping its oscillating modes, on the tuned base.

``python -m benchmarks damping``: every (task, base) pair of the MLP/CNN suite at
the base's tuned rate, under a constant rate and under cosine decay, with
``koopax.kga`` (which moves a mode whose increments flip sign, ``Re lambda <
-epsilon``, to its centre: ``damp_oscillations=True``, the default) and the same
KGA with ``damp_oscillations=False`` (the paper's, which leaves such a mode to
the base), interleaved with the base in one run (5 seeds, paired). The tuned
rates are the ones the committed sweeps found (``benchmarks/results/
convergence_tuned_alternatives/tuned.md`` and ``convergence_tuned_cosine/
tuned_cosine.md``; ``python -m benchmarks.convergence --tune [--schedule
cosine]`` measures them again).

The figure of issue 20 is the number of seeds that reach the tuned base's best
training loss (every seed of every pair, the goal) and the worst seed's epochs
ratio; the table also gives the median epochs and time ratios and the median
final training loss of each KGA over the base's.

Writes ``damping.{json,md}`` and one run directory per pair under
``--output-dir`` (default ``benchmarks/results/damping``); runs on disk are
reused unless ``--rerun``. ``--quick``: one pair, one seed, one epoch.
``--clock rate`` runs both KGA rows on the rate clock instead of the step clock
(under cosine decay it reached the target in fewer seeds: BENCHMARKS.md).
"""

from __future__ import annotations

import json
import os

import numpy as np

from benchmarks import cli, convergence

#: ``task:base:rate[:schedule]`` at the rates the committed sweeps tuned.
TUNED = (
    "digits_mlp:sgd:1", "digits_mlp:momentum:0.4", "digits_mlp:adam:0.016",
    "mnist1d_mlp:sgd:1", "mnist1d_mlp:momentum:0.1", "mnist1d_mlp:adam:0.008",
    "mnist1d_cnn1d:sgd:0.5", "mnist1d_cnn1d:momentum:0.05", "mnist1d_cnn1d:adam:0.008",
    "quadratic_mlp:sgd:0.002", "quadratic_mlp:momentum:0.0016", "quadratic_mlp:adam:0.048",
    "digits_mlp:sgd:1:cosine", "digits_mlp:momentum:0.4:cosine", "digits_mlp:adam:0.032:cosine",
    "mnist1d_mlp:sgd:2:cosine", "mnist1d_mlp:momentum:0.4:cosine",
    "mnist1d_mlp:adam:0.032:cosine", "mnist1d_cnn1d:sgd:0.5:cosine",
    "mnist1d_cnn1d:momentum:0.2:cosine", "mnist1d_cnn1d:adam:0.016:cosine",
    "quadratic_mlp:sgd:0.002:cosine", "quadratic_mlp:momentum:0.0016:cosine",
    "quadratic_mlp:adam:0.096:cosine",
)
ROWS = ("kga", "kga_undamped")


def parse_pair(text: str) -> tuple[str, str, float, str]:
    """``'task:base:rate[:schedule]'`` -> ``(task, base, rate, schedule)``."""
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise ValueError(f"expected task:base:rate[:schedule]; got {text!r}")
    task, base, rate = parts[:3]
    schedule = parts[3] if len(parts) == 4 else "constant"
    if task not in convergence.TASKS or base not in convergence.TASKS[task]["lr"]:
        raise ValueError(f"unknown task or base in {text!r}")
    if schedule not in convergence.SCHEDULES:
        raise ValueError(f"schedule must be one of {convergence.SCHEDULES}; got {schedule!r}")
    return task, base, cli.positive_float(rate), schedule


def two_row_config(task, base, rate, schedule, args, method, options, extra, extra_options):
    """The harness config of one pair: the base, ``method`` with ``options`` and, as the
    extra row ``extra``, the same method with ``extra_options``; both rows keep the
    suite's own options for the method (:func:`benchmarks.convergence.task_config`)."""
    flags = ["--seeds", str(args.seeds), "--schedule", schedule, "--methods", method]
    config = convergence.task_config(
        task, base, convergence.parse_args(flags + (["--quick"] if args.quick else [])),
        learning_rate=rate, factors=())
    suite = dict(config.options.get(method) or {})
    row = dict(optimizer=base, learning_rate=rate, method=method,
               options={**suite, **extra_options})
    config = config.replace(extra_rows={extra: row}, options={method: {**suite, **options}},
                            plots=False, progress=not args.no_progress)
    return config.quick() if args.quick else config


def pair_config(task, base, rate, schedule, args):
    """The harness config: the base and kga, plus kga without damping as an extra row."""
    clock = {"clock": args.clock}
    return two_row_config(task, base, rate, schedule, args, "kga", clock, "kga_undamped",
                          {"damp_oscillations": False, **clock})


def pair_row(name: str, results, keys=ROWS) -> dict:
    """One table row: per row of ``keys``, seeds reached, epochs/time ratios and final
    loss vs the base's."""
    summary, runs = results["summary"], results["runs"]
    base_final = np.median([r["train_loss"][-1] for r in runs["base"]])
    row = {"pair": name}
    for key in keys:
        s = summary[key]
        ratios = s.get("epochs_ratios") or []
        row[key] = dict(
            reached=s["reached"], seeds=s["num_seeds"],
            epochs=s["epochs_ratio_paired"], time=s["time_ratio_paired"],
            worst=None if None in ratios or not ratios else max(ratios),
            final=float(np.median([r["train_loss"][-1] for r in runs[key]]) / base_final))
    return row


def _cell(r) -> str:
    e, t = r["epochs"], r["time"]["median"]
    epochs = "n.r." if e["median"] is None else (
        f"{e['median']:.2f} [{e['min']:.2f}-"
        + ("n.r." if r["worst"] is None else f"{e['max']:.2f}") + "]")
    return (f"{r['reached']}/{r['seeds']} | {epochs} | "
            f"{'n.r.' if t is None else f'{t:.2f}'} | {r['final']:.2f}")


def line(r, keys=ROWS) -> str:
    """One table line: the pair, then each row's cells."""
    return f"| {r['pair']} | " + " | ".join(_cell(r[k]) for k in keys) + " |"


def markdown(rows, keys=ROWS, labels=("damped", "undamped"),
             title="KGA with and without damping its oscillating modes (tuned base)") -> str:
    """The table of ``rows`` (:func:`pair_row`), one group of columns per key, and totals."""
    head = ("| pair | " + " | ".join(f"{label}: reached | epochs x | time x | final loss x"
                                      for label in labels)
            + " |\n|---|" + "---|---|---|---|" * len(keys) + "\n")
    lines = [line(r, keys) for r in rows]
    totals = []
    for key in keys:
        full = sum(r[key]["reached"] == r[key]["seeds"] for r in rows)
        seeds = sum(r[key]["reached"] for r in rows)
        med = [r[key]["epochs"]["median"] for r in rows if r[key]["epochs"]["median"] is not None]
        totals.append(f"- {key}: every seed reaches in {full}/{len(rows)} pairs "
                      f"({seeds}/{sum(r[key]['seeds'] for r in rows)} seeds); median epochs "
                      f"ratio over the pairs {np.median(med):.2f}; median final loss over "
                      f"the base's {np.median([r[key]['final'] for r in rows]):.2f}.")
    return (f"# {title}\n\n"
            "Ratios are per seed, method / tuned base, of the epochs (time) to the tuned base's "
            "best training loss: median [min-max] over the seeds (n.r.: some seed did not "
            "reach it); final loss x: median final training loss over the base's.\n\n"
            + head + "\n".join(lines) + "\n\n" + "\n".join(totals) + "\n")


def run_pairs(args, make_config, keys=ROWS, *, prefix="", stem="damping", data=None,
              **table) -> dict:
    """Trains (or loads) every pair of ``args.pairs`` with ``make_config(task, base, rate,
    schedule, args)`` in ``<output-dir>/<prefix><task>_<base>_<schedule>``, prints a line
    per pair, and writes ``<stem>.{json,md}``: ``data`` plus the rows, and
    :func:`markdown` of them (``table``: its labels and title)."""
    pairs = args.pairs[:1] if args.quick else args.pairs
    args.collect = False        # convergence.run_or_load: what is missing is trained
    rows = []
    for text in pairs:
        task, base, rate, schedule = parse_pair(text)
        results = convergence.run_or_load(
            make_config(task, base, rate, schedule, args),
            os.path.join(args.output_dir, f"{prefix}{task}_{base}_{schedule}"), args,
            complete=True)
        rows.append(pair_row(f"{task} {base} {rate:g} {schedule}", results, keys))
        print(line(rows[-1], keys), flush=True)
    data = {**(data or {}), "rows": rows}
    text = markdown(rows, keys, **table)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, f"{stem}.json"), "w") as f:
        json.dump(data, f, indent=1)
    with open(os.path.join(args.output_dir, f"{stem}.md"), "w") as f:
        f.write(text)
    print(text)
    return data


def run(args):
    return run_pairs(args, pair_config)


BENCHMARK = cli.Benchmark(
    "damping", run, description=__doc__.splitlines()[0], epilog=__doc__, output="damping",
    flags=("quick", "progress", "rerun"), options=(
        cli.Option("--pairs", list(TUNED), "task:base:rate[:schedule] pairs", list=True,
                   type=lambda t: (parse_pair(t), t)[1]),
        cli.Option("--seeds", 5, "seeds per pair", type=cli.positive_int, quick=1),
        cli.Option("--clock", "steps", "KGA's clock (both rows): the harness's default "
                   "'steps', or 'rate' (snapshots at equal increments of the integrated rate)",
                   choices=("steps", "rate")),
    ))


def main(argv=None):
    return cli.main(BENCHMARK, argv)


if __name__ == "__main__":
    main()
