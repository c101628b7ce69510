"""One process of the multi-process test (``tests/test_multiprocess.py``).

Run as ``python multiprocess_worker.py PORT NUM_PROCESSES PROCESS_ID OUT_DIR``
with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` in the environment.
It joins a ``jax.distributed`` job over 127.0.0.1 on the CPU backend, builds a
global mesh over every process's devices, shards the parameters and the data,
trains :func:`problem` with each optimizer of :func:`optimizers` and writes
``OUT_DIR/process_<id>.npz`` (final parameters, diagnostics, sharding checks).

The test process imports the same module and runs :func:`train` on one device
for the reference, so both sides execute the same code.

Exit status 77: this machine cannot run the job (no local port, no CPU
collectives): the test skips and prints the reason.
"""

from __future__ import annotations

import os
import sys
import time
import traceback

import numpy as np

NUM_STEPS = 12  # KGA's first refresh and PDT's first jump come at step 7-8
FEATURES, OUTPUTS, BATCH = 16, 8, 64
SKIP_STATUS = 77


def problem(seed=0):
    """A least-squares problem ``min mean |x w + b - y|^2 / 2`` (NumPy arrays)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, FEATURES)).astype(np.float32)
    w_true = rng.normal(size=(FEATURES, OUTPUTS)).astype(np.float32)
    y = (x @ w_true + 0.5 + 0.1 * rng.normal(size=(BATCH, OUTPUTS))).astype(np.float32)
    params = {"w": np.zeros((FEATURES, OUTPUTS), np.float32),
              "b": np.zeros((OUTPUTS,), np.float32)}
    return params, x, y


def optimizers():
    """Name -> optimizer: KGA after SGD (a refresh every 2 steps once 4
    snapshots are in) and PDT (an epoch is 2 steps, a jump can end epoch 3 on)."""
    import optax

    import koopax

    return {
        "kga": optax.chain(optax.sgd(0.1), koopax.kga(1.0, num_snapshots=4, snapshot_every=2)),
        "pdt": optax.chain(optax.sgd(0.1), koopax.pdt(3, num_snapshots=4, snapshot_every=2,
                                                      start=3, interval=1)),
    }


# Diagnostics compared with the one-process run (koopax.diagnostics names).
DIAGNOSTICS = {
    "kga": ("num_refreshes", "num_nonfinite", "rank", "eigenvalues"),
    "pdt": ("num_predictions", "num_jumps", "num_rollbacks", "num_nonfinite", "eigenvalues"),
}


def loss_fn(params, x, y):
    import jax.numpy as jnp

    residual = x @ params["w"] + params["b"] - y
    return 0.5 * jnp.mean(jnp.sum(residual * residual, axis=-1))


def train(tx, params, x, y, num_steps=NUM_STEPS, on_init=None, on_step=None):
    """``num_steps`` full-batch steps; returns ``(params, state, losses)``.

    ``tx.init`` runs eagerly, so the state follows the parameters' shardings.
    Every step is waited for (``jax.block_until_ready``): with asynchronous
    dispatch JAX 0.10's CPU backend can hang or abort in a cross-process
    collective rendezvous, even with plain SGD.
    """
    import jax
    import optax

    state = tx.init(params)
    if on_init is not None:
        on_init(state)

    @jax.jit
    def step(params, state, x, y):  # global arrays cannot be closed over
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = tx.update(grads, state, params, value=loss)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for _ in range(num_steps):
        params, state, loss = jax.block_until_ready(step(params, state, x, y))
        losses.append(loss)
        if on_step is not None:
            on_step(len(losses))
    return params, state, losses


def diagnostics(name, state):
    import koopax

    found = koopax.diagnostics(state)
    return {key: found[key] for key in DIAGNOSTICS[name]}


def _partitioned_leaves(state, param_shape):
    """(number of state leaves that carry ``param_shape`` as trailing dims,
    paths of those not split across devices, one string)."""
    import jax

    carried, unsplit = 0, []
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        if not hasattr(leaf, "sharding") or leaf.shape[-len(param_shape):] != param_shape:
            continue
        carried += 1
        if leaf.sharding.shard_shape(leaf.shape) == leaf.shape:
            unsplit.append(f"{jax.tree_util.keystr(path)} {leaf.shape} {leaf.sharding}")
    return carried, "; ".join(unsplit)


def main(argv):
    port, num_processes, process_id, out_dir = argv[1:5]
    num_processes, process_id = int(num_processes), int(process_id)
    start = time.monotonic()

    def log(what):  # shown by the test when the job fails or times out
        print(f"[process {process_id}] {time.monotonic() - start:5.1f} s: {what}", flush=True)

    log("joining the job")
    import jax

    try:
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                                   num_processes=num_processes, process_id=process_id,
                                   initialization_timeout=30)
        num_devices = len(jax.devices())
    except Exception:  # noqa: BLE001 - any failure to set the job up is a skip
        print("cannot start a local jax.distributed CPU job:", file=sys.stderr)
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(SKIP_STATUS)

    log(f"joined the job, {num_devices} devices")
    from jax.experimental import multihost_utils
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

    assert jax.process_count() == num_processes, jax.process_count()
    assert num_devices == num_processes * jax.local_device_count()
    # "data" splits the batch, "model" the weight matrix's rows. Auto axes (the
    # sharding propagation most training code relies on), not jax.make_mesh's
    # default Explicit ones.
    mesh = jax.make_mesh((num_processes, num_devices // num_processes), ("data", "model"),
                         axis_types=(AxisType.Auto, AxisType.Auto))
    params_np, x_np, y_np = problem()

    def put(a, spec):
        return jax.make_array_from_callback(a.shape, NamedSharding(mesh, spec),
                                            lambda index: a[index])

    specs = {"w": P("model", None), "b": P()}
    params = {k: put(v, specs[k]) for k, v in params_np.items()}
    x, y = put(x_np, P("data", None)), put(y_np, P("data", None))

    results = {"num_devices": num_devices, "num_processes": jax.process_count()}
    for name, tx in optimizers().items():
        init_check = {}

        def on_init(state, name=name, init_check=init_check):
            log(f"{name} state initialised")
            init_check["carried"], init_check["unsplit"] = _partitioned_leaves(
                state, params_np["w"].shape)
            # The documented alternative: jit(tx.init) given out_shardings, the
            # eager state's mesh shardings (its scalars are uncommitted
            # single-device arrays: replicated over the mesh here).
            shardings = jax.tree.map(
                lambda leaf: leaf.sharding if isinstance(leaf.sharding, NamedSharding)
                else NamedSharding(mesh, P()), state)
            jitted = jax.jit(tx.init, out_shardings=shardings)(params)
            same = jax.tree.map(lambda a, want: a.sharding.is_equivalent_to(want, a.ndim),
                                jitted, shardings)
            init_check["jit_out_shardings_agree"] = all(jax.tree.leaves(same))

        final, state, losses = train(tx, params, x, y, on_init=on_init,
                                     on_step=lambda i, name=name: log(f"{name} step {i}"))
        log(f"trained {name}")
        carried, unsplit = _partitioned_leaves(state, params_np["w"].shape)
        results[f"{name}/init_carried"] = init_check["carried"]
        results[f"{name}/init_unsplit"] = init_check["unsplit"]
        results[f"{name}/jit_out_shardings_agree"] = init_check["jit_out_shardings_agree"]
        results[f"{name}/final_carried"] = carried
        results[f"{name}/final_unsplit"] = unsplit
        results[f"{name}/w_split"] = (final["w"].sharding.shard_shape(final["w"].shape)
                                      != final["w"].shape)
        gathered = multihost_utils.process_allgather(
            {"params": final, "diagnostics": diagnostics(name, state),
             "losses": jax.numpy.stack(losses)}, tiled=True)
        for key, value in gathered["params"].items():
            results[f"{name}/params/{key}"] = np.asarray(value)
        for key, value in gathered["diagnostics"].items():
            results[f"{name}/diagnostics/{key}"] = np.asarray(value)
        results[f"{name}/losses"] = np.asarray(gathered["losses"])

    np.savez(os.path.join(out_dir, f"process_{process_id}.npz"), **results)
    multihost_utils.sync_global_devices("koopax multiprocess test done")
    jax.distributed.shutdown()
    log("done")


if __name__ == "__main__":
    main(sys.argv)
