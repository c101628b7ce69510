"""The benchmarks' command: ``python -m benchmarks NAME [options]`` runs one
(:mod:`benchmarks.cli`; ``--list`` names them), ``python -m benchmarks [options]``
the whole suite.

Runs, in order, :mod:`benchmarks.memory` (state bytes, peak RSS),
:mod:`benchmarks.overhead` (step-time ratios and their scaling),
:mod:`benchmarks.pdt_jump` (PDT's per-epoch and jump cost),
:mod:`benchmarks.peer_pdt` (PDT on the PDT authors' digits setting, with the
tuned SGD rate),
:mod:`benchmarks.depth` (the PDT depth study) and
:mod:`benchmarks.convergence` (every task x base optimizer x method, 5 seeds,
with the learning-rate sweep), then :mod:`benchmarks.goals`, which reads their
JSON files and writes ``goals.md``: where each goal of issue 5 stands.

Everything is written under ``--output-dir`` (default ``benchmarks/results``;
``runs/benchmarks_quick`` with ``--quick``, so smoke runs never overwrite the
published results).
On 2 CPU cores the full suite takes hours (the convergence part dominates);
``--only`` picks parts, ``--quick`` is a smoke run of every part (about 6
minutes on 2 cores; convergence on two tasks only).
Runs of the convergence and depth parts already on disk are reused (delete
them, or pass ``--rerun``, to measure again). CPU by default; JAX picks a GPU
when one is installed and visible.

Usage::

    python -m benchmarks NAME [options]      # one benchmark, e.g. memory --quick
    python -m benchmarks --list
    python -m benchmarks [--only memory,overhead,pdt_jump,peer_pdt,depth,kga_defaults,
                                 convergence,reproduction] [--quick] [--rerun]
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):  # pragma: no cover - `python benchmarks/__main__.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import (cli, convergence, default_output_dir, depth, goals,  # noqa: E402
                        kga_defaults, memory, overhead, pdt_jump, peer_pdt, reproduction)

PARTS = ("memory", "overhead", "pdt_jump", "peer_pdt", "depth", "kga_defaults", "convergence",
         "reproduction")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0],
                                epilog="One benchmark: python -m benchmarks NAME [options] "
                                       "(python -m benchmarks --list).")
    p.add_argument("--only", type=convergence._comma_list(PARTS), default=list(PARTS),
                   help=f"comma list of parts ({', '.join(PARTS)})")
    p.add_argument("--output-dir", help="default benchmarks/results (runs/benchmarks_quick "
                                         "with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke run of every part")
    p.add_argument("--rerun", action="store_true", help="convergence/depth: rerun stored runs")
    p.add_argument("--no-plots", action="store_true")
    return p


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and (argv[0] in cli.NAMES or argv[0] in ("--list", "-l")):
        cli.command(argv)
        return
    args = build_parser().parse_args(argv)
    args.output_dir = args.output_dir or default_output_dir(args.quick)
    out = args.output_dir
    common = (["--quick"] if args.quick else []) + (["--no-plots"] if args.no_plots else [])
    rerun = ["--rerun"] if args.rerun else []
    for part in args.only:
        print(f"\n##### benchmarks.{part}", flush=True)
        if part == "memory":
            memory.main(["--output-dir", out] + common)
        elif part == "overhead":
            overhead.main(["--output-dir", out] + common)
        elif part == "pdt_jump":
            pdt_jump.main(["--output-dir", out] + (["--quick"] if args.quick else []))
        elif part == "peer_pdt":
            peer_pdt.main(["--output-dir", os.path.join(out, "peer_pdt")]
                          + (["--quick"] if args.quick else ["--tune"]))
        elif part == "depth":
            depth.main(["--output-dir", os.path.join(out, "depth")] + rerun
                       + (["--quick", "--seeds", "1"] if args.quick else []))
        elif part == "kga_defaults":
            kga_defaults.main(["--output-dir", os.path.join(out, "kga_defaults")]
                              + (["--quick", "--tasks", "digits_mlp"] if args.quick else []))
        elif part == "reproduction":
            reproduction.main(["--output-dir", os.path.join(out, "reproduction")]
                              + (["--quick"] if args.quick else []))
        else:
            # A smoke run exercises the pipeline on one MLP and one image task; the
            # headline is the tuned base (issue 11), the default-rate table a secondary view.
            smoke = ["--seeds", "1", "--tasks", "digits_mlp,images_fcn", "--bases", "sgd"]
            convergence.main(["--output-dir", os.path.join(out, "convergence")] + rerun
                             + common + (smoke if args.quick else ["--tune"]))
    print("\n##### goals", flush=True)
    goals.main(["--results-dir", out])   # prints goals.md


if __name__ == "__main__":
    main()
