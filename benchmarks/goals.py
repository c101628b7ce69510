"""Where each goal of issue 5 stands, read from the suite's JSON files.

Reads ``memory.json``, ``overhead.json`` (written by :mod:`benchmarks.memory`
and :mod:`benchmarks.overhead`) and ``convergence/convergence.json`` under
``--results-dir`` and writes ``goals.md`` there: one line per goal with the
measured figure, the goal and met / not met. Missing files are reported as
"not measured". Nothing is run.

Usage: ``python -m benchmarks goals [--results-dir benchmarks/results]``.
"""

from __future__ import annotations

import json
import os
import statistics

from benchmarks import RESULTS_DIR, cli
from examples import report as _report

TIME_GOAL, ACC_GOAL = 0.70, 0.5
STEP_GOAL, REFRESH_GOAL, MASK_GOAL = 1.05, 3.0, 3.0


def _load(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _met(ok):
    return "met" if ok else "**not met**"


def convergence_lines(conv) -> list[str]:
    """Convergence goal, per method: how many (task, base) runs meet it."""
    if conv is None:
        return ["- time to the base's best loss <= 0.70x with test accuracy within 0.5 "
                "points: not measured"]
    rows = conv["rows"]
    lines = [f"- time to the base's best loss <= {TIME_GOAL}x (median of the seeds) with test "
             f"accuracy within {ACC_GOAL} points, on every task: "
             + _met(bool(rows) and all(r["goal_met"] for r in rows if r["method"] == "kga"))
             + " for kga; per method (runs meeting it / runs; median time ratio over the runs "
               "that reached the target; runs not reaching it):"]
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        ratios = [r["time_ratio"] for r in mine if r["time_ratio"] is not None]
        med = f"{statistics.median(ratios):.2f}x" if ratios else "-"
        missed = sum(r["time_ratio"] is None for r in mine)
        lines.append(f"  - {method}: {sum(r['goal_met'] for r in mine)}/{len(mine)} runs; "
                     f"median time ratio {med}; target not reached in {missed}")
    return lines


def overhead_lines(ov) -> list[str]:
    if ov is None:
        return ["- per-step overhead, refresh cost, masks: not measured"]
    sec = ov.get("sections", {})
    lines = []
    models = sec.get("models")
    if models:
        parts = []
        ok = True
        for r in models["results"]:
            kga = r["methods"].get("kga")
            if kga is None:
                continue
            ok &= kga["ratio"] <= STEP_GOAL
            variants = ", ".join(f"{name} {m['ratio']:.2f}x" for name, m in r["methods"].items()
                                 if name.startswith("kga_"))
            parts.append(f"{r['model']} ({r['num_params']:,} params) {kga['ratio']:.2f}x"
                         + (f" ({variants})" if variants else ""))
        lines.append(f"- KGA-Epoch step time / base step time <= {STEP_GOAL}x: {_met(ok)}: "
                     + "; ".join(parts) + f" (base {models['base']}, batch {models['batch']})")
    refresh = [p for key in ("params", "snapshots") for p in sec.get(key, {}).get("points", [])]
    if refresh:
        worst = max(refresh, key=lambda p: p["refresh_over_pass"])
        lines.append(
            f"- DMD refresh <= {REFRESH_GOAL}x one pass over the snapshots: "
            f"{_met(worst['refresh_over_pass'] <= REFRESH_GOAL)}: at most "
            f"{worst['refresh_over_pass']:.2f}x (at {worst['num_params']:,} params, "
            f"h={worst['num_snapshots']})")
    masks = sec.get("masks")
    if masks and masks.get("points"):
        near90 = min(masks["points"], key=lambda p: abs(p["masked_fraction"] - 0.9))
        red = near90["overhead_reduction"]
        lines.append(
            f"- with ~90 % of the weights masked the overhead drops >= {MASK_GOAL}x: "
            f"{_met(red is not None and red >= MASK_GOAL)}: {red:.2f}x at masked fraction "
            f"{near90['masked_fraction']:.3f} (kga {masks['ratio_kga']:.2f}x, masked "
            f"{near90['ratio']:.2f}x of the base step; {masks['steps_per_block']} steps per "
            f"snapshot)")
    return lines


def memory_lines(mem) -> list[str]:
    if mem is None:
        return ["- optimizer-state memory: not measured"]
    lines = []
    for model, table in mem["sections"].get("state", {}).items():
        rows = [r for r in table["rows"] if r["goal"] is not None]
        bad = [r for r in rows if not r["goal_met"]]
        detail = "; ".join(f"{r['label']} {r['koopax_ratio']:.2f}x (goal <= {r['goal']:g}x)"
                           for r in (bad or rows[:3]))
        lines.append(f"- optimizer-state bytes / parameter bytes ({model}, koopax part): "
                     f"{len(rows) - len(bad)}/{len(rows)} variants met"
                     + (f"; not met: {detail}" if bad else f" (e.g. {detail})"))
    peak = mem["sections"].get("peak")
    if peak:
        parts = [f"{r['label']} {r['peak_mib']:.0f} MiB ({r['ratio']:.2f}x)"
                 for r in peak["rows"] if r.get("ratio") is not None]
        lines.append(f"- peak process memory of a short training run ({peak['model']}): "
                     + "; ".join(parts) + " (no goal; reported)")
    return lines


def report(results_dir: str) -> str:
    conv = _load(os.path.join(results_dir, "convergence", "convergence.json"))
    ov = _load(os.path.join(results_dir, "overhead.json"))
    mem = _load(os.path.join(results_dir, "memory.json"))
    lines = ["# Goals of issue 5: where they stand", "",
             "Generated by `python -m benchmarks.goals` from the JSON files of the suite.", ""]
    lines += convergence_lines(conv) + overhead_lines(ov) + memory_lines(mem)
    return "\n".join(lines) + "\n"


def run(args) -> str:
    text = report(args.results_dir)
    _report.write_text(os.path.join(args.results_dir, "goals.md"), text)
    print(text)
    return text


def _check(args):
    if not os.path.isdir(args.results_dir):
        return f"--results-dir: {args.results_dir!r} is not a directory"
    return None


BENCHMARK = cli.Benchmark(
    "goals", run, description=__doc__.splitlines()[0], epilog=__doc__, output=None, flags=(),
    check=_check, options=(
        cli.Option("--results-dir", RESULTS_DIR, "the suite's results"),
    ))


def main(argv=None) -> str:
    return cli.main(BENCHMARK, argv)


if __name__ == "__main__":
    main()
