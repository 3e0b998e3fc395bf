"""The one owner of a run directory: its layout, atomic writes, and the files of a level.

Layout of an IMP run directory::

    config.json              what the run is (its config or task/pruner/settings, and its
                             data's fingerprint) and a hash of it; a different run is refused
    rewind/                  the rewind point at step k (orbax, never garbage-collected)
    levels/level_LL/         one per level:
        config.json          the level's identity (run hash, kind, level)
        mask.npz             the level's mask (one bool array per leaf path)
        checkpoints/         periodic checkpoints while the level trains (resume)
        metrics.jsonl        one JSON object per evaluation
        final_params.npz     the trained params (one array per leaf path)
        final_batch_stats.npz
        test_logits.npy      float32 [S, N, C]
        summary.json         written last: the level is done
    branches/KIND/level_LL/  the same for baselines (reinit, random_mask, ...) of this run
    test_labels.npy          the test split's labels (for analyses that need no data)
    results.json, results.csv   one row per (kind, level, seed)
    report.md, *.png         from ``jaxticket report``

Every file is written atomically (a temporary file beside it, ``fsync``, ``os.replace``),
so a reader sees the old file or the complete new one, never a partial one.

Example:
    >>> import tempfile, numpy as np
    >>> run = RunDir(tempfile.mkdtemp())
    >>> save_tree(run.level_dir(0) / "final_params.npz", {"fc": {"kernel": np.ones((2, 2))}})
    >>> load_tree(run.level_dir(0) / "final_params.npz")["fc"]["kernel"].shape
    (2, 2)
"""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib
import re
import tempfile
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from jaxticket import masks as masks_lib
from jaxticket.masks import Mask

__all__ = [
    "CONFIG_FILE",
    "IMP_KIND",
    "RESULT_FIELDS",
    "RunDir",
    "load_mask",
    "load_tree",
    "read_json",
    "save_mask",
    "save_tree",
    "write_atomic",
]

CONFIG_FILE = "config.json"
IMP_KIND = "imp"
MASK_FILE = "mask.npz"
PARAMS_FILE = "final_params.npz"
BATCH_STATS_FILE = "final_batch_stats.npz"
LOGITS_FILE = "test_logits.npy"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
RESULTS_JSON, RESULTS_CSV = "results.json", "results.csv"
TEST_LABELS_FILE = "test_labels.npy"
RESULT_FIELDS = (
    "kind", "level", "seed", "density", "final_test_accuracy", "final_test_loss",
    "best_test_accuracy", "final_val_accuracy", "final_val_loss", "early_stop_step",
    "early_stop_val_loss", "early_stop_test_accuracy", "start_step", "end_step",
)
_LEVEL = re.compile(r"level_(\d+)$")


# ============================================================================ atomic files


def write_atomic(path, data: bytes | str | Callable[[io.BufferedWriter], None]) -> pathlib.Path:
    """Writes ``data`` (bytes, text, or a function writing to a binary file) to ``path``
    through a temporary file in the same folder, ``fsync`` and ``os.replace``."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def read_json(path) -> Any:
    """The JSON in ``path``; a damaged file is a ``ValueError`` naming it."""
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); the file is damaged") from None


def save_tree(path, tree, extra: Optional[dict] = None) -> None:
    """Writes the array leaves of ``tree`` as ``.npz``, one array per leaf path (``a/b/c``)."""
    arrays = {p: np.asarray(jax.device_get(x)) for p, x in zip(masks_lib.leaf_paths(tree), jax.tree.leaves(tree))}
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
    except (OSError, EOFError, ValueError) as e:
        if isinstance(e, ValueError) and "written for another model" in str(e):
            raise
        raise ValueError(f"cannot read {path} ({e}); the file is damaged or truncated") from None
    for p, leaf, want in zip(paths, leaves, jax.tree.leaves(like)):
        if tuple(leaf.shape) != tuple(np.shape(want)):
            raise ValueError(f"{path}: '{p}' has shape {leaf.shape}, expected {tuple(np.shape(want))}")
    # committed to the device like the states it joins (the compiled programs are keyed on it)
    return jax.device_put(jax.tree.unflatten(jax.tree.structure(like), leaves), jax.local_devices()[0])


def save_mask(path, mask: Mask) -> None:
    """Writes a (possibly seeds-batched) mask as ``.npz``: one bool array per leaf path."""
    save_tree(path, mask.keep, {"__prunable__": np.asarray(mask.prunable, bool)})


def load_mask(path, like: Optional[Mask] = None) -> Mask:
    """Reads a mask written by :func:`save_mask` (into the structure of ``like`` if given)."""
    path = pathlib.Path(path)
    try:
        with np.load(path) as stored:
            prunable = tuple(bool(x) for x in stored["__prunable__"])
    except (OSError, EOFError, KeyError, ValueError) as e:
        raise ValueError(f"cannot read the mask {path} ({e}); the file is damaged or truncated") from None
    keep = load_tree(path, None if like is None else like.keep)
    return Mask(jax.tree.map(lambda x: np.asarray(x, bool), keep) if like is None else keep, prunable)


# ============================================================================ the directory


class RunDir:
    """Paths and files of one IMP run directory (see the module docstring).

    Example:
        >>> run = RunDir("/tmp/x")
        >>> run.level_dir(3).name, run.level_dir(2, "reinit").parent.name
        ('level_03', 'reinit')
    """

    def __init__(self, root):
        self.root = pathlib.Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    @property
    def config_path(self) -> pathlib.Path:
        return self.root / CONFIG_FILE

    def identity(self) -> Optional[dict]:
        """The stored ``config.json`` (``{"config_hash", "config"}``), or ``None``."""
        return read_json(self.config_path) if self.config_path.exists() else None

    def level_dir(self, level: int, kind: str = IMP_KIND) -> pathlib.Path:
        base = self.root / "levels" if kind == IMP_KIND else self.root / "branches" / kind
        return base / f"level_{int(level):02d}"

    def kinds(self) -> list[str]:
        """``"imp"`` and the branch kinds present."""
        branches = sorted(p.name for p in (self.root / "branches").glob("*") if p.is_dir())
        return [IMP_KIND, *branches]

    def finished(self, kind: str = IMP_KIND) -> list[int]:
        """Levels of ``kind`` whose summary is written, ascending."""
        base = self.level_dir(0, kind).parent
        out = []
        for p in base.glob(f"level_*/{SUMMARY_FILE}"):
            m = _LEVEL.search(p.parent.name)
            if m:
                out.append(int(m[1]))
        return sorted(out)

    def summary(self, level: int, kind: str = IMP_KIND) -> Optional[dict]:
        """A finished level's summary (``rows``, ``density``, ...), or ``None``."""
        path = self.level_dir(level, kind) / SUMMARY_FILE
        return read_json(path) if path.exists() else None

    def history(self, level: int, kind: str = IMP_KIND) -> list[dict]:
        """The level's evaluation records by step; after a resume the later record of a step wins."""
        path = self.level_dir(level, kind) / METRICS_FILE
        if not path.exists():
            return []
        by_step = {}
        for i, line in enumerate(path.read_text().splitlines()):
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    raise ValueError(f"{path}: line {i + 1} is not valid JSON; the file is damaged") from None
                by_step[rec["step"]] = rec
        return [by_step[s] for s in sorted(by_step)]

    def rows(self) -> list[dict]:
        """Every finished level's rows: IMP levels, then the branches by kind."""
        out = []
        for kind in self.kinds():
            for level in self.finished(kind):
                out += self.summary(level, kind)["rows"]
        return out

    def write_results(self, rows: Optional[list[dict]] = None) -> None:
        """``results.json`` and ``results.csv`` (one row per kind, level, seed)."""
        rows = self.rows() if rows is None else rows
        write_atomic(self.root / RESULTS_JSON, json.dumps(rows, indent=2) + "\n")
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=RESULT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(self.root / RESULTS_CSV, out.getvalue())

    # -- a level's files

    def save_level(self, level: int, kind: str, *, params, batch_stats, test_logits, summary: dict) -> None:
        """The files of a finished level; ``summary.json`` last (it marks the level done)."""
        d = self.level_dir(level, kind)
        save_tree(d / PARAMS_FILE, params)
        save_tree(d / BATCH_STATS_FILE, batch_stats)
        write_atomic(d / LOGITS_FILE, lambda f: np.save(f, np.asarray(test_logits, np.float32)))
        write_atomic(d / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")

    def load_params(self, level: int, kind: str = IMP_KIND, like=None):
        return load_tree(self.level_dir(level, kind) / PARAMS_FILE, like)

    def load_batch_stats(self, level: int, kind: str = IMP_KIND, like=None):
        path = self.level_dir(level, kind) / BATCH_STATS_FILE
        if like is not None and not jax.tree.leaves(like):
            return like
        return load_tree(path, like)

    def load_mask(self, level: int, kind: str = IMP_KIND, like: Optional[Mask] = None) -> Mask:
        return load_mask(self.level_dir(level, kind) / MASK_FILE, like)

    def save_mask(self, level: int, kind: str, mask: Mask) -> None:
        save_mask(self.level_dir(level, kind) / MASK_FILE, mask)

    def save_test_labels(self, labels) -> None:
        write_atomic(self.root / TEST_LABELS_FILE, lambda f: np.save(f, np.asarray(jax.device_get(labels))))

    def load_logits(self, level: int, kind: str = IMP_KIND) -> np.ndarray:
        path = self.level_dir(level, kind) / LOGITS_FILE
        try:
            return np.load(path)
        except (OSError, EOFError, ValueError) as e:
            raise ValueError(f"cannot read {path} ({e}); the file is missing, damaged or truncated") from None
