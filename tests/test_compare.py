"""Comparing runs made with different pruning methods (Paganini & Forde analyses)."""

import json

import numpy as np
import pytest

from jaxticket import compare, lottery, train
from jaxticket import data as data_lib

METHODS = {
    "l1_layer": {"method": "magnitude", "fraction": 0.5},
    "l1_global": {"method": "magnitude", "fraction": 0.5, "scope": "global"},
    "l2_structured": {"method": "ln_structured", "fraction": 0.5, "n": 2},
    "random": {"method": "random", "fraction": 0.5},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    digits = data_lib.splits("digits", validation_size=0)
    root = tmp_path_factory.mktemp("runs")
    base = dict(model="lenet_300_100", dataset="digits", input_shape=(8, 8, 1), optimizer="adam",
                lr=1e-3, batch_size=32, steps=30, chunk_size=30)
    dirs = []
    for name, pruner in METHODS.items():
        config = lottery.LotteryConfig.of(**base, levels=2, seeds=1, validation_size=0, pruner=pruner)
        lottery.run_imp(config, root / name, datasets=digits, progress=False, log=lambda *_: None)
        dirs.append(root / name)
    return dirs, digits


def test_compare_writes_matrices_ensembles_trajectories(runs, tmp_path):
    dirs, digits = runs
    report = compare.compare_runs(dirs, out_dir=tmp_path)
    n = len(dirs)
    assert report["level"] == 2 and report["names"] == list(METHODS)
    jacc = np.asarray(report["jaccard"])
    np.testing.assert_allclose(np.diag(jacc), 1.0)
    np.testing.assert_allclose(jacc, jacc.T)
    assert jacc[0, 1] > jacc[0, 3]  # magnitude masks resemble each other more than a random one
    counts = np.asarray(report["agreement_counts"])
    assert np.all(np.diag(counts) == 360) and np.array_equal(counts, counts.T)
    subsets = [r["subset"] for r in report["ensembles"]]
    assert subsets[:1 + n] == ["all", *METHODS] and len(subsets) == 1 + 2 * n
    for row in report["ensembles"][1:1 + n]:  # a single member's ensemble is that member
        i = report["names"].index(row["subset"])
        assert row["mean_softmax"] == pytest.approx(report["test_accuracy"][i])
        assert row["vote"] == pytest.approx(report["test_accuracy"][i])
    assert set(report["trajectory_movement"]) == set(METHODS)
    assert len(report["trajectory_movement"]["l1_layer"]["mean_abs_change"]) == 2
    structured = report["connectivity"]["l2_structured"]["fc1/kernel"]
    assert structured["empty_outputs"] == pytest.approx(0.75)  # two levels of 50% of the units
    for name in ("masks_jaccard.png", "agreement.png", "trajectories_random.png", "summary.md",
                 "ensembles.json", "agreement.json", "masks_jaccard.json", "connectivity.json"):
        assert (tmp_path / name).exists(), name
    assert "Mask Jaccard similarity" in (tmp_path / "summary.md").read_text()
    assert json.loads((tmp_path / "agreement.json").read_text())["agreement_counts"] == counts.tolist()


def test_compare_errors(runs, tmp_path):
    dirs, _ = runs
    with pytest.raises(ValueError, match="at least two"):
        compare.compare_runs(dirs[:1], out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"no finished level 7; finished levels: \[0, 1, 2\]"):
        compare.compare_runs(dirs[:2], out_dir=tmp_path, level=7)
    with pytest.raises(FileNotFoundError, match="not an IMP run directory"):
        compare.compare_runs([dirs[0], tmp_path], out_dir=tmp_path)


def test_compare_single_logit_binary_runs(tmp_path):
    import flax.linen as nn
    import optax

    import jaxticket as jt

    class Binary(nn.Module):  # one logit: class 1 iff logit > 0
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(nn.relu(nn.Dense(8)(x)))

    x = np.random.default_rng(0).normal(size=(96, 6)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)  # BCE targets [N, 1]
    data = jt.data.from_arrays(train=(x[:64], y[:64]), test=(x[64:], y[64:]))
    task = jt.Task(Binary(), input_shape=(6,), loss=lambda o, t: optax.sigmoid_binary_cross_entropy(o, t).mean(-1),
                   metrics={"accuracy": lambda o, t: ((o > 0) == (t > 0.5)).all(-1)}, tx=optax.adam(1e-2))
    own = {}
    for name, pruner in (("mag", jt.magnitude(0.5)), ("rand", jt.pruning.random(0.5))):
        run = jt.imp(task, data, pruner, levels=1, steps=10, batch_size=16, log=None, progress=False,
                     workdir=tmp_path / name)
        own[name] = float(run.levels[1].test_accuracy[0])
    report = compare.compare_runs([tmp_path / "mag", tmp_path / "rand"], out_dir=tmp_path / "cmp")
    # the comparison's accuracies are the task's own (logit > 0), not argmax over one class
    assert report["test_accuracy"] == pytest.approx([own["mag"], own["rand"]])
    for row in report["ensembles"][1:]:
        assert row["mean_softmax"] == row["vote"] == pytest.approx(own[row["subset"]])
    logits = np.stack([compare.load_run(tmp_path / n, 1)["logits"] for n in ("mag", "rand")])[..., 0]
    agree = float(np.mean((logits[0] > 0) == (logits[1] > 0)))
    assert report["agreement_fraction"][0][1] == pytest.approx(agree)
