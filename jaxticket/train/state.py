"""The train state, its initialisation (all seeds in one program), and masks on states.

Randomness. Four independent streams: ``init_seed`` (``jax.random.key(init_seed)`` is
the model init key, so ``init_seed=0`` gives ``model.init(jax.random.key(0), ...)``),
``data_seed`` (batch order: step ``s`` trains on ``data.batch_indices(data_key, s,
...)``), ``aug_seed`` (augmentation at step ``s`` uses ``fold_in(aug_key, s)``) and
``dropout_seed``. Because every batch is a pure function of (key, step), resuming or
rewinding never replays an iterator.

Seeds are a leading axis: ``init_state(task, seeds=S)`` initialises ``S`` replicas in
one compiled program (``jax.vmap`` over the seeds), replica ``i`` bitwise equal to the
single run with seed ``+ i`` in the streams of ``vary``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxticket import masks as masks_lib
from jaxticket import parallel
from jaxticket.masks import Mask
from jaxticket.train.task import Task

__all__ = [
    "SCHEDULE_STATES",
    "StepScheduleState",
    "abstract",
    "host_step",
    "TrainState",
    "VARY_STREAMS",
    "advance_schedules",
    "init_state",
    "is_batched",
    "num_replicas",
    "replica",
    "replica_seeds",
    "with_mask",
]

PyTree = Any
VARY_STREAMS = ("init", "data", "aug", "dropout")
# stream ids folded into the data / augmentation / dropout seeds
_DATA_STREAM, _AUG_STREAM, _DROPOUT_STREAM = 1, 2, 3


@flax.struct.dataclass
class TrainState:
    """A training run's state; a pytree. With ``S`` replicas every leaf has a leading ``S``.

    Attributes:
      step: int32 ``[]`` — the number of steps taken (the next batch is ``step``).
      params: the model's ``variables["params"]``; pruned entries exactly 0.
      batch_stats: BatchNorm running statistics, ``{}`` for models without BatchNorm.
      opt_state: the optax state.
      mask: a :class:`jaxticket.masks.Mask` for ``params``, or ``None`` (dense, no masking).
      data_key, aug_key, dropout_key: raw ``uint32[2]`` keys of those streams.

    Example (built by :func:`init_state`, never by hand)::

        state = init_state(task, seeds=4)
        state.step.shape, state.params["fc1"]["kernel"].shape    # (4,), (4, 784, 300)
        state.mask.keep["fc1"]["kernel"].dtype                    # bool
    """

    step: jax.Array
    params: PyTree
    batch_stats: PyTree
    opt_state: PyTree
    mask: Optional[Mask]
    data_key: jax.Array
    aug_key: jax.Array
    dropout_key: jax.Array


def _raw_key(seed, stream: int | None = None) -> jax.Array:
    key = jax.random.key(seed)
    if stream is not None:
        key = jax.random.fold_in(key, stream)
    return jax.random.key_data(key)


def _init_one(task: Task, init_seed, data_seed, aug_seed, dropout_seed, mask) -> TrainState:
    variables = task.init_variables(jax.random.key(init_seed))
    params = variables["params"]
    if mask is not None:
        params = masks_lib.apply(params, mask)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=task.tx.init(params),
        mask=mask,
        data_key=_raw_key(data_seed, _DATA_STREAM),
        aug_key=_raw_key(aug_seed, _AUG_STREAM),
        dropout_key=_raw_key(dropout_seed, _DROPOUT_STREAM),
    )


@functools.partial(jax.jit, static_argnums=(0, 6))
def _init(task: Task, init_seed, data_seed, aug_seed, dropout_seed, mask, mask_axis):
    if np.ndim(init_seed) == 0:
        return _init_one(task, init_seed, data_seed, aug_seed, dropout_seed, mask)
    return jax.vmap(functools.partial(_init_one, task), in_axes=(0, 0, 0, 0, mask_axis))(
        init_seed, data_seed, aug_seed, dropout_seed, mask)


def replica_seeds(seeds: int, vary: Sequence[str] = ("init", "data", "aug"), *, init_seed: int = 0,
                  data_seed: int = 0, aug_seed: int = 0, dropout_seed: int = 0) -> dict:
    """Per-replica seeds: replica ``i`` uses ``seed + i`` for the streams in ``vary`` and
    the given seed for the others. Replica 0 is the single run with the given seeds.

    Example:
        >>> replica_seeds(3, vary=("data",), data_seed=5)["data"]
        [5, 6, 7]
    """
    bad = sorted(set(vary) - set(VARY_STREAMS))
    if bad:
        raise ValueError(f"vary: unknown streams {bad}; valid: {VARY_STREAMS}")
    base = {"init": init_seed, "data": data_seed, "aug": aug_seed, "dropout": dropout_seed}
    return {s: [base[s] + i if s in vary else base[s] for i in range(seeds)] for s in VARY_STREAMS}


def _check_seed(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {v!r}")


def init_state(task: Task, *, mask: Mask | None | str = "ones", seeds: int | None = None,
               vary: Sequence[str] = ("init", "data", "aug"), init_seed: int = 0, data_seed: int = 0,
               aug_seed: int = 0, dropout_seed: int = 0) -> TrainState:
    """A fresh train state (params initialised from ``init_seed``, masked, step 0).

    Args:
      task: the :class:`~jaxticket.train.Task`.
      mask: a :class:`Mask` for the params (leaves ``[...]`` shared by all replicas, or
        ``[S, ...]`` one per replica), ``"ones"`` (default: all-True, the default
        prunable leaves), or ``None`` for dense training without any masking.
      seeds: ``None``: one run. ``S``: ``S`` replicas, a leading ``S`` axis on every leaf,
        all initialised by one compiled program; replica ``i`` uses seed ``+ i`` for
        the streams in ``vary`` (:func:`replica_seeds`) and equals the single run with
        those seeds bitwise.
      vary: which streams differ across replicas, a subset of ``("init", "data", "aug",
        "dropout")``; e.g. ``("data", "aug")`` for same-init, different-SGD-noise copies.
      init_seed, data_seed, aug_seed, dropout_seed: the random streams (module docstring).

    Example:
        >>> from jaxticket import train
        >>> task = train.task_from_config(train.TrainConfig(model="lenet_300_100"))
        >>> state = init_state(task, seeds=4, vary=("data", "aug"))
        >>> state.params["fc1"]["kernel"].shape
        (4, 784, 300)
    """
    if not isinstance(task, Task):
        raise TypeError(f"init_state needs a jaxticket Task, got {type(task).__name__} (build one with "
                        "jaxticket.Task(model, input_shape, ...) or train.task_from_config(config))")
    if isinstance(mask, str) and mask != "ones":
        raise ValueError(f"mask must be a Mask, 'ones' or None, got {mask!r}")
    if mask is not None and not isinstance(mask, (str, Mask)):
        raise TypeError(f"mask must be a jaxticket Mask, 'ones' or None, got {type(mask).__name__}")
    for name, v in (("init_seed", init_seed), ("data_seed", data_seed), ("aug_seed", aug_seed),
                    ("dropout_seed", dropout_seed)):
        _check_seed(name, v)
    abstract = task.abstract_params()
    if isinstance(mask, str):
        mask = masks_lib.ones_like(abstract)
    if seeds is None:
        if mask is not None:
            masks_lib.validate(abstract, mask)
        u32 = lambda v: np.uint32(v)  # noqa: E731
        return _committed(_init(task, u32(init_seed), u32(data_seed), u32(aug_seed), u32(dropout_seed), mask, None))
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise ValueError(f"seeds must be an int >= 1 (the number of replicas), got {seeds!r}")
    per = replica_seeds(int(seeds), vary, init_seed=init_seed, data_seed=data_seed, aug_seed=aug_seed,
                        dropout_seed=dropout_seed)
    mask_axis = None
    if mask is not None:
        p_leaves, m_leaves = jax.tree.leaves(abstract), mask.leaves()
        batched = bool(p_leaves) and len(np.shape(m_leaves[0])) > len(p_leaves[0].shape)
        masks_lib.validate(abstract, mask, batch_dims=int(batched))
        if batched:
            if np.shape(m_leaves[0])[0] != seeds:
                raise ValueError(f"the mask has {np.shape(m_leaves[0])[0]} replicas, seeds={seeds}")
            mask_axis = 0
    u32 = [np.asarray(per[s], np.uint32) for s in VARY_STREAMS]
    return _committed(_init(task, *u32, mask, mask_axis))


def _committed(state):
    """``state`` committed to this process's first device (no copy). A compiled program is
    keyed on whether its inputs are committed; states restored from checkpoints are, so
    fresh ones are too, and both reuse the same programs."""
    return jax.device_put(state, jax.local_devices()[0])


@jax.jit
def with_mask(state: TrainState, mask: Mask) -> TrainState:
    """``state`` with a new ``mask``: params and every params-shaped part of the optimizer
    state (momentum, Adam moments) masked, so the pruned entries start at exactly 0.

    The IMP step "rewind the survivors to step k": ``with_mask(state_at_k, new_mask)``.
    Works with a seeds axis (mask leaves ``[S, ...]`` like the params).

    Example:
        >>> import jax, numpy as np
        >>> from jaxticket import masks, pruning, train
        >>> task = train.task_from_config(train.TrainConfig(model="lenet_16", input_shape=(4, 4, 1), lr=0.1))
        >>> rewind_state = train.init_state(task)             # the rewind point (step 0)
        >>> x, y = np.zeros((8, 4, 4, 1), np.float32), np.zeros(8, np.int32)
        >>> state, _ = jax.jit(train.train_step, static_argnums=0)(task, rewind_state, (x, y))
        >>> pruner, mask = pruning.magnitude(0.5), rewind_state.mask
        >>> level_state = with_mask(rewind_state, pruner(state.params, mask))
        >>> int(level_state.step), float(masks.density(level_state.mask))
        (0, 0.5)
        >>> int((level_state.params["fc1"]["kernel"] == 0).sum())     # of 16 x 16
        128
    """
    params_def = jax.tree.structure(state.params)

    def is_params_like(x) -> bool:  # optax.masked / multi_transform hold MaskedNode where a leaf is not theirs
        return not _is_masked_node(x) and jax.tree.structure(x, is_leaf=_is_masked_node) == params_def

    opt_state = jax.tree.map(lambda x: _apply_skipping_masked_nodes(x, mask) if is_params_like(x) else x,
                             state.opt_state, is_leaf=is_params_like)
    return state.replace(params=masks_lib.apply(state.params, mask), opt_state=opt_state, mask=mask)


def _is_masked_node(x) -> bool:
    return isinstance(x, optax.MaskedNode)


def _apply_skipping_masked_nodes(tree, mask: Mask):
    """:func:`jaxticket.masks.apply` on a params-shaped tree whose leaves may be
    ``optax.MaskedNode`` (the parts of the params an ``optax.masked`` optimizer leaves alone)."""
    leaves, treedef = jax.tree.flatten(tree, is_leaf=_is_masked_node)
    out = [x if _is_masked_node(x) or not flag else jnp.where(keep, x, jnp.zeros((), jnp.result_type(x)))
           for x, keep, flag in zip(leaves, mask.leaves(), mask.prunable)]
    return jax.tree.unflatten(treedef, out)


#: optimizer states that count steps for a learning-rate (or other hyperparameter) schedule
SCHEDULE_STATES = tuple(t for t in (optax.ScaleByScheduleState, getattr(optax, "InjectHyperparamsState", None),
                                    getattr(optax, "InjectStatefulHyperparamsState", None)) if t is not None)


class StepScheduleState(NamedTuple):
    """The state of :func:`jaxticket.train.scale_by_step_schedule` (a schedule of the
    *global* training step): ``schedule_offset``, an ``int32`` added to the step the
    schedule reads (0, except for a fine-tuned level, whose schedule is held at its end).

    A checkpoint written before this state existed (when the transformation had none)
    restores with the offset 0 (:mod:`jaxticket.checkpoints`)."""

    schedule_offset: jax.Array


def advance_schedules(opt_state: PyTree, step, train_step=None) -> PyTree:
    """``opt_state`` with the step counter of every optax schedule in it set to ``step``.

    A fresh optimizer state (``tx.init``) counts from 0; training resumed at step k (a
    rewound IMP level) needs its schedules at k, as ``optax.scale_by_schedule``,
    ``scale_by_learning_rate(schedule)`` and ``inject_hyperparams`` read their counter, not
    the training step. Other counters (Adam's bias correction of its fresh moments) are
    left at 0. ``step``: an int or an ``int[S]`` for a state with a seeds axis.

    Schedules of the global training step (:class:`StepScheduleState`, the presets'
    optimizers) already read the training step; with ``train_step`` (the state's step
    counter) they are offset by ``step - train_step`` so they too read ``step`` now (a
    fine-tuned level: training at step k, its schedule at T - 1); without it, untouched.

    Example:
        >>> tx = optax.sgd(optax.linear_schedule(0.0, 1.0, 10))
        >>> state = advance_schedules(tx.init({"w": jnp.zeros(2)}), 5)
        >>> int(jax.tree.leaves(state)[-1])
        5
    """
    def advance(x):
        if isinstance(x, StepScheduleState):
            if train_step is None:
                return x
            offset = jnp.asarray(step) - jnp.asarray(train_step)
            return x._replace(schedule_offset=jnp.broadcast_to(offset.astype(x.schedule_offset.dtype),
                                                               jnp.shape(x.schedule_offset)))
        if isinstance(x, SCHEDULE_STATES):
            return x._replace(count=jnp.broadcast_to(jnp.asarray(step).astype(x.count.dtype), jnp.shape(x.count)))
        return x

    return jax.tree.map(advance, opt_state, is_leaf=lambda x: isinstance(x, (*SCHEDULE_STATES, StepScheduleState)))


def is_batched(state: TrainState) -> bool:
    """Whether ``state`` has a leading seeds axis."""
    return np.ndim(state.step) == 1


def num_replicas(state: TrainState) -> int | None:
    """``S`` for a state with a seeds axis, ``None`` for a single run."""
    return int(np.shape(state.step)[0]) if is_batched(state) else None


def replica(state: TrainState, i: int) -> TrainState:
    """Replica ``i`` of a state with a seeds axis, as a single-run state (one compiled
    program per state structure, not one slice per leaf shape; ``i < 0`` counts from the
    end; an index outside ``[-S, S)`` raises ``IndexError``)."""
    n = num_replicas(state)
    if n is None or not -n <= i < n:
        raise IndexError(f"replica {i} of a state with {n} replicas (valid: {-(n or 0)}..{(n or 0) - 1})")
    return _replica(state, jnp.int32(i % n))


@jax.jit
def _replica(state, i):
    return jax.tree.map(lambda x: x[i], state)


def host_step(state: TrainState) -> int:
    """The state's step counter on the host (replica 0's for replicas)."""
    return int(np.ravel(parallel.to_host(state.step))[0])


def abstract(tree):
    """``jax.ShapeDtypeStruct`` leaves (with shardings) of a state, as a restore target."""
    def one(x):
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=getattr(x, "sharding", None))

    return jax.tree.map(one, tree)
