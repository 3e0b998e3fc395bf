"""Flax Linen models of the lottery-ticket papers, and a registry.

Example::

  >>> import jax, jax.numpy as jnp
  >>> from jaxticket import models
  >>> model = models.get("conv4")                       # Frankle & Carbin's Conv-4
  >>> x = jnp.zeros((8, *models.input_shape("conv4")))  # NHWC [8, 32, 32, 3]
  >>> variables = model.init(jax.random.key(0), x, train=False)
  >>> model.apply(variables, x, train=False).shape
  (8, 10)
  >>> models.count_weights(variables["params"])
  2425024

Every model is called as ``model.apply(variables, x, train=...)`` with NHWC float inputs
and returns logits ``[B, num_classes]``. BatchNorm models (``vgg*``, ``resnet*``) keep
running statistics in ``variables["batch_stats"]``; training calls need
``mutable=["batch_stats"]`` and return ``(logits, {"batch_stats": ...})``.

Models are chosen by name from a registry (:data:`MODELS` for fixed names,
:data:`FAMILIES` for templates such as ``resnet{depth}[_w{width}]``); add yours with
:func:`register_model` (then usable as ``TrainConfig(model=...)`` and, from a module given
to ``--import``, on the command line).

Models (``names()``; weights = conv + dense kernels on the default input shape, all
pinned in ``tests/test_models.py``):

* ``lenet_300_100``: 784-300-100-10 MLP (Frankle & Carbin 2019); 266,200 weights.
  ``lenet_{h1}[_{h2}...]`` gives other hidden widths.
* ``lenet5``: conv3x3 6 - pool - conv3x3 16 - pool - fc 120-84-10, the PyTorch pruning
  tutorial's LeNet used by Paganini & Forde (2020); 59,838 weights.
* ``conv2``, ``conv4``, ``conv6``: Frankle & Carbin's Conv-2/4/6; 4,300,992 /
  2,425,024 / 2,261,184 weights.
* ``vgg11``, ``vgg13``, ``vgg16``, ``vgg19``: CIFAR VGG with BatchNorm and one output
  layer (open_lth ``cifar_vgg``); VGG-16 14,715,584, VGG-19 20,024,000 weights.
* ``resnet{6n+2}[_w{W}]`` (``resnet20``, ``resnet32``, ``resnet44``, ``resnet56``,
  ``resnet110``, ``resnet20_w64``, ...): CIFAR ResNets, widths W-2W-4W, W = 16 by
  default (open_lth ``cifar_resnet``); ResNet-20 270,896 weights.
* ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``, ``resnet152`` (``_w{W}``
  for other widths): ImageNet ResNets, torchvision layout, 1000 classes by default;
  ResNet-50 25,502,912 weights, 25,557,032 parameters.
* ``alexnet``: small CIFAR AlexNet of bearpaw/pytorch-classification; 2,471,104 weights.

Parameter naming (for regex-based pruning rules; a path joins dict keys with ``"/"``):

* Dense layers are ``fc1``, ``fc2``, ... and the last layer of **every** model is
  ``output`` (``output/kernel``, ``output/bias``), so ``^output/`` selects it.
* Convs are ``conv1``, ``conv2``, ... numbered through the network (lenet5, conv*,
  vgg*, alexnet); BatchNorm after ``conv{i}`` is ``bn{i}`` (``scale``, ``bias``; running
  ``mean``/``var`` in ``batch_stats``).
* ResNets: ``stem_conv``/``stem_bn``, then blocks ``stage{s}_block{b}`` (1-based)
  holding ``conv1..conv3``/``bn1..bn3`` and, where the shape changes,
  ``shortcut_conv``/``shortcut_bn``. E.g. ``stage2_block1/shortcut_conv/kernel``.
* Kernels are the only leaves with ``ndim >= 2``: Dense ``(in, out)``, Conv
  ``(h, w, in, out)`` (Flax layouts). Biases, BN scales and shifts are 1-D.

Useful regexes: all kernels ``r"kernel$"``; conv kernels ``r"conv[^/]*/kernel$"``; all
but the output layer ``r"^(?!output/).*kernel$"``.

Initialisation (``kernel_init=``, ``bn_init=`` keywords to :func:`get`; see
:mod:`jaxticket.models.initializers`): Glorot normal kernels for the BatchNorm-free models
(lenets, conv*, alexnet; Frankle & Carbin), Kaiming normal (fan_in) kernels with BN
gamma ~ U[0, 1) and beta = 0 for vgg* and resnet* (open_lth). Biases start at zero.
"""

from jaxticket.models import initializers
from jaxticket.models.alexnet import AlexNet
from jaxticket.models.conv import ConvNet
from jaxticket.models.initializers import BN_INITS, KERNEL_INITS
from jaxticket.models.lenet import LeNet5, LeNetFC
from jaxticket.models.permutations import PermutationSpec, permutation_spec, register_permutation_spec
from jaxticket.models.registry import (
    FAMILIES,
    MODELS,
    ModelFamily,
    ModelSpec,
    count_params,
    count_weights,
    families,
    get,
    input_shape,
    names,
    register_model,
    register_model_family,
    spec,
)
from jaxticket.models.resnet_cifar import BasicBlock, CifarResNet
from jaxticket.models.resnet_imagenet import BottleneckBlock, ResNet
from jaxticket.models.vgg import VGG

__all__ = [
    "FAMILIES",
    "MODELS",
    "ModelFamily",
    "ModelSpec",
    "AlexNet",
    "BN_INITS",
    "BasicBlock",
    "BottleneckBlock",
    "CifarResNet",
    "ConvNet",
    "KERNEL_INITS",
    "LeNet5",
    "LeNetFC",
    "PermutationSpec",
    "ResNet",
    "VGG",
    "count_params",
    "count_weights",
    "families",
    "get",
    "initializers",
    "input_shape",
    "names",
    "permutation_spec",
    "register_model",
    "register_model_family",
    "register_permutation_spec",
    "spec",
]
