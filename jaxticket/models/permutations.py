"""The permutation symmetries of each model of the zoo, declared per family.

Permuting the units (or channels) of a hidden layer, together with the rows of the next
layer's kernel, leaves the function a network computes unchanged. A
:class:`PermutationSpec` names each such permutation and every axis it acts on:

* dense hidden units: ``fc{i}/kernel`` axis 1, ``fc{i}/bias`` axis 0, and the next
  kernel's axis 0;
* conv channels: the kernel's output axis 3, the bias, BatchNorm's scale/bias (params)
  and mean/var (``batch_stats``), the next conv's input axis 2, or, after a flatten of
  ``[H, W, C]``, the channel factor of the next dense kernel's input axis
  (``channels=C``: the axis is viewed as ``[H * W, C]``);
* residual networks: one permutation per *stream* (the channels every block of a stage
  adds into: the stem or shortcut conv, each block's last conv and BatchNorm, the next
  blocks' first convs and shortcuts), and one per block-internal layer.

Used by :mod:`jaxticket.alignment` (weight matching, Ainsworth et al. 2023).

Example:
    >>> from jaxticket import models
    >>> import jax, jax.numpy as jnp
    >>> model = models.get("lenet_300_100")
    >>> params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False))["params"]
    >>> spec = permutation_spec(model, params)
    >>> sorted(spec), [a.path for a in spec["fc2"]]
    (['fc1', 'fc2'], ['fc2/kernel', 'fc2/bias', 'output/kernel'])
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from jaxticket.models.alexnet import AlexNet
from jaxticket.models.conv import ConvNet
from jaxticket.models.lenet import LeNet5, LeNetFC
from jaxticket.models.resnet_cifar import CifarResNet
from jaxticket.models.resnet_imagenet import ResNet
from jaxticket.models.vgg import VGG

__all__ = ["Axis", "PermutationSpec", "permutation_spec", "register_permutation_spec"]


@dataclasses.dataclass(frozen=True)
class Axis:
    """One axis a permutation acts on: ``path`` of a leaf in ``collection`` (``"params"``
    or ``"batch_stats"``), its ``axis``, and ``channels`` when the axis is a flattened
    ``[..., channels]`` (the permutation acts on the channel factor)."""

    path: str
    axis: int
    collection: str = "params"
    channels: Optional[int] = None


PermutationSpec = dict  # {name: tuple[Axis, ...]}

_SPECS: dict[type, Callable] = {}


def register_permutation_spec(cls: type) -> Callable:
    """Decorator: ``fn(model, params) -> PermutationSpec`` for models of class ``cls``
    (your own models can declare theirs)."""
    def decorate(fn):
        _SPECS[cls] = fn
        return fn

    return decorate


def permutation_spec(model, params) -> PermutationSpec:
    """The :class:`PermutationSpec` of ``model`` (a zoo model, or one whose class has a
    registered spec); ``params`` (arrays or shapes) tells the layers present."""
    for cls, fn in _SPECS.items():
        if isinstance(model, cls):
            return fn(model, params)
    raise ValueError(f"no permutation spec is declared for {type(model).__name__}; declare one with "
                     "@jaxticket.models.permutations.register_permutation_spec(YourModel)")


def _channels_out(path: str, bias: bool = True, bn: Optional[str] = None) -> list[Axis]:
    out = [Axis(f"{path}/kernel", -1)]
    if bias:
        out.append(Axis(f"{path}/bias", 0))
    if bn is not None:
        out += [Axis(f"{bn}/scale", 0), Axis(f"{bn}/bias", 0),
                Axis(f"{bn}/mean", 0, "batch_stats"), Axis(f"{bn}/var", 0, "batch_stats")]
    return out


def _dense_chain(names: list[str], first_in: Optional[Axis] = None) -> PermutationSpec:
    """Hidden dense layers ``names[:-1]`` feeding ``names[1:]``."""
    spec = {}
    for name, nxt in zip(names[:-1], names[1:]):
        spec[name] = (*_channels_out(name), Axis(f"{nxt}/kernel", 0))
    return spec


@register_permutation_spec(LeNetFC)
def _lenet_fc(model, params) -> PermutationSpec:
    names = [f"fc{i}" for i in range(1, len(model.hidden) + 1)] + ["output"]
    return _dense_chain(names)


@register_permutation_spec(LeNet5)
def _lenet5(model, params) -> PermutationSpec:
    return {"conv1": (*_channels_out("conv1"), Axis("conv2/kernel", 2)),
            "conv2": (*_channels_out("conv2"), Axis("fc1/kernel", 0, channels=16)),
            **_dense_chain(["fc1", "fc2", "output"])}


@register_permutation_spec(ConvNet)
def _convnet(model, params) -> PermutationSpec:
    convs = [f"conv{i}" for i in range(1, 2 * len(model.blocks) + 1)]
    spec = {c: (*_channels_out(c), Axis(f"{n}/kernel", 2)) for c, n in zip(convs[:-1], convs[1:])}
    spec[convs[-1]] = (*_channels_out(convs[-1]), Axis("fc1/kernel", 0, channels=model.blocks[-1]))
    fcs = [f"fc{i}" for i in range(1, len(model.fc) + 1)] + ["output"]
    return {**spec, **_dense_chain(fcs)}


@register_permutation_spec(AlexNet)
def _alexnet(model, params) -> PermutationSpec:
    convs = sorted((k for k in params if k.startswith("conv")), key=lambda k: int(k[4:]))
    spec = {c: (*_channels_out(c), Axis(f"{n}/kernel", 2)) for c, n in zip(convs[:-1], convs[1:])}
    last = params[convs[-1]]["kernel"].shape[-1]
    spec[convs[-1]] = (*_channels_out(convs[-1]), Axis("output/kernel", 0, channels=last))
    return spec


@register_permutation_spec(VGG)
def _vgg(model, params) -> PermutationSpec:
    n = sum(1 for k in params if k.startswith("conv"))
    spec = {}
    for i in range(1, n + 1):
        nxt = Axis(f"conv{i + 1}/kernel", 2) if i < n else Axis("output/kernel", 0)
        spec[f"conv{i}"] = (*_channels_out(f"conv{i}", bias=True, bn=f"bn{i}"), nxt)
    return spec


def _resnet(params, last_conv: int) -> PermutationSpec:
    """Residual streams and block-internal layers of a ResNet (CIFAR or ImageNet)."""
    blocks = sorted((k for k in params if k.startswith("stage")),
                    key=lambda k: tuple(int(x) for x in k.replace("stage", "").split("_block")))
    spec: dict[str, list] = {}
    stream = "stream0"
    spec[stream] = _channels_out("stem_conv", bias=False, bn="stem_bn")
    for block in blocks:
        spec[stream].append(Axis(f"{block}/conv1/kernel", 2))
        if "shortcut_conv" in params[block]:  # a new stream begins here
            spec[stream].append(Axis(f"{block}/shortcut_conv/kernel", 2))
            stream = f"stream_{block}"
            spec[stream] = _channels_out(f"{block}/shortcut_conv", bias=False, bn=f"{block}/shortcut_bn")
        spec[stream] += _channels_out(f"{block}/conv{last_conv}", bias=False, bn=f"{block}/bn{last_conv}")
        for i in range(1, last_conv):
            spec[f"{block}/conv{i}"] = (*_channels_out(f"{block}/conv{i}", bias=False, bn=f"{block}/bn{i}"),
                                        Axis(f"{block}/conv{i + 1}/kernel", 2))
    spec[stream].append(Axis("output/kernel", 0))
    return {k: tuple(v) for k, v in spec.items()}


@register_permutation_spec(CifarResNet)
def _cifar_resnet(model, params) -> PermutationSpec:
    return _resnet(params, last_conv=2)


@register_permutation_spec(ResNet)
def _imagenet_resnet(model, params) -> PermutationSpec:
    return _resnet(params, last_conv=3 if model.bottleneck else 2)
