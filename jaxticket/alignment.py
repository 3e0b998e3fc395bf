"""Permutation alignment: weight matching (Ainsworth et al. 2023, "Git Re-Basin"), and
error barriers along the aligned path.

Two networks trained from different initialisations usually sit in different basins;
permuting the hidden units of one so that its weights match the other's as closely as
possible often removes most of the barrier between them. Weight matching (the paper's
Algorithm 2) does it by coordinate descent over the permutations of the model's
:class:`~jaxticket.models.permutations.PermutationSpec`: for each permutation in turn,
with the others held fixed, the linear assignment maximising ``Σ <W_a, P W_b>`` over the
weights it touches (``scipy.optimize.linear_sum_assignment``), until no permutation
improves.

Everything works on the host (NumPy, SciPy) on single networks (no seeds axis);
:func:`permute` applies a permutation to params, BatchNorm statistics and masks alike,
so a permuted network computes the same function (the tests check it to float
tolerance) and a permuted mask still fits its weights.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxticket import models
    >>> model = models.get("lenet_32_16")
    >>> x = jnp.ones((2, 8, 8, 1))
    >>> params = model.init(jax.random.key(0), x, train=False)["params"]
    >>> spec = models.permutation_spec(model, params)
    >>> shuffled = permute(spec, random_permutation(spec, params, seed=1), params)
    >>> bool(jnp.allclose(model.apply({"params": shuffled}, x, train=False), model.apply({"params": params}, x, train=False), atol=1e-5))
    True
    >>> found = weight_matching(spec, params, shuffled)
    >>> all(bool((jax.tree.leaves(permute(spec, found, shuffled))[i] == jax.tree.leaves(params)[i]).all()) for i in range(6))
    True
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Optional

import jax
import numpy as np

from jaxticket import masks as masks_lib
from jaxticket.masks import Mask
from jaxticket.models.permutations import Axis, PermutationSpec

__all__ = ["align", "identity", "permute", "random_permutation", "weight_matching"]

PyTree = Any


def _flat(tree) -> dict:
    return dict(zip(masks_lib.leaf_paths(tree), jax.tree.leaves(tree)))


def _size(spec: PermutationSpec, name: str, params) -> int:
    a = spec[name][0]
    leaf = _flat(params)[a.path]
    return int(a.channels if a.channels else np.shape(leaf)[a.axis])


def identity(spec: PermutationSpec, params) -> dict:
    """The identity permutation of every name in ``spec``."""
    return {name: np.arange(_size(spec, name, params)) for name in spec}


def random_permutation(spec: PermutationSpec, params, seed: int = 0) -> dict:
    """A random permutation of every name in ``spec`` (for tests and null models)."""
    rng = np.random.default_rng(seed)
    return {name: rng.permutation(_size(spec, name, params)) for name in spec}


def _take(x: np.ndarray, perm: np.ndarray, a: Axis) -> np.ndarray:
    axis = a.axis % x.ndim
    if a.channels is None:
        return np.take(x, perm, axis=axis)
    shape = x.shape
    split = shape[:axis] + (shape[axis] // a.channels, a.channels) + shape[axis + 1:]
    return np.take(x.reshape(split), perm, axis=axis + 1).reshape(shape)


def _axes_by_leaf(spec: PermutationSpec, collection: str) -> dict:
    by_leaf = defaultdict(list)
    for name, axes in spec.items():
        for a in axes:
            if a.collection == collection:
                by_leaf[a.path].append((name, a))
    return by_leaf


def _permute_tree(tree, by_leaf: dict, perm: dict, skip: Optional[str] = None):
    paths = masks_lib.leaf_paths(tree)
    leaves = []
    for path, leaf in zip(paths, jax.tree.leaves(tree)):
        x = np.asarray(jax.device_get(leaf))
        for name, a in by_leaf.get(path, ()):
            if name != skip:
                x = _take(x, np.asarray(perm[name]), a)
        leaves.append(x)
    return jax.tree.unflatten(jax.tree.structure(tree), leaves)


def permute(spec: PermutationSpec, perm: dict, params, batch_stats=None, mask: Optional[Mask] = None):
    """``params`` (and ``batch_stats``, ``mask``: whichever are given) with the units of
    every permutation of ``spec`` reordered by ``perm``: the same function, another order.

    Returns ``params`` alone, or the tuple of the given parts in that order.
    """
    out = [_permute_tree(params, _axes_by_leaf(spec, "params"), perm)]
    if batch_stats is not None:
        out.append(_permute_tree(batch_stats, _axes_by_leaf(spec, "batch_stats"), perm))
    if mask is not None:
        out.append(mask.replace(keep=_permute_tree(mask.keep, _axes_by_leaf(spec, "params"), perm)))
    return out[0] if len(out) == 1 else tuple(out)


def _matrix(x: np.ndarray, a: Axis) -> np.ndarray:
    """The leaf with the permuted axis (its channel factor) first, flattened: ``[n, -1]``."""
    axis = a.axis % x.ndim
    if a.channels is not None:
        shape = x.shape
        x = x.reshape(shape[:axis] + (shape[axis] // a.channels, a.channels) + shape[axis + 1:])
        axis += 1
    return np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)


def weight_matching(spec: PermutationSpec, params_a, params_b, *, max_iter: int = 100, seed: int = 0,
                    batch_stats: bool = False, stats_a=None, stats_b=None) -> dict:
    """The permutation of ``params_b`` that best matches ``params_a`` (Ainsworth et al.
    2023, Algorithm 2): coordinate descent over the permutations of ``spec`` in a random
    order (``seed``), each a linear assignment maximising ``Σ <W_a, P W_b>`` over the
    weights it touches (BatchNorm statistics too when ``batch_stats`` and both are given),
    until a sweep improves none.

    Returns ``{name: int array}``; ``permute(spec, result, params_b)`` is the aligned copy.
    """
    from scipy.optimize import linear_sum_assignment

    flat_a = {k: np.asarray(jax.device_get(v), np.float64) for k, v in _flat(params_a).items()}
    flat_b = {k: np.asarray(jax.device_get(v), np.float64) for k, v in _flat(params_b).items()}
    if batch_stats and stats_a is not None and stats_b is not None:
        flat_a.update({("bs", k): np.asarray(v, np.float64) for k, v in _flat(stats_a).items()})
        flat_b.update({("bs", k): np.asarray(v, np.float64) for k, v in _flat(stats_b).items()})
    by_leaf: dict = defaultdict(list)
    for name, axes in spec.items():
        for a in axes:
            key = a.path if a.collection == "params" else ("bs", a.path)
            if key in flat_a:
                by_leaf[key].append((name, a))
    perm = identity(spec, params_a)
    rng = np.random.default_rng(seed)
    names = list(spec)
    for _ in range(max_iter):
        improved = False
        for name in rng.permutation(names):
            n = len(perm[name])
            cost = np.zeros((n, n))
            for key, entries in by_leaf.items():
                for p, a in entries:
                    if p != name:
                        continue
                    wb = flat_b[key]
                    for q, other in entries:  # the other permutations of this leaf, applied
                        if q != name:
                            wb = _take(wb, perm[q], other)
                    cost += _matrix(flat_a[key], a) @ _matrix(wb, a).T
            _, assignment = linear_sum_assignment(cost, maximize=True)
            old = cost[np.arange(n), perm[name]].sum()
            new = cost[np.arange(n), assignment].sum()
            if new > old + 1e-9 * max(1.0, abs(old)):
                perm[name], improved = assignment, True
        if not improved:
            break
    return perm


def align(spec: PermutationSpec, params_a, params_b, batch_stats_b=None, mask_b: Optional[Mask] = None, **kw):
    """``params_b`` (with its ``batch_stats`` and ``mask`` when given) permuted to match
    ``params_a`` by :func:`weight_matching`; returns ``(aligned parts..., perm)``."""
    perm = weight_matching(spec, params_a, params_b, **kw)
    parts = permute(spec, perm, params_b, batch_stats_b, mask_b)
    parts = parts if isinstance(parts, tuple) else (parts,)
    return (*parts, perm)
