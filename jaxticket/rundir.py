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
        summary.json         the level's rows
        manifest.json        written last (the level is done): size and sha256 of every
                             file above, checked when the level is read back
    branches/KIND/level_LL/  the same for baselines (reinit, random_mask, ...) of this run
    test_labels.npy          the test split's labels (for analyses that need no data)
    results.json, results.csv   one row per (kind, level, seed)
    report.md, *.png         from ``jaxticket report``

Every file is written atomically (a temporary file beside it, ``fsync``, ``os.replace``),
so a reader sees the old file or the complete new one, never a partial one; temporary
files of an interrupted write are removed when the directory is opened again. A lock
(``run.lock``, an exclusive ``flock`` held while a run works in the directory, released
by the kernel if the process dies) keeps a second process out, naming the holder.

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
import sys
import tempfile
import zipfile
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from jaxticket import masks as masks_lib
from jaxticket.masks import Mask

__all__ = [
    "CONFIG_FILE",
    "CorruptRunError",
    "RunLockedError",
    "IMP_KIND",
    "RESULT_FIELDS",
    "RunDir",
    "RunLock",
    "load_mask",
    "load_tree",
    "read_json",
    "save_mask",
    "save_tree",
    "write_atomic",
]

CONFIG_FILE = "config.json"
LOCK_FILE = "run.lock"
MANIFEST_FILE = "manifest.json"
LEVEL_FORMAT = 2  # summaries of levels with a manifest
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
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
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


# ============================================================================ errors, lock


class CorruptRunError(ValueError):
    """A file of a run directory is missing, truncated or changed since it was written."""


class RunLockedError(RuntimeError):
    """Another process works in the run directory."""


def sha256_of(path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class RunLock:
    """An exclusive lock on a run directory for as long as a run works in it.

    ``flock`` on ``run.lock``: the kernel releases it when the process ends, even by
    SIGKILL, so a lock left by a dead process is simply taken over (its holder record is
    overwritten, and :attr:`previous` names it); a clean release empties the record. A second process gets :class:`RunLockedError` naming the holder's pid,
    host and start time. Only process 0 of a multi-process run takes it.
    """

    def __init__(self, root):
        self.path = pathlib.Path(root) / LOCK_FILE
        self.file = None
        self.previous = None

    def acquire(self) -> "RunLock":
        import fcntl
        import socket
        import time as _time

        if jax.process_index() != 0 or self.file is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = _holder(f.read())
            f.close()
            raise RunLockedError(
                f"run directory {self.path.parent} is in use by {holder}; wait for that run to finish or "
                "stop it (a lock of a process that died is taken over automatically)") from None
        f.seek(0)
        stale = f.read().strip()
        self.previous = _holder(stale) if stale else None  # a lock left by a process that died
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "since": _time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[:6]}) + "\n")
        f.flush()
        self.file = f
        return self

    def release(self) -> None:
        if self.file is not None:
            import fcntl

            self.file.seek(0)
            self.file.truncate()  # a clean release leaves no holder behind: nothing to take over
            self.file.flush()
            fcntl.flock(self.file.fileno(), fcntl.LOCK_UN)
            self.file.close()
            self.file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _holder(text: str) -> str:
    try:
        h = json.loads(text)
        return f"pid {h['pid']} on {h['host']} (since {h['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


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

    def level_run_hash(self, level: int, kind: str = IMP_KIND) -> Optional[str]:
        """The hash of the run that trained a level (its ``config.json``), or ``None``."""
        path = self.level_dir(level, kind) / CONFIG_FILE
        if not path.exists():
            return None
        try:
            return read_json(path).get("config", {}).get("run")
        except ValueError:
            return None

    def has_trained_files(self) -> bool:
        """Whether the folder holds a rewind point or levels (of a run, maybe without its
        ``config.json``)."""
        return any((self.root / sub).is_dir() and any((self.root / sub).iterdir())
                   for sub in ("rewind", "levels", "branches"))

    def foreign_entries(self) -> list[str]:
        """What the folder holds that a run directory does not write (a user's files):
        top-level names outside the layout, and non-level entries of ``levels/`` and
        ``branches/<kind>/``. Empty for a run directory or an empty folder."""
        own = {CONFIG_FILE, LOCK_FILE, "rewind", "checkpoints", "levels", "branches", RESULTS_JSON, RESULTS_CSV,
               TEST_LABELS_FILE, "report.md"}
        if not self.root.is_dir():
            return []
        out = [p.name for p in self.root.iterdir()
               if p.name not in own and p.suffix != ".png" and not (p.name.startswith(".") and p.name.endswith(".tmp"))]
        level_parents = [self.root / "levels"] + [p for p in (self.root / "branches").glob("*") if p.is_dir()]
        for parent in level_parents:
            if parent.is_dir():
                out += [str(p.relative_to(self.root)) for p in parent.iterdir() if not _LEVEL.match(p.name)]
        return sorted(out)

    def level_dir(self, level: int, kind: str = IMP_KIND) -> pathlib.Path:
        base = self.root / "levels" if kind == IMP_KIND else self.root / "branches" / kind
        return base / f"level_{int(level):02d}"

    def kinds(self) -> list[str]:
        """``"imp"`` and the branch kinds present."""
        branches = sorted(p.name for p in (self.root / "branches").glob("*") if p.is_dir())
        return [IMP_KIND, *branches]

    def finished(self, kind: str = IMP_KIND) -> list[int]:
        """Levels of ``kind`` that are done (:meth:`is_done`), ascending."""
        base = self.level_dir(0, kind).parent
        out = []
        for p in base.glob("level_*"):
            m = _LEVEL.search(p.name)
            if m and self.is_done(int(m[1]), kind):
                out.append(int(m[1]))
        return sorted(out)

    def is_done(self, level: int, kind: str = IMP_KIND) -> bool:
        """Its manifest is written (a level of an older jaxticket, without manifests: its
        summary is)."""
        d = self.level_dir(level, kind)
        if (d / MANIFEST_FILE).exists():
            return True
        summary = d / SUMMARY_FILE
        if not summary.exists():
            return False
        try:
            return read_json(summary).get("format") is None  # legacy; format 2 waits for its manifest
        except ValueError:
            return False

    def summary(self, level: int, kind: str = IMP_KIND) -> Optional[dict]:
        """A finished level's summary (``rows``, ``density``, ...), or ``None``."""
        if not self.is_done(level, kind):
            return None
        return read_json(self.level_dir(level, kind) / SUMMARY_FILE)

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
                    raise CorruptRunError(
                        f"{path}: line {i + 1} is not valid JSON; the file is damaged: redo that level "
                        f"(jaxticket imp/branch ... --redo-level {int(level)}, or redo_levels=[{int(level)}])") from None
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
        """``results.json`` and ``results.csv`` (one row per kind, level, seed; the
        :data:`RESULT_FIELDS`, then ``final_test_<metric>`` / ``final_val_<metric>`` of a
        task's other metrics)."""
        rows = self.rows() if rows is None else rows
        write_atomic(self.root / RESULTS_JSON, json.dumps(rows, indent=2) + "\n")
        out = io.StringIO()
        extra = sorted({k for r in rows for k in r if k.startswith("final_") and k not in RESULT_FIELDS})
        writer = csv.DictWriter(out, fieldnames=[*RESULT_FIELDS, *extra], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(self.root / RESULTS_CSV, out.getvalue())

    # -- a level's files

    def save_level(self, level: int, kind: str, *, params, batch_stats, test_logits, summary: dict) -> None:
        """The files of a finished level, then its manifest (it marks the level done)."""
        d = self.level_dir(level, kind)
        save_tree(d / PARAMS_FILE, params)
        save_tree(d / BATCH_STATS_FILE, batch_stats)
        write_atomic(d / LOGITS_FILE, lambda f: np.save(f, np.asarray(test_logits, np.float32)))
        write_atomic(d / SUMMARY_FILE, json.dumps({"format": LEVEL_FORMAT, **summary}, indent=2) + "\n")
        files = [n for n in (MASK_FILE, PARAMS_FILE, BATCH_STATS_FILE, LOGITS_FILE, METRICS_FILE, SUMMARY_FILE)
                 if (d / n).exists()]
        manifest = {n: {"bytes": (d / n).stat().st_size, "sha256": sha256_of(d / n)} for n in files}
        write_atomic(d / MANIFEST_FILE, json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    def verify_level(self, level: int, kind: str = IMP_KIND) -> list[str]:
        """Problems of a done level's files (empty when every file matches its manifest).

        Example: ``["final_params.npz: changed since it was written (sha256 differs)"]``.
        """
        d = self.level_dir(level, kind)
        if not (d / MANIFEST_FILE).exists():
            return []  # a level of an older jaxticket: nothing recorded to check against
        try:
            manifest = read_json(d / MANIFEST_FILE)
        except ValueError as e:
            return [f"{MANIFEST_FILE}: {e}"]
        problems = []
        for name, entry in manifest.items():
            path = d / name
            if not path.exists():
                problems.append(f"{name}: missing")
            elif path.stat().st_size != entry["bytes"]:
                problems.append(f"{name}: {path.stat().st_size:,} bytes, {entry['bytes']:,} written (truncated or replaced)")
            elif sha256_of(path) != entry["sha256"]:
                problems.append(f"{name}: changed since it was written (sha256 differs)")
        return problems

    def check_level(self, level: int, kind: str = IMP_KIND) -> None:
        """Raises :class:`CorruptRunError` naming the first bad file of a done level and what to do."""
        problems = self.verify_level(level, kind)
        if problems:
            where = self.level_dir(level, kind)
            raise CorruptRunError(
                f"{where / problems[0].split(':')[0]}: {problems[0].split(': ', 1)[1]}"
                + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                + f"; redo that level (jaxticket imp/branch ... --redo-level {level}, or redo_levels=[{level}]): "
                "it is trained again, every other level is kept")

    def discard_level(self, level: int, kind: str = IMP_KIND) -> None:
        """Removes one level's folder (to train it again), nothing else."""
        import shutil

        shutil.rmtree(self.level_dir(level, kind), ignore_errors=True)

    def clean_temporary(self) -> list[pathlib.Path]:
        """Removes the temporary files of interrupted atomic writes; returns them."""
        found = [p for p in self.root.rglob(".*.tmp") if p.is_file()]
        for p in found:
            p.unlink(missing_ok=True)
        return found

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
