"""Smoke tests of the benchmark scripts (overhead, memory, peer_pdt, pdt_jump).

Each script runs once (``--quick --no-plots``, shrunk further where the option
exists) into a temporary directory; the tests read the JSON it writes. No
timing is asserted, only that every number is there, finite and consistent.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import cli, common, memory, overhead


def _numbers_named(obj, predicate, path=""):
    """``(path, value)`` of every dict entry whose key satisfies ``predicate``."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            here = f"{path}.{k}"
            if predicate(k) and not isinstance(v, (dict, list)):
                yield here, v
            yield from _numbers_named(v, predicate, here)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers_named(v, predicate, f"{path}[{i}]")


def _is_ratio_key(key: str) -> bool:
    return key.startswith("ratio") or key.endswith("_over_pass")


@pytest.fixture(scope="module")
def overhead_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("overhead")
    # One parameter size for every quadratic section: the base and kga runners are shared.
    overhead.main(["--quick", "--no-plots", "--output-dir", str(out), "--max-params", "1e5",
                   "--section-params", "1e5", "--snapshot-counts", "4", "--quantiles", "0.9",
                   "--methods", "kga,kga_norm,kga_delta"])
    return out, json.loads((out / "overhead.json").read_text())


@pytest.fixture(scope="module")
def memory_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("memory")
    memory.main(["--quick", "--no-plots", "--output-dir", str(out)])
    return out, json.loads((out / "memory.json").read_text())


# ----------------------------------------------------------------------------- overhead
def test_overhead_json_has_every_section(overhead_run):
    out, data = overhead_run
    assert {"jax", "platform", "cpu_count"} <= set(data["environment"])
    assert set(data["sections"]) == set(overhead.SECTIONS)
    models = data["sections"]["models"]["results"]
    assert [r["model"] for r in models] == ["mlp"]
    assert set(models[0]["methods"]) == {"kga", "kga_norm", "kga_delta"}
    assert models[0]["num_params"] > 0
    assert len(data["sections"]["params"]["points"]) == 1
    assert [p["num_snapshots"] for p in data["sections"]["snapshots"]["points"]] == [4]
    assert [p["quantile"] for p in data["sections"]["masks"]["points"]] == [0.9]
    assert not list(out.glob("*.png"))  # --no-plots


def test_overhead_ratios_are_finite_and_positive(overhead_run):
    _, data = overhead_run
    ratios = list(_numbers_named(data["sections"], _is_ratio_key))
    # models: kga; params, snapshots: ratio, refresh/pass, push/pass; masks: kga, masked.
    assert len(ratios) >= 8
    for path, value in ratios:
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, path


def test_overhead_kga_window_filled_during_warm_up(overhead_run):
    _, data = overhead_run
    diag = data["sections"]["models"]["results"][0]["methods"]["kga"]["diagnostics"]
    assert diag["num_refreshes"] >= 1 and diag["num_nonfinite"] == 0


def test_overhead_models_norm_and_delta_masks_are_calibrated_and_compact(overhead_run):
    _, data = overhead_run
    (result,) = data["sections"]["models"]["results"]
    thresholds = result["mask_thresholds"]
    assert thresholds["norm"] > 0 and thresholds["delta"] > 0
    n = result["num_params"]
    for name in ("kga_norm", "kga_delta"):
        diag = result["methods"][name]["diagnostics"]
        assert diag["compact"] is True and diag["num_nonfinite"] == 0, name
        assert 0.0 < diag["masked_fraction"] < 1.0, name
        # Every mask gets the same static capacity (up to the per-leaf rounding to 128).
        assert diag["num_kept"] <= n * overhead.MASK_CAPACITY + 128 * 4, name
    # The norm threshold is the median |w| at init: about half the weights fall below it.
    assert abs(result["methods"]["kga_norm"]["diagnostics"]["masked_fraction"] - 0.5) < 0.15


def test_overhead_norm_and_delta_methods_need_thresholds():
    for name in ("kga_norm", "kga_delta"):
        with pytest.raises(ValueError, match="thresholds"):
            overhead.make_method(name, 10, 6)
        assert overhead.make_method(name, 10, 6, {"norm": 0.1, "delta": 1e-3}) is not None
    # The delta window fits a small snapshot window.
    assert overhead.make_method("kga_delta", 10, 3, {"delta": 1e-3}) is not None


def test_step_stats_paired_spread_and_fastest_blocks():
    stats = common.step_stats([2.0, 3.0, 9.0], [1.0, 2.0, 3.0])
    assert stats["ratio"] == pytest.approx(1.5) and stats["ratio_best"] == pytest.approx(2.0)
    assert (stats["ratio_paired_min"], stats["ratio_paired"], stats["ratio_paired_max"]) == \
        pytest.approx((1.5, 2.0, 3.0))
    assert stats["ms_per_step_best"] == pytest.approx(2000.0)


def test_overhead_masked_fraction_matches_the_quantile(overhead_run):
    _, data = overhead_run
    masks = data["sections"]["masks"]
    for point in masks["points"]:
        assert point["compact"] is True
        assert abs(point["masked_fraction"] - point["quantile"]) < 0.1
        assert point["kept_fraction"] <= point["capacity"] + 1e-6


def test_overhead_plots(overhead_run, tmp_path):
    pytest.importorskip("matplotlib")
    _, data = overhead_run
    overhead.write_plots(data["sections"], str(tmp_path))
    names = {p.name for p in tmp_path.glob("*.png")}
    assert names == {"overhead_models.png", "overhead_params.png", "overhead_snapshots.png",
                     "overhead_masks.png"}


def test_overhead_models_plot_accepts_runs_with_other_methods(overhead_run, tmp_path):
    # overhead.json merges runs, so models may carry different method lists.
    pytest.importorskip("matplotlib")
    _, data = overhead_run
    models = copy.deepcopy(data["sections"]["models"])
    extra = copy.deepcopy(models["results"][0])
    extra["model"] = "other"
    extra["methods"] = {"not_in_the_first": next(iter(extra["methods"].values()))}
    models["results"].append(extra)
    path = tmp_path / "models.png"
    overhead.plot_models(models, str(path))
    assert path.stat().st_size > 0


@pytest.mark.parametrize("argv, message", [
    (["--sections", "models,bogus"], "--sections"),
    (["--models", "vgg"], "--models"),
    (["--steps", "0"], "--steps"),
    (["--quantiles", "0.5,1.0"], "--quantiles"),
    (["--snapshot-counts", "2"], "--snapshot-counts"),
])
def test_overhead_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        overhead.parse_args(argv)
    assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------- memory
def _rows(data, model):
    return {r["method"]: r for r in data["sections"]["state"][model]["rows"]}


def test_memory_json_has_every_method(memory_run):
    out, data = memory_run
    assert {"jax", "platform", "cpu_count"} <= set(data["environment"])
    for model in ("mlp", "resnet50_tiny"):
        assert set(_rows(data, model)) == set(memory.VARIANTS)
    assert not list(out.glob("*.png"))


def test_memory_kga_state_is_h_parameter_copies(memory_run):
    _, data = memory_run
    # Independent count: the 784-1024-256-10 MLP in float32.
    param_bytes = 4 * (784 * 1024 + 1024 + 1024 * 256 + 256 + 256 * 10 + 10)
    rows = _rows(data, "mlp")
    assert rows["kga_h6"]["param_bytes"] == param_bytes
    for h in (4, 6, 8):
        # The newest snapshot, h - 1 increments and the stored correction (the default
        # apply_every), then O(h^2) scalars of DMD state per leaf (6 leaves: the
        # per-leaf Gram matrices and the last correction).
        extra = rows[f"kga_h{h}"]["koopax_bytes"] - (h + 1) * param_bytes
        assert 0 <= extra < 4 * (6 + 4) * h * h + 512, h
    # bf16 increments, float32 reference snapshot and correction (with the default
    # rollback the correction also holds the restoring update): 4 + 5 * 2 + 4 bytes.
    extra = rows["kga_h6_bf16"]["koopax_bytes"] - (4 + 5 * 2 + 4) * param_bytes // 4
    assert 0 <= extra < 4 * (6 + 4) * 36 + 512
    assert rows["adam"]["base_bytes"] == 2 * param_bytes + 4  # mu, nu and the count
    assert rows["kga_h6"]["goal_met"] is True


def test_memory_orderings(memory_run):
    _, data = memory_run
    for model in ("mlp", "resnet50_tiny"):
        rows = _rows(data, model)
        assert rows["kga_h6_bf16"]["koopax_bytes"] < rows["kga_h6"]["koopax_bytes"]
        assert rows["kga_efficient_r2"]["koopax_bytes"] < rows["kga_efficient"]["koopax_bytes"]
        assert rows["kga_h4"]["koopax_bytes"] < rows["kga_h6"]["koopax_bytes"] \
            < rows["kga_h8"]["koopax_bytes"]
        for row in rows.values():
            assert row["base_bytes"] == rows["adam"]["base_bytes"], row["method"]


def test_memory_peak_ratios_are_finite_and_positive(memory_run):
    _, data = memory_run
    rows = {r["method"]: r for r in data["sections"]["peak"]["rows"]}
    assert set(rows) == {"adam", "kga_h6"}
    for row in rows.values():
        assert row["peak_mib"] > 0 and math.isfinite(row["ratio"]) and row["ratio"] > 0
    assert rows["adam"]["ratio"] == 1.0
    assert rows["kga_h6"]["koopax_state_bytes"] > 0 and rows["adam"]["koopax_state_bytes"] == 0


def test_memory_plot(memory_run, tmp_path):
    pytest.importorskip("matplotlib")
    _, data = memory_run
    memory.plot(data["sections"], str(tmp_path / "memory.png"))
    assert (tmp_path / "memory.png").stat().st_size > 0


def test_memory_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        memory.parse_args(["--peak-methods", "adam,sgd"])
    assert "--peak-methods" in capsys.readouterr().err


# ----------------------------------------------------------------------------- helpers
def test_common_runner_is_the_harness_runner_and_times_blocks():
    from examples import train

    assert common.Runner is train.Runner and common.Task is train.Task
    task = common.quadratic_task((8, 8, 10), steps=3)
    kga = dict(alpha=1.0, num_snapshots=3)
    runners = {"base": common.Runner(task, common.optimizer("sgd", None, "base", None, 3),
                                     "base"),
               "kga": common.Runner(task, common.optimizer("sgd", None, "kga", kga, 3), "kga")}
    runners["kga"].warm_up(4)
    times = common.time_interleaved(runners, 2)
    assert all(len(v) == 2 and all(t > 0 for t in v) for v in times.values())
    assert runners["kga"].blocks_run == 6 and runners["base"].blocks_run == 2
    assert runners["base"].method_state() is None
    diag = common.diagnostics(runners["kga"].method_state())
    assert diag["num_refreshes"] >= 1 and diag["num_nonfinite"] == 0


def test_tree_bytes_and_scaled_sizes():
    tree = {"a": jnp.zeros((3, 4), jnp.float32), "b": jnp.zeros(5, jnp.bfloat16)}
    assert common.tree_bytes(tree) == 3 * 4 * 4 + 5 * 2
    for target in (1e5, 1e6):
        n = common.mlp_size(common.scaled_mlp_sizes(target))
        assert 0.9 * target < n < 1.1 * target


def test_quick_runs_never_write_to_the_published_results():
    from benchmarks import QUICK_DIR, RESULTS_DIR, default_output_dir
    assert QUICK_DIR != RESULTS_DIR
    for script in (overhead, memory):
        assert script.parse_args(["--quick"]).output_dir == QUICK_DIR
        assert script.parse_args([]).output_dir == RESULTS_DIR
        assert script.parse_args(["--quick", "--output-dir", "x"]).output_dir == "x"
    assert default_output_dir(True, "convergence") == f"{QUICK_DIR}/convergence".replace(
        "/", os.sep)


def test_peer_pdt_runs_the_authors_setting(tmp_path):
    from benchmarks import peer_pdt

    results = peer_pdt.main(["--lrs", "0.5", "--seeds", "1", "--epochs", "8",
                             "--methods", "pdt,pdt_svht", "--output-dir", str(tmp_path)])
    summary = results["0.5"]["summary"]
    assert set(summary) == {"sgd", "pdt", "pdt_svht"}
    assert summary["sgd"]["epochs_ratio_median"] == 1.0
    run = results["0.5"]["runs"]["pdt"][0]
    assert len(run["losses"]) == 8 and all(math.isfinite(v) for v in run["losses"])
    # 22 steps per epoch (1437 training digits, batch 64, last batch dropped); the
    # window (6 snapshots) is full at epoch 5: jumps at the ends of epochs 5, 6, 7.
    assert run["diagnostics"]["num_jumps"] == 3
    assert (tmp_path / "peer_pdt.md").read_text().count("| pdt") == 2


def test_pdt_jump_measures_a_predicting_epoch(tmp_path):
    from benchmarks import pdt_jump

    (row,) = pdt_jump.main(["--params", "20000", "--repeats", "2", "--steps", "3",
                            "--output-dir", str(tmp_path)])
    assert set(row["seconds"]) == {"sgd", "pdt_no_prediction", "pdt_jump", "pass"}
    assert all(v > 0 and math.isfinite(v) for v in row["seconds"].values())
    assert json.loads((tmp_path / "pdt_jump.json").read_text())[0]["num_params"] == 4 * 4 * 1024


def test_one_command_runs_every_benchmark(tmp_path, capsys):
    from benchmarks import __main__ as suite

    listing = cli.listing()
    assert all(name in listing for name in cli.NAMES)
    args = cli.parse_args("depth", ["--quick", "--depths", "2,3"])
    assert args.depths == [2, 3] and args.seeds == 5 and args.rerun is False
    assert args.output_dir.startswith(os.path.join("runs", "benchmarks_quick"))
    assert cli.parse_args("pdt_jump", ["--quick"]).params == [100000]
    with pytest.raises(ValueError, match="declares no BENCHMARK"):
        cli.get("convergence")   # parses its own arguments behind the same command
    suite.main(["goals", "--results-dir", str(tmp_path)])
    assert "not measured" in (tmp_path / "goals.md").read_text()
    with pytest.raises(SystemExit):
        cli.parse_args("depth", ["--depths", "0"])
    assert "--depths: cannot read '0'" in capsys.readouterr().err


def test_nnx_cost_declares_its_rounds_and_tabulates_ratios():
    from benchmarks import nnx_cost

    assert cli.parse_args("nnx_cost", ["--quick"]).rounds == 2
    assert cli.parse_args("nnx_cost", []).rounds == 15
    row = dict(path="nnx_cached", method="kga", step_ms=2.0, step_ratio=1.5,
               step_ratio_range=[1.25, 1.75], compile_s=3.0, compile_ratio=4.0, state_leaves=56)
    assert ("| nnx_cached | kga | 2.00 | 1.50 [1.25-1.75] | 3.00 | 4.00 | 56 |"
            in nnx_cost.table({"rows": [row]}))
    assert set(nnx_cost.PATHS) == {"nnx", "nnx_cached", "jit"}
    assert set(nnx_cost.transformations(4)) == {"base", "kga", "pdt"}


def test_devices_declares_its_steps_and_tabulates_the_gap():
    from benchmarks import devices
    assert cli.parse_args("devices", ["--quick"]).steps == 24
    assert cli.parse_args("devices", []).steps == 100
    assert {"base", "kga", "pdt", "efficient_kga", "kwm_kga", "dogra", "tano"} <= set(
        devices.transformations())
    row = dict(name="pdt", relative_gap=1.5e-6, loss_1=0.397, loss_8=0.397, goal_met=True,
               steps_before_divergence=100, gap_before_divergence=1.5e-6)
    assert ("| pdt | 1.5e-06 | yes | 0.397 | 0.397 | 100 (never rose) | 1.5e-06 |"
            in devices.markdown([row], 100))
    assert "processes" not in devices.markdown([row], 100)
    # The jax.distributed job's rows (--processes, 2 by default), in a table of their own.
    assert cli.parse_args("devices", []).processes == 2
    job_row = dict(row, processes=2, relative_gap_processes=2e-5, loss_processes=0.398,
                   gap_before_divergence_processes=1e-6)
    table = devices.markdown([job_row], 100)
    assert "2 processes x 4 devices" in table
    assert "| pdt | 2e-05 | no | 0.398 | 1e-06 |" in table
    # The gap before divergence stops at the first step whose loss exceeds the first one.
    w = lambda x: {"w": np.array([x])}
    one = [(w(1.0), 2.0), (w(1.0), 1.0), (w(1.0), 3.0), (w(1.0), 9.0)]
    eight = [(w(1.0), 2.0), (w(1.5), 1.0), (w(9.0), 3.0), (w(9.0), 9.0)]
    assert devices.gap_before_divergence(one, eight) == (2, 0.5)



def test_damping_parses_its_pairs_and_counts_the_seeds_that_reach():
    from benchmarks import damping
    assert damping.parse_pair("mnist1d_mlp:momentum:0.1") == ("mnist1d_mlp", "momentum", 0.1,
                                                              "constant")
    assert damping.parse_pair("digits_mlp:adam:0.032:cosine")[3] == "cosine"
    for bad in ("mnist1d_mlp:momentum", "nope:sgd:1", "digits_mlp:sgd:1:linear",
                "digits_mlp:sgd:-1"):
        with pytest.raises((ValueError, argparse.ArgumentTypeError)):
            damping.parse_pair(bad)
    assert cli.parse_args("damping", ["--quick"]).seeds == 1
    assert cli.parse_args("damping", []).clock == "steps"
    config = damping.pair_config("digits_mlp", "sgd", 1.0, "cosine",
                                 cli.parse_args("damping", ["--clock", "rate"]))
    assert config.options["kga"] == {"clock": "rate"} and config.schedule == "cosine"
    assert config.extra_rows["kga_undamped"]["options"] == {"damp_oscillations": False,
                                                            "clock": "rate"}
    assert len(cli.parse_args("damping", []).pairs) == 24
    run = lambda final: {"train_loss": [1.0, final]}
    summary = lambda reached, ratios: dict(
        reached=reached, num_seeds=2, epochs_ratios=ratios,
        epochs_ratio_paired=dict(median=0.8, min=0.7, max=0.9),
        time_ratio_paired=dict(median=1.1, min=1.0, max=1.2))
    results = {"summary": {"kga": summary(2, [0.7, 0.9]), "kga_undamped": summary(1, [0.7, None])},
               "runs": {"base": [run(0.2), run(0.2)], "kga": [run(0.1), run(0.1)],
                        "kga_undamped": [run(0.3), run(0.3)]}}
    row = damping.pair_row("p", results)
    assert row["kga"]["worst"] == 0.9 and row["kga_undamped"]["worst"] is None
    table = damping.markdown([row])
    assert "| p | 2/2 | 0.80 [0.70-0.90] | 1.10 | 0.50 | 1/2 | 0.80 [0.70-n.r.] | 1.10 | 1.50 |" in table
    assert "kga: every seed reaches in 1/1 pairs (2/2 seeds)" in table
    assert "kga_undamped: every seed reaches in 0/1 pairs (1/2 seeds)" in table


def test_clock_runs_one_method_on_both_clocks_under_cosine():
    from benchmarks import clock
    args = cli.parse_args("clock", [])
    assert args.method == "pdt" and len(args.pairs) == 12
    assert all(p.endswith(":cosine") for p in args.pairs)
    with pytest.raises(SystemExit):
        cli.parse_args("clock", ["--method", "dogra"])
    config = clock.pair_config("mnist1d_mlp", "adam", 0.032, "cosine",
                               cli.parse_args("clock", ["--method", "kga"]))
    assert config.methods == ("kga",) and config.options["kga"] == {"clock": "steps"}
    assert config.extra_rows["kga_rate"]["options"] == {"clock": "rate"}
    assert config.extra_rows["kga_rate"]["learning_rate"] == 0.032
    assert config.schedule == "cosine" and config.seeds == 5
    pdt = clock.pair_config("digits_mlp", "sgd", 1.0, "cosine", cli.parse_args("clock", []))
    assert pdt.options["pdt"] == {"num_snapshots": 5, "clock": "steps"}
    assert pdt.extra_rows["pdt_rate"]["options"] == {"num_snapshots": 5, "clock": "rate"}
    six = clock.pair_config("digits_mlp", "sgd", 1.0, "cosine",
                            cli.parse_args("clock", ["--num-snapshots", "6"]))
    assert six.options["pdt"]["num_snapshots"] == 6
    assert six.extra_rows["pdt_rate"]["options"]["num_snapshots"] == 6


def test_clock_sets_pdts_horizon_in_both_rows():
    from benchmarks import clock
    args = cli.parse_args("clock", ["--num-snapshots", "6", "--horizon", "6"])
    config = clock.pair_config("digits_mlp", "sgd", 1.0, "cosine", args)
    assert config.options["pdt"]["horizon"] == 6 and config.options["pdt"]["num_snapshots"] == 6
    assert config.extra_rows["pdt_rate"]["options"]["horizon"] == 6
    assert clock._stem(args) == "pdt_h6_tau6"
    with pytest.raises(ValueError, match="horizon"):
        clock.run(cli.parse_args("clock", ["--method", "kga", "--horizon", "6"]))


def test_devices_job_trains_as_one_device_does():
    # The jax.distributed job of `benchmarks devices --processes 2` (2 processes x 4
    # CPU devices over 127.0.0.1): its trace per step, gathered from both processes,
    # against the one-device run. A job whose weights came from one process only, or
    # a step out of phase, leaves the one-device run by far more than round-off.
    from benchmarks import devices
    (trace, final_loss), = devices.job(["kga"], 3, 2)
    one = []
    weights, loss, _ = devices.train(devices.transformations()["kga"], 3, sharded=False,
                                     history=one)
    assert len(trace) == 3 and set(trace[-1][0]) == set(weights)
    scale = max(float(np.abs(v).max()) for v in weights.values())
    for (w_one, loss_one), (w_job, loss_job) in zip(one, trace):
        assert devices._gap(w_one, w_job, scale) <= 1e-5
        assert loss_job == pytest.approx(loss_one, rel=1e-5)
    assert final_loss == pytest.approx(loss, rel=1e-5)
    with pytest.raises(ValueError, match="processes"):
        devices.job(["kga"], 3, 3)
