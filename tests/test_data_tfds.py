"""jaxticket.data through TensorFlow Datasets (mocked) and the grain streaming pipeline.

No real dataset files are used: ``tfds.testing.mock_data`` generates random examples,
and the "manual download" folders hold empty files with the canonical names (the
mocked ``download_and_prepare`` never reads them).
"""

import io
import socket

import numpy as np
import pytest

from jaxticket import data

tfds = pytest.importorskip("tensorflow_datasets")

SMALL = ["mnist", "fashion_mnist", "cifar10", "cifar100"]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails at once (like this offline machine)."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
                data.ENV_MANUAL_DIR, data.ENV_DATA_DIR, data.ENV_DOWNLOAD):
        monkeypatch.delenv(var, raising=False)


def fake_manual_dir(root, name):
    """``root/<name>/`` holding empty files with the canonical names."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for f in data.get_spec(name).manual_files:
        (folder / f).write_bytes(b"")
    return root


@pytest.mark.parametrize("name", SMALL)
def test_tfds_materialise_and_cache(name, tmp_path, no_network):
    spec = data.get_spec(name)
    manual = fake_manual_dir(tmp_path / "manual", name)
    ddir = tmp_path / "data"
    with tfds.testing.mock_data(num_examples=12):
        images, labels = data.load_arrays(name, "train", validation_size=0,
                                          data_dir=ddir, manual_dir=manual)
    assert images.shape == (12, *spec.image_shape) and images.dtype == np.uint8
    assert labels.shape == (12,) and labels.dtype == np.int32
    assert labels.min() >= 0 and labels.max() < spec.num_classes
    cached = data.cache_path(ddir, name, spec.tfds_version, "train")
    assert data.is_cached(cached)
    # Outside the mock and without manual files: served from the cache, bit-identical.
    im2, lb2 = data.load_arrays(name, "train", validation_size=0, data_dir=ddir)
    np.testing.assert_array_equal(im2, images)
    np.testing.assert_array_equal(lb2, labels)


def test_tfds_splits_env_vars_and_device(tmp_path, monkeypatch, no_network):
    manual = fake_manual_dir(tmp_path / "manual", "mnist")
    monkeypatch.setenv(data.ENV_MANUAL_DIR, str(manual))
    monkeypatch.setenv(data.ENV_DATA_DIR, str(tmp_path / "data"))
    with tfds.testing.mock_data(num_examples=12):
        parts = data.splits("mnist", validation_size=3)
    assert [len(parts[k]) for k in ("train", "validation", "test")] == [9, 3, 12]
    assert data.is_cached(data.cache_path(tmp_path / "data", "mnist", "3.0.1", "test"))
    full, _ = data.load_arrays("mnist", "train", validation_size=0)  # from the cache
    tr, va = data.validation_split_indices(12, 3)
    np.testing.assert_array_equal(parts["train"].inputs, full[tr])
    np.testing.assert_array_equal(parts["validation"].inputs, full[va])
    assert parts["train"].name == "mnist" and parts["train"].num_classes == 10


@pytest.mark.parametrize("name", SMALL + ["imagenet2012"])
def test_unavailable_offline_fails_fast_with_instructions(name, tmp_path, no_network):
    empty = tmp_path / "manual"
    empty.mkdir()
    ddir = tmp_path / "fresh"
    with pytest.raises(data.DatasetUnavailableError) as e:
        data.load_arrays(name, "train", data_dir=ddir, manual_dir=empty) if name != "imagenet2012" \
            else data.prepare(name, data_dir=ddir, manual_dir=empty)
    msg = str(e.value)
    assert isinstance(e.value, ValueError)
    assert repr(name) in msg
    for f in data.get_spec(name).manual_files:
        assert f in msg
    for how in ("manual_dir=", "--manual-dir", "JAXTICKET_MANUAL_DIR", str(empty)):
        assert how in msg
    assert not ddir.exists()  # nothing half-written


def test_unavailable_partial_files_and_download_without_network(tmp_path, no_network):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(data.DatasetUnavailableError, match="t10k-labels-idx1-ubyte.gz"):
        data.prepare("mnist", data_dir=tmp_path / "d", manual_dir=manual)
    # Downloading allowed, but no network: a fast, clear error instead of TFDS retrying.
    with pytest.raises(data.DatasetUnavailableError, match="unreachable"):
        data.prepare("mnist", data_dir=tmp_path / "d", manual_dir=manual, download=True)


def test_bad_manual_files_give_clear_error(tmp_path, no_network):
    manual = tmp_path / "manual"
    manual.mkdir()
    for f in data.get_spec("mnist").manual_files:
        (manual / f).write_bytes(b"not the real file")
    with pytest.raises(data.DatasetUnavailableError, match="(?i)checksum"):
        data.prepare("mnist", data_dir=tmp_path / "d", manual_dir=manual)


# --- streaming ---------------------------------------------------------------


def _jpeg(h, w, value):
    from PIL import Image

    buf = io.BytesIO()
    arr = np.full((h, w, 3), value, np.uint8)
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def _records(n):
    return [{"image": _jpeg(20 + i, 30 - i, 10 * i), "label": i} for i in range(n)]


def test_stream_tfds_mock_imagenet(tmp_path, no_network):
    manual = fake_manual_dir(tmp_path / "manual", "imagenet2012")
    kw = dict(batch_size=4, seed=0, image_size=16, num_epochs=1, shard_index=0, shard_count=1,
              data_dir=tmp_path / "data", manual_dir=manual)
    with tfds.testing.mock_data(num_examples=10):
        stream = data.make_stream("imagenet2012", "train", **kw)
        assert len(stream) == 2
        b = stream[1]
        assert b["image"].shape == (4, 16, 16, 3) and b["image"].dtype == np.uint8
        assert b["label"].dtype == np.int32 and b["mask"].all()
        again = data.make_stream("imagenet2012", "train", **kw)[1]
        np.testing.assert_array_equal(again["image"], b["image"])
        test = data.make_stream("imagenet2012", "test", **kw)
        assert len(test) == 3
        assert test[2]["mask"].tolist() == [True, True, False, False]


def test_stream_deterministic_resumable_and_sharded():
    src = _records(12)
    kw = dict(batch_size=4, seed=3, image_size=8, num_epochs=2, source=src)
    one = data.make_stream("imagenet2012", "train", shard_index=0, shard_count=1, **kw)
    assert len(one) == 6
    labels = [one[i]["label"].tolist() for i in range(6)]
    ep1, ep2 = sum(labels[:3], []), sum(labels[3:], [])
    assert sorted(ep1) == sorted(ep2) == list(range(12)) and ep1 != ep2
    # resuming at step 4 gives exactly the batches 4, 5
    it = data.stream_iterator(one, start_step=4, num_threads=2)
    for step in (4, 5):
        got = next(it)
        np.testing.assert_array_equal(got["image"], one[step]["image"])
        assert got["label"].tolist() == labels[step]
    # another seed: another order
    other = data.make_stream("imagenet2012", "train", shard_index=0, shard_count=1,
                             **{**kw, "seed": 4})
    assert [other[i]["label"].tolist() for i in range(3)] != labels[:3]
    # two hosts: each yields half of every global batch; together one epoch each
    shards = [data.make_stream("imagenet2012", "train", shard_index=s, shard_count=2, **kw)
              for s in range(2)]
    assert [len(s) for s in shards] == [6, 6]
    assert shards[0][0]["image"].shape == (2, 8, 8, 3)
    first_epoch = [l for s in shards for i in range(3) for l in s[i]["label"].tolist()]
    assert sorted(first_epoch) == list(range(12))


def test_stream_eval_covers_every_example_once_per_host_set():
    src = _records(11)
    seen = []
    lengths = []
    for s in range(2):
        st = data.make_stream("imagenet2012", "test", batch_size=4, image_size=8,
                              shard_index=s, shard_count=2, source=src)
        lengths.append(len(st))
        for i in range(len(st)):
            b = st[i]
            assert b["image"].shape == (2, 8, 8, 3)
            seen += b["label"][b["mask"]].tolist()
    assert lengths[0] == lengths[1] == 3
    assert sorted(seen) == list(range(11))


def test_imagenet_preprocessing_shapes_and_crop_box():
    img = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    out = data.preprocess_eval(img, image_size=16)  # resize shorter side to 18, crop 16
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    gray = np.zeros((30, 20), np.uint8)
    assert data.preprocess_eval(gray, image_size=16).shape == (16, 16, 3)
    from jaxticket.data.streaming import random_resized_crop_box

    rng = np.random.default_rng(1)
    for _ in range(200):
        top, left, h, w = random_resized_crop_box(40, 60, rng)
        assert 0 <= top and top + h <= 40 and 0 <= left and left + w <= 60 and h > 0 and w > 0
    a = data.preprocess_train(_jpeg(40, 60, 128), np.random.default_rng(5), image_size=16)
    b = data.preprocess_train(_jpeg(40, 60, 128), np.random.default_rng(5), image_size=16)
    assert a.shape == (16, 16, 3)
    np.testing.assert_array_equal(a, b)


def test_prepare_uses_a_private_extract_dir_per_dataset(tmp_path, no_network, monkeypatch):
    # TFDS names extractions of manual files after the file name only; mnist and
    # fashion_mnist share those names, so a shared extract dir mixes them up.
    configs = {}

    def capture(self, *args, download_config=None, **kwargs):
        configs[self.name] = download_config

    manual = tmp_path / "manual"
    for name in ("mnist", "fashion_mnist"):
        fake_manual_dir(manual, name)
    with tfds.testing.mock_data(num_examples=2):
        monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", capture)
        for name in ("mnist", "fashion_mnist"):
            data.prepare(name, data_dir=tmp_path / "d", manual_dir=manual)
    dirs = {n: str(c.extract_dir) for n, c in configs.items()}
    assert set(dirs) == {"mnist", "fashion_mnist"}
    assert dirs["mnist"] != dirs["fashion_mnist"]
    assert all(d.startswith(str(tmp_path / "d")) for d in dirs.values())
    assert str(configs["mnist"].manual_dir) == str(manual / "mnist")


def test_processes_preparing_at_once_prepare_once(tmp_path, no_network, monkeypatch):
    # Two experiments started together on an unprepared dataset: without a lock both ran
    # TFDS's preparation and the second died renaming its folder onto the first's.
    import threading
    import time as time_lib

    prepared, calls = threading.Event(), []

    def slow_prepare(self, *args, **kwargs):
        calls.append(self.name)
        time_lib.sleep(0.5)
        prepared.set()

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", slow_prepare)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: prepared.is_set())
    manual = fake_manual_dir(tmp_path / "manual", "mnist")
    errors = []

    def run():
        try:
            data.prepare("mnist", data_dir=tmp_path / "d", manual_dir=manual)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and calls == ["mnist"]  # one prepared, the other waited and read it


def test_a_registered_tfds_dataset_loads_and_trains_by_name(tmp_path, no_network, monkeypatch):
    """Another TFDS dataset (KMNIST, MNIST's format) registered by the user: loaded by name."""
    from jaxticket import lottery, train

    files = data.get_spec("mnist").manual_files
    spec = data.DatasetSpec(name="kmnist", num_classes=10, image_shape=(28, 28, 1),
                            split_sizes={"train": 60000, "test": 10000}, mean=(0.2,), std=(0.35,),
                            tfds_version="3.0.1", manual_files=files, default_validation_size=0)
    monkeypatch.setitem(data.registry.DATASETS, "kmnist", spec)  # removed again after the test
    with pytest.raises(ValueError, match="registered already"):
        data.register_dataset(spec.__class__(**{**spec.__dict__, "num_classes": 9}))
    manual = tmp_path / "manual" / "kmnist"
    manual.mkdir(parents=True)
    for f in files:
        (manual / f).write_bytes(b"")
    config = lottery.LotteryConfig.of(model="lenet_300_100", dataset="kmnist", steps=4, batch_size=8, levels=1)
    with tfds.testing.mock_data(num_examples=40):
        split = data.load("kmnist", "train", data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")
        rows = lottery.run_imp(config, tmp_path / "run", data_dir=tmp_path / "data",
                               manual_dir=tmp_path / "manual", log=None)
    assert split.num_examples == 40 and split.num_classes == 10
    assert {r["level"] for r in rows} == {0, 1}
