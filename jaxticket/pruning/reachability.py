"""Which IMP levels a pruner can reach, from the survivor counts alone (no weights, no data).

A pruner that removes ``round(fraction * n)`` of the ``n`` weights surviving in a layer
(or in all layers together) removes a number known before training; repeated level
after level, it may have to empty a layer, which the IMP engine refuses (unless
``allow_empty_layers``). :func:`check_levels_reachable` finds that level before anything
is trained, and a level schedule that stops before the deepest level.

Each pruner tells what it knows through ``pruner.survivors(known) -> Survivors | None``
(:meth:`jaxticket.pruning.Scored.survivors`: per layer, or the total of a global step;
partitions and chains combine their children's; ``None``: cannot be known without the
weights, e.g. channel pruning, or a custom callable).

Example (half of each layer per level: the 12-weight layer keeps 6, 3, 1, then none):
    >>> import numpy as np
    >>> from jaxticket import masks, pruning
    >>> mask = masks.from_tree({"fc": np.ones((30, 10), bool), "output": np.ones((4, 3), bool)})
    >>> pruning.first_emptying_level(pruning.magnitude(0.5), mask, levels=20)
    4
    >>> pruning.first_emptying_level(pruning.magnitude(0.2), mask, levels=20) is None   # 12 ... 3, 2, 2: round(0.4) = 0
    True
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

import numpy as np

from jaxticket.masks import Mask
from jaxticket.pruning.core import PruningError, describe
from jaxticket.pruning.schedules import for_level

__all__ = ["Survivors", "UnreachableLevelError", "check_levels_reachable", "first_emptying_level"]


@dataclasses.dataclass(frozen=True)
class Survivors:
    """What is known, without the weights, of a mask's surviving entries.

    Attributes:
      mask: the mask a pruner is given (its ``prunable`` flags are the pruner's scope).
      counts: per leaf of the mask, the number of surviving entries, or ``None`` (unknown).
      pools: ``(leaf indices, total)`` of leaves ranked together by a global step: their
        total is known, each leaf's count is not.
      start: per leaf, whether it had survivors at the start (a leaf empty from the start
        is never "emptied").
    """

    mask: Mask
    counts: tuple
    pools: tuple = ()
    start: tuple = ()

    @classmethod
    def of(cls, mask: Mask) -> "Survivors":
        """The counts of ``mask`` itself (one seed: no leading seeds axis)."""
        if mask.batch_dims:
            raise ValueError("Survivors.of: give one seed's mask (this one has a leading seeds axis)")
        counts = tuple(int(np.sum(np.asarray(k))) if flag else None
                       for k, flag in zip(mask.leaves(), mask.prunable))
        return cls(mask, counts, (), tuple(bool(c) for c in counts))

    def on(self, mask: Mask) -> "Survivors":
        """The same counts, for a pruner given ``mask`` (a partition's rule: its leaves)."""
        return dataclasses.replace(self, mask=mask)

    def scope(self) -> list[int]:
        """The indices of the leaves the pruner acts on (the mask's prunable ones)."""
        return [i for i, flag in enumerate(self.mask.prunable) if flag]

    def total(self, leaves) -> Optional[int]:
        """The survivors of ``leaves`` together, when known: each leaf's count known, or it
        lies in a pool wholly inside ``leaves``."""
        leaves = set(leaves)
        inside = [(members, t) for members, t in self.pools if set(members) <= leaves]
        pooled = set().union(*(set(m) for m, _ in inside)) if inside else set()
        rest = leaves - pooled
        if any(self.counts[i] is None for i in rest):
            return None
        return sum(self.counts[i] for i in rest) + sum(t for _, t in inside)

    def with_counts(self, counts: dict) -> "Survivors":
        """``counts`` ({leaf index: survivors}) known; pools touching those leaves dropped."""
        new = list(self.counts)
        for i, c in counts.items():
            new[i] = int(c)
        pools = tuple(p for p in self.pools if not set(p[0]) & set(counts))
        return dataclasses.replace(self, counts=tuple(new), pools=pools)

    def pooled(self, leaves, total: int) -> "Survivors":
        """After a global step over ``leaves``: their total is ``total``, each count unknown."""
        leaves = tuple(sorted(leaves))
        new = list(self.counts)
        for i in leaves:
            new[i] = None
        pools = tuple(p for p in self.pools if not set(p[0]) & set(leaves)) + ((leaves, int(total)),)
        return dataclasses.replace(self, counts=tuple(new), pools=pools)

    def emptied(self) -> bool:
        """Whether a leaf that had survivors must have none: its count is 0, or a pool holds
        fewer survivors than leaves that had some."""
        start = self.start or (True,) * len(self.counts)
        if any(c == 0 and s for c, s in zip(self.counts, start)):
            return True
        return any(total < sum(start[i] for i in members) for members, total in self.pools)


def first_emptying_level(pruner, mask: Mask, levels: int) -> Optional[int]:
    """The first IMP level (``1..levels``) by which the survivor counts alone force a
    prunable layer of ``mask`` to be empty, or ``None`` (no level does, or the counts
    cannot be known without the weights, or the level's pruner allows empty layers).

    ``pruner``: a pruner or a level schedule (level ``L`` prunes with
    ``for_level(pruner, L)``, applied to the survivors of level ``L - 1``). A global step
    may empty a layer earlier, depending on the weights: this is the level by which it
    must. A schedule shorter than ``levels`` raises its ``ValueError``.

    Example:
        >>> import numpy as np
        >>> from jaxticket import masks, pruning
        >>> mask = masks.from_tree({"a": np.ones((10, 10), bool), "b": np.ones((2, 2), bool)})
        >>> first_emptying_level(pruning.magnitude(0.5), mask, 5), first_emptying_level(pruning.magnitude(0.5), mask, 2)
        (3, None)
        >>> first_emptying_level(pruning.magnitude(0.5, "global"), mask, 10)   # 104, 52, 26, 13, 6, 3, 1 < 2 layers
        6
    """
    known = Survivors.of(mask)
    for level in range(1, int(levels) + 1):
        step = for_level(pruner, level)
        if step.allows_empty:
            return None
        known = step.survivors(known)
        if known is None:
            return None
        if known.emptied():
            return level
    return None


class UnreachableLevelError(PruningError):
    """``levels`` deeper than the pruner can go: ``level`` is the first level it cannot
    prune (``reason``: ``"schedule"``, the level schedule stops before it; ``"empties"``,
    it must empty a layer there), ``levels`` the deepest level asked for."""

    def __init__(self, message: str, *, levels: int, level: int, reason: str):
        super().__init__(message)
        self.levels, self.level, self.reason = levels, level, reason


def check_levels_reachable(pruner, mask: Mask, levels: int, *, allow_empty: bool = False) -> None:
    """Raises :class:`UnreachableLevelError` (a :class:`~jaxticket.pruning.PruningError`)
    naming the level and the setting ``levels`` when ``pruner`` cannot prune every level
    ``1..levels`` of ``mask``: its level schedule stops earlier, or the counts alone force
    a prunable layer empty (:func:`first_emptying_level`; ``allow_empty``, the IMP setting
    ``allow_empty_layers``, lets it). Needs neither weights nor data: call it before
    training (``mask``: ``masks.ones_like(task.abstract_params(), prunable)``).

    Example:
        >>> import numpy as np
        >>> from jaxticket import masks, pruning
        >>> mask = masks.from_tree({"a": np.ones((10, 10), bool), "b": np.ones((2, 2), bool)})
        >>> check_levels_reachable(pruning.magnitude(0.5), mask, 2)      # fine: nothing raised
        >>> check_levels_reachable(pruning.magnitude(0.5), mask, 5)
        Traceback (most recent call last):
        ...
        jaxticket.pruning.reachability.UnreachableLevelError: levels=5: the pruner {"method": "magnitude", "fraction": 0.5} leaves too few weights for every prunable layer by level 3 (it would empty a layer); choose levels=2 or fewer, prune less per level, or allow it (allow_empty_layers=True)
    """
    levels = int(levels)
    if levels < 1:
        return
    for level in range(1, levels + 1):
        try:
            for_level(pruner, level)
        except ValueError as e:
            raise UnreachableLevelError(
                f"levels={levels}: the pruner's level schedule stops before level {level} ({e}); choose "
                f"levels={level - 1} or fewer, or a longer schedule", levels=levels, level=level,
                reason="schedule") from None
    if allow_empty:
        return
    level = first_emptying_level(pruner, mask, levels)
    if level is not None:
        raise UnreachableLevelError(
            f"levels={levels}: the pruner {_shown(pruner)} leaves too few weights for every prunable layer by "
            f"level {level} (it would empty a layer); choose levels={level - 1} or fewer, prune less per level, "
            "or allow it (allow_empty_layers=True)", levels=levels, level=level, reason="empties")


def _shown(pruner) -> str:
    try:
        return json.dumps(describe(pruner))
    except (TypeError, ValueError):
        return repr(pruner)
