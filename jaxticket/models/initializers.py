"""Weight and BatchNorm initialisers selectable by name, as in the papers.

Kernel initialisers (``kernel_init=`` in :func:`jaxticket.models.get`) apply to every
conv and dense kernel, the output layer included. Fans are computed from Flax's kernel
layouts: Dense ``(in, out)``, Conv ``(h, w, in, out)``, so ``fan_in = h * w * in`` and
``fan_out = h * w * out`` exactly as in PyTorch. Biases always start at zero.

=====================  ==========================================================
name                   distribution (std or bound)
=====================  ==========================================================
``glorot_normal``      N(0, 2 / (fan_in + fan_out)), untruncated; Frankle & Carbin's
                       "Gaussian Glorot" (= ``torch.nn.init.xavier_normal_``)
``glorot_uniform``     U(-b, b), b = sqrt(6 / (fan_in + fan_out))
``kaiming_normal``     N(0, 2 / fan_in), untruncated; open_lth's default
                       (``torch.nn.init.kaiming_normal_``: mode fan_in, gain sqrt(2))
``kaiming_uniform``    U(-b, b), b = sqrt(6 / fan_in) (``kaiming_uniform_``, a=0)
``lecun_normal``       N(0, 1 / fan_in), untruncated
``orthogonal``         (semi-)orthogonal over the flattened ``(fan_in, out)`` matrix
``binary``             sign(N(0, 1)) * sqrt(2 / fan_in): open_lth's ``binary``, the
                       signed-constant init of Zhou et al. 2019
=====================  ==========================================================

BatchNorm initialisers (``bn_init=``) set the scale (gamma); the shift (beta) is zero:

=============  ===============================================================
``uniform``    gamma ~ U[0, 1): open_lth's ``batchnorm_init='uniform'`` (default)
``ones``       gamma = 1 (open_lth's ``fixed``, the PyTorch/Flax default)
=============  ===============================================================

Either keyword also accepts a callable ``init(key, shape, dtype) -> array`` (any
``jax.nn.initializers`` initialiser).

Example::

  >>> import jax
  >>> from jaxticket.models import initializers
  >>> init = initializers.kernel("kaiming_normal")
  >>> w = init(jax.random.key(0), (784, 300))   # std ~= sqrt(2 / 784)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np

Initializer = Callable[..., jax.Array]
InitSpec = Union[str, Initializer]

__all__ = ["KERNEL_INITS", "BN_INITS", "kernel", "bn_scale", "Initializer", "InitSpec"]


def _binary(key, shape, dtype=jnp.float32):
    """sign(N(0, 1)) * sqrt(2 / fan_in), fan_in = prod(shape[:-1])."""
    fan_in = int(np.prod(shape[:-1]))
    std = np.sqrt(2.0 / fan_in)
    return (jnp.sign(jax.random.normal(key, shape, dtype)) * std).astype(dtype)


def _uniform01(key, shape, dtype=jnp.float32):
    """U[0, 1), like ``torch.rand``."""
    return jax.random.uniform(key, shape, dtype)


_vs = jax.nn.initializers.variance_scaling

_KERNEL: dict[str, Initializer] = {
    "binary": _binary,
    "glorot_normal": _vs(1.0, "fan_avg", "normal"),
    "glorot_uniform": _vs(1.0, "fan_avg", "uniform"),
    "kaiming_normal": _vs(2.0, "fan_in", "normal"),
    "kaiming_uniform": _vs(2.0, "fan_in", "uniform"),
    "lecun_normal": _vs(1.0, "fan_in", "normal"),
    "orthogonal": jax.nn.initializers.orthogonal(),
}

_BN_SCALE: dict[str, Initializer] = {
    "ones": jax.nn.initializers.ones,
    "uniform": _uniform01,
}

KERNEL_INITS: tuple[str, ...] = tuple(sorted(_KERNEL))
BN_INITS: tuple[str, ...] = tuple(sorted(_BN_SCALE))


def _lookup(table: dict[str, Initializer], spec: Any, what: str) -> Initializer:
    if callable(spec):
        return spec
    if isinstance(spec, str) and spec in table:
        return table[spec]
    valid = sorted(table)
    hint = ""
    if isinstance(spec, str):
        close = difflib.get_close_matches(spec, valid, n=1)
        if close:
            hint = f" Did you mean {close[0]!r}?"
    raise ValueError(
        f"Unknown {what} {spec!r}.{hint} Valid names: {', '.join(valid)} "
        "(or pass a callable init(key, shape, dtype))."
    )


def kernel(spec: InitSpec) -> Initializer:
    """Returns the kernel initialiser named ``spec`` (or ``spec`` itself if callable).

    Raises:
      ValueError: unknown name; the message lists :data:`KERNEL_INITS`.
    """
    return _lookup(_KERNEL, spec, "kernel_init")


def bn_scale(spec: InitSpec) -> Initializer:
    """Returns the BatchNorm scale (gamma) initialiser named ``spec`` (or ``spec``).

    Raises:
      ValueError: unknown name; the message lists :data:`BN_INITS`.
    """
    return _lookup(_BN_SCALE, spec, "bn_init")
