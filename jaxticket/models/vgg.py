"""CIFAR VGG-11/13/16/19 with BatchNorm, as open_lth's ``cifar_vgg``.

Each number in the plan is a 3x3 conv (padding 1, with bias) -> BatchNorm -> ReLU; ``"M"``
is a 2x2 max pool. After the last conv the (2x2 on 32x32 inputs) map is average pooled
and a single dense layer maps 512 -> num_classes (open_lth: ``AvgPool2d(2)`` then ``fc``;
here a global mean, identical on 32x32 inputs and defined for any size).

Weights on ``[B, 32, 32, 3]`` (conv kernels + the 512*10 output kernel):

  vgg11:  9,222,848    vgg13:  9,407,168    vgg16: 14,715,584    vgg19: 20,024,000

All parameters incl. conv biases, BN scale/bias and the output bias are open_lth's test
values: 9,231,114 / 9,416,010 / 14,728,266 / 20,040,522.

Params: ``conv{i}/{kernel,bias}`` and ``bn{i}/{scale,bias}`` for i = 1..#convs (numbered
through the whole network), ``output/{kernel,bias}``; ``batch_stats``: ``bn{i}/{mean,var}``.
Default init: Kaiming normal (fan_in) kernels, BN gamma ~ U[0, 1), beta 0 (open_lth).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from flax import linen as nn

from jaxticket.models import initializers, layers

PLANS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
         512, 512, 512, 512, "M", 512, 512, 512, 512),
}


class VGG(nn.Module):
    """CIFAR VGG with BatchNorm and one output layer (open_lth ``cifar_vgg_{depth}``).

    Attributes:
      plan: conv widths and ``"M"`` (max pool) markers; see :data:`PLANS`.
      num_classes: width of the output layer.
      kernel_init: a name from :data:`initializers.KERNEL_INITS` or a callable.
      bn_init: a name from :data:`initializers.BN_INITS` or a callable (gamma init).

    Example::

      >>> import jax, jax.numpy as jnp
      >>> model = VGG(plan=PLANS[11])
      >>> x = jnp.zeros((2, 32, 32, 3))
      >>> variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x)  # one compile
      >>> logits, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
      >>> logits.shape
      (2, 10)
    """

    plan: Sequence[int | str] = PLANS[16]
    num_classes: int = 10
    kernel_init: initializers.InitSpec = "kaiming_normal"
    bn_init: initializers.InitSpec = "uniform"

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        n = 0
        for spec in self.plan:
            if spec == "M":
                x = layers.max_pool(x)
                continue
            n += 1
            x = layers.conv(int(spec), 3, padding=layers.pad(1), name=f"conv{n}",
                            kernel_init=self.kernel_init)(x)
            x = layers.batch_norm(train=train, name=f"bn{n}", bn_init=self.bn_init)(x)
            x = nn.relu(x)
        x = jnp.mean(x, axis=(1, 2))
        return layers.dense(self.num_classes, name="output", kernel_init=self.kernel_init)(x)
