"""Does a koopax method reach a loss sooner than its base optimizer? Measure it.

Run ``python -m examples.compare`` (or ``python examples/compare.py``): the
main job, :mod:`examples.digits_mlp` (its config,
:mod:`examples.digits_mlp.configs.default`; the same run as ``python -m
examples.digits_mlp.main``, written to ``runs/compare``). The model is
trained with the base optimizer alone (``base``) and with each koopax method
chained after it (``optax.chain(base, method)``), over several
seeds, by :func:`examples.train.train_and_evaluate`: every seed uses the same
initialisation and batch order for all methods (paired runs) and their epochs
are interleaved. For each method the harness reports:

* train/test loss and accuracy per epoch, and the total training wall time;
* **epochs and wall time to reach the baseline's best training loss** (per
  seed; medians over seeds and their ratio to ``base``, :mod:`examples.report`);
* one verdict line per method: the fraction of the base's epochs and of its
  time, *compile included*, it took to reach the base's best loss, against the
  base at its configured rate (labelled as not tuned unless ``--tune`` ran);
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

Outputs (in ``--workdir``, alias ``--output-dir``, default ``runs/compare``): a
table on the terminal, ``results.json`` with every curve, and PNG plots
(:func:`examples.report.save_plots`) ``loss_vs_epoch.png``, ``loss_vs_time.png``
(wall time including compilation), ``test_metric.png``, ``eigenvalues.png`` (KGA),
``accepted_ratio.png`` (PDT) and ``masked_fraction.png`` (KGA masks).
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # `python examples/compare.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from examples import cli  # noqa: E402
from examples.digits_mlp.configs import default  # noqa: E402

headline = cli.headline
DEFAULT = default.get_config()
DEFAULT_OUTPUT_DIR = os.path.join("runs", "compare")
PROG = "python -m examples.compare"


def parse_args(argv=None):
    """``(args, config)`` of the main job's command line."""
    return cli.parse_args(argv, DEFAULT, prog=PROG, workdir=DEFAULT_OUTPUT_DIR)


def main(argv=None):
    """Runs the main job (:func:`examples.cli.main`); returns the results."""
    return cli.main(DEFAULT, argv, prog=PROG, workdir=DEFAULT_OUTPUT_DIR)


if __name__ == "__main__":
    main()
