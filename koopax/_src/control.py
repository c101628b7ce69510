"""Conditional execution that keeps large state buffers in place.

``lax.cond`` makes XLA copy every buffer that one branch passes through while
the other updates it (measured in koopax: the whole snapshot window, every
step, which made a KGA step cost 1.5x an Adam step before any acceleration).
A ``fori_loop`` of 0 or 1 trips runs the body only when asked, and a
loop-carried buffer is updated in place and passed through for free.

Under ``vmap`` the trip count becomes batched and both outcomes are computed,
as for ``lax.cond``. Called eagerly (a concrete predicate), the gates are plain
Python branches: nothing is compiled per call.
"""

import jax
import jax.numpy as jnp


def _concrete(pred) -> bool:
    """``pred`` is a known value (an eager call), not a tracer under jit/vmap/scan."""
    return not isinstance(pred, jax.core.Tracer) and jnp.ndim(pred) == 0


def maybe_apply(pred, fn, operand):
    """``fn(operand) if pred else operand`` for a traced boolean ``pred``.

    ``fn`` must return a pytree of the same structure, shapes and dtypes as
    ``operand``. Everything the body reads should be in ``operand``: a large
    array captured by the closure and live afterwards is copied into the loop.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from koopax._src.control import maybe_apply
      >>> double = jax.jit(lambda pred, x: maybe_apply(pred, lambda y: 2 * y, x))
      >>> double(True, jnp.arange(3)).tolist(), double(False, jnp.arange(3)).tolist()
      ([0, 2, 4], [0, 1, 2])
    """
    if _concrete(pred):   # eager call: plain Python (no loop to compile per call)
        return fn(operand) if bool(pred) else operand
    return jax.lax.fori_loop(0, jnp.asarray(pred, jnp.int32), lambda _, x: fn(x), operand)


def maybe_record(pred, record, state, params):
    """``record(state, params) if pred else state``, for snapshot steps.

    ``params`` ride along in the loop carry, tied to the induction variable:
    XLA hoists loop-invariant work out of a while loop, where it would run on
    every step (a 0-trip loop included), and everything a snapshot derives
    from the parameters alone (a finiteness check, a cast) would be invariant.
    The tie costs one elementwise pass, on snapshot steps only.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src.control import maybe_record
      >>> record = lambda total, params: total + params["w"].sum()
      >>> params = {"w": jnp.array([1.0, 2.0])}
      >>> float(maybe_record(True, record, jnp.float32(10.0), params))
      13.0
      >>> float(maybe_record(False, record, jnp.float32(10.0), params))
      10.0
    """
    def body(i, carry):
        st, p = carry
        pinned = jax.tree.map(lambda x: jnp.where(i >= 0, x, jnp.zeros_like(x)), p)
        return record(st, pinned), p

    if _concrete(pred):
        return record(state, params) if bool(pred) else state
    return jax.lax.fori_loop(0, jnp.asarray(pred, jnp.int32), body, (state, params))[0]


def choose(pred, true_fn, false_fn, *operands):
    """``lax.cond(pred, true_fn, false_fn, *operands)``, or a plain Python branch when
    ``pred`` is concrete (an eager call: nothing compiled per call).

    For branches that produce new values (no buffer passes through one branch
    while the other updates it, so ``lax.cond`` copies nothing).

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src.control import choose
      >>> choose(jnp.array(True), lambda x: x + 1, lambda x: x - 1, jnp.float32(1.0)).item()
      2.0
    """
    if _concrete(pred):
        return true_fn(*operands) if bool(pred) else false_fn(*operands)
    return jax.lax.cond(pred, true_fn, false_fn, *operands)
