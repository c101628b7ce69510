"""KGA restricted to the weights a mask keeps, on compact vectors: :func:`koopax.masked_kga`.

The update is KGA's (:func:`koopax.kga`) on the kept weights ``I`` only::

    u'_I = u_I + s X_I K X_I^T u_I,     u'_j = u_j  for j not in I,

with ``X_I`` the stored increments restricted to ``I`` and ``K`` the operator
of their Gram matrix. The restriction is a real compaction, not a 0/1
multiply: every parameter leaf keeps a static number ``c_l`` of slots
(``koopax.masks`` compaction), the kept positions are an int32 index
vector per leaf, and the window stores compact increments of length ``c_l``.
A step gathers ``u_I``, does the two passes ``X_I^T u_I`` and ``X_I c`` over
compact vectors and scatter-adds the change back (``.at[idx].add``); a
snapshot gathers ``w_I``. Cost per step: ``O(h C)`` for ``C = sum c_l``
slots plus the gather/scatter, instead of ``O(h N)``.

Phases (all state shapes static, one compiled step):

1. *Full*: plain KGA on parameter-shaped increments until the first decision,
   at the first snapshot where the window is full and at least
   ``mask.start`` snapshots were taken.
2. *Transition*, at that snapshot: the criterion runs on the full window
   (params, increments, Gram), the kept weights are compacted (weights
   beyond a leaf's capacity are treated as masked and counted in
   ``num_overflow``), and the full window's increments are gathered into the
   compact window, so acceleration continues without a gap (the Gram
   matrix is recomputed on the compact vectors).
3. *Compact*: every ``mask.every`` snapshots the criterion runs again on the
   compact window; the kept set only shrinks (a weight out of the compact
   window has no recorded increments to rejoin with), the index vectors and
   all stored compact vectors are shrunk in place and the Gram matrix is
   recomputed. The full window stays in the state, unused (static shapes).

**Fades.** A mask with a ``margin`` (:mod:`koopax.masks`, the default) gives
each kept weight a fade ``g_j`` in ``(0, 1]``, and the compact phase runs KGA
in the coordinates ``y = G w`` (``G = diag(g)``): the compact window stores
``G X_I``, so the update is::

    u'_I = u_I + s G X_I K X_I^T G^2 u_I,

with ``K`` the operator of ``(G X_I)^T (G X_I)``. A weight at the threshold
(``g_j -> 0``) leaves both the correction and the fit continuously; ``g = 1``
is the update above. The criterion itself still sees the plain increments
(the compact window divided by ``g``). A decision rescales the stored columns
from the old fades to the new ones. A fade only falls (``g_j <- min(g_j,
g'_j)``): the continuous form of the kept set that only shrinks, so a weight
that once sat at the threshold (a fade near ``MIN_FADE`` in one run,
excluded in another that rounded differently) never takes a large share of
the correction again in one run and none in the other.

The window is a ring buffer (:class:`koopax.RingWindow`, written in place) and the
DMD refresh uses ``C`` as the row count in the rank policy's noise threshold
in both phases (identical to :func:`koopax.kga` when ``C = N``).
The phase gates are 0/1-trip while loops (``lax.cond`` would copy the window
through the untaken branch on every step), so a compact step executes only
compact work and no buffer is copied.

References:
  Anonymous, *Dynamic Training Guided by Training Dynamics* (KGA, KWM),
  OpenReview 7AB077M4TY, 2024, Algorithms 1-2, Eqs. 10-15.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from koopax._src import compaction, masks, snapshots, tree_math, validation
from koopax._src.control import choose, maybe_apply
from koopax._src.kga import engine, settings
from koopax._src.kga.engine import Push
from koopax._src.kga.operator import leaf_squares, slot_coefficients
from koopax._src.snapshots import RingWindow

_HIGHEST = jax.lax.Precision.HIGHEST


class MaskedColumns(NamedTuple):
    """Masked KGA's columns (``KGAState.columns``).

    Attributes:
      window: full ring window (used only in the full phase).
      compact_window: ring window over the compact view (``last``: tuple of
        ``(c_l,)`` leaves); its slots (``(m, c_l)`` per leaf) are stored in the
        full window's buffers (:func:`compact_slots`) and ``slots`` is None.
      indices: tuple of int32 ``(c_l,)`` kept positions per raveled leaf,
        sorted; padding slots hold ``n_l`` (out of range).
      compact: bool, True once the mask has been applied (compact phase).
      last_decision: int32 snapshot count at the latest mask decision.
      num_kept: int32 weights accelerated.
      num_overflow: int32 weights the criterion kept at the transition but no
        slot could hold (treated as masked).
      masked_fraction: float32 fraction of all weights the criterion excluded.
      num_mask_updates: int32 mask decisions taken.
      fades: tuple of float32 ``(c_l,)`` fades of the kept weights (0 at
        padding slots): the compact window stores the increments times these.
    """

    window: RingWindow
    compact_window: RingWindow
    indices: tuple
    compact: jax.Array
    last_decision: jax.Array
    num_kept: jax.Array
    num_overflow: jax.Array
    masked_fraction: jax.Array
    num_mask_updates: jax.Array
    fades: tuple


def _rows(slot_leaf):
    return compaction.flatten(slot_leaf, lead=1)


def _inputs(ring):
    """:class:`koopax.masks.MaskInputs` of a ring, increments oldest first."""
    return masks.MaskInputs(ring.last, snapshots.ring_increments(ring), snapshots.ring_gram(ring))


def compact_slots(store: MaskedColumns) -> tuple:
    """The compact window's slots: ``(m, c_l)`` views of the full window's buffers.

    The compact increments live in the first ``c_l`` entries of each raveled
    slot of the full window (unused once the window is compact), so masking
    never needs a second ``m x N`` buffer.
    """
    return _prefix_views(store.window.slots, store.indices)


def _prefix_views(full_slots, indices):
    """``(m, c_l)`` prefixes of the full slot buffers, ``c_l`` the length of ``indices[l]``."""
    return tuple(_rows(s)[:, :i.shape[0]]
                 for s, i in zip(jax.tree.leaves(full_slots), indices, strict=True))


def _store_compact(window, slots):
    """``window`` with ``slots`` (``(m, c_l)`` per leaf) written into its buffers' prefixes."""
    full = jax.tree.leaves(window.slots)
    new = [compaction.unflatten(
        jax.lax.dynamic_update_slice(_rows(f), c.astype(f.dtype), (0, 0)), f)
        for f, c in zip(full, slots, strict=True)]
    return window._replace(slots=jax.tree.unflatten(jax.tree.structure(window.slots), new))


def _compact_ring(last, slots, num_snapshots):
    """A compact ring (slots held elsewhere) over ``slots`` (``(m, c_l)`` per leaf)."""
    m = slots[0].shape[0] if slots else 1
    return RingWindow(last=last, slots=None, leaf_grams=tree_math.stacked_leaf_grams(slots),
                      num_snapshots=num_snapshots,
                      num_valid=jnp.minimum(jnp.maximum(num_snapshots - 1, 0), m).astype(jnp.int32))


def _live(store: MaskedColumns):
    """``(leaf_grams, num_snapshots, num_valid)`` of whichever window is live."""
    cw, w = store.compact_window, store.window
    return jax.tree.map(lambda a, b: jnp.where(store.compact, a, b),
                        (cw.leaf_grams, cw.num_snapshots, cw.num_valid),
                        (w.leaf_grams, w.num_snapshots, w.num_valid))


def _live_ring(store: MaskedColumns) -> RingWindow:
    return RingWindow(None, None, *_live(store))


def _compact_products(store, tree):
    """``(G X_I)^T (G u_I)`` as matrix products on the compact views (about 2x faster
    than multiply-and-reduce at ``c_l ~ 1e5``) and the kept entries' ``|u_I,l|^2``."""
    uc = compaction.gather(tree, store.indices)
    slots = compact_slots(store)
    acc = [tree_math.accumulation_dtype(jnp.result_type(s, x)) for s, x in zip(slots, uc)]
    products = jnp.stack([jnp.matmul(s.astype(dt), (x.astype(dt) * g.astype(dt)),
                                     precision=_HIGHEST).astype(jnp.float32)
                          for s, x, g, dt in zip(slots, uc, store.fades, acc)])
    return products, leaf_squares(uc)


def _compact_combination(store, coefficients, like):
    """``X_I a`` scattered into zeros shaped like ``like``."""
    slots = compact_slots(store)
    leaves = jax.tree.leaves(like)
    acc = [tree_math.accumulation_dtype(jnp.result_type(s, x)) for s, x in zip(slots, leaves)]
    dc = tuple(jnp.matmul(a.astype(dt), s.astype(dt), precision=_HIGHEST).astype(x.dtype)
               for a, s, x, dt in zip(coefficients, slots, leaves, acc))
    return compaction.scatter_add(jax.tree.map(jnp.zeros_like, like), store.indices, dc)


def _faded(compact, fades, power=1):
    """Compact vectors (``(c_l,)`` or ``(m, c_l)``) times ``fades ** power``; ``power=-1``
    divides (0 where a fade is 0: the padding)."""
    def one(x, g):
        g = g.astype(x.dtype)
        return x * g if power == 1 else jnp.where(g > 0, x / jnp.where(g > 0, g, 1), 0)
    return tuple(one(x, g) for x, g in zip(compact, fades, strict=True))


def _to_compact(mask, store: MaskedColumns, sizes, caps) -> MaskedColumns:
    w = store.window
    fade = masks.fade(mask, _inputs(w))
    keep = jax.tree.map(lambda g: g >= masks.MIN_FADE, fade)
    indices, num_kept, num_wanted = compaction.compact_indices(keep, caps)
    fades = compaction.gather(fade, indices)
    slots = _faded(tuple(compaction.gather_rows(_rows(s), i)
                         for s, i in zip(jax.tree.leaves(w.slots), indices)), fades)
    last = _faded(compaction.gather(w.last, indices), fades)
    return store._replace(
        compact=jnp.array(True), indices=indices, window=_store_compact(w, slots),
        compact_window=_compact_ring(last, slots, w.num_snapshots), fades=fades,
        last_decision=w.num_snapshots, num_kept=num_kept,
        num_overflow=num_wanted - num_kept,
        masked_fraction=(1.0 - num_wanted / sum(sizes)).astype(jnp.float32),
        num_mask_updates=store.num_mask_updates + 1)


def _shrink(mask, store: MaskedColumns, sizes) -> MaskedColumns:
    cw = store.compact_window
    plain = _faded(compact_slots(store), store.fades, -1)     # X_I: the criterion's view
    last = _faded(cw.last, store.fades, -1)
    ring = _compact_ring(last, plain, cw.num_snapshots)._replace(slots=plain)
    # A fade only falls (module docstring, **Fades**).
    fade = tuple(jnp.minimum(g, old) for g, old in zip(masks.fade(mask, _inputs(ring)),
                                                         store.fades, strict=True))
    keep = tuple(g >= masks.MIN_FADE for g in fade)
    indices, positions, num_kept = compaction.recompact(store.indices, keep, sizes)
    fades = compaction.take(fade, positions)
    slots = _faded(tuple(compaction.gather_rows(s, p) for s, p in zip(plain, positions)), fades)
    excluded_total = sum(sizes) - num_kept - store.num_overflow
    return store._replace(
        compact_window=_compact_ring(_faded(compaction.take(last, positions), fades), slots,
                                     cw.num_snapshots),
        window=_store_compact(store.window, slots), indices=indices, fades=fades,
        last_decision=cw.num_snapshots, num_kept=num_kept,
        masked_fraction=(excluded_total / sum(sizes)).astype(jnp.float32),
        num_mask_updates=store.num_mask_updates + 1)


def _push_full(store: MaskedColumns, params):
    """Pushes the full window; returns the store, the rows and the old Gram matrices."""
    old = store.window.leaf_grams
    window, rows = snapshots.ring_push_rows(store.window, params)
    return store._replace(window=window), rows, old


def _push_compact(store: MaskedColumns, params):
    cw = store.compact_window._replace(slots=compact_slots(store))
    old = cw.leaf_grams
    cw, rows = snapshots.ring_push_rows(
        cw, _faded(compaction.gather(params, store.indices), store.fades))
    window = _store_compact(store.window, cw.slots)
    # The full snapshot stays current in the compact phase too: a rollback restores it.
    window = window._replace(last=jax.tree.map(lambda p, l: p.astype(l.dtype), params,
                                               window.last))
    return store._replace(compact_window=cw._replace(slots=None), window=window), rows, old


def _statics(capacity, params):
    sizes = tuple(int(np.prod(np.shape(x), dtype=np.int64)) for x in jax.tree.leaves(params))
    return sizes, compaction.leaf_capacities(capacity, params)


@dataclasses.dataclass(frozen=True)
class MaskedVariant:
    """The masked (full, then compact) window as KGA's columns."""

    mask: masks.Mask
    window_size: int
    start: int
    snapshot_dtype: Any
    strategies = ("each", "increment")
    selects = False

    @property
    def width(self) -> int:
        return self.window_size

    def init(self, params) -> MaskedColumns:
        sizes, caps = _statics(self.mask.capacity, params)
        compact_like = tuple(
            jnp.zeros((c,), x.dtype) for x, c in zip(jax.tree.leaves(params), caps))
        m = self.window_size
        return MaskedColumns(
            window=snapshots.init_ring(params, m, self.snapshot_dtype),
            compact_window=snapshots.init_ring(compact_like, m, self.snapshot_dtype)._replace(
                slots=None),
            indices=tuple(compaction.padding_indices(n, c) for n, c in zip(sizes, caps)),
            compact=jnp.array(False), last_decision=jnp.zeros((), jnp.int32),
            num_kept=jnp.zeros((), jnp.int32), num_overflow=jnp.zeros((), jnp.int32),
            masked_fraction=jnp.zeros((), jnp.float32),
            num_mask_updates=jnp.zeros((), jnp.int32),
            fades=tuple(jnp.zeros((c,), jnp.float32) for c in caps))

    def reference(self, store):
        """The newest recorded snapshot (parameter dtypes): what the parameters are
        checked against, and what a rollback restores."""
        return store.window.last

    def _transition(self, store):
        return (~store.compact & snapshots.ring_is_full(store.window)
                & (store.window.num_snapshots >= self.start))

    def record(self, store, params, ok):
        """Pushes whichever window is live (gated: ``ok`` is True).

        The snapshot of the first decision corrects nothing: no weight is
        chosen yet (``applied = 0`` keeps the next correction exact).
        """
        del ok
        num_leaves, m = len(store.indices), self.window_size
        carry = (store, jnp.zeros((num_leaves, m), jnp.float32),
                 jnp.zeros((num_leaves, m, m), jnp.float32), params)
        was_compact = store.compact
        carry = maybe_apply(~was_compact, lambda c: (*_push_full(c[0], c[3]), c[3]), carry)
        store, rows, old, _ = maybe_apply(was_compact,
                                          lambda c: (*_push_compact(c[0], c[3]), c[3]), carry)
        newest = snapshots.newest_slot(_live_ring(store))
        return store, Push(rows, old, newest, ~self._transition(store))

    def ready(self, store):
        return snapshots.ring_is_full(_live_ring(store))

    def dmd_grams(self, store, blocks):
        ring = _live_ring(store)
        order = snapshots.ring_order(ring)
        return blocks.sum_leaves(ring.leaf_grams)[:, order][:, :, order]

    def to_columns(self, store, coefficients):
        order = snapshots.ring_order(_live_ring(store))
        return jax.vmap(slot_coefficients, in_axes=(0, None))(coefficients, order)

    def leaf_grams(self, store):
        return _live(store)[0]

    def project(self, store, tree):
        return choose(
            store.compact, _compact_products,
            lambda st, t: (tree_math.stacked_products(st.window.slots, t), leaf_squares(t)),
            store, tree)

    def combine(self, store, coefficients, like):
        return choose(
            store.compact, _compact_combination,
            lambda st, c, l: tree_math.stacked_weighted_sum(st.window.slots, c, l),
            store, coefficients, like)

    def num_features(self, params, blocks):
        _, caps = _statics(self.mask.capacity, params)
        return tuple(sum(c for c, b in zip(caps, blocks.ids) if b == k)
                     for k in range(blocks.count))

    def decide(self, store, params):
        """The mask decisions due at this snapshot (transition, then shrinking)."""
        sizes, caps = _statics(self.mask.capacity, params)
        first = self._transition(store)
        again = store.compact & (
            (store.compact_window.num_snapshots - store.last_decision) >= self.mask.every)
        store = maybe_apply(again, lambda st: _shrink(self.mask, st, sizes), store)
        store = maybe_apply(first, lambda st: _to_compact(self.mask, st, sizes, caps), store)
        return store, first | again


def masked_kga(
    mask: masks.Mask,
    alpha=2.0,
    *,
    num_snapshots: int = 6,
    snapshot_every: int = 100,
    apply_every: int | None = None,
    epsilon=1e-2,
    rank="svht",
    blocks=None,
    learning_rate=None,
    total_steps: int | None = None,
    snapshot_dtype=None,
    max_gain=10.0,
    rcond=None,
    rollback: bool = True,
    damp_oscillations: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """KGA on the weights ``mask`` keeps, on compact vectors.

    Args:
      mask: a :class:`koopax.masks.Mask` (``masks.kwm``, ``masks.norm``,
        ``masks.delta``); ``num_snapshots`` must be at least ``mask.min_snapshots``.
      alpha, num_snapshots, snapshot_every, epsilon, rank, blocks: as in
        :func:`koopax.kga` (a block's DMD row count is its leaves' capacity).
      learning_rate, total_steps, snapshot_dtype, max_gain, rcond, rollback: as
        in :func:`koopax.kga`.
      damp_oscillations: as in :func:`koopax.kga`.
      apply_every: ``1`` corrects every update (on compact vectors), ``None``
        or ``snapshot_every`` the newest increment at each snapshot (nothing
        between snapshots). Other values: ValueError.

    Examples:
      Norm masking keeps the weights with ``|w| >= 0.5``; the small one is
      never accelerated:

      >>> import jax, jax.numpy as jnp, optax, koopax
      >>> tx = optax.chain(optax.sgd(0.1), koopax.masked_kga(
      ...     koopax.masks.norm(0.5), 1.0, num_snapshots=4, snapshot_every=1))
      >>> params = {"w": jnp.array([0.1, -2.0, 3.0])}
      >>> loss = lambda p: 0.5 * jnp.sum(p["w"] ** 2)
      >>> state = tx.init(params)
      >>> for _ in range(6):
      ...     updates, state = tx.update(params, state, params, value=loss(params))
      ...     params = optax.apply_updates(params, updates)
      >>> koopax.masked_kga_kept(state[1], params)["w"].tolist(), int(state[1].columns.num_kept)
      ([False, True, True], 2)

    References:
      Anonymous, *Dynamic Training Guided by Training Dynamics*, OpenReview
      7AB077M4TY, 2024, Algorithms 1-2, Eqs. 10-15.
    """
    if not isinstance(mask, masks.Mask):
        raise validation.ArgumentError(
            f"mask must be a koopax.masks.Mask; got {type(mask).__name__}.")
    validation.floating_dtype(snapshot_dtype, "snapshot_dtype")
    cfg = settings.make_settings(
        alpha=alpha, num_snapshots=num_snapshots, snapshot_every=snapshot_every,
        apply_every=apply_every, epsilon=epsilon, rank=rank, max_gain=max_gain, rcond=rcond,
        learning_rate=learning_rate, total_steps=total_steps, blocks=blocks, rollback=rollback,
        damp_oscillations=damp_oscillations)
    if num_snapshots < mask.min_snapshots:
        raise ValueError(
            f"num_snapshots must be >= {mask.min_snapshots} for the {mask.name} mask "
            f"(its window); got {num_snapshots}.")
    if cfg.strategy == "sum":
        raise ValueError(f"apply_every must be 1, None or snapshot_every="
                         f"{cfg.clock.snapshot_every} for masked KGA; got {apply_every!r}.")
    return engine.transformation(cfg, MaskedVariant(
        mask, num_snapshots - 1, max(num_snapshots, mask.start or 0), snapshot_dtype))


def masked_kga_kept(state: engine.KGAState, params):
    """Bool pytree shaped like ``params``: True where KGA accelerates the weight.

    Before the first mask decision every weight is accelerated.
    """
    store = state.columns
    inside = compaction.kept(store.indices, params)
    return jax.tree.map(lambda x: x | ~store.compact, inside)
