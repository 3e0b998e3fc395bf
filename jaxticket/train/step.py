"""The masked training step, the one driver every step path shares, and evaluation.

Masking. Params are stored masked; every step masks the gradients before the optimizer
and the new params after it, so pruned weights, their momentum and their Adam moments
stay exactly 0 (weight decay included), and the forward pass sees masked weights.

:func:`run_steps` is the only place steps are driven: ``length=None`` runs exactly one
step (no loop: XLA:CPU compiles convolution gradients inside loops into slow naive
code), an int runs a traced number ``<= length`` of steps in a ``lax.fori_loop`` with
the per-step metrics in ``[length]`` buffers. Device-resident data and streamed chunks
both go through it (their :mod:`feeds <jaxticket.train.sources>` say where batches
come from); replicas (a seeds axis) are vmapped, optionally sharded over a mesh.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxticket import masks as masks_lib
from jaxticket import parallel
from jaxticket.train.state import TrainState, is_batched
from jaxticket.train.task import Task

__all__ = ["SEED_STRATEGIES", "eval_sums", "resolve_seed_strategy", "run_steps", "split_replicas",
           "stack_replicas", "straight_through_step", "train_step"]

PyTree = Any


def _mask(tree, mask):
    return tree if mask is None else masks_lib.apply(tree, mask)


def _tx_update(tx, grads, opt_state, params, step):
    if isinstance(tx, optax.GradientTransformationExtraArgs):
        return tx.update(grads, opt_state, params, step=step)
    return tx.update(grads, opt_state, params)


def _batch_metrics(task: Task, outputs, labels) -> dict:
    return {name: jnp.mean(fn(outputs, labels)).astype(jnp.float32) for name, fn in task.metrics}


def train_step(task: Task, state: TrainState, batch, *, mesh=None):
    """One masked training step on ``batch = (x [B, ...], y [B, ...])``. Pure; jit with
    ``static_argnums=0``.

    The forward pass uses the stored params, which are masked by
    :func:`~jaxticket.train.init_state` and by :func:`~jaxticket.train.fit` on entry
    (a state built by hand should hold ``masks.apply(params, mask)``). Dropout draws
    from ``fold_in(dropout_key, step)``; the optimizer receives ``step=state.step`` when
    it accepts extra arguments.

    Returns:
      ``(new_state, {"loss": f32[], <metric>: f32[]...})``, the metrics of the batch
      before the update.

    Example:
        >>> import jax, numpy as np
        >>> from jaxticket import train
        >>> task = train.task_from_config(train.TrainConfig(model="lenet_16", input_shape=(4, 4, 1), lr=0.1))
        >>> state = train.init_state(task)
        >>> x, y = np.zeros((8, 4, 4, 1), np.float32), np.zeros(8, np.int32)
        >>> step = jax.jit(train_step, static_argnums=0)
        >>> state, metrics = step(task, state, (x, y))
        >>> int(state.step), sorted(metrics)
        (1, ['accuracy', 'loss'])
        >>> round(float(metrics["loss"]), 4)    # log(10): zero inputs, zero-initialised biases
        2.3026
        >>> state, metrics2 = step(task, state, (x, y))
        >>> bool(metrics2["loss"] < metrics["loss"])
        True
    """
    return _step(task, state, batch, mesh, straight_through=False)


def _step(task: Task, state: TrainState, batch, mesh, *, straight_through: bool):
    """:func:`train_step` (masked gradients in, masked params out) or, with
    ``straight_through``, :func:`straight_through_step` (masked forward on dense weights)."""
    x, y = batch
    x, y = parallel.constrain_batch(x, mesh), parallel.constrain_batch(y, mesh)
    dropout_key = jax.random.fold_in(jax.random.wrap_key_data(state.dropout_key), state.step)

    def loss_fn(params):
        if straight_through:  # the masked weights' value, the gradient straight to the dense ones
            params = jax.tree.map(lambda w, m: w + jax.lax.stop_gradient(m - w), params, _mask(params, state.mask))
        outputs, new_bs = task.forward(params, state.batch_stats, x, train=True, dropout_key=dropout_key)
        return task.loss(outputs, y).mean(), (new_bs, _batch_metrics(task, outputs, y))

    (loss, (new_bs, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    # masked gradients in: momentum / Adam moments of pruned entries stay 0 (their
    # weight decay term wd * 0 is 0 too); masked params out: pruned weights stay exactly
    # 0. Both selects fuse into the optimizer's elementwise update. Straight-through: neither.
    if not straight_through:
        grads = _mask(grads, state.mask)
    updates, opt_state = _tx_update(task.tx, grads, state.opt_state, state.params, state.step)
    params = optax.apply_updates(state.params, updates)
    if not straight_through:
        params = _mask(params, state.mask)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=new_bs, opt_state=opt_state)
    return new_state, {"loss": loss, **metrics}


def straight_through_step(task: Task, state: TrainState, batch, *, mesh=None):
    """One straight-through step: the forward pass on the masked weights, the update on
    the *dense* ones (the straight-through estimator of Bengio et al. 2013, as in
    sparse training with dense weights kept, e.g. Zhou et al. 2021's N:M from scratch).

    ``state.params`` holds dense weights: the network computed is ``masks.apply(params,
    mask)``; the gradient of a masked weight reaches its dense weight unchanged (also at
    pruned positions), and nothing is masked after the update, so a later mask may bring
    a pruned weight back with the value it kept learning. Use the masked params
    (:func:`~jaxticket.train.with_mask`) to evaluate or save the network. Same returns as
    :func:`train_step`.

    Example:
        >>> import jax, numpy as np
        >>> from jaxticket import masks, train
        >>> task = train.task_from_config(train.TrainConfig(model="lenet_16", input_shape=(4, 4, 1), lr=0.1))
        >>> state = train.init_state(task)
        >>> half = jax.tree.map(lambda k: k.at[::2].set(False), state.mask.keep)  # every other input
        >>> state = state.replace(mask=state.mask.replace(keep=half))     # params left dense
        >>> x, y = np.ones((8, 4, 4, 1), np.float32), np.arange(8, dtype=np.int32)
        >>> new, _ = jax.jit(straight_through_step, static_argnums=0)(task, state, (x, y))
        >>> w = new.params["fc1"]["kernel"]
        >>> bool((w[::2] != state.params["fc1"]["kernel"][::2]).any())   # pruned weights learn
        True
    """
    return _step(task, state, batch, mesh, straight_through=True)


def _spmd(mesh):
    return parallel.REPLICA if mesh is not None else None


#: How replicas (a seeds axis) train: ``"vmap"`` batches them in one program (one batched
#: matmul/convolution per layer); ``"sequential"`` runs each replica's own single-run
#: program one after the other on its slice of the state; ``"auto"`` picks by
#: measurement (``benchmarks/train.py``): ``"sequential"`` on CPU, where batching the
#: replicas made every model slower per seed-step (XLA:CPU runs vmapped convolutions as
#: slow grouped ones, and batched small matmuls use the cores less well than one after
#: the other), ``"vmap"`` on accelerators and on a mesh. ``"sequential"`` gives each
#: replica bitwise its single run's result; ``"vmap"`` on one CPU device is within about
#: 1 ulp per step of it (a batched matrix product sums in another order). Replicas spread
#: over a mesh's replica axis, one per device, are bitwise the one-device sequential run
#: (``tests/test_parallel.py``).
SEED_STRATEGIES = ("auto", "vmap", "sequential")


def resolve_seed_strategy(strategy: str, mesh=None) -> str:
    """``"vmap"`` or ``"sequential"`` (see :data:`SEED_STRATEGIES`)."""
    if strategy not in SEED_STRATEGIES:
        raise ValueError(f"seed_strategy must be one of {SEED_STRATEGIES}, got {strategy!r}")
    if strategy == "auto":
        return "sequential" if (mesh is None and jax.default_backend() == "cpu") else "vmap"
    if strategy == "sequential" and mesh is not None:
        raise ValueError("seed_strategy='sequential' runs replicas one after the other on one device; "
                         "on a mesh replicas are vmapped (seed_strategy='vmap')")
    return strategy


def _replica_step(task: Task, feed, mesh, batched: bool):
    def one(state, data, i):
        return train_step(task, state, feed.batch(data, state, i), mesh=mesh)

    if batched:
        one = jax.vmap(one, in_axes=(0, None, None), spmd_axis_name=_spmd(mesh))
    return one


@jax.jit
def split_replicas(state) -> list:
    """The replicas of a seeds-batched pytree as a list of single-run pytrees (one program)."""
    return [jax.tree.map(lambda x: x[r], state) for r in range(jax.tree.leaves(state)[0].shape[0])]


@jax.jit
def stack_replicas(states: list):
    """The inverse of :func:`split_replicas` (one program)."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _run_steps(task: Task, feed, mesh, length: Optional[int], state: TrainState, data, num_steps):
    batched = is_batched(state)
    step = _replica_step(task, feed, mesh, batched)
    if state.mask is not None:  # the invariant train_step relies on (a no-op when it holds)
        state = state.replace(params=masks_lib.apply(state.params, state.mask))
    if length is None:
        state, metrics = step(state, data, 0)
        state = parallel.constrain_state(state, mesh, batched=batched)
        metrics = jax.tree.map(lambda m: m[None], metrics)
    else:
        names = ("loss", *task.metric_names)
        shape = (length,) + tuple(np.shape(state.step))
        buf = {k: jnp.zeros(shape, jnp.float32) for k in names}

        def body(i, carry):
            s, b = carry
            s, m = step(s, data, i)
            b = {k: b[k].at[i].set(m[k]) for k in b}
            return parallel.constrain_state(s, mesh, batched=batched), b

        state, metrics = jax.lax.fori_loop(0, num_steps, body, (state, buf))
    if mesh is not None:
        metrics = jax.lax.with_sharding_constraint(metrics, parallel.replicated(mesh))
    return state, metrics


@jax.jit
def _gather(outs):
    """Per-replica ``(state, metrics)`` -> replicas stacked: states on axis 0, metrics on 1."""
    states, metrics = zip(*outs)
    return stack_replicas(list(states)), jax.tree.map(lambda *ms: jnp.stack(ms, axis=1), *metrics)


def run_steps(task: Task, feed, state: TrainState, data, num_steps: int, *,
              length: Optional[int] = None, mesh=None, seed_strategy: str = "auto"):
    """``num_steps`` masked steps in one compiled call: the driver of every step path.

    Args:
      task, feed: static (:class:`~jaxticket.train.sources.DeviceFeed` over an
        ArrayDataset, or :class:`~jaxticket.train.sources.StreamFeed` over a stacked chunk).
      state: single run or replicas (vmapped; each its own batch order, mask, keys).
      data: the ArrayDataset, or the chunk ``{"image": [n, B, ...], "label": [n, B]}``.
      num_steps: steps to take; with ``length=None`` exactly 1 (no loop), else traced,
        ``<= length`` (one compiled program serves every chunk length).
      length: ``None``, or the loop's metric buffer size.
      seed_strategy: how replicas share the program (:data:`SEED_STRATEGIES`).

    Returns:
      ``(state, metrics)``: ``metrics[name]`` is ``f32[length or 1(, S)]``, entries past
      ``num_steps`` zero.
    """
    if length is None and num_steps != 1:
        raise ValueError("run_steps without a length takes exactly one step")
    if is_batched(state) and resolve_seed_strategy(seed_strategy, mesh) == "sequential":
        outs = [_run_steps(task, feed, mesh, length, s, data, np.int32(num_steps)) for s in split_replicas(state)]
        return _gather(outs)
    return _run_steps(task, feed, mesh, length, state, data, np.int32(num_steps))


# ============================================================================ evaluation


def eval_sums(task: Task, state: TrainState, x, y, valid, *, logits: bool):
    """Sums over the valid examples of one evaluation batch (single run): ``loss`` and each
    metric (int32 for boolean metrics, else float32), and the outputs when ``logits``."""
    params = _mask(state.params, state.mask)
    outputs, _ = task.forward(params, state.batch_stats, x, train=False)
    outputs = outputs.astype(jnp.float32)
    sums = {"loss": jnp.sum(jnp.where(valid, task.loss(outputs, y), 0.0))}
    for name, fn in task.metrics:
        values = fn(outputs, y)
        if values.dtype == jnp.bool_:
            sums[name] = jnp.sum(valid & values, dtype=jnp.int32)
        else:
            sums[name] = jnp.sum(jnp.where(valid, values.astype(jnp.float32), 0.0))
    if logits:
        sums["logits"] = outputs
    return sums


def means(sums: dict, n: int) -> dict:
    """``sum / n`` as float32 for the loss and metrics (works on arrays and traced values)."""
    return {k: (v.astype(jnp.float32) if hasattr(v, "astype") else np.float32(v)) / n
            for k, v in sums.items() if k != "logits"}
