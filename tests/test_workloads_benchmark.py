"""Smoke test of ``python -m benchmarks.workloads --quick`` (tiny models; about a minute
on 2 CPU cores, most of it compiling)."""

import json

import pytest

pytest.importorskip("flax")
pytest.importorskip("matplotlib")

from benchmarks import workloads  # noqa: E402


def test_defaults_and_configs():
    args = workloads.parse_args([])
    assert args.tasks == ["char_lm", "vit"] and args.bases == ["adamw_warmup_cosine", "adam"]
    assert args.methods == ["kga", "pdt"] and args.seeds == 5 and args.betas == (0.5, 1.0, 2.0)
    config = workloads.final_config("char_lm", "adamw_warmup_cosine", args, learning_rate=1e-3,
                                    sf_rate=4e-3, beta=2.0)
    assert (config.dataset, config.model, config.size) == ("text", "transformer", "full")
    assert (config.optimizer, config.schedule) == ("adamw", "warmup_cosine")
    assert (config.batch_size, config.epochs, config.steps_per_epoch) == (32, 30, 50)
    assert config.target == "test_loss" and config.seeds == 5
    assert config.row_names() == ["base", "kga", "pdt", "control", "schedule_free_adamw",
                                  "schedule_free_adamw+kga"]
    assert config.options == {"control": {"beta": 2.0}}
    assert config.extra_rows["schedule_free_adamw+kga"]["learning_rate"] == 4e-3
    vit = workloads.task_config("vit", "adam", args, learning_rate=1e-3)
    assert (vit.dataset, vit.model, vit.optimizer, vit.schedule) == ("digits", "vit", "adam",
                                                                     "constant")
    with pytest.raises(SystemExit):
        workloads.parse_args(["--methods", "control"])   # the control is always a row


def test_quick_run_writes_json_and_markdown_and_reuses_runs(tmp_path, monkeypatch):
    argv = ["--quick", "--no-progress", "--no-plots", "--tasks", "vit", "--bases",
            "adamw_warmup_cosine", "--methods", "kga", "--betas", "1,2",
            "--output-dir", str(tmp_path)]
    out = workloads.main(argv)
    rows = {r["row"]: r for r in out["rows"]}
    assert list(rows) == ["base", "kga", "control", "schedule_free_adamw",
                          "schedule_free_adamw+kga"]
    assert rows["base"]["steps_ratio"] == 1.0 and rows["base"]["final_val_loss_diff"] == 0.0
    assert rows["control"]["learning_rate"] == rows["base"]["learning_rate"]
    assert rows["schedule_free_adamw+kga"]["learning_rate"] == \
        rows["schedule_free_adamw"]["learning_rate"]
    assert all(r["compile_time"] > 0 and r["seeds"] == 1 for r in rows.values())
    (tuning,) = out["tuning"]
    assert tuning["beta"]["beta"] in (1.0, 2.0) and len(tuning["base_sweep"]["scores"]) >= 2
    saved = json.loads((tmp_path / "workloads.json").read_text())
    assert len(saved["rows"]) == 5 and saved["target"] == "test_loss"
    text = (tmp_path / "workloads.md").read_text()
    assert "| vit | adamw_warmup_cosine | schedule_free_adamw+kga |" in text
    assert "control beta" in text and "best validation loss" in text
    assert (tmp_path / "vit_adamw_warmup_cosine" / "final" / "results.json").exists()
    assert (tmp_path / "vit_schedule_free_adamw_warmup_cosine" / "sweep").is_dir()

    # A second invocation trains nothing: every run is on disk.
    def no_training(config, workdir):
        raise AssertionError(f"retrained {workdir}")

    monkeypatch.setattr("benchmarks.convergence.train_and_evaluate", no_training)
    assert workloads.main(argv)["rows"] == out["rows"]


def test_results_lacking_a_row_are_trained_again(tmp_path, monkeypatch):
    args = workloads.parse_args(["--output-dir", str(tmp_path)])
    config = workloads.task_config("vit", "adam", args, methods=("kga",))
    (tmp_path / "results.json").write_text(json.dumps({"names": ["base"]}))
    trained = []

    def fake(config, workdir):
        trained.append(workdir)
        (tmp_path / "results.json").write_text(json.dumps({"names": config.row_names()}))

    monkeypatch.setattr("benchmarks.convergence.train_and_evaluate", fake)
    assert workloads.run_or_load(config, str(tmp_path), args)["names"] == ["base", "kga"]
    assert trained == [str(tmp_path)]
    workloads.run_or_load(config, str(tmp_path), args)     # complete now: loaded
    assert trained == [str(tmp_path)]
    # The convergence suite keeps loading what is on disk.
    more = config.replace(methods=("kga", "pdt"))
    assert workloads.convergence.run_or_load(more, str(tmp_path), args)["names"] == [
        "base", "kga"]
    assert trained == [str(tmp_path)]
