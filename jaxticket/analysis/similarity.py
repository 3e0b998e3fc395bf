"""Mask similarity: Jaccard, overlap, Hamming distance, and the matrices over many masks."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxticket import masks as masks_lib
from jaxticket.masks import Mask

PyTree = Any

__all__ = [
    "Hamming", "hamming", "jaccard", "overlap", "similarity_matrix",
    # shared with analysis.predictions; not re-exported by the package
    "safe_ratio",
]


def _check_fit(a: Mask, b: Mask, fn: str) -> None:
    """Masks must have the same tree, leaf shapes and prunable flags."""
    for name, m in (("first", a), ("second", b)):
        if not isinstance(m, Mask):
            raise TypeError(
                f"{fn}: the {name} argument is a {type(m).__name__}, not a jaxticket Mask; "
                "wrap bool trees with jaxticket.masks.from_tree."
            )
    try:
        masks_lib.validate(a.keep, b)
    except ValueError as e:
        raise ValueError(f"{fn}: the two masks do not fit each other: {e}") from None
    if a.prunable != b.prunable:
        diff = [p for p, fa, fb in zip(a.paths(), a.prunable, b.prunable) if fa != fb]
        raise ValueError(
            f"{fn}: the two masks disagree on which leaves are prunable at {diff[:5]}; "
            "build both with the same masks.ones_like(params, prunable=...)."
        )


class _Counts(NamedTuple):
    inter: jax.Array  # |a & b|
    na: jax.Array  # |a|
    nb: jax.Array  # |b|
    total: int  # entries


def _leaf_counts(a: Mask, b: Mask, fn: str) -> dict[str, _Counts]:
    _check_fit(a, b, fn)
    out = {}
    for path, ka, kb, flag in zip(a.paths(), a.leaves(), b.leaves(), a.prunable):
        if flag:
            ka, kb = jnp.asarray(ka, bool), jnp.asarray(kb, bool)
            out[path] = _Counts(
                jnp.sum(ka & kb, dtype=jnp.int32),
                jnp.sum(ka, dtype=jnp.int32),
                jnp.sum(kb, dtype=jnp.int32),
                int(np.prod(np.shape(ka))),
            )
    return out


def _total_counts(per_leaf: dict[str, _Counts]) -> _Counts:
    zero = jnp.zeros((), jnp.int32)
    return _Counts(
        sum((c.inter for c in per_leaf.values()), zero),
        sum((c.na for c in per_leaf.values()), zero),
        sum((c.nb for c in per_leaf.values()), zero),
        sum(c.total for c in per_leaf.values()),
    )


def safe_ratio(num, den, empty_value):
    """``num / den`` as float32, ``empty_value`` where ``den == 0`` (no NaN, no warning).

    Elementwise over broadcastable ``num``, ``den`` (scalars or arrays); jit-able. Shared
    by the mask similarities here and the prediction fractions in
    :mod:`jaxticket.analysis.predictions`.

    Example:
        >>> safe_ratio(jnp.array([1, 3]), jnp.array([2, 0]), 1.0).tolist()
        [0.5, 1.0]
    """
    num, den = jnp.asarray(num, jnp.float32), jnp.asarray(den, jnp.float32)
    return jnp.where(den == 0, jnp.float32(empty_value), num / jnp.where(den == 0, 1.0, den))


def _jaccard(c: _Counts):
    return safe_ratio(c.inter, c.na + c.nb - c.inter, 1.0)


def _overlap(c: _Counts):
    smaller = jnp.minimum(c.na, c.nb)
    both_empty = (c.na == 0) & (c.nb == 0)
    return jnp.where(both_empty, jnp.float32(1.0), safe_ratio(c.inter, smaller, 0.0))


class Hamming(NamedTuple):
    """Entries where two masks differ: ``count`` (int) and ``fraction`` of prunable entries."""

    count: jax.Array
    fraction: jax.Array


def _hamming(c: _Counts) -> Hamming:
    count = c.na + c.nb - 2 * c.inter
    return Hamming(count, safe_ratio(count, c.total, 0.0))


def _reduce(a, b, fn_name, metric, per_layer):
    per_leaf = _leaf_counts(a, b, fn_name)
    if per_layer:
        return {path: metric(c) for path, c in per_leaf.items()}
    return metric(_total_counts(per_leaf))


def jaccard(mask_a: Mask, mask_b: Mask, *, per_layer: bool = False):
    """Jaccard index ``|a & b| / |a | b|`` of the kept entries, over prunable leaves.

    1.0 for identical masks and for two empty masks, 0.0 for disjoint ones. Symmetric.

    Args:
      mask_a, mask_b: masks of the same params (same tree, shapes and prunable flags).
      per_layer: ``False``: one float32 scalar over all prunable entries. ``True``: a dict
        ``path -> scalar`` for each prunable leaf.

    Example: ``jaccard(m, m) == 1.0``; ``jaccard(m, m, per_layer=True)["fc1/kernel"]``.
    """
    return _reduce(mask_a, mask_b, "jaccard", _jaccard, per_layer)


def overlap(mask_a: Mask, mask_b: Mask, *, per_layer: bool = False):
    """Overlap coefficient ``|a & b| / min(|a|, |b|)`` (1.0 when one contains the other).

    Conventions: two empty masks give 1.0; exactly one empty mask gives 0.0 (as Jaccard).
    ``per_layer`` as in :func:`jaccard`.

    Example: ``overlap(m, pruned_further(m)) == 1.0`` (nested masks).
    """
    return _reduce(mask_a, mask_b, "overlap", _overlap, per_layer)


def hamming(mask_a: Mask, mask_b: Mask, *, per_layer: bool = False):
    """Hamming distance: prunable entries kept by exactly one of the masks.

    Returns a :class:`Hamming` ``(count, fraction)`` (fraction of prunable entries), or with
    ``per_layer=True`` a dict ``path -> Hamming``.

    Example: ``hamming(m, m).count == 0``.
    """
    return _reduce(mask_a, mask_b, "hamming", _hamming, per_layer)


_METRICS = ("jaccard", "overlap", "hamming", "hamming_count")


@jax.jit
def _gram(leaves):
    """Sum over leaves of ``X @ X.T`` (int32 counts) for leaves ``[n, ...]``; and sizes."""
    n = leaves[0].shape[0]
    inter = jnp.zeros((n, n), jnp.int32)
    for k in leaves:
        x = k.reshape(n, -1).astype(jnp.int32)
        inter = inter + jax.lax.dot_general(x, x, (((1,), (1,)), ((), ())), preferred_element_type=jnp.int32)
    return inter


def similarity_matrix(masks_list: Sequence[Mask] | Mask, metric: str = "jaccard") -> jax.Array:
    """``[n, n]`` pairwise similarity of n masks.

    Args:
      masks_list: a sequence of masks that fit each other, or one Mask whose leaves carry a
        leading ``[n]`` axis (e.g. vmapped seeds).
      metric: ``"jaccard"``, ``"overlap"``, ``"hamming"`` (fraction of prunable entries that
        differ) or ``"hamming_count"`` (int32 counts).

    Returns:
      ``[n, n]`` symmetric matrix (float32; int32 for ``"hamming_count"``) with the same
      values as the pairwise functions; intersections are counted exactly in int32 with one
      matrix product per leaf.

    Example: ``similarity_matrix([m1, m2, m3])`` -> ones on the diagonal.
    """
    if metric not in _METRICS:
        raise ValueError(f"similarity_matrix: unknown metric {metric!r}; choose one of {list(_METRICS)}.")
    if isinstance(masks_list, Mask):
        stacked = [jnp.asarray(k, bool) for k, f in zip(masks_list.leaves(), masks_list.prunable) if f]
        if stacked and any(k.ndim < 1 or k.shape[0] != stacked[0].shape[0] for k in stacked):
            raise ValueError("similarity_matrix: a stacked Mask needs the same leading [n] axis on every leaf.")
        n = stacked[0].shape[0] if stacked else 0
    else:
        masks_list = list(masks_list)
        if not masks_list:
            raise ValueError("similarity_matrix: no masks given.")
        for i, m in enumerate(masks_list):
            try:
                _check_fit(masks_list[0], m, "similarity_matrix")
            except (TypeError, ValueError) as e:
                raise type(e)(f"mask {i}: {e}") from None
        first = masks_list[0]
        n = len(masks_list)
        stacked = [
            jnp.stack([jnp.asarray(m.leaves()[i], bool) for m in masks_list])
            for i, f in enumerate(first.prunable)
            if f
        ]
    if not stacked:
        # No prunable entries: every pair is identical (empty) masks.
        ones = jnp.ones((n, n), jnp.float32)
        return {"hamming": 0 * ones, "hamming_count": jnp.zeros((n, n), jnp.int32)}.get(metric, ones)
    total = sum(int(np.prod(k.shape[1:])) for k in stacked)
    inter = _gram(stacked)
    sizes = jnp.diagonal(inter)
    c = _Counts(inter, sizes[:, None], sizes[None, :], total)
    if metric == "jaccard":
        return _jaccard(c)
    if metric == "overlap":
        return _overlap(c)
    h = _hamming(c)
    return h.count if metric == "hamming_count" else h.fraction


# ----------------------------------------------------------------------------- predictions
