"""A run's identity: what a directory holds, stored in its ``config.json`` with a hash, so a
different run is refused and the same run resumes.

:func:`claim` is the guard every run directory (an IMP run, one of its levels, a sweep)
passes when it is opened: the stored identity is read, brought up to date by the
registered upgrades (:func:`register_upgrade`: a layout of settings written by an older
jaxticket reads as the new one, and the run keeps its hash, so its levels stay valid),
compared with the new one, and written when new. :func:`describe_identity` says in
words what a stored identity is, for messages.

Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> first = claim(d, {"lr": 0.1, "levels": 2}, growable=("levels",))
    >>> claim(d, {"lr": 0.1, "levels": 5}, growable=("levels",)) == first   # extended: the same run
    True
    >>> claim(d, {"lr": 0.2, "levels": 5})
    Traceback (most recent call last):
    ...
    jaxticket.rundir.identity.ConfigMismatchError: run directory ... holds a run with a different config; differing keys:
      lr: 0.1 (saved) != 0.2 (new)
    Use a new directory for the new config, or overwrite the old run to wipe it and start fresh.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import hashlib
import json
import math
import pathlib
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from jaxticket.rundir.files import write_atomic
from jaxticket.rundir.names import CONFIG_FILE

__all__ = ["ConfigMismatchError", "DataMismatchError", "claim", "config_diff", "config_hash", "config_to_dict",
           "describe_data", "describe_identity", "read_identity", "register_upgrade", "upgrade_identity"]


class ConfigMismatchError(ValueError):
    """A run directory already holds a run with a different config."""


class DataMismatchError(ConfigMismatchError):
    """A run directory was trained on other data than the data given to resume it."""


def config_to_dict(config: Any) -> Any:
    """A JSON-ready copy of ``config`` (dataclass, dict, ml_collections, nested).

    Tuples become lists, enums their value, paths strings, numpy scalars Python
    scalars. Anything else raises ``TypeError`` naming the field.

    Example: ``config_to_dict(Cfg(lr=0.1, sizes=(300, 100)))``
    ``== {"lr": 0.1, "sizes": [300, 100]}``.
    """
    return _jsonable(config, "config")


def _jsonable(obj: Any, where: str) -> Any:
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return repr(obj)  # JSON has no inf/nan; keep them distinguishable
        return obj
    if isinstance(obj, enum.Enum):
        return _jsonable(obj.value, where)
    if isinstance(obj, (np.bool_, np.integer, np.floating)):
        return _jsonable(obj.item(), where)
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist(), where)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: _jsonable(getattr(obj, f.name), f"{where}.{f.name}")
            for f in dataclasses.fields(obj)
        }
    if hasattr(obj, "to_dict") and callable(obj.to_dict):  # ml_collections.ConfigDict
        return _jsonable(obj.to_dict(), where)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int, bool, float)) and k is not None:
                raise TypeError(f"{where}: key {k!r} is not a str/int; cannot save config.")
            out[str(k)] = _jsonable(v, f"{where}.{k}")
        return out
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (set, frozenset)):
        return sorted(_jsonable(v, f"{where}[]") for v in obj)
    raise TypeError(
        f"{where}: cannot save a {type(obj).__name__} in config.json; configs must be "
        "plain data (numbers, strings, bools, None, lists, dicts, dataclasses)."
    )


def _canonical_json(config_dict: Any) -> str:
    return json.dumps(config_dict, sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_hash(config: Any) -> str:
    """A stable 12-hex-digit hash of ``config``: sha256 of its canonical JSON.

    Key order, tuple vs list and dataclass vs dict spelling do not change the hash.

    Example: ``config_hash({"lr": 0.1, "seed": 0}) == config_hash({"seed": 0, "lr": 0.1})``.
    """
    text = _canonical_json(config_to_dict(config))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _flatten_dict(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out = {}
        for k, v in d.items():
            out.update(_flatten_dict(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix or "<root>": d}


def config_diff(old: Any, new: Any) -> list[tuple[str, Any, Any]]:
    """``(dotted_key, old_value, new_value)`` for every key that differs.

    Missing keys show as ``"<missing>"``.

    Example: ``config_diff({"lr": 0.1}, {"lr": 0.2}) == [("lr", 0.1, 0.2)]``.
    """
    a, b = _flatten_dict(old), _flatten_dict(new)
    missing = "<missing>"
    return [
        (k, a.get(k, missing), b.get(k, missing))
        for k in sorted(set(a) | set(b))
        if a.get(k, missing) != b.get(k, missing)
    ]


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _set_dotted(d: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    for part in parents:
        d = d[part]
    d[last] = value


def mismatch_message(directory: pathlib.Path, diffs) -> str:
    lines = [f"  {k}: {old!r} (saved) != {new!r} (new)" for k, old, new in diffs[:20]]
    if len(diffs) > 20:
        lines.append(f"  ... and {len(diffs) - 20} more")
    return (
        f"run directory {directory} holds a run with a different config; differing keys:\n"
        + "\n".join(lines)
        + "\nUse a new directory for the new config, or overwrite the old run to wipe it "
        "and start fresh."
    )


_UPGRADES: dict[str, Callable[[Any], Any]] = {}


def register_upgrade(key: str, upgrade: Callable[[Any], Any]) -> None:
    """``upgrade(stored[key]) -> current[key]`` for every stored identity holding ``key``
    (e.g. ``"config"``: a LotteryConfig's plain data in any older layout -> today's). An
    upgrade must be the identity on today's layout."""
    _UPGRADES[key] = upgrade


def upgrade_identity(identity: Any) -> Any:
    """``identity`` with the registered upgrades applied to its keys (a level's identity,
    which holds none of them, is returned as it is)."""
    if not isinstance(identity, dict):
        return identity
    out = dict(identity)
    for key, upgrade in _UPGRADES.items():
        if isinstance(out.get(key), dict):
            out[key] = config_to_dict(upgrade(out[key]))
    return out


def read_identity(directory) -> dict | None:
    """``{"config_hash", "config"}`` of ``directory/config.json`` (the identity
    upgraded), or ``None`` when there is none."""
    stored = _read_config(pathlib.Path(directory) / CONFIG_FILE)
    if stored is None:
        return None
    return {**stored, "config": upgrade_identity(stored.get("config"))}


def describe_data(fingerprint: dict) -> str:
    """A data fingerprint in words: ``"dataset mnist 3.0.1 (validation 5000)"`` or the arrays'
    hash and split sizes."""
    if "dataset" in fingerprint:
        d = fingerprint["dataset"]
        return f"dataset {d.get('dataset')} {d.get('version')} (validation {d.get('validation_size')})"
    splits = fingerprint.get("splits", {})
    sizes = ", ".join(f"{k} {splits[k].get('n')}" for k in ("train", "validation", "test") if k in splits)
    return f"arrays sha256:{fingerprint.get('sha256')} ({sizes})"


def describe_identity(identity: dict) -> str:
    """What a stored identity is, in words: an IMP run of a config, one of objects, a
    sweep, or a level."""
    if not isinstance(identity, dict):
        return "an unknown run"
    if "sweep" in identity:
        sweep = identity["sweep"]
        return f"an instability sweep (ks {sweep.get('ks')}, levels {sweep.get('levels')})"
    if "config" in identity and isinstance(identity["config"], dict):
        c = identity["config"]
        train, imp = c.get("train", {}), c.get("imp", {})
        return (f"an IMP run of {train.get('model', '?')} on {train.get('dataset', '?')} "
                f"({imp.get('levels', c.get('levels', '?'))} levels)")
    if "task" in identity:
        return f"an IMP run of {identity['task'].get('name', 'a task') if isinstance(identity['task'], dict) else 'a task'}"
    if "run" in identity:
        return f"level {identity.get('level')} ({identity.get('kind')}) of run {identity['run']}"
    return "an unknown run"


def claim(directory, identity: Any, *, overwrite: bool = False, growable: Sequence[str] = ()) -> str:
    """Claims ``directory`` for the run ``identity`` (plain data); returns the run's hash.

    A fresh directory records it (``config.json``: the identity and its hash); one that
    holds the same run (its stored identity upgraded, :func:`register_upgrade`) keeps its
    hash; ``growable``: dotted keys of counts that may differ (the number of IMP levels:
    a run extended, or read back in part), the larger one recorded. Any other difference
    is a :class:`ConfigMismatchError` listing the keys, unless ``overwrite`` (the caller
    deletes the old files). Process 0 writes; every process returns the hash.
    """
    directory = pathlib.Path(directory).absolute()
    config, digest = config_to_dict(identity), config_hash(identity)
    config_path = directory / CONFIG_FILE
    previous = None if overwrite else _read_config(config_path)
    if previous is not None:
        stored = upgrade_identity(previous.get("config"))
        diffs = config_diff(stored, config)
        grown = [(k, old, new) for k, old, new in diffs if k in growable and _is_count(old) and _is_count(new)]
        diffs = [d for d in diffs if d not in grown]
        if diffs:
            raise ConfigMismatchError(mismatch_message(directory, diffs))
        config = copy.deepcopy(stored)
        for key, old, new in grown:  # records the larger count
            _set_dotted(config, key, max(old, new))
        digest = previous.get("config_hash", digest)  # the same run keeps its identity
    _sync("config_checked")
    if jax.process_index() == 0:
        directory.mkdir(parents=True, exist_ok=True)
        if previous is None or previous.get("config_hash") != digest or previous.get("config") != config:
            text = json.dumps({"config_hash": digest, "config": config}, indent=2, sort_keys=True,
                              allow_nan=False) + "\n"
            write_atomic(config_path, text)
        for stale in directory.glob(f".{CONFIG_FILE}.*.tmp"):  # from a killed write
            stale.unlink(missing_ok=True)
    _sync("config_written")
    return digest


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"jaxticket_rundir:{name}")


def _read_config(path: pathlib.Path) -> dict | None:
    if not path.exists():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigMismatchError(f"{path} is not valid JSON ({e}); the file is damaged: it says what run "
                                  "the folder holds; restore it (from a backup, or a copy of the run), or use a "
                                  "new directory, or overwrite it to start fresh") from None


