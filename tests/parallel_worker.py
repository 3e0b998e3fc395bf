"""Subprocess worker for tests/test_parallel.py (fake CPU devices need a fresh process).

    python tests/parallel_worker.py sharded OUT.json
        8 fake devices: data-parallel (mesh 1x8), replicas (8x1, S=8) and both (4x2, S=4)
        against single-device training; writes max abs differences.
    python tests/parallel_worker.py distributed PROCESS_ID PORT OUT.npz
        one of 2 processes (2 fake devices each, 4 in all, mesh 2x2, S=2); writes the
        final params gathered on the host.

    python tests/parallel_worker.py imp_mesh OUT.json
        8 fake devices: jt.imp (2 levels, 8 seeds) on meshes (8, 1) and (4, 2) ("auto"'s rule
        checked) and a reinit branch on (8, 1), against the same seeds on one device with no
        mesh; an instability sweep with copies on (4, 2) against (1, 1); writes the differences.

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


def imp_mesh(out_path):
    import tempfile

    import jax
    import numpy as np

    import jaxticket as jt
    from jaxticket import parallel

    assert jax.device_count() == 8, jax.devices()
    task, fit_kw, ds, images, labels = setup()
    x = (images.astype(np.float32) / 255.0 - 0.5) / 0.25  # normalised, as the ArrayDataset of setup() is
    data = jt.data.from_arrays(train=(x, labels), test=(x[:48], labels[:48]), validation_size=32)
    kw = dict(levels=2, steps=12, batch_size=16, seeds=8, eval_every=6, chunk_size=6, log=None, progress=False)
    pruner = jt.magnitude(0.3)

    def levels(run, kind=None):
        out = run.levels if kind is None else [run.branches[kind][l] for l in sorted(run.branches[kind])]
        return [{"params": parallel.to_host(l.params), "mask": parallel.to_host(l.mask.keep),
                 "acc": np.asarray(l.test_accuracy, np.float64)} for l in out]

    def diff(a, b):
        return {"params": max(_maxdiff(x["params"], y["params"]) for x, y in zip(a, b)),
                "masks_equal": all(all(np.array_equal(p, q) for p, q in zip(jax.tree.leaves(x["mask"]),
                                                                             jax.tree.leaves(y["mask"])))
                                   for x, y in zip(a, b)),
                "acc": max(float(np.max(np.abs(x["acc"] - y["acc"]))) for x, y in zip(a, b))}

    # the reference: the same seeds on one device, as a run given no mesh trains them
    # (each replica's own program in turn: seed_strategy "auto" on CPU)
    one = jt.imp(task, data, pruner, workdir=tempfile.mkdtemp(), **kw)
    one.branch("reinit", levels=[2])
    ref, ref_branch = levels(one), levels(one, "reinit")
    result = {}
    assert dict(parallel.resolve_mesh("auto", seeds=8, batch_size=16).shape) == {"replica": 8, "data": 1}
    assert dict(parallel.resolve_mesh("auto", seeds=2, batch_size=16).shape) == {"replica": 2, "data": 4}
    for name, mesh in {"8x1": (8, 1), "4x2": "4,2"}.items():
        run = jt.imp(task, data, pruner, mesh=mesh, workdir=tempfile.mkdtemp(), **kw)
        result[name] = diff(ref, levels(run))
        result[name]["shards"] = len(jax.tree.leaves(run.levels[2].params)[0].sharding.device_set)
        if name == "8x1":
            run.branch("reinit", levels=[2])
            result["branch_8x1"] = diff(ref_branch, levels(run, "reinit"))
    sweep_kw = dict(ks=[0, 6], levels=[0, 1], steps=12, batch_size=16, seeds=2, copies=2, num_alphas=3,
                    eval_every=6, log=None, progress=False)
    rows_one = jt.instability_sweep(task, data, pruner, workdir=tempfile.mkdtemp(), mesh=(1, 1), **sweep_kw)
    rows_mesh = jt.instability_sweep(task, data, pruner, workdir=tempfile.mkdtemp(), mesh=(4, 2), **sweep_kw)
    result["sweep"] = {"rows": len(rows_mesh), "barrier": max(abs(a["test_barrier"] - b["test_barrier"])
                                                            for a, b in zip(rows_one, rows_mesh)),
                       "copy_l2": max(float(np.max(np.abs(np.subtract(a["copy_l2"], b["copy_l2"]))))
                                      for a, b in zip(rows_one, rows_mesh))}
    # sparse training (RigL: mask updates inside the compiled loop) on the same meshes
    sparse_kw = dict(density=0.3, steps=12, batch_size=16, seeds=8, every=4, end=10, eval_every=6,
                     chunk_size=6, log=None)
    sparse_one = jt.train_sparse(task, data, "rigl", workdir=tempfile.mkdtemp(), **sparse_kw)
    for name, mesh in {"sparse_8x1": (8, 1), "sparse_4x2": (4, 2)}.items():
        got = jt.train_sparse(task, data, "rigl", mesh=mesh, workdir=tempfile.mkdtemp(), **sparse_kw)
        result[name] = {"params": _maxdiff(parallel.to_host(sparse_one.params), parallel.to_host(got.params)),
                        "masks_equal": all(np.array_equal(p, q) for p, q in zip(
                            jax.tree.leaves(parallel.to_host(sparse_one.mask.keep)),
                            jax.tree.leaves(parallel.to_host(got.mask.keep)))),
                        "acc": float(np.max(np.abs(sparse_one.test_accuracy - got.test_accuracy))),
                        "shards": len(jax.tree.leaves(got.params)[0].sharding.device_set)}
    try:
        jt.imp(task, data, pruner, mesh=(3, 1), **kw)
    except parallel.MeshError as e:
        result["error"] = str(e)
    with open(out_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "imp_mesh":
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8 " + FAST_COMPILE
        os.environ["JAX_PLATFORMS"] = "cpu"
        imp_mesh(sys.argv[2])
    elif mode == "sharded":
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8 " + FAST_COMPILE
        os.environ["JAX_PLATFORMS"] = "cpu"
        sharded(sys.argv[2])
    elif mode == "distributed":
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2 " + FAST_COMPILE
        os.environ["JAX_PLATFORMS"] = "cpu"
        distributed(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        raise SystemExit(f"unknown mode {mode}")
