"""Sharded, replica-parallel and multi-process training equal single-device training.

Fake CPU devices need ``XLA_FLAGS`` before JAX starts, so these run
``tests/parallel_worker.py`` in subprocesses; the rest of the suite keeps 1 device.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxticket import parallel, train

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "parallel_worker.py")
ROOT = os.path.dirname(HERE)


def _env():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_sharded_training_matches_single_device(tmp_path):
    out = tmp_path / "sharded.json"
    proc = subprocess.run([sys.executable, WORKER, "sharded", str(out)], env=_env(),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    for name, r in res.items():
        assert r["params"] < 1e-5 * max(1.0, r["param_norm"]) and r["params"] < 1e-5, (name, r)
        assert r["eval_loss"] < 1e-5 and r["val_history"] < 1e-5, (name, r)
        assert r["num_shard_devices"] == 8, (name, r)
    # batch over 8 devices: params replicated, gradients all-reduced
    assert res["data_1x8"]["shard_shape"] == [32] and res["data_1x8"]["all_reduce"]
    # seeds axis split over the replica axis: one replica per shard
    assert res["replicas_8x1"]["shard_shape"] == [1, 32]
    assert res["both_4x2"]["shard_shape"] == [1, 32] and res["both_4x2"]["all_reduce"]


@pytest.mark.slow
def test_imp_branch_and_sweep_on_meshes_match_one_device(tmp_path):
    """jt.imp (2 levels, 8 seeds) on (8, 1) and (4, 2) against the same seeds on one device
    with no mesh (each replica's own program in turn, the CPU default). Replicas spread over
    devices, one per device, are bit for bit the one-device run (masks, params, accuracies),
    a reinit branch on (8, 1) too. Data parallelism (4, 2) is within 1e-6: each device sums
    the gradient of its half of the batch and the halves are added across devices, a
    different order of the same float32 additions (masks and accuracies still equal). An
    instability sweep with copies on (4, 2) matches (1, 1) likewise, and sparse training (RigL,
    its mask updates inside the compiled loop) on (8, 1) bit for bit and on (4, 2) within 1e-6."""
    out = tmp_path / "imp_mesh.json"
    proc = subprocess.run([sys.executable, WORKER, "imp_mesh", str(out)], env=_env(),
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    for name in ("8x1", "branch_8x1", "sparse_8x1"):
        r = res[name]
        assert r["params"] == 0.0 and r["masks_equal"] and r["acc"] == 0.0, (name, r)
    assert res["4x2"]["masks_equal"] and res["4x2"]["acc"] == 0.0, res["4x2"]
    assert res["4x2"]["params"] < 1e-6, res["4x2"]
    assert res["sparse_4x2"]["masks_equal"] and res["sparse_4x2"]["params"] < 1e-6, res["sparse_4x2"]
    assert all(res[n]["shards"] == 8 for n in ("8x1", "4x2", "sparse_8x1", "sparse_4x2")), res
    assert res["sweep"]["rows"] == 8 and res["sweep"]["barrier"] < 1e-4 and res["sweep"]["copy_l2"] < 1e-4, res
    assert "8 seeds cannot be split evenly over 3 replica devices" in res["error"]


@pytest.mark.slow
def test_two_processes_match_single_process(tmp_path):
    sys.path.insert(0, HERE)
    import parallel_worker

    port = _free_port()
    outs = [tmp_path / f"p{i}.npz" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, WORKER, "distributed", str(i), str(port), str(outs[i])],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    try:
        logs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]

    task, fit_kw, ds, _, _ = parallel_worker.setup()
    ref = train.fit(task, train.init_state(task, seeds=2), ds, val=ds, **fit_kw)
    want = jax.tree.leaves(ref.state.params)
    for out in outs:
        got = np.load(out)
        for i, w in enumerate(want):
            np.testing.assert_allclose(got[f"p{i}"], np.asarray(w), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["val_loss"], ref.history[-1]["val_loss"], rtol=1e-5)


def test_mesh_helpers_errors():
    with pytest.raises(ValueError, match="needs"):
        parallel.make_mesh(replicas=len(jax.devices()) + 1, data=1)
    mesh = parallel.make_mesh(1, 1)
    assert mesh.axis_names == (parallel.REPLICA, parallel.DATA)
    state = train.init_state(train.task_from_config(train.TrainConfig(model="lenet_32_16", input_shape=(8, 8, 1))),
                             seeds=3)

    class TwoReplicaMesh:  # only the axis sizes are read before the check
        shape = {parallel.REPLICA: 2, parallel.DATA: 1}

    with pytest.raises(ValueError, match="cannot be split"):
        parallel.shard_state(state, TwoReplicaMesh())
    with pytest.raises(ValueError, match="unbatched state"):
        parallel.shard_state(train.replica(state, 0), TwoReplicaMesh())
    # a (1, 1) mesh is the single-device case
    placed = parallel.shard_state(state, mesh)
    np.testing.assert_array_equal(parallel.to_host(placed.params["fc1"]["kernel"]),
                                  np.asarray(state.params["fc1"]["kernel"]))


def _cli_processes(workdir, port, extra=()):
    env = _env()
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0"
    cmd = [sys.executable, "-m", "jaxticket.cli", "imp", "--config", "demo", "--levels", "1", "--steps", "40",
           "--workdir", str(workdir), "--no-progress", "--mesh", "2,2", "--distributed", "--coordinator",
           f"localhost:{port}", "--num-processes", "2", *extra]
    return [subprocess.Popen(cmd + ["--process-id", str(i)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT) for i in range(2)]


@pytest.mark.slow
def test_distributed_command_killed_and_restarted_equals_one_process(tmp_path):
    """`jaxticket imp --distributed` as 2 processes x 2 fake devices (mesh 2,2) on one
    directory, both SIGKILLed once level 0 is written and started again, ends with the
    results of the same command in one process on one device; process 0 alone prints.
    A second 2-process job started on the directory while the first holds it is refused
    on both processes, with one line said once (by its process 0), and writes nothing."""
    import csv
    import signal
    import time

    from jaxticket import cli

    ref = tmp_path / "ref"
    assert cli.main(["imp", "--config", "demo", "--levels", "1", "--steps", "40", "--workdir", str(ref),
                     "--no-progress"]) == 0
    run = tmp_path / "run"
    procs = _cli_processes(run, _free_port())
    try:
        deadline = time.time() + 240
        while not (run / "levels" / "level_00" / "manifest.json").exists() and time.time() < deadline:
            assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs]
            time.sleep(0.2)
        for p in procs:  # the first job, stopped where it stands, keeps its lock
            p.send_signal(signal.SIGSTOP)
        before = sorted(str(f.relative_to(run)) for f in run.rglob("*"))
        second = _cli_processes(run, _free_port())
        refused = [p.communicate(timeout=240) for p in second]
        assert [p.returncode for p in second] == [cli.RunError.exit_code] * 2, [e[-2000:] for _, e in refused]
        said = [err.count("is in use by pid") for _, err in refused]
        assert said == [1, 0], [err[-2000:] for _, err in refused]
        assert sorted(str(f.relative_to(run)) for f in run.rglob("*")) == before
    finally:
        for p in procs:
            p.kill()
            p.wait()
    procs = _cli_processes(run, _free_port())
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "[imp] level  1" in outs[0][0]  # process 0 speaks for the job (the others' Python output is silenced)
    assert "[imp]" not in outs[1][0] and "results:" not in outs[1][0]

    def rows(d):
        with open(d / "results.csv") as f:
            return [{k: r[k] for k in ("kind", "level", "seed", "density", "final_test_accuracy")}
                    for r in csv.DictReader(f)]

    assert rows(run) == rows(ref)


def _sparse_command(workdir, devices, extra=()):
    env = _env()
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
    cmd = [sys.executable, "-m", "jaxticket.cli", "sparse", "--config", "demo", "--method", "rigl", "--density", "0.2",
           "--steps", "20", "--every", "5", "--seeds", "2", "--mesh", "2,2", "--workdir", str(workdir), *extra]
    return cmd, env


@pytest.mark.slow
def test_distributed_sparse_training_equals_one_process_on_the_same_mesh(tmp_path):
    """`jaxticket sparse --distributed` as 2 processes x 2 fake devices (mesh 2,2) ends
    with the summary of one process holding 4 devices on the same mesh, bit for bit (RigL:
    its masks follow the gradients, so any difference in the data-parallel sums would show).
    The final weights are gathered on every process: gathered by process 0 alone, the
    collective never completed and the job hung at its end. Run again, it reads back."""
    cmd, env = _sparse_command(tmp_path / "ref", 4)
    ref = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert ref.returncode == 0, ref.stderr[-3000:]

    def two_processes():
        c, e = _sparse_command(tmp_path / "run", 2, ["--distributed", "--coordinator", f"localhost:{_free_port()}",
                                                     "--num-processes", "2"])
        procs = [subprocess.Popen(c + ["--process-id", str(i)], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, cwd=ROOT) for i in range(2)]
        try:
            outs = [p.communicate(timeout=240) for p in procs]
        finally:
            for p in procs:
                p.kill()
        assert [p.returncode for p in procs] == [0, 0], [err[-3000:] for _, err in outs]
        return outs

    outs = two_processes()
    assert "[sparse] rigl" in outs[0][0] and "[sparse]" not in outs[1][0]  # process 0 speaks for the job

    def rows(d):
        return [{k: v for k, v in r.items() if k != "elapsed_s"}
                for r in json.loads((d / "summary.json").read_text())["rows"]]

    assert rows(tmp_path / "run") == rows(tmp_path / "ref")
    for name in ("mask.npz", "final_params.npz"):
        a, b = np.load(tmp_path / "run" / name), np.load(tmp_path / "ref" / name)
        assert sorted(a.files) == sorted(b.files)
        for f in a.files:
            np.testing.assert_array_equal(a[f], b[f], err_msg=f"{name}:{f}")
    again = two_processes()
    assert "read back" in again[0][0]
