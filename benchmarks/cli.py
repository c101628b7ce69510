"""The command line of the benchmarks: ``python -m benchmarks NAME [options]``.

A benchmark module declares what it is as data, a :class:`Benchmark` named
``BENCHMARK``: its name, its options (each with its default and its
``--quick`` value), the common flags it takes and the function that runs it.
This module turns that into the argument parser, fills the defaults (the
``--quick`` ones under ``--quick``), parses and checks the values (an error
names the option) and runs it. Declared so far: memory, overhead, nnx_cost,
devices, damping, clock, pdt_jump, peer_pdt, depth and goals; convergence,
workloads, kga_defaults and reproduction keep their own argparse parser behind
the same command (their ``main(argv)``). :data:`NAMES` is the table of benchmarks; ``python -m
benchmarks --list`` prints it, ``python -m benchmarks.NAME [options]`` is the
same as ``python -m benchmarks NAME [options]``, and ``python -m benchmarks``
without a name runs the suite (:mod:`benchmarks.__main__`).

Common flags (where a benchmark takes them): ``--output-dir`` (default
``benchmarks/results[/SUBDIR]``, under ``runs/benchmarks_quick`` with
``--quick`` so that smoke runs never overwrite the published results),
``--quick``, ``--no-plots``, ``--no-progress``, ``--rerun``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import default_output_dir
from examples.cli import nonnegative_float, positive_float, positive_int  # noqa: F401

__all__ = ["Benchmark", "NAMES", "Option", "get", "main", "parse_args"]

#: Every benchmark, ``python -m benchmarks NAME`` (module ``benchmarks.NAME``), in the
#: order ``--list`` prints them.
NAMES = ("memory", "overhead", "nnx_cost", "devices", "pdt_jump", "peer_pdt", "depth",
         "kga_defaults", "convergence", "damping", "clock", "workloads", "reproduction", "goals")
#: The common flags a benchmark may take.
FLAGS = ("quick", "plots", "progress", "rerun")
_SAME = object()


@dataclasses.dataclass(frozen=True)
class Option:
    """One ``--flag`` of a benchmark.

    Attributes:
      flag: ``'--steps'``; the attribute is its name with ``_`` for ``-``
        (or ``dest``).
      default: the value when the flag is not given (a Python value, not text).
      help: one line for ``--help``.
      type: parses one value (one item of a ``list``) from its text; a
        ``ValueError`` or ``argparse.ArgumentTypeError`` is a usage error.
      quick: the value under ``--quick`` when the flag is not given (default:
        ``default``).
      choices: the allowed values (after ``type``).
      list: a comma-separated list of values.
      action: ``'store_true'`` or ``'store_false'`` for a switch.
      dest: the attribute name, where it is not the flag's.
      metavar: the placeholder in ``--help``.
    """

    flag: str
    default: Any = None
    help: str = ""
    type: Callable[[str], Any] = str
    quick: Any = _SAME
    choices: Sequence[Any] | None = None
    list: bool = False
    action: str | None = None
    dest: str | None = None
    metavar: str | None = None

    @property
    def name(self) -> str:
        return self.dest or self.flag.lstrip("-").replace("-", "_")

    def value(self, quick: bool):
        return self.default if self.quick is _SAME or not quick else self.quick

    def parse(self, text: str):
        """The value of ``text``; ``ValueError`` naming the flag."""
        items = [t.strip() for t in text.split(",") if t.strip()] if self.list else [text]
        if not items:
            raise ValueError(f"{self.flag}: expected a comma-separated list; got {text!r}.")
        values = []
        for item in items:
            try:
                value = self.type(item)
            except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
                raise ValueError(f"{self.flag}: cannot read {item!r} ({e}).") from None
            if self.choices is not None and value not in self.choices:
                raise ValueError(f"{self.flag}: unknown value {item!r}; choose from "
                                 f"{', '.join(map(str, self.choices))}.")
            values.append(value)
        return values if self.list else values[0]


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """A benchmark, declared: what ``python -m benchmarks NAME`` parses and runs.

    Attributes:
      name: ``python -m benchmarks NAME``.
      run: ``run(args) -> results`` with the parsed ``argparse.Namespace``.
      options: its own :class:`Option` s.
      description: one line (``--list``, ``--help``).
      output: the sub-directory of the results it writes into (``''`` the
        results directory itself; ``None``: no ``--output-dir``).
      flags: the common flags it takes, of :data:`FLAGS`.
      check: ``check(args) -> message or None``: checks across options.
      epilog: more text for ``--help`` (e.g. the module's docstring).
    """

    name: str
    run: Callable[[argparse.Namespace], Any]
    options: tuple[Option, ...] = ()
    description: str = ""
    output: str | None = ""
    flags: tuple[str, ...] = ("quick",)
    check: Callable[[argparse.Namespace], str | None] | None = None
    epilog: str = ""

    def __post_init__(self):
        unknown = set(self.flags) - set(FLAGS)
        if unknown:
            raise ValueError(f"{self.name}: unknown flags {sorted(unknown)}; choose from {FLAGS}.")


def _module(name: str):
    if name not in NAMES:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(NAMES)} "
                         "(python -m benchmarks --list).")
    return importlib.import_module(f"benchmarks.{name}")


def get(name: str) -> Benchmark:
    """The declared :class:`Benchmark` ``name`` of :data:`NAMES`."""
    bench = getattr(_module(name), "BENCHMARK", None)
    if bench is None:
        raise ValueError(f"benchmarks.{name} declares no BENCHMARK (it parses its own "
                         f"arguments: python -m benchmarks {name} --help).")
    return bench


def build_parser(bench: Benchmark) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m benchmarks {bench.name}",
                                description=bench.description, epilog=bench.epilog or None,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for opt in bench.options:
        if opt.action:
            p.add_argument(opt.flag, action=opt.action, dest=opt.name, help=opt.help)
            continue
        shown = opt.value(False)
        if opt.list and isinstance(shown, (list, tuple)):
            shown = ",".join(map(str, shown))
        default = "" if shown is None else f" (default {shown}"
        if default and opt.quick is not _SAME:
            default += f"; --quick: {opt.quick}"
        p.add_argument(opt.flag, dest=opt.name, default=None, metavar=opt.metavar,
                       help=opt.help + (default + ")" if default else ""))
    if bench.output is not None:
        where = "/".join(p for p in ("benchmarks/results", bench.output) if p)
        p.add_argument("--output-dir", help=f"default {where}"
                       + (" (under runs/benchmarks_quick with --quick)"
                          if "quick" in bench.flags else ""))
    if "quick" in bench.flags:
        p.add_argument("--quick", action="store_true", help="a smoke run (small and short)")
    if "plots" in bench.flags:
        p.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    if "progress" in bench.flags:
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
    if "rerun" in bench.flags:
        p.add_argument("--rerun", action="store_true",
                       help="train again the runs whose results are on disk")
    return p


def parse_args(bench: Benchmark | str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``bench``'s arguments: parsed, defaulted and checked (a bad one is a usage error)."""
    bench = get(bench) if isinstance(bench, str) else bench
    parser = build_parser(bench)
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    for flag in FLAGS:
        attr = {"plots": "no_plots", "progress": "no_progress"}.get(flag, flag)
        if not hasattr(args, attr):
            setattr(args, attr, False)
    try:
        for opt in bench.options:
            if opt.action:
                continue
            text = getattr(args, opt.name)
            setattr(args, opt.name, opt.value(args.quick) if text is None else opt.parse(text))
    except ValueError as e:
        parser.error(str(e))
    if bench.output is not None and args.output_dir is None:
        args.output_dir = default_output_dir(args.quick, *filter(None, [bench.output]))
    message = bench.check(args) if bench.check else None
    if message:
        parser.error(message)
    return args


def main(bench: Benchmark | str, argv: Sequence[str] | None = None):
    """Parses ``argv`` for ``bench`` and runs it; returns what it returns."""
    bench = get(bench) if isinstance(bench, str) else bench
    args = parse_args(bench, argv)
    t0 = time.perf_counter()
    out = bench.run(args)
    print(f"\n[{bench.name}: {time.perf_counter() - t0:.1f} s wall]", flush=True)
    return out


def listing() -> str:
    """The ``--list`` text: every benchmark and its one line."""
    rows = []
    for name in NAMES:
        module = _module(name)
        bench = getattr(module, "BENCHMARK", None)
        rows.append((name, bench.description if bench else
                     (module.__doc__ or "").strip().splitlines()[0]))
    width = max(len(n) for n, _ in rows)
    return "\n".join(f"  {n.ljust(width)}  {d}" for n, d in rows)


USAGE = """usage: python -m benchmarks NAME [options]    (python -m benchmarks NAME --help)
       python -m benchmarks --list
       python -m benchmarks [--only ...] [--quick]   (the suite: python -m benchmarks --help)

Benchmarks:
{listing}

`python -m benchmarks.NAME [options]` is the same command."""


def command(argv: Sequence[str]):
    """``python -m benchmarks NAME [options]`` or ``--list``: runs benchmark ``NAME``
    (its :class:`Benchmark`, or the module's own ``main(argv)``)."""
    argv = list(argv)
    if not argv or argv[0] in ("--list", "-l"):
        print(USAGE.format(listing=listing()))
        return None
    name, rest = argv[0], argv[1:]
    if name not in NAMES:
        print(USAGE.format(listing=listing()), file=sys.stderr)
        raise SystemExit(f"\npython -m benchmarks: unknown benchmark {name!r}")
    bench = getattr(_module(name), "BENCHMARK", None)
    return main(bench, rest) if bench else _module(name).main(rest)
