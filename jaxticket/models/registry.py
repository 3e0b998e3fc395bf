"""Model registry: names -> Flax Linen modules, default input shapes, parameter counts.

A model name is fixed (``"lenet5"``, ``"conv4"``) or belongs to a family whose template
has placeholders for positive integers (``"resnet{depth}[_w{width}]"``: ``resnet20``,
``resnet20_w64``; ``[...]`` is optional, ``{hidden*}`` takes several, joined by ``_``).
Both live in registries (:class:`jaxticket.registry.Registry`): :data:`MODELS` (fixed
names) and :data:`FAMILIES` (templates). :func:`register_model` adds yours, usable by
name wherever a model name is (``TrainConfig(model=...)``, presets, the command line
with ``--import MODULE``).

Example:
    >>> import flax.linen as nn
    >>> class Tiny(nn.Module):
    ...     width: int = 8
    ...     num_classes: int = 10
    ...     @nn.compact
    ...     def __call__(self, x, train=False):
    ...         x = nn.relu(nn.Dense(self.width, name="fc1")(x.reshape(x.shape[0], -1)))
    ...         return nn.Dense(self.num_classes, name="output")(x)
    >>> _ = register_model("tiny_{width}", Tiny, input_shape=(28, 28, 1), examples=["tiny_8"], overwrite=True)
    >>> get("tiny_32").width, input_shape("tiny_32"), "tiny_8" in names()
    (32, (28, 28, 1), True)
    >>> _ = FAMILIES.pop("tiny_{width}")   # (this example leaves the registry as it found it)
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from typing import Any, Callable, Mapping, Optional, Sequence

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
from jaxticket.registry import Registry

__all__ = [
    "FAMILIES", "MODELS", "ModelFamily", "ModelSpec", "count_params", "count_weights", "families", "get",
    "input_shape", "names", "register_model", "register_model_family", "spec",
]

MNIST_SHAPE = (28, 28, 1)
CIFAR_SHAPE = (32, 32, 3)
IMAGENET_SHAPE = (224, 224, 3)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a model name stands for.

    Attributes:
      module: a Flax Linen module class, or a function of keywords returning a module;
        called as ``module(**arch, num_classes=..., **keywords)``.
      input_shape: the default input shape, without the batch axis (e.g. ``(28, 28, 1)``).
      num_classes: the default width of the output layer.
      arch: the module's fields the name fixes (``{"depth": 20}`` for ``resnet20``).
    """

    module: Callable[..., Any]
    input_shape: tuple
    num_classes: int = 10
    arch: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not callable(self.module):
            raise ValueError(f"ModelSpec: module must be a Flax module class or a function, got {self.module!r}")
        shape = tuple(self.input_shape) if isinstance(self.input_shape, (tuple, list)) else None
        if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise ValueError(f"ModelSpec: input_shape must be a tuple of positive ints without the batch "
                             f"axis, e.g. (28, 28, 1); got {self.input_shape!r}")
        object.__setattr__(self, "input_shape", shape)
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"ModelSpec: num_classes must be an int >= 1, got {self.num_classes!r}")
        object.__setattr__(self, "arch", dict(self.arch))


_INT, _INTS = r"[1-9]\d*", r"[1-9]\d*(?:_[1-9]\d*)*"
_FIELD = re.compile(r"\{([A-Za-z_]\w*)(\*?)\}")


def _compile(template: str) -> tuple["re.Pattern[str]", dict[str, bool]]:
    """The regex of a family template, and its fields (True: ``{f*}``, several ints joined
    by ``_``; False: ``{f}``, one positive int); ``[...]`` is optional, the rest literal."""
    pattern, fields, depth, pos = "", {}, 0, 0
    while pos < len(template):
        c = template[pos]
        if c == "{":
            m = _FIELD.match(template, pos)
            if not m or m[1] in fields:
                raise ValueError(f"model family {template!r}: a placeholder is {{name}} or {{name*}} with a new "
                                 f"identifier, at {template[pos:]!r}")
            fields[m[1]] = bool(m[2])
            pattern += f"(?P<{m[1]}>{_INTS if m[2] else _INT})"
            pos = m.end()
            continue
        if c == "]" and depth == 0 or c == "}":
            raise ValueError(f"model family {template!r}: unbalanced {c!r}")
        depth += {"[": 1, "]": -1}.get(c, 0)
        pattern += {"[": "(?:", "]": ")?"}.get(c, re.escape(c))
        pos += 1
    if depth or not fields:
        raise ValueError(f"model family {template!r}: " + ("unbalanced '['" if depth else
                         "no {placeholder} (a fixed name is registered with register_model)"))
    return re.compile(pattern), fields


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """Model names by a template: ``resolve(**fields) -> ModelSpec`` for a matching name.

    Attributes:
      template: e.g. ``"resnet{depth}[_w{width}]"`` (see the module docstring).
      resolve: the :class:`ModelSpec` of the fields a name gives (ints; a tuple of ints
        for ``{f*}``; absent optional parts are not passed); a ``ValueError`` says why a
        value is not a model (it becomes the reason of the unknown-name error).
      examples: names that :func:`names` lists.
      about: a phrase for messages, e.g. ``"CIFAR VGG"``.
    """

    template: str
    resolve: Callable[..., ModelSpec]
    examples: tuple = ()
    about: str = ""

    def __post_init__(self):
        object.__setattr__(self, "examples", tuple(self.examples))
        object.__setattr__(self, "_compiled", _compile(self.template))

    def match(self, name: str) -> Optional[dict]:
        """The fields of ``name`` (ints; tuples for ``{f*}``), or ``None`` when it is not of
        this family.

        Example:
            >>> FAMILIES.get("lenet_{hidden*}").match("lenet_300_100"), FAMILIES.get("vgg{depth}").match("vgg")
            ({'hidden': (300, 100)}, None)
        """
        regex, fields = self._compiled
        m = regex.fullmatch(name) if isinstance(name, str) else None
        if m is None:
            return None
        return {f: tuple(int(x) for x in v.split("_")) if fields[f] else int(v)
                for f, v in m.groupdict().items() if v is not None}


def _families_hint() -> str:
    shown = [f"{t} ({f.about})" if f.about else t for t, f in FAMILIES.items()]
    also = f"also the families {', '.join(shown)}; " if shown else ""
    return also + "your own: jaxticket.models.register_model(name, module, input_shape=...)"


#: Fixed model names -> :class:`ModelSpec`.
MODELS = Registry("model", hint=_families_hint)
#: Family templates -> :class:`ModelFamily`.
FAMILIES = Registry("model family", plural="model families")


def register_model(name: str, module: Optional[Callable] = None, *, input_shape: Sequence[int],
                   num_classes: int = 10, arch: Optional[Mapping[str, Any]] = None, examples: Sequence[str] = (),
                   about: str = "", overwrite: bool = False):
    """Makes ``module`` a model by ``name`` (``get``, ``TrainConfig(model=name)``, presets, and
    the command line from a module given to ``--import``). Returns ``module`` (so it also
    works as a class decorator: ``@register_model("mlp", input_shape=(28, 28, 1))``).

    Args:
      name: a fixed name (``"mlp"``), or a template whose ``{field}`` placeholders take
        positive ints passed to the module as that field (``"mlp_{width}"``;
        ``"mlp_{width}[_d{depth}]"`` with an optional part; ``{hidden*}``: a tuple).
      module: a Flax Linen module class (its fields are the keywords :func:`get` takes),
        or a function of keywords returning a module; it must take ``num_classes``.
      input_shape: the default input shape without the batch axis.
      num_classes: the default output width.
      arch: module fields every name of it fixes (besides a template's fields).
      examples: for a template, names :func:`names` lists (each must match it).
      about: for a template, a phrase shown in messages.
      overwrite: replace a model (or template) of that name.
    """
    if module is None:
        return lambda m: register_model(name, m, input_shape=input_shape, num_classes=num_classes, arch=arch,
                                        examples=examples, about=about, overwrite=overwrite)
    arch = dict(arch or {})
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_model: a model name is a non-empty string, got {name!r}")
    if "{" not in name:
        if re.search(r"[\[\]}]", name):
            raise ValueError(f"register_model: {name!r} has brackets but no {{placeholder}}")
        MODELS.register(name, ModelSpec(module, input_shape, num_classes, arch), overwrite=overwrite)
        return module
    fixed = ModelSpec(module, input_shape, num_classes, arch)  # checked now, not at the first use

    def resolve(**fields):
        return dataclasses.replace(fixed, arch={**fixed.arch, **fields})

    register_model_family(name, resolve, examples=examples, about=about, overwrite=overwrite)
    return module


def register_model_family(template: str, resolve: Callable[..., ModelSpec], *, examples: Sequence[str] = (),
                          about: str = "", overwrite: bool = False) -> ModelFamily:
    """Adds a family of names whose fields choose the module, not only its settings:
    ``resolve(**fields) -> ModelSpec`` (raising ``ValueError`` with the reason for values
    that are not a model). The built-in ResNets are one: ``resnet{depth}[_w{width}]`` is a
    CIFAR ResNet for depth 6n+2 and an ImageNet ResNet for depth 18, 34, 50, 101, 152.
    Each of ``examples`` must resolve."""
    family = ModelFamily(template, resolve, tuple(examples), about)
    for example in family.examples:
        fields = family.match(example)
        if fields is None:
            raise ValueError(f"register_model: the example {example!r} does not match the template {template!r}")
        family.resolve(**fields)
    FAMILIES.register(template, family, overwrite=overwrite)
    return family


def names() -> list[str]:
    """The model names, sorted: the fixed ones and the families' examples. :func:`get`
    also takes every other name of a family (:func:`families`)."""
    return sorted({*MODELS.names(), *(e for _, f in FAMILIES.items() for e in f.examples)})


def families() -> tuple[str, ...]:
    """The family templates, sorted, e.g. ``"resnet{depth}[_w{width}]"``."""
    return FAMILIES.names()


def spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` that ``name`` stands for; an unknown name (or a family's value
    that is not a model) is a :class:`~jaxticket.registry.UnknownNameError` naming the
    closest and all valid names.

    Example:
        >>> spec("resnet20_w64").arch, spec("vgg16").input_shape
        ({'depth': 20, 'width': 64}, (32, 32, 3))
    """
    found = MODELS.get(name, None)
    if found is not None:
        return found
    matches = [(t, f, fields) for t, f in FAMILIES.items() if (fields := f.match(name)) is not None]
    if not matches:
        raise MODELS.unknown(name, valid=names())
    if len(matches) > 1:
        raise ValueError(f"model {name!r} matches several families: {[t for t, _, _ in matches]}; "
                         "re-register one of them with a template that excludes the others")
    _, family, fields = matches[0]
    try:
        return family.resolve(**fields)
    except ValueError as e:
        raise MODELS.unknown(name, reason=str(e), valid=names()) from None


def _keywords(module: Callable) -> Optional[list[str]]:
    """The keywords ``module`` takes (None: any)."""
    if isinstance(module, type) and dataclasses.is_dataclass(module):
        return [f.name for f in dataclasses.fields(module) if f.name not in ("parent", "name")]
    params = inspect.signature(module).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params]


def get(name: str, num_classes: int | None = None, **kwargs: Any) -> nn.Module:
    """Returns the Flax Linen module called ``name``.

    Args:
      name: one of :func:`names`, or a name of a family (:func:`families`):
        ``lenet_{hidden*}`` (fully connected LeNet, e.g. ``lenet_300_100``),
        ``resnet{depth}[_w{width}]`` (depth 6n+2: CIFAR ResNet with stage widths W-2W-4W,
        default W = 16; depth 18/34/50/101/152: ImageNet ResNet, default W = 64),
        ``vgg{depth}``; or one you registered (:func:`register_model`).
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
      ValueError: unknown model name (:class:`~jaxticket.registry.UnknownNameError`:
        lists the valid names and suggests the closest), unknown initialiser name, or a
        keyword the model does not have.

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
    found = spec(name)
    takes = _keywords(found.module)
    if takes is not None:
        allowed = [f for f in takes if f not in found.arch and f != "num_classes"]
        bad = sorted(set(kwargs) - set(allowed))
        if bad:
            raise ValueError(
                f"Model {name!r} ({getattr(found.module, '__name__', found.module)}) does not take "
                f"{', '.join(map(repr, bad))}; valid keywords: num_classes, {', '.join(allowed)}."
            )
    if "kernel_init" in kwargs:
        initializers.kernel(kwargs["kernel_init"])  # validate at the boundary
    if "bn_init" in kwargs:
        initializers.bn_scale(kwargs["bn_init"])
    nc = found.num_classes if num_classes is None else int(num_classes)
    if nc < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    return found.module(**found.arch, num_classes=nc, **kwargs)


def input_shape(name: str) -> tuple[int, ...]:
    """Default input shape (no batch axis) for model ``name``: ``(H, W, C)`` for images.

    ``(28, 28, 1)`` for the LeNets (MNIST), ``(32, 32, 3)`` for the CIFAR models,
    ``(224, 224, 3)`` for the ImageNet ResNets.

    Example::

      >>> from jaxticket import models
      >>> models.input_shape("conv4")
      (32, 32, 3)
      >>> models.input_shape("resnet50")
      (224, 224, 3)
    """
    return spec(name).input_shape


# ----------------------------------------------------------------------------- the built-in models


def _resnet(depth: int, width: Optional[int] = None) -> ModelSpec:
    widths = {} if width is None else {"width": width}
    if depth in STAGES:
        kind, sizes = STAGES[depth]
        return ModelSpec(ResNet, IMAGENET_SHAPE, 1000, {"stage_sizes": sizes, "bottleneck": kind == "bottleneck",
                                                        **widths})
    if depth >= 8 and (depth - 2) % 6 == 0:
        return ModelSpec(CifarResNet, CIFAR_SHAPE, 10, {"depth": depth, **widths})
    raise ValueError(f"ResNet depth must be 6n+2 (CIFAR) or one of {sorted(STAGES)} (ImageNet)")


def _vgg(depth: int) -> ModelSpec:
    if depth not in VGG_PLANS:
        raise ValueError(f"VGG depth must be one of {sorted(VGG_PLANS)}")
    return ModelSpec(VGG, CIFAR_SHAPE, 10, {"plan": VGG_PLANS[depth]})


def _lenet(hidden: tuple) -> ModelSpec:
    return ModelSpec(LeNetFC, MNIST_SHAPE, 10, {"hidden": tuple(hidden)})


register_model("lenet5", LeNet5, input_shape=MNIST_SHAPE)
register_model("alexnet", AlexNet, input_shape=CIFAR_SHAPE)
for _plan in CONV_PLANS:
    register_model(_plan, ConvNet, input_shape=CIFAR_SHAPE, arch={"blocks": CONV_PLANS[_plan]})
register_model_family("lenet_{hidden*}", _lenet, examples=["lenet_300_100"],
                      about="fully connected LeNet with those hidden widths")
register_model_family("resnet{depth}[_w{width}]", _resnet, examples=[
    "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet20_w32", "resnet20_w64", "resnet56_w32",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"],
    about=f"CIFAR ResNet for depth = 6n+2, ImageNet ResNet for depth in {sorted(STAGES)}")
register_model_family("vgg{depth}", _vgg, examples=[f"vgg{d}" for d in sorted(VGG_PLANS)],
                      about=f"CIFAR VGG with BatchNorm, depth in {sorted(VGG_PLANS)}")


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
