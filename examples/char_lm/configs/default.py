"""The language model: a character transformer on text, AdamW with warmup and cosine decay.

1500 steps of batch 32, evaluated every 50 (30 "epochs"); the target is the base's
best validation loss. ``learning_rate`` 4e-3 is where :mod:`benchmarks.workloads`
starts its sweep, not a tuned rate (``--tune`` sweeps it). On 2 CPU cores one run
trains in about 72 s and evaluates in about 40 s: the default 3 rows x 3 seeds take
about 15 minutes.
"""

from examples.train import Config


def get_config() -> Config:
    return Config(
        dataset="text", model="transformer", size="full",
        optimizer="adamw", learning_rate=4e-3, schedule="warmup_cosine",
        batch_size=32, epochs=30, steps_per_epoch=50, seeds=3,
        methods=("kga", "pdt"),
        target="test_loss",
    )
