"""Efficient-KGA: KGA over a streaming orthonormal basis instead of the increments.

Instead of ``h - 1`` parameter-sized increments (:func:`koopax.kga`), the state
holds an orthonormal basis ``B`` of ``basis_size`` directions and the last
increments' coordinates ``Z = B^T D`` (an ``(h-1) x basis_size`` matrix). Each
snapshot's increment ``d`` is split into ``B z + r``; while the basis is not
full, ``r / |r|`` becomes a new direction (when ``|r| > 0.1 |d|``, **[choice]**:
a weaker residual's direction is round-off, see ``_NEW_DIRECTION_TOL``); after
that, every ``refresh_every`` snapshots the basis is re-oriented towards the
principal directions of ``[Z; z]`` extended by ``r`` (a streaming POD,
Hemati et al. 2014), or fixed once filled (``refresh_every=None``, the
paper). KGA's operator ``K`` comes from the Gram matrix ``Z Z^T`` of the
coordinates and acts in the basis: the correction of ``b`` is
``s B (Z_x^T K Z_x) B^T b`` with the per-leaf bound of
KGA's bound (the basis keeps its per-leaf
Gram matrices ``B_l^T B_l``).

Memory ``(basis_size + 1) N`` (plus ``N`` for a summed ``apply_every``),
instead of ``h N``.

References:
  Anonymous, *Dynamic Training Guided by Training Dynamics* (KGA,
  Efficient-KGA), OpenReview 7AB077M4TY, 2024, Sec. 3.3. Hemati, Williams,
  Rowley, `Dynamic mode decomposition for large and streaming datasets
  <https://arxiv.org/abs/1406.7187>`_, 2014.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from koopax._src import snapshots, tree_math, validation
from koopax._src.control import maybe_apply
from koopax._src.kga import engine, settings
from koopax._src.kga.operator import leaf_squares

_HIGHEST = jax.lax.Precision.HIGHEST
# A new increment extends the basis when its part outside the basis is at
# least this fraction of its norm. The increment itself is known only to the
# relative precision of the weights it is a difference of (1e-5 here on a
# sharded run: float32 sums in another order); a residual of 1e-3 |d| then
# points in a direction known to 1e-2 at best, and the DMD amplifies it. At
# 1e-3 an 8-device run left the 1-device one by 1e-2 in 100 steps; at 0.1
# by 1e-6 (benchmarks/devices.py), with the same epochs wherever a snapshot
# is an epoch apart (the main job, the MNIST-1D CNN with Adam).
_NEW_DIRECTION_TOL = 0.1


class BasisColumns(NamedTuple):
    """Efficient-KGA's columns: a streaming orthonormal basis (``KGAState.columns``).

    Attributes:
      last: newest snapshot (parameter dtype).
      basis: pytree with leaves ``(basis_size, *shape)``: orthonormal directions.
      basis_grams: ``(num_leaves, basis_size, basis_size)`` float32 per-leaf
        ``B_l^T B_l``.
      basis_filled: int32 number of basis directions set so far.
      coordinates: ``(h-1, basis_size)`` float32 coordinates of the last
        increments in ``basis``, oldest first.
      num_snapshots: int32 snapshots recorded.
    """

    last: Any
    basis: Any
    basis_grams: jax.Array
    basis_filled: jax.Array
    coordinates: jax.Array
    num_snapshots: jax.Array


class _Split(NamedTuple):
    """An increment split on the basis: ``d = B z + |r| unit``."""

    coords: jax.Array
    unit: Any
    residual_norm: jax.Array
    new_direction: jax.Array


def _split(state: BasisColumns, params) -> _Split:
    def increment(p, last):
        dt = tree_math.accumulation_dtype(jnp.result_type(p, last))
        return p.astype(dt) - last.astype(dt)

    inc = jax.tree.map(increment, params, state.last)
    coords = jnp.sum(tree_math.stacked_products(state.basis, inc), axis=0)
    residual = jax.tree.map(lambda d, b: d - b, inc,
                            tree_math.stacked_weighted_sum(state.basis, coords, like=inc))
    res_norm = jnp.sqrt(tree_math.tree_vdot(residual, residual))
    inc_norm = jnp.sqrt(tree_math.tree_vdot(inc, inc))
    new_dir = ((res_norm > _NEW_DIRECTION_TOL * inc_norm) & (res_norm > 0)
               & (state.num_snapshots > 0))
    unit = jax.tree.map(lambda r: r / jnp.maximum(res_norm, 1e-30), residual)
    return _Split(coords, unit, res_norm, new_dir)


def _fill(state: BasisColumns, split: _Split) -> BasisColumns:
    """The residual direction becomes basis vector number ``basis_filled``."""
    slot = state.basis_filled
    basis = jax.tree.map(
        lambda b, u: jax.lax.dynamic_update_index_in_dim(b, u.astype(b.dtype), slot, 0),
        state.basis, split.unit)
    row = split.coords.at[slot].set(split.residual_norm)
    return state._replace(
        basis=basis, basis_grams=tree_math.stacked_leaf_grams(basis), basis_filled=slot + 1,
        coordinates=jnp.concatenate([state.coordinates[1:], row[None]]))


def _rotate(state: BasisColumns, split: _Split) -> BasisColumns:
    """Re-orients the basis to the principal directions of the extended coordinates."""
    history = state.coordinates[1:]
    r = split.coords.shape[0]
    ext = jnp.concatenate([
        jnp.concatenate([history, jnp.zeros((history.shape[0], 1), history.dtype)], 1),
        jnp.concatenate([split.coords, split.residual_norm[None]])[None]])
    _, vecs = jnp.linalg.eigh(jnp.matmul(ext.T, ext, precision=_HIGHEST))
    top = vecs[:, ::-1][:, :r]

    def rotate(b, u):
        dt = tree_math.accumulation_dtype(b.dtype)
        cols = jnp.concatenate([b.astype(dt), u.astype(dt)[None]])
        return jnp.tensordot(top.T.astype(dt), cols, axes=1, precision=_HIGHEST).astype(b.dtype)

    basis = jax.tree.map(rotate, state.basis, split.unit)
    return state._replace(basis=basis, basis_grams=tree_math.stacked_leaf_grams(basis),
                          coordinates=jnp.matmul(ext, top, precision=_HIGHEST))


def _keep(state: BasisColumns, split: _Split) -> BasisColumns:
    return state._replace(coordinates=jnp.concatenate([state.coordinates[1:],
                                                       split.coords[None]]))


@dataclasses.dataclass(frozen=True)
class BasisVariant:
    """The streaming basis as KGA's columns (see the module docstring)."""

    size: int
    refresh_every: int | None
    window_size: int
    snapshot_dtype: Any
    strategies = ("each", "sum")
    selects = False

    @property
    def width(self) -> int:
        return self.size

    def init(self, params) -> BasisColumns:
        return BasisColumns(
            last=jax.tree.map(jnp.zeros_like, params),
            basis=snapshots.stacked_zeros(params, self.size, self.snapshot_dtype),
            basis_grams=jnp.zeros((len(jax.tree.leaves(params)), self.size, self.size),
                                  jnp.float32),
            basis_filled=jnp.zeros((), jnp.int32),
            coordinates=jnp.zeros((self.window_size, self.size), jnp.float32),
            num_snapshots=jnp.zeros((), jnp.int32))

    def reference(self, store):
        """The newest recorded snapshot (parameter dtypes): what the parameters are
        checked against, and what a rollback restores."""
        return store.last

    def record(self, store, params, ok):
        """Splits the increment on the basis: fill, rotate or keep (gated: ``ok`` is True)."""
        del ok
        split = _split(store, params)
        due = (jnp.array(False) if self.refresh_every is None
               else (store.num_snapshots % self.refresh_every) == 0)
        grow = split.new_direction & (store.basis_filled < self.size)
        turn = split.new_direction & (store.basis_filled >= self.size) & due
        store = maybe_apply(grow, lambda s: _fill(s, split), store)
        store = maybe_apply(turn, lambda s: _rotate(s, split), store)
        store = maybe_apply(~grow & ~turn, lambda s: _keep(s, split), store)
        store = store._replace(
            last=jax.tree.map(lambda p, l: p.astype(l.dtype), params, store.last),
            num_snapshots=store.num_snapshots + 1)
        return store, None

    def ready(self, store):
        return store.num_snapshots > self.window_size

    def dmd_grams(self, store, blocks):
        del blocks   # one block: the basis is global
        return jnp.matmul(store.coordinates, store.coordinates.T, precision=_HIGHEST)[None]

    def to_columns(self, store, coefficients):
        z_x = store.coordinates[:-1]
        return jax.vmap(lambda k: jnp.matmul(jnp.matmul(z_x.T, k, precision=_HIGHEST), z_x,
                                             precision=_HIGHEST))(coefficients)

    def leaf_grams(self, store):
        return store.basis_grams

    def project(self, store, tree):
        return tree_math.stacked_products(store.basis, tree), leaf_squares(tree)

    def combine(self, store, coefficients, like):
        return tree_math.stacked_weighted_sum(store.basis, coefficients, like)

    def num_features(self, params, blocks):
        del blocks
        return (tree_math.tree_size(params),)

    def decide(self, store, params):
        return None


def efficient_kga(
    alpha: jax.typing.ArrayLike = 2.0,
    *,
    num_snapshots: int = 6,
    snapshot_every: int = 100,
    apply_every: int | None = 1,
    learning_rate=None,
    total_steps: int | None = None,
    basis_size: int | None = None,
    refresh_every: int | None = 1,
    epsilon: jax.typing.ArrayLike = 1e-2,
    rank: int | float | str | None = "svht",
    snapshot_dtype=None,
    max_gain: jax.typing.ArrayLike = 10.0,
    rcond: float | None = None,
    rollback: bool = True,
    damp_oscillations: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """Efficient-KGA: KGA over a streaming basis of ``basis_size`` directions.

    Args:
      alpha, num_snapshots, snapshot_every, epsilon, rank, max_gain, rcond: as
        in :func:`koopax.kga` (one block: the basis is global).
      learning_rate, total_steps, rollback, damp_oscillations: as in :func:`koopax.kga`.
      apply_every: ``k``: ``1`` (default) corrects every update; ``k > 1``
        (``None``: ``snapshot_every``) corrects the sum of ``k`` base updates,
        kept in one parameter-sized buffer: ``N`` more memory, which is what
        Efficient-KGA exists to save, hence not the default.
      basis_size: directions stored (default ``h - 2``, or ``rank`` when an int).
      refresh_every: snapshots between re-orientations of the basis towards
        the principal directions of the latest increments; ``None`` fixes the
        basis once filled, as in the paper.
      snapshot_dtype: dtype of the basis (default the parameters').

    Examples:
      On ``0.5 |w|^2`` with SGD (one mode, ``lambda = 0.9``) it acts as KGA:

      >>> import jax, jax.numpy as jnp, optax, koopax
      >>> tx = optax.chain(optax.sgd(0.1), koopax.efficient_kga(1.0, num_snapshots=4,
      ...                                                        snapshot_every=1))
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> loss = lambda p: 0.5 * jnp.sum(p["w"] ** 2)     # value: the rollback's loss
      >>> state = tx.init(params)
      >>> for step in range(4):
      ...     updates, state = tx.update(params, state, params, value=loss(params))
      ...     print(step, round(float(updates["w"][1] / (-0.1 * params["w"][1])), 3))
      ...     params = optax.apply_updates(params, updates)
      0 1.0
      1 1.0
      2 1.0
      3 1.9
      >>> int(state[1].columns.basis_filled)  # the whole trajectory lies on one direction
      1

    References:
      Anonymous, *Dynamic Training Guided by Training Dynamics*, OpenReview
      7AB077M4TY, 2024, Sec. 3.3 (Efficient-KGA).
    """
    validation.floating_dtype(snapshot_dtype, "snapshot_dtype")
    for value, name in ((basis_size, "basis_size"), (refresh_every, "refresh_every")):
        validation.static(value, name)
        if value is not None:
            validation.integer(value, name, low=1)
    cfg = settings.make_settings(
        alpha=alpha, num_snapshots=num_snapshots, snapshot_every=snapshot_every,
        apply_every=apply_every, epsilon=epsilon, rank=rank, max_gain=max_gain, rcond=rcond,
        learning_rate=learning_rate, total_steps=total_steps, increment=False, rank_cap=False,
        rollback=rollback, damp_oscillations=damp_oscillations)
    m = num_snapshots - 1
    size = basis_size or (rank if isinstance(rank, numbers.Integral) else m - 1)
    return engine.transformation(cfg, BasisVariant(size, refresh_every, m, snapshot_dtype))
