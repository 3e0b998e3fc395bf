"""The preset registry: a name, a builder returning a LotteryConfig, and its provenance."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from typing import Callable

from jaxticket.lottery import LotteryConfig

_PRESETS: dict[str, "Preset"] = {}


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named experiment.

    Attributes:
      name: registry name, e.g. ``"lenet_300_100_mnist"``.
      build: returns the :class:`~jaxticket.lottery.LotteryConfig` (a fresh one each call).
      doc: what it reproduces (the builder's docstring); its first line is the summary.
      source: where the numbers come from.
      expected: the expected result where known.
    """

    name: str
    build: Callable[[], LotteryConfig]
    doc: str
    source: str
    expected: str

    @property
    def summary(self) -> str:
        return self.doc.splitlines()[0] if self.doc else ""


def preset(*, source: str, expected: str = "not pinned") -> Callable:
    """Decorator registering a ``() -> LotteryConfig`` builder under its function name."""

    def register(build: Callable[[], LotteryConfig]) -> Callable[[], LotteryConfig]:
        name = build.__name__
        if name in _PRESETS:
            raise ValueError(f"preset {name!r} registered twice")
        _PRESETS[name] = Preset(name, build, inspect.getdoc(build) or "", source, expected)
        return build

    return register


def names() -> list[str]:
    """The registered preset names, sorted."""
    return sorted(_PRESETS)


def lookup(name: str) -> Preset:
    """The :class:`Preset` called ``name``; ``ValueError`` naming the closest and all valid names."""
    try:
        return _PRESETS[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown preset {name!r}{hint}; valid presets: {', '.join(names())}") from None


def get(name: str) -> LotteryConfig:
    """The resolved :class:`~jaxticket.lottery.LotteryConfig` of preset ``name``."""
    return lookup(name).build()


def describe(name: str) -> str:
    """What preset ``name`` reproduces, its source and the expected result."""
    p = lookup(name)
    return f"{p.name}: {p.doc}\n\nSource: {p.source}\nExpected: {p.expected}"
