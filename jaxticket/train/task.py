"""The Task: what is trained and how, as one hashable object.

A :class:`Task` holds the model (any Flax Linen module), the shape of one input, the
loss, the optax transformation and the metrics. Every compiled function of the training
engine is keyed on the Task (it is hashable and static under ``jit``), so two runs with
the same Task share their compiled programs, and a change of any part recompiles.

The model contract:

* ``model.init(key, x, <train=False>)`` and ``model.apply(variables, x, <train=...>)``
  with ``x`` a batch ``[B, *input_shape]`` of ``input_dtype``, returning logits (or any
  output the loss takes). How the model is told train/eval mode is found from its
  ``__call__`` signature: a ``train``, ``training``, ``is_training`` (True when
  training) or ``deterministic`` (True when evaluating) keyword; a model without any
  of them gets none.
* Variables: ``params`` (trained and masked), and ``batch_stats`` when the model has
  BatchNorm (updated in training with ``mutable=["batch_stats"]``, used as running
  statistics in evaluation). Any other variable collection is refused at init, with
  its name.
* Dropout draws from the ``"dropout"`` rng, keyed per step from the state's
  ``dropout_key`` (``fold_in(dropout_key, step)``), in training only.

Example:
    >>> import flax.linen as nn, optax, jax.numpy as jnp
    >>> class MLP(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         return nn.Dense(10, name="out")(nn.relu(nn.Dense(32, name="hidden")(x)))
    >>> task = Task(MLP(), input_shape=(40,), tx=optax.adamw(1e-3))
    >>> task.abstract_params()["hidden"]["kernel"].shape
    (40, 32)
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["MODEL_COLLECTIONS", "Task", "accuracy", "softmax_cross_entropy"]

PyTree = Any
#: The variable collections a model may have: trained ``params`` and BatchNorm's ``batch_stats``.
MODEL_COLLECTIONS = ("params", "batch_stats")
_MODE_KEYWORDS = ("train", "training", "is_training", "deterministic")


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy with integer labels: ``[B, C], [B] -> [B]``.

    Example:
        >>> softmax_cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3])).round(4)
        Array([1.3863, 1.3863], dtype=float32)
    """
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example top-1 correctness (bool ``[B]``) for integer labels.

    Example:
        >>> accuracy(jnp.array([[0.1, 0.9], [0.8, 0.2]]), jnp.array([1, 1]))
        Array([ True, False], dtype=bool)
    """
    return jnp.argmax(logits, -1) == labels


def _mode_keyword(model) -> Optional[str]:
    try:
        parameters = inspect.signature(type(model).__call__).parameters
    except (TypeError, ValueError):
        return None
    return next((k for k in _MODE_KEYWORDS if k in parameters), None)


@functools.lru_cache(maxsize=256)
def _abstract_variables(task: "Task") -> dict:
    x = jax.ShapeDtypeStruct((1, *task.input_shape), jnp.dtype(task.input_dtype))
    return jax.eval_shape(lambda x: task.init_variables(jax.random.key(0), x), x)


@dataclasses.dataclass(frozen=True)
class Task:
    """A model, its input shape, loss, optimizer and metrics; hashable, the key of every
    compiled training function.

    Attributes:
      model: a ``flax.linen.Module`` (see the module docstring for the contract).
      input_shape: the shape of one input example, without the batch axis, e.g.
        ``(28, 28, 1)`` or ``(40,)``.
      loss: ``(outputs [B, ...], labels [B, ...]) -> per-example loss [B]``; training
        minimises its mean. Default: softmax cross-entropy with integer labels.
      tx: any ``optax.GradientTransformation`` (chains, schedules, ``optax.masked``
        weight decay...). Its ``update`` also receives ``step=`` (the global step) when
        it accepts extra arguments, which :func:`jaxticket.train.scale_by_step_schedule`
        uses so that a schedule continues at step ``k`` after rewinding; optax's own
        schedules count the optimizer's updates instead. Default ``optax.adam(1e-3)``.
      metrics: ``{name: (outputs, labels) -> per-example values [B]}`` (or a sequence of
        ``(name, fn)`` pairs), averaged over batches and splits. Default
        ``{"accuracy": accuracy}``; IMP reports ``accuracy`` when present.
      input_dtype: dtype of the dummy input used to initialise the model.
      name: a label for reports and the run directory (default: the model's class name).

    Functions are compared by identity: build the Task once and reuse it, so the
    compiled programs are reused too.
    """

    model: Any
    input_shape: tuple
    loss: Callable = softmax_cross_entropy
    tx: Any = None
    metrics: Any = (("accuracy", accuracy),)
    input_dtype: str = "float32"
    name: Optional[str] = None

    def __post_init__(self):
        if not (hasattr(self.model, "init") and hasattr(self.model, "apply")):
            raise TypeError(f"Task: model must be a flax.linen.Module (with init and apply), "
                            f"got {type(self.model).__name__}")
        shape = self.input_shape
        if isinstance(shape, (int, np.integer)):
            shape = (shape,)
        try:
            shape = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise ValueError(f"Task: input_shape must be a tuple of ints (one example, no batch "
                             f"axis), got {self.input_shape!r}") from None
        if any(d < 1 for d in shape):
            raise ValueError(f"Task: input_shape must be positive sizes, got {shape}")
        object.__setattr__(self, "input_shape", shape)
        if not callable(self.loss):
            raise TypeError(f"Task: loss must be a callable (outputs, labels) -> per-example loss, got {self.loss!r}")
        tx = _DEFAULT_TX if self.tx is None else self.tx
        if not (hasattr(tx, "init") and hasattr(tx, "update")):
            raise TypeError(f"Task: tx must be an optax.GradientTransformation, got {type(tx).__name__}")
        object.__setattr__(self, "tx", tx)
        metrics = self.metrics
        items = tuple(metrics.items()) if isinstance(metrics, dict) else tuple(tuple(m) for m in (metrics or ()))
        for item in items:
            if len(item) != 2 or not isinstance(item[0], str) or not callable(item[1]):
                raise TypeError(f"Task: metrics is a dict {{name: fn(outputs, labels) -> [B]}}, got {metrics!r}")
            if item[0] == "loss":
                raise ValueError("Task: a metric cannot be called 'loss' (the loss is always reported)")
        object.__setattr__(self, "metrics", items)
        try:
            jnp.dtype(self.input_dtype)
        except TypeError:
            raise ValueError(f"Task: input_dtype {self.input_dtype!r} is not a dtype") from None
        object.__setattr__(self, "input_dtype", str(jnp.dtype(self.input_dtype)))
        if self.name is None:
            object.__setattr__(self, "name", type(self.model).__name__)
        try:
            hash(self)
        except TypeError as e:
            raise TypeError(f"Task: every part must be hashable (it keys the compiled programs): {e}") from None

    # ------------------------------------------------------------------ the model

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.metrics)

    def _mode(self, train: bool) -> dict:
        keyword = _mode_keyword(self.model)
        if keyword is None:
            return {}
        return {keyword: (not train) if keyword == "deterministic" else train}

    def init_variables(self, key: jax.Array, x: Optional[jax.Array] = None) -> dict:
        """``model.init`` on a zero batch of one example (or ``x``), in evaluation mode.

        Returns ``{"params": ..., ["batch_stats": ...]}``; other collections are refused.
        """
        if x is None:
            x = jnp.zeros((1, *self.input_shape), jnp.dtype(self.input_dtype))
        variables = dict(self.model.init(key, x, **self._mode(False)))
        extra = sorted(set(variables) - set(MODEL_COLLECTIONS))
        if extra:
            raise ValueError(f"Task: the model has variable collections {extra}; jaxticket trains "
                             f"{MODEL_COLLECTIONS} only (BatchNorm statistics must be 'batch_stats')")
        if "params" not in variables:
            raise ValueError("Task: the model has no 'params' to train")
        return variables

    def apply(self, variables: dict, x: jax.Array, *, train: bool, **kwargs):
        """``model.apply(variables, x, **kwargs)`` in training or evaluation mode (the
        model's mode keyword set from ``train``)."""
        return self.model.apply(variables, x, **self._mode(train), **kwargs)

    def forward(self, params: PyTree, batch_stats: PyTree, x: jax.Array, *, train: bool,
                dropout_key: Optional[jax.Array] = None):
        """``(outputs, new_batch_stats)`` of the model on ``x``; BatchNorm statistics are
        updated (and returned) in training, used as running statistics otherwise."""
        variables = {"params": params}
        if batch_stats:
            variables["batch_stats"] = batch_stats
        rngs = {"dropout": dropout_key} if dropout_key is not None else None
        if train and batch_stats:
            out, updates = self.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
            return out, updates["batch_stats"]
        return self.apply(variables, x, train=train, rngs=rngs), batch_stats

    def abstract_params(self) -> PyTree:
        """The params' tree of ``jax.ShapeDtypeStruct`` (no computation)."""
        return _abstract_variables(self)["params"]

    def describe(self) -> dict:
        """Plain data identifying the task in a run directory: the model (its repr and the
        parameter shapes), input shape and dtype, the loss and metrics by name, and a
        behavioural fingerprint of the optimizer (its updates on a fixed probe)."""
        shapes = jax.tree.map(lambda x: list(x.shape), self.abstract_params())
        return {"name": self.name, "model": repr(self.model), "params": shapes,
                "input_shape": list(self.input_shape), "input_dtype": self.input_dtype,
                "loss": _qualname(self.loss), "metrics": {n: _qualname(f) for n, f in self.metrics},
                "tx": optimizer_fingerprint(self.tx)}


def _qualname(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def optimizer_fingerprint(tx) -> str:
    """A short hash of what ``tx`` does: its updates on a fixed probe for a few steps.

    Two optimizers that differ in any setting that matters (learning rate, schedule,
    momentum, weight decay, ...) give different fingerprints; the same settings built
    twice give the same one.

    Example:
        >>> optimizer_fingerprint(optax.sgd(0.1)) == optimizer_fingerprint(optax.sgd(0.1))
        True
        >>> optimizer_fingerprint(optax.sgd(0.1)) == optimizer_fingerprint(optax.sgd(0.2))
        False
    """
    import hashlib

    params = {"w": jnp.linspace(-1.0, 1.0, 7, dtype=jnp.float32)}
    state = tx.init(params)
    digest = hashlib.sha256()
    for step in (0, 1, 2, 50, 5000):
        grads = {"w": jnp.cos(jnp.arange(7, dtype=jnp.float32) + step)}
        try:
            updates, state = tx.update(grads, state, params, step=jnp.int32(step))
        except TypeError:
            updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        digest.update(np.asarray(jax.device_get(updates["w"]), np.float32).tobytes())
    return digest.hexdigest()[:16]


_DEFAULT_TX = optax.adam(1e-3)
