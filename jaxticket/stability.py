"""Linear mode connectivity: interpolation, error curves, error barriers, distances.

After Frankle, Dziugaite, Roy & Carbin, "Linear mode connectivity and the lottery ticket
hypothesis" (ICML 2020). Two copies of a network are trained from the same state (step
``k``) with different SGD noise; the network is *stable* at ``k`` when the error does
not rise along the straight line between the two final weight vectors.

Convention. Everywhere in this module ``alpha`` runs **from a to b**::

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
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import errors as flax_errors

from jaxticket import masks as masks_lib

PyTree = Any

__all__ = [
    "PairwiseBarriers",
    "alphas",
    "error_barrier",
    "error_curve",
    "interpolate",
    "interpolate_variables",
    "is_stable",
    "l2_distance",
    "normalized_l2_distance",
    "pairwise_barriers",
    "pairwise_l2",
    "recompute_batch_stats",
]


# ----------------------------------------------------------------------------- helpers


def _is_float(x) -> bool:
    return bool(jnp.issubdtype(jnp.result_type(x), jnp.inexact))


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_same_tree(a: PyTree, b: PyTree, fn: str, *, batch_dims: int = 0) -> None:
    """Raises ``ValueError`` naming the first path where ``a`` and ``b`` differ."""
    a_leaves, a_def = jax.tree_util.tree_flatten_with_path(a)
    b_leaves, b_def = jax.tree_util.tree_flatten_with_path(b)
    if a_def != b_def:
        a_paths = [masks_lib.path_string(p) for p, _ in a_leaves]
        b_paths = [masks_lib.path_string(p) for p, _ in b_leaves]
        only_a = sorted(set(a_paths) - set(b_paths))[:5]
        only_b = sorted(set(b_paths) - set(a_paths))[:5]
        raise ValueError(
            f"{fn}: the two trees differ in structure; paths only in the first: {only_a}, "
            f"only in the second: {only_b} (or the container types differ: {a_def} vs {b_def})."
        )
    for (path, x), (_, y) in zip(a_leaves, b_leaves):
        if np.shape(x) != np.shape(y) or jnp.result_type(x) != jnp.result_type(y):
            raise ValueError(
                f"{fn}: leaf '{masks_lib.path_string(path)}' is {jnp.result_type(x)}"
                f"{list(np.shape(x))} in the first tree but {jnp.result_type(y)}"
                f"{list(np.shape(y))} in the second."
            )


def _check_non_float_equal(a: PyTree, b: PyTree, fn: str) -> None:
    """Non-float leaves (ints, bool masks) must be equal in ``a`` and ``b``.

    Checked only for concrete values (outside ``jit``); under tracing the check is skipped
    and ``a``'s leaf is passed through.
    """
    a_leaves = jax.tree_util.tree_flatten_with_path(a)[0]
    for (path, x), y in zip(a_leaves, jax.tree.leaves(b)):
        if _is_float(x) or not (_is_concrete(x) and _is_concrete(y)):
            continue
        if not np.array_equal(np.asarray(x), np.asarray(y)):
            raise ValueError(
                f"{fn}: non-float leaf '{masks_lib.path_string(path)}' "
                f"({jnp.result_type(x)}) differs between the two trees; integer and bool "
                "leaves (step counters, masks) cannot be interpolated and must be equal."
            )


def _lerp(x, y, alpha):
    dtype = jnp.result_type(x)
    compute = jnp.promote_types(dtype, jnp.float32)
    al = jnp.asarray(alpha, dtype=compute)
    x, y = jnp.asarray(x), jnp.asarray(y)
    mid = ((1 - al) * x.astype(compute) + al * y.astype(compute)).astype(dtype)
    # Endpoints exactly (bitwise, also for -0.0, inf and NaN entries).
    return jnp.where(al == 0, x, jnp.where(al == 1, y, mid))


# ----------------------------------------------------------------------------- interpolation


def interpolate(params_a: PyTree, params_b: PyTree, alpha) -> PyTree:
    """``(1 - alpha) * a + alpha * b`` leafwise: ``alpha = 0`` gives ``a``, ``1`` gives ``b``.

    Args:
      params_a, params_b: pytrees with the same structure, shapes and dtypes.
      alpha: scalar (Python float or 0-d array, may be traced).

    Returns:
      A pytree like ``params_a``. Float leaves keep their dtype (the arithmetic runs in at
      least float32, so bfloat16 weights are not double-rounded); the endpoints are
      returned bitwise (``alpha == 0`` -> ``a``, ``alpha == 1`` -> ``b``). Non-float leaves
      (ints, bools, e.g. a mask inside a train state) must be equal in ``a`` and ``b``
      (``ValueError`` otherwise, checked when the values are concrete) and are passed
      through from ``a``.

    Works under ``jit`` and ``vmap`` (over ``alpha`` or over the params).

    Example:
        >>> mid = interpolate({"w": jnp.zeros(3)}, {"w": jnp.ones(3)}, 0.25)
        >>> mid["w"].tolist()
        [0.25, 0.25, 0.25]
    """
    _check_same_tree(params_a, params_b, "interpolate")
    _check_non_float_equal(params_a, params_b, "interpolate")
    if np.ndim(alpha) != 0:
        raise ValueError(
            f"interpolate: alpha must be a scalar, got shape {np.shape(alpha)}; use "
            "jax.vmap over alpha (or error_curve) for many alphas."
        )
    return jax.tree.map(lambda x, y: _lerp(x, y, alpha) if _is_float(x) else x, params_a, params_b)


def alphas(num: int = 30) -> jax.Array:
    """``num`` evenly spaced interpolation coefficients in ``[0, 1]``, endpoints included.

    Example: ``alphas(5) -> [0., 0.25, 0.5, 0.75, 1.]`` (float32, ``[num]``).
    """
    if num < 2:
        raise ValueError(f"alphas: need at least 2 points (both endpoints), got num={num}.")
    return jnp.linspace(0.0, 1.0, num, dtype=jnp.float32)


_default_alphas = alphas


def _curve(eval_fn, interpolate_fn, batch_size, params_a, params_b, alpha_values, eval_args):
    def one(alpha):
        out = eval_fn(interpolate_fn(params_a, params_b, alpha), *eval_args)
        return jax.tree.map(jnp.asarray, out)

    if batch_size is None:
        return jax.vmap(one)(alpha_values)
    return jax.lax.map(one, alpha_values, batch_size=batch_size)


_curve_jit = jax.jit(_curve, static_argnums=(0, 1, 2))


def error_curve(
    eval_fn: Callable[..., Any],
    params_a: PyTree,
    params_b: PyTree,
    alphas: Sequence[float] | jax.Array | None = None,
    *,
    batch_size: int | None = None,
    interpolate_fn: Callable[[PyTree, PyTree, Any], PyTree] = interpolate,
    eval_args: Sequence[Any] = (),
) -> Any:
    """Error along the line from ``params_a`` (alpha 0) to ``params_b`` (alpha 1).

    All alphas are evaluated in ONE compiled program: ``jax.vmap`` over alpha, or, to
    bound memory, ``jax.lax.map(..., batch_size=batch_size)`` (``batch_size`` alphas at a
    time, vmapped inside).

    Args:
      eval_fn: ``eval_fn(params, *eval_args) -> error``: a scalar or a pytree of scalars
        (e.g. ``{"train": err, "test": err}``). Errors, not accuracies (``1 - acc``).
        It must be traceable (jax ops only). It is a static argument of the compiled
        program: pass the *same* function object to reuse the compilation.
      params_a, params_b: endpoint pytrees (same structure/shapes/dtypes).
      alphas: ``[num_alphas]`` coefficients; default :func:`alphas` (30 points).
      batch_size: alphas evaluated at once (``None``: all of them).
      interpolate_fn: ``(a, b, alpha) -> tree`` used to build the interpolated network
        (default :func:`interpolate`; for BatchNorm models e.g.
        ``functools.partial(interpolate_variables, batch_stats="recompute",
        recompute_fn=...)`` with full Flax ``variables`` as endpoints).
      eval_args: extra arguments passed to ``eval_fn`` as traced inputs (datasets: they
        are not baked into the program as constants).

    Returns:
      ``eval_fn``'s output structure with leaves ``[num_alphas]``.

    Example:
        >>> errs = error_curve(lambda p: jnp.sum(p["w"]), {"w": 0.0}, {"w": 1.0}, alphas(3))
        >>> errs.tolist()
        [0.0, 0.5, 1.0]
    """
    alpha_values = _default_alphas() if alphas is None else jnp.asarray(alphas)
    if alpha_values.ndim != 1:
        raise ValueError(f"error_curve: alphas must be 1-D [num_alphas], got shape {alpha_values.shape}.")
    if not jnp.issubdtype(alpha_values.dtype, jnp.floating):
        alpha_values = alpha_values.astype(jnp.float32)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"error_curve: batch_size must be a positive int or None, got {batch_size}.")
    _check_same_tree(params_a, params_b, "error_curve")
    _check_non_float_equal(params_a, params_b, "error_curve")
    return _curve_jit(eval_fn, interpolate_fn, batch_size, params_a, params_b, alpha_values, tuple(eval_args))


# ----------------------------------------------------------------------------- barriers


def error_barrier(errors: Any, *, reference: str = "mean", alphas: Any = None) -> Any:
    """Instability: the rise of the error along the path above its endpoints.

    ``reference="mean"`` (default; Frankle et al. 2020, the DESIGN's definition)::

        barrier = max_i errors[..., i] - (errors[..., 0] + errors[..., -1]) / 2

    Note this is ``>= |e0 - e1| / 2 >= 0`` for every curve: a convex curve (or a straight
    line) with unequal endpoints still gets half the endpoint gap. ``reference="linear"``
    (Entezari et al. 2022) subtracts the straight line between the endpoints instead::

        barrier = max_i (errors[..., i] - ((1 - alphas[i]) * e0 + alphas[i] * e1))

    which is exactly ``0`` for any convex curve (and for a line) and the bump height
    above the chord otherwise. ``alphas`` (for ``"linear"``) defaults to evenly spaced
    points in ``[0, 1]``.

    Args:
      errors: ``[..., num_alphas]`` (leading axes are batch axes, e.g. pairs or seeds), or
        a pytree of such arrays (e.g. ``{"train": [A], "test": [A]}``).

    Returns:
      ``[...]`` barriers (same pytree structure). Identical endpoints with nothing higher
      in between give 0; a bump of height ``h`` above flat endpoints gives ``h``.
      Jit-able.

    Example: ``error_barrier(jnp.array([0.1, 0.3, 0.1])) == 0.2``.
    """
    if reference not in ("mean", "linear"):
        raise ValueError(f"error_barrier: reference must be 'mean' or 'linear', got {reference!r}.")

    def one(e):
        e = jnp.asarray(e)
        if e.ndim < 1 or e.shape[-1] < 2:
            raise ValueError(f"error_barrier: need errors [..., num_alphas >= 2], got shape {e.shape}.")
        e0, e1 = e[..., :1], e[..., -1:]
        if reference == "mean":
            return jnp.max(e, axis=-1) - 0.5 * (e0[..., 0] + e1[..., 0])
        a = jnp.linspace(0.0, 1.0, e.shape[-1], dtype=e.dtype) if alphas is None else jnp.asarray(alphas, e.dtype)
        if a.shape != (e.shape[-1],):
            raise ValueError(f"error_barrier: alphas shape {a.shape} does not match errors {e.shape}.")
        return jnp.max(e - ((1 - a) * e0 + a * e1), axis=-1)

    return jax.tree.map(one, errors)


def is_stable(barrier: Any, threshold: float = 0.02) -> Any:
    """``barrier < threshold`` (default 2 percentage points as a fraction); pytrees too.

    Example: ``is_stable(error_barrier(errs))``.
    """
    return jax.tree.map(lambda b: jnp.asarray(b) < threshold, barrier)


class PairwiseBarriers(NamedTuple):
    """Barriers between every pair ``i < j`` of C copies (pytrees like ``eval_fn``'s output).

    Attributes:
      mean: mean barrier over the pairs.
      std: population standard deviation (ddof=0) over the pairs.
      values: ``[n_pairs]`` barrier of each pair.
      pairs: ``[n_pairs, 2]`` int array of ``(i, j)``, ``i < j``, lexicographic order.
      curves: ``[n_pairs, num_alphas]`` error curves (from copy ``i`` to copy ``j``).
    """

    mean: Any
    std: Any
    values: Any
    pairs: jax.Array
    curves: Any


def _pairwise_curves(eval_fn, interpolate_fn, batch_size, params_stack, pairs, alpha_values, eval_args):
    def pair_curve(ij):
        a = jax.tree.map(lambda x: x[ij[0]], params_stack)
        b = jax.tree.map(lambda x: x[ij[1]], params_stack)
        return _curve(eval_fn, interpolate_fn, batch_size, a, b, alpha_values, eval_args)

    return jax.lax.map(pair_curve, pairs)


_pairwise_curves_jit = jax.jit(_pairwise_curves, static_argnums=(0, 1, 2))


def _leading_dim(tree: PyTree, fn: str) -> int:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError(f"{fn}: empty pytree.")
    dims = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
    if len(dims) != 1 or None in dims:
        raise ValueError(
            f"{fn}: every leaf needs the same leading copies axis [C, ...]; leading sizes: {sorted(map(str, dims))}."
        )
    return int(dims.pop())


def pairwise_barriers(
    eval_fn: Callable[..., Any],
    params_stack: PyTree,
    alphas: Sequence[float] | jax.Array | None = None,
    *,
    batch_size: int | None = None,
    interpolate_fn: Callable[[PyTree, PyTree, Any], PyTree] = interpolate,
    eval_args: Sequence[Any] = (),
    reference: str = "mean",
) -> PairwiseBarriers:
    """Error barrier for every pair ``i < j`` of C copies stacked on a leading axis.

    Pairs run sequentially (``jax.lax.map``) in one compiled program; within a pair the
    alphas are vmapped (or mapped in ``batch_size`` chunks) as in :func:`error_curve`.

    Args:
      eval_fn, alphas, batch_size, interpolate_fn, eval_args: as in :func:`error_curve`.
      reference: as in :func:`error_barrier`.
      params_stack: pytree with leaves ``[C, ...]`` (e.g. vmapped replicas), ``C >= 2``.

    Returns:
      :class:`PairwiseBarriers` (mean, std, per-pair values, pairs, curves).

    Example:
        >>> def eval_fn(p):                      # a double well: minima at w = -1 and w = 1
        ...     return jnp.sum((p["w"] ** 2 - 1) ** 2)
        >>> replicas_params = {"w": jnp.array([[-1.0], [1.0], [-1.0], [1.0]])}   # C=4 copies
        >>> res = pairwise_barriers(eval_fn, replicas_params)    # C=4 -> 6 pairs
        >>> res.pairs.tolist()
        [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
        >>> [round(float(v), 4) for v in res.values]             # 0 within a well
        [0.9976, 0.0, 0.9976, 0.9976, 0.0, 0.9976]
        >>> round(float(res.mean), 4), round(float(res.std), 4)  # instability +- spread
        (0.6651, 0.4703)
    """
    c = _leading_dim(params_stack, "pairwise_barriers")
    if c < 2:
        raise ValueError(f"pairwise_barriers: need at least 2 copies on the leading axis, got {c}.")
    for path, x in jax.tree_util.tree_flatten_with_path(params_stack)[0]:
        if not _is_float(x) and _is_concrete(x) and not np.all(np.asarray(x) == np.asarray(x)[:1]):
            raise ValueError(
                f"pairwise_barriers: non-float leaf '{masks_lib.path_string(path)}' differs between "
                "copies; integer and bool leaves (masks, counters) must be equal in every copy."
            )
    alpha_values = _default_alphas() if alphas is None else jnp.asarray(alphas)
    if not jnp.issubdtype(alpha_values.dtype, jnp.floating):
        alpha_values = alpha_values.astype(jnp.float32)
    ii, jj = np.triu_indices(c, k=1)
    pairs = jnp.asarray(np.stack([ii, jj], axis=1), dtype=jnp.int32)
    curves = _pairwise_curves_jit(
        eval_fn, interpolate_fn, batch_size, params_stack, pairs, alpha_values, tuple(eval_args)
    )
    values = error_barrier(curves, reference=reference, alphas=alpha_values)
    mean = jax.tree.map(lambda v: jnp.mean(v, axis=0), values)
    std = jax.tree.map(lambda v: jnp.std(v, axis=0), values)
    return PairwiseBarriers(mean=mean, std=std, values=values, pairs=pairs, curves=curves)


# ----------------------------------------------------------------------------- BatchNorm


def interpolate_variables(
    vars_a: Mapping[str, PyTree],
    vars_b: Mapping[str, PyTree],
    alpha,
    batch_stats: str = "interpolate",
    recompute_fn: Callable[[Mapping[str, PyTree]], PyTree] | None = None,
    *,
    collection: str = "batch_stats",
) -> dict:
    """Interpolates full Flax ``variables`` (``{"params": ..., "batch_stats": ...}``).

    ``params`` (and every other collection) are interpolated with :func:`interpolate`.
    The BatchNorm running statistics (``variables[collection]``) depend on ``batch_stats``:

    * ``"interpolate"`` (default): linearly, like the weights. Cheap, but the running
      mean/variance of an interpolated network are *not* the interpolation of the
      endpoints' statistics (activations change non-linearly), so the error in the middle
      of the path is overestimated, i.e. barriers are pessimistic for BN networks.
    * ``"recompute"``: ``recompute_fn(variables) -> batch_stats`` is called with the
      interpolated variables and its result replaces the running statistics, e.g.
      ``lambda v: recompute_batch_stats(model.apply, v, train_batches)``. This is the
      accurate choice for BN networks (statistics of the network actually evaluated).

    Works under ``jit``/``vmap``; pass it to :func:`error_curve` as ``interpolate_fn``::

        interp = functools.partial(interpolate_variables, batch_stats="recompute",
                                   recompute_fn=lambda v: recompute_batch_stats(
                                       model.apply, v, batches))
        errs = error_curve(eval_fn, variables_a, variables_b, interpolate_fn=interp)

    Returns:
      A dict like ``vars_a``.
    """
    if batch_stats not in ("interpolate", "recompute"):
        raise ValueError(
            f"interpolate_variables: batch_stats must be 'interpolate' or 'recompute', got {batch_stats!r}."
        )
    if batch_stats == "recompute" and recompute_fn is None:
        raise ValueError(
            "interpolate_variables: batch_stats='recompute' needs recompute_fn(variables) -> "
            "batch_stats, e.g. lambda v: recompute_batch_stats(model.apply, v, batches)."
        )
    if not isinstance(vars_a, Mapping):
        raise TypeError(
            f"interpolate_variables: expected Flax variables (a mapping such as "
            f"{{'params': ..., '{collection}': ...}}), got {type(vars_a).__name__}."
        )
    out = dict(interpolate(vars_a, vars_b, alpha))
    if batch_stats == "recompute":
        if collection not in out:
            raise ValueError(
                f"interpolate_variables: batch_stats='recompute' but the variables have no "
                f"'{collection}' collection (keys: {sorted(out)}); a model without BatchNorm "
                "needs no recomputation (use batch_stats='interpolate')."
            )
        out[collection] = recompute_fn(out)
    return out


def recompute_batch_stats(
    model_apply: Callable[..., Any],
    variables: Mapping[str, PyTree],
    batches: Any,
    *,
    apply_kwargs: Mapping[str, Any] | None = None,
    collection: str = "batch_stats",
    dropout_key: jax.Array | None = None,
) -> PyTree:
    """Recomputes BatchNorm running statistics as the plain average over ``batches``.

    Like PyTorch's reset-and-recompute with ``momentum=None``: for each batch the model
    runs in train mode (``model_apply(variables, batch, mutable=[collection],
    train=True)``) and the per-batch statistics (batch mean, batch variance) are averaged
    with equal weight (a cumulative average, no exponential momentum). Note that the
    averaged variance is the mean of per-batch variances, as in PyTorch.

    How the per-batch statistics are read without knowing the module's momentum ``m``:
    Flax updates each running statistic as ``new = m * old + (1 - m) * stat``. Running a
    batch with ``old = 0`` gives ``(1 - m) * stat``; ``(1 - m)`` is measured per entry
    from one extra call on the first batch with a large ``old``. The result equals the
    average of the batch statistics up to float rounding (~1e-6 relative in float32).
    Every leaf of ``variables[collection]`` must follow that update rule (true for
    ``flax.linen.BatchNorm``).

    Dropout. The pass is the *training-mode* forward pass, dropout included, as in the
    usual reset-and-recompute (PyTorch's ``model.train()`` pass, e.g.
    ``torch.optim.swa_utils.update_bn``) and in Frankle et al.'s recomputation: the
    running statistics a trained network carries were accumulated by exactly that pass,
    so a BatchNorm after a dropout layer is given statistics of the (rescaled, noisier)
    activations it saw in training, and the recomputed endpoints of an interpolation path
    estimate the trained networks' own statistics. Dropout off would measure another
    distribution. Batch ``i`` draws its dropout masks from ``fold_in(dropout_key, i)``
    (deterministic; the same masks for every network given the same key).

    Args:
      model_apply: e.g. ``model.apply`` of a Flax Linen module.
      variables: ``{"params": ..., collection: ...}``; the incoming running statistics are
        ignored (only their structure and dtype are used).
      batches: model inputs for ``model_apply(variables, batch, ...)``: either a Python
        ``list`` of batches, or one pytree whose leaves carry a leading
        ``[n_batches, ...]`` axis (e.g. ``x[n_batches, B, H, W, C]``); scanned with
        ``jax.lax.scan`` (jit/vmap-able).
      apply_kwargs: keyword arguments for train mode; default ``{"train": True}``.
      collection: name of the running-statistics collection.
      dropout_key: a key for the model's ``"dropout"`` rng (required when the model has
        dropout in train mode; ignored by models without).

    Returns:
      A pytree like ``variables[collection]`` holding the averaged statistics.

    Example:
        >>> import flax.linen as nn
        >>> class Net(nn.Module):
        ...     @nn.compact
        ...     def __call__(self, x, train=False):
        ...         return nn.BatchNorm(use_running_average=not train)(x)
        >>> model = Net()
        >>> x_train = jnp.arange(24.0).reshape(12, 2)        # 12 examples, 2 features
        >>> variables = model.init(jax.random.key(0), x_train[:4])
        >>> stats = recompute_batch_stats(model.apply, variables, x_train.reshape(3, 4, 2))
        >>> np.round(np.asarray(stats["BatchNorm_0"]["mean"]), 2).tolist()   # mean of 3 batches
        [11.0, 12.0]
        >>> np.round(np.asarray(stats["BatchNorm_0"]["var"]), 2).tolist()    # mean batch variance
        [5.0, 5.0]
        >>> variables = {**variables, "batch_stats": stats}
    """
    kwargs = {"train": True} if apply_kwargs is None else dict(apply_kwargs)
    if collection not in variables:
        raise ValueError(
            f"recompute_batch_stats: variables have no '{collection}' collection (keys: "
            f"{sorted(variables)}); is this a BatchNorm model?"
        )
    if isinstance(batches, list):
        if not batches:
            raise ValueError("recompute_batch_stats: no batches given.")
        batches = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
    n_batches = _leading_dim(batches, "recompute_batch_stats")
    if n_batches < 1:
        raise ValueError("recompute_batch_stats: no batches given (leading axis has size 0).")
    try:
        return _recompute(model_apply, variables, batches, n_batches, kwargs, collection, dropout_key)
    except flax_errors.InvalidRngError as e:
        raise ValueError(
            f"recompute_batch_stats: the model needs a PRNG key in train mode ({e}); pass "
            "dropout_key=jax.random.key(0) (the statistics are recomputed with dropout on, as in training)."
        ) from None


def _recompute(model_apply, variables, batches, n_batches, kwargs, collection, dropout_key):
    """:func:`recompute_batch_stats` after its checks."""
    old = variables[collection]

    def acc_dtype(x):
        return jnp.promote_types(jnp.result_type(x), jnp.float32)

    def run(stats, batch, i):
        rngs = {} if dropout_key is None else {"rngs": {"dropout": jax.random.fold_in(dropout_key, i)}}
        _, mutated = model_apply({**variables, collection: stats}, batch, mutable=[collection], **kwargs, **rngs)
        return mutated[collection]

    zeros = jax.tree.map(jnp.zeros_like, old)
    first = jax.tree.map(lambda x: x[0], batches)
    # (1 - m) per entry: new(0) = (1-m)s, new(c) = m c + (1-m)s  ->  m = (new(c) - new(0)) / c.
    # Both calls see batch 0 with its dropout masks, so s is the same in both.
    n0 = run(zeros, first, 0)
    big = jax.tree.map(lambda x: (1024.0 * (1.0 + jnp.abs(x))).astype(jnp.result_type(x)), n0)
    n_big = run(big, first, 0)
    one_minus_m = jax.tree.map(
        lambda nb, z, c: 1.0 - (nb.astype(acc_dtype(nb)) - z.astype(acc_dtype(nb))) / c.astype(acc_dtype(nb)),
        n_big, n0, big,
    )

    def body(total, batch_and_index):
        stats = run(zeros, *batch_and_index)
        return jax.tree.map(lambda t, s: t + s.astype(t.dtype), total, stats), None

    init = jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), acc_dtype(x)), old)
    total, _ = jax.lax.scan(body, init, (batches, jnp.arange(n_batches)))
    return jax.tree.map(
        lambda t, om, o: (t / n_batches / om).astype(jnp.result_type(o)), total, one_minus_m, old
    )


# ----------------------------------------------------------------------------- distances


def _selected_leaves(params: PyTree, mask: masks_lib.Mask | None, fn: str):
    """(leaf, keep-or-None) pairs: all float leaves, or the prunable leaves of ``mask``."""
    leaves = jax.tree.leaves(params)
    if mask is None:
        return [(x, None) for x in leaves if _is_float(x)]
    masks_lib.validate(params, mask)
    return [(x, k) for x, k, flag in zip(leaves, mask.leaves(), mask.prunable) if flag]


def _sq_sum(x, keep):
    x = jnp.asarray(x)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    sq = x * x
    if keep is not None:
        sq = jnp.where(keep, sq, 0)
    return jnp.sum(sq)


def l2_distance(
    params_a: PyTree,
    params_b: PyTree,
    mask: masks_lib.Mask | None = None,
    *,
    normalize: bool = False,
) -> jax.Array:
    """Euclidean distance ``||a - b||_2`` between two weight vectors.

    Without ``mask``: over all float leaves. With ``mask``: over the prunable leaves and
    only their kept entries (the surviving weights; pruned entries are zero in masked
    params anyway). ``normalize=True`` divides by ``||a||_2`` over the same entries
    (:func:`normalized_l2_distance`). Accumulates in at least float32. Jit-able.

    Example: ``l2_distance({"w": jnp.zeros(2)}, {"w": jnp.array([3., 4.])}) == 5``.
    """
    _check_same_tree(params_a, params_b, "l2_distance")
    sel_a = _selected_leaves(params_a, mask, "l2_distance")
    sel_b = _selected_leaves(params_b, mask, "l2_distance")
    sq = jnp.zeros((), jnp.float32)
    norm_sq = jnp.zeros((), jnp.float32)
    for (xa, keep), (xb, _) in zip(sel_a, sel_b):
        d = jnp.asarray(xa).astype(jnp.promote_types(jnp.result_type(xa), jnp.float32)) - jnp.asarray(xb).astype(
            jnp.promote_types(jnp.result_type(xb), jnp.float32)
        )
        sq = sq + _sq_sum(d, keep)
        if normalize:
            norm_sq = norm_sq + _sq_sum(xa, keep)
    dist = jnp.sqrt(sq)
    return dist / jnp.sqrt(norm_sq) if normalize else dist


def normalized_l2_distance(params_a: PyTree, params_b: PyTree, mask: masks_lib.Mask | None = None) -> jax.Array:
    """``||a - b|| / ||a||`` (see :func:`l2_distance`); a float32 scalar.

    Example:
        >>> a, b = {"w": jnp.array([3.0, 4.0])}, {"w": jnp.array([3.0, 0.0])}
        >>> round(float(normalized_l2_distance(a, b)), 6)     # ||(0, 4)|| / ||(3, 4)||
        0.8
    """
    return l2_distance(params_a, params_b, mask, normalize=True)


def _pairwise_sq(leaves_and_keeps, c):
    def row(i):
        total = jnp.zeros((c,), jnp.float32)
        for x, keep in leaves_and_keeps:
            x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
            d = x - x[i][None]
            sq = d * d
            if keep is not None:
                k = keep if keep.ndim == x.ndim - 1 else keep[i]
                sq = jnp.where(k[None], sq, 0)
            total = total + jnp.sum(sq.reshape(c, -1), axis=1)
        return total

    return jax.lax.map(row, jnp.arange(c))


def pairwise_l2(params_stack: PyTree, mask: masks_lib.Mask | None = None) -> jax.Array:
    """``[C, C]`` matrix of :func:`l2_distance` between copies stacked on a leading axis.

    Args:
      params_stack: pytree with leaves ``[C, ...]``.
      mask: optional; unbatched (shared by all copies) or with the same leading ``[C]``
        axis (row ``i`` then uses copy ``i``'s mask, so the matrix may be asymmetric when
        the masks differ).

    Returns:
      ``[C, C]`` float32, exact zeros on the diagonal, symmetric for a shared mask.
      Computed row by row (``jax.lax.map``) from the differences themselves, not from a
      Gram matrix, so nearby copies do not lose precision. Jit-able.

    Example (three copies of a two-weight network):
        >>> stack = {"w": jnp.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])}
        >>> np.round(np.asarray(pairwise_l2(stack), np.float64), 3).tolist()
        [[0.0, 5.0, 1.0], [5.0, 0.0, 4.243], [1.0, 4.243, 0.0]]
    """
    c = _leading_dim(params_stack, "pairwise_l2")
    leaves = [jnp.asarray(x) for x in jax.tree.leaves(params_stack)]
    if mask is None:
        sel = [(x, None) for x in leaves if _is_float(x)]
    else:
        first = jax.tree.map(lambda x: x[0], params_stack)
        batched = mask.leaves() and np.ndim(mask.leaves()[0]) == np.ndim(jax.tree.leaves(first)[0]) + 1
        masks_lib.validate(first, mask, batch_dims=1 if batched else 0)
        sel = [(x, jnp.asarray(k)) for x, k, flag in zip(leaves, mask.leaves(), mask.prunable) if flag]
    return jnp.sqrt(_pairwise_sq(sel, c))
