"""Embedded data for an offline quick start: scikit-learn's bundled 8x8 digits.

``sklearn.datasets.load_digits`` ships 1,797 8x8 grey images of handwritten digits
(values 0..16) inside the scikit-learn package, so nothing is downloaded. jaxticket
exposes them as dataset ``"digits"``: images uint8 ``[N, 8, 8, 1]`` scaled to
``0..255`` (``round(v * 255 / 16)``), labels int32 ``[N]``, and a fixed split of 1,437
train / 360 test images chosen by :func:`stable_permutation` with seed
``DIGITS_SPLIT_SEED`` (the same on every machine and version).

Example:
    >>> images, labels = digits_arrays("train")
    >>> images.shape, images.dtype, labels.shape
    ((1437, 8, 8, 1), dtype('uint8'), (1437,))
"""

from __future__ import annotations

import numpy as np

DIGITS_NUM_TEST = 360
DIGITS_SPLIT_SEED = 20190306  # arbitrary, fixed forever (changing it changes the split)

_MASK64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def stable_permutation(n: int, seed: int) -> np.ndarray:
    """A permutation of ``range(n)`` that depends only on ``(n, seed)``.

    Unlike ``np.random`` or ``jax.random`` streams, which may change between library
    versions, this is a fixed integer hash (splitmix64) sorted stably, so dataset
    splits never move. Returns int64 ``[n]``.

    Example:
        >>> stable_permutation(5, 0).tolist() == stable_permutation(5, 0).tolist()
        True
    """
    seed_mix = _splitmix64(np.asarray([seed & _MASK64], np.uint64))[0]
    keys = _splitmix64(np.arange(n, dtype=np.uint64) ^ seed_mix)
    return np.argsort(keys, kind="stable")


def digits_arrays(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The embedded digits split ``"train"`` (1,437) or ``"test"`` (360).

    Returns ``(images uint8 [N, 8, 8, 1], labels int32 [N])``, in ascending order of
    their index in ``load_digits``.
    """
    from sklearn.datasets import load_digits  # lazy

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = d.target.astype(np.int32)
    perm = stable_permutation(len(labels), DIGITS_SPLIT_SEED)
    if split == "test":
        idx = np.sort(perm[:DIGITS_NUM_TEST])
    elif split == "train":
        idx = np.sort(perm[DIGITS_NUM_TEST:])
    else:
        raise ValueError(f"digits has splits 'train' and 'test', not {split!r}")
    return images[idx], labels[idx]
