"""Argument checks shared by the transformations; every error names the argument.

Numeric hyperparameters that ``optax.inject_hyperparams`` may trace (``alpha``,
``epsilon``, ``max_gain``) accept a Python number or a scalar array; a
concrete array is checked like a number, a traced one when it is used.
Strings, ``None`` and booleans are rejected where a number is meant, and
numbers where a bool is meant (``efficient='no'`` must not enable anything).
"""

from __future__ import annotations

import numbers

import jax
import numpy as np


class ArgumentError(ValueError, TypeError):
    """A bad argument; both a ``ValueError`` and a ``TypeError``, so either ``except`` catches it."""


def static(value, name: str) -> None:
    """``value`` sets shapes or control flow: it must not be a traced array.

    ``optax.inject_hyperparams`` traces every numeric argument it is not told
    to keep static; this names the argument to list in ``static_args``.
    """
    if isinstance(value, (jax.core.Tracer, jax.Array)):
        raise ArgumentError(f"{name} sets shapes or control flow and cannot be an array or "
                            f"traced: with optax.inject_hyperparams, list {name!r} in "
                            "static_args.")


def boolean(value, name: str) -> None:
    """``value`` must be a bool.

    Examples:
      >>> from koopax._src import validation
      >>> validation.boolean("no", "efficient")
      Traceback (most recent call last):
        ...
      koopax._src.validation.ArgumentError: efficient must be a bool; got 'no'.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentError(f"{name} must be a bool; got {value!r}.")


def number(value, name: str, *, low: float, high: float = float("inf"),
           low_open: bool = False, what: str | None = None) -> None:
    """``value`` must be a finite real scalar in ``[low, high)`` (``(low, high)`` if ``low_open``).

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import validation
      >>> validation.number(jnp.asarray(-1.0), "alpha", low=0.0)
      Traceback (most recent call last):
        ...
      ValueError: alpha must be a finite number >= 0.0; got -1.0.
    """
    what = what or (f"a finite number > {low}" if low_open else f"a finite number >= {low}")
    if value is None or isinstance(value, (bool, str, np.bool_)):
        raise ArgumentError(f"{name} must be {what}; got {value!r}.")
    if isinstance(value, jax.core.Tracer):
        return
    if not isinstance(value, numbers.Real):
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError):
            raise ArgumentError(f"{name} must be {what}; got {value!r}.") from None
        if arr.shape != () or not np.issubdtype(arr.dtype, np.number) \
                or np.issubdtype(arr.dtype, np.complexfloating):
            raise ArgumentError(f"{name} must be {what} (a real scalar); got {value!r}.")
        value = arr.item()
    v = float(value)
    below = v <= low if low_open else v < low
    if not np.isfinite(v) or below or v >= high:
        raise ValueError(f"{name} must be {what}; got {v!r}.")


def integer(value, name: str, *, low: int) -> None:
    """``value`` must be an int (not a bool) ``>= low``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)) \
            or value < low:
        raise ValueError(f"{name} must be an int >= {low}; got {value!r}.")


def floating_dtype(value, name: str) -> None:
    """``None`` or a floating dtype (``jnp.bfloat16``, ``'float32'``, ...)."""
    if value is None:
        return
    try:
        dt = np.dtype(value) if not hasattr(value, "dtype") else np.dtype(value.dtype)
    except TypeError:
        dt = None
    if dt is None or not jax.dtypes.issubdtype(dt, np.floating):
        raise ArgumentError(f"{name} must be a floating dtype; got {value!r}.")


def optional_fraction(value, name: str) -> None:
    """``None`` or a number in ``[0, 1)`` (a noise floor such as ``rcond``)."""
    if value is not None:
        number(value, name, low=0.0, high=1.0, what="None or a number in [0, 1)")


def scalar_loss(value):
    """``value`` must be ``None`` or a scalar loss (shape ``()`` or ``(1,)``); returns it as a scalar.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import validation
      >>> validation.scalar_loss(jnp.ones((1,))).shape
      ()
      >>> validation.scalar_loss(jnp.ones((2,)))
      Traceback (most recent call last):
        ...
      ValueError: value must be a scalar loss; got shape (2,).
    """
    if value is None:
        return None
    shape = np.shape(value)
    if shape not in ((), (1,)):
        raise ValueError(f"value must be a scalar loss; got shape {shape}.")
    return jax.numpy.reshape(jax.numpy.asarray(value), ())


def same_tree(updates, params) -> None:
    """``updates`` and ``params`` must have one tree structure and the same leaf shapes.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import validation
      >>> validation.same_tree({"a": jnp.zeros(2)}, {"a": jnp.zeros(3)})
      Traceback (most recent call last):
        ...
      ValueError: updates and params differ: leaf ['a'] has shape (2,) in updates, (3,) in params.
    """
    tu, tp = jax.tree.structure(updates), jax.tree.structure(params)
    if tu != tp:
        raise ValueError(f"updates and params must have the same tree structure; got {tu} "
                         f"and {tp}.")
    for (path, u), p in zip(jax.tree_util.tree_leaves_with_path(updates),
                            jax.tree.leaves(params)):
        if np.shape(u) != np.shape(p):
            raise ValueError(f"updates and params differ: leaf {jax.tree_util.keystr(path)} "
                             f"has shape {np.shape(u)} in updates, {np.shape(p)} in params.")


def state_fits(like, params, what: str = "state") -> None:
    """A parameter-shaped member of the state must match ``params`` (not a stale state)."""
    if jax.tree.structure(like) != jax.tree.structure(params) or any(
            np.shape(a) != np.shape(b)
            for a, b in zip(jax.tree.leaves(like), jax.tree.leaves(params))):
        raise ValueError(f"{what} was built for other parameters (tree or shapes differ): "
                         "call tx.init(params) for these params.")
