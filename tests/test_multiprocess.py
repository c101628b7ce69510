"""Two JAX processes (``jax.distributed`` over 127.0.0.1, CPU collectives) train
as one process on one device does, and koopax's state stays sharded.

``tests/multiprocess_worker.py`` is one process of the job: 2 processes x 2 CPU
devices, a global ``("data", "model")`` mesh, the weight matrix split over
``"model"``, the batch over ``"data"``; KGA and PDT each train a least-squares
problem for 12 steps (KGA refreshes its DMD, PDT jumps). This test runs the
same training on one device and compares parameters, losses and diagnostics.

Bounded in time: the children are killed with SIGKILL (JAX's preemption
notifier catches SIGTERM) when they log nothing for ``STALL_S`` (a hang in a
collective) or the job exceeds ``TIMEOUT_S``.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import multiprocess_worker as worker
from helpers import max_eigenvalue_mismatch

NUM_PROCESSES, DEVICES_PER_PROCESS = 2, 2
# The job takes 15-30 s on 2 cores (the one-device reference runs meanwhile), 60 s
# when other work shares them: a step or a compilation that logs nothing for
# STALL_S is a hang; TIMEOUT_S bounds the whole job.
STALL_S = float(os.environ.get("KOOPAX_MULTIPROCESS_STALL_S", 40))
TIMEOUT_S = float(os.environ.get("KOOPAX_MULTIPROCESS_TIMEOUT_S", 120))
WORKER = Path(worker.__file__).resolve()
ROOT = Path(__file__).resolve().parents[1]
FLAG = "--xla_force_host_platform_device_count"


def _free_port():
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    except OSError as err:
        pytest.skip(f"cannot bind a local TCP port for jax.distributed: {err}")


def _child_env():
    env = dict(os.environ)
    # conftest.py asks for 8 devices in this process; the children get their own count.
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(FLAG)]
    env["XLA_FLAGS"] = " ".join(flags + [f"{FLAG}={DEVICES_PER_PROCESS}"])
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _output_size(paths):
    return sum(p.stat().st_size for p in paths if p.exists())


def _run_job(out_dir, while_running=lambda: None):
    """Runs the processes, calling ``while_running()`` meanwhile; returns its
    result and the processes' ``(returncode, output)`` pairs.

    The children log every step to a file. They are killed (SIGKILL: JAX's
    preemption notifier catches SIGTERM) when no log line has come for
    ``STALL_S`` (a hang) or the job has run ``TIMEOUT_S``.
    """
    port, env = _free_port(), _child_env()
    logs = [out_dir / f"process_{i}.log" for i in range(NUM_PROCESSES)]
    procs = []
    try:
        for i, log in enumerate(logs):
            with open(log, "w") as sink:
                procs.append(subprocess.Popen(
                    [sys.executable, str(WORKER), str(port), str(NUM_PROCESSES), str(i),
                     str(out_dir)], cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT))
        start = time.monotonic()
        meanwhile = while_running()
        size, progress = _output_size(logs), time.monotonic()
        while any(proc.poll() is None for proc in procs):
            now = time.monotonic()
            if _output_size(logs) != size:
                size, progress = _output_size(logs), now
            if now - progress > STALL_S or now - start > TIMEOUT_S:
                why = (f"no progress for {now - progress:.0f} s" if now - progress > STALL_S
                       else f"over {TIMEOUT_S:g} s")
                for proc in procs:
                    proc.kill()
                    proc.wait()
                pytest.fail(f"the {NUM_PROCESSES}-process job was killed, {why} (a hang, or "
                            "a very loaded machine: KOOPAX_MULTIPROCESS_TIMEOUT_S / _STALL_S "
                            "raise the bounds); outputs:\n"
                            + "\n----\n".join(log.read_text()[-3000:] for log in logs))
            time.sleep(0.2)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return meanwhile, [(proc.returncode, log.read_text()) for proc, log in zip(procs, logs)]


def _one_device_reference():
    """The same training in this process, on one device."""
    params, x, y = worker.problem()
    device = jax.devices()[0]
    put = lambda a: jax.device_put(jnp.asarray(a), device)  # noqa: E731
    out = {}
    for name, tx in worker.optimizers().items():
        final, state, losses = worker.train(tx, jax.tree.map(put, params), put(x), put(y))
        out[name] = {"params": jax.tree.map(np.asarray, final),
                     "diagnostics": jax.tree.map(np.asarray, worker.diagnostics(name, state)),
                     "losses": np.asarray(jnp.stack(losses))}
    return out


@pytest.fixture(scope="module")
def job_and_reference(tmp_path_factory):
    """The job's per-process results and the one-device reference (computed
    here while the job runs: the two share the CPU cores, not the wait)."""
    out_dir = tmp_path_factory.mktemp("multiprocess")
    reference, results = _run_job(out_dir, _one_device_reference)
    if any(code == worker.SKIP_STATUS for code, _ in results):
        reason = next(out for code, out in results if code == worker.SKIP_STATUS)
        pytest.skip("no local jax.distributed CPU job on this machine:\n" + reason[-2000:])
    for i, (code, out) in enumerate(results):
        assert code == 0, f"process {i} exited with {code}:\n{out[-6000:]}"
    return [dict(np.load(out_dir / f"process_{i}.npz")) for i in range(NUM_PROCESSES)], reference


@pytest.fixture(scope="module")
def job(job_and_reference):
    return job_and_reference[0]


@pytest.fixture(scope="module")
def reference(job_and_reference):
    return job_and_reference[1]


def test_the_job_spans_processes_and_devices(job):
    for result in job:
        assert int(result["num_processes"]) == NUM_PROCESSES
        assert int(result["num_devices"]) == NUM_PROCESSES * DEVICES_PER_PROCESS


@pytest.mark.parametrize("name", sorted(worker.optimizers()))
def test_multiprocess_training_matches_one_device(job, reference, name):
    ref = reference[name]
    for i, result in enumerate(job):
        # Issue 20's goal: max |w_job - w_1| <= 1e-5 max |w_1|. Float32 sums in
        # another order (sharded): measured 1.1e-7 (KGA) and 2.2e-7 (PDT, 1e-5
        # before its tapered prediction floor); a 1% change of one process's data
        # moves the weights by 1e-2.
        scale = max(float(np.abs(v).max()) for v in ref["params"].values())
        for key, value in ref["params"].items():
            gap = float(np.abs(result[f"{name}/params/{key}"] - value).max()) / scale
            assert gap <= 1e-5, f"process {i}, params[{key!r}]: relative gap {gap:.2g}"
        np.testing.assert_allclose(result[f"{name}/losses"], ref["losses"], rtol=1e-4,
                                   err_msg=f"process {i}, losses")
        for key, value in ref["diagnostics"].items():
            got = result[f"{name}/diagnostics/{key}"]
            if np.iscomplexobj(value):
                # A conjugate pair may come in either order (moduli equal to round-off).
                for row_got, row_ref in zip(np.atleast_2d(got), np.atleast_2d(value)):
                    assert max_eigenvalue_mismatch(row_got, row_ref) < 1e-3, (
                        f"process {i}, {key}: {got} vs {value}")
            elif np.issubdtype(value.dtype, np.inexact):
                np.testing.assert_allclose(got, value, rtol=1e-4, atol=1e-4,
                                           err_msg=f"process {i}, {key}")
            else:
                np.testing.assert_array_equal(got, value, err_msg=f"process {i}, {key}")
    # The run did what the comparison is about: DMD refreshes / PDT jumps.
    if name == "kga":
        assert int(ref["diagnostics"]["num_refreshes"]) > 0
    else:
        assert int(ref["diagnostics"]["num_jumps"]) > 0
    assert np.all(np.isfinite(ref["losses"])) and ref["losses"][-1] < ref["losses"][0]


@pytest.mark.parametrize("name", sorted(worker.optimizers()))
def test_state_stays_sharded_across_processes(job, name):
    for i, result in enumerate(job):
        # Eager tx.init(params) follows the parameters' shardings: every state
        # buffer shaped like the split weight matrix is split too, at init and
        # after training; jit(tx.init) with those out_shardings agrees.
        assert int(result[f"{name}/init_carried"]) > 0, f"process {i}: no weight-shaped state"
        unsplit = str(result[f"{name}/init_unsplit"])
        assert not unsplit, f"process {i}: not split at init: {unsplit}"
        unsplit = str(result[f"{name}/final_unsplit"])
        assert not unsplit, f"process {i}: not split after training: {unsplit}"
        assert int(result[f"{name}/final_carried"]) == int(result[f"{name}/init_carried"])
        assert bool(result[f"{name}/jit_out_shardings_agree"]), f"process {i}"
        assert bool(result[f"{name}/w_split"]), f"process {i}: the weights got replicated"
