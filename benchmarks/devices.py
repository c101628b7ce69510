"""8 devices against 1: how far a sharded run leaves the single-device one.

``python -m benchmarks devices``: a tanh MLP 64-256-8 on a fixed batch of 128,
SGD 0.05, each transformation with its defaults and a snapshot every 4 steps,
100 steps; once with the weights and the batch split over 8 virtual CPU
devices (``--xla_force_host_platform_device_count=8``: the benchmark starts a
child process with that flag when this one sees fewer devices), once on 1. The
figure is ``max |w_8 - w_1|`` over the largest ``|w_1|`` (the goal of issue
20 is <= 1e-5), with the final loss of each run. The base's own figure is the
round-off floor: every other figure is that floor times how much the
transformation amplifies it. A run whose loss rises above its first step's
diverges, and a diverging run amplifies round-off by itself; the table also
gives the largest gap over the steps before the loss first did so.

``--processes 2`` (the default) also runs the same training as one
``jax.distributed`` job of 2 processes x 4 CPU devices over 127.0.0.1 (the
same 8-way split, collectives between processes) and gives its gap to the
1-device run; ``--processes 1`` leaves it out.

Writes ``devices.{json,md}`` under ``--output-dir`` (default
``benchmarks/results``). ``--quick``: 24 steps, three transformations, no
multi-process job.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import koopax
from benchmarks import cli
from examples import report

DEVICE_COUNT = "--xla_force_host_platform_device_count"
FLAG = f"{DEVICE_COUNT}=8"


def transformations():
    """Each transformation with its defaults (a snapshot every 4 steps)."""
    every = dict(snapshot_every=4)
    return {
        "base": optax.identity,
        "kga": lambda: koopax.kga(**every),
        "kga_each_step": lambda: koopax.kga(apply_every=1, **every),
        "efficient_kga": lambda: koopax.efficient_kga(**every),
        # KWM needs a threshold: 0.03 of a typical weight's movement (examples/methods.py).
        "kwm_kga": lambda: koopax.masked_kga(koopax.masks.kwm(0.03, relative=True), **every),
        # KWM at PDT's floor (masks.kwm's rcond): the same on any device count too, but it
        # drops weak modes that are real.
        "kwm_kga_floor": lambda: koopax.masked_kga(
            koopax.masks.kwm(0.03, relative=True, rcond=0.1, margin=2.0), **every),
        "pdt": lambda: koopax.pdt(**every),
        "dogra": lambda: koopax.dmd_prediction(**every),
        "tano": lambda: koopax.dmd_prediction(mode="tano", **every),
    }


def _problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 64)).astype(np.float32)
    y = rng.normal(size=(128, 8)).astype(np.float32)
    params = {"w1": (rng.normal(size=(64, 256)) / 8).astype(np.float32),
              "b1": np.zeros(256, np.float32),
              "w2": (rng.normal(size=(256, 8)) / 16).astype(np.float32),
              "b2": np.zeros(8, np.float32)}
    return params, x, y


def _split(a):
    """The partition of an array over the 8 devices: its first axis where 8 divides it."""
    return P("d") if a.shape[0] % 8 == 0 else P()


def _gather(tree):
    """The global arrays of ``tree`` as NumPy arrays (gathered from every process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        tree = multihost_utils.process_allgather(tree, tiled=True)
    return {k: np.asarray(v) for k, v in tree.items()}


def train(factory, steps, sharded, history=None):
    """``(weights, final loss, optimizer state)`` after ``steps`` steps on 8 devices or on 1;
    ``history``, a list, receives each step's ``(weights, loss before the step)``.
    In a multi-process job the 8 devices are the job's global ones."""
    params, x, y = _problem()
    if sharded:
        mesh = Mesh(np.array(jax.devices()[:8]), ("d",))
        put = lambda a: jax.make_array_from_callback(a.shape, NamedSharding(mesh, _split(a)),
                                                     lambda index: a[index])
    else:
        put = jnp.asarray
    params, x, y = jax.tree.map(put, params), put(x), put(y)

    def loss(p, x, y):   # the data are arguments: a job's global arrays cannot be closed over
        return jnp.mean((jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"] - y) ** 2)

    tx = optax.chain(optax.sgd(0.05), factory())
    state = tx.init(params)

    @jax.jit
    def step(p, s, x, y):
        value, g = jax.value_and_grad(loss)(p, x, y)
        u, s = tx.update(g, s, p, value=value)
        return optax.apply_updates(p, u), s, value

    for _ in range(steps):   # one step in flight: queued collectives starve on a few cores
        params, state, value = jax.block_until_ready(step(params, state, x, y))
        if history is not None:
            history.append((_gather(params), float(value)))
    return _gather(params), float(jax.jit(loss)(params, x, y)), state


def _gap(one, eight, scale):
    return max(float(np.abs(one[k] - eight[k]).max()) for k in one) / scale


def gap_before_divergence(history_one, history_eight):
    """``(steps, gap)``: the steps before the 1-device loss first rose above its
    first value, and the largest gap over them, each step's relative to that
    step's largest 1-device weight."""
    first = history_one[0][1]
    steps = next((i for i, (_, value) in enumerate(history_one) if value > first),
                 len(history_one))
    gaps = [_gap(a, b, max(float(np.abs(v).max()) for v in a.values()))
            for (a, _), (b, _) in zip(history_one[:steps], history_eight)]
    return steps, max(gaps, default=0.0)


def compare(names, steps, processes=1):
    """One row per transformation: the relative gap and both final losses; with
    ``processes > 1``, also the gap of a job of that many processes (:func:`job`)."""
    table = transformations()
    rows, traces = [], {}
    for name in names:
        trace_one, trace_eight = [], []
        one, loss_one, _ = train(table[name], steps, sharded=False, history=trace_one)
        eight, loss_eight, _ = train(table[name], steps, sharded=True, history=trace_eight)
        scale = max(float(np.abs(v).max()) for v in one.values())
        gap = _gap(one, eight, scale)
        calm, calm_gap = gap_before_divergence(trace_one, trace_eight)
        rows.append(dict(name=name, relative_gap=gap, loss_1=loss_one, loss_8=loss_eight,
                         goal_met=bool(gap <= 1e-5), steps_before_divergence=calm,
                         gap_before_divergence=calm_gap))
        traces[name] = trace_one
        print(f"{name:14s} gap {gap:.2g}  loss {loss_one:.4g} / {loss_eight:.4g}  "
              f"before divergence: {calm} steps, gap {calm_gap:.2g}", flush=True)
    if processes > 1:
        for row, (trace, final_loss) in zip(rows, job(names, steps, processes)):
            one = traces[row["name"]]
            scale = max(float(np.abs(v).max()) for v in one[-1][0].values())
            row["processes"] = processes
            row["relative_gap_processes"] = _gap(one[-1][0], trace[-1][0], scale)
            row["gap_before_divergence_processes"] = gap_before_divergence(one, trace)[1]
            row["loss_processes"] = final_loss
            print(f"{row['name']:14s} {processes} processes: gap "
                  f"{row['relative_gap_processes']:.2g}", flush=True)
    return rows


def job(names, steps, processes, timeout_s=1800):
    """``[(trace, final loss)]`` per transformation, trained by one
    ``jax.distributed`` job of ``processes`` processes x ``8 / processes`` CPU
    devices over 127.0.0.1 (:func:`worker`); a trace holds each step's weights and
    the loss before it, as :func:`train`'s ``history``."""
    if 8 % processes:
        raise ValueError(f"processes must divide 8; got {processes}.")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_COUNT)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=" ".join(flags + [f"{DEVICE_COUNT}={8 // processes}"]),
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory() as out:
        logs = [os.path.join(out, f"process_{i}.log") for i in range(processes)]
        procs = []
        try:
            for i, log in enumerate(logs):
                with open(log, "w") as sink:
                    procs.append(subprocess.Popen(
                        [sys.executable, "-m", "benchmarks.devices", "--worker", str(port),
                         str(processes), str(i), out, str(steps), ",".join(names)],
                        cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT))
            codes = [p.wait(timeout=timeout_s) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        if any(codes):
            tails = "\n----\n".join(open(log).read()[-3000:] for log in logs)
            raise RuntimeError(f"the {processes}-process job failed (exit codes {codes}):\n"
                               + tails)
        data = np.load(os.path.join(out, "job.npz"))
        results = []
        for name in names:
            keys = sorted({k.split("/")[2] for k in data if k.startswith(f"{name}/trace/")})
            trace = [({k: data[f"{name}/trace/{k}"][i] for k in keys},
                      float(data[f"{name}/losses"][i])) for i in range(steps)]
            results.append((trace, float(data[f"{name}/final_loss"])))
        return results


def worker(argv):
    """One process of :func:`job`: ``PORT NUM_PROCESSES PROCESS_ID OUT_DIR STEPS NAMES``.
    Process 0 writes every transformation's weights after each step and its losses to
    ``OUT_DIR/job.npz``."""
    port, processes, process_id, out, steps, names = argv
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                               num_processes=int(processes), process_id=int(process_id),
                               initialization_timeout=60)
    if len(jax.devices()) != 8:
        raise RuntimeError(f"the job has {len(jax.devices())} devices, not 8")
    table, saved = transformations(), {}
    for name in names.split(","):
        trace = []
        _, final_loss, _ = train(table[name], int(steps), sharded=True, history=trace)
        for key in trace[0][0]:
            saved[f"{name}/trace/{key}"] = np.stack([w[key] for w, _ in trace])
        saved[f"{name}/losses"] = np.array([value for _, value in trace])
        saved[f"{name}/final_loss"] = np.array(final_loss)
    if jax.process_index() == 0:
        np.savez(os.path.join(out, "job.npz"), **saved)
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("koopax devices benchmark done")
    jax.distributed.shutdown()


def markdown(rows, steps):
    lines = [f"# 8 devices vs 1 ({steps} steps, each transformation's defaults)", "",
             "| transformation | max \\|dw\\| / max \\|w\\| | <= 1e-5 | loss, 1 device | "
             "loss, 8 devices | steps before the loss rose above its start | gap over "
             "those steps |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['relative_gap']:.2g} | {'yes' if r['goal_met'] else 'no'} "
              f"| {r['loss_1']:.4g} | {r['loss_8']:.4g} | {_calm(r, steps)} "
              f"| {r.get('gap_before_divergence', float('nan')):.2g} |" for r in rows]
    job_rows = [r for r in rows if "relative_gap_processes" in r]
    if job_rows:
        n = job_rows[0]["processes"]
        lines += ["", f"{n} processes x {8 // n} devices (one `jax.distributed` job) vs 1 "
                  "device:", "",
                  "| transformation | max \\|dw\\| / max \\|w\\| | <= 1e-5 | loss, the job | "
                  "gap over the steps before the 1-device loss rose |", "|---|---|---|---|---|"]
        lines += [f"| {r['name']} | {r['relative_gap_processes']:.2g} | "
                  f"{'yes' if r['relative_gap_processes'] <= 1e-5 else 'no'} | "
                  f"{r['loss_processes']:.4g} | {r['gap_before_divergence_processes']:.2g} |"
                  for r in job_rows]
    return "\n".join(lines)


def _calm(row, steps):
    calm = row.get("steps_before_divergence", steps)
    return f"{calm} (never rose)" if calm >= steps else str(calm)


def run(args):
    names = ["base", "kga", "pdt"] if args.quick else list(transformations())
    steps = 24 if args.quick else args.steps
    if len(jax.devices()) < 8:            # the flag must be set before jax starts
        env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + FLAG).strip())
        argv = [sys.executable, "-m", "benchmarks.devices", "--steps", str(args.steps),
                "--processes", str(args.processes),
                "--output-dir", args.output_dir] + (["--quick"] if args.quick else [])
        subprocess.run(argv, env=env, check=True)
        with open(os.path.join(args.output_dir, "devices.json")) as f:
            return json.load(f)
    rows = compare(names, steps, processes=1 if args.quick else args.processes)
    result = dict(steps=steps, rows=rows)
    report.write_json(os.path.join(args.output_dir, "devices.json"), result)
    report.write_text(os.path.join(args.output_dir, "devices.md"), markdown(rows, steps))
    print(markdown(rows, steps))
    return result


BENCHMARK = cli.Benchmark(
    "devices", run, description=__doc__.splitlines()[0], epilog=__doc__, options=(
        cli.Option("--steps", 100, "training steps", type=cli.positive_int, quick=24),
        cli.Option("--processes", 2, "processes of the jax.distributed job compared too "
                   "(1: none; must divide 8)", type=cli.positive_int, choices=(1, 2, 4, 8)),
    ))


def main(argv=None):
    return cli.main(BENCHMARK, argv)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2:])
    else:
        main()
