"""Conv-2, Conv-4 and Conv-6 of Frankle & Carbin (2019), Figure 2 / Appendix H.

VGG-like CIFAR-10 networks: blocks of two 3x3 convs (SAME padding, ReLU) followed by a
2x2 max pool, then fully connected 256-256-num_classes::

  conv2: 64, 64, pool                                  -> 16*16*64 = 16384 -> fc
  conv4: 64, 64, pool, 128, 128, pool                  ->  8*8*128 =  8192 -> fc
  conv6: 64, 64, pool, 128, 128, pool, 256, 256, pool  ->  4*4*256 =  4096 -> fc

Weights (conv + dense kernels) on ``[B, 32, 32, 3]`` inputs; the paper's Figure 2
gives 4.3M / 2.4M / 2.26M:

  conv2: 1,728 + 36,864 + 16,384*256 + 256*256 + 256*10           = 4,300,992
  conv4: conv2's convs + 73,728 + 147,456; fc1 8,192*256          = 2,425,024
  conv6: conv4's convs + 294,912 + 589,824; fc1 4,096*256         = 2,261,184

Params: ``conv1`` ... ``conv{2n}``, ``fc1``, ``fc2``, ``output``, each ``{kernel,bias}``.
Default init: Glorot normal, zero biases (the paper's "Gaussian Glorot").
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from flax import linen as nn

from jaxticket.models import initializers, layers

#: Conv widths per block (each block: two convs then a 2x2 max pool).
PLANS: dict[str, tuple[int, ...]] = {
    "conv2": (64,),
    "conv4": (64, 128),
    "conv6": (64, 128, 256),
}


class ConvNet(nn.Module):
    """Frankle & Carbin's Conv-2/4/6 (see the module docstring for shapes and counts).

    Attributes:
      blocks: conv width of each two-conv block, e.g. ``(64, 128)`` for Conv-4.
      fc: widths of the hidden fully connected layers (paper: ``(256, 256)``).
      num_classes: width of the output layer.
      kernel_init: a name from :data:`initializers.KERNEL_INITS` or a callable.
      dropout_rate: dropout after each hidden fc ReLU when ``train=True`` (the paper's
        dropout experiments use 0.5; then ``apply`` needs ``rngs={"dropout": key}``).

    Example::

      >>> import jax, jax.numpy as jnp
      >>> model = ConvNet(blocks=(64, 128))                      # Conv-4
      >>> x = jnp.zeros((2, 32, 32, 3))
      >>> variables = model.init(jax.random.key(0), x, train=False)
      >>> model.apply(variables, x, train=False).shape
      (2, 10)
    """

    blocks: Sequence[int] = (64,)
    fc: Sequence[int] = (256, 256)
    num_classes: int = 10
    kernel_init: initializers.InitSpec = "glorot_normal"
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        k = self.kernel_init
        n = 0
        for width in self.blocks:
            for _ in range(2):
                n += 1
                x = nn.relu(layers.conv(width, 3, padding="SAME", name=f"conv{n}", kernel_init=k)(x))
            x = layers.max_pool(x)
        x = layers.flatten(x)
        for i, width in enumerate(self.fc, start=1):
            x = nn.relu(layers.dense(width, name=f"fc{i}", kernel_init=k)(x))
            if self.dropout_rate > 0:
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return layers.dense(self.num_classes, name="output", kernel_init=k)(x)
