"""TrainConfig: the model, data and optimizer of the presets and the command line, as plain
data, and :func:`task_from_config`, which turns one into a :class:`~jaxticket.train.Task`.

The config is read once at the edge (a preset, JSON, ``--set key=value``); below it the
engine works on the Task and :class:`~jaxticket.train.FitSettings` (how it trains). Optimizers follow PyTorch /
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
from jaxticket import settings as settings_lib
from jaxticket.train.state import StepScheduleState
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
    """The model, the data and the optimizer of a preset. Frozen, hashable, JSON via ``asdict``.

    How it trains (steps, batch size, evaluation, seeds) is :class:`~jaxticket.train.FitSettings`,
    which :class:`~jaxticket.lottery.LotteryConfig` holds beside it (``config.imp.fit``).

    Attributes:
      model: a registered model name (:data:`jaxticket.models.MODELS`), e.g.
        ``"lenet_300_100"``, ``"resnet20"``.
      dataset: a registered dataset name (:func:`jaxticket.data.list_datasets`).
      validation_size: training examples held out for validation / early stopping
        (``None``: the dataset's default; 0: none).
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
      warmup_steps: linear warmup ``min(1, step / warmup_steps)`` (open_lth); 0 = off.
      milestones: step decay: lr is multiplied by ``gamma`` at each milestone (sorted,
        strictly increasing), counted in ``milestone_unit``.
      milestone_unit: ``"steps"`` or ``"epochs"`` (epoch = ``num_examples // batch_size``
        steps).
      gamma: decay factor at each milestone.

    Example:
        >>> config = TrainConfig(model="lenet_300_100", optimizer="sgd", lr=0.1, momentum=0.9,
        ...                      milestones=(15000, 22500))
        >>> config.gamma, config.dataset
        (0.1, 'mnist')
        >>> TrainConfig(lr=-1.0)
        Traceback (most recent call last):
        ...
        jaxticket.settings.SettingError: lr must be a finite number > 0, got -1.0
    """

    model: str = "lenet_300_100"
    dataset: str = "mnist"
    validation_size: Optional[int] = None
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
    warmup_steps: int = 0
    milestones: tuple = ()
    milestone_unit: str = "steps"
    gamma: float = 0.1

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


def validate_config(config: TrainConfig) -> None:
    """Raises :class:`~jaxticket.settings.SettingError` naming the bad setting and the
    valid values. Types are strict: a bool is not a number, a string is not a number.

    Example: ``TrainConfig(optimizer="rmsprop")`` -> ``SettingError: optimizer must be one
    of 'sgd', 'adam', got 'rmsprop'``.
    """
    c = config
    check = settings_lib

    for name in ("model", "dataset", "optimizer", "milestone_unit"):
        if not isinstance(getattr(c, name), str):
            raise check.SettingError(name, f"must be a string, got {getattr(c, name)!r}")
    check.check_choice("optimizer", c.optimizer, OPTIMIZERS)
    if not (check.is_number(c.lr) and math.isfinite(c.lr) and c.lr > 0):
        raise check.SettingError("lr", f"must be a finite number > 0, got {c.lr!r}")
    for name in ("momentum", "weight_decay", "b1", "b2", "eps", "gamma", "dropout_rate"):
        check.check_number(name, getattr(c, name))
    if not 0 <= c.momentum < 1:
        raise check.SettingError("momentum", f"must be in [0, 1), got {c.momentum!r}")
    check.check_bool("nesterov", c.nesterov)
    if c.nesterov and (c.optimizer != "sgd" or c.momentum <= 0):
        raise check.SettingError("nesterov", "=True needs optimizer='sgd' and momentum > 0", joiner="")
    if c.weight_decay < 0:
        raise check.SettingError("weight_decay", f"must be >= 0, got {c.weight_decay!r}")
    if not (0 <= c.b1 < 1 and 0 <= c.b2 < 1 and c.eps >= 0):
        raise check.SettingError("b1", f"b2, eps: Adam needs 0 <= b1, b2 < 1 and eps >= 0, got b1={c.b1}, "
                                 f"b2={c.b2}, eps={c.eps}", joiner=", ")
    check.check_int("warmup_steps", c.warmup_steps, minimum=0)
    check.check_choice("milestone_unit", c.milestone_unit, MILESTONE_UNITS)
    ms = list(c.milestones) if isinstance(c.milestones, tuple) else None
    if ms is None or any(not check.is_int(m) or m <= 0 for m in ms) or ms != sorted(set(ms)):
        raise check.SettingError("milestones", f"must be strictly increasing positive integers, got {c.milestones!r}")
    if not c.gamma > 0:
        raise check.SettingError("gamma", f"must be > 0, got {c.gamma!r}")
    if not 0 <= c.dropout_rate < 1:
        raise check.SettingError("dropout_rate", f"must be in [0, 1), got {c.dropout_rate!r}")
    if c.kernel_init is not None and c.kernel_init not in models_lib.KERNEL_INITS:
        raise check.SettingError("kernel_init", f"must be None (the model's default) or one of "
                                 f"{tuple(sorted(models_lib.KERNEL_INITS))}, got {c.kernel_init!r}")
    if c.input_shape is not None and (not isinstance(c.input_shape, tuple) or len(c.input_shape) != 3
                                      or not all(check.is_int(d) and d > 0 for d in c.input_shape)):
        raise check.SettingError("input_shape", f"must be (H, W, C), got {c.input_shape!r}")
    if c.num_classes is not None:
        check.check_int("num_classes", c.num_classes, minimum=1)
    if c.validation_size is not None:
        check.check_int("validation_size", c.validation_size, minimum=0)


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
        return StepScheduleState(schedule_offset=jnp.zeros([], jnp.int32))

    def update(updates, state, params=None, *, step=None, **extra):
        del params, extra
        if step is None:
            raise ValueError("this optimizer's learning rate follows the global training step: call "
                             "tx.update(updates, state, params, step=step)")
        step_size = -1 * schedule(jnp.asarray(step, jnp.int32) + state.schedule_offset)
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
