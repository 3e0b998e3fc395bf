"""Pruners: small pure functions ``pruner(params, mask, key) -> new_mask``.

A pruner is built once from its settings (like an optax transformation) and is then a
pure function of ``(params, mask, key)``. Any callable with that signature is a pruner
(:func:`as_pruner` holds it to the contract); the built-in ones

* only remove: ``new_mask`` is a subset of ``mask``, pruned weights are never revived;
* leave non-prunable leaves (``mask.prunable`` False) untouched;
* remove ``round(fraction * surviving)`` of the weights (or channels) *still surviving*
  in their scope, so applying ``magnitude(0.2)`` L times leaves ``0.8 ** L`` of them.
  The rounding is a setting naming its reference (:data:`ROUNDINGS`): ``"half_up"``
  (default, ``floor(x + 1/2)``), ``"half_even"`` (``torch.nn.utils.prune``), ``"ceil"``
  (open_lth); counts are exact integers from the fraction as a rational
  (``Fraction(fraction).limit_denominator(2**15)``, exact for every decimal fraction
  with up to four digits);
* refuse to remove a layer's last weight or channel (disconnecting the network) unless
  built with ``allow_empty=True``;
* work under ``jax.jit`` and ``jax.vmap`` (params, masks and keys with a leading seeds
  axis) and give the same result as eagerly.

Ties are broken deterministically by position: among equal scores the entry that comes
first in the flattened order (leaves in ``jax.tree.leaves`` order, row-major inside a
leaf; channels by index) is removed first. NaN weights count as the largest magnitude.
Selecting the k smallest of N scores is an exact radix select on the scores' float32
bit patterns (32 counting passes, no sort), shared by every score-based pruner
(:class:`Scored`): magnitude, random, Ln-structured, random structured, :func:`by_score`.

Pruning at initialization (:mod:`~jaxticket.pruning.at_init`): :func:`snip`,
:func:`grasp`, :func:`synflow`, and :func:`inverted` scores for the sanity checks.

Methods have names in a registry that you extend (:func:`register`, :data:`METHODS`), so
a pruner of your own is usable from ``LotteryConfig``, JSON and the command line. Level
schedules (:func:`per_level`, :func:`to_density`) give each IMP level its own pruner.
Composites (partitions, chains, schedules) expose their parts through ``children()`` /
``with_children()`` (:mod:`~jaxticket.pruning.composite`: :func:`map_leaves`), and
:func:`check_levels_reachable` says before training whether a pruner can reach a level.

Structured: :func:`n_m` (N:M sparsity, e.g. 2:4) and :func:`block` (block magnitude);
per-layer densities for a target (``"uniform"``, ``"erk"``): :func:`layer_densities`,
:func:`layer_counts`.

Modules: ``counting`` (exact counts, the radix select), ``core`` (the protocol, the
registry), ``scored``, ``combinators``, ``schedules``, ``composite``, ``baselines``,
``at_init``, ``reachability``, ``structured``, ``densities``.

Example (Frankle & Carbin's LeNet-300-100 rates, 20% per round for hidden layers and
10% for the output layer)::

    from jaxticket import masks, pruning

    pruner = pruning.partition([
        ("output/kernel", pruning.magnitude(0.1)),
        (r"kernel$", pruning.magnitude(0.2)),
    ])
    mask = masks.ones_like(params)
    for level in range(3):
        mask = pruner(trained_params, mask)
"""

from jaxticket.pruning.counting import ROUNDINGS, SCOPES, removal_count, select_lowest
from jaxticket.pruning.core import (
    METHODS,
    Configured,
    Pruner,
    PruningError,
    as_pruner,
    describe,
    examples,
    from_config,
    get,
    methods,
    register,
    to_config,
)
from jaxticket.pruning.scored import (
    LN_ORDERS,
    ByScore,
    LnStructured,
    Magnitude,
    RandomStructured,
    RandomUnstructured,
    Scored,
    by_score,
    ln_structured,
    magnitude,
    random,
    random_structured,
)
from jaxticket.pruning.combinators import Chain, Partition, chain, partition
from jaxticket.pruning.schedules import PerLevel, Schedule, ToDensity, for_level, per_level, to_density
from jaxticket.pruning.composite import MappedSchedule, leaves, map_leaves
from jaxticket.pruning.baselines import random_like
from jaxticket.pruning.structured import NM, Block, block, n_m
from jaxticket.pruning.densities import DISTRIBUTIONS, layer_counts, layer_densities
from jaxticket.pruning.at_init import GraSP, SNIP, SynFlow, bind, grasp, inverted, snip, synflow
from jaxticket.pruning.reachability import (
    Survivors,
    UnreachableLevelError,
    check_levels_reachable,
    first_emptying_level,
)

__all__ = [
    "ByScore", "Chain", "Configured", "GraSP", "LN_ORDERS", "LnStructured", "METHODS", "Magnitude",
    "MappedSchedule", "Partition", "PerLevel", "Pruner", "PruningError", "ROUNDINGS", "RandomStructured",
    "RandomUnstructured", "SCOPES", "SNIP", "Schedule", "Scored", "Survivors", "SynFlow", "ToDensity",
    "UnreachableLevelError", "as_pruner", "bind", "by_score", "chain", "check_levels_reachable", "describe",
    "examples", "first_emptying_level", "for_level", "from_config", "get", "grasp", "inverted", "leaves",
    "ln_structured", "magnitude", "map_leaves", "methods", "partition", "per_level", "random", "random_like",
    "random_structured", "register", "removal_count", "select_lowest", "snip", "synflow", "to_config",
    "to_density",
    "Block", "DISTRIBUTIONS", "NM", "block", "layer_counts", "layer_densities", "n_m",
]
