"""Periodic checkpoints and rewind points of a training run (orbax), in a directory it is handed.

In that directory::

    checkpoints/     periodic checkpoints, only the last ``keep_last`` kept (resume)
    rewind/          rewind points (step 0, step k, ...), never garbage-collected

Given a ``config``, :class:`RunCheckpoints` first claims the directory for it through the
run directory's guard (:func:`jaxticket.rundir.claim`: ``config.json`` and its hash; a
different config is a :class:`ConfigMismatchError` unless ``overwrite=True``, which wipes
the checkpoints and starts fresh). The same config resumes.

States are arbitrary pytrees: flax.struct train states, optax states, a
:class:`jaxticket.masks.Mask`, new-style typed PRNG keys (``jax.random.key``), all with
or without a leading seeds axis and with any sharding. Only the array leaves are
written (keyed by their path, e.g. ``params/Dense_0/kernel``); the structure, the
static data (mask ``prunable`` flags, dataclass types) and the shardings come back
from the ``target`` given to ``restore``. Typed keys are stored as their raw
``key_data`` and re-wrapped with the target's PRNG implementation.

Saves are synchronous and atomic (orbax writes a temporary directory and renames it
when complete), so a process killed mid-save leaves the previous checkpoint intact and
:meth:`RunCheckpoints.latest_step` only ever reports complete checkpoints.

Example:
    >>> import os, shutil, tempfile
    >>> import jax.numpy as jnp
    >>> from jaxticket.checkpoints import RunCheckpoints
    >>> d = tempfile.mkdtemp()
    >>> config = {"model": "lenet", "seed": 0}
    >>> state = {"params": {"w": jnp.ones(3)}, "step": jnp.array(0)}
    >>> with RunCheckpoints(os.path.join(d, "runs", "lenet_s0"), config, keep_last=2) as ckpt:
    ...     step = ckpt.latest_step()
    ...     if step is not None:
    ...         state = ckpt.restore(step, state)      # state: a like-shaped template
    ...     # ... train ...
    ...     ckpt.save_rewind_point(0, state)
    ...     ckpt.save(1000, state)
    >>> step is None                                   # a fresh run directory
    True
    >>> with RunCheckpoints(os.path.join(d, "runs", "lenet_s0"), config, keep_last=2) as ckpt:
    ...     ckpt.latest_step(), ckpt.rewind_steps()    # the same config resumes
    (1000, [0])
    >>> shutil.rmtree(d)
"""

from __future__ import annotations

import logging
import pathlib
import shutil
from typing import Any, Mapping, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxticket import rundir
from jaxticket.rundir import ConfigMismatchError, DataMismatchError, config_hash, config_to_dict

PyTree = Any

__all__ = [
    "CheckpointError",
    "ConfigMismatchError",
    "DataMismatchError",
    "RunCheckpoints",
    "config_hash",
    "config_to_dict",
]

_log = logging.getLogger(__name__)

PERIODIC_DIR, REWIND_DIR, _TRASH_DIR = rundir.PERIODIC_DIR, rundir.REWIND_DIR, rundir.TRASH_DIR


class CheckpointError(ValueError):
    """A checkpoint or rewind point exists but cannot be read back."""


def _quietly(fn):
    """``fn()`` with orbax's and absl's loggers silenced (a failing restore logs dozens of
    tracebacks before it raises; the caller turns the exception into one line)."""
    names = ("absl", "orbax", "orbax.checkpoint", "jax._src.distributed")
    loggers = [logging.getLogger(n) for n in names]
    levels = [l.level for l in loggers]
    for l in loggers:
        l.setLevel(logging.CRITICAL)
    try:
        return fn()
    finally:
        for l, level in zip(loggers, levels):
            l.setLevel(level)


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        ocp.multihost.sync_global_processes(f"jaxticket_checkpoints:{name}")


# ----------------------------------------------------------------------------- pytrees


def _is_key(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _key_impl(x: Any):
    """The PRNG implementation of a typed key array or key ShapeDtypeStruct."""
    if isinstance(x, jax.Array):
        return jax.random.key_impl(x)
    found = []
    jax.eval_shape(lambda k: found.append(jax.random.key_impl(k)), x)
    return found[0]


def _key_str(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _leaf_paths(tree: PyTree) -> tuple[list[tuple[str, ...]], list[Any], Any]:
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    paths = [tuple(_key_str(k) for k in p) for p, _ in leaves_with_paths]
    if len(set(paths)) != len(paths):
        seen, dup = set(), None
        for p in paths:
            if p in seen:
                dup = p
                break
            seen.add(p)
        raise ValueError(f"two leaves of the state share the path '{'/'.join(dup)}'; cannot checkpoint.")
    return paths, [leaf for _, leaf in leaves_with_paths], treedef


def _nest(paths: list[tuple[str, ...]], values: list[Any]) -> dict:
    root: dict = {}
    for path, value in zip(paths, values):
        if not path:
            raise ValueError("the state is a single bare array; wrap it in a dict to checkpoint it.")
        node = root
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"state path '{'/'.join(path)}' clashes with another leaf.")
        if path[-1] in node:
            raise ValueError(f"state path '{'/'.join(path)}' clashes with another leaf.")
        node[path[-1]] = value
    return root


def _unnest(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(tree, Mapping):
        out = {}
        for k, v in tree.items():
            out.update(_unnest(v, prefix + (str(k),)))
        return out
    return {prefix: tree}


def to_storable(state: PyTree) -> dict:
    """The nested dict of arrays that is written for ``state``.

    Typed PRNG keys become their ``jax.random.key_data``; everything else is kept.

    Example: ``to_storable({"rng": jax.random.key(0)})["rng"].dtype == uint32``.
    """
    paths, leaves, _ = _leaf_paths(state)
    leaves = [jax.random.key_data(x) if _is_key(x) else x for x in leaves]
    return _nest(paths, leaves)


def _default_sharding():
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def _abstract_leaf(x: Any) -> Any:
    """What orbax should restore for one target leaf (stored form, target sharding)."""
    if isinstance(x, (jax.Array, jax.ShapeDtypeStruct)):
        sharding = getattr(x, "sharding", None) or _default_sharding()
        if _is_key(x):
            data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(x.shape, x.dtype))
            return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
    if isinstance(x, (np.ndarray, np.generic)):
        return np.asarray(x)
    return x  # Python scalars


def _from_stored(stored: Any, target_leaf: Any) -> Any:
    if _is_key(target_leaf):
        return jax.random.wrap_key_data(stored, impl=_key_impl(target_leaf))
    if isinstance(target_leaf, np.generic):
        return np.asarray(stored, dtype=target_leaf.dtype)[()]
    if isinstance(target_leaf, (bool, int, float)) and not isinstance(stored, type(target_leaf)):
        return type(target_leaf)(np.asarray(stored).item())
    return stored


def _stored_shape(meta: Any):
    shape = getattr(meta, "shape", None)
    return None if shape is None else tuple(shape)


def _check_structure(where: str, stored_meta: Mapping, abstract: Mapping) -> None:
    """Raises ValueError naming the paths that differ between checkpoint and target."""
    stored = _unnest(stored_meta)
    wanted = _unnest(abstract)
    missing = sorted("/".join(p) for p in set(wanted) - set(stored))
    extra = sorted("/".join(p) for p in set(stored) - set(wanted))
    problems = []
    if missing:
        problems.append(f"in the target but not in the checkpoint: {missing[:10]}"
                        + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else ""))
    if extra:
        problems.append(f"in the checkpoint but not in the target: {extra[:10]}"
                        + (f" (+{len(extra) - 10} more)" if len(extra) > 10 else ""))
    for path in sorted(set(stored) & set(wanted)):
        s_shape = _stored_shape(stored[path])
        w_shape = tuple(np.shape(wanted[path]))
        if s_shape is not None and s_shape != w_shape:
            problems.append(
                f"shape of '{'/'.join(path)}': checkpoint {s_shape}, target {w_shape}"
            )
            if len(problems) > 12:
                break
    if problems:
        raise ValueError(
            f"{where} does not match the restore target:\n  " + "\n  ".join(problems)
            + "\nThe target must be a state of the same model/optimizer/seeds as the saved "
            "one (e.g. built by the same init function with the same config)."
        )


# ----------------------------------------------------------------------------- manager


def _make_manager(directory: pathlib.Path, keep: int | None) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=False,
        preservation_policy=ocp.checkpoint_managers.LatestN(keep),
        # Old steps are renamed into .trash (atomic) before being deleted, so a kill
        # during garbage collection never leaves a half-deleted step that looks complete.
        todelete_subdir=_TRASH_DIR,
        cleanup_tmp_directories=True,
        create=True,
    )
    # The handler is named so that item_metadata() works (and orbax does not warn).
    return ocp.CheckpointManager(directory, options=options, item_handlers=ocp.StandardCheckpointHandler())


class RunCheckpoints:
    """Periodic checkpoints and rewind points of one run, guarded by its config.

    Args:
      directory: the run directory (created if missing).
      config: the run's full resolved config (dataclass, dict, ml_collections).
      overwrite: wipe whatever the directory holds (config and checkpoints) and start
        fresh. Without it, a different config raises :class:`ConfigMismatchError` and
        the same config resumes.
      keep_last: how many periodic checkpoints to keep (rewind points are all kept).
      defaults: nested like ``config``: the value a key absent from the saved config is
        taken to have (see :func:`dataclass_defaults`). A run saved before a config
        field existed resumes when the new config holds that field at its default; the
        run keeps its saved config and hash, so its level directories stay valid.
      growable: dotted keys of counts that may differ from the saved ones (the number of
        IMP levels: a finished run is extended, or read back in part); the run keeps its
        hash and records the larger count.

    Example:
        >>> import shutil, tempfile
        >>> import jax.numpy as jnp
        >>> tmp_dir = tempfile.mkdtemp()
        >>> state = {"w": jnp.arange(3.0), "step": jnp.array(10)}
        >>> ckpt = RunCheckpoints(tmp_dir, {"lr": 0.1})
        >>> ckpt.save(10, state)
        >>> ckpt.latest_step()
        10
        >>> state = ckpt.restore(10, state)  # same structure, dtypes, shardings
        >>> state["w"].tolist(), state["w"].dtype
        ([0.0, 1.0, 2.0], dtype('float32'))
        >>> ckpt.close()
        >>> shutil.rmtree(tmp_dir)
    """

    def __init__(self, directory, config=None, *, overwrite: bool = False, keep_last: int = 2,
                 growable: Sequence[str] = ()):
        if int(keep_last) < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}.")
        self.directory = pathlib.Path(directory).absolute()
        self.keep_last = int(keep_last)
        self.config_hash = None
        if config is not None:  # the directory's identity is the run directory's (jaxticket.rundir.claim)
            self.config_hash = rundir.claim(self.directory, config, overwrite=overwrite, growable=growable)
        if overwrite and jax.process_index() == 0:
            for sub in (PERIODIC_DIR, REWIND_DIR):
                shutil.rmtree(self.directory / sub, ignore_errors=True)
        _sync("directory_ready")
        self._periodic = _make_manager(self.directory / PERIODIC_DIR, self.keep_last)
        self._rewind = _make_manager(self.directory / REWIND_DIR, None)

    # -- context manager
    def __enter__(self) -> "RunCheckpoints":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunCheckpoints({str(self.directory)!r}, hash={self.config_hash})"

    # -- periodic
    def save(self, step: int, state: PyTree) -> None:
        """Saves a periodic checkpoint (atomic); keeps only the last ``keep_last``.

        Steps must increase; saving the latest step again replaces it.
        """
        step = int(step)
        latest = self.latest_step()
        if latest is not None and step < latest:
            raise ValueError(
                f"periodic checkpoint steps must increase: step {step} < latest saved step "
                f"{latest} in {self.directory / PERIODIC_DIR}. Resume from the latest step, "
                "or use a new run directory."
            )
        _save(self._periodic, step, state)

    def latest_step(self) -> int | None:
        """The latest complete periodic checkpoint's step, or ``None``."""
        self._periodic.reload()
        return self._periodic.latest_step()

    def steps(self) -> list[int]:
        """Steps of the complete periodic checkpoints, ascending."""
        self._periodic.reload()
        return sorted(self._periodic.all_steps())

    def restore(self, step: int, target: PyTree) -> PyTree:
        """Restores periodic checkpoint ``step`` into ``target``'s structure.

        ``target`` is a like-shaped state: concrete arrays or ``jax.ShapeDtypeStruct``
        (with ``.sharding``; without one, the first local device). The result has the
        target's tree structure (static data included), dtypes and shardings.
        """
        return _restore(self._periodic, "periodic checkpoint", int(step), target)

    # -- rewind points
    def save_rewind_point(self, step: int, state: PyTree) -> None:
        """Saves a rewind point (never garbage-collected); an existing step is replaced."""
        _save(self._rewind, int(step), state)

    def rewind_steps(self) -> list[int]:
        """Steps of the saved rewind points, ascending."""
        self._rewind.reload()
        return sorted(self._rewind.all_steps())

    def restore_rewind_point(self, step: int, target: PyTree) -> PyTree:
        """Restores rewind point ``step`` into ``target``'s structure (see :meth:`restore`)."""
        return _restore(self._rewind, "rewind point", int(step), target)

    # -- lifecycle
    def wait(self) -> None:
        """Blocks until all pending writes are complete (saves are synchronous)."""
        self._periodic.wait_until_finished()
        self._rewind.wait_until_finished()

    def close(self) -> None:
        """Waits for pending writes and releases orbax resources."""
        self._periodic.close()
        self._rewind.close()


def _save(manager: ocp.CheckpointManager, step: int, state: PyTree) -> None:
    if step < 0:
        raise ValueError(f"checkpoint step must be >= 0, got {step}.")
    storable = to_storable(state)
    if not storable:
        raise ValueError("the state has no array leaves; nothing to checkpoint.")
    manager.reload()
    if step in manager.all_steps():
        _log.warning("replacing existing checkpoint at step %d in %s", step, manager.directory)
        manager.delete(step)
    saved = manager.save(step, args=ocp.args.StandardSave(storable), force=True)
    if not saved:  # pragma: no cover - orbax declined (read-only or similar)
        raise RuntimeError(f"orbax declined to save step {step} in {manager.directory}.")
    manager.wait_until_finished()
    _empty_trash(manager.directory)


def _empty_trash(directory) -> None:
    if jax.process_index() == 0:
        shutil.rmtree(pathlib.Path(directory) / _TRASH_DIR, ignore_errors=True)


#: leaf names a checkpoint may lack, restored as the target's value: the schedule offset of
#: :class:`jaxticket.train.StepScheduleState` (checkpoints from before it existed hold none; 0)
DEFAULTED_LEAVES = ("schedule_offset",)


def _restore(manager: ocp.CheckpointManager, what: str, step: int, target: PyTree) -> PyTree:
    manager.reload()
    available = sorted(manager.all_steps())
    if step not in available:
        raise FileNotFoundError(
            f"no {what} at step {step} in {manager.directory}; available steps: "
            f"{available if available else 'none'}."
        )
    paths, leaves, treedef = _leaf_paths(target)
    where = f"{what} at step {step} in {manager.directory}"
    try:
        meta = manager.item_metadata(step)
        meta_tree = getattr(meta, "tree", meta)
    except Exception:  # pragma: no cover - metadata unavailable: let orbax check
        meta_tree = None
    defaults = {}  # leaves newer than the checkpoint that have a value to take: the target's
    if isinstance(meta_tree, Mapping):
        stored = set(_unnest(meta_tree))
        defaults = {p: x for p, x in zip(paths, leaves) if p not in stored and p[-1] in DEFAULTED_LEAVES}
    kept = [(p, x) for p, x in zip(paths, leaves) if p not in defaults]
    abstract = _nest([p for p, _ in kept], [_abstract_leaf(x) for _, x in kept])
    if isinstance(meta_tree, Mapping):
        _check_structure(where, meta_tree, abstract)
    try:
        restored = _quietly(lambda: manager.restore(step, args=ocp.args.StandardRestore(abstract)))
    except Exception as e:  # orbax/tensorstore raise many kinds: one line naming the checkpoint
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{where} cannot be restored ({type(e).__name__}: {first[:300]}); it is damaged: delete "
            f"{pathlib.Path(manager.directory) / str(step)} to resume from an earlier checkpoint, or redo the "
            "level (--redo-level)") from e
    flat = _unnest(restored)
    out = [defaults[p] if p in defaults else _from_stored(flat[p], x) for p, x in zip(paths, leaves)]
    return jax.tree.unflatten(treedef, out)
