"""Model registry: names -> Flax Linen modules, default input shapes, parameter counts."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from typing import Any

import jax
import numpy as np
from flax import linen as nn

from jaxticket.models import initializers
from jaxticket.models.alexnet import AlexNet
from jaxticket.models.conv import PLANS as CONV_PLANS
from jaxticket.models.conv import ConvNet
from jaxticket.models.lenet import LeNet5, LeNetFC
from jaxticket.models.resnet_cifar import CifarResNet
from jaxticket.models.resnet_imagenet import STAGES, ResNet
from jaxticket.models.vgg import PLANS as VGG_PLANS
from jaxticket.models.vgg import VGG

MNIST_SHAPE = (28, 28, 1)
CIFAR_SHAPE = (32, 32, 3)
IMAGENET_SHAPE = (224, 224, 3)

# The names that names() lists. Parametric families accept more names, see get().
_LISTED = (
    "alexnet",
    "conv2", "conv4", "conv6",
    "lenet5", "lenet_300_100",
    "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet20_w32", "resnet20_w64", "resnet56_w32",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "vgg11", "vgg13", "vgg16", "vgg19",
)

_PATTERN_HELP = (
    "also: lenet_{h1}[_{h2}...] (fully connected LeNet with those hidden widths), "
    "resnet{depth}[_w{width}] (CIFAR ResNet for depth = 6n+2, ImageNet ResNet for depth "
    f"in {sorted(STAGES)})"
)


@dataclasses.dataclass(frozen=True)
class _Spec:
    cls: type[nn.Module]
    arch: dict[str, Any]  # module fields fixed by the name
    input_shape: tuple[int, int, int]
    num_classes: int


def _unknown(name: str, reason: str = "") -> ValueError:
    close = difflib.get_close_matches(name, _LISTED, n=1) if isinstance(name, str) else []
    hint = f" Did you mean {close[0]!r}?" if close else ""
    reason = f" ({reason})" if reason else ""
    return ValueError(
        f"Unknown model {name!r}{reason}.{hint} Valid names: {', '.join(names())}; "
        f"{_PATTERN_HELP}."
    )


def _resolve(name: str) -> _Spec:
    if not isinstance(name, str):
        raise _unknown(name)
    if name == "lenet5":
        return _Spec(LeNet5, {}, MNIST_SHAPE, 10)
    if name == "alexnet":
        return _Spec(AlexNet, {}, CIFAR_SHAPE, 10)
    if name in CONV_PLANS:
        return _Spec(ConvNet, {"blocks": CONV_PLANS[name]}, CIFAR_SHAPE, 10)
    if m := re.fullmatch(r"vgg(\d+)", name):
        if int(m[1]) in VGG_PLANS:
            return _Spec(VGG, {"plan": VGG_PLANS[int(m[1])]}, CIFAR_SHAPE, 10)
        raise _unknown(name, f"VGG depth must be one of {sorted(VGG_PLANS)}")
    if m := re.fullmatch(r"lenet((?:_[1-9]\d*)+)", name):
        hidden = tuple(int(h) for h in m[1].split("_")[1:])
        return _Spec(LeNetFC, {"hidden": hidden}, MNIST_SHAPE, 10)
    if m := re.fullmatch(r"resnet([1-9]\d*)(?:_w([1-9]\d*))?", name):
        depth = int(m[1])
        width = {} if m[2] is None else {"width": int(m[2])}
        if depth in STAGES:
            kind, sizes = STAGES[depth]
            arch = {"stage_sizes": sizes, "bottleneck": kind == "bottleneck", **width}
            return _Spec(ResNet, arch, IMAGENET_SHAPE, 1000)
        if depth >= 8 and (depth - 2) % 6 == 0:
            return _Spec(CifarResNet, {"depth": depth, **width}, CIFAR_SHAPE, 10)
        raise _unknown(
            name, f"ResNet depth must be 6n+2 (CIFAR) or one of {sorted(STAGES)} (ImageNet)")
    raise _unknown(name)


def names() -> list[str]:
    """The model names, sorted. ``get`` also accepts the parametric names

    ``lenet_{h1}[_{h2}...]`` and ``resnet{depth}[_w{width}]``; a few are listed here.
    """
    return sorted(_LISTED)


def _fields(cls: type[nn.Module]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]


def get(name: str, num_classes: int | None = None, **kwargs: Any) -> nn.Module:
    """Returns the Flax Linen module called ``name``.

    Args:
      name: one of :func:`names`, or a parametric name: ``lenet_{h1}[_{h2}...]``
        (fully connected LeNet), ``resnet{depth}[_w{width}]`` (depth 6n+2: CIFAR
        ResNet with stage widths W-2W-4W, default W = 16; depth 18/34/50/101/152:
        ImageNet ResNet, default W = 64).
      num_classes: width of the output layer; ``None`` means the model's dataset
        default (1000 for the ImageNet ResNets, 10 for all others).
      **kwargs: other fields of the module, e.g. ``kernel_init`` (a name in
        :data:`initializers.KERNEL_INITS` or a callable), ``bn_init`` (BatchNorm
        families: a name in :data:`initializers.BN_INITS` or a callable),
        ``dropout_rate`` (``lenet_*``, ``conv*``).

    Returns:
      A module to call as ``model.init(key, x, train=False)`` and
      ``model.apply(variables, x, train=...)`` with NHWC inputs of shape
      ``[B, *input_shape(name)]``, returning logits ``[B, num_classes]``. With
      BatchNorm, training calls need ``mutable=["batch_stats"]``.

    Raises:
      ValueError: unknown model name (lists the valid names and suggests the closest),
        unknown initialiser name, or a keyword the model does not have.

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from jaxticket import models
      >>> model = models.get("resnet20", kernel_init="kaiming_normal")
      >>> x = jnp.zeros((2, *models.input_shape("resnet20")))
      >>> variables = model.init(jax.random.key(0), x, train=False)
      >>> logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
      >>> logits.shape, models.count_weights(variables["params"])
      ((2, 10), 270896)
    """
    spec = _resolve(name)
    allowed = [f for f in _fields(spec.cls) if f not in spec.arch and f != "num_classes"]
    bad = sorted(set(kwargs) - set(allowed))
    if bad:
        raise ValueError(
            f"Model {name!r} ({spec.cls.__name__}) does not take {', '.join(map(repr, bad))}; "
            f"valid keywords: num_classes, {', '.join(allowed)}."
        )
    if "kernel_init" in kwargs:
        initializers.kernel(kwargs["kernel_init"])  # validate at the boundary
    if "bn_init" in kwargs:
        initializers.bn_scale(kwargs["bn_init"])
    nc = spec.num_classes if num_classes is None else int(num_classes)
    if nc < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    return spec.cls(**spec.arch, num_classes=nc, **kwargs)


def input_shape(name: str) -> tuple[int, int, int]:
    """Default input shape ``(H, W, C)`` (no batch axis) for model ``name``.

    ``(28, 28, 1)`` for the LeNets (MNIST), ``(32, 32, 3)`` for the CIFAR models,
    ``(224, 224, 3)`` for the ImageNet ResNets.

    Example::

      >>> from jaxticket import models
      >>> models.input_shape("conv4")
      (32, 32, 3)
      >>> models.input_shape("resnet50")
      (224, 224, 3)
    """
    return _resolve(name).input_shape


def _size(leaf: Any) -> tuple[int, int]:
    shape = getattr(leaf, "shape", None)
    if shape is None:
        shape = np.shape(leaf)
    return len(shape), math.prod(shape)


def count_params(params: Any) -> int:
    """Number of scalars in all leaves of ``params`` (arrays or ``ShapeDtypeStruct``s).

    Pass ``variables["params"]``: counting ``variables`` also counts ``batch_stats``.
    """
    return sum(_size(leaf)[1] for leaf in jax.tree_util.tree_leaves(params))


def count_weights(params: Any) -> int:
    """Number of scalars in leaves with ``ndim >= 2``: conv and dense kernels.

    Biases and BatchNorm scales/shifts (1-D) are not counted; this is the "weights"
    of the lottery-ticket papers (e.g. 266,200 for LeNet-300-100).

    Example:
        >>> import jax.numpy as jnp
        >>> params = {"fc1": {"kernel": jnp.zeros((784, 300)), "bias": jnp.zeros(300)},
        ...           "fc2": {"kernel": jnp.zeros((300, 100)), "bias": jnp.zeros(100)},
        ...           "output": {"kernel": jnp.zeros((100, 10)), "bias": jnp.zeros(10)}}
        >>> count_weights(params), count_params(params)      # LeNet-300-100
        (266200, 266610)
    """
    return sum(n for ndim, n in map(_size, jax.tree_util.tree_leaves(params)) if ndim >= 2)
