"""Weight masks (KWM, norm, delta) and the static-capacity compaction that makes them pay.

A mask decides which weights take part in the Koopman machinery; the others get
the base optimizer's update unchanged and are not recorded in snapshots. All
three criteria of the KGA paper are provided, each as a :class:`Mask` of pure
functions evaluated on a :class:`MaskInputs` view (the current weights ``w_t``,
the last ``m`` increments ``d_i = w_{i+1} - w_i`` and their Gram matrix):

* **norm** (KGA paper §4.2): exclude weight ``j`` when ``|w_{t,j}| < theta``.
* **delta** (KGA paper §4.2, App. A.5): exclude ``j`` when
  ``|d_{i,j}| < theta`` for each of the last ``window`` increments.
* **KWM** (KGA paper Eqs. 14-15): from the exact DMD of the increments,
  ``d_i ~ sum_k lambda_k^i b_k phi_k`` (``i = 0`` the oldest increment in the
  window), the increments' DMD has the fixed point removed, so the paper's
  non-neutral contribution to the weight trajectory is recovered per mode as
  ``w_i - w* = sum_k lambda_k^i b_k / (lambda_k - 1) phi_k``. The score is::

      S_{i,j} = | Re sum_k t_k lambda_k^i b_k / (1 - lambda_k) phi_{k,j} |,

  the movement weight ``j`` still has ahead of it from the transient (stable
  and unstable) modes, ``t_k`` how transient mode ``k`` is
  (:func:`transient_weights`: 0 in the neutral band ``||lambda| - 1| <= eps``,
  1 from ``2 eps`` out, smooth in between; **[choice]**: the paper's classes
  are its 0/1 version), at weight snapshot ``i`` (``w_0`` the oldest snapshot of
  the window, ``w_m`` the newest), evaluated for the last ``s = window``
  snapshots ``i = m - s + 1, ..., m``. Weight ``j`` is excluded when
  ``S_{i,j} < epsilon`` for every one of them. Neutral increment modes
  (``|lambda| ~ 1``) are a steady drift, not a fixed point: with
  ``drift=True`` (default, a deliberate deviation) a weight whose drift per
  snapshot ``|Re sum_k (1 - t_k) lambda_k^m b_k phi_{k,j}|`` reaches
  ``epsilon`` is kept too; the paper's raw-weight DMD would lump that drift
  with the fixed point and mask the weight. The score's DMD leaves out the
  modes that lie within ``1e4`` of the weights' own round-off
  (:func:`roundoff_floor`): an extrapolation would carry it into the mask.

Each criterion is a score against a threshold (``|w_j|``, ``max_i |d_{i,j}|``,
``S_j``): weight ``j`` is excluded when ``score_j < threshold``. With a
``margin`` ``mu > 0`` (default 1) a kept weight also gets a **fade**::

    g_j = smoothstep((score_j / threshold - 1) / mu)  in [0, 1],

0 at the threshold, 1 from ``(1 + mu) threshold`` up, and
:func:`koopax.masked_kga` accelerates weight ``j`` in proportion to it
(**[choice]**, a deviation from the paper's 0/1 mask, whose keep/drop decision
flips under round-off for the weights that sit on the threshold: a sharded
run then left the single-device one by a whole correction). A weight whose
fade is below ``1e-6`` is excluded. ``margin=0`` is the paper's hard mask.

Masks are stateless; callers make them monotone with :func:`update`
(``excluded <- excluded | criterion``), as the KGA paper's Algorithm 2 does
for KWM. :func:`koopax.kga` (``mask=``) keeps the set of accelerated weights
shrinking only.

**Compaction** (``koopax._src.compaction``): each mask carries a static
``capacity``, so that the masked computation really shrinks.

References:
  Anonymous, *Dynamic Training Guided by Training Dynamics* (KGA, KWM),
  OpenReview 7AB077M4TY, 2024, §3.3, §4.2, App. A.5, Eqs. 14-15.
  Tu, Rowley, Luchtenburg, Brunton, Kutz, `On dynamic mode decomposition:
  theory and applications <https://arxiv.org/abs/1312.0041>`_, JCD 2014.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from koopax._src import linalg, tree_math, validation
from koopax._src.compaction import validate_capacity
from koopax._src.dmd import default_rcond, gram_operator

_HIGHEST = jax.lax.Precision.HIGHEST


class MaskInputs(NamedTuple):
    """What a mask criterion looks at, all in one coordinate system.

    The pytrees are either parameter-shaped or compact views (a tuple of 1-D
    leaves from :func:`gather`); criteria act entry-wise, so both work.

    Attributes:
      params: the current weights ``w_t``.
      increments: tuple of ``m`` pytrees ``d_{t-m}, ..., d_{t-1}``, oldest first.
      gram: ``(m, m)`` float32 ``<d_i, d_j>``.
    """

    params: Any
    increments: tuple
    gram: jax.Array


class Mask(NamedTuple):
    """A weight mask: a pure criterion plus the static compaction settings.

    Attributes:
      name: ``"norm"``, ``"delta"`` or ``"kwm"``.
      exclude: ``exclude(inputs: MaskInputs) -> pytree of bool`` shaped like
        ``inputs.params``; True excludes the weight.
      capacity: static bound on the accelerated weights: a float in (0, 1]
        (fraction of every leaf) or an int >= 1 (number of weights).
      min_snapshots: snapshots the criterion needs (``m + 1`` with ``m`` the
        number of increments).
      start: snapshots before the first decision (``None``: as soon as the
        consumer's window is full).
      every: snapshots between decisions after the first.
      fade: ``fade(inputs) -> pytree of float32`` in ``[0, 1]`` shaped like
        ``inputs.params``: how much of KGA's correction a weight takes (0
        where ``exclude`` is True); None: 1 wherever the weight is kept.
    """

    name: str
    exclude: Callable[[MaskInputs], Any]
    capacity: int | float
    min_snapshots: int
    start: int | None
    every: int
    fade: Callable[[MaskInputs], Any] | None = None


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_threshold(name, value):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) \
            or not 0.0 <= float(value) < float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}.")


def _check_common(capacity, start, every):
    validate_capacity(capacity)
    if start is not None and (not _is_int(start) or start < 1):
        raise ValueError(f"start must be None or an int >= 1; got {start!r}.")
    if not _is_int(every) or every < 1:
        raise ValueError(f"every must be an int >= 1; got {every!r}.")


def _check_margin(margin, name="margin"):
    if not isinstance(margin, numbers.Real) or isinstance(margin, bool):
        raise ValueError(f"{name} must be a static finite number >= 0; got {margin!r}.")
    validation.number(margin, name, low=0.0, what="a finite number >= 0")


# --------------------------------------------------------------------------
# Scores against a threshold, and their fades
# --------------------------------------------------------------------------


# Below this fade a kept weight is dropped: it would take at most 1e-6 of a
# correction, and its stored increments (multiplied by the fade) would lose
# their relative precision.
MIN_FADE = 1e-6


def _scored(name, measure, margin, capacity, min_snapshots, start, every) -> Mask:
    """A :class:`Mask` from ``measure(inputs) -> (scores, threshold)``.

    ``margin = 0``: exclude where ``score < threshold``, fade 1 elsewhere;
    ``margin > 0``: fade ``smoothstep((score / threshold - 1) / margin)``
    (1 everywhere for a zero threshold), excluded below :data:`MIN_FADE`.
    """
    mu = float(margin)

    def fade(inputs):
        scores, threshold = measure(inputs)
        threshold = jnp.asarray(threshold, jnp.float32)

        def one(score):
            score = score.astype(jnp.float32)
            if mu == 0.0:
                return (score >= threshold).astype(jnp.float32)
            x = (score / jnp.maximum(threshold, jnp.finfo(jnp.float32).tiny) - 1.0) / mu
            return jnp.where(threshold > 0, linalg.smoothstep(x), 1.0)

        return jax.tree.map(one, scores)

    def exclude(inputs):
        if mu == 0.0:
            scores, threshold = measure(inputs)
            return jax.tree.map(lambda x: x < threshold, scores)
        return jax.tree.map(lambda g: g < MIN_FADE, fade(inputs))

    return Mask(name, exclude, capacity, min_snapshots, start, every, fade)


# --------------------------------------------------------------------------
# Criteria
# --------------------------------------------------------------------------


def norm(threshold, *, margin=1.0, capacity=1.0, start=None, every=1) -> Mask:
    """Norm masking: exclude weight ``j`` when ``|w_j| < threshold``.

    Args:
      threshold: finite number >= 0 (``0`` excludes nothing).
      margin: the fade's width ``mu`` (module docstring), a number >= 0; ``0``
        is the paper's hard mask.
      capacity: static compaction bound (see :class:`Mask`); ``1.0`` keeps
        room for every weight (no saving, no overflow).
      start: snapshots before the first decision (None: when the window fills).
      every: snapshots between decisions.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import masks
      >>> inputs = masks.MaskInputs(params={"w": jnp.array([0.05, -0.5, 2.0])},
      ...                           increments=(), gram=jnp.zeros((0, 0)))
      >>> masks.norm(0.1).exclude(inputs)["w"].tolist()
      [True, False, False]
    """
    _check_threshold("threshold", threshold)
    _check_margin(margin)
    _check_common(capacity, start, every)
    thr = float(threshold)

    def measure(inputs):
        return jax.tree.map(jnp.abs, inputs.params), thr

    return _scored("norm", measure, margin, capacity, 1, start, every)


def delta(threshold, window=5, *, margin=1.0, capacity=1.0, start=None, every=1) -> Mask:
    """Delta masking: exclude ``j`` when ``|d_{i,j}| < threshold`` for each of the last ``window``.

    The score is ``max_i |d_{i,j}|`` over those increments.

    Args:
      threshold: finite number >= 0 (``0`` excludes nothing).
      window: int >= 1, the number of trailing increments that must all be small.
      margin, capacity, start, every: as in :func:`norm`.

    Examples:
      Weight 0 moved less than ``1e-3`` in both increments, weights 1 and 2 in
      one of them only:

      >>> import jax.numpy as jnp
      >>> from koopax._src import masks
      >>> increments = ({"w": jnp.array([1e-4, 1e-4, 0.3])}, {"w": jnp.array([1e-4, 0.2, 1e-4])})
      >>> inputs = masks.MaskInputs(params={"w": jnp.ones(3)}, increments=increments,
      ...                           gram=jnp.zeros((2, 2)))
      >>> mask = masks.delta(1e-3, window=2)
      >>> mask.exclude(inputs)["w"].tolist(), mask.min_snapshots
      ([True, False, False], 3)
    """
    _check_threshold("threshold", threshold)
    validation.integer(window, "window", low=1)
    _check_margin(margin)
    _check_common(capacity, start, every)
    thr = float(threshold)

    def measure(inputs):
        if len(inputs.increments) < window:
            raise ValueError(
                f"delta mask: window={window} needs at least {window} increments; "
                f"got {len(inputs.increments)}.")
        recent = inputs.increments[-window:]
        return jax.tree.map(lambda *ds: jnp.max(jnp.stack([jnp.abs(d) for d in ds]), axis=0),
                            *recent), thr

    return _scored("delta", measure, margin, capacity, window + 1, start, every)


def transient_weights(eigenvalues, neutral_epsilon, valid):
    """How much of a transient mode each eigenvalue is, in ``[0, 1]`` (0 where not ``valid``).

    ``smoothstep((||lambda| - 1| - eps) / eps)``: 0 inside the neutral band
    ``||lambda| - 1| <= eps``, 1 from ``2 eps`` out, smooth in between (``eps = 0``:
    1 off the unit circle). The paper's classes are the 0/1 version; a mode
    crossing the band's edge under round-off then moved KWM's scores by its
    whole contribution.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import masks
      >>> lam = jnp.array([1.0, 0.985, 0.97, 0.5, 0.0])
      >>> masks.transient_weights(lam, 0.02, jnp.array([True] * 4 + [False])).round(3).tolist()
      [0.0, 0.0, 0.5, 1.0, 0.0]
    """
    distance = jnp.abs(jnp.abs(eigenvalues) - 1.0)
    if float(neutral_epsilon) == 0.0:
        weight = (distance > 0).astype(jnp.float32)
    else:
        weight = linalg.smoothstep((distance - neutral_epsilon) / neutral_epsilon)
    return jnp.where(valid, weight, 0.0).astype(jnp.float32)


#: How far above the weights' round-off a mode must lie for KWM to extrapolate it
#: (:func:`kwm`'s ``roundoff_margin``).
ROUNDOFF_MARGIN = 1e4


def roundoff_floor(gram, params, margin=ROUNDOFF_MARGIN):
    """The score's round-off floor relative to ``sigma_1``: ``margin * eps * ||w|| / sigma_1``.

    The increments ``d_i = w_{i+1} - w_i`` are differences of stored weights,
    each known to about ``eps |w_j|``, so a mode whose singular value is
    within ``margin`` of ``eps ||w||_F`` is mostly round-off to an
    extrapolation. ``eps`` is that of the dtype koopax accumulates in
    (:func:`koopax._src.tree_math.accumulation_dtype`: float32's for float32
    and bfloat16 weights; a floor at bfloat16's own ``eps`` is untested).
    ``sigma_1`` is the largest singular value of ``X = [d_0 ... d_{m-2}]``
    (from ``gram[:-1, :-1]``). Capped at 0.5, so that the leading mode always
    stays.

    Examples:
      Float32 weights of norm 1 and ``sigma_1 = 1``: the floor is
      ``1e4 * 1.19e-7 * 1 = 1.19e-3`` of ``sigma_1``; weights of norm 100
      put it at ``0.119``:

      >>> import jax.numpy as jnp, koopax
      >>> gram = jnp.diag(jnp.array([1.0, 1e-2, 1e-4]))
      >>> round(float(koopax.masks.roundoff_floor(gram, {"w": jnp.full(4, 0.5)})), 5)
      0.00119
      >>> round(float(koopax.masks.roundoff_floor(gram, {"w": jnp.full(4, 50.0)})), 3)
      0.119

    References:
      Higham, *Accuracy and Stability of Numerical Algorithms*, SIAM 2002, §2.1
      (a stored number is known to ``eps`` relative).
    """
    leaves = jax.tree.leaves(params)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    eps = max(float(jnp.finfo(tree_math.accumulation_dtype(x.dtype)).eps) for x in leaves)
    norm = jnp.sqrt(tree_math.tree_vdot(params, params))
    top = jnp.linalg.eigvalsh(jnp.asarray(gram, jnp.float32)[:-1, :-1])[-1]
    sigma_1 = jnp.sqrt(jnp.maximum(top, jnp.finfo(jnp.float32).tiny))
    return jnp.minimum(margin * eps * norm / sigma_1, 0.5)


def kwm_scores(inputs: MaskInputs, *, window=5, neutral_epsilon=1e-2, rank=None, rcond=None,
               drift=True, roundoff_margin=ROUNDOFF_MARGIN):
    """KWM scores ``max_i S_{i,j}`` over the last ``window`` snapshots (module docstring).

    Returns a float32 pytree shaped like ``inputs.params``: weight ``j`` is
    excluded by :func:`kwm` when its score is below ``epsilon``. The options
    are :func:`kwm`'s.
    """
    if not _is_int(window) or window < 1:
        raise ValueError(f"window must be an int >= 1; got {window!r}.")
    if not 0.0 <= float(neutral_epsilon) < 1.0:
        raise ValueError(f"neutral_epsilon must lie in [0, 1); got {neutral_epsilon}.")
    linalg.validate_rank(rank)
    _check_margin(roundoff_margin, "roundoff_margin")
    incs = tuple(inputs.increments)
    m = len(incs)
    if m < 3:
        raise ValueError(f"kwm needs at least 3 increments (4 snapshots); got {m}.")
    if window > m + 1:
        raise ValueError(f"window must be <= the number of snapshots {m + 1}; got {window}.")
    k = m - 1
    gram = jnp.asarray(inputs.gram, jnp.float32)
    num_features = tree_math.tree_size(incs[0])
    floor = jnp.asarray(default_rcond(jnp.float32) if rcond is None else rcond, jnp.float32)
    if roundoff_margin:
        floor = jnp.maximum(floor, roundoff_floor(gram, inputs.params, roundoff_margin))
    red = gram_operator(gram, rank=rank, num_features=num_features, rcond=floor, taper=True)
    values, vectors = linalg.eig(red.operator, red.rank)
    valid = jnp.arange(k) < red.rank
    cdt = values.dtype
    # Exact modes Phi = Y (V S^-1 Q), Y = [d_1 ... d_{m-1}].
    coef = jnp.matmul((red.right_vectors * red.inverse_singular_values).astype(cdt), vectors,
                      precision=_HIGHEST)
    coef = jnp.where(valid[None, :], coef, 0)
    # Amplitudes b = Phi^+ d_0 through the normal equations on the Gram matrix.
    gc = gram.astype(cdt)
    normal = jnp.matmul(jnp.matmul(coef.conj().T, gc[1:, 1:], precision=_HIGHEST), coef,
                        precision=_HIGHEST)
    normal = jnp.where(valid[:, None] & valid[None, :], normal, jnp.eye(k, dtype=cdt))
    rhs = jnp.where(valid, jnp.matmul(coef.conj().T, gc[1:, 0], precision=_HIGHEST), 0)
    amps = jnp.where(valid, jnp.linalg.solve(normal, rhs), 0)
    transient = transient_weights(values, neutral_epsilon, valid)
    denom = jnp.where(transient > 0, 1.0 - values, 1.0)
    displacement = jnp.where(transient > 0, transient * amps / denom, 0)
    columns = incs[1:]
    like = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, tree_math.accumulation_dtype(x.dtype)), incs[0])

    def magnitude(weights):
        c = jnp.real(jnp.matmul(coef, weights, precision=_HIGHEST)).astype(jnp.float32)
        c = jnp.where(jnp.isfinite(c), c, 0.0)
        return jax.tree.map(jnp.abs, tree_math.tree_combination(columns, c, like=like))

    score = None
    for i in range(m - window + 1, m + 1):
        s_i = magnitude(values ** i * displacement)
        score = s_i if score is None else jax.tree.map(jnp.maximum, score, s_i)
    if drift:
        steady = jnp.where(valid, (1.0 - transient) * values ** m * amps, 0)
        score = jax.tree.map(jnp.maximum, score, magnitude(steady))
    return jax.tree.map(lambda s: s.astype(jnp.float32), score)


def kwm(epsilon, window=5, *, neutral_epsilon=1e-2, rank=None, rcond=None,
        roundoff_margin=ROUNDOFF_MARGIN, drift=True, relative=False, margin=1.0, capacity=1.0,
        start=None, every=1) -> Mask:
    """Koopman-based weight masking (KGA paper Eqs. 14-15).

    Args:
      epsilon: finite number >= 0: weights whose score (module docstring) stays
        below it for the last ``window`` snapshots are excluded.
      window: ``s``, snapshots the score must stay small for (paper: 5). Needs
        a DMD window of at least ``max(window, 4)`` snapshots.
      neutral_epsilon: half-width of the neutral band ``|1 - |lambda|| <= eps``.
      rank: DMD rank policy (as :func:`koopax.exact_dmd`).
      rcond: the score's floor relative to ``sigma_1`` (default: the Gram
        route's, ``1e-3`` in float32), raised by ``roundoff_margin``;
        singular values between the floor and twice it fade in
        (:func:`koopax._src.dmd.floor_taper`; this makes the reduced operator
        continuous, not the score, whose amplitudes' least-squares fit gives
        a faded mode its weight back). A fixed floor of ``0.1`` (with
        ``margin=2``) also makes KWM the same on any number of devices, but
        drops weak modes that are real: over the 12 tuned constant-rate pairs
        of the MLP/CNN suite it reached the tuned base's best loss in 47
        seeds of 60 against 51, and it masked every weight of the z=x^2+y^2
        MLP in 3 seeds of 5, whose first window's ``sigma_1`` is the first
        epoch's transient (``benchmarks/results/kwm_floor``).
      roundoff_margin: **[choice]** the floor is at least
        ``roundoff_margin * eps * ||w||_F / sigma_1``
        (:func:`roundoff_floor`, default ``1e4``; ``0`` turns it off): the
        increments are differences of weights stored to ``eps |w_j|``, and
        the score extrapolates a mode at ``s`` by ``1 / (1 - lambda)``, so a
        mode within ``1e4`` of the weights' round-off would carry it into
        the mask. Weights that move little against their size (a tanh MLP at
        SGD 0.05: the floor is 0.06-0.24 ``sigma_1``) drop such modes, and
        weights that move much keep theirs (the z=x^2+y^2 and digits MLPs:
        3e-3 to 2e-2). 8 devices against 1 on that tanh MLP:
        ``4.3e-6`` of the largest weight (``8.8e-6`` across 2 processes),
        against ``1.4e-4`` without it (``python -m benchmarks devices``). The
        tuned MLP/CNN suite gives the same seeds and epochs with and without
        it, in every pair (``benchmarks/results/kwm_roundoff``).
      drift: also keep weights whose steady (neutral-mode) drift per snapshot
        reaches ``epsilon``.
      relative: if True, the threshold is ``epsilon * rms(d_m)``, the
        root-mean-square of the newest increment over the weights being scored,
        instead of the absolute ``epsilon``: weight ``j`` is dropped when the
        movement it still has ahead is below ``epsilon`` times a typical
        weight's movement per snapshot. The absolute threshold of the paper
        depends on the learning rate and the parameterization (1e-2 keeps most
        of an MNIST-1D MLP's weights and none of a z=x^2+y^2 MLP's at a small
        learning rate); the relative one does not. On re-evaluation in compact
        mode the reference is the rms over the weights still kept.
      margin, capacity, start, every: as in :func:`norm`.

    Examples:
      The increments of weight 0 decay geometrically (``lambda = 0.5``: it
      still has ``0.5 + 0.25 + ... = 1`` to go from the oldest scored
      snapshot), weight 1 never moves; KWM excludes weight 1 only:

      >>> import jax, jax.numpy as jnp
      >>> from koopax._src import masks
      >>> d = jnp.array([[0.5 ** i, 0.0] for i in range(5)])  # d_0, ..., d_4
      >>> inputs = masks.MaskInputs(params={"w": jnp.ones(2)},
      ...                           increments=tuple({"w": row} for row in d), gram=d @ d.T)
      >>> jax.jit(masks.kwm(1e-3).exclude)(inputs)["w"].tolist()
      [False, True]
    """
    _check_threshold("epsilon", epsilon)
    validation.integer(window, "window", low=1)
    _check_common(capacity, start, every)
    validation.number(neutral_epsilon, "neutral_epsilon", low=0.0, high=1.0,
                      what="a number in [0, 1)")
    linalg.validate_rank(rank)
    validation.optional_fraction(rcond, "rcond")
    _check_margin(roundoff_margin, "roundoff_margin")
    validation.boolean(relative, "relative")
    validation.boolean(drift, "drift")
    _check_margin(margin)
    eps = float(epsilon)

    def measure(inputs):
        scores = kwm_scores(inputs, window=window, neutral_epsilon=neutral_epsilon, rank=rank,
                            rcond=rcond, drift=drift, roundoff_margin=roundoff_margin)
        threshold = eps
        if relative:
            newest = inputs.increments[-1]
            mean_square = inputs.gram[-1, -1] / tree_math.tree_size(newest)
            threshold = eps * jnp.sqrt(jnp.asarray(mean_square, jnp.float32))
        return scores, threshold

    return _scored("kwm", measure, margin, capacity, max(window, 4), start, every)


def fade(mask: Mask, inputs: MaskInputs):
    """``mask``'s fade (module docstring): float32 in ``[0, 1]``, 0 where excluded.

    Examples:
      Threshold 0.1, margin 1: ``|w| = 0.05`` is excluded, ``0.15`` takes half
      of KGA's correction, ``0.5`` all of it:

      >>> import jax.numpy as jnp
      >>> from koopax._src import masks
      >>> inputs = masks.MaskInputs({"w": jnp.array([0.05, 0.15, 0.5])}, (), jnp.zeros((0, 0)))
      >>> masks.fade(masks.norm(0.1), inputs)["w"].round(3).tolist()
      [0.0, 0.5, 1.0]
    """
    if mask.fade is not None:
        return mask.fade(inputs)
    return jax.tree.map(lambda e: (~e).astype(jnp.float32), mask.exclude(inputs))


def init(params):
    """An empty excluded set: a bool pytree shaped like ``params``, all False."""
    return jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), bool), params)


def update(mask: Mask, excluded, inputs: MaskInputs):
    """Monotone update ``excluded | mask.exclude(inputs)``: the excluded set only grows.

    Examples:
      >>> import jax.numpy as jnp
      >>> from koopax._src import masks
      >>> excluded = masks.init({"w": jnp.zeros(3)})
      >>> for w in ([0.05, 0.5, 2.0], [0.5, 0.05, 2.0]):
      ...     inputs = masks.MaskInputs({"w": jnp.array(w)}, (), jnp.zeros((0, 0)))
      ...     excluded = masks.update(masks.norm(0.1), excluded, inputs)
      ...     print(excluded["w"].tolist())
      [True, False, False]
      [True, True, False]
    """
    if not isinstance(mask, Mask):
        raise ValueError(f"mask must be a koopax.masks.Mask; got {type(mask).__name__}.")
    return jax.tree.map(jnp.logical_or, excluded, mask.exclude(inputs))
