"""Subprocess worker for tests/test_parallel.py (fake CPU devices need a fresh process).

    python tests/parallel_worker.py sharded OUT.json
        8 fake devices: data-parallel (mesh 1x8), replicas (8x1, S=8) and both (4x2, S=4)
        against single-device training; writes max abs differences.
    python tests/parallel_worker.py distributed PROCESS_ID PORT OUT.npz
        one of 2 processes (2 fake devices each, 4 in all, mesh 2x2, S=2); writes the
        final params gathered on the host.

Importable: ``setup()`` gives the config and data shared with the in-process reference.
"""

import json
import os
import sys

# tiny programs: compile time dominates on CPU, so skip LLVM's expensive passes
FAST_COMPILE = "--xla_backend_optimization_level=0"


def setup(steps=12, batch_size=16):
    import jax.numpy as jnp
    import numpy as np

    from jaxticket import train
    from jaxticket.data import ArrayDataset, Normalize

    rng = np.random.default_rng(0)
    n = 128
    images = rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)
    labels = (images.reshape(n, -1)[:, :4].argmax(1)).astype(np.int32)
    ds = ArrayDataset(jnp.asarray(images), jnp.asarray(labels), "toy", 10, Normalize((0.5,), (0.25,)))
    task = train.task_from_config(train.TrainConfig(model="lenet_32_16", input_shape=(8, 8, 1), lr=0.05,
                                                    momentum=0.9, weight_decay=1e-4))
    fit_kw = dict(steps=steps, batch_size=batch_size, eval_batch_size=32, chunk_size=5)
    return task, fit_kw, ds, images, labels


def _maxdiff(a, b):
    import jax
    import numpy as np

    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def sharded(out_path):
    import jax
    import numpy as np

    from jaxticket import parallel, train

    assert jax.device_count() == 8, jax.devices()
    task, fit_kw, ds, _, _ = setup()
    from jaxticket.train import sources, step as step_lib

    result = {}
    cases = {"data_1x8": (None, 1, 8), "replicas_8x1": (8, 8, 1), "both_4x2": (4, 4, 2)}
    for name, (seeds, r, d) in cases.items():
        state = train.init_state(task, seeds=seeds)
        ref = train.fit(task, state, ds, val=ds, **fit_kw)
        ref_eval = train.evaluate(task, ref.state, ds)
        mesh = parallel.make_mesh(r, d)
        sstate = parallel.shard_state(state, mesh)
        sds = parallel.replicate(ds, mesh)
        out = train.fit(task, sstate, sds, val=sds, mesh=mesh, **fit_kw)
        out_eval = train.evaluate(task, out.state, sds, mesh=mesh)
        leaf = jax.tree.leaves(out.state.params)[0]
        feed = sources.DeviceFeed(fit_kw["batch_size"])
        hlo = step_lib._run_steps.lower(task, feed, mesh, 5, sstate, sds, np.int32(3)).compile().as_text()
        result[name] = {
            "params": _maxdiff(parallel.to_host(out.state.params), ref.state.params),
            "eval_loss": _maxdiff(parallel.to_host(out_eval["loss"]), ref_eval["loss"]),
            "val_history": _maxdiff([h["val_loss"] for h in out.history],
                                    [h["val_loss"] for h in ref.history]),
            "num_shard_devices": len(leaf.sharding.device_set),
            "shard_shape": list(leaf.addressable_shards[0].data.shape),
            "all_reduce": "all-reduce" in hlo,
            "param_norm": float(np.sum([np.sum(np.square(x)) for x in
                                        jax.tree.leaves(ref.state.params)])),
        }
    with open(out_path, "w") as f:
        json.dump(result, f)


def distributed(process_id, port, out_path):
    import jax

    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                               process_id=process_id, initialization_timeout=60)
    import numpy as np

    from jaxticket import parallel, train

    assert jax.device_count() == 4 and jax.local_device_count() == 2
    task, fit_kw, ds, images, labels = setup()
    state = train.init_state(task, seeds=2)
    mesh = parallel.make_mesh(2, 2)
    sstate = parallel.shard_state(state, mesh)
    sds = parallel.replicate(ds, mesh)
    out = train.fit(task, sstate, sds, val=sds, mesh=mesh, **fit_kw)
    params = parallel.to_host(out.state.params)
    flat = {f"p{i}": x for i, x in enumerate(jax.tree.leaves(params))}
    flat["val_loss"] = np.asarray(out.history[-1]["val_loss"])
    np.savez(out_path, **flat)
    jax.distributed.shutdown()


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "sharded":
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8 " + FAST_COMPILE
        os.environ["JAX_PLATFORMS"] = "cpu"
        sharded(sys.argv[2])
    elif mode == "distributed":
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2 " + FAST_COMPILE
        os.environ["JAX_PLATFORMS"] = "cpu"
        distributed(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        raise SystemExit(f"unknown mode {mode}")
