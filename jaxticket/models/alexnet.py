"""A small AlexNet for CIFAR-10: the ``cifar/alexnet.py`` of bearpaw/pytorch-classification.

That model (the widely copied "AlexNet for CIFAR", 2.47M parameters) keeps AlexNet's
five convs with the torchvision widths, has no LRN, no dropout and a single dense
output layer::

  [B, 32, 32, 3] -conv1 11x11/4, 64, pad 5-> 8x8x64  -maxpool 2-> 4x4x64
                 -conv2 5x5, 192, pad 2 -> 4x4x192   -maxpool 2-> 2x2x192
                 -conv3 3x3, 384, pad 1 -> conv4 3x3, 256 -> conv5 3x3, 256
                 -maxpool 2-> 1x1x256 -flatten-> 256 -output-> num_classes

(ReLU after every conv.) Weights: 23,232 + 307,200 + 663,552 + 884,736 + 589,824
+ 2,560 = 2,471,104; biases 1,162; 2,472,266 parameters in all.

Params: ``conv1`` ... ``conv5``, ``output``, each ``{kernel,bias}``.
Default init: Glorot normal, zero biases (like the other BatchNorm-free models).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from jaxticket.models import initializers, layers

_CONVS = (  # (features, kernel, stride, padding, pool after)
    (64, 11, 4, 5, True),
    (192, 5, 1, 2, True),
    (384, 3, 1, 1, False),
    (256, 3, 1, 1, False),
    (256, 3, 1, 1, True),
)


class AlexNet(nn.Module):
    """CIFAR AlexNet (bearpaw/pytorch-classification); see the module docstring.

    Example::

      >>> import jax, jax.numpy as jnp
      >>> model = AlexNet()
      >>> x = jnp.zeros((2, 32, 32, 3))
      >>> variables = model.init(jax.random.key(0), x, train=False)
      >>> model.apply(variables, x, train=False).shape
      (2, 10)
    """

    num_classes: int = 10
    kernel_init: initializers.InitSpec = "glorot_normal"

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        del train  # no dropout or BatchNorm
        for i, (features, size, stride, p, pool) in enumerate(_CONVS, start=1):
            x = layers.conv(features, size, strides=stride, padding=layers.pad(p),
                            name=f"conv{i}", kernel_init=self.kernel_init)(x)
            x = nn.relu(x)
            if pool:
                x = layers.max_pool(x)
        x = layers.flatten(x)
        return layers.dense(self.num_classes, name="output", kernel_init=self.kernel_init)(x)
