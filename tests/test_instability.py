"""Instability runs: noisy copies, barriers between them, the sweep over k and levels."""

import json

import jax
import numpy as np
import pytest

from jaxticket import instability, lottery, masks, train
from jaxticket import data as data_lib


def tiny(model="lenet_300_100", **train_changes):
    tc = dict(model=model, dataset="digits", input_shape=(8, 8, 1), optimizer="sgd", lr=0.1,
              batch_size=32, steps=60, chunk_size=20)
    tc.update(train_changes)
    return lottery.LotteryConfig(train=train.TrainConfig(**tc), levels=1, seeds=1, validation_size=0,
                                 pruner={"method": "magnitude", "fraction": 0.5, "scope": "global"})


@pytest.fixture(scope="module")
def digits():
    return data_lib.splits("digits", validation_size=0)


def test_copies_share_everything_but_the_sgd_noise():
    config = tiny()
    state = train.init_state(config.train)
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


def test_identical_copies_have_zero_barrier_and_distance(digits):
    config = tiny()
    state = train.init_state(config.train)
    same = jax.tree.map(lambda x: np.stack([x, x]), state)
    res = instability.instability(config.train, same, digits, num_alphas=5)
    assert res["train_barrier"] == 0.0 and res["test_barrier"] == 0.0
    assert res["copy_l2"] == [0.0]
    assert res["curves"]["test"].shape == (1, 5)


def test_sweep_rows_files_and_resume(digits, tmp_path):
    config = tiny()
    kw = dict(workdir=tmp_path, copies=2, datasets=digits, num_alphas=5, progress=False, log=lambda *_: None)
    rows = instability.instability_sweep(config, ks=[0, 20], levels=[0, 1], **kw)
    assert [(r["k"], r["level"]) for r in rows] == [(0, 0), (0, 1), (20, 0), (20, 1)]
    for r in rows:
        assert r["density"] == (1.0 if r["level"] == 0 else 0.5)
        assert -1.0 <= r["test_barrier"] <= 1.0 and r["stable_test"] == (r["test_barrier"] < 0.02)
        assert len(r["test_barriers"]) == 1 and r["copy_l2"][0] > 0  # different noise, different weights
        assert r["l2_to_dense_final"] is not None
    stored = sorted(json.loads((tmp_path / "results.json").read_text()), key=lambda r: (r["k"], r["level"]))
    assert stored == rows
    for name in ("instability_vs_k.png", "error_curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = instability.instability_sweep(config, ks=[0, 20], levels=[0, 1], **kw)
    assert sorted(again, key=lambda r: (r["k"], r["level"])) == rows  # read back, not retrained
    # the level-1 subnetwork at k is the IMP mask on the rewind point of the k-run
    run = tmp_path / "imp_k000020"
    like = lottery._initial_state(config.replace(rewind_step=20)).mask
    mask = lottery.load_mask(run / "levels" / "level_01" / "mask.npz", like)
    assert float(jax.vmap(masks.density)(mask)[0]) == 0.5
    with pytest.raises(ValueError, match="outside"):
        instability.instability_sweep(config, ks=[1000], levels=[0], **kw)


def test_dense_only_sweep_is_one_trajectory(digits, tmp_path):
    config = tiny()
    rows = instability.instability_sweep(config, ks=[0, 10], levels=[0], workdir=tmp_path, copies=2,
                                         datasets=digits, num_alphas=3, progress=False, log=lambda *_: None)
    assert [r["k"] for r in rows] == [0, 10] and all(r["l2_to_dense_final"] is None for r in rows)
    assert not list(tmp_path.glob("imp_k*"))


@pytest.mark.parametrize("mode", ["interpolate", "recompute"])
def test_batchnorm_models_choose_how_statistics_follow(digits, mode):
    config = tiny(model="resnet20", batch_size=16, steps=3, chunk_size=3, eval_batch_size=120)
    small = {"train": data_lib.ArrayDataset(digits["train"].images[:96], digits["train"].labels[:96], "digits", 10,
                                            digits["train"].mean, digits["train"].std),
             "test": data_lib.ArrayDataset(digits["test"].images[:120], digits["test"].labels[:120], "digits", 10,
                                           digits["test"].mean, digits["test"].std)}
    finals = instability.train_copies(config.train, train.init_state(config.train), small, 2, progress=False)
    res = instability.instability(config.train, finals, small, num_alphas=3, batch_stats=mode,
                                  recompute_batches=2)
    assert res["batch_stats"] == mode
    curves = res["curves"]["test"]
    assert curves.shape == (1, 3) and np.all((curves >= 0) & (curves <= 1))
    if mode == "interpolate":  # endpoints are the copies themselves, with their own statistics
        for i, alpha_index in ((0, 0), (1, -1)):
            own = train.evaluate(config.train, train.replica(finals, i), small["test"])
            assert curves[0, alpha_index] == pytest.approx(1 - float(own["accuracy"]), abs=1e-6)
    with pytest.raises(ValueError, match="batch_stats must be one of"):
        instability.instability(config.train, finals, small, batch_stats="freeze")
