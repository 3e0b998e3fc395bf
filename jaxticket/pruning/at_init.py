"""Pruning at initialization: SNIP, GraSP and SynFlow, and the sanity checks' inverted scores.

The three score each weight of the network as it is (usually its initialisation) and
prune like every score-based pruner (:class:`~jaxticket.pruning.Scored`: the fraction of
survivors, global or per layer, the count rule, ties by position). SNIP and GraSP need
the model and a batch of data: build them with ``task=`` and ``batch=``, or
:func:`bind` a configured one (``jaxticket.imp`` binds the pruners it is given to its
task and training data). SynFlow needs the model only.

* **SNIP** (Lee et al. 2019, "SNIP: single-shot network pruning based on connection
  sensitivity", Eq. 6): ``s = |g ⊙ w|`` with ``g = ∂L/∂w`` on a batch; the lowest go.
* **GraSP** (Wang et al. 2020, "Picking winning tickets before training by preserving
  gradient flow", Eq. 8): ``S(-w) = -w ⊙ Hg``, ``Hg`` the Hessian-gradient product of the
  loss on a batch; the weights with the *highest* ``S(-w)`` go (removing them reduces the
  gradient flow least), i.e. the lowest signed ``w ⊙ Hg``. ``g`` and ``H`` are taken over
  the prunable weights only (biases and normalisation parameters held fixed), as in the
  authors' code.
* **SynFlow** (Tanaka et al. 2020, "Pruning neural networks without any data by
  iteratively conserving synaptic flow", Eq. 1 and Algorithm 1): with every parameter
  replaced by its absolute value and an all-ones input, ``R = 1ᵀ f(1; |w|)`` and
  ``s = |∂R/∂w ⊙ w|``; data-free, iterative: 100 rounds by default, each keeping
  ``(1 - fraction) ** (r / rounds)`` of the weights (the paper's exponential schedule).

SNIP and GraSP may be iterative too (``iterations=n``, the same exponential schedule,
scores recomputed on the survivors each round); all three score the masked network.
BatchNorm: the model runs in evaluation mode (running statistics), as in the papers'
code; SynFlow takes the absolute value of every parameter, BatchNorm's included.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxticket import masks as masks_lib
from jaxticket.masks import Mask
from jaxticket.pruning.composite import map_leaves
from jaxticket.pruning.core import register
from jaxticket.pruning.counting import check_fraction, count_to_remove, select_count
from jaxticket.pruning.scored import Scored

__all__ = ["GraSP", "SNIP", "SynFlow", "bind", "grasp", "inverted", "snip", "synflow"]


@dataclasses.dataclass(frozen=True, eq=False)
class _AtInit(Scored):
    """Scores computed on the whole network (not leaf by leaf), possibly over several rounds.

    ``eq=False``: a bound pruner holds arrays (its batch), so it is compared and hashed
    by identity; build it once and reuse it.
    """

    scope: str = "global"
    iterations: int = 1
    task: Any = dataclasses.field(default=None, repr=False)
    batch: Any = dataclasses.field(default=None, repr=False)
    needs_data: bool = dataclasses.field(default=True, init=False, repr=False)

    # identity, not the fields: two pruners bound to different batches must never share
    # a compiled program (the parent dataclasses compare fields)
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 1:
            raise ValueError(f"pruning.{self.name}: iterations must be an int >= 1, got {self.iterations!r}")

    def config(self) -> dict:
        out = {"method": self.name, "fraction": self.fraction}
        for f in ("scope", "rounding", "allow_empty", "iterations"):
            default = {"scope": "global", "rounding": "half_up", "allow_empty": False, "iterations": 1}[f]
            if getattr(self, f) != default:
                out[f] = getattr(self, f)
        if self.invert:
            out["invert"] = True
        return out

    def bind(self, task, data=None, batch_size: int = 256):
        """A copy scoring with ``task`` (and a batch: the first ``batch_size`` training
        examples of ``data``, preprocessed as in training, when this method needs data)."""
        batch = self.batch
        if self.needs_data and batch is None and data is not None:
            from jaxticket import data as data_lib

            train = data_lib.as_data(data).train
            idx = np.arange(min(batch_size, train.num_examples))
            batch = data_lib.gather_batch(train, jnp.asarray(idx))
        return dataclasses.replace(self, task=task, batch=batch)

    def _check_bound(self):
        if self.task is None or (self.needs_data and self.batch is None):
            what = "a task and a batch" if self.needs_data else "a task"
            raise ValueError(f"pruning.{self.name} needs {what}: build it with task=... "
                             f"{'and batch=(x, y) ' if self.needs_data else ''}or call .bind(task, data) "
                             "(jaxticket.imp binds it to its task and data)")

    def score_tree(self, params, mask: Mask):  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} must define score_tree(params, mask)")

    def compute(self, params, mask: Mask, key) -> Mask:
        self._check_bound()
        ratio = check_fraction(self.fraction, f"pruning.{self.name}")
        idx = [i for i, flag in enumerate(mask.prunable) if flag]
        groups = [idx] if self.scope == "global" else [[i] for i in idx]
        start = [sum(jnp.sum(mask.leaves()[i], dtype=jnp.int32) for i in g) for g in groups]
        final = [n - count_to_remove(ratio, n, self.rounding) for n in start]
        rounds, density = self.iterations, np.float32(1.0 - float(self.fraction))

        def one_round(r, keep_tree):
            # Round r keeps (1 - fraction) ** (r / rounds) of the entries alive at the start
            # (the exponential schedule of SynFlow's Algorithm 1, counted against the start as
            # its code does, so rounding never stalls), the last round exactly the one-shot count.
            m = mask.replace(keep=keep_tree)
            share = density ** (r.astype(jnp.float32) / rounds)
            keep = [jnp.where(r == rounds, f, jnp.maximum(f, jnp.floor(n.astype(jnp.float32) * share + 0.5)
                                                          .astype(jnp.int32))) for n, f in zip(start, final)]
            scores = jax.tree.leaves(self.score_tree(masks_lib.apply(params, m), m))
            keeps = m.leaves()
            alive = [sum(jnp.sum(keeps[i], dtype=jnp.int32) for i in g) for g in groups]
            ks = [jnp.maximum(a - kp, 0) for a, kp in zip(alive, keep)]
            removed = select_count([scores[i] for i in idx], [keeps[i] for i in idx],
                                   ks[0] if self.scope == "global" else ks, self.scope,
                                   signed=self.signed_scores, invert=self.invert)
            out = list(keeps)
            for i, flags in zip(idx, removed):
                out[i] = keeps[i] & ~flags
            return jax.tree.unflatten(jax.tree.structure(mask.keep), out)

        keep_tree = jax.lax.fori_loop(1, rounds + 1, one_round, mask.keep) if rounds > 1 else \
            one_round(jnp.int32(1), mask.keep)
        return mask.replace(keep=keep_tree)

    def _loss(self, params, batch_stats, temperature: float = 1.0):
        x, y = self.batch
        outputs, _ = self.task.forward(params, batch_stats, x, train=False)
        return self.task.loss(outputs / temperature, y).mean()


def _batch_stats(task, params):
    """Fresh BatchNorm statistics for the task's model (empty without BatchNorm)."""
    return task.init_variables(jax.random.key(0)).get("batch_stats", {})


@register("snip", examples=[{"fraction": 0.3}, {"fraction": 0.3, "scope": "layer", "iterations": 2}])
@dataclasses.dataclass(frozen=True, eq=False)
class SNIP(_AtInit):
    """SNIP: ``|∂L/∂w ⊙ w|`` on a batch (see the module docstring)."""

    def score_tree(self, params, mask):
        grads = jax.grad(self._loss)(params, _batch_stats(self.task, params))
        return jax.tree.map(lambda g, w: jnp.abs(g * w), grads, params)


@register("grasp", examples=[{"fraction": 0.3}, {"fraction": 0.3, "scope": "layer", "temperature": 1.0}])
@dataclasses.dataclass(frozen=True, eq=False)
class GraSP(_AtInit):
    """GraSP: signed ``w ⊙ Hg``, the lowest go (see the module docstring). ``temperature``:
    the logits are divided by it for both gradients (200, the authors' code; 1: none)."""

    signed_scores = True
    temperature: float = 200.0

    def config(self) -> dict:
        out = super().config()
        if self.temperature != 200.0:
            out["temperature"] = self.temperature
        return out

    def score_tree(self, params, mask):
        stats, t = _batch_stats(self.task, params), self.temperature
        g = jax.lax.stop_gradient(jax.grad(self._loss)(params, stats, t))
        # The gradient and the Hessian of the prunable weights only (the authors' code takes
        # them over the conv/linear weights): H_ww g_w, without the biases' H_wb g_b.
        g = jax.tree.unflatten(jax.tree.structure(g), [
            x if flag else jnp.zeros_like(x) for x, flag in zip(jax.tree.leaves(g), mask.prunable)])
        # Hg = ∂/∂w (gᵀ ∂L/∂w) with g held fixed: a Hessian-gradient product
        hg = jax.grad(lambda p: sum(jnp.vdot(a, b) for a, b in zip(
            jax.tree.leaves(jax.grad(self._loss)(p, stats, t)), jax.tree.leaves(g))))(params)
        return jax.tree.map(lambda h, w: h * w, hg, params)


@register("synflow", examples=[{"fraction": 0.3, "iterations": 3}])
@dataclasses.dataclass(frozen=True, eq=False)
class SynFlow(_AtInit):
    """SynFlow: ``|∂R/∂w ⊙ w|`` of the linearised network on an all-ones input, iterated
    (see the module docstring)."""

    iterations: int = 100
    needs_data: bool = dataclasses.field(default=False, init=False, repr=False)

    def config(self) -> dict:
        out = super().config()
        if self.iterations == 100:
            out.pop("iterations", None)
        elif "iterations" not in out:
            out["iterations"] = self.iterations
        return out

    def score_tree(self, params, mask):
        stats = jax.tree.map(jnp.abs, _batch_stats(self.task, params))
        ones = jnp.ones((1, *self.task.input_shape), jnp.dtype(self.task.input_dtype))

        def synaptic_flow(p):
            out, _ = self.task.forward(jax.tree.map(jnp.abs, p), stats, ones, train=False)
            return jnp.sum(out)

        grads = jax.grad(synaptic_flow)(params)
        return jax.tree.map(lambda g, w: jnp.abs(g * w), grads, params)


def snip(fraction: float, *, task=None, batch=None, scope: str = "global", iterations: int = 1, **kw) -> SNIP:
    """SNIP (Lee et al. 2019): removes the ``fraction`` of survivors with the lowest
    ``|∂L/∂w ⊙ w|`` on ``batch = (x, y)``. Global by default, as in the paper.

    Example:
        >>> import numpy as np
        >>> from jaxticket import masks, train
        >>> task = train.task_from_config(train.TrainConfig(model="lenet_32", input_shape=(4, 4, 1)))
        >>> x, y = np.ones((8, 4, 4, 1), np.float32), np.arange(8) % 10
        >>> params = train.init_state(task).params
        >>> mask = snip(0.9, task=task, batch=(x, y))(params, masks.ones_like(params))
        >>> round(float(masks.density(mask)), 3)
        0.1
    """
    return SNIP(fraction, scope, iterations=iterations, task=task, batch=batch, **kw)


def grasp(fraction: float, *, task=None, batch=None, scope: str = "global", iterations: int = 1,
          temperature: float = 200.0, **kw) -> GraSP:
    """GraSP (Wang et al. 2020): removes the ``fraction`` of survivors with the highest
    ``S(-w) = -w ⊙ Hg`` on ``batch = (x, y)``, the logits divided by ``temperature`` (200
    in the authors' code). Global by default, as in the paper.

    Example (as for :func:`snip`; the task and batch can also be bound later by
    :func:`jaxticket.imp`):
        >>> import numpy as np
        >>> from jaxticket import masks, train
        >>> task = train.task_from_config(train.TrainConfig(model="lenet_32", input_shape=(4, 4, 1)))
        >>> x, y = np.ones((8, 4, 4, 1), np.float32), np.arange(8) % 10
        >>> params = train.init_state(task).params
        >>> mask = grasp(0.5, task=task, batch=(x, y))(params, masks.ones_like(params))
        >>> round(float(masks.density(mask)), 3)
        0.5
    """
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"pruning.grasp: temperature must be a number > 0, got {temperature!r}")
    return GraSP(fraction, scope, iterations=iterations, task=task, batch=batch, temperature=float(temperature), **kw)


def synflow(fraction: float, *, task=None, scope: str = "global", iterations: int = 100, **kw) -> SynFlow:
    """SynFlow (Tanaka et al. 2020): data-free, ``iterations`` rounds (100 by default) of
    removing the lowest ``|∂R/∂w ⊙ w|`` on an exponential schedule to ``fraction``.

    Example (no data: only the model's input shape):
        >>> from jaxticket import masks, train
        >>> task = train.task_from_config(train.TrainConfig(model="lenet_32", input_shape=(4, 4, 1)))
        >>> params = train.init_state(task).params
        >>> mask = synflow(0.9, task=task, iterations=10)(params, masks.ones_like(params))
        >>> round(float(masks.density(mask)), 3), min(row["kept"] for row in masks.summary(mask).as_dicts() if row["prunable"]) > 0
        (0.1, True)
    """
    return SynFlow(fraction, scope, iterations=iterations, task=task, **kw)


# ----------------------------------------------------------------------------- binding, inverting


def bind(pruner, task, data=None):
    """``pruner`` with every part that needs the model (and data) bound to ``task`` and a
    batch of ``data``'s training split; anything else is returned as it is.

    Generic over composites (:func:`~jaxticket.pruning.composite.map_leaves`): every leaf
    with a ``bind(task, data)`` method (SNIP, GraSP, SynFlow) is bound, inside partitions,
    chains, level schedules and registered methods alike.

    Example: ``bind(snip(0.9), task, data)``.
    """
    return map_leaves(lambda leaf: _bind_leaf(leaf, task, data), pruner)


def _bind_leaf(leaf, task, data):
    method = getattr(leaf, "bind", None)
    return method(task, data) if callable(method) else leaf


def inverted(pruner):
    """The same pruner removing the *highest*-scoring weights or channels instead of the
    lowest (the "invert the scores" sanity check of Frankle et al. 2021, "Pruning neural
    networks at initialization: why are we missing the mark?"). Works on score-based
    pruners (:class:`~jaxticket.pruning.Scored`) and on any composite of them: partitions,
    chains, level schedules, registered methods (through
    :func:`~jaxticket.pruning.composite.map_leaves`).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxticket import masks, pruning
        >>> params = {"w": jnp.array([[1.0, -4.0, 2.0, 3.0]])}
        >>> inverted(pruning.magnitude(0.5))(params, masks.ones_like(params)).keep["w"].tolist()
        [[True, False, True, False]]
    """
    return map_leaves(_invert_leaf, pruner, keeps_config=False)


def _invert_leaf(leaf):
    if isinstance(leaf, Scored):
        return dataclasses.replace(leaf, invert=not leaf.invert)
    raise ValueError(f"inverted: {leaf!r} is not score-based (a Scored pruner, or a partition/chain of them); "
                     "its scores cannot be inverted")
