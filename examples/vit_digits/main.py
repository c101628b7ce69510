"""A tiny ViT on digits: does koopax reach AdamW's best validation loss sooner?

``python -m examples.vit_digits.main --workdir runs/vit_digits`` trains AdamW
(warmup, then cosine to 0) alone and with kga and pdt on top
(:mod:`examples.vit_digits.configs.default`), through the shared harness
:func:`examples.train.train_and_evaluate`; ``--help`` lists the flags that
change the config, ``--quick`` is a smoke run.
"""

from examples import cli
from examples.vit_digits.configs import default


def main(argv=None):
    return cli.main(default.get_config(), argv, example="vit_digits", description=__doc__)


if __name__ == "__main__":
    main()
