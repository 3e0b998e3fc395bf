"""Per-layer densities for a target overall density: ``"uniform"`` and ``"erk"``.

* ``"uniform"``: every prunable layer keeps the same fraction ``density``.
* ``"erk"``: Erdős–Rényi-Kernel (Evci et al. 2020, RigL): the density of a layer is
  proportional to ``sum(shape) / prod(shape)`` (to the power ``power``; for a Dense
  ``(in, out)`` kernel ``(in + out) / (in * out)``, Erdős–Rényi; for a Conv kernel the
  spatial dims count too), scaled so that the kept weights total ``density`` of all
  prunable weights. A layer whose density would exceed 1 is made dense and the scale
  re-solved for the others, repeatedly, as in RigL's ``get_sparsities_erdos_renyi``.

:func:`layer_densities` gives the real-valued densities; :func:`layer_counts` the
whole numbers of weights each layer keeps, by largest-remainder apportionment: every
layer keeps ``floor`` or ``ceil`` of its quota ``density_l * size_l``, and the total is
exactly ``round(density * N)`` (half up; ``N`` the prunable weights), the remainders
going to the layers with the largest fractional parts (ties: the first leaf). A layer
whose quota rounds to 0 keeps 1 weight (so no layer is disconnected): only then does the
total exceed ``round(density * N)``, by the number of such layers.

Example:
    >>> import jax
    >>> params = {"fc1": {"kernel": jax.ShapeDtypeStruct((784, 300), "float32")},
    ...           "fc2": {"kernel": jax.ShapeDtypeStruct((300, 100), "float32")},
    ...           "out": {"kernel": jax.ShapeDtypeStruct((100, 10), "float32")}}
    >>> {k: round(v, 4) for k, v in layer_densities(params, 0.1, "erk").items()}   # the output layer capped
    {'fc1/kernel': 0.0796, 'fc2/kernel': 0.2302, 'out/kernel': 1.0}
    >>> counts = layer_counts(params, 0.1, "erk")
    >>> counts, sum(counts.values()) == round(0.1 * (784 * 300 + 300 * 100 + 100 * 10))
    ({'fc1/kernel': 18714, 'fc2/kernel': 6906, 'out/kernel': 1000}, True)
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from jaxticket import masks as masks_lib
from jaxticket.masks import Mask

__all__ = ["DISTRIBUTIONS", "check_distribution", "layer_counts", "layer_densities", "prunable_shapes"]

#: the per-layer density distributions
DISTRIBUTIONS = ("uniform", "erk")


def check_distribution(distribution: str, who: str = "distribution") -> str:
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"{who}: distribution must be one of {DISTRIBUTIONS}, got {distribution!r}.")
    return distribution


def _check_density(density, who: str) -> float:
    if isinstance(density, (bool, str)) or not isinstance(density, (int, float, np.integer, np.floating)) \
            or not 0.0 < float(density) <= 1.0:
        raise ValueError(f"{who}: density must be a number in (0, 1] (the fraction of prunable weights kept), "
                         f"got {density!r}.")
    return float(density)


def prunable_shapes(tree: Any, prunable=None) -> dict:
    """``{path: shape}`` of the prunable leaves of a params tree (arrays or
    ``ShapeDtypeStruct``; prunable by ``prunable`` as in :func:`jaxticket.masks.ones_like`),
    or of a :class:`~jaxticket.masks.Mask` (its own flags; leading seed axes dropped)."""
    if isinstance(tree, Mask):
        return {p: tuple(np.shape(x))[np.ndim(x) - r:] for p, x, r, f in
                zip(tree.paths(), tree.leaves(), tree.ranks, tree.prunable) if f}
    mask = masks_lib.ones_like(tree, prunable)
    return {p: tuple(np.shape(x)) for p, x, f in zip(mask.paths(), mask.leaves(), mask.prunable) if f}


def layer_densities(tree: Any, density: float, distribution: str = "erk", *, prunable=None,
                    power: float = 1.0) -> dict:
    """The density of each prunable layer, ``{path: float}``, for the overall ``density``.

    Args:
      tree: params (arrays or ``jax.ShapeDtypeStruct``) or a :class:`~jaxticket.masks.Mask`.
      density: the fraction of all prunable weights kept, in (0, 1].
      distribution: ``"uniform"`` or ``"erk"`` (module docstring).
      prunable: which leaves are prunable (for params; a mask says itself).
      power: ERK's ``erk_power_scale`` (1: ERK; 0: uniform).

    Example:
        >>> import jax
        >>> layer_densities({"w": jax.ShapeDtypeStruct((10, 10), "float32")}, 0.3, "uniform")
        {'w': 0.3}
    """
    density = _check_density(density, "layer_densities")
    check_distribution(distribution, "layer_densities")
    shapes = prunable_shapes(tree, prunable)
    if distribution == "uniform" or density == 1.0:
        return {p: density for p in shapes}
    sizes = {p: float(np.prod(s)) for p, s in shapes.items()}
    raw = {p: (sum(s) / np.prod(s, dtype=np.float64)) ** float(power) for p, s in shapes.items()}
    dense: set = set()
    while True:  # RigL's sparse_utils.get_sparsities_erdos_renyi
        rhs = sum(-sizes[p] * (1.0 - density) if p in dense else sizes[p] * density for p in shapes)
        divisor = sum(raw[p] * sizes[p] for p in shapes if p not in dense)
        if divisor == 0:  # every layer dense
            return {p: 1.0 for p in shapes}
        eps = rhs / divisor
        sparse_raw = [raw[p] for p in shapes if p not in dense]
        largest = max(sparse_raw)
        if largest * eps > 1.0:
            dense.update(p for p in shapes if p not in dense and raw[p] == largest)
        else:
            break
    return {p: 1.0 if p in dense else float(eps * raw[p]) for p in shapes}


def layer_counts(tree: Any, density: float, distribution: str = "erk", *, prunable=None,
                 power: float = 1.0) -> dict:
    """The number of weights each prunable layer keeps, ``{path: int}`` (module docstring:
    largest-remainder apportionment, total exactly ``round(density * N)``).

    Example:
        >>> import jax
        >>> tree = {"a": jax.ShapeDtypeStruct((3, 3), "float32"), "b": jax.ShapeDtypeStruct((3, 3), "float32")}
        >>> layer_counts(tree, 0.5, "uniform")          # 4.5 each; the total 9: the first gets 5
        {'a': 5, 'b': 4}
    """
    dens = layer_densities(tree, density, distribution, prunable=prunable, power=power)
    shapes = prunable_shapes(tree, prunable)
    sizes = {p: int(np.prod(s, dtype=np.int64)) for p, s in shapes.items()}
    total = sum(sizes.values())
    frac = Fraction(float(density)).limit_denominator(2**15)
    target = math.floor(frac * total + Fraction(1, 2))
    quota = {p: min(float(sizes[p]), dens[p] * sizes[p]) for p in shapes}
    counts = {p: min(sizes[p], int(math.floor(q))) for p, q in quota.items()}
    left = target - sum(counts.values())
    order = sorted((p for p in shapes if counts[p] < sizes[p]),
                   key=lambda p: (-(quota[p] - math.floor(quota[p])), list(shapes).index(p)))
    for p in order[:max(0, left)]:
        counts[p] += 1
    return {p: max(min(1, sizes[p]), c) for p, c in counts.items()}
