"""Tests for jaxticket.models: shapes, exact weight counts, initialisers, BatchNorm, naming.

Big models are only ever traced (``jax.eval_shape``); real forward passes run on the
small ones with batch 2. Real inits use the "rbg" PRNG: on CPU it compiles in less than
half the time of the default threefry (init time here is almost all XLA compilation of
one random-number kernel per weight shape); the default key impl is covered by
``test_determinism``.
"""

from __future__ import annotations

import functools
import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxticket import models, train
from jaxticket.registry import UnknownNameError

# name -> (weights = conv + dense kernels, all params, default num_classes).
# Weights are derived by hand below; "all params" adds biases and BN scale/shift and is
# checked against the reference implementations' published totals where one exists.
EXPECTED = {
    # Frankle & Carbin 2019, Fig. 2: 784*300 + 300*100 + 100*10 = 266,200 weights;
    # biases 300 + 100 + 10 = 410.
    "lenet_300_100": (266_200, 266_610, 10),
    # PyTorch pruning tutorial LeNet (Paganini & Forde): 3*3*1*6 + 3*3*6*16 + 400*120
    # + 120*84 + 84*10 = 54 + 864 + 48,000 + 10,080 + 840; biases 6+16+120+84+10 = 236.
    "lenet5": (59_838, 60_074, 10),
    # Frankle & Carbin Fig. 2 (4.3M / 2.4M / 2.26M): conv kernels 3*3*3*64 = 1,728,
    # 3*3*64*64 = 36,864 [+ 73,728 + 147,456 [+ 294,912 + 589,824]]; fc1 from the
    # flattened 16*16*64 / 8*8*128 / 4*4*256 map to 256; fc2 256*256; output 256*10.
    "conv2": (4_300_992, 4_301_642, 10),  # 38,592 + 4,194,304 + 65,536 + 2,560
    "conv4": (2_425_024, 2_425_930, 10),  # 259,776 + 2,097,152 + 65,536 + 2,560
    "conv6": (2_261_184, 2_262_602, 10),  # 1,144,512 + 1,048,576 + 65,536 + 2,560
    # open_lth cifar_vgg: 3x3 conv kernels 9*cin*cout over the plan + output 512*10.
    # Param totals are open_lth's test_cifar_vgg values (conv bias + BN scale/shift).
    "vgg11": (9_222_848, 9_231_114, 10),  # 9,217,728 conv + 5,120
    "vgg13": (9_407_168, 9_416_010, 10),  # 9,402,048 conv + 5,120
    "vgg16": (14_715_584, 14_728_266, 10),  # 14,710,464 conv + 5,120 ("14.7M")
    "vgg19": (20_024_000, 20_040_522, 10),  # 20,018,880 conv + 5,120 ("20.0M")
    # open_lth cifar_resnet, W=16, n blocks per stage: stem 3*3*3*16 = 432;
    # stage1 2n*2,304; stage2 4,608 + 512 (1x1 shortcut) + (2n-1)*9,216;
    # stage3 18,432 + 2,048 + (2n-1)*36,864; output 64*10 = 640.
    # Param totals for 20 and 110 are open_lth's test_cifar_resnet values.
    "resnet20": (270_896, 272_474, 10),  # n=3: 432 + 13,824 + 51,200 + 204,800 + 640
    "resnet32": (464_432, 466_906, 10),  # n=5
    "resnet44": (657_968, 661_338, 10),  # n=7
    "resnet56": (851_504, 855_770, 10),  # n=9
    "resnet110": (1_722_416, 1_730_714, 10),  # n=18
    # Width W: every block conv scales by (W/16)^2, stem and output by W/16.
    # W=32: 269,824*4 + 864 + 1,280; W=64: 269,824*16 + 1,728 + 2,560.
    "resnet20_w32": (1_081_440, 1_084_586, 10),
    "resnet20_w64": (4_321_472, 4_327_754, 10),
    "resnet56_w32": (3_403_872, 3_412_394, 10),  # (851,504-1,072)*4 + 864 + 1,280
    # torchvision ImageNet ResNets, 1000 classes; param totals are torchvision's
    # published counts. ResNet-18 weights: 9,408 stem + 147,456 + 524,288 + 2,097,152
    # + 8,388,608 + 512,000 output. ResNet-50: 9,408 + 212,992 + 1,212,416 + 7,077,888
    # + 14,942,208 + 2,048,000 output.
    "resnet18": (11_678_912, 11_689_512, 1000),
    "resnet34": (21_779_648, 21_797_672, 1000),
    "resnet50": (25_502_912, 25_557_032, 1000),  # "25.5M parameters"
    "resnet101": (44_442_816, 44_549_160, 1000),
    "resnet152": (60_040_384, 60_192_808, 1000),
    # bearpaw/pytorch-classification cifar AlexNet (its README: 2.47M params):
    # 11*11*3*64 + 5*5*64*192 + 3*3*192*384 + 3*3*384*256 + 3*3*256*256 + 256*10.
    "alexnet": (2_471_104, 2_472_266, 10),
}

# Parametric names that names() does not list but get() accepts.
EXTRA = {
    # open_lth test_cifar_resnet: cifar_resnet_14_128 has 11,093,130 parameters.
    "resnet14_w128": (11_084_160, 11_093_130, 10),
    # mnist_lenet_100: 784*100 + 100*10.
    "lenet_100": (79_400, 79_510, 10),
}

SMALL = ["lenet_300_100", "lenet5", "conv2", "resnet20"]  # real init + forward (eager init
# compiles every op once on CPU; larger models would make the file slow)


def _key(seed=0, impl="rbg"):
    return jax.random.key(seed, impl=impl)


def _abstract_init(model, shape, batch=2):
    x = jax.ShapeDtypeStruct((batch, *shape), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    return variables, x


@functools.lru_cache(maxsize=None)
def _abstract(name):
    """(model, abstract variables, abstract input [2, *input_shape]) of a registry model."""
    model = models.get(name)
    return (model, *_abstract_init(model, models.input_shape(name)))


def _init(name, key=0, batch=2, impl="rbg", **kwargs):
    model = models.get(name, **kwargs)
    x = jnp.ones((batch, *models.input_shape(name)), jnp.float32)
    return model, model.init(_key(key, impl), x, train=False), x


def _paths(tree):
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(str(k.key) for k in path): leaf for path, leaf in flat}


def test_names_sorted_and_all_pinned():
    assert models.names() == sorted(models.names())
    assert set(models.names()) == set(EXPECTED)
    for required in ["lenet_300_100", "lenet5", "conv2", "conv4", "conv6", "vgg11", "vgg16",
                     "vgg19", "resnet20", "resnet32", "resnet56", "resnet110", "resnet20_w64",
                     "resnet18", "resnet50", "alexnet"]:
        assert required in models.names()


@pytest.mark.parametrize("name", sorted(EXPECTED) + sorted(EXTRA))
def test_weight_counts_and_output_shape(name):
    weights, params, classes = {**EXPECTED, **EXTRA}[name]
    model, variables, x = _abstract(name)
    assert models.count_weights(variables["params"]) == weights
    assert models.count_params(variables["params"]) == params
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    assert out.shape == (2, classes)
    assert out.dtype == jnp.float32
    has_bn = name.startswith(("vgg", "resnet"))
    assert ("batch_stats" in variables) == has_bn


@pytest.mark.parametrize("name", SMALL)
def test_forward_small_models(name):
    model, variables, x = _init(name)
    logits = model.apply(variables, x, train=False)
    chex.assert_shape(logits, (2, 10))
    chex.assert_tree_all_finite(logits)


def test_input_shapes():
    assert models.input_shape("lenet_300_100") == (28, 28, 1)
    assert models.input_shape("lenet5") == (28, 28, 1)
    for name in ["conv2", "conv6", "vgg19", "resnet20", "resnet56_w32", "alexnet"]:
        assert models.input_shape(name) == (32, 32, 3)
    for name in ["resnet18", "resnet50"]:
        assert models.input_shape(name) == (224, 224, 3)


def test_num_classes():
    variables, x = _abstract_init(models.get("resnet50", num_classes=10), (224, 224, 3), 1)
    assert variables["params"]["output"]["kernel"].shape == (2048, 10)
    model = models.get("lenet5", num_classes=100)
    variables, x = _abstract_init(model, (28, 28, 1))
    assert jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x).shape == (2, 100)


def test_lenet_300_100_flattens_any_input():
    model, variables, x = _init("lenet_300_100")
    a = model.apply(variables, x, train=False)
    b = model.apply(variables, x.reshape(2, 784), train=False)
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_unknown_name_lists_valid_names_and_suggests():
    with pytest.raises(ValueError) as e:
        models.get("resnt20")
    msg = str(e.value)
    for name in models.names():
        assert name in msg
    assert msg.startswith("unknown model 'resnt20' (did you mean 'resnet20'?); valid models: alexnet, conv2, ")
    assert "also the families lenet_{hidden*} (fully connected LeNet" in msg and "register_model" in msg
    with pytest.raises(UnknownNameError, match=r"^unknown model 'resnet21': ResNet depth must be 6n\+2 \(CIFAR\) "
                       r"or one of \[18, 34, 50, 101, 152\] \(ImageNet\) \(did you mean 'resnet32'\?\); valid models"):
        models.get("resnet21")
    with pytest.raises(UnknownNameError, match=r"^unknown model 'vgg12': VGG depth must be one of \[11, 13, 16, 19\]"):
        models.get("vgg12")
    with pytest.raises(UnknownNameError, match="valid models: "):
        models.input_shape("mlp")
    with pytest.raises(UnknownNameError, match="valid models: "):
        models.get("lenet_0")  # a family's placeholder takes positive ints only


def test_bad_keywords_and_init_names():
    with pytest.raises(ValueError, match="bn_init"):
        models.get("lenet5", bn_init="uniform")  # no BatchNorm in LeNet-5
    with pytest.raises(ValueError, match="depth"):
        models.get("resnet20", depth=32)  # fixed by the name
    with pytest.raises(ValueError) as e:
        models.get("conv2", kernel_init="xavier_normal")
    for valid in models.KERNEL_INITS:
        assert valid in str(e.value)
    with pytest.raises(ValueError) as e:
        models.get("resnet20", bn_init="random")
    for valid in models.BN_INITS:
        assert valid in str(e.value)


def test_default_initialisers_per_family():
    assert models.get("lenet_300_100").kernel_init == "glorot_normal"
    assert models.get("conv6").kernel_init == "glorot_normal"
    assert models.get("alexnet").kernel_init == "glorot_normal"
    for name in ["vgg16", "resnet20", "resnet50"]:
        model = models.get(name)
        assert (model.kernel_init, model.bn_init) == ("kaiming_normal", "uniform")


@pytest.mark.parametrize(
    "init, theoretical_std",
    [  # fc1 of LeNet-300-100: kernel (784, 300), 235,200 samples.
        ("glorot_normal", np.sqrt(2 / (784 + 300))),  # 0.0430
        ("kaiming_normal", np.sqrt(2 / 784)),  # 0.0505
        ("kaiming_uniform", np.sqrt(6 / 784) / np.sqrt(3)),  # U(-b, b) has std b/sqrt(3)
        ("lecun_normal", np.sqrt(1 / 784)),
        ("binary", np.sqrt(2 / 784)),
    ],
)
def test_kernel_init_std(init, theoretical_std):
    _, variables, _ = _init("lenet_300_100", kernel_init=init)
    w = np.asarray(variables["params"]["fc1"]["kernel"])
    assert abs(w.mean()) < 1e-3
    # std of the sample estimate is ~ std / sqrt(2 * 235,200) ~ 0.15%; allow 2%.
    assert w.std() == pytest.approx(theoretical_std, rel=0.02)
    assert not np.any(variables["params"]["fc1"]["bias"])  # biases start at zero


def test_init_selection_changes_distribution_conv_kernel():
    # conv2 of Conv-2: kernel (3, 3, 64, 64), fan_in = fan_out = 576.
    stds = {}
    for init in ["glorot_normal", "kaiming_normal"]:
        _, variables, _ = _init("conv2", kernel_init=init)
        stds[init] = float(np.std(variables["params"]["conv2"]["kernel"]))
    assert stds["glorot_normal"] == pytest.approx(np.sqrt(2 / 1152), rel=0.03)
    assert stds["kaiming_normal"] == pytest.approx(np.sqrt(2 / 576), rel=0.03)


def test_kernel_init_callable_and_orthogonal():
    _, variables, _ = _init("lenet_300_100", kernel_init=jax.nn.initializers.zeros)
    assert all(not np.any(k) for p, k in _paths(variables["params"]).items() if p.endswith("kernel"))
    _, variables, _ = _init("lenet_300_100", kernel_init="orthogonal")
    w = np.asarray(variables["params"]["fc2"]["kernel"])  # (300, 100): orthonormal columns
    np.testing.assert_allclose(w.T @ w, np.eye(100), atol=1e-4)


@pytest.mark.parametrize("name", ["resnet20", "vgg_tiny"])
def test_bn_gamma_uniform_for_kaiming_families(name):
    if name == "vgg_tiny":  # the VGG family's defaults on a tiny plan, to keep this fast
        model = models.VGG(plan=(64, "M", 128))
        variables = model.init(_key(), jnp.ones((1, 8, 8, 3)), train=False)
        assert (model.kernel_init, model.bn_init) == ("kaiming_normal", "uniform")
    else:
        _, variables, _ = _init(name)
    bn = {p: v for p, v in _paths(variables["params"]).items() if re.search(r"bn[^/]*/", p)}
    scales = np.concatenate([np.ravel(v) for p, v in bn.items() if p.endswith("/scale")])
    shifts = np.concatenate([np.ravel(v) for p, v in bn.items() if p.endswith("/bias")])
    assert scales.min() >= 0.0 and scales.max() < 1.0
    assert 0.4 < scales.mean() < 0.6 and scales.std() > 0.2  # U[0, 1): mean 1/2, std 0.29
    assert not np.any(shifts)
    _, variables, _ = _init("resnet20", bn_init="ones")
    scales = [v for p, v in _paths(variables["params"]).items() if p.endswith("/scale")]
    assert scales and all(np.all(v == 1.0) for v in scales)


def test_train_updates_batch_stats():
    model, variables, x = _init("resnet20")
    x = jax.random.normal(_key(1), x.shape)
    step = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    logits, updates = step(variables, x)
    chex.assert_shape(logits, (2, 10))
    old, new = _paths(variables["batch_stats"]), _paths(updates["batch_stats"])
    assert old.keys() == new.keys()
    assert "stem_bn/mean" in new and "stage3_block1/shortcut_bn/var" in new
    for p in old:
        assert not np.allclose(old[p], new[p]), p
    # Eval mode reads the running statistics and leaves them alone.
    out = model.apply({**variables, **updates}, x, train=False)
    chex.assert_tree_all_finite(out)


def test_determinism():
    # The default (threefry) key impl users get from jax.random.key(seed).
    _, a, _ = _init("lenet_300_100", key=3, impl=None)
    _, b, _ = _init("lenet_300_100", key=3, impl=None)
    _, c, _ = _init("lenet_300_100", key=4, impl=None)
    chex.assert_trees_all_equal(a, b)
    assert not np.allclose(a["params"]["fc1"]["kernel"], c["params"]["fc1"]["kernel"])
    _, a, _ = _init("resnet20", key=3)
    _, b, _ = _init("resnet20", key=3)
    chex.assert_trees_all_equal(a, b)


def test_vmap_over_init_keys():
    # Seeds as a leading axis: one independent init per key.
    model = models.get("lenet_300_100")
    x = jnp.zeros((1, 28, 28, 1))
    keys = jax.random.split(_key(), 3)
    variables = jax.vmap(lambda k: model.init(k, x, train=False))(keys)
    chex.assert_shape(variables["params"]["fc1"]["kernel"], (3, 784, 300))
    k = np.asarray(variables["params"]["fc1"]["kernel"])
    assert not np.allclose(k[0], k[1])


def test_dropout():
    model, variables, x = _init("lenet_300_100", dropout_rate=0.5)
    a = model.apply(variables, x, train=False)
    b = model.apply(variables, x, train=False)
    np.testing.assert_array_equal(a, b)
    c = model.apply(variables, x, train=True, rngs={"dropout": _key()})
    assert not np.allclose(a, c)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_param_naming(name):
    _, variables, _ = _abstract(name)
    paths = _paths(variables["params"])
    assert "output/kernel" in paths and "output/bias" in paths
    for path, leaf in paths.items():
        last = path.rsplit("/", 1)[-1]
        layer = path.rsplit("/", 2)[-2]
        if len(leaf.shape) >= 2:  # kernels, and only kernels, are >= 2-D
            assert last == "kernel", path
            assert re.fullmatch(r"(conv\d+|fc\d+|output|stem_conv|shortcut_conv)", layer), path
        else:
            assert last in ("bias", "scale"), path
            if last == "scale":
                assert re.fullmatch(r"(bn\d+|stem_bn|shortcut_bn)", layer), path
    if name.startswith("resnet"):
        assert "stem_conv/kernel" in paths
        assert "stage2_block1/shortcut_conv/kernel" in paths
        assert "stage1_block1/conv1/kernel" in paths
        assert "stage1_block1/shortcut_conv/kernel" not in paths or name in (
            "resnet50", "resnet101", "resnet152")  # bottleneck widens stage 1


def test_kernel_layouts():
    variables, _ = _abstract_init(models.get("lenet5"), (28, 28, 1))
    p = variables["params"]
    assert p["conv1"]["kernel"].shape == (3, 3, 1, 6)  # (h, w, in, out)
    assert p["conv2"]["kernel"].shape == (3, 3, 6, 16)
    assert p["fc1"]["kernel"].shape == (400, 120)  # (in, out)
    assert p["output"]["kernel"].shape == (84, 10)
    variables, _ = _abstract_init(models.get("resnet18"), (224, 224, 3), 1)
    assert variables["params"]["stem_conv"]["kernel"].shape == (7, 7, 3, 64)
    assert variables["params"]["stage4_block1"]["shortcut_conv"]["kernel"].shape == (1, 1, 256, 512)


def test_resnet_width_parsing():
    assert models.get("resnet20_w64").width == 64
    assert models.get("resnet20").width == 16
    assert models.get("resnet110").depth == 110
    assert models.get("resnet50_w32").width == 32  # ImageNet ResNet-50 at half width
    variables, _ = _abstract_init(models.get("resnet20_w64"), (32, 32, 3))
    assert variables["params"]["stage3_block1"]["conv1"]["kernel"].shape == (3, 3, 128, 256)


def test_count_helpers():
    tree = {"a": {"kernel": jnp.zeros((3, 4)), "bias": jnp.zeros(4)},
            "b": jax.ShapeDtypeStruct((2, 2, 3, 5), jnp.float32), "s": jnp.zeros(())}
    assert models.count_weights(tree) == 12 + 60
    assert models.count_params(tree) == 12 + 4 + 60 + 1


# ----------------------------------------------------------------------------- your own models


class Tiny(nn.Module):
    """A model of one's own: ``depth`` dense layers of ``width`` then ``output``."""

    width: int = 8
    depth: int = 1
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
        x = x.reshape(x.shape[0], -1)
        for i in range(self.depth):
            x = nn.relu(nn.Dense(self.width, name=f"fc{i + 1}")(x))
        return nn.Dense(self.num_classes, name="output")(x)


@pytest.fixture
def registries():
    """Leaves models.MODELS and models.FAMILIES as they were."""
    before = (dict(models.MODELS.items()), dict(models.FAMILIES.items()))
    yield
    for registry, entries in zip((models.MODELS, models.FAMILIES), before):
        for name in registry.names():
            if name not in entries:
                registry.pop(name)
        for name, obj in entries.items():
            registry[name] = obj


def test_register_a_fixed_name_and_a_family(registries):
    assert models.register_model("tiny", Tiny, input_shape=(4, 4, 1), num_classes=3) is Tiny
    assert models.get("tiny").num_classes == 3 and models.input_shape("tiny") == (4, 4, 1) and "tiny" in models.names()
    models.register_model("tiny_{width}[_d{depth}]", Tiny, input_shape=(6,), examples=["tiny_4_d2"], about="tiny MLPs")
    model = models.get("tiny_16_d3", num_classes=5)
    assert (model.width, model.depth, model.num_classes) == (16, 3, 5) and models.get("tiny_16").depth == 1
    assert "tiny_4_d2" in models.names() and "tiny_{width}[_d{depth}]" in models.families()
    assert models.spec("tiny_16_d3") == models.ModelSpec(Tiny, (6,), 10, {"width": 16, "depth": 3})
    with pytest.raises(ValueError, match=r"Model 'tiny_16' \(Tiny\) does not take 'width'"):
        models.get("tiny_16", width=3)  # fixed by the name
    with pytest.raises(UnknownNameError, match=r"also the families .*tiny_\{width\}\[_d\{depth\}\] \(tiny MLPs\)"):
        models.get("tiny_x")


def test_a_registered_model_is_a_model_name_everywhere(registries):
    @models.register_model("tiny_multi_{hidden*}", input_shape=(2, 3, 1))
    class Multi(nn.Module):
        hidden: tuple = (4,)
        num_classes: int = 10

        @nn.compact
        def __call__(self, x, train=False):
            x = x.reshape(x.shape[0], -1)
            for i, h in enumerate(self.hidden):
                x = nn.relu(nn.Dense(h, name=f"fc{i + 1}")(x))
            return nn.Dense(self.num_classes, name="output")(x)

    task = train.task_from_config(train.TrainConfig(model="tiny_multi_5_7"))
    assert task.input_shape == (2, 3, 1) and task.model.hidden == (5, 7)
    params = task.abstract_params()
    assert params["fc2"]["kernel"].shape == (5, 7) and params["output"]["kernel"].shape == (7, 10)


def test_registration_errors_are_clear(registries):
    with pytest.raises(ValueError, match="registered already; pass overwrite=True"):
        models.register_model("lenet5", Tiny, input_shape=(28, 28, 1))
    models.register_model("lenet5", Tiny, input_shape=(28, 28, 1), overwrite=True)
    assert isinstance(models.get("lenet5"), Tiny)
    with pytest.raises(ValueError, match="input_shape must be a tuple of positive ints"):
        models.register_model("tiny", Tiny, input_shape=(0, 4))
    with pytest.raises(ValueError, match="unbalanced"):
        models.register_model("tiny_{width}[_d{depth}", Tiny, input_shape=(4,))
    with pytest.raises(ValueError, match="a placeholder is"):
        models.register_model("tiny_{width}_{width}", Tiny, input_shape=(4,))
    with pytest.raises(ValueError, match="does not match the template"):
        models.register_model("tiny_{width}", Tiny, input_shape=(4,), examples=["tiny"])
    models.register_model("vgg{depth}_tiny", Tiny, input_shape=(4,))  # no overlap: vgg16_tiny is not vgg{depth}
    assert isinstance(models.get("vgg16_tiny"), Tiny) and isinstance(models.get("vgg16"), models.VGG)
    models.register_model("lenet_{width}_x", Tiny, input_shape=(4,), arch={"depth": 2})
    assert models.get("lenet_5_x").depth == 2
    models.register_model("tiny{width}", Tiny, input_shape=(4,))
    models.register_model("tiny{depth}", Tiny, input_shape=(4,))
    with pytest.raises(ValueError, match=r"matches several families: \['tiny\{depth\}', 'tiny\{width\}'\]"):
        models.get("tiny3")
