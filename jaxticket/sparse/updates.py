"""The mask updates of sparse training as pure functions over lists of leaves (exact counts).

Every function works on the *prunable* leaves of one network (no seeds axis: vmap it)
and counts are per leaf. Selections select what every pruner's
(:func:`jaxticket.pruning.select_count`) would: exactly ``k`` entries, ties by position
(the entry that comes first in row-major order selected first), NaN the largest
magnitude; they rank a leaf by one stable sort of its order-preserving score bits
(:func:`jaxticket.pruning.counting.score_bits`) instead of the radix select, which inside
a training loop (under ``lax.cond`` and ``vmap``) compiled several times slower.

* :func:`random_keep`: a mask keeping exactly ``counts[i]`` random entries of leaf ``i``.
* :func:`prune_to`: the lowest-scoring survivors removed until ``targets[i]`` are left.
* :func:`drop_grow`: drop the ``k`` smallest ``|w|`` survivors, then grow ``k`` of the
  entries not alive after the drop with the largest grow scores (SET: random, RigL:
  ``|dense gradient|``); every leaf keeps exactly its count.

Example:
    >>> import jax.numpy as jnp
    >>> w = [jnp.array([0.5, -3.0, 0.1, 2.0, 0.0, 0.0])]
    >>> keep = [jnp.array([True, True, True, True, False, False])]
    >>> grad = [jnp.array([0.0, 0.0, 0.0, 0.0, 1.0, -5.0])]
    >>> dropped, new = drop_grow(w, keep, grad, [2])
    >>> dropped[0].astype(int).tolist(), new[0].astype(int).tolist()
    ([0, 1, 0, 1, 0, 0], [0, 1, 0, 1, 1, 1])
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

import numpy as np

from jaxticket.pruning.counting import score_bits

__all__ = ["drop_grow", "highest", "lowest", "prune_to", "random_keep"]

_TOP = np.uint32(0xFFFFFFFF)


def _first_k(keys, alive, k):
    """Flags of the ``k`` alive entries with the smallest uint32 ``keys``, ties by position."""
    flat = jnp.where(alive, keys, _TOP).ravel()
    order = jnp.argsort(flat, stable=True)
    rank = jnp.zeros(flat.shape, jnp.int32).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))
    return (rank < jnp.asarray(k, jnp.int32)).reshape(alive.shape) & alive


def lowest(scores, alive, k, *, signed: bool = False):
    """The ``k`` alive entries with the smallest ``|score|`` (``signed``: smallest score)."""
    return _first_k(score_bits(scores, signed), alive, k)


def highest(scores, alive, k):
    """The ``k`` alive entries with the largest ``|score|`` (ties: the first)."""
    return _first_k(np.uint32(0x7FFFFFFF) - score_bits(scores), alive, k)


def random_keep(shapes: Sequence[tuple], counts: Sequence[int], key) -> list:
    """Bool arrays of ``shapes``, array ``i`` with exactly ``counts[i]`` True entries drawn
    uniformly (scores ``uniform(fold_in(key, i))``, the highest kept)."""
    return [highest(jax.random.uniform(jax.random.fold_in(key, i), s), jnp.ones(s, bool), int(c))
            for i, (s, c) in enumerate(zip(shapes, counts))]


def prune_to(scores: Sequence, keeps: Sequence, targets: Sequence, *, signed: bool = False) -> list:
    """``keeps`` with the lowest-scoring survivors of leaf ``i`` removed until at most
    ``targets[i]`` survive (none removed where fewer already do); ``targets`` ints or traced."""
    ks = [jnp.maximum(jnp.sum(k, dtype=jnp.int32) - jnp.asarray(t, jnp.int32), 0) for k, t in zip(keeps, targets)]
    return [k & ~lowest(sc, k, n, signed=signed) for sc, k, n in zip(scores, keeps, ks)]


def drop_grow(weights: Sequence, keeps: Sequence, grow_scores: Sequence, ks: Sequence) -> tuple[list, list]:
    """``(dropped, new)``: ``dropped`` is ``keeps`` less the ``ks[i]`` survivors of smallest
    ``|w|``; ``new`` is ``dropped`` plus the ``ks[i]`` entries, among those not alive in
    ``dropped`` (a just-dropped entry may come back), with the largest ``|grow score|``.

    Each leaf keeps exactly its count (``ks[i] <=`` its survivors; there are always enough
    candidates). Regrown entries should start at 0: train from
    ``with_mask(state, dropped)`` with the mask then set to ``new``
    (:func:`jaxticket.sparse.methods.regrow`)."""
    dropped = [k & ~lowest(w, k, n) for w, k, n in zip(weights, keeps, ks)]
    grown = [highest(g, ~d, n) for g, d, n in zip(grow_scores, dropped, ks)]
    return dropped, [d | g for d, g in zip(dropped, grown)]
