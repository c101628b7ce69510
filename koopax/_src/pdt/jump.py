"""PDT's jump: predict, keep the weights whose prediction passes the criteria, land there.

On the step that completes a prediction epoch, with ``w_ref`` the newest
snapshot (this epoch's start), ``w_sgd = params + u`` the weights the base
update ``u`` of this step leads to, and ``d`` the DMD prediction of the move
``tau`` snapshots ahead of ``w_ref`` (``koopax._src.prediction``, Gram closed
form ``d = X c``, one DMD per block)::

    g = w_sgd - w_ref                                  (one epoch of the optimizer)
    direction_j: sign(d_j) == sign(g_j)                (dynamic consistency)
    quantity_j:  lo |g_j| <= |d_j| <= hi |g_j|,  lo = 1, hi = tau + 1
    mask = direction & quantity   (criteria='both'; or one of them, or none)
    u' = where(mask, w_ref + d - params, u)

so that ``optax.apply_updates(params, u')`` lands on ``where(mask, w_ref + d,
w_sgd)`` (PDT paper Eqs. 8-9 of the 2025 version / 6-7 of 2026, in the form
the authors' code runs: inclusive lower bound, upper factor ``tau + 1``, sign
of the final displacement). A weight whose prediction does not move it is not
accepted, and no leaf moves farther than ``tau + 1`` times its epoch
displacement (:func:`_bounded`; the quantity criterion implies it).

References:
  Wang, Tang, Harris, Qi, Wilson, Mezic, *Predictive Differential Training
  Guided by Training Dynamics*, ICLR 2026 (OpenReview zSTgrLkpRi; ICLR 2025
  submission eVsSjNRuAp); authors' code github.com/aicip/PDT.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from koopax._src import prediction, tree_math
from koopax._src.blocks import Blocks

CRITERIA = ("both", "quantity", "direction", "none")


@dataclasses.dataclass(frozen=True)
class Criteria:
    """Which predicted weights are accepted.

    Attributes:
      kind: ``'both'``, ``'quantity'``, ``'direction'`` or ``'none'`` (every
        moving weight).
      lower, upper: the quantity bounds ``lower |g| <= |d| <= upper |g|``
        (``upper=None``: ``tau + 1``).
    """

    kind: str = "both"
    lower: float = 1.0
    upper: float | None = None

    def mask(self, d, g, tau):
        """The accepted weights of one leaf."""
        moves = d != 0                       # a zero prediction moves nothing: not accepted
        if self.kind == "none":
            return moves
        direction = jnp.sign(d) == jnp.sign(g)
        hi = (tau + 1).astype(jnp.float32) if self.upper is None else self.upper
        quantity = (self.lower * jnp.abs(g) <= jnp.abs(d)) & (jnp.abs(d) <= hi * jnp.abs(g))
        chosen = {"direction": direction, "quantity": quantity, "both": direction & quantity}
        return moves & chosen[self.kind]


class JumpResult(NamedTuple):
    """What one prediction did (the small outputs of :func:`jump`)."""

    moved: jax.Array          # at least one weight took its prediction
    finite: jax.Array         # the prediction was usable
    ratio: jax.Array          # accepted fraction
    eigenvalues: jax.Array    # (B, m - 1)
    ranks: jax.Array          # (B,)


def no_jump(num_blocks: int, num_eigenvalues: int) -> JumpResult:
    return JumpResult(jnp.asarray(False), jnp.asarray(True), jnp.zeros((), jnp.float32),
                      jnp.zeros((num_blocks, num_eigenvalues), jnp.complex64),
                      jnp.zeros((num_blocks,), jnp.int32))


@dataclasses.dataclass(frozen=True)
class Predictor:
    """The static settings of a prediction."""

    horizon: int
    rank: object
    rcond: object
    criteria: Criteria
    fit_on: str


def jump(cfg: Predictor, blocks: Blocks, updates, window, params, tau):
    """Updates landing on ``where(mask, w_ref + d, w_sgd)``, the window, a :class:`JumpResult`.

    ``tau`` is the (traced, possibly fractional) horizon. With
    ``fit_on='optimizer'`` the window's reference moves by the jump where it
    was taken, so that the next snapshot records the optimizer's own epoch
    increment ``w_sgd - w_ref``, not the jump.
    """
    w_sgd = optax.apply_updates(params, updates)
    disp, info = prediction.predicted_displacement(
        window, cfg.horizon, blocks=blocks, rank=cfg.rank, rcond=cfg.rcond, active_horizon=tau,
        taper=True)

    def leaf(ref, dd, s):
        acc = tree_math.accumulation_dtype(ref.dtype)
        ref = ref.astype(acc)
        return tree_math.pair(cfg.criteria.mask(dd, s.astype(acc) - ref, tau), ref + dd)

    mask, target = tree_math.unzip(jax.tree.map(leaf, window.last, disp, w_sgd))
    target = _bounded(cfg, window.last, target, w_sgd, mask, tau)
    finite = (jnp.all(info.finite) & tree_math.tree_all_finite(target)
              & tree_math.tree_all_finite(w_sgd))
    if cfg.fit_on == "optimizer":
        window = _shift_reference(window, target, w_sgd, mask, finite)

    def moved(u, p, t, msk):
        acc = tree_math.accumulation_dtype(p.dtype)
        return jnp.where(finite & msk, (t - p.astype(acc)).astype(u.dtype), u)

    new = jax.tree.map(moved, updates, params, target, mask)
    accepted = sum((jnp.sum(x) for x in jax.tree.leaves(mask)), jnp.zeros((), jnp.int32))
    ratio = accepted.astype(jnp.float32) / max(tree_math.tree_size(params), 1)
    return new, window, JumpResult(finite & (accepted > 0), finite, jnp.where(finite, ratio, 0.0),
                                   info.eigenvalues, info.rank)


def _bounded(cfg: Predictor, ref, target, w_sgd, mask, tau):
    """The accepted move of each leaf, at most ``hi`` times the leaf's epoch displacement.

    ``|d_l| <= hi |g_l|`` with ``hi = tau + 1`` (or ``criteria.upper``): the
    quantity criterion already holds it weight by weight; without it (the
    unmasked baselines) a leaf whose DMD has an unstable mode would otherwise
    grow without limit from jump to jump. A leaf over the bound is scaled down.
    """
    hi = (jnp.asarray(tau, jnp.float32) + 1.0 if cfg.criteria.upper is None
          else cfg.criteria.upper)

    def leaf(r, t, s, msk):
        acc = tree_math.accumulation_dtype(r.dtype)
        r = r.astype(acc)
        d = jnp.where(msk, t - r, 0.0)
        g = s.astype(acc) - r
        d_sq, cap_sq = jnp.sum(d * d), hi ** 2 * jnp.sum(g * g)
        over = d_sq > cap_sq
        factor = jnp.where(over, jnp.sqrt(cap_sq / jnp.maximum(d_sq, 1e-37)), 1.0)
        return jnp.where(over, r + factor * (t - r), t)

    return jax.tree.map(leaf, ref, target, w_sgd, mask)


def _shift_reference(window, target, w_sgd, mask, finite):
    """Moves the window's reference by the jump ``target - w_sgd`` where it was taken."""
    def leaf(last, t, s, msk):
        acc = tree_math.accumulation_dtype(last.dtype)
        moved = last.astype(acc) + (t - s.astype(acc))
        return jnp.where(finite & msk, moved.astype(last.dtype), last)

    return window._replace(last=jax.tree.map(leaf, window.last, target, w_sgd, mask))
