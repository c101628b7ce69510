"""The snapshot clock: steps, or the integrated learning rate under a schedule.

On a quadratic under a cosine schedule the answer is known: gradient flow in
``s = sum eta`` gives ``w(s) = exp(-h s) w0``, so a DMD of snapshots at equal
``ds`` sees ``lambda = exp(-h ds)`` whatever the rate, and the end of the run
is ``w(S)``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import koopax
from koopax._src import clock as clock_lib


def snapshot_steps(c, steps):
    state, taken = c.init(), []
    for t in range(steps):
        due = bool(c.due(t, state))
        taken += [t] if due else []
        state = c.advance(t, state, due)
    return taken


def test_a_step_clock_counts_steps_with_or_without_a_constant_rate():
    for lr in (None, 0.3):
        c = clock_lib.make_clock(7, learning_rate=lr)
        assert not c.counts_rate and snapshot_steps(c, 30) == [0, 7, 14, 21, 28]


def test_a_rate_clock_takes_snapshots_at_equal_integrated_rate():
    """Rate 0.1 for 100 steps then 0.05: a period of ``10 * 0.1`` is 10 steps, then 20;
    a period ends on the step before each snapshot, and only there."""
    sched = optax.piecewise_constant_schedule(0.1, {100: 0.5})
    c = clock_lib.make_clock(10, learning_rate=sched, total_steps=200)
    assert c.period == pytest.approx(1.0)
    taken = snapshot_steps(c, 200)
    assert taken == list(range(0, 100, 10)) + list(range(100, 200, 20))
    assert c.total_time == pytest.approx(15.0)
    state, ends = c.init(), []
    for t in range(200):
        ends += [t] if bool(c.ends_period(t, state)) else []
        state = c.advance(t, state, c.due(t, state))
    assert ends == [t - 1 for t in taken[1:]] + [199]


def test_warmup_and_decay_space_snapshots_out():
    sched = optax.warmup_cosine_decay_schedule(0.0, 0.1, 20, 400, end_value=0.0)
    taken = snapshot_steps(clock_lib.make_clock(10, learning_rate=sched, total_steps=400), 400)
    gaps = np.diff(taken)
    assert gaps[0] > 10 and min(gaps) == 10 and gaps[-1] > 30


@pytest.mark.parametrize("rate", [None, "cosine"])
def test_auto_fills_the_window_within_a_tenth_of_the_run(rate):
    total, h = 1000, 6
    sched = None if rate is None else optax.warmup_cosine_decay_schedule(0.0, 0.1, 50, total)
    c = clock_lib.make_clock("auto", learning_rate=sched, total_steps=total, num_snapshots=h)
    taken = snapshot_steps(c, total)
    assert 0.05 * total <= taken[h - 1] <= 0.13 * total


@pytest.mark.parametrize("kwargs, match", [
    (dict(snapshot_every=10, learning_rate=optax.cosine_decay_schedule(0.1, 10)), "total_steps"),
    (dict(snapshot_every="auto", total_steps=100), "num_snapshots"),
    (dict(snapshot_every="auto"), "total_steps"),
    (dict(snapshot_every="often", total_steps=100, num_snapshots=4), "snapshot_every"),
    (dict(snapshot_every=10, learning_rate="0.1"), "learning_rate"),
    (dict(snapshot_every=10, learning_rate=lambda t: 0.0 * t, total_steps=5), "learning_rate"),
    (dict(snapshot_every=0), "snapshot_every"),
])
def test_bad_clock_arguments_name_themselves(kwargs, match):
    with pytest.raises(ValueError, match=match):
        clock_lib.make_clock(**kwargs)


H = 1.0             # the curvature of every coordinate: one mode
TOTAL = 400
SCHEDULE = optax.cosine_decay_schedule(0.1, TOTAL)        # S = 20: the end is ~exp(-20) w0
SHORT = optax.cosine_decay_schedule(0.01, TOTAL)          # S = 2: the end is exp(-2) w0


def _quadratic_run(tx, steps=TOTAL, schedule=SCHEDULE):
    params = {"w": jnp.linspace(1.0, 2.0, 4)}
    tx = optax.chain(optax.sgd(schedule), tx)
    state = tx.init(params)

    @jax.jit
    def step(p, s):
        value, g = jax.value_and_grad(lambda q: 0.5 * H * jnp.sum(q["w"] ** 2))(p)
        u, s = tx.update(g, s, p, value=value)
        return optax.apply_updates(p, u), s

    history = []
    for _ in range(steps):
        params, state = step(params, state)
        history.append((params, state[1]))
    return history


def test_under_a_cosine_schedule_the_rate_clock_sees_the_flow_not_the_schedule():
    """KGA observing (alpha = 0): with the rate clock its eigenvalue is
    ``exp(-h ds)`` early and late in the schedule; counted in steps it follows
    the decaying rate towards 1."""
    kw = dict(alpha=0.0, num_snapshots=4, rollback=False)
    rate = _quadratic_run(koopax.kga(snapshot_every=10, learning_rate=SCHEDULE,
                                     total_steps=TOTAL, **kw))
    steps = _quadratic_run(koopax.kga(snapshot_every=10, **kw))
    expected = np.exp(-H * 10 * 0.1)            # ds = snapshot_every * peak rate

    def eigenvalue(history, t):
        return float(history[t][1].operator.eigenvalues[0, 0].real)

    for t in (60, 200, 300):
        assert eigenvalue(rate, t) == pytest.approx(expected, abs=0.03)
    assert eigenvalue(steps, 60) == pytest.approx(expected, abs=0.05)
    assert eigenvalue(steps, 300) > expected + 0.25


def _first_jump(history):
    return next(p["w"] for p, s in history if int(s.stats.num_jumps) == 1)


def test_a_prediction_never_reaches_past_the_end_of_the_schedule():
    """PDT with a horizon longer than the run (30 periods of 10 steps at the peak
    rate), given the run's length: its first jump lands on the weights the base
    reaches at the end of the schedule, ``exp(-h S) w0``; counting steps, without
    the run's length, the same jump goes far past them (towards the minimum, 0)."""
    final = np.asarray(_quadratic_run(optax.identity(), schedule=SHORT)[-1][0]["w"])
    kw = dict(horizon=30, num_snapshots=5, start=4, criteria="none", rollback=False)
    capped = _quadratic_run(koopax.pdt(snapshot_every=10, learning_rate=SHORT,
                                       total_steps=TOTAL, **kw), 120, SHORT)
    uncapped = _quadratic_run(koopax.pdt(snapshot_every=10, **kw), 120, SHORT)
    # Within 25 %: the DMD's per-period decay is fitted from four SGD increments
    # (about 0.1 of integrated rate each, to within half a step).
    np.testing.assert_allclose(np.asarray(_first_jump(capped)), final, rtol=0.25)
    assert float(np.max(np.asarray(_first_jump(uncapped)) / final)) < 0.6
