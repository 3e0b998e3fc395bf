"""Level schedules: which pruner prunes at each IMP level.

A plain pruner prunes the same way at every level. A schedule gives level ``L`` (1, 2,
...) its own pruner through ``schedule.at_level(L)``; :func:`for_level` resolves either.

* :func:`per_level`: one pruner per level, e.g. other fractions early and late;
* :func:`to_density`: the geometric per-level fraction ``1 - target ** (1 / levels)`` that
  reaches a target density in ``levels`` levels (up to the rounding of each level).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from jaxticket.pruning.core import Configured, Pruner, as_pruner, from_config, register, to_config

__all__ = ["PerLevel", "Schedule", "ToDensity", "for_level", "per_level", "to_density"]


class Schedule:
    """Base of level schedules: ``at_level(level) -> pruner`` for ``level >= 1``.

    A schedule is not itself a pruner: give it to :func:`jaxticket.imp` (or resolve a
    level with :func:`for_level`).
    """

    def at_level(self, level: int):  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} must define at_level(level) -> pruner")

    @property
    def needs_key(self) -> bool:
        return self.at_level(1).needs_key

    def __call__(self, params, mask, key=None):
        raise TypeError(f"{type(self).__name__} is a level schedule, not a pruner: use "
                        "schedule.at_level(level)(params, mask, key), or give it to jaxticket.imp")


def for_level(pruner, level: int):
    """The pruner that prunes at IMP ``level``: ``pruner.at_level(level)`` for a schedule,
    else ``pruner`` itself (made a :class:`~jaxticket.pruning.Pruner`).

    Example:
        >>> from jaxticket import pruning
        >>> s = pruning.per_level([pruning.magnitude(0.5), pruning.magnitude(0.2)])
        >>> for_level(s, 2).fraction, for_level(pruning.magnitude(0.3), 7).fraction
        (0.2, 0.3)
    """
    if not isinstance(level, int) or level < 1:
        raise ValueError(f"pruning levels start at 1, got {level!r}")
    at_level = getattr(pruner, "at_level", None)
    return as_pruner(at_level(level) if callable(at_level) else pruner)


@register("per_level", examples=[{"pruners": [{"method": "magnitude", "fraction": 0.5},
                                             {"method": "random", "fraction": 0.2, "scope": "global"}]}])
@dataclasses.dataclass(frozen=True)
class PerLevel(Schedule):
    """Pruner ``pruners[L - 1]`` at level ``L`` (see :func:`per_level`)."""

    pruners: tuple

    def __post_init__(self):
        if not self.pruners:
            raise ValueError("per_level: give at least one pruner")
        object.__setattr__(self, "pruners", tuple(
            as_pruner(from_config(p) if isinstance(p, dict) else p) for p in self.pruners))

    def at_level(self, level: int):
        if level > len(self.pruners):
            raise ValueError(f"per_level: level {level} has no pruner; the schedule holds "
                             f"{len(self.pruners)} levels")
        return self.pruners[level - 1]

    @property
    def levels(self) -> int:
        return len(self.pruners)

    def children(self) -> tuple:
        return self.pruners

    def with_children(self, children: tuple) -> "PerLevel":
        return PerLevel(tuple(children))

    def config(self) -> dict:
        return {"method": "per_level", "pruners": [to_config(p) for p in self.pruners]}


def per_level(pruners) -> PerLevel:
    """Level ``L`` prunes with ``pruners[L - 1]`` (pruners or config dicts).

    Example: ``per_level([magnitude(0.5)] * 2 + [magnitude(0.2)] * 8)`` prunes half of
    the survivors at levels 1-2, then 20% at levels 3-10.
    """
    return PerLevel(tuple(pruners))


def _fraction_for(target: float, levels: int) -> float:
    return 1.0 - target ** (1.0 / levels)


@register("to_density", examples=[{"target": 0.5, "levels": 2},
                                  {"target": 0.4, "levels": 3, "pruner": {"method": "random"}}])
@dataclasses.dataclass(frozen=True)
class ToDensity(Schedule):
    """A constant per-level fraction reaching ``target`` in ``levels`` (see :func:`to_density`)."""

    target: float
    levels: int
    pruner: Any = dataclasses.field(default_factory=lambda: {"method": "magnitude", "scope": "global"})

    def __post_init__(self):
        if isinstance(self.target, (bool, str)) or not (0 < float(self.target) < 1):
            raise ValueError(f"to_density: target must be a density in (0, 1), got {self.target!r}")
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 1:
            raise ValueError(f"to_density: levels must be an int >= 1, got {self.levels!r}")
        object.__setattr__(self, "pruner", _fractionless(self.pruner))
        if isinstance(self.pruner, dict):
            if "fraction" in self.pruner:
                raise ValueError("to_density: the pruner config must not set 'fraction' (the schedule does)")
            object.__setattr__(self, "pruner", tuple(sorted(self.pruner.items())))
        self.at_level(1)  # builds one: a bad pruner config fails here

    @property
    def fraction(self) -> float:
        """The per-level fraction of survivors removed: ``1 - target ** (1 / levels)``."""
        return _fraction_for(float(self.target), self.levels)

    def at_level(self, level: int):
        if level > self.levels:
            raise ValueError(f"to_density: level {level} is past the schedule's {self.levels} levels")
        if isinstance(self.pruner, Pruner):
            return dataclasses.replace(self.pruner, fraction=self.fraction)
        if callable(self.pruner):
            return as_pruner(self.pruner(self.fraction))
        return from_config({**dict(self.pruner), "fraction": self.fraction})

    def config(self) -> dict:
        if isinstance(self.pruner, Pruner):  # saved as the config it is rebuilt from
            pruner = {k: v for k, v in to_config(self.pruner).items() if k != "fraction"}
        elif callable(self.pruner):
            raise ValueError("to_config: to_density with a callable pruner cannot be saved; use a config dict")
        else:
            pruner = dict(self.pruner)
        return {"method": "to_density", "target": self.target, "levels": self.levels, "pruner": pruner}


_EXPECTED = ("a config dict without 'fraction' (e.g. {'method': 'magnitude', 'scope': 'global'}), a pruner "
             "with a fraction (e.g. magnitude(0.2, 'global'); the schedule sets the fraction) or a callable "
             "fraction -> pruner (e.g. lambda f: chain(magnitude(f), random(0.1)))")


def _fractionless(pruner):
    """``to_density``'s ``pruner`` argument checked: a config dict, a Pruner dataclass with a
    ``fraction`` field (rebuilt per level with the schedule's), a registered pruner with a
    ``fraction`` setting (as its config dict), or a one-argument ``fraction -> pruner``.

    Example: ``_fractionless(magnitude(0.2))`` is the pruner itself; ``_fractionless(
    chain(...))`` raises ``TypeError`` (nothing to set the fraction of).
    """
    if isinstance(pruner, dict):
        return pruner
    if isinstance(pruner, Configured) and "fraction" in dict(pruner.settings):
        return {k: v for k, v in pruner.config().items() if k != "fraction"}
    if isinstance(pruner, Pruner) and "fraction" in {f.name for f in dataclasses.fields(pruner)}:
        return pruner
    if not callable(pruner):
        raise TypeError(f"to_density: the pruner is a {type(pruner).__name__}; give {_EXPECTED}.")
    if isinstance(pruner, (Pruner, Configured)):
        raise TypeError(f"to_density: {pruner!r} has no fraction for the schedule to set; give {_EXPECTED}.")
    try:
        inspect.signature(pruner).bind(0.5)
    except TypeError:
        raise TypeError(f"to_density: {pruner!r} does not take a fraction alone (is it a pruner "
                        f"(params, mask, key)?); give {_EXPECTED}.") from None
    except ValueError:  # no signature to inspect (a builtin): taken as a factory
        pass
    return pruner


def to_density(target: float, levels: int, pruner: Any = None) -> ToDensity:
    """Reach ``target`` density in ``levels`` levels with a constant per-level fraction.

    Each level removes ``1 - target ** (1 / levels)`` of the survivors, so after
    ``levels`` levels the density is ``target`` up to each level's rounding (at most one
    weight per layer and level). ``pruner``: a config dict without ``fraction`` (default
    ``{"method": "magnitude", "scope": "global"}``), a pruner with a ``fraction`` (its
    fraction is replaced by the schedule's at every level; its other settings are kept),
    or a callable ``fraction -> pruner``. Anything else (a pruner without a fraction, a
    plain ``(params, mask, key)`` function) is a ``TypeError``.

    Example:
        >>> s = to_density(0.05, levels=10)
        >>> round(s.fraction, 4), s.at_level(3).scope
        (0.2589, 'global')
        >>> from jaxticket.pruning import magnitude
        >>> s = to_density(0.1, 3, magnitude(0.2, "global", rounding="ceil"))
        >>> round(s.at_level(1).fraction, 4), s.at_level(1).rounding    # fraction from the schedule
        (0.5358, 'ceil')
    """
    return ToDensity(target, levels, {"method": "magnitude", "scope": "global"} if pruner is None else pruner)
