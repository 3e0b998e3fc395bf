"""Settings as composed dataclasses: each value defined once, validated once, found by name.

jaxticket's settings nest: :class:`~jaxticket.lottery.LotteryConfig` holds the
:class:`~jaxticket.train.TrainConfig` (model, data, optimizer), the
:class:`~jaxticket.lottery.ImpSettings` (what IMP adds) and the pruner; ``ImpSettings``
embeds the training loop's :class:`~jaxticket.train.FitSettings` (steps, batch size,
evaluation, chunking, checkpointing, the random streams). Every setting's name is unique
in that tree, so a setting can be named by its name alone (``steps``) or by its path
(``imp.fit.steps``); :func:`replace` and :func:`from_flat` build the nested objects from
names, and :func:`from_dict` reads any nesting of the same names (so configs written
before the settings were composed, ``{"train": {"steps": ...}, "levels": ...}``, read as
they always did).

A value is checked once, in the dataclass that owns it; a bad one raises
:class:`SettingError`, whose ``setting`` names it (the command line adds its flag).

Example:
    >>> import dataclasses
    >>> @dataclasses.dataclass(frozen=True)
    ... class Inner:
    ...     steps: int = 10
    ...     def __post_init__(self):
    ...         check_int("steps", self.steps, minimum=1)
    >>> @dataclasses.dataclass(frozen=True)
    ... class Outer:
    ...     inner: Inner = dataclasses.field(default_factory=Inner)
    ...     levels: int = 3
    >>> replace(Outer(), steps=5, levels=2)
    Outer(inner=Inner(steps=5), levels=2)
    >>> from_dict(Outer, {"levels": 1, "inner": {"steps": 7}}) == from_dict(Outer, {"steps": 7, "levels": 1})
    True
    >>> replace(Outer(), steps=0)
    Traceback (most recent call last):
    ...
    jaxticket.settings.SettingError: steps must be an integer >= 1, got 0
    >>> resolve(Outer, "step")
    Traceback (most recent call last):
    ...
    jaxticket.settings.SettingError: step: no such setting (did you mean 'steps'?); settings: inner, levels, steps
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any, Iterable, Optional

import numpy as np

__all__ = [
    "SettingError",
    "check_bool",
    "check_choice",
    "check_int",
    "check_number",
    "from_dict",
    "from_flat",
    "names",
    "nested_fields",
    "replace",
    "resolve",
    "to_dict",
]


class SettingError(ValueError):
    """A setting's value is not allowed. ``setting``: its name; ``problem``: what is wrong.

    ``str(error)`` is one line that names the setting (``"lr must be a finite number > 0,
    got -1.0"``); :meth:`named` restates it under another name (a command-line flag).

    Example:
        >>> e = SettingError("lr", "must be a finite number > 0, got -1.0")
        >>> str(e), e.named("--lr")
        ('lr must be a finite number > 0, got -1.0', '--lr must be a finite number > 0, got -1.0')
    """

    def __init__(self, setting: str, problem: str, *, joiner: str = " "):
        self.setting, self.problem, self.joiner = setting, problem, joiner
        super().__init__(f"{setting}{joiner}{problem}")

    def named(self, name: str) -> str:
        return f"{name}{self.joiner}{self.problem}"


def is_int(value) -> bool:
    """An integer that is not a bool (``True`` is not a count)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A real number that is not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_int(name: str, value, *, minimum: int = 0) -> None:
    """Raises :class:`SettingError` unless ``value`` is an integer >= ``minimum``."""
    if not is_int(value) or value < minimum:
        raise SettingError(name, f"must be an integer >= {minimum}, got {value!r}")


def check_number(name: str, value, *, low=None, high=None, low_open: bool = False, high_open: bool = True,
                 what: str = "a finite number") -> None:
    """Raises :class:`SettingError` unless ``value`` is a finite number in the interval
    (``[low, high)`` by default; ``low_open``/``high_open`` choose the ends)."""
    ok = is_number(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        where = ""
        if low is not None or high is not None:
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            where = f" in {left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise SettingError(name, f"must be {what}{where}, got {value!r}")


def check_bool(name: str, value) -> None:
    """Raises :class:`SettingError` unless ``value`` is True or False."""
    if not isinstance(value, (bool, np.bool_)):
        raise SettingError(name, f"must be true or false, got {value!r}")


def check_choice(name: str, value, choices: Iterable, note: str = "") -> None:
    """Raises :class:`SettingError` unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise SettingError(name, f"must be one of {', '.join(map(repr, choices))}, got {value!r}{note}")


# ------------------------------------------------------------------------------------------------ the tree


def nested_fields(cls) -> dict[str, type]:
    """The fields of dataclass ``cls`` that hold settings dataclasses of their own:
    ``{name: class}`` (a field whose default factory builds a dataclass, or whose
    metadata says ``{"settings": class}``)."""
    out = {}
    for f in dataclasses.fields(cls):
        inner = f.metadata.get("settings")
        if inner is None and f.default_factory is not dataclasses.MISSING:
            made = f.default_factory()
            inner = type(made) if dataclasses.is_dataclass(made) else None
        if inner is not None:
            out[f.name] = inner
    return out


def names(cls) -> dict[str, tuple[str, ...]]:
    """Every setting of ``cls``'s tree by name: ``{name: path}`` (nested settings' own
    names included, e.g. ``{"train": ("train",), "lr": ("train", "lr"), ...}``)."""
    out: dict[str, tuple[str, ...]] = {}
    nested = nested_fields(cls)
    for f in dataclasses.fields(cls):
        out[f.name] = (f.name,)
        if f.name in nested:
            for name, path in names(nested[f.name]).items():
                out.setdefault(name, (f.name, *path))
    return out


def _paths(cls) -> set[tuple[str, ...]]:
    return set(names(cls).values())


def resolve(cls, key: str) -> tuple[str, ...]:
    """The path of setting ``key`` in ``cls``'s tree: a name (``"steps"``), a path
    (``"imp.fit.steps"``), or an older path whose last part is a name (``"train.steps"``,
    from before the settings were composed). Unknown: :class:`SettingError` with the
    closest name."""
    table = names(cls)
    parts = tuple(str(key).split("."))
    if parts in _paths(cls):
        return parts
    if parts[-1] in table:  # a name, or an older path ending in one
        return table[parts[-1]]
    close = difflib.get_close_matches(parts[-1], list(table), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise SettingError(key, f"no such setting{hint}; settings: {', '.join(sorted(table))}", joiner=": ")


def _get(obj, path: tuple[str, ...]):
    for part in path:
        obj = getattr(obj, part)
    return obj


def _apply(obj, changes: dict[tuple[str, ...], Any]):
    """``obj`` with the values at ``changes``' paths replaced, nested objects rebuilt (and
    so validated) once each."""
    here = {path[0]: value for path, value in changes.items() if len(path) == 1}
    deeper: dict[str, dict] = {}
    for path, value in changes.items():
        if len(path) > 1:
            deeper.setdefault(path[0], {})[path[1:]] = value
    nested = nested_fields(type(obj))
    for name, inner in deeper.items():
        base = here.pop(name, getattr(obj, name))
        if isinstance(base, dict):
            base = from_dict(nested[name], base)
        here[name] = _apply(base, inner)
    for name, value in list(here.items()):
        if name in nested and isinstance(value, dict):
            here[name] = from_dict(nested[name], value)
    return dataclasses.replace(obj, **here)


def replace(obj, **changes):
    """``obj`` with settings changed by name or path (``replace(config, steps=100, levels=2)``);
    each changed object is rebuilt, so every value is checked by the dataclass owning it.
    Naming one setting twice (``steps`` and ``imp.fit.steps``) is a :class:`SettingError`."""
    return replace_paths(obj, changes)


def replace_paths(obj, changes: dict):
    """:func:`replace` with keys that may hold dots (``{"imp.fit.steps": 100}``)."""
    resolved: dict[tuple[str, ...], Any] = {}
    given: dict[tuple[str, ...], str] = {}
    for key, value in changes.items():
        path = resolve(type(obj), key)
        if path in resolved:
            raise SettingError(key, f"is given twice (as {given[path]!r} and {key!r}); give it once", joiner=" ")
        resolved[path], given[path] = value, key
    return _apply(obj, resolved)


def _required(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


def _build(cls, changes: dict[tuple[str, ...], Any]):
    nested = nested_fields(cls)
    kwargs = {path[0]: value for path, value in changes.items() if len(path) == 1}
    deeper: dict[str, dict] = {}
    for path, value in changes.items():
        if len(path) > 1:
            deeper.setdefault(path[0], {})[path[1:]] = value
    for name, inner in deeper.items():
        kwargs[name] = _build(nested[name], inner) if name not in kwargs else _apply(kwargs[name], inner)
    for name in _required(cls):
        if name not in kwargs and name in nested:
            kwargs[name] = _build(nested[name], {})
    missing = [name for name in _required(cls) if name not in kwargs]
    if missing:
        raise SettingError(missing[0], "is required", joiner=" ")
    return cls(**kwargs)


def from_flat(cls, **settings):
    """A ``cls`` built from settings named in any order and nesting level (names or paths;
    the rest at their defaults). ``from_flat(LotteryConfig, model="lenet5", steps=100,
    levels=3)``."""
    resolved: dict[tuple[str, ...], Any] = {}
    for key, value in settings.items():
        path = resolve(cls, key)
        if path in resolved:
            raise SettingError(key, "is given twice; give it once", joiner=" ")
        resolved[path] = value
    return _build(cls, resolved)


def to_dict(obj) -> dict:
    """Plain JSON-ready data, nested as the dataclasses are (``dataclasses.asdict``)."""
    return dataclasses.asdict(obj)


def _flatten(cls, d: dict, prefix: tuple = (), root=None) -> dict[tuple[str, ...], Any]:
    """``{path: value}`` of a dict nested in any way over ``root``'s setting names (a name
    inside a nested dict is looked up where it is, else anywhere: ``{"train": {"steps": 1}}``
    finds ``imp.fit.steps``)."""
    root = cls if root is None else root
    nested = nested_fields(cls)
    out: dict[tuple[str, ...], Any] = {}
    for key, value in d.items():
        if key in nested and isinstance(value, dict):
            items = _flatten(nested[key], value, (*prefix, key), root).items()
        else:
            here = (*prefix, *str(key).split("."))
            try:
                path = here if here in _paths(root) else resolve(root, key)
            except SettingError as e:  # named where it stands in the dict: train.future_setting
                raise SettingError(".".join(here), e.problem, joiner=e.joiner) from None
            items = [(path, value)]
        for path, v in items:
            if path in out and out[path] != v:
                raise SettingError(path[-1], f"is given twice with different values ({out[path]!r}, {v!r})",
                                   joiner=" ")
            out[path] = v
    return out


def _nested_names(cls) -> set[str]:
    out = set(nested_fields(cls))
    for inner in nested_fields(cls).values():
        out |= _nested_names(inner)
    return out


def _class_at(cls, path: tuple[str, ...]):
    for part in path:
        cls = nested_fields(cls)[part]
    return cls


def from_dict(cls, d: dict):
    """The ``cls`` of plain data: :func:`to_dict`'s nesting, or any other nesting of the
    same setting names (the flat layout of older configs). A name this jaxticket does not
    know is a :class:`SettingError` naming it."""
    if not isinstance(d, dict):
        raise SettingError(cls.__name__, f"must be a JSON object of settings, got {d!r}", joiner=" ")
    return _build(cls, _flatten(cls, d))


def describe_changes(old, new) -> list[tuple[str, Any, Any]]:
    """``(name, old, new)`` for every setting that differs between two objects of one class."""
    out = []
    for name, path in sorted(names(type(old)).items()):
        if name in _nested_names(type(old)):
            continue
        a, b = _get(old, path), _get(new, path)
        if a != b:
            out.append((name, a, b))
    return out


def default_of(cls, name: str) -> Optional[Any]:
    """The default value of setting ``name`` of ``cls``'s tree (``None`` when required)."""
    path = resolve(cls, name)
    owner = _class_at(cls, path[:-1])
    for f in dataclasses.fields(owner):
        if f.name == path[-1]:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    return None
