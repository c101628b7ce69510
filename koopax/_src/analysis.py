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
* the modes of single weights (:mod:`koopax._src.decomposition`): the
  neutral/transient split, mask drops, variance an early basis explains.
* :func:`accepted_fractions`: PDT's accepted fraction, prediction by
  prediction (PDT paper Fig. 5, last column).

As in the transformations, DMD runs on increments: they carry the dynamics of
``w_{t+1} - w* = A (w_t - w*)`` without the large common offset of the raw
weights, which float32 Gram matrices cannot resolve (:class:`koopax.RingWindow`).

References:
  Anonymous, *Dynamic Training Guided by Training Dynamics* (KGA, KWM),
  OpenReview 7AB077M4TY, 2024, Figs. 2, 6, 13, 14, Eq. 14, App. A.5.
  Wang, Tang, Harris, Qi, Wilson, Mezić, *Predictive Differential Training
  Guided by Training Dynamics*, ICLR 2026, Fig. 5.
"""

from __future__ import annotations

import functools
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from koopax._src import diagnostics, dmd, linalg, tree_math, validation
from koopax._src.stacks import check_dmd_options, increments, is_sequence, num_features, stack_checked

_HIGHEST = jax.lax.Precision.HIGHEST



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
    check_dmd_options(epsilon, rank, rcond)
    stacked, h = stack_checked(snapshots, "snapshots", 3)
    if window > h:
        raise ValueError(f"window must be <= the number of snapshots {h}; got {window}.")
    gram = tree_math.stacked_gram(increments(stacked))
    values, ranks = _window_eigenvalues(gram, window - 1, num_features(stacked), rank,
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
    if not is_sequence(states) or not states:
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
    if not is_sequence(records) and not isinstance(records, (np.ndarray, jax.Array)):
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
