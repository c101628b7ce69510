"""The optax contract, once, for every public transformation configuration.

``CONFIGS`` is the table: one row per public transformation configuration,
with tiny hyperparameters (a window of 4-5 snapshots, one every 2 steps) on a
separable quadratic over ``{"w": (16, 8), "b": (8,)}`` under SGD. Every
``test_*`` below is one contract check, parametrized over the rows that run
it (``test_the_table_is_current`` keeps this copy of the table honest)::

                          args jit f32 bf16 inject Multi masked multi apply  8-dev orbax vmap ident
                                                   Steps        trans finite                  limit
    kga-each              x    x   x   x    x      -     x      x     x      E     x     -    x
    kga-increment         x    x   x   x    x      x     -      -     x      E     x     x    x
    kga-sum               x    x   x   -    x      -     -      -     x      E     x     -    x
    efficient             x    x   x   x    x      x     x      x     x      E     x     x    x
    masked-norm-each      x    x   x   -    x      -     x      x     x      E     x     -    x
    masked-norm-increment x    x   x   x    x      -     -      -     -      A     x     x    x
    masked-kwm-each       x    x   x   -    x      x     -      -     x      E     x     -    -
    masked-kwm-increment  x    x   x   -    x      -     -      -     -      A     x     -    -
    pdt                   x    x   x   x    x      x     x      x     x      E     x     x    x
    dogra                 x    x   x   -    x      -     -      -     x      E     x     -    -
    tano                  x    x   x   x    x      -     -      -     x      E     x     -    -

``x``: runs; ``-``: left to other rows, to keep the file fast (every check still
covers every implementation: kga, efficient_kga, masked_kga, and the engine
of pdt and dmd_prediction). 8-dev: ``E`` a mesh with Explicit axes, ``A``
Auto axes (masked KGA replicates a sharded leaf to compact it; the Explicit step
holds one row per mask). inject: the
TypeErrors on every row, the traced hyperparameters' run inside MultiSteps.
jit: no recompilation. Identity limits:
alpha=0 (KGA, Efficient-KGA), a mask that keeps nothing (masked KGA),
criteria that reject everything and accept everything (= dmd_prediction) (PDT).

Speed: compilation is nearly the whole cost (a step is 2-6 s of XLA on one
core, each extra copy of it in the same program 0.2-5 s), so the rows of each
family (KGA, masked KGA, PDT) are compiled once: :func:`_bundle` jits one
step that advances, side by side, every variant the checks compare (the plain
chain, its bf16, vmapped, MultiSteps, masked, multi_transform,
apply_if_finite versions, the references they are compared with, the
identity limits), and :func:`_run` records that trajectory once for all the
checks; the 8-device runs are one compiled step per mesh. The trajectory
crosses every path: the window fills, refreshes, corrections, the masks'
compaction, jumps, a loss rise (``value`` is bumped at ``BUMPED``: PDT rolls
back, Tano stops, KGA's valve backs off) and, for apply_if_finite, a NaN
gradient.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import koopax
from koopax._src import masks

from helpers import assert_trees_close, assert_trees_equal

# ---------------------------------------------------------------------------
# The problem: a separable quadratic (one per leaf), so that the subtree "w"
# trained alone is the reference for optax.masked and optax.multi_transform.
# ---------------------------------------------------------------------------

SHAPES = {"w": (16, 8), "b": (8,)}
LR = 0.5
NUM_STEPS = 16
SAVE_AT = 11            # orbax: saved after 11 steps, restored, 5 more steps
POISON_AT = 12          # apply_if_finite: the step whose gradient is NaN
BUMPED = (8, 9)         # steps whose value is loss + 10: the epoch after the first jump

_rng = np.random.default_rng(1234)
CURVATURE = {k: jnp.asarray(_rng.uniform(0.02, 1.0, s), jnp.float32) for k, s in SHAPES.items()}
TARGET = {k: jnp.asarray(_rng.normal(size=s), jnp.float32) for k, s in SHAPES.items()}


def init_params(seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(rng.normal(size=s), dtype) for k, s in SHAPES.items()}


def loss(params):
    """The quadratic of the leaves present (``{"w": ...}`` alone works)."""
    return sum(0.5 * jnp.sum(CURVATURE[k] * (params[k].astype(jnp.float32) - TARGET[k]) ** 2)
               for k in sorted(params))


def bump(i):
    return jnp.where((i >= BUMPED[0]) & (i <= BUMPED[-1]), 10.0, 0.0)


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------

# Factory arguments that are not numbers (inject_hyperparams leaves them
# alone). Every other argument is a numeric hyperparameter and must be either
# traceable (Config.traceable) or rejected with a TypeError naming static_args.
NOT_NUMBERS = {"mask", "snapshot_dtype", "criteria", "quantity_bounds", "rollback",
               "damp_oscillations", "authors_schedule", "fit_on", "mode", "per_leaf", "blocks",
               "learning_rate"}
# Numeric stand-ins for arguments whose value in the table is not a number.
NUMERIC_SAMPLES = {"rank": 2, "rcond": 1e-3, "apply_every": 2, "basis_size": 2,
                   "min_interval": 1, "max_interval": 8, "start": 3, "total_steps": 100}

CHECKS = ("extra_args", "recompile", "dtypes", "bf16", "inject", "multi_steps", "masked",
          "multi_transform", "apply_if_finite", "sharded", "orbax", "vmap", "identity")
# Run on every row; the others on a few rows, so that each still covers every
# implementation (see test_the_table_is_current): pdt and dmd_prediction are
# one engine.
CORE = frozenset({"extra_args", "recompile", "dtypes", "inject", "sharded", "orbax"})
ENGINES = {koopax.kga: "kga", koopax.efficient_kga: "efficient_kga",
           koopax.masked_kga: "masked_kga", koopax.pdt: "pdt", koopax.dmd_prediction: "pdt"}
_KGA_TRACEABLE = ("alpha", "epsilon", "max_gain")
_WINDOW = dict(num_snapshots=4, snapshot_every=2)


def _kga_ran(s):
    """Refreshed, and corrected (an amplified mode now, or a correction rolled back)."""
    return int(s.num_refreshes) > 0 and (int(s.operator.num_stable.sum()) > 0
                                         or int(s.rollback.num_rollbacks) > 0)


def _masked_ran(s):
    return _kga_ran(s) and bool(s.columns.compact) and int(s.columns.num_kept) > 0


@dataclasses.dataclass(frozen=True)
class Config:
    family: str               # rows of a family share one compiled step
    factory: Callable
    kwargs: dict
    checks: frozenset         # the checks beyond CORE this row runs
    traceable: tuple          # numeric hyperparameters inject_hyperparams may trace
    ran: Callable             # koopax state -> its paths ran (refresh, compaction, jump)
    rose: Callable            # koopax state -> it reacted to value's rise (rollback, stop, valve)
    limits: dict = dataclasses.field(default_factory=dict)  # name -> (kind, *factories)
    auto_axes: bool = False      # 8 devices: also under Auto axes
    explicit_axes: bool = True   # 8 devices: under Explicit axes
    needs_value: bool = False    # update without value raises a ValueError naming it

    def make(self, **overrides):
        return self.factory(**{**self.kwargs, **overrides})


def _kga(checks, factory=koopax.kga, **kw):
    kw = dict(alpha=1.0, **_WINDOW, **kw)
    return Config("kga", factory, kw, CORE | checks | {"identity"}, _KGA_TRACEABLE, _kga_ran,
                  lambda s: int(s.valve.num_backoffs) > 0,
                  {"alpha=0": ("per_call", lambda: factory(**{**kw, "alpha": 0.0}))},
                  needs_value=True)


def _masked(mask, keeps_nothing, apply_every, checks, auto_axes=False):
    # Explicit axes for the "each" rows only: every mask is covered, and the one
    # compiled Explicit step stays two rows smaller (CI time).
    kw = dict(mask=mask(), alpha=1.0, num_snapshots=5, snapshot_every=2, apply_every=apply_every)
    limits = {} if "identity" not in checks else {"keeps nothing": (
        "per_call", lambda: koopax.masked_kga(**{**kw, "mask": keeps_nothing()}))}
    return Config("masked", koopax.masked_kga, kw, CORE | checks, _KGA_TRACEABLE, _masked_ran,
                  lambda s: int(s.valve.num_backoffs) > 0, limits,
                  auto_axes=auto_axes, explicit_axes=not auto_axes, needs_value=True)


def _norm(threshold=0.3):
    return masks.norm(threshold, capacity=0.75)


def _kwm(epsilon=0.05):
    # The floor and fade that make KWM the same on any number of devices (masks.kwm).
    return masks.kwm(epsilon, window=3, relative=True, capacity=0.5, rcond=0.1, margin=2.0)


_PDT = dict(horizon=3, **_WINDOW, start=3)
_DMD = dict(horizon=3, **_WINDOW)
_PDT_LIMITS = {
    "rejects all": ("per_call", lambda: koopax.pdt(**_PDT, criteria="quantity",
                                                   quantity_bounds=(1e9, None))),
    "keeps all": ("same_as", lambda: koopax.pdt(**_PDT, criteria="none", rollback=False),
                  lambda: koopax.dmd_prediction(**_PDT, per_leaf=False)),
}
_EVERYTHING = frozenset(CHECKS)

CONFIGS = {
    "kga-each": _kga({"bf16", "apply_if_finite", "masked", "multi_transform"}, apply_every=1),
    "kga-increment": _kga({"bf16", "apply_if_finite", "vmap", "multi_steps"}, apply_every=None),
    "kga-sum": _kga({"apply_if_finite"}, apply_every=3),
    "efficient": _kga(_EVERYTHING, koopax.efficient_kga),
    "masked-norm-each": _masked(_norm, lambda: _norm(1e9), 1,
                                {"apply_if_finite", "identity", "masked", "multi_transform"}),
    "masked-norm-increment": _masked(_norm, lambda: _norm(1e9), None,
                                     {"bf16", "vmap", "identity"}, auto_axes=True),
    "masked-kwm-each": _masked(_kwm, lambda: _kwm(1e9), 1, {"apply_if_finite", "multi_steps"}),
    "masked-kwm-increment": _masked(_kwm, lambda: _kwm(1e9), None, set(), auto_axes=True),
    "pdt": Config("pdt", koopax.pdt, _PDT, _EVERYTHING, ("tolerance", "noise_tolerance"),
                  lambda s: int(s.stats.num_jumps) > 0, lambda s: int(s.stats.num_rollbacks) > 0,
                  _PDT_LIMITS, needs_value=True),
    "dogra": Config("pdt", koopax.dmd_prediction, dict(_DMD, mode="dogra"),
                    CORE | {"apply_if_finite"}, ("tolerance",),
                    lambda s: int(s.stats.num_jumps) > 0, lambda s: True),
    "tano": Config("pdt", koopax.dmd_prediction, dict(_DMD, mode="tano"),
                   CORE | {"bf16", "apply_if_finite"}, ("tolerance",),
                   lambda s: int(s.stats.num_jumps) > 0, lambda s: bool(s.stopped),
                   needs_value=True),
}
LIMITS = [(n, lim) for n, c in CONFIGS.items() for lim in c.limits]

def rows(check):
    return [n for n, c in CONFIGS.items() if check in c.checks]


def coverage_table() -> str:
    """The table of the module docstring: rows x checks."""
    head = ("args", "jit", "f32", "bf16", "inject", "Multi", "masked", "multi", "apply",
            "8-dev", "orbax", "vmap", "ident")
    head2 = ("", "", "", "", "", "Steps", "", "trans", "finite", "", "", "", "limit")

    def cell(cfg, check):
        if check == "sharded":
            return " ".join(a for a, on in (("E", cfg.explicit_axes), ("A", cfg.auto_axes)) if on)
        return "x" if check in cfg.checks else "-"

    cells = {n: [cell(c, check) for check in CHECKS] for n, c in CONFIGS.items()}
    widths = [max(len(h), len(h2), *(len(r[j]) for r in cells.values()))
              for j, (h, h2) in enumerate(zip(head, head2))]
    width = max(map(len, CONFIGS))
    line = lambda first, row: " ".join(
        [f"{first:{width}}"] + [f"{c:{w}}" for c, w in zip(row, widths)]).rstrip()
    lines = [line("", head), line("", head2)] + [line(n, r) for n, r in cells.items()]
    return "\n".join("    " + x for x in lines)


def numeric_hyperparameters(cfg: Config) -> dict:
    """Every numeric hyperparameter of the factory, with a valid numeric value."""
    out = {}
    for name, param in inspect.signature(cfg.factory).parameters.items():
        if name in NOT_NUMBERS:
            continue
        value = cfg.kwargs.get(name, param.default)
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        out[name] = value if is_number else NUMERIC_SAMPLES[name]
    return out


def _static_args(cfg: Config, traced) -> tuple:
    return tuple(sorted(set(numeric_hyperparameters(cfg)) - set(traced)))


# ---------------------------------------------------------------------------
# The bundles: every variant of a family's rows advanced by one compiled step
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Variant:
    init: Callable            # seed -> (params, state)
    step: Callable            # (params, state, i) -> (params, state, aux)


def _sgd(g):
    return jax.tree.map(lambda x: -LR * x, g)


def _chain_step(chain, value_of=loss, bumped=True, **extra):
    def step(p, s, i):
        v, g = jax.value_and_grad(loss)(p)
        value = None if value_of is None else value_of(p) + (bump(i) if bumped else 0.0)
        u, s = chain.update(g, s, p, value=value, **extra)
        return optax.apply_updates(p, u), s, {"updates": u}
    return step


def _initial(tx, dtype=jnp.float32, leaves=None):
    def init(seed):
        p = init_params(seed, dtype)
        p = p if leaves is None else {k: p[k] for k in leaves}
        return p, tx.init(p)
    return init


def _variants(cfg: Config) -> dict:
    chain = optax.chain(optax.sgd(LR), cfg.make())
    plain_step = _chain_step(chain)
    # The plain run passes unknown keyword arguments; apply_if_finite's run,
    # bit-identical to it one step late, passes none.
    v = {"plain": Variant(_initial(chain), _chain_step(
        chain, unknown_kwarg=jnp.ones(3), other_unknown_kwarg="ignored"))}
    if "bf16" in cfg.checks:    # without value where it is optional, for test_extra_args
        v["bf16"] = Variant(_initial(chain, jnp.bfloat16),
                            _chain_step(chain, value_of=loss if cfg.needs_value else None,
                                        bumped=False))

    if "apply_if_finite" in cfg.checks:
        guarded = optax.apply_if_finite(chain, max_consecutive_errors=3)

        def poisoned(p, s, i):
            v_, g = jax.value_and_grad(loss)(p)
            g = jax.tree.map(lambda x: jnp.where(i == POISON_AT, jnp.nan, x), g)
            u, s = guarded.update(g, s, p, value=v_ + bump(i - (i > POISON_AT)))
            return optax.apply_updates(p, u), s, {}

        v["apply_if_finite"] = Variant(_initial(guarded), poisoned)

    if "vmap" in cfg.checks:
        v["vmap"] = Variant(
            lambda seed: jax.vmap(lambda q: (q, chain.init(q)))(jax.tree.map(
                lambda *x: jnp.stack(x), init_params(seed), init_params(seed + 1))),
            jax.vmap(plain_step, in_axes=(0, 0, None)))
    if "multi_steps" in cfg.checks:
        # MultiSteps around inject_hyperparams (the traceable hyperparameters traced).
        injected = optax.chain(optax.sgd(LR), optax.inject_hyperparams(
            cfg.factory, static_args=_static_args(cfg, cfg.traceable))(**cfg.kwargs))
        ms = optax.MultiSteps(injected, every_k_schedule=2)

        def multi_steps(p, s, i):
            v_, g = jax.value_and_grad(loss)(p)

            def micro(j, carry):       # each gradient twice: the mean is the gradient
                s, u, first = carry
                u, s = ms.update(g, s, p, value=v_ + bump(i))
                largest = functools.reduce(jnp.maximum, [jnp.max(jnp.abs(x))
                                                         for x in jax.tree.leaves(u)])
                first = jnp.where(j == 0, largest, first)
                return s, u, first

            s, u, first = jax.lax.fori_loop(0, 2, micro, (s, jax.tree.map(jnp.zeros_like, p),
                                                          jnp.float32(0.0)))
            return optax.apply_updates(p, u), s, {"first": first}

        v["multi_steps"] = Variant(_initial(ms), multi_steps)
    w_loss = lambda p: loss({"w": p["w"]})
    if "masked" in cfg.checks:
        masked = optax.chain(optax.sgd(LR), optax.masked(cfg.make(), {"w": True, "b": False}))
        v["masked"] = Variant(_initial(masked), _chain_step(masked, w_loss))
    if "multi_transform" in cfg.checks:
        multi = optax.multi_transform({"koopax": optax.chain(optax.sgd(LR), cfg.make()),
                                       "sgd": optax.sgd(LR)}, {"w": "koopax", "b": "sgd"})
        v["multi_transform"] = Variant(_initial(multi), _chain_step(multi, w_loss))
    if cfg.checks & {"masked", "multi_transform"}:
        v["w alone"] = Variant(_initial(chain, leaves=["w"]), plain_step)
        v["b alone"] = Variant(_initial(optax.sgd(LR), leaves=["b"]), _chain_step(optax.sgd(LR)))

    for name, (kind, *makers) in cfg.limits.items():
        if kind == "per_call":
            limit = makers[0]()

            def per_call(p, s, i, limit=limit):
                v_, g = jax.value_and_grad(loss)(p)
                base = _sgd(g)
                out, s = limit.update(base, s, p, value=v_ + bump(i))
                return optax.apply_updates(p, out), s, {"base": base, "out": out}

            v[f"limit {name}"] = Variant(_initial(limit), per_call)
        else:
            for suffix, make in (("", makers[0]), (" reference", makers[1])):
                c = optax.chain(optax.sgd(LR), make())
                v[f"limit {name}{suffix}"] = Variant(_initial(c), _chain_step(c))
    return v


@contextlib.contextmanager
def count_compilations():
    """Counts XLA compilations (jax.monitoring's backend-compile events)."""
    count = [0]

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            count[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@dataclasses.dataclass
class Bundle:
    variants: dict            # (row, variant) -> Variant
    step: Callable            # jitted (carry, i) -> (carry, aux)
    traces: list              # [times the step was traced]

    def init(self, seed):
        return {k: var.init(seed) for k, var in self.variants.items()}


@functools.cache
def _bundle(family) -> Bundle:
    variants = {(row, k): var for row, cfg in CONFIGS.items() if cfg.family == family
                for k, var in _variants(cfg).items()}
    traces = [0]

    def step(carry, i):
        traces[0] += 1      # Python runs only while tracing
        out, aux = {}, {}
        for k, var in variants.items():
            p, s, aux[k] = var.step(*carry[k], i)
            out[k] = (p, s)
        return out, aux

    return Bundle(variants, jax.jit(step), traces)


@dataclasses.dataclass
class Run:
    history: list             # carry after t steps, t = 0..NUM_STEPS
    aux: list                 # what step t returned besides the carry
    compilations: int

    def at(self, t, row, variant):
        return self.history[t][(row, variant)]


@functools.cache
def _run(family, seed=0) -> Run:
    bundle = _bundle(family)
    # Committed, as orbax restores them: a restored state then hits the same cache entry.
    carry = jax.device_put(bundle.init(seed), jax.devices()[0])
    history, aux = [carry], []
    with count_compilations() as compiled:
        for i in range(NUM_STEPS):
            carry, a = bundle.step(carry, jnp.int32(i))
            history.append(carry)
            aux.append(a)
    return Run(history, aux, compiled[0])


def run_of(row, seed=0) -> Run:
    return _run(CONFIGS[row].family, seed)


def _koopax(state):
    """The koopax state inside ``optax.chain(optax.sgd(...), tx)``'s state."""
    return state[1]


def _avals(tree):
    return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x),
                                   getattr(jax.typeof(x), "weak_type", False)), tree)


def _finite(tree):
    return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree)
               if jnp.issubdtype(jnp.result_type(x), jnp.inexact))


# ---------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------


def test_the_table_is_current():
    """The table in the module docstring is the one the tests run; every check
    covers every implementation (pdt and dmd_prediction are one engine)."""
    assert coverage_table() in __doc__
    assert set(ENGINES) == {c.factory for c in CONFIGS.values()}
    for check in CHECKS:
        covered = {ENGINES[CONFIGS[n].factory] for n in rows(check)}
        assert covered == set(ENGINES.values()), check
    assert {n for n in CONFIGS if CONFIGS[n].limits} == set(rows("identity"))


@pytest.mark.parametrize("name", rows("extra_args"))
def test_extra_args(name):
    """``value=`` is read, ``params`` is required, and unknown keyword arguments
    are ignored: the plain run passes two, and the runs that pass none are the
    same, bit for bit (apply_if_finite's, one step late) or to float32
    round-off (on 8 devices). ``value`` may be left out where it is optional
    (test_bf16); where a policy needs it, leaving it out raises naming it."""
    run, cfg = run_of(name), CONFIGS[name]
    assert cfg.rose(_koopax(run.at(NUM_STEPS, name, "plain")[1]))
    if "apply_if_finite" in cfg.checks:
        for t in range(POISON_AT, NUM_STEPS):
            assert_trees_equal(run.at(t + 1, name, "apply_if_finite")[0],
                               run.at(t, name, "plain")[0])
    else:
        axes = "explicit" if cfg.explicit_axes else "auto"
        p, _ = _sharded_run(_sharded_group(name, axes), axes)[0][name]
        assert_trees_close(p, run.at(NUM_STEPS, name, "plain")[0], rtol=2e-5, atol=2e-6)
    tx = cfg.make()
    params = init_params()
    with pytest.raises(ValueError, match="params"):
        tx.update(params, tx.init(params))
    if cfg.needs_value:
        with pytest.raises(ValueError, match="value=loss"):
            tx.update(params, tx.init(params), params)


@pytest.mark.parametrize("name", rows("recompile"))
def test_no_recompilation(name):
    """One compilation for the whole run (window filling, refreshes, jumps,
    rollbacks, a skipped NaN step): one trace, one XLA compilation."""
    run = run_of(name)
    assert _bundle(CONFIGS[name].family).traces[0] == 1
    assert run.compilations == 1
    assert CONFIGS[name].ran(_koopax(run.at(NUM_STEPS, name, "plain")[1]))


@pytest.mark.parametrize("name", rows("dtypes"))
def test_dtypes_are_kept(name):
    """float32 parameters get float32 updates; every variant's state keeps its
    init's shapes, dtypes and weak types at every step."""
    run = run_of(name)
    for t in range(NUM_STEPS):
        for (row, k), (p, s) in run.history[t + 1].items():
            if row == name:
                assert _avals((p, s)) == _avals(run.at(0, row, k)), (k, t)
        u = run.aux[t][(name, "plain")]["updates"]
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(u))


@pytest.mark.parametrize("name", rows("bf16"))
def test_bf16(name):
    """bfloat16 parameters get bfloat16 updates and a finite state, with every
    path taken; this run passes no ``value`` (the loss without its rise where
    ``value`` is needed), and nothing reacts to the loss."""
    run, cfg = run_of(name), CONFIGS[name]
    for t in range(NUM_STEPS):
        u = run.aux[t][(name, "bf16")]["updates"]
        assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(u))
    p, s = run.at(NUM_STEPS, name, "bf16")
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(p))
    assert _finite((p, s)) and cfg.ran(_koopax(s))
    # dogra never reacts to the loss; tano (no tolerance) stops at any rise of its own
    if name not in ("dogra", "tano"):
        assert not cfg.rose(_koopax(s))


@pytest.mark.parametrize("name", rows("inject"))
def test_inject_hyperparams(name):
    """Every numeric hyperparameter is traceable or rejected with a TypeError
    naming the static_args it needs; traced, they give the plain run (inside
    optax.MultiSteps, see test_multi_steps)."""
    cfg = CONFIGS[name]
    numeric = numeric_hyperparameters(cfg)
    assert set(cfg.traceable) <= set(numeric)
    params = init_params()
    for hp in sorted(set(numeric) - set(cfg.traceable)):
        factory = optax.inject_hyperparams(cfg.factory, static_args=_static_args(cfg, [hp]))
        with pytest.raises(TypeError, match=rf"{hp}.*static_args"):
            tx = factory(**{**cfg.kwargs, hp: numeric[hp]})
            state = tx.init(params)
            jax.jit(tx.update)(params, state, params)
    if "multi_steps" in cfg.checks:
        _, s = run_of(name).at(NUM_STEPS, name, "multi_steps")
        injected = s.inner_opt_state[1]
        assert set(injected.hyperparams) == set(cfg.traceable)
        assert all(isinstance(x, jax.Array) for x in injected.hyperparams.values())


@pytest.mark.parametrize("name", rows("multi_steps"))
def test_multi_steps(name):
    """``optax.MultiSteps(k=2)`` fed each gradient twice (around
    inject_hyperparams) is the plain run; the first micro-step proposes zeros."""
    run = run_of(name)
    for t in range(NUM_STEPS):
        assert float(run.aux[t][(name, "multi_steps")]["first"]) == 0.0
        p, s = run.at(t + 1, name, "multi_steps")
        p_ref, s_ref = run.at(t + 1, name, "plain")
        assert_trees_close(p, p_ref, rtol=1e-5, atol=1e-6)
        assert int(s.gradient_step) == t + 1 and int(s.mini_step) == 0
    inner = s.inner_opt_state[1].inner_state
    assert_trees_close(inner, _koopax(s_ref), rtol=1e-4, atol=1e-5)
    assert CONFIGS[name].ran(inner) and CONFIGS[name].rose(inner)


@pytest.mark.parametrize("wrapper, name", [(w, n) for w in ("masked", "multi_transform")
                                           for n in rows(w)])
def test_masked_and_multi_transform(wrapper, name):
    """koopax on the subtree ``w`` only (``optax.masked`` / ``multi_transform``)
    is koopax trained on ``{"w": ...}`` alone, bit for bit; ``b`` gets plain SGD."""
    run = run_of(name)
    for t in range(1, NUM_STEPS + 1):
        p, s = run.at(t, name, wrapper)
        assert_trees_equal(p["w"], run.at(t, name, "w alone")[0]["w"])
        assert_trees_equal(p["b"], run.at(t, name, "b alone")[0]["b"])
    inner = s[1].inner_state if wrapper == "masked" else s.inner_states["koopax"].inner_state[1]
    alone = _koopax(run.at(NUM_STEPS, name, "w alone")[1])
    assert_trees_equal(jax.tree.leaves(inner), jax.tree.leaves(alone))
    assert CONFIGS[name].ran(alone)


@pytest.mark.parametrize("name", rows("apply_if_finite"))
def test_apply_if_finite_skips_a_nan_step(name):
    run = run_of(name)
    before = run.at(POISON_AT, name, "apply_if_finite")
    after = run.at(POISON_AT + 1, name, "apply_if_finite")
    assert_trees_equal(after[0], before[0])                       # the step was skipped
    assert_trees_equal(after[1].inner_state, before[1].inner_state)
    _, last = run.at(NUM_STEPS, name, "apply_if_finite")
    assert int(last.total_notfinite) == 1
    assert _finite(last.inner_state)
    # ... and the run goes on as the plain one, one step late, bit for bit.
    for t in range(POISON_AT, NUM_STEPS):
        assert_trees_equal(run.at(t + 1, name, "apply_if_finite")[0], run.at(t, name, "plain")[0])
    assert_trees_equal(last.inner_state, run.at(NUM_STEPS - 1, name, "plain")[1])


def _sharded_group(name, axes):
    """The rows whose 8-device runs share one compiled step with ``name``'s."""
    wanted = "explicit_axes" if axes == "explicit" else "auto_axes"
    return tuple(n for n in rows("sharded") if getattr(CONFIGS[n], wanted))


@functools.cache
def _sharded_run(names, axes):
    """The plain chains of ``names`` on 8 devices (``w`` split by columns,
    ``b`` by rows), one compiled step for them all."""
    axis_type = AxisType.Explicit if axes == "explicit" else AxisType.Auto
    mesh = jax.make_mesh((8,), ("x",), axis_types=(axis_type,))
    chains = {n: optax.chain(optax.sgd(LR), CONFIGS[n].make()) for n in names}
    steps = {n: _chain_step(c) for n, c in chains.items()}
    spec = {"w": P(None, "x"), "b": P("x")}
    with jax.set_mesh(mesh):
        p = jax.device_put(init_params(), {k: NamedSharding(mesh, s) for k, s in spec.items()})
        carry = {n: (p, c.init(p)) for n, c in chains.items()}
        # Under Auto axes XLA picks the output shardings; pinning them to the
        # inputs' keeps one compilation (Explicit axes carry them in the types).
        shardings = jax.tree.map(lambda x: x.sharding, carry)
        pinned = {} if axes == "explicit" else dict(out_shardings=shardings)
        step = jax.jit(lambda carry, i: {n: steps[n](*carry[n], i)[:2] for n in names}, **pinned)
        with count_compilations() as compiled:
            for i in range(NUM_STEPS):
                carry = step(carry, jnp.int32(i))
                jax.block_until_ready(carry)    # CPU collectives can hang with async dispatch
    return carry, compiled[0]


_SHARDED = [pytest.param(n, "explicit", id=f"{n}-explicit") for n in rows("sharded")
            if CONFIGS[n].explicit_axes]
_SHARDED += [pytest.param(n, "auto", id=f"{n}-auto") for n in rows("sharded")
             if CONFIGS[n].auto_axes]


@pytest.mark.parametrize("name, axes", _SHARDED)
def test_sharded_equals_unsharded(name, axes):
    """On 8 devices the run is the single-device one to float32 round-off, and
    the parameters stay sharded."""
    assert len(jax.devices()) == 8, "conftest sets 8 virtual CPU devices"
    carry, compilations = _sharded_run(_sharded_group(name, axes), axes)
    p, s = carry[name]
    p_ref, s_ref = run_of(name).at(NUM_STEPS, name, "plain")
    assert compilations == 1
    assert p["w"].sharding.spec == P(None, "x") and p["b"].sharding.spec == P("x")
    assert CONFIGS[name].ran(_koopax(s))
    assert_trees_close(p, p_ref, rtol=2e-5, atol=2e-6)
    for field in ("num_stable", "num_refreshes", "num_kept", "num_jumps", "num_rollbacks"):
        if hasattr(_koopax(s_ref), field):
            assert int(getattr(_koopax(s), field)) == int(getattr(_koopax(s_ref), field)), field


@functools.cache
def _orbax_round_trip(family, directory):
    """A family's whole carry (every variant, the wrappers' states included)
    saved after SAVE_AT steps, restored into its init's structure, and
    stepped to the end: ``(restored, continued, compilations)``."""
    import orbax.checkpoint as ocp

    run, bundle = _run(family), _bundle(family)
    keys = list(bundle.variants)                  # orbax wants string keys
    saved = {f"v{j}": run.history[SAVE_AT][k] for j, k in enumerate(keys)}
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(directory / family, saved)
    ckpt.wait_until_finished()
    target = jax.eval_shape(lambda: {f"v{j}": bundle.variants[k].init(0)
                                     for j, k in enumerate(keys)})
    restored = ckpt.restore(directory / family, target)
    restored = {k: restored[f"v{j}"] for j, k in enumerate(keys)}
    carry = restored
    with count_compilations() as compiled:
        for i in range(SAVE_AT, NUM_STEPS):
            carry, _ = bundle.step(carry, jnp.int32(i))
    return restored, carry, compiled[0]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return tmp_path_factory.mktemp("checkpoints")


@pytest.mark.parametrize("name", rows("orbax"))
def test_orbax_round_trip_continues_bit_identically(name, checkpoints):
    """Saved mid-run and restored into its init's structure, every variant's
    state continues bit for bit, without a recompilation."""
    pytest.importorskip("orbax.checkpoint")
    family = CONFIGS[name].family
    restored, continued, compilations = _orbax_round_trip(family, checkpoints)
    run = _run(family)
    keys = [k for k in _bundle(family).variants if k[0] == name]
    assert_trees_equal({k: restored[k] for k in keys}, {k: run.history[SAVE_AT][k] for k in keys})
    assert_trees_equal({k: continued[k] for k in keys}, {k: run.history[-1][k] for k in keys})
    assert compilations == 0 and _bundle(family).traces[0] == 1


@pytest.mark.parametrize("name", rows("vmap"))
def test_vmap_over_seeds(name):
    """``jax.vmap`` over two seeds: each lane is that seed's own run."""
    lanes = [run_of(name, seed) for seed in (0, 1)]
    for t in range(1, NUM_STEPS + 1):
        p, s = run_of(name).at(t, name, "vmap")
        for lane, run in enumerate(lanes):
            p_ref, s_ref = run.at(t, name, "plain")
            assert_trees_close(jax.tree.map(lambda x: np.asarray(x)[lane], p), p_ref,
                               rtol=1e-5, atol=1e-6)
    assert_trees_close(jax.tree.map(lambda x: np.asarray(x)[1], _koopax(s)), _koopax(s_ref),
                       rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, limit", LIMITS, ids=[f"{n}-{lim}" for n, lim in LIMITS])
def test_identity_limit(name, limit):
    """alpha=0, a mask that keeps nothing, criteria that reject everything:
    exactly the base update at every call. PDT accepting everything: exactly
    the unmasked DMD jumps of dmd_prediction."""
    run = run_of(name)
    kind = CONFIGS[name].limits[limit][0]
    key = f"limit {limit}"
    if kind == "per_call":
        for aux in run.aux:
            assert_trees_equal(aux[(name, key)]["out"], aux[(name, key)]["base"])
        d = koopax.state_diagnostics(run.at(NUM_STEPS, name, key)[1])
        if "num_refreshes" in d:
            assert int(d["num_refreshes"]) > 0      # the window filled: KGA had its chance
        if "num_kept" in d:
            assert bool(run.at(NUM_STEPS, name, key)[1].columns.compact)
            assert int(d["num_kept"]) == 0
        if "num_predictions" in d:
            assert int(d["num_predictions"]) > 0 and int(d["num_jumps"]) == 0
    else:
        for t in range(NUM_STEPS + 1):
            assert_trees_equal(run.at(t, name, key)[0], run.at(t, name, f"{key} reference")[0])
        s, ref = (_koopax(run.at(NUM_STEPS, name, k)[1]) for k in (key, f"{key} reference"))
        assert int(s.stats.num_jumps) == int(ref.stats.num_jumps) > 0
