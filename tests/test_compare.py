"""Tests of the comparison harness (examples.compare) and its training library."""

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

pytest.importorskip("flax")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from examples import compare, train_lib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------- time to target
def test_time_to_target_first_epoch_at_or_below():
    losses = [1.0, 0.5, 0.3, 0.3, 0.2]
    times = [0.5, 1.0, 1.5, 2.0, 2.5]
    hit = train_lib.time_to_target(losses, times, 0.3, steps_per_epoch=10)
    assert hit == train_lib.Target(epoch=3, time=3.0, step=30)
    # Equality counts as reached.
    assert train_lib.time_to_target(losses, times, 1.0).epoch == 1


def test_time_to_target_not_reached_and_nan():
    hit = train_lib.time_to_target([1.0, float("nan"), 0.5], [1.0, 1.0, 1.0], 0.4)
    assert hit == train_lib.Target(None, None, None)
    hit = train_lib.time_to_target([float("nan"), 0.4], [1.0, 2.0], 0.4)
    assert hit.epoch == 2 and hit.time == 3.0


@pytest.mark.parametrize("kwargs, name", [
    (dict(losses=[1.0, 2.0], epoch_times=[1.0], target=0.5), "losses"),
    (dict(losses=[1.0], epoch_times=[1.0], target=float("nan")), "target"),
    (dict(losses=[1.0], epoch_times=[1.0], target=0.5, steps_per_epoch=0), "steps_per_epoch"),
])
def test_time_to_target_validates(kwargs, name):
    with pytest.raises(ValueError, match=name):
        train_lib.time_to_target(**kwargs)


def _run(losses, times, acc=0.9):
    n = len(losses)
    return dict(seed=0, train_loss=list(losses), train_acc=[acc] * n, test_loss=list(losses),
                test_acc=[acc] * n, epoch_time=list(times), diagnostics=[{}] * n)


def test_summarize_medians_ratios_and_not_reached():
    base = [_run([1.0, 0.6, 0.4, 0.3], [1.0] * 4),   # target 0.3, reached at epoch 4
            _run([1.0, 0.5, 0.2, 0.25], [1.0] * 4),  # target 0.2, reached at epoch 3
            _run([0.9, 0.5, 0.45, 0.4], [1.0] * 4)]  # target 0.4, reached at epoch 4
    fast = [_run([0.8, 0.3, 0.1, 0.1], [2.0] * 4),   # epoch 2
            _run([0.7, 0.2, 0.1, 0.1], [2.0] * 4),   # epoch 2
            _run([0.9, 0.9, 0.9, 0.9], [2.0] * 4)]   # never
    never = [_run([1.0] * 4, [1.0] * 4) for _ in range(3)]
    results = dict(
        names=["base", "fast", "never"], seeds=[0, 1, 2], steps_per_epoch=5,
        info={n: dict(compile_time=1.0, flops_per_step=100.0) for n in ("base", "fast", "never")},
        runs=dict(base=base, fast=fast, never=never))
    summary = compare.summarize(results)
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
    assert results["runs"]["fast"][2]["reached"]["epoch"] is None
    assert summary["never"]["epochs_to_target"] is None
    assert summary["never"]["epochs_ratio"] is None
    table = compare.format_table(summary)
    line = next(l for l in table.splitlines() if l.startswith("never"))
    assert "not reached (0/3)" in line
    assert "2 (2/3)" in next(l for l in table.splitlines() if l.startswith("fast"))


def test_median_counts_misses_as_infinitely_late():
    assert compare._median_or_none([1, None, None]) is None
    assert compare._median_or_none([1, 3, None]) == 3


# ------------------------------------------------------------------ library pieces
def test_build_optimizer_registry_and_value_kwarg():
    import jax.numpy as jnp

    params = {"w": jnp.ones(3)}
    for name in ["base"] + sorted(train_lib.METHODS):
        tx = train_lib.build_optimizer(name, optax.sgd(0.1), dict(alpha=1.0, num_snapshots=6), 4)
        state = tx.init(params)
        updates, _ = tx.update({"w": jnp.ones(3)}, state, params, value=jnp.float32(1.0))
        assert updates["w"].shape == (3,)
    with pytest.raises(ValueError, match="method"):
        train_lib.build_optimizer("nope", optax.sgd(0.1), {}, 4)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        train_lib.build_optimizer("kga", optax.sgd(0.1), {}, 0)


def test_make_base_optimizer_validates():
    with pytest.raises(ValueError, match="name"):
        train_lib.make_base_optimizer("lion", 0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        train_lib.make_base_optimizer("sgd", -1.0)
    with pytest.raises(ValueError, match="total_steps"):
        train_lib.make_base_optimizer("adam", 0.1, schedule="cosine")
    assert train_lib.make_base_optimizer("adamw", 0.1, schedule="cosine", total_steps=10)


def test_read_diagnostics_from_kga_state():
    import jax.numpy as jnp
    import koopax

    state = optax.chain(optax.sgd(0.1), koopax.kga(1.0, snapshot_every=1)).init(
        {"w": jnp.ones(4)})
    diag = train_lib.read_diagnostics(state)
    assert diag["num_stable"] == 0 and diag["num_refreshes"] == 0
    assert diag["eigenvalues"] == []  # rank 0: nothing valid yet
    assert "masked_ratio" not in diag


def test_flops_of_handles_list_dict_none():
    class Fake:
        def __init__(self, value):
            self.value = value

        def cost_analysis(self):
            return self.value

    assert train_lib.flops_of(Fake([{"flops": 10.0}])) == 10.0
    assert train_lib.flops_of(Fake({"flops": 3.0})) == 3.0
    assert train_lib.flops_of(Fake(None)) is None
    assert train_lib.flops_of(Fake([])) is None


# ----------------------------------------------------------------------- end to end
def test_quick_run_writes_json_plots_and_table(tmp_path, capsys):
    out = tmp_path / "run"
    results = compare.main(["--quick", "--output-dir", str(out)])
    printed = capsys.readouterr().out
    assert "method" in printed and "epochs->tgt" in printed
    for name in ["base", "kga", "kga_efficient"]:
        assert any(line.startswith(name) for line in printed.splitlines())
    with open(out / "results.json") as f:
        saved = json.load(f)
    assert saved["config"]["quick"] is True
    assert set(saved["runs"]) == set(results["names"])
    run = saved["runs"]["kga"][0]
    assert len(run["train_loss"]) == 1 and len(run["epoch_time"]) == 1
    assert math.isfinite(run["train_loss"][0])
    assert saved["summary"]["base"]["epochs_to_target"] == 1
    assert saved["summary"]["kga"]["flops_per_step"] > 0
    for png in ["loss_vs_epoch.png", "loss_vs_time.png", "test_metric.png", "eigenvalues.png"]:
        assert (out / png).stat().st_size > 1000


def test_script_entry_point_help():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "compare.py"),
                           "--help"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "--num-snapshots" in proc.stdout and "--non-iid" in proc.stdout


def test_unknown_method_is_an_error():
    with pytest.raises(SystemExit):
        compare.parse_args(["--methods", "kga,nope"])
    np.testing.assert_equal(compare.parse_args(["--quick"]).epochs, 1)


def test_hidden_flag_sets_mlp_depth_and_rejects_other_models():
    from flax import nnx

    from examples.datasets import load_digits

    data = load_digits()
    args = compare.build_parser().parse_args(["--hidden", "8,8,8", "--size", "tiny"])
    model = compare.make_model_fn(args, data)(0)
    shapes = [x.shape for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
    kernels = sorted(s for s in shapes if len(s) == 2)
    # 64 -> 8 -> 8 -> 8 -> 10: four dense kernels.
    assert sorted(kernels) == sorted([(64, 8), (8, 8), (8, 8), (8, 10)])
    bad = compare.build_parser().parse_args(["--hidden", "8", "--model", "cnn1d"])
    with pytest.raises(ValueError, match="hidden"):
        compare.make_model_fn(bad, data)


def test_kga_kwm_method_is_registered_and_runs_a_step():
    import jax.numpy as jnp

    tx = train_lib.build_optimizer("kga_kwm", optax.sgd(0.1), {"num_snapshots": 4}, 5)
    params = {"w": jnp.ones((4, 3))}
    state = tx.init(params)
    updates, state = tx.update(params, state, params, value=jnp.asarray(1.0))
    assert updates["w"].shape == (4, 3)


def test_set_overrides_reach_the_method_and_are_scoped():
    args = compare.parse_args(["--methods", "kga,pdt", "--set", "epsilon=0.05",
                               "--set", "pdt.num_snapshots=5", "--set", "horizon=3"])
    kga_hp = compare.method_hparams(args, "kga")
    pdt_hp = compare.method_hparams(args, "pdt")
    assert kga_hp["epsilon"] == 0.05 and kga_hp["num_snapshots"] == args.num_snapshots
    assert pdt_hp["num_snapshots"] == 5 and pdt_hp["horizon"] == 3
    # The override reaches the koopax transformation: 5 snapshots -> 4 increments.
    tx = train_lib.METHODS["pdt"].factory(pdt_hp, 10)
    state = tx.init({"w": np.zeros(3, np.float32)})
    assert state.windows[0].gram.shape == (4, 4)
    assert state.horizon == 3
    # KGA's --num-snapshots/--alpha flags do not reach PDT: it keeps its own defaults.
    plain = compare.method_hparams(compare.parse_args(["--methods", "kga,pdt"]), "pdt")
    assert "num_snapshots" not in plain and "alpha" not in plain


@pytest.mark.parametrize("argv", [["--set", "nope=1"], ["--set", "noequals"],
                                  ["--methods", "kga", "--set", "pdt.horizon=2"],
                                  ["--base-lr-factors", "1"], ["--base-lr-factors", "-2"]])
def test_bad_set_and_factor_arguments_are_errors(argv):
    with pytest.raises(SystemExit):
        compare.parse_args(argv)


def test_base_lr_factor_rows_train_the_base_at_scaled_lr(tmp_path):
    results = compare.main(["--quick", "--no-plots", "--methods", "kga",
                            "--base-lr-factors", "0.5,2", "--output-dir", str(tmp_path)])
    names = results["names"]
    assert names[:3] == ["base", compare.base_lr_name(0.5), compare.base_lr_name(2)]
    # Same seed and batches, different learning rate: different first-epoch loss,
    # while kga (identical to base before its first snapshot) matches base.
    loss = {n: results["runs"][n][0]["train_loss"][0] for n in names}
    assert loss[compare.base_lr_name(2)] != loss["base"]
    assert loss[compare.base_lr_name(0.5)] != loss["base"]
    assert results["summary"]["base"]["test_acc_diff"] == 0.0
