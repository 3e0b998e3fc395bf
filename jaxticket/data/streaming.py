"""Host streaming for large datasets (ImageNet): ``tfds.data_source`` + grain.

The pipeline is a ``grain.MapDataset`` of *batches*, so it has random access:
``stream[step]`` is the batch of global step ``step`` on this host, a pure function of
(seed, step, shard). Resume or rewind by starting the iterator at that step
(:func:`stream_iterator`) instead of replaying. Per-epoch order is a grain shuffle of
the whole split with ``seed`` (reshuffled each epoch); per-example augmentation is
seeded by ``seed`` and the example's global position. Hosts share the global order and
each takes every ``shard_count``-th example starting at ``shard_index`` (defaults
``jax.process_index()`` / ``jax.process_count()``), so together they visit each
example once per epoch.

Preprocessing (numpy/PIL, on the host, outputs uint8 so the transfer is small;
normalise on the device with ``normalize(x, "imagenet2012")``):
  train: decode, random resized crop (scale 0.08-1, aspect 3/4-4/3, 10 tries, then a
         center crop; as torchvision/open_lth) to ``image_size``, horizontal flip p=1/2.
  eval:  decode, resize the shorter side to ``resize_size`` (default
         ``round(image_size / 0.875)``: 256 for 224), center crop ``image_size``.

Each element is ``{"image": uint8 [B, S, S, 3], "label": int32 [B], "mask": bool [B]}``.
Training batches are full (``mask`` all True, the partial batch at the end of the last
epoch is dropped); evaluation covers every example once: the split is padded to a
multiple of ``shard_count * per-host batch`` with masked-out blank examples, so every
host yields the same number of batches.

Example:
    >>> stream = make_stream("imagenet2012", "train", batch_size=1024, seed=0,
    ...                      manual_dir="/data/imagenet")          # doctest: +SKIP
    >>> for batch in stream_iterator(stream, start_step=0):         # doctest: +SKIP
    ...     x = normalize(batch["image"], "imagenet2012")
"""

from __future__ import annotations

import io
import math

import numpy as np

from jaxticket.data.dataset import validation_split_indices
from jaxticket.data.registry import default_data_dir, get_spec


def decode_image(image) -> np.ndarray:
    """JPEG/PNG bytes (or an already decoded array) -> RGB uint8 ``[H, W, 3]``."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        from PIL import Image

        with Image.open(io.BytesIO(bytes(image))) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    arr = np.asarray(image, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr[..., :3]


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    if image.shape[0] == height and image.shape[1] == width:
        return image
    out = Image.fromarray(image).resize((width, height), Image.BILINEAR)
    return np.asarray(out, dtype=np.uint8)


def random_resized_crop_box(height: int, width: int, rng: np.random.Generator,
                            scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts: int = 10):
    """``(top, left, h, w)`` of a random crop as in torchvision's RandomResizedCrop."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    # Fallback: central crop with the aspect ratio clamped to `ratio`.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def preprocess_train(image, rng: np.random.Generator, image_size: int = 224) -> np.ndarray:
    """Decode + random resized crop to ``image_size`` + random flip: uint8 ``[S, S, 3]``."""
    img = decode_image(image)
    top, left, h, w = random_resized_crop_box(img.shape[0], img.shape[1], rng)
    img = _resize(img[top:top + h, left:left + w], image_size, image_size)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


def preprocess_eval(image, image_size: int = 224, resize_size: int | None = None) -> np.ndarray:
    """Decode + resize shorter side to ``resize_size`` + center crop ``image_size``."""
    if resize_size is None:
        resize_size = int(round(image_size / 0.875))
    img = decode_image(image)
    h, w = img.shape[:2]
    s = resize_size / min(h, w)
    nh, nw = max(image_size, int(round(h * s))), max(image_size, int(round(w * s)))
    img = _resize(img, nh, nw)
    top, left = (nh - image_size) // 2, (nw - image_size) // 2
    return np.ascontiguousarray(img[top:top + image_size, left:left + image_size])


def _tfds_decoders():
    import tensorflow_datasets as tfds

    # Keep JPEG bytes: decoding here with PIL, right before cropping, is cheaper.
    return {"image": tfds.decode.SkipDecoding()}


class _Subset:
    """Random-access view ``source[indices[i]]``; indices past the end give ``_PAD``."""

    def __init__(self, source, indices, length=None):
        self._source, self._indices = source, indices
        self._len = len(indices) if length is None else length

    def __len__(self):
        return self._len

    def __getitem__(self, i):
        i = int(i)
        if i >= len(self._indices):
            return _PAD  # padding (evaluation only; grain treats None as "filtered")
        return self._source[int(self._indices[i])]


_PAD = {"pad": True}


def _batch_fn(examples):
    return {
        "image": np.stack([e["image"] for e in examples]),
        "label": np.asarray([e["label"] for e in examples], np.int32),
        "mask": np.asarray([e["mask"] for e in examples], bool),
    }


def make_stream(name: str = "imagenet2012", split: str = "train", *, batch_size: int,
                seed: int = 0, train: bool | None = None, image_size: int = 224,
                resize_size: int | None = None, num_epochs: int | None = None,
                validation_size: int = 0, shard_index: int | None = None,
                shard_count: int | None = None, data_dir=None, manual_dir=None,
                download: bool | None = None, source=None):
    """A deterministic grain pipeline of host batches over a TFDS ``array_record`` split.

    Args:
      name: registry name (any TFDS dataset; meant for ``imagenet2012``).
      split: ``"train"``, ``"validation"`` (``validation_size`` examples held out of
        train, as for :func:`load`) or ``"test"`` (ImageNet's official validation set).
      batch_size: *global* batch size; each of ``shard_count`` hosts yields
        ``batch_size // shard_count`` examples per step.
      seed: shuffling and augmentation seed.
      train: training preprocessing and shuffling (default: ``split == "train"``).
      image_size, resize_size: output size; eval resize of the shorter side.
      num_epochs: training epochs (``None``: repeat forever); evaluation is one pass.
      shard_index, shard_count: this host's shard (default: JAX process index/count).
      data_dir, manual_dir, download: as for :func:`prepare`.
      source: a random-access source of ``{"image", "label"}`` records to use instead
        of TFDS (images as encoded bytes or arrays).

    Returns:
      ``grain.MapDataset`` of dicts ``image uint8 [b, S, S, 3]``, ``label int32 [b]``,
      ``mask bool [b]`` with ``b = batch_size // shard_count``.
    """
    import grain

    spec = get_spec(name)
    if train is None:
        train = split == "train"
    if shard_index is None or shard_count is None:
        import jax

        shard_index, shard_count = jax.process_index(), jax.process_count()
    if batch_size % shard_count:
        raise ValueError(f"batch_size {batch_size} is not divisible by {shard_count} hosts")
    per_host = batch_size // shard_count
    if split not in ("train", "validation", "test"):
        raise ValueError(f"split must be 'train', 'validation' or 'test', got {split!r}")
    if split == "validation" and not validation_size:
        raise ValueError("split='validation' needs validation_size > 0")
    if source is None:
        from jaxticket.data import tfds_source

        tfds_split = spec.test_split if split == "test" else "train"
        source = tfds_source.data_source(
            name, tfds_split, data_dir=default_data_dir(data_dir), manual_dir=manual_dir,
            download=download, decoders=_tfds_decoders(),
        )
    if split != "test" and validation_size:
        tr, va = validation_split_indices(len(source), validation_size)
        source = _Subset(source, tr if split == "train" else va)

    if train:
        def transform(record, rng):
            img = preprocess_train(record["image"], rng, image_size)
            return {"image": img, "label": int(record["label"]), "mask": True}

        ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(num_epochs)
        ds = ds.random_map(transform, seed=seed)
        ds = ds[shard_index::shard_count]
        return ds.batch(per_host, drop_remainder=True, batch_fn=_batch_fn)

    blank = np.zeros((image_size, image_size, 3), np.uint8)

    def eval_transform(record):
        if record is _PAD:
            return {"image": blank, "label": 0, "mask": False}
        img = preprocess_eval(record["image"], image_size, resize_size)
        return {"image": img, "label": int(record["label"]), "mask": True}

    n = len(source)
    padded = -(-n // batch_size) * batch_size
    ds = grain.MapDataset.source(_Subset(source, np.arange(n), padded)).map(eval_transform)
    ds = ds[shard_index::shard_count]
    return ds.batch(per_host, drop_remainder=True, batch_fn=_batch_fn)


def stream_iterator(stream, start_step: int = 0, *, num_threads: int = 16,
                    prefetch_buffer_size: int = 64):
    """Iterate ``stream`` from batch ``start_step`` with threaded prefetching."""
    import grain

    opts = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size)
    return iter(stream[start_step:].to_iter_dataset(opts))
