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
