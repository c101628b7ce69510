"""The method registry: the one place that maps a method name to a koopax transformation.

A *method* is a koopax transformation chained after a base optimizer
(``optax.chain(base, method)``); ``'control'`` is the one that is not koopax: the
no-DMD control :func:`examples.controls.period_extrapolation`. Every entry of
:data:`METHODS` names its constructor and the options it accepts: the constructor's own keyword
arguments (read from its signature, so a new koopax argument such as
``apply_every`` is accepted as soon as the library has it) plus the options the
harness reads itself (``kwm_*`` for the mask of ``kga_kwm``). Options are
scoped to their method: ``options_for('kga', {'rank': 3})`` reaches
``koopax.kga`` only, and an option a method does not accept is an error naming
it and the method.

``snapshot_every`` left unset (``None``) is the number of steps per epoch: one
snapshot per epoch (KGA-Epoch), the harness's cadence for every method.

Also here: the base optimizers and schedules (:func:`make_base_optimizer`), the
parameters a schedule-free base is evaluated at (:func:`eval_params`) and the state
diagnostics the harness reads after each epoch (:func:`read_diagnostics`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import optax

import koopax
from examples.controls import period_extrapolation

__all__ = [
    "BASE_OPTIMIZERS",
    "DIAGNOSTIC_KEYS",
    "METHODS",
    "SCHEDULES",
    "SCHEDULE_FREE",
    "Method",
    "build_optimizer",
    "eval_params",
    "make_base_optimizer",
    "options_for",
    "read_diagnostics",
    "register_method",
    "schedule_free_state",
    "warmup_steps",
]

#: The schedule-free base (``optax.contrib.schedule_free_adamw``).
SCHEDULE_FREE = "schedule_free_adamw"
BASE_OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", SCHEDULE_FREE)
SCHEDULES = ("constant", "cosine", "warmup_cosine")
#: Fraction of the run spent warming up: the ``'warmup_cosine'`` schedule's linear
#: ramp, and schedule-free AdamW's own warmup under that schedule.
WARMUP_FRACTION = 0.05
#: ``optax.adamw``'s default decoupled weight decay, given to schedule-free AdamW too.
ADAMW_WEIGHT_DECAY = 1e-4


# --------------------------------------------------------------------------- checks
def check_positive(value, name, *, integer=False):
    """``value`` if it is a positive int (``integer``) or a finite number > 0."""
    if integer:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0
        kind = "a positive int"
    else:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) \
            and math.isfinite(value) and value > 0
        kind = "a finite number > 0"
    if not ok:
        raise ValueError(f"{name} must be {kind}; got {value!r}.")
    return value


# ----------------------------------------------------------------------- base optimizers
def warmup_steps(total_steps: int) -> int:
    """Steps of warmup of a ``total_steps`` run: :data:`WARMUP_FRACTION` of it, at least 1."""
    check_positive(total_steps, "total_steps", integer=True)
    return max(1, round(WARMUP_FRACTION * total_steps))


def rate_schedule(learning_rate: float, schedule: str = "constant",
                  total_steps: int | None = None):
    """The base's learning rate: a number (``'constant'``) or an optax schedule.

    See :func:`make_base_optimizer` for the schedules; koopax methods built
    with ``clock='rate'`` receive this schedule as their ``learning_rate``.
    """
    check_positive(learning_rate, "learning_rate")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}; got {schedule!r}.")
    if schedule == "constant":
        return learning_rate
    if total_steps is None:
        raise ValueError(f"total_steps is required with schedule={schedule!r}.")
    check_positive(total_steps, "total_steps", integer=True)
    if schedule == "cosine":
        return optax.cosine_decay_schedule(learning_rate, total_steps)
    return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps(total_steps),
                                              total_steps, end_value=0.0)


def make_base_optimizer(name: str, learning_rate: float, *, schedule: str = "constant",
                        total_steps: int | None = None) -> optax.GradientTransformation:
    """The base optimizer: ``'sgd'``, ``'momentum'`` (0.9), ``'adam'``, ``'adamw'`` or
    ``'schedule_free_adamw'``.

    Args:
      name: one of :data:`BASE_OPTIMIZERS`.
      learning_rate: peak learning rate (> 0).
      schedule: ``'constant'``; ``'cosine'`` (``optax.cosine_decay_schedule``
        from ``learning_rate`` to 0 over ``total_steps``); ``'warmup_cosine'``
        (``optax.warmup_cosine_decay_schedule``: linear from 0 to
        ``learning_rate`` over the first :data:`WARMUP_FRACTION` (5 %) of
        ``total_steps``, then a cosine to ``end_value=0`` at the last step, so
        the run ends at rate 0 like ``'cosine'``).
      total_steps: number of training steps; required by the cosine schedules
        (and by ``'schedule_free_adamw'`` under ``'warmup_cosine'``).

    ``'schedule_free_adamw'`` is ``optax.contrib.schedule_free_adamw`` at the
    constant rate ``learning_rate`` (schedule-free methods replace the
    schedule: ``schedule`` does not shape its rate), with optax.adamw's weight
    decay (:data:`ADAMW_WEIGHT_DECAY`) and its own warmup: the same 5 % of
    ``total_steps`` under ``'warmup_cosine'``, none otherwise. Evaluate it at
    :func:`eval_params`, not at the parameters it trains.
    """
    if name not in BASE_OPTIMIZERS:
        raise ValueError(f"name must be one of {BASE_OPTIMIZERS}; got {name!r}.")
    check_positive(learning_rate, "learning_rate")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}; got {schedule!r}.")
    lr = rate_schedule(learning_rate, schedule, total_steps)
    if name == SCHEDULE_FREE:
        # No warmup is ``None``: optax 0.2.8 turns ``warmup_steps=0`` into a schedule that
        # stays at 0 (the optimizer never moves).
        warmup = warmup_steps(total_steps) if schedule == "warmup_cosine" else None
        return optax.contrib.schedule_free_adamw(learning_rate, warmup_steps=warmup,
                                                 weight_decay=ADAMW_WEIGHT_DECAY)
    if name == "sgd":
        return optax.sgd(lr)
    if name == "momentum":
        return optax.sgd(lr, momentum=0.9)
    if name == "adam":
        return optax.adam(lr)
    return optax.adamw(lr)


def schedule_free_state(opt_state) -> optax.contrib.ScheduleFreeState | None:
    """The ``ScheduleFreeState`` inside ``opt_state`` (the base's own, or the base's
    of ``chain(base, method)``, at any depth of tuples), else ``None``."""
    if isinstance(opt_state, optax.contrib.ScheduleFreeState):
        return opt_state
    if isinstance(opt_state, (tuple, list)):
        for sub in opt_state:
            found = schedule_free_state(sub)
            if found is not None:
                return found
    return None


def eval_params(opt_state, params):
    """The parameters to evaluate: ``optax.contrib.schedule_free_eval_params`` when
    ``opt_state`` holds a schedule-free state (:func:`schedule_free_state`; with a
    method chained after it, the method's changes to ``params`` are included), else
    ``params`` themselves."""
    state = schedule_free_state(opt_state)
    return params if state is None else optax.contrib.schedule_free_eval_params(state, params)


# ------------------------------------------------------------------ koopax constructors
# Every koopax constructor call of the harness is in this section.
def _kga(extras):
    del extras
    return koopax.kga


def _efficient_kga(extras):
    del extras
    return koopax.efficient_kga


def _kwm_mask(extras):
    # KWM: a weight whose remaining transient movement stays below ``kwm_epsilon``
    # times the rms per-snapshot movement (relative threshold) over the window is
    # dropped; at most ``kwm_capacity`` of the weights stay in the compact buffers.
    # The paper's absolute threshold does not transfer across tasks: 1e-2 masked
    # 91 % of the MNIST-1D MLP (sgd 0.5) and 100 % of the z=x^2+y^2 MLP (sgd
    # 2e-3, acceleration lost). Relative thresholds, 2 seeds, masked fraction at
    # the end / epochs ratio to SGD's best loss (kga alone: 0.85 MNIST-1D, 0.65
    # quadratic): 0.1 -> MNIST-1D 0.53 / 0.85, quadratic 0.95 / not reached;
    # 0.03 -> MNIST-1D 0.50 / 0.88, quadratic 0.63 / 0.70. 0.03 is taken.
    return koopax.masks.kwm(extras["kwm_epsilon"], window=extras["kwm_window"],
                            relative=extras["kwm_relative"], every=extras["kwm_every"],
                            capacity=extras["kwm_capacity"], margin=extras["kwm_margin"],
                            rcond=extras["kwm_rcond"],
                            roundoff_margin=extras["kwm_roundoff_margin"])


def _masked(make_mask):
    """``masked_kga`` with the mask ``make_mask()``, made when the method is built (so the
    registry reads the options of a method whose mask needs an option it was not given)."""
    @functools.wraps(koopax.masked_kga)
    def factory(*args, **kwargs):
        return koopax.masked_kga(make_mask(), *args, **kwargs)
    return factory


def _kga_kwm(extras):
    return _masked(lambda: _kwm_mask(extras))


def _kga_norm(extras):
    # The KGA paper's norm mask: a weight with |w| below ``norm_threshold`` is dropped.
    return _masked(lambda: koopax.masks.norm(extras["norm_threshold"],
                                             capacity=extras["norm_capacity"]))


def _kga_delta(extras):
    # The KGA paper's delta mask: a weight that moved less than ``delta_threshold`` per
    # snapshot over the last ``delta_window`` snapshots is dropped.
    return _masked(lambda: koopax.masks.delta(extras["delta_threshold"],
                                              window=extras["delta_window"],
                                              capacity=extras["delta_capacity"]))


def _pdt(extras):
    del extras
    return koopax.pdt


def _control(extras):
    del extras
    return period_extrapolation


def _dmd_prediction(mode):
    def constructor(extras):
        del extras
        return functools.partial(koopax.dmd_prediction, mode=mode)
    return constructor


# --------------------------------------------------------------------------- registry
#: Arguments the registry fixes itself: not options of any method.
FIXED_ARGUMENTS = frozenset({"mask", "mode"})
#: An option value that :meth:`Method.build` replaces with the steps per epoch.
EPOCH = "epoch"


@dataclasses.dataclass(frozen=True)
class Method:
    """A registry entry.

    Attributes:
      name: the method's name (``--methods``, ``--set NAME.KEY=VALUE``).
      description: one line, shown by ``--help``.
      constructor: ``constructor(extras) -> factory``: the koopax factory whose
        keyword arguments are the method's options; ``extras`` are the values
        of the options in ``extras`` (e.g. the mask's).
      defaults: the harness's defaults, where they differ from the library's.
      extras: options read by ``constructor`` rather than passed to the
        factory, with their defaults.
      required: options without a default (``None`` in ``extras``): a build
        without them is an error naming them.
    """

    name: str
    description: str
    constructor: Callable[[Mapping[str, Any]], Callable[..., Any]]
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    required: tuple[str, ...] = ()

    def factory(self, extras: Mapping[str, Any] | None = None):
        """The koopax factory (with ``extras`` defaulted)."""
        return self.constructor({**self.extras, **(extras or {})})

    def options(self) -> frozenset[str]:
        """Every option this method accepts."""
        try:
            params = inspect.signature(self.factory()).parameters.values()
        except (TypeError, ValueError):  # pragma: no cover - not introspectable
            params = ()
        names = {p.name for p in params
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        return frozenset((names - FIXED_ARGUMENTS) | set(self.extras))

    def build(self, options: Mapping[str, Any], steps_per_epoch: int, *,
              learning_rate=None, total_steps: int | None = None):
        """The transformation with ``options`` over the defaults (see :func:`options_for`).

        ``learning_rate`` (the base's number or schedule) and ``total_steps``
        reach a koopax method built with the option ``clock='rate'`` (snapshots
        at equal increments of the integrated rate; :func:`koopax.kga`). Without
        them the default clock falls back to ``'steps'``; an explicit
        ``clock='rate'`` raises. An option given as ``'epoch'`` (e.g.
        ``apply_every='epoch'``) is ``steps_per_epoch``.
        """
        check_positive(steps_per_epoch, "steps_per_epoch", integer=True)
        opts = {k: steps_per_epoch if isinstance(v, str) and v == EPOCH else v
                for k, v in options_for(self.name, options).items()}
        extras = {k: opts.pop(k) for k in self.extras}
        if opts.get("snapshot_every") is None and "snapshot_every" in self.options():
            opts["snapshot_every"] = steps_per_epoch
        clock = extras.pop("clock", None)
        if clock is not None and clock not in CLOCKS:
            raise ValueError(f"{self.name}: clock must be one of {CLOCKS}; got {clock!r}.")
        unknown_rate = learning_rate is None or total_steps is None
        if clock == "rate" and unknown_rate and "clock" not in (options or {}):
            clock = "steps"  # the default clock, where the caller knows no rate
        if clock == "rate":
            if unknown_rate:
                raise ValueError(f"{self.name}: clock='rate' needs the base's learning_rate "
                                 "and total_steps.")
            opts.setdefault("learning_rate", learning_rate)
            opts.setdefault("total_steps", total_steps)
        return self.factory(extras)(**opts)


#: The harness runs the KGA family with the library's own defaults
#: (``benchmarks/kga_defaults.py`` chose them against the tuned base).
KGA_DEFAULTS: dict = {name: inspect.signature(koopax.kga).parameters[name].default
                      for name in ("alpha", "num_snapshots")}
KWM_EXTRAS = dict(kwm_epsilon=0.03, kwm_window=3, kwm_relative=True, kwm_every=1,
                  kwm_capacity=0.5,
                  **{f"kwm_{name}": inspect.signature(koopax.masks.kwm).parameters[name].default
                     for name in ("margin", "rcond", "roundoff_margin")})
#: KWM with PDT's floor (``masks.kwm(rcond=0.1, margin=2)``): the same weights on 8
#: devices as on 1 too, but it drops real weak modes (``masks.kwm``'s ``rcond``).
KWM_FLOOR_EXTRAS = {**KWM_EXTRAS, "kwm_rcond": 0.1, "kwm_margin": 2.0}
#: KWM with the floor relative to ``sigma_1`` only (``roundoff_margin=0``: before the
#: round-off floor of ``masks.kwm``).
KWM_SIGMA1_EXTRAS = {**KWM_EXTRAS, "kwm_roundoff_margin": 0.0}
#: The norm and delta masks have no default threshold (the KGA paper gives none, and
#: absolute thresholds do not transfer between models); capacity 1 is the library's.
NORM_EXTRAS = dict(norm_threshold=None, norm_capacity=1.0)
DELTA_EXTRAS = dict(delta_threshold=None, delta_window=5, delta_capacity=1.0)
#: ``clock``: ``'steps'`` (a snapshot every ``snapshot_every`` steps, the run's length
#: unknown to the method: the library's own default, and the harness's for every
#: method) or ``'rate'`` (the base's learning rate, a number or a schedule, and the
#: run's length reach the method: under a schedule snapshots come at equal increments
#: of the integrated learning rate, and no correction or prediction reaches past the
#: run's end). Under cosine decay over 30 epochs the rate clock takes 10 snapshots,
#: none after epoch 19, and both families reached the tuned base's best loss in fewer
#: seeds with it: KGA on MNIST-1D CNN + momentum 1/5 against 3/5, MNIST-1D MLP + Adam
#: 2/5 against 5/5; PDT, over the 12 cosine pairs, every seed in 7 pairs against 11
#: (54/60 seeds against 58/60), final loss 0.70 against 0.61 of the base's (BENCHMARKS.md,
#: "damping" and "PDT's clock under cosine"; ``python -m benchmarks clock``).
CLOCKS = ("steps", "rate")
CLOCK_EXTRAS = dict(clock="steps")

METHODS: dict[str, Method] = {}


def register_method(method: Method) -> None:
    """Adds (or replaces) a method of the registry."""
    if not isinstance(method, Method):
        raise ValueError(f"method must be an examples.methods.Method; got {method!r}.")
    name = method.name
    if not isinstance(name, str) or not name.isidentifier() or name == "base":
        raise ValueError(f"name must be an identifier other than 'base'; got {name!r}.")
    METHODS[name] = method


register_method(Method("kga", "KGA-Epoch (koopax.kga, a snapshot every epoch by default)",
                       _kga, KGA_DEFAULTS, CLOCK_EXTRAS))
register_method(Method("kga_efficient", "Efficient-KGA (koopax.efficient_kga)",
                       _efficient_kga, KGA_DEFAULTS, CLOCK_EXTRAS))
register_method(Method("kga_kwm", "KGA with the Koopman weight mask "
                       "(koopax.masked_kga(koopax.masks.kwm(...)))",
                       _kga_kwm, KGA_DEFAULTS, {**KWM_EXTRAS, **CLOCK_EXTRAS}))
register_method(Method("kga_kwm_floor", "KGA with the Koopman weight mask at PDT's floor "
                       "(koopax.masks.kwm(..., rcond=0.1, margin=2))",
                       _kga_kwm, KGA_DEFAULTS, {**KWM_FLOOR_EXTRAS, **CLOCK_EXTRAS}))
register_method(Method("kga_kwm_sigma1", "KGA with the Koopman weight mask, its floor "
                       "relative to sigma_1 only (koopax.masks.kwm(..., roundoff_margin=0))",
                       _kga_kwm, KGA_DEFAULTS, {**KWM_SIGMA1_EXTRAS, **CLOCK_EXTRAS}))
register_method(Method("kga_norm", "KGA with the norm mask "
                       "(koopax.masked_kga(koopax.masks.norm(norm_threshold, ...)))",
                       _kga_norm, KGA_DEFAULTS, {**NORM_EXTRAS, **CLOCK_EXTRAS},
                       required=("norm_threshold",)))
register_method(Method("kga_delta", "KGA with the delta mask "
                       "(koopax.masked_kga(koopax.masks.delta(delta_threshold, ...)))",
                       _kga_delta, KGA_DEFAULTS, {**DELTA_EXTRAS, **CLOCK_EXTRAS},
                       required=("delta_threshold",)))
register_method(Method("pdt", "PDT: masked DMD weight prediction with rollback (koopax.pdt)",
                       _pdt, extras=CLOCK_EXTRAS))
register_method(Method("kga_layer", "KGA with one DMD per layer (koopax.kga(blocks='layer'))",
                       _kga, {**KGA_DEFAULTS, "blocks": "layer"}, CLOCK_EXTRAS))
register_method(Method("pdt_layer", "PDT with one DMD per layer (koopax.pdt(blocks='layer'))",
                       _pdt, {"blocks": "layer"}, CLOCK_EXTRAS))
register_method(Method("dogra", "unmasked per-layer DMD jumps "
                       "(koopax.dmd_prediction(mode='dogra'))", _dmd_prediction("dogra")))
register_method(Method("tano", "DMD jumps until the loss rises "
                       "(koopax.dmd_prediction(mode='tano'))", _dmd_prediction("tano")))

register_method(Method("control", "no-DMD control: every snapshot period, add beta times "
                       "the period's displacement (examples.controls.period_extrapolation)",
                       _control))

#: The methods whose ``alpha`` / ``num_snapshots`` the CLI's ``--alpha`` and
#: ``--num-snapshots`` set.
KGA_FAMILY = ("kga", "kga_efficient", "kga_kwm", "kga_norm", "kga_delta", "kga_layer")


def method(name: str) -> Method:
    """The registry entry ``name``; ``ValueError`` listing the registered ones."""
    if name not in METHODS:
        raise ValueError(f"method must be 'base' or one of {sorted(METHODS)}; got {name!r}.")
    return METHODS[name]


def options_for(name: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The options of method ``name``: its defaults, then ``options``.

    Raises:
      ValueError: naming the method and every key it does not accept, or the
        required options (:attr:`Method.required`) it was not given.
    """
    entry = method(name)
    options = dict(options or {})
    unknown = sorted(set(options) - entry.options())
    if unknown:
        raise ValueError(
            f"{name}: unknown option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; {name} accepts {sorted(entry.options())}.")
    out = {**entry.defaults, **entry.extras, **options}
    missing = [k for k in entry.required if out.get(k) is None]
    if missing:
        raise ValueError(f"{name}: needs the option{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(map(repr, missing))} (no default; e.g. "
                         f"--set {name}.{missing[0]}=VALUE).")
    return out


def build_optimizer(name: str, base: optax.GradientTransformation,
                    options: Mapping[str, Any] | None, steps_per_epoch: int, *,
                    learning_rate=None, total_steps: int | None = None
                    ) -> optax.GradientTransformationExtraArgs:
    """``base`` alone (``name='base'``) or ``optax.chain(base, <method name>)``.

    ``learning_rate`` and ``total_steps`` go to :meth:`Method.build`. The
    result always accepts extra keyword arguments (``value=loss``).
    """
    check_positive(steps_per_epoch, "steps_per_epoch", integer=True)
    if name == "base":
        if options:
            raise ValueError(f"base: takes no options; got {sorted(options)}.")
        return optax.with_extra_args_support(base)
    return optax.chain(base, method(name).build(options or {}, steps_per_epoch,
                                                learning_rate=learning_rate,
                                                total_steps=total_steps))


# ----------------------------------------------------------------------- diagnostics
#: The diagnostics the harness records after each epoch: the name in the results ->
#: the name in :func:`koopax.diagnostics`.
DIAGNOSTIC_KEYS = {
    "eigenvalues": "eigenvalues",
    "rank": "rank",
    "num_stable": "num_stable",
    "num_refreshes": "num_refreshes",
    "num_nonfinite": "num_nonfinite",
    # PDT / dogra / tano: fraction of the weights whose prediction was accepted
    # at the last jump (1 = every weight jumped).
    "accepted_ratio": "accepted_ratio",
    # KGA masks: fraction of the weights excluded from acceleration (0 = none).
    "masked_fraction": "masked_fraction",
    # KGA masks: weights accelerated (in the compact buffers; 0 before the first
    # decision, when every weight is) and weights the criterion kept that no slot of
    # the static capacity could hold (not accelerated either, not in masked_fraction).
    "num_kept": "num_kept",
    "num_overflow": "num_overflow",
    "jumps": "num_jumps",
    "rollbacks": "num_rollbacks",
}


#: Fields of a koopax state that :func:`koopax.state_diagnostics` does not report, by
#: attribute path on the state: KGA's safety-net rollbacks and whether a masked KGA's
#: mask has been applied.
STATE_FIELDS = {"num_rollbacks": ("rollback", "num_rollbacks"),
                "compact": ("columns", "compact")}


def read_diagnostics(opt_state, keys: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The diagnostics of the koopax state inside ``opt_state``, as host values.

    The state is found by type (:func:`koopax.find_states`; no koopax state, e.g.
    the base alone or the no-DMD control: ``{}``) and read with
    :func:`koopax.state_diagnostics`. ``keys`` maps the names returned to
    koopax's names (default :data:`DIAGNOSTIC_KEYS`; absent ones are left out),
    with the fields of :data:`STATE_FIELDS` added where koopax does not report them.
    Complex eigenvalues become ``[[re, im], ...]`` restricted to the DMD rank of
    each block; one-element arrays become scalars.
    """
    keys = DIAGNOSTIC_KEYS if keys is None else keys
    found = koopax.find_states(opt_state)
    if not found:
        return {}
    if len(found) > 1:
        raise ValueError(f"opt_state holds {len(found)} koopax states; the harness reads one.")
    state = found[0][1]
    diag = dict(koopax.state_diagnostics(state))
    for name, path in STATE_FIELDS.items():   # what koopax.state_diagnostics leaves out
        value = functools.reduce(lambda node, attr: getattr(node, attr, None), path, state)
        if value is not None:
            diag.setdefault(name, value)
    out = {key: np.asarray(jax.device_get(diag[name])) for key, name in keys.items()
           if name in diag}
    if "eigenvalues" in out:
        values = out["eigenvalues"]
        groups = values.reshape(-1, values.shape[-1]) if values.ndim else values.reshape(1, 1)
        rank = np.asarray(jax.device_get(diag["rank"]))
        ranks = np.broadcast_to(rank, groups.shape[:1])
        values = np.concatenate([g[: int(r)] for g, r in zip(groups, ranks)])
        out["eigenvalues"] = np.stack([values.real, values.imag], -1).astype(float).tolist()
    for key, value in list(out.items()):
        if isinstance(value, np.ndarray):
            out[key] = (value.item() if value.size == 1
                        else value.astype(float).tolist())
    return out
