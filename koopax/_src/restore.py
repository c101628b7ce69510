"""Bit-exact restoration of saved weights through ``optax.apply_updates``.

``apply_updates`` computes ``fl(p + u)`` in the parameter dtype, and no single
``u`` reaches every ``s`` from every ``p`` (``p = 1, s = 1e-8`` in float32:
``fl(1 + u)`` is 0 or ``6e-8``). :func:`restore_updates` restores in at most
two steps: ``u = fl(s - p)`` where it lands on ``p' = fl(p + fl(s - p))``
with ``p' = s`` or ``fl(p' + fl(s - p')) = s`` (both checked bitwise, the
same arithmetic ``apply_updates`` does), and ``u = -p`` elsewhere
(``p + (-p)`` is exactly ``+0``, from which ``s`` is one exact step away);
a second call from ``p'`` is then exact. Where ``p`` and ``s`` are of
similar size, ``p'`` is within round-off of ``s``: the step between the
two, whose gradient the base optimizer sees, is the restored point up to
round-off, not a point where some weights are zeroed (which weights were,
depended on their rounding, and a run under ``vmap`` or on 8 devices fed
its momentum another gradient than the same run alone). Exactness needs
the updates to have at least the parameters' precision and the
transformation to be last in the chain; ``-0.0`` comes back as ``+0.0``.
PDT's and KGA's rollbacks both restore this way, and both always take the
second step (a zero update where the first was exact): a restoration whose
length depended on the rounding of the weights would put a run on 8
devices one step out of phase with the same run on 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _same_bits(a, b):
    """Elementwise bitwise equality of two arrays of the same float dtype."""
    uint = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}[a.dtype.itemsize]
    return jax.lax.bitcast_convert_type(a, uint) == jax.lax.bitcast_convert_type(b, uint)


def restore_updates(params, saved, updates):
    """Updates that move ``params`` to ``saved`` exactly, in one or two steps.

    ``optax.apply_updates(params, updates)`` is ``saved`` bit for bit where
    one step reaches it; the other weights land next to it (or on ``+0``),
    and a second call from there is exact (module docstring). Callers always
    take that second step, so nothing reports whether the first was exact.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> from koopax._src.restore import restore_updates
      >>> p, s = {"w": jnp.float32(1.0)}, {"w": jnp.float32(1e-8)}
      >>> p = optax.apply_updates(p, restore_updates(p, s, p))
      >>> float(p["w"])                                            # via +0
      0.0
      >>> float(optax.apply_updates(p, restore_updates(p, s, p))["w"]) == float(s["w"])
      True
    """
    def leaf(p, s, u):
        ct = jnp.result_type(p, u)

        def landing(start):     # where apply_updates(start, fl(s - start)) lands
            step = (s.astype(ct) - start.astype(ct)).astype(u.dtype)
            return step, jnp.asarray(start + step).astype(p.dtype)

        step, land = landing(p)
        ok = _same_bits(land, s)
        near = _same_bits(landing(land)[1], s)           # a second step from land is exact
        return jnp.where(ok | near, step, (-p).astype(u.dtype))

    return jax.tree.map(leaf, params, saved, updates)


