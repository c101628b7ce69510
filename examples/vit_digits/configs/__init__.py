"""Configurations of :mod:`examples.vit_digits` (``get_config()`` per module)."""
