"""Reading a koopax state's diagnostics out of an optimizer state.

koopax states sit inside whatever the user built (``optax.chain``,
``inject_hyperparams``, ``MultiSteps``, ``nnx.Optimizer``), and their field
names can coincide with a parameter tree's (``optax.tree_utils.tree_get`` of a
generic name finds the base optimizer's moments too). These functions find
koopax states by *type*, never by field name, and return their diagnostics
as a flat dictionary of named arrays.
"""

from __future__ import annotations

from typing import Any

import jax

from koopax._src.kga.engine import KGAState
from koopax._src.kga.masked import MaskedColumns
from koopax._src.pdt.engine import PDTState

STATE_TYPES = (KGAState, PDTState)


def find_states(tree) -> list[tuple[str, Any]]:
    """Every koopax state inside ``tree``, as ``(path, state)`` pairs in tree order."""
    is_state = lambda x: isinstance(x, STATE_TYPES)
    found = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_state)[0]
    return [(jax.tree_util.keystr(path), node) for path, node in found if is_state(node)]


def _kga(state: KGAState) -> dict[str, Any]:
    out = dict(
        eigenvalues=state.operator.eigenvalues, rank=state.operator.rank,
        num_stable=state.operator.num_stable, num_damped=state.operator.num_damped,
        num_refreshes=state.num_refreshes,
        num_nonfinite=state.num_nonfinite, num_clipped=state.num_clipped,
        alpha_factor=state.valve.alpha_factor, num_backoffs=state.valve.num_backoffs)
    if isinstance(state.columns, MaskedColumns):
        c = state.columns
        out.update(num_kept=c.num_kept, num_overflow=c.num_overflow,
                   masked_fraction=c.masked_fraction, num_mask_updates=c.num_mask_updates)
    return out


def _pdt(state: PDTState) -> dict[str, Any]:
    s = state.stats
    return dict(
        eigenvalues=s.eigenvalues, rank=s.rank, accepted_ratio=s.accepted_ratio,
        num_predictions=s.num_predictions, num_jumps=s.num_jumps,
        num_rollbacks=s.num_rollbacks, num_nonfinite=s.num_nonfinite, stopped=state.stopped,
        interval=state.schedule.interval, horizon=state.schedule.horizon)


def state_diagnostics(state) -> dict[str, Any]:
    """The diagnostics of one koopax state (a :class:`koopax.KGAState` or :class:`koopax.PDTState`)."""
    if isinstance(state, KGAState):
        return _kga(state)
    if isinstance(state, PDTState):
        return _pdt(state)
    raise TypeError(f"state must be a koopax.KGAState or koopax.PDTState; got "
                    f"{type(state).__name__}.")


def diagnostics(opt_state) -> dict[str, Any]:
    """The diagnostics of the one koopax state inside ``opt_state``, by name.

    KGA (every variant): ``eigenvalues`` ``(B, h-2)`` and ``rank``,
    ``num_stable`` (amplified) and ``num_damped`` (oscillating) ``(B,)`` per
    block; ``num_refreshes``, ``num_nonfinite``,
    ``num_clipped``; the valve's ``alpha_factor`` and ``num_backoffs``; masked
    KGA adds ``num_kept``, ``num_overflow``, ``masked_fraction``,
    ``num_mask_updates``. PDT and the baselines: ``eigenvalues``, ``rank``,
    ``accepted_ratio``, ``num_predictions``, ``num_jumps``, ``num_rollbacks``,
    ``num_nonfinite``, ``stopped``, ``interval``, ``horizon``.

    Raises ``ValueError`` when ``opt_state`` holds no koopax state, or several
    (then use :func:`koopax.find_states` and :func:`koopax.state_diagnostics`).

    Examples:
      >>> import jax.numpy as jnp, optax, koopax
      >>> params = {"scale": jnp.ones(3)}      # a LayerNorm-like leaf name
      >>> state = optax.chain(optax.adam(1e-3), koopax.kga(num_snapshots=4)).init(params)
      >>> d = koopax.diagnostics(state)
      >>> int(d["num_refreshes"]), float(d["alpha_factor"]), d["eigenvalues"].shape
      (0, 1.0, (1, 2))
    """
    found = find_states(opt_state)
    if not found:
        raise ValueError("opt_state holds no koopax state (a koopax.KGAState or "
                         "koopax.PDTState).")
    if len(found) > 1:
        raise ValueError(f"opt_state holds {len(found)} koopax states (at "
                         f"{[p for p, _ in found]}): read each with koopax.find_states and "
                         "koopax.state_diagnostics.")
    return state_diagnostics(found[0][1])
