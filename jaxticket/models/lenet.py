"""MNIST LeNets: the fully connected LeNet-300-100 and the convolutional LeNet-5.

Both default to Glorot (Xavier) normal kernels and zero biases, as in Frankle & Carbin
(2019). Input: NHWC ``[B, 28, 28, 1]`` floats; output: logits ``[B, num_classes]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from flax import linen as nn

from jaxticket.models import initializers, layers


class LeNetFC(nn.Module):
    """Fully connected LeNet (Frankle & Carbin 2019, Figure 2; open_lth ``mnist_lenet``).

    ``hidden=(300, 100)`` is LeNet-300-100: 784-300-100-10, ReLU, with
    784*300 + 300*100 + 100*10 = 266,200 weights and 300 + 100 + 10 = 410 biases.
    Any input ``[B, ...]`` is flattened first, so ``[B, 28, 28, 1]`` and ``[B, 784]``
    give the same network.

    Params: ``fc1/{kernel,bias}``, ..., ``fc{len(hidden)}/...``, ``output/{kernel,bias}``.

    Attributes:
      hidden: widths of the hidden layers.
      num_classes: width of the output layer.
      kernel_init: a name from :data:`initializers.KERNEL_INITS` or a callable.
      dropout_rate: dropout after each hidden ReLU when ``train=True`` (0 = off; then
        ``apply`` needs ``rngs={"dropout": key}``).

    Example::

      >>> import jax, jax.numpy as jnp
      >>> model = LeNetFC()
      >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)
      >>> model.apply(variables, jnp.zeros((8, 28, 28, 1)), train=False).shape
      (8, 10)
    """

    hidden: Sequence[int] = (300, 100)
    num_classes: int = 10
    kernel_init: initializers.InitSpec = "glorot_normal"
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        x = layers.flatten(x)
        for i, width in enumerate(self.hidden, start=1):
            x = nn.relu(layers.dense(width, name=f"fc{i}", kernel_init=self.kernel_init)(x))
            if self.dropout_rate > 0:
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return layers.dense(self.num_classes, name="output", kernel_init=self.kernel_init)(x)


class LeNet5(nn.Module):
    """The convolutional LeNet of the PyTorch pruning tutorial (Paganini & Forde 2020).

    Paganini & Forde's experiments on MNIST use the LeNet of the ``torch.nn.utils.prune``
    tutorial (written by Paganini), which has 3x3 kernels, not LeCun's 5x5::

      [B, 28, 28, 1] -conv1 3x3, 6, VALID, ReLU-> [B, 26, 26, 6] -maxpool 2-> 13x13x6
                     -conv2 3x3, 16, VALID, ReLU-> [B, 11, 11, 16] -maxpool 2-> 5x5x16
                     -flatten-> 400 -fc1-> 120 -fc2-> 84 -output-> num_classes

    Weights: 54 + 864 + 48,000 + 10,080 + 840 = 59,838; biases 6+16+120+84+10 = 236.
    (The flatten is NHWC-ordered, so ``fc1``'s rows are a permutation of PyTorch's.)

    Params: ``conv1``, ``conv2``, ``fc1``, ``fc2``, ``output``, each ``{kernel,bias}``.

    Example::

      >>> import jax, jax.numpy as jnp
      >>> model = LeNet5()
      >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)
      >>> model.apply(variables, jnp.zeros((2, 28, 28, 1)), train=False).shape
      (2, 10)
    """

    num_classes: int = 10
    kernel_init: initializers.InitSpec = "glorot_normal"

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        del train  # no dropout or BatchNorm
        k = self.kernel_init
        x = layers.max_pool(nn.relu(layers.conv(6, 3, padding="VALID", name="conv1", kernel_init=k)(x)))
        x = layers.max_pool(nn.relu(layers.conv(16, 3, padding="VALID", name="conv2", kernel_init=k)(x)))
        x = layers.flatten(x)
        x = nn.relu(layers.dense(120, name="fc1", kernel_init=k)(x))
        x = nn.relu(layers.dense(84, name="fc2", kernel_init=k)(x))
        return layers.dense(self.num_classes, name="output", kernel_init=k)(x)
