"""A character-level transformer LM: does koopax reach AdamW's best validation loss sooner?

``python -m examples.char_lm.main --workdir runs/char_lm`` trains AdamW (warmup,
then cosine to 0) alone and with kga and pdt on top
(:mod:`examples.char_lm.configs.default`), through the shared harness
:func:`examples.train.train_and_evaluate`; ``--help`` lists the flags that
change the config, ``--quick`` is a smoke run.
"""

from examples import cli
from examples.char_lm.configs import default


def main(argv=None):
    return cli.main(default.get_config(), argv, example="char_lm", description=__doc__)


if __name__ == "__main__":
    main()
