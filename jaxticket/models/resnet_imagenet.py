"""ImageNet ResNet-18/34/50/101/152 in the torchvision layout (open_lth ``imagenet_resnet``).

``[B, 224, 224, 3]``: 7x7 stride-2 stem conv (padding 3) + BN + ReLU -> 3x3 stride-2 max
pool (padding 1) -> four stages (widths W, 2W, 4W, 8W; W = 64; stride 2 at the start of
stages 2-4) -> global average pool -> dense output. Basic blocks for 18/34; bottleneck
blocks (1x1, 3x3, 1x1 x4) for 50+, with the stride on the 3x3 conv ("ResNet v1.5", as
torchvision). Convs have no bias; shortcuts are 1x1 conv + BN when the shape changes.

Counts with 1000 classes (torchvision's totals: ResNet-18 11,689,512; ResNet-50
25,557,032 parameters): weights (conv + dense kernels) 11,678,912 and 25,502,912.

Params (``s`` stage 1..4, ``b`` block 1..n)::

  stem_conv/kernel, stem_bn/{scale,bias}
  stage{s}_block{b}/conv{1,2[,3]}/kernel, .../bn{1,2[,3]}/{scale,bias}
  stage{s}_block1/shortcut_conv/kernel, stage{s}_block1/shortcut_bn/{scale,bias}
  output/{kernel,bias}

Default init: Kaiming normal (fan_in) kernels, BN gamma ~ U[0, 1), beta 0 (open_lth's
``imagenet_resnet`` defaults, which override torchvision's fan_out / gamma = 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from flax import linen as nn

from jaxticket.models import initializers, layers
from jaxticket.models.resnet_cifar import BasicBlock

#: depth -> (block kind, blocks per stage), as torchvision.
STAGES: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


class BottleneckBlock(nn.Module):
    """1x1 (features) -> 3x3 (features, stride s) -> 1x1 (4 * features), residual.

    ``[B, H, W, C] -> [B, H/s, W/s, 4 * features]``.
    """

    features: int
    strides: int = 1
    kernel_init: initializers.InitSpec = "kaiming_normal"
    bn_init: initializers.InitSpec = "uniform"
    expansion: int = 4

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        k, b = self.kernel_init, self.bn_init
        out = self.features * self.expansion
        y = layers.conv(self.features, 1, padding="VALID", use_bias=False, name="conv1", kernel_init=k)(x)
        y = nn.relu(layers.batch_norm(train=train, name="bn1", bn_init=b)(y))
        y = layers.conv(self.features, 3, strides=self.strides, padding=layers.pad(1),
                        use_bias=False, name="conv2", kernel_init=k)(y)
        y = nn.relu(layers.batch_norm(train=train, name="bn2", bn_init=b)(y))
        y = layers.conv(out, 1, padding="VALID", use_bias=False, name="conv3", kernel_init=k)(y)
        y = layers.batch_norm(train=train, name="bn3", bn_init=b)(y)
        if self.strides != 1 or x.shape[-1] != out:
            x = layers.conv(out, 1, strides=self.strides, padding="VALID", use_bias=False,
                            name="shortcut_conv", kernel_init=k)(x)
            x = layers.batch_norm(train=train, name="shortcut_bn", bn_init=b)(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """ImageNet ResNet (torchvision layout).

    Attributes:
      stage_sizes: blocks per stage, e.g. ``(3, 4, 6, 3)``; see :data:`STAGES`.
      bottleneck: bottleneck blocks (ResNet-50+) instead of basic blocks.
      width: stem and first-stage width W (stages W, 2W, 4W, 8W). Default 64.
      num_classes: width of the output layer (default 1000).
      kernel_init: a name from :data:`initializers.KERNEL_INITS` or a callable.
      bn_init: a name from :data:`initializers.BN_INITS` or a callable (gamma init).

    Example (shapes only, no FLOPs spent)::

      >>> import jax, jax.numpy as jnp
      >>> model = ResNet(stage_sizes=(3, 4, 6, 3), bottleneck=True)   # ResNet-50
      >>> x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
      >>> variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
      >>> jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x).shape
      (1, 1000)
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    bottleneck: bool = False
    width: int = 64
    num_classes: int = 1000
    kernel_init: initializers.InitSpec = "kaiming_normal"
    bn_init: initializers.InitSpec = "uniform"

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        k, b = self.kernel_init, self.bn_init
        x = layers.conv(self.width, 7, strides=2, padding=layers.pad(3), use_bias=False,
                        name="stem_conv", kernel_init=k)(x)
        x = nn.relu(layers.batch_norm(train=train, name="stem_bn", bn_init=b)(x))
        x = layers.max_pool(x, 3, strides=2, padding=layers.pad(1))
        block = BottleneckBlock if self.bottleneck else BasicBlock
        for s, n in enumerate(self.stage_sizes):
            for j in range(n):
                strides = 2 if s > 0 and j == 0 else 1
                x = block(self.width * 2**s, strides, kernel_init=k, bn_init=b,
                          name=f"stage{s + 1}_block{j + 1}")(x, train=train)
        x = jnp.mean(x, axis=(1, 2))
        return layers.dense(self.num_classes, name="output", kernel_init=k)(x)
