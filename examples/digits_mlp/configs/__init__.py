"""Configurations of :mod:`examples.digits_mlp` (``get_config()`` per module)."""
