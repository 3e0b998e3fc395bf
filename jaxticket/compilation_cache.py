"""JAX's persistent compilation cache: a run compiles a program once per machine, not once
per process.

``import jaxticket`` changes no JAX setting. The ``jaxticket`` command, the experiment
scripts and the benchmarks turn the cache on (:func:`enable_default`); in a notebook or
your own script, one call does::

    import jaxticket as jt
    jt.enable_compilation_cache()      # the same as jaxticket.compilation_cache.enable()

It lives in a user cache folder (``$XDG_CACHE_HOME/jaxticket/xla``, default
``~/.cache/jaxticket/xla``) and holds every program, however quickly it compiled (the
small ones add up: a short run's fixed cost is mostly compilation). It is bounded (LRU
eviction at :data:`MAX_BYTES`) and, being bounded, every read and write holds a file
lock, so several processes (a sweep, the tests) can share it.

Switches, where it is on by default (:func:`enable_default`):

* ``JAXTICKET_COMPILATION_CACHE=/some/folder``: another folder;
  ``JAXTICKET_COMPILATION_CACHE=off`` (or ``0``, ``false``, ``no``): off;
* ``jaxticket --no-compilation-cache ...`` on the command line;
* :func:`enable` / :func:`disable` from Python;
* a cache folder you configured for JAX yourself (``JAX_COMPILATION_CACHE_DIR`` or
  ``jax.config.update("jax_compilation_cache_dir", ...)``) is left as it is.

Example:
    >>> import jaxticket.compilation_cache as cc
    >>> cc.default_dir().name
    'xla'
"""

from __future__ import annotations

import os
import pathlib
from typing import Optional

import jax

__all__ = ["ENV", "MAX_BYTES", "default_dir", "disable", "enable", "enable_default", "folder"]

ENV = "JAXTICKET_COMPILATION_CACHE"
MAX_BYTES = 4 * 1024**3
_OFF = ("0", "off", "false", "no", "none", "")


def default_dir() -> pathlib.Path:
    """``$XDG_CACHE_HOME/jaxticket/xla`` (default ``~/.cache/jaxticket/xla``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "jaxticket" / "xla"


def folder() -> Optional[str]:
    """The persistent cache folder JAX uses now, or ``None`` when the cache is off."""
    return jax.config.jax_compilation_cache_dir or None


def enable(path=None) -> str:
    """Turns the persistent cache on in ``path`` (default :func:`default_dir`), for every
    program, bounded and locked for several processes. Returns the folder.

    The explicit switch (also ``jaxticket.enable_compilation_cache``), for a notebook or
    your own script: it changes four ``jax.config`` values (the folder, no minimum compile
    time or entry size, the size bound) and ignores ``JAXTICKET_COMPILATION_CACHE``."""
    path = pathlib.Path(path if path is not None else default_dir()).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    path = str(path)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return path


def disable() -> None:
    """Turns the persistent cache off for this process."""
    jax.config.update("jax_compilation_cache_dir", None)


def enable_default() -> Optional[str]:
    """What the ``jaxticket`` command, the experiment scripts, the benchmarks and the
    tests' ``conftest.py`` call first: :func:`enable` unless ``JAXTICKET_COMPILATION_CACHE``
    says off (or names the folder), or JAX's cache folder is already configured. Returns
    the folder in use, or ``None`` when the cache stays off."""
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    setting = os.environ.get(ENV)
    if setting is not None and setting.strip().lower() in _OFF:
        return None
    try:
        import filelock  # noqa: F401  (JAX locks the bounded cache with it)
    except ImportError:
        return None
    try:
        return enable(setting or None)
    except OSError:  # an unwritable home: run without the cache rather than fail
        return None
