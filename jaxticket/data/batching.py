"""Device-resident batching: the example order is a pure function of (data key, step).

Epoch ``e`` visits the examples in the order
``jax.random.permutation(jax.random.fold_in(data_key, e), num_examples)``, cut into
``steps_per_epoch = num_examples // batch_size`` consecutive batches. Step ``s`` is
batch ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch``. So training can
resume or rewind to any step without replaying an iterator, and ``jax.vmap`` over data
keys gives each replica its own order in one compiled program.

Remainder: when ``num_examples % batch_size != 0`` the last partial batch of every
epoch is dropped (as open_lth does): each epoch visits ``steps_per_epoch * batch_size``
distinct examples, and the ``num_examples % batch_size`` skipped ones are the tail of
that epoch's permutation, so they differ from epoch to epoch. With no remainder every
example is visited exactly once per epoch.

Cost: each call computes the epoch's full permutation (a few sorts of ``num_examples``
keys). A trainer that scans over a whole epoch can use :func:`epoch_batch_indices`
once per epoch instead.

Example:
    >>> import jax
    >>> ds = load("digits", "train")                              # doctest: +SKIP
    >>> step_fn = jax.jit(make_batch, static_argnames=("batch_size", "augment"))
    >>> x, y = step_fn(ds, jax.random.key(0), jax.random.key(1), 7, 128)  # doctest: +SKIP
    >>> x.shape, x.dtype, y.shape                                  # doctest: +SKIP
    ((128, 8, 8, 1), dtype('float32'), (128,))
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxticket.data.augment import augment as augment_images
from jaxticket.data.augment import normalize_with


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """``num_examples // batch_size`` (the last partial batch is dropped)."""
    if batch_size <= 0 or batch_size > num_examples:
        raise ValueError(
            f"batch_size must be in [1, {num_examples}] for {num_examples} examples, got {batch_size}"
        )
    return num_examples // batch_size


def epoch_permutation(data_key: jax.Array, epoch, num_examples: int) -> jax.Array:
    """The order of epoch ``epoch`` (may be traced): int32 ``[num_examples]``."""
    key = jax.random.fold_in(data_key, jnp.asarray(epoch, jnp.uint32))
    return jax.random.permutation(key, num_examples).astype(jnp.int32)


def batch_indices(data_key: jax.Array, step, *, batch_size: int, num_examples: int) -> jax.Array:
    """Indices of the examples of global step ``step``: int32 ``[batch_size]``.

    Pure and jit-able with a traced ``step``; ``batch_size`` and ``num_examples`` are
    static. ``jax.vmap`` over ``data_key`` (and/or ``step``) works.

    Example:
        >>> idx = batch_indices(jax.random.key(0), 3, batch_size=4, num_examples=10)
        >>> idx.shape, idx.dtype
        ((4,), dtype('int32'))
    """
    spe = steps_per_epoch(num_examples, batch_size)
    step = jnp.asarray(step, jnp.int32)
    epoch, pos = step // spe, step % spe
    perm = epoch_permutation(data_key, epoch, num_examples)
    return jax.lax.dynamic_slice_in_dim(perm, pos * batch_size, batch_size)


def epoch_batch_indices(data_key: jax.Array, epoch, *, batch_size: int, num_examples: int) -> jax.Array:
    """All batches of one epoch at once: int32 ``[steps_per_epoch, batch_size]``.

    Row ``i`` equals ``batch_indices(data_key, epoch * steps_per_epoch + i, ...)``.
    """
    spe = steps_per_epoch(num_examples, batch_size)
    perm = epoch_permutation(data_key, epoch, num_examples)
    return perm[: spe * batch_size].reshape(spe, batch_size)


def gather_batch(dataset, indices: jax.Array, aug_key: jax.Array | None = None,
                 *, augment: bool = False):
    """Gather ``indices`` from ``dataset``, optionally augment, normalise.

    Returns ``(x float32 [B, H, W, C], y int32 [B])``.
    """
    images = jnp.take(dataset.images, indices, axis=0)
    labels = jnp.take(dataset.labels, indices, axis=0)
    if augment:
        if aug_key is None:
            raise ValueError("augment=True needs an aug_key")
        images = augment_images(aug_key, images)
    return normalize_with(images, dataset.mean, dataset.std), labels


def make_batch(dataset, data_key: jax.Array, aug_key: jax.Array, step, batch_size: int,
               *, augment: bool = False):
    """The training batch of ``step``: ``(x float32 [B, H, W, C], y int32 [B])``.

    Gathers ``batch_indices(data_key, step, ...)`` from the device-resident
    ``dataset`` (an :class:`ArrayDataset`), applies :func:`jaxticket.data.augment`
    with ``aug_key`` when ``augment`` (random crop with 4-pixel zero padding +
    horizontal flip), then normalises with the dataset's statistics. Usable inside
    ``jit`` (``batch_size`` and ``augment`` static) and under ``vmap`` over
    ``(data_key, aug_key)``. The augmentation key actually used is
    ``fold_in(aug_key, step)``, so one ``aug_key`` per run gives fresh, reproducible
    augmentation at every step; ``aug_key`` is ignored when ``augment=False``.
    """
    idx = batch_indices(data_key, step, batch_size=batch_size, num_examples=dataset.num_examples)
    key = jax.random.fold_in(aug_key, jnp.asarray(step, jnp.uint32)) if augment else None
    return gather_batch(dataset, idx, key, augment=augment)


def num_eval_batches(num_examples: int, batch_size: int) -> int:
    """``ceil(num_examples / batch_size)``: batches :func:`eval_batch` needs to cover all."""
    return -(-num_examples // batch_size)


def eval_batch(dataset, batch_index, batch_size: int):
    """Batch ``batch_index`` of the dataset in its stored order, for evaluation.

    Returns ``(x float32 [B, H, W, C], y int32 [B], valid bool [B])``. The last batch is
    padded by repeating the final example; ``valid`` is False on the padding, so sums
    weighted by ``valid`` over ``num_eval_batches`` batches count every example once.
    """
    n = dataset.num_examples
    idx = jnp.asarray(batch_index, jnp.int32) * batch_size + jnp.arange(batch_size, dtype=jnp.int32)
    valid = idx < n
    x, y = gather_batch(dataset, jnp.minimum(idx, n - 1))
    return x, y, valid
