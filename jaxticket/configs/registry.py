"""The preset registry: a name, a builder returning a LotteryConfig, and its provenance."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

from jaxticket.lottery import LotteryConfig
from jaxticket.registry import Registry

#: The presets by name (a :class:`jaxticket.registry.Registry`; :func:`preset` adds one).
PRESETS = Registry("preset", hint="your own: @jaxticket.configs.preset(source=...) on a () -> LotteryConfig")


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


def preset(*, source: str, expected: str = "not pinned", overwrite: bool = False) -> Callable:
    """Decorator registering a ``() -> LotteryConfig`` builder under its function name
    (in :data:`PRESETS`; a name registered already is a ``ValueError`` unless ``overwrite``)."""

    def register(build: Callable[[], LotteryConfig]) -> Callable[[], LotteryConfig]:
        name = build.__name__
        PRESETS.register(name, Preset(name, build, inspect.getdoc(build) or "", source, expected),
                         overwrite=overwrite)
        return build

    return register


def names() -> list[str]:
    """The registered preset names, sorted."""
    return list(PRESETS.names())


def lookup(name: str) -> Preset:
    """The :class:`Preset` called ``name``; an unknown name is a
    :class:`~jaxticket.registry.UnknownNameError` (a ``ValueError``) naming the closest and
    all valid names."""
    return PRESETS.get(name)


def get(name: str) -> LotteryConfig:
    """The resolved :class:`~jaxticket.lottery.LotteryConfig` of preset ``name``."""
    return lookup(name).build()


def describe(name: str) -> str:
    """What preset ``name`` reproduces, its source and the expected result."""
    p = lookup(name)
    return f"{p.name}: {p.doc}\n\nSource: {p.source}\nExpected: {p.expected}"
