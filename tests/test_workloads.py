"""Tests of the 2026 workloads' harness support: the no-DMD control
(examples.controls), the warmup-cosine schedule and the schedule-free base
(examples.methods), step-based batches, the language-model task and extra rows
(examples.train), the validation-loss target (examples.report) and the control's
beta tuning (examples.tune)."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

pytest.importorskip("flax")

from examples import controls, methods, report, train, tune  # noqa: E402


@pytest.mark.parametrize("module", ["examples.controls", "examples.datasets",
                                    "examples.models.transformer", "examples.tune"])
def test_docstring_examples(module):
    import importlib

    mod = importlib.import_module(module)
    tests = [t for t in doctest.DocTestFinder().find(mod, module) if t.examples]
    assert tests
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for t in tests:
        runner.run(t)
    assert runner.summarize(verbose=False).failed == 0


# --------------------------------------------------------------------- the control
def _train_scalar(tx, grads, w0=0.0):
    params = {"w": jnp.float32(w0)}
    state = tx.init(params)
    out = []
    for g in grads:
        updates, state = tx.update({"w": jnp.float32(g)}, state, params, value=jnp.float32(1.0))
        params = optax.apply_updates(params, updates)
        out.append(float(params["w"]))
    return out, state


def test_control_extrapolates_the_optimizers_own_displacement():
    # SGD(1) on gradients -1..-6: the base moves +1, +2, ..., +6. Period 2, beta 0.5:
    # each period ends (1 + beta) x its own updates further than it started.
    tx = optax.chain(optax.sgd(1.0), controls.period_extrapolation(0.5, snapshot_every=2))
    got, state = _train_scalar(tx, [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0])
    expected, w = [], 0.0
    for t, u in enumerate(range(1, 7)):
        if t % 2 == 0:
            start = w
        w += u
        if t % 2 == 1:
            w = start + 1.5 * (w - start)
        expected.append(w)
    assert expected == [1.0, 4.5, 7.5, 15.0, 20.0, 31.5]
    np.testing.assert_allclose(got, expected)
    # The reference is the post-extrapolation weights (pre-extrapolation would give
    # 11.5 + 0.5 * (11.5 - 3) = 15.75 at step 4).
    assert float(state[1].reference["w"]) == 31.5 and int(state[1].count) == 6
    # beta = 0 is the base optimizer.
    base, _ = _train_scalar(optax.sgd(1.0), [-1.0] * 5)
    zero, _ = _train_scalar(optax.chain(optax.sgd(1.0), controls.period_extrapolation(
        0.0, snapshot_every=2)), [-1.0] * 5)
    assert zero == base


def test_control_is_jit_and_scan_safe_and_validates():
    tx = optax.chain(optax.sgd(1.0), controls.period_extrapolation(1.0, snapshot_every=3))
    params = {"w": jnp.zeros(2), "b": (jnp.ones(()),)}

    def step(carry, g):
        p, s = carry
        updates, s = tx.update(jax.tree.map(lambda x: g * jnp.ones_like(x), p), s, p)
        return (optax.apply_updates(p, updates), s), p["w"][0]

    (final, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), -jnp.ones(6)))(params)
    # Two periods of 3 steps of +1, each doubled: 12; tuple containers are fine.
    np.testing.assert_allclose(final["w"], 12.0)
    np.testing.assert_allclose(final["b"][0], 13.0)
    control = controls.period_extrapolation(1.0, snapshot_every=2)
    with pytest.raises(ValueError, match="params"):
        control.update({"w": jnp.ones(2)}, control.init({"w": jnp.ones(2)}))
    for kwargs, name in [(dict(beta=-1.0, snapshot_every=2), "beta"),
                         (dict(beta=float("nan"), snapshot_every=2), "beta"),
                         (dict(beta=1.0, snapshot_every=0), "snapshot_every")]:
        with pytest.raises(ValueError, match=name):
            controls.period_extrapolation(**kwargs)


def test_control_is_registered_with_the_epoch_cadence():
    tx = methods.build_optimizer("control", optax.sgd(1.0), {"beta": 2.0}, 4)
    got, _ = _train_scalar(tx, [-1.0] * 4)
    assert got == [1.0, 2.0, 3.0, 12.0]    # one period of 4 steps, tripled
    with pytest.raises(ValueError, match="control: unknown option 'alpha'"):
        methods.options_for("control", {"alpha": 1.0})


# -------------------------------------------------------------- base optimizers
def test_warmup_cosine_schedule():
    tx = methods.make_base_optimizer("sgd", 0.2, schedule="warmup_cosine", total_steps=100)
    state = tx.init(jnp.zeros(()))
    rates = []
    for _ in range(100):
        u, state = tx.update(-jnp.ones(()), state)
        rates.append(float(u))
    assert methods.warmup_steps(100) == 5 and methods.warmup_steps(3) == 1
    expected = optax.warmup_cosine_decay_schedule(0.0, 0.2, 5, 100, end_value=0.0)
    np.testing.assert_allclose(rates, [float(expected(t)) for t in range(100)], atol=1e-7)
    assert rates[0] == 0.0 and rates[5] == pytest.approx(0.2) and rates[-1] < 1e-3
    with pytest.raises(ValueError, match="total_steps"):
        methods.make_base_optimizer("adam", 0.1, schedule="warmup_cosine")


def test_schedule_free_base_is_evaluated_at_its_averaged_iterate():
    # Warmup under warmup_cosine only (5 % of 40 steps = 2), none otherwise.
    with_warmup = methods.make_base_optimizer("schedule_free_adamw", 0.1,
                                              schedule="warmup_cosine", total_steps=40)
    constant = methods.make_base_optimizer("schedule_free_adamw", 0.1, schedule="constant")
    p = {"w": jnp.ones(2)}
    first = [tx.update({"w": jnp.ones(2)}, tx.init(p), p)[0]["w"] for tx in
             (with_warmup, constant)]
    # The first step: rate 0 in the warmup; the full rate (Adam: -lr sign(g)) without.
    np.testing.assert_allclose(first[0], 0.0)
    np.testing.assert_allclose(first[1], -0.1, rtol=1e-4)

    def grad_fn(params, rest, consts, batch):
        del batch
        g = params["w"] - consts
        return 0.5 * jnp.sum(g ** 2), {"w": g}, rest, jnp.float32(0.0)

    def eval_fn(params, rest, consts, x, y):
        del rest, y
        return 0.5 * jnp.sum((params["w"] - consts) ** 2) * len(x), jnp.float32(0.0)

    task = train.Task("q", {"w": jnp.zeros(2)}, (), jnp.array([1.0, -2.0]), None, 5, grad_fn,
                      eval_fn)
    for name in ("base", "control"):
        runner = train.Runner(task, methods.build_optimizer(name, constant, None, 5))
        runner.run()
        state = methods.schedule_free_state(runner.opt_state)
        assert state is not None   # found alone or inside chain(base, method)
        x = optax.contrib.schedule_free_eval_params(state, runner.params)
        assert not np.allclose(x["w"], runner.params["w"])
        np.testing.assert_allclose(runner.eval_params()["w"], x["w"])
        loss, _ = runner.evaluate(np.zeros((3, 1)), np.zeros(3))
        np.testing.assert_allclose(loss, 0.5 * np.sum((x["w"] - task.consts) ** 2), rtol=1e-6)
    assert methods.schedule_free_state(optax.adam(0.1).init(p)) is None
    assert methods.eval_params(optax.adam(0.1).init(p), p) is p


# ------------------------------------------------------------------------ batches
def test_batch_stream_blocks_span_passes_and_match_epochs():
    x = np.arange(20, dtype=np.float32)[:, None]
    y = np.arange(20, dtype=np.int32)
    passes = [train.epoch_batches(x, y, 4, rng=np.random.default_rng([3, p]))
              for p in range(4)]
    epochs = train.batch_stream(x, y, 4, seed=3)
    for p in range(2):   # steps=None: block e is pass e (the harness's epochs)
        np.testing.assert_array_equal(next(epochs)[1], passes[p][1])
    stream = train.batch_stream(x, y, 4, seed=3, steps=3)
    blocks = [next(stream) for _ in range(5)]   # 15 batches = 3 passes of 5
    assert all(b[0].shape == (3, 4, 1) and b[1].shape == (3, 4) for b in blocks)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in blocks]),
                                  np.concatenate([p[1] for p in passes[:3]]))
    with pytest.raises(ValueError, match="steps"):
        next(train.batch_stream(x, y, 4, seed=0, steps=0))


# ------------------------------------------------------------- the harness, end to end
def _text_config(tmp_path, **changes):
    file = tmp_path / "corpus.txt"
    file.write_text("the quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    config = train.Config(
        dataset="text", data_path=str(file), model="transformer", size="tiny",
        optimizer="adamw", learning_rate=3e-3, schedule="warmup_cosine", batch_size=8,
        epochs=3, steps_per_epoch=5, seeds=1, methods=("control",),
        options={"control": {"beta": 1.0}}, target="test_loss", plots=False, progress=False,
        extra_rows={"again": dict(optimizer="adamw"),
                    "sf": dict(optimizer="schedule_free_adamw", learning_rate=1e-2),
                    "sf+control": dict(optimizer="schedule_free_adamw", learning_rate=1e-2,
                                       method="control")})
    return config.replace(**changes)


def test_language_model_with_steps_extra_rows_and_validation_target(tmp_path):
    results = train.train_and_evaluate(_text_config(tmp_path))
    assert results["names"] == ["base", "control", "again", "sf", "sf+control"]
    assert results["steps_per_epoch"] == 5 and results["dataset"]["task"] == "language_model"
    assert results["dataset"]["name"].startswith("text-") and results["target"] == "test_loss"
    assert results["info"]["sf"]["optimizer"] == "schedule_free_adamw"
    assert results["info"]["sf"]["learning_rate"] == 1e-2
    runs = {n: results["runs"][n][0] for n in results["names"]}
    for run in runs.values():
        assert len(run["train_loss"]) == len(run["test_loss"]) == 3
        assert all(0.0 <= a <= 1.0 for a in run["test_acc"])   # per-token accuracy
    # Same initialisation and batches: an extra row equal to the base is the base.
    assert runs["again"]["train_loss"] == runs["base"]["train_loss"]
    assert runs["again"]["test_loss"] == runs["base"]["test_loss"]
    # The control acts at the end of each 5-step epoch (not in the first's mean loss).
    assert runs["control"]["train_loss"][0] == runs["base"]["train_loss"][0]
    assert runs["control"]["train_loss"][1] != runs["base"]["train_loss"][1]
    summary = results["summary"]
    assert {s["target_on"] for s in summary.values()} == {"test_loss"}
    assert runs["base"]["target"] == min(runs["base"]["test_loss"])
    assert summary["again"]["epochs_ratio"] == 1.0
    assert "epochs->tgt(val)" in report.format_table(summary, task="language_model")


def test_the_sweep_scores_the_validation_loss(tmp_path):
    config = _text_config(tmp_path, methods=(), options={}, extra_rows={}, tune_lr=True,
                          tune_max_steps=1, epochs=2, steps_per_epoch=2)
    results = train.train_and_evaluate(config)
    sweep = results["sweep"]
    assert sweep["learning_rate"] == results["info"]["base"]["learning_rate"]
    base = results["runs"]["base"][0]
    assert sweep["scores"][sweep["learning_rate"]] == pytest.approx(min(base["test_loss"]))


@pytest.mark.parametrize("changes, message", [
    (dict(target="loss"), "target"),
    (dict(steps_per_epoch=0), "steps_per_epoch"),
    (dict(extra_rows={"base": dict(optimizer="adam")}), "taken"),
    (dict(extra_rows={"r": dict(optimizer="lion")}), "optimizer"),
    (dict(extra_rows={"r": dict(optimizer="adam", lr=1.0)}), "keys"),
    (dict(extra_rows={"r": dict(optimizer="adam", learning_rate=-1.0)}), "learning_rate"),
    (dict(extra_rows={"r": dict(optimizer="adam", options={"beta": 1.0})}), "no method"),
    (dict(extra_rows={"r": dict(optimizer="adam", method="control",
                                options={"alpha": 1.0})}), "control: unknown option"),
])
def test_config_validates_the_new_fields(changes, message):
    with pytest.raises(ValueError, match=message):
        train.Config(**changes)


# ------------------------------------------------------------------------ the report
def _run(train_loss, test_loss):
    n = len(train_loss)
    return dict(seed=0, train_loss=train_loss, train_acc=[None] * n, test_loss=test_loss,
                test_acc=[None] * n, epoch_time=[1.0] * n, diagnostics=[{}] * n)


def test_summarize_on_the_validation_loss():
    # The method reaches the base's best *training* loss at epoch 2 but its best
    # *validation* loss only at epoch 4.
    results = dict(names=["base", "m"], seeds=[0], steps_per_epoch=50,
                   info={n: dict(compile_time=1.0, flops_per_step=None) for n in "base m".split()},
                   runs=dict(base=[_run([3.0, 2.0, 1.5, 1.0], [3.0, 2.5, 2.0, 2.2])],
                             m=[_run([2.0, 1.0, 0.5, 0.4], [3.0, 2.8, 2.1, 1.9])]))
    on_train = report.summarize(results, target="train_loss")
    assert on_train["m"]["epochs_to_target"] == 2 and on_train["m"]["target_on"] == "train_loss"
    results["target"] = "test_loss"
    on_val = report.summarize(results)
    assert on_val["base"]["epochs_to_target"] == 3 and on_val["m"]["epochs_to_target"] == 4
    assert on_val["m"]["epochs_ratios"] == [4 / 3] and on_val["m"]["target_on"] == "test_loss"
    assert on_val["m"]["best_test_loss"] == 1.9
    assert results["runs"]["base"][0]["target"] == 2.0
    header = report.format_table(on_val, task="regression").splitlines()[0]
    assert "epochs->tgt(val)" in header and "time->tgt(val) s" in header
    with pytest.raises(ValueError, match="target"):
        report.summarize(results, target="loss")


# -------------------------------------------------------------------------- tuning
def test_tune_control_beta_prefers_epochs_then_loss():
    def row(epochs, loss):
        return dict(epochs_to_target=epochs, best_test_loss=loss, target_on="test_loss")

    summary = {"control@0.5": row(None, 0.5), "control@1": row(6, 1.1), "control@2": row(6, 1.0)}
    out = tune.tune_control_beta(summary)
    assert out["beta"] == 2.0
    assert out["scores"][0.5] == dict(epochs_to_target=None, best_loss=0.5)
    summary["control@1"] = row(5, 2.0)
    assert tune.tune_control_beta(summary)["beta"] == 1.0
    assert tune.tune_control_beta(summary, (0.5,))["beta"] == 0.5   # never reached: the only one
    with pytest.raises(ValueError, match="control@3"):
        tune.tune_control_beta(summary, (3.0,))
    rows = tune.control_rows("adam", 1e-3, (0.5, 2.0))
    assert list(rows) == ["control@0.5", "control@2"]
    assert rows["control@2"] == dict(optimizer="adam", learning_rate=1e-3, method="control",
                                     options={"beta": 2.0})
    assert train.Config(extra_rows=rows).extra_rows["control@0.5"]["options"] == {"beta": 0.5}


def test_cli_spells_the_new_fields():
    from examples import compare

    _, config = compare.parse_args([
        "--dataset", "text", "--model", "transformer", "--optimizer", "schedule_free_adamw",
        "--schedule", "warmup_cosine", "--steps-per-epoch", "50", "--target", "test_loss",
        "--methods", "kga,control", "--set", "control.beta=2"])
    assert (config.dataset, config.model, config.optimizer, config.schedule) == (
        "text", "transformer", "schedule_free_adamw", "warmup_cosine")
    assert config.steps_per_epoch == 50 and config.target == "test_loss"
    assert config.options == {"control": {"beta": 2}}
    assert "validation (test) loss" in compare.headline(config, dict(steps_per_epoch=50))
