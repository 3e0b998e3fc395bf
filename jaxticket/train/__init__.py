"""Training: the Task, the train state, the masked step and the fit loop.

Reads in this order:

1. :mod:`~jaxticket.train.task`: :class:`Task`, the model (any Flax Linen module, or a
   Flax NNX one through :meth:`Task.from_nnx` and :mod:`~jaxticket.train.nnx`), the
   shape of one input, the loss, the optax transformation and the metrics; hashable,
   the key of every compiled function.
2. :mod:`~jaxticket.train.config`: :class:`TrainConfig`, the model, data and optimizer
   of the presets as plain data, and :func:`task_from_config` (SGD/Adam as in PyTorch and
   open_lth, learning rate a function of the global step); :mod:`~jaxticket.train.settings`:
   :class:`FitSettings`, how a run trains (steps, batch size, evaluation, seeds).
3. :mod:`~jaxticket.train.state`: :class:`TrainState` and :func:`init_state` (``seeds=S``
   replicas in one compiled program), :func:`with_mask`.
4. :mod:`~jaxticket.train.step`: :func:`train_step` (one masked step) and
   :func:`run_steps`, the one driver of every step path.
5. :mod:`~jaxticket.train.sources`: device-resident batches or a :class:`HostStream`.
6. :mod:`~jaxticket.train.loop`: :func:`fit`, read top to bottom;
   :mod:`~jaxticket.train.hooks`: its hooks (rewind point, checkpoints, metrics file,
   progress bar); :mod:`~jaxticket.train.evaluation`: :func:`evaluate`.

Example:
    >>> import numpy as np, optax, flax.linen as nn
    >>> from jaxticket import data, train
    >>> x = np.random.default_rng(0).normal(size=(256, 40)).astype(np.float32)
    >>> y = (x[:, :4].argmax(1)).astype(np.int32)
    >>> d = data.from_arrays(train=(x[:200], y[:200]), test=(x[200:], y[200:]))
    >>> class MLP(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         return nn.Dense(10)(nn.relu(nn.Dense(64)(x)))
    >>> task = train.Task(MLP(), input_shape=(40,), tx=optax.adam(3e-3))
    >>> result = train.fit(task, train.init_state(task), d.train, steps=300, batch_size=50,
    ...                    test=d.test, rewind_step=10)
    >>> int(result.rewind_state.step), result.history[-1]["test_accuracy"] > 0.5
    (10, True)
"""

from jaxticket.train.task import MODEL_COLLECTIONS, Task, accuracy, optimizer_fingerprint, softmax_cross_entropy
from jaxticket.train.nnx import NNXModel
from jaxticket.train.config import (
    MILESTONE_UNITS,
    OPTIMIZERS,
    TrainConfig,
    make_model,
    make_optimizer,
    make_schedule,
    milestone_steps,
    scale_by_step_schedule,
    task_from_config,
    validate_config,
)
from jaxticket.train.state import (
    SCHEDULE_STATES,
    StepScheduleState,
    VARY_STREAMS,
    advance_schedules,
    TrainState,
    init_state,
    is_batched,
    num_replicas,
    replica,
    replica_seeds,
    with_mask,
)
from jaxticket.train.settings import SEED_STREAMS, FitSettings
from jaxticket.train.step import SEED_STRATEGIES, resolve_seed_strategy, run_steps, straight_through_step, train_step
from jaxticket.train.sources import HostStream, steps_per_epoch
from jaxticket.train.loop import (
    DIVERGENCE_FACTOR,
    LOOPS,
    DivergenceWarning,
    Checkpointing,
    FitResult,
    Hook,
    MetricsFile,
    NonFiniteLossError,
    ProgressBar,
    RewindPoint,
    check_inputs,
    fit,
    fit_settings,
    resolve_loop,
)
from jaxticket.train.evaluation import as_lists, evaluate
from jaxticket.train.hooks import cut_unfinished_line
from jaxticket.train.state import abstract, host_step

__all__ = [
    "Checkpointing", "DIVERGENCE_FACTOR", "FitSettings", "SEED_STREAMS", "as_lists", "cut_unfinished_line", "fit_settings", "DivergenceWarning", "FitResult", "Hook", "HostStream", "LOOPS", "MILESTONE_UNITS", "MODEL_COLLECTIONS",
    "MetricsFile", "NNXModel", "NonFiniteLossError", "OPTIMIZERS", "ProgressBar", "RewindPoint", "SCHEDULE_STATES", "StepScheduleState", "Task",
    "TrainConfig", "TrainState", "VARY_STREAMS", "abstract", "accuracy", "advance_schedules", "check_inputs",
    "evaluate", "fit", "host_step", "init_state",
    "is_batched", "make_model", "make_optimizer", "make_schedule", "milestone_steps", "num_replicas",
    "optimizer_fingerprint", "replica", "replica_seeds", "resolve_loop", "resolve_seed_strategy", "run_steps",
    "SEED_STRATEGIES", "scale_by_step_schedule",
    "softmax_cross_entropy", "steps_per_epoch", "task_from_config", "straight_through_step", "train_step", "validate_config",
    "with_mask",
]
