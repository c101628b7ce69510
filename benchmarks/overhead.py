"""Step-time overhead of the koopax methods (issue 5), measured side by side in one run.

Sections (``--sections``, default all):

* ``models``: step time of ``chain(base, method)`` / ``base`` (a full training step:
  forward, backward, optimizer) for the ~1.07M-parameter MLP (784-1024-256-10)
  and the tiny FCN, AlexNet and ResNet (``resnet50`` tiny) of ``examples.models`` on
  random 32x32x3 images, for kga (h = 6), kga efficient, kga + KWM / norm / delta mask
  (the KGA paper's Table 1), pdt, dogra and tano. The three masks share KWM's static
  capacity (0.5 of every leaf); the norm and delta thresholds are calibrated on each
  model (:func:`mask_thresholds`: the median ``|w|`` at init, the median per-snapshot
  ``|w_{k+1} - w_k|`` of the base), since the paper gives none.
* ``params``: the ratio kga / base and the DMD refresh time / one pass over the
  snapshot buffer vs the number of parameters (1e5 .. 3e7), on a diagonal quadratic
  loss over MLP-shaped leaves (the gradient is one elementwise pass, so the optimizer
  dominates the step: an upper bound for real models).
* ``snapshots``: the same two ratios vs ``num_snapshots`` (4, 8, 16, 32) at ~1e6
  parameters (same quadratic).
* ``masks``: step-time ratio of ``masked_kga(norm(theta, capacity=c))``, ``theta`` the
  q-quantile of ``|w|`` at init, vs unmasked kga, the overhead reduction
  ``(r_kga - 1) / (r_masked - 1)`` and the masked fraction read from the state
  (same quadratic, ~1e6 parameters).

A block of ``--steps`` steps is one compiled ``lax.scan``; koopax methods snapshot
once per block (KGA-Epoch; ``--steps 100`` is ``koopax.kga``'s default ``snapshot_every``)
and correct with the library's default ``apply_every`` (= ``snapshot_every``) unless the
method's name says otherwise. Every method is warmed up until its window is full
(``num_snapshots + 1`` blocks), then the methods' blocks are timed interleaved,
``--repeats`` rounds; step times are medians. Writes ``overhead.json`` (every number,
plus the environment) and PNG plots to ``--output-dir``. ``--quick`` shrinks every
section to a smoke run (under about a minute on 2 cores, mostly compilation; its models
section is a 64-64-10 MLP with kga only: ``--quick --models fcn`` smoke-tests a Flax model).

Usage (from the repository root)::

  python -m benchmarks overhead [--sections models,params] [--quick] [--no-plots]

(``python -m benchmarks.overhead`` is the same command.) The full default run takes long
on a 2-core CPU (tiny ResNet steps, 3e7 parameters); select sections or models.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import cli, common
from examples import report
from koopax._src import snapshots, tree_math
from koopax._src.kga.operator import acceleration_operator

SECTIONS = ("models", "params", "snapshots", "masks")
MODELS = ("mlp", "fcn", "alexnet", "resnet50")
#: The methods of the models section: a registry method (:mod:`examples.methods`) and its
#: options. Every KGA variant runs with alpha 1 and the window ``--num-snapshots``; PDT,
#: dogra and tano with their own defaults; a snapshot every block (``'epoch'``).
METHODS = {
    "kga": ("kga", {}),                                  # the library's apply_every
    "kga_each": ("kga", {"apply_every": 1}),             # every update corrected (the paper)
    "kga_sum10": ("kga", {"apply_every": 10}),           # the sum of 10 updates
    "kga_increment": ("kga", {"apply_every": "epoch"}),  # the newest increment, per snapshot
    "kga_bf16": ("kga", {"snapshot_dtype": jnp.bfloat16}),
    "kga_efficient": ("kga_efficient", {}),
    "kga_efficient_r2_bf16": ("kga_efficient", {"rank": 2, "snapshot_dtype": jnp.bfloat16}),
    # The harness's KWM (relative threshold 0.03, window 3, capacity 0.5).
    "kga_kwm": ("kga_kwm", {}),
    "kga_norm": ("kga_norm", {}),
    "kga_delta": ("kga_delta", {}),
    "pdt": ("pdt", {}),
    "dogra": ("dogra", {}),
    "tano": ("tano", {}),
}
#: The masked methods of the models section whose thresholds are calibrated on the task.
CALIBRATED = ("kga_norm", "kga_delta")
#: Every mask of the models section gets KWM's capacity (the harness's 0.5): the three
#: masked methods then run on compact buffers of the same static size, and their step
#: times differ by the criterion and its compaction only.
MASK_CAPACITY = 0.5
#: The norm / delta thresholds are this quantile of ``|w|`` at init / of ``|w_{k+1} - w_k|``
#: over one base block (one snapshot period): about half the weights fail each criterion.
MASK_QUANTILE = 0.5
#: The delta mask's window N (the KGA paper's App. A.5: 5 epochs), at most ``h - 1``.
DELTA_WINDOW = 5
PARAM_TARGETS = (1e5, 1e6, 1e7, 3e7)
#: KGA's goal of issue 5 for the step-time ratio.
GOAL_RATIO = 1.05
#: Issue 5's goal for the masks: koopax overhead divided by this at 90 % masked.
MASK_GOAL_REDUCTION = 3.0

QUICK_MLP_SIZES = (64, 64, 10)


# ----------------------------------------------------------------------------- methods
def method_options(name: str, num_snapshots: int, thresholds: dict | None = None) -> dict:
    """The registry options of the models section's method ``name`` (:data:`METHODS`).

    ``thresholds`` (``{"norm": theta, "delta": theta}``, :func:`mask_thresholds`) are
    required by ``kga_norm`` and ``kga_delta``; every mask gets :data:`MASK_CAPACITY`.
    """
    method, options = METHODS[name]
    if method.startswith("kga"):
        options = dict(options, alpha=1.0, num_snapshots=num_snapshots)
    if name in CALIBRATED:
        key = name.removeprefix("kga_")
        if not thresholds or thresholds.get(key) is None:
            raise ValueError(f"{name} needs thresholds[{key!r}] (see mask_thresholds).")
        options[f"{key}_threshold"] = thresholds[key]
        options[f"{key}_capacity"] = MASK_CAPACITY
        if key == "delta":
            options["delta_window"] = min(DELTA_WINDOW, num_snapshots - 1)
    return options


def make_method(name: str, steps: int, num_snapshots: int, thresholds: dict | None = None):
    """The koopax transformation ``name`` of the models section (a snapshot every block)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}.")
    return common.method(METHODS[name][0], method_options(name, num_snapshots, thresholds),
                         steps)


def _base_fn(args):
    """A factory of the base optimizer alone."""
    return lambda: common.optimizer(args.base, args.lr, "base", None, args.steps)


def _method_fn(args, name, thresholds=None):
    """A factory of ``chain(base, method name)``."""
    return lambda: common.optimizer(args.base, args.lr, METHODS[name][0],
                                    method_options(name, args.num_snapshots, thresholds),
                                    args.steps)


def mask_thresholds(task, base_runner, quantile: float = MASK_QUANTILE) -> dict:
    """The norm and delta thresholds of ``task``, so that each mask has work to do.

    The KGA paper does not report its thresholds, and absolute ones do not transfer
    between models. ``norm``: the ``quantile`` of ``|w|`` at init; ``delta``: the
    ``quantile`` of ``|w_{k+1} - w_k|`` over one block (one snapshot period) of the base
    optimizer, trained on from ``base_runner``'s current weights (the runner moves on by
    one block).
    """
    before = jax.tree.map(np.array, base_runner.params)  # copies: the carry is donated
    base_runner.run()
    step = jax.tree.map(lambda a, b: np.array(a) - b, base_runner.params, before)
    return {"norm": common.abs_quantile(task.params, quantile),
            "delta": common.abs_quantile(step, quantile), "quantile": quantile}


def timed_comparison(pool, task, base_tx_fn, methods: dict, warmup: dict, repeats: int):
    """Warms up ``base`` and every method on ``task``, times them interleaved.

    ``methods`` maps names to factories of the full transformation; returns
    ``(base stats, {name: stats with compile time and diagnostics}, runners)``.
    """
    runners = {"base": pool.get(task, "base", base_tx_fn, 2)}
    for name, make_tx in methods.items():
        runners[name] = pool.get(task, name, make_tx, warmup[name])
    times = common.time_interleaved(runners, repeats)
    base = common.step_stats(times["base"], times["base"])
    base["compile_s"] = runners["base"].compile_s
    stats = {}
    for name in methods:
        stats[name] = common.step_stats(times[name], times["base"])
        stats[name]["compile_s"] = runners[name].compile_s
        stats[name]["diagnostics"] = common.diagnostics(runners[name].method_state())
    return base, stats, runners


def window_costs(window, num_features: int, params, repeats: int) -> dict:
    """DMD refresh, one pass over the increments and a snapshot push, in ms."""
    refresh = jax.jit(lambda g: acceleration_operator(
        g, epsilon=1e-2, rank=None, num_features=num_features))
    one_pass = jax.jit(lambda w: tree_math.stacked_products(w.slots, w.last))
    push = jax.jit(snapshots.ring_push)
    t_refresh = common.median_call(refresh, (window.gram,), repeats)
    t_pass = common.median_call(one_pass, (window,), repeats)
    t_push = common.median_call(push, (window, params), repeats)
    return {"refresh_ms": 1e3 * t_refresh, "pass_ms": 1e3 * t_pass, "push_ms": 1e3 * t_push,
            "refresh_over_pass": t_refresh / t_pass, "push_over_pass": t_push / t_pass}


# ----------------------------------------------------------------------------- sections
def section_models(args, pool) -> dict:
    base_fn = _base_fn(args)
    results = []
    for model in args.models:
        if model == "mlp":
            sizes = QUICK_MLP_SIZES if args.quick else common.MLP_SIZES
            task = common.mlp_task(sizes, batch=args.batch, steps=args.steps)
        else:
            task = common.flax_task(model, batch=args.batch, steps=args.steps)
        n = tree_math.tree_size(task.params)
        print(f"\n[models] {model}: {n:,} parameters, batch {args.batch}, "
              f"{args.steps} steps/block", flush=True)
        thresholds = None
        if any(name in CALIBRATED for name in args.methods):
            thresholds = mask_thresholds(task, pool.get(task, "base", base_fn, 2))
            print(f"mask thresholds: norm {thresholds['norm']:.3g} (median |w| at init), "
                  f"delta {thresholds['delta']:.3g} (median |w_k+1 - w_k| over one base block)",
                  flush=True)
        methods = {name: _method_fn(args, name, thresholds) for name in args.methods}
        warmup = {name: args.num_snapshots + 1 for name in methods}
        base, stats, _ = timed_comparison(pool, task, base_fn, methods, warmup, args.repeats)
        pool.drop(task.name)
        rows = [[name, s["ms_per_step"], s["ratio"], s["ratio_paired"], s["ratio_paired_min"],
                 s["ratio_paired_max"], s["ratio_best"], s["compile_s"],
                 _brief(s["diagnostics"])] for name, s in stats.items()]
        print(report.text_table(
            ["method", "ms/step", f"x {args.base}", "paired", "min", "max", "best",
             "compile s", "diagnostics"],
            [[args.base, base["ms_per_step"], 1.0, 1.0, 1.0, 1.0, 1.0, base["compile_s"], ""]]
            + rows))
        results.append({"model": model, "task": task.name, "num_params": n,
                        "base": base, "methods": stats, "mask_thresholds": thresholds})
    return {"base": args.base, "batch": args.batch, "steps_per_block": args.steps,
            "snapshot_every": args.steps, "apply_every": "library default (snapshot_every)",
            "num_snapshots": args.num_snapshots, "image_shape": [32, 32, 3],
            "mask_capacity": MASK_CAPACITY, "results": results}


def _brief(diag: dict) -> str:
    keys = ("num_refreshes", "num_stable", "compact", "masked_fraction", "num_overflow",
            "num_jumps",
            "num_rollbacks", "stopped", "num_nonfinite")
    parts = []
    for k in keys:
        if k in diag:
            v = diag[k]
            parts.append(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


def _kga_fn(args, num_snapshots, norm=None):
    """``chain(base, kga)`` with alpha 1 and ``num_snapshots``; ``norm=(theta, capacity)``:
    masked by ``koopax.masks.norm(theta, capacity=capacity)``."""
    options = dict(alpha=1.0, num_snapshots=num_snapshots)
    if norm is not None:
        options.update(norm_threshold=norm[0], norm_capacity=norm[1])
    method = "kga" if norm is None else "kga_norm"
    return lambda: common.optimizer(args.base, args.lr, method, options, args.steps)


def _quadratic(args, pool_tasks: dict, target: float):
    sizes = common.scaled_mlp_sizes(target)
    if sizes not in pool_tasks:
        pool_tasks[sizes] = common.quadratic_task(sizes, steps=args.steps)
    return pool_tasks[sizes]


def _kga_scaling_point(args, pool, task, num_snapshots) -> dict:
    """Step-time ratio kga(h) / base and the window costs on ``task``."""
    name = f"kga_h{num_snapshots}"
    base, stats, runners = timed_comparison(
        pool, task, _base_fn(args), {name: _kga_fn(args, num_snapshots)},
        {name: num_snapshots + 1}, args.repeats)
    runner = runners[name]
    n = tree_math.tree_size(task.params)
    costs = window_costs(runner.method_state().columns, n, runner.params,
                         max(args.repeats, 3))
    return {"num_params": n, "num_snapshots": num_snapshots, "base": base,
            "kga": stats[name], "ratio": stats[name]["ratio"], **costs}


def _print_scaling(points, key):
    print(report.text_table(
        [key, "base ms", "kga ms", "ratio", "refresh ms", "pass ms", "refresh/pass",
         "push/pass"],
        [[p[key], p["base"]["ms_per_step"], p["kga"]["ms_per_step"], p["ratio"],
          p["refresh_ms"], p["pass_ms"], p["refresh_over_pass"], p["push_over_pass"]]
         for p in points]))


def section_params(args, pool, tasks) -> dict:
    targets = [t for t in PARAM_TARGETS if t <= args.max_params]
    print(f"\n[params] diagonal quadratic over MLP-shaped leaves, kga h={args.num_snapshots}, "
          f"{args.steps} steps/block; targets {[f'{t:.0e}' for t in targets]}", flush=True)
    points = []
    for target in targets:
        task = _quadratic(args, tasks, target)
        point = _kga_scaling_point(args, pool, task, args.num_snapshots)
        points.append({"target": target, "sizes": list(common.scaled_mlp_sizes(target)),
                       **point})
        if target != args.section_params:
            pool.drop(task.name)
            del tasks[common.scaled_mlp_sizes(target)]
    _print_scaling(points, "num_params")
    return {"problem": "diagonal quadratic over MLP-shaped leaves (gradient only)",
            "base": args.base, "num_snapshots": args.num_snapshots,
            "steps_per_block": args.steps, "points": points}


def section_snapshots(args, pool, tasks) -> dict:
    task = _quadratic(args, tasks, args.section_params)
    n = tree_math.tree_size(task.params)
    print(f"\n[snapshots] diagonal quadratic, {n:,} parameters, h in {args.snapshot_counts}",
          flush=True)
    points = []
    for h in args.snapshot_counts:
        points.append(_kga_scaling_point(args, pool, task, h))
    _print_scaling(points, "num_snapshots")
    return {"problem": "diagonal quadratic over MLP-shaped leaves (gradient only)",
            "base": args.base, "num_params": n, "steps_per_block": args.steps,
            "points": points}


def mask_capacity(quantile: float) -> float:
    """A capacity a bit above the kept fraction ``1 - q`` (1.0 for q = 0)."""
    return min(1.0, round(1.0 - quantile + 0.02, 4))


def section_masks(args, pool, tasks) -> dict:
    task = _quadratic(args, tasks, args.section_params)
    n = tree_math.tree_size(task.params)
    h = args.num_snapshots
    print(f"\n[masks] diagonal quadratic, {n:,} parameters, kga h={h} with "
          f"masks.norm(q-quantile of |w| at init), q in {args.quantiles}", flush=True)
    kga = f"kga_h{h}"  # the name shares the runner with the params/snapshots sections
    methods = {kga: _kga_fn(args, h)}
    settings = {}
    for q in args.quantiles:
        theta, cap = common.abs_quantile(task.params, q), mask_capacity(q)
        settings[q] = (theta, cap)
        methods[f"kga_norm_q{q}"] = _kga_fn(args, h, norm=(theta, cap))
    warmup = {name: h + 1 for name in methods}
    base, stats, _ = timed_comparison(pool, task, _base_fn(args), methods, warmup, args.repeats)
    r_kga = stats[kga]["ratio"]
    points = []
    for q, (theta, cap) in settings.items():
        s = stats[f"kga_norm_q{q}"]
        diag = s["diagnostics"]
        excess = s["ratio"] - 1.0
        points.append({
            "quantile": q, "threshold": theta, "capacity": cap, "ratio": s["ratio"],
            "ms_per_step": s["ms_per_step"], "stats": s,
            "overhead_reduction": (r_kga - 1.0) / excess if excess > 0 else None,
            "masked_fraction": diag.get("masked_fraction"),
            "kept_fraction": diag.get("num_kept", 0) / n, "num_overflow": diag.get("num_overflow"),
            "compact": diag.get("compact")})
    print(report.text_table(
        ["q", "capacity", "masked", "kept", "overflow", "ms/step", "ratio", "reduction"],
        [["kga (none)", None, 0.0, 1.0, None, stats[kga]["ms_per_step"], r_kga, 1.0]]
        + [[p["quantile"], p["capacity"], p["masked_fraction"], p["kept_fraction"],
            p["num_overflow"], p["ms_per_step"], p["ratio"], p["overhead_reduction"]]
           for p in points]))
    return {"problem": "diagonal quadratic over MLP-shaped leaves (gradient only)",
            "base": args.base, "num_params": n, "num_snapshots": h,
            "steps_per_block": args.steps, "base_stats": base, "kga": stats[kga],
            "ratio_kga": r_kga, "points": points}


# ----------------------------------------------------------------------------- plots
def plot_models(data, path):
    plt = report.pyplot()
    results = data["results"]
    # Models may have been measured with different method lists (merged runs).
    methods = list(dict.fromkeys(n for r in results for n in r["methods"]))
    fig, ax = plt.subplots(figsize=(max(6.0, len(results) * (1.0 + 0.4 * len(methods))), 4))
    width = 0.8 / max(1, len(methods))
    for j, name in enumerate(methods):
        xs = np.arange(len(results)) + (j - (len(methods) - 1) / 2) * width
        ax.bar(xs, [r["methods"].get(name, {}).get("ratio", np.nan) for r in results], width,
               label=name)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(GOAL_RATIO, color="r", ls="--", lw=0.8, label=f"goal x{GOAL_RATIO}")
    ax.set_xticks(np.arange(len(results)),
                  [f"{r['model']}\n{r['num_params']:,}" for r in results])
    ax.set_ylabel(f"step time / {data['base']}")
    ax.set_title(f"koopax step-time overhead (batch {data['batch']})")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_scaling(data, key, path, xlabel, logx):
    plt = report.pyplot()
    points = data["points"]
    xs = [p[key] for p in points]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(xs, [p["ratio"] for p in points], "o-")
    a1.axhline(GOAL_RATIO, color="r", ls="--", lw=0.8, label=f"goal x{GOAL_RATIO}")
    a1.set_ylabel(f"step time kga / {data['base']}")
    a2.plot(xs, [p["refresh_over_pass"] for p in points], "o-", label="DMD refresh / one pass")
    a2.plot(xs, [p["push_over_pass"] for p in points], "s--", label="snapshot push / one pass")
    a2.set_ylabel("time ratio")
    a2.set_yscale("log")
    for ax in (a1, a2):
        ax.set_xlabel(xlabel)
        if logx:
            ax.set_xscale("log")
        ax.legend(fontsize=8)
    fig.suptitle(data["problem"], fontsize=9)
    _save(fig, path)


def plot_masks(data, path):
    plt = report.pyplot()
    points = data["points"]
    fig, ax = plt.subplots(figsize=(6, 4))
    points = sorted(points, key=lambda p: p["masked_fraction"])
    ax.plot([p["masked_fraction"] for p in points], [p["ratio"] - 1.0 for p in points], "o-",
            label="kga + norm mask")
    ax.plot([0.0], [data["ratio_kga"] - 1.0], "r*", ms=12, label="kga, no mask")
    for p in points:
        ax.annotate(f"q={p['quantile']}", (p["masked_fraction"], p["ratio"] - 1.0), fontsize=7)
    ax.axhline((data["ratio_kga"] - 1.0) / MASK_GOAL_REDUCTION, color="r", ls="--", lw=0.8,
               label=f"goal: kga's overhead / {MASK_GOAL_REDUCTION:g} at 90 % masked")
    ax.set_xlabel("masked fraction (from the state)")
    ax.set_ylabel(f"overhead: step time / {data['base']} - 1")
    ax.set_title(f"masked KGA, {data['num_params']:,} parameters")
    ax.legend(fontsize=8)
    _save(fig, path)


def _save(fig, path):
    print(f"wrote {report.save_figure(fig, path)}")


# ----------------------------------------------------------------------------- main
def run(args):
    env = report.environment()
    print(f"koopax overhead benchmark: jax {env['jax']} on {env['platform']} "
          f"({env['cpu_count']} CPUs), base {args.base}, sections {args.sections}"
          + (" [quick]" if args.quick else ""), flush=True)
    pool, tasks, out = common.RunnerPool(), {}, {}
    sections = {"models": lambda: section_models(args, pool),
                "params": lambda: section_params(args, pool, tasks),
                "snapshots": lambda: section_snapshots(args, pool, tasks),
                "masks": lambda: section_masks(args, pool, tasks)}
    for name, section in sections.items():
        if name in args.sections:
            t0 = time.perf_counter()
            out[name] = section()
            out[name]["wall_s"] = time.perf_counter() - t0
            print(f"({name}: {out[name]['wall_s']:.1f} s in all, compilation included)")
            out[name]["config"] = dict(vars(args))
    # Sections run separately (e.g. with different --steps) share one file: the
    # sections of an earlier run that this run did not repeat are kept.
    path = os.path.join(args.output_dir, "overhead.json")
    merged = {}
    if os.path.exists(path):
        with open(path) as f:
            merged = json.load(f).get("sections", {})
    if "models" in out and "models" in merged:  # models measured apart are kept too
        fresh = {r["model"] for r in out["models"]["results"]}
        out["models"]["results"] = [r for r in merged["models"]["results"]
                                    if r["model"] not in fresh] + out["models"]["results"]
    merged.update(out)
    report.write_json(path, {"environment": env, "config": vars(args), "sections": merged},
                      indent=2)
    print(f"\nwrote {path}")
    if not args.no_plots:
        write_plots(merged, args.output_dir)
    return out


def _check(args) -> str | None:
    if args.num_snapshots < 3 or any(h < 3 for h in args.snapshot_counts):
        return "--num-snapshots and --snapshot-counts must be >= 3."
    if not all(0.0 <= q < 1.0 for q in args.quantiles):
        return f"--quantiles must lie in [0, 1); got {args.quantiles}."
    if not args.max_params >= PARAM_TARGETS[0]:
        return f"--max-params must be >= {PARAM_TARGETS[0]:.0e}; got {args.max_params}."
    if not args.section_params >= 1e3:
        return f"--section-params must be >= 1e3; got {args.section_params}."
    return None


Option = cli.Option
BENCHMARK = cli.Benchmark(
    "overhead", run, description=__doc__.splitlines()[0], epilog=__doc__, flags=("quick", "plots"),
    check=_check, options=(
        Option("--sections", list(SECTIONS), "sections", list=True, choices=SECTIONS),
        Option("--models", list(MODELS), "models section: models", list=True, choices=MODELS,
               quick=["mlp"]),
        Option("--methods", list(METHODS), "models section: methods", list=True,
               choices=tuple(METHODS), quick=["kga"]),
        Option("--base", "adam", "base optimizer", choices=tuple(common.BASE_LEARNING_RATES)),
        Option("--lr", None, "base learning rate (adam 1e-3, sgd 0.05)",
               type=cli.positive_float),
        Option("--steps", 20, "steps per timed block = snapshot_every", type=cli.positive_int,
               quick=3),
        Option("--batch", 32, "models section batch size", type=cli.positive_int, quick=8),
        Option("--repeats", 5, "interleaved timed blocks per method", type=cli.positive_int,
               quick=2),
        Option("--num-snapshots", 6, "KGA's h", type=int),
        Option("--max-params", 3e7, "params section: largest size", type=float, quick=1e6),
        Option("--section-params", 1e6, "snapshots/masks sections: parameter count",
               type=float),
        Option("--snapshot-counts", [4, 8, 16, 32], "snapshots section: h values", type=int,
               list=True, quick=[4, 8]),
        Option("--quantiles", [0, 0.5, 0.75, 0.9, 0.95], "masks section: |w| quantiles",
               type=float, list=True, quick=[0.9]),
    ))


def parse_args(argv=None):
    return cli.parse_args(BENCHMARK, argv)


def main(argv=None):
    return cli.main(BENCHMARK, argv)


def write_plots(out, output_dir):
    if "models" in out:
        plot_models(out["models"], os.path.join(output_dir, "overhead_models.png"))
    if "params" in out:
        plot_scaling(out["params"], "num_params", os.path.join(output_dir, "overhead_params.png"),
                     "parameters", logx=True)
    if "snapshots" in out:
        plot_scaling(out["snapshots"], "num_snapshots",
                     os.path.join(output_dir, "overhead_snapshots.png"), "num_snapshots h",
                     logx=False)
    if "masks" in out:
        plot_masks(out["masks"], os.path.join(output_dir, "overhead_masks.png"))


if __name__ == "__main__":
    main()
