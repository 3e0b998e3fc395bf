"""Pruners: small pure functions ``pruner(params, mask, key=None) -> new_mask``.

A pruner is built once from its settings (like an optax transformation) and is then a
pure function of ``(params, mask[, key])``. Every pruner

* only removes: ``new_mask`` is a subset of ``mask``, pruned weights are never revived;
* leaves non-prunable leaves (``mask.prunable`` False) untouched;
* removes ``round(fraction * surviving)`` of the weights (or channels) *still surviving*
  in its scope, so applying ``magnitude(0.2)`` L times leaves ``0.8 ** L`` of them.
  Rounding is half up (``floor(x + 1/2)``), computed exactly in integers from the
  fraction as a rational number (``Fraction(fraction).limit_denominator(2**15)``, exact
  for every decimal fraction with up to four digits);
* works under ``jax.jit`` and ``jax.vmap`` (params, masks and keys with a leading seeds
  axis) and gives the same result as eagerly.

Ties are broken deterministically by position: among equal scores the entry that comes
first in the flattened order (leaves in ``jax.tree.leaves`` order, row-major inside a
leaf; channels by index) is removed first. NaN weights count as the largest magnitude.

Selecting the k smallest of N scores is an exact radix select on the scores' float32 bit
patterns (32 counting passes, no sort), so the global top-k on a ResNet-50-sized tree
costs a few reductions rather than a 25M-element sort, and k may be a traced value.

Example (Frankle & Carbin's LeNet-300-100 rates, 20% per round for hidden layers and
10% for the output layer)::

    from jaxticket import masks, pruning

    pruner = pruning.partition([
        ("output/kernel", pruning.magnitude(0.1)),
        (r"kernel$", pruning.magnitude(0.2)),
    ])
    mask = masks.ones_like(params)
    for level in range(3):
        mask = pruner(trained_params, mask)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from fractions import Fraction
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxticket import masks as masks_lib
from jaxticket.masks import Mask

PyTree = Any
Selector = Union[str, "re.Pattern[str]", Callable[[str, Any], bool]]

__all__ = [
    "Pruner",
    "chain",
    "from_config",
    "ln_structured",
    "magnitude",
    "partition",
    "random",
    "random_like",
    "random_structured",
    "removal_count",
    "to_config",
]

SCOPES = ("layer", "global")
_PUBLIC_NAMES = {
    "Magnitude": "magnitude",
    "RandomUnstructured": "random",
    "LnStructured": "ln_structured",
    "RandomStructured": "random_structured",
}
LN_ORDERS = (1, 2, math.inf, -math.inf)
_MAX_DENOMINATOR = 2**15
_UINT32_MAX = np.uint32(0xFFFFFFFF)


# ----------------------------------------------------------------------------- checks


def _check_fraction(fraction, who: str) -> Fraction:
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: fraction must be a number in [0, 1], got {fraction!r}.") from None
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise ValueError(
            f"{who}: fraction must be in [0, 1] (the fraction of the surviving weights to "
            f"remove at this step, e.g. 0.2), got {fraction!r}."
        )
    return Fraction(value).limit_denominator(_MAX_DENOMINATOR)


def _check_scope(scope, who: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"{who}: scope must be one of {SCOPES}, got {scope!r}.")
    return scope


def _check_n(n, who: str):
    try:
        ok = any(float(n) == v for v in LN_ORDERS)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"{who}: n must be one of 1, 2, inf, -inf (the Ln norm ranking channels; "
            f"-inf is the smallest |w|), got {n!r}."
        )
    return float(n)


def _check_key(key, who: str):
    if key is None:
        raise ValueError(
            f"{who} is random and needs a key: call it as pruner(params, mask, key) with "
            "key = jax.random.key(seed) (one per seed under vmap)."
        )
    return key


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


# ----------------------------------------------------------------------------- selection


def removal_count(fraction: float, surviving) -> jax.Array:
    """``round_half_up(fraction * surviving)`` exactly, for an int (possibly traced) count.

    Example: ``removal_count(0.2, 266200) == 53240``.
    """
    ratio = _check_fraction(fraction, "removal_count")
    return _removal_count(ratio, surviving)


def _removal_count(ratio: Fraction, surviving) -> jax.Array:
    num, den = np.uint32(ratio.numerator), np.uint32(ratio.denominator)
    n = jnp.asarray(surviving).astype(jnp.uint32)
    q, r = n // den, n % den
    # floor(n*num/den + 1/2) = q*num + floor((2*r*num + den) / (2*den)), all < 2**32.
    k = q * num + (np.uint32(2) * r * num + den) // (np.uint32(2) * den)
    return k.astype(jnp.int32)


def _score_bits(scores: jax.Array) -> jax.Array:
    """Order-preserving uint32 view of non-negative float scores."""
    return jax.lax.bitcast_convert_type(jnp.abs(scores.astype(jnp.float32)), jnp.uint32)


def _lowest_k(bits: jax.Array, alive: jax.Array, k: jax.Array) -> jax.Array:
    """Flags the ``k`` alive entries with the smallest ``bits`` (1-D), ties by position.

    Radix select: builds the k-th smallest value bit by bit with 32 counting passes.
    """
    keys = jnp.where(alive, bits, _UINT32_MAX)

    def refine(i, prefix):
        candidate = prefix | jnp.left_shift(jnp.uint32(1), jnp.uint32(31) - i.astype(jnp.uint32))
        below = jnp.sum(keys < candidate, dtype=jnp.int32)
        return jnp.where(below < k, candidate, prefix)

    # Alive keys are < 2**31 (non-negative floats), so the search starts at bit 30.
    # Unrolled for mid-sized inputs (LeNet-scale), where the loop's per-iteration overhead
    # dominates on CPU; tiny ones are cheap either way and compile faster rolled.
    unroll = 31 if 2**14 <= keys.size <= 2**20 else 1
    kth = jax.lax.fori_loop(1, 32, refine, jnp.uint32(0), unroll=unroll)  # k-th smallest alive key
    less = keys < kth
    still_needed = k - jnp.sum(less, dtype=jnp.int32)
    equal = keys == kth

    def first_equal():  # ties at the threshold: the first `still_needed` by position
        return equal & (jnp.cumsum(equal, dtype=jnp.int32) <= still_needed)

    # Without ties at the threshold every equal key goes; skip the (slow on CPU) cumsum.
    at_threshold = jax.lax.cond(
        jnp.sum(equal, dtype=jnp.int32) == still_needed, lambda: equal, first_equal
    )
    return alive & (less | at_threshold)


def _remove_lowest(
    scores: list[jax.Array], alive: list[jax.Array], ratio: Fraction, scope: str
) -> list[jax.Array]:
    """Per-leaf removal flags for the lowest ``round(ratio * surviving)`` scores."""
    if not scores:
        return []
    if scope == "layer":
        out = []
        for s, a in zip(scores, alive):
            k = _removal_count(ratio, jnp.sum(a, dtype=jnp.int32))
            out.append(_lowest_k(_score_bits(s).ravel(), a.ravel(), k).reshape(a.shape))
        return out
    flat_bits = jnp.concatenate([_score_bits(s).ravel() for s in scores])
    flat_alive = jnp.concatenate([a.ravel() for a in alive])
    k = _removal_count(ratio, jnp.sum(flat_alive, dtype=jnp.int32))
    removed = _lowest_k(flat_bits, flat_alive, k)
    sizes = np.cumsum([a.size for a in alive])[:-1]
    return [r.reshape(a.shape) for r, a in zip(jnp.split(removed, sizes), alive)]


# ----------------------------------------------------------------------------- base


@dataclasses.dataclass(frozen=True)
class Pruner:
    """Base class: ``pruner(params, mask, key=None) -> Mask`` (a subset of ``mask``).

    Subclasses implement ``_prune(leaves, keeps, paths, key) -> new keeps`` over the
    prunable leaves only. ``needs_key`` says whether a key is required.
    """

    @property
    def needs_key(self) -> bool:
        return False

    def __call__(self, params: PyTree, mask: Mask, key: Optional[jax.Array] = None) -> Mask:
        masks_lib.validate(params, mask)
        if self.needs_key:
            _check_key(key, self._public_name)
        return _compiled_apply(self, params, mask, key)

    @property
    def _public_name(self) -> str:
        return "pruning." + _PUBLIC_NAMES.get(type(self).__name__, type(self).__name__)

    def _apply(self, params: PyTree, mask: Mask, key) -> Mask:
        """The pure computation (traced once per pruner, tree structure and shapes)."""
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


@functools.partial(jax.jit, static_argnums=0)
def _compiled_apply(pruner: Pruner, params, mask, key):
    # Compiled even when called eagerly: the radix select's loop would otherwise be
    # re-traced on every call. Inside an outer jit/vmap this simply inlines.
    return pruner._apply(params, mask, key)


def _leaf_keys(key, n: int) -> list:
    return [jax.random.fold_in(key, i) for i in range(n)]


# ----------------------------------------------------------------------------- unstructured


@dataclasses.dataclass(frozen=True)
class Magnitude(Pruner):
    """L1 unstructured pruning: remove the smallest |w| (see :func:`magnitude`)."""

    fraction: float
    scope: str = "layer"

    def __post_init__(self):
        _check_fraction(self.fraction, "magnitude")
        _check_scope(self.scope, "magnitude")

    def _prune(self, leaves, keeps, paths, key):
        ratio = _check_fraction(self.fraction, "magnitude")
        removed = _remove_lowest([jnp.abs(w) for w in leaves], keeps, ratio, self.scope)
        return [k & ~r for k, r in zip(keeps, removed)]


@dataclasses.dataclass(frozen=True)
class RandomUnstructured(Pruner):
    """Random unstructured pruning (see :func:`random`)."""

    fraction: float
    scope: str = "layer"

    def __post_init__(self):
        _check_fraction(self.fraction, "random")
        _check_scope(self.scope, "random")

    @property
    def needs_key(self) -> bool:
        return True

    def _prune(self, leaves, keeps, paths, key):
        ratio = _check_fraction(self.fraction, "random")
        scores = [jax.random.uniform(k, w.shape) for k, w in zip(_leaf_keys(key, len(leaves)), leaves)]
        removed = _remove_lowest(scores, keeps, ratio, self.scope)
        return [k & ~r for k, r in zip(keeps, removed)]


def magnitude(fraction: float, scope: str = "layer") -> Magnitude:
    """L1 unstructured magnitude pruning (Frankle & Carbin; open_lth's ``sparse_global``).

    Removes ``round(fraction * surviving)`` surviving weights with the smallest ``|w|``,
    per leaf (``scope="layer"``) or ranked across all prunable leaves in scope
    (``scope="global"``).

    Example::

        mask = magnitude(0.2, scope="global")(params, mask)   # 80% of survivors remain
    """
    return Magnitude(fraction, scope)


def random(fraction: float, scope: str = "layer") -> RandomUnstructured:
    """Random unstructured pruning: removes ``round(fraction * surviving)`` random survivors.

    Needs a key: ``random(0.2)(params, mask, jax.random.key(0))``. With ``scope="layer"``
    every leaf loses the same fraction; with ``"global"`` the removed weights are drawn
    uniformly from all survivors in scope.
    """
    return RandomUnstructured(fraction, scope)


# ----------------------------------------------------------------------------- structured


def _channel_view(x: jax.Array, axis: int) -> jax.Array:
    """``[..., C]`` -> ``[rest, C]`` with the channel axis last."""
    moved = jnp.moveaxis(x, axis, -1)
    return moved.reshape(-1, moved.shape[-1])


def _channel_norm(w: jax.Array, alive: jax.Array, n: float) -> jax.Array:
    """Ln norm of the surviving weights of each channel (columns of ``[rest, C]``)."""
    a = jnp.abs(w.astype(jnp.float32))
    if n == 1:
        return jnp.sum(jnp.where(alive, a, 0.0), axis=0)
    if n == 2:  # the squared norm ranks channels identically
        return jnp.sum(jnp.where(alive, a * a, 0.0), axis=0)
    if n == math.inf:
        return jnp.max(jnp.where(alive, a, 0.0), axis=0)
    return jnp.min(jnp.where(alive, a, jnp.inf), axis=0)  # -inf: smallest surviving |w|


def _prune_channels(leaves, keeps, paths, axis, ratio, who, channel_scores):
    out = []
    for i, (w, keep, path) in enumerate(zip(leaves, keeps, paths)):
        ax = _normalise_axis(axis, tuple(w.shape), path, who)
        alive = _channel_view(keep, ax)
        channel_alive = jnp.any(alive, axis=0)
        scores = channel_scores(i, _channel_view(w, ax), alive)
        k = _removal_count(ratio, jnp.sum(channel_alive, dtype=jnp.int32))
        removed = _lowest_k(_score_bits(scores), channel_alive, k)
        shape = [1] * w.ndim
        shape[ax] = w.shape[ax]
        out.append(keep & ~removed.reshape(shape))
    return out


@dataclasses.dataclass(frozen=True)
class LnStructured(Pruner):
    """Ln-structured channel pruning (see :func:`ln_structured`)."""

    fraction: float
    n: float = 2
    axis: int = -1

    def __post_init__(self):
        _check_fraction(self.fraction, "ln_structured")
        object.__setattr__(self, "n", _check_n(self.n, "ln_structured"))
        if not isinstance(self.axis, (int, np.integer)):
            raise ValueError(f"ln_structured: axis must be an int, got {self.axis!r}.")

    def _prune(self, leaves, keeps, paths, key):
        ratio = _check_fraction(self.fraction, "ln_structured")
        score = lambda i, w, alive: _channel_norm(w, alive, self.n)  # noqa: E731
        return _prune_channels(leaves, keeps, paths, self.axis, ratio, "ln_structured", score)


@dataclasses.dataclass(frozen=True)
class RandomStructured(Pruner):
    """Random channel pruning (see :func:`random_structured`)."""

    fraction: float
    axis: int = -1

    def __post_init__(self):
        _check_fraction(self.fraction, "random_structured")
        if not isinstance(self.axis, (int, np.integer)):
            raise ValueError(f"random_structured: axis must be an int, got {self.axis!r}.")

    @property
    def needs_key(self) -> bool:
        return True

    def _prune(self, leaves, keeps, paths, key):
        ratio = _check_fraction(self.fraction, "random_structured")
        keys = _leaf_keys(key, len(leaves))
        score = lambda i, w, alive: jax.random.uniform(keys[i], (w.shape[-1],))  # noqa: E731
        return _prune_channels(leaves, keeps, paths, self.axis, ratio, "random_structured", score)


def ln_structured(fraction: float, n: float = 2, axis: int = -1) -> LnStructured:
    """Ln-structured pruning of whole output units/channels, per layer.

    Each channel (a slice along ``axis``: the output axis ``-1`` of Dense ``(in, out)``
    and Conv ``(h, w, in, out)`` kernels) is ranked by the Ln norm of its *surviving*
    weights, ``n`` in ``{1, 2, inf, -inf}`` (``-inf`` = the smallest surviving |w|; unlike
    PyTorch's ``ln_structured``, already-pruned zeros do not count, so a partly pruned
    channel is not ranked 0). ``round(fraction * surviving channels)`` channels with the
    lowest norm are removed entirely; a channel survives while any of its weights does.

    Example::

        mask = ln_structured(0.2, n=1)(params, mask)   # drop 20% of conv filters by L1
    """
    return LnStructured(fraction, n, axis)


def random_structured(fraction: float, axis: int = -1) -> RandomStructured:
    """Random channel pruning: removes ``round(fraction * surviving channels)`` at random.

    Needs a key. Example: ``random_structured(0.2)(params, mask, jax.random.key(0))``.
    """
    return RandomStructured(fraction, axis)


# ----------------------------------------------------------------------------- combinators


def _selector_predicate(selector: Selector) -> Callable[[str, Any], bool]:
    predicate = masks_lib.path_predicate(selector)
    if predicate is None:
        raise ValueError(
            "partition: each rule is (selector, pruner) with selector a regex over leaf paths "
            f"(e.g. 'conv.*/kernel') or a predicate (path, leaf) -> bool; got {selector!r}."
        )
    return predicate


@dataclasses.dataclass(frozen=True)
class Partition(Pruner):
    """Pruners by leaf path; first matching rule wins (see :func:`partition`)."""

    rules: tuple

    def __post_init__(self):
        rules = []
        for rule in self.rules:
            if not (isinstance(rule, (tuple, list)) and len(rule) == 2):
                raise ValueError(
                    f"partition: each rule must be a (selector, pruner) pair, got {rule!r}."
                )
            selector, pruner = rule
            _selector_predicate(selector)
            if pruner is not None and not isinstance(pruner, Pruner):
                raise ValueError(
                    f"partition: the pruner of rule {selector!r} must be a jaxticket pruner or "
                    f"None (never prune), got {pruner!r}."
                )
            rules.append((selector, pruner))
        object.__setattr__(self, "rules", tuple(rules))

    @property
    def needs_key(self) -> bool:
        return any(p is not None and p.needs_key for _, p in self.rules)

    def assignment(self, mask: Mask) -> list[Optional[int]]:
        """For each leaf, the index of the rule that owns it (None: untouched)."""
        predicates = [_selector_predicate(s) for s, _ in self.rules]
        owners = []
        for path, leaf, flag in zip(mask.paths(), mask.leaves(), mask.prunable):
            owner = None
            if flag:
                owner = next((j for j, pred in enumerate(predicates) if pred(path, leaf)), None)
            owners.append(owner)
        return owners

    @property
    def _public_name(self) -> str:
        return "partition (one of its pruners)"

    def _apply(self, params, mask, key):
        owners = self.assignment(mask)
        keep = mask.keep
        for j, (_, pruner) in enumerate(self.rules):
            if pruner is None or j not in owners:
                continue
            sub = Mask(keep, [o == j for o in owners])
            sub_key = None if key is None else jax.random.fold_in(key, j)
            keep = pruner._apply(params, sub, sub_key).keep
        return mask.replace(keep=keep)


def partition(rules: Sequence[tuple[Selector, Optional[Pruner]]]) -> Partition:
    """Composes pruners by leaf path: the first rule whose selector matches a leaf owns it.

    ``rules`` is a sequence of ``(selector, pruner)``; a selector is a regex searched in
    the leaf's path string or a predicate ``(path, leaf) -> bool``; ``pruner=None``
    protects the matched leaves. Leaves matching no rule are untouched, as are leaves the
    mask marks non-prunable. A ``"global"`` pruner ranks across the leaves of its rule.
    Random sub-pruners get ``fold_in(key, rule_index)``.

    Examples::

        # hybrid: L1-structured conv filters + unstructured fully connected layers
        hybrid = partition([(r"conv.*/kernel", ln_structured(0.2, n=1)),
                            (r"(fc|output).*/kernel", magnitude(0.2))])
        # fc-only
        fc_only = partition([(r"(fc|output).*/kernel", magnitude(0.2))])
        # Frankle & Carbin's Conv-2/4/6 rates: conv 10-15%, fc 20%, output 10%
        conv6 = partition([("output", magnitude(0.1)), ("fc", magnitude(0.2)),
                           ("conv", magnitude(0.15))])
    """
    return Partition(tuple(rules))


@dataclasses.dataclass(frozen=True)
class Chain(Pruner):
    """Pruners applied one after the other (see :func:`chain`)."""

    pruners: tuple

    def __post_init__(self):
        for p in self.pruners:
            if not isinstance(p, Pruner):
                raise ValueError(f"chain: expected jaxticket pruners, got {p!r}.")

    @property
    def needs_key(self) -> bool:
        return any(p.needs_key for p in self.pruners)

    @property
    def _public_name(self) -> str:
        return "chain (one of its pruners)"

    def _apply(self, params, mask, key):
        for i, pruner in enumerate(self.pruners):
            mask = pruner._apply(params, mask, None if key is None else jax.random.fold_in(key, i))
        return mask


def chain(*pruners: Pruner) -> Chain:
    """Applies pruners in sequence, each to the survivors of the previous one.

    Example: ``chain(ln_structured(0.1, n=2), magnitude(0.2))``.
    """
    return Chain(tuple(pruners))


# ----------------------------------------------------------------------------- baselines


def random_like(mask: Mask, key: jax.Array, scope: str = "layer") -> Mask:
    """A random mask with the same number of survivors as ``mask`` (the random-pruning control).

    ``scope="layer"``: every prunable leaf keeps exactly as many entries as in ``mask``,
    at uniformly random positions; ``"global"``: the same total number of survivors,
    drawn uniformly across all prunable entries (per-layer counts then vary).
    Non-prunable leaves stay all-True. Works under ``jit`` and ``vmap``.

    Example::

        control = random_like(imp_mask, jax.random.key(1))
        assert masks.density(control) == masks.density(imp_mask)
    """
    _check_scope(scope, "random_like")
    _check_key(key, "random_like")
    return _random_like(mask, key, scope)


@functools.partial(jax.jit, static_argnames="scope")
def _random_like(mask: Mask, key: jax.Array, scope: str) -> Mask:
    leaves = mask.leaves()
    idx = [i for i, flag in enumerate(mask.prunable) if flag]
    if not idx:
        return mask
    keys = _leaf_keys(key, len(idx))
    scores = [jax.random.uniform(k, leaves[i].shape) for k, i in zip(keys, idx)]
    everything = [jnp.ones(leaves[i].shape, dtype=bool) for i in idx]
    if scope == "layer":
        removed = []
        for s, a, i in zip(scores, everything, idx):
            n_remove = a.size - jnp.sum(leaves[i], dtype=jnp.int32)
            removed.append(_lowest_k(_score_bits(s).ravel(), a.ravel(), n_remove).reshape(a.shape))
    else:
        total = sum(a.size for a in everything)
        n_remove = total - sum(jnp.sum(leaves[i], dtype=jnp.int32) for i in idx)
        flat = _lowest_k(
            jnp.concatenate([_score_bits(s).ravel() for s in scores]),
            jnp.ones((total,), dtype=bool),
            jnp.asarray(n_remove, dtype=jnp.int32),
        )
        sizes = np.cumsum([a.size for a in everything])[:-1]
        removed = [r.reshape(a.shape) for r, a in zip(jnp.split(flat, sizes), everything)]
    out = list(leaves)
    for i, r in zip(idx, removed):
        out[i] = ~r
    return mask.replace(keep=jax.tree.unflatten(jax.tree.structure(mask.keep), out))


# ----------------------------------------------------------------------------- as plain data

_FACTORIES = {
    "magnitude": lambda c: magnitude(c["fraction"], c.get("scope", "layer")),
    "random": lambda c: random(c["fraction"], c.get("scope", "layer")),
    "ln_structured": lambda c: ln_structured(c["fraction"], _parse_n(c.get("n", 2)), c.get("axis", -1)),
    "random_structured": lambda c: random_structured(c["fraction"], c.get("axis", -1)),
    "partition": lambda c: partition(
        [(sel, None if sub is None else from_config(sub)) for sel, sub in c["rules"]]
    ),
    "chain": lambda c: chain(*(from_config(sub) for sub in c["pruners"])),
}
_FIELDS = {
    "magnitude": {"fraction", "scope"},
    "random": {"fraction", "scope"},
    "ln_structured": {"fraction", "n", "axis"},
    "random_structured": {"fraction", "axis"},
    "partition": {"rules"},
    "chain": {"pruners"},
}
METHODS = tuple(_FACTORIES)


def _parse_n(n):
    if isinstance(n, str) and n.strip().lower() in ("inf", "+inf", "-inf"):
        return float(n)
    return n


def _n_to_json(n: float):
    return n if math.isfinite(n) else ("inf" if n > 0 else "-inf")


def from_config(config: dict) -> Pruner:
    """Builds a pruner from plain data (JSON-able), the inverse of :func:`to_config`.

    ``{"method": "magnitude", "fraction": 0.2, "scope": "global"}``;
    ``{"method": "ln_structured", "fraction": 0.2, "n": "inf"}``;
    ``{"method": "partition", "rules": [["output/kernel", {...}], ["kernel$", {...}],
    ["bias", None]]}``; ``{"method": "chain", "pruners": [{...}, {...}]}``.
    Methods: :data:`METHODS`.
    """
    if isinstance(config, Pruner):
        return config
    if not isinstance(config, dict) or "method" not in config:
        raise ValueError(
            f"a pruner config is a dict with a 'method' (one of {METHODS}) and its settings, "
            f"e.g. {{'method': 'magnitude', 'fraction': 0.2, 'scope': 'global'}}; got {config!r}."
        )
    method = config["method"]
    if method not in _FACTORIES:
        raise ValueError(f"unknown pruning method {method!r}; valid methods: {METHODS}.")
    unknown = sorted(set(config) - {"method"} - _FIELDS[method])
    if unknown:
        raise ValueError(
            f"pruner {method!r}: unknown settings {unknown}; valid: {sorted(_FIELDS[method])}."
        )
    try:
        return _FACTORIES[method](config)
    except KeyError as missing:
        raise ValueError(f"pruner {method!r}: missing setting {missing}.") from None


def to_config(pruner: Pruner) -> dict:
    """Plain data for a pruner built from string selectors (see :func:`from_config`)."""
    if isinstance(pruner, Magnitude):
        return {"method": "magnitude", "fraction": pruner.fraction, "scope": pruner.scope}
    if isinstance(pruner, RandomUnstructured):
        return {"method": "random", "fraction": pruner.fraction, "scope": pruner.scope}
    if isinstance(pruner, LnStructured):
        return {"method": "ln_structured", "fraction": pruner.fraction, "n": _n_to_json(pruner.n),
                "axis": pruner.axis}
    if isinstance(pruner, RandomStructured):
        return {"method": "random_structured", "fraction": pruner.fraction, "axis": pruner.axis}
    if isinstance(pruner, Partition):
        rules = []
        for selector, sub in pruner.rules:
            if isinstance(selector, re.Pattern):
                selector = selector.pattern
            if not isinstance(selector, str):
                raise ValueError("to_config: partition selectors must be regex strings to be saved.")
            rules.append([selector, None if sub is None else to_config(sub)])
        return {"method": "partition", "rules": rules}
    if isinstance(pruner, Chain):
        return {"method": "chain", "pruners": [to_config(p) for p in pruner.pruners]}
    raise ValueError(f"to_config: cannot describe {pruner!r} as plain data.")
