"""Hardware-shaped sparsity: N:M (keep ``n`` of every ``m`` consecutive weights) and blocks.

* :func:`n_m`: along ``axis`` every run of ``m`` consecutive weights keeps its ``n``
  largest surviving magnitudes (2:4 is the pattern of NVIDIA's sparse tensor cores; the
  default ``axis=-2`` is the input axis of Dense ``(in, out)`` and Conv ``(h, w, in, out)``
  kernels, the reduction axis those kernels group). Idempotent: applying it again
  changes nothing, so in IMP every level after the first keeps the same pattern.
* :func:`block`: the weights of each leaf's last two axes cut into ``block_shape``
  tiles; the ``round(fraction * surviving tiles)`` tiles with the smallest L1 norm of their
  surviving weights are removed whole (per leaf, or ranked across leaves with
  ``scope="global"``), with the counts and tie rules of :func:`~jaxticket.pruning.magnitude`.

Both are registered pruners (``"n_m"``, ``"block"``): usable in IMP, in configs and in a
sparse run's schedule (:mod:`jaxticket.sparse`).

Example:
    >>> import jax.numpy as jnp
    >>> from jaxticket import masks, pruning
    >>> params = {"fc": {"kernel": jnp.array([[1.0, -4.0], [3.0, 1.0], [-2.0, 5.0], [0.5, 2.0]])}}
    >>> mask = pruning.n_m(2, 4, axis=0)(params, masks.ones_like(params))
    >>> mask.keep["fc"]["kernel"].astype(int).T.tolist()   # 2 of the 4 rows, per column
    [[0, 1, 1, 0], [1, 0, 1, 0]]
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from jaxticket.pruning.core import Pruner, register
from jaxticket.pruning.counting import check_fraction, check_rounding, check_scope, score_bits, select_lowest

__all__ = ["Block", "NM", "block", "n_m"]


def _check_int(value, name: str, who: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{who}: {name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _axis_of(axis: int, shape: tuple, path: str, who: str) -> int:
    ndim = len(shape)
    if not -ndim <= axis < ndim:
        raise ValueError(f"{who}: axis {axis} does not exist for leaf '{path}' of shape {shape} "
                         f"(valid axes: {-ndim}..{ndim - 1}); restrict the pruner to the leaves that have it "
                         "with partition(), e.g. partition([('kernel', pruner), ('', None)]).")
    return axis % ndim


@register("n_m", examples=[{"n": 2, "m": 4}, {"n": 1, "m": 4, "axis": -1}, {"n": 1, "m": 3, "axis": 0}])
@dataclasses.dataclass(frozen=True)
class NM(Pruner):
    """N:M sparsity (see :func:`n_m`)."""

    n: int
    m: int
    axis: int = -2

    def __post_init__(self):
        n = _check_int(self.n, "n", "pruning.n_m", 0)
        m = _check_int(self.m, "m", "pruning.n_m", 1)
        if n > m:
            raise ValueError(f"pruning.n_m: n must be <= m (keep n of every m weights), got n={n}, m={m}.")
        if isinstance(self.axis, bool) or not isinstance(self.axis, (int, np.integer)):
            raise ValueError(f"pruning.n_m: axis must be an int, got {self.axis!r}.")
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "m", m)
        object.__setattr__(self, "axis", int(self.axis))

    @property
    def allows_empty(self) -> bool:
        return self.n == 0

    def _prune(self, leaves, keeps, paths, key):
        return [nm_keep(w, k, self.n, self.m, _axis_of(self.axis, tuple(w.shape), p, "pruning.n_m"))
                for w, k, p in zip(leaves, keeps, paths)]


def nm_keep(w, keep, n: int, m: int, axis: int):
    """``keep`` with, in every group of ``m`` consecutive entries along ``axis``, only the
    ``n`` largest surviving ``|w|`` left (all of them where fewer than ``n`` survive). A
    last, shorter group (the axis not a multiple of ``m``) keeps at most ``n`` too. Ties:
    the entry that comes first along the axis is removed first (as every pruner's ties);
    NaN counts as the largest magnitude."""
    length = w.shape[axis]
    groups = -(-length // m)
    pad = groups * m - length
    moved_w, moved_k = jnp.moveaxis(w, axis, -1), jnp.moveaxis(keep, axis, -1)
    widths = [(0, 0)] * (moved_w.ndim - 1) + [(0, pad)]
    bits = jnp.pad(score_bits(moved_w), widths).reshape(*moved_w.shape[:-1], groups, m)
    alive = jnp.pad(moved_k, widths).reshape(bits.shape)
    pos = jnp.arange(m)
    # rank = how many alive entries of the group beat this one (larger score, or equal and later)
    beats = (bits[..., None, :] > bits[..., :, None]) | (
        (bits[..., None, :] == bits[..., :, None]) & (pos[None, :] > pos[:, None]))
    rank = jnp.sum(beats & alive[..., None, :], axis=-1)
    kept = (alive & (rank < n)).reshape(*moved_w.shape[:-1], groups * m)[..., :length]
    return jnp.moveaxis(kept, -1, axis)


def n_m(n: int, m: int, axis: int = -2) -> NM:
    """N:M structured sparsity: of every ``m`` consecutive weights along ``axis``, the ``n``
    with the largest surviving magnitudes are kept (2:4, 1:4, any ``n <= m``).

    Only removes (groups with ``n`` or fewer survivors keep them all), so it composes with
    IMP and other pruners; non-prunable leaves are untouched. ``axis`` (default ``-2``):
    the input axis of Dense ``(in, out)`` and Conv ``(h, w, in, out)`` kernels. When the
    axis is not a multiple of ``m`` its last, shorter group keeps at most ``n``.

    Example:
        >>> import jax
        >>> from jaxticket import masks
        >>> params = {"fc": {"kernel": jax.random.normal(jax.random.key(0), (8, 3))}}
        >>> keep = n_m(2, 4)(params, masks.ones_like(params)).keep["fc"]["kernel"]
        >>> keep.reshape(2, 4, 3).sum(axis=1).tolist()   # every group of 4 rows keeps 2
        [[2, 2, 2], [2, 2, 2]]
    """
    return NM(n, m, axis)


@register("block", examples=[{"fraction": 0.3}, {"fraction": 0.5, "block_shape": [2, 2], "scope": "global"}])
@dataclasses.dataclass(frozen=True)
class Block(Pruner):
    """Block sparsity by block magnitude (see :func:`block`)."""

    fraction: float
    block_shape: tuple = (4, 4)
    scope: str = "layer"
    rounding: str = "half_up"
    allow_empty: bool = False

    def __post_init__(self):
        check_fraction(self.fraction, "pruning.block")
        check_scope(self.scope, "pruning.block")
        check_rounding(self.rounding, "pruning.block")
        shape = tuple(self.block_shape) if isinstance(self.block_shape, (list, tuple)) else None
        if shape is None or len(shape) != 2:
            raise ValueError(f"pruning.block: block_shape is (rows, columns) over a leaf's last two axes, "
                             f"got {self.block_shape!r}.")
        object.__setattr__(self, "block_shape", tuple(_check_int(b, "block_shape", "pruning.block", 1)
                                                      for b in shape))
        if not isinstance(self.allow_empty, bool):
            raise ValueError(f"pruning.block: allow_empty must be True or False, got {self.allow_empty!r}")

    def _prune(self, leaves, keeps, paths, key):
        for w, p in zip(leaves, paths):
            if w.ndim < 2:
                raise ValueError(f"pruning.block: leaf '{p}' of shape {tuple(w.shape)} has fewer than two "
                                 "axes; restrict the pruner to kernels with partition().")
        views = [_blocks(w, k, self.block_shape) for w, k in zip(leaves, keeps)]
        scores = [s for s, _ in views]
        alive = [a for _, a in views]
        ratio = check_fraction(self.fraction, "pruning.block")
        removed = select_lowest(scores, alive, ratio, self.scope, self.rounding)
        return [k & ~_expand(r, k.shape, self.block_shape) for k, r in zip(keeps, removed)]


def _blocks(w, keep, block_shape):
    """``(scores [lead, GA, GB], alive [lead, GA, GB])``: the L1 norm of each tile's
    surviving weights, and whether any of them survives."""
    bh, bw = block_shape
    a, b = w.shape[-2:]
    ga, gb = -(-a // bh), -(-b // bw)
    widths = [(0, 0)] * (w.ndim - 2) + [(0, ga * bh - a), (0, gb * bw - b)]
    lead = int(np.prod(w.shape[:-2], dtype=np.int64))
    aw = jnp.pad(jnp.where(keep, jnp.abs(w.astype(jnp.float32)), 0.0), widths).reshape(lead, ga, bh, gb, bw)
    ak = jnp.pad(keep, widths).reshape(lead, ga, bh, gb, bw)
    return aw.sum(axis=(2, 4)), ak.any(axis=(2, 4))


def _expand(flags, shape, block_shape):
    bh, bw = block_shape
    a, b = shape[-2:]
    full = jnp.repeat(jnp.repeat(flags, bh, axis=1), bw, axis=2)[:, :a, :b]
    return full.reshape(shape)


def block(fraction: float, block_shape=(4, 4), *, scope: str = "layer", rounding: str = "half_up",
          allow_empty: bool = False) -> Block:
    """Block sparsity: removes ``round(fraction * surviving blocks)`` whole tiles.

    Each prunable leaf's last two axes (Dense ``(in, out)``; the ``(in, out)`` slices of a
    Conv kernel, per spatial position) are cut into ``block_shape`` tiles (the last ones
    shorter where the axes are not multiples); a tile survives while any of its weights
    does and is scored by the L1 norm of its surviving weights. Per leaf by default;
    ``scope="global"`` ranks every leaf's tiles together. ``rounding`` and ties as in
    :func:`~jaxticket.pruning.magnitude`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxticket import masks
        >>> params = {"fc": {"kernel": jnp.arange(1.0, 17.0).reshape(4, 4)}}
        >>> keep = block(0.5, (2, 2))(params, masks.ones_like(params)).keep["fc"]["kernel"]
        >>> keep.astype(int).tolist()          # the two 2x2 tiles of smallest |w| are gone
        [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    """
    return Block(fraction, tuple(block_shape), scope, rounding, allow_empty)

