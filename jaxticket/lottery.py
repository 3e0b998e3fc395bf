"""Iterative magnitude pruning (IMP) with rewinding, its run handle, and its baselines.

:func:`imp` works on objects: a :class:`~jaxticket.train.Task`, :class:`~jaxticket.data.Data`
and a pruner (any callable ``(params, mask, key) -> mask``, or a level schedule).
Level 0 trains the dense network (under an all-True mask) and keeps the state at the
rewind step ``k`` (``k = 0`` is the initialisation: Frankle & Carbin's lottery ticket;
``k > 0`` is late resetting / rewinding). Every later level

1. prunes the previous level's final weights (``pruner(params_T, mask, key) -> mask'``,
   a subset of ``mask``; refused if it would empty a layer, unless allowed),
2. builds the level's start state according to ``reset``, and
3. trains it to the end of training.

Reset modes of the lineage (``reset``):

* ``"rewind"``: the rewind point's weights (and, by default, BatchNorm statistics)
  masked with ``mask'``; fresh optimizer state; the step counter, and so the learning
  rate schedule and the data order, resume at ``k`` (open_lth's behaviour). What is
  restored is ``rewind_restores``, a subset of ``("params", "batch_stats",
  "opt_state")``; ``params`` is always restored.
* ``"finetune"``: the previous level's *final* weights and BatchNorm statistics, masked;
  fresh optimizer state; trains steps ``k..T`` like a rewound level, so the two use the
  same budget and schedule positions.

Branches are baselines run from a lineage's masks at chosen levels
(:meth:`ImpRun.branch`); their kinds live in their own registry
(:func:`register_branch`): ``"reinit"`` (the mask on a fresh initialisation, init seed
``init_seed + REINIT_SEED_STRIDE * level``), ``"random_mask"`` (a random mask with the
same per-layer survivor counts, on the rewind point's weights), ``"finetune"`` and
``"rewind"`` (a re-run of the IMP level), and the sanity checks of Frankle et al. 2021
(``"shuffle"``: the mask shuffled within each layer; ``"reinit"``; ``"invert"``: the
pruner's scores inverted).

Seeds are a leading axis: ``seeds=S`` replicas (init / data order / augmentation seeds
``+ i`` for the streams in ``vary``) train in one vmapped program, each with its own
masks, and the pruner is vmapped over them.

With ``workdir`` the run lives in a run directory (:mod:`jaxticket.rundir`) and running
the same thing again continues where it stopped: finished levels are read back, an
interrupted level resumes from its last checkpoint, and the results equal those of an
uninterrupted run (bitwise on CPU). The directory records the run's identity and its
data's fingerprint, and refuses a different run or other data. Without ``workdir``
everything stays in memory.

Presets and the command line come in through :func:`run_imp` (a :class:`LotteryConfig`,
plain data, turned into objects by :func:`objects_from_config`).

Example:
    >>> import numpy as np, optax, flax.linen as nn
    >>> import jaxticket as jt
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(600, 20)).astype(np.float32); y = (x[:, :5].argmax(1)).astype(np.int32)
    >>> data = jt.data.from_arrays(train=(x[:500], y[:500]), test=(x[500:], y[500:]))
    >>> class MLP(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         return nn.Dense(5, name="out")(nn.relu(nn.Dense(64, name="hidden")(x)))
    >>> task = jt.Task(MLP(), input_shape=(20,), tx=optax.adam(3e-3))
    >>> run = jt.imp(task, data, jt.magnitude(0.5, "global"), levels=2, steps=100, batch_size=50,
    ...              seeds=2, log=None)
    >>> [round(float(l.density[0]), 3) for l in run.levels]
    [1.0, 0.5, 0.25]
    >>> run.levels[2].test_accuracy.shape, run.levels[2].mask.keep["hidden"]["kernel"].shape
    ((2,), (2, 20, 64))
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import pathlib
import shutil
import time
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from jaxticket import checkpoints as ckpt_lib
from jaxticket import data as data_lib
from jaxticket import masks as masks_lib
from jaxticket import models as models_lib
from jaxticket import pruning
from jaxticket import rundir as rundir_lib
from jaxticket import train as train_lib
from jaxticket.masks import Mask

__all__ = [
    "BranchContext",
    "ImpRun",
    "ImpSettings",
    "LevelResult",
    "LotteryConfig",
    "REWIND_PARTS",
    "RESETS",
    "branch_kinds",
    "imp",
    "load_results",
    "objects_from_config",
    "open_run",
    "register_branch",
    "run_branch",
    "run_imp",
    "settings_from_config",
]

RESETS = ("rewind", "finetune")
PRUNE_FROM = ("final", "rewind")
REWIND_PARTS = ("params", "batch_stats", "opt_state")
REINIT_SEED_STRIDE = 100_003
RESULT_FIELDS = rundir_lib.RESULT_FIELDS


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


# ============================================================================ settings


@dataclasses.dataclass(frozen=True)
class ImpSettings:
    """Everything :func:`imp` takes besides the task, data and pruner (plain data).

    Attributes:
      levels: pruning levels after the dense level 0 (so ``levels + 1`` trainings).
      steps: training steps per level (T). ``batch_size``: per replica.
      rewind_step: k, the step rewound to (0 = reset to initialisation).
      seeds: replicas trained together (vmapped), each with its own masks.
      vary: which random streams differ across replicas (``init``, ``data``, ``aug``,
        ``dropout``).
      reset: the lineage's reset mode, one of :data:`RESETS`.
      rewind_restores: what a rewind restores (see the module docstring).
      eval_every, eval_batch_size: evaluation of validation and test splits.
      augment: ``True`` (CIFAR crop + flip on the device) or ``False``.
      chunk_size: training steps per compiled call.
      checkpoint_every: periodic checkpoints of a level (run directory only; 0: at the end).
      init_seed, data_seed, aug_seed, dropout_seed: the random streams of replica 0.
      pruning_seed: the key of random pruners and random masks.
      prunable: which leaves may be pruned: ``None``/``"kernels"`` (``ndim >= 2``),
        ``"all"`` (biases and normalisation parameters too), or a regex over leaf paths.
      allow_empty_layers: let a pruner remove a layer's last weight (default: an error).
      prune_from: the weights a level's pruner scores: ``"final"`` (the previous level's
        trained weights: IMP) or ``"rewind"`` (the rewind point's: with ``rewind_step=0``
        pruning at initialization, e.g. SNIP, GraSP, SynFlow, with level 0 the dense
        baseline).
    """

    levels: int
    steps: int
    batch_size: int
    rewind_step: int = 0
    seeds: int = 1
    vary: tuple = ("init", "data", "aug")
    reset: str = "rewind"
    rewind_restores: tuple = ("params", "batch_stats")
    eval_every: int = 0
    eval_batch_size: int = 1000
    augment: bool = False
    chunk_size: int = 100
    checkpoint_every: int = 0
    init_seed: int = 0
    data_seed: int = 0
    aug_seed: int = 0
    dropout_seed: int = 0
    pruning_seed: int = 0
    prunable: Optional[str] = None
    allow_empty_layers: bool = False
    prune_from: str = "final"

    def __post_init__(self):
        object.__setattr__(self, "vary", tuple(self.vary))
        object.__setattr__(self, "rewind_restores", tuple(self.rewind_restores))

        def bad(msg):
            raise ValueError(f"imp: {msg}")

        for name in ("levels", "rewind_step", "eval_every", "checkpoint_every", "init_seed", "data_seed",
                     "aug_seed", "dropout_seed", "pruning_seed"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                bad(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        for name in ("steps", "batch_size", "seeds", "eval_batch_size", "chunk_size"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                bad(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.rewind_step > self.steps:
            bad(f"rewind_step must be in [0, steps={self.steps}], got {self.rewind_step}")
        if self.reset not in RESETS:
            bad(f"reset must be one of {RESETS}, got {self.reset!r} (reinit and random_mask are "
                "branches: run.branch('reinit'))")
        unknown = sorted(set(self.rewind_restores) - set(REWIND_PARTS))
        if unknown or "params" not in self.rewind_restores:
            bad(f"rewind_restores must be a subset of {REWIND_PARTS} containing 'params', got {self.rewind_restores!r}")
        unknown = sorted(set(self.vary) - set(train_lib.VARY_STREAMS))
        if unknown:
            bad(f"vary: unknown streams {unknown}; valid: {train_lib.VARY_STREAMS}")
        for name in ("augment", "allow_empty_layers"):
            if not isinstance(getattr(self, name), bool):
                bad(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.prunable is not None and not isinstance(self.prunable, str):
            bad(f"prunable must be None, 'kernels', 'all' or a regex string, got {self.prunable!r}")
        if self.prune_from not in PRUNE_FROM:
            bad(f"prune_from must be one of {PRUNE_FROM}, got {self.prune_from!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def seed_streams(self) -> dict:
        return {"init_seed": self.init_seed, "data_seed": self.data_seed, "aug_seed": self.aug_seed,
                "dropout_seed": self.dropout_seed}


# ============================================================================ results


@dataclasses.dataclass
class LevelResult:
    """One trained level (of the lineage or of a branch): per-seed values, lazily its weights.

    Attributes:
      kind: ``"imp"`` or a branch kind. ``level``: the level.
      mask: the level's :class:`~jaxticket.masks.Mask`, leaves ``[S, ...]``.
      rows: one dict per seed (:data:`RESULT_FIELDS`).
      history: the evaluation records of its training.
    """

    kind: str
    level: int
    mask: Mask
    rows: list
    history: list
    _weights: Callable = dataclasses.field(repr=False, default=None)
    _logits: Callable = dataclasses.field(repr=False, default=None)

    def _column(self, name) -> np.ndarray:
        return np.asarray([np.nan if r[name] is None else r[name] for r in self.rows], np.float64)

    @property
    def density(self) -> np.ndarray:
        """Fraction of prunable weights kept, per seed ``[S]``."""
        return self._column("density")

    @property
    def test_accuracy(self) -> np.ndarray:
        """Final test accuracy per seed ``[S]``."""
        return self._column("final_test_accuracy")

    @property
    def early_stop_step(self) -> np.ndarray:
        """Iteration of minimum validation loss per seed (NaN without a validation split)."""
        return self._column("early_stop_step")

    @property
    def params(self):
        """The final params, leaves ``[S, ...]``."""
        return self._weights()[0]

    @property
    def batch_stats(self):
        return self._weights()[1]

    @property
    def test_logits(self) -> np.ndarray:
        """float32 ``[S, N, C]`` outputs on the test split."""
        return self._logits()


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
        return self.run._engine.rewound(self.run.rewind_state, mask)

    def finetuned(self, mask: Mask):
        """The previous level's final weights under ``mask``, from step ``k``."""
        return self.run._engine.finetuned(self.run.rewind_state, self.run._final_state(self.level - 1), mask)

    def fresh(self, mask: Mask, init_offset: int = 0):
        """A fresh initialisation (init seed ``+ init_offset``) under ``mask``, at step 0."""
        return self.run._engine.initial(mask, init_offset)

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
        return run._engine.prune(pruning.bind(pruner, run.task, run.data), self.level, run.rewind_state.params,
                                 run.levels[0].mask)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _branch_keys(seed, level, seeds: int, kind_id):
    base = jax.random.fold_in(jax.random.key(seed), level)
    if kind_id is not None:
        base = jax.random.fold_in(base, kind_id)
    return jax.random.split(base, seeds)


def _stable_id(name: str) -> int:
    import zlib

    return zlib.crc32(name.encode()) & 0x7FFFFFFF


_BRANCHES: dict[str, Callable] = {}


def register_branch(name: str, *, overwrite: bool = False) -> Callable:
    """Decorator: a branch kind, ``fn(ctx: BranchContext) -> TrainState`` (the start state,
    its mask set), usable as ``run.branch(name)`` and ``jaxticket branch --kind name``.

    Example::

        @register_branch("rewind_half_mask")
        def rewind_half(ctx):
            return ctx.rewound(jax.vmap(jaxticket.pruning.random_like)(ctx.mask, ctx.keys))
    """
    def decorate(fn):
        if name in _BRANCHES and not overwrite and _BRANCHES[name] is not fn:
            raise ValueError(f"branch kind {name!r} is already registered; pass overwrite=True to replace it")
        if name == rundir_lib.IMP_KIND:
            raise ValueError(f"{name!r} is the lineage itself, not a branch kind")
        _BRANCHES[name] = fn
        return fn

    return decorate


def branch_kinds() -> tuple[str, ...]:
    """The registered branch kinds."""
    return tuple(sorted(_BRANCHES))


@register_branch("rewind")
def _rewind_branch(ctx: BranchContext):
    return ctx.rewound(ctx.mask)


@register_branch("finetune")
def _finetune_branch(ctx: BranchContext):
    return ctx.finetuned(ctx.mask)


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


# ============================================================================ the engine


def _level_keys(seed, level, seeds: int, salt=None):
    """``split(fold_in(key(seed), level), seeds)`` (then ``fold_in(., salt)`` per key)."""
    keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), level), seeds)
    return keys if salt is None else jax.vmap(lambda k: jax.random.fold_in(k, salt))(keys)


@functools.partial(jax.jit, static_argnums=0)
def _prune(pruner, params, mask: Mask, seed, level) -> Mask:
    """The pruner vmapped over the seeds axis, its keys derived inside: one program for
    every level of a lineage."""
    keys = _level_keys(seed, level, jax.tree.leaves(mask.keep)[0].shape[0])
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
def _finetuned(task: train_lib.Task, rewind_state, params, batch_stats, mask: Mask):
    state = train_lib.with_mask(rewind_state.replace(params=params, batch_stats=batch_stats), mask)
    return state.replace(opt_state=train_lib.advance_schedules(jax.vmap(task.tx.init)(state.params), state.step))


class _Engine:
    """The state-building pieces of IMP for one task and settings (each one compiled program)."""

    def __init__(self, task: train_lib.Task, settings: ImpSettings):
        self.task, self.settings = task, settings
        self.ones = masks_lib.ones_like(task.abstract_params(), settings.prunable)

    def initial(self, mask: Optional[Mask] = None, init_offset: int = 0):
        s = self.settings
        streams = {**s.seed_streams, "init_seed": s.init_seed + init_offset}
        return train_lib.init_state(self.task, mask=self.ones if mask is None else mask, seeds=s.seeds,
                                    vary=s.vary, **streams)

    def rewound(self, rewind_state, mask: Mask):
        restores = self.settings.rewind_restores
        fresh = rewind_state.batch_stats if "batch_stats" in restores else self.initial(mask).batch_stats
        return _rewound(self.task, tuple(sorted(restores)), rewind_state, mask, fresh)

    def finetuned(self, rewind_state, previous_final, mask: Mask):
        return _finetuned(self.task, rewind_state, previous_final.params, previous_final.batch_stats, mask)

    def prune(self, pruner, level: int, params, mask: Mask) -> Mask:
        """The mask of ``level`` from the previous level's final ``params`` and ``mask``,
        vmapped over seeds; random pruners get ``fold_in(key(pruning_seed), level)``, split
        per replica. Refuses to empty a layer unless allowed."""
        s = self.settings
        step_pruner = pruning.for_level(pruner, level)
        new = _prune(step_pruner, params, mask, np.int32(s.pruning_seed), np.int32(level))
        if not (s.allow_empty_layers or step_pruner.allows_empty):
            emptied = masks_lib.emptied_leaves(mask, new, batch_dims=1)
            if emptied:
                raise pruning.PruningError(
                    f"level {level}: the pruner would remove the last weight of {emptied}, disconnecting "
                    "the network; prune less per level, use rounding='half_even', protect the layer, or "
                    "allow it (allow_empty_layers=True)")
        return new


def _per_seed(value, seeds: int) -> list:
    if value is None:
        return [None] * seeds
    arr = np.asarray(value, dtype=float).reshape(-1)
    return arr.tolist() if arr.size == seeds else [float(arr[0])] * seeds


def level_rows(kind: str, level: int, seeds: int, density, final: dict, history: list[dict],
               start_step: int, end_step: int) -> list[dict]:
    """One row per seed (:data:`RESULT_FIELDS`): final accuracies, the best test accuracy,
    and Frankle & Carbin's early stopping (the iteration of minimum validation loss after
    the level's start, and the test accuracy there)."""
    rows = []
    for s in range(seeds):
        test_acc = [(r["step"], _per_seed(r.get("test_accuracy"), seeds)[s]) for r in history
                    if r.get("test_accuracy") is not None]
        val_loss = [(r["step"], _per_seed(r.get("val_loss"), seeds)[s]) for r in history
                    if r.get("val_loss") is not None and r["step"] > start_step]
        row = {
            "kind": kind, "level": level, "seed": s, "density": float(density[s]),
            "final_test_accuracy": final["test_accuracy"][s], "final_test_loss": final["test_loss"][s],
            "best_test_accuracy": max((a for _, a in test_acc), default=final["test_accuracy"][s]),
            "final_val_accuracy": final.get("val_accuracy", [None] * seeds)[s],
            "final_val_loss": final.get("val_loss", [None] * seeds)[s],
            "early_stop_step": None, "early_stop_val_loss": None, "early_stop_test_accuracy": None,
            "start_step": start_step, "end_step": end_step,
        }
        for key in sorted(final):  # the task's other metrics: final_test_<metric>, final_val_<metric>
            if key not in ("test_accuracy", "test_loss", "val_accuracy", "val_loss") and final[key] is not None:
                row[f"final_{key}"] = final[key][s]
        if val_loss:
            step, loss = min(val_loss, key=lambda t: (t[1], t[0]))
            row["early_stop_step"], row["early_stop_val_loss"] = step, loss
            row["early_stop_test_accuracy"] = dict(test_acc).get(step)
        rows.append(row)
    return rows


# ============================================================================ the run


class ImpRun:
    """The handle of an IMP run: its levels, branches and rewind point.

    ``run.levels[i]`` is a :class:`LevelResult` (``.mask``, ``.density``,
    ``.test_accuracy`` one value per seed, ``.params`` the final params); ``run.branch(kind)``
    trains a baseline at chosen levels (:func:`register_branch`), kept in
    ``run.branches[kind][level]``; ``run.rows()`` gives every row.

    Example::

        run = jt.imp(task, data, jt.magnitude(0.2), levels=5, steps=2000, batch_size=64, seeds=3)
        [float(l.density.mean()) for l in run.levels]    # [1.0, 0.8, 0.64, ...]
        run.levels[5].mask.keep["Dense_0"]["kernel"]      # bool [3, in, out]: one mask per seed
        reinit = run.branch("reinit", levels=[5])          # run.branches["reinit"][5] too
        jt.seed_stats(reinit[5].test_accuracy)             # mean, std, 95% interval over seeds
    """

    def __init__(self, task, data, pruner, settings: ImpSettings, workdir=None, identity: Optional[dict] = None,
                 *, overwrite: bool = False, redo_levels: Sequence[int] = (), redo_kind: str = rundir_lib.IMP_KIND,
                 progress=None, log: Optional[Callable] = print):
        self.task, self.data, self.pruner, self.settings = task, data, pruner, settings
        self.progress, self.log = progress, (log or (lambda *_: None))
        self._engine = _Engine(task, settings)
        self.levels: list[LevelResult] = []
        self.branches: dict[str, dict[int, LevelResult]] = {}
        self._rewind_state = None
        self._finals: dict[int, Any] = {}
        self.workdir = None if workdir is None else pathlib.Path(workdir)
        self._dir = None if workdir is None else rundir_lib.RunDir(workdir)
        self._run = None
        self._lock = None
        self._identity = identity
        if self._dir is not None:
            train_lib.check_inputs(task, data.train)  # a bad input is refused before anything is written
            self._open(identity, overwrite, redo_levels, redo_kind)

    def __repr__(self) -> str:
        where = f", workdir={str(self.workdir)!r}" if self.workdir else ""
        return f"ImpRun({self.task.name}, levels done {len(self.levels)}/{self.settings.levels + 1}{where})"

    # ------------------------------------------------------------------ directory

    def _open(self, identity, overwrite, redo_levels=(), redo_kind=rundir_lib.IMP_KIND):
        root = self._dir.root
        self._lock = rundir_lib.RunLock(root).acquire()  # before anything is read or written
        try:
            self._open_locked(identity, overwrite, redo_levels, redo_kind)
        except BaseException:
            self.close()
            raise

    def _open_locked(self, identity, overwrite, redo_levels, redo_kind):
        root = self._dir.root
        if self._lock.previous:
            self.log(f"[run] took over the lock of {self._lock.previous}, which is no longer running")
        self._dir.clean_temporary()
        try:
            stored = self._dir.identity()
        except ValueError as e:
            if not overwrite:
                raise ckpt_lib.ConfigMismatchError(
                    f"{e}: it says what run the folder holds; restore it (from a backup, or a copy of the run), "
                    "or overwrite to start over") from None
            stored = None
        if overwrite:
            foreign = self._dir.foreign_entries()
            if foreign:
                raise ValueError(f"{root} holds files that are not a jaxticket run ({', '.join(foreign[:5])}"
                                 f"{', ...' if len(foreign) > 5 else ''}); overwrite deletes a run's files only: "
                                 "choose a new or empty folder")
        elif stored is None and self._dir.has_trained_files():
            raise ckpt_lib.ConfigMismatchError(
                f"{root} holds trained levels but no {rundir_lib.CONFIG_FILE} saying what they are (deleted?); "
                "restore that file to resume, or overwrite to start over")
        if not overwrite and stored is not None and "data" in stored.get("config", {}) \
                and stored["config"]["data"] != identity["data"]:
            raise ckpt_lib.DataMismatchError(
                f"run directory {root} was trained on {_describe_data(stored['config']['data'])}, not on "
                f"{_describe_data(identity['data'])} given now; use another directory, or overwrite to start over")
        # A run saved before a settings field existed resumes if the field is at its default.
        defaults = {"config": ckpt_lib.dataclass_defaults(LotteryConfig),
                    "settings": ckpt_lib.dataclass_defaults(ImpSettings)}
        # More (or fewer) levels are the same run: its levels are kept and it is extended.
        self._run = ckpt_lib.RunCheckpoints(root, identity, overwrite=overwrite, defaults=defaults,
                                            growable=("config.levels", "settings.levels"))
        # Only now that the run is known to be this one is anything deleted.
        if overwrite:
            for sub in ("levels", "branches"):
                shutil.rmtree(root / sub, ignore_errors=True)
            for name in (rundir_lib.RESULTS_JSON, rundir_lib.RESULTS_CSV):
                (root / name).unlink(missing_ok=True)
        for level in redo_levels:
            self._dir.discard_level(int(level), redo_kind)
            self.log(f"[{redo_kind}] level {int(level):2d}  discarded, to be trained again")
        test = self.data.test
        if hasattr(test, "labels") and not (root / rundir_lib.TEST_LABELS_FILE).exists():
            self._dir.save_test_labels(test.labels)

    @contextlib.contextmanager
    def _directory_open(self):
        """The run directory open (locked, its checkpoints at hand) for the block: reopened
        when the run was closed (``imp`` closes it when it returns), closed again after."""
        if self._dir is None or self._run is not None:
            yield
            return
        self._open(self._identity, False)
        try:
            yield
        finally:
            self.close()

    def close(self) -> None:
        if self._run is not None:
            self._run.close()
            self._run = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def rewind_state(self):
        """The (seeds-batched) state at the rewind step ``k``."""
        if self._rewind_state is None and self._dir is not None:
            with self._directory_open():
                k = self.settings.rewind_step
                if k not in self._run.rewind_steps():
                    raise RuntimeError(f"the rewind point at step {k} is missing from {self.workdir}; "
                                       "rerun with overwrite to start this experiment again.")
                self._rewind_state = self._run.restore_rewind_point(k, train_lib.abstract(self._engine.initial()))
        return self._rewind_state

    def _final_state(self, level: int):
        if level in self._finals:
            return self._finals[level]
        result = self.levels[level]
        like = self._engine.initial()
        state = like.replace(params=result.params, batch_stats=result.batch_stats, mask=result.mask)
        return state

    def _read_level(self, level: int, kind: str) -> Optional[LevelResult]:
        if self._dir is None or not self._dir.is_done(level, kind):
            return None
        self._dir.check_level(level, kind)  # every file as it was written, or one line saying which is not
        trained_by = self._dir.level_run_hash(level, kind)
        if self._run is not None and trained_by is not None and trained_by != self._run.config_hash:
            raise rundir_lib.CorruptRunError(
                f"{self._dir.level_dir(level, kind)} was trained by another run (hash {trained_by}, this run "
                f"{self._run.config_hash}); redo that level (jaxticket imp/branch ... --redo-level {level}, or "
                f"redo_levels=[{level}])")
        summary = self._dir.summary(level, kind)
        like = self._engine.initial()
        d = self._dir

        @functools.lru_cache(maxsize=1)
        def weights():
            return (d.load_params(level, kind, like.params), d.load_batch_stats(level, kind, like.batch_stats))

        mask = d.load_mask(level, kind, like.mask)
        return LevelResult(kind, level, mask, summary["rows"], d.history(level, kind), weights,
                           lambda: d.load_logits(level, kind))

    # ------------------------------------------------------------------ training a level

    def _train(self, state, kind: str, level: int, rewind_step: Optional[int] = None):
        s, data = self.settings, self.data
        t0 = time.perf_counter()
        start_step = train_lib.host_step(state)
        fit_kw = dict(steps=s.steps, batch_size=s.batch_size, val=data.validation, test=data.test,
                      eval_every=s.eval_every, eval_batch_size=s.eval_batch_size, augment=s.augment,
                      chunk_size=s.chunk_size, rewind_step=rewind_step, progress=self.progress)
        if self._dir is not None:
            self._dir.save_mask(level, kind, state.mask)
            level_dir = self._dir.level_dir(level, kind)
            level_identity = {"run": self._run.config_hash, "kind": kind, "level": level}
            with ckpt_lib.RunCheckpoints(level_dir, level_identity) as ckpts:
                result = train_lib.fit(self.task, state, data.train, checkpoints=ckpts,
                                       checkpoint_every=s.checkpoint_every,
                                       metrics_path=level_dir / rundir_lib.METRICS_FILE, **fit_kw)
            history = self._dir.history(level, kind)
        else:
            result = train_lib.fit(self.task, state, data.train, **fit_kw)
            history = result.history
        final, logits = {}, None
        for name, ds in (("test", data.test), ("val", data.validation)):
            if ds is None:
                continue
            ev = jax.device_get(train_lib.evaluate(self.task, result.state, ds, batch_size=s.eval_batch_size,
                                                   logits=name == "test"))
            final[f"{name}_accuracy"] = _per_seed(ev.get("accuracy"), s.seeds)
            final[f"{name}_loss"] = _per_seed(ev["loss"], s.seeds)
            for metric in self.task.metric_names:  # a task's own metrics (regression: mae, ...)
                if metric != "accuracy":
                    final[f"{name}_{metric}"] = _per_seed(ev.get(metric), s.seeds)
            if name == "test":
                logits = np.asarray(ev["logits"], np.float32)
        density = masks_lib.host_density(result.state.mask, batch_dims=1).tolist()
        rows = level_rows(kind, level, s.seeds, density, final, history, start_step, s.steps)
        elapsed = round(time.perf_counter() - t0, 3)
        if self._dir is not None:
            self._dir.save_level(level, kind, params=result.state.params, batch_stats=result.state.batch_stats,
                                 test_logits=logits,
                                 summary={"kind": kind, "level": level, "density": density, "rows": rows,
                                          "elapsed_s": elapsed})
        accs = ", ".join("-" if a is None else f"{a:.4f}" for a in final["test_accuracy"])
        self.log(f"[{kind}] level {level:2d}  density {np.mean(density):7.4f}  test accuracy {accs}  ({elapsed:.1f} s)")
        state = result.state
        out = LevelResult(kind, level, state.mask, rows, history,
                          lambda: (state.params, state.batch_stats), lambda: logits)
        return out, result

    # ------------------------------------------------------------------ the lineage

    def run(self) -> "ImpRun":
        """Trains (or reads back) every level of the lineage; returns ``self``."""
        s = self.settings
        previous_mask = self._engine.ones
        try:
            for level in range(s.levels + 1):
                done = self._read_level(level, rundir_lib.IMP_KIND)
                if done is not None and (level > 0 or s.rewind_step in self._run.rewind_steps()):
                    self.log(f"[imp] level {level:2d}  done, read back from {self._dir.level_dir(level)}")
                    self.levels.append(done)
                    previous_mask = done.mask
                    continue
                if level == 0:
                    state = self._engine.initial()
                else:
                    previous = self._final_state(level - 1)
                    scored = previous.params if s.prune_from == "final" else self.rewind_state.params
                    mask = self._engine.prune(self.pruner, level, scored, previous_mask)
                    if s.reset == "rewind":
                        state = self._engine.rewound(self.rewind_state, mask)
                    else:
                        state = self._engine.finetuned(self.rewind_state, previous, mask)
                result, fitted = self._train(state, rundir_lib.IMP_KIND, level,
                                             rewind_step=s.rewind_step if level == 0 else None)
                if level == 0:
                    self._rewind_state = fitted.rewind_state
                    if self._run is not None and s.rewind_step not in self._run.rewind_steps():
                        self._run.save_rewind_point(s.rewind_step, fitted.rewind_state)
                self._finals = {level: fitted.state}  # the previous level's final state, on the device
                self.levels.append(result)
                previous_mask = result.mask
                if self._dir is not None:
                    self._dir.write_results()
        finally:
            if self._dir is not None and self._run is not None:
                self._dir.write_results()
        return self

    def branch(self, kind: str, levels: Optional[Sequence[int]] = None) -> list[LevelResult]:
        """Trains branch ``kind`` (:func:`branch_kinds`) at ``levels`` (default: every IMP
        level >= 1), from this lineage's masks; finished ones are read back."""
        if kind not in _BRANCHES:
            raise ValueError(f"unknown branch {kind!r}; valid: {branch_kinds()}")
        finished = [l.level for l in self.levels]
        levels = [l for l in finished if l >= 1] if levels is None else [int(l) for l in levels]
        missing = [l for l in levels if l not in finished or l < 1]
        if missing:
            raise ValueError(f"branch levels {missing} are not finished IMP levels >= 1; finished: {finished}")
        with self._directory_open():
            return self._branch(kind, levels)

    def _branch(self, kind: str, levels: list[int]) -> list[LevelResult]:
        out = []
        for level in levels:
            result = self._read_level(level, kind)
            if result is not None:
                self.log(f"[{kind}] level {level:2d}  done, read back from {self._dir.level_dir(level, kind)}")
            else:
                state = _BRANCHES[kind](BranchContext(self, kind, level))
                result, _ = self._train(state, kind, level)
            self.branches.setdefault(kind, {})[level] = result
            out.append(result)
        if self._dir is not None:
            self._dir.write_results()
        return out

    def prune(self, level: int, pruner=None) -> Mask:
        """The mask the lineage's pruner (or ``pruner``) gives ``level`` (>= 1): from level
        ``level - 1``'s mask and the weights it scores (``prune_from``: the previous level's
        final weights, or the rewind point's); recomputed, deterministic."""
        return self._engine.prune(self.pruner if pruner is None else pruner, level, self._scored_params(level),
                                  self.levels[level - 1].mask)

    def _scored_params(self, level: int):
        if self.settings.prune_from == "rewind":
            return self.rewind_state.params
        return self._final_state(level - 1).params

    def branch_state(self, kind: str, level: int):
        """The start state branch ``kind`` would train at ``level`` (e.g. the rewound
        level-``L`` subnetwork, ``branch_state("rewind", L)``), without training it."""
        if kind not in _BRANCHES:
            raise ValueError(f"unknown branch {kind!r}; valid: {branch_kinds()}")
        with self._directory_open():
            return _BRANCHES[kind](BranchContext(self, kind, level))

    def rows(self) -> list[dict]:
        """Every row: the lineage's levels, then the branches by kind."""
        out = [r for l in self.levels for r in l.rows]
        for kind in sorted(self.branches):
            out += [r for level in sorted(self.branches[kind]) for r in self.branches[kind][level].rows]
        return out


def _describe_data(fingerprint: dict) -> str:
    if "dataset" in fingerprint:
        d = fingerprint["dataset"]
        return f"dataset {d.get('dataset')} {d.get('version')} (validation {d.get('validation_size')})"
    splits = fingerprint.get("splits", {})
    sizes = ", ".join(f"{k} {splits[k].get('n')}" for k in data_lib.SPLITS if k in splits)
    return f"arrays sha256:{fingerprint.get('sha256')} ({sizes})"


def imp(task: train_lib.Task, data, pruner, *, levels: int, steps: int, batch_size: int, rewind_step: int = 0,
        seeds: int = 1, workdir=None, overwrite: bool = False, redo_levels: Sequence[int] = (), progress=None,
        log: Optional[Callable] = print, identity: Optional[dict] = None, **settings) -> ImpRun:
    """Iterative magnitude pruning on objects: trains (or resumes) the lineage, returns its handle.

    Args:
      task: the :class:`~jaxticket.train.Task` (model, input shape, loss, optimizer, metrics).
      data: :class:`~jaxticket.data.Data` (``from_arrays`` or ``data.splits``); IMP
        trains on ``train``, evaluates ``validation`` (early stopping) and ``test``.
      pruner: any pruner callable ``(params, mask, key) -> mask``, a pruner config dict,
        or a level schedule (:func:`jaxticket.pruning.per_level`, ``to_density``).
      levels, steps, batch_size, rewind_step, seeds: see :class:`ImpSettings`.
      workdir: ``None``: in memory. A directory: on disk and resumable (see the module
        docstring), locked while the run works in it; ``overwrite`` discards what it holds,
        ``redo_levels`` only those levels (e.g. one whose files were damaged).
      progress: per-level progress bars (``None``: automatic). ``log``: called with a line
        per level (``None``: quiet).
      identity: what the run directory records as the run's identity (default: the
        task's description, the pruner, the settings); the data fingerprint is added.
      **settings: the other fields of :class:`ImpSettings` (``eval_every``, ``reset``,
        ``prunable``, ``vary``, ``init_seed``, ``augment``, ...).

    Returns:
      :class:`ImpRun`: ``run.levels[i].mask / .density / .test_accuracy / .params``,
      ``run.branch("reinit")``, ``run.rows()``.

    Example (a run to execute, with timings, is in this module's docstring)::

        data = jt.data.from_arrays(train=(x_train, y_train), test=(x_test, y_test),
                                   validation_size=5000)          # x: float32 [N, 28, 28, 1]
        task = jt.Task(MyModel(), input_shape=(28, 28, 1), tx=optax.adam(1.2e-3))
        run = jt.imp(task, data, jt.magnitude(0.2), levels=20, steps=50_000, batch_size=60,
                     rewind_step=0, seeds=5, eval_every=100, workdir="runs/lenet")
        run.levels[9].density          # float [5]: ~0.134 for every seed
        run.levels[9].test_accuracy    # float [5]
        run.branch("reinit", levels=[5, 10, 15])
    """
    data = data_lib.as_data(data)
    if data.train is None or data.test is None:
        raise ValueError("imp needs data with a train and a test split")
    pruner = pruning.from_config(pruner) if isinstance(pruner, dict) else pruner
    if not hasattr(pruner, "at_level"):
        pruner = pruning.as_pruner(pruner)
    pruner = pruning.bind(pruner, task, data)  # SNIP, GraSP, SynFlow: the model and a batch
    s = ImpSettings(levels=levels, steps=steps, batch_size=batch_size, rewind_step=rewind_step, seeds=seeds,
                    **settings)
    if s.augment and not data_lib.is_image_data(data.train):
        raise ValueError("augment=True is the CIFAR crop + flip of images [N, H, W, C]; the data's inputs are "
                         f"{data.train.inputs.dtype}{list(data.train.example_shape)}")
    if workdir is not None:
        base = identity if identity is not None else {
            "task": task.describe(), "pruner": pruning.describe(pruner), "settings": s.to_dict()}
        identity = {**base, "data": data.fingerprint()}
    run = ImpRun(task, data, pruner, s, workdir, identity, overwrite=overwrite, redo_levels=redo_levels,
                 progress=progress, log=log)
    try:
        return run.run()
    finally:
        run.close()


# ============================================================================ the config edge


@dataclasses.dataclass(frozen=True)
class LotteryConfig:
    """An IMP experiment as plain data (presets, JSON, the command line).

    Attributes:
      train: the :class:`jaxticket.train.TrainConfig` of every level (``steps`` = T).
      levels: pruning levels after the dense level 0 (so ``levels + 1`` trainings).
      pruner: the pruner (or level schedule) as plain data
        (:func:`jaxticket.pruning.from_config`), e.g.
        ``{"method": "magnitude", "fraction": 0.2, "scope": "global"}``; registered
        methods of your own too.
      prunable: ``None``/``"kernels"``, ``"all"``, or a regex over leaf paths.
      rewind_step: k, the step rewound to (0 = reset to initialisation).
      reset: the lineage's reset mode, one of :data:`RESETS`.
      rewind_restores: what a rewind restores, a subset of :data:`REWIND_PARTS`
        containing ``"params"``; the default is open_lth's (weights and BN statistics;
        optimizer state fresh; the schedule resumes at k in every case).
      seeds: replicas trained together (vmapped), each with its own masks.
      vary: which random streams differ across replicas.
      pruning_seed: the key of random pruners and random masks.
      validation_size: training examples held out for validation/early stopping
        (``None`` = the dataset's default; 0 = none).
      allow_empty_layers: let the pruner remove a layer's last weight.
      prune_from: ``"final"`` (IMP) or ``"rewind"`` (pruning at initialization), see
        :class:`ImpSettings`.

    Example:
        >>> import dataclasses
        >>> from jaxticket import configs
        >>> config = configs.get("lenet_300_100_mnist")      # Frankle & Carbin's settings
        >>> config.train.lr, config.train.batch_size, config.train.steps, config.levels
        (0.0012, 60, 50000, 20)
        >>> config = dataclasses.replace(config, levels=5, rewind_step=500)
        >>> LotteryConfig.from_dict(config.to_dict()) == config   # plain data, round trip
        True
    """

    train: train_lib.TrainConfig = dataclasses.field(default_factory=train_lib.TrainConfig)
    levels: int = 3
    pruner: Any = dataclasses.field(
        default_factory=lambda: {"method": "magnitude", "fraction": 0.2, "scope": "global"}
    )
    prunable: Optional[str] = None
    rewind_step: int = 0
    reset: str = "rewind"
    rewind_restores: tuple = ("params", "batch_stats")
    seeds: int = 1
    vary: tuple = ("init", "data", "aug")
    pruning_seed: int = 0
    validation_size: Optional[int] = None
    allow_empty_layers: bool = False
    prune_from: str = "final"

    def __post_init__(self):
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", train_lib.TrainConfig(**self.train))
        if isinstance(self.rewind_restores, list):
            object.__setattr__(self, "rewind_restores", tuple(self.rewind_restores))
        if isinstance(self.vary, list):
            object.__setattr__(self, "vary", tuple(self.vary))
        if not isinstance(self.pruner, dict):
            object.__setattr__(self, "pruner", pruning.to_config(self.pruner))
        validate_config(self)

    def replace(self, **changes) -> "LotteryConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LotteryConfig":
        """The config of :meth:`to_dict`; a field this jaxticket does not know (a run
        directory written by a newer version) is a ``ValueError`` naming it."""
        d = dict(d)
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        unknown += sorted(f"train.{k}" for k in set(d.get("train", {})) - {f.name for f in
                                                                           dataclasses.fields(train_lib.TrainConfig)})
        if unknown:
            raise ValueError(f"the config has fields this jaxticket does not know ({', '.join(unknown)}): it was "
                             "written by a newer jaxticket; upgrade jaxticket to read it")
        if "train" in d:
            d["train"] = train_lib.TrainConfig(**d["train"])
        return cls(**d)

    def make_pruner(self):
        return pruning.from_config(self.pruner)


def validate_config(config: LotteryConfig) -> None:
    """Raises ``ValueError`` naming the bad field and what is allowed."""
    if not isinstance(config.train, train_lib.TrainConfig):
        raise ValueError(f"LotteryConfig: train must be a TrainConfig, got {type(config.train).__name__}")
    if config.validation_size is not None and (not _is_int(config.validation_size) or config.validation_size < 0):
        raise ValueError(f"LotteryConfig: validation_size must be None or an int >= 0, got {config.validation_size!r}")
    try:
        settings_from_config(config)
    except ValueError as e:
        raise ValueError(str(e).replace("imp: ", "LotteryConfig: ", 1)) from None
    for where, value in _fractions(config.pruner, "pruner"):
        if isinstance(value, (bool, str)) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ValueError(f"LotteryConfig: {where} must be a number in (0, 1) (the fraction of the surviving "
                             f"weights pruned per level), got {value!r}")
    pruning.from_config(config.pruner)  # raises with the valid methods/settings


def _fractions(cfg, where: str):
    """``(where, value)`` of every ``fraction`` in a pruner config."""
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            if k == "fraction":
                yield f"{where}.fraction", v
            else:
                yield from _fractions(v, f"{where}.{k}")
    elif isinstance(cfg, (list, tuple)):
        for i, v in enumerate(cfg):
            yield from _fractions(v, f"{where}[{i}]")


def settings_from_config(config: LotteryConfig) -> ImpSettings:
    """The :class:`ImpSettings` of a LotteryConfig."""
    tc = config.train
    return ImpSettings(
        levels=config.levels, steps=tc.steps, batch_size=tc.batch_size, rewind_step=config.rewind_step,
        seeds=config.seeds, vary=config.vary, reset=config.reset, rewind_restores=config.rewind_restores,
        eval_every=tc.eval_every, eval_batch_size=tc.eval_batch_size, augment=tc.augment,
        chunk_size=tc.chunk_size, checkpoint_every=tc.checkpoint_every, pruning_seed=config.pruning_seed,
        prunable=config.prunable, allow_empty_layers=config.allow_empty_layers, prune_from=config.prune_from,
        **tc.seeds)


def load_data(config: LotteryConfig, data_dir=None, manual_dir=None) -> data_lib.Data:
    """The run's data: device-resident splits, or for a streaming dataset (ImageNet)
    :class:`~jaxticket.train.HostStream` splits over ``data.make_stream``: train batches
    of ``batch_size`` shuffled and augmented with seed ``data_seed``, evaluation batches
    of ``eval_batch_size``, images of the model's input size."""
    tc = config.train
    spec = data_lib.get_spec(tc.dataset)
    if not spec.streaming:
        return data_lib.splits(tc.dataset, validation_size=config.validation_size, data_dir=data_dir,
                               manual_dir=manual_dir)
    validation_size = spec.default_validation_size if config.validation_size is None else config.validation_size
    image_size = int((tc.input_shape or models_lib.input_shape(tc.model))[0])
    kw = dict(image_size=image_size, validation_size=validation_size, data_dir=data_dir, manual_dir=manual_dir)

    def stream(split, **extra):
        return data_lib.make_stream(tc.dataset, split, **extra, **kw)

    steps_per_epoch = len(stream("train", batch_size=tc.batch_size, seed=tc.data_seed, num_epochs=1))
    host = functools.partial(train_lib.HostStream, name=tc.dataset)
    return data_lib.Data(
        train=host(stream("train", batch_size=tc.batch_size, seed=tc.data_seed), steps_per_epoch=steps_per_epoch),
        validation=host(stream("validation", batch_size=tc.eval_batch_size)) if validation_size else None,
        test=host(stream("test", batch_size=tc.eval_batch_size)),
        source={"dataset": tc.dataset, "version": spec.tfds_version, "validation_size": int(validation_size)})


def objects_from_config(config: LotteryConfig, *, data=None, data_dir=None, manual_dir=None):
    """``(task, data, pruner, settings)`` of a LotteryConfig: the edge where names become
    objects. ``data`` (a :class:`~jaxticket.data.Data`) skips loading the dataset."""
    data = data_lib.as_data(data) if data is not None else load_data(config, data_dir, manual_dir)
    steps_per_epoch = train_lib.steps_per_epoch(data.train, config.train.batch_size)
    train_config = config.train
    if train_config.input_shape is None and len(getattr(data.train, "example_shape", ())) == 3:
        # The model is built for the data it is given (ResNet-20 on 28x28x1 Fashion-MNIST).
        train_config = dataclasses.replace(train_config, input_shape=tuple(data.train.example_shape))
    task = train_lib.task_from_config(train_config, steps_per_epoch=steps_per_epoch)
    return task, data, pruning.bind(config.make_pruner(), task, data), settings_from_config(config)


def _config_run(config: LotteryConfig, workdir, *, datasets=None, data_dir=None, manual_dir=None, **kw) -> ImpRun:
    task, data, pruner, settings = objects_from_config(config, data=datasets, data_dir=data_dir, manual_dir=manual_dir)
    identity = {"config": config.to_dict(), "data": data.fingerprint()}
    return ImpRun(task, data, pruner, settings, workdir, identity, **kw)


def run_imp(config: LotteryConfig, workdir, *, datasets=None, data_dir=None, manual_dir=None,
            overwrite: bool = False, redo_levels: Sequence[int] = (), progress=None,
            log: Callable = print) -> list[dict]:
    """Runs (or resumes) the IMP experiment of a LotteryConfig in ``workdir``.

    The dataset is loaded (``data_dir``/``manual_dir`` for TFDS; or pass ``datasets``, a
    :class:`~jaxticket.data.Data`) before anything is written. Returns one row per
    (level, seed), also in ``results.json`` / ``results.csv``.

    Example (what ``jaxticket imp --config lenet_300_100_mnist --levels 10`` does)::

        config = dataclasses.replace(configs.get("lenet_300_100_mnist"), levels=10)  # jaxticket.configs
        rows = jt.run_imp(config, "runs/lenet", manual_dir="data/mnist")
        rows[0]["final_test_accuracy"], rows[-1]["density"]
        jt.run_branch("runs/lenet", "random_mask", levels=[5, 10])
    """
    run = _config_run(config, workdir, datasets=datasets, data_dir=data_dir, manual_dir=manual_dir,
                      overwrite=overwrite, redo_levels=redo_levels, progress=progress, log=log)
    try:
        return [r for level in run.run().levels for r in level.rows]
    finally:
        run.close()


def open_run(workdir, *, datasets=None, data_dir=None, manual_dir=None, progress=None,
             log: Callable = print, **kw) -> ImpRun:
    """The handle of a run directory made by :func:`run_imp` (or ``jaxticket imp``): its
    finished levels read back, nothing trained. Close it with ``run.close()``."""
    workdir = pathlib.Path(workdir)
    stored = rundir_lib.RunDir(workdir).identity()
    if stored is None:
        raise FileNotFoundError(f"{workdir} holds no IMP run (no {rundir_lib.CONFIG_FILE}); run `jaxticket imp` first.")
    if "config" not in stored.get("config", {}):
        raise ValueError(f"{workdir} was made by jaxticket.imp on objects; reopen it by calling jaxticket.imp "
                         "with the same task, data and pruner")
    config = LotteryConfig.from_dict(stored["config"]["config"])
    run = _config_run(config, workdir, datasets=datasets, data_dir=data_dir, manual_dir=manual_dir,
                      progress=progress, log=log, **kw)
    for level in range(config.levels + 1):
        result = run._read_level(level, rundir_lib.IMP_KIND)
        if result is None:
            break
        run.levels.append(result)
    return run


def run_branch(workdir, kind: str, levels: Optional[Sequence[int]] = None, *, datasets=None, data_dir=None,
               manual_dir=None, redo_levels: Sequence[int] = (), progress=None, log: Callable = print) -> list[dict]:
    """Runs a baseline from a run directory made by :func:`run_imp` at chosen levels.

    ``kind``: a registered branch kind (:func:`branch_kinds`). ``levels``: default all
    finished IMP levels >= 1. Results go to ``branches/KIND/level_LL`` and the run's
    results files; returns the branch's rows.

    Example (``jaxticket branch runs/lenet --kind reinit --levels 3 7``)::

        rows = jt.run_branch("runs/lenet", "reinit", levels=[3, 7], manual_dir="data/mnist")
        sorted({r["level"] for r in rows})    # [3, 7]
    """
    if kind not in _BRANCHES:
        raise ValueError(f"unknown branch {kind!r}; valid: {branch_kinds()}")
    run = open_run(workdir, datasets=datasets, data_dir=data_dir, manual_dir=manual_dir, progress=progress, log=log)
    try:
        finished = [l.level for l in run.levels]
        wanted = [l for l in finished if l >= 1] if levels is None else [int(l) for l in levels]
        bad = sorted({int(l) for l in [*wanted, *redo_levels]} - {l for l in finished if l >= 1})
        if bad:  # checked before a redone level is deleted
            raise ValueError(f"branch levels {bad} are not finished IMP levels >= 1; finished: {finished}")
        for level in redo_levels:
            run._dir.discard_level(int(level), kind)
            log(f"[{kind}] level {int(level):2d}  discarded, to be trained again")
        return [r for result in run.branch(kind, wanted) for r in result.rows]
    finally:
        run.close()


def load_results(workdir) -> list[dict]:
    """All rows (IMP levels and branches) of a run directory, from the level summaries."""
    return rundir_lib.RunDir(workdir).rows()
