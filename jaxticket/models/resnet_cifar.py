"""CIFAR ResNets of He et al. (2016), as open_lth's ``cifar_resnet_{depth}[_{width}]``.

Depth ``6n + 2``: a 3x3 stem conv (width W), three stages of ``n`` basic blocks with
widths W, 2W, 4W (stride 2 at the start of stages 2 and 3), global average pooling and
one dense output layer. W = 16 gives ResNet-20/32/56/110; ``resnet20_w64`` is ResNet-20
with W = 64 (64-128-256). As in open_lth, convs have no bias and the downsampling
shortcut is a 1x1 stride-2 conv + BatchNorm (He et al.'s "option B"; their CIFAR paper
used parameter-free "option A").

Weights (conv + dense kernels) for W = 16, n blocks per stage:
``432 + 2n*2,304 + (5,120 + (2n-1)*9,216) + (20,480 + (2n-1)*36,864) + 640``:

  resnet20: 270,896   resnet32: 464,432   resnet56: 851,504   resnet110: 1,722,416

With BN scale/bias and the output bias: ResNet-20 272,474, ResNet-110 1,730,714
(open_lth's test values).

Params (``s`` stage 1..3, ``b`` block 1..n)::

  stem_conv/kernel, stem_bn/{scale,bias}
  stage{s}_block{b}/conv1/kernel, .../bn1/{scale,bias}, .../conv2/kernel, .../bn2/...
  stage{s}_block1/shortcut_conv/kernel, stage{s}_block1/shortcut_bn/...   (s = 2, 3)
  output/{kernel,bias}

Default init: Kaiming normal (fan_in), BN gamma ~ U[0, 1), beta 0 (open_lth).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from jaxticket.models import initializers, layers


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (used by CIFAR and ImageNet ResNets).

    ``[B, H, W, C] -> [B, H/s, W/s, features]``; the shortcut is a 1x1 conv (stride s)
    + BN when the shape changes, the identity otherwise.
    """

    features: int
    strides: int = 1
    kernel_init: initializers.InitSpec = "kaiming_normal"
    bn_init: initializers.InitSpec = "uniform"

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        k, b = self.kernel_init, self.bn_init
        y = layers.conv(self.features, 3, strides=self.strides, padding=layers.pad(1),
                        use_bias=False, name="conv1", kernel_init=k)(x)
        y = nn.relu(layers.batch_norm(train=train, name="bn1", bn_init=b)(y))
        y = layers.conv(self.features, 3, padding=layers.pad(1), use_bias=False,
                        name="conv2", kernel_init=k)(y)
        y = layers.batch_norm(train=train, name="bn2", bn_init=b)(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = layers.conv(self.features, 1, strides=self.strides, padding="VALID",
                            use_bias=False, name="shortcut_conv", kernel_init=k)(x)
            x = layers.batch_norm(train=train, name="shortcut_bn", bn_init=b)(x)
        return nn.relu(x + y)


class CifarResNet(nn.Module):
    """CIFAR ResNet of depth ``6n + 2`` and initial width ``width``.

    Attributes:
      depth: total number of conv + dense layers, ``6n + 2`` (20, 32, 44, 56, 110, ...).
      width: stem and first-stage width W (stages: W, 2W, 4W). Default 16.
      num_classes: width of the output layer.
      kernel_init: a name from :data:`initializers.KERNEL_INITS` or a callable.
      bn_init: a name from :data:`initializers.BN_INITS` or a callable (gamma init).

    Example::

      >>> import jax, jax.numpy as jnp
      >>> model = CifarResNet(depth=20)
      >>> x = jnp.zeros((2, 32, 32, 3))
      >>> variables = model.init(jax.random.key(0), x, train=False)
      >>> logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
      >>> logits.shape
      (2, 10)
    """

    depth: int = 20
    width: int = 16
    num_classes: int = 10
    kernel_init: initializers.InitSpec = "kaiming_normal"
    bn_init: initializers.InitSpec = "uniform"

    def __post_init__(self):
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, got {self.depth}")
        if self.width < 1:
            raise ValueError(f"CIFAR ResNet width must be positive, got {self.width}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        k, b = self.kernel_init, self.bn_init
        n = (self.depth - 2) // 6
        x = layers.conv(self.width, 3, padding=layers.pad(1), use_bias=False,
                        name="stem_conv", kernel_init=k)(x)
        x = nn.relu(layers.batch_norm(train=train, name="stem_bn", bn_init=b)(x))
        for s in range(3):
            for j in range(n):
                strides = 2 if s > 0 and j == 0 else 1
                x = BasicBlock(self.width * 2**s, strides, kernel_init=k, bn_init=b,
                               name=f"stage{s + 1}_block{j + 1}")(x, train=train)
        x = jnp.mean(x, axis=(1, 2))
        return layers.dense(self.num_classes, name="output", kernel_init=k)(x)
