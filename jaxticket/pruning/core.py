"""The pruner protocol, exact counting and selection, and the registry of pruning methods.

A pruner is any callable ``pruner(params, mask, key) -> mask'`` with ``mask'`` a subset
of ``mask`` that leaves non-prunable leaves untouched. The built-in ones are frozen
dataclasses deriving from :class:`Pruner` (hashable, so they are static under ``jit``
and compiled once); any other callable is accepted wherever a pruner is, and
:func:`as_pruner` wraps it so that the contract holds even if the callable breaks it.

Counting. A pruner removing a ``fraction`` of the ``n`` weights (or channels) still
surviving in its scope removes ``k = round(fraction * n)`` of them, computed exactly in
integers from the fraction as a rational (``Fraction(fraction).limit_denominator(2**15)``,
exact for every decimal fraction with up to four digits). The rounding rule is a setting
naming its reference (:data:`ROUNDINGS`).

Selecting the ``k`` smallest of ``N`` scores is an exact radix select on the scores'
float32 bit patterns (11-16 counting passes, each resolving 2-3 bits, no sort); ties go
to the lower position.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
from fractions import Fraction
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxticket import fingerprints
from jaxticket import masks as masks_lib
from jaxticket.masks import Mask

PyTree = Any

__all__ = [
    "Pruner",
    "PruningError",
    "ROUNDINGS",
    "SCOPES",
    "as_pruner",
    "describe",
    "from_config",
    "get",
    "methods",
    "register",
    "removal_count",
    "select_count",
    "select_lowest",
    "to_config",
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


class PruningError(ValueError):
    """A pruning step that would break the network (e.g. empty a layer)."""


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
    ``count(candidates [m]) -> [m]``: ``b`` bits per step, every step one ``count`` of
    ``2**b - 1`` candidates (one pass over the data)."""
    value, shift = jnp.zeros((), dtype), bits
    while shift > 0:
        step = min(b, shift)
        shift -= step
        candidates = value + (jnp.arange(1, 2**step, dtype=dtype) << shift)
        value = value + (jnp.sum(count(candidates) < target).astype(dtype) << shift)
    return value


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


# ----------------------------------------------------------------------------- base


def _is_traced(tree) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


@dataclasses.dataclass(frozen=True)
class Pruner:
    """Base class of the built-in pruners: ``pruner(params, mask, key=None) -> Mask``.

    Subclasses implement ``_prune(leaves, keeps, paths, key) -> new keeps`` over the
    prunable leaves only (or override :meth:`compute` for the whole tree). ``needs_key`` says
    whether a key is required; ``allows_empty`` whether the pruner may remove a layer's
    last weight (checked when it is called outside ``jit``, and by the IMP engine).

    Any function ``(params, mask, key) -> mask`` is a pruner too (:func:`as_pruner`); subclass
    this only for a pruner that is also plain data (``to_config``).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxticket import masks, pruning
        >>> params = {"w": jnp.arange(1.0, 9.0).reshape(2, 4)}
        >>> pruner = pruning.magnitude(0.25)              # a Pruner: remove the smallest 25%
        >>> isinstance(pruner, pruning.Pruner), pruner.needs_key
        (True, False)
        >>> pruner(params, masks.ones_like(params)).keep["w"].astype(int).tolist()
        [[0, 0, 1, 1], [1, 1, 1, 1]]
    """

    @property
    def needs_key(self) -> bool:
        return False

    @property
    def allows_empty(self) -> bool:
        return bool(getattr(self, "allow_empty", False))

    @property
    def name(self) -> str:
        """The registered method name (``"magnitude"``, ...), or the class name."""
        return _METHOD_OF.get(type(self), type(self).__name__)

    def __call__(self, params: PyTree, mask: Mask, key: Optional[jax.Array] = None) -> Mask:
        if isinstance(mask, Mask) and mask.batch_dims:
            raise ValueError(
                f"pruning.{self.name}: the mask has a leading seeds axis ({mask.batch_dims} more axis than its "
                "params' ranks), and pruning it whole would rank all seeds together; prune each seed with "
                "jax.vmap(pruner)(params, mask, keys)")
        masks_lib.validate(params, mask)
        if self.needs_key:
            check_key(key, f"pruning.{self.name}")
        new = _compiled_apply(self, params, mask, key)
        if not self.allows_empty and not _is_traced((params, mask)):
            emptied = masks_lib.emptied_leaves(mask, new)
            if emptied:
                raise PruningError(
                    f"pruning.{self.name} would remove the last weight of {emptied}, disconnecting "
                    "the network; lower the fraction, use rounding='half_even' (PyTorch keeps a "
                    "last channel), protect the layer with partition(), or pass allow_empty=True")
        return new

    def compute(self, params: PyTree, mask: Mask, key) -> Mask:
        """The pure computation, without the checks and the ``jit`` of ``__call__``: what
        combinators call on the pruners they compose (traced once per pruner and shapes)."""
        leaves = jax.tree.leaves(params)
        keeps = mask.leaves()
        paths = mask.paths()
        idx = [i for i, flag in enumerate(mask.prunable) if flag]
        new = self._prune([leaves[i] for i in idx], [keeps[i] for i in idx], [paths[i] for i in idx], key)
        out = list(keeps)
        for i, keep in zip(idx, new):
            out[i] = keep
        return mask.replace(keep=jax.tree.unflatten(jax.tree.structure(mask.keep), out))

    def _prune(self, leaves, keeps, paths, key):  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} is a Pruner subclass without a _prune method; "
                        "subclasses define _prune(leaves, keeps, paths, key) -> new keeps.")

    def config(self) -> dict:
        """Plain data for :func:`from_config` (see :func:`to_config`)."""
        if type(self) not in _METHOD_OF:
            raise ValueError(f"to_config: {type(self).__name__} is not registered; decorate it with "
                             "@jaxticket.pruning.register('name') to describe it as plain data.")
        out = {"method": self.name}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            out[f.name] = _plain(value)
        return out


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "-inf"
    if callable(value) and not isinstance(value, type):
        return to_config(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


@functools.partial(jax.jit, static_argnums=0)
def _compiled_apply(pruner: Pruner, params, mask, key):
    # Compiled even when called eagerly: the radix select's loop would otherwise be
    # re-traced on every call. Inside an outer jit/vmap this simply inlines.
    return pruner.compute(params, mask, key)


def leaf_keys(key, n: int) -> list:
    """``fold_in(key, i)`` for ``i < n``: the per-leaf keys of the random pruners."""
    return [jax.random.fold_in(key, i) for i in range(n)]


# ----------------------------------------------------------------------------- any callable


@dataclasses.dataclass(frozen=True)
class Callable_(Pruner):
    """Any callable ``(params, mask, key) -> mask`` held to the pruner contract.

    Whatever the callable returns (a :class:`~jaxticket.masks.Mask`, or a params-shaped
    tree of bools) is intersected with the incoming mask, and non-prunable leaves keep
    their incoming values, so a custom pruner can never revive a weight or touch a bias.
    """

    fn: Callable
    random: bool = True

    @property
    def needs_key(self) -> bool:
        return False  # a custom callable gets the key it is given (None when not needed)

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", type(self.fn).__name__)

    def compute(self, params, mask, key):
        try:
            new = self.fn(params, mask, key)
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError,
                jax.errors.TracerBoolConversionError) as e:
            raise TypeError(f"the pruner {self.name} turns traced arrays into Python or NumPy values "
                            f"({type(e).__name__}); pruners run under jax.jit and jax.vmap (one program per "
                            "level, vmapped over seeds): write it with jax.numpy (jnp.where, jnp.quantile, "
                            "jax.lax.top_k), not numpy, float() or if on array values") from None
        keep = new.keep if isinstance(new, Mask) else new
        try:
            masks_lib.validate(params, Mask(keep, mask.prunable))
        except (ValueError, TypeError) as e:
            raise ValueError(f"the pruner {self.name} returned something that is not a mask of "
                             f"these params: {e}") from None
        out = [jnp.logical_and(o, jnp.asarray(n, bool)) if flag else o
               for o, n, flag in zip(mask.leaves(), jax.tree.leaves(keep), mask.prunable)]
        return mask.replace(keep=jax.tree.unflatten(jax.tree.structure(mask.keep), out))

    def config(self) -> dict:
        return to_config(self.fn)


def as_pruner(pruner) -> Pruner:
    """A :class:`Pruner` for ``pruner``: itself, or any callable ``(params, mask, key) ->
    mask`` wrapped so that it can only remove surviving prunable weights.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxticket import masks
        >>> drop_negative = as_pruner(lambda params, mask, key: jax.tree.map(lambda w: w >= 0, params))
        >>> params = {"w": jnp.array([[1.0, -1.0]]), "b": jnp.array([-1.0])}
        >>> drop_negative(params, masks.ones_like(params)).keep   # the bias is not prunable
        {'b': Array([ True], dtype=bool), 'w': Array([[ True, False]], dtype=bool)}
    """
    if isinstance(pruner, Pruner):
        return pruner
    if isinstance(pruner, dict):
        return from_config(pruner)
    if callable(getattr(pruner, "at_level", None)) and not isinstance(pruner, Configured):
        raise ValueError(f"{pruner!r} is a level schedule, not a pruner: resolve a level with "
                         "pruning.for_level(schedule, level), or give it to jaxticket.imp")
    if not callable(pruner):
        raise ValueError(f"a pruner is a callable (params, mask, key) -> mask, a jaxticket pruner or "
                         f"a pruner config dict; got {pruner!r}")
    try:
        hash(pruner)
    except TypeError:
        raise ValueError(f"pruner {pruner!r} is not hashable; use a function or a frozen dataclass") from None
    return Callable_(pruner)


# ----------------------------------------------------------------------------- registry


_REGISTRY: dict[str, Callable] = {}
_METHOD_OF: dict[type, str] = {}


@dataclasses.dataclass(frozen=True, eq=False)
class Configured:
    """What a registered factory function returns: the pruner, and the settings it was
    built from (so it can be saved as plain data). Calls go to the pruner."""

    method: str
    settings: tuple
    pruner: Any

    def __call__(self, params, mask, key=None):
        return self.pruner(params, mask, key)

    def __getattr__(self, name):  # at_level, needs_key, ... of the built pruner
        if name in ("method", "settings", "pruner"):
            raise AttributeError(name)
        return getattr(self.pruner, name)

    def __eq__(self, other):
        return isinstance(other, Configured) and (self.method, self.settings) == (other.method, other.settings)

    def __hash__(self):
        return hash((self.method, self.settings))

    def config(self) -> dict:
        return {"method": self.method, **{k: _plain(v) for k, v in self.settings}}

    def __repr__(self):
        return f"{self.method}({', '.join(f'{k}={v!r}' for k, v in self.settings)})"


def _freeze(value):
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def register(name: str, *, overwrite: bool = False) -> Callable:
    """Decorator: makes a pruning method usable by name from configs, JSON and the command line.

    Decorate a factory ``(**settings) -> pruner`` (a function returning any pruner
    callable) or a :class:`Pruner` dataclass. ``from_config({"method": name, **settings})``
    then builds it, and ``to_config`` writes it back. A factory function called directly
    returns a pruner that remembers its settings. From the command line, make the module
    that registers it importable and pass ``--import MODULE``.

    Example:
        >>> @register("keep_large", overwrite=True)
        ... def keep_large(threshold=0.5):
        ...     def prune(params, mask, key=None):
        ...         return jax.tree.map(lambda w, k: k & (abs(w) > threshold), params, mask.keep)
        ...     return prune
        >>> from_config({"method": "keep_large", "threshold": 1.0})
        keep_large(threshold=1.0)
        >>> to_config(keep_large(0.25))
        {'method': 'keep_large', 'threshold': 0.25}
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"register: a method name is an identifier like 'snip', got {name!r}")

    def decorate(factory):
        if name in _REGISTRY and not overwrite and _REGISTRY[name] is not factory:
            raise ValueError(f"pruning method {name!r} is already registered; pass overwrite=True to replace it")
        if isinstance(factory, type):
            _REGISTRY[name] = factory
            _METHOD_OF[factory] = name
            return factory
        signature = inspect.signature(factory)

        @functools.wraps(factory)
        def build(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            built = factory(*bound.args, **bound.kwargs)
            if isinstance(built, (Pruner, Configured)) and not isinstance(built, Callable_):
                try:
                    built.config()
                    return built
                except ValueError:
                    pass
            settings = tuple((k, _freeze(v)) for k, v in bound.arguments.items())
            return Configured(name, settings, as_pruner(built))

        build.__signature__ = signature
        _REGISTRY[name] = build
        return build

    return decorate


def methods() -> tuple[str, ...]:
    """The registered method names, sorted."""
    return tuple(sorted(_REGISTRY))


def get(name: str, **settings):
    """The registered method ``name`` built with ``settings``.

    Example: ``get("magnitude", fraction=0.2, scope="global")``.
    """
    return from_config({"method": name, **settings})


def _settings_of(factory) -> list[str]:
    if isinstance(factory, type) and dataclasses.is_dataclass(factory):
        return [f.name for f in dataclasses.fields(factory)]
    return [p for p in inspect.signature(factory).parameters if p not in ("self",)]


def from_config(config: dict):
    """Builds a pruner (or level schedule) from plain data, the inverse of :func:`to_config`.

    ``{"method": "magnitude", "fraction": 0.2, "scope": "global"}``;
    ``{"method": "ln_structured", "fraction": 0.2, "n": "inf"}``;
    ``{"method": "partition", "rules": [["output/kernel", {...}], ["kernel$", {...}],
    ["bias", None]]}``; ``{"method": "chain", "pruners": [{...}, {...}]}``;
    ``{"method": "to_density", "target": 0.05, "levels": 10, "pruner": {...}}``. Methods:
    :func:`methods`, plus any you :func:`register`.

    Example:
        >>> from_config({"method": "magnitude", "fraction": 0.2})
        Magnitude(fraction=0.2, scope='layer', rounding='half_up', allow_empty=False, invert=False)
    """
    if isinstance(config, (Pruner, Configured)):
        return config
    if not isinstance(config, dict) or "method" not in config:
        raise ValueError(
            f"a pruner config is a dict with a 'method' (one of {methods()}) and its settings, "
            f"e.g. {{'method': 'magnitude', 'fraction': 0.2, 'scope': 'global'}}; got {config!r}."
        )
    method = config["method"]
    if method not in _REGISTRY:
        close = difflib.get_close_matches(str(method), methods(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown pruning method {method!r}{hint}; valid methods: {methods()}. "
                         "Your own: @jaxticket.pruning.register('name').")
    factory = _REGISTRY[method]
    valid = _settings_of(factory)
    settings = {k: v for k, v in config.items() if k != "method"}
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise ValueError(f"pruner {method!r}: unknown settings {unknown}; valid: {sorted(valid)}.")
    try:
        return factory(**settings)
    except TypeError as e:
        missing = [p for p, v in inspect.signature(factory).parameters.items()
                   if v.default is inspect.Parameter.empty and p not in settings and p != "self"]
        if missing:
            raise ValueError(f"pruner {method!r}: missing setting {missing[0]!r}.") from None
        raise ValueError(f"pruner {method!r}: {e}") from None


def describe(pruner) -> Any:
    """Plain data for a pruner when it can be had (:func:`to_config`), else its name with a
    hash of its code and captured values (:func:`jaxticket.fingerprints.callable_fingerprint`),
    so that two different unregistered pruners are never taken for one."""
    try:
        return to_config(pruner)
    except ValueError:
        return fingerprints.callable_fingerprint(pruner.fn if isinstance(pruner, Callable_) else pruner)


def to_config(pruner) -> dict:
    """Plain data (JSON-able) for a pruner or schedule, built-in or registered.

    Example:
        >>> from jaxticket import pruning
        >>> to_config(pruning.magnitude(0.2, "global"))
        {'method': 'magnitude', 'fraction': 0.2, 'scope': 'global'}
    """
    config = getattr(pruner, "config", None)
    if callable(config):
        return config()
    raise ValueError(f"to_config: cannot describe {pruner!r} as plain data; register its factory "
                     "with @jaxticket.pruning.register('name') and build it through that.")
