"""The ``--quick`` paths of issue 24's experiment scripts on tiny data (each well under 20 s).

Each script's data loader is replaced by tiny arrays (the real path is unchanged) and the
training shortened with the script's own ``--steps`` option; the test checks that the
tidy results, summary and plots are written and hold what the script promises.
"""

import csv
import importlib.util
import json
import pathlib
import sys

import numpy as np
import pytest

from jaxticket import data as data_lib

EXPERIMENTS = pathlib.Path(__file__).resolve().parent.parent / "experiments"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Flax modules defined in the script need their module registered
    spec.loader.exec_module(module)
    return module


def tiny_images(n_train=192, n_test=96, shape=(28, 28, 1), seed=0):
    """Random images whose label is the brighter half of the first row (learnable a little)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_train + n_test, *shape)).astype(np.float32)
    y = (x.reshape(len(x), -1)[:, :10].argmax(1)).astype(np.int32)
    return data_lib.from_arrays(train=(x[:n_train], y[:n_train]), test=(x[n_train:], y[n_train:]))


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_data_order_distance_quick(tmp_path, monkeypatch):
    script = load_script("data_order_distance")
    monkeypatch.setattr(script, "load_data", lambda config, args: tiny_images())
    out, work = tmp_path / "out", tmp_path / "work"
    assert script.main(["--quick", "--steps", "20", "--workdir", str(work), "--out", str(out)]) == 0
    rows = read_csv(out / "results.csv")
    # 2 kinds x 1 copy level x 2 seeds, every distance positive (the copies differ)
    assert len(rows) == 4 and {r["subnetwork"] for r in rows} == {"imp", "random"}
    assert all(float(r["l2_distance"]) > 0 for r in rows)
    assert len({r["density"] for r in rows}) == 1  # both kinds share the per-layer density
    ratios = read_csv(out / "ratios.csv")
    assert len(ratios) == 2
    r = ratios[0]
    assert float(r["ratio_random_over_imp"]) == pytest.approx(float(r["l2_random"]) / float(r["l2_imp"]))
    assert len(read_csv(out / "lineage.csv")) == 2 * 4  # levels 0-3, 2 seeds
    assert (out / "distance_vs_density.png").exists() and (out / "ratio_vs_density.png").exists()
    assert "Random / IMP distance per seed" in (out / "summary.md").read_text()
    assert json.loads((out / "provenance.json").read_text())["settings"]["steps"] == 20
    # a rerun reads every point back and writes the same rows
    before = (out / "results.csv").read_text()
    assert script.main(["--quick", "--steps", "20", "--workdir", str(work), "--out", str(out), "--report"]) == 0
    assert (out / "results.csv").read_text() == before


def test_rethinking_structured_quick(tmp_path, monkeypatch):
    import jax
    import jax.numpy as jnp

    script = load_script("rethinking_structured")
    # the widths model at the full widths is lenet5 itself, and the counts are LeNet-5's
    x = jnp.zeros((1, 28, 28, 1))  # both inits in one program (op by op: dozens of compilations)
    full, ref = jax.jit(lambda key: (script.LeNet5Widths().init(key, x, train=False),
                                     script.base_task().model.init(key, x, train=False)))(jax.random.key(3))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), full, ref))
    assert script.weights(script.FULL_WIDTHS) == 59_838 and script.flops(script.FULL_WIDTHS) == 199_968
    assert script.scratch_steps((2, 4, 26, 22), 100) == 200  # capped at twice the iterations
    monkeypatch.setattr(script, "load_data", lambda args: tiny_images())
    out, work = tmp_path / "out", tmp_path / "work"
    assert script.main(["--quick", "--steps", "10", "--workdir", str(work), "--out", str(out)]) == 0
    rows = read_csv(out / "results.csv")
    inits = {(r["init"], r["level"]) for r in rows}
    assert inits == {("rewind", "0"), ("rewind", "1"), ("rewind", "2"), ("reinit", "2"), ("scratch", "2"),
                     ("scratch_b", "2")}
    assert all(len([r for r in rows if (r["init"], r["level"]) == key]) == 2 for key in inits)  # two seeds each
    at2 = [r for r in rows if r["level"] == "2"]
    assert {r["widths"] for r in at2} == {"4-10-77-54"}  # 20% of units twice, half-even counts
    scratch = [r for r in at2 if r["init"] == "scratch"]
    assert int(scratch[0]["params"]) == script.weights((4, 10, 77, 54)) and int(scratch[0]["steps"]) == 10
    assert int([r for r in at2 if r["init"] == "scratch_b"][0]["steps"]) == 20  # 2.2x fewer FLOPs: capped at 2x
    text = (out / "summary.md").read_text()
    assert "scratch_b - rewind" not in text and "| l1_structured | 2 | scratch_b |" in text
    assert (out / "accuracy_vs_level.png").exists() and (out / "difference_vs_level.png").exists()


def test_conv1d_models():
    # Few compilations (each costs about a second on a loaded 2-core CPU, and the models'
    # init and apply op by op compile some 200 programs): random inputs and params from
    # NumPy, the four convolution comparisons in one jitted program, the CNN's two inputs in
    # another, and the ResNet's shapes and collections traced (jax.eval_shape), not run.
    import jax
    import jax.numpy as jnp

    from flax import linen as nn

    from jaxticket.models.conv1d import Conv1D, Conv1DNet, ResNet1D

    # the matrix-product convolution is nn.Conv's (SAME padding, strides 1 and 2, odd and even lengths)
    rng = np.random.default_rng(0)
    cases = ((40, 1, 5), (40, 2, 5), (11, 2, 3), (10, 1, 4))
    inputs = [(rng.normal(size=(2, length, 3)).astype(np.float32),
               {"params": {"kernel": rng.normal(size=(k, 3, 4)).astype(np.float32),
                           "bias": rng.normal(size=(4,)).astype(np.float32)}}) for length, _, k in cases]

    @jax.jit
    def both(inputs):
        return [(Conv1D(4, k, stride).apply(p, z), nn.Conv(4, (k,), strides=(stride,), padding="SAME").apply(p, z))
                for (_, stride, k), (z, p) in zip(cases, inputs)]

    for (length, stride, _), (ours, ref) in zip(cases, both(inputs)):
        assert ours.shape == ref.shape == (2, -(-length // stride), 4)
        assert jnp.allclose(ours, ref, atol=1e-5)
    x = rng.normal(size=(3, 40)).astype(np.float32)
    cnn = Conv1DNet(depth=4, width=8)
    shapes = jax.eval_shape(lambda x: cnn.init(jax.random.key(0), x, train=False), x)
    assert shapes["params"]["output"]["kernel"].shape == (5 * 8, 10)  # 40 -> 20 -> 10 -> 5 points, then flatten
    v = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)
    flat, channel = jax.jit(lambda v, x: (cnn.apply(v, x, train=False), cnn.apply(v, x[..., None], train=False)))(v, x)
    assert flat.shape == (3, 10) and jnp.array_equal(channel, flat)
    res = ResNet1D(depth=14, width=4)
    v = jax.eval_shape(lambda x: res.init(jax.random.key(0), x, train=False), x)
    out, state = jax.eval_shape(lambda v, x: res.apply(v, x, train=True, mutable=["batch_stats"]), v, x)
    assert out.shape == (3, 10) and "stage3_block2" in state["batch_stats"]
    assert v["params"]["stage2_block1"]["shortcut"]["kernel"].shape == (1, 4, 8)
    with pytest.raises(ValueError, match="6n \\+ 2"):
        jax.eval_shape(lambda x: ResNet1D(depth=10).init(jax.random.key(0), x, train=False), x)


def test_rewinding_mnist1d_quick(tmp_path, monkeypatch):
    script = load_script("rewinding_mnist1d")
    quick = script.settings

    def cnn_only(q, steps):  # the quick path with its CNN only (the ResNet's shapes: test_conv1d_models)
        s = quick(q, steps)
        s["grid"] = {"cnn": {"depths": [3], "widths": [8], "lrs": [0.05]}}
        return s

    monkeypatch.setattr(script, "settings", cnn_only)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(448, 40, 1)).astype(np.float32)  # 384 training sequences: 3 batches, orders differ
    y = (x[:, :10, 0].argmax(1)).astype(np.int32)
    monkeypatch.setattr(script, "load_data", lambda args, s: data_lib.from_arrays(train=(x[:384], y[:384]),
                                                                                  test=(x[384:], y[384:])))
    out, work = tmp_path / "out", tmp_path / "work"
    assert script.main(["--quick", "--steps", "8", "--workdir", str(work), "--out", str(out)]) == 0
    rows = read_csv(out / "results.csv")
    stages = {r["stage"] for r in rows}
    assert stages == {"grid", "imp", "sweep"}
    assert len([r for r in rows if r["stage"] == "imp"]) == 3  # levels 0-2, one seed
    sweep = [r for r in rows if r["stage"] == "sweep"]
    assert {r["k"] for r in sweep} == {"0", "8"} and {r["seed"] for r in sweep} == {"0", "1"}
    with_copies = [r for r in sweep if r["test_barrier"]]
    assert len(with_copies) == 2 * 2 * 2  # ks x copy levels (0, 2) x seeds
    for r in with_copies:
        if r["k"] == "0":  # trained under another data order than the dense network
            assert float(r["l2_to_full"]) > 0
        else:  # k = T: the copies are the dense network's final weights under the level's mask
            assert float(r["l2_to_full"]) == 0
        if r["level"] == "2":  # pruned positions count only in the all-parameter distance
            assert float(r["l2_to_full_all"]) > float(r["l2_to_full"])
    assert (out / "barrier_vs_k.png").exists() and (out / "grid_barriers.png").exists()
    assert "Sweep of k for cnn3_w8_lr0.05_wu0" in (out / "summary.md").read_text()


def test_sparse_training_quick(tmp_path, monkeypatch):
    script = load_script("sparse_training")
    monkeypatch.setattr(script, "load_data", lambda spec, args: tiny_images())
    monkeypatch.setattr(script, "QUICK", {**script.QUICK, "steps": 12, "levels": 1, "match_levels": (1,)})
    # one one-run method (each compiles its own program; test_sparse covers the others)
    monkeypatch.setattr(script, "ONE_RUN", ("rigl",))
    monkeypatch.setattr(script, "METHODS", (*script.LINEAGES, "rigl", "snip"))
    out, work = tmp_path / "out", tmp_path / "work"
    assert script.main(["--quick", "--workdir", str(work), "--out", str(out)]) == 0
    rows = read_csv(out / "results.csv")
    assert list(rows[0]) == list(script.FIELDS)
    got = {(r["method"], r["level"]) for r in rows}
    assert got == {("dense", "0")} | {(m, "1") for m in script.METHODS}
    assert all(len([r for r in rows if (r["method"], r["level"]) == k]) == 2 for k in got)  # two seeds each
    for r in rows:  # every method at a level keeps the level's density (counts rounded per layer)
        assert float(r["density"]) == pytest.approx(float(r["target_density"]), abs=2e-3)
        assert float(r["wall_s"]) >= 0
    steps = {(r["method"], r["level"]): int(r["train_steps"]) for r in rows}
    assert steps[("imp_rewind", "1")] == 2 * 12 and steps[("rigl", "1")] == steps[("snip", "1")] == 12
    # lr rewinding and fine-tuning start from the same trained weights (level 0's) but end apart
    level1 = "levels/level_01/final_params.npz"
    lr = np.load(work / "lenet300_mnist" / "imp_lr_rewind" / level1)
    ft = np.load(work / "lenet300_mnist" / "imp_finetune" / level1)
    assert sorted(lr.files) == sorted(ft.files) and any(not np.array_equal(lr[k], ft[k]) for k in lr.files)
    text = (out / "summary.md").read_text()
    assert "Renda et al.: weight rewinding > fine-tuning" in text and "Evci et al.: RigL >= SET" in text
    assert (out / "accuracy_lenet300_mnist.png").exists()
    before = (out / "results.csv").read_text()  # a rerun reads everything back
    assert script.main(["--quick", "--workdir", str(work), "--out", str(out), "--report"]) == 0
    assert (out / "results.csv").read_text() == before


def test_experiment_scripts_take_a_mesh_for_every_run(monkeypatch):
    import jax

    from jaxticket import lottery, parallel

    common = load_script("common")
    monkeypatch.setattr(parallel, "_DEFAULT_MESH", None)
    p = common.parser("x", "doc", manual_help="", quick_help="")
    assert p.parse_args([]).mesh is None and parallel.get_default_mesh() is None
    assert p.parse_args(["--mesh", "1,1"]).mesh == "1,1" and parallel.get_default_mesh() == "1,1"
    import jaxticket as jt

    data = tiny_images(n_train=32, n_test=16, shape=(4, 4, 1))
    task = jt.train.task_from_config(jt.train.TrainConfig(model="lenet_16", input_shape=(4, 4, 1), lr=0.1))
    run = lottery.imp(task, data, jt.magnitude(0.5), levels=0, steps=2, batch_size=8, log=None)
    assert run.mesh is not None and dict(run.mesh.shape) == {"replica": 1, "data": 1}  # mesh=None took the default
    with pytest.raises(SystemExit):
        p.parse_args(["--mesh", "four"])
    with pytest.raises(SystemExit):
        p.parse_args(["--mesh", f"{jax.device_count() + 1},1"])
