"""The lock of a run directory: one process works in it at a time.

Example:
    >>> import tempfile
    >>> with RunLock(tempfile.mkdtemp()) as lock:
    ...     lock.path.name
    'run.lock'
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import socket
import sys
import time

import jax

from jaxticket.rundir.names import LOCK_FILE

__all__ = ["RunLock", "RunLockedError"]


class RunLockedError(RuntimeError):
    """Another process works in the run directory."""


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
                            "since": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[:6]}) + "\n")
        f.flush()
        self.file = f
        return self

    def release(self) -> None:
        if self.file is not None:
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
