"""The rows of REPRODUCTION.md: ``python -m benchmarks.reproduction``.

Each row of ``REPRODUCTION.md`` that has a command is an entry of :data:`ROWS`:
a row id and the argv of a module's ``main`` (``module`` or ``module:function``),
run in sequence, each into ``<output-dir>/<row id>``. By default only the
**cheap** rows run (each under a few minutes on 2 CPU cores); ``--rows`` names
rows explicitly (cheap or not), ``--all`` runs every row (hours), ``--list``
prints them with their cost estimate. ``--quick`` is a smoke run of the chosen
rows (each module's own ``--quick``: a few epochs, one seed) written under
``runs/benchmarks_quick/reproduction``, never over the published results.

After the rows, ``summary.md`` in the output directory collects each row's
table (read back from the files the row wrote) and ``status.json`` says which
rows ran and how long they took; a failing row is reported and the others
still run (the exit status is 1 if any failed).

Two measurements live here because no other module makes them:

* :func:`variance_main` (KGA paper Fig. 14): the share of each epoch increment
  in the POD / DMD basis of an early window (:func:`koopax.analysis.variance_explained`),
  and the paper's raw-weight version ``|U U^T w_i|^2 / |w_i|^2``;
* :func:`grid_main`: any harness method over a grid of its options, every
  configuration a row next to one base run (PDT paper Fig. 9: horizon,
  interval, start epoch).

Usage::

    python -m benchmarks.reproduction [--rows ID,ID] [--all] [--list] [--quick]
                                      [--output-dir DIR]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from typing import Any, NamedTuple

if __package__ in (None, ""):  # pragma: no cover - `python benchmarks/reproduction.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks import default_output_dir  # noqa: E402


class Row(NamedTuple):
    """A row of REPRODUCTION.md with a command.

    Attributes:
      id: the row id (also its output sub-directory).
      argv: ``(target, *args)``; ``target`` is ``module`` or ``module:function``
        (default function ``main``), called as ``function(list(args) + ['--output-dir', dir])``.
      quick: extra arguments of the ``--quick`` smoke run.
      cheap: run by default (minutes on 2 CPU cores) or only when named.
      estimate: CPU time of the full row on 2 cores (text, for ``--list``).
    """

    id: str
    argv: tuple[str, ...]
    quick: tuple[str, ...] = ("--quick",)
    cheap: bool = True
    estimate: str = ""


ALPHA_GRID = "a0:alpha=0;a1:alpha=1;a2:alpha=2;a5:alpha=5;a10:alpha=10;a20:alpha=20"
PDT_SENSITIVITY_GRID = ("h3:horizon=3;h5:horizon=5;h7:horizon=7;h10:horizon=10;"
                        "i2:interval=2;i3:interval=3;s8:start=8;s12:start=12")
HARNESS = ("--no-plots", "--no-progress")
MASK_RUNTIME_METHODS = "kga,kga_norm,kga_delta,kga_kwm"

#: Every row with a command, in REPRODUCTION.md's order.
ROWS: tuple[Row, ...] = (
    Row("kga_fig4_iter_vs_epoch",
        ("benchmarks.reproduction:grid_main", "--task", "quadratic_mlp", "--method", "kga",
         "--epochs", "25", "--seeds", "5", "--tune",
         "--grid", "epoch:;iter10:snapshot_every=10;iter:snapshot_every=1"),
        estimate="~20 s"),
    Row("kga_fig5_memory_state",
        ("benchmarks.memory", "--sections", "state", "--no-plots"),
        estimate="~10 s"),
    Row("kga_fig9_alpha_sweep",
        ("benchmarks.reproduction:grid_main", "--task", "digits_mlp", "--method", "kga",
         "--seeds", "5", "--tune", "--grid", ALPHA_GRID),
        estimate="~30 s"),
    # KGA paper Fig. 11: the 34,689-weight conv VAE on digits (negative ELBO), SGD tuned
    # from 0.03 (0.5 diverges). --quick: compare's (1 epoch, tiny, 4 batches), no sweep.
    Row("kga_fig11_conv_vae",
        ("examples.compare", "--model", "conv_vae", "--methods", "kga", "--seeds", "5",
         "--lr", "0.03", "--tune") + HARNESS,
        quick=("--quick", "--no-tune"), cheap=False, estimate="~10 min"),
    Row("kga_fig14_variance",
        ("benchmarks.reproduction:variance_main", "--seeds", "5"),
        estimate="~15 s"),
    # KGA paper Table 1: step time of KGA and its norm / delta / KWM masks over Adam's, on
    # the tiny AlexNet and FCN, a snapshot every 100 steps (koopax.kga's default).
    Row("kga_table1_mask_runtimes",
        ("benchmarks.overhead", "--sections", "models", "--models", "alexnet,fcn",
         "--methods", MASK_RUNTIME_METHODS, "--base", "adam", "--steps", "100", "--batch",
         "16", "--repeats", "9", "--no-plots"),
        quick=("--quick", "--models", "mlp", "--steps", "3", "--batch", "8", "--repeats", "2"),
        cheap=False, estimate="~8-10 min"),
    # The masked fraction of KGA's KWM mask over training (the reviewers' question R3).
    Row("kga_kwm_masked_fraction",
        ("examples.compare", "--methods", "kga_kwm", "--seeds", "5", "--no-progress"),
        estimate="~20 s"),
    Row("pdt_a6_non_iid",
        ("examples.compare", "--methods", "pdt", "--seeds", "5", "--non-iid") + HARNESS,
        # compare's --quick keeps 4 batches of examples: too few for one batch per class.
        quick=("--epochs", "1", "--seeds", "1", "--size", "tiny"), estimate="~15 s"),
    Row("pdt_a6_iid_reference",
        ("examples.compare", "--methods", "pdt", "--seeds", "5") + HARNESS,
        estimate="~15 s"),
    Row("pdt_fig9_sensitivity",
        ("benchmarks.reproduction:grid_main", "--task", "digits_mlp", "--method", "pdt",
         "--seeds", "5", "--grid", PDT_SENSITIVITY_GRID),
        estimate="~45 s"),
) + tuple(
    # PDT paper Tables 2 and 3: batch size x learning rate, constant and cosine (to 0).
    Row(f"pdt_table{table}_b{batch}_lr{lr:g}",
        ("examples.compare", "--methods", "pdt", "--seeds", "5", "--batch-size", str(batch),
         "--lr", f"{lr:g}", "--schedule", schedule) + HARNESS,
        cheap=False, estimate="~15 s")
    for table, schedule in ((2, "constant"), (3, "cosine"))
    for batch in (32, 64, 128, 256, 512) for lr in (0.001, 0.01, 0.05, 0.1)
) + (
    Row("pdt_table4_optimizers",
        ("benchmarks.convergence", "--tasks", "digits_mlp,mnist1d_mlp,mnist1d_cnn1d",
         "--methods", "pdt", "--tune", "--no-plots"),
        quick=("--quick", "--tasks", "digits_mlp"), cheap=False, estimate="~30 min"),
    Row("kga_fig6a_fig8_tuned",
        ("benchmarks.convergence", "--tasks", "digits_mlp,mnist1d_mlp,mnist1d_cnn1d,"
         "quadratic_mlp", "--methods", "kga,kga_efficient,kga_kwm,tano,dogra", "--tune",
         "--no-plots"),
        quick=("--quick", "--tasks", "digits_mlp"), cheap=False, estimate="~1-2 h"),
)
ROWS_BY_ID = {row.id: row for row in ROWS}


# ---------------------------------------------------------------------------- running
def _resolve(target: str):
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function or "main")


def run_row(row: Row, out: str, quick: bool) -> dict[str, Any]:
    """Runs one row into ``out``; returns its status (never raises)."""
    os.makedirs(out, exist_ok=True)
    args = list(row.argv[1:]) + (list(row.quick) if quick else []) + ["--output-dir", out]
    command = f"python -m benchmarks.reproduction --rows {row.id}" + (" --quick" if quick else "")
    t0 = time.perf_counter()
    status = dict(id=row.id, argv=[row.argv[0]] + args, command=command, ok=True, error=None)
    try:
        _resolve(row.argv[0])(args)
    except SystemExit as e:  # argparse errors
        if e.code not in (0, None):
            status.update(ok=False, error=f"SystemExit({e.code})")
    except Exception as e:  # noqa: BLE001 - report and go on with the other rows
        status.update(ok=False, error=f"{type(e).__name__}: {e}",
                      traceback=traceback.format_exc(limit=5))
    status["seconds"] = time.perf_counter() - t0
    try:
        from examples.report import environment
        status["environment"] = environment()
    except Exception:  # noqa: BLE001 - the environment is informative only
        pass
    status["utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return status


# ---------------------------------------------------------------------------- summaries
def _spread(s: dict | None, spec=".2f") -> str:
    if not s or s.get("median") is None:
        return "-"
    lo, hi = ("-" if s.get(k) is None else format(s[k], spec) for k in ("min", "max"))
    return f"{format(s['median'], spec)} [{lo}, {hi}]"


def _first_action(diagnostics) -> int | None:
    """Index of the first epoch after which a method had acted (a DMD refresh or a jump)."""
    for e, d in enumerate(diagnostics):
        if (d.get("num_refreshes") or 0) > 0 or (d.get("jumps") or 0) > 0:
            return e
    return None


def _values(values) -> dict | None:
    vals = np.array([np.nan if v is None else v for v in values], dtype=float)
    vals = vals[np.isfinite(vals)]
    if not vals.size:
        return None
    return dict(median=float(np.median(vals)), min=float(vals.min()), max=float(vals.max()))


def early_loss_change(results: dict, name: str, after: int = 2) -> dict | None:
    """Per seed, ``loss / base loss - 1`` ``after`` epochs past the method's first action
    (the KGA paper's Fig. 9 metric, relative); median [min, max] over seeds."""
    out = []
    for run, base in zip(results["runs"][name], results["runs"]["base"]):
        first = _first_action(run["diagnostics"])
        if first is None or first + after >= len(run["train_loss"]):
            continue
        m, b = run["train_loss"][first + after], base["train_loss"][first + after]
        out.append(None if m is None or not b else m / b - 1.0)
    return _values(out)


def flops_ratios(results: dict, name: str) -> dict | None:
    """Per seed, FLOPs to the target over the base's: XLA's count of one (lowered) step
    times the steps taken. The count includes every gated region of the step (a PDT
    jump, a KGA refresh) on every step, so for koopax methods it is an upper bound."""
    from examples.report import spread  # a seed that never reaches it counts as +inf

    info = results["info"]
    fm, fb = info[name].get("flops_per_step"), info["base"].get("flops_per_step")
    if not fm or not fb:
        return None
    out = []
    for run, base in zip(results["runs"][name], results["runs"]["base"]):
        sm, sb = (run.get("reached") or {}).get("step"), (base.get("reached") or {}).get("step")
        out.append(None if sm is None or not sb else sm * fm / (sb * fb))
    return spread(out)


def accelerated_fraction(diagnostics: dict) -> float | None:
    """The fraction of the weights a masked KGA accelerates, from its epoch diagnostics.

    ``masked_fraction`` counts only the weights the criterion excluded; the weights it
    kept beyond the static capacity (``num_overflow``) are not accelerated either. With
    ``N`` weights, ``num_kept + num_overflow = (1 - masked_fraction) N``, so the
    accelerated fraction ``num_kept / N`` needs no parameter count. Before the first
    decision (nothing kept or overflowing, nothing masked) every weight is accelerated.
    """
    frac, kept, over = (diagnostics.get(k) for k in ("masked_fraction", "num_kept",
                                                       "num_overflow"))
    if frac is None or kept is None or over is None:
        return None
    if kept + over == 0:
        return 1.0 if frac == 0 else 0.0
    return (1.0 - frac) * kept / (kept + over)


def _records(results: dict, name: str, key: str) -> bool:
    """Whether method ``name`` recorded the per-epoch diagnostic ``key`` in any run."""
    return any(key in d for r in results["runs"][name] for d in r["diagnostics"])


def fraction_table(results: dict, key: str, epochs, *, rows=None) -> str:
    """Median [min, max] over seeds of the per-epoch diagnostic ``key`` after ``epochs``
    (1-based; those past the run are left out), one line per row that records it.

    ``rows``: ``{label: (name, value_fn)}`` instead, ``value_fn(diagnostics)`` the value.
    """
    if rows is None:
        rows = {n: (n, lambda d: d.get(key)) for n in results["runs"] if _records(results, n, key)}
    if not rows:
        return ""
    first = next(iter(rows.values()))[0]
    num = len(results["runs"][first][0]["diagnostics"])
    epochs = [e for e in epochs if e <= num] or [num]  # a short run: its last epoch
    lines = ["| row | " + " | ".join(f"after epoch {e}" for e in epochs) + " |",
             "|---|" + "---|" * len(epochs)]
    for label, (name, value) in rows.items():
        cells = [_spread(_values([value(r["diagnostics"][e - 1]) for r in results["runs"][name]]))
                 for e in epochs]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def accepted_table(results: dict, epochs=(6, 8, 10, 15, 20, 25, 30)) -> str:
    """PDT's (or a baseline's) accepted fraction over training: median [min, max] over
    seeds of the fraction accepted at the latest jump, after the given epochs."""
    table = fraction_table(results, "accepted_ratio", epochs)
    return table and ("Accepted fraction over training (the fraction of the weights that "
                      "took the prediction at the latest jump):\n\n" + table)


def masked_table(results: dict, epochs=(5, 6, 7, 8, 10, 15, 20, 25, 30)) -> str:
    """A KGA mask's masked fraction over training (REPRODUCTION.md R3): median [min, max]
    over seeds of the fraction of the weights the mask excluded, after the given epochs."""
    rows = {}
    for n in (n for n in results["runs"] if _records(results, n, "masked_fraction")):
        rows[f"{n}: masked"] = (n, lambda d: d.get("masked_fraction"))
        if _records(results, n, "num_kept"):
            rows[f"{n}: accelerated"] = (n, accelerated_fraction)
    table = fraction_table(results, "masked_fraction", epochs, rows=rows)
    return table and (
        "Masked fraction over training (masked: the fraction of the weights the mask's "
        "criterion excluded, 0 before its first decision; accelerated: the fraction KGA "
        "still accelerates, below 1 - masked where the criterion kept more weights than "
        "the mask's capacity holds):\n\n" + table)


def harness_table(results: dict) -> str:
    """Per row of a harness ``results.json``: reached, epochs and time ratios, accuracy,
    final training loss and the relative loss change 2 epochs after the method first acts."""
    summary = results["summary"]
    classification = results.get("dataset", {}).get("task") == "classification"
    lines = ["| row | reached | epochs x base | time x base | final train loss | loss vs base "
             "2 epochs after first action | test acc diff (pts) | accepted / masked | "
             "rollbacks | FLOPs x base |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        acc = s.get("test_acc_diff")
        frac = s.get("accepted_ratio", s.get("masked_fraction"))
        roll = s.get("rollbacks")
        final = _values([r["train_loss"][-1] for r in results["runs"][name]])
        early = None if name == "base" else early_loss_change(results, name)
        early_text = "-" if early is None else (
            f"{100 * early['median']:+.0f} % [{100 * early['min']:+.0f}, "
            f"{100 * early['max']:+.0f}]")
        lines.append(f"| {name} | {s['reached']}/{s['num_seeds']} | "
                     f"{_spread(s.get('epochs_ratio_paired'))} | "
                     f"{_spread(s.get('time_ratio_paired'))} | {_spread(final, '.3g')} | "
                     f"{early_text} | "
                     f"{'-' if acc is None or not classification else f'{100 * acc:+.1f}'} | "
                     f"{'-' if frac is None else f'{frac:.2f}'} | "
                     f"{'-' if roll is None else f'{roll:.1f}'} | "
                     f"{_spread(flops_ratios(results, name))} |")
    cfg = results.get("config", {})
    sweep = results.get("sweep")
    tuned = "" if not sweep else f" (tuned: best of {', '.join(map(str, sweep['scores']))})"
    lines.append(f"\n{cfg.get('dataset')} / {cfg.get('model')} ({cfg.get('size')}) / "
                 f"{cfg.get('optimizer')} lr {cfg.get('learning_rate')}{tuned} "
                 f"({cfg.get('schedule')}), batch {cfg.get('batch_size')}, "
                 f"{cfg.get('epochs')} epochs, {cfg.get('seeds')} seeds, "
                 f"{results.get('steps_per_epoch')} steps per epoch"
                 f"{', non-i.i.d. batches' if cfg.get('non_iid') else ''}. Medians "
                 "[min, max] over seeds of the per-seed ratios to the base's epochs / time "
                 "to its best epoch-mean training loss (time: 2-core CPU, compilation "
                 "excluded); '-' in max: a seed did not reach it. FLOPs: XLA's count of "
                 "one step (gated regions included on every step: an upper bound for koopax "
                 "methods) times the steps to the target")
    extra = [t for t in (accepted_table(results), masked_table(results)) if t]
    return "\n\n".join(["\n".join(lines)] + extra)


def overhead_table(data: dict) -> str:
    """The models section of ``overhead.json``: step time over the base's, per model and
    method (the KGA paper's Table 1 as ratios)."""
    section = data["sections"]["models"]
    base = section["base"]
    lines = [f"| model | method | ms / step | x {base} (medians) | x {base} paired: median "
             f"[min, max] | x {base} (fastest blocks) | masked | accelerated |",
             "|---|---|---|---|---|---|---|---|"]
    for r in section["results"]:
        lines.append(f"| {r['model']} ({r['num_params']:,} weights) | {base} | "
                     f"{r['base']['ms_per_step']:.2f} | 1 | 1 | 1 | - | - |")
        for name, s in r["methods"].items():
            d = s.get("diagnostics", {})
            paired = dict(median=s.get("ratio_paired"), min=s.get("ratio_paired_min"),
                          max=s.get("ratio_paired_max"))
            frac, best = d.get("masked_fraction"), s.get("ratio_best")
            kept = None if d.get("num_kept") is None else d["num_kept"] / r["num_params"]
            lines.append(f"| | {name} | {s['ms_per_step']:.2f} | {s['ratio']:.3f} | "
                         f"{_spread(paired, '.3f')} | "
                         f"{'-' if best is None else f'{best:.3f}'} | "
                         f"{'-' if frac is None else f'{frac:.2f}'} | "
                         f"{'-' if kept is None else f'{kept:.2f}'} |")
    env, cfg = data.get("environment", {}), section.get("config", {})
    thresholds = [f"{r['model']} norm {t['norm']:.3g}, delta {t['delta']:.3g}"
                  for r in section["results"] if (t := r.get("mask_thresholds"))]
    lines.append(
        f"\n{base} lr {cfg.get('lr') or 'default'}, batch {section['batch']}, a snapshot every "
        f"{section['steps_per_block']} steps (one timed block; apply_every = snapshot_every), "
        f"window {section['num_snapshots']}, {cfg.get('repeats', '?')} interleaved repeats "
        "after warming up until the window is full. Medians: the median block over the "
        "base's; paired: each repeat's block over the base's of the same round; fastest "
        "blocks: the ratio of the minima (the block least disturbed by other processes). "
        "masked: the fraction the mask's criterion excluded; accelerated: the fraction in "
        f"the compact buffers (capacity {section.get('mask_capacity', '?')} of every leaf)"
        + (f"; thresholds {'; '.join(thresholds)}" if thresholds else "")
        + f". Machine: {env.get('platform')}, {env.get('cpus_available')} of "
        f"{env.get('cpu_count')} CPUs, jax {env.get('jax')}, {env.get('utc')}")
    return "\n".join(lines)


def memory_table(data: dict) -> str:
    lines = ["| model | method | koopax state / params |", "|---|---|---|"]
    for model, section in data["sections"]["state"].items():
        for r in section["rows"]:
            if r["method"] != "adam":
                lines.append(f"| {model} | {r['label']} | {r['koopax_ratio']:.2f} |")
    return "\n".join(lines)


def row_summary(row: Row, out: str) -> str:
    """The Markdown table of what ``row`` wrote into ``out`` ('' if nothing is there)."""
    path = lambda *p: os.path.join(out, *p)  # noqa: E731
    target = row.argv[0]
    if target == "benchmarks.overhead" and os.path.exists(path("overhead.json")):
        data = json.load(open(path("overhead.json")))
        return overhead_table(data) if "models" in data.get("sections", {}) else ""
    if target == "benchmarks.memory" and os.path.exists(path("memory.json")):
        return memory_table(json.load(open(path("memory.json"))))
    if target.endswith("variance_main") and os.path.exists(path("variance.md")):
        return open(path("variance.md")).read().strip()
    if os.path.exists(path("results.json")):
        return harness_table(json.load(open(path("results.json"))))
    if target == "benchmarks.convergence" and os.path.isdir(out):
        names = sorted(f for f in os.listdir(out) if f.endswith(".md") and f != TABLE)
        return "\n\n".join(open(path(f)).read().strip() for f in names)
    return ""


#: Each row's table, kept next to its raw files: git ignores ``results.json``, so
#: ``summary.md`` is rebuilt from these where the raw files are gone.
TABLE = "table.md"


def row_table(row: Row, out: str) -> str:
    """``row``'s table from its files (refreshing ``table.md``), else the stored ``table.md``."""
    table = row_summary(row, out)
    if table:
        with open(os.path.join(out, TABLE), "w") as f:
            f.write(table + "\n")
        return table
    stored = os.path.join(out, TABLE)
    return open(stored).read().strip() if os.path.exists(stored) else ""


# ---------------------------------------------------------------------------- Fig. 14
def _flat(tree) -> np.ndarray:
    import jax

    return np.concatenate([np.ravel(np.asarray(x, dtype=np.float64))
                           for x in jax.tree.leaves(jax.device_get(tree))])


def raw_weight_fractions(weights: np.ndarray, start: int, window: int) -> np.ndarray:
    """The KGA paper's measure: ``|U U^T w_i|^2 / |w_i|^2`` for every snapshot ``w_i``,
    ``U`` the left singular vectors of the raw snapshots ``w_start .. w_{start+window-1}``."""
    block = weights[start:start + window].T
    u, s, _ = np.linalg.svd(block, full_matrices=False)
    u = u[:, s > s[0] * 1e-10]
    coef = weights @ u
    return np.sum(coef ** 2, axis=1) / np.sum(weights ** 2, axis=1)


def variance_main(argv=None) -> dict[str, Any]:
    """KGA paper Fig. 14: does an early window's basis keep explaining training?

    Trains the harness's model with its base optimizer (no koopax method), one
    snapshot per epoch (and the initial weights), per seed; then for the basis
    of the snapshots ``start .. start + window - 1``:

    * ``pod`` / ``dmd``: the fraction of each epoch increment ``w_{i+1} - w_i``
      in the span of the window's POD basis (what Efficient-KGA stores) or DMD
      modes (:func:`koopax.analysis.variance_explained`);
    * ``raw``: the paper's ``var(U U^T w_i) / var(w_i)`` on the raw weights
      (uncentred, so ``|U U^T w_i|^2 / |w_i|^2``).

    Writes ``variance.json`` (every fraction, every seed) and ``variance.md``
    (median [min, max] over seeds at a few epochs).
    """
    import jax.numpy as jnp

    from examples import methods as registry
    from examples.train import Config, Runner, epoch_batches, load_data, model_factory, \
        model_task
    from koopax import analysis

    ap = argparse.ArgumentParser(prog="python -m benchmarks.reproduction --rows "
                                      "kga_fig14_variance", description=variance_main.__doc__
                                 .splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--size", default="full")
    ap.add_argument("--optimizer", default="sgd")
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--window", type=int, default=5, help="snapshots of the basis window")
    ap.add_argument("--start", type=int, default=5,
                    help="first snapshot of the window (snapshot i = after epoch i; 0 = init)")
    ap.add_argument("--output-dir", default=os.path.join("benchmarks", "results",
                                                         "reproduction", "kga_fig14_variance"))
    ap.add_argument("--quick", action="store_true", help="8 epochs, 1 seed, window 3 at 1")
    args = ap.parse_args(argv)
    if args.quick:
        args.epochs, args.seeds, args.window, args.start = 8, 1, 3, 1
    if args.start + args.window > args.epochs + 1:
        ap.error("--start + --window must be <= --epochs + 1")

    config = Config(dataset=args.dataset, model=args.model, size=args.size,
                    optimizer=args.optimizer, learning_rate=args.lr,
                    batch_size=args.batch_size, epochs=args.epochs, seeds=args.seeds,
                    methods=(), plots=False, progress=False)
    data = load_data(config)
    make_model = model_factory(config, data)
    batches = lambda seed, epoch: epoch_batches(  # noqa: E731 - the harness's batch order
        data.x_train, data.y_train, args.batch_size, rng=np.random.default_rng([seed, epoch]))
    first = batches(0, 0)
    steps = int(first[0].shape[0])
    base = registry.make_base_optimizer(args.optimizer, args.lr, total_steps=steps * args.epochs)
    runner = Runner(model_task(make_model(0), data.task, steps=steps),
                    registry.build_optimizer("base", base, None, steps), "base")
    per_seed = []
    for seed in range(args.seeds):
        task = model_task(make_model(seed), data.task, steps=steps)
        runner.reset(task.params, task.rest)
        weights, losses = [_flat(runner.params)], []
        for epoch in range(args.epochs):
            block = runner.run(first if (seed, epoch) == (0, 0) else batches(seed, epoch))
            losses.append(float(np.mean(block.losses)))
            weights.append(_flat(runner.params))
        w = np.stack(weights)
        stacked = jnp.asarray(w, dtype=jnp.float32)
        per_seed.append(dict(
            seed=seed, train_loss=losses,
            pod=np.asarray(analysis.variance_explained(stacked, args.window, start=args.start,
                                                       basis="pod")).tolist(),
            dmd=np.asarray(analysis.variance_explained(stacked, args.window, start=args.start,
                                                       basis="dmd")).tolist(),
            raw=raw_weight_fractions(w, args.start, args.window).tolist()))
    record = dict(config=vars(args), num_params=int(w.shape[1]), steps_per_epoch=steps,
                  seeds=per_seed)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "variance.json"), "w") as f:
        json.dump(record, f, indent=1)
    with open(os.path.join(args.output_dir, "variance.md"), "w") as f:
        f.write(variance_table(record) + "\n")
    print(variance_table(record))
    return record


def variance_table(record: dict) -> str:
    """Median [min, max] over seeds of each fraction at a few epochs."""
    cfg = record["config"]
    start, window, epochs = cfg["start"], cfg["window"], cfg["epochs"]
    # Increment i is epoch i+1's (w_{i+1} - w_i); the window's own are start .. start+window-2.
    last_own = start + window - 2
    picks = sorted({last_own + 2, *range(10, epochs + 1, 5), epochs} & set(range(1, epochs + 1)))
    picks = [e for e in picks if e - 1 > last_own]
    lines = [f"| epoch | increment in POD basis | in DMD modes | raw weights in POD basis "
             "(paper's measure) |", "|---|---|---|---|"]
    for e in picks:
        cells = []
        for key, index in (("pod", e - 1), ("dmd", e - 1), ("raw", e)):
            vals = np.array([s[key][index] for s in record["seeds"]], dtype=float)
            vals = vals[np.isfinite(vals)]
            cells.append("-" if not vals.size else
                         f"{np.median(vals):.3f} [{vals.min():.3f}, {vals.max():.3f}]")
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    lines.append(f"\nBasis: snapshots {start}..{start + window - 1} (after epochs "
                 f"{start}..{start + window - 1}; 0 = init), {cfg['dataset']} / {cfg['model']} "
                 f"({cfg['size']}, {record['num_params']} weights) / {cfg['optimizer']} lr "
                 f"{cfg['lr']}, {epochs} epochs; median [min, max] over "
                 f"{len(record['seeds'])} seeds")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- grids
def grid_main(argv=None) -> dict[str, Any]:
    """One harness run: the base and a method at every configuration of a grid.

    ``--grid 'name:key=value,...;...'`` (as :mod:`benchmarks.kga_defaults`):
    each configuration is registered as the method ``<method>_<name>`` over
    the method's harness defaults, and all of them train next to one base
    (same seeds, initial weights and batch order) on a task of
    :data:`benchmarks.convergence.TASKS` at its configured rate (``--tune``:
    the tuned rate). Writes ``results.json`` (every curve) in ``--output-dir``.
    """
    from benchmarks import convergence
    from benchmarks.kga_defaults import parse_grid
    from examples import methods as registry
    from examples.train import Config, train_and_evaluate

    ap = argparse.ArgumentParser(prog="python -m benchmarks.reproduction --rows <grid row>",
                                 description=grid_main.__doc__.splitlines()[0])
    ap.add_argument("--task", default="digits_mlp", choices=sorted(convergence.TASKS))
    ap.add_argument("--base", default="sgd", choices=convergence.BASES)
    ap.add_argument("--method", default="pdt")
    ap.add_argument("--grid", required=True)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, help="default: the task's")
    ap.add_argument("--tune", action="store_true")
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--quick", action="store_true", help="3 epochs, 1 seed, no tuning")
    args = ap.parse_args(argv)
    parent = registry.method(args.method)
    names = []
    for name, opts in parse_grid(args.grid).items():
        entry = registry.Method(f"{args.method}_{name}", f"{args.method} {opts}",
                                parent.constructor, {**parent.defaults, **opts}, parent.extras)
        registry.options_for(args.method, opts)  # an option it does not take: ValueError
        registry.register_method(entry)
        names.append(entry.name)
    spec = dict(convergence.TASKS[args.task])
    lr = spec.pop("lr")[args.base]
    task_epochs = spec.pop("epochs", 30)
    epochs = task_epochs if args.epochs is None else args.epochs
    config = Config(optimizer=args.base, learning_rate=lr, epochs=3 if args.quick else epochs,
                    seeds=1 if args.quick else args.seeds, methods=tuple(names),
                    tune_lr=args.tune and not args.quick, plots=False, progress=False, **spec)
    results = train_and_evaluate(config, args.output_dir)
    print(harness_table(results))
    return results


# ---------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reproduction",
                                description=__doc__.splitlines()[0])
    p.add_argument("--rows", help="comma list of row ids or 'prefix*' (default: the cheap "
                                  "ones); --list prints them")
    p.add_argument("--all", action="store_true", help="every row (hours on 2 cores)")
    p.add_argument("--list", action="store_true", help="print the rows and exit")
    p.add_argument("--quick", action="store_true", help="smoke run of the chosen rows")
    p.add_argument("--collect", action="store_true",
                   help="run nothing: rebuild summary.md from the rows' files on disk")
    p.add_argument("--output-dir", help="default benchmarks/results/reproduction "
                                        "(runs/benchmarks_quick/reproduction with --quick)")
    return p


def select_rows(args, parser) -> list[Row]:
    if args.rows:
        ids = [t.strip() for t in args.rows.split(",") if t.strip()]
        chosen, unknown = [], []
        for i in ids:  # 'prefix*' picks every row whose id starts with prefix
            match = [r for r in ROWS_BY_ID if r.startswith(i[:-1])] if i.endswith("*") \
                else [i] if i in ROWS_BY_ID else []
            chosen += [r for r in match if r not in chosen]
            unknown += [] if match else [i]
        if unknown or not chosen:
            parser.error(f"--rows: unknown {unknown}; rows are {list(ROWS_BY_ID)} "
                         "(or 'prefix*')")
        return [ROWS_BY_ID[i] for i in chosen]
    return [r for r in ROWS if args.all or r.cheap]


def main(argv=None) -> list[dict[str, Any]]:
    parser = build_parser()
    args = parser.parse_args(argv)
    rows = select_rows(args, parser)
    if args.list:
        for r in ROWS:
            print(f"{r.id:28s} {'cheap' if r.cheap else 'named'} {r.estimate:>10s}  "
                  f"{r.argv[0]} {' '.join(r.argv[1:])}")
        return []
    out = args.output_dir or default_output_dir(args.quick, "reproduction")
    statuses = []
    for row in ([] if args.collect else rows):
        print(f"\n##### reproduction: {row.id}", flush=True)
        statuses.append(run_row(row, os.path.join(out, row.id), args.quick))
        if not statuses[-1]["ok"]:
            print(f"row {row.id} FAILED: {statuses[-1]['error']}", flush=True)
    os.makedirs(out, exist_ok=True)
    status_path = os.path.join(out, "status.json")
    previous = json.load(open(status_path)) if os.path.exists(status_path) else {}
    previous.update({s["id"]: s for s in statuses})
    with open(status_path, "w") as f:
        json.dump(previous, f, indent=1)
    parts = [f"## {r.id}\n\n`python -m benchmarks.reproduction --rows {r.id}`\n\n"
             f"{row_table(r, os.path.join(out, r.id)) or '(no table: the row failed)'}"
             for r in ROWS if os.path.isdir(os.path.join(out, r.id))]
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("# REPRODUCTION rows: regenerated tables\n\nWritten by `python -m "
                "benchmarks.reproduction`; see REPRODUCTION.md for the claims and verdicts.\n\n"
                + "\n\n".join(parts) + "\n")
    failed = [s["id"] for s in statuses if not s["ok"]]
    print(f"\nwrote {os.path.join(out, 'summary.md')}"
          + (f"; FAILED rows: {', '.join(failed)}" if failed else ""))
    if failed and argv is None:
        sys.exit(1)
    return statuses


if __name__ == "__main__":
    main()
