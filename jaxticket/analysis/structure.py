"""Structure: weight trajectories across levels, their movement, and the connectivity of pruned layers."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxticket import masks as masks_lib
from jaxticket.masks import Mask

PyTree = Any

__all__ = ["Connectivity", "Movement", "connectivity", "connectivity_summary", "flattened_live", "live_units", "trajectory_movement", "weight_trajectories"]


def _leaf_at(tree: PyTree, path: str, fn: str):
    found = {masks_lib.path_string(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
    if path not in found:
        raise KeyError(f"{fn}: no leaf '{path}'; leaves are {list(found)}.")
    return found[path]


def _per_level(items, fn: str, what: str) -> list:
    if isinstance(items, (list, tuple)):
        return list(items)
    raise TypeError(f"{fn}: {what} must be a list (one entry per level), got {type(items).__name__}.")


def weight_trajectories(params_per_level: Sequence[PyTree], masks_per_level: Sequence[Mask], path: str) -> np.ndarray:
    """Values of one layer's weights that survive at the LAST level, across all levels.

    Args:
      params_per_level: list of params pytrees, one per pruning level (e.g. the trained
        weights at the end of each level).
      masks_per_level: list of masks, one per level (same length); the surviving set is
        ``masks_per_level[-1]``. IMP masks are nested, so these weights survived every
        earlier level too.
      path: the leaf's path string, e.g. ``"fc1/kernel"``.

    Returns:
      ``[n_levels, n_surviving]`` NumPy array (entries in row-major order of the leaf).
      Host function (the number of survivors is data dependent).

    Example:
        >>> from jaxticket import masks
        >>> p0 = {"fc1": {"kernel": jnp.array([[1., 2.], [3., 4.]])}}
        >>> p1, p2 = jax.tree.map(lambda w: 2 * w, p0), jax.tree.map(lambda w: 3 * w, p0)
        >>> m0 = masks.ones_like(p0)
        >>> m1 = m0.replace(keep={"fc1": {"kernel": jnp.array([[False, True], [True, True]])}})
        >>> m2 = m0.replace(keep={"fc1": {"kernel": jnp.array([[False, True], [False, True]])}})
        >>> traj = weight_trajectories([p0, p1, p2], [m0, m1, m2], "fc1/kernel")   # [3, S]
        >>> traj.shape
        (3, 2)
        >>> traj.tolist()
        [[2.0, 4.0], [4.0, 8.0], [6.0, 12.0]]
    """
    params_list = _per_level(params_per_level, "weight_trajectories", "params_per_level")
    masks_list = _per_level(masks_per_level, "weight_trajectories", "masks_per_level")
    if len(params_list) != len(masks_list) or not params_list:
        raise ValueError(
            f"weight_trajectories: {len(params_list)} params and {len(masks_list)} masks; need one "
            "of each per level (at least one level)."
        )
    for level, (p, m) in enumerate(zip(params_list, masks_list)):
        try:
            masks_lib.validate(p, m)
        except (TypeError, ValueError) as e:
            raise type(e)(f"weight_trajectories: level {level}: {e}") from None
    keep = np.asarray(_leaf_at(masks_list[-1].keep, path, "weight_trajectories"), dtype=bool)
    return np.stack([np.asarray(_leaf_at(p, path, "weight_trajectories"))[keep] for p in params_list])


class Movement(NamedTuple):
    """Per level transition ``l -> l+1`` (``[n_levels - 1]`` each):

    * ``mean_abs_change``: ``mean |w_{l+1} - w_l|``;
    * ``relative_change``: ``sum |w_{l+1} - w_l| / sum |w_l|`` (= mean abs change over mean
      abs weight; NaN when there are no surviving weights or they are all zero).
    """

    mean_abs_change: jax.Array
    relative_change: jax.Array


def trajectory_movement(traj) -> Movement:
    """How much the surviving weights move from level to level (see :class:`Movement`).

    Args:
      traj: ``[n_levels, n_surviving]`` from :func:`weight_trajectories`.

    Example: ``trajectory_movement(jnp.array([[1., 2.], [2., 2.]]))`` ->
    ``mean_abs_change [0.5]``, ``relative_change [1/3]``. Jit-able.
    """
    t = jnp.asarray(traj)
    if t.ndim != 2:
        raise ValueError(f"trajectory_movement: expected [n_levels, n_surviving], got shape {t.shape}.")
    t = t.astype(jnp.promote_types(t.dtype, jnp.float32))
    delta = jnp.abs(jnp.diff(t, axis=0))
    mean_abs = jnp.mean(delta, axis=1)
    rel = jnp.sum(delta, axis=1) / jnp.sum(jnp.abs(t[:-1]), axis=1)
    return Movement(mean_abs, rel)


# ----------------------------------------------------------------------------- connectivity


class Connectivity(NamedTuple):
    """Surviving connections of one kernel ``(*spatial, in, out)``.

    Attributes:
      per_output: ``[out]`` surviving input connections of each output unit/channel (for a
        conv: summed over the kernel window and input channels).
      per_input: ``[in]`` surviving outgoing connections of each input unit/channel.
      per_pair: ``[in, out]`` surviving weights of each (input, output) channel pair (the
        ``h x w`` kernel slice for convs; the 0/1 mask itself for Dense).
      empty_inputs: fraction of input units/channels with no surviving outgoing weights.
      empty_outputs: fraction of output units/channels with no surviving inputs.
      empty_pairs: fraction of (input, output) pairs fully pruned (whole conv kernel
        slices; for Dense simply the pruned fraction).
    """

    per_output: jax.Array
    per_input: jax.Array
    per_pair: jax.Array
    empty_inputs: jax.Array
    empty_outputs: jax.Array
    empty_pairs: jax.Array


def _connectivity(keep, upstream=None) -> Connectivity:
    keep = jnp.asarray(keep, bool)
    if upstream is None:
        live = jnp.ones(keep.shape[-2], bool)
    else:
        live = jnp.asarray(upstream, bool)
        if live.shape != keep.shape[-2:-1]:
            raise ValueError(f"connectivity: upstream has shape {live.shape}; the kernel {keep.shape} has "
                             f"{keep.shape[-2]} inputs: pass one bool per input (live_units of the layer before)")
        keep = keep & live[:, None]  # weights from dead inputs carry nothing
    per_pair = jnp.sum(keep, axis=tuple(range(keep.ndim - 2)), dtype=jnp.int32)  # [in, out]
    per_output = jnp.sum(per_pair, axis=0)
    per_input = jnp.sum(per_pair, axis=1)
    n_live = jnp.sum(live)
    some = n_live > 0
    empty_in = jnp.sum((per_input == 0) & live) / jnp.where(some, n_live, 1)
    empty_pair = jnp.sum((per_pair == 0) & live[:, None]) / jnp.where(some, n_live * per_pair.shape[1], 1)
    return Connectivity(
        per_output,
        per_input,
        per_pair,
        jnp.where(some, empty_in, jnp.nan).astype(jnp.float32),
        jnp.mean((per_output == 0).astype(jnp.float32)),
        jnp.where(some, empty_pair, jnp.nan).astype(jnp.float32),
    )


def connectivity(mask: Mask | PyTree, path: str, upstream=None) -> Connectivity:
    """Connectivity of the kernel at ``path`` (Dense ``(in, out)``, Conv ``(h, w, in, out)``).

    Shows when unstructured pruning (with rewinding) ends up structured-like: whole input
    channels/units without outgoing weights, output units without inputs.

    Args:
      mask: a Mask (or a params-shaped tree of bools).
      path: e.g. ``"conv1/kernel"``.
      upstream: optional bool ``[in]``: the inputs that carry a signal (e.g.
        :func:`live_units` of the layer that feeds this one). A unit whose own inputs are
        all pruned sends a constant (from its bias) whatever the input, so the weights
        leaving it are not counted: ``per_*`` count the weights from live inputs only,
        ``empty_inputs`` is the fraction of the *live* inputs left without outgoing
        weights, ``empty_pairs`` that of the (live input, output) pairs (both NaN when no
        input is live), ``empty_outputs`` that of the outputs without a weight from a live
        input. ``None``: every input counts (the raw figures).

    Example:
        >>> from jaxticket import masks
        >>> mask = masks.ones_like({"fc1": {"kernel": jnp.ones((2, 3))}})
        >>> mask = mask.replace(keep={"fc1": {"kernel": jnp.array([[True, True, False],
        ...                                                         [True, False, False]])}})
        >>> c = connectivity(mask, "fc1/kernel")
        >>> c.per_output.tolist()                  # [out] inputs left per hidden unit
        [2, 1, 0]
        >>> round(float(c.empty_outputs), 4)       # fraction of dead hidden units
        0.3333
        >>> live = connectivity(mask, "fc1/kernel", upstream=jnp.array([True, False]))
        >>> live.per_output.tolist(), float(live.empty_inputs)   # input 1 is fed by a dead unit
        ([1, 1, 0], 0.0)
    """
    tree = mask.keep if isinstance(mask, Mask) else mask
    keep = _leaf_at(tree, path, "connectivity")
    if np.ndim(keep) < 2:
        raise ValueError(
            f"connectivity: '{path}' has shape {np.shape(keep)}; need a kernel (in, out) or (h, w, in, out)."
        )
    return _connectivity(keep, upstream)


def live_units(mask: Mask | PyTree, path: str, upstream=None) -> jax.Array:
    """bool ``[out]``: the output units/channels of the kernel at ``path`` that keep at
    least one weight from a live input (``upstream`` as in :func:`connectivity`; ``None``:
    every input is live). The others compute a constant (from their bias) whatever the input.

    Chained through a network, ``live_units`` of each layer is the ``upstream`` of the
    next (through :func:`flattened_live` where a conv feeds a dense layer).

    Example:
        >>> keep = {"a": {"kernel": jnp.array([[True, False, False], [False, False, False]])},
        ...         "b": {"kernel": jnp.array([[True], [False], [True]])}}
        >>> live_a = live_units(keep, "a/kernel")
        >>> live_a.tolist()
        [True, False, False]
        >>> live_units(keep, "b/kernel", upstream=live_a).tolist()   # b keeps a weight from a's unit 0
        [True]
    """
    return connectivity(mask, path, upstream).per_output > 0


def flattened_live(live_channels, spatial: int) -> jax.Array:
    """bool ``[spatial * C]``: the live inputs of a dense layer fed by a flattened NHWC
    feature map of ``C`` channels at ``spatial`` positions (channel fastest, as
    ``jaxticket.models.layers.flatten`` orders it): position ``p``, channel ``c`` is input
    ``p * C + c``.

    Example:
        >>> flattened_live(jnp.array([True, False]), 3).tolist()
        [True, False, True, False, True, False]
    """
    return jnp.tile(jnp.asarray(live_channels, bool), spatial)


def connectivity_summary(mask: Mask) -> dict[str, dict]:
    """:func:`connectivity` for every prunable kernel (``ndim >= 2``), as host floats.

    Returns:
      ``{path: {"shape", "density", "empty_inputs", "empty_outputs", "empty_pairs"}}``.

    Example:
        >>> from jaxticket import masks
        >>> mask = masks.ones_like({"fc1": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}})
        >>> keep = {"fc1": {"kernel": jnp.array([[True, True, False], [True, False, False]]),
        ...                 "bias": jnp.ones(3, bool)}}
        >>> for path, row in connectivity_summary(mask.replace(keep=keep)).items():
        ...     print(path, row["shape"], row["density"], round(row["empty_outputs"], 4))
        fc1/kernel (2, 3) 0.5 0.3333
    """
    if not isinstance(mask, Mask):
        raise TypeError(f"connectivity_summary: expected a jaxticket Mask, got {type(mask).__name__}.")
    out = {}
    for path, keep, flag in zip(mask.paths(), mask.leaves(), mask.prunable):
        if not flag or np.ndim(keep) < 2:
            continue
        c = _connectivity(keep)
        out[path] = {
            "shape": tuple(np.shape(keep)),
            "density": float(jnp.mean(jnp.asarray(keep, jnp.float32))),
            "empty_inputs": float(c.empty_inputs),
            "empty_outputs": float(c.empty_outputs),
            "empty_pairs": float(c.empty_pairs),
        }
    return out
