"""How many to remove and which: exact counts, the checks of the settings, and the radix select.

Counting. A pruner removing a ``fraction`` of the ``n`` weights (or channels) still
surviving in its scope removes ``k = round(fraction * n)`` of them, computed exactly in
integers from the fraction as a rational (``Fraction(fraction).limit_denominator(2**15)``,
exact for every decimal fraction with up to four digits). The rounding rule is a setting
naming its reference (:data:`ROUNDINGS`).

Selecting the ``k`` smallest of ``N`` scores is an exact radix select on the scores'
float32 bit patterns (11-16 counting passes, each resolving 2-3 bits, no sort); ties go
to the lower position. Every score-based pruner shares it (:func:`select_lowest`).

Example:
    >>> int(removal_count(0.2, 100)), select_lowest([np.array([3.0, 1.0, 2.0])], [np.ones(3, bool)],
    ...                                              Fraction(1, 3), "layer")[0].tolist()
    (20, [False, True, False])
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "ROUNDINGS",
    "SCOPES",
    "check_fraction",
    "check_key",
    "check_rounding",
    "check_scope",
    "count_to_remove",
    "lowest_k",
    "removal_count",
    "score_bits",
    "select_count",
    "select_lowest",
]

SCOPES = ("layer", "global")
#: Count rules: how ``fraction * survivors`` becomes a whole number of weights to remove.
ROUNDINGS = {
    "half_up": "floor(x + 1/2): jaxticket's default",
    "half_even": "round half to even, Python's round(): torch.nn.utils.prune (Paganini & Forde)",
    "ceil": "ceil(x): open_lth's sparse_global",
}
_MAX_DENOMINATOR = 2**15
_UINT32_MAX = np.uint32(0xFFFFFFFF)


# ----------------------------------------------------------------------------- checks


def check_fraction(fraction, who: str) -> Fraction:
    """The fraction as an exact rational; ``ValueError`` for anything but a number in [0, 1]."""
    if isinstance(fraction, (bool, str, bytes)) or not isinstance(fraction, (int, float, np.integer, np.floating)):
        raise ValueError(f"{who}: fraction must be a number in [0, 1], got {fraction!r}.")
    value = float(fraction)
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise ValueError(
            f"{who}: fraction must be in [0, 1] (the fraction of the surviving weights to "
            f"remove at this step, e.g. 0.2), got {fraction!r}."
        )
    return Fraction(value).limit_denominator(_MAX_DENOMINATOR)


def check_scope(scope, who: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"{who}: scope must be one of {SCOPES}, got {scope!r}.")
    return scope


def check_rounding(rounding, who: str) -> str:
    if rounding not in ROUNDINGS:
        raise ValueError(f"{who}: rounding must be one of {tuple(ROUNDINGS)} "
                         f"({'; '.join(f'{k}: {v}' for k, v in ROUNDINGS.items())}), got {rounding!r}.")
    return rounding


def check_key(key, who: str):
    if key is None:
        raise ValueError(
            f"{who} is random and needs a key: call it as pruner(params, mask, key) with "
            "key = jax.random.key(seed) (one per seed under vmap)."
        )
    return key


# ----------------------------------------------------------------------------- counting


def removal_count(fraction: float, surviving, rounding: str = "half_up") -> jax.Array:
    """``round(fraction * surviving)`` exactly, for an int (possibly traced) count.

    Exact: the fraction as a ratio of small integers (0.35 = 7/20), so an exact half is
    rounded by the rule. ``torch.nn.utils.prune`` rounds the float product instead, which
    for a few amounts falls just below the half (0.35 * 330 = 115.49999999999999: torch
    removes 115, ``"half_even"`` here 116); for 0.2 and most decimal amounts the two agree
    (checked against torch 2.13 in ``tests/test_pruning_reference.py``).

    Examples:
        >>> int(removal_count(0.2, 266200))
        53240
        >>> [int(removal_count(0.5, 5, r)) for r in ("half_up", "half_even", "ceil")]
        [3, 2, 3]
        >>> int(removal_count(0.5, 1, "half_even"))    # PyTorch keeps a last channel
        0
    """
    ratio = check_fraction(fraction, "removal_count")
    return count_to_remove(ratio, surviving, check_rounding(rounding, "removal_count"))


def count_to_remove(ratio: Fraction, surviving, rounding: str) -> jax.Array:
    """:func:`removal_count` for an already checked rational ``ratio`` (jit-friendly)."""
    num, den = np.uint32(ratio.numerator), np.uint32(ratio.denominator)
    n = jnp.asarray(surviving).astype(jnp.uint32)
    q, r = n // den, n % den
    # n * num / den = q*num + (r*num) // den + rem/den, every term < 2**32.
    whole = q * num + (r * num) // den
    rem2 = np.uint32(2) * ((r * num) % den)
    if rounding == "half_up":
        extra = rem2 >= den
    elif rounding == "half_even":
        extra = (rem2 > den) | ((rem2 == den) & (whole % np.uint32(2) == 1))
    else:  # ceil
        extra = rem2 > 0
    return (whole + extra.astype(jnp.uint32)).astype(jnp.int32)


# ----------------------------------------------------------------------------- selection


def score_bits(scores: jax.Array, signed: bool = False) -> jax.Array:
    """Order-preserving uint32 view of float scores: of their absolute values (< 2**31),
    or with ``signed`` of the scores themselves (negative below positive, the whole
    uint32 range below the all-ones sentinel of removed entries).

    Example:
        >>> np.asarray(score_bits(jnp.array([-2.0, -1.0, 0.0, 3.0]), signed=True)).argsort().tolist()
        [0, 1, 2, 3]
    """
    bits = jax.lax.bitcast_convert_type(scores.astype(jnp.float32), jnp.uint32)
    if not signed:
        return bits & np.uint32(0x7FFFFFFF)
    return jnp.where(bits >> 31 == 1, ~bits, bits | np.uint32(0x80000000))


def _counts_below(keys: jax.Array, candidates: jax.Array) -> jax.Array:
    """``[sum(keys < c) for c in candidates]`` in one pass over ``keys`` (a variadic
    reduction: XLA reads ``keys`` once for all the candidates)."""
    ops = tuple((keys < candidates[j]).astype(jnp.int32) for j in range(candidates.shape[0]))
    sums = jax.lax.reduce(ops, tuple(jnp.int32(0) for _ in ops),
                          lambda a, b: tuple(x + y for x, y in zip(a, b)), (0,))
    return jnp.stack(sums)


def _counts_below_where(values: jax.Array, where: jax.Array, candidates: jax.Array) -> jax.Array:
    """``[sum(where & (values < c)) for c in candidates]`` in one pass."""
    ops = tuple((where & (values < candidates[j])).astype(jnp.int32) for j in range(candidates.shape[0]))
    sums = jax.lax.reduce(ops, tuple(jnp.int32(0) for _ in ops),
                          lambda a, b: tuple(x + y for x, y in zip(a, b)), (0,))
    return jnp.stack(sums)


def _largest_below(count, target, bits: int, b: int, dtype):
    """The largest ``v`` in ``[0, 2**bits)`` with ``count(v) < target``, for a monotone
    ``count(candidates [m]) -> [m]``: ``b`` bits per step from the top (the last step takes
    what is left), every step one ``count`` of ``2**b - 1`` candidates (one pass over the
    data). The full-width steps are one loop, so the program holds one counting pass, not
    one per step (compilation time)."""
    full, rest = divmod(bits, b)

    def step(value, shift, width):
        candidates = value + (jnp.arange(1, 2**width, dtype=dtype) << shift)
        return value + (jnp.sum(count(candidates) < target).astype(dtype) << shift)

    def full_step(i, value):
        return step(value, (bits - (i + 1) * b).astype(dtype), b)

    value = jax.lax.fori_loop(0, full, full_step, jnp.zeros((), dtype))
    return step(value, jnp.zeros((), dtype), rest) if rest else value


def lowest_k(bits, alive, k, *, signed: bool = False):
    """Flags the ``k`` alive entries with the smallest ``bits``, ties by position.

    ``k``: the count, or a function of the number of alive entries returning it.
    ``signed``: ``bits`` come from ``score_bits(..., signed=True)`` (all 32 bits).

    ``bits`` and ``alive`` are arrays, or lists of arrays ranked together as if
    concatenated (flattened, in order) without concatenating them; the flags come back in
    the same form. Radix select: builds the k-th smallest value ``b`` bits at a time, each
    step counting, in one pass over the keys, how many lie below each of the ``2**b - 1``
    candidate prefixes (2 bits per pass up to 4M entries, 3 above: 11-16 passes instead of
    31, each a single read of the keys; measured faster than NumPy's introselect on
    LeNet-300-100, see ``benchmarks/pruning.py``).
    """
    single = not isinstance(bits, (list, tuple))
    bits, alive = ([bits], [alive]) if single else (list(bits), list(alive))
    # The keys are materialised once (the barrier), not recomputed in every counting pass;
    # the number of alive entries is counted from them by the same fast reduction (summing
    # the boolean masks separately, XLA fused that sum with the keys into a slow kernel:
    # 2.3x slower on ResNet-50).
    keys = jax.lax.optimization_barrier([jnp.where(a, x, _UINT32_MAX).ravel() for x, a in zip(bits, alive)])
    b = 3 if sum(x.size for x in keys) > 2**22 else 2

    def count_below(candidates):
        return sum(_counts_below(x, candidates) for x in keys)

    if callable(k):
        k = k(count_below(jnp.stack([_UINT32_MAX]))[0])

    # The k-th smallest alive key: the largest value with fewer than k keys below it. Keys
    # of absolute values are < 2**31 (31 bits to search); signed ones use all 32 bits but
    # stay below the all-ones sentinel of removed entries, so kth + 1 does not overflow.
    kth = _largest_below(count_below, k, 32 if signed else 31, b, jnp.uint32)
    n_less, n_upto = count_below(jnp.stack([kth, kth + 1]))
    still_needed = k - n_less

    def no_ties():  # every key equal to the k-th goes
        return [x <= kth for x in keys]

    offsets = np.cumsum([0] + [x.size for x in keys[:-1]]).tolist()  # flattened positions

    def first_equal():  # ties at the threshold: the first `still_needed` of them by position
        # The position P of the still_needed-th tied key, found like kth but over positions
        # (a cumsum over all keys is ~5x slower on CPU): the largest P with fewer than
        # still_needed tied keys before it.
        def tied_before(candidates):
            return sum(_counts_below_where(offset + jnp.arange(x.size, dtype=jnp.int32), x == kth, candidates)
                       for x, offset in zip(keys, offsets))

        n = sum(x.size for x in keys)
        position = _largest_below(tied_before, still_needed, max(1, (n - 1).bit_length()), b, jnp.int32)
        last = jnp.where(still_needed > 0, position, -1)  # ties at positions <= last go
        return [(x < kth) | ((x == kth) & (offset + jnp.arange(x.size, dtype=jnp.int32) <= last))
                for x, offset in zip(keys, offsets)]

    # Without ties at the threshold every tied key goes: one compare.
    removed = jax.lax.cond(n_upto - n_less == still_needed, no_ties, first_equal)
    flags = [r.reshape(a.shape) & a for r, a in zip(removed, alive)]
    return flags[0] if single else flags


def select_lowest(scores: list, alive: list, ratio: Fraction, scope: str,
                  rounding: str = "half_up", *, signed: bool = False, invert: bool = False) -> list:
    """Removal flags for the ``round(ratio * alive)`` lowest-scoring alive entries.

    ``scores`` and ``alive`` are lists of same-shaped arrays (one per leaf: weights, or
    channels). ``scope="layer"`` counts and ranks each array on its own; ``"global"``
    ranks all of them together. Scores are compared by absolute value, or as they are
    with ``signed``; ``invert`` removes the *highest*-scoring entries instead (the
    "invert the scores" sanity check of Frankle et al. 2021).

    Example (the building block of a scored pruner of your own):
        >>> import numpy as np
        >>> from fractions import Fraction
        >>> scores, alive = [np.array([3.0, -1.0, 2.0, 0.5])], [np.ones(4, bool)]
        >>> select_lowest(scores, alive, Fraction(1, 2), "layer")[0].tolist()     # by |score|
        [False, True, False, True]
        >>> select_lowest(scores, alive, Fraction(1, 4), "layer", signed=True)[0].tolist()
        [False, True, False, False]
    """
    count = functools.partial(count_to_remove, ratio, rounding=rounding)
    return select_count(scores, alive, count, scope, signed=signed, invert=invert)


def select_count(scores: list, alive: list, k, scope: str, *, signed: bool = False, invert: bool = False) -> list:
    """Like :func:`select_lowest` with the number to remove given: ``k`` an int (array),
    a function of the number alive, or (``scope="layer"``) a list of them, one per array."""
    if not scores:
        return []
    if invert:  # the highest first: rank the negated scores
        scores = [-(s if signed else jnp.abs(s)) for s in scores]
        signed = True
    bits = [score_bits(s, signed) for s in scores]
    if scope == "layer":
        ks = k if isinstance(k, (list, tuple)) else [k] * len(bits)
        return [lowest_k(b, a, kk, signed=signed) for b, a, kk in zip(bits, alive, ks)]
    return lowest_k(bits, list(alive), k, signed=signed)
