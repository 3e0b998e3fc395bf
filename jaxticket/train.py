"""Training: config, train state, masked train/eval steps, optimizers, schedules, ``fit``.

Reads top to bottom:

1. :class:`TrainConfig`, plain frozen data (``dataclasses.asdict`` gives JSON), checked
   by :func:`validate_config`.
2. :func:`make_model`, :func:`make_schedule`, :func:`make_optimizer` build the Flax module
   and the optax transformation of the papers from the config (SGD with momentum /
   Nesterov and coupled weight decay as in PyTorch / open_lth, Adam; constant, step
   decay at milestones, linear warmup).
3. :class:`TrainState` and :func:`init_state`: step, params, BatchNorm stats, optimizer
   state, mask, and raw ``uint32[2]`` keys for the data order and augmentation (and
   dropout) streams. ``init_state(config, seeds=S)`` gives ``S`` replicas at once, a
   leading ``S`` axis on every leaf.
4. :func:`train_step` (one masked step, pure, jittable), :func:`train_steps` (a
   ``lax.scan`` of them, vmapped over replicas, optionally sharded over a mesh) and
   :func:`evaluate` (loss, accuracy, logits and predictions of a whole split, in chunks
   inside jit).
5. :func:`fit`: many steps per compiled call, evaluation every ``eval_every`` steps,
   JSON-lines metrics, progress bar, NaN detection, the state at an exact rewind step,
   periodic checkpoints and bit-identical resume.

Masking. Params are stored masked; every step masks the gradients before the optimizer
and the new params after it, so pruned weights, their momentum and their Adam moments
stay exactly 0 (weight decay included), and the forward pass sees masked weights.

Randomness. Four independent streams: ``init_seed`` (``jax.random.key(init_seed)`` is
the model init key, so ``init_seed=0`` gives ``model.init(jax.random.key(0), ...)``),
``data_seed`` (batch order: step ``s`` trains on
``data.batch_indices(data_key, s, ...)``), ``aug_seed`` (augmentation at step ``s`` uses
``fold_in(aug_key, s)``) and ``dropout_seed``. Because every batch is a pure function of
(key, step), resuming or rewinding never replays an iterator.

Host streaming. Datasets too large for the device (ImageNet) are a :class:`HostStream`
over a random-access stream of batches (``data.make_stream``): ``stream[s]`` is the
(host-augmented) batch of step ``s``, a pure function of the stream's seed and ``s``,
so the same guarantees hold; ``fit`` fetches each chunk's batches on the host (the next
chunk in the background), puts them on the device and scans the masked step over them.

Example::

    from jaxticket import train

    config = train.TrainConfig(model="lenet_300_100", dataset="mnist", lr=0.1,
                               batch_size=60, steps=5000, eval_every=1000)
    state = train.init_state(config)                      # or seeds=4: 4 replicas
    result = train.fit(config, state, train_ds, val_ds=val_ds, test_ds=test_ds,
                       rewind_step=100, metrics_path="metrics.jsonl")
    result.state, result.rewind_state                     # at steps 5000 and 100
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from typing import Any, Callable, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxticket import masks as masks_lib
from jaxticket import models as models_lib
from jaxticket import parallel
from jaxticket.masks import Mask

PyTree = Any

__all__ = [
    "FitResult",
    "HostStream",
    "LOOPS",
    "NonFiniteLossError",
    "OPTIMIZERS",
    "TrainConfig",
    "TrainState",
    "evaluate",
    "fit",
    "init_state",
    "make_model",
    "make_optimizer",
    "make_schedule",
    "milestone_steps",
    "num_replicas",
    "replica",
    "replica_seeds",
    "train_step",
    "train_steps",
    "validate_config",
    "with_mask",
]

OPTIMIZERS = ("sgd", "adam")
MILESTONE_UNITS = ("steps", "epochs")
VARY_STREAMS = ("init", "data", "aug", "dropout")

# stream ids folded into the data / augmentation / dropout seeds
_DATA_STREAM, _AUG_STREAM, _DROPOUT_STREAM = 1, 2, 3


# ============================================================================ config


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Frozen, hashable, JSON via ``asdict``.

    Attributes:
      model: a :func:`jaxticket.models.get` name, e.g. ``"lenet_300_100"``, ``"resnet20"``.
      dataset: dataset name (recorded; the arrays are passed to :func:`fit`).
      num_classes: output width; ``None`` = the model's default.
      input_shape: ``(H, W, C)`` used to initialise; ``None`` = ``models.input_shape(model)``.
      dropout_rate: for models that have dropout (``lenet_*``, ``conv*``); 0 = off.
      kernel_init: kernel initialiser by name (``jaxticket.models.KERNEL_INITS``, e.g.
        ``"kaiming_normal"``, ``"glorot_normal"``); ``None`` = the model's default.
      optimizer: one of :data:`OPTIMIZERS`: ``"sgd"`` or ``"adam"``.
      lr: base learning rate (> 0).
      momentum: SGD momentum in [0, 1) (0 = plain SGD).
      nesterov: Nesterov momentum (SGD, needs momentum > 0).
      weight_decay: coupled L2 (``g += wd * w`` before momentum/Adam, PyTorch style).
      b1, b2, eps: Adam.
      batch_size: training batch size per replica.
      steps: training steps (iterations).
      warmup_steps: linear warmup ``min(1, step / warmup_steps)`` (open_lth); 0 = off.
      milestones: step decay: lr is multiplied by ``gamma`` at each milestone (sorted,
        strictly increasing), counted in ``milestone_unit``.
      milestone_unit: ``"steps"`` or ``"epochs"`` (epoch = ``num_examples // batch_size``
        steps).
      gamma: decay factor at each milestone.
      eval_every: evaluate every this many steps (and at the end); 0 = only at the end.
      eval_batch_size: chunk size of :func:`evaluate`.
      augment: random crop (pad 4) + horizontal flip at every training step.
      init_seed, data_seed, aug_seed, dropout_seed: the random streams.
      chunk_size: training steps per compiled call in :func:`fit`.
      checkpoint_every: save a checkpoint every this many steps when :func:`fit` gets
        ``checkpoints``; 0 = only at the end.
    """

    model: str = "lenet_300_100"
    dataset: str = "mnist"
    num_classes: Optional[int] = None
    input_shape: Optional[tuple] = None
    dropout_rate: float = 0.0
    kernel_init: Optional[str] = None
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    batch_size: int = 128
    steps: int = 1000
    warmup_steps: int = 0
    milestones: tuple = ()
    milestone_unit: str = "steps"
    gamma: float = 0.1
    eval_every: int = 0
    eval_batch_size: int = 1000
    augment: bool = False
    init_seed: int = 0
    data_seed: int = 0
    aug_seed: int = 0
    dropout_seed: int = 0
    chunk_size: int = 100
    checkpoint_every: int = 0

    def __post_init__(self):
        # lists (e.g. from JSON) -> tuples, so the config stays hashable
        object.__setattr__(self, "milestones", tuple(self.milestones))
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", tuple(self.input_shape))
        validate_config(self)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (``dataclasses.asdict``)."""
        return dataclasses.asdict(self)


def validate_config(config: TrainConfig) -> None:
    """Raises ``ValueError`` naming the bad field and the valid values.

    Example: ``TrainConfig(optimizer="rmsprop")`` -> ``ValueError: optimizer must be one
    of ('sgd', 'adam'), got 'rmsprop'``.
    """
    c = config

    def bad(msg):
        raise ValueError(f"TrainConfig: {msg}")

    if c.optimizer not in OPTIMIZERS:
        bad(f"optimizer must be one of {OPTIMIZERS}, got {c.optimizer!r}")
    if not (isinstance(c.lr, (int, float)) and math.isfinite(c.lr) and c.lr > 0):
        bad(f"lr must be a finite number > 0, got {c.lr!r}")
    if not 0 <= c.momentum < 1:
        bad(f"momentum must be in [0, 1), got {c.momentum!r}")
    if c.nesterov and (c.optimizer != "sgd" or c.momentum <= 0):
        bad("nesterov=True needs optimizer='sgd' and momentum > 0")
    if c.weight_decay < 0:
        bad(f"weight_decay must be >= 0, got {c.weight_decay!r}")
    if not (0 <= c.b1 < 1 and 0 <= c.b2 < 1 and c.eps >= 0):
        bad(f"Adam needs 0 <= b1, b2 < 1 and eps >= 0, got b1={c.b1}, b2={c.b2}, eps={c.eps}")
    for name in ("batch_size", "steps", "eval_batch_size", "chunk_size"):
        v = getattr(c, name)
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            bad(f"{name} must be an integer >= 1, got {v!r}")
    for name in ("warmup_steps", "eval_every", "checkpoint_every"):
        v = getattr(c, name)
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
            bad(f"{name} must be an integer >= 0, got {v!r}")
    if c.milestone_unit not in MILESTONE_UNITS:
        bad(f"milestone_unit must be one of {MILESTONE_UNITS}, got {c.milestone_unit!r}")
    ms = list(c.milestones)
    if any((not isinstance(m, (int, np.integer))) or m <= 0 for m in ms) or ms != sorted(set(ms)):
        bad(f"milestones must be strictly increasing positive integers, got {c.milestones!r}")
    if not c.gamma > 0:
        bad(f"gamma must be > 0, got {c.gamma!r}")
    if not 0 <= c.dropout_rate < 1:
        bad(f"dropout_rate must be in [0, 1), got {c.dropout_rate!r}")
    if c.kernel_init is not None and c.kernel_init not in models_lib.KERNEL_INITS:
        bad(f"kernel_init must be None (the model's default) or one of "
            f"{tuple(sorted(models_lib.KERNEL_INITS))}, got {c.kernel_init!r}")
    if c.input_shape is not None and len(c.input_shape) != 3:
        bad(f"input_shape must be (H, W, C), got {c.input_shape!r}")
    for name in ("init_seed", "data_seed", "aug_seed", "dropout_seed"):
        v = getattr(c, name)
        if not isinstance(v, (int, np.integer)) or v < 0:
            bad(f"{name} must be an integer >= 0, got {v!r}")
    if not isinstance(c.model, str):
        bad(f"model must be a model name, got {c.model!r}")


# ============================================================================ model, optimizer


def make_model(config: TrainConfig):
    """The Flax module of ``config.model`` (``dropout_rate`` when > 0, ``kernel_init`` when set)."""
    kwargs = {"dropout_rate": config.dropout_rate} if config.dropout_rate > 0 else {}
    if config.kernel_init is not None:
        kwargs["kernel_init"] = config.kernel_init
    return models_lib.get(config.model, num_classes=config.num_classes, **kwargs)


def _input_shape(config: TrainConfig) -> tuple:
    return tuple(config.input_shape) if config.input_shape else tuple(models_lib.input_shape(config.model))


def milestone_steps(config: TrainConfig, steps_per_epoch: int | None = None) -> tuple[int, ...]:
    """The milestones in steps (converting epochs with ``steps_per_epoch``)."""
    if config.milestone_unit == "steps" or not config.milestones:
        return tuple(int(m) for m in config.milestones)
    if not steps_per_epoch:
        raise ValueError("milestones in epochs need steps_per_epoch (num_examples // batch_size)")
    return tuple(int(m) * int(steps_per_epoch) for m in config.milestones)


def make_schedule(config: TrainConfig, steps_per_epoch: int | None = None) -> Callable:
    """Learning rate as a function of the step (0-based, the step being taken).

    ``lr(step) = config.lr * min(1, step / warmup_steps) * gamma ** #{m <= step}``
    (open_lth's warmup and ``MultiStepLR``). Works on traced steps.

    Example: ``lr=0.1, milestones=(100, 200), gamma=0.1``: lr(99) = 0.1, lr(100) = 0.01,
    lr(200) = 0.001.
    """
    ms = jnp.asarray(milestone_steps(config, steps_per_epoch) or (np.iinfo(np.int32).max,), jnp.int32)
    n_ms = len(config.milestones)
    base, gamma, warm = float(config.lr), float(config.gamma), int(config.warmup_steps)

    def schedule(step):
        step = jnp.asarray(step, jnp.int32)
        lr = jnp.asarray(base, jnp.float32)
        if n_ms:
            lr = lr * jnp.float32(gamma) ** jnp.sum(step >= ms).astype(jnp.float32)
        if warm:
            lr = lr * jnp.minimum(1.0, step.astype(jnp.float32) / warm)
        return lr

    return schedule


def make_optimizer(config: TrainConfig, steps_per_epoch: int | None = None) -> optax.GradientTransformation:
    """The optax transformation of ``config`` (updates to *add* to the params).

    SGD: ``g + wd*w`` -> momentum trace (PyTorch: ``buf = m*buf + g``; Nesterov
    ``g + m*buf``) -> ``-lr(step) * .``. Adam: ``g + wd*w`` -> Adam moments -> ``-lr(step)``
    (PyTorch ``Adam(weight_decay=wd)``, coupled).
    """
    schedule = make_schedule(config, steps_per_epoch)
    parts = []
    if config.weight_decay:
        parts.append(optax.add_decayed_weights(config.weight_decay))
    if config.optimizer == "sgd":
        if config.momentum:
            parts.append(optax.trace(decay=config.momentum, nesterov=config.nesterov))
    else:
        parts.append(optax.scale_by_adam(b1=config.b1, b2=config.b2, eps=config.eps))
    parts.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*parts)


# ============================================================================ state


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


def _init_one(config: TrainConfig, init_seed, data_seed, aug_seed, dropout_seed, mask) -> TrainState:
    model = make_model(config)
    x = jnp.zeros((1, *_input_shape(config)), jnp.float32)
    variables = model.init(jax.random.key(init_seed), x, train=False)
    params = variables["params"]
    if mask is not None:
        params = masks_lib.apply(params, mask)
    tx = make_optimizer(config, steps_per_epoch=1)  # the state does not depend on the schedule
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        mask=mask,
        data_key=_raw_key(data_seed, _DATA_STREAM),
        aug_key=_raw_key(aug_seed, _AUG_STREAM),
        dropout_key=_raw_key(dropout_seed, _DROPOUT_STREAM),
    )


def replica_seeds(config: TrainConfig, seeds: int, vary: Sequence[str] = ("init", "data", "aug")) -> dict:
    """Per-replica seeds: replica ``i`` uses ``seed + i`` for the streams in ``vary`` and
    the config's seed for the others. Replica 0 is the config's own run.

    Example: ``replica_seeds(c, 3, vary=("data",))["data"] == [c.data_seed + i for i in range(3)]``.
    """
    bad = sorted(set(vary) - set(VARY_STREAMS))
    if bad:
        raise ValueError(f"vary: unknown streams {bad}; valid: {VARY_STREAMS}")
    out = {}
    for s in VARY_STREAMS:
        base = getattr(config, f"{s}_seed")
        out[s] = [base + i if s in vary else base for i in range(seeds)]
    return out


def init_state(config: TrainConfig, *, mask: Mask | None | str = "ones", seeds: int | None = None,
               vary: Sequence[str] = ("init", "data", "aug")) -> TrainState:
    """A fresh train state (params initialised from ``init_seed``, masked, step 0).

    Args:
      config: the run's config.
      mask: a :class:`Mask` for the params (leaves ``[...]`` shared by all replicas, or
        ``[S, ...]`` one per replica), ``"ones"`` (default: all-True, default prunable
        leaves), or ``None`` for dense training without any masking.
      seeds: ``None``: one run. ``S``: ``S`` replicas, a leading ``S`` axis on every leaf;
        replica ``i`` uses seed ``+ i`` for the streams in ``vary`` (see
        :func:`replica_seeds`), replica ``i`` equals
        ``init_state(config.replace(init_seed=..., ...))`` bitwise.
      vary: which streams differ across replicas, a subset of ``("init", "data", "aug",
        "dropout")``; e.g. ``("data", "aug")`` for same-init, different-SGD-noise copies.

    Example::

        state = init_state(config, seeds=4, vary=("data", "aug"))
        state.params["fc1"]["kernel"].shape   # (4, 784, 300)
    """
    if isinstance(mask, str) and mask != "ones":
        raise ValueError(f"mask must be a Mask, 'ones' or None, got {mask!r}")
    if mask is not None and not isinstance(mask, (str, Mask)):
        raise TypeError(f"mask must be a jaxticket Mask, 'ones' or None, got {type(mask).__name__}")
    if seeds is None:
        if isinstance(mask, str):
            mask = _ones_mask(config)
        elif mask is not None:
            masks_lib.validate(_abstract_params(config), mask)
        u32 = lambda v: jnp.asarray(v, jnp.uint32)
        return _jit_init(config, u32(config.init_seed), u32(config.data_seed), u32(config.aug_seed),
                         u32(config.dropout_seed), mask)
    if not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise ValueError(f"seeds must be an int >= 1 (the number of replicas), got {seeds!r}")
    per = replica_seeds(config, int(seeds), vary)
    if isinstance(mask, str):
        mask = _ones_mask(config)
    batched_mask = False
    if mask is not None:
        batched_mask = bool(_mask_batch_dims(config, mask))
        masks_lib.validate(_abstract_params(config), mask, batch_dims=int(batched_mask))
        if batched_mask and np.shape(mask.leaves()[0])[0] != seeds:
            raise ValueError(f"the mask has {np.shape(mask.leaves()[0])[0]} replicas, seeds={seeds}")
    # One compiled single-run init called S times (cheap to compile, and replica i is
    # bitwise the single run with those seeds), stacked along a new leading axis.
    replicas = []
    for i in range(int(seeds)):
        m = jax.tree.map(lambda x: x[i], mask) if batched_mask else mask
        u32 = [jnp.asarray(per[s][i], jnp.uint32) for s in VARY_STREAMS]
        replicas.append(_jit_init(config, *u32, m))
    return jax.tree.map(lambda *xs: jnp.stack(xs), *replicas)


def _abstract_params(config):
    return _abstract_params_cached(_structure_config(config))


@functools.lru_cache(maxsize=64)
def _abstract_params_cached(config):
    model = make_model(config)
    x = jax.ShapeDtypeStruct((1, *_input_shape(config)), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)["params"]


def _mask_batch_dims(config, mask) -> int:
    p = jax.tree.leaves(_abstract_params(config))
    m = jax.tree.leaves(mask)
    return int(len(np.shape(m[0])) - len(p[0].shape)) if p else 0


def _ones_mask(config) -> Mask:
    return masks_lib.ones_like(_abstract_params(config))


def _structure_config(config: TrainConfig) -> TrainConfig:
    """Only the fields the initial state depends on (others at their defaults), so one
    compiled init serves configs that differ in hyperparameters alone."""
    return TrainConfig(model=config.model, num_classes=config.num_classes,
                       input_shape=config.input_shape, dropout_rate=config.dropout_rate,
                       kernel_init=config.kernel_init, optimizer=config.optimizer,
                       momentum=0.5 if config.momentum else 0.0,
                       weight_decay=1.0 if config.weight_decay else 0.0)


def _jit_init(config, *args):
    return _jit_init_impl(_structure_config(config), *args)


@functools.partial(jax.jit, static_argnums=0)
def _jit_init_impl(config, init_seed, data_seed, aug_seed, dropout_seed, mask):
    return _init_one(config, init_seed, data_seed, aug_seed, dropout_seed, mask)


def with_mask(state: TrainState, mask: Mask) -> TrainState:
    """``state`` with a new ``mask``: params and every params-shaped part of the optimizer
    state (momentum, Adam moments) masked, so the pruned entries start at exactly 0.

    The IMP step "rewind the survivors to step k": ``with_mask(state_at_k, new_mask)``.
    Works with a seeds axis (mask leaves ``[S, ...]`` like the params).

    Example::

        level_state = with_mask(result.rewind_state, pruner(result.state.params, mask))
    """
    params_def = jax.tree.structure(state.params)
    is_params_like = lambda x: jax.tree.structure(x) == params_def
    opt_state = jax.tree.map(lambda x: masks_lib.apply(x, mask) if is_params_like(x) else x,
                             state.opt_state, is_leaf=is_params_like)
    return state.replace(params=masks_lib.apply(state.params, mask), opt_state=opt_state,
                         mask=mask)


def num_replicas(state: TrainState) -> int | None:
    """``S`` for a state with a seeds axis, ``None`` for a single run."""
    return int(np.shape(state.step)[0]) if np.ndim(state.step) == 1 else None


def replica(state: TrainState, i: int) -> TrainState:
    """Replica ``i`` of a state with a seeds axis, as a single-run state."""
    return jax.tree.map(lambda x: x[i], state)


# ============================================================================ data adapter
# The only places that touch jaxticket.data; everything else goes through these two.


def _train_batch(ds, data_key, aug_key, step, batch_size: int, augment: bool):
    from jaxticket import data as data_lib

    if isinstance(ds, _HostBatch):  # one streamed batch, already augmented on the host
        return data_lib.normalize_with(ds.images, ds.mean, ds.std), ds.labels

    return data_lib.make_batch(ds, jax.random.wrap_key_data(data_key), jax.random.wrap_key_data(aug_key),
                               step, batch_size, augment=augment)


def _eval_batch(ds, index, batch_size: int):
    from jaxticket import data as data_lib

    return data_lib.eval_batch(ds, index, batch_size)


def _num_examples(ds) -> int:
    return int(ds.labels.shape[0])


def _steps_per_epoch(config, ds) -> int:
    if isinstance(ds, (HostStream, _HostBatch)):
        if ds.steps_per_epoch is None:
            if config.milestone_unit == "epochs" and config.milestones:
                raise ValueError("milestones in epochs with a HostStream need its steps_per_epoch")
            return 1
        return int(ds.steps_per_epoch)
    n = _num_examples(ds)
    if config.batch_size > n:
        raise ValueError(f"batch_size {config.batch_size} > {n} training examples")
    return n // config.batch_size


# ============================================================================ steps


def _has_bn(state) -> bool:
    return bool(jax.tree.leaves(state.batch_stats))


def _forward(model, params, batch_stats, x, *, train: bool, dropout_key=None):
    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
    rngs = {"dropout": jax.random.wrap_key_data(dropout_key)} if dropout_key is not None else None
    if train and batch_stats:
        logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
        return logits, updates["batch_stats"]
    return model.apply(variables, x, train=train, rngs=rngs), batch_stats


def _mask(tree, mask):
    return tree if mask is None else masks_lib.apply(tree, mask)


def train_step(config: TrainConfig, state: TrainState, train_ds, *, mesh=None):
    """One masked training step on batch ``state.step``. Pure; jit with ``static_argnums=0``.

    Masking: the gradients are masked before the optimizer and the new params after it,
    so pruned weights and their optimizer moments stay exactly 0. The forward pass uses
    the stored params, which are masked by :func:`init_state` and by :func:`fit` on
    entry; a state built by hand should hold ``masks.apply(params, mask)``.

    Args:
      config: static.
      state: a single-run :class:`TrainState` (use :func:`train_steps` for replicas).
      train_ds: a device-resident ``jaxticket.data.ArrayDataset`` (images uint8
        ``[N, H, W, C]``, labels int32 ``[N]``).
      mesh: optional mesh; the batch is sharded over its ``"data"`` axis.

    Returns:
      ``(new_state, {"loss": f32[], "accuracy": f32[]})`` (metrics of the batch before
      the update).

    Example::

        step = jax.jit(train_step, static_argnums=0)
        state, m = step(config, state, train_ds)
    """
    model = make_model(config)
    tx = make_optimizer(config, _steps_per_epoch(config, train_ds))
    x, y = _train_batch(train_ds, state.data_key, state.aug_key, state.step,
                        config.batch_size, config.augment)
    x, y = parallel.constrain_batch(x, mesh), parallel.constrain_batch(y, mesh)
    dkey = None
    if config.dropout_rate > 0:
        dkey = jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(state.dropout_key),
                                                      state.step))

    def loss_fn(params):
        # params are stored masked (init_state and fit ensure it, and every step keeps
        # it), so the forward pass sees the masked weights without another select.
        logits, new_bs = _forward(model, params, state.batch_stats, x,
                                  train=True, dropout_key=dkey)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        acc = jnp.mean(jnp.argmax(logits, -1) == y)
        return loss, (new_bs, acc)

    (loss, (new_bs, acc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    # masked gradients in: momentum / Adam moments of pruned entries stay 0 (their
    # weight decay term wd * 0 is 0 too); masked params out: pruned weights stay exactly
    # 0. Both selects fuse into the optimizer's elementwise update.
    grads = _mask(grads, state.mask)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = _mask(optax.apply_updates(state.params, updates), state.mask)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=new_bs,
                              opt_state=opt_state)
    return new_state, {"loss": loss, "accuracy": acc.astype(jnp.float32)}


def _batched(state) -> bool:
    return np.ndim(state.step) == 1


def _train_steps(config, state, train_ds, num_steps: int, mesh=None):
    batched = _batched(state)
    one = lambda s: train_step(config, s, train_ds, mesh=mesh)
    if batched:
        one = jax.vmap(one, spmd_axis_name=parallel.REPLICA if mesh is not None else None)

    def body(s, _):
        s, m = one(s)
        return parallel.constrain_state(s, mesh, batched=batched), m

    state, metrics = jax.lax.scan(body, state, None, length=num_steps)
    if mesh is not None:
        metrics = jax.lax.with_sharding_constraint(metrics, parallel.replicated(mesh))
    return state, metrics


def _step_config(config: TrainConfig) -> TrainConfig:
    """``config`` without the fields a training step does not read (seeds live in the
    state; steps, evaluation and checkpoint periods in ``fit``): the compilation key, so
    runs that differ only in those share one compiled program."""
    return config.replace(dataset="", init_seed=0, data_seed=0, aug_seed=0, dropout_seed=0,
                          steps=1, eval_every=0, checkpoint_every=0, eval_batch_size=1)


_train_steps_jit = jax.jit(_train_steps, static_argnums=(0, 3, 4))


def train_steps(config: TrainConfig, state: TrainState, train_ds, num_steps: int, mesh=None):
    return _train_steps_jit(_step_config(config), state, train_ds, int(num_steps), mesh)


train_steps.__doc__ = """``num_steps`` training steps in one compiled call (``lax.scan``).

``train_steps(config, state, train_ds, num_steps, mesh=None) -> (state, metrics)``;
``metrics["loss"]`` / ``["accuracy"]`` are ``f32[num_steps]``, or ``[num_steps, S]`` for
a state with ``S`` replicas (vmapped; each replica its own batch order, mask, keys).
``config``, ``num_steps`` and ``mesh`` are static.
"""


def _train_chunk(config, state, train_ds, num_steps, mesh=None):
    """Like ``_train_steps`` with a *traced* ``num_steps <= config.chunk_size``: one
    compiled program serves every chunk length ``fit`` needs (``lax.fori_loop``; per-step
    metrics go to a ``[chunk_size(, S)]`` buffer, entries past ``num_steps`` are 0)."""
    batched = _batched(state)
    one = lambda s: train_step(config, s, train_ds, mesh=mesh)
    if batched:
        one = jax.vmap(one, spmd_axis_name=parallel.REPLICA if mesh is not None else None)
    shape = (config.chunk_size,) + tuple(np.shape(state.step))
    buf = {"loss": jnp.zeros(shape, jnp.float32), "accuracy": jnp.zeros(shape, jnp.float32)}

    def body(i, carry):
        s, b = carry
        s, m = one(s)
        b = {k: b[k].at[i].set(m[k]) for k in b}
        return parallel.constrain_state(s, mesh, batched=batched), b

    state, buf = jax.lax.fori_loop(0, num_steps, body, (state, buf))
    if mesh is not None:
        buf = jax.lax.with_sharding_constraint(buf, parallel.replicated(mesh))
    return state, buf


_train_chunk_jit_impl = jax.jit(_train_chunk, static_argnums=(0, 4))


def _train_chunk_jit(config, state, train_ds, num_steps, mesh=None):
    return _train_chunk_jit_impl(_step_config(config), state, train_ds, num_steps, mesh)


def _one_step(config, state, train_ds, mesh=None):
    """One (vmapped if replicas) step, as ``fit``'s host loop calls it."""
    batched = _batched(state)
    one = lambda s: train_step(config, s, train_ds, mesh=mesh)
    if batched:
        one = jax.vmap(one, spmd_axis_name=parallel.REPLICA if mesh is not None else None)
    state, m = one(state)
    state = parallel.constrain_state(state, mesh, batched=batched)
    if mesh is not None:
        m = jax.lax.with_sharding_constraint(m, parallel.replicated(mesh))
    return state, m


_one_step_jit_impl = jax.jit(_one_step, static_argnums=(0, 3))


def _host_chunk(config, state, train_ds, num_steps: int, mesh=None):
    """``num_steps`` compiled single steps dispatched from Python (asynchronously)."""
    cfg, ms = _step_config(config), []
    for _ in range(num_steps):
        state, m = _one_step_jit_impl(cfg, state, train_ds, mesh)
        ms.append(m)
    return state, {k: jnp.stack([m[k] for m in ms]) for k in ("loss", "accuracy")}


# ============================================================================ host streaming
# Datasets too large for the device (ImageNet) stream from the host: a random-access
# stream of batches (``stream[step]`` is the batch of global step ``step``, e.g. a grain
# MapDataset from ``jaxticket.data.make_stream``), fetched chunk by chunk.


@dataclasses.dataclass(frozen=True, eq=False)
class HostStream:
    """A host-streamed dataset for :func:`fit` and :func:`evaluate`.

    Attributes:
      stream: random access to batches, ``stream[i]`` -> ``{"image": uint8 [b, H, W, C],
        "label": int32 [b], "mask": bool [b]}`` with ``b`` this process's share of the
        global batch (``jaxticket.data.make_stream`` returns such a grain MapDataset).
        For training ``stream[step]`` is the batch of global step ``step`` (augmented
        on the host); for evaluation ``i`` runs over ``range(len(stream))``, padding
        examples marked ``mask=False``.
      name: dataset name for the normalisation statistics (``data.normalize``).
      steps_per_epoch: training steps per epoch (milestones in epochs); ``None``: unknown.
      max_chunk_steps: at most this many training batches are stacked and sent to the
        device per compiled call (``min(config.chunk_size, max_chunk_steps)``): bounds
        the device memory the batches take.
      num_threads: host threads fetching batches.

    Data order is a pure function of (the stream's seed, step), so resuming and
    rewinding need no iterator replay; the state's ``data_key`` / ``aug_key`` are not
    used. Replicas (a seeds axis) therefore all train on the same batches in the same
    order: for different data orders per replica train them as separate runs over
    streams with different seeds.
    """

    stream: Any
    name: str = "imagenet2012"
    steps_per_epoch: Optional[int] = None
    max_chunk_steps: int = 8
    num_threads: int = 8

    def __len__(self) -> int:
        return len(self.stream)

    def batch(self, i: int) -> dict:
        return self.stream[int(i)]

    def stats(self) -> tuple:
        from jaxticket import data as data_lib

        return data_lib.normalization_stats(self.name)


@flax.struct.dataclass
class _HostBatch:
    """Streamed batch(es) on the device: images uint8 ``[(n,) B, H, W, C]``, labels."""

    images: jax.Array
    labels: jax.Array
    mean: tuple = flax.struct.field(pytree_node=False, default=(0.0,))
    std: tuple = flax.struct.field(pytree_node=False, default=(1.0,))
    steps_per_epoch: Optional[int] = flax.struct.field(pytree_node=False, default=None)


def _as_stream(ds, config: TrainConfig):
    """``ds`` itself, or a bare random-access stream wrapped as a :class:`HostStream`."""
    if ds is None or isinstance(ds, HostStream) or hasattr(ds, "labels"):
        return ds
    if hasattr(ds, "__getitem__") and hasattr(ds, "__len__"):
        return HostStream(ds, name=config.dataset)
    return ds


def _stack(batches: list) -> dict:
    return {k: np.stack([np.asarray(b[k]) for b in batches]) for k in ("image", "label", "mask")}


def _put_host(arrays: dict, mesh, lead: int) -> dict:
    """Host arrays -> device arrays, batch axis ``lead`` sharded over the mesh's ``"data"``
    axis; with several processes each passes its local shard."""
    if mesh is None:
        if jax.process_count() > 1:
            raise ValueError("host-streamed data on several processes needs a mesh")
        return {k: jax.device_put(v) for k, v in arrays.items()}
    from jax.sharding import NamedSharding, PartitionSpec

    sharding = NamedSharding(mesh, PartitionSpec(*([None] * lead), parallel.DATA))
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in arrays.items()}


def _host_batch(ds: HostStream, arrays: dict) -> _HostBatch:
    mean, std = ds.stats()
    return _HostBatch(images=arrays["image"], labels=arrays["label"], mean=tuple(mean),
                      std=tuple(std), steps_per_epoch=ds.steps_per_epoch)


def _prefetched(fn, items, pool, depth: int):
    """``fn(item)`` for each item, computed ``depth`` ahead on ``pool``, in order."""
    import collections

    items, queue = iter(items), collections.deque()
    for item in items:
        queue.append(pool.submit(fn, item))
        if len(queue) > depth:
            yield queue.popleft().result()
    while queue:
        yield queue.popleft().result()


class _ChunkFetcher:
    """Stacked host batches ``[n, b, ...]`` of steps ``s..s+n-1`` for each planned chunk,
    the next chunk fetched in the background while the device trains on this one."""

    def __init__(self, ds: HostStream, plan: list, batch_size: int):
        import concurrent.futures as cf

        self.ds, self.batch_size = ds, batch_size
        self._pool = cf.ThreadPoolExecutor(max(1, ds.num_threads), thread_name_prefix="jaxticket-fetch")
        self._bg = cf.ThreadPoolExecutor(1, thread_name_prefix="jaxticket-chunk")
        self._chunks = _prefetched(self._fetch, plan, self._bg, depth=1)

    def _fetch(self, start_n):
        start, n = start_n
        out = _stack(list(self._pool.map(self.ds.batch, range(start, start + n))))
        if out["image"].shape[1] * jax.process_count() != self.batch_size:
            raise ValueError(f"the stream's batches hold {out['image'].shape[1]} examples per process "
                             f"({jax.process_count()} processes), config.batch_size={self.batch_size}")
        if not out["mask"].all():
            raise ValueError("a training stream yielded masked-out (padding) examples; build it "
                             "with train=True")
        return out

    def next(self) -> dict:
        return next(self._chunks)

    def close(self):
        self._chunks.close()
        self._bg.shutdown(wait=False, cancel_futures=True)
        self._pool.shutdown(wait=False, cancel_futures=True)


def _stream_steps(config, state, batches: _HostBatch, mesh=None):
    """A ``lax.scan`` of the masked train step over stacked streamed batches ``[n, B, ...]``."""
    batched = _batched(state)
    one = lambda s, b: train_step(config, s, b, mesh=mesh)
    if batched:
        one = jax.vmap(one, in_axes=(0, None),
                       spmd_axis_name=parallel.REPLICA if mesh is not None else None)

    def body(s, b):
        s, m = one(s, b)
        return parallel.constrain_state(s, mesh, batched=batched), m

    state, metrics = jax.lax.scan(body, state, batches)
    if mesh is not None:
        metrics = jax.lax.with_sharding_constraint(metrics, parallel.replicated(mesh))
    return state, metrics


_stream_steps_jit = jax.jit(_stream_steps, static_argnums=(0, 3))


def _stream_chunk(config, state, ds: HostStream, host: dict, loop: str, mesh=None):
    """Trains on one fetched chunk (``host``: stacked ``[n, b, ...]``)."""
    cfg = _step_config(config)
    if loop == "device":
        batches = _host_batch(ds, _put_host({k: host[k] for k in ("image", "label")}, mesh, lead=1))
        return _stream_steps_jit(cfg, state, batches, mesh)
    ms = []
    for i in range(host["image"].shape[0]):
        b = _host_batch(ds, _put_host({"image": host["image"][i], "label": host["label"][i]}, mesh, lead=0))
        state, m = _one_step_jit_impl(cfg, state, b, mesh)
        ms.append(m)
    return state, {k: jnp.stack([m[k] for m in ms]) for k in ("loss", "accuracy")}


def _eval_stream_batch(config, state, batch: _HostBatch, valid, mesh=None):
    model = make_model(config)
    from jaxticket import data as data_lib

    def one(s):
        params = _mask(s.params, s.mask)
        x = data_lib.normalize_with(batch.images, batch.mean, batch.std)
        x, y, v = (parallel.constrain_batch(a, mesh) for a in (x, batch.labels, valid))
        logits, _ = _forward(model, params, s.batch_stats, x, train=False)
        logits = logits.astype(jnp.float32)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        correct = jnp.argmax(logits, -1) == y
        return {"loss_sum": jnp.sum(jnp.where(v, nll, 0.0)),
                "n_correct": jnp.sum(v & correct).astype(jnp.int32), "logits": logits}

    if _batched(state):
        one = jax.vmap(one, spmd_axis_name=parallel.REPLICA if mesh is not None else None)
    out = one(state)
    if mesh is not None:
        out = {**out, **{k: jax.lax.with_sharding_constraint(out[k], parallel.replicated(mesh))
                         for k in ("loss_sum", "n_correct")}}
    return out


_eval_stream_batch_jit = jax.jit(_eval_stream_batch, static_argnums=(0, 4))


def _evaluate_stream(config, state, ds: HostStream, mesh=None) -> dict:
    """:func:`evaluate` over a streamed split: batch by batch, sums on the host."""
    import concurrent.futures as cf

    loss_sum = n_correct = n_valid = 0
    logits, prev = [], None

    def collect(item):
        nonlocal loss_sum, n_correct, n_valid
        out, valid = parallel.to_host(item)
        valid = valid.astype(bool)
        loss_sum = loss_sum + out["loss_sum"].astype(np.float64)
        n_correct = n_correct + out["n_correct"].astype(np.int64)
        n_valid += int(valid.sum())
        logits.append(out["logits"][..., valid, :])

    with cf.ThreadPoolExecutor(max(1, ds.num_threads)) as pool:
        for b in _prefetched(ds.batch, range(len(ds)), pool, depth=max(1, ds.num_threads)):
            dev = _put_host({k: np.asarray(b[k]) for k in ("image", "label", "mask")}, mesh, lead=0)
            out = _eval_stream_batch_jit(_eval_config(config), state, _host_batch(ds, dev),
                                         dev["mask"], mesh)
            if prev is not None:  # this batch is queued before the host waits for the last
                collect(prev)
            prev = (out, dev["mask"])
    if prev is not None:
        collect(prev)
    if not n_valid:
        raise ValueError("the evaluation stream has no examples")
    all_logits = np.concatenate(logits, axis=-2)
    return {"loss": np.asarray(loss_sum / n_valid, np.float32),
            "accuracy": np.asarray(n_correct / n_valid, np.float32),
            "logits": all_logits, "predictions": np.argmax(all_logits, -1).astype(np.int32)}


LOOPS = ("auto", "device", "host")


def _resolve_loop(loop: str, state) -> str:
    """``"auto"``: ``"host"`` for conv models on the CPU backend, else ``"device"``.

    XLA:CPU emits the kernel-gradient convolution inside a while loop (``lax.scan`` /
    ``fori_loop``) as a naive loop nest, 20-100x slower than the same step compiled on
    its own (measured with jax 0.10.2), so on CPU conv models take one compiled call per
    step; dispatch costs ~0.1 ms against steps of tens of ms. GPU/TPU and dense models
    keep many steps per compiled call.
    """
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {LOOPS}, got {loop!r}")
    if loop != "auto":
        return loop
    has_conv = any(np.ndim(x) - (1 if _batched(state) else 0) >= 4 for x in jax.tree.leaves(state.params))
    return "host" if (has_conv and jax.default_backend() == "cpu") else "device"


def _evaluate(config, state, ds, mesh=None):
    batched = _batched(state)
    model = make_model(config)
    n = _num_examples(ds)
    bs = min(config.eval_batch_size, n)
    nb = -(-n // bs)

    def one(s):
        params = _mask(s.params, s.mask)

        def body(carry, i):
            x, y, valid = _eval_batch(ds, i, bs)
            x, y, valid = (parallel.constrain_batch(a, mesh) for a in (x, y, valid))
            logits, _ = _forward(model, params, s.batch_stats, x, train=False)
            logits = logits.astype(jnp.float32)
            nll = optax.softmax_cross_entropy_with_integer_labels(logits, y)
            correct = jnp.argmax(logits, -1) == y
            loss_sum, n_correct = carry
            carry = (loss_sum + jnp.sum(jnp.where(valid, nll, 0.0)),
                     n_correct + jnp.sum(valid & correct))
            return carry, logits

        (loss_sum, n_correct), logits = jax.lax.scan(
            body, (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)), jnp.arange(nb))
        logits = logits.reshape(nb * bs, -1)[:n]
        return {"loss": loss_sum / n, "accuracy": n_correct.astype(jnp.float32) / n,
                "logits": logits, "predictions": jnp.argmax(logits, -1).astype(jnp.int32)}

    if batched:
        one = jax.vmap(one, spmd_axis_name=parallel.REPLICA if mesh is not None else None)
    out = one(state)
    if mesh is not None:
        scalars = {k: jax.lax.with_sharding_constraint(out[k], parallel.replicated(mesh))
                   for k in ("loss", "accuracy")}
        out = {**out, **scalars}
    return out


def _eval_config(config: TrainConfig) -> TrainConfig:
    """The fields evaluation reads (the compilation key of :func:`evaluate`)."""
    return TrainConfig(model=config.model, num_classes=config.num_classes,
                       input_shape=config.input_shape, dropout_rate=config.dropout_rate,
                       eval_batch_size=config.eval_batch_size)


_evaluate_jit = jax.jit(_evaluate, static_argnums=(0, 3))


def evaluate(config: TrainConfig, state: TrainState, ds, mesh=None) -> dict:
    ds = _as_stream(ds, config)
    if isinstance(ds, HostStream):
        return _evaluate_stream(config, state, ds, mesh)
    return _evaluate_jit(_eval_config(config), state, ds, mesh)


evaluate.__doc__ = """Loss, accuracy and per-example outputs of a whole split, in chunks inside jit.

``evaluate(config, state, ds, mesh=None) -> {"loss": f32[], "accuracy": f32[],
"logits": f32[N, C], "predictions": int32[N]}`` (a leading ``S`` axis on each for a state
with replicas). Uses the masked params and BatchNorm running statistics
(``train=False``); batches of ``config.eval_batch_size``, the last one padded and
weighted out. ``config`` and ``mesh`` are static.

``ds`` may also be a :class:`HostStream` (or a bare random-access stream of batches,
see :class:`HostStream`): its batches are fetched on the host (threads, a few ahead),
each evaluated by one compiled call with its validity mask, and the sums, logits and
predictions of the valid examples gathered on the host, in stream order (numpy arrays,
the same keys and shapes). With several processes the logits of each global batch are
ordered by process.
"""


# ============================================================================ fit


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf. ``step``: the first step (0-based index of the
    batch) whose loss was not finite; ``replicas``: which replicas (``None`` single run)."""

    def __init__(self, step: int, replicas: Optional[list] = None, loss=None):
        self.step, self.replicas, self.loss = int(step), replicas, loss
        who = f" (replicas {replicas})" if replicas is not None else ""
        super().__init__(
            f"non-finite training loss {loss} at step {self.step}{who}; lower the learning "
            "rate, add warmup, or check the data/mask")


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
      state: the state after the last step.
      rewind_state: the state at exactly ``rewind_step`` (``None`` if not asked for).
      history: one dict per evaluation (the objects written to the metrics file).
    """

    state: TrainState
    rewind_state: Optional[TrainState]
    history: list


_mask_params_jit = jax.jit(masks_lib.apply)


def _host_step(state) -> int:
    s = parallel.to_host(state.step)
    return int(np.ravel(s)[0])


def _segments(start: int, end: int, chunk: int, boundaries: set[int]) -> list[int]:
    """Lengths of the compiled calls from ``start`` to ``end``, cut at every boundary."""
    cuts = sorted({b for b in boundaries if start < b < end} | {end})
    out, s = [], start
    for c in cuts:
        while s < c:
            n = min(chunk, c - s)
            out.append(n)
            s += n
    return out


def _abstract(state):
    def one(x):
        sharding = getattr(x, "sharding", None)
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)

    return jax.tree.map(one, state)


def _tolist(x):
    x = np.asarray(x)
    return x.item() if x.ndim == 0 else x.tolist()


def fit(config: TrainConfig, state: TrainState, train_ds, *, val_ds=None, test_ds=None,
        steps: int | None = None, rewind_step: int | None = None, metrics_path=None,
        checkpoints=None, mesh=None, progress: bool | None = None,
        loop: str = "auto") -> FitResult:
    """Train ``state`` to step ``steps`` (default ``config.steps``); evaluate; checkpoint.

    Runs ``config.chunk_size`` steps per compiled call (:func:`train_steps`), cut so that
    every evaluation (multiples of ``config.eval_every`` and the last step),
    checkpoint (multiples of ``config.checkpoint_every``) and ``rewind_step`` falls on a
    call boundary. Works the same for a single run and for ``S`` replicas.

    Args:
      config: the run's config.
      state: from :func:`init_state` (possibly with replicas, possibly on a mesh), or a
        rewind state to continue from. Not modified.
      train_ds, val_ds, test_ds: device-resident datasets (``val_ds``/``test_ds``
        optional), or host-streamed ones (:class:`HostStream`, or a bare random-access
        stream of batches such as ``data.make_stream``'s, wrapped with
        ``name=config.dataset``). Streamed training: for each call of ``n`` steps from
        step ``s`` the host fetches ``stream[s] .. stream[s + n - 1]`` (the next chunk in
        a background thread), stacks and puts them on the device (batch axis over the
        mesh's ``"data"`` axis; one local shard per process), and a compiled scan of the
        masked train step runs over them; at most ``HostStream.max_chunk_steps`` steps
        per call. The step counter is the stream index, so resume and rewind are exact;
        ``config.augment`` and the state's data/aug keys are unused (the stream
        augments), and replicas all see the same batches.
      steps: stop after exactly this many steps (the state's step counter), e.g. to
        stop at a rewind point.
      rewind_step: also return the state at exactly this step (``FitResult.rewind_state``);
        with ``checkpoints`` it is saved as a rewind point (and restored on resume).
      metrics_path: append one JSON object per evaluation to this file (flushed):
        ``step``, ``train_loss``/``train_accuracy`` (running means since the last
        evaluation), ``val_*``/``test_*``, ``lr``, ``elapsed_s``; lists over replicas.
        Written by process 0 only.
      checkpoints: a ``jaxticket.checkpoints.RunCheckpoints``; saves every
        ``config.checkpoint_every`` steps and at the end, and resumes from its latest
        step if that is ahead of ``state`` (bit-identical continuation).
      mesh: a ``parallel.make_mesh`` mesh the state and datasets were put on.
      progress: tqdm progress bar; ``None`` = on for runs of >= 1000 steps on process 0.
      loop: ``"device"``: ``chunk_size`` steps per compiled call (``lax.fori_loop``);
        ``"host"``: one compiled call per step, metrics fetched per chunk; ``"auto"``
        (default): ``"host"`` for conv models on CPU (an XLA:CPU slowdown of
        convolutions inside loops), else ``"device"``. Results are deterministic within
        a mode, and may differ in the last float bits between modes.

    Returns:
      :class:`FitResult` ``(state, rewind_state, history)``.

    Raises:
      NonFiniteLossError: at the first step with a NaN/inf loss (any replica).
    """
    loop = _resolve_loop(loop, state)
    train_ds = _as_stream(train_ds, config)
    val_ds, test_ds = _as_stream(val_ds, config), _as_stream(test_ds, config)
    streamed = isinstance(train_ds, HostStream)
    if state.mask is not None:  # the invariant train_step relies on (a no-op when it holds)
        state = state.replace(params=_mask_params_jit(state.params, state.mask))
    end = config.steps if steps is None else int(steps)
    start = _host_step(state)
    t0 = time.perf_counter()
    rewind_state = None
    batched = _batched(state)

    if checkpoints is not None:
        latest = checkpoints.latest_step()
        if latest is not None and latest > end:
            raise ValueError(f"{checkpoints!r} holds a checkpoint at step {latest}, past "
                             f"steps={end}; use another run directory for a shorter run")
        if latest is not None and start < latest:
            state = checkpoints.restore(latest, _abstract(state))
            start = _host_step(state)
        if rewind_step is not None and rewind_step < start and rewind_step in checkpoints.rewind_steps():
            rewind_state = checkpoints.restore_rewind_point(rewind_step, _abstract(state))
    if rewind_step is not None:
        if not 0 <= rewind_step <= end:
            raise ValueError(f"rewind_step {rewind_step} outside [0, {end}]")
        if rewind_step < start and rewind_state is None:
            raise ValueError(f"rewind_step {rewind_step} is before the state's step {start} "
                             "and no rewind point was saved for it")
    if start > end:
        raise ValueError(f"the state is at step {start}, past steps={end}")

    schedule = make_schedule(config, _steps_per_epoch(config, train_ds))
    evals = set(range(config.eval_every, end, config.eval_every)) if config.eval_every else set()
    evals.add(end)
    if config.eval_every:
        evals.add(0)
    ckpts = (set(range(config.checkpoint_every, end, config.checkpoint_every))
             if (checkpoints is not None and config.checkpoint_every) else set())
    boundaries = evals | ckpts | ({rewind_step} if rewind_step is not None else set())
    writer = process0 = jax.process_index() == 0
    history: list = []
    f = open(metrics_path, "a") if (metrics_path is not None and writer) else None
    show = (end - start >= 1000) if progress is None else bool(progress)
    bar = None
    if show and process0:
        from tqdm.auto import tqdm
        bar = tqdm(total=end, initial=start, desc="train", unit="step", leave=False)
    sums = {"loss": 0.0, "accuracy": 0.0}
    count = 0

    def on_boundary(state, step):
        nonlocal rewind_state, sums, count
        if rewind_step is not None and step == rewind_step and rewind_state is None:
            rewind_state = state
            if checkpoints is not None and rewind_step not in checkpoints.rewind_steps():
                checkpoints.save_rewind_point(step, state)
        if step in evals and (step > start or step == 0):
            rec = {"step": step,
                   "train_loss": _tolist(sums["loss"] / count) if count else None,
                   "train_accuracy": _tolist(sums["accuracy"] / count) if count else None,
                   "lr": float(schedule(max(step - 1, 0)))}
            for name, ds in (("val", val_ds), ("test", test_ds)):
                if ds is not None:
                    out = parallel.to_host(
                        {k: v for k, v in evaluate(config, state, ds, mesh).items()
                         if k in ("loss", "accuracy")})
                    rec[f"{name}_loss"], rec[f"{name}_accuracy"] = _tolist(out["loss"]), _tolist(out["accuracy"])
            rec["elapsed_s"] = round(time.perf_counter() - t0, 3)
            history.append(rec)
            if f is not None:
                f.write(json.dumps(rec) + "\n")
                f.flush()
            sums, count = {"loss": 0.0, "accuracy": 0.0}, 0
        if step in ckpts or (checkpoints is not None and step == end and step > start):
            checkpoints.save(step, state)

    def finish(chunk_state, metrics, first_step, n):
        """Host side of a chunk: NaN check, running means, progress, boundary actions."""
        nonlocal sums, count
        m = {k: v[:n] for k, v in parallel.to_host(metrics).items()}
        finite = np.isfinite(m["loss"])
        if not finite.all():
            first = int(np.argwhere(~finite)[0, 0])
            reps = sorted(int(r) for r in np.argwhere(~finite[first]).ravel()) if batched else None
            raise NonFiniteLossError(first_step + first, reps, _tolist(m["loss"][first]))
        sums = {k: sums[k] + m[k].astype(np.float64).sum(0) for k in sums}
        count += n
        if bar is not None:
            bar.update(n)
        on_boundary(chunk_state, first_step + n)

    chunk = min(config.chunk_size, train_ds.max_chunk_steps) if streamed else config.chunk_size
    segments = _segments(start, end, chunk, boundaries)
    fetcher = None
    if streamed:
        firsts = np.cumsum([start] + segments[:-1]).tolist()
        fetcher = _ChunkFetcher(train_ds, list(zip(firsts, segments)), config.batch_size)
    try:
        on_boundary(state, start)
        step, pending = start, None
        for n in segments:
            if streamed:
                state, metrics = _stream_chunk(config, state, train_ds, fetcher.next(), loop, mesh)
            elif loop == "device":
                state, metrics = _train_chunk_jit(config, state, train_ds, jnp.int32(n), mesh)
            else:
                state, metrics = _host_chunk(config, state, train_ds, n, mesh)
            # the next chunk is queued on the device before the host waits for this one
            if pending is not None:
                finish(*pending)
            pending, step = (state, metrics, step, n), step + n
        if pending is not None:
            finish(*pending)
    finally:
        if fetcher is not None:
            fetcher.close()
        if bar is not None:
            bar.close()
        if f is not None:
            f.close()
    if checkpoints is not None:
        checkpoints.wait()
    return FitResult(state=state, rewind_state=rewind_state, history=history)
