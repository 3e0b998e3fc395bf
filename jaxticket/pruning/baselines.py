"""Random-mask controls: masks with the survivor counts of another mask, at random places."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxticket.masks import Mask
from jaxticket.pruning.core import leaf_keys
from jaxticket.pruning.counting import check_key, check_scope, lowest_k, score_bits

__all__ = ["random_like"]


def random_like(mask: Mask, key: jax.Array, scope: str = "layer") -> Mask:
    """A random mask with the same number of survivors as ``mask`` (the random-pruning control).

    ``scope="layer"``: every prunable leaf keeps exactly as many entries as in ``mask``,
    at uniformly random positions (Frankle et al. 2021's "shuffle within each layer");
    ``"global"``: the same total number of survivors, drawn uniformly across all prunable
    entries (per-layer counts then vary). Non-prunable leaves stay all-True. Works under
    ``jit`` and ``vmap``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxticket import masks, pruning
        >>> params = {"fc": {"kernel": jax.random.normal(jax.random.key(0), (20, 10))}}
        >>> imp_mask = pruning.magnitude(0.7)(params, masks.ones_like(params))
        >>> control = random_like(imp_mask, jax.random.key(1))
        >>> bool(masks.density(control) == masks.density(imp_mask))
        True
    """
    check_scope(scope, "random_like")
    check_key(key, "random_like")
    return _random_like(mask, key, scope)


@functools.partial(jax.jit, static_argnames="scope")
def _random_like(mask: Mask, key: jax.Array, scope: str) -> Mask:
    leaves = mask.leaves()
    idx = [i for i, flag in enumerate(mask.prunable) if flag]
    if not idx:
        return mask
    keys = leaf_keys(key, len(idx))
    scores = [jax.random.uniform(k, leaves[i].shape) for k, i in zip(keys, idx)]
    everything = [jnp.ones(leaves[i].shape, dtype=bool) for i in idx]
    if scope == "layer":
        removed = []
        for s, a, i in zip(scores, everything, idx):
            n_remove = a.size - jnp.sum(leaves[i], dtype=jnp.int32)
            removed.append(lowest_k(score_bits(s), a, n_remove))
    else:
        total = sum(a.size for a in everything)
        n_remove = total - sum(jnp.sum(leaves[i], dtype=jnp.int32) for i in idx)
        removed = lowest_k([score_bits(s) for s in scores], everything, jnp.asarray(n_remove, dtype=jnp.int32))
    out = list(leaves)
    for i, r in zip(idx, removed):
        out[i] = ~r
    return mask.replace(keep=jax.tree.unflatten(jax.tree.structure(mask.keep), out))
