"""Does a koopax method reach a loss sooner than its base optimizer? Measure it.

Run ``python -m examples.compare`` (or ``python examples/compare.py``). The
model is trained with the base optimizer alone (``base``) and with each
koopax method chained after it (``optax.chain(base, method)``), over several
seeds, by :func:`examples.train.train_and_evaluate`: every seed uses the same
initialisation and batch order for all methods (paired runs) and their epochs
are interleaved. For each method the harness reports:

* train/test loss and accuracy per epoch, and the total training wall time;
* **epochs and wall time to reach the baseline's best training loss** (per
  seed; medians over seeds and their ratio to ``base``, :mod:`examples.report`);
* FLOPs to that point: XLA's cost analysis of one lowered training step times
  the steps taken;
* KGA diagnostics (DMD eigenvalues, stable count, refreshes), PDT's accepted
  ratio, a KGA mask's masked fraction and PDT's rollbacks; final test accuracy
  (classification only: ``--model conv_vae`` trains a VAE on the negative ELBO,
  whose report has losses and no accuracy).

``--tune`` first sweeps the base's learning rate by factors of 2 until the best
is interior (:mod:`examples.tune`) and runs everything at that rate: the
ratios are then to the *tuned* base.

Method options are scoped to their method: ``--set kga.rank=3`` (or
``--kga.rank=3``) reaches ``koopax.kga`` only; an option the method does not
accept is an error naming it. ``--alpha`` and ``--num-snapshots`` set the KGA
family's (kga, kga_efficient, kga_kwm) and ``--snapshot-every`` every method's.

Outputs (in ``--output-dir``, default ``runs/compare``): a table on the
terminal, ``results.json`` with every curve, and PNG plots
``loss_vs_epoch.png``, ``loss_vs_time.png``, ``test_metric.png``,
``eigenvalues.png`` (KGA), ``accepted_ratio.png`` (PDT) and
``masked_fraction.png`` (KGA masks).
"""

from __future__ import annotations

import argparse
import ast
import math
import os
import sys
from typing import Any

if __package__ in (None, ""):  # `python examples/compare.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from examples import methods as registry  # noqa: E402
from examples import report  # noqa: E402
from examples.train import TARGETS, Config, train_and_evaluate  # noqa: E402

DEFAULT = Config()
DEFAULT_OUTPUT_DIR = os.path.join("runs", "compare")


# -------------------------------------------------------------------------- arguments
def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}")
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def nonnegative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


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


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of the harness."""
    methods_help = "; ".join(f"{k}: {v.description}" for k, v in registry.METHODS.items())
    p = argparse.ArgumentParser(
        prog="python -m examples.compare",
        description="Base optimizer vs koopax methods: time to the baseline's best loss.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=DEFAULT.model,
                   help="mlp, cnn1d, fcn, alexnet, resnet50, vit, conv_vae or transformer "
                        "(examples.models; "
                        "conv_vae: a VAE on the images, trained on the negative ELBO, labels "
                        "unused, no accuracy; with sgd use --lr 0.03, 0.5 diverges)")
    p.add_argument("--size", default=DEFAULT.size, choices=("tiny", "full"),
                   help="model size passed to examples.models.create_model")
    p.add_argument("--hidden", type=_hidden, default=None,
                   help="MLP hidden sizes, comma list (e.g. 64,64,64,64 for the PDT paper's "
                        "depth study); default: the model size's own")
    p.add_argument("--dataset", default=DEFAULT.dataset,
                   help="digits, mnist1d, quadratic, cifar10, synthetic_images, image_folder, "
                        "text (characters; with --model transformer)")
    p.add_argument("--data-path", default=None,
                   help="directory of an on-disk dataset (cifar10, image_folder) or a UTF-8 "
                        "file (text; default: the standard library's docstrings)")
    p.add_argument("--optimizer", default=DEFAULT.optimizer, choices=registry.BASE_OPTIMIZERS)
    p.add_argument("--lr", type=positive_float, default=DEFAULT.learning_rate,
                   help="the base's (peak) learning rate; with --tune, where the sweep starts")
    p.add_argument("--schedule", default=DEFAULT.schedule, choices=registry.SCHEDULES,
                   help="cosine: optax.cosine_decay_schedule from --lr to 0 over the run; "
                        "warmup_cosine: linear warmup over the first 5 %% of the run, then "
                        "cosine to 0 (schedule_free_adamw: its own 5 %% warmup, no schedule)")
    p.add_argument("--tune", action=argparse.BooleanOptionalAction, default=False,
                   help="sweep the base's lr by factors of 2 from --lr until the best (lowest "
                        "best-epoch train loss, diverged = worst) is interior; run everything "
                        "at that rate (the tuned base as the reference); --no-tune: the "
                        "given rate (the last of the two flags wins)")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULT.batch_size)
    p.add_argument("--epochs", type=positive_int, default=DEFAULT.epochs,
                   help="epochs (blocks of --steps-per-epoch steps when given)")
    p.add_argument("--steps-per-epoch", type=positive_int, default=None,
                   help="steps per epoch (one evaluation after each); default one pass over "
                        "the training data")
    p.add_argument("--target", default=DEFAULT.target, choices=TARGETS,
                   help="the loss time-to-target (and --tune) is measured on: the base's "
                        "best train loss or its best test (validation) loss")
    p.add_argument("--seeds", type=positive_int, default=DEFAULT.seeds,
                   help="number of seeds (0, 1, ..., seeds-1)")
    p.add_argument("--methods", default=",".join(DEFAULT.methods),
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
    p.add_argument("--base-lr-factors", type=_factor_list, default=(),
                   help="comma list of factors f: also train the base optimizer at lr*f "
                        "(rows 'base@f*lr'), so a method is compared with a better-tuned base")
    p.add_argument("--non-iid", action="store_true", help="class-sorted (non-iid) batches")
    p.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 epoch, 1 seed, tiny model, small train subset")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def method_options(args, methods) -> dict[str, dict[str, Any]]:
    """Per method, its options: the KGA-family flags, ``--snapshot-every``, then ``--set``."""
    options = {m: {} for m in methods}
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


def config_from_args(args) -> Config:
    """The :class:`examples.train.Config` of parsed arguments."""
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in registry.METHODS]
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}; available: {sorted(registry.METHODS)}")
    config = Config(
        dataset=args.dataset, data_path=args.data_path, model=args.model, size=args.size,
        hidden=args.hidden, optimizer=args.optimizer, learning_rate=args.lr,
        schedule=args.schedule, batch_size=args.batch_size, epochs=args.epochs,
        seeds=args.seeds, methods=methods, options=method_options(args, methods),
        base_lr_factors=args.base_lr_factors, non_iid=args.non_iid, tune_lr=args.tune,
        steps_per_epoch=args.steps_per_epoch, target=args.target,
        plots=not args.no_plots, progress=not args.no_progress)
    return config.quick() if args.quick else config


def parse_args(argv=None) -> tuple[argparse.Namespace, Config]:
    """Parses and checks the arguments; an invalid option or method is a usage error."""
    parser = build_parser()
    args = parser.parse_args(expand_method_flags(sys.argv[1:] if argv is None else list(argv)))
    try:
        return args, config_from_args(args)
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
            "seeds; times exclude compilation")


def main(argv=None) -> dict[str, Any]:
    """Runs the comparison; prints the table; writes JSON and plots. Returns the results."""
    args, config = parse_args(argv)
    results = train_and_evaluate(config, args.output_dir)
    print()
    print(headline(config, results))
    print(report.format_table(results["summary"], task=results["dataset"]["task"]))
    print(report.LEGEND)
    print(f"\nwrote {os.path.join(args.output_dir, 'results.json')}"
          + "".join(f"\nwrote {p}" for p in results["plots"]))
    print(f"total wall time {results['total_wall_time']:.1f} s")
    return results


if __name__ == "__main__":
    main()
