"""The layout of an IMP run directory and the files of its levels (:class:`RunDir`).

The layout itself (every folder and file of a run) is drawn in :mod:`jaxticket.rundir`'s
docstring; the names are :mod:`jaxticket.rundir.names`.

Every file is written atomically (:func:`~jaxticket.rundir.write_atomic`); temporary files
of an interrupted write are removed when the directory is opened again.

Example:
    >>> import tempfile, numpy as np
    >>> from jaxticket.rundir import load_tree, save_tree
    >>> run = RunDir(tempfile.mkdtemp())
    >>> save_tree(run.level_dir(0) / "final_params.npz", {"fc": {"kernel": np.ones((2, 2))}})
    >>> load_tree(run.level_dir(0) / "final_params.npz")["fc"]["kernel"].shape
    (2, 2)
"""

from __future__ import annotations

import csv
import io
import json
import pathlib
from typing import Optional

import jax
import numpy as np

from jaxticket import parallel
from jaxticket.masks import Mask
from jaxticket.rundir.files import (CorruptRunError, load_mask, load_tree, read_json, save_mask, save_tree,
                                        sha256_of, write_atomic)
from jaxticket.rundir.identity import read_identity
from jaxticket.rundir.names import (BATCH_STATS_FILE, CONFIG_FILE, IMP_KIND, LEVEL_FORMAT, LEVEL_PATTERN,
                                        LOCK_FILE, LOGITS_FILE, MANIFEST_FILE, MASK_FILE, METRICS_FILE,
                                        PARAMS_FILE, RESULT_FIELDS, RESULTS_CSV, RESULTS_JSON, SUMMARY_FILE,
                                        TEST_LABELS_FILE)

__all__ = ["RunDir"]


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
        """The stored ``config.json`` (``{"config_hash", "config"}``, the identity brought up
        to date: :func:`~jaxticket.rundir.read_identity`), or ``None``."""
        return read_identity(self.root)

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
                out += [str(p.relative_to(self.root)) for p in parent.iterdir() if not LEVEL_PATTERN.match(p.name)]
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
            m = LEVEL_PATTERN.search(p.name)
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
        path = self.level_dir(level, kind) / SUMMARY_FILE
        if not path.exists():  # a finished level whose summary went missing: one line saying what to do
            raise CorruptRunError(f"{path}: missing; redo that level (jaxticket imp/branch ... --redo-level {level}, "
                                  f"or redo_levels=[{level}]): it is trained again, every other level is kept")
        return read_json(path)

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
        if not parallel.is_primary():  # process 0 wrote the files; it alone checksums them
            return
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

        if parallel.is_primary():
            shutil.rmtree(self.level_dir(level, kind), ignore_errors=True)

    def clean_temporary(self) -> list[pathlib.Path]:
        """Removes the temporary files of interrupted atomic writes; returns them."""
        if not parallel.is_primary():
            return []
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

    def load_test_labels(self) -> Optional[np.ndarray]:
        """The test split's labels the run recorded, or ``None`` (runs older than the file);
        a damaged file is a :class:`CorruptRunError`."""
        path = self.root / TEST_LABELS_FILE
        if not path.exists():
            return None
        try:
            return np.load(path)
        except (OSError, ValueError, EOFError) as e:
            raise CorruptRunError(f"cannot read {path} ({e}); the file is damaged: delete it and run the run's "
                                  "imp command again (it writes the labels anew), or pass test_labels=") from None

    def load_logits(self, level: int, kind: str = IMP_KIND) -> np.ndarray:
        path = self.level_dir(level, kind) / LOGITS_FILE
        try:
            return np.load(path)
        except (OSError, EOFError, ValueError) as e:
            raise ValueError(f"cannot read {path} ({e}); the file is missing, damaged or truncated") from None
