"""The settings of a command line: the preset, then ``--set KEY=VALUE``, then the named flags.

A setting is named as anywhere in jaxticket (:mod:`jaxticket.settings`): by its name
(``lr``, ``eval_every``, ``levels``) or path (``imp.fit.steps``); older spellings
(``train.steps``) still work. A setting given twice (``--levels 1 --set levels=-1``) is
refused as a conflict, and a value the library rejects comes back as one line naming the
flag or ``--set`` key that gave it.
"""

from __future__ import annotations

import difflib
import json
from typing import Optional, Sequence

from jaxticket import settings as settings_lib
from jaxticket.cli.errors import UsageError

__all__ = ["FLAG_SETTINGS", "parse_overrides", "parse_value", "pruner_value", "resolve_config", "resolve_mesh_flag"]

#: The named flags of ``train`` / ``imp`` / ``instability`` and the settings they set.
FLAG_SETTINGS = {"levels": "--levels", "rewind_step": "--rewind-step", "seeds": "--seeds", "steps": "--steps",
                 "batch_size": "--batch-size"}


# --set values that may legitimately start with "[" or "{" without being JSON (a regex)
_STRING_KEYS = ("prunable",)


def parse_value(raw: str, *, keep_lists: bool = False, key: Optional[str] = None):
    """JSON if ``raw`` parses as JSON (lists -> tuples unless ``keep_lists``), else the string.

    A value that starts with ``{`` or ``[`` is meant as JSON: when it does not parse, a
    :class:`UsageError` names the JSON error (and ``key``, the ``--set`` key).
    """
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        if raw.lstrip()[:1] in ("{", "[") and key not in _STRING_KEYS:
            where = f"--set {key}=" if key else "--set "
            raise UsageError(f"{where}{raw}: not valid JSON ({e.msg} at column {e.colno}); write the whole "
                             "value as JSON in single quotes, e.g. --set 'pruner={\"method\": \"magnitude\", "
                             "\"fraction\": 0.2}' or --set 'milestones=[10, 20]'") from None
        return raw
    if isinstance(value, list) and not keep_lists:
        return tuple(value)
    return value


def pruner_value(raw: str, value):
    """``--set pruner=...``: a JSON object as given; a bare registered method name that
    needs no settings becomes ``{"method": name}``; any other bare name is a usage error
    saying how to write a pruner."""
    from jaxticket import pruning

    if not isinstance(value, str):
        return value
    name = value.strip()
    example = '--set \'pruner={"method": "magnitude", "fraction": 0.2, "scope": "global"}\''
    if name not in pruning.methods():
        close = difflib.get_close_matches(name, pruning.methods(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"--set pruner={raw}: a pruner is a JSON object with a method and its settings, "
                         f"e.g. {example}; {name!r} is not a pruning method{hint}; methods: "
                         f"{', '.join(pruning.methods())} (or your own, registered in an --import module)")
    try:
        pruning.from_config({"method": name})
    except ValueError as e:
        try:
            pruning.from_config({"method": name, "fraction": 0.2})
            example = f'--set \'pruner={{"method": "{name}", "fraction": 0.2}}\''
        except (ValueError, TypeError):
            pass
        raise UsageError(f"--set pruner={raw}: {str(e).rstrip('.')}; write the pruner as JSON with its settings, "
                         f"e.g. {example}") from None
    return {"method": name}


def parse_overrides(items: Sequence[str]) -> dict[str, tuple[str, object]]:
    """``--set key=value`` items -> ``{key: (item, value)}`` (``train={...}``, a JSON object,
    sets each of its keys as ``train.KEY``). Raises :class:`UsageError` for an item
    without ``=``, or a key given twice."""
    out: dict[str, tuple[str, object]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        if key == "train":
            value = parse_value(raw, key=key)
            if not isinstance(value, dict):
                raise UsageError(f"--set train=... expects a JSON object of TrainConfig settings, got {raw!r}")
            pairs = [(f"train.{k}", f"--set {item}", v) for k, v in value.items()]
        elif key == "pruner":
            pairs = [(key, f"--set {item}", pruner_value(raw, parse_value(raw, keep_lists=True, key=key)))]
        else:
            pairs = [(key, f"--set {item}", parse_value(raw, key=key))]
        for k, where, v in pairs:
            if k in out:
                raise UsageError(f"{where}: {k} is set twice by --set ({out[k][0]}); give it once")
            out[k] = (where, tuple(v) if isinstance(v, list) and k != "pruner" else v)
    return out


def resolve_config(args, *, levels: Optional[int] = None):
    """The LotteryConfig of ``--config`` with ``--set`` and the named flags applied, each
    value checked by the settings that own it. Raises :class:`UsageError` (one line) for
    an unknown preset, key, model or dataset, a setting given twice, and a value the
    settings reject (named by the flag or ``--set`` item that gave it)."""
    from jaxticket import configs, data, models

    try:
        config = configs.get(args.config)
    except ValueError as e:
        raise UsageError(str(e)) from None
    given = [(key, where, value) for key, (where, value) in parse_overrides(args.overrides).items()]
    for name, flag in FLAG_SETTINGS.items():
        value = getattr(args, name, None)
        if value is not None:
            given.append((name, f"{flag} {value}", value))
    if levels is not None:
        given.append(("levels", f"`jaxticket {args.command}` (levels={levels})", levels))
    by_path: dict[tuple, tuple[str, str, object]] = {}
    for key, where, value in given:
        try:
            path = settings_lib.resolve(type(config), key)
        except settings_lib.SettingError as e:
            raise UsageError(f"{where}: {e.problem}") from None
        if path in by_path and by_path[path][2] != value:
            raise UsageError(f"{by_path[path][1]} and {where} both set {path[-1]}; give it once")
        by_path[path] = (key, where, value)
    try:
        config = settings_lib.replace_paths(config, {".".join(p): v for p, (_, _, v) in by_path.items()})
    except settings_lib.SettingError as e:
        where = next((w for p, (_, w, _) in by_path.items() if p[-1] == e.setting.split(".")[0]), None)
        raise UsageError(f"{where}: {e}" if where else f"bad config value: {e}") from None
    except (ValueError, TypeError) as e:
        raise UsageError(f"bad config value: {e}") from None
    try:
        data.get_spec(config.train.dataset)
        models.get(config.train.model, num_classes=config.train.num_classes)
        data.check_sizes(config.train.dataset, validation_size=config.train.validation_size,
                         batch_size=config.imp.fit.batch_size)
    except settings_lib.SettingError as e:
        flag = "--" + e.setting.replace("_", "-") if e.setting in FLAG_SETTINGS else f"--set {e.setting}"
        raise UsageError(e.named(flag)) from None
    except ValueError as e:
        raise UsageError(f"bad config value: {e}") from None
    return config


def resolve_mesh_flag(flag: Optional[str], *, seeds: int, batch_size: int):
    """``--mesh R,D|auto`` as a mesh (``None`` without the flag), checked against the replicas
    and the batch before anything is loaded; a mesh that cannot hold them is a :class:`UsageError`
    naming the flag.

    Example:
        >>> resolve_mesh_flag(None, seeds=2, batch_size=60) is None
        True
        >>> resolve_mesh_flag("3,1", seeds=2, batch_size=60)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        jaxticket.cli.errors.UsageError: --mesh 3,1: ...
    """
    if flag is None:
        return None
    from jaxticket import parallel

    try:
        return parallel.resolve_mesh(flag, seeds=seeds, batch_size=batch_size)
    except parallel.MeshError as e:
        raise UsageError(f"--mesh {flag}: {e}") from None
