"""Distances between networks: L2 over every weight or a mask's, normalised, pairwise."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxticket import masks as masks_lib
from jaxticket.stability.paths import check_same_tree, is_float, leading_dim

PyTree = Any

__all__ = ["l2_distance", "normalized_l2_distance", "pairwise_l2"]


# ----------------------------------------------------------------------------- distances


def _selected_leaves(params: PyTree, mask: masks_lib.Mask | None, fn: str):
    """(leaf, keep-or-None) pairs: all float leaves, or the prunable leaves of ``mask``."""
    leaves = jax.tree.leaves(params)
    if mask is None:
        return [(x, None) for x in leaves if is_float(x)]
    masks_lib.validate(params, mask)
    return [(x, k) for x, k, flag in zip(leaves, mask.leaves(), mask.prunable) if flag]


def _sq_sum(x, keep):
    x = jnp.asarray(x)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    sq = x * x
    if keep is not None:
        sq = jnp.where(keep, sq, 0)
    return jnp.sum(sq)


def l2_distance(
    params_a: PyTree,
    params_b: PyTree,
    mask: masks_lib.Mask | None = None,
    *,
    normalize: bool = False,
) -> jax.Array:
    """Euclidean distance ``||a - b||_2`` between two weight vectors.

    Without ``mask``: over all float leaves. With ``mask``: over the prunable leaves and
    only their kept entries (the surviving weights; pruned entries are zero in masked
    params anyway). ``normalize=True`` divides by ``||a||_2`` over the same entries
    (:func:`normalized_l2_distance`). Accumulates in at least float32. Jit-able.

    Example: ``l2_distance({"w": jnp.zeros(2)}, {"w": jnp.array([3., 4.])}) == 5``.
    """
    check_same_tree(params_a, params_b, "l2_distance")
    sel_a = _selected_leaves(params_a, mask, "l2_distance")
    sel_b = _selected_leaves(params_b, mask, "l2_distance")
    return _l2_of_selected(sel_a, sel_b, normalize)


@functools.partial(jax.jit, static_argnums=2)
def _l2_of_selected(sel_a, sel_b, normalize: bool) -> jax.Array:
    """:func:`l2_distance` of the selected ``(leaf, keep-or-None)`` pairs, one compiled
    program per structure (not one per leaf operation)."""
    sq = jnp.zeros((), jnp.float32)
    norm_sq = jnp.zeros((), jnp.float32)
    for (xa, keep), (xb, _) in zip(sel_a, sel_b):
        d = jnp.asarray(xa).astype(jnp.promote_types(jnp.result_type(xa), jnp.float32)) - jnp.asarray(xb).astype(
            jnp.promote_types(jnp.result_type(xb), jnp.float32)
        )
        sq = sq + _sq_sum(d, keep)
        if normalize:
            norm_sq = norm_sq + _sq_sum(xa, keep)
    dist = jnp.sqrt(sq)
    return dist / jnp.sqrt(norm_sq) if normalize else dist


def normalized_l2_distance(params_a: PyTree, params_b: PyTree, mask: masks_lib.Mask | None = None) -> jax.Array:
    """``||a - b|| / ||a||`` (see :func:`l2_distance`); a float32 scalar.

    Example:
        >>> a, b = {"w": jnp.array([3.0, 4.0])}, {"w": jnp.array([3.0, 0.0])}
        >>> round(float(normalized_l2_distance(a, b)), 6)     # ||(0, 4)|| / ||(3, 4)||
        0.8
    """
    return l2_distance(params_a, params_b, mask, normalize=True)


def _pairwise_sq(leaves_and_keeps, c):
    def row(i):
        total = jnp.zeros((c,), jnp.float32)
        for x, keep in leaves_and_keeps:
            x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
            d = x - x[i][None]
            sq = d * d
            if keep is not None:
                k = keep if keep.ndim == x.ndim - 1 else keep[i]
                sq = jnp.where(k[None], sq, 0)
            total = total + jnp.sum(sq.reshape(c, -1), axis=1)
        return total

    return jax.lax.map(row, jnp.arange(c))


def pairwise_l2(params_stack: PyTree, mask: masks_lib.Mask | None = None) -> jax.Array:
    """``[C, C]`` matrix of :func:`l2_distance` between copies stacked on a leading axis.

    Args:
      params_stack: pytree with leaves ``[C, ...]``.
      mask: optional; unbatched (shared by all copies) or with the same leading ``[C]``
        axis (row ``i`` then uses copy ``i``'s mask, so the matrix may be asymmetric when
        the masks differ).

    Returns:
      ``[C, C]`` float32, exact zeros on the diagonal, symmetric for a shared mask.
      Computed row by row (``jax.lax.map``) from the differences themselves, not from a
      Gram matrix, so nearby copies do not lose precision. Jit-able.

    Example (three copies of a two-weight network):
        >>> stack = {"w": jnp.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])}
        >>> np.round(np.asarray(pairwise_l2(stack), np.float64), 3).tolist()
        [[0.0, 5.0, 1.0], [5.0, 0.0, 4.243], [1.0, 4.243, 0.0]]
    """
    c = leading_dim(params_stack, "pairwise_l2")
    leaves = [jnp.asarray(x) for x in jax.tree.leaves(params_stack)]
    if mask is None:
        sel = [(x, None) for x in leaves if is_float(x)]
    else:
        first = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x)[1:], jnp.result_type(x)), params_stack)
        batched = mask.leaves() and np.ndim(mask.leaves()[0]) == np.ndim(jax.tree.leaves(first)[0]) + 1
        masks_lib.validate(first, mask, batch_dims=1 if batched else 0)
        sel = [(x, jnp.asarray(k)) for x, k, flag in zip(leaves, mask.leaves(), mask.prunable) if flag]
    return _pairwise_l2_of_selected(sel, c)


@functools.partial(jax.jit, static_argnums=1)
def _pairwise_l2_of_selected(sel, c: int) -> jax.Array:
    return jnp.sqrt(_pairwise_sq(sel, c))
