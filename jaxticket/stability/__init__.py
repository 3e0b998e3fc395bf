"""Linear mode connectivity: interpolation, error curves, error barriers, distances.

After Frankle, Dziugaite, Roy & Carbin, "Linear mode connectivity and the lottery ticket
hypothesis" (ICML 2020). Two copies of a network are trained from the same state (step
``k``) with different SGD noise; the network is *stable* at ``k`` when the error does
not rise along the straight line between the two final weight vectors.

Convention. Everywhere in this package ``alpha`` runs **from a to b**::

    interpolate(a, b, alpha) = (1 - alpha) * a + alpha * b

so ``alpha = 0`` is ``a`` and ``alpha = 1`` is ``b`` (bitwise). The DESIGN writes
``alpha * w1 + (1 - alpha) * w2``, the same path walked the other way; the barrier does
not depend on the direction.

Instability (the *error barrier*) of a curve ``err[0..n-1]`` over ``alphas``::

    barrier = max_i err[i] - (err[0] + err[-1]) / 2

evaluated for train and test error, 30 evenly spaced ``alpha`` by default. "Stable" means
a barrier below 2 percentage points (0.02 as a fraction), :func:`is_stable`.

Everything takes an *evaluation function* ``eval_fn(params) -> error`` (a scalar, or a
dict of scalars such as ``{"train": ..., "test": ...}``), so nothing here depends on
:mod:`jaxticket.train`.

Example:
    >>> import jax.numpy as jnp
    >>> from jaxticket import stability
    >>> def eval_fn(p):                       # a toy "model": error is quadratic in w
    ...     return jnp.sum(p["w"] ** 2)
    >>> a, b = {"w": jnp.array([-1.0])}, {"w": jnp.array([1.0])}
    >>> errs = stability.error_curve(eval_fn, a, b, stability.alphas(30))
    >>> errs.shape
    (30,)
    >>> float(stability.error_barrier(errs))  # a convex curve has no barrier
    0.0

BatchNorm. Interpolated weights do not match either endpoint's running statistics. See
:func:`interpolate_variables`: either interpolate the running statistics linearly
(cheap, the default) or recompute them for every interpolated network on training data
(:func:`recompute_batch_stats`, what Frankle et al. do for BN networks and the accurate
choice).

Submodules (everything public is re-exported here: import from ``jaxticket.stability``):

* :mod:`jaxticket.stability.paths`: interpolation, error curves, error barriers, stability,
  pairwise barriers; and the tree checks shared by the other two
  (:func:`~jaxticket.stability.paths.check_same_tree`,
  :func:`~jaxticket.stability.paths.is_float`, :func:`~jaxticket.stability.paths.leading_dim`).
* :mod:`jaxticket.stability.batch_stats`: BatchNorm statistics of interpolated networks,
  interpolated or recomputed on training batches.
* :mod:`jaxticket.stability.distances`: L2 distances between networks (all weights or a
  mask's), normalised, pairwise.
"""

from __future__ import annotations

from jaxticket.stability.paths import (
    PairwiseBarriers, alphas, error_barrier, error_curve, interpolate, is_stable, pairwise_barriers,
)
from jaxticket.stability.batch_stats import interpolate_variables, recompute_batch_stats
from jaxticket.stability.distances import l2_distance, normalized_l2_distance, pairwise_l2

__all__ = [
    "PairwiseBarriers", "alphas", "error_barrier", "error_curve", "interpolate", "interpolate_variables",
    "is_stable", "l2_distance", "normalized_l2_distance", "pairwise_barriers", "pairwise_l2",
    "recompute_batch_stats",
]
