"""Instability runs: noisy copies, barriers between them, the sweep over k and levels."""

import json

import jax
import numpy as np
import pytest

from jaxticket import data as data_lib
from jaxticket import checkpoints as ckpt
from jaxticket import instability, lottery, masks, rundir, train

CONFIG = train.TrainConfig(model="lenet_300_100", dataset="digits", input_shape=(8, 8, 1), optimizer="sgd", lr=0.1)
FIT = train.FitSettings(batch_size=32, steps=60, chunk_size=20)
TASK = train.task_from_config(CONFIG)
PRUNER = {"method": "magnitude", "fraction": 0.5, "scope": "global"}


@pytest.fixture(scope="module")
def full_digits():
    return data_lib.splits("digits", validation_size=0)


def test_copies_share_everything_but_the_sgd_noise():
    state = train.init_state(TASK)
    copies = instability.copies_from(state, 3)
    for name in ("params", "opt_state", "batch_stats", "step", "mask"):
        for leaf, orig in zip(jax.tree.leaves(getattr(copies, name)), jax.tree.leaves(getattr(state, name))):
            for i in range(3):
                np.testing.assert_array_equal(np.asarray(leaf[i]), np.asarray(orig))
    keys = np.asarray(copies.data_key)
    assert len({tuple(k) for k in keys}) == 3 and tuple(np.asarray(state.data_key)) not in {tuple(k) for k in keys}
    assert len({tuple(k) for k in np.asarray(copies.aug_key)}) == 3
    with pytest.raises(ValueError, match="at least 2 copies"):
        instability.copies_from(state, 1)


def test_identical_copies_have_zero_barrier_and_distance(full_digits):
    state = train.init_state(TASK)
    same = jax.tree.map(lambda x: np.stack([x, x]), state)
    res = instability.instability(TASK, same, full_digits, num_alphas=5)
    assert res["train_barrier"] == 0.0 and res["test_barrier"] == 0.0
    assert res["copy_l2"] == [0.0]
    assert res["curves"]["test"].shape == (1, 5)


def test_sweep_rows_files_and_resume(full_digits, tmp_path):
    kw = dict(workdir=tmp_path, steps=60, batch_size=32, chunk_size=20, copies=2, num_alphas=5, progress=False,
              log=None)
    rows = instability.instability_sweep(TASK, full_digits, PRUNER, ks=[0, 20], levels=[0, 1], **kw)
    assert [(r["k"], r["level"]) for r in rows] == [(0, 0), (0, 1), (20, 0), (20, 1)]
    for r in rows:
        point = tmp_path / "points" / f"k{r['k']:06d}_level{r['level']:02d}"
        curves = rundir.load_tree(point.with_suffix(".npz"))
        finals = rundir.load_tree(point.parent / (point.name + "_finals.npz"))["params"]
        assert r["density"] == (1.0 if r["level"] == 0 else 0.5)
        for split in ("train", "test"):  # the barrier is max - mean of the endpoints of the stored curve
            curve = np.asarray(curves[split])[0]
            assert r[f"{split}_barrier"] == pytest.approx(curve.max() - (curve[0] + curve[-1]) / 2, abs=1e-6)
            assert r[f"stable_{split}"] == (r[f"{split}_barrier"] < 0.02)
        # the copies' saved final weights are the curve's endpoints: their own test errors
        template = train.init_state(TASK)
        for i, end in ((0, 0), (1, -1)):
            params = jax.tree.map(lambda x: x[i], finals)
            own = train.evaluate(TASK, template.replace(params=params, mask=None), full_digits.test)
            assert np.asarray(curves["test"])[0, end] == pytest.approx(1 - float(own["accuracy"]), abs=1e-6)
        kernels = [np.asarray(x, np.float64) for x in jax.tree.leaves(finals) if x.ndim >= 3]  # [2, in, out]
        distance = float(np.sqrt(sum(((x[0] - x[1]) ** 2).sum() for x in kernels)))  # over prunable weights
        assert r["copy_l2"] == [pytest.approx(distance, rel=1e-5)] and distance > 0  # other noise, other weights
        assert r["l2_to_full_all"] >= r["l2_to_full"] > 0
        # l2_to_full: over copy 0's surviving weights (its mask), against the dense network's final weights
        lineage = rundir.RunDir(tmp_path / f"imp_k{r['k']:06d}")
        dense = [np.asarray(x, np.float64)[0] for x in jax.tree.leaves(lineage.load_params(0))]
        keep = [np.asarray(x)[0] for x in jax.tree.leaves(lineage.load_mask(r["level"]).keep)]
        copy0 = [np.asarray(x, np.float64)[0] for x in jax.tree.leaves(finals)]
        surviving = np.sqrt(sum(((d - c) ** 2 * k).sum() for d, c, k in zip(dense, copy0, keep) if d.ndim >= 2))
        everything = np.sqrt(sum(((d - c) ** 2).sum() for d, c in zip(dense, copy0)))
        assert r["l2_to_full"] == pytest.approx(surviving, rel=1e-5)
        assert r["l2_to_full_all"] == pytest.approx(everything, rel=1e-5)
    stored = sorted(json.loads((tmp_path / "results.json").read_text()), key=lambda r: (r["k"], r["level"]))
    assert stored == rows
    for name in ("instability_vs_k.png", "error_curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = instability.instability_sweep(TASK, full_digits, PRUNER, ks=[0, 20], levels=[0, 1], **kw)
    assert sorted(again, key=lambda r: (r["k"], r["level"])) == rows  # read back, not retrained
    # the level-1 subnetwork at k is the IMP mask on the rewind point of the k-run
    mask = rundir.RunDir(tmp_path / "imp_k000020").load_mask(1)
    assert float(jax.vmap(masks.density)(mask)[0]) == 0.5
    with pytest.raises(ValueError, match="outside"):
        instability.instability_sweep(TASK, full_digits, PRUNER, ks=[1000], levels=[0], **kw)


def test_dense_only_sweep_is_one_trajectory(full_digits, tmp_path):
    rows = instability.instability_sweep(TASK, full_digits, PRUNER, ks=[0, 10], levels=[0], workdir=tmp_path,
                                         steps=60, batch_size=32, copies=2, num_alphas=3, progress=False, log=None)
    assert [r["k"] for r in rows] == [0, 10] and all(r["l2_to_full"] is None and r["l2_to_full_all"] is None for r in rows)
    assert not list(tmp_path.glob("imp_k*"))


@pytest.mark.parametrize("levels", [[0, 1], [0]], ids=["imp", "dense_only"])
def test_seeds_trained_together_give_the_one_seed_sweeps(full_digits, tmp_path, levels):
    """A sweep of two seeds (one IMP lineage of two replicas per k, the four copies of a
    point in one program) gives, seed by seed, the numbers and weights of the one-seed
    sweeps with those seeds, bit for bit on CPU."""
    kw = dict(steps=40, batch_size=32, chunk_size=20, copies=2, num_alphas=3, progress=False, log=None)
    both = instability.instability_sweep(TASK, full_digits, PRUNER, ks=[0, 10], levels=levels,
                                         workdir=tmp_path / "both", seeds=2, **kw)
    assert sorted((r["k"], r["level"], r["seed"]) for r in both) == \
        [(k, l, s) for k in (0, 10) for l in levels for s in (0, 1)]
    for seed in (0, 1):
        alone = instability.instability_sweep(TASK, full_digits, PRUNER, ks=[0, 10], levels=levels,
                                              workdir=tmp_path / f"seed{seed}", init_seed=seed, data_seed=seed,
                                              aug_seed=seed, **kw)
        for r in alone:
            twin = next(b for b in both if (b["k"], b["level"], b["seed"]) == (r["k"], r["level"], seed))
            assert {key: v for key, v in twin.items() if key != "seed"} == {key: v for key, v in r.items()
                                                                             if key != "seed"}
            name = f"k{r['k']:06d}_level{r['level']:02d}"
            mine = rundir.load_tree(tmp_path / "both" / "points" / f"{name}_seed{seed}_finals.npz")
            theirs = rundir.load_tree(tmp_path / f"seed{seed}" / "points" / f"{name}_finals.npz")
            for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(theirs)):
                np.testing.assert_array_equal(a, b)
    assert len({(r["test_barrier"], r["copy_l2"][0]) for r in both if r["level"] == max(levels)}) == 4
    again = instability.instability_sweep(TASK, full_digits, PRUNER, ks=[0, 10], levels=levels,
                                          workdir=tmp_path / "both", seeds=2, **kw)
    key = lambda r: (r["k"], r["level"], r["seed"])  # noqa: E731
    assert sorted(again, key=key) == sorted(both, key=key)  # read back
    with pytest.raises(ValueError, match="seeds must be an integer >= 1"):
        instability.instability_sweep(TASK, full_digits, PRUNER, ks=[0], workdir=tmp_path / "x", seeds=0, **kw)
    with pytest.raises(ckpt.ConfigMismatchError):  # one seed's points are never read as several
        instability.instability_sweep(TASK, full_digits, PRUNER, ks=[0, 10], levels=levels,
                                      workdir=tmp_path / "both", seeds=1, **kw)


def test_sweep_from_a_config(full_digits, tmp_path):
    config = lottery.LotteryConfig(train=CONFIG.replace(validation_size=0), pruner=PRUNER,
                                   imp=lottery.ImpSettings(fit=FIT.replace(steps=20), levels=1))
    rows = instability.sweep_from_config(config, [5], [0], workdir=tmp_path, datasets=full_digits, num_alphas=3,
                                         progress=False, log=None)
    assert len(rows) == 1 and rows[0]["k"] == 5
    stored = json.loads((tmp_path / "config.json").read_text())["config"]
    assert stored["lottery"]["imp"]["fit"]["steps"] == 20 and stored["sweep"]["ks"] == [5]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["interpolate", "recompute"])
def test_batchnorm_models_choose_how_statistics_follow(full_digits, mode):
    task = train.task_from_config(CONFIG.replace(model="resnet20"))
    small = data_lib.Data(train=full_digits.train.take(96), test=full_digits.test.take(120))
    finals = instability.train_copies(task, train.init_state(task), small, 2, steps=3, batch_size=16, chunk_size=3)
    res = instability.instability(task, finals, small, num_alphas=3, batch_stats=mode, recompute_batches=2,
                                  batch_size=16, eval_batch_size=120)
    assert res["batch_stats"] == mode
    curves = res["curves"]["test"]
    assert curves.shape == (1, 3) and np.all((curves >= 0) & (curves <= 1))
    if mode == "interpolate":  # endpoints are the copies themselves, with their own statistics
        for i, alpha_index in ((0, 0), (1, -1)):
            own = train.evaluate(task, train.replica(finals, i), small.test)
            assert curves[0, alpha_index] == pytest.approx(1 - float(own["accuracy"]), abs=1e-6)
    with pytest.raises(ValueError, match="batch_stats must be one of"):
        instability.instability(task, finals, small, batch_stats="freeze")


def test_aligned_barriers_of_copies(full_digits):
    finals = instability.train_copies(TASK, train.init_state(TASK), full_digits, 2, steps=30, batch_size=32)
    res = instability.instability(TASK, finals, full_digits, num_alphas=5, align=True, train_examples=200)
    # copies from the same state land close: alignment finds (nearly) the identity, and
    # the aligned barrier is a real measurement of the same kind
    assert -1 <= res["aligned_test_barrier"] <= 1 and len(res["aligned_test_barriers"]) == 1
    assert res["aligned_curves"]["test"].shape == (1, 5)
    aligned = instability.align_copies(TASK, finals)
    np.testing.assert_array_equal(np.asarray(aligned.params["fc1"]["kernel"][0]), np.asarray(finals.params["fc1"]["kernel"][0]))
    for split in ("train", "test"):  # the aligned ends are the same networks: same end errors
        np.testing.assert_allclose(res["aligned_curves"][split][:, [0, -1]], res["curves"][split][:, [0, -1]], atol=1e-6)


def _tiny_arrays(n=48, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, 6)).astype(np.float32)
    return x, x[:, :3].argmax(1).astype(np.int32)


def test_recompute_with_batchnorm_and_dropout_keys_the_dropout():
    import flax.linen as nn
    import optax

    class BNDropout(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            h = nn.BatchNorm(use_running_average=not train)(nn.Dense(8)(x))
            return nn.Dense(3)(nn.Dropout(0.3, deterministic=not train)(nn.relu(h)))

    task = train.Task(BNDropout(), input_shape=(6,), tx=optax.sgd(0.1))
    x, y = _tiny_arrays()
    small = data_lib.from_arrays(train=(x[:32], y[:32]), test=(x[32:], y[32:]))
    finals = instability.train_copies(task, train.init_state(task), small, 2, steps=2, batch_size=8, chunk_size=2)
    kw = dict(num_alphas=3, batch_stats="recompute", recompute_batches=2, batch_size=8)
    res = instability.instability(task, finals, small, **kw)
    assert res["batch_stats"] == "recompute" and res["curves"]["test"].shape == (1, 3)
    np.testing.assert_array_equal(instability.instability(task, finals, small, **kw)["curves"]["test"],
                                  res["curves"]["test"])  # dropout keyed deterministically
    # the recomputation's batches and key are arguments of the path's program, not constants:
    # other copies of the same structure compile nothing (each call compiled the path before)
    others = instability.train_copies(task, train.init_state(task), small, 2, steps=3, batch_size=8, chunk_size=1)
    compiles = []

    def listen(event, duration, **kw):
        if event.endswith("backend_compile_duration"):
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        again = instability.instability(task, others, small, **kw)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert compiles == [] and not np.array_equal(again["curves"]["test"], res["curves"]["test"])


def test_error_quantity_for_tasks_without_accuracy(tmp_path):
    import flax.linen as nn
    import jax.numpy as jnp
    import optax

    class Regressor(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(nn.relu(nn.Dense(8)(x)))

    x, _ = _tiny_arrays()
    t = x[:, :2].sum(1, keepdims=True)
    small = data_lib.from_arrays(train=(x[:32], t[:32]), test=(x[32:], t[32:]))
    task = train.Task(Regressor(), input_shape=(6,), loss=lambda o, y: jnp.mean((o - y) ** 2, -1),
                      metrics={"mae": lambda o, y: jnp.abs(o - y).mean(-1)}, tx=optax.adam(1e-2))
    finals = instability.train_copies(task, train.init_state(task), small, 2, steps=3, batch_size=8, chunk_size=3)
    with pytest.raises(ValueError, match=r"error='accuracy' is not evaluated.*metrics \['mae'\]; pass error='loss'"):
        instability.instability(task, finals, small, num_alphas=3)
    with pytest.raises(ValueError, match="error='accuracy' is not evaluated"):  # before any training
        instability.instability_sweep(task, small, PRUNER, ks=[0], workdir=tmp_path, steps=3, batch_size=8, log=None)
    for error in ("loss", "mae"):
        res = instability.instability(task, finals, small, num_alphas=3, error=error)
        assert res["error"] == error
        for i, end in ((0, 0), (1, -1)):  # the curve's ends are the copies' own loss / mae
            own = train.evaluate(task, train.replica(finals, i).replace(mask=None), small.test)[error]
            assert res["curves"]["test"][0, end] == pytest.approx(float(own), rel=1e-5)
