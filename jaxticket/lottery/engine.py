"""IMP's engine: the compiled programs that build the start state of a level and prune.

Example:
    >>> import numpy as np, optax, flax.linen as nn
    >>> import jaxticket as jt
    >>> task = jt.Task(nn.Dense(3), input_shape=(4,), tx=optax.sgd(0.1))
    >>> engine = Engine(task, ImpSettings.of(seeds=2, steps=10, batch_size=2))
    >>> mask = engine.prune(jt.magnitude(0.5), 1, engine.initial().params, engine.ones_batched())
    >>> [round(float(d), 2) for d in jt.masks.host_density(mask, batch_dims=1)]
    [0.5, 0.5]
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxticket import masks as masks_lib
from jaxticket import parallel
from jaxticket import pruning
from jaxticket import train as train_lib
from jaxticket.lottery.settings import ImpSettings
from jaxticket.masks import Mask

__all__ = ["Engine", "level_keys"]


def level_keys(seed, level, seeds: int, salt=None):
    """``split(fold_in(key(seed), level), seeds)`` (then ``fold_in(., salt)`` per key)."""
    keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), level), seeds)
    return keys if salt is None else jax.vmap(lambda k: jax.random.fold_in(k, salt))(keys)


@functools.partial(jax.jit, static_argnums=0)
def _prune(pruner, params, mask: Mask, seed, level) -> Mask:
    """The pruner vmapped over the seeds axis, its keys derived inside: one program for
    every level of a lineage."""
    keys = level_keys(seed, level, jax.tree.leaves(mask.keep)[0].shape[0])
    return jax.vmap(pruner)(params, mask, keys)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _rewound(task: train_lib.Task, restores: tuple, rewind_state, mask: Mask, fresh_batch_stats):
    state = train_lib.with_mask(rewind_state, mask)  # params and optimizer moments masked
    if "opt_state" not in restores:  # fresh moments; the optimizer's own schedules resume at k
        state = state.replace(opt_state=train_lib.advance_schedules(jax.vmap(task.tx.init)(state.params), state.step))
    if "batch_stats" not in restores:
        state = state.replace(batch_stats=fresh_batch_stats)
    return state


@functools.partial(jax.jit, static_argnums=0)
def _restarted(task: train_lib.Task, rewind_state, params, batch_stats, mask: Mask, schedule_step):
    """A previous level's weights under ``mask`` at the rewind step, optimizer state fresh
    with its schedules at ``schedule_step`` (an int; broadcast over seeds)."""
    state = train_lib.with_mask(rewind_state.replace(params=params, batch_stats=batch_stats), mask)
    at = jnp.broadcast_to(jnp.asarray(schedule_step, jnp.int32), jnp.shape(state.step))
    return state.replace(opt_state=train_lib.advance_schedules(jax.vmap(task.tx.init)(state.params), at,
                                                               train_step=state.step))


class Engine:
    """The state-building pieces of IMP for one task and settings, each one compiled program:
    the initial state, a rewound or fine-tuned level start, and a level's mask.

    Attributes: ``task``, ``settings`` (:class:`~jaxticket.lottery.ImpSettings`), ``ones``
    (the all-True mask of the prunable leaves)."""

    def __init__(self, task: train_lib.Task, settings: ImpSettings, mesh=None):
        self.task, self.settings, self.mesh = task, settings, mesh
        self.ones = masks_lib.ones_like(task.abstract_params(), settings.prunable)

    def initial(self, mask: Optional[Mask] = None, init_offset: int = 0):
        """Every replica's initial state under ``mask`` (default all-True), init seed ``+ init_offset``;
        on the mesh (seeds over its replica axis) when there is one."""
        s = self.settings
        streams = {**s.fit.seed_streams, "init_seed": s.fit.init_seed + init_offset}
        if mask is not None and self.mesh is not None:
            mask = parallel.to_host(mask)  # built on one device, like the state, then placed
        state = train_lib.init_state(self.task, mask=self.ones if mask is None else mask, seeds=s.seeds,
                                     vary=s.vary, **streams)
        return self.place(state)

    def place(self, state):
        """``state`` (seeds-batched) on the mesh: seeds over ``"replica"``; itself without a mesh."""
        return state if self.mesh is None else parallel.shard_state(state, self.mesh)

    def rewound(self, rewind_state, mask: Mask):
        """The rewind point under ``mask``: what ``rewind_restores`` names restored, the rest fresh."""
        restores = self.settings.rewind_restores
        fresh = rewind_state.batch_stats if "batch_stats" in restores else self.initial(mask).batch_stats
        return _rewound(self.task, tuple(sorted(restores)), rewind_state, mask, fresh)

    def finetuned(self, rewind_state, previous_final, mask: Mask):
        """Fine-tuning (Han et al. 2015; Renda et al. 2020's baseline): a previous level's final
        weights (and BatchNorm statistics) under ``mask``, trained for steps k..T (the step
        counter, and so the data order, at k) at the *final* learning rate: the optimizer
        state is fresh with its schedules' counters at ``T - 1``, so the first step uses the
        schedule's last value and later ones what it gives past its end (the presets'
        step-decay and warm-up schedules, and optax's piecewise-constant, cosine, linear and
        warm-up schedules, hold their end value there; ``exponential_decay`` without
        ``end_value`` keeps decaying). Schedules of the global step (the presets') are offset
        by ``T - 1 - k`` (:class:`~jaxticket.train.StepScheduleState`). With a constant
        learning rate this is the same program as :meth:`lr_rewound`."""
        return _restarted(self.task, rewind_state, previous_final.params, previous_final.batch_stats, mask,
                          self.settings.fit.steps - 1)

    def lr_rewound(self, rewind_state, previous_final, mask: Mask):
        """Learning-rate rewinding (Renda et al. 2020): a previous level's final weights (and
        BatchNorm statistics) under ``mask``, the step counter set back to the rewind step k
        so the learning-rate schedule (and data order) replays from k, optimizer state fresh
        with its schedules advanced to k."""
        return _restarted(self.task, rewind_state, previous_final.params, previous_final.batch_stats, mask,
                          rewind_state.step)

    def prune(self, pruner, level: int, params, mask: Mask) -> Mask:
        """The mask of ``level`` from the previous level's final ``params`` and ``mask``,
        vmapped over seeds; random pruners get ``fold_in(key(pruning_seed), level)``, split
        per replica. Refuses to empty a layer unless allowed."""
        s = self.settings
        step_pruner = pruning.for_level(pruner, level)
        new = _prune(step_pruner, params, mask, np.int32(s.pruning_seed), np.int32(level))
        if not (s.allow_empty_layers or step_pruner.allows_empty):
            emptied = masks_lib.emptied_leaves(parallel.to_host(mask), parallel.to_host(new), batch_dims=1)
            if emptied:
                raise pruning.PruningError(
                    f"level {level}: the pruner would remove the last weight of {emptied}, disconnecting "
                    "the network; prune less per level, use rounding='half_even', protect the layer, or "
                    "allow it (allow_empty_layers=True)")
        return new

    def ones_batched(self) -> Mask:
        """The all-True mask with the seeds axis, as level 0 trains under."""
        return self.initial().mask
