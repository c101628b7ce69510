"""Configurations of :mod:`examples.char_lm` (``get_config()`` per module)."""
