"""Flax NNX models in a Task: :class:`NNXModel`, an ``nnx.Module`` factory with Linen's
``init`` / ``apply``.

A Task is static and hashable and its state is a pytree of arrays; an ``nnx.Module`` is
a mutable Python object. :class:`NNXModel` bridges the two with the split/merge pattern
of Flax's performance guide: it holds the *factory* ``make_model(rngs) -> nnx.Module``
and, once per factory, the module's graph definitions (``nnx.split`` of an abstract
module built by ``nnx.eval_shape``). Every compiled function then sees a pure function
of arrays: ``nnx.merge`` of the graph definition with the arrays, the call, and
``nnx.state`` of what the call updated; the Python graph is traversed when the program
is traced, never per step. Build it with :meth:`jaxticket.train.Task.from_nnx`.

The contract, exactly:

* **Init / seeds.** A replica with init key ``key`` (``jax.random.key(init_seed)``) is
  ``make_model(nnx.Rngs(key))``: ``init_seed=s`` gives the ``nnx.Param`` state of
  ``make_model(nnx.Rngs(s))``, every stream (``params``, ``dropout``, ...) drawn from
  that one default key, as in ``CNN(rngs=nnx.Rngs(0))``.
* **Params** are the ``nnx.Param`` state as a plain nested dict (``nnx.to_pure_dict``)
  with string keys: attribute ``conv1``'s kernel is ``params["conv1"]["kernel"]``
  (path ``"conv1/kernel"``), the first layer of an ``nnx.List`` attribute ``layers`` is
  ``params["layers"]["0"]``. Masks, pruners, run directories and analyses use them as
  they use Linen's.
* **BatchNorm.** The ``nnx.BatchStat`` state (``nnx.BatchNorm``'s ``mean`` / ``var``)
  is the Task's ``batch_stats``: updated by training steps, used in evaluation,
  rewound, recomputed and checkpointed as Linen's. Any other state (an
  ``nnx.Variable`` of your own, ``nnx.Cache``, ...) is refused at init, with its path.
* **Train / eval mode** is what ``model.train()`` / ``model.eval()`` set: every
  submodule's ``deterministic`` and ``use_running_average`` attribute (``nnx.Dropout``,
  ``nnx.BatchNorm``, and your modules with those attributes) is ``False`` in training,
  ``True`` in evaluation. Both modes are fixed in the graph definition (``nnx.view``),
  so ``__call__`` is called as ``model(x)``, with nothing else.
* **Dropout** draws from the step's dropout key (the one a Linen model gets as
  ``rngs={"dropout": key}``): the module's rng streams (``nnx.RngState``) are replaced
  on every call, stream ``j`` (in ``nnx.state`` order) getting ``fold_in(key, j)`` and
  a count of 0, so two dropout layers draw different masks and a step's masks depend
  on its key only. Calls without a key (evaluation, pruning scores) use
  ``jax.random.key(0)``; in evaluation mode dropout draws nothing.
* **Weight matching** (``align=True`` in instability analyses, ``jaxticket.alignment``)
  needs the module class's permutation groups:
  ``@jaxticket.models.register_permutation_spec(CNN)`` on a function
  ``(module, params) -> {name: (Axis("conv1/kernel", -1), Axis("conv1/bias", 0),
  Axis("conv2/kernel", 2)), ...}``; it is called with the abstract module (attributes,
  no arrays) and the params' shapes.

Two ``NNXModel`` s are equal when their factories are: the same function, or
``functools.partial`` s of the same function with equal arguments (so
``partial(CNN, num_classes=10)`` built twice shares its compiled programs).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> class MLP(nnx.Module):
    ...     def __init__(self, rngs):
    ...         self.hidden = nnx.Linear(4, 8, rngs=rngs)
    ...         self.out = nnx.Linear(8, 3, rngs=rngs)
    ...     def __call__(self, x):
    ...         return self.out(nnx.relu(self.hidden(x)))
    >>> model = NNXModel(lambda rngs: MLP(rngs))
    >>> variables = model.init(jax.random.key(0))
    >>> sorted(variables), variables["params"]["hidden"]["kernel"].shape
    (['params'], (4, 8))
    >>> bool(jnp.all(variables["params"]["out"]["kernel"] == MLP(nnx.Rngs(0)).out.kernel[...]))
    True
    >>> model.apply(variables, jnp.ones((2, 4)), train=False).shape
    (2, 3)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

__all__ = ["NNXModel", "is_nnx_module"]

PyTree = Any

_FACTORY_HINT = ("pass a function rngs -> module, e.g. Task.from_nnx(lambda rngs: CNN(rngs=rngs), input_shape=...): "
                 "each seed builds its own model from its init key")


def is_nnx_module(obj) -> bool:
    """Whether ``obj`` is an ``nnx.Module`` instance (without importing Flax NNX when it
    is not loaded: no module can be one then)."""
    import sys

    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and isinstance(obj, nnx.Module)


def _identity(fn):
    """What two factories are compared by: the function, or a partial's function and
    arguments (when hashable)."""
    if isinstance(fn, functools.partial):
        key = (_identity(fn.func), fn.args, tuple(sorted(fn.keywords.items())))
        try:
            hash(key)
            return key
        except TypeError:
            return fn
    return fn


def _rngs_keyword_only(fn) -> bool:
    """Whether ``fn`` takes ``rngs`` by keyword only (a module class ``CNN(*, rngs)``, or a
    partial of one): it is then called ``fn(rngs=rngs)``, else ``fn(rngs)``."""
    import inspect

    bound = set()
    while isinstance(fn, functools.partial):
        bound |= set(fn.keywords)
        fn = fn.func
    if "rngs" in bound:
        return False
    try:  # a class: its __init__ (an nnx.Module's metaclass hides the signature)
        p = inspect.signature(fn.__init__ if isinstance(fn, type) else fn).parameters.get("rngs")
    except (TypeError, ValueError):
        return False
    return p is not None and p.kind is inspect.Parameter.KEYWORD_ONLY


class _Collection(NamedTuple):
    """One group of variables: the ``nnx.State`` treedef and, per leaf, its plain path."""

    treedef: Any
    paths: tuple  # ((str, ...), ...) in treedef leaf order
    abstract: tuple  # jax.ShapeDtypeStruct per leaf

    def to_plain(self, state) -> dict:
        return _nest(self.paths, jax.tree.leaves(state))

    def to_state(self, plain: dict):
        leaves = []
        for path in self.paths:
            node = plain
            for k in path:
                node = node[k]
            leaves.append(node)
        return jax.tree.unflatten(self.treedef, leaves)


def _nest(paths, leaves) -> dict:
    out: dict = {}
    for path, leaf in zip(paths, leaves):
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = leaf
    return out


def _collection(state) -> _Collection:
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(state)
    paths = tuple(tuple(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)) for path, _ in with_paths)
    abstract = tuple(jax.ShapeDtypeStruct(tuple(x.shape), x.dtype) for _, x in with_paths)
    return _Collection(treedef, paths, abstract)


class _Structure(NamedTuple):
    train: Any  # GraphDef, training mode
    eval: Any  # GraphDef, evaluation mode
    params: _Collection
    batch_stats: _Collection
    rngs: _Collection
    module_type: type
    abstract_module: Any


def _filters():
    from flax import nnx

    return (nnx.Param, nnx.BatchStat, nnx.RngState, ...)


def _with_mode(module, train: bool):
    """``module`` in training or evaluation mode (a copy; ``nnx.view`` where Flax has it)."""
    from flax import nnx

    flags = {"deterministic": not train, "use_running_average": not train}
    view = getattr(nnx, "view", None)
    if view is not None:
        return view(module, raise_if_not_found=False, **flags)
    module = nnx.merge(*nnx.split(module))  # pragma: no cover - Flax before nnx.view
    module.set_attributes(**flags, raise_if_not_found=False)  # pragma: no cover
    return module  # pragma: no cover


@functools.lru_cache(maxsize=128)
def _structure(model: "NNXModel") -> _Structure:
    from flax import nnx

    abstract = nnx.eval_shape(lambda: model.build(jax.random.key(0)))
    graphs = []
    for train in (True, False):
        graph, params, batch_stats, rngs, rest = nnx.split(_with_mode(abstract, train), *_filters())
        graphs.append(graph)
    others = [f"{'/'.join(map(str, path))} ({type(v).__name__})" for path, v in nnx.to_flat_state(rest)]
    if others:
        raise ValueError(f"Task: the NNX model has state other than nnx.Param, nnx.BatchStat and rng streams: "
                         f"{', '.join(others)}; jaxticket trains params and BatchNorm statistics only")
    return _Structure(graphs[0], graphs[1], _collection(params), _collection(batch_stats), _collection(rngs),
                      type(abstract), abstract)


def _fresh_rngs(rngs: _Collection, key: Optional[jax.Array]):
    """The rng streams' state for one call: stream ``j`` keyed ``fold_in(key, j)``, counts 0."""
    if key is None:
        key = jax.random.key(0)
    elif not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    leaves, j = [], 0
    for a in rngs.abstract:
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            k = jax.random.fold_in(key, j)
            j += 1
            leaves.append(k if a.shape == () else jax.random.split(k, a.shape))
        else:
            leaves.append(jnp.zeros(a.shape, a.dtype))
    return jax.tree.unflatten(rngs.treedef, leaves)


@dataclasses.dataclass(frozen=True, eq=False)
class NNXModel:
    """A Flax NNX model as a Task's model: ``make_model(rngs: nnx.Rngs) -> nnx.Module``
    behind Linen's ``init`` / ``apply`` (see the module docstring for the contract).

    Attributes:
      make_model: the factory, e.g. ``lambda rngs: CNN(rngs=rngs)``; called
        ``make_model(rngs)``, or ``make_model(rngs=rngs)`` when it takes ``rngs`` by
        keyword only (a class ``CNN(*, rngs)`` itself, or ``functools.partial(CNN, ...)``).
    """

    make_model: Callable

    def __post_init__(self):
        if is_nnx_module(self.make_model):
            raise TypeError(f"got an nnx.Module instance ({type(self.make_model).__name__}); {_FACTORY_HINT}")
        if not callable(self.make_model):
            raise TypeError(f"the NNX model must be a function rngs -> nnx.Module, got {self.make_model!r}")

    def __eq__(self, other):
        return isinstance(other, NNXModel) and _identity(self.make_model) == _identity(other.make_model)

    def __hash__(self):
        return hash(_identity(self.make_model))

    def __repr__(self):
        from jaxticket import fingerprints

        return (f"NNXModel({fingerprints.qualified_name(self.module_type)}, "
                f"make_model={fingerprints.callable_fingerprint(self.make_model)})")

    # ------------------------------------------------------------------ the module

    def build(self, key: jax.Array):
        """``make_model(nnx.Rngs(key))``, checked to be an ``nnx.Module``."""
        from flax import nnx

        rngs = nnx.Rngs(key)
        module = self.make_model(rngs=rngs) if _rngs_keyword_only(self.make_model) else self.make_model(rngs)
        if not isinstance(module, nnx.Module):
            raise TypeError(f"the NNX model's factory returned {type(module).__name__}, not an nnx.Module; "
                            f"{_FACTORY_HINT}")
        return module

    @property
    def module_type(self) -> type:
        """The class of the module the factory builds."""
        return _structure(self).module_type

    def abstract_module(self):
        """The module the factory builds, abstract (``nnx.eval_shape``: attributes, shapes,
        no arrays)."""
        return _structure(self).abstract_module

    # ------------------------------------------------------------------ Linen's protocol

    def init(self, key: jax.Array, x: Optional[jax.Array] = None, *, train: bool = False) -> dict:
        """``{"params": ..., ["batch_stats": ...]}`` (plain dicts) of ``make_model(nnx.Rngs(key))``;
        ``x`` and ``train`` are ignored (an NNX module is built without an input)."""
        from flax import nnx

        s = _structure(self)
        _, params, batch_stats, _, _ = nnx.split(self.build(key), *_filters())
        variables = {"params": s.params.to_plain(params)}
        if s.batch_stats.paths:
            variables["batch_stats"] = s.batch_stats.to_plain(batch_stats)
        return variables

    def module(self, variables: dict, *, train: bool = False, rngs: Optional[dict] = None):
        """The ``nnx.Module`` holding ``variables`` (``{"params", ["batch_stats"]}``, one
        model, no seeds axis), in training or evaluation mode."""
        from flax import nnx

        s = _structure(self)
        key = (rngs or {}).get("dropout")
        return nnx.merge(s.train if train else s.eval, s.params.to_state(variables["params"]),
                         s.batch_stats.to_state(variables.get("batch_stats") or {}), _fresh_rngs(s.rngs, key))

    def apply(self, variables: dict, x, *, train: bool = False, rngs: Optional[dict] = None, mutable=False):
        """The module's ``model(x)``, as ``flax.linen.Module.apply``: the outputs, or with
        ``mutable`` (e.g. ``["batch_stats"]``) ``(outputs, {"batch_stats": updated})``."""
        from flax import nnx

        model = self.module(variables, train=train, rngs=rngs)
        out = model(x)
        if not mutable:
            return out
        return out, {"batch_stats": _structure(self).batch_stats.to_plain(nnx.state(model, nnx.BatchStat))}


def module_from(task, params: PyTree, batch_stats: PyTree = None, *, mask=None, replica: int = 0,
                train: bool = False):
    """The implementation of :meth:`jaxticket.train.Task.to_nnx` (see there)."""
    from jaxticket import masks as masks_lib
    from jaxticket.train.state import TrainState

    model = task.model
    if not isinstance(model, NNXModel):
        raise TypeError(f"Task.to_nnx: the task's model is {type(model).__name__}, not an NNX model "
                        "(Task.from_nnx)")
    if isinstance(params, TrainState):
        state = params
        params, batch_stats = state.params, state.batch_stats if batch_stats is None else batch_stats
        mask = state.mask if mask is None else mask
    if mask is not None:
        params = masks_lib.apply(params, mask)
    abstract = task.abstract_params()
    if jnp.ndim(jax.tree.leaves(params)[0]) == len(jax.tree.leaves(abstract)[0].shape) + 1:  # a seeds axis
        params = jax.tree.map(lambda x: x[replica], params)
        batch_stats = jax.tree.map(lambda x: x[replica], batch_stats) if batch_stats else batch_stats
    params = jax.tree.map(jnp.asarray, params)
    batch_stats = jax.tree.map(jnp.asarray, batch_stats) if batch_stats else {}
    return model.module({"params": params, "batch_stats": batch_stats}, train=train)


def _register_permutation_spec():
    from jaxticket.models import permutations

    @permutations.register_permutation_spec(NNXModel)
    def _nnx_spec(model: NNXModel, params):
        """An NNX task's permutation groups: those registered for its module's class."""
        return permutations.permutation_spec(model.abstract_module(), params)


_register_permutation_spec()
