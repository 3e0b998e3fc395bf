"""The pruner protocol and the registry of pruning methods.

A pruner is any callable ``pruner(params, mask, key) -> mask'`` with ``mask'`` a subset
of ``mask`` that leaves non-prunable leaves untouched. The built-in ones are frozen
dataclasses deriving from :class:`Pruner` (hashable, so they are static under ``jit``
and compiled once); any other callable is accepted wherever a pruner is, and
:func:`as_pruner` wraps it so that the contract holds even if the callable breaks it.

A pruner that composes others (a partition, a chain, a level schedule, ...) says so
through ``children()`` and ``with_children(children)`` (see
:mod:`jaxticket.pruning.composite`); a leaf's ``children()`` is ``None``.

Methods have names in :data:`METHODS` (a :class:`jaxticket.registry.Registry`), which
:func:`register` extends; :func:`from_config` and :func:`to_config` turn pruners into
plain data and back. Counting and selection live in :mod:`jaxticket.pruning.counting`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from jaxticket import fingerprints
from jaxticket import masks as masks_lib
from jaxticket.masks import Mask
from jaxticket.pruning.counting import (  # noqa: F401  (ROUNDINGS ... select_lowest: also jaxticket.pruning.core.<name>)
    ROUNDINGS,
    SCOPES,
    check_key,
    removal_count,
    select_count,
    select_lowest,
)
from jaxticket.registry import Registry

PyTree = Any

__all__ = [
    "METHODS",
    "Pruner",
    "PruningError",
    "ROUNDINGS",
    "SCOPES",
    "as_pruner",
    "describe",
    "examples",
    "from_config",
    "get",
    "methods",
    "register",
    "removal_count",
    "select_count",
    "select_lowest",
    "to_config",
]


class PruningError(ValueError):
    """A pruning step that would break the network (e.g. empty a layer)."""


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

    def children(self) -> Optional[tuple]:
        """The pruners this one composes, in order; ``None``: a leaf (composites override
        this and :meth:`with_children`, see :mod:`jaxticket.pruning.composite`)."""
        return None

    def with_children(self, children: tuple):
        """The same composite over ``children`` (one per :meth:`children`, in order)."""
        raise TypeError(f"{type(self).__name__} is a leaf pruner: it has no children to replace")

    def survivors(self, known):
        """The survivor counts after one call, from those before, without the weights
        (:class:`~jaxticket.pruning.reachability.Survivors`), or ``None`` when they cannot be
        known so: the default. Score-based pruners and the combinators say more."""
        return None

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

    def children(self) -> Optional[tuple]:
        """``(fn,)`` when the wrapped callable composes pruners itself (a registered
        method's :class:`Configured`): the wrapper is transparent to the protocol."""
        inner = getattr(self.fn, "children", None)
        return (self.fn,) if callable(inner) and inner() is not None else None

    def with_children(self, children: tuple):
        (fn,) = children
        return fn  # the wrapped composite rebuilt; a container wraps it again (as_pruner)

    def survivors(self, known):
        inner = getattr(self.fn, "survivors", None)  # a Configured's: its pruner's
        return inner(known) if callable(inner) else None

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


#: The pruning methods by name: the factories (or Pruner classes) :func:`register` added.
METHODS = Registry("pruning method", hint="your own: @jaxticket.pruning.register('name')")
_REGISTRY = METHODS  # the name this registry had before (tests patch entries through it)
_METHOD_OF: dict[type, str] = {}
_EXAMPLES: dict[str, tuple] = {}


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

    def children(self) -> tuple:
        """The built pruner (a :class:`Configured` records how it was built, nothing more)."""
        return (self.pruner,)

    def with_children(self, children: tuple) -> "Configured":
        (pruner,) = children
        return Configured(self.method, self.settings, pruner)

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


def register(name: str, *, overwrite: bool = False, examples=()) -> Callable:
    """Decorator: makes a pruning method usable by name from configs, JSON and the command line.

    Decorate a factory ``(**settings) -> pruner`` (a function returning any pruner
    callable) or a :class:`Pruner` dataclass. ``from_config({"method": name, **settings})``
    then builds it, and ``to_config`` writes it back. A factory function called directly
    returns a pruner that remembers its settings. From the command line, make the module
    that registers it importable and pass ``--import MODULE``.

    ``examples``: settings dicts (without ``"method"``) that build a working pruner, e.g.
    ``[{"fraction": 0.3}]``: the pruner contract test (``tests/test_pruning.py``) runs every
    registered method on each of them, and :func:`examples` returns them. Every built-in
    method has some.

    Example:
        >>> @register("keep_large", overwrite=True, examples=[{"threshold": 1.0}])
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
    examples = tuple(examples)
    for example in examples:
        if not isinstance(example, dict) or "method" in example:
            raise ValueError(f"register({name!r}): each example is a dict of settings without 'method', "
                             f"e.g. {{'fraction': 0.3}}; got {example!r}")

    def decorate(factory):
        signature = None if isinstance(factory, type) else inspect.signature(factory)
        METHODS.register(name, factory, overwrite=overwrite)  # a name another method has: ValueError
        if signature is None:  # a Pruner class
            _METHOD_OF[factory] = name
            _EXAMPLES[name] = examples
            return factory

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
        METHODS.register(name, build, overwrite=True)
        _EXAMPLES[name] = examples
        return build

    return decorate


def methods() -> tuple[str, ...]:
    """The registered method names, sorted (``METHODS.names()``)."""
    return METHODS.names()


def examples(name: str) -> tuple[dict, ...]:
    """The example settings registered with method ``name`` (see :func:`register`).

    Example:
        >>> examples("magnitude")[0]
        {'fraction': 0.3}
    """
    METHODS.get(name)  # an unknown name: the registry's one error
    return tuple(dict(e) for e in _EXAMPLES.get(name, ()))


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
    :func:`methods`, plus any you :func:`register`; an unknown one is a
    :class:`~jaxticket.registry.UnknownNameError` (a ``ValueError``).

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
    factory = METHODS.get(method)
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
