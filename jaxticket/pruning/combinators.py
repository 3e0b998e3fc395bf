"""Combinators: pruners by leaf path (:func:`partition`) and in sequence (:func:`chain`)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Optional, Sequence, Union

import jax

from jaxticket import masks as masks_lib
from jaxticket.masks import Mask
from jaxticket.pruning.core import Pruner, as_pruner, from_config, register, to_config

__all__ = ["Chain", "Partition", "chain", "partition"]

Selector = Union[str, "re.Pattern[str]", Callable[[str, Any], bool]]


def _selector_predicate(selector: Selector) -> Callable[[str, Any], bool]:
    predicate = masks_lib.path_predicate(selector)
    if predicate is None:
        raise ValueError(
            "partition: each rule is (selector, pruner) with selector a regex over leaf paths "
            f"(e.g. 'conv.*/kernel') or a predicate (path, leaf) -> bool; got {selector!r}."
        )
    return predicate


def _sub_pruner(sub, selector):
    if sub is None:
        return None
    try:
        return as_pruner(from_config(sub) if isinstance(sub, dict) else sub)
    except ValueError as e:
        raise ValueError(f"partition: the pruner of rule {selector!r} must be a pruner (a jaxticket "
                         f"pruner, a pruner config or a callable) or None (never prune): {e}") from None


@register("partition", examples=[{"rules": [["output", {"method": "magnitude", "fraction": 0.1}],
                                             ["fc", {"method": "ln_structured", "fraction": 0.2, "n": 2}]]}])
@dataclasses.dataclass(frozen=True)
class Partition(Pruner):
    """Pruners by leaf path; first matching rule wins (see :func:`partition`)."""

    rules: tuple

    def __post_init__(self):
        rules = []
        for rule in self.rules:
            if not (isinstance(rule, (tuple, list)) and len(rule) == 2):
                raise ValueError(f"partition: each rule must be a (selector, pruner) pair, got {rule!r}.")
            selector, pruner = rule
            _selector_predicate(selector)
            rules.append((selector, _sub_pruner(pruner, selector)))
        object.__setattr__(self, "rules", tuple(rules))

    @property
    def needs_key(self) -> bool:
        return any(p is not None and p.needs_key for _, p in self.rules)

    @property
    def allows_empty(self) -> bool:
        return all(p is None or p.allows_empty for _, p in self.rules)

    def assignment(self, mask: Mask) -> list[Optional[int]]:
        """For each leaf, the index of the rule that owns it (None: untouched).

        Raises ``ValueError`` listing the parameter paths when a rule matches no
        parameter, or only parameters that an earlier rule took, or (with a pruner)
        only non-prunable ones.
        """
        predicates = [_selector_predicate(s) for s, _ in self.rules]
        paths, leaves = mask.paths(), mask.leaves()
        owners: list[Optional[int]] = [None] * len(paths)
        taken = [False] * len(paths)
        for j, (pred, (selector, pruner)) in enumerate(zip(predicates, self.rules)):
            matched = [i for i, (p, l) in enumerate(zip(paths, leaves)) if pred(p, l)]
            fresh = [i for i in matched if not taken[i]]
            what = None
            if not matched:
                what = "matches no parameter"
            elif not fresh:
                what = "matches only parameters that an earlier rule took"
            elif pruner is not None and not any(mask.prunable[i] for i in fresh):
                what = ("matches only parameters that are not prunable (make them prunable, e.g. "
                        "prunable='all')")
            if what:
                raise ValueError(f"partition: rule {j} ({selector!r}) {what}; the parameters are "
                                 f"{paths} (prunable: {[p for p, f in zip(paths, mask.prunable) if f]}).")
            for i in fresh:
                taken[i] = True
                owners[i] = j if mask.prunable[i] else None
        return owners

    def children(self) -> tuple:
        """The rules' pruners, in order, without the ``None`` (protecting) rules."""
        return tuple(p for _, p in self.rules if p is not None)

    def with_children(self, children: tuple) -> "Partition":
        new = iter(children)
        return Partition(tuple((s, None if p is None else next(new)) for s, p in self.rules))

    def survivors(self, known):
        """Each rule's pruner on the survivors of the leaves it owns (see
        :meth:`jaxticket.pruning.Scored.survivors`); ``None`` when one of them cannot tell."""
        owners = self.assignment(known.mask)
        for j, (_, pruner) in enumerate(self.rules):
            if pruner is None or j not in owners:
                continue
            sub = Mask(known.mask.keep, [o == j for o in owners], known.mask.ranks)
            after = pruner.survivors(known.on(sub))
            if after is None:
                return None
            known = after.on(known.mask)
        return known

    def compute(self, params, mask, key):
        owners = self.assignment(mask)
        keep = mask.keep
        for j, (_, pruner) in enumerate(self.rules):
            if pruner is None or j not in owners:
                continue
            sub = Mask(keep, [o == j for o in owners], mask.ranks)
            sub_key = None if key is None else jax.random.fold_in(key, j)
            keep = pruner.compute(params, sub, sub_key).keep
        return mask.replace(keep=keep)

    def config(self) -> dict:
        rules = []
        for selector, sub in self.rules:
            if isinstance(selector, re.Pattern):
                selector = selector.pattern
            if not isinstance(selector, str):
                raise ValueError("to_config: partition selectors must be regex strings to be saved.")
            rules.append([selector, None if sub is None else to_config(sub)])
        return {"method": "partition", "rules": rules}


def partition(rules: Sequence[tuple[Selector, Optional[Any]]]) -> Partition:
    """Composes pruners by leaf path: the first rule whose selector matches a leaf owns it.

    ``rules`` is a sequence of ``(selector, pruner)``; a selector is a regex searched in
    the leaf's path string or a predicate ``(path, leaf) -> bool``; ``pruner=None``
    protects the matched leaves; a pruner may be any pruner callable or config dict.
    Leaves matching no rule are untouched, as are leaves the mask marks non-prunable. A
    ``"global"`` pruner ranks across the leaves of its rule. Random sub-pruners get
    ``fold_in(key, rule_index)``. A rule that matches no parameter is an error listing
    the parameter paths (a typo in a regex never silently prunes nothing).

    Example (Frankle & Carbin's rates: hidden layers 20% per level, output 10%):
        >>> import jax
        >>> from jaxticket import masks, pruning
        >>> params = {"fc1": {"kernel": jax.random.normal(jax.random.key(0), (20, 10))},
        ...           "output": {"kernel": jax.random.normal(jax.random.key(1), (10, 10))}}
        >>> pruner = partition([("^output/", pruning.magnitude(0.1)), ("kernel$", pruning.magnitude(0.2))])
        >>> mask = pruner(params, masks.ones_like(params))
        >>> [int(mask.keep[k]["kernel"].sum()) for k in ("fc1", "output")]
        [160, 90]

    More::

        # hybrid: L1-structured conv filters + unstructured fully connected layers
        hybrid = partition([(r"conv.*/kernel", ln_structured(0.2, n=1)),
                            (r"(fc|output).*/kernel", magnitude(0.2))])
        fc_only = partition([(r"(fc|output).*/kernel", magnitude(0.2))])
    """
    return Partition(tuple(rules))


@register("chain", examples=[{"pruners": [{"method": "ln_structured", "fraction": 0.1},
                                         {"method": "magnitude", "fraction": 0.2, "scope": "global"}]}])
@dataclasses.dataclass(frozen=True)
class Chain(Pruner):
    """Pruners applied one after the other (see :func:`chain`)."""

    pruners: tuple

    def __post_init__(self):
        try:
            built = tuple(as_pruner(p) for p in self.pruners)
        except ValueError as e:
            raise ValueError(f"chain: {e}") from None
        object.__setattr__(self, "pruners", built)

    @property
    def needs_key(self) -> bool:
        return any(p.needs_key for p in self.pruners)

    @property
    def allows_empty(self) -> bool:
        return all(p.allows_empty for p in self.pruners)

    def children(self) -> tuple:
        return self.pruners

    def with_children(self, children: tuple) -> "Chain":
        return Chain(tuple(children))

    def survivors(self, known):
        """The survivor counts after every pruner in turn (``None`` once one cannot tell)."""
        for pruner in self.pruners:
            known = pruner.survivors(known)
            if known is None:
                return None
        return known

    def compute(self, params, mask, key):
        for i, pruner in enumerate(self.pruners):
            mask = pruner.compute(params, mask, None if key is None else jax.random.fold_in(key, i))
        return mask

    def config(self) -> dict:
        return {"method": "chain", "pruners": [to_config(p) for p in self.pruners]}


def chain(*pruners) -> Chain:
    """Applies pruners in sequence, each to the survivors of the previous one.

    Example: ``chain(ln_structured(0.1, n=2), magnitude(0.2))``.
    """
    return Chain(tuple(pruners))
