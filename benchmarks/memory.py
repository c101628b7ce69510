"""Memory of the koopax methods (issue 5): optimizer-state bytes and peak process memory.

Sections (``--sections``, default both):

* ``state``: optimizer-state bytes / parameter bytes of ``chain(adam, method)`` from
  ``jax.eval_shape(tx.init, params)`` (nothing is allocated), for the ~1.07M-parameter
  MLP (784-1024-256-10) and the tiny ResNet (``resnet50`` tiny, 32x32x3) of
  ``examples.models``. The koopax part of the state is counted separately from the
  base's (adam alone is listed for reference). Each method is checked against the goal
  of issue 5: ``<= (h + 2)x`` the parameters for full snapshots (kga, masked kga, and
  pdt / dogra / tano with their own h), ``<= (r + 2)x`` for efficient kga (``r`` its
  basis size), half of that with bfloat16 snapshots.
* ``peak``: peak resident memory of a short training run of the MLP
  (batch ``--batch``, ``--epochs`` x ``--steps`` steps, a snapshot every ``--steps``
  steps) with adam alone and with each method, one fresh subprocess per method
  (``python -m benchmarks.memory --child METHOD``); reported in MiB, as a ratio to
  adam alone and as the extra MiB over adam next to the koopax state size. The peak is
  ``VmHWM`` of ``/proc/self/status`` on Linux (``ru_maxrss`` elsewhere; it is reported
  too, but on Linux a child's ``ru_maxrss`` includes the launching process's memory).

Writes ``memory.json`` (every number, plus the environment) and ``memory.png`` to
``--output-dir``. ``--quick``: a few steps, peak memory of adam and kga only.

Usage (from the repository root)::

  python -m benchmarks memory [--sections state,peak] [--quick] [--no-plots]

(``python -m benchmarks.memory`` is the same command.)
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp

from benchmarks import cli, common
from examples import report
from koopax._src import tree_math

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SECTIONS = ("state", "peak")
#: Marks the result line a child process prints.
CHILD_MARK = "KOOPAX_MEMORY_CHILD "
#: num_snapshots of pdt and of dogra / tano (their defaults).
PREDICTION_H, BASELINE_H = 6, 5


class Variant(NamedTuple):
    """A row: a registry method (:mod:`examples.methods`) and its options, and its goal.

    ``method`` ``None`` is adam alone; ``norm_quantile``: the norm mask's threshold is
    that quantile of ``|w|`` (0 for abstract parameters: the state's shapes do not
    depend on it). Every KGA variant runs with alpha 1; a snapshot every epoch.
    """

    label: str
    method: str | None
    options: dict
    goal: float | None
    goal_rule: str
    norm_quantile: float | None = None


def _variants() -> dict[str, Variant]:
    full = "(h+2)x, full snapshots"
    kga = dict(alpha=1.0)
    v = {"adam": Variant("adam alone (reference)", None, {}, None, "")}
    for h in (4, 6, 8):
        v[f"kga_h{h}"] = Variant(f"kga h={h} f32", "kga", dict(kga, num_snapshots=h), h + 2,
                                 full)
    v["kga_h6_bf16"] = Variant("kga h=6 bf16", "kga", dict(kga, snapshot_dtype=jnp.bfloat16),
                               8 / 2, "(h+2)/2 x, bf16 snapshots")
    v["kga_efficient"] = Variant("kga efficient (r=h-2=4)", "kga_efficient", kga, 4 + 2,
                                 "(r+2)x, efficient")
    v["kga_efficient_r2"] = Variant("kga efficient r=2", "kga_efficient", dict(kga, rank=2),
                                    2 + 2, "(r+2)x, efficient")
    for c in (0.5, 0.1):
        v[f"kga_kwm_c{c}"] = Variant(
            f"kga h=6 + kwm capacity {c}", "kga_kwm",
            dict(kga, kwm_epsilon=1e-4, kwm_window=3, kwm_relative=False, kwm_capacity=c), 8,
            full)
        v[f"kga_norm_c{c}"] = Variant(f"kga h=6 + norm capacity {c}", "kga_norm",
                                      dict(kga, norm_capacity=c), 8, full, 1.0 - c)
    v["pdt"] = Variant(f"pdt (h={PREDICTION_H})", "pdt", {}, PREDICTION_H + 2, full)
    for mode in ("dogra", "tano"):
        v[mode] = Variant(f"{mode} (h={BASELINE_H})", mode, {}, BASELINE_H + 2, full)
    return v


VARIANTS = _variants()


def make_tx(key: str, params, snapshot_every: int):
    """``adam`` alone or ``chain(adam, variant)`` (accepting ``value=``)."""
    variant = VARIANTS[key]
    options = dict(variant.options)
    if variant.norm_quantile is not None:
        concrete = all(isinstance(x, jax.Array) for x in jax.tree.leaves(params))
        options["norm_threshold"] = (common.abs_quantile(params, variant.norm_quantile)
                                     if concrete else 0.0)
    return common.optimizer("adam", 1e-3, variant.method or "base", options, snapshot_every)


# ----------------------------------------------------------------------------- state bytes
def state_row(key: str, params, snapshot_every: int = 10) -> dict:
    """Bytes of the base and koopax parts of ``key``'s optimizer state for ``params``."""
    variant = VARIANTS[key]
    pbytes = common.tree_bytes(params)
    shapes = jax.eval_shape(make_tx(key, params, snapshot_every).init, params)
    if variant.method is None:
        base_bytes, koopax_bytes = common.tree_bytes(shapes), 0
    else:
        base_bytes, koopax_bytes = common.tree_bytes(shapes[0]), common.tree_bytes(shapes[1])
    ratio = koopax_bytes / pbytes
    return {"method": key, "label": variant.label, "param_bytes": pbytes,
            "base_bytes": base_bytes, "koopax_bytes": koopax_bytes,
            "base_ratio": base_bytes / pbytes, "koopax_ratio": ratio,
            "goal": variant.goal, "goal_rule": variant.goal_rule,
            "goal_met": None if variant.goal is None else bool(ratio <= variant.goal)}


def section_state() -> dict:
    # Abstract parameters (jax.ShapeDtypeStruct): nothing is initialized or allocated.
    mlp = jax.eval_shape(lambda key: common.mlp_params(key, common.MLP_SIZES), jax.random.key(0))
    models = {"mlp": mlp,
              "resnet50_tiny": common.split_flax_model("resnet50", abstract=True)[1]}
    out = {}
    for name, params in models.items():
        n = tree_math.tree_size(params)
        rows = [state_row(key, params) for key in VARIANTS]
        print(f"\n[state] {name}: {n:,} parameters ({rows[0]['param_bytes'] / 2**20:.2f} MiB); "
              "state bytes / parameter bytes", flush=True)
        print(report.text_table(
            ["method", "adam part", "koopax part", "goal", "met"],
            [[r["label"], r["base_ratio"], r["koopax_ratio"],
              None if r["goal"] is None else f"<= {r['goal']:g} ({r['goal_rule']})",
              None if r["goal_met"] is None else ("met" if r["goal_met"] else "NOT MET")]
             for r in rows]))
        out[name] = {"num_params": n, "rows": rows}
    return out


# ----------------------------------------------------------------------------- peak memory
def _ru_maxrss_kib() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss  # bytes on macOS


def peak_rss_kib() -> int:
    """Peak resident memory of this process (KiB).

    On Linux ``/proc/self/status`` ``VmHWM``: ``ru_maxrss`` of a child process
    also counts the launching process's resident memory (the kernel carries the
    pre-``exec`` high-water mark over), so with a parent that has JAX loaded it
    reads a few hundred MiB too high. Elsewhere ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return _ru_maxrss_kib()


def child_main(key: str, steps: int, epochs: int, batch: int) -> dict:
    """Trains the MLP for ``epochs`` blocks with ``key``; returns its peak memory.

    ``peak_kib`` covers the whole process (imports, compilation, training);
    ``xla`` is XLA's own account of the compiled block's buffers.
    """
    rss_start = peak_rss_kib()
    task = common.mlp_task(common.MLP_SIZES, batch=batch, steps=steps)
    tx = make_tx(key, task.params, steps)
    t0 = time.perf_counter()
    runner = common.Runner(task, tx, key)
    for _ in range(epochs):
        runner.run()
    wall = time.perf_counter() - t0
    state = runner.method_state()
    return {"method": key, "peak_kib": peak_rss_kib(), "ru_maxrss_kib": _ru_maxrss_kib(),
            "peak_start_kib": rss_start, "wall_s": wall, "compile_s": runner.compile_s,
            "steps": steps * epochs, "batch": batch, "xla": runner.memory_stats(),
            "koopax_state_bytes": 0 if state is None else common.tree_bytes(state),
            "diagnostics": common.diagnostics(state)}


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
    # The same single CPU device for every child, whatever the parent was given.
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags)
    return env


def run_child(key: str, args) -> dict:
    cmd = [sys.executable, "-m", "benchmarks", "memory", "--child", key, "--steps", str(args.steps),
           "--epochs", str(args.epochs), "--batch", str(args.batch)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=_child_env(), capture_output=True, text=True,
                          timeout=600)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(CHILD_MARK):
            return json.loads(line[len(CHILD_MARK):])
    raise RuntimeError(f"memory child {key!r} failed (exit {proc.returncode}):\n"
                       f"{proc.stderr[-3000:]}")


def _peak_row(key: str, run: dict, base: dict | None) -> dict:
    xla = run["xla"].get("peak_memory_in_bytes")
    return {**run, "label": VARIANTS[key].label, "peak_mib": run["peak_kib"] / 1024,
            "ratio": None if base is None else run["peak_kib"] / base["peak_kib"],
            "extra_mib": None if base is None else (run["peak_kib"] - base["peak_kib"]) / 1024,
            "xla_peak_mib": None if xla is None else xla / 2**20,
            "state_mib": run["koopax_state_bytes"] / 2**20,
            "start_mib": run["peak_start_kib"] / 1024, "ru_maxrss_mib": run["ru_maxrss_kib"] / 1024}


def section_peak(args) -> dict:
    print(f"\n[peak] MLP {common.MLP_SIZES}, batch {args.batch}, {args.epochs} x {args.steps} "
          f"steps, one subprocess per method", flush=True)
    runs = {key: run_child(key, args) for key in args.peak_methods}
    base = runs.get("adam")
    rows = [_peak_row(key, r, base) for key, r in runs.items()]
    print(report.text_table(
        ["method", "peak MiB", "x adam", "extra MiB", "XLA block MiB", "koopax state MiB",
         "MiB after import", "ru_maxrss MiB"],
        [[r["label"], r["peak_mib"], r["ratio"], r["extra_mib"], r["xla_peak_mib"],
          r["state_mib"], r["start_mib"], r["ru_maxrss_mib"]] for r in rows]))
    print("peak: whole process (imports, compilation, training); XLA block: the compiled "
          "block's buffers (arguments, outputs, temporaries) by XLA's memory analysis")
    return {"model": f"mlp{common.MLP_SIZES}",
            "num_params": common.mlp_size(common.MLP_SIZES), "batch": args.batch,
            "steps_per_epoch": args.steps, "epochs": args.epochs, "rows": rows}


# ----------------------------------------------------------------------------- plot
def plot(out, path):
    panels = [k for k in ("state", "peak") if k in out]
    fig, axes = report.pyplot().subplots(1, len(panels), figsize=(7 * len(panels), 6),
                                         squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "state":
            _plot_state(ax, out["state"])
        else:
            _plot_peak(ax, out["peak"])
    print(f"wrote {report.save_figure(fig, path)}")


def _plot_state(ax, state):
    names = list(state)
    rows0 = [r for r in state[names[0]]["rows"] if r["goal"] is not None]
    labels = [r["label"] for r in rows0]
    height = 0.8 / len(names)
    for j, name in enumerate(names):
        rows = [r for r in state[name]["rows"] if r["goal"] is not None]
        ys = [i + (j - (len(names) - 1) / 2) * height for i in range(len(rows))]
        ax.barh(ys, [r["koopax_ratio"] for r in rows], height, label=name)
    ax.scatter([r["goal"] for r in rows0], range(len(rows0)), marker="|", s=300, c="r",
               label="goal (issue 5)", zorder=3)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("koopax state bytes / parameter bytes")
    ax.legend(fontsize=8)


def _plot_peak(ax, peak):
    rows = peak["rows"]
    ax.barh(range(len(rows)), [r["peak_mib"] for r in rows], color="tab:gray")
    for i, r in enumerate(rows):
        if r["ratio"] is not None:
            ax.text(r["peak_mib"], i, f" x{r['ratio']:.3f}", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"peak RSS (MiB), MLP {peak['num_params']:,} params, {peak['epochs']}x"
                  f"{peak['steps_per_epoch']} steps")


# ----------------------------------------------------------------------------- main
def run(args):
    if args.child:
        result = child_main(args.child, args.steps, args.epochs, args.batch)
        print(CHILD_MARK + json.dumps(report.sanitize(result)), flush=True)
        return result
    env = report.environment()
    print(f"koopax memory benchmark: jax {env['jax']} on {env['platform']} "
          f"({env['cpu_count']} CPUs), sections {args.sections}"
          + (" [quick]" if args.quick else ""), flush=True)
    out = {}
    if "state" in args.sections:
        out["state"] = section_state()
    if "peak" in args.sections:
        out["peak"] = section_peak(args)
    path = os.path.join(args.output_dir, "memory.json")
    report.write_json(path, {"environment": env, "config": vars(args), "sections": out},
                      indent=2)
    print(f"\nwrote {path}")
    if not args.no_plots:
        plot(out, os.path.join(args.output_dir, "memory.png"))
    return out


Option = cli.Option
BENCHMARK = cli.Benchmark(
    "memory", run, description=__doc__.splitlines()[0], epilog=__doc__, flags=("quick", "plots"),
    options=(
        Option("--sections", list(SECTIONS), "sections", list=True, choices=SECTIONS),
        Option("--peak-methods", list(VARIANTS), "peak section: methods", list=True,
               choices=tuple(VARIANTS), quick=["adam", "kga_h6"]),
        Option("--steps", 10, "steps per epoch = snapshot_every", type=cli.positive_int,
               quick=1),
        Option("--epochs", 9, "epochs of the peak-memory run", type=cli.positive_int,
               quick=7),
        Option("--batch", 128, "batch size of the peak-memory run", type=cli.positive_int,
               quick=16),
        Option("--child", None, "internal: run one peak-memory measurement and print it",
               choices=tuple(VARIANTS), metavar="METHOD"),
    ))


def parse_args(argv=None):
    return cli.parse_args(BENCHMARK, argv)


def main(argv=None):
    return cli.main(BENCHMARK, argv)


if __name__ == "__main__":
    main()
