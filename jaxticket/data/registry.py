"""Dataset registry: names, shapes, normalisation statistics and where the files come from.

Every dataset jaxticket knows is described by one frozen :class:`DatasetSpec`. The
registry is plain data; nothing here imports TensorFlow Datasets.

Environment variables (all optional):

``JAXTICKET_DATA_DIR``
    Where TFDS writes prepared ``array_record`` files and where jaxticket caches the
    materialised numpy arrays (``<data_dir>/jaxticket_arrays/...``). Default:
    ``$TFDS_DATA_DIR`` if set, else ``~/tensorflow_datasets`` (TFDS's own default).
``JAXTICKET_MANUAL_DIR``
    A folder with local copies of the canonical download files, for machines without
    internet. It may hold the files directly or one sub-folder per dataset
    (``$JAXTICKET_MANUAL_DIR/mnist/train-images-idx3-ubyte.gz``, ...).
``JAXTICKET_DOWNLOAD``
    ``1``/``true`` lets TFDS download missing files from the internet. Off by default, so
    an offline machine fails at once with a message naming the files it needs.

Example:
    >>> from jaxticket.data import get_spec
    >>> get_spec("mnist").image_shape
    (28, 28, 1)
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

from jaxticket.registry import Registry

ENV_DATA_DIR = "JAXTICKET_DATA_DIR"
ENV_MANUAL_DIR = "JAXTICKET_MANUAL_DIR"
ENV_DOWNLOAD = "JAXTICKET_DOWNLOAD"


class DatasetUnavailableError(ValueError):
    """A dataset is neither prepared nor obtainable (no local files, no download)."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Static description of one dataset.

    Attributes:
      name: jaxticket name (also the TFDS name for TFDS datasets).
      num_classes: number of labels.
      image_shape: ``(H, W, C)`` of one example; ``None`` entries for variable sizes.
      split_sizes: examples per canonical split, e.g. ``{"train": 60000, "test": 10000}``.
      mean, std: per-channel statistics of pixel values scaled to ``[0, 1]``, used by
        :func:`jaxticket.data.normalize`.
      source: ``"tfds"`` or ``"embedded"`` (bundled with a package, no download).
      tfds_version: pinned TFDS version (the cache key includes it).
      test_split: the TFDS split used as jaxticket's ``"test"`` split.
      manual_files: canonical file names TFDS accepts from a manual-download folder.
      downloadable: whether TFDS can fetch the files itself (with internet).
      streaming: too large to materialise in memory; use :func:`make_stream`.
      default_validation_size: training examples held out as ``"validation"`` when
        ``validation_size`` is not given (Frankle & Carbin hold out 5,000).
      homepage: where a user gets the files.
    """

    name: str
    num_classes: int
    image_shape: tuple
    split_sizes: dict
    mean: tuple
    std: tuple
    source: str = "tfds"
    tfds_version: str | None = None
    test_split: str = "test"
    manual_files: tuple = ()
    downloadable: bool = True
    streaming: bool = False
    default_validation_size: int = 0
    homepage: str = ""

    @property
    def tfds_id(self) -> str:
        """``"name:version"`` as passed to ``tfds.builder``."""
        return f"{self.name}:{self.tfds_version}" if self.tfds_version else self.name


_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# Normalisation statistics (pixel/255, per channel):
#   mnist          0.1307 / 0.3081       (the standard PyTorch/open_lth values)
#   fashion_mnist  0.2860 / 0.3530
#   cifar10        (0.4914, 0.4822, 0.4465) / (0.2470, 0.2435, 0.2616) (train set)
#   cifar100       (0.5071, 0.4865, 0.4409) / (0.2673, 0.2564, 0.2762) (train set)
#   imagenet2012   (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225)
#   digits         0.3053 / 0.3759       (all 1,797 images after scaling 0..16 to 0..255)
#: The datasets by name (a :class:`jaxticket.registry.Registry`; :func:`register_dataset` adds one).
DATASETS = Registry("dataset", hint="your own: jaxticket.data.register_dataset(DatasetSpec(...))")

for _spec in (
    DatasetSpec(
        name="mnist", num_classes=10, image_shape=(28, 28, 1),
        split_sizes={"train": 60000, "test": 10000},
        mean=(0.1307,), std=(0.3081,), tfds_version="3.0.1",
        manual_files=_MNIST_FILES, default_validation_size=5000,
        homepage="http://yann.lecun.com/exdb/mnist/",
    ),
    DatasetSpec(
        name="fashion_mnist", num_classes=10, image_shape=(28, 28, 1),
        split_sizes={"train": 60000, "test": 10000},
        mean=(0.2860,), std=(0.3530,), tfds_version="3.0.1",
        manual_files=_MNIST_FILES, default_validation_size=5000,
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    ),
    DatasetSpec(
        name="cifar10", num_classes=10, image_shape=(32, 32, 3),
        split_sizes={"train": 50000, "test": 10000},
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
        tfds_version="3.0.2", manual_files=("cifar-10-binary.tar.gz",),
        default_validation_size=5000,
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
    DatasetSpec(
        name="cifar100", num_classes=100, image_shape=(32, 32, 3),
        split_sizes={"train": 50000, "test": 10000},
        mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
        tfds_version="3.0.2", manual_files=("cifar-100-binary.tar.gz",),
        default_validation_size=5000,
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
    DatasetSpec(
        name="imagenet2012", num_classes=1000, image_shape=(None, None, 3),
        split_sizes={"train": 1281167, "test": 50000},
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
        tfds_version="5.1.0", test_split="validation",
        manual_files=("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"),
        downloadable=False, streaming=True,
        homepage="https://image-net.org/download-images (ILSVRC2012)",
    ),
    DatasetSpec(
        name="digits", num_classes=10, image_shape=(8, 8, 1),
        split_sizes={"train": 1437, "test": 360},
        mean=(0.3053,), std=(0.3759,), source="embedded",
        downloadable=False,
        homepage="scikit-learn: sklearn.datasets.load_digits (bundled, no download)",
    ),
):
    DATASETS.register(_spec.name, _spec)
del _spec


def register_dataset(spec: DatasetSpec, *, overwrite: bool = False) -> DatasetSpec:
    """Makes another TFDS image-classification dataset (features ``image`` and ``label``)
    loadable by name: :func:`load`, configs (``dataset=...``) and the command line (from a
    module given to ``--import``). Returns ``spec``.

    Example:
        >>> kmnist = DatasetSpec(name="kmnist", num_classes=10, image_shape=(28, 28, 1),
        ...                      split_sizes={"train": 60000, "test": 10000}, mean=(0.19,), std=(0.35,),
        ...                      tfds_version="3.0.1", manual_files=("train-images-idx3-ubyte.gz",
        ...                      "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
        ...                      "t10k-labels-idx1-ubyte.gz"), default_validation_size=5000)
        >>> register_dataset(kmnist, overwrite=True).name in list_datasets()
        True
        >>> _ = DATASETS.pop("kmnist")  # (this example leaves the registry as it found it)
    """
    if not isinstance(spec, DatasetSpec):
        raise TypeError(f"register_dataset takes a DatasetSpec, got {type(spec).__name__}")
    if spec.source not in ("tfds", "embedded"):
        raise ValueError(f"dataset {spec.name!r}: source must be 'tfds' or 'embedded', got {spec.source!r}")
    channels = spec.image_shape[-1] if spec.image_shape else None
    if len(spec.mean) != len(spec.std) or (channels is not None and len(spec.mean) not in (1, channels)):
        raise ValueError(f"dataset {spec.name!r}: mean and std need one value per channel ({channels}), "
                         f"got {len(spec.mean)} and {len(spec.std)}")
    return DATASETS.register(spec.name, spec, overwrite=overwrite)  # equal to the one there: fine


def list_datasets() -> tuple[str, ...]:
    """Names accepted by :func:`load`, sorted. Example: ``"mnist" in list_datasets()``."""
    return DATASETS.names()


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` for ``name``; an unknown name is a
    :class:`~jaxticket.registry.UnknownNameError` (a ValueError) naming the closest and
    all valid names.

    Example:
        >>> get_spec("cifar10").num_classes
        10
    """
    return DATASETS.get(name)


def default_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Resolve the data dir: argument, else ``$JAXTICKET_DATA_DIR``, else TFDS's default."""
    if data_dir is None:
        data_dir = (
            os.environ.get(ENV_DATA_DIR)
            or os.environ.get("TFDS_DATA_DIR")
            or "~/tensorflow_datasets"
        )
    return Path(data_dir).expanduser()


def download_allowed(download: bool | None = None) -> bool:
    """Resolve the ``download`` switch: argument, else ``$JAXTICKET_DOWNLOAD`` (default off)."""
    if download is not None:
        return bool(download)
    return os.environ.get(ENV_DOWNLOAD, "").strip().lower() in ("1", "true", "yes", "on")


def manual_dir_candidates(
    name: str,
    manual_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """Folders searched for ``name``'s manual files, in order.

    ``manual_dir`` (else ``$JAXTICKET_MANUAL_DIR``) and its ``<name>/`` sub-folder, then
    TFDS's default ``<data_dir>/downloads/manual`` (and its ``<name>/`` sub-folder).
    """
    roots = []
    given = manual_dir if manual_dir is not None else os.environ.get(ENV_MANUAL_DIR)
    if given:
        roots.append(Path(given).expanduser())
    roots.append(default_data_dir(data_dir) / "downloads" / "manual")
    out = []
    for root in roots:
        out += [root, root / name]
    return out


def find_manual_dir(
    name: str,
    manual_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
) -> tuple[Path | None, list[str]]:
    """Return ``(folder holding all manual files or None, missing file names)``.

    The missing names are relative to the first candidate folder (the one the user
    named), which is what an error message should talk about.
    """
    spec = get_spec(name)
    candidates = manual_dir_candidates(name, manual_dir, data_dir)
    for folder in candidates:
        if spec.manual_files and all((folder / f).is_file() for f in spec.manual_files):
            return folder, []
    first = candidates[0]
    missing = [f for f in spec.manual_files if not (first / f).is_file()]
    return None, missing


def check_sizes(name: str, *, validation_size: Optional[int], batch_size: int) -> Optional[int]:
    """The training examples a registered dataset leaves after its validation split (``None``
    when its registry entry does not say), checked before anything loads: a
    ``validation_size`` that leaves none, or a ``batch_size`` larger than what is left, is a
    :class:`~jaxticket.settings.SettingError` naming that setting.

    Example:
        >>> check_sizes("mnist", validation_size=5000, batch_size=60)
        55000
        >>> check_sizes("mnist", validation_size=None, batch_size=100_000)
        Traceback (most recent call last):
        ...
        jaxticket.settings.SettingError: batch_size 100000 is larger than the 55,000 training examples of mnist (after validation_size); choose at most 55000
    """
    from jaxticket.settings import SettingError

    spec = get_spec(name)
    n = (spec.split_sizes or {}).get("train")
    if not n:
        return None
    validation = spec.default_validation_size if validation_size is None else validation_size
    if not 0 <= validation < n:
        raise SettingError("validation_size", f"{validation}: {name} has {n:,} training examples and the validation "
                                              f"split must leave some to train on; choose a value in [0, {n})",
                           joiner="=")
    if batch_size > n - validation:
        raise SettingError("batch_size", f"{batch_size} is larger than the {n - validation:,} training examples of "
                                         f"{name} (after validation_size); choose at most {n - validation}")
    return n - validation
