"""Examples for koopax: Flax NNX model zoo, offline datasets and training scripts.

This package is deliberately separate from :mod:`koopax`; nothing here is imported
by ``import koopax``. It is importable from the repository root, e.g.
``python -m examples.<script>`` or ``from examples.models import create_model``.
"""
