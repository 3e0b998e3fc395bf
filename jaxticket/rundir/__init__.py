"""The one owner of run directories: their layout, atomic files, lock and identity.

* :mod:`~jaxticket.rundir.names`: every file and folder name of an IMP run directory and
  of a sweep folder;
* :mod:`~jaxticket.rundir.files`: atomic writes, arrays by leaf path, checksums;
* :mod:`~jaxticket.rundir.lock`: one process works in a directory at a time;
* :mod:`~jaxticket.rundir.identity`: what a directory holds (``config.json`` and its
  hash), brought up to date by registered upgrades, and :func:`claim`, the guard;
* :mod:`~jaxticket.rundir.layout`: :class:`RunDir`, the files of an IMP run's levels;
* :mod:`~jaxticket.rundir.opening`: :func:`open_run_dir` (lock, identity and data
  checks, overwrite, redo) and the sweep folder's checks.

:mod:`jaxticket.checkpoints` keeps orbax's periodic checkpoints and rewind points inside a
directory it is handed.

Layout of an IMP run directory::

    config.json              what the run is (its config or task/pruner/settings, and its
                             data's fingerprint) and a hash of it; a different run is refused
    run.lock                 held while a process works in the directory
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

A sweep folder (``jaxticket instability``) holds ``config.json``, ``imp_kKKKKKK/`` (an IMP
run directory per k), ``points/`` (one file per (k, level, seed)) and its results and plots.

Example:
    >>> import tempfile, numpy as np
    >>> run = RunDir(tempfile.mkdtemp())
    >>> save_tree(run.level_dir(0) / "final_params.npz", {"fc": {"kernel": np.ones((2, 2))}})
    >>> load_tree(run.level_dir(0) / "final_params.npz")["fc"]["kernel"].shape
    (2, 2)
"""

from jaxticket.rundir.names import *  # noqa: F401,F403  (the names are the layout)
from jaxticket.rundir.names import CONFIG_FILE, IMP_KIND, RESULT_FIELDS
from jaxticket.rundir.files import (CorruptRunError, load_mask, load_tree, read_json, save_mask, save_tree,
                                        sha256_of, write_atomic)
from jaxticket.rundir.lock import RunLock, RunLockedError
from jaxticket.rundir.identity import (ConfigMismatchError, DataMismatchError, claim, config_diff, config_hash,
                                           config_to_dict, describe_data, describe_identity, read_identity,
                                           register_upgrade, upgrade_identity)
from jaxticket.rundir.layout import RunDir
from jaxticket.rundir.opening import (GROWABLE, OpenRunDir, check_sweep_folder, is_sweep_folder, open_run_dir,
                                          overwrite_sweep, preflight, sweep_entries)

__all__ = [
    "CONFIG_FILE", "ConfigMismatchError", "CorruptRunError", "DataMismatchError", "GROWABLE", "IMP_KIND",
    "OpenRunDir", "RESULT_FIELDS", "RunDir", "RunLock", "RunLockedError", "check_sweep_folder", "claim",
    "config_diff", "config_hash", "config_to_dict", "describe_data", "describe_identity", "is_sweep_folder",
    "load_mask", "load_tree", "open_run_dir", "overwrite_sweep", "preflight", "read_identity", "read_json", "register_upgrade",
    "save_mask", "save_tree", "sha256_of", "sweep_entries", "upgrade_identity", "write_atomic",
]
