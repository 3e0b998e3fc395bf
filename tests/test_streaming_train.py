"""train.fit / evaluate / lottery.run_imp on host-streamed data (ImageNet's path).

A tiny random-access source of records through ``data.make_stream`` (the ImageNet
preprocessing at 8x8 pixels) trains ``conv2``; the end-to-end test runs the
``resnet50_imagenet`` preset with a tiny model on ``tfds.testing.mock_data``.
"""

import json
import socket

import jax
import numpy as np
import pytest

from jaxticket import checkpoints, cli, data, masks, train

SIZE, CLASSES = 8, 5


def _source(n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"image": rng.integers(0, 256, (12, 10, 3), dtype=np.uint8), "label": int(i % CLASSES)}
            for i in range(n)]


def _stream(split, n, batch_size, **kw):
    return data.make_stream("imagenet2012", split, batch_size=batch_size, image_size=SIZE,
                            shard_index=0, shard_count=1, source=_source(n), **kw)


@pytest.fixture(scope="module")
def streams():
    return {"train": train.HostStream(_stream("train", 24, 4, seed=1), steps_per_epoch=6,
                                      max_chunk_steps=3),
            "test": _stream("test", 11, 4)}  # bare grain MapDataset: wrapped by fit/evaluate


def _task(**kw):
    base = dict(model="conv2", dataset="imagenet2012", num_classes=CLASSES, input_shape=(SIZE, SIZE, 3),
                lr=0.05, momentum=0.9, weight_decay=1e-4)
    return train.task_from_config(train.TrainConfig(**{**base, **kw}))


FIT = dict(batch_size=4, chunk_size=100)


def _pruned_mask(task):
    ones = masks.ones_like(task.abstract_params())
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda m: np.asarray(m) & (rng.random(np.shape(m)) < 0.5) if np.ndim(m) >= 2 else m,
                        ones)


def _equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _pruned_zero(state):
    for p, m in zip(jax.tree.leaves(state.params), jax.tree.leaves(state.mask)):
        assert np.all(np.asarray(p)[~np.asarray(m)] == 0)


@pytest.mark.parametrize("loop", ["device", "host"])
def test_fit_streamed_masked_rewind_exact(streams, loop):
    task = _task()
    state = train.init_state(task, mask=_pruned_mask(task))
    full = train.fit(task, state, streams["train"], steps=7, test=streams["test"], eval_every=5, rewind_step=4,
                     loop=loop, **FIT)
    assert int(full.state.step) == 7 and int(full.rewind_state.step) == 4
    _pruned_zero(full.state)
    assert [h["step"] for h in full.history] == [0, 5, 7]
    assert all(np.isfinite(h["train_loss"]) for h in full.history[1:])
    assert all(np.isfinite(h["test_loss"]) for h in full.history)
    # chunks of at most max_chunk_steps=3: 4 is not a chunk boundary of a plain run
    stopped = train.fit(task, state, streams["train"], steps=4, loop=loop, **FIT)
    _equal(stopped.state, full.rewind_state)
    # data order is the stream's: another data_seed in the state changes nothing
    other = train.init_state(task, mask=_pruned_mask(task), data_seed=9, aug_seed=9)
    _equal(train.fit(task, other, streams["train"], steps=4, loop=loop, **FIT).state.params,
           stopped.state.params)


def test_resume_from_checkpoint_bitwise(streams, tmp_path):
    task = _task()
    state = train.init_state(task, mask=_pruned_mask(task))
    kw = dict(checkpoint_every=3, **FIT)
    with checkpoints.RunCheckpoints(tmp_path / "straight", {"run": 1}) as ck:
        straight = train.fit(task, state, streams["train"], steps=7, checkpoints=ck, **kw)
    with checkpoints.RunCheckpoints(tmp_path / "resumed", {"run": 1}) as ck:
        train.fit(task, state, streams["train"], steps=5, checkpoints=ck, **kw)  # "killed" at 5
    with checkpoints.RunCheckpoints(tmp_path / "resumed", {"run": 1}) as ck:
        assert ck.latest_step() == 5
        resumed = train.fit(task, state, streams["train"], steps=7, checkpoints=ck, **kw)
    assert int(resumed.state.step) == 7
    _equal(resumed.state, straight.state)


def test_evaluate_streamed_matches_numpy_and_replicas(streams):
    task = _task()
    state = train.fit(task, train.init_state(task), streams["train"], steps=3, **FIT).state
    ev = train.evaluate(task, state, streams["test"], logits=True)
    test = streams["test"]
    labels = np.concatenate([test[i]["label"][test[i]["mask"]] for i in range(len(test))])
    assert ev["logits"].shape == (11, CLASSES) and ev["predictions"].shape == (11,)
    np.testing.assert_array_equal(ev["predictions"], ev["logits"].argmax(-1))
    assert float(ev["accuracy"]) == pytest.approx(np.mean(ev["logits"].argmax(-1) == labels), abs=1e-7)
    logp = ev["logits"] - np.log(np.exp(ev["logits"]).sum(-1, keepdims=True))
    assert float(ev["loss"]) == pytest.approx(-logp[np.arange(11), labels].mean(), rel=1e-5)
    # replicas: a leading seeds axis on every output; each replica as its single run
    reps = train.fit(task, train.init_state(task, seeds=2), streams["train"], steps=3, **FIT).state
    ev2 = train.evaluate(task, reps, streams["test"], logits=True)
    assert ev2["logits"].shape == (2, 11, CLASSES) and ev2["accuracy"].shape == (2,)
    np.testing.assert_allclose(ev2["logits"][0], ev["logits"], rtol=1e-5, atol=1e-5)


def test_nonfinite_loss_detected_on_streams(streams):
    task = _task(lr=1e30, momentum=0.0)
    with pytest.raises(train.NonFiniteLossError):
        train.fit(task, train.init_state(task), streams["train"], steps=6, **FIT)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    for var in (data.ENV_MANUAL_DIR, data.ENV_DATA_DIR, data.ENV_DOWNLOAD):
        monkeypatch.delenv(var, raising=False)


def test_imp_resnet50_imagenet_preset_on_mock_data(tmp_path, no_network, capsys):
    tfds = pytest.importorskip("tensorflow_datasets")
    manual = tmp_path / "manual" / "imagenet2012"
    manual.mkdir(parents=True)
    for f in data.get_spec("imagenet2012").manual_files:
        (manual / f).write_bytes(b"")
    workdir = tmp_path / "run"
    argv = ["imp", "--config", "resnet50_imagenet", "--steps", "2", "--levels", "1", "--batch-size", "4",
            "--set", "model=conv2", "--set", "num_classes=1000", "--set", "input_shape=[16, 16, 3]",
            "--set", "eval_batch_size=4", "--workdir", str(workdir), "--data-dir", str(tmp_path / "data"),
            "--manual-dir", str(tmp_path / "manual"), "--no-progress"]
    with tfds.testing.mock_data(num_examples=10):
        assert cli.main(argv) == 0
    rows = json.loads((workdir / "results.json").read_text())
    assert sorted({r["level"] for r in rows}) == [0, 1]
    for level in (0, 1):
        logits = np.load(workdir / "levels" / f"level_{level:02d}" / "test_logits.npy")
        assert logits.shape[-2:] == (10, 1000) and np.isfinite(logits).all()
    assert all(0 <= r["final_test_accuracy"] <= 1 for r in rows) and len(rows) == 2


def test_imagenet_without_files_is_one_line_and_writes_nothing(tmp_path, no_network, capsys):
    # Replaces the old refusal: the preset now runs, and missing ImageNet files are a
    # one-line error naming them, before the run directory is created.
    empty = tmp_path / "manual"
    empty.mkdir()
    code = cli.main(["imp", "--config", "resnet50_imagenet", "--workdir", str(tmp_path / "r"),
                     "--data-dir", str(tmp_path / "data"), "--manual-dir", str(empty)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("jaxticket: error: ")
    assert "imagenet2012" in err[0] and "ILSVRC2012_img_train.tar" in err[0]
    assert not (tmp_path / "r").exists()
