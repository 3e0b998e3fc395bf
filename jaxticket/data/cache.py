"""On-disk cache of materialised datasets: plain ``.npy`` files, written atomically.

Layout, one folder per (dataset, TFDS version, split)::

    <data_dir>/jaxticket_arrays/<name>/<version>/<split>/
        images.npy   uint8 [N, H, W, C]
        labels.npy   int32 [N]
        meta.json    {"num_examples": N, "image_shape": [H, W, C], ...}

The folder is built under a temporary name beside its final place and renamed into
place in one ``os.rename``: a reader sees either the complete folder or nothing, and
an error while writing leaves no partial cache behind. Loading is ``np.load`` of two
files (MNIST: ~50 MB, tens of milliseconds).

Example:
    >>> d = cache_path("/tmp/jt", "mnist", "3.0.1", "train")
    >>> save_arrays(d, images, labels)          # doctest: +SKIP
    >>> images, labels = load_cached(d)         # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

CACHE_SUBDIR = "jaxticket_arrays"
_FORMAT = 1


def cache_path(data_dir, name: str, version: str | None, split: str) -> Path:
    """Folder of the cached arrays of one split (it may not exist yet)."""
    return Path(data_dir).expanduser() / CACHE_SUBDIR / name / (version or "0") / split


def save_arrays(path, images: np.ndarray, labels: np.ndarray, meta: dict | None = None) -> Path:
    """Write ``images`` (uint8 [N,H,W,C]) and ``labels`` (int32 [N]) to ``path`` atomically.

    If another process finished the same folder first, its copy is kept and ours is
    discarded. Returns ``path``.
    """
    path = Path(path)
    images = np.ascontiguousarray(images)
    labels = np.ascontiguousarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 [N,H,W,C], got {images.dtype} {images.shape}")
    if labels.dtype != np.int32 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"labels must be int32 [{images.shape[0]}], got {labels.dtype} {labels.shape}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        np.save(tmp / "images.npy", images, allow_pickle=False)
        np.save(tmp / "labels.npy", labels, allow_pickle=False)
        info = {
            "format": _FORMAT,
            "num_examples": int(images.shape[0]),
            "image_shape": list(images.shape[1:]),
            **(meta or {}),
        }
        (tmp / "meta.json").write_text(json.dumps(info, indent=1, sort_keys=True))
        try:
            os.rename(tmp, path)
        except OSError:
            if not is_cached(path):  # not a lost race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def is_cached(path) -> bool:
    """Whether ``path`` holds a complete cache folder."""
    path = Path(path)
    return all((path / f).is_file() for f in ("images.npy", "labels.npy", "meta.json"))


def load_cached(path, mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Load ``(images uint8 [N,H,W,C], labels int32 [N])`` from a cache folder.

    ``mmap=True`` memory-maps the images instead of reading them (read-only).
    Raises FileNotFoundError when the folder is incomplete and ValueError when the
    files disagree with ``meta.json``.
    """
    path = Path(path)
    if not is_cached(path):
        raise FileNotFoundError(f"no complete jaxticket array cache at {path}")
    meta = json.loads((path / "meta.json").read_text())
    images = np.load(path / "images.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
    labels = np.load(path / "labels.npy", allow_pickle=False)
    n = meta.get("num_examples")
    if images.dtype != np.uint8 or labels.dtype != np.int32 or images.shape[0] != n or labels.shape != (n,):
        raise ValueError(f"corrupt jaxticket array cache at {path}: delete the folder and retry")
    return images, labels
