"""BatchNorm statistics of interpolated networks: interpolated, or recomputed on training batches."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from flax import errors as flax_errors

from jaxticket.stability.paths import interpolate, leading_dim

PyTree = Any

__all__ = ["interpolate_variables", "recompute_batch_stats"]


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
        >>> import numpy as np
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
    n_batches = leading_dim(batches, "recompute_batch_stats")
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
