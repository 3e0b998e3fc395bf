"""Pruners made of pruners: the composite protocol, and functions over a composite's leaves.

A composite pruner says what it is made of with two methods:

* ``children() -> tuple``: the pruners it composes, in order (a leaf says ``None``:
  :class:`~jaxticket.pruning.Pruner`'s default, and any object without the method);
* ``with_children(children) -> composite``: the same composite over other children.

:func:`~jaxticket.pruning.partition` (its rules' pruners), :func:`~jaxticket.pruning.chain`,
:func:`~jaxticket.pruning.per_level`, a registered method's record of its settings
(:class:`~jaxticket.pruning.Configured`) and the wrapper :func:`~jaxticket.pruning.as_pruner`
puts around one implement it. A level schedule that is not a composite (``to_density``,
a :class:`~jaxticket.pruning.Schedule` of your own) is mapped level by level.

:func:`map_leaves` rebuilds a pruner with a function applied to every leaf; binding
pruning at initialization to a task (:func:`jaxticket.pruning.bind`) and inverting scores
(:func:`jaxticket.pruning.inverted`) are two such maps, so a new combinator that implements
the two methods works with both.

Example:
    >>> from jaxticket import pruning
    >>> p = pruning.chain(pruning.magnitude(0.2), pruning.partition([("fc", pruning.random(0.1)), ("out", None)]))
    >>> [type(leaf).__name__ for leaf in leaves(p)]
    ['Magnitude', 'RandomUnstructured']
    >>> halved = map_leaves(lambda leaf: dataclasses.replace(leaf, fraction=leaf.fraction / 2), p)
    >>> [leaf.fraction for leaf in leaves(halved)]
    [0.1, 0.05]
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

from jaxticket.pruning.core import Configured
from jaxticket.pruning.schedules import Schedule

__all__ = ["MappedSchedule", "children", "leaves", "map_leaves"]


def children(pruner) -> Optional[tuple]:
    """``pruner.children()``: the pruners a composite is made of, or ``None`` for a leaf."""
    method = getattr(pruner, "children", None)
    return method() if callable(method) else None


def _is_schedule(pruner) -> bool:
    return callable(getattr(pruner, "at_level", None))


def map_leaves(fn: Callable[[Any], Any], pruner, *, keeps_config: bool = True):
    """``pruner`` rebuilt with ``fn(leaf)`` in place of each of its leaf pruners.

    Composites are rebuilt through ``with_children``; a level schedule that is not a
    composite becomes a :class:`MappedSchedule` (``fn`` applied to each level's pruner).
    ``keeps_config``: ``fn`` changes nothing a pruner's saved settings describe (binding
    to a task: True), so a registered method's :class:`~jaxticket.pruning.Configured`
    keeps its settings; ``False`` (``fn`` changes what the leaves compute, e.g. inverts
    their scores): the record is dropped for the transformed pruner, whose description
    then comes from the pruner itself, and a mapped schedule has no plain-data form.

    Example:
        >>> from jaxticket import pruning
        >>> p = pruning.partition([("output", pruning.magnitude(0.1)), ("kernel", pruning.magnitude(0.2))])
        >>> [r[1].fraction for r in map_leaves(lambda m: pruning.magnitude(0.5), p).rules]
        [0.5, 0.5]
    """
    kids = children(pruner)
    if kids is not None:
        new = tuple(map_leaves(fn, kid, keeps_config=keeps_config) for kid in kids)
        if not keeps_config and isinstance(pruner, Configured):
            return new[0]  # its settings would describe the pruner before fn
        return pruner.with_children(new)
    if _is_schedule(pruner):
        return MappedSchedule(pruner, fn, keeps_config)
    return fn(pruner)


def leaves(pruner) -> list:
    """The leaf pruners of ``pruner`` in order (itself for a leaf; a schedule that is not a
    composite counts as one leaf)."""
    kids = children(pruner)
    if kids is None:
        return [pruner]
    return [leaf for kid in kids for leaf in leaves(kid)]


@dataclasses.dataclass(frozen=True, eq=False)
class MappedSchedule(Schedule):
    """A level schedule whose every level's pruner comes out of :func:`map_leaves` with
    ``fn`` (what :func:`map_leaves` makes of a schedule that is not a composite).

    ``config()`` is the schedule's own when ``keeps_config`` (e.g. a bound ``to_density``
    of SNIP saves as the unbound one), else there is none (``to_config`` raises)."""

    schedule: Any
    fn: Callable
    keeps_config: bool = True

    def at_level(self, level: int):
        return map_leaves(self.fn, self.schedule.at_level(level), keeps_config=self.keeps_config)

    @property
    def levels(self) -> int:
        """The schedule's number of levels (an ``AttributeError`` where it has none)."""
        return self.schedule.levels

    def config(self) -> dict:
        if not self.keeps_config:
            raise ValueError(f"to_config: the level schedule {self.schedule!r} with its pruners transformed "
                             f"by {getattr(self.fn, '__name__', self.fn)!r} has no plain-data form")
        return self.schedule.config()
