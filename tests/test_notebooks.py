"""Executes the jupytext notebooks of notebooks/ in quick mode (KOOPAX_NB_QUICK=1)."""

import os

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

import koopax  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")


def _execute(name, monkeypatch):
    monkeypatch.setenv("KOOPAX_NB_QUICK", "1")
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = jupytext.read(os.path.join(NOTEBOOKS, name))
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": NOTEBOOKS}})
    client.execute()
    return nb


@pytest.mark.parametrize("name", ["analyses.py", "kga_vs_optax.py", "training_dynamics.py"])
def test_notebook_runs(name, monkeypatch):
    nb = _execute(name, monkeypatch)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)


def test_pdt_notebook(monkeypatch):
    if not callable(getattr(koopax, "pdt", None)):
        pytest.skip("koopax.pdt is not available")
    nb = _execute("pdt_masked_prediction.py", monkeypatch)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)
