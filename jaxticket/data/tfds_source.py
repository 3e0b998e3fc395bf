"""TensorFlow Datasets: prepare as ``array_record`` offline, read with ``tfds.data_source``.

Preparing (``download_and_prepare``) needs TensorFlow importable; reading a prepared
dataset does not. ``tensorflow_datasets`` itself is imported lazily, inside the
functions, so ``import jaxticket.data`` stays fast.

Offline use: put the canonical download files in a folder and pass it as
``manual_dir=`` (or ``$JAXTICKET_MANUAL_DIR``, or ``--manual-dir`` on the command
line). When a dataset is not prepared and its files are not there, :func:`prepare`
raises :class:`DatasetUnavailableError` naming the files, before TFDS is asked to do
anything (so an offline machine never waits on the network). Downloading is opt-in:
``download=True`` or ``JAXTICKET_DOWNLOAD=1``.

Example:
    >>> builder = prepare("mnist", data_dir="/tmp/jt_data",
    ...                   manual_dir="/path/to/mnist_files")      # doctest: +SKIP
    >>> images, labels = read_arrays("mnist", "train", data_dir="/tmp/jt_data")  # doctest: +SKIP
    >>> images.shape, labels.dtype                                 # doctest: +SKIP
    ((60000, 28, 28, 1), dtype('int32'))
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import shutil
import socket
import sys
import urllib.parse

import filelock
import numpy as np

from jaxticket.data.registry import (
    DatasetUnavailableError,
    ENV_DOWNLOAD,
    ENV_MANUAL_DIR,
    default_data_dir,
    download_allowed,
    find_manual_dir,
    get_spec,
    manual_dir_candidates,
)

log = logging.getLogger(__name__)

_READ_CHUNK = 4096


def _tfds():
    import tensorflow_datasets as tfds  # lazy: ~0.4 s, and it must not pull in TF

    return tfds


def _require_tfds_spec(name: str):
    spec = get_spec(name)
    if spec.source != "tfds":
        raise ValueError(f"dataset {name!r} is {spec.source}, not a TFDS dataset")
    return spec


def _builder(name: str, data_dir):
    spec = _require_tfds_spec(name)
    return _tfds().builder(
        spec.tfds_id, data_dir=str(default_data_dir(data_dir)), file_format="array_record"
    )


def _is_prepared(builder) -> bool:
    try:
        return bool(builder.is_prepared())
    except Exception:  # pragma: no cover - defensive: odd TFDS states count as absent
        return False


def unavailable_message(name: str, manual_dir=None, data_dir=None, reason: str = "") -> str:
    """The message of :class:`DatasetUnavailableError` for ``name`` (names the files)."""
    spec = get_spec(name)
    searched = manual_dir_candidates(name, manual_dir, data_dir)
    files = "\n".join(f"    {f}" for f in spec.manual_files)
    lines = [
        f"Dataset {name!r} is not prepared in {default_data_dir(data_dir)} and cannot be "
        f"obtained{': ' + reason if reason else '.'}",
        f"TFDS builds it from these canonical files ({spec.homepage}):",
        files,
        "Put them in one folder and pass it as manual_dir=... (Python), "
        f"--manual-dir ... (command line) or the environment variable {ENV_MANUAL_DIR}. "
        f"A sub-folder named {name!r} inside that folder also works.",
        "Searched: " + ", ".join(str(p) for p in searched) + ".",
    ]
    if spec.downloadable:
        lines.append(
            f"With internet access, download=True (or {ENV_DOWNLOAD}=1) lets TFDS fetch them."
        )
    else:
        lines.append("TFDS cannot download this dataset; it must be given manually.")
    return "\n".join(lines)


def _shim_importlib_resources() -> None:
    # tensorflow-datasets 4.9.10 imports `importlib_resources` in download_and_prepare
    # but declares it only for Python < 3.9 (tensorflow/datasets#11212). On 3.11+ the
    # standard library module provides the same `abc.Traversable`.
    if importlib.util.find_spec("importlib_resources") is None and sys.version_info >= (3, 11):
        resources = importlib.import_module("importlib.resources")
        importlib.import_module("importlib.resources.abc")
        sys.modules.setdefault("importlib_resources", resources)


def _probe_network(name, builder, manual_dir, data_dir, timeout: float = 5.0) -> None:
    """Fail fast when the download hosts are unreachable (TFDS would retry for minutes)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return  # the proxy decides; a direct connection test would be misleading
    try:
        urls = list(builder.url_infos or ())
    except Exception:  # pragma: no cover - no registered URLs: let TFDS try
        return
    for host in sorted({urllib.parse.urlsplit(u).hostname for u in urls} - {None}):
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
        except OSError as e:
            raise DatasetUnavailableError(
                unavailable_message(
                    name, manual_dir, data_dir, f"download host {host} unreachable ({e})"
                )
            ) from None


def prepare(name: str, *, data_dir=None, manual_dir=None, download: bool | None = None):
    """Make sure TFDS dataset ``name`` is prepared as ``array_record``; return its builder.

    Args:
      name: a TFDS dataset of the registry (``mnist``, ``fashion_mnist``, ``cifar10``,
        ``cifar100``, ``imagenet2012``).
      data_dir: TFDS data dir (default ``$JAXTICKET_DATA_DIR`` / TFDS's default).
      manual_dir: folder with the canonical files (default ``$JAXTICKET_MANUAL_DIR``).
      download: let TFDS download missing files (default ``$JAXTICKET_DOWNLOAD``, off).

    Raises:
      DatasetUnavailableError: not prepared, files absent and downloading off or
        impossible; or TFDS failed while preparing (bad checksum, no network, ...).
    """
    spec = _require_tfds_spec(name)
    builder = _builder(name, data_dir)
    if _is_prepared(builder):
        return builder
    folder, missing = find_manual_dir(name, manual_dir, data_dir)
    allow = download_allowed(download) and spec.downloadable
    if folder is None and not allow:
        raise DatasetUnavailableError(
            unavailable_message(name, manual_dir, data_dir, "its files were not found")
        )
    if importlib.util.find_spec("tensorflow") is None:
        raise DatasetUnavailableError(
            f"Preparing {name!r} from its files needs TensorFlow: pip install 'jaxticket[tensorflow]' "
            "(reading an already prepared dataset, or the demo, does not)"
        )
    _shim_importlib_resources()
    if folder is None:
        _probe_network(name, builder, manual_dir, data_dir)
    # Several processes may start on an unprepared dataset at once (experiments in
    # parallel, one per seed on a cluster node): one prepares, the others wait and read it.
    lock_path = default_data_dir(data_dir) / "downloads" / f"jaxticket-prepare-{name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(lock_path)):
        builder = _builder(name, data_dir)
        if _is_prepared(builder):
            return builder
        _download_and_prepare(name, builder, folder, manual_dir, data_dir)
    return builder


def _download_and_prepare(name: str, builder, folder, manual_dir, data_dir) -> None:
    """TFDS's preparation of ``builder`` from ``folder`` (or a download); the caller holds
    the preparation lock of ``name``."""
    spec = _require_tfds_spec(name)
    tfds = _tfds()
    # TFDS names the extraction of a manually downloaded file after its file name only
    # (`<extract_dir>/GZIP.train-images-idx3-ubyte.gz`) and reuses an existing one, so
    # mnist and fashion_mnist sharing a data dir would silently get each other's
    # images. A private extraction folder per dataset, removed afterwards, avoids it.
    extract_dir = extract_dir_for(name, data_dir)
    shutil.rmtree(extract_dir, ignore_errors=True)
    config = tfds.download.DownloadConfig(
        manual_dir=str(folder) if folder else None, extract_dir=str(extract_dir)
    )
    log.info("preparing %s in %s (manual files: %s)", spec.tfds_id, builder.data_dir, folder)
    try:
        builder.download_and_prepare(download_config=config)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # TFDS raises many kinds; give one clear message
        raise DatasetUnavailableError(
            unavailable_message(
                name, manual_dir, data_dir, f"TFDS failed: {type(e).__name__}: {e}"
            )
        ) from e
    finally:
        shutil.rmtree(extract_dir, ignore_errors=True)


def extract_dir_for(name: str, data_dir=None):
    """Private TFDS extraction folder used while preparing ``name`` (deleted afterwards)."""
    spec = get_spec(name)
    return default_data_dir(data_dir) / "downloads" / "jaxticket_extracted" / f"{name}-{spec.tfds_version}"


def data_source(name: str, split: str, *, data_dir=None, manual_dir=None,
                download: bool | None = None, decoders=None):
    """``tfds.data_source`` of a prepared split (preparing it first if needed).

    ``split`` is a TFDS split name (``"train"``, ``"test"``, ``"validation"``, or a
    slice like ``"train[:10%]"``). Random access: ``source[i] -> {"image", "label", ...}``.
    """
    spec = _require_tfds_spec(name)
    prepare(name, data_dir=data_dir, manual_dir=manual_dir, download=download)
    return _tfds().data_source(
        spec.tfds_id, split=split, data_dir=str(default_data_dir(data_dir)), decoders=decoders
    )


def _read_records(source, indices):
    getitems = getattr(source, "__getitems__", None)
    if getitems is not None:
        try:
            return list(getitems(list(indices)))
        except TypeError:  # e.g. tfds.testing.mock_data's source has no working batch read
            pass
    return [source[int(i)] for i in indices]


def source_to_arrays(source, image_shape=None) -> tuple[np.ndarray, np.ndarray]:
    """Read every record of a data source into ``(uint8 [N,H,W,C], int32 [N])``."""
    n = len(source)
    images = labels = None
    for start in range(0, n, _READ_CHUNK):
        records = _read_records(source, range(start, min(n, start + _READ_CHUNK)))
        for j, rec in enumerate(records):
            img = np.asarray(rec["image"], dtype=np.uint8)
            if img.ndim == 2:
                img = img[..., None]
            if images is None:
                if image_shape is not None and tuple(image_shape) != img.shape:
                    raise ValueError(f"expected images of shape {image_shape}, got {img.shape}")
                images = np.empty((n, *img.shape), np.uint8)
                labels = np.empty((n,), np.int32)
            images[start + j] = img
            labels[start + j] = int(rec["label"])
    if images is None:
        raise ValueError("empty data source")
    return images, labels


def read_arrays(name: str, split: str, *, data_dir=None, manual_dir=None,
                download: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Materialise TFDS split ``split`` of ``name`` as numpy arrays (no caching).

    Returns ``(images uint8 [N,H,W,C], labels int32 [N])``.
    """
    spec = _require_tfds_spec(name)
    if spec.streaming:
        raise ValueError(
            f"{name!r} is too large to materialise in memory; stream it with "
            "jaxticket.data.make_stream(...)"
        )
    src = data_source(name, split, data_dir=data_dir, manual_dir=manual_dir, download=download)
    return source_to_arrays(src, spec.image_shape)
