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
