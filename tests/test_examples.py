"""The example scripts run end to end with small arguments."""

import math
import os
import subprocess
import sys

import pytest

pytest.importorskip("flax")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_plain_jax_loop():
    from examples import plain_jax_loop

    curves = plain_jax_loop.main(["--epochs", "3", "--num-points", "256",
                                  "--num-snapshots", "3"])
    assert set(curves) == {"sgd", "sgd+kga"}
    assert all(len(c) == 3 and all(math.isfinite(v) for v in c) for c in curves.values())
    # Identical until KGA's window is full (2 epochs with num_snapshots=3).
    assert curves["sgd"][0] == curves["sgd+kga"][0]


def test_nnx_optimizer():
    from examples import nnx_optimizer

    history = nnx_optimizer.main(["--epochs", "1"])
    assert len(history) == 1 and math.isfinite(history[0])


def test_linen_train_state_as_script():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "linen_train_state.py"),
         "--epochs", "1", "--pass-loss"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "test accuracy" in proc.stdout
