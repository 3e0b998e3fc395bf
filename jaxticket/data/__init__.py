"""jaxticket.data: datasets for lottery-ticket experiments.

* Your own arrays, any per-example shape and dtype: :func:`from_arrays` returns
  :class:`Data` (``train`` / ``validation`` / ``test`` :class:`ArrayDataset` s); nothing
  is rescaled unless asked (``normalize=(mean, std)`` or ``preprocess=fn``).
* Small datasets (``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``, and the
  embedded ``digits``) are loaded once as uint8 arrays, cached as ``.npy`` in the data
  dir and put on the device once: :func:`load`, :func:`splits`.
* Batches are gathered on the device; the example order is a pure function of
  (data key, step): :func:`batch_indices`, :func:`make_batch`, :func:`eval_batch`.
* Augmentation and normalisation run inside ``jit``: :func:`augment`, :func:`normalize`.
* ImageNet streams from the host through grain: :func:`make_stream`.
* TFDS preparation is offline-first: :func:`prepare` with ``manual_dir=`` or
  ``$JAXTICKET_MANUAL_DIR``; ``$JAXTICKET_DATA_DIR`` sets the data dir;
  ``$JAXTICKET_DOWNLOAD=1`` allows downloading.

Quick start, no download::

    import jax
    from jaxticket import data

    parts = data.splits("digits")                     # train 1437 / test 360
    step = jax.jit(data.make_batch, static_argnames=("batch_size", "augment"))
    x, y = step(parts.train, jax.random.key(0), jax.random.key(1), 0, 64)
    # x: float32 [64, 8, 8, 1] (normalised pixels), y: int32 [64]

    mine = data.from_arrays(train=(x_train, y_train), test=(x_test, y_test))
"""

from jaxticket.data.augment import (
    augment,
    normalization_stats,
    normalize,
    normalize_with,
    pad_and_crop,
    random_crop,
    random_flip,
)
from jaxticket.data.batching import (
    batch_indices,
    epoch_batch_indices,
    epoch_permutation,
    eval_batch,
    gather_batch,
    make_batch,
    num_eval_batches,
    steps_per_epoch,
)
from jaxticket.data.cache import cache_path, is_cached, load_cached, save_arrays
from jaxticket.data.dataset import (
    SPLITS,
    ArrayDataset,
    Data,
    as_data,
    Normalize,
    from_arrays,
    is_image_data,
    load,
    load_arrays,
    splits,
    to_device,
    validation_split_indices,
)
from jaxticket.data.embedded import digits_arrays, stable_permutation
from jaxticket.data.registry import (
    DATASETS,
    check_sizes,
    ENV_DATA_DIR,
    ENV_DOWNLOAD,
    ENV_MANUAL_DIR,
    DatasetSpec,
    DatasetUnavailableError,
    default_data_dir,
    get_spec,
    list_datasets,
    register_dataset,
)
from jaxticket.data.streaming import (
    make_stream,
    preprocess_eval,
    preprocess_train,
    stream_iterator,
)
from jaxticket.data.tfds_source import data_source, prepare, read_arrays

__all__ = [
    "check_sizes",
    "ArrayDataset", "DATASETS", "Data", "DatasetSpec", "DatasetUnavailableError", "Normalize",
    "ENV_DATA_DIR", "ENV_DOWNLOAD", "ENV_MANUAL_DIR", "SPLITS",
    "as_data", "augment", "batch_indices", "cache_path", "data_source", "default_data_dir",
    "digits_arrays", "epoch_batch_indices", "epoch_permutation", "eval_batch",
    "gather_batch", "get_spec", "is_cached", "list_datasets", "load", "load_arrays", "register_dataset",
    "load_cached", "make_batch", "make_stream", "normalization_stats", "normalize",
    "normalize_with", "num_eval_batches", "pad_and_crop", "prepare", "preprocess_eval",
    "preprocess_train", "random_crop", "random_flip", "read_arrays", "save_arrays",
    "splits", "stable_permutation", "steps_per_epoch", "stream_iterator", "to_device",
    "validation_split_indices",
]
