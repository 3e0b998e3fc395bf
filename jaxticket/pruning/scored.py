"""Score-based pruners: magnitude, random, Ln-structured, random structured, your own score.

Every one of them is a :class:`Scored` pruner: a scoring rule (per weight, or per
channel) plus the shared selection of :func:`jaxticket.pruning.select_lowest`, which
removes ``round(fraction * survivors)`` of the lowest-scoring surviving weights or
channels per layer (``scope="layer"``) or across all layers in scope (``"global"``),
with the count rule ``rounding`` and ties broken by position.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxticket.pruning.core import Pruner, leaf_keys, register
from jaxticket.pruning.counting import (
    check_fraction,
    check_key,
    check_rounding,
    check_scope,
    count_to_remove,
    select_lowest,
)

__all__ = [
    "LN_ORDERS",
    "LnStructured",
    "Magnitude",
    "RandomStructured",
    "RandomUnstructured",
    "ScoreFn",
    "Scored",
    "by_score",
    "ln_structured",
    "magnitude",
    "random",
    "random_structured",
]

LN_ORDERS = (1, 2, math.inf, -math.inf)


def _normalise_axis(axis: int, shape: tuple, path: str, who: str) -> int:
    ndim = len(shape)
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"{who}: axis {axis} does not exist for leaf '{path}' of shape {shape} "
            f"(valid axes: {-ndim}..{ndim - 1}). The default axis=-1 is the output "
            "channel of Dense (in, out) and Conv (h, w, in, out) kernels; restrict the "
            "pruner to leaves that have it with partition()."
        )
    return axis % ndim


def channel_view(x: jax.Array, axis: int) -> jax.Array:
    """``[..., C, ...]`` -> ``[rest, C]`` with the channel axis ``axis`` last."""
    moved = jnp.moveaxis(x, axis, -1)
    return moved.reshape(-1, moved.shape[-1])


@dataclasses.dataclass(frozen=True)
class Scored(Pruner):
    """Removes the lowest-scoring fraction of the surviving weights (or channels).

    Subclasses define ``scores(leaves, keeps, paths, key) -> list`` (one array per
    prunable leaf: shaped like the leaf for ``unit = "weight"``, ``[C]`` over the
    ``axis`` channels for ``unit = "channel"``; for channels ``leaves`` and ``keeps``
    arrive as ``[rest, C]`` views). Only scores of surviving entries matter; they are
    compared by absolute value.

    Attributes:
      fraction: of the surviving weights/channels in scope, removed per call, in [0, 1].
      scope: ``"layer"`` (every leaf loses the fraction) or ``"global"`` (ranked together).
      rounding: the count rule (:data:`jaxticket.pruning.ROUNDINGS`).
      allow_empty: may remove a layer's last weight/channel (default: an error).
      invert: remove the *highest*-scoring ones instead (a sanity check, see
        :func:`jaxticket.pruning.inverted`).

    ``signed_scores`` (a class attribute) ranks the scores as they are instead of by
    absolute value (GraSP's scores are signed).
    """

    fraction: float
    scope: str = "layer"
    rounding: str = "half_up"
    allow_empty: bool = False
    invert: bool = dataclasses.field(default=False, kw_only=True)
    unit: ClassVar[str] = "weight"
    random_scores: ClassVar[bool] = False
    signed_scores: ClassVar[bool] = False

    def __post_init__(self):
        check_fraction(self.fraction, f"pruning.{self.name}")
        check_scope(self.scope, f"pruning.{self.name}")
        check_rounding(self.rounding, f"pruning.{self.name}")
        if not isinstance(self.allow_empty, bool):
            raise ValueError(f"pruning.{self.name}: allow_empty must be True or False, got {self.allow_empty!r}")

    @property
    def needs_key(self) -> bool:
        return self.random_scores

    def scores(self, leaves, keeps, paths, key) -> list:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} must define scores(leaves, keeps, paths, key)")

    def _axis(self) -> int:
        return getattr(self, "axis", -1)

    def removes(self, surviving: int) -> int:
        """How many of ``surviving`` weights (channels, for ``unit == "channel"``) in one
        scope (a layer, or all layers for ``scope="global"``) one call removes:
        ``round(fraction * surviving)`` by the rounding rule.

        Example:
            >>> magnitude(0.2).removes(100), magnitude(0.5, rounding="half_even").removes(1)
            (20, 0)
        """
        ratio = check_fraction(self.fraction, f"pruning.{self.name}")
        return int(count_to_remove(ratio, int(surviving), self.rounding))

    def survivors(self, known):
        """The survivor counts after one call, from those before
        (:class:`~jaxticket.pruning.reachability.Survivors`), without the weights: known for
        weight units (per layer, or the total of a global step); ``None`` (unknown) for
        channels or where the counts before are unknown."""
        if self.unit != "weight":
            return None
        scope = known.scope()
        if self.scope == "layer":
            counts = [known.counts[i] for i in scope]
            if None in counts:
                return None
            return known.with_counts({i: c - self.removes(c) for i, c in zip(scope, counts)})
        total = known.total(scope)
        return None if total is None else known.pooled(scope, total - self.removes(total))

    def _prune(self, leaves, keeps, paths, key):
        ratio = check_fraction(self.fraction, f"pruning.{self.name}")
        select = functools.partial(select_lowest, ratio=ratio, scope=self.scope, rounding=self.rounding,
                                   signed=self.signed_scores, invert=self.invert)
        if self.unit == "weight":
            scores = self.scores(leaves, keeps, paths, key)
            removed = select(scores, keeps)
            return [k & ~r for k, r in zip(keeps, removed)]
        axes = [_normalise_axis(self._axis(), tuple(w.shape), p, f"pruning.{self.name}")
                for w, p in zip(leaves, paths)]
        views = [channel_view(w, ax) for w, ax in zip(leaves, axes)]
        alive = [channel_view(k, ax) for k, ax in zip(keeps, axes)]
        channels_alive = [jnp.any(a, axis=0) for a in alive]
        scores = self.scores(views, alive, paths, key)
        removed = select(scores, channels_alive)
        out = []
        for w, keep, ax, r in zip(leaves, keeps, axes, removed):
            shape = [1] * w.ndim
            shape[ax] = w.shape[ax]
            out.append(keep & ~r.reshape(shape))
        return out


# ----------------------------------------------------------------------------- unstructured


@register("magnitude", examples=[{"fraction": 0.3}, {"fraction": 0.3, "scope": "global"}])
@dataclasses.dataclass(frozen=True)
class Magnitude(Scored):
    """L1 unstructured pruning: remove the smallest |w| (see :func:`magnitude`)."""

    def scores(self, leaves, keeps, paths, key):
        return [jnp.abs(w) for w in leaves]


@register("random", examples=[{"fraction": 0.3}, {"fraction": 0.3, "scope": "global"}])
@dataclasses.dataclass(frozen=True)
class RandomUnstructured(Scored):
    """Random unstructured pruning (see :func:`random`)."""

    random_scores: ClassVar[bool] = True

    def scores(self, leaves, keeps, paths, key):
        check_key(key, "pruning.random")
        return [jax.random.uniform(k, w.shape) for k, w in zip(leaf_keys(key, len(leaves)), leaves)]


def magnitude(fraction: float, scope: str = "layer", *, rounding: str = "half_up",
              allow_empty: bool = False) -> Magnitude:
    """L1 unstructured magnitude pruning (Frankle & Carbin; open_lth's ``sparse_global``).

    Removes ``round(fraction * surviving)`` surviving weights with the smallest ``|w|``,
    per leaf (``scope="layer"``) or ranked across all prunable leaves in scope
    (``scope="global"``). ``rounding``: ``"half_up"`` (default), ``"half_even"``
    (``torch.nn.utils.prune``), ``"ceil"`` (open_lth).

    Example:
        >>> import jax
        >>> from jaxticket import masks
        >>> params = {"fc": {"kernel": jax.random.normal(jax.random.key(0), (30, 10))}}
        >>> mask = magnitude(0.2, scope="global")(params, masks.ones_like(params))
        >>> round(float(masks.density(mask)), 6)      # 80% of survivors remain
        0.8
    """
    return Magnitude(fraction, scope, rounding, allow_empty)


def random(fraction: float, scope: str = "layer", *, rounding: str = "half_up",
           allow_empty: bool = False) -> RandomUnstructured:
    """Random unstructured pruning: removes ``round(fraction * surviving)`` random survivors.

    Needs a key. With ``scope="layer"`` every leaf loses the same fraction; with
    ``"global"`` the removed weights are drawn uniformly from all survivors in scope.

    Example:
        >>> import jax
        >>> from jaxticket import masks
        >>> params = {"fc": {"kernel": jax.numpy.ones((30, 10))}}
        >>> mask = random(0.5)(params, masks.ones_like(params), jax.random.key(0))
        >>> int(mask.keep["fc"]["kernel"].sum())
        150
    """
    return RandomUnstructured(fraction, scope, rounding, allow_empty)


# ----------------------------------------------------------------------------- structured


def _parse_n(n):
    if isinstance(n, str) and n.strip().lower() in ("inf", "+inf", "-inf"):
        return float(n)
    return n


def _check_n(n, who: str) -> float:
    n = _parse_n(n)
    ok = not isinstance(n, (bool, str)) and isinstance(n, (int, float, np.integer, np.floating)) \
        and any(float(n) == v for v in LN_ORDERS)
    if not ok:
        raise ValueError(
            f"{who}: n must be one of 1, 2, inf, -inf (the Ln norm ranking channels; "
            f"-inf is the smallest |w|), got {n!r}."
        )
    return float(n)


def channel_norm(w: jax.Array, alive: jax.Array, n: float) -> jax.Array:
    """Ln norm of the surviving weights of each channel (columns of ``[rest, C]``)."""
    a = jnp.abs(w.astype(jnp.float32))
    if n == 1:
        return jnp.sum(jnp.where(alive, a, 0.0), axis=0)
    if n == 2:  # the squared norm ranks channels identically
        return jnp.sum(jnp.where(alive, a * a, 0.0), axis=0)
    if n == math.inf:
        return jnp.max(jnp.where(alive, a, 0.0), axis=0)
    return jnp.min(jnp.where(alive, a, jnp.inf), axis=0)  # -inf: smallest surviving |w|


def _check_axis(axis, who: str) -> None:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ValueError(f"{who}: axis must be an int, got {axis!r}.")


@register("ln_structured", examples=[{"fraction": 0.3, "n": n} for n in (1, 2, "inf", "-inf")])
@dataclasses.dataclass(frozen=True)
class LnStructured(Scored):
    """Ln-structured channel pruning (see :func:`ln_structured`)."""

    n: float = 2
    axis: int = -1
    unit: ClassVar[str] = "channel"

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "n", _check_n(self.n, "pruning.ln_structured"))
        _check_axis(self.axis, "pruning.ln_structured")

    def scores(self, leaves, keeps, paths, key):
        return [channel_norm(w, alive, self.n) for w, alive in zip(leaves, keeps)]


@register("random_structured", examples=[{"fraction": 0.3}])
@dataclasses.dataclass(frozen=True)
class RandomStructured(Scored):
    """Random channel pruning (see :func:`random_structured`)."""

    axis: int = -1
    unit: ClassVar[str] = "channel"
    random_scores: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        _check_axis(self.axis, "pruning.random_structured")

    def scores(self, leaves, keeps, paths, key):
        check_key(key, "pruning.random_structured")
        return [jax.random.uniform(k, (w.shape[-1],)) for k, w in zip(leaf_keys(key, len(leaves)), leaves)]


def ln_structured(fraction: float, n: float = 2, axis: int = -1, *, scope: str = "layer",
                  rounding: str = "half_up", allow_empty: bool = False) -> LnStructured:
    """Ln-structured pruning of whole output units/channels.

    Each channel (a slice along ``axis``: the output axis ``-1`` of Dense ``(in, out)``
    and Conv ``(h, w, in, out)`` kernels) is ranked by the Ln norm of its *surviving*
    weights, ``n`` in ``{1, 2, inf, -inf}`` (``-inf`` = the smallest surviving |w|; unlike
    PyTorch's ``ln_structured``, already-pruned zeros do not count, so a partly pruned
    channel is not ranked 0). ``round(fraction * surviving channels)`` channels with the
    lowest norm are removed entirely; a channel survives while any of its weights does.
    Per layer by default; ``scope="global"`` ranks channels of all layers together.

    Example:
        >>> import jax
        >>> from jaxticket import masks
        >>> params = {"conv": {"kernel": jax.random.normal(jax.random.key(0), (3, 3, 4, 10))}}
        >>> mask = ln_structured(0.2, n=1)(params, masks.ones_like(params))
        >>> int(mask.keep["conv"]["kernel"].any(axis=(0, 1, 2)).sum())   # 8 of 10 filters
        8
    """
    return LnStructured(fraction, scope, rounding, allow_empty, n, axis)


def random_structured(fraction: float, axis: int = -1, *, scope: str = "layer",
                      rounding: str = "half_up", allow_empty: bool = False) -> RandomStructured:
    """Random channel pruning: removes ``round(fraction * surviving channels)`` at random.

    Needs a key. Example: ``random_structured(0.2)(params, mask, jax.random.key(0))``.
    """
    return RandomStructured(fraction, scope, rounding, allow_empty, axis)


# ----------------------------------------------------------------------------- your own score

ScoreFn = Callable[..., Any]


def _squared(w, key):
    """A score of one's own, for :func:`by_score`'s registered examples: ``w ** 2``."""
    return w * w


@register("by_score", examples=[{"fraction": 0.3, "score": _squared},
                                {"fraction": 0.3, "score": _squared, "scope": "global", "structured": True}])
@dataclasses.dataclass(frozen=True)
class ByScore(Scored):
    """Pruning by your own score (see :func:`by_score`)."""

    score: Any = None
    structured: bool = False
    axis: int = -1

    def __post_init__(self):
        super().__post_init__()
        if not callable(self.score):
            raise ValueError(f"pruning.by_score: score must be a callable (w, key) -> scores, got {self.score!r}")
        _check_axis(self.axis, "pruning.by_score")

    @property
    def unit(self) -> str:  # type: ignore[override]
        return "channel" if self.structured else "weight"

    def scores(self, leaves, keeps, paths, key):
        keys = leaf_keys(key, len(leaves)) if key is not None else [None] * len(leaves)
        out = []
        for w, k in zip(leaves, keys):
            s = self.score(w, k)
            if self.structured and s.shape == w.shape:  # per-weight scores: a channel scores their sum
                s = jnp.sum(jnp.abs(s), axis=0)
            out.append(s)
        return out


def by_score(score: ScoreFn, fraction: float, scope: str = "layer", *, structured: bool = False,
             axis: int = -1, rounding: str = "half_up", allow_empty: bool = False) -> ByScore:
    """Prunes the lowest-scoring surviving weights by a score of your own.

    ``score(w, key) -> scores``: for each prunable leaf ``w``, an array of ``w``'s shape
    (per-weight scores; ``key`` is ``None`` when the pruner is called without one);
    compared by absolute value. ``structured=True`` ranks whole channels along ``axis``
    (``w`` arrives as ``[rest, C]``; return ``[C]`` channel scores or per-weight scores,
    summed per channel). Selection, scope, rounding and ties are those of
    :func:`magnitude`. ``score`` must be hashable (a function).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxticket import masks
        >>> params = {"fc": {"kernel": jnp.arange(12.0).reshape(3, 4) - 6}}
        >>> keep_negative = by_score(lambda w, key: jnp.where(w < 0, 1e9, 0.0), fraction=0.5)
        >>> keep_negative(params, masks.ones_like(params)).keep["fc"]["kernel"].sum()
        Array(6, dtype=int32)
    """
    return ByScore(fraction, scope, rounding, allow_empty, score, structured, axis)
