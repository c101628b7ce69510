"""The vision transformer: a tiny ViT on digits (8x8x1 images), AdamW with warmup and cosine.

30 epochs of batch 32 (44 steps each); the target is the base's best validation loss.
``learning_rate`` 2e-3 is where :mod:`benchmarks.workloads` starts its sweep, not a
tuned rate (``--tune`` sweeps it). About 4 s of training per run on 2 CPU cores.
"""

from examples.train import Config


def get_config() -> Config:
    return Config(
        dataset="digits", model="vit", size="tiny",
        optimizer="adamw", learning_rate=2e-3, schedule="warmup_cosine",
        batch_size=32, epochs=30, seeds=3,
        methods=("kga", "pdt"),
        target="test_loss",
    )
