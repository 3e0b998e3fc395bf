"""Linear paths between networks: interpolation, error curves along them, error barriers and stability."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxticket import masks as masks_lib

PyTree = Any


__all__ = [
    "PairwiseBarriers", "alphas", "error_barrier", "error_curve", "interpolate", "is_stable", "pairwise_barriers",
    # shared with the sibling modules (batch_stats, distances); not re-exported by the package
    "check_same_tree", "is_float", "leading_dim",
]


# ----------------------------------------------------------------------------- helpers


def is_float(x) -> bool:
    """Whether ``x`` (an array, scalar or dtype-carrying leaf) has a float or complex dtype.

    The leaves that :func:`interpolate` and the distances act on; the others (ints,
    bools) are passed through or skipped.

    Example:
        >>> is_float(jnp.zeros(2)), is_float(jnp.zeros(2, jnp.int32)), is_float(True)
        (True, False, False)
    """
    return bool(jnp.issubdtype(jnp.result_type(x), jnp.inexact))


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_same_tree(a: PyTree, b: PyTree, fn: str, *, batch_dims: int = 0) -> None:
    """Raises ``ValueError`` naming the first path where ``a`` and ``b`` differ.

    Same tree structure, and leafwise the same shape and dtype; ``fn`` names the caller in
    the message.

    Example:
        >>> check_same_tree({"w": jnp.zeros(2)}, {"w": jnp.ones(2)}, "demo")   # fine
        >>> check_same_tree({"w": jnp.zeros(2)}, {"w": jnp.ones(3)}, "demo")
        Traceback (most recent call last):
        ...
        ValueError: demo: leaf 'w' is float32[2] in the first tree but float32[3] in the second.
    """
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
        if is_float(x) or not (_is_concrete(x) and _is_concrete(y)):
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


def leading_dim(tree: PyTree, fn: str) -> int:
    """The size ``C`` of the leading copies axis shared by every leaf of ``tree`` ``[C, ...]``.

    ``ValueError`` (naming ``fn``) for an empty tree, a scalar leaf, or leaves whose
    leading sizes differ.

    Example:
        >>> leading_dim({"w": jnp.zeros((4, 3)), "b": jnp.zeros(4)}, "demo")
        4
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError(f"{fn}: empty pytree.")
    dims = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
    if len(dims) != 1 or None in dims:
        raise ValueError(
            f"{fn}: every leaf needs the same leading copies axis [C, ...]; leading sizes: {sorted(map(str, dims))}."
        )
    return int(dims.pop())


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
    check_same_tree(params_a, params_b, "interpolate")
    _check_non_float_equal(params_a, params_b, "interpolate")
    if np.ndim(alpha) != 0:
        raise ValueError(
            f"interpolate: alpha must be a scalar, got shape {np.shape(alpha)}; use "
            "jax.vmap over alpha (or error_curve) for many alphas."
        )
    return jax.tree.map(lambda x, y: _lerp(x, y, alpha) if is_float(x) else x, params_a, params_b)


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
    check_same_tree(params_a, params_b, "error_curve")
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
    c = leading_dim(params_stack, "pairwise_barriers")
    if c < 2:
        raise ValueError(f"pairwise_barriers: need at least 2 copies on the leading axis, got {c}.")
    for path, x in jax.tree_util.tree_flatten_with_path(params_stack)[0]:
        if not is_float(x) and _is_concrete(x) and not np.all(np.asarray(x) == np.asarray(x)[:1]):
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
