"""Tests of the convergence benchmark's orchestration and aggregation."""

import json
import math
import os

import pytest

pytest.importorskip("flax")
pytest.importorskip("matplotlib")

from benchmarks import convergence  # noqa: E402


def _summary(time, epochs, reached=5, acc=0.9, **extra):
    return dict(time_to_target=time, epochs_to_target=epochs, reached=reached, num_seeds=5,
                final_test_acc_mean=acc, **extra)


def test_rows_compare_with_the_fastest_base_learning_rate():
    summary = {
        "base": _summary(10.0, 30, time_ratio=1.0, epochs_ratio=1.0, test_acc_diff=0.0),
        "base@0.5*lr": _summary(None, None, reached=1),
        "base@2*lr": _summary(5.0, 15),
        "kga": _summary(6.0, 18, time_ratio=0.6, epochs_ratio=0.6, test_acc_diff=-0.003),
        "pdt": _summary(None, None, reached=2, time_ratio=None, epochs_ratio=None,
                        test_acc_diff=-0.02, rollbacks=3.0),
    }
    rows = convergence.rows_of("t", "sgd", summary)
    assert [r["method"] for r in rows] == ["kga", "pdt"]
    kga, pdt = rows
    assert kga["time_ratio_vs_best_lr"] == pytest.approx(6.0 / 5.0)
    assert kga["best_base_row"] == "base@2*lr"
    assert kga["test_acc_diff"] == pytest.approx(-0.3)
    assert kga["goal_met"]  # 0.6 <= 0.7 and 0.3 points <= 0.5
    assert pdt["time_ratio_vs_best_lr"] is None and not pdt["goal_met"]
    table = convergence.markdown_table(rows)
    lines = table.splitlines()
    assert len(lines) == 4 and all(line.count("|") == lines[0].count("|") for line in lines)
    assert "| 2/5 |" in lines[3] and "| no |" in lines[3]


def test_accuracy_loss_beyond_half_a_point_misses_the_goal():
    summary = {"base": _summary(10.0, 30, time_ratio=1.0, epochs_ratio=1.0),
               "kga": _summary(5.0, 15, time_ratio=0.5, epochs_ratio=0.5,
                               test_acc_diff=-0.006)}
    (row,) = convergence.rows_of("t", "adam", summary)
    assert not row["goal_met"]


def test_bad_task_list_is_an_error():
    with pytest.raises(SystemExit):
        convergence.build_parser().parse_args(["--tasks", "digits_mlp,nope"])


def test_task_config_carries_the_task_and_lr_sweep():
    args = convergence.parse_args(["--tasks", "images_vit", "--bases", "adam",
                                   "--methods", "kga,pdt"])
    config = convergence.task_config("images_vit", "adam", args)
    assert config.model == "vit" and config.size == "tiny" and config.epochs == 8
    assert config.learning_rate == convergence.TASKS["images_vit"]["lr"]["adam"]
    assert config.base_lr_factors == (0.5, 2.0) and config.methods == ("kga", "pdt")
    assert config.options == {"pdt": {"num_snapshots": 5}}
    assert config.schedule == "constant"
    cosine = convergence.parse_args(["--schedule", "cosine"])
    assert "images_vit" not in cosine.tasks and "digits_mlp" in cosine.tasks
    assert convergence.task_config("digits_mlp", "sgd", cosine).schedule == "cosine"
    assert convergence.pair_name("digits_mlp", "sgd", cosine) == "digits_mlp_sgd_cosine"


def test_quick_run_writes_json_table_and_plot(tmp_path):
    out = convergence.main(["--quick", "--no-progress", "--tasks", "digits_mlp", "--bases",
                            "sgd", "--methods", "kga", "--output-dir", str(tmp_path)])
    assert [r["method"] for r in out["rows"]] == ["kga"]
    with open(tmp_path / "convergence.json") as f:
        assert len(json.load(f)["rows"]) == 1
    assert os.path.getsize(tmp_path / "convergence.png") > 0
    assert (tmp_path / "digits_mlp_sgd" / "results.json").exists()
    assert "| accepted | masked |" in (tmp_path / "convergence.md").read_text()


def test_old_masked_ratio_is_read_as_the_right_fraction():
    summary = {"base": _summary(10.0, 30, time_ratio=1.0, epochs_ratio=1.0),
               "kga_kwm": _summary(5.0, 15, time_ratio=0.5, epochs_ratio=0.5, masked_ratio=0.4),
               "pdt": _summary(5.0, 15, time_ratio=0.5, epochs_ratio=0.5, masked_ratio=0.2),
               "tano": _summary(5.0, 15, time_ratio=0.5, epochs_ratio=0.5, accepted_ratio=0.3)}
    kwm, pdt, tano = convergence.rows_of("t", "sgd", summary)
    assert kwm["masked_fraction"] == 0.4 and kwm["accepted_ratio"] is None
    assert pdt["accepted_ratio"] == 0.2 and pdt["masked_fraction"] is None
    assert tano["accepted_ratio"] == 0.3


# ------------------------------------------------------------------- --tune (fake runs)
OPTIMUM = 4.0   # the fake base is best at 4x the configured rate


def _fake_results(config):
    """Results of train_and_evaluate as a function of the rate: the base's best loss
    is 1 + log2(rate / (OPTIMUM * start))^2; a method reaches the base's in half
    the epochs at 1.2x the epoch time."""
    from examples import report
    from examples.train import base_lr_name

    lrs = convergence.TASKS["digits_mlp"]["lr"]
    rates = {"base": config.learning_rate,
             **{base_lr_name(f): config.learning_rate * f for f in config.base_lr_factors}}
    rates.update({n: r["learning_rate"] for n, r in config.extra_rows.items()})
    optimizers = {n: r["optimizer"] for n, r in config.extra_rows.items()}
    names = config.row_names()
    epochs = 6

    def runs(name):
        # A schedule-free row (or run) is best at OPTIMUM times Adam's rate; the
        # control at beta 1 is as fast as a method, at other betas as the base.
        start = lrs.get(optimizers.get(name, config.optimizer), lrs["adam"])
        floor = 1.0 + math.log2(rates.get(name, config.learning_rate) / (OPTIMUM * start)) ** 2
        slow = name in rates and name not in ("control@1", "schedule_free_adamw")
        speed, seconds = (1, 1.0) if slow else (2, 1.2)
        return [dict(seed=s, train_loss=[floor + max(0, epochs - speed * (e + 1)) for e in
                                         range(epochs)],
                     train_acc=[0.9] * epochs, test_loss=[1.0] * epochs,
                     test_acc=[0.9] * epochs, epoch_time=[seconds] * epochs,
                     diagnostics=[{}] * epochs) for s in range(config.seeds)]

    results = dict(names=names, seeds=list(range(config.seeds)), steps_per_epoch=10,
                   info={n: dict(compile_time=0.1, flops_per_step=None,
                                 learning_rate=rates.get(n, config.learning_rate))
                         for n in names},
                   runs={n: runs(n) for n in names})
    results["summary"] = report.summarize(results)
    return report.sanitize(results)


def _fake_training(monkeypatch):
    """Replaces the suite's training by :func:`_fake_results`; returns the calls made."""
    calls = []

    def fake(config, workdir):
        calls.append((config, workdir))
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(_fake_results(config), f)

    monkeypatch.setattr(convergence, "train_and_evaluate", fake)
    return calls


def test_tune_sweeps_to_the_interior_best_and_reports_against_it(tmp_path, monkeypatch):
    calls = _fake_training(monkeypatch)
    argv = ["--tune", "--tasks", "digits_mlp", "--bases", "sgd", "--methods", "kga",
            "--seeds", "3", "--no-plots", "--no-alternatives", "--output-dir", str(tmp_path)]
    out = convergence.main(argv)
    start = convergence.TASKS["digits_mlp"]["lr"]["sgd"]
    rates = [c.learning_rate for c, _ in calls]
    # Default-rate run (start, start/2, 2 start: the sweep's first three points), then
    # the base alone at 4x and 8x start, then every method on top of 4x start.
    assert rates == [start, 4 * start, 8 * start, 4 * start]
    assert [c.methods for c, _ in calls] == [("kga",), (), (), ("kga",)]
    assert calls[-1][0].base_lr_factors == () and calls[-1][1].endswith("digits_mlp_sgd_tuned")
    (sweep,) = out["tuned"]["sweeps"]
    assert sweep["learning_rate"] == 4 * start and sweep["interior"]
    (row,) = out["tuned"]["rows"]
    assert row["method"] == "kga" and row["learning_rate"] == 4 * start
    # Base reaches its best at epoch 6 (6 s); kga at epoch 3 (3.6 s): per seed.
    assert row["epochs_ratio"] == row["epochs_ratio_min"] == row["epochs_ratio_max"] == 0.5
    assert row["time_ratio"] == pytest.approx(0.6)
    (total,) = out["tuned"]["totals"]
    assert total["median_time_ratio"] == pytest.approx(0.6) and total["goal_met"]
    text = (tmp_path / "tuned.md").read_text()
    assert "| digits_mlp | sgd | 2 (0.5) | kga | 3/3 | 0.60 [0.60-0.60] | 0.50" in text
    assert "## Secondary view: the default rate" in text and "| kga | 1 | 0.60 |" in text
    saved = json.loads((tmp_path / "tuned.json").read_text())
    assert saved["rows"][0]["time_ratio"] == pytest.approx(0.6)
    assert len(saved["default_rate_rows"]) == 1
    # A second invocation reuses every run on disk.
    calls.clear()
    assert convergence.main(argv)["tuned"]["rows"] == out["tuned"]["rows"]
    assert calls == []


def test_tune_adds_the_control_and_schedule_free_rows(tmp_path, monkeypatch):
    from examples.methods import SCHEDULE_FREE

    calls = _fake_training(monkeypatch)
    argv = ["--tune", "--tasks", "digits_mlp", "--bases", "sgd", "--methods", "kga",
            "--seeds", "3", "--no-plots", "--output-dir", str(tmp_path)]
    out = convergence.main(argv)
    start = convergence.TASKS["digits_mlp"]["lr"]["sgd"]
    adam = convergence.TASKS["digits_mlp"]["lr"]["adam"]
    # The base's sweep and tuned run as before; then schedule-free AdamW's sweep from
    # Adam's rate (best at 4x; the walk asks 2x first), then one run of the control's
    # betas and SF beside the base.
    assert [c.learning_rate for c, _ in calls[:4]] == [start, 4 * start, 8 * start, 4 * start]
    sweep_calls = calls[4:-1]
    assert all(c.optimizer == SCHEDULE_FREE and c.methods == () for c, _ in sweep_calls)
    assert [c.learning_rate for c, _ in sweep_calls] == [2 * adam, adam, 4 * adam, 8 * adam]
    alternatives, workdir = calls[-1]
    assert workdir.endswith("digits_mlp_sgd_alternatives") and alternatives.methods == ()
    assert alternatives.optimizer == "sgd" and alternatives.learning_rate == 4 * start
    assert list(alternatives.extra_rows) == ["control@0.5", "control@1", "control@2",
                                             SCHEDULE_FREE]
    assert alternatives.extra_rows[SCHEDULE_FREE]["learning_rate"] == 4 * adam
    rows = {r["method"]: r for r in out["tuned"]["rows"]}
    assert list(rows) == ["kga", "control", SCHEDULE_FREE]
    assert rows["control"]["beta"] == 1.0 and rows["control"]["epochs_ratio"] == 0.5
    assert rows["control"]["learning_rate"] == 4 * start
    assert rows[SCHEDULE_FREE]["learning_rate"] == 4 * adam
    assert rows[SCHEDULE_FREE]["default_learning_rate"] == adam
    assert rows[SCHEDULE_FREE]["interior"]
    assert [s["base"] for s in out["tuned"]["sweeps"]] == ["sgd", SCHEDULE_FREE]
    text = (tmp_path / "tuned.md").read_text()
    assert "| control (beta 1) | 3/3 |" in text and "second run beside the tuned base" in text
    assert f"| digits_mlp | {SCHEDULE_FREE} | {adam:g} | {4 * adam:g} | yes |" in text
    assert {t["method"] for t in out["tuned"]["totals"]} == {"kga", "control", SCHEDULE_FREE}
    # Rerun: everything comes from disk.
    calls.clear()
    assert convergence.main(argv)["tuned"]["rows"] == out["tuned"]["rows"]
    assert calls == []


def test_rates_from_an_earlier_sweep_run_only_the_tuned_rate(tmp_path, monkeypatch):
    from examples.methods import SCHEDULE_FREE

    calls = _fake_training(monkeypatch)
    common = ["--tune", "--tasks", "digits_mlp", "--bases", "sgd", "--methods", "kga",
              "--seeds", "3", "--no-plots"]
    convergence.main(common + ["--output-dir", str(tmp_path / "first")])
    first = [(c.learning_rate, c.optimizer) for c, _ in calls]
    calls.clear()
    out = convergence.main(common + ["--output-dir", str(tmp_path / "again"), "--rates-from",
                                     str(tmp_path / "first" / "tuned.json")])
    start = convergence.TASKS["digits_mlp"]["lr"]["sgd"]
    adam = convergence.TASKS["digits_mlp"]["lr"]["adam"]
    # No sweep, no default-rate run: the tuned run and the alternatives, at the rates found.
    assert [(c.learning_rate, c.methods) for c, _ in calls] == [(4 * start, ("kga",)),
                                                                (4 * start, ())]
    assert calls[1][0].extra_rows[SCHEDULE_FREE]["learning_rate"] == 4 * adam
    assert len(first) > len(calls)
    assert [r["method"] for r in out["tuned"]["rows"]] == ["kga", "control", SCHEDULE_FREE]
    assert "Secondary view" not in (tmp_path / "again" / "tuned.md").read_text()
    with pytest.raises(ValueError, match="schedule"):
        convergence.main(common + ["--schedule", "cosine", "--output-dir", str(tmp_path / "x"),
                                   "--rates-from", str(tmp_path / "first" / "tuned.json")])
    with pytest.raises(ValueError, match="no sweep of digits_mlp x adam"):
        convergence.main(common[:4] + ["adam"] + common[5:] + [
            "--output-dir", str(tmp_path / "y"), "--rates-from",
            str(tmp_path / "first" / "tuned.json")])
    with pytest.raises(SystemExit):
        convergence.parse_args(["--rates-from", "x.json"])


def test_method_totals_and_goals():
    rows = [dict(method="kga", time_ratio=t, epochs_ratio=e, test_acc_diff=a)
            for t, e, a in [(0.7, 0.6, 0.1), (0.8, 0.7, -0.2), (1.0, 0.5, 0.0)]]
    (total,) = convergence.method_totals(rows)
    assert total["median_time_ratio"] == 0.8 and total["median_epochs_ratio"] == 0.6
    assert total["worst_time_ratio"] == 1.0 and total["acc_within"] == 3
    assert not total["goal_met"]     # median time 0.8 > 0.75
    rows = [dict(r, time_ratio=0.7) for r in rows] + [
        dict(method="kga", time_ratio=None, epochs_ratio=None, test_acc_diff=None)]
    (total,) = convergence.method_totals(rows)
    assert total["worst_time_ratio"] == float("inf") and not total["goal_met"]


def _write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def test_goals_report_reads_the_suite_json(tmp_path):
    from benchmarks import goals

    row = dict(task="t", base="sgd", method="kga", time_ratio=0.6, goal_met=True)
    _write(tmp_path / "convergence" / "convergence.json",
           dict(rows=[row, dict(row, base="adam", time_ratio=None, goal_met=False),
                      dict(row, method="pdt", time_ratio=0.9, goal_met=False)]))
    point = dict(refresh_over_pass=0.2, num_params=1000, num_snapshots=6)
    _write(tmp_path / "overhead.json", dict(sections=dict(
        models=dict(base="adam", batch=32, results=[
            dict(model="mlp", num_params=10, methods=dict(kga=dict(ratio=1.04)))]),
        params=dict(points=[point, dict(point, refresh_over_pass=3.5)]),
        masks=dict(ratio_kga=1.5, steps_per_block=100, points=[
            dict(masked_fraction=0.5, overhead_reduction=1.5, ratio=1.3),
            dict(masked_fraction=0.91, overhead_reduction=4.0, ratio=1.1)]))))
    text = goals.main(["--results-dir", str(tmp_path)])
    lines = text.splitlines()
    conv = next(line for line in lines if line.startswith("- time to"))
    assert "**not met** for kga" in conv  # one kga run missed the target
    assert "  - kga: 1/2 runs; median time ratio 0.60x; target not reached in 1" in lines
    step = next(line for line in lines if line.startswith("- KGA-Epoch"))
    assert ": met:" in step and "1.04x" in step
    refresh = next(line for line in lines if line.startswith("- DMD refresh"))
    assert "**not met**" in refresh and "3.50x" in refresh
    mask = next(line for line in lines if "90 %" in line)
    assert ": met:" in mask and "4.00x at masked fraction 0.910" in mask
    assert "optimizer-state memory: not measured" in text
    assert (tmp_path / "goals.md").read_text() == text
