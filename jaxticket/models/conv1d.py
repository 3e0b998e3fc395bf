"""1-D convolutional networks for sequences such as MNIST-1D (Greydanus 2020): a plain CNN
and a CIFAR-style ResNet with BatchNorm.

Input ``[B, L]`` or ``[B, L, C]`` floats (a 2-D input is read as one channel); output
logits ``[B, num_classes]``. Kernels default to Kaiming-normal (fan-in), biases to zero.

The convolutions (:class:`Conv1D`, kernel ``(k, in, out)`` like ``flax.linen.Conv``'s)
are computed as one matrix product over the ``k`` shifted copies of the input. On XLA:CPU
that trains at the speed of a convolution compiled step by step also inside
``jaxticket.train.fit``'s many-steps-per-call loop, where a 1-D ``nn.Conv``'s kernel
gradient runs as a naive loop nest about 16x slower (measured here: 558 vs 34 ms per
step); the loop's automatic choice detects convolutions by 4-D kernels only, so it would
pick the slow path for ``nn.Conv`` in 1-D.

Not (yet) in the model registry: build them directly and give them to
``jaxticket.Task(model, input_shape=(40, 1), ...)``.

Example::

    >>> import jax, jax.numpy as jnp
    >>> net = Conv1DNet(depth=3, width=8)
    >>> variables = jax.jit(lambda x: net.init(jax.random.key(0), x, train=False))(jnp.zeros((1, 40)))
    >>> jax.jit(lambda v, x: net.apply(v, x, train=False))(variables, jnp.zeros((4, 40))).shape
    (4, 10)
    >>> variables["params"]["conv1"]["kernel"].shape     # (kernel, in, out)
    (5, 1, 8)
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from jaxticket.models import initializers

__all__ = ["BasicBlock1D", "Conv1D", "Conv1DNet", "ResNet1D", "shifted_windows"]


def _as_sequence(x: jnp.ndarray) -> jnp.ndarray:
    return x[..., None] if x.ndim == 2 else x


def shifted_windows(x: jnp.ndarray, kernel_size: int, stride: int = 1) -> jnp.ndarray:
    """``[B, L, C] -> [B, ceil(L / stride), kernel_size, C]``: the input windows of a 1-D
    convolution with SAME padding (``flax.linen.Conv``'s: the extra zero on the right).

    Example: ``shifted_windows(jnp.arange(4.0).reshape(1, 4, 1), 3)[0, :, :, 0]`` is
    ``[[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 0]]``.
    """
    length = x.shape[1]
    out = -(-length // stride)
    pad = max((out - 1) * stride + kernel_size - length, 0)
    x = jnp.pad(x, ((0, 0), (pad // 2, pad - pad // 2), (0, 0)))
    return jnp.stack([x[:, j:j + stride * (out - 1) + 1:stride] for j in range(kernel_size)], axis=2)


class Conv1D(nn.Module):
    """A 1-D convolution with SAME padding, kernel ``(kernel_size, in, features)`` and an
    optional bias, equal to ``nn.Conv(features, (kernel_size,), strides=(stride,),
    padding="SAME")`` on the same params (computed as a matrix product over
    :func:`shifted_windows`; see the module docstring for why)."""

    features: int
    kernel_size: int
    stride: int = 1
    use_bias: bool = True
    kernel_init: initializers.InitSpec = "kaiming_normal"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel = self.param("kernel", initializers.kernel(self.kernel_init),
                            (self.kernel_size, x.shape[-1], self.features))
        y = jnp.einsum("btjc,jco->bto", shifted_windows(x, self.kernel_size, self.stride), kernel)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y


def _conv(features: int, kernel_size: int, stride: int, name: str, kernel_init, use_bias: bool = True) -> Conv1D:
    return Conv1D(features, kernel_size, stride, use_bias=use_bias, kernel_init=kernel_init, name=name)


def _bn(train: bool, name: str) -> nn.BatchNorm:
    # PyTorch's defaults (momentum 0.1 there, 0.9 here; epsilon 1e-5), as the 2-D models
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class Conv1DNet(nn.Module):
    """A plain 1-D CNN: ``depth`` convolutions (``kernel_size``, SAME padding, ReLU) of
    ``width`` channels, stride 2 in the first ``downsample`` of them (MNIST-1D's 40 points
    -> 20 -> 10 -> 5), then flatten and a dense output layer.

    Params: ``conv1`` .. ``conv{depth}`` and ``output``, each ``{kernel, bias}``; conv
    kernels ``(kernel_size, in, width)``.

    Example::

        Conv1DNet(depth=6, width=32)   # 6 convs of 32 channels, 5 points left before the output
    """

    depth: int = 3
    width: int = 32
    num_classes: int = 10
    kernel_size: int = 5
    downsample: int = 3
    kernel_init: initializers.InitSpec = "kaiming_normal"

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        del train  # no dropout or BatchNorm
        if self.depth < 1 or self.width < 1:
            raise ValueError(f"Conv1DNet: depth and width must be >= 1, got {self.depth}, {self.width}")
        x = _as_sequence(x)
        for i in range(self.depth):
            stride = 2 if i < self.downsample else 1
            x = nn.relu(_conv(self.width, self.kernel_size, stride, f"conv{i + 1}", self.kernel_init)(x))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(self.num_classes, kernel_init=initializers.kernel(self.kernel_init),
                        bias_init=nn.initializers.zeros, name="output")(x)


class BasicBlock1D(nn.Module):
    """conv-BN-ReLU-conv-BN plus the shortcut (a 1x1 conv + BN when the shape changes), ReLU."""

    width: int
    stride: int = 1
    kernel_size: int = 3
    kernel_init: initializers.InitSpec = "kaiming_normal"

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        k = self.kernel_init
        y = nn.relu(_bn(train, "bn1")(_conv(self.width, self.kernel_size, self.stride, "conv1", k, False)(x)))
        y = _bn(train, "bn2")(_conv(self.width, self.kernel_size, 1, "conv2", k, False)(y))
        if self.stride != 1 or x.shape[-1] != self.width:
            x = _bn(train, "shortcut_bn")(_conv(self.width, 1, self.stride, "shortcut", k, False)(x))
        return nn.relu(x + y)


class ResNet1D(nn.Module):
    """A CIFAR-style ResNet in 1-D (He et al. 2016's ResNet-``depth``, ``depth = 6n + 2``):
    a stem convolution of ``width`` channels (BN, ReLU), three stages of ``n`` basic blocks
    with ``width``, ``2 width``, ``4 width`` channels (the second and third start with
    stride 2), global average pooling, a dense output layer.

    Params: ``stem``, ``stem_bn``, ``stage{s}_block{b}/{conv1, bn1, conv2, bn2[, shortcut,
    shortcut_bn]}``, ``output``; BatchNorm statistics in ``batch_stats``.

    Example::

        ResNet1D(depth=8, width=16)    # one block per stage, 16-32-64 channels
    """

    depth: int = 8
    width: int = 16
    num_classes: int = 10
    kernel_size: int = 3
    kernel_init: initializers.InitSpec = "kaiming_normal"

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(f"ResNet1D: depth must be 6n + 2 with n >= 1 (8, 14, 20, ...), got {self.depth}")
        n = (self.depth - 2) // 6
        x = _as_sequence(x)
        x = nn.relu(_bn(train, "stem_bn")(_conv(self.width, self.kernel_size, 1, "stem", self.kernel_init, False)(x)))
        for s in range(3):
            for b in range(n):
                x = BasicBlock1D(self.width * 2 ** s, stride=2 if (s > 0 and b == 0) else 1,
                                 kernel_size=self.kernel_size, kernel_init=self.kernel_init,
                                 name=f"stage{s + 1}_block{b + 1}")(x, train=train)
        x = jnp.mean(x, axis=1)
        return nn.Dense(self.num_classes, kernel_init=initializers.kernel(self.kernel_init),
                        bias_init=nn.initializers.zeros, name="output")(x)
