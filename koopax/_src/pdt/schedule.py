"""The PDT authors' monotone horizon/interval scheduler (their distributed trainers).

After every epoch with a loss, from the fourth on (the first epoch's loss is
never used), if the epoch-mean loss rose over the previous one, shorten the
horizon (not below 3) and/or lengthen the interval, more when it also rose
over the one before; the new values take effect from the next epoch's
prediction, the interval has no cap, every prediction restarts the interval
count (also one that no weight accepted), and nothing is ever undone
(ALGORITHM-NOTES.md §2.5). ``koopax.pdt(rollback=False,
authors_schedule=True)`` is the authors' trainer.

References:
  Wang, Tang, Harris, Qi, Wilson, Mezic, *Predictive Differential Training
  Guided by Training Dynamics*, ICLR 2026; authors' code github.com/aicip/PDT
  (``pdt_distributed_trainer.py``).
"""

from __future__ import annotations

import jax.numpy as jnp


def authors_rule(loss, history, num_losses, horizon, interval):
    """One epoch of the authors' monotone scheduler, exactly.

    With ``c = num_losses`` epochs that had a loss before this one: the first
    epoch's loss is dropped (``c = 0``), the next two only fill the history
    ``(L_{t-2}, L_{t-1})``, and from ``c >= 3`` a rise of ``loss`` over
    ``L_{t-1}`` shortens the horizon / lengthens the interval:

        rise over L_{t-1} and L_{t-2}:  tau > 4: tau - 2;  tau = 4: tau = 3, T + 1;  else T + 2
        rise over L_{t-1} only:         tau > 3: tau - 1;  else T + 1

    Returns ``(horizon, interval, history, num_losses)`` for the next epoch.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src.pdt.schedule import authors_rule
      >>> tau, t, _, _ = authors_rule(jnp.float32(3.0), jnp.array([1.0, 2.0]), 3, 5, 1)
      >>> int(tau), int(t)
      (3, 1)
    """
    loss = jnp.asarray(loss, jnp.float32)
    history = jnp.asarray(history, jnp.float32)
    tau, t_i = jnp.asarray(horizon, jnp.int32), jnp.asarray(interval, jnp.int32)
    up1 = (num_losses >= 3) & (loss > history[1])
    strong = up1 & (loss > history[0])
    mild = up1 & ~strong
    tau_s = jnp.where(tau > 4, tau - 2, jnp.where(tau == 4, 3, tau))
    t_s = jnp.where(tau > 4, t_i, jnp.where(tau == 4, t_i + 1, t_i + 2))
    tau_m = jnp.where(tau > 3, tau - 1, tau)
    t_m = jnp.where(tau > 3, t_i, t_i + 1)
    tau = jnp.where(strong, tau_s, jnp.where(mild, tau_m, tau)).astype(jnp.int32)
    t_i = jnp.where(strong, t_s, jnp.where(mild, t_m, t_i)).astype(jnp.int32)
    history = jnp.where(num_losses >= 1, jnp.stack([history[1], loss]), history)
    return tau, t_i, history, jnp.asarray(num_losses + 1, jnp.int32)


def apply_authors_rule(loss, has_loss, history, num_losses, horizon, interval):
    """:func:`authors_rule` where the epoch had a loss; unchanged elsewhere."""
    tau_a, int_a, hist_a, num_a = authors_rule(loss, history, num_losses, horizon, interval)
    return (jnp.where(has_loss, tau_a, horizon), jnp.where(has_loss, int_a, interval),
            jnp.where(has_loss, hist_a, history), jnp.where(has_loss, num_a, num_losses))
