"""jaxticket: lottery tickets and pruning research in JAX/Flax.

The flat API re-exports the names used most; every module is also importable on its own:
``masks``, ``pruning``, ``models``, ``data``, ``train``, ``parallel``, ``checkpoints``,
``lottery``, ``stability``, ``instability``, ``analysis``, ``compare``, ``plots``,
``configs``, ``cli``.

Example::

    import jax, jaxticket as jt

    params = {"fc": {"kernel": jax.random.normal(jax.random.key(0), (784, 300))}}
    mask = jt.ones_like(params)
    mask = jt.magnitude(0.2, scope="global")(params, mask)
    float(jt.density(mask))   # 0.8
"""

__version__ = "0.1.0"

from jaxticket import analysis, checkpoints, data, lottery, masks, models, parallel, pruning, stability, train
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
    chain,
    ln_structured,
    magnitude,
    partition,
    random as random_unstructured,
    random_like,
    random_structured,
)
from jaxticket.train import TrainConfig, TrainState, evaluate, fit, init_state
from jaxticket.lottery import LotteryConfig, run_branch, run_imp
from jaxticket.stability import error_barrier, error_curve, interpolate
from jaxticket.analysis import agreement, ensemble_accuracy, jaccard

__all__ = [
    "LotteryConfig",
    "Mask",
    "TrainConfig",
    "TrainState",
    "agreement",
    "analysis",
    "checkpoints",
    "data",
    "ensemble_accuracy",
    "error_barrier",
    "error_curve",
    "evaluate",
    "fit",
    "init_state",
    "interpolate",
    "jaccard",
    "lottery",
    "parallel",
    "run_branch",
    "run_imp",
    "stability",
    "train",
    "Pruner",
    "apply_mask",
    "chain",
    "density",
    "ln_structured",
    "magnitude",
    "mask_from_tree",
    "mask_summary",
    "masks",
    "models",
    "ones_like",
    "partition",
    "pruning",
    "random_like",
    "random_structured",
    "random_unstructured",
    "sparsity",
]
