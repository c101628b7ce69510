"""A trajectory's modes, weight by weight: the neutral/transient split, mask drops, early bases.

* :func:`neutral_reconstruction` and :func:`mask_drop_epochs`: a weight's
  trajectory, its neutral-mode reconstruction (KGA paper Eq. 14) and the
  epoch at which a :mod:`koopax.masks` criterion drops it (Fig. 13, App. A.5).
* :func:`variance_explained`: how much of every later increment lies in the
  span of an early window's basis (Fig. 14), the assumption of Efficient-KGA.

References:
  Anonymous, *Dynamic Training Guided by Training Dynamics* (KGA, KWM),
  OpenReview 7AB077M4TY, 2024, Figs. 13, 14, Eq. 14, App. A.5.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from koopax._src import dmd, linalg, masks, tree_math, validation
from koopax._src.stacks import check_dmd_options, increments, num_features, stack_checked

_HIGHEST = jax.lax.Precision.HIGHEST


# --------------------------------------------------------------------------
# Single-weight stories (KGA paper Eq. 14, Fig. 13, App. A.5)
# --------------------------------------------------------------------------


class NeutralSplit(NamedTuple):
    """A trajectory split into its neutral and transient parts (:func:`neutral_reconstruction`).

    Attributes:
      neutral: stacked pytree ``(h, ...)``, ``N_t``: the reconstruction from
        the neutral modes (and the fixed point) alone.
      transient: stacked pytree ``(h, ...)``, ``T_t``: the part of
        ``w_t - w*`` carried by the stable and unstable modes (``|T_t|`` is
        KWM's score at snapshot ``t``).
      eigenvalues: ``(h - 2,)`` complex increment-DMD eigenvalues, 0 beyond
        the rank.
      rank: int32 DMD rank.
      classes: :class:`koopax.EigenvalueClasses` of the eigenvalues.
    """

    neutral: Any
    transient: Any
    eigenvalues: jax.Array
    rank: jax.Array
    classes: dmd.EigenvalueClasses


def _combine(modes, weights):
    """``Re sum_k weights[t, k] phi_k`` per time ``t``: leaves ``(T, ...)``."""
    return jax.tree.map(
        lambda m: jnp.real(jnp.tensordot(weights.astype(m.dtype), m, axes=1,
                                         precision=_HIGHEST)), modes)


def neutral_reconstruction(snapshots, *, epsilon=1e-2, rank=None, rcond=None) -> NeutralSplit:
    """The neutral-mode reconstruction of a trajectory (KGA paper Eq. 14), through increments.

    Exact DMD of the increments ``d_i = w_{i+1} - w_i`` (:func:`koopax.exact_dmd`),
    ``d_i ~ Re sum_k b_k lambda_k^i phi_k``, sums to the weights as::

        w_t ~ c + T_t + D_t,
        T_t = Re sum_{k transient} b_k lambda_k^t / (lambda_k - 1) phi_k,
        D_t = Re sum_{k neutral} b_k (1 + lambda_k + ... + lambda_k^{t-1}) phi_k,

    (transient: stable or unstable; neutral: ``|1 - |lambda_k|| <= eps``),
    with the constant ``c = w_{h-1} - T_{h-1} - D_{h-1}`` anchored at the
    newest snapshot. The neutral reconstruction is ``N_t = c + D_t``: for
    ``w_{t+1} - w* = A (w_t - w*)`` it is what Eq. 14 keeps from a DMD of
    the raw weights, the fixed point ``w*`` (eigenvalue 1) plus the neutral
    modes, without the raw weights' float32 cancellation. ``|T_t|`` is the
    KWM score ``S_t`` of :mod:`koopax.masks` (the movement still ahead).

    Args:
      snapshots: ``h >= 3`` snapshots (see :func:`stack_snapshots`).
      epsilon: half-width of the neutral band, in ``[0, 1)``.
      rank, rcond: DMD rank policy and noise floor (as :func:`koopax.exact_dmd`).

    Returns:
      A :class:`NeutralSplit`.

    Examples:
      A weight relaxing to 2 (eigenvalue 0.5): the neutral part is the fixed
      point, the transient part the remaining distance to it.

      >>> import jax.numpy as jnp
      >>> from koopax import analysis
      >>> w = jnp.array([[2.0 - 0.5 ** t, 1.0 + 0.5 ** t] for t in range(6)])
      >>> split = analysis.neutral_reconstruction(w)
      >>> [round(float(x), 4) for x in split.neutral[:, 0]]
      [2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
      >>> [round(float(x), 4) for x in split.transient[:3, 1]]
      [1.0, 0.5, 0.25]

    References:
      Anonymous, *Dynamic Training Guided by Training Dynamics*, 2024, Eq. 14,
      Fig. 13.
    """
    check_dmd_options(epsilon, rank, rcond)
    stacked, _ = stack_checked(snapshots, "snapshots", 3)
    return _neutral_split(stacked, epsilon, rank, rcond)


@functools.partial(jax.jit, static_argnames=("rank", "rcond"))
def _neutral_split(stacked, epsilon, rank, rcond):
    h = jax.tree.leaves(stacked)[0].shape[0]
    fit = dmd.exact_dmd(increments(stacked), rank=rank, rcond=rcond)
    lam, amps = fit.eigenvalues, fit.amplitudes
    valid = jnp.arange(lam.shape[0]) < fit.rank
    classes = dmd.classify_eigenvalues(lam, epsilon, valid)
    transient = classes.stable | classes.unstable
    # lambda^t for t = 0..h-1 by repeated products (exact 0^0 = 1), and their partial sums.
    powers = jnp.cumprod(jnp.concatenate([jnp.ones((1,) + lam.shape, lam.dtype),
                                          jnp.broadcast_to(lam, (h - 1,) + lam.shape)]), axis=0)
    sums = jnp.concatenate([jnp.zeros((1,) + lam.shape, lam.dtype),
                            jnp.cumsum(powers[:-1], axis=0)])
    scale = jnp.where(transient, amps / jnp.where(transient, lam - 1.0, 1.0), 0)
    trans = _combine(fit.modes, powers * scale)
    drift = _combine(fit.modes, sums * jnp.where(classes.neutral, amps, 0))
    neutral = jax.tree.map(
        lambda w, t, d: (w[-1] - t[-1] - d[-1] + d).astype(w.dtype), stacked, trans, drift)
    trans = jax.tree.map(lambda w, t: t.astype(w.dtype), stacked, trans)
    return NeutralSplit(neutral, trans, lam, fit.rank, classes)


def _mask_decision(mask, size, restrict, stacked, incs, excluded, t):
    """``masks.update`` at snapshot ``t`` on the window of ``size`` increments before it."""
    params = jax.tree.map(lambda x: x[t], stacked)
    window = tuple(jax.tree.map(lambda d, i=i: jax.lax.dynamic_index_in_dim(
        d, t - size + i, keepdims=False), incs) for i in range(size))
    if restrict:
        window = tuple(jax.tree.map(lambda d, e: jnp.where(e, 0, d), w, excluded)
                       for w in window)
    gram = jnp.stack([jnp.stack([tree_math.tree_vdot(a, b) for b in window]) for a in window])
    inputs = masks.MaskInputs(params, window, gram.astype(jnp.float32))
    return masks.update(mask, excluded, inputs)


def mask_drop_epochs(snapshots, mask, *, num_snapshots: int | None = None,
                     restrict: bool = True):
    """The snapshot index at which a mask criterion first drops each weight.

    Replays the decisions :func:`koopax.kga` ``(mask=mask)`` makes with a
    snapshot every epoch: the first decision when ``n0 = max(num_snapshots,
    mask.start or 0)`` snapshots are recorded, then every ``mask.every``;
    at snapshot ``t`` the criterion sees ``w_t`` and the increments
    ``d_{t-m}, ..., d_{t-1}`` (``m = num_snapshots - 1``), and the excluded
    set only grows, ``E_t = E_{t'} | exclude_t`` (:func:`koopax.masks.update`).
    The result is ``t_j = min {t : j in E_t}`` (``-1``: never dropped).
    The criteria: norm ``|w_{t,j}| < theta``; delta ``|d_{i,j}| < theta`` for
    the last ``window`` increments; KWM ``max_i S_{i,j} < eps`` (KGA paper
    Eq. 15, :func:`koopax.masks.kwm_scores`).

    Args:
      snapshots: ``h`` snapshots (see :func:`stack_snapshots`).
      mask: a :class:`koopax.masks.Mask` (``masks.norm``, ``masks.delta``,
        ``masks.kwm``).
      num_snapshots: the DMD window of the consumer (``kga``'s
        ``num_snapshots``); default ``max(2, mask.min_snapshots)``.
      restrict: fit later decisions on the weights still kept (the excluded
        weights' increments are zeroed), as the compact KGA does (exactly so
        at ``capacity=1.0``; KWM's ``relative`` threshold is an rms over all
        ``N`` weights here, over the capacity slots there); ``False``
        evaluates every decision on all weights.

    Returns:
      An int32 pytree shaped like one snapshot.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax import analysis, masks
      >>> w = jnp.array([[1.0, 0.5], [0.3, 0.5], [0.05, 0.5]])
      >>> analysis.mask_drop_epochs(w, masks.norm(0.1)).tolist()
      [2, -1]

    References:
      Anonymous, *Dynamic Training Guided by Training Dynamics*, 2024, §4.2,
      Eq. 15, Fig. 13, App. A.5 (Algorithm 2).
    """
    if not isinstance(mask, masks.Mask):
        raise TypeError(f"mask must be a koopax.masks.Mask; got {type(mask).__name__}.")
    window = max(2, mask.min_snapshots) if num_snapshots is None else num_snapshots
    validation.integer(window, "num_snapshots", low=max(2, mask.min_snapshots))
    validation.boolean(restrict, "restrict")
    stacked, h = stack_checked(snapshots, "snapshots", 2)
    first = max(window, mask.start or 0)
    if first > h:
        raise ValueError(f"snapshots: the first decision needs {first} snapshots; got {h}.")
    decide = jax.jit(functools.partial(_mask_decision, mask, window - 1, restrict))
    incs = increments(stacked)
    excluded = masks.init(jax.tree.map(lambda x: x[0], stacked))
    drop = jax.tree.map(lambda e: jnp.full(e.shape, -1, jnp.int32), excluded)
    for n in range(first, h + 1, mask.every):
        excluded = decide(stacked, incs, excluded, n - 1)
        drop = jax.tree.map(lambda d, e, t=n - 1: jnp.where((d < 0) & e, t, d), drop, excluded)
    return drop


# --------------------------------------------------------------------------
# Variance explained by an early basis (KGA paper Fig. 14)
# --------------------------------------------------------------------------


def _pod_coefficients(gram_w, num_features, rank, rcond):
    """``C`` with ``U_r = D_w C``: POD basis of the window increments ``D_w``."""
    evals, evecs = jnp.linalg.eigh(gram_w)
    s = jnp.sqrt(jnp.maximum(evals[::-1], 0.0))
    evecs = evecs[:, ::-1]
    threshold = None
    if rank is None:
        threshold = linalg.isotropic_noise_threshold(s, num_rows=num_features)
    keep, _ = linalg.rank_mask(
        s, rank=rank, matrix_shape=(num_features, s.shape[0]), noise_threshold=threshold,
        rcond=dmd.default_rcond(gram_w.dtype) if rcond is None else rcond)
    return evecs * jnp.where(keep, 1.0 / jnp.where(keep, s, 1.0), 0.0)


def _dmd_coefficients(gram_w, num_features, rank, rcond):
    """``C`` with ``span(D_w C) = span(Phi)``: exact DMD modes ``Y V S^{-1} Q``."""
    red = dmd.gram_operator(gram_w, rank=rank, num_features=num_features, rcond=rcond)
    coef = red.right_vectors * red.inverse_singular_values
    return jnp.concatenate([jnp.zeros((1, coef.shape[1]), coef.dtype), coef])


def variance_explained(snapshots, window: int, *, start: int = 0, basis: str = "pod",
                       rank=None, rcond=None) -> jax.Array:
    """Fraction of every increment's squared norm in the span of one early window's basis::

        f_i = |P d_i|^2 / |d_i|^2,   P the orthogonal projector onto span(B),

    for every increment ``d_i = w_{i+1} - w_i``, where ``B`` is the basis of
    the window of snapshots ``w_start, ..., w_{start+window-1}`` (increments
    ``D_w = [d_start ... d_{start+window-2}]``): ``basis='pod'`` its leading
    left singular vectors ``U_r`` (``D_w = U S V^T``, rank policy ``rank``),
    the basis Efficient-KGA stores once; ``basis='dmd'`` the exact DMD modes
    ``Phi = Y V S^{-1} Q`` of the window (``X``, ``Y`` its first and last
    ``window - 2`` increments). Computed from Gram matrices:
    ``B = D_w C``, ``|P d|^2 = c^T (C^T G_w C)^+ c`` with ``c = C^T D_w^T d``.
    A fraction that stays near 1 long after the window is the assumption
    Efficient-KGA rests on.

    Args:
      snapshots: ``h`` snapshots (see :func:`stack_snapshots`).
      window: snapshots of the basis window (``>= 2``; ``>= 3`` for ``'dmd'``).
      start: index of its first snapshot (``start + window <= h``).
      basis: ``'pod'`` or ``'dmd'``.
      rank, rcond: rank policy and noise floor (as :func:`koopax.exact_dmd`).

    Returns:
      ``(h - 1,)`` fractions in ``[0, 1]``, one per increment (NaN for a zero
      increment).

    Examples:
      The first two increments span the plane of the first two axes; the
      third leaves it at 60 degrees:

      >>> import jax.numpy as jnp
      >>> from koopax import analysis
      >>> d = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.0, 0.75 ** 0.5]])
      >>> w = jnp.concatenate([jnp.zeros((1, 3)), jnp.cumsum(d, axis=0)])
      >>> [round(float(f), 4) for f in analysis.variance_explained(w, window=3)]
      [1.0, 1.0, 0.25]

    References:
      Anonymous, *Dynamic Training Guided by Training Dynamics*, 2024, Eq. 8,
      Fig. 14.
    """
    if basis not in ("pod", "dmd"):
        raise ValueError(f"basis must be 'pod' or 'dmd'; got {basis!r}.")
    validation.integer(window, "window", low=2 if basis == "pod" else 3)
    validation.integer(start, "start", low=0)
    linalg.validate_rank(rank)
    validation.optional_fraction(rcond, "rcond")
    stacked, h = stack_checked(snapshots, "snapshots", 2)
    if start + window > h:
        raise ValueError(f"start + window must be <= the number of snapshots {h}; got "
                         f"{start} + {window}.")
    return _variance(stacked, start, window, basis, rank, rcond)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _variance(stacked, start, window, basis, rank, rcond):
    gram = tree_math.stacked_gram(increments(stacked))
    rows = slice(start, start + window - 1)
    gram_w = gram[rows, rows]
    make = _pod_coefficients if basis == "pod" else _dmd_coefficients
    coef = make(gram_w, num_features(stacked), rank, rcond)
    c = jnp.matmul(coef.T, gram[rows, :], precision=_HIGHEST)
    normal = jnp.matmul(jnp.matmul(coef.T, gram_w, precision=_HIGHEST), coef, precision=_HIGHEST)
    energy = jnp.sum(c * jnp.matmul(jnp.linalg.pinv(normal, hermitian=True), c,
                                    precision=_HIGHEST), axis=0)
    norms = jnp.diagonal(gram)
    return jnp.where(norms > 0, jnp.clip(energy / jnp.where(norms > 0, norms, 1.0), 0.0, 1.0),
                     jnp.nan)


