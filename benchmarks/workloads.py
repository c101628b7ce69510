"""Workloads users train in 2026 against the tuned base: a small transformer LM and a ViT.

Two tasks:

* ``char_lm``: :class:`examples.models.CharTransformer` (2 blocks, d_model 64, 4
  heads, context 64; 116,963 weights at the default corpus's 99 tokens: 98
  characters and ``<unk>``) on the offline character corpus :func:`examples.datasets.load_text`
  (the standard library's docstrings, 0.63 MB): 1500 steps at batch 32, evaluated
  on the validation windows every 50 steps (30 "epochs" of 50 steps);
* ``vit``: the tiny ViT (patch 2, width 32, 2 blocks, 2 heads) on scikit-learn's
  8x8 digits: 30 epochs of 44 steps at batch 32.

and two bases: ``adamw_warmup_cosine`` (AdamW, linear warmup over the first 5 %
of the run, then a cosine to 0) and ``adam`` (Adam at a constant rate). For each
task x base:

1. the base's peak rate is swept by factors of 2 from the task's start until the
   best is interior (:func:`examples.tune.tune_learning_rate`), a rate scored by
   its best validation loss (mean over ``--tune-seeds`` seeds);
2. schedule-free AdamW's rate is swept the same way (``optax.contrib.
   schedule_free_adamw``, its own warmup: the same 5 % under warmup_cosine,
   none with adam; evaluated at its averaged iterate);
3. the no-DMD control's ``beta`` is picked from ``--betas`` (0.5, 1, 2) in one run
   of the control at every ``beta`` beside the tuned base, on the tuning seeds
   (:func:`examples.tune.tune_control_beta`: median epochs to the target, ties by
   the best validation loss);
4. over ``--seeds`` seeds (0..4; the tuning used the first ``--tune-seeds`` of
   them), side by side (the harness interleaves the rows' epochs): the tuned
   base; each koopax method of ``--methods`` with its defaults on top; the control
   with its tuned beta; schedule-free AdamW at its tuned rate; and koopax's kga
   with its defaults on top of schedule-free AdamW.

The target of a seed is the tuned base's best validation loss over the run
(``Config(target='test_loss')``). Per row: the median [min, max] over seeds of the
ratio of steps and of wall time to reach it (row / tuned base in the same seed;
steps are counted in evaluation blocks, 50 steps for char_lm and one 44-step epoch
for vit; time is training only: compilation and evaluation are excluded), the
seeds that reach it, the final validation loss and its difference from the base's, the best
validation loss and the compile time.

Cost on 2 CPU cores: one full ``char_lm`` run (1500 steps, adamw) trains in about
72 s (48 ms a step) and evaluates 30 times in about 40 s; a ``vit`` run trains in
about 4 s. The whole benchmark is hours (the LM dominates); ``--quick`` is a smoke
run (tiny models, 2 epochs of 4 steps, 1 seed, sweeps of at most one doubling).

Usage (from the repository root)::

    python -m benchmarks.workloads                                  # everything
    python -m benchmarks.workloads --tasks vit --bases adam --methods kga
    python -m benchmarks.workloads --quick

Writes under ``--output-dir`` (default ``benchmarks/results/workloads``;
``runs/benchmarks_quick/workloads`` with ``--quick``): the harness's results of
every run (``<task>_<base>/sweep/lr_<rate>/``, ``<task>_schedule_free_<schedule>/
sweep/lr_<rate>/``, ``<task>_<base>/control_beta/``, ``<task>_<base>/final/``),
reused unless ``--rerun``, and ``workloads.json`` and ``workloads.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/workloads.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import default_output_dir  # noqa: E402
from benchmarks import convergence  # noqa: E402
from benchmarks.convergence import _cell, _comma_list, _spread  # noqa: E402
from examples import methods as registry  # noqa: E402
from examples import report, tune  # noqa: E402
from examples.cli import nonnegative_float, positive_int  # noqa: E402
from examples.methods import SCHEDULE_FREE  # noqa: E402
from examples.train import Config  # noqa: E402

#: Task -> harness settings; ``lr`` is where every rate sweep starts.
TASKS: dict[str, dict[str, Any]] = {
    "char_lm": dict(dataset="text", model="transformer", size="full", batch_size=32,
                    epochs=30, steps_per_epoch=50, lr=4e-3),
    "vit": dict(dataset="digits", model="vit", size="tiny", batch_size=32, epochs=30,
                steps_per_epoch=None, lr=2e-3),
}
#: Base -> (optimizer, schedule).
BASES = {"adamw_warmup_cosine": ("adamw", "warmup_cosine"), "adam": ("adam", "constant")}
#: The koopax methods ``--methods`` may name (every registered method but the control).
KOOPAX_METHODS = tuple(m for m in registry.METHODS if m != "control")
#: The row of koopax on top of schedule-free AdamW (kga with its defaults).
ON_SCHEDULE_FREE = "kga"


def _betas(text):
    values = tuple(nonnegative_float(t) for t in text.split(",") if t.strip())
    if not values:
        raise argparse.ArgumentTypeError(f"expected a comma list of numbers >= 0; got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.workloads",
                                description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tasks", type=_comma_list(TASKS), default=list(TASKS))
    p.add_argument("--bases", type=_comma_list(BASES), default=list(BASES))
    p.add_argument("--methods", type=_comma_list(KOOPAX_METHODS),
                   default=[m for m in ("kga", "pdt") if m in KOOPAX_METHODS],
                   help="koopax methods run with their defaults on top of the tuned base")
    p.add_argument("--seeds", type=positive_int, default=5, help="seeds of the final run")
    p.add_argument("--tune-seeds", type=positive_int, default=2,
                   help="seeds of the rate sweeps and of the control's beta run")
    p.add_argument("--max-doublings", type=positive_int, default=4,
                   help="most factors of 2 a sweep goes from the task's start rate")
    p.add_argument("--betas", type=_betas, default=tune.CONTROL_BETAS,
                   help="the control's beta candidates")
    p.add_argument("--output-dir", help="default benchmarks/results/workloads "
                                         "(under runs/benchmarks_quick with --quick)")
    p.add_argument("--rerun", action="store_true", help="rerun runs whose results exist")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: tiny models, 2 epochs of 4 steps, 1 seed, one doubling")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.output_dir = args.output_dir or default_output_dir(args.quick, "workloads")
    args.collect = False    # run_or_load's flag: runs missing on disk are trained
    if args.quick:
        args.seeds = args.tune_seeds = 1
        args.max_doublings = 1
    return args


# ------------------------------------------------------------------------------ runs
def task_config(task: str, base: str, args, *, optimizer: str | None = None,
                learning_rate: float | None = None, seeds: int | None = None,
                **changes) -> Config:
    """The harness config of one run of (task, base): the base's optimizer and
    schedule unless ``optimizer`` says otherwise; the target on the validation loss."""
    cfg = TASKS[task]
    base_optimizer, schedule = BASES[base]
    config = Config(
        dataset=cfg["dataset"], model=cfg["model"], size=cfg["size"],
        optimizer=optimizer or base_optimizer, schedule=schedule,
        learning_rate=cfg["lr"] if learning_rate is None else learning_rate,
        batch_size=cfg["batch_size"], epochs=cfg["epochs"],
        steps_per_epoch=cfg["steps_per_epoch"], seeds=seeds or args.seeds, methods=(),
        target="test_loss", plots=not args.no_plots, progress=not args.no_progress)
    config = config.replace(**changes)
    if args.quick:
        config = config.quick().replace(epochs=2)
    return config


def run_or_load(config: Config, workdir: str, args) -> dict[str, Any]:
    """:func:`benchmarks.convergence.run_or_load`; results on disk lacking a row of
    ``config`` (another ``--methods`` or ``--betas``) are trained again."""
    return convergence.run_or_load(config, workdir, args, complete=True)


def _dir(args, *parts) -> str:
    return os.path.join(args.output_dir, *parts)


def sweep_rate(task: str, base: str, args, optimizer: str | None = None) -> dict[str, Any]:
    """The rate sweep of the base (or of ``optimizer`` under the base's schedule), each
    rate scored by the mean over the tuning seeds of the best validation loss."""
    schedule = BASES[base][1]
    root = (_dir(args, f"{task}_{base}", "sweep") if optimizer is None else
            _dir(args, f"{task}_{optimizer}_{schedule}", "sweep"))

    def score(rate):
        config = task_config(task, base, args, optimizer=optimizer, learning_rate=rate,
                             seeds=args.tune_seeds, plots=False)
        results = run_or_load(config, os.path.join(root, f"lr_{rate:g}"), args)
        return tune.sweep_score(results, key="test_loss")

    return tune.tune_learning_rate(TASKS[task]["lr"], score, max_steps=args.max_doublings)


def tune_beta(task: str, base: str, args, learning_rate: float) -> dict[str, Any]:
    """The control's beta: every candidate beside the tuned base, on the tuning seeds."""
    rows = tune.control_rows(BASES[base][0], learning_rate, args.betas)
    config = task_config(task, base, args, learning_rate=learning_rate, seeds=args.tune_seeds,
                         extra_rows=rows, plots=False)
    results = run_or_load(config, _dir(args, f"{task}_{base}", "control_beta"), args)
    return tune.tune_control_beta(results["summary"], args.betas)


def final_config(task: str, base: str, args, *, learning_rate: float, sf_rate: float,
                 beta: float) -> Config:
    """The side-by-side run: tuned base, koopax methods, control, schedule-free (+kga)."""
    extra = {SCHEDULE_FREE: dict(optimizer=SCHEDULE_FREE, learning_rate=sf_rate)}
    if ON_SCHEDULE_FREE in registry.METHODS:
        extra[f"{SCHEDULE_FREE}+{ON_SCHEDULE_FREE}"] = dict(
            optimizer=SCHEDULE_FREE, learning_rate=sf_rate, method=ON_SCHEDULE_FREE)
    return task_config(task, base, args, learning_rate=learning_rate,
                       methods=(*args.methods, "control"),
                       options={"control": {"beta": beta}}, extra_rows=extra)


def rows_of(task: str, base: str, results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per run row of the final results: ratios to the tuned base, per seed."""
    summary = results["summary"]
    base_final = summary["base"]["final_test_loss"]
    rows = []
    for name in results["names"]:
        s, info = summary[name], results["info"][name]
        steps, times = s["epochs_ratio_paired"], s["time_ratio_paired"]
        final = s["final_test_loss"]
        rows.append(dict(
            task=task, base=base, row=name, optimizer=info.get("optimizer"),
            learning_rate=info["learning_rate"], reached=s["reached"], seeds=s["num_seeds"],
            steps_ratio=steps["median"], steps_ratio_min=steps["min"],
            steps_ratio_max=steps["max"], time_ratio=times["median"],
            time_ratio_min=times["min"], time_ratio_max=times["max"],
            final_val_loss=final, best_val_loss=s["best_test_loss"],
            final_val_loss_diff=None if final is None or base_final is None
            else final - base_final,
            final_val_acc=s["final_test_acc_mean"], compile_time=s["compile_time"]))
    return rows


# ---------------------------------------------------------------------------- report
def markdown(rows, tuning) -> str:
    """``workloads.md``: the side-by-side table, then the sweeps and the control's betas."""
    lines = ["# Workloads against the tuned base", "",
             "Target: the tuned base's best validation loss of each seed. Ratios are per "
             "seed, row / tuned base in the same seed, trained side by side: median "
             "[min-max] over seeds (n.r.: not reached); time is training only. `vs base`: "
             "final validation loss minus the base's (medians over seeds).", "",
             "| task | base | row | lr | reached | steps x | time x | final val loss "
             "| vs base | best val loss | val acc | compile s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['base']} | {r['row']} | {r['learning_rate']:g} "
            f"| {r['reached']}/{r['seeds']} | {_spread(r, 'steps_ratio')} "
            f"| {_spread(r, 'time_ratio')} | {_cell(r['final_val_loss'], '.4f')} "
            f"| {_cell(r['final_val_loss_diff'], '+.4f')} | {_cell(r['best_val_loss'], '.4f')} "
            f"| {_cell(r['final_val_acc'], '.3f')} | {_cell(r['compile_time'], '.1f')} |")
    lines += ["", "Rate sweeps (factors of 2; score = mean over the tuning seeds of the best "
              "validation loss; inf = a seed diverged) and the control's beta (median epochs "
              "to the target, then best validation loss, on the tuning seeds):", "",
              "| task | base | tuned | start | interior | scores |", "|---|---|---|---|---|---|"]
    for t in tuning:
        for label, sweep in (("base", t["base_sweep"]), (SCHEDULE_FREE, t["sf_sweep"])):
            scores = ", ".join(f"{float(k):g}: {_cell(v, '.4g')}"
                               for k, v in sweep["scores"].items())
            lines.append(f"| {t['task']} | {t['base']} | {label} lr {sweep['learning_rate']:g} "
                         f"| {sweep['start']:g} | {'yes' if sweep['interior'] else 'no'} "
                         f"| {scores} |")
        betas = ", ".join(f"{float(b):g}: {_cell(v['epochs_to_target'], 'g')} epochs, "
                          f"{_cell(v['best_loss'], '.4f')}" for b, v in t["beta"]["scores"].items())
        lines.append(f"| {t['task']} | {t['base']} | control beta {t['beta']['beta']:g} | - "
                     f"| - | {betas} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    rows, tuning = [], []
    for task in args.tasks:
        for base in args.bases:
            base_sweep = sweep_rate(task, base, args)
            sf_sweep = sweep_rate(task, base, args, optimizer=SCHEDULE_FREE)
            beta = tune_beta(task, base, args, base_sweep["learning_rate"])
            config = final_config(task, base, args, learning_rate=base_sweep["learning_rate"],
                                  sf_rate=sf_sweep["learning_rate"], beta=beta["beta"])
            results = run_or_load(config, _dir(args, f"{task}_{base}", "final"), args)
            rows += rows_of(task, base, results)
            tuning.append(dict(task=task, base=base, base_sweep=base_sweep, sf_sweep=sf_sweep,
                               beta=beta, dataset=results["dataset"]["name"]))
    out = dict(rows=rows, tuning=tuning, target="test_loss", seeds=args.seeds,
               tune_seeds=args.tune_seeds, quick=args.quick, environment=report.environment())
    text = markdown(rows, tuning)
    report.write_json(os.path.join(args.output_dir, "workloads.json"), out)
    report.write_text(os.path.join(args.output_dir, "workloads.md"), text)
    print("\n" + text)
    return out


if __name__ == "__main__":
    main()
