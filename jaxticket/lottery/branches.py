"""Branches: baselines trained from an IMP lineage's masks at chosen levels, and their registry.

A branch kind is a function ``(ctx: BranchContext) -> TrainState`` registered with
:func:`register_branch`; built in: ``"rewind"``, ``"finetune"`` and ``"lr_rewind"`` (re-runs
of an IMP level: weight rewinding, fine-tuning, learning-rate rewinding), ``"reinit"`` (the mask on a fresh initialisation, init seed ``init_seed +
REINIT_SEED_STRIDE * level``), ``"random_mask"`` (a random mask with the same per-layer
counts, on the rewind point's weights), and the sanity checks of Frankle et al. 2021:
``"shuffle"`` (the mask shuffled within each layer), ``"reinit"``, ``"invert"`` (the
pruner's scores inverted).

Example:
    >>> built_in = {"rewind", "finetune", "lr_rewind", "reinit", "random_mask", "shuffle", "invert"}
    >>> built_in <= set(branch_kinds())  # a user's (or a script's) kinds come on top
    True
"""

from __future__ import annotations

import functools
import zlib
from typing import TYPE_CHECKING, Callable

import jax

from jaxticket import pruning
from jaxticket.masks import Mask
from jaxticket.registry import Registry
from jaxticket.rundir import IMP_KIND

if TYPE_CHECKING:
    from jaxticket.lottery.run import ImpRun

__all__ = ["BRANCHES", "BranchContext", "REINIT_SEED_STRIDE", "branch_kinds", "register_branch"]

REINIT_SEED_STRIDE = 100_003


class BranchContext:
    """What a branch kind builds its start state from (see :func:`register_branch`).

    Attributes:
      run: the :class:`ImpRun`. ``level``: the level branched from (>= 1).
      mask: the lineage's mask at ``level`` (leaves ``[S, ...]``).
      keys: one random key per seed, ``[S]``, for this branch kind and level.
    """

    def __init__(self, run: "ImpRun", kind: str, level: int):
        self.run, self.kind, self.level = run, kind, level
        self.mask = run.levels[level].mask
        # random_mask keeps the keys it always had; other kinds get their own
        self.keys = _branch_keys(run.settings.pruning_seed + 1, level, run.settings.seeds,
                                 None if kind == "random_mask" else _stable_id(kind))

    def rewound(self, mask: Mask):
        """The rewind point with ``mask`` (as the lineage's ``"rewind"`` reset)."""
        return self.run.engine.rewound(self.run.rewind_state, mask)

    def finetuned(self, mask: Mask):
        """The previous level's final weights under ``mask``, from step ``k``."""
        return self.run.engine.finetuned(self.run.rewind_state, self.run.final_state(self.level - 1), mask)

    def lr_rewound(self, mask: Mask):
        """The previous level's final weights under ``mask``, the learning-rate schedule
        replayed from step ``k`` (learning-rate rewinding, Renda et al. 2020)."""
        return self.run.engine.lr_rewound(self.run.rewind_state, self.run.final_state(self.level - 1), mask)

    def fresh(self, mask: Mask, init_offset: int = 0):
        """A fresh initialisation (init seed ``+ init_offset``) under ``mask``, at step 0."""
        return self.run.engine.initial(mask, init_offset)

    def prune(self, pruner) -> Mask:
        """The mask ``pruner`` gives this level from what the lineage pruned (the previous
        level's mask and the weights it scored), with the lineage's keys."""
        return self.run.prune(self.level, pruner)

    def prune_at_rewind(self, pruner) -> Mask:
        """The mask ``pruner`` gives the *dense* network's weights at the rewind point (with
        ``k = 0`` pruning at initialization: SNIP, GraSP, SynFlow get the task and a batch),
        its fraction counted from every prunable weight, with the lineage's keys of this
        level. E.g. SNIP at the density of an IMP level, trained as a branch of that level."""
        run = self.run
        return run.engine.prune(pruning.bind(pruner, run.task, run.data), self.level, run.rewind_state.params,
                                 run.levels[0].mask)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _branch_keys(seed, level, seeds: int, kind_id):
    base = jax.random.fold_in(jax.random.key(seed), level)
    if kind_id is not None:
        base = jax.random.fold_in(base, kind_id)
    return jax.random.split(base, seeds)


def _stable_id(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


BRANCHES = Registry("branch kind", hint="your own: @jaxticket.register_branch(name) on a (ctx) -> state")


def register_branch(name: str, *, overwrite: bool = False) -> Callable:
    """Decorator: a branch kind, ``fn(ctx: BranchContext) -> TrainState`` (the start state,
    its mask set), usable as ``run.branch(name)`` and ``jaxticket branch --kind name``.

    Example::

        @register_branch("rewind_half_mask")
        def rewind_half(ctx):
            return ctx.rewound(jax.vmap(jaxticket.pruning.random_like)(ctx.mask, ctx.keys))
    """
    if name == IMP_KIND:
        raise ValueError(f"{name!r} is the lineage itself, not a branch kind")

    def decorate(fn):
        if BRANCHES.get(name, None) is not fn:
            BRANCHES.register(name, fn, overwrite=overwrite)
        return fn

    return decorate


def branch_kinds() -> tuple[str, ...]:
    """The registered branch kinds."""
    return BRANCHES.names()


@register_branch("rewind")
def _rewind_branch(ctx: BranchContext):
    return ctx.rewound(ctx.mask)


@register_branch("finetune")
def _finetune_branch(ctx: BranchContext):
    return ctx.finetuned(ctx.mask)


@register_branch("lr_rewind")
def _lr_rewind_branch(ctx: BranchContext):
    """Learning-rate rewinding (Renda et al. 2020): the previous level's trained weights
    pruned by this level's mask, the step counter set back to k, so the learning-rate
    schedule replays from k over the same T - k steps as weight rewinding."""
    return ctx.lr_rewound(ctx.mask)


@register_branch("reinit")
def _reinit_branch(ctx: BranchContext):
    return ctx.fresh(ctx.mask, REINIT_SEED_STRIDE * ctx.level)


@register_branch("random_mask")
def _random_mask_branch(ctx: BranchContext):
    return ctx.rewound(jax.vmap(lambda m, k: pruning.random_like(m, k, "layer"))(ctx.mask, ctx.keys))


@register_branch("shuffle")
def _shuffle_branch(ctx: BranchContext):
    """Frankle et al. 2021's first sanity check: the mask shuffled within each layer (the
    same per-layer counts at random places), on the same weights."""
    return ctx.rewound(jax.vmap(lambda m, k: pruning.random_like(m, k, "layer"))(ctx.mask, ctx.keys))


@register_branch("invert")
def _invert_branch(ctx: BranchContext):
    """Frankle et al. 2021's third sanity check: the level's pruner with its scores
    inverted (the highest-scoring weights removed), on the same weights."""
    return ctx.rewound(ctx.prune(pruning.inverted(pruning.for_level(ctx.run.pruner, ctx.level))))
