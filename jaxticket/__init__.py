"""jaxticket: lottery tickets and pruning research in JAX/Flax.

The flat API re-exports the names used most; every module is also importable on its own:
``masks``, ``pruning``, ``models``, ``data``, ``train``, ``parallel``, ``checkpoints``,
``rundir``, ``lottery``, ``stability``, ``instability``, ``analysis``, ``compare``,
``report``, ``plots``, ``configs``, ``cli``.

Bring your own model, data, loss, optimizer and pruner::

    import jaxticket as jt

    task = jt.Task(my_flax_module, input_shape=(40,), loss=my_loss, tx=optax.adamw(1e-3))
    data = jt.data.from_arrays(train=(x, y), test=(x_test, y_test))
    run = jt.imp(task, data, jt.magnitude(0.2), levels=5, steps=2000, batch_size=64, seeds=3)
    run.levels[5].density, run.levels[5].test_accuracy        # one value per seed
    controls = run.branch("random_mask")

``import jaxticket`` changes no ``jax.config`` value. The ``jaxticket`` command, the
experiment scripts and the benchmarks turn on JAX's persistent compilation cache (one
compilation per machine, not per process; ``JAXTICKET_COMPILATION_CACHE=off`` keeps it
off); in a notebook, ``jt.enable_compilation_cache()`` does (see
:mod:`jaxticket.compilation_cache`).

Example:
    >>> import jax, jaxticket as jt
    >>> params = {"fc": {"kernel": jax.random.normal(jax.random.key(0), (784, 300))}}
    >>> mask = jt.magnitude(0.2, scope="global")(params, jt.ones_like(params))
    >>> round(float(jt.density(mask)), 6)
    0.8
"""

__version__ = "0.3.0"

from jaxticket import compilation_cache
from jaxticket.compilation_cache import enable as enable_compilation_cache

from jaxticket import (
    alignment,
    analysis,
    checkpoints,
    compare,
    data,
    instability,
    lottery,
    masks,
    models,
    parallel,
    plots,
    pruning,
    report,
    rundir,
    stability,
    train,
)
from jaxticket.masks import (
    Mask,
    apply as apply_mask,
    density,
    from_tree as mask_from_tree,
    ones_like,
    sparsity,
    summary as mask_summary,
)
from jaxticket.pruning import (
    Pruner,
    by_score,
    chain,
    ln_structured,
    magnitude,
    partition,
    per_level,
    random as random_unstructured,
    random_like,
    n_m,
    random_structured,
    register as register_pruner,
    to_density,
)
from jaxticket.train import (
    FitResult,
    FitSettings,
    Task,
    TrainConfig,
    TrainState,
    evaluate,
    fit,
    init_state,
    task_from_config,
    with_mask,
)
from jaxticket.lottery import ImpRun, ImpSettings, LotteryConfig, branch_kinds, imp, register_branch, run_branch, run_imp
from jaxticket import sparse
from jaxticket.sparse import SparseResult, train_sparse
from jaxticket.instability import instability_sweep, train_copies
from jaxticket.stability import error_barrier, error_curve, interpolate
from jaxticket.analysis import agreement, ensemble_accuracy, jaccard
from jaxticket.compare import compare_runs
from jaxticket.report import paired_stats, seed_stats
from jaxticket import settings

__all__ = [
    "FitResult", "FitSettings", "ImpRun", "ImpSettings", "LotteryConfig", "Mask", "Pruner", "Task", "TrainConfig", "TrainState",
    "agreement", "alignment", "analysis", "apply_mask", "branch_kinds", "by_score", "chain", "checkpoints", "compare", "compare_runs",
    "compilation_cache", "enable_compilation_cache",
    "data", "density", "ensemble_accuracy", "error_barrier", "error_curve", "evaluate", "fit", "imp",
    "init_state", "instability", "instability_sweep", "interpolate", "jaccard", "ln_structured", "lottery",
    "magnitude", "mask_from_tree", "mask_summary", "masks", "models", "ones_like", "paired_stats", "parallel", "partition",
    "plots",
    "per_level", "pruning", "random_like", "random_structured", "random_unstructured", "register_branch",
    "register_pruner", "report", "run_branch", "run_imp", "rundir", "seed_stats", "settings", "sparsity", "stability",
    "task_from_config", "to_density", "train", "train_copies", "with_mask",
    "SparseResult", "n_m", "sparse", "train_sparse",
]
