"""TrainConfig: the training settings of the presets and the command line, as plain data,
and :func:`task_from_config`, which turns one into a :class:`~jaxticket.train.Task`.

The config is read once at the edge (a preset, JSON, ``--set key=value``); below it the
engine works on the Task and plain keyword arguments. Optimizers follow PyTorch /
open_lth: SGD with momentum or Nesterov and coupled weight decay (``g += wd * w`` before
momentum), Adam with coupled weight decay; the learning rate is a function of the
*global* training step (linear warmup, step decay at milestones), so a level rewound to
step ``k`` with a fresh optimizer continues its schedule at ``k``, as open_lth does.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxticket import models as models_lib
from jaxticket.train.task import Task

__all__ = [
    "MILESTONE_UNITS",
    "OPTIMIZERS",
    "TrainConfig",
    "make_model",
    "make_optimizer",
    "make_schedule",
    "milestone_steps",
    "scale_by_step_schedule",
    "task_from_config",
    "validate_config",
]

OPTIMIZERS = ("sgd", "adam")
MILESTONE_UNITS = ("steps", "epochs")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run of a preset. Frozen, hashable, JSON via ``asdict``.

    Attributes:
      model: a :func:`jaxticket.models.get` name, e.g. ``"lenet_300_100"``, ``"resnet20"``.
      dataset: a registered dataset name (:func:`jaxticket.data.list_datasets`).
      num_classes: output width; ``None`` = the model's default.
      input_shape: ``(H, W, C)`` used to initialise; ``None`` = the example shape of the
        dataset the run loads (``models.input_shape(model)`` where no data is given).
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
      eval_batch_size: chunk size of :func:`jaxticket.train.evaluate`.
      augment: random crop (pad 4) + horizontal flip at every training step.
      init_seed, data_seed, aug_seed, dropout_seed: the random streams.
      chunk_size: training steps per compiled call in :func:`jaxticket.train.fit`.
      checkpoint_every: save a checkpoint every this many steps (0 = only at the end).

    Example:
        >>> config = TrainConfig(model="lenet_300_100", optimizer="sgd", lr=0.1, momentum=0.9,
        ...                      steps=30000, milestones=(15000, 22500), batch_size=128)
        >>> config.gamma, config.dataset
        (0.1, 'mnist')
        >>> TrainConfig(lr=-1.0)
        Traceback (most recent call last):
        ...
        ValueError: TrainConfig: lr must be a finite number > 0, got -1.0
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
        if isinstance(self.milestones, (list, tuple)):
            object.__setattr__(self, "milestones", tuple(self.milestones))
        if isinstance(self.input_shape, list):
            object.__setattr__(self, "input_shape", tuple(self.input_shape))
        validate_config(self)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (``dataclasses.asdict``)."""
        return dataclasses.asdict(self)

    @property
    def seeds(self) -> dict:
        """The random streams as keyword arguments of :func:`jaxticket.train.init_state`."""
        return {"init_seed": self.init_seed, "data_seed": self.data_seed,
                "aug_seed": self.aug_seed, "dropout_seed": self.dropout_seed}


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def validate_config(config: TrainConfig) -> None:
    """Raises ``ValueError`` naming the bad field and the valid values.

    Types are strict: a bool is not a number, a string is not a number.

    Example: ``TrainConfig(optimizer="rmsprop")`` -> ``ValueError: optimizer must be one
    of ('sgd', 'adam'), got 'rmsprop'``.
    """
    c = config

    def bad(msg):
        raise ValueError(f"TrainConfig: {msg}")

    for name in ("model", "dataset", "optimizer", "milestone_unit"):
        if not isinstance(getattr(c, name), str):
            bad(f"{name} must be a string, got {getattr(c, name)!r}")
    if c.optimizer not in OPTIMIZERS:
        bad(f"optimizer must be one of {OPTIMIZERS}, got {c.optimizer!r}")
    if not (_is_number(c.lr) and math.isfinite(c.lr) and c.lr > 0):
        bad(f"lr must be a finite number > 0, got {c.lr!r}")
    for name in ("momentum", "weight_decay", "b1", "b2", "eps", "gamma", "dropout_rate"):
        if not (_is_number(getattr(c, name)) and math.isfinite(getattr(c, name))):
            bad(f"{name} must be a finite number, got {getattr(c, name)!r}")
    if not 0 <= c.momentum < 1:
        bad(f"momentum must be in [0, 1), got {c.momentum!r}")
    for name in ("nesterov", "augment"):
        if not isinstance(getattr(c, name), (bool, np.bool_)):
            bad(f"{name} must be true or false, got {getattr(c, name)!r}")
    if c.nesterov and (c.optimizer != "sgd" or c.momentum <= 0):
        bad("nesterov=True needs optimizer='sgd' and momentum > 0")
    if c.weight_decay < 0:
        bad(f"weight_decay must be >= 0, got {c.weight_decay!r}")
    if not (0 <= c.b1 < 1 and 0 <= c.b2 < 1 and c.eps >= 0):
        bad(f"Adam needs 0 <= b1, b2 < 1 and eps >= 0, got b1={c.b1}, b2={c.b2}, eps={c.eps}")
    for name in ("batch_size", "steps", "eval_batch_size", "chunk_size"):
        v = getattr(c, name)
        if not _is_int(v) or v < 1:
            bad(f"{name} must be an integer >= 1, got {v!r}")
    for name in ("warmup_steps", "eval_every", "checkpoint_every"):
        v = getattr(c, name)
        if not _is_int(v) or v < 0:
            bad(f"{name} must be an integer >= 0, got {v!r}")
    if c.milestone_unit not in MILESTONE_UNITS:
        bad(f"milestone_unit must be one of {MILESTONE_UNITS}, got {c.milestone_unit!r}")
    ms = list(c.milestones) if isinstance(c.milestones, tuple) else None
    if ms is None or any(not _is_int(m) or m <= 0 for m in ms) or ms != sorted(set(ms)):
        bad(f"milestones must be strictly increasing positive integers, got {c.milestones!r}")
    if not c.gamma > 0:
        bad(f"gamma must be > 0, got {c.gamma!r}")
    if not 0 <= c.dropout_rate < 1:
        bad(f"dropout_rate must be in [0, 1), got {c.dropout_rate!r}")
    if c.kernel_init is not None and c.kernel_init not in models_lib.KERNEL_INITS:
        bad(f"kernel_init must be None (the model's default) or one of "
            f"{tuple(sorted(models_lib.KERNEL_INITS))}, got {c.kernel_init!r}")
    if c.input_shape is not None and (not isinstance(c.input_shape, tuple) or len(c.input_shape) != 3
                                      or not all(_is_int(d) and d > 0 for d in c.input_shape)):
        bad(f"input_shape must be (H, W, C), got {c.input_shape!r}")
    if c.num_classes is not None and (not _is_int(c.num_classes) or c.num_classes < 1):
        bad(f"num_classes must be None or an integer >= 1, got {c.num_classes!r}")
    for name in ("init_seed", "data_seed", "aug_seed", "dropout_seed"):
        v = getattr(c, name)
        if not _is_int(v) or v < 0:
            bad(f"{name} must be an integer >= 0, got {v!r}")


# ============================================================================ model, optimizer


def make_model(config: TrainConfig):
    """The Flax module of ``config.model`` (``dropout_rate`` when > 0, ``kernel_init`` when set)."""
    kwargs = {"dropout_rate": config.dropout_rate} if config.dropout_rate > 0 else {}
    if config.kernel_init is not None:
        kwargs["kernel_init"] = config.kernel_init
    return models_lib.get(config.model, num_classes=config.num_classes, **kwargs)


def milestone_steps(config: TrainConfig, steps_per_epoch: int | None = None) -> tuple[int, ...]:
    """The milestones in steps (converting epochs with ``steps_per_epoch``)."""
    if config.milestone_unit == "steps" or not config.milestones:
        return tuple(int(m) for m in config.milestones)
    if not steps_per_epoch:
        raise ValueError("milestones in epochs need steps_per_epoch (num_examples // batch_size)")
    return tuple(int(m) * int(steps_per_epoch) for m in config.milestones)


@functools.lru_cache(maxsize=None)
def _schedule(lr: float, warmup_steps: int, milestones: tuple, gamma: float) -> Callable:
    ms = np.asarray(milestones or (np.iinfo(np.int32).max,), np.int32)  # a constant, not a device array

    def schedule(step):
        step = jnp.asarray(step, jnp.int32)
        rate = jnp.asarray(lr, jnp.float32)
        if milestones:
            rate = rate * jnp.float32(gamma) ** jnp.sum(step >= ms).astype(jnp.float32)
        if warmup_steps:
            rate = rate * jnp.minimum(1.0, step.astype(jnp.float32) / warmup_steps)
        return rate

    return schedule


def make_schedule(config: TrainConfig, steps_per_epoch: int | None = None) -> Callable:
    """Learning rate as a function of the global step (0-based, the step being taken).

    ``lr(step) = config.lr * min(1, step / warmup_steps) * gamma ** #{m <= step}``
    (open_lth's warmup and ``MultiStepLR``). Works on traced steps.

    Example: ``lr=0.1, milestones=(100, 200), gamma=0.1``: lr(99) = 0.1, lr(100) = 0.01,
    lr(200) = 0.001.
    """
    return _schedule(float(config.lr), int(config.warmup_steps),
                     milestone_steps(config, steps_per_epoch), float(config.gamma))


def scale_by_step_schedule(schedule: Callable) -> optax.GradientTransformationExtraArgs:
    """Scales updates by ``-schedule(step)``, ``step`` being the *global* training step.

    jaxticket's train step passes ``step=state.step`` to every optimizer that accepts
    extra arguments (``optax.chain`` forwards it), so the learning rate follows the
    training step, not the optimizer's own update count: a level rewound to step ``k``
    with a fresh optimizer state continues its schedule at ``k`` (open_lth's behaviour).

    Example:
        >>> tx = optax.chain(optax.trace(0.9), scale_by_step_schedule(lambda s: 0.1 * 0.5 ** (s // 10)))
        >>> w = jnp.ones(2)
        >>> upd, _ = tx.update(jnp.ones(2), tx.init(w), w, step=jnp.int32(10))
        >>> upd
        Array([-0.05, -0.05], dtype=float32)
    """

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None, *, step=None, **extra):
        del params, extra
        if step is None:
            raise ValueError("this optimizer's learning rate follows the global training step: call "
                             "tx.update(updates, state, params, step=step)")
        step_size = -1 * schedule(step)
        return jax.tree.map(lambda g: jnp.array(step_size, dtype=g.dtype) * g, updates), state

    return optax.GradientTransformationExtraArgs(init, update)


@functools.lru_cache(maxsize=None)
def _optimizer(optimizer: str, momentum: float, nesterov: bool, weight_decay: float, b1: float,
               b2: float, eps: float, schedule: Callable) -> optax.GradientTransformation:
    parts = []
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    if optimizer == "sgd":
        if momentum:
            parts.append(optax.trace(decay=momentum, nesterov=nesterov))
    else:
        parts.append(optax.scale_by_adam(b1=b1, b2=b2, eps=eps))
    parts.append(scale_by_step_schedule(schedule))
    return optax.chain(*parts)


def make_optimizer(config: TrainConfig, steps_per_epoch: int | None = None) -> optax.GradientTransformation:
    """The optax transformation of ``config`` (updates to *add* to the params).

    SGD: ``g + wd*w`` -> momentum trace (PyTorch: ``buf = m*buf + g``; Nesterov
    ``g + m*buf``) -> ``-lr(step) * .``. Adam: ``g + wd*w`` -> Adam moments -> ``-lr(step)``
    (PyTorch ``Adam(weight_decay=wd)``, coupled). The same settings give the same
    (identical) object, so Tasks built from equal configs are equal.
    """
    return _optimizer(config.optimizer, float(config.momentum), bool(config.nesterov),
                      float(config.weight_decay), float(config.b1), float(config.b2), float(config.eps),
                      make_schedule(config, steps_per_epoch))


def task_from_config(config: TrainConfig, *, steps_per_epoch: int | None = None) -> Task:
    """The :class:`Task` of a preset's TrainConfig: the registered model, its input shape,
    softmax cross-entropy, the config's optimizer and schedule, accuracy.

    ``steps_per_epoch`` converts milestones given in epochs (``num_examples // batch_size``).

    Example:
        >>> task = task_from_config(TrainConfig(model="lenet_300_100", optimizer="adam", lr=1.2e-3))
        >>> task.input_shape, task.name, task == task_from_config(TrainConfig(optimizer="adam", lr=1.2e-3))
        ((28, 28, 1), 'lenet_300_100', True)
    """
    input_shape = tuple(config.input_shape) if config.input_shape else tuple(models_lib.input_shape(config.model))
    return Task(make_model(config), input_shape, tx=make_optimizer(config, steps_per_epoch), name=config.model)
