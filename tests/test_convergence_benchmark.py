"""Tests of the convergence benchmark's orchestration and aggregation."""

import json
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


def test_harness_arguments_carry_the_task_and_lr_sweep():
    args = convergence.parse_args(["--tasks", "images_vit", "--bases", "adam"])
    argv = convergence.harness_argv("images_vit", "adam", args)
    flags = dict(zip(argv[::2], argv[1::2]))
    assert flags["--model"] == "vit" and flags["--size"] == "tiny"
    assert float(flags["--lr"]) == convergence.TASKS["images_vit"]["lr"]["adam"]
    assert flags["--base-lr-factors"] == "0.5,2"


def test_quick_run_writes_json_table_and_plot(tmp_path):
    out = convergence.main(["--quick", "--tasks", "digits_mlp", "--bases", "sgd",
                            "--methods", "kga,pdt", "--output-dir", str(tmp_path)])
    assert [r["method"] for r in out["rows"]] == ["kga", "pdt"]
    with open(tmp_path / "convergence.json") as f:
        assert len(json.load(f)["rows"]) == 2
    assert os.path.getsize(tmp_path / "convergence.png") > 0
    assert (tmp_path / "digits_mlp_sgd" / "results.json").exists()


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
