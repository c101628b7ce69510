"""Smoke tests of ``benchmarks.reproduction`` (the commands of REPRODUCTION.md).

One cheap row runs in ``--quick`` mode into a temporary directory (about 10 s
on 2 CPU cores); the rest checks the row table and the runner's bookkeeping
without training anything.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import reproduction


def test_rows_are_unique_and_resolve():
    ids = [r.id for r in reproduction.ROWS]
    assert len(ids) == len(set(ids))
    assert any(r.cheap for r in reproduction.ROWS)
    for row in reproduction.ROWS:
        assert callable(reproduction._resolve(row.argv[0])), row.id
        assert "--output-dir" not in row.argv, row.id  # the runner adds it


def test_quick_variance_row(tmp_path):
    statuses = reproduction.main(["--quick", "--rows", "kga_fig14_variance",
                                  "--output-dir", str(tmp_path)])
    assert [s["id"] for s in statuses] == ["kga_fig14_variance"]
    assert statuses[0]["ok"], statuses[0]["error"]
    record = json.loads((tmp_path / "kga_fig14_variance" / "variance.json").read_text())
    cfg = record["config"]
    (seed,) = record["seeds"]
    assert len(seed["train_loss"]) == cfg["epochs"]
    assert len(seed["pod"]) == len(seed["dmd"]) == cfg["epochs"]
    assert len(seed["raw"]) == cfg["epochs"] + 1
    for key in ("pod", "dmd", "raw"):
        vals = np.array(seed[key], dtype=float)
        assert np.all((vals >= -1e-6) & (vals <= 1 + 1e-6)), key
    # The window's own increments lie in its POD basis; its raw snapshots in the raw basis.
    own = slice(cfg["start"], cfg["start"] + cfg["window"] - 1)
    np.testing.assert_allclose(seed["pod"][own], 1.0, atol=1e-3)
    np.testing.assert_allclose(seed["raw"][cfg["start"]:cfg["start"] + cfg["window"]], 1.0,
                               atol=1e-6)
    summary = (tmp_path / "summary.md").read_text()
    assert "kga_fig14_variance" in summary and "POD basis" in summary
    # The row's table is kept next to its files, for summaries rebuilt without them.
    table = (tmp_path / "kga_fig14_variance" / "table.md").read_text()
    assert table.strip() in summary
    (tmp_path / "kga_fig14_variance" / "variance.md").unlink()
    reproduction.main(["--collect", "--output-dir", str(tmp_path)])
    assert table.strip() in (tmp_path / "summary.md").read_text()
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["kga_fig14_variance"]["ok"]


def test_raw_weight_fractions_match_a_direct_projection():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(50, 3)))[0]
    weights = rng.normal(size=(8, 3)) @ basis.T
    weights[6:] += rng.normal(size=(2, 50))        # the last two leave the subspace
    got = reproduction.raw_weight_fractions(weights, start=0, window=3)
    u = np.linalg.svd(weights[:3].T, full_matrices=False)[0]
    want = [np.sum((u @ (u.T @ w)) ** 2) / np.sum(w ** 2) for w in weights]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_allclose(got[:6], 1.0, rtol=1e-10)
    assert np.all(got[6:] < 1.0)


def test_a_failing_row_is_reported_and_the_others_run(tmp_path, monkeypatch):
    calls = []

    def boom(argv):
        raise RuntimeError("no such data")

    def fine(argv):
        calls.append(argv)

    monkeypatch.setattr(reproduction, "_resolve", lambda target: boom if target == "x" else fine)
    monkeypatch.setattr(reproduction, "ROWS_BY_ID", {
        "bad": reproduction.Row("bad", ("x",)), "good": reproduction.Row("good", ("y", "--a"))})
    statuses = reproduction.main(["--rows", "bad,good", "--output-dir", str(tmp_path)])
    assert [s["ok"] for s in statuses] == [False, True]
    assert "no such data" in statuses[0]["error"]
    assert calls == [["--a", "--output-dir", str(tmp_path / "good")]]


def test_unknown_row_is_a_usage_error():
    with pytest.raises(SystemExit):
        reproduction.main(["--rows", "no_such_row"])


# ------------------------------------------------------------------- masked fraction (R3)
def _harness_results(diagnostics_per_seed, num_epochs):
    def run(diags):
        return dict(seed=0, train_loss=[1.0] * num_epochs, diagnostics=diags)
    return dict(runs={"base": [run([{}] * num_epochs) for _ in diagnostics_per_seed],
                      "kga_kwm": [run(d) for d in diagnostics_per_seed]})


def test_masked_table_gives_the_masked_and_accelerated_fraction_per_epoch():
    # 100 weights, capacity for 40: before the decision (epochs 1-2) every weight is
    # accelerated; then the criterion masks 20 (seed 0) or 30 (seed 1) and 40 fit.
    def seed(masked):
        before = dict(masked_fraction=0.0, num_kept=0, num_overflow=0)
        after = dict(masked_fraction=masked, num_kept=40, num_overflow=60 - round(100 * masked))
        return [before, before, after, after]
    table = reproduction.masked_table(_harness_results([seed(0.2), seed(0.3)], 4),
                                      epochs=(1, 3, 4, 30))
    lines = table.splitlines()
    assert "after epoch 30" not in table  # past the run
    assert lines[-2] == ("| kga_kwm: masked | 0.00 [0.00, 0.00] | 0.25 [0.20, 0.30] "
                         "| 0.25 [0.20, 0.30] |")
    assert lines[-1] == ("| kga_kwm: accelerated | 1.00 [1.00, 1.00] | 0.40 [0.40, 0.40] "
                         "| 0.40 [0.40, 0.40] |")
    # A run shorter than every epoch asked for shows its last epoch.
    short = reproduction.masked_table(_harness_results([seed(0.2)], 4), epochs=(5, 10))
    assert "| after epoch 4 |" in short and "0.20 [0.20, 0.20]" in short
    # A harness table (a PDT row) without masks gets no masked table.
    assert reproduction.masked_table(_harness_results([[{"accepted_ratio": 0.3}] * 4], 4)) == ""


def test_accelerated_fraction_matches_a_masked_kga_state():
    import jax
    import jax.numpy as jnp
    import optax

    import koopax
    from examples import methods

    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=1000), jnp.float32), "b": jnp.zeros(20)}
    n = 1020
    # The norm criterion keeps ~500 weights of w (none of b); a capacity of 0.3 gives w
    # 384 slots, so ~116 overflow.
    mask = koopax.masks.norm(float(np.median(np.abs(np.asarray(params["w"])))), capacity=0.3)
    tx = optax.chain(optax.sgd(0.1), koopax.masked_kga(mask, snapshot_every=1, rollback=False,
                                                       num_snapshots=3))
    state = tx.init(params)
    for _ in range(5):
        grads = jax.tree.map(lambda w: 0.01 * w, params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    diag = methods.read_diagnostics(state)
    assert diag["num_overflow"] > 0 and 0.0 < diag["masked_fraction"] < 1.0
    assert reproduction.accelerated_fraction(diag) == pytest.approx(diag["num_kept"] / n,
                                                                    rel=1e-6)
    assert diag["num_kept"] / n < 1.0 - diag["masked_fraction"]


# ------------------------------------------------------------------- mask runtimes (K7)
def test_mask_runtime_row_runs_every_mask_and_stays_quick():
    from benchmarks import overhead

    row = reproduction.ROWS_BY_ID["kga_table1_mask_runtimes"]
    assert row.argv[0] == "benchmarks.overhead" and not row.cheap
    args = overhead.parse_args(list(row.argv[1:]))
    assert args.models == ["alexnet", "fcn"] and args.sections == ["models"]
    assert args.methods == ["kga", "kga_norm", "kga_delta", "kga_kwm"]
    quick = overhead.parse_args(list(row.argv[1:]) + list(row.quick))
    assert quick.models == ["mlp"] and quick.quick and quick.steps <= 3
    assert quick.methods == args.methods


def test_overhead_table_reads_the_models_section():
    stats = dict(ms_per_step=2.0, ratio=1.25, ratio_best=1.1, ratio_paired=1.2,
                 ratio_paired_min=1.0, ratio_paired_max=1.5,
                 diagnostics=dict(masked_fraction=0.3, num_kept=50))
    data = dict(environment=dict(platform="cpu", cpus_available=2, cpu_count=2),
                sections=dict(models=dict(
                    base="adam", batch=16, steps_per_block=100, num_snapshots=6,
                    mask_capacity=0.5, config=dict(repeats=9),
                    results=[dict(model="alexnet", num_params=100,
                                  base=dict(ms_per_step=1.6),
                                  methods=dict(kga_norm=stats),
                                  mask_thresholds=dict(norm=0.05, delta=1e-3))])))
    table = reproduction.overhead_table(data)
    assert "| | kga_norm | 2.00 | 1.250 | 1.200 [1.000, 1.500] | 1.100 | 0.30 | 0.50 |" in table
    assert "alexnet norm 0.05, delta 0.001" in table and "9 interleaved repeats" in table
