"""Datasets as device-resident arrays: your own (:func:`from_arrays`) or a registered one
(:func:`splits`: loaded once, cached as ``.npy``, ``device_put`` once).

Your own arrays keep their shape and dtype: nothing is rescaled unless you ask
(``normalize=`` / ``preprocess=``). The registered image datasets store uint8 pixels and
normalise each batch with their channel statistics (:class:`Normalize`).

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
    >>> ds.inputs.shape, ds.labels.dtype, ds.num_classes
    ((1437, 8, 8, 1), dtype('int32'), 10)
    >>> parts = splits("mnist", manual_dir="/data/mnist")   # doctest: +SKIP
    >>> [len(parts[k]) for k in ("train", "validation", "test")]  # doctest: +SKIP
    [55000, 5000, 10000]
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxticket.data import cache as cache_lib
from jaxticket.data import embedded
from jaxticket.data.registry import default_data_dir, get_spec

log = logging.getLogger(__name__)

VALIDATION_SEED = 5000
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Normalize:
    """``(x * scale - mean) / std`` as float32, per channel (the last axis). Hashable, static.

    The registered image datasets store uint8 pixels and normalise each batch on the
    device with ``scale = 1/255`` and their channel statistics (as torchvision's
    ``ToTensor`` + ``Normalize``); :func:`from_arrays` uses it with ``scale=1`` when
    given ``normalize=(mean, std)``.

    Example:
        >>> Normalize((0.5,), (0.25,))(np.full((1, 2, 2, 1), 255, np.uint8))[0, 0, 0, 0]
        Array(2., dtype=float32)
    """

    mean: tuple
    std: tuple
    scale: float = 1.0 / 255.0

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(m) for m in np.ravel(self.mean)))
        object.__setattr__(self, "std", tuple(float(s) for s in np.ravel(self.std)))
        if not self.std or any(s <= 0 for s in self.std):
            raise ValueError(f"Normalize: std must be positive numbers, got {self.std!r}")

    def __call__(self, x):
        x = jnp.asarray(x).astype(jnp.float32) * jnp.float32(self.scale)
        mean = jnp.asarray(self.mean, jnp.float32)
        inv_std = 1.0 / jnp.asarray(self.std, jnp.float32)
        return (x - mean) * inv_std


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
    """One split held as two arrays, usually on the device. A JAX pytree.

    Attributes:
      inputs: ``[N, *example_shape]``, any dtype (pytree leaf). The registered image
        datasets hold uint8 ``[N, H, W, C]`` pixels.
      labels: ``[N, ...]`` (pytree leaf); int32 ``[N]`` class indices for the
        registered datasets, anything the task's loss accepts otherwise.
      name: a label for messages and the run directory (static).
      num_classes: number of classes when known (static), else ``None``.
      preprocess: ``None`` (inputs reach the model as stored) or a hashable callable
        applied to every batch of inputs inside ``jit``, after augmentation (static);
        the registered image datasets use :class:`Normalize`.

    Being a pytree with static metadata, it can be passed straight into ``jax.jit``.

    Example:
        >>> ds = ArrayDataset(np.zeros((4, 40), np.float32), np.arange(4, dtype=np.int32))
        >>> ds.num_examples, ds.example_shape
        (4, (40,))
    """

    inputs: Any
    labels: Any
    name: str = "arrays"
    num_classes: Optional[int] = None
    preprocess: Optional[Callable] = None

    @property
    def num_examples(self) -> int:
        return int(self.labels.shape[0])

    def __len__(self) -> int:
        return self.num_examples

    @property
    def example_shape(self) -> tuple:
        """The shape of one input (no batch axis)."""
        return tuple(self.inputs.shape[1:])

    def take(self, n: int) -> "ArrayDataset":
        """The first ``n`` examples (all of them when ``n`` is larger)."""
        return dataclasses.replace(self, inputs=self.inputs[:n], labels=self.labels[:n])


jax.tree_util.register_dataclass(
    ArrayDataset,
    data_fields=["inputs", "labels"],
    meta_fields=["name", "num_classes", "preprocess"],
)


@dataclasses.dataclass(frozen=True)
class Data:
    """The splits of one dataset: ``train``, and optionally ``validation`` and ``test``.

    Each split is an :class:`ArrayDataset` (or, for ImageNet, a host stream). ``source``
    says where the data came from: ``{"dataset", "version", "validation_size"}`` for a
    registered dataset, ``None`` for arrays (whose content is then hashed by
    :meth:`fingerprint`). ``data["train"]`` works too.

    Example:
        >>> d = from_arrays(train=(np.ones((8, 3), np.float32), np.zeros(8, np.int32)))
        >>> d.train.num_examples, d.validation is None, d["train"] is d.train
        (8, True, True)
    """

    train: Any
    test: Any = None
    validation: Any = None
    source: Optional[dict] = None

    def __getitem__(self, split: str):
        if split not in SPLITS:
            raise KeyError(f"split must be one of {SPLITS}, got {split!r}")
        return getattr(self, split)

    def get(self, split: str, default=None):
        value = getattr(self, split, None) if split in SPLITS else None
        return default if value is None else value

    def fingerprint(self) -> dict:
        """What identifies this data in a run directory: per split the number of
        examples, shapes and dtypes, the preprocessing, and the dataset name/version/
        validation size of a registered dataset or a sha256 of the arrays' bytes.

        Example:
            >>> d = from_arrays(train=(np.ones((8, 3), np.float32), np.zeros(8, np.int32)))
            >>> sorted(d.fingerprint())
            ['sha256', 'splits']
        """
        splits = {}
        digest = hashlib.sha256()
        for split in SPLITS:
            ds = getattr(self, split)
            if ds is None:
                continue
            if not isinstance(ds, ArrayDataset):  # a host stream (ImageNet): by its source
                splits[split] = {"stream": type(ds).__name__, "batches": len(ds)}
                continue
            splits[split] = {
                "n": ds.num_examples,
                "inputs": [list(ds.example_shape), str(ds.inputs.dtype)],
                "labels": [list(ds.labels.shape[1:]), str(ds.labels.dtype)],
                "preprocess": None if ds.preprocess is None else repr(ds.preprocess),
            }
            if self.source is None:
                for arr in (ds.inputs, ds.labels):
                    digest.update(np.ascontiguousarray(jax.device_get(arr)).tobytes())
        out = {"splits": splits}
        if self.source is None:
            out["sha256"] = digest.hexdigest()[:16]
        else:
            out["dataset"] = dict(self.source)
        return out

    def describe(self) -> str:
        """One line: the source (or "arrays") and the split sizes."""
        who = self.source["dataset"] if self.source else "arrays"
        sizes = ", ".join(f"{s} {len(getattr(self, s))}" for s in SPLITS if getattr(self, s) is not None)
        return f"{who} ({sizes})"


def as_data(data) -> Data:
    """``data`` as :class:`Data`: itself, or a ``{"train", "validation", "test"}`` dict."""
    if isinstance(data, Data):
        return data
    if isinstance(data, dict):
        extra = sorted(set(data) - set(SPLITS))
        if extra:
            raise ValueError(f"data: unknown splits {extra}; valid: {SPLITS}")
        return Data(**data)
    raise TypeError(f"data must be jaxticket.data.Data (from data.from_arrays or data.splits), got {type(data).__name__}")


def is_image_data(ds) -> bool:
    """Whether ``ds`` holds images ``[N, H, W, C]`` (a host stream of images counts)."""
    if not isinstance(ds, ArrayDataset):
        return True
    return np.ndim(ds.inputs) == 4


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
    """Host arrays of registered dataset ``name`` as an :class:`ArrayDataset` on ``device``,
    normalised per batch with the dataset's statistics (:class:`Normalize`).

    ``device`` may be a ``jax.Device`` or a ``jax.sharding.Sharding`` (default: the
    default device). Use a replicated ``NamedSharding`` to place it on a whole mesh.
    """
    spec = get_spec(name)
    images, labels = jax.device_put((np.asarray(images), np.asarray(labels)), device)
    return ArrayDataset(images, labels, name, spec.num_classes, Normalize(spec.mean, spec.std))


def load(name: str, split: str = "train", *, validation_size: int | None = None,
         data_dir=None, manual_dir=None, download: bool | None = None,
         cache: bool = True, device=None) -> ArrayDataset:
    """Load one split as an :class:`ArrayDataset` on the device (see :func:`load_arrays`).

    Example:
        >>> test = load("digits", "test")
        >>> test.inputs.shape
        (360, 8, 8, 1)
    """
    images, labels = load_arrays(
        name, split, validation_size=validation_size, data_dir=data_dir,
        manual_dir=manual_dir, download=download, cache=cache,
    )
    return to_device(images, labels, name, device)


def splits(name: str, *, validation_size: int | None = None, data_dir=None, manual_dir=None,
           download: bool | None = None, cache: bool = True, device=None) -> Data:
    """The ``train`` / ``validation`` / ``test`` splits of a registered dataset, as :class:`Data`.

    ``validation`` is ``None`` when ``validation_size`` resolves to 0.

    Example:
        >>> parts = splits("digits", validation_size=100)
        >>> [len(parts[s]) for s in ("train", "validation", "test")]
        [1337, 100, 360]
    """
    spec = get_spec(name)
    if validation_size is None:
        validation_size = spec.default_validation_size
    kw = dict(data_dir=data_dir, manual_dir=manual_dir, download=download, cache=cache)
    train_images, train_labels = load_arrays(name, "train", validation_size=0, **kw)
    test_images, test_labels = load_arrays(name, "test", **kw)
    validation = None
    if validation_size:
        tr, va = validation_split_indices(len(train_labels), validation_size)
        validation = to_device(train_images[va], train_labels[va], name, device)
        train_images, train_labels = train_images[tr], train_labels[tr]
    return Data(train=to_device(train_images, train_labels, name, device),
                test=to_device(test_images, test_labels, name, device), validation=validation,
                source={"dataset": name, "version": spec.tfds_version,
                        "validation_size": int(validation_size)})


def _pair(split: str, pair) -> tuple[np.ndarray, np.ndarray]:
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise ValueError(f"from_arrays: {split}= must be a pair (inputs, labels), got {type(pair).__name__}")
    x, y = (np.asarray(jax.device_get(a)) for a in pair)
    if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"from_arrays: {split} inputs {x.shape} and labels {y.shape} must share "
                         "their leading (example) axis")
    if x.shape[0] == 0:
        raise ValueError(f"from_arrays: the {split} split is empty")
    return x, y


def from_arrays(train, test=None, validation=None, *, validation_size: int = 0,
                normalize=None, preprocess: Optional[Callable] = None,
                num_classes: Optional[int] = None, name: str = "arrays", device=None) -> Data:
    """Your own arrays as :class:`Data`: any per-example shape and dtype, nothing rescaled.

    Args:
      train, test, validation: ``(inputs [N, ...], labels [N, ...])`` pairs (numpy or
        JAX); ``test`` and ``validation`` optional. Every split must have the same
        per-example input shape and dtype.
      validation_size: hold out this many training examples as the validation split
        (the first ``validation_size`` of a fixed permutation, as for the registered
        datasets); only without ``validation=``.
      normalize: ``(mean, std)`` per channel (the last input axis): every batch becomes
        ``(x - mean) / std`` in float32. ``None`` (default): inputs reach the model as given.
      preprocess: instead of ``normalize``, any hashable callable applied to each batch of
        inputs inside ``jit`` (e.g. ``jaxticket.data.Normalize(mean, std, scale=1/255)``
        for uint8 images).
      num_classes: recorded for reports; default ``max(labels) + 1`` for integer class
        labels ``[N]``, else ``None``.
      name: a label for messages.
      device: a ``jax.Device`` or ``Sharding`` to put the arrays on.

    Returns:
      :class:`Data` whose :meth:`Data.fingerprint` hashes the arrays' bytes, so a run
      directory notices when it is resumed on other data.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(100, 40)).astype(np.float32)
        >>> y = (x[:, 0] > 0).astype(np.int32)
        >>> data = from_arrays(train=(x[:80], y[:80]), test=(x[80:], y[80:]), validation_size=10)
        >>> data.train.inputs.shape, data.validation.inputs.shape, data.train.num_classes
        ((70, 40), (10, 40), 2)
    """
    if normalize is not None and preprocess is not None:
        raise ValueError("from_arrays: pass normalize=(mean, std) or preprocess=fn, not both")
    if normalize is not None:
        if not (isinstance(normalize, (tuple, list)) and len(normalize) == 2):
            raise ValueError(f"from_arrays: normalize must be (mean, std), got {normalize!r}")
        preprocess = Normalize(normalize[0], normalize[1], scale=1.0)
    if preprocess is not None:
        try:
            hash(preprocess)
        except TypeError:
            raise ValueError("from_arrays: preprocess must be hashable (a function, or a frozen "
                             "dataclass like jaxticket.data.Normalize)") from None
    pairs = {"train": _pair("train", train)}
    if test is not None:
        pairs["test"] = _pair("test", test)
    if validation is not None:
        if validation_size:
            raise ValueError("from_arrays: pass validation=(x, y) or validation_size=N, not both")
        pairs["validation"] = _pair("validation", validation)
    elif validation_size:
        x, y = pairs["train"]
        tr, va = validation_split_indices(len(y), int(validation_size))
        pairs["train"], pairs["validation"] = (x[tr], y[tr]), (x[va], y[va])
    x0, y0 = pairs["train"]
    for split, (x, y) in pairs.items():
        if x.shape[1:] != x0.shape[1:] or x.dtype != x0.dtype:
            raise ValueError(f"from_arrays: {split} inputs are {x.dtype}{list(x.shape[1:])} per example "
                             f"but train inputs are {x0.dtype}{list(x0.shape[1:])}")
    if num_classes is None and y0.ndim == 1 and np.issubdtype(y0.dtype, np.integer):
        num_classes = int(max(int(y.max()) for _, y in pairs.values())) + 1
    splits_ = {split: ArrayDataset(*jax.device_put((x, y), device), name=name, num_classes=num_classes,
                                   preprocess=preprocess)
               for split, (x, y) in pairs.items()}
    return Data(**splits_)
