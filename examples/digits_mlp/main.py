"""The main job: does koopax reach SGD's best loss sooner on the digits MLP?

``python -m examples.digits_mlp.main --workdir runs/digits_mlp`` (``python -m
examples.compare`` is the same run into ``runs/compare``). Trains SGD alone and
SGD + kga, kga_efficient and pdt over 3 seeds (paired runs, epochs
interleaved; :func:`examples.train.train_and_evaluate`), then prints the
table and one verdict line per method: the fraction of the base's epochs and
of its time, compile included, it took to reach the base's best training
loss. ``--help`` lists the flags that change the config
(:mod:`examples.digits_mlp.configs.default`).
"""

from examples import cli
from examples.digits_mlp.configs import default


def main(argv=None):
    return cli.main(default.get_config(), argv, example="digits_mlp", description=__doc__)


if __name__ == "__main__":
    main()
