"""The sparse-training methods: when the mask changes inside a run, and how.

A method is a frozen dataclass (hashable: part of the compiled loop's key) with

* ``resolve(steps) -> method``: defaults that depend on the run's length filled in
  (``end = round(0.75 * steps)``, ``every = max(1, steps // 100)``), checked;
* ``initial_mask(ones, key) -> Mask``: the mask the run starts from (one network);
* ``updates``: whether it ever changes the mask; ``due(t) -> bool[]``: whether it does
  before step ``t`` (``t`` the unbatched step counter, traced);
* ``update(task, state, batch, t, key) -> state``: the new mask, with params and every
  params-shaped part of the optimizer state masked by it, before step ``t`` trains
  (one network; the loop vmaps it over seeds inside ``lax.cond(due(t), ...)``).

Built in (registered by name in :data:`METHODS`):

* :class:`GMP` (``"gmp"``, Zhu & Gupta 2017): gradual pruning; at steps
  ``t = start + j * every``, ``j = 0..n`` (``n = (end - start) // every``), each layer is
  pruned to the sparsity ``s_t = s_f + (s_i - s_f) (1 - (t - start) / (n * every))**3``
  by the lowest scores of a weight scorer (magnitude by default; any weight-unit
  :class:`~jaxticket.pruning.Scored` pruner's scores, e.g. ``pruning.random(0)``).
  Counts: layer ``l`` keeps ``K_l + round((N_l - K_l) * (1 - (t - start)/(n every))**3)``
  (``N_l`` its size times ``initial_density``, ``K_l`` its final count from
  :func:`~jaxticket.pruning.layer_counts`), a table computed once on the host in float64,
  so the last update reaches ``K_l`` exactly.
* :class:`SET` (``"set"``, Mocanu et al. 2018) and :class:`RigL` (``"rigl"``, Evci et
  al. 2020): a random mask with the layer counts of ``distribution`` (``"erk"`` by
  default) and, before every step ``t = every, 2 every, ... < end``, per layer the
  ``k_t = round(alpha_t * K_l)`` smallest magnitudes dropped and as many grown among the
  entries not alive after the drop: at random (SET) or where the dense gradient of step
  ``t``'s batch is largest (RigL); ``alpha_t = fraction / 2 (1 + cos(pi t / end))``
  (``decay="cosine"``, RigL's) or ``fraction`` (``"constant"``). Regrown weights start
  at 0 with their optimizer moments 0. A layer kept dense by ERK is not updated.
* :class:`Static` (``"static"``): the random mask of ``distribution``, never updated.
* :class:`Scheduled`: any pruner (``(params, mask, key) -> mask``, e.g.
  :func:`~jaxticket.pruning.n_m`) applied before the given steps: :func:`one_shot`,
  :func:`every`.

Example:
    >>> m = gmp(0.1, start=0, end=100, every=25).resolve(200)
    >>> m.update_steps()
    (0, 25, 50, 75, 100)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxticket import pruning
from jaxticket.masks import Mask
from jaxticket.registry import Registry
from jaxticket.sparse import updates
from jaxticket.train.state import with_mask

__all__ = ["DECAYS", "GMP", "METHODS", "RigL", "SET", "Scheduled", "SparseMethod", "Static", "dense_grads",
           "every", "get", "gmp", "one_shot", "regrow", "rigl", "set_", "static"]

DECAYS = ("cosine", "constant")

#: The sparse-training methods by name: factories ``(density, **settings) -> method``.
METHODS = Registry("sparse training method", hint="a method object of your own: a jaxticket.sparse.SparseMethod")


def _check_int(name, value, minimum=0, optional=True):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_density(density, name="density"):
    if isinstance(density, (bool, str)) or not isinstance(density, (int, float, np.integer, np.floating)) \
            or not 0.0 < float(density) <= 1.0:
        raise ValueError(f"{name} must be in (0, 1] (the final fraction of prunable weights kept), got {density!r}")
    return float(density)


def _default_end(steps):
    return int(round(0.75 * steps))


def _default_every(steps):
    return max(1, steps // 100)


def _prunable(mask: Mask):
    idx = [i for i, f in enumerate(mask.prunable) if f]
    return idx, [mask.leaves()[i] for i in idx]


def _with_keeps(mask: Mask, idx, new):
    leaves = list(mask.leaves())
    for i, k in zip(idx, new):
        leaves[i] = k
    return mask.replace(keep=jax.tree.unflatten(jax.tree.structure(mask.keep), leaves))


def _counts(mask: Mask, density, distribution) -> list[int]:
    return list(pruning.layer_counts(mask, density, distribution).values())


def regrow(state, dropped: Mask, new: Mask):
    """``state`` under ``new`` with every entry grown since ``dropped`` at exactly 0 in
    params and optimizer state: ``with_mask(state, dropped)`` with the mask set to ``new``."""
    return with_mask(state, dropped).replace(mask=new)


def dense_grads(task, state, batch):
    """The gradient of the batch's mean loss with respect to every parameter, pruned ones
    included (at the masked params; dropout as the step itself draws it)."""
    x, y = batch
    dropout_key = jax.random.fold_in(jax.random.wrap_key_data(state.dropout_key), state.step)

    def loss_fn(params):
        outputs, _ = task.forward(params, state.batch_stats, x, train=True, dropout_key=dropout_key)
        return task.loss(outputs, y).mean()

    return jax.grad(loss_fn)(state.params)


@dataclasses.dataclass(frozen=True)
class SparseMethod:
    """The method protocol (module docstring); these defaults: a method that never updates."""

    needs_batch = False
    straight_through = False  # GMP and Scheduled have it as a setting

    @property
    def name(self) -> str:
        return type(self).__name__.lower()

    @property
    def updates(self) -> bool:
        return True

    def resolve(self, steps: int) -> "SparseMethod":
        return self

    def final_density(self) -> Optional[float]:
        """The fraction of prunable weights the run ends with, when the method fixes it."""
        return getattr(self, "density", None)

    def initial_mask(self, ones: Mask, key) -> Mask:
        return ones

    def due(self, t):
        return jnp.zeros((), bool)

    def update(self, task, state, batch, t, key):
        return state

    def describe(self) -> dict:
        """Plain data for the run's identity and rows."""
        out = {"method": self.name}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = pruning.describe(v) if callable(v) else (list(v) if isinstance(v, tuple) else v)
        return out


def _masked(method, state, mask: Mask):
    """``state`` under a new ``mask``: params and moments masked (:func:`with_mask`), or
    with straight-through training only the mask replaced (the dense weights go on)."""
    return state.replace(mask=mask) if method.straight_through else with_mask(state, mask)


def _random_initial(ones: Mask, key, density, distribution) -> Mask:
    idx, leaves = _prunable(ones)
    new = updates.random_keep([x.shape for x in leaves], _counts(ones, density, distribution), key)
    return _with_keeps(ones, idx, new)


# ----------------------------------------------------------------------------- static


@dataclasses.dataclass(frozen=True)
class Static(SparseMethod):
    """A fixed random mask with the layer counts of ``distribution`` (see :func:`static`)."""

    density: float
    distribution: str = "erk"

    def __post_init__(self):
        _check_density(self.density)
        pruning.densities.check_distribution(self.distribution, "sparse.static")

    @property
    def updates(self) -> bool:
        return False

    def initial_mask(self, ones, key):
        return _random_initial(ones, key, self.density, self.distribution)


def static(density: float, distribution: str = "erk") -> Static:
    """Static sparse training: a random mask (``distribution`` ``"erk"`` or ``"uniform"``
    layer counts, :func:`~jaxticket.pruning.layer_counts`), never updated."""
    return Static(density, distribution)


# ----------------------------------------------------------------------------- GMP


@dataclasses.dataclass(frozen=True)
class GMP(SparseMethod):
    """Gradual magnitude pruning (see :func:`gmp` and the module docstring)."""

    density: float
    start: Optional[int] = None
    end: Optional[int] = None
    every: Optional[int] = None
    initial_density: float = 1.0
    distribution: str = "uniform"
    scorer: Any = None
    straight_through: bool = False

    def __post_init__(self):
        _check_density(self.density)
        _check_density(self.initial_density, "initial_density")
        if self.initial_density < self.density:
            raise ValueError(f"gmp: initial_density {self.initial_density} is below the final density {self.density}")
        _check_int("gmp start", self.start)
        _check_int("gmp end", self.end)
        _check_int("gmp every", self.every, 1)
        pruning.densities.check_distribution(self.distribution, "sparse.gmp")
        scorer = self.scorer
        inner = getattr(scorer, "pruner", scorer)  # a registered factory's Configured
        if scorer is not None and not (isinstance(inner, pruning.Scored) and inner.unit == "weight"):
            raise ValueError(f"gmp: scorer must be a weight-scoring pruner (magnitude, random, by_score, ...), got "
                             f"{scorer!r}; apply any other pruner at chosen steps with sparse.one_shot / sparse.every")

    def resolve(self, steps):
        start = 0 if self.start is None else self.start
        end = _default_end(steps) if self.end is None else self.end
        every = _default_every(steps) if self.every is None else self.every
        if not start <= end < steps:
            raise ValueError(f"gmp: need 0 <= start ({start}) <= end ({end}) < steps ({steps}); the mask is "
                             "updated before the steps it names")
        return dataclasses.replace(self, start=start, end=end, every=every)

    def update_steps(self) -> tuple:
        n = (self.end - self.start) // self.every
        return tuple(self.start + j * self.every for j in range(n + 1))

    def keep_table(self, ones: Mask) -> np.ndarray:
        """int32 ``[updates, prunable leaves]``: what each layer keeps after each update."""
        sizes = [int(np.prod(s)) for s in pruning.densities.prunable_shapes(ones).values()]
        final = _counts(ones, self.density, self.distribution)
        start = [min(n, math.floor(self.initial_density * n + 0.5)) for n in sizes]
        n = len(self.update_steps()) - 1
        rows = []
        for j in range(n + 1):
            r = 0.0 if n == 0 else (1.0 - j / n) ** 3
            rows.append([k + math.floor((s - k) * r + 0.5) if j < n else k for s, k in zip(start, final)])
        return np.asarray(rows, np.int32).reshape(n + 1, len(sizes))

    def _scorer(self):
        s = pruning.magnitude(0.0) if self.scorer is None else self.scorer
        return getattr(s, "pruner", s)

    def due(self, t):
        last = self.update_steps()[-1]
        return (t >= self.start) & (t <= last) & ((t - self.start) % self.every == 0)

    def update(self, task, state, batch, t, key):
        mask = state.mask
        idx, keeps = _prunable(mask)
        table = jnp.asarray(self.keep_table(mask))
        targets = table[(t - self.start) // self.every]
        scorer = self._scorer()
        leaves = [jax.tree.leaves(state.params)[i] for i in idx]
        if self.straight_through:  # every dense weight competes: a pruned one may come back
            keeps = [jnp.ones_like(k) for k in keeps]
        scores = scorer.scores(leaves, keeps, [mask.paths()[i] for i in idx], key)
        new = updates.prune_to(scores, keeps, [targets[j] for j in range(len(idx))], signed=scorer.signed_scores)
        return _masked(self, state, _with_keeps(mask, idx, new))


def gmp(density: float, *, start: Optional[int] = None, end: Optional[int] = None, every: Optional[int] = None,
        initial_density: float = 1.0, distribution: str = "uniform", scorer=None,
        straight_through: bool = False) -> GMP:
    """Gradual magnitude pruning (Zhu & Gupta 2017) to ``density`` between ``start``
    (default 0) and ``end`` (default ``0.75 * steps``) every ``every`` steps (default
    ``steps // 100``); ``distribution`` the final layer counts; ``scorer`` a weight-unit
    scored pruner whose scores rank the weights (default magnitude).

    ``straight_through``: dense weights kept and updated through the mask
    (:func:`~jaxticket.train.straight_through_step`), each update choosing among *all*
    of them, so a pruned weight can return; the run's result holds the masked weights."""
    return GMP(density, start, end, every, initial_density, distribution, scorer, straight_through)


# ----------------------------------------------------------------------------- SET / RigL


@dataclasses.dataclass(frozen=True)
class _DropGrow(SparseMethod):
    density: float
    fraction: float = 0.3
    every: Optional[int] = None
    end: Optional[int] = None
    decay: str = "cosine"
    distribution: str = "erk"

    def __post_init__(self):
        _check_density(self.density)
        if isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float)) \
                or not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"{self.name}: fraction (the drop fraction alpha) must be in [0, 1], got {self.fraction!r}")
        _check_int(f"{self.name} every", self.every, 1)
        _check_int(f"{self.name} end", self.end)
        if self.decay not in DECAYS:
            raise ValueError(f"{self.name}: decay must be one of {DECAYS}, got {self.decay!r}")
        pruning.densities.check_distribution(self.distribution, f"sparse.{self.name}")

    def resolve(self, steps):
        end = _default_end(steps) if self.end is None else self.end
        every = _default_every(steps) if self.every is None else self.every
        if end > steps:
            raise ValueError(f"{self.name}: end ({end}) is past steps ({steps})")
        return dataclasses.replace(self, end=end, every=every)

    def initial_mask(self, ones, key):
        return _random_initial(ones, key, self.density, self.distribution)

    def due(self, t):
        return (t > 0) & (t < self.end) & (t % self.every == 0)

    def drop_fraction(self, t):
        """``alpha_t`` (float32)."""
        if self.decay == "constant":
            return jnp.float32(self.fraction)
        return jnp.float32(self.fraction / 2) * (1 + jnp.cos(jnp.float32(math.pi) * t.astype(jnp.float32)
                                                            / jnp.float32(self.end)))

    def update_counts(self, mask: Mask, t) -> list:
        """``k_t`` per prunable leaf: ``floor(alpha_t * K_l + 1/2)``, 0 for a dense layer."""
        sizes = [int(np.prod(s)) for s in pruning.densities.prunable_shapes(mask).values()]
        alpha = self.drop_fraction(t)
        return [jnp.int32(0) if k >= n else jnp.floor(alpha * jnp.float32(k) + 0.5).astype(jnp.int32)
                for k, n in zip(_counts(mask, self.density, self.distribution), sizes)]

    def grow_scores(self, task, state, batch, leaves, idx, key):  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, task, state, batch, t, key):
        mask = state.mask
        idx, keeps = _prunable(mask)
        params = jax.tree.leaves(state.params)
        leaves = [params[i] for i in idx]
        scores = self.grow_scores(task, state, batch, leaves, idx, key)
        dropped, new = updates.drop_grow(leaves, keeps, scores, self.update_counts(mask, t))
        return regrow(state, _with_keeps(mask, idx, dropped), _with_keeps(mask, idx, new))


@dataclasses.dataclass(frozen=True)
class SET(_DropGrow):
    """Sparse evolutionary training (see :func:`set_`): regrowth at random."""

    def grow_scores(self, task, state, batch, leaves, idx, key):
        return [jax.random.uniform(jax.random.fold_in(key, i), w.shape) for i, w in enumerate(leaves)]


@dataclasses.dataclass(frozen=True)
class RigL(_DropGrow):
    """Rigged lottery (see :func:`rigl`): regrowth where the dense gradient is largest."""

    needs_batch = True

    def grow_scores(self, task, state, batch, leaves, idx, key):
        grads = jax.tree.leaves(dense_grads(task, state, batch))
        return [grads[i] for i in idx]


def set_(density: float, *, fraction: float = 0.3, every: Optional[int] = None, end: Optional[int] = None,
         decay: str = "cosine", distribution: str = "erk") -> SET:
    """SET (Mocanu et al. 2018): drop the ``alpha_t`` smallest magnitudes of each layer
    every ``every`` steps before ``end``, regrow as many at random (``set`` is Python's)."""
    return SET(density, fraction, every, end, decay, distribution)


def rigl(density: float, *, fraction: float = 0.3, every: Optional[int] = None, end: Optional[int] = None,
         decay: str = "cosine", distribution: str = "erk") -> RigL:
    """RigL (Evci et al. 2020): drop the ``alpha_t`` smallest magnitudes of each layer,
    regrow as many where the dense gradient's magnitude is largest (new weights 0)."""
    return RigL(density, fraction, every, end, decay, distribution)


# ----------------------------------------------------------------------------- any pruner at chosen steps


@dataclasses.dataclass(frozen=True)
class Scheduled(SparseMethod):
    """``pruner`` applied before each step of ``at`` (see :func:`one_shot`, :func:`every`)."""

    pruner: Any
    at: tuple = ()
    straight_through: bool = False

    def __post_init__(self):
        object.__setattr__(self, "at", tuple(sorted(_check_int("step", s, 0, False) for s in self.at)))
        if not self.at:
            raise ValueError("a scheduled pruner needs at least one step")
        pruning.as_pruner(self.pruner)  # a clear error for a non-pruner

    @property
    def name(self) -> str:
        return "scheduled"

    def final_density(self):
        return None

    def resolve(self, steps):
        if self.at[-1] >= steps:
            raise ValueError(f"scheduled pruning at step {self.at[-1]} is not before steps={steps}")
        return self

    def due(self, t):
        return jnp.any(t == jnp.asarray(self.at, jnp.int32))

    def update(self, task, state, batch, t, key):
        mask = state.mask
        if self.straight_through:  # the pruner applied afresh to the dense weights
            idx, keeps = _prunable(mask)
            mask = _with_keeps(mask, idx, [jnp.ones_like(k) for k in keeps])
        return _masked(self, state, pruning.as_pruner(self.pruner).compute(state.params, mask, key))


def one_shot(pruner, step: int, *, straight_through: bool = False) -> Scheduled:
    """``pruner`` (any pruner, e.g. ``pruning.magnitude(0.8)`` or ``pruning.n_m(2, 4)``)
    applied once, before step ``step``; trained sparse from there (``straight_through``:
    see :func:`every`)."""
    return Scheduled(pruner, (step,), straight_through)


def every(pruner, n: int, start: int, end: int, *, straight_through: bool = False) -> Scheduled:
    """``pruner`` applied before steps ``start, start + n, ... <= end`` (each application
    removes its fraction of the survivors).

    ``straight_through``: dense weights kept and updated through the mask
    (:func:`~jaxticket.train.straight_through_step`); each application prunes the *dense*
    weights afresh (``pruning.n_m(2, 4)`` every 100 steps: the 2:4 pattern of the current
    weights, pruned ones free to return); the result holds the masked weights."""
    _check_int("n", n, 1, False)
    return Scheduled(pruner, tuple(range(start, end + 1, n)), straight_through)


for _name, _factory in (("gmp", gmp), ("set", set_), ("rigl", rigl), ("static", static)):
    METHODS.register(_name, _factory)


def get(method, density: Optional[float] = None, **settings) -> SparseMethod:
    """A method object from a name (``"gmp"``, ``"set"``, ``"rigl"``, ``"static"``) and
    ``density`` (+ the method's settings), or ``method`` itself."""
    if isinstance(method, SparseMethod):
        if settings:
            raise ValueError(f"settings {sorted(settings)} are for a method given by name, not {method!r}")
        own = method.final_density()
        if density is not None and own is not None and float(density) != own:
            raise ValueError(f"density={density} differs from the method's own density {own}")
        return method
    if not isinstance(method, str):
        raise TypeError(f"method must be a name {METHODS.names()} or a sparse method object, got {method!r}")
    factory = METHODS.get(method)
    if density is None:
        raise ValueError(f"sparse method {method!r} needs density= (the final fraction of prunable weights kept)")
    return factory(density, **settings)
