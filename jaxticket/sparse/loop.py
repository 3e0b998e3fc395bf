"""The compiled loop of sparse training: masked steps with the mask update inside.

Every compiled call runs up to ``length`` steps in a ``lax.fori_loop`` (or, with
``length=None``, exactly one step without a loop: XLA:CPU compiles convolution gradients
inside loops into slow code, see :func:`jaxticket.train.resolve_loop`). Before step
``t`` the method's update runs under ``lax.cond(method.due(t), ...)`` where ``t = first
+ i`` is an *unbatched* int32 counter: with replicas (a seeds axis) the update is
vmapped inside the taken branch, so steps without an update never compute it. The step
itself is :func:`jaxticket.train.train_step` (masked gradients in, masked params out), so
pruned entries stay exactly 0 in params and optimizer state.

Data order, dropout and augmentation are those of :func:`jaxticket.train.fit` (step
``s`` trains on the batch of ``(data_key, s)``), so resuming from a checkpointed state at
any step continues bit for bit.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxticket import parallel
from jaxticket.train.state import is_batched
from jaxticket.train.step import (resolve_seed_strategy, split_replicas, stack_replicas, straight_through_step,
                                  train_step)

__all__ = ["run_sparse_steps"]


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _run(task, feed, method, length: Optional[int], mesh, state, keys, data, first, num_steps):
    batched = is_batched(state)
    spmd = parallel.REPLICA if mesh is not None else None

    step_fn = straight_through_step if method.straight_through else train_step

    def one_step(s, i):
        return step_fn(task, s, feed.batch(data, s, i), mesh=mesh)

    def one_update(s, key, t, i):
        batch = feed.batch(data, s, i) if method.needs_batch else None
        return method.update(task, s, batch, t, jax.random.fold_in(jax.random.wrap_key_data(key), t))

    if batched:
        one_step = jax.vmap(one_step, in_axes=(0, None), spmd_axis_name=spmd)
        one_update = jax.vmap(one_update, in_axes=(0, 0, None, None), spmd_axis_name=spmd)

    def body(i, s):
        t = (first + i).astype(jnp.int32)
        if method.updates:
            s = jax.lax.cond(method.due(t), lambda s: one_update(s, keys, t, i), lambda s: s, s)
        s, m = one_step(s, i)
        return parallel.constrain_state(s, mesh, batched=batched), m

    if length is None:
        state, metrics = body(jnp.int32(0), state)
        metrics = jax.tree.map(lambda x: x[None], metrics)
    else:
        names = ("loss", *task.metric_names)
        buf = {k: jnp.zeros((length,) + tuple(np.shape(state.step)), jnp.float32) for k in names}

        def loop_body(i, carry):
            s, b = carry
            s, m = body(i, s)
            return s, {k: b[k].at[i].set(m[k]) for k in b}

        state, metrics = jax.lax.fori_loop(0, num_steps, loop_body, (state, buf))
    if mesh is not None:
        metrics = jax.lax.with_sharding_constraint(metrics, parallel.replicated(mesh))
    return state, metrics


def run_sparse_steps(task, feed, method, state, keys, data, first: int, num_steps: int, *,
                     length: Optional[int] = None, mesh=None, seed_strategy: str = "vmap"):
    """``num_steps`` sparse-training steps from step ``first`` in one compiled call.

    Args:
      task, feed: static (:class:`~jaxticket.train.sources.DeviceFeed`).
      method: a resolved :class:`~jaxticket.sparse.SparseMethod` (static).
      state: the train state at step ``first`` (single run or replicas).
      keys: the method's raw keys, ``uint32[2]`` (``[S, 2]`` with replicas).
      length: ``None`` (exactly one step, no loop) or the loop's metric buffer size.
      mesh: the ``parallel.make_mesh`` mesh the state, keys and data were put on (replicas
        over ``"replica"``, each batch over ``"data"``), or ``None``.
      seed_strategy: ``"vmap"`` or ``"sequential"`` (each replica's single-run program in
        turn, :data:`jaxticket.train.step.SEED_STRATEGIES`).

    Returns:
      ``(state, metrics)``, ``metrics[name]``: ``f32[length or 1(, S)]``.
    """
    if length is None and num_steps != 1:
        raise ValueError("run_sparse_steps without a length takes exactly one step")
    args = (np.int32(first), np.int32(num_steps))
    if is_batched(state) and resolve_seed_strategy(seed_strategy, mesh) == "sequential":
        outs = [_run(task, feed, method, length, None, s, k, data, *args)
                for s, k in zip(split_replicas(state), keys)]
        return stack_replicas([s for s, _ in outs]), jax.tree.map(lambda *ms: jnp.stack(ms, axis=1),
                                                                  *[m for _, m in outs])
    return _run(task, feed, method, length, mesh, state, keys, data, *args)
