"""Analyses of recorded training runs: the figures of the KGA and PDT papers, as numbers.

Every function here works on what a training loop can record cheaply, the
weights at the end of every epoch (a list of parameter pytrees, or one pytree
whose leaves carry the epoch on their leading axis) or the optimizer states
of :func:`koopax.kga` / :func:`koopax.pdt`, and returns arrays; the plots are
in ``examples/analyses.py``. Snapshot ``t`` is the weights after ``t`` epochs
when snapshot 0 is the initialization; increment ``d_t = w_{t+1} - w_t`` is
the movement of epoch ``t + 1``.

* :func:`eigenvalue_history`: the DMD eigenvalues of every window of
  increments, classified neutral / stable / unstable (KGA paper Fig. 2);
  :func:`recorded_eigenvalues` reads the same from recorded optimizer states.
* :func:`pca_plane` and :func:`loss_landscape`: trajectories in their own
  principal plane and the loss on a grid of that plane (KGA paper Fig. 6b).
* :func:`neutral_reconstruction` and :func:`mask_drop_epochs`: a weight's
  trajectory, its neutral-mode reconstruction (KGA paper Eq. 14) and the
  epoch at which a :mod:`koopax.masks` criterion drops it (Fig. 13, App. A.5).
* :func:`variance_explained`: how much of every later increment lies in the
  span of an early window's basis (Fig. 14), the assumption of Efficient-KGA.
* :func:`accepted_fractions`: PDT's accepted fraction, prediction by
  prediction (PDT paper Fig. 5, last column).

As in the transformations, DMD runs on increments: they carry the dynamics of
``w_{t+1} - w* = A (w_t - w*)`` without the large common offset of the raw
weights, which float32 Gram matrices cannot resolve (:mod:`koopax.snapshots`).

References:
  Anonymous, *Dynamic Training Guided by Training Dynamics* (KGA, KWM),
  OpenReview 7AB077M4TY, 2024, Figs. 2, 6, 13, 14, Eq. 14, App. A.5.
  Wang, Tang, Harris, Qi, Wilson, Mezić, *Predictive Differential Training
  Guided by Training Dynamics*, ICLR 2026, Fig. 5.
  Li, Xu, Taylor, Studer, Goldstein, `Visualizing the Loss Landscape of
  Neural Nets <https://arxiv.org/abs/1712.09913>`_, NeurIPS 2018 (trajectories
  in their PCA plane).
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from koopax._src import diagnostics, dmd, linalg, masks, tree_math, validation

_HIGHEST = jax.lax.Precision.HIGHEST

__all__ = [
    "AcceptedFractions",
    "EigenvalueHistory",
    "NeutralSplit",
    "PCAPlane",
    "accepted_fractions",
    "eigenvalue_history",
    "loss_landscape",
    "mask_drop_epochs",
    "neutral_reconstruction",
    "pca_plane",
    "recorded_eigenvalues",
    "stack_snapshots",
    "variance_explained",
]


# --------------------------------------------------------------------------
# Argument handling
# --------------------------------------------------------------------------


def _is_sequence(x) -> bool:
    return isinstance(x, (list, tuple)) and not hasattr(x, "_fields")


def _check_leaves(tree, name):
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError(f"{name}: the pytree has no leaves.")
    for leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"{name}: leaves must be real floating-point arrays; got "
                            f"{getattr(dtype, 'name', type(leaf).__name__)}.")
    return leaves


def stack_snapshots(snapshots, name: str = "snapshots"):
    """Stacks recorded snapshots into one pytree with the snapshot index first.

    Args:
      snapshots: a list or tuple of snapshot pytrees (one per epoch, all of
        one structure and shapes), or an already stacked pytree / array whose
        leaves carry the ``h`` snapshots on their leading axis. A NamedTuple
        counts as one pytree, not as a sequence.
      name: the argument's name in error messages.

    Returns:
      The stacked pytree of ``jax.Array`` leaves ``(h, ...)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax import analysis
      >>> stacked = analysis.stack_snapshots([{"w": jnp.zeros(3)}, {"w": jnp.ones(3)}])
      >>> stacked["w"].shape
      (2, 3)
    """
    if _is_sequence(snapshots):
        if not snapshots:
            raise ValueError(f"{name}: the sequence of snapshots is empty.")
        structure = jax.tree.structure(snapshots[0])
        shapes = [np.shape(x) for x in jax.tree.leaves(snapshots[0])]
        for i, s in enumerate(snapshots):
            if jax.tree.structure(s) != structure or \
                    [np.shape(x) for x in jax.tree.leaves(s)] != shapes:
                raise ValueError(f"{name}: snapshot {i} differs from snapshot 0 in tree "
                                 "structure or leaf shapes.")
        stacked = jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *snapshots)
    else:
        stacked = jax.tree.map(jnp.asarray, snapshots)
    leaves = _check_leaves(stacked, name)
    h = leaves[0].shape[0] if leaves[0].ndim else 0
    if any(x.ndim == 0 or x.shape[0] != h for x in leaves):
        raise ValueError(f"{name}: every leaf needs the same leading snapshot axis; got "
                         f"shapes {[x.shape for x in leaves]}.")
    return stacked


def _stacked(snapshots, name, minimum):
    stacked = stack_snapshots(snapshots, name)
    h = jax.tree.leaves(stacked)[0].shape[0]
    if h < minimum:
        raise ValueError(f"{name}: need at least {minimum} snapshots; got {h}.")
    return stacked, h


def _increments(stacked):
    return jax.tree.map(lambda x: x[1:] - x[:-1], stacked)


def _num_features(stacked) -> int:
    return tree_math.tree_size(jax.tree.map(lambda x: x[0], stacked))


def _check_dmd_options(epsilon, rank, rcond):
    validation.number(epsilon, "epsilon", low=0.0, high=1.0, what="a number in [0, 1)")
    linalg.validate_rank(rank)
    validation.optional_fraction(rcond, "rcond")


def _find_state(tree, name):
    """The one koopax state inside ``tree`` (found by type, never by field name)."""
    found = diagnostics.find_states(tree)
    if len(found) != 1:
        raise ValueError(f"{name}: expected one koopax state (koopax.kga / koopax.pdt ...), "
                         f"found {len(found)}.")
    return diagnostics.state_diagnostics(found[0][1])


# --------------------------------------------------------------------------
# Eigenvalues epoch by epoch (KGA paper Fig. 2)
# --------------------------------------------------------------------------


class EigenvalueHistory(NamedTuple):
    """DMD eigenvalues over training, one row per window (or recorded state).

    Attributes:
      epochs: ``(E,)`` int32, the snapshot index each row belongs to (the
        newest snapshot of its window).
      eigenvalues: ``(E, ..., r)`` complex, by decreasing modulus, 0 beyond
        the rank.
      rank: ``(E, ...)`` int32, the DMD rank of each row.
      classes: :class:`koopax.EigenvalueClasses` of ``(E, ..., r)`` boolean
        masks (padding entries are in no class).
    """

    epochs: jax.Array
    eigenvalues: jax.Array
    rank: jax.Array
    classes: dmd.EigenvalueClasses


@functools.partial(jax.jit, static_argnames=("size", "num_features", "rank", "rcond"))
def _window_eigenvalues(gram, size, num_features, rank, rcond):
    """Sorted eigenvalues and rank of the DMD of every ``size``-increment window."""
    def one(start):
        g = jax.lax.dynamic_slice(gram, (start, start), (size, size))
        red = dmd.gram_operator(g, rank=rank, num_features=num_features, rcond=rcond)
        values = linalg.eigvals(red.operator, red.rank)
        order = dmd.sort_eigenvalues(values, jnp.arange(size - 1) < red.rank)
        return values[order], red.rank

    return jax.lax.map(one, jnp.arange(gram.shape[0] - size + 1))


def eigenvalue_history(snapshots, window: int, *, epsilon=1e-2, rank=None,
                       rcond=None) -> EigenvalueHistory:
    """Exact-DMD eigenvalues of every sliding window of increments, classified.

    For every ``t = window - 1, ..., h - 1`` the window holds snapshots
    ``w_{t-window+1}, ..., w_t``, i.e. the ``m = window - 1`` increments
    ``d_i = w_{i+1} - w_i``; with ``X = [d_{t-m+1} ... d_{t-1}]``,
    ``Y = [d_{t-m+2} ... d_t]`` and ``X = U S V^T``::

        A~ = U^T Y V S^{-1},   A~ q_k = lambda_k q_k,

    computed from the increments' Gram matrix (method of snapshots, as
    :func:`koopax.exact_dmd`). Classes (Avila & Mezic 2020): neutral
    ``1 - eps <= |lambda| <= 1 + eps``, stable below, unstable above. With
    ``window = num_snapshots`` this is the spectrum :func:`koopax.kga` and
    :func:`koopax.pdt` see when a snapshot is taken every epoch (pass their
    ``rank``: ``'svht'`` for KGA).

    Args:
      snapshots: ``h`` snapshots (see :func:`stack_snapshots`).
      window: snapshots per DMD window, ``3 <= window <= h``.
      epsilon: half-width of the neutral band, in ``[0, 1)``.
      rank, rcond: DMD rank policy and Gram noise floor (as
        :func:`koopax.exact_dmd`).

    Returns:
      An :class:`EigenvalueHistory` with ``h - window + 1`` rows of
      ``window - 2`` eigenvalues.

    Examples:
      Increments that shrink by 0.5 per epoch have the one eigenvalue 0.5:

      >>> import jax.numpy as jnp
      >>> from koopax import analysis
      >>> w = jnp.array([[1.0 - 0.5 ** t, 2.0 * (1.0 - 0.5 ** t)] for t in range(6)])
      >>> hist = analysis.eigenvalue_history(w, window=4)
      >>> hist.epochs.tolist(), hist.rank.tolist()
      ([3, 4, 5], [1, 1, 1])
      >>> round(float(hist.eigenvalues[0, 0].real), 4), bool(hist.classes.stable[0, 0])
      (0.5, True)

    References:
      Anonymous, *Dynamic Training Guided by Training Dynamics*, 2024, Fig. 2.
      Avila & Mezic, Nat. Commun. 2020 (eigenvalue classes).
    """
    validation.integer(window, "window", low=3)
    _check_dmd_options(epsilon, rank, rcond)
    stacked, h = _stacked(snapshots, "snapshots", 3)
    if window > h:
        raise ValueError(f"window must be <= the number of snapshots {h}; got {window}.")
    gram = tree_math.stacked_gram(_increments(stacked))
    values, ranks = _window_eigenvalues(gram, window - 1, _num_features(stacked), rank,
                                        rcond)
    valid = jnp.arange(window - 2)[None, :] < ranks[:, None]
    classes = dmd.classify_eigenvalues(values, epsilon, valid)
    return EigenvalueHistory(jnp.arange(window - 1, h, dtype=jnp.int32), values, ranks,
                             classes)


def recorded_eigenvalues(states, *, epsilon=1e-2) -> EigenvalueHistory:
    """The eigenvalues koopax states recorded, one state per epoch, classified.

    Reads the ``eigenvalues`` and ``rank`` fields of a :class:`koopax.KGAState`
    or :class:`koopax.PDTState` (or of the first such state inside each
    optimizer state, e.g. an ``optax.chain`` state) and zeroes the entries
    beyond the rank: ``lambda_k`` valid iff ``k < rank``. Classes as in
    :func:`eigenvalue_history`.

    Args:
      states: a non-empty list or tuple of optimizer states.
      epsilon: half-width of the neutral band, in ``[0, 1)``.

    Returns:
      An :class:`EigenvalueHistory` whose ``epochs`` are ``0, ..., E - 1``
      (positions in ``states``).

    Examples:
      >>> import jax.numpy as jnp, koopax, optax
      >>> from koopax import analysis
      >>> params = {"w": jnp.zeros(3)}
      >>> state = optax.chain(optax.sgd(0.1), koopax.kga(num_snapshots=4)).init(params)
      >>> hist = analysis.recorded_eigenvalues([state, state])
      >>> hist.eigenvalues.shape, hist.rank.tolist()   # (epochs, blocks, h - 2)
      ((2, 1, 2), [[0], [0]])

    References:
      Anonymous, *Dynamic Training Guided by Training Dynamics*, 2024, Fig. 2.
    """
    if not _is_sequence(states) or not states:
        raise TypeError("states must be a non-empty list or tuple of optimizer states; "
                        f"got {type(states).__name__}.")
    validation.number(epsilon, "epsilon", low=0.0, high=1.0, what="a number in [0, 1)")
    found = [_find_state(s, f"states[{i}]") for i, s in enumerate(states)]
    values = jnp.stack([jnp.asarray(f["eigenvalues"]) for f in found])
    ranks = jnp.stack([jnp.asarray(f["rank"], jnp.int32) for f in found])
    valid = jnp.arange(values.shape[-1]) < ranks[..., None]
    values = jnp.where(valid, values, 0)
    classes = dmd.classify_eigenvalues(values, epsilon, valid)
    return EigenvalueHistory(jnp.arange(len(states), dtype=jnp.int32), values, ranks, classes)


# --------------------------------------------------------------------------


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
    _check_dmd_options(epsilon, rank, rcond)
    stacked, _ = _stacked(snapshots, "snapshots", 3)
    return _neutral_split(stacked, epsilon, rank, rcond)


@functools.partial(jax.jit, static_argnames=("rank", "rcond"))
def _neutral_split(stacked, epsilon, rank, rcond):
    h = jax.tree.leaves(stacked)[0].shape[0]
    fit = dmd.exact_dmd(_increments(stacked), rank=rank, rcond=rcond)
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
    stacked, h = _stacked(snapshots, "snapshots", 2)
    first = max(window, mask.start or 0)
    if first > h:
        raise ValueError(f"snapshots: the first decision needs {first} snapshots; got {h}.")
    decide = jax.jit(functools.partial(_mask_decision, mask, window - 1, restrict))
    incs = _increments(stacked)
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
    stacked, h = _stacked(snapshots, "snapshots", 2)
    if start + window > h:
        raise ValueError(f"start + window must be <= the number of snapshots {h}; got "
                         f"{start} + {window}.")
    return _variance(stacked, start, window, basis, rank, rcond)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _variance(stacked, start, window, basis, rank, rcond):
    gram = tree_math.stacked_gram(_increments(stacked))
    rows = slice(start, start + window - 1)
    gram_w = gram[rows, rows]
    make = _pod_coefficients if basis == "pod" else _dmd_coefficients
    coef = make(gram_w, _num_features(stacked), rank, rcond)
    c = jnp.matmul(coef.T, gram[rows, :], precision=_HIGHEST)
    normal = jnp.matmul(jnp.matmul(coef.T, gram_w, precision=_HIGHEST), coef, precision=_HIGHEST)
    energy = jnp.sum(c * jnp.matmul(jnp.linalg.pinv(normal, hermitian=True), c,
                                    precision=_HIGHEST), axis=0)
    norms = jnp.diagonal(gram)
    return jnp.where(norms > 0, jnp.clip(energy / jnp.where(norms > 0, norms, 1.0), 0.0, 1.0),
                     jnp.nan)


# --------------------------------------------------------------------------
# PDT accepted fraction (PDT paper Fig. 5)
# --------------------------------------------------------------------------


class AcceptedFractions(NamedTuple):
    """PDT's accepted fraction over training (:func:`accepted_fractions`).

    Attributes:
      ratio: ``(E,)`` float32 fraction of the weights that took the prediction
        made in each epoch, NaN in epochs without a new prediction.
      predicted: ``(E,)`` bool, a new prediction was made in that epoch.
      mean: float32 mean of ``ratio`` over the predictions (NaN if none).
    """

    ratio: jax.Array
    predicted: jax.Array
    mean: jax.Array


def accepted_fractions(records, num_predictions=None) -> AcceptedFractions:
    """The accepted fraction of PDT's predictions, epoch by epoch.

    :class:`koopax.PDTState` keeps ``accepted_ratio``, the fraction ``a`` of
    weights whose prediction passed the mask at the *last* prediction, and
    ``num_predictions``. From one record per epoch, epoch ``e`` made a new
    prediction iff ``n_e > n_{e-1}`` (``n_{-1} = 0``), and then::

        ratio_e = a_e = |{j : mask_j}| / N,   mean = average of ratio_e over those e.

    Args:
      records: a non-empty list or tuple of optimizer states (each a
        ``PDTState`` or containing one, e.g. an ``optax.chain`` state), or a
        1-D sequence of recorded ratios in ``[0, 1]`` (NaN: none yet).
      num_predictions: with ratios, the matching ``num_predictions`` counts
        (default: every finite ratio is a new prediction); ``None`` with
        states (read from them).

    Returns:
      An :class:`AcceptedFractions`.

    Examples:
      >>> from koopax import analysis
      >>> acc = analysis.accepted_fractions([0.0, 0.4, 0.4, 0.2], num_predictions=[0, 1, 1, 2])
      >>> acc.predicted.tolist(), round(float(acc.mean), 4)
      ([False, True, False, True], 0.3)

    References:
      Wang et al., *Predictive Differential Training Guided by Training
      Dynamics*, ICLR 2026, Fig. 5 (last column).
    """
    if not _is_sequence(records) and not isinstance(records, (np.ndarray, jax.Array)):
        raise TypeError("records must be a list or tuple of states, or a 1-D sequence of "
                        f"ratios; got {type(records).__name__}.")
    if len(records) == 0:
        raise ValueError("records must not be empty.")
    if not isinstance(records[0], (numbers.Real, np.ndarray, jax.Array)):
        if num_predictions is not None:
            raise ValueError("num_predictions must be None when records are states.")
        found = [_find_state(r, f"records[{i}]") for i, r in enumerate(records)]
        if any("accepted_ratio" not in f for f in found):
            raise ValueError("records: states must be koopax.PDTState (or contain one).")
        records = [f["accepted_ratio"] for f in found]
        num_predictions = [f["num_predictions"] for f in found]
    ratio = np.asarray(jax.device_get(records), np.float64)
    if ratio.ndim != 1:
        raise ValueError(f"records: ratios must form a 1-D sequence; got shape {ratio.shape}.")
    if np.any((ratio < 0) | (ratio > 1)):
        raise ValueError("records: ratios must lie in [0, 1].")
    if num_predictions is None:
        predicted = np.isfinite(ratio)
    else:
        counts = np.asarray(jax.device_get(num_predictions), np.int64).reshape(-1)
        if counts.shape != ratio.shape or np.any(np.diff(counts, prepend=0) < 0):
            raise ValueError("num_predictions must be a non-decreasing count, one per record.")
        predicted = np.diff(counts, prepend=0) > 0
    out = np.where(predicted, ratio, np.nan)
    mean = np.mean(out[predicted]) if predicted.any() else np.nan
    return AcceptedFractions(jnp.asarray(out, jnp.float32), jnp.asarray(predicted),
                             jnp.asarray(mean, jnp.float32))
