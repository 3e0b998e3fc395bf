"""Small layer constructors shared by the model families (internal).

They fix the conventions every model follows: zero biases, PyTorch-like BatchNorm
(momentum 0.1 in PyTorch terms, i.e. Flax ``momentum=0.9``; epsilon 1e-5; beta 0),
explicit PyTorch-style padding where the reference model is PyTorch.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from jaxticket.models import initializers

Padding = str | tuple[tuple[int, int], tuple[int, int]]


def pad(p: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Symmetric spatial padding of ``p`` pixels, as ``torch.nn.Conv2d(padding=p)``."""
    return ((p, p), (p, p))


def conv(
    features: int,
    kernel_size: int,
    *,
    name: str,
    kernel_init: initializers.InitSpec,
    strides: int = 1,
    padding: Padding = "SAME",
    use_bias: bool = True,
) -> nn.Conv:
    """A square ``kernel_size`` conv with kernel ``(k, k, in, features)``."""
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=(strides, strides),
        padding=padding,
        use_bias=use_bias,
        kernel_init=initializers.kernel(kernel_init),
        bias_init=nn.initializers.zeros,
        name=name,
    )


def dense(features: int, *, name: str, kernel_init: initializers.InitSpec) -> nn.Dense:
    """A dense layer with kernel ``(in, features)`` and a zero-initialised bias."""
    return nn.Dense(
        features,
        kernel_init=initializers.kernel(kernel_init),
        bias_init=nn.initializers.zeros,
        name=name,
    )


def batch_norm(*, train: bool, name: str, bn_init: initializers.InitSpec) -> nn.BatchNorm:
    """BatchNorm over the channel axis, PyTorch defaults, gamma from ``bn_init``."""
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        scale_init=initializers.bn_scale(bn_init),
        bias_init=nn.initializers.zeros,
        name=name,
    )


def max_pool(x: jnp.ndarray, size: int = 2, strides: int | None = None, padding: Padding = "VALID"):
    """Max pooling with a square window (stride defaults to the window size)."""
    s = size if strides is None else strides
    return nn.max_pool(x, (size, size), strides=(s, s), padding=padding)


def flatten(x: jnp.ndarray) -> jnp.ndarray:
    """``[B, ...] -> [B, prod(...)]`` (NHWC order)."""
    return x.reshape((x.shape[0], -1))
