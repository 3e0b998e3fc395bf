"""Small datasets as device-resident arrays: load once, cache as ``.npy``, ``device_put`` once.

Splits:
  ``"train"``       the training set minus the held-out validation examples,
  ``"validation"``  ``validation_size`` examples held out from the training set,
  ``"test"``        the official test set.

The held-out examples are the first ``validation_size`` entries of
``stable_permutation(num_train, VALIDATION_SEED)`` (a fixed integer hash, identical on
every machine and library version), so validation and train are disjoint, together
are the whole training set, and a smaller validation set is a subset of a larger one.
``validation_size=None`` means the dataset's default (5,000 for mnist, fashion_mnist,
cifar10 and cifar100, as in Frankle & Carbin; 0 for digits); pass ``0`` to train on
the full training set. Examples keep their original relative order in each split.

Example:
    >>> ds = load("digits", "train")                  # no download needed
    >>> ds.images.shape, ds.labels.dtype, ds.num_classes
    ((1437, 8, 8, 1), dtype('int32'), 10)
    >>> parts = splits("mnist", manual_dir="/data/mnist")   # doctest: +SKIP
    >>> [len(parts[k]) for k in ("train", "validation", "test")]  # doctest: +SKIP
    [55000, 5000, 10000]
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import numpy as np

from jaxticket.data import cache as cache_lib
from jaxticket.data import embedded
from jaxticket.data.registry import default_data_dir, get_spec

log = logging.getLogger(__name__)

VALIDATION_SEED = 5000
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
    """A dataset held as two arrays, usually on the device. A JAX pytree.

    Attributes:
      images: uint8 ``[N, H, W, C]`` (pytree leaf).
      labels: int32 ``[N]`` (pytree leaf).
      name: registry name, used for normalisation statistics (static).
      num_classes: number of labels (static).
      mean, std: per-channel normalisation statistics (static tuples).

    Being a pytree with static metadata, it can be passed straight into ``jax.jit``.
    """

    images: jax.Array
    labels: jax.Array
    name: str
    num_classes: int
    mean: tuple = (0.0,)
    std: tuple = (1.0,)

    @property
    def num_examples(self) -> int:
        return int(self.labels.shape[0])

    def __len__(self) -> int:
        return self.num_examples

    @property
    def image_shape(self) -> tuple:
        return tuple(self.images.shape[1:])


jax.tree_util.register_dataclass(
    ArrayDataset,
    data_fields=["images", "labels"],
    meta_fields=["name", "num_classes", "mean", "std"],
)


def validation_split_indices(num_train: int, validation_size: int, seed: int = VALIDATION_SEED):
    """``(train_idx, validation_idx)``: sorted int64 index arrays, disjoint, covering ``range(num_train)``.

    Example:
        >>> tr, va = validation_split_indices(10, 3)
        >>> len(tr), len(va), sorted(set(tr) | set(va)) == list(range(10))
        (7, 3, True)
    """
    if not 0 <= validation_size < num_train:
        raise ValueError(
            f"validation_size must be in [0, {num_train}) for {num_train} training examples, "
            f"got {validation_size}"
        )
    perm = embedded.stable_permutation(num_train, seed)
    return np.sort(perm[validation_size:]), np.sort(perm[:validation_size])


def _base_arrays(name, base_split, *, data_dir, manual_dir, download, cache):
    spec = get_spec(name)
    if spec.source == "embedded":
        return embedded.digits_arrays(base_split)
    from jaxticket.data import tfds_source

    if spec.streaming:
        raise ValueError(
            f"{name!r} is too large to materialise in memory; stream it with "
            "jaxticket.data.make_stream(...)"
        )
    tfds_split = spec.test_split if base_split == "test" else "train"
    path = cache_lib.cache_path(default_data_dir(data_dir), name, spec.tfds_version, base_split)
    if cache and cache_lib.is_cached(path):
        return cache_lib.load_cached(path)
    images, labels = tfds_source.read_arrays(
        name, tfds_split, data_dir=data_dir, manual_dir=manual_dir, download=download
    )
    if cache:
        cache_lib.save_arrays(
            path, images, labels,
            {"name": name, "tfds_version": spec.tfds_version, "tfds_split": tfds_split},
        )
        log.info("cached %s/%s at %s", name, base_split, path)
    return images, labels


def load_arrays(name: str, split: str = "train", *, validation_size: int | None = None,
                data_dir=None, manual_dir=None, download: bool | None = None,
                cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Host numpy arrays of one split: ``(images uint8 [N,H,W,C], labels int32 [N])``.

    The first call for a TFDS dataset prepares it (offline: from ``manual_dir`` /
    ``$JAXTICKET_MANUAL_DIR``) and materialises the split into
    ``<data_dir>/jaxticket_arrays/``; later calls load that cache (well under a
    second) without importing TFDS. ``cache=False`` skips the cache both ways.
    See the module docstring for the splits and ``validation_size``.

    Raises:
      ValueError: unknown dataset (lists valid names) or split, bad ``validation_size``.
      DatasetUnavailableError: the data can't be had offline (says which files and how).
    """
    spec = get_spec(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if validation_size is None:
        validation_size = spec.default_validation_size
    kw = dict(data_dir=data_dir, manual_dir=manual_dir, download=download, cache=cache)
    if split == "test":
        return _base_arrays(name, "test", **kw)
    if split == "validation" and validation_size == 0:
        raise ValueError(f"{name!r} has no validation split with validation_size=0; pass validation_size > 0")
    images, labels = _base_arrays(name, "train", **kw)
    if validation_size == 0:
        return images, labels
    train_idx, val_idx = validation_split_indices(len(labels), validation_size)
    idx = train_idx if split == "train" else val_idx
    return images[idx], labels[idx]


def to_device(images, labels, name: str, device=None) -> ArrayDataset:
    """Wrap host arrays as an :class:`ArrayDataset`, ``jax.device_put`` onto ``device``.

    ``device`` may be a ``jax.Device`` or a ``jax.sharding.Sharding`` (default: the
    default device). Use a replicated ``NamedSharding`` to place it on a whole mesh.
    """
    spec = get_spec(name)
    images, labels = jax.device_put((np.asarray(images), np.asarray(labels)), device)
    return ArrayDataset(images, labels, name, spec.num_classes, tuple(spec.mean), tuple(spec.std))


def load(name: str, split: str = "train", *, validation_size: int | None = None,
         data_dir=None, manual_dir=None, download: bool | None = None,
         cache: bool = True, device=None) -> ArrayDataset:
    """Load one split as an :class:`ArrayDataset` on the device (see :func:`load_arrays`).

    Example:
        >>> test = load("digits", "test")
        >>> test.images.shape
        (360, 8, 8, 1)
    """
    images, labels = load_arrays(
        name, split, validation_size=validation_size, data_dir=data_dir,
        manual_dir=manual_dir, download=download, cache=cache,
    )
    return to_device(images, labels, name, device)


def splits(name: str, *, validation_size: int | None = None, data_dir=None, manual_dir=None,
           download: bool | None = None, cache: bool = True, device=None) -> dict:
    """``{"train", "validation", "test"}`` :class:`ArrayDataset` s, consistent by construction.

    ``"validation"`` is ``None`` when ``validation_size`` resolves to 0.
    """
    spec = get_spec(name)
    if validation_size is None:
        validation_size = spec.default_validation_size
    kw = dict(data_dir=data_dir, manual_dir=manual_dir, download=download, cache=cache)
    train_images, train_labels = load_arrays(name, "train", validation_size=0, **kw)
    test_images, test_labels = load_arrays(name, "test", **kw)
    out = {"validation": None}
    if validation_size:
        tr, va = validation_split_indices(len(train_labels), validation_size)
        out["validation"] = to_device(train_images[va], train_labels[va], name, device)
        train_images, train_labels = train_images[tr], train_labels[tr]
    out["train"] = to_device(train_images, train_labels, name, device)
    out["test"] = to_device(test_images, test_labels, name, device)
    return out
