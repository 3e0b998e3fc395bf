"""Iterative magnitude pruning (IMP) with rewinding, its run handle, and its baselines.

The package, in reading order: :mod:`~jaxticket.lottery.settings` (:class:`ImpSettings`,
which embeds the training loop's :class:`~jaxticket.train.FitSettings`),
:mod:`~jaxticket.lottery.engine` (the compiled programs that build a level's start state
and prune), :mod:`~jaxticket.lottery.branches` (baselines and their registry),
:mod:`~jaxticket.lottery.results` (:class:`LevelResult`, rows), :mod:`~jaxticket.lottery.run`
(:class:`ImpRun`, :func:`imp`) and :mod:`~jaxticket.lottery.config` (:class:`LotteryConfig`,
the edge where plain data becomes objects, and :func:`run_imp`).

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
  fresh optimizer state; trains steps ``k..T`` (the same budget as a rewound level) at the
  schedule's *final* learning rate (its counters start at ``T - 1``).
* ``"lr_rewind"``: learning-rate rewinding (Renda et al. 2020): the previous level's final
  weights, masked; fresh optimizer state; steps ``k..T`` with the schedule replayed from
  ``k``. With a constant learning rate it equals ``"finetune"``.

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

from jaxticket.lottery.settings import PRUNE_FROM, RESETS, REWIND_PARTS, ImpSettings
from jaxticket.lottery.results import RESULT_FIELDS, LevelResult, level_rows
from jaxticket.lottery.engine import Engine
from jaxticket.lottery.branches import BRANCHES, REINIT_SEED_STRIDE, BranchContext, branch_kinds, register_branch
from jaxticket.lottery.run import BranchLevelError, ImpRun, branch_levels, imp, imp_settings, place_data
from jaxticket.lottery.config import (LotteryConfig, check_config, load_data, load_results, objects_from_config,
                                      open_run, run_branch, run_imp, upgrade_config)

__all__ = [
    "BRANCHES", "BranchContext", "BranchLevelError", "Engine", "ImpRun", "ImpSettings", "LevelResult",
    "LotteryConfig", "PRUNE_FROM", "REINIT_SEED_STRIDE", "RESETS", "RESULT_FIELDS", "REWIND_PARTS",
    "branch_kinds", "branch_levels", "check_config", "imp", "imp_settings", "place_data", "level_rows", "load_data", "load_results",
    "objects_from_config", "open_run", "register_branch", "run_branch", "run_imp", "upgrade_config",
]
