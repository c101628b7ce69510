"""Shared argument-validation helpers for the example model zoo."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def check_positive_int(value: Any, name: str) -> int:
    """Returns ``value`` if it is a positive ``int``, else raises ``ValueError``.

    Args:
      value: The value to check.
      name: The argument name used in the error message.

    Returns:
      ``value`` as an ``int``.

    Raises:
      ValueError: If ``value`` is not a positive integer (``bool`` is rejected).
    """
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    return int(value)


def check_positive_int_sequence(
    value: Any, name: str, *, allow_empty: bool = False
) -> tuple[int, ...]:
    """Returns ``value`` as a tuple of positive ints, else raises ``ValueError``.

    Args:
      value: A sequence (not a string) of positive integers.
      name: The argument name used in the error message.
      allow_empty: Whether an empty sequence is accepted.

    Returns:
      The values as a tuple of ``int``.

    Raises:
      ValueError: If ``value`` is not a sequence of positive integers, or is empty
        while ``allow_empty`` is false.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(
            f"`{name}` must be a sequence of positive ints, got {value!r}."
        )
    if not value and not allow_empty:
        raise ValueError(f"`{name}` must not be empty.")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item <= 0:
            raise ValueError(
                f"`{name}` must contain only positive ints, got {value!r}."
            )
    return tuple(int(item) for item in value)


def image_hw(value: Any, name: str) -> tuple[int, int]:
    """Normalises an image size given as ``int`` or ``(height, width)``.

    Args:
      value: A positive ``int`` (square image) or a pair of positive ints.
      name: The argument name used in the error message.

    Returns:
      ``(height, width)``.

    Raises:
      ValueError: If ``value`` is neither a positive int nor a pair of them.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        check_positive_int(value, name)
        return (int(value), int(value))
    size = check_positive_int_sequence(value, name)
    if len(size) != 2:
        raise ValueError(
            f"`{name}` must be an int or a (height, width) pair, got {value!r}."
        )
    return size
