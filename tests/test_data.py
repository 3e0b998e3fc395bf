"""jaxticket.data: registry, cache, splits, digits, device batching, augmentation.

TFDS-backed loading and streaming are in tests/test_data_tfds.py.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxticket import data


# --- registry -----------------------------------------------------------------


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError) as e:
        data.load("mnits")
    for name in ("mnist", "fashion_mnist", "cifar10", "cifar100", "imagenet2012", "digits"):
        assert name in str(e.value)
    with pytest.raises(ValueError, match="valid datasets: "):
        data.get_spec("nope")


def test_registry_specs_are_consistent():
    for name in data.list_datasets():
        spec = data.get_spec(name)
        c = spec.image_shape[-1]
        assert len(spec.mean) == len(spec.std) == c
        assert spec.num_classes > 1
        if spec.source == "tfds":
            assert spec.manual_files and spec.tfds_version
    assert data.get_spec("imagenet2012").manual_files == (
        "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
    assert data.get_spec("cifar10").manual_files == ("cifar-10-binary.tar.gz",)


def test_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv(data.ENV_DATA_DIR, str(tmp_path))
    assert data.default_data_dir() == tmp_path
    assert data.default_data_dir("/x/y") == data.default_data_dir("/x/y")


# --- cache -------------------------------------------------------------------


def _arrays(n=17, shape=(5, 4, 3), seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    labels = rng.integers(0, 10, (n,)).astype(np.int32)
    return images, labels


def test_cache_round_trip_bit_identical(tmp_path):
    images, labels = _arrays()
    path = data.cache_path(tmp_path, "mnist", "3.0.1", "train")
    assert not data.is_cached(path)
    data.save_arrays(path, images, labels, {"name": "mnist"})
    assert data.is_cached(path)
    for mmap in (False, True):
        im2, lb2 = data.load_cached(path, mmap=mmap)
        assert im2.dtype == np.uint8 and lb2.dtype == np.int32
        np.testing.assert_array_equal(im2, images)
        np.testing.assert_array_equal(lb2, labels)
    # Only the final folder remains: no temporary leftovers.
    assert os.listdir(path.parent) == ["train"]


def test_cache_write_is_atomic_on_error(tmp_path, monkeypatch):
    images, labels = _arrays()
    path = data.cache_path(tmp_path, "mnist", "3.0.1", "train")
    calls = []

    def failing_save(file, arr, **kw):
        calls.append(file)
        if len(calls) == 2:  # images written, labels fail
            raise OSError("disk full")
        return real_save(file, arr, **kw)

    real_save = np.save
    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        data.save_arrays(path, images, labels)
    assert not path.exists()
    assert os.listdir(path.parent) == []  # the temporary folder was removed
    with pytest.raises(FileNotFoundError):
        data.load_cached(path)


def test_cache_rejects_wrong_dtypes(tmp_path):
    images, labels = _arrays()
    with pytest.raises(ValueError):
        data.save_arrays(tmp_path / "a", images.astype(np.float32), labels)
    with pytest.raises(ValueError):
        data.save_arrays(tmp_path / "b", images, labels.astype(np.int64))


# --- splits ------------------------------------------------------------------


def test_validation_split_disjoint_deterministic():
    tr, va = data.validation_split_indices(1000, 100)
    tr2, va2 = data.validation_split_indices(1000, 100)
    np.testing.assert_array_equal(tr, tr2)
    np.testing.assert_array_equal(va, va2)
    assert len(va) == 100 and len(tr) == 900
    assert not set(tr) & set(va)
    assert sorted(set(tr) | set(va)) == list(range(1000))
    # nested: a smaller validation set is a subset of a larger one
    _, va_small = data.validation_split_indices(1000, 10)
    assert set(va_small) <= set(va)
    # spread over the whole range, not a prefix
    assert va.max() > 500 and va.min() < 500
    with pytest.raises(ValueError):
        data.validation_split_indices(10, 10)


def test_stable_permutation_is_pinned():
    # Fixed forever: if this changes, every dataset split moves.
    assert data.stable_permutation(8, 0).tolist() == data.stable_permutation(8, 0).tolist()
    p = data.stable_permutation(1000, 3)
    assert sorted(p.tolist()) == list(range(1000))
    assert p.tolist() != data.stable_permutation(1000, 4).tolist()


def test_digits_embedded():
    tr_x, tr_y = data.digits_arrays("train")
    te_x, te_y = data.digits_arrays("test")
    assert tr_x.shape == (1437, 8, 8, 1) and te_x.shape == (360, 8, 8, 1)
    assert tr_x.dtype == np.uint8 and tr_y.dtype == np.int32
    assert tr_x.max() == 255 and tr_x.min() == 0
    assert set(np.unique(tr_y)) == set(range(10)) == set(np.unique(te_y))
    from sklearn.datasets import load_digits

    d = load_digits()
    # the two splits partition the 1797 images
    all_x = np.concatenate([tr_x, te_x]).reshape(1797, -1)
    ref = np.round(d.images * 255 / 16).astype(np.uint8).reshape(1797, -1)
    assert sorted(map(bytes, all_x)) == sorted(map(bytes, ref))
    np.testing.assert_array_equal(data.digits_arrays("test")[0], te_x)  # deterministic


def test_load_digits_splits_on_device():
    parts = data.splits("digits", validation_size=137)
    assert [len(parts[k]) for k in ("train", "validation", "test")] == [1300, 137, 360]
    assert isinstance(parts["train"].inputs, jax.Array)
    train = data.load("digits", "train", validation_size=137)
    np.testing.assert_array_equal(train.inputs, parts["train"].inputs)
    assert data.splits("digits")["validation"] is None  # default: no validation for digits
    with pytest.raises(ValueError, match="validation_size"):
        data.load("digits", "validation")
    with pytest.raises(ValueError, match="split"):
        data.load("digits", "dev")
    ds = data.load("digits", "test")
    assert ds.name == "digits" and ds.num_classes == 10 and ds.example_shape == (8, 8, 1)
    assert ds.preprocess == data.Normalize(data.get_spec("digits").mean, data.get_spec("digits").std)
    assert parts.source == {"dataset": "digits", "version": None, "validation_size": 137}


def test_imagenet_refuses_to_materialise(tmp_path):
    with pytest.raises(ValueError, match="make_stream"):
        data.load("imagenet2012", data_dir=tmp_path)


# --- batching ----------------------------------------------------------------


def test_batch_indices_cover_each_epoch_once():
    key = jax.random.key(0)
    n, b = 60, 12
    spe = data.steps_per_epoch(n, b)
    f = jax.jit(lambda s: data.batch_indices(key, s, batch_size=b, num_examples=n))
    epochs = []
    for e in range(3):
        idx = np.concatenate([np.asarray(f(e * spe + i)) for i in range(spe)])
        assert idx.dtype == np.int32
        assert sorted(idx.tolist()) == list(range(n))
        epochs.append(idx)
    assert not np.array_equal(epochs[0], epochs[1])
    # batches are consecutive slices of the epoch's permutation
    perm1 = data.epoch_permutation(key, 1, n)
    np.testing.assert_array_equal(epochs[1], np.asarray(perm1))
    # epoch_batch_indices agrees row by row
    rows = data.epoch_batch_indices(key, 2, batch_size=b, num_examples=n)
    np.testing.assert_array_equal(np.asarray(rows).reshape(-1), epochs[2])


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 1437])
def test_epoch_permutation_is_a_permutation(n):
    perm = jax.jit(data.epoch_permutation, static_argnums=2)(jax.random.key(n), 5, n)
    assert perm.dtype == jnp.int32
    assert sorted(np.asarray(perm).tolist()) == list(range(n))


def test_batch_indices_drop_remainder():
    key = jax.random.key(1)
    n, b = 50, 8  # 6 steps per epoch, 2 examples dropped per epoch
    spe = data.steps_per_epoch(n, b)
    assert spe == 6
    seen = [np.concatenate([np.asarray(data.batch_indices(key, e * spe + i, batch_size=b,
                                                          num_examples=n)) for i in range(spe)])
            for e in range(4)]
    for s in seen:
        assert len(set(s.tolist())) == spe * b  # distinct within an epoch
    assert len(set(np.concatenate(seen).tolist())) > spe * b  # dropped ones differ
    with pytest.raises(ValueError):
        data.steps_per_epoch(5, 6)


def test_batch_indices_differ_across_seeds_and_vmap_matches():
    n, b = 100, 10
    keys = jax.random.split(jax.random.key(3), 4)
    f = jax.jit(lambda k, s: data.batch_indices(k, s, batch_size=b, num_examples=n))
    batched = jax.jit(jax.vmap(f, in_axes=(0, None)))(keys, 13)
    for i in range(4):
        np.testing.assert_array_equal(batched[i], f(keys[i], 13))
    assert len({tuple(np.asarray(r).tolist()) for r in batched}) == 4
    # raw uint32 keys work too
    raw = jax.random.PRNGKey(0)
    assert f(raw, 0).shape == (b,)


def _tiny_dataset(n=40, shape=(6, 6, 3)):
    images, labels = _arrays(n, shape)
    spec = data.get_spec("cifar10")
    return data.ArrayDataset(jnp.asarray(images), jnp.asarray(labels), "cifar10", 10,
                             data.Normalize(spec.mean, spec.std))


def test_make_batch_jit_vmap_and_resume():
    ds = _tiny_dataset()
    mb = jax.jit(data.make_batch, static_argnames=("batch_size", "augment"))
    dk, ak = jax.random.key(0), jax.random.key(1)
    x, y = mb(ds, dk, ak, 5, 8)
    assert x.shape == (8, 6, 6, 3) and x.dtype == jnp.float32 and y.dtype == jnp.int32
    idx = np.asarray(jax.jit(data.batch_indices, static_argnames=("batch_size", "num_examples"))(
        dk, 5, batch_size=8, num_examples=40))
    np.testing.assert_array_equal(y, np.asarray(ds.labels)[idx])
    ref = (np.asarray(ds.inputs)[idx] / 255.0 - np.array(ds.preprocess.mean)) / np.array(ds.preprocess.std)
    np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-5)
    # resume: the same step gives the same batch, with augmentation too
    xa, _ = mb(ds, dk, ak, 5, 8, augment=True)
    xb, _ = mb(ds, dk, ak, 5, 8, augment=True)
    np.testing.assert_array_equal(xa, xb)
    assert not np.array_equal(xa, mb(ds, dk, ak, 6, 8, augment=True)[0])
    # vmap over (data_key, aug_key) equals per-seed calls
    dks, aks = jax.random.split(jax.random.key(7), 3), jax.random.split(jax.random.key(8), 3)
    f = lambda d, a: data.make_batch(ds, d, a, 11, 8, augment=True)
    xs, ys = jax.jit(jax.vmap(f))(dks, aks)
    fj = jax.jit(f)
    for i in range(3):
        xi, yi = fj(dks[i], aks[i])
        np.testing.assert_allclose(xs[i], xi, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(ys[i], yi)


def test_eval_batch_covers_all_once():
    ds = _tiny_dataset(n=23)
    nb = data.num_eval_batches(23, 8)
    assert nb == 3
    labels, count = [], 0
    for i in range(nb):
        x, y, valid = jax.jit(data.eval_batch, static_argnums=2)(ds, i, 8)
        assert x.shape == (8, 6, 6, 3)
        labels += np.asarray(y)[np.asarray(valid)].tolist()
        count += int(valid.sum())
    assert count == 23
    assert labels == np.asarray(ds.labels).tolist()


# --- augmentation ------------------------------------------------------------


def test_pad_and_crop_known_image():
    img = jnp.arange(1, 7, dtype=jnp.uint8).reshape(2, 3, 1)  # [[1,2,3],[4,5,6]]
    same = data.pad_and_crop(img, (1, 1), 1)
    np.testing.assert_array_equal(same, img)
    shifted = data.pad_and_crop(img, (0, 0), 1)[..., 0]
    np.testing.assert_array_equal(shifted, [[0, 0, 0], [0, 1, 2]])
    shifted = data.pad_and_crop(img, (2, 2), 1)[..., 0]
    np.testing.assert_array_equal(shifted, [[5, 6, 0], [0, 0, 0]])


def test_random_flip_and_crop_outcomes():
    img = jnp.arange(1, 7, dtype=jnp.uint8).reshape(2, 3, 1)
    keys = jax.random.split(jax.random.key(0), 64)
    flip = jax.jit(jax.vmap(data.random_flip, in_axes=(0, None)))
    flips = {tuple(np.asarray(o).ravel()) for o in flip(keys, img)}
    assert flips == {(1, 2, 3, 4, 5, 6), (3, 2, 1, 6, 5, 4)}
    # every augmented image is one of the 9 crops, possibly flipped; all 18 occur
    padded = np.pad(np.asarray(img)[..., 0], 1)
    allowed = set()
    for dy in range(3):
        for dx in range(3):
            c = padded[dy:dy + 2, dx:dx + 3]
            allowed |= {tuple(c.ravel()), tuple(c[:, ::-1].ravel())}
    out = jax.jit(data.augment, static_argnames="padding")(
        jax.random.key(1), jnp.broadcast_to(img, (400, 2, 3, 1)), padding=1)
    got = {tuple(np.asarray(o)[..., 0].ravel()) for o in out}
    assert got <= allowed and len(got) == len(allowed) == 18


def test_augment_shape_dtype_determinism():
    rng = np.random.default_rng(0)
    x8 = jnp.asarray(rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8))
    aug = jax.jit(data.augment)
    for x in (x8, x8.astype(jnp.float32)):
        y = aug(jax.random.key(0), x)
        assert y.shape == x.shape and y.dtype == x.dtype
        np.testing.assert_array_equal(y, aug(jax.random.key(0), x))
        assert not np.array_equal(y, aug(jax.random.key(1), x))
    # per-example randomness: identical inputs get different augmentations
    same = jnp.broadcast_to(x8[:1], (16, 32, 32, 3))
    out = aug(jax.random.key(2), same)
    assert len({np.asarray(o).tobytes() for o in out}) > 8
    # no-op settings
    np.testing.assert_array_equal(data.augment(jax.random.key(0), x8, padding=0, flip=False), x8)


def test_normalize():
    x = jnp.full((2, 4, 4, 1), 255, jnp.uint8)
    y = data.normalize(x, "mnist")
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, (1 - 0.1307) / 0.3081, rtol=1e-6)
    z = data.normalize(jnp.zeros((1, 2, 2, 3), jnp.uint8), "cifar10")
    np.testing.assert_allclose(z[0, 0, 0], -np.array([0.4914, 0.4822, 0.4465]) /
                               np.array([0.2470, 0.2435, 0.2616]), rtol=1e-5)
    with pytest.raises(ValueError, match="valid datasets: "):
        data.normalize(x, "nope")


# ----------------------------------------------------------------------------- your own arrays


def test_from_arrays_keeps_shape_dtype_and_values():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 40)).astype(np.float32) * 7
    y = rng.integers(0, 3, 50).astype(np.int32)
    d = data.from_arrays(train=(x[:40], y[:40]), test=(x[40:], y[40:]))
    assert d.train.example_shape == (40,) and d.train.inputs.dtype == jnp.float32 and d.train.num_classes == 3
    xb, yb = data.make_batch(d.train, jax.random.key(0), jax.random.key(0), 0, 8)
    idx = np.asarray(data.batch_indices(jax.random.key(0), 0, batch_size=8, num_examples=40))
    np.testing.assert_array_equal(np.asarray(xb), x[:40][idx])  # not divided by 255, not normalised
    tokens = data.from_arrays(train=(rng.integers(0, 100, (20, 5)), rng.random((20, 3))))
    assert tokens.train.inputs.dtype == jnp.int64 or tokens.train.inputs.dtype == jnp.int32
    assert tokens.train.num_classes is None and tokens.test is None  # soft labels: no class count
    norm = data.from_arrays(train=(x[:40], y[:40]), normalize=(x.mean(0), x.std(0)))
    xn, _ = data.make_batch(norm.train, jax.random.key(0), jax.random.key(0), 0, 8)
    np.testing.assert_allclose(np.asarray(xn), (x[:40][idx] - x.mean(0)) / x.std(0), rtol=1e-5, atol=1e-5)


def test_from_arrays_validation_and_errors():
    x, y = np.zeros((30, 4), np.float32), np.arange(30) % 2
    d = data.from_arrays(train=(x, y), validation_size=10)
    assert (len(d.train), len(d.validation)) == (20, 10)
    with pytest.raises(ValueError, match="must share their leading"):
        data.from_arrays(train=(x, y[:5]))
    with pytest.raises(ValueError, match=r"test inputs are float32\[5\] per example but train inputs are float32\[4\]"):
        data.from_arrays(train=(x, y), test=(np.zeros((3, 5), np.float32), y[:3]))
    with pytest.raises(ValueError, match="pair"):
        data.from_arrays(train=x)
    with pytest.raises(ValueError, match="not both"):
        data.from_arrays(train=(x, y), normalize=(0, 1), preprocess=abs)


def test_fingerprints_tell_data_apart():
    x, y = np.ones((30, 4), np.float32), np.arange(30) % 2
    a = data.from_arrays(train=(x, y)).fingerprint()
    assert a == data.from_arrays(train=(x.copy(), y.copy())).fingerprint()
    x2 = x.copy()
    x2[3, 2] = 0.5
    assert a["sha256"] != data.from_arrays(train=(x2, y)).fingerprint()["sha256"]
    assert a["splits"]["train"] == {"n": 30, "inputs": [[4], "float32"], "labels": [[], "int32"], "preprocess": None}  # JAX keeps 32 bits
    registered = data.splits("digits", validation_size=100).fingerprint()
    assert registered["dataset"] == {"dataset": "digits", "version": None, "validation_size": 100}
    assert "sha256" not in registered
