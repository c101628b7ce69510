"""Tests of the harness: the runner and train_and_evaluate (examples.train), the method
registry (examples.methods), the learning-rate sweep (examples.tune), the statistics
(examples.report) and the command line (examples.compare)."""

import functools
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

pytest.importorskip("flax")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

import koopax  # noqa: E402
from examples import cli, compare, methods, report, train, tune  # noqa: E402
from examples.digits_mlp.configs import default as digits_mlp_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------- time to target
def test_time_to_target_first_epoch_at_or_below():
    losses = [1.0, 0.5, 0.3, 0.3, 0.2]
    times = [0.5, 1.0, 1.5, 2.0, 2.5]
    hit = report.time_to_target(losses, times, 0.3, steps_per_epoch=10)
    assert hit == report.Target(epoch=3, time=3.0, step=30)
    # Equality counts as reached.
    assert report.time_to_target(losses, times, 1.0).epoch == 1


def test_time_to_target_not_reached_and_nan():
    hit = report.time_to_target([1.0, float("nan"), 0.5], [1.0, 1.0, 1.0], 0.4)
    assert hit == report.Target(None, None, None)
    hit = report.time_to_target([float("nan"), 0.4], [1.0, 2.0], 0.4)
    assert hit.epoch == 2 and hit.time == 3.0


@pytest.mark.parametrize("kwargs, name", [
    (dict(losses=[1.0, 2.0], epoch_times=[1.0], target=0.5), "losses"),
    (dict(losses=[1.0], epoch_times=[1.0], target=float("nan")), "target"),
    (dict(losses=[1.0], epoch_times=[1.0], target=0.5, steps_per_epoch=0), "steps_per_epoch"),
])
def test_time_to_target_validates(kwargs, name):
    with pytest.raises(ValueError, match=name):
        report.time_to_target(**kwargs)


def _run(losses, times, acc=0.9, diagnostics=None):
    n = len(losses)
    return dict(seed=0, train_loss=list(losses), train_acc=[acc] * n, test_loss=list(losses),
                test_acc=[acc] * n, epoch_time=list(times),
                diagnostics=[diagnostics or {}] * n)


def test_summarize_medians_paired_ratios_and_not_reached():
    base = [_run([1.0, 0.6, 0.4, 0.3], [1.0] * 4),   # target 0.3, reached at epoch 4
            _run([1.0, 0.5, 0.2, 0.25], [1.0] * 4),  # target 0.2, reached at epoch 3
            _run([0.9, 0.5, 0.45, 0.4], [1.0] * 4)]  # target 0.4, reached at epoch 4
    fast = [_run([0.8, 0.3, 0.1, 0.1], [2.0] * 4, diagnostics=dict(accepted_ratio=0.2)),
            _run([0.7, 0.2, 0.1, 0.1], [2.0] * 4, diagnostics=dict(accepted_ratio=0.4)),
            _run([0.9, 0.9, 0.9, 0.9], [2.0] * 4, diagnostics=dict(accepted_ratio=0.6))]
    never = [_run([1.0] * 4, [1.0] * 4, diagnostics=dict(masked_fraction=0.5))
             for _ in range(3)]
    results = dict(
        names=["base", "fast", "never"], seeds=[0, 1, 2], steps_per_epoch=5,
        info={n: dict(compile_time=1.0, flops_per_step=100.0) for n in ("base", "fast", "never")},
        runs=dict(base=base, fast=fast, never=never))
    summary = report.summarize(results)
    assert summary["base"]["epochs_to_target"] == 4
    assert summary["base"]["reached"] == 3
    assert summary["base"]["epochs_ratio"] == 1.0
    # fast: epochs (2, 2, inf) -> median 2; time 2 epochs x 2 s = 4 s.
    assert summary["fast"]["epochs_to_target"] == 2
    assert summary["fast"]["reached"] == 2
    assert summary["fast"]["epochs_ratio"] == 0.5
    assert summary["fast"]["time_to_target"] == 4.0
    assert summary["fast"]["time_ratio"] == 1.0
    assert summary["fast"]["flops_to_target"] == 2 * 5 * 100.0
    # Per seed: epochs 2/4, 2/3, not reached; times 4/4, 4/3, not reached.
    assert summary["fast"]["epochs_ratios"] == [0.5, 2 / 3, None]
    assert summary["fast"]["epochs_ratio_paired"] == dict(median=2 / 3, min=0.5, max=None)
    assert summary["fast"]["time_ratio_paired"]["median"] == pytest.approx(4 / 3)
    assert results["runs"]["fast"][2]["reached"]["epoch"] is None
    assert summary["never"]["epochs_to_target"] is None
    assert summary["never"]["epochs_ratio"] is None
    assert summary["never"]["epochs_ratio_paired"]["median"] is None
    # PDT's accepted ratio and a mask's masked fraction stay apart.
    assert summary["fast"]["accepted_ratio"] == pytest.approx(0.4)
    assert "masked_fraction" not in summary["fast"]
    assert summary["never"]["masked_fraction"] == 0.5 and "accepted_ratio" not in summary["never"]
    table = report.format_table(summary)
    header = table.splitlines()[0].split()
    assert "accepted" in header and "masked" in header
    line = next(l for l in table.splitlines() if l.startswith("never"))
    assert "not reached (0/3)" in line
    assert "2 (2/3)" in next(l for l in table.splitlines() if l.startswith("fast"))
    # One verdict line per method, against the (here untuned) base, compile included:
    # fast reaches in (1 + 4) s vs the base's (1 + 4) s; never does not reach it.
    results.update(summary=summary, config=dict(optimizer="sgd", learning_rate=0.5))
    lines = report.verdict_lines(results)
    assert "sgd at lr 0.5 (constant; not tuned" in lines[0] and "3 seed(s)" in lines[0]
    assert len(lines) == 3
    assert ("fast   reached the base's best train loss in 0.50x its epochs and 1.00x its "
            "time, compile included") in lines[1]
    assert "never  did not reach the base's best train loss (reached in 0/3 seeds)" in lines[2]


def test_median_counts_misses_as_infinitely_late():
    assert report.median_or_none([1, None, None]) is None
    assert report.median_or_none([1, 3, None]) == 3


# ---------------------------------------------------------------------- the sweep
def _counting(fn):
    calls = []

    def score(k):
        calls.append(k)
        return fn(k)
    return score, calls


@pytest.mark.parametrize("optimum, tried", [(3, {0, 1, 2, 3, 4}), (-2, {1, 0, -1, -2, -3}),
                                             (0, {-1, 0, 1})])
def test_interior_best_walks_to_the_optimum_and_stops(optimum, tried):
    score, calls = _counting(lambda k: (k - optimum) ** 2 + 1.0)
    sweep = tune.interior_best(score)
    assert sweep.best == optimum and sweep.interior
    assert len(calls) == len(set(calls)) and set(calls) == tried   # each rate once
    assert sweep.scores[optimum - 1] > sweep.scores[optimum] < sweep.scores[optimum + 1]


def test_interior_best_treats_divergence_as_worst():
    # Diverges (inf / NaN) at 2x and above and at the start: walks down to the best.
    sweep = tune.interior_best(lambda k: math.inf if k >= 0 else (float("nan") if k == -1
                                                                    else abs(k + 3) + 0.5))
    assert sweep.best == -3 and sweep.interior
    assert sweep.scores[-1] == math.inf
    # Everything diverges: no best.
    sweep = tune.interior_best(lambda k: math.inf, max_steps=3)
    assert not sweep.interior and sweep.best == -3


def test_interior_best_limit_and_known_scores():
    sweep = tune.interior_best(lambda k: -k, max_steps=2)   # better forever upwards
    assert sweep.best == 2 and not sweep.interior
    score, calls = _counting(lambda k: (k - 1) ** 2)
    sweep = tune.interior_best(score, known={0: 1.0, 1: 0.0, -1: 4.0})
    assert sweep.best == 1 and sweep.interior and calls == [2]


def test_sweep_score_and_tune_learning_rate():
    results = {"runs": {"base": [dict(train_loss=[1.0, 0.5, 0.6]), dict(train_loss=[2.0, 1.5])],
                        "bad": [dict(train_loss=[1.0, 0.1]), dict(train_loss=[1.0, None])]}}
    assert tune.sweep_score(results) == pytest.approx(1.0)   # mean of 0.5 and 1.5
    assert tune.sweep_score(results, "bad") == math.inf      # one seed diverged
    seen = []

    def score(rate):
        seen.append(rate)
        return (math.log2(rate / 0.4)) ** 2
    out = tune.tune_learning_rate(0.1, score, known={0.2: 1.0, 0.3: 0.0})
    assert out["learning_rate"] == pytest.approx(0.4) and out["interior"]
    assert 0.2 not in seen and 0.3 not in out["scores"]
    assert list(out["scores"]) == sorted(out["scores"])


# ------------------------------------------------------------------ the registry
def test_build_optimizer_registry_and_value_kwarg():
    params = {"w": jnp.ones(3)}
    for name in ["base"] + sorted(methods.METHODS):
        # The masks without a default threshold (kga_norm, kga_delta) need it given.
        required = {k: 0.01 for k in getattr(methods.METHODS.get(name), "required", ())}
        tx = methods.build_optimizer(name, optax.sgd(0.1), required or None, 4)
        # Traced only (no compilation): every entry builds and accepts value=.
        updates, _ = jax.eval_shape(
            lambda p, tx=tx: tx.update(p, tx.init(p), p, value=jnp.float32(1.0)), params)
        assert updates["w"].shape == (3,)
    with pytest.raises(ValueError, match="method"):
        methods.build_optimizer("nope", optax.sgd(0.1), {}, 4)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        methods.build_optimizer("kga", optax.sgd(0.1), {}, 0)
    with pytest.raises(ValueError, match="kga_norm: needs the option 'norm_threshold'"):
        methods.build_optimizer("kga_norm", optax.sgd(0.1), None, 4)


def test_options_are_scoped_and_unknown_keys_name_the_method():
    assert "rank" in methods.METHODS["kga"].options()
    assert "horizon" in methods.METHODS["pdt"].options()
    assert "alpha" not in methods.METHODS["pdt"].options()
    assert "kwm_epsilon" in methods.METHODS["kga_kwm"].options()
    assert not {"mask", "efficient", "mode"} & methods.METHODS["kga_kwm"].options()
    with pytest.raises(ValueError, match=r"pdt: unknown option 'alpha'"):
        methods.options_for("pdt", {"alpha": 2.0})
    with pytest.raises(ValueError, match=r"kga: unknown options 'nope', 'rnak'"):
        methods.options_for("kga", {"rnak": 3, "nope": 1})
    assert methods.options_for("kga", {"rank": 3})["rank"] == 3
    assert methods.options_for("kga")["alpha"] == methods.KGA_DEFAULTS["alpha"]


def _spy(monkeypatch, name, calls):
    real = getattr(koopax, name)

    @functools.wraps(real)
    def spy(*args, **kwargs):
        calls[name] = kwargs
        return real(*args, **kwargs)
    monkeypatch.setattr(koopax, name, spy)


def test_cli_options_reach_only_their_method(monkeypatch):
    calls = {}
    _spy(monkeypatch, "kga", calls)
    _spy(monkeypatch, "pdt", calls)
    _, config = compare.parse_args(["--methods", "kga,pdt", "--alpha", "1.5",
                                    "--set", "kga.epsilon=0.05", "--pdt.num_snapshots=5",
                                    "--pdt.horizon", "3"])
    assert config.options == {"kga": {"alpha": 1.5, "epsilon": 0.05},
                              "pdt": {"num_snapshots": 5, "horizon": 3}}
    for name in config.methods:
        methods.build_optimizer(name, optax.sgd(0.1), config.options.get(name), 10)
    assert calls["kga"]["alpha"] == 1.5 and calls["kga"]["epsilon"] == 0.05
    assert calls["kga"]["num_snapshots"] == methods.KGA_DEFAULTS["num_snapshots"]
    assert calls["kga"]["snapshot_every"] == 10     # one snapshot per epoch
    # KGA's flags and options do not reach PDT: it keeps its own defaults.
    assert calls["pdt"] == {"num_snapshots": 5, "horizon": 3, "snapshot_every": 10}


@pytest.mark.parametrize("argv, message", [
    (["--set", "rank=3"], "needs its method"),
    (["--set", "kga.rnak=3"], "kga: unknown option 'rnak'"),
    (["--kga.rnak=3"], "kga: unknown option 'rnak'"),
    (["--set", "noequals"], "METHOD.KEY=VALUE"),
    (["--methods", "kga", "--set", "pdt.horizon=2"], "not in --methods"),
    (["--methods", "kga,nope"], "unknown"),
    (["--base-lr-factors", "1"], "factor 1"),
    (["--base-lr-factors", "-2"], "number > 0"),
])
def test_bad_arguments_are_errors_naming_the_problem(argv, message, capsys):
    with pytest.raises(SystemExit):
        compare.parse_args(argv)
    assert message in capsys.readouterr().err


def test_make_base_optimizer_validates():
    with pytest.raises(ValueError, match="name"):
        methods.make_base_optimizer("lion", 0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        methods.make_base_optimizer("sgd", -1.0)
    with pytest.raises(ValueError, match="total_steps"):
        methods.make_base_optimizer("adam", 0.1, schedule="cosine")
    assert methods.make_base_optimizer("adamw", 0.1, schedule="cosine", total_steps=10)


def test_read_diagnostics_from_kga_state():
    state = optax.chain(optax.sgd(0.1), koopax.kga(1.0, snapshot_every=1)).init(
        {"w": jnp.ones(4)})
    diag = methods.read_diagnostics(state)
    assert diag["num_stable"] == 0 and diag["num_refreshes"] == 0
    assert diag["eigenvalues"] == []  # rank 0: nothing valid yet
    assert "accepted_ratio" not in diag and "masked_fraction" not in diag


def test_flops_of_handles_list_dict_none():
    class Fake:
        def __init__(self, value):
            self.value = value

        def cost_analysis(self):
            return self.value

    assert train.flops_of(Fake([{"flops": 10.0}])) == 10.0
    assert train.flops_of(Fake({"flops": 3.0})) == 3.0
    assert train.flops_of(Fake(None)) is None
    assert train.flops_of(Fake([])) is None


# ------------------------------------------------------------------- the runner
def test_runner_trains_resets_and_rejects_other_shapes():
    def grad_fn(params, rest, consts, batch):
        loss = 0.5 * jnp.sum((params["w"] - consts) ** 2)
        return loss, {"w": params["w"] - consts}, rest + 1, jnp.float32(2.0)

    task = train.Task("quad", {"w": jnp.ones(3)}, jnp.int32(0), jnp.zeros(3), None, 4, grad_fn)
    runner = train.Runner(task, methods.build_optimizer("base", optax.sgd(0.5), None, 4))
    block = runner.run()
    assert runner.compile_s > 0 and runner.blocks_run == 1
    np.testing.assert_allclose(block.losses, 1.5 * 0.25 ** np.arange(4))
    np.testing.assert_allclose(block.metrics, 2.0)
    assert int(runner.rest) == 4 and block.seconds_per_step == block.seconds / 4
    np.testing.assert_allclose(runner.params["w"], 0.5 ** 4)
    runner.reset()
    assert runner.blocks_run == 0 and float(runner.params["w"][0]) == 1.0
    assert np.asarray(task.params["w"]).tolist() == [1.0] * 3   # the task's copy untouched
    with pytest.raises(ValueError, match="shapes"):
        runner.reset({"w": jnp.ones(4)}, jnp.int32(0))


# ------------------------------------------------------------ train_and_evaluate
def test_train_and_evaluate_tunes_the_base_rate():
    config = train.Config(methods=(), tune_lr=True, tune_max_steps=1, plots=False,
                          progress=False).quick()
    results = train.train_and_evaluate(config)
    sweep = results["sweep"]
    assert sweep["start"] == config.learning_rate and len(sweep["scores"]) >= 3
    best = sweep["learning_rate"]
    assert sweep["scores"][best] == min(sweep["scores"].values())
    assert results["info"]["base"]["learning_rate"] == best
    assert results["config"]["learning_rate"] == best


def test_config_validates():
    with pytest.raises(ValueError, match="hidden"):
        train.Config(model="cnn1d", hidden=(8,))
    with pytest.raises(ValueError, match="not in methods"):
        train.Config(methods=("kga",), options={"pdt": {"horizon": 2}})
    with pytest.raises(ValueError, match="kga: unknown option"):
        train.Config(methods=("kga",), options={"kga": {"rnak": 2}})
    with pytest.raises(ValueError, match="factor 1"):
        train.Config(base_lr_factors=(1.0,))


def test_hidden_sets_mlp_depth():
    from flax import nnx

    from examples.datasets import load_digits

    model = train.model_factory(train.Config(hidden=(8, 8, 8), size="tiny"), load_digits())(0)
    shapes = [x.shape for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
    kernels = sorted(s for s in shapes if len(s) == 2)
    # 64 -> 8 -> 8 -> 8 -> 10: four dense kernels.
    assert kernels == sorted([(64, 8), (8, 8), (8, 8), (8, 10)])


# ---------------------------------------------------------------------- the CLI
def test_quick_run_writes_json_plots_and_table(tmp_path, capsys):
    # train_and_evaluate through the CLI: 1 epoch, 1 seed, tiny MLP, 4 batches.
    out = tmp_path / "run"
    results = compare.main(["--quick", "--no-progress", "--methods", "kga,pdt",
                            "--base-lr-factors", "0.5,2", "--output-dir", str(out)])
    printed = capsys.readouterr().out
    assert "method" in printed and "epochs->tgt" in printed and "accepted:" in printed
    assert "\r" not in printed   # no progress bar where stdout is not a terminal
    verdicts = [l.strip() for l in printed.splitlines() if l.startswith("  kga") or
                l.startswith("  pdt")]
    assert len(verdicts) == 2 and all("compile included" in l or "did not reach" in l
                                      for l in verdicts)
    names = results["names"]
    assert names == ["base", train.base_lr_name(0.5), train.base_lr_name(2), "kga", "pdt"]
    for name in names:
        assert any(line.startswith(name) for line in printed.splitlines())
    assert results["info"][train.base_lr_name(2)]["learning_rate"] == 2 * 0.5
    # Same seed and batches, different learning rate: different first-epoch loss,
    # while kga (identical to base before its first snapshot) matches base.
    loss = {n: results["runs"][n][0]["train_loss"][0] for n in names}
    assert loss[train.base_lr_name(2)] != loss["base"] != loss[train.base_lr_name(0.5)]
    assert loss["kga"] == loss["base"]
    assert results["summary"]["base"]["test_acc_diff"] == 0.0
    assert results["summary"]["kga"]["flops_per_step"] > 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["epochs"] == 1 and saved["config"]["methods"] == ["kga", "pdt"]
    assert saved["config"]["train_subset"] == 4 * 64 and saved["sweep"] is None
    assert set(saved["runs"]) == set(names)
    run = saved["runs"]["kga"][0]
    assert len(run["train_loss"]) == 1 and len(run["epoch_time"]) == 1
    assert math.isfinite(run["train_loss"][0])
    assert saved["summary"]["base"]["epochs_to_target"] == 1
    for png in ["loss_vs_epoch.png", "loss_vs_time.png", "test_metric.png", "eigenvalues.png",
                "accepted_ratio.png"]:
        assert (out / png).stat().st_size > 1000
    assert not (out / "masked_fraction.png").exists()


def test_script_entry_point_help():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "compare.py"),
                           "--help"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "--num-snapshots" in proc.stdout and "--tune" in proc.stdout


def test_quick_flag_and_defaults():
    _, config = compare.parse_args(["--quick"])
    assert config.epochs == 1 and config.seeds == 1 and config.size == "tiny"
    _, config = compare.parse_args([])
    assert config == train.Config() == digits_mlp_config.get_config()


@pytest.mark.parametrize("task", ["digits_mlp", "char_lm", "vit_digits"])
def test_example_configs_are_the_cli_defaults(task):
    # examples/<task>/: configs/default.get_config() is what main() runs unless flags change it.
    import importlib

    config = importlib.import_module(f"examples.{task}.configs.default").get_config()
    assert callable(importlib.import_module(f"examples.{task}.main").main)
    args, parsed = cli.parse_args([], config, workdir="runs/x")
    assert parsed == config and args.workdir == "runs/x"
    _, parsed = cli.parse_args(["--epochs", "2", "--kga.alpha=0.5"], config)
    assert parsed == config.replace(epochs=2, options={"kga": {"alpha": 0.5}})


def test_default_clock_falls_back_to_steps_without_a_rate_but_explicit_rate_raises():
    tx = methods.build_optimizer("kga", optax.sgd(0.1), None, 4)
    assert tx is not None
    with pytest.raises(ValueError, match="learning_rate"):
        methods.build_optimizer("kga", optax.sgd(0.1), {"clock": "rate"}, 4)
    tx = methods.build_optimizer("kga", optax.sgd(0.1), {"clock": "rate"}, 4,
                                 learning_rate=0.1, total_steps=40)
    assert tx is not None
