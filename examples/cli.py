"""The command line of every example: flags over a config, then the harness.

Each example (``examples/<task>/main.py``, and ``python -m examples.compare``)
calls :func:`main` with its ``configs/default.py`` config: the flags default
to that config's values, the ones given replace them, and
:func:`examples.train.train_and_evaluate` runs the result into ``--workdir``.
After the run :func:`main` prints the setup, the table, one verdict line per
method (:func:`examples.report.verdict_lines`) and the files written.

Method options are scoped to their method: ``--set kga.rank=3`` (or
``--kga.rank=3``) reaches ``koopax.kga`` only; an option the method does not
accept is an error naming it. ``--alpha`` and ``--num-snapshots`` set the KGA
family's (:data:`examples.methods.KGA_FAMILY`) and ``--snapshot-every`` every
method's.
"""

from __future__ import annotations

import argparse
import ast
import math
import os
import sys
from typing import Any

from examples import methods as registry
from examples import report
from examples.train import TARGETS, Config, train_and_evaluate

__all__ = ["build_parser", "config_from_args", "headline", "main", "nonnegative_float",
           "parse_args", "positive_float", "positive_int"]


# ------------------------------------------------------------------------ value types
def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}")
    return value


def _number(text, ok, what):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not (ok(value) and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_float(text):
    return _number(text, lambda v: v > 0, "a number > 0")


def nonnegative_float(text):
    return _number(text, lambda v: v >= 0, "a number >= 0")


def _factor_list(text):
    factors = tuple(positive_float(t) for t in text.split(",") if t.strip())
    if any(f == 1.0 for f in factors):
        raise argparse.ArgumentTypeError("factor 1 is the base run itself")
    return factors


def _hidden(text):
    try:
        sizes = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of ints, got {text!r}") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive ints, got {text!r}")
    return sizes


def _option(text):
    """``METHOD.KEY=VALUE`` -> ``(method, key, value)``; the value via ``literal_eval``."""
    key, sep, raw = text.partition("=")
    method, dot, name = key.strip().rpartition(".")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected METHOD.KEY=VALUE, got {text!r}")
    if not dot:
        raise argparse.ArgumentTypeError(
            f"{name!r} needs its method: --set METHOD.{name}=VALUE (options are scoped to "
            f"one method; methods: {', '.join(registry.METHODS)})")
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        value = raw.strip()
    return method, name, value


def expand_method_flags(argv):
    """``--kga.rank=3`` / ``--kga.rank 3`` -> ``--set kga.rank=3`` (registered methods only)."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        head = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        if head.partition(".")[0] in registry.METHODS and "." in head:
            if "=" in arg:
                out += ["--set", arg[2:]]
            elif i + 1 < len(argv):
                out += ["--set", f"{head}={argv[i + 1]}"]
                i += 1
            else:
                out += ["--set", head]   # reported as missing '=VALUE'
        else:
            out.append(arg)
        i += 1
    return out


# ------------------------------------------------------------------------------ flags
def build_parser(default: Config | None = None, *, prog: str = "python -m examples.compare",
                 workdir: str = os.path.join("runs", "compare"),
                 description: str | None = None) -> argparse.ArgumentParser:
    """The flags of the harness, defaulting to ``default``'s values (default ``Config()``)."""
    default = Config() if default is None else default
    methods_help = "; ".join(f"{k}: {v.description}" for k, v in registry.METHODS.items())
    p = argparse.ArgumentParser(
        prog=prog, description=description or "Base optimizer vs koopax methods: time to "
                                              "the baseline's best loss.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--workdir", "--output-dir", dest="workdir", default=workdir,
                   help="where results.json and the plots go")
    p.add_argument("--model", default=default.model,
                   help="mlp, cnn1d, fcn, alexnet, resnet50, vit, conv_vae or transformer "
                        "(examples.models; "
                        "conv_vae: a VAE on the images, trained on the negative ELBO, labels "
                        "unused, no accuracy; with sgd use --lr 0.03, 0.5 diverges)")
    p.add_argument("--size", default=default.size, choices=("tiny", "full"),
                   help="model size passed to examples.models.create_model")
    p.add_argument("--hidden", type=_hidden, default=default.hidden,
                   help="MLP hidden sizes, comma list (e.g. 64,64,64,64 for the PDT paper's "
                        "depth study); default: the model size's own")
    p.add_argument("--dataset", default=default.dataset,
                   help="digits, mnist1d, quadratic, cifar10, synthetic_images, image_folder, "
                        "text (characters; with --model transformer)")
    p.add_argument("--data-path", default=default.data_path,
                   help="directory of an on-disk dataset (cifar10, image_folder) or a UTF-8 "
                        "file (text; default: the standard library's docstrings)")
    p.add_argument("--optimizer", default=default.optimizer, choices=registry.BASE_OPTIMIZERS)
    p.add_argument("--lr", type=positive_float, default=default.learning_rate,
                   help="the base's (peak) learning rate; with --tune, where the sweep starts")
    p.add_argument("--schedule", default=default.schedule, choices=registry.SCHEDULES,
                   help="cosine: optax.cosine_decay_schedule from --lr to 0 over the run; "
                        "warmup_cosine: linear warmup over the first 5 %% of the run, then "
                        "cosine to 0 (schedule_free_adamw: its own 5 %% warmup, no schedule)")
    p.add_argument("--tune", action=argparse.BooleanOptionalAction, default=default.tune_lr,
                   help="sweep the base's lr by factors of 2 from --lr until the best (lowest "
                        "best-epoch train loss, diverged = worst) is interior; run everything "
                        "at that rate (the tuned base as the reference); --no-tune: the "
                        "given rate (the last of the two flags wins)")
    p.add_argument("--batch-size", type=positive_int, default=default.batch_size)
    p.add_argument("--epochs", type=positive_int, default=default.epochs,
                   help="epochs (blocks of --steps-per-epoch steps when given)")
    p.add_argument("--steps-per-epoch", type=positive_int, default=default.steps_per_epoch,
                   help="steps per epoch (one evaluation after each); default one pass over "
                        "the training data")
    p.add_argument("--target", default=default.target, choices=TARGETS,
                   help="the loss time-to-target (and --tune) is measured on: the base's "
                        "best train loss or its best test (validation) loss")
    p.add_argument("--seeds", type=positive_int, default=default.seeds,
                   help="number of seeds (0, 1, ..., seeds-1)")
    p.add_argument("--methods", default=",".join(default.methods),
                   help=f"comma list of methods ({methods_help})")
    kga = registry.METHODS["kga"].defaults
    p.add_argument("--alpha", type=nonnegative_float, default=None,
                   help=f"the KGA family's acceleration rate (default {kga['alpha']:g})")
    p.add_argument("--num-snapshots", type=positive_int, default=None,
                   help=f"the KGA family's DMD window (default {kga['num_snapshots']}); PDT and "
                        "the baselines keep their own (--set pdt.num_snapshots=N)")
    p.add_argument("--snapshot-every", type=positive_int, default=None,
                   help="every method's steps between snapshots (default: steps per epoch)")
    p.add_argument("--set", dest="options", action="append", default=[], type=_option,
                   metavar="METHOD.KEY=VALUE",
                   help="a method option (repeatable; also --METHOD.KEY=VALUE), e.g. "
                        "--set kga.rank=3 or --set kga_kwm.kwm_epsilon=1e-3; keys are the "
                        "method's koopax keyword arguments (examples.methods)")
    p.add_argument("--base-lr-factors", type=_factor_list, default=default.base_lr_factors,
                   help="comma list of factors f: also train the base optimizer at lr*f "
                        "(rows 'base@f*lr'), so a method is compared with a better-tuned base")
    p.add_argument("--non-iid", action=argparse.BooleanOptionalAction, default=default.non_iid,
                   help="class-sorted (non-iid) batches")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 epoch, 1 seed, tiny model, small train subset")
    p.add_argument("--no-plots", action="store_true", default=not default.plots,
                   help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", default=not default.progress,
                   help="no progress display")
    return p


def method_options(args, methods, default: Config) -> dict[str, dict[str, Any]]:
    """Per method: the config's options, the KGA-family flags, ``--snapshot-every``,
    then ``--set``."""
    options = {m: dict(default.options.get(m, {})) for m in methods}
    for m in methods:
        accepted = registry.METHODS[m].options()
        if m in registry.KGA_FAMILY:
            if args.alpha is not None:
                options[m]["alpha"] = args.alpha
            if args.num_snapshots is not None:
                options[m]["num_snapshots"] = args.num_snapshots
        if args.snapshot_every is not None and "snapshot_every" in accepted:
            options[m]["snapshot_every"] = args.snapshot_every
    for m, key, value in args.options:
        if m not in options:
            raise ValueError(f"--set {m}.{key}: method {m!r} is not in --methods "
                             f"{','.join(methods)}.")
        options[m][key] = value
    return {m: o for m, o in options.items() if o}


def config_from_args(args, default: Config | None = None) -> Config:
    """``default`` (``Config()``) with the values of parsed arguments."""
    default = Config() if default is None else default
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in registry.METHODS]
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}; available: {sorted(registry.METHODS)}")
    config = default.replace(
        dataset=args.dataset, data_path=args.data_path, model=args.model, size=args.size,
        hidden=args.hidden, optimizer=args.optimizer, learning_rate=args.lr,
        schedule=args.schedule, batch_size=args.batch_size, epochs=args.epochs,
        seeds=args.seeds, methods=methods, options=method_options(args, methods, default),
        base_lr_factors=args.base_lr_factors, non_iid=args.non_iid, tune_lr=args.tune,
        steps_per_epoch=args.steps_per_epoch, target=args.target,
        plots=not args.no_plots, progress=not args.no_progress)
    return config.quick() if args.quick else config


def parse_args(argv=None, default: Config | None = None, **parser_kwargs
               ) -> tuple[argparse.Namespace, Config]:
    """Parses and checks the arguments; an invalid option or method is a usage error."""
    parser = build_parser(default, **parser_kwargs)
    args = parser.parse_args(expand_method_flags(sys.argv[1:] if argv is None else list(argv)))
    try:
        return args, config_from_args(args, default)
    except ValueError as e:
        parser.error(str(e))


# ------------------------------------------------------------------------------ main
_TARGET_TEXT = {"train_loss": "epoch-mean train loss", "test_loss": "validation (test) loss"}


def headline(config: Config, results) -> str:
    """The lines printed above the table."""
    rate = f"lr={config.learning_rate:g}"
    if results.get("sweep"):
        sweep = results["sweep"]
        tried = ", ".join(f"{r:g}: {report.fmt(s, '.4g', 'diverged')}"
                          for r, s in sweep["scores"].items())
        rate = (f"lr={sweep['learning_rate']:g} (tuned from {sweep['start']:g}"
                f"{'' if sweep['interior'] else ', NOT interior'}; mean best loss {tried})")
    kga = {m: registry.options_for(m, config.options.get(m)) for m in config.methods
           if m in registry.KGA_FAMILY}
    kga_text = "".join(f" {m}: alpha={o['alpha']:g} num_snapshots={o['num_snapshots']}"
                       for m, o in list(kga.items())[:1])
    return (f"{config.dataset} / {config.model} / {config.optimizer} {rate} "
            f"({config.schedule}) batch={config.batch_size} epochs={config.epochs} "
            f"seeds={config.seeds} steps/epoch={results['steps_per_epoch']}{kga_text}\n"
            f"target = base's best {_TARGET_TEXT[config.target]} per seed; medians over "
            "seeds; the table's times exclude compilation (the verdict below includes it)")


def main(default: Config | None = None, argv=None, *, example: str = "digits_mlp",
         prog: str | None = None, workdir: str | None = None, description: str | None = None
         ) -> dict[str, Any]:
    """Runs ``default`` with the flags of ``argv``; prints the table and the verdict;
    writes ``results.json`` and the plots into ``--workdir``. Returns the results.

    ``example`` names the defaults of ``prog`` (``python -m examples.<example>.main``)
    and ``--workdir`` (``runs/<example>``); ``description``: the first line is used.
    """
    args, config = parse_args(
        argv, default, prog=prog or f"python -m examples.{example}.main",
        workdir=workdir or os.path.join("runs", example),
        description=description and description.strip().splitlines()[0])
    results = train_and_evaluate(config, args.workdir)
    print()
    print(headline(config, results))
    print(report.format_table(results["summary"], task=results["dataset"]["task"]))
    print(report.LEGEND)
    print()
    print("\n".join(report.verdict_lines(results)))
    print(f"\nwrote {os.path.join(args.workdir, 'results.json')}"
          + "".join(f"\nwrote {p}" for p in results["plots"]))
    print(f"total wall time {results['total_wall_time']:.1f} s")
    return results
