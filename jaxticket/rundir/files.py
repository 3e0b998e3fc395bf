"""Files of a run directory written atomically, and arrays kept by their leaf paths.

Every file is written through a temporary file beside it, ``fsync`` and ``os.replace``,
so a reader sees the old file or the complete new one, never a partial one. In a
multi-process run (``jax.distributed``) only process 0 writes (:func:`write_atomic` is
a no-op elsewhere); arrays spread over processes are gathered first, on every process
(:func:`save_tree` is called by all of them), and read back onto the shardings of ``like``.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "params.npz"
    >>> save_tree(path, {"fc": {"kernel": np.ones((2, 2))}})
    >>> load_tree(path)["fc"]["kernel"].shape
    (2, 2)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import tempfile
import zipfile
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from jaxticket import masks as masks_lib
from jaxticket import parallel
from jaxticket.masks import Mask

__all__ = ["CorruptRunError", "load_mask", "load_tree", "read_json", "save_mask", "save_tree", "sha256_of",
           "write_atomic"]


class CorruptRunError(ValueError):
    """A file of a run directory is missing, truncated or changed since it was written."""


def write_atomic(path, data: bytes | str | Callable[[io.BufferedWriter], None]) -> pathlib.Path:
    """Writes ``data`` (bytes, text, or a function writing to a binary file) to ``path``
    through a temporary file in the same folder, ``fsync`` and ``os.replace``. Only
    process 0 of a multi-process run writes; the others return at once."""
    path = pathlib.Path(path)
    if not parallel.is_primary():
        return path
    payload = None if callable(data) else (data.encode("utf-8") if isinstance(data, str) else data)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            if payload is None:
                data(f)
            else:
                f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if isinstance(e, OSError) and not getattr(e, "_jaxticket", False):
            raise _named(e, path, None if payload is None else len(payload)) from e
        raise
    return path


def _named(e: OSError, path, nbytes=None) -> OSError:
    """``e`` as one line naming ``path`` (and the bytes needed when the disk is full)."""
    import errno

    what = "disk full" if e.errno == errno.ENOSPC else (e.strerror or str(e) or type(e).__name__)
    need = f", {nbytes:,} bytes to write" if nbytes is not None and e.errno == errno.ENOSPC else ""
    free = ""
    if e.errno == errno.ENOSPC:
        try:
            import shutil as _shutil

            free = f", {_shutil.disk_usage(pathlib.Path(path).parent).free:,} bytes free"
        except OSError:
            pass
    out = OSError(f"cannot write {path}: {what}{need}{free}")
    out.errno, out._jaxticket = e.errno, True  # (a filename would change how it prints)
    return out


def read_json(path) -> Any:
    """The JSON in ``path``; a damaged file is a ``ValueError`` naming it."""
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); the file is damaged") from None


def save_tree(path, tree, extra: Optional[dict] = None) -> None:
    """Writes the array leaves of ``tree`` as ``.npz``, one array per leaf path (``a/b/c``)."""
    host = parallel.to_host(tree)  # every process takes part in gathering a global array
    arrays = {p: np.asarray(x) for p, x in zip(masks_lib.leaf_paths(host), jax.tree.leaves(host))}
    arrays.update(extra or {})
    write_atomic(path, lambda f: np.savez(f, **arrays))


def _nested(paths: Sequence[str], values: Sequence) -> dict:
    root: dict = {}
    for path, value in zip(paths, values):
        node = root
        *parents, last = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return root


def load_tree(path, like=None):
    """Reads a tree written by :func:`save_tree`: into the structure of ``like`` (checked
    leaf by leaf; device arrays), or as nested dicts of NumPy arrays from the stored paths
    (Flax params are nested dicts, so this gives them back exactly)."""
    path = pathlib.Path(path)
    try:
        with np.load(path) as stored:
            names = [n for n in stored.files if not n.startswith("__")]
            if like is None:
                return _nested(names, [stored[n] for n in names])
            paths = masks_lib.leaf_paths(like)
            missing = [p for p in paths if p not in stored.files]
            if missing:
                raise ValueError(f"{path} does not hold {missing[:3]}: it was written for another model")
            leaves = [stored[p] for p in paths]
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        if isinstance(e, ValueError) and "written for another model" in str(e):
            raise
        raise ValueError(f"cannot read {path} ({e}); the file is damaged or truncated") from None
    for p, leaf, want in zip(paths, leaves, jax.tree.leaves(like)):
        if tuple(leaf.shape) != tuple(np.shape(want)):
            raise ValueError(f"{path}: '{p}' has shape {leaf.shape}, expected {tuple(np.shape(want))}")
    tree = jax.tree.unflatten(jax.tree.structure(like), leaves)
    shardings = [getattr(w, "sharding", None) for w in jax.tree.leaves(like)]
    if any(isinstance(sh, jax.sharding.NamedSharding) for sh in shardings):  # a state on a device mesh
        return parallel.put(tree, jax.tree.unflatten(jax.tree.structure(like), shardings))
    # committed to the device like the states it joins (the compiled programs are keyed on it)
    return jax.device_put(tree, jax.local_devices()[0])


def save_mask(path, mask: Mask) -> None:
    """Writes a (possibly seeds-batched) mask as ``.npz``: one bool array per leaf path."""
    save_tree(path, mask.keep, {"__prunable__": np.asarray(mask.prunable, bool),
                                "__ranks__": np.asarray(mask.ranks, np.int64)})


def load_mask(path, like: Optional[Mask] = None) -> Mask:
    """Reads a mask written by :func:`save_mask` (into the structure of ``like`` if given)."""
    path = pathlib.Path(path)
    try:
        with np.load(path) as stored:
            prunable = tuple(bool(x) for x in stored["__prunable__"])
            ranks = tuple(int(x) for x in stored["__ranks__"]) if "__ranks__" in stored.files else None
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"cannot read the mask {path} ({e}); the file is damaged or truncated") from None
    keep = load_tree(path, None if like is None else like.keep)
    if like is not None:
        ranks = like.ranks
    return Mask(jax.tree.map(lambda x: np.asarray(x, bool), keep) if like is None else keep, prunable, ranks)


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
