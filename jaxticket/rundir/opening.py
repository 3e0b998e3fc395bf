"""Opening a run directory for a run: the lock, the identity and data checks, overwrite and
redo, all before anything is trained (:func:`open_run_dir`), and the sweep folder's own
checks (:func:`check_sweep_folder`, :func:`overwrite_sweep`).

Example:
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> opened = open_run_dir(root, {"config": {"levels": 1}, "data": {"sha256": "ab"}})
    >>> len(opened.run_hash), opened.lock.path.name
    (12, 'run.lock')
    >>> opened.close()
    >>> open_run_dir(root, {"config": {"levels": 1}, "data": {"sha256": "cd"}})
    Traceback (most recent call last):
    ...
    jaxticket.rundir.identity.DataMismatchError: run directory ... was trained on arrays sha256:ab (), not on arrays sha256:cd () given now; use another directory, or overwrite to start over
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
from typing import Callable, Optional, Sequence

from jaxticket import parallel
from jaxticket.rundir.identity import (ConfigMismatchError, DataMismatchError, claim, config_diff,
                                           config_to_dict, describe_data, mismatch_message, read_identity)
from jaxticket.rundir.layout import RunDir
from jaxticket.rundir.lock import RunLock, RunLockedError
from jaxticket.rundir.names import (BRANCHES_DIR, CONFIG_FILE, IMP_KIND, LEVELS_DIR, PERIODIC_DIR,
                                        RESULTS_CSV, RESULTS_JSON, REWIND_DIR, SWEEP_DIRS, SWEEP_FILES,
                                        SWEEP_IMP_DIR, SWEEP_TMP)

__all__ = ["OpenRunDir", "check_sweep_folder", "preflight", "is_sweep_folder", "open_run_dir", "overwrite_sweep",
           "sweep_entries", "GROWABLE"]

#: Counts in an IMP run's identity that may grow: more levels are the same run, extended.
GROWABLE = ("config.imp.levels", "settings.levels", "config.levels")


@dataclasses.dataclass
class OpenRunDir:
    """A run directory opened for one run: ``dir`` (:class:`RunDir`), ``lock`` (held),
    ``run_hash`` (the hash its levels are stamped with). ``close()`` releases the lock."""

    dir: RunDir
    lock: RunLock
    run_hash: str

    def close(self) -> None:
        self.lock.release()


def open_run_dir(root, identity: dict, *, overwrite: bool = False, redo_levels: Sequence[int] = (),
                 redo_kind: str = IMP_KIND, log: Optional[Callable] = None) -> OpenRunDir:
    """Locks ``root`` and checks that it is, or may become, the run ``identity`` (a dict
    with the run's ``"data"`` fingerprint); then (only then) deletes what ``overwrite``
    and ``redo_levels`` discard. Refuses, in one line each: a folder of other files
    (overwrite deletes a run's files only), a damaged ``config.json``, trained levels
    without one, other data (:class:`DataMismatchError`), another run
    (:class:`ConfigMismatchError`)."""
    log = log or (lambda *_: None)
    run_dir = RunDir(root)
    lock = _acquire_agreed(RunLock(run_dir.root))  # before anything is read or written
    try:
        if lock.previous:
            log(f"[run] took over the lock of {lock.previous}, which is no longer running")
        run_dir.clean_temporary()
        stored = _stored_identity(run_dir, overwrite)
        if overwrite:
            foreign = run_dir.foreign_entries()
            if foreign:
                raise ValueError(f"{run_dir.root} holds files that are not a jaxticket run ({', '.join(foreign[:5])}"
                                 f"{', ...' if len(foreign) > 5 else ''}); overwrite deletes a run's files only: "
                                 "choose a new or empty folder")
        elif stored is None and run_dir.has_trained_files():
            raise ConfigMismatchError(
                f"{run_dir.root} holds trained levels but no {CONFIG_FILE} saying what they are (deleted?); "
                "restore that file to resume, or overwrite to start over")
        if not overwrite and stored is not None and "data" in stored and stored["data"] != identity["data"]:
            raise DataMismatchError(
                f"run directory {run_dir.root} was trained on {describe_data(stored['data'])}, not on "
                f"{describe_data(identity['data'])} given now; use another directory, or overwrite to start over")
        run_hash = claim(run_dir.root, identity, overwrite=overwrite, growable=GROWABLE)
        if overwrite and parallel.is_primary():  # only now that the run is known to be this one is anything deleted
            for sub in (LEVELS_DIR, BRANCHES_DIR, PERIODIC_DIR, REWIND_DIR):
                shutil.rmtree(run_dir.root / sub, ignore_errors=True)
            for name in (RESULTS_JSON, RESULTS_CSV):
                (run_dir.root / name).unlink(missing_ok=True)
        for level in redo_levels:
            run_dir.discard_level(int(level), redo_kind)
            log(f"[{redo_kind}] level {int(level):2d}  discarded, to be trained again")
        parallel.sync("run_dir_opened")  # the others read nothing before process 0 has deleted
        return OpenRunDir(run_dir, lock, run_hash)
    except BaseException:
        lock.release()
        raise


def _acquire_agreed(lock: RunLock) -> RunLock:
    """``lock`` taken by process 0; every process raises the same :class:`RunLockedError`
    when it was refused (so a multi-process job stops on every host, and the command
    prints the line once, on process 0)."""
    error = None
    try:
        lock.acquire()
    except RunLockedError as e:
        error = e
    if not parallel.agree(error is None):
        raise error if error is not None else RunLockedError(
            f"run directory {lock.path.parent} is in use by another job (process 0 of this job could not "
            "take its lock)")
    return lock


def _stored_identity(run_dir: RunDir, overwrite: bool) -> Optional[dict]:
    try:
        stored = read_identity(run_dir.root)
    except ValueError:
        if not overwrite:
            raise
        return None
    return None if stored is None else stored.get("config")


def preflight(root, partial_identity: dict) -> None:
    """Refuses, before anything is loaded or trained, a run directory that holds another run
    than ``partial_identity`` says (the identity without what only loading tells, such as
    the data's fingerprint): a :class:`ConfigMismatchError` listing the differing keys, as
    :func:`open_run_dir` would give later. A missing or unreadable identity is left to it."""
    try:
        stored = read_identity(root)
    except ValueError:
        return
    if stored is None or not isinstance(stored.get("config"), dict):
        return
    stored = {k: v for k, v in stored["config"].items() if k in partial_identity}
    diffs = [d for d in config_diff(stored, config_to_dict(partial_identity)) if d[0] not in GROWABLE]
    if diffs:
        raise ConfigMismatchError(mismatch_message(pathlib.Path(root).absolute(), diffs))


# ----------------------------------------------------------------------------- sweep folders


def is_sweep_folder(workdir) -> bool:
    """Whether ``workdir/config.json`` is the one an instability sweep writes (its identity
    holds the sweep's settings)."""
    try:
        stored = json.loads((pathlib.Path(workdir) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(stored, dict) and isinstance(stored.get("config"), dict) and "sweep" in stored["config"]


def sweep_entries(workdir) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
    """``(written by a sweep, anything else)`` among the entries of ``workdir``.

    Example: ``sweep_entries("runs/sweep")[1]`` are a user's own files there."""
    ours, others = [], []
    for entry in sorted(pathlib.Path(workdir).iterdir()):
        name = entry.name
        mine = (name in SWEEP_FILES and entry.is_file()) or (name in SWEEP_DIRS and entry.is_dir()) \
            or (SWEEP_IMP_DIR.match(name) and entry.is_dir()) or (SWEEP_TMP.match(name) and entry.is_file())
        (ours if mine else others).append(entry)
    return ours, others


def check_sweep_folder(workdir) -> list[pathlib.Path]:
    """What overwriting the sweep in ``workdir`` deletes: the files a previous sweep wrote
    there, nothing else (a user's own files stay). A non-empty folder that holds no sweep
    is refused (``ValueError``, one line). Deletes nothing."""
    workdir = pathlib.Path(workdir)
    if not workdir.is_dir():
        return []
    entries = list(workdir.iterdir())
    if not entries:
        return []
    if not is_sweep_folder(workdir):
        shown = ", ".join(sorted(e.name for e in entries)[:5]) + (", ..." if len(entries) > 5 else "")
        raise ValueError(f"{workdir} is not an instability sweep folder (no sweep config.json) and holds {shown}; "
                         "nothing deleted: choose a new or empty folder")
    return sweep_entries(workdir)[0]


def overwrite_sweep(workdir) -> list[pathlib.Path]:
    """Deletes what an instability sweep wrote in ``workdir`` (:func:`check_sweep_folder`)."""
    doomed = check_sweep_folder(workdir)
    for entry in doomed:
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    return doomed
