"""Presets: every one builds and validates, and pins the papers' numbers.

Pruner configs are checked by building them with ``pruning.from_config`` and applying one
level to random weights with the model's parameter tree (its abstract params' paths and
ranks): the per-layer densities must be the papers' rates (LeNet hidden 80% / output 90%,
Conv-6 conv 85%, ...).
"""

import jax
import numpy as np
import pytest

from jaxticket import configs, data, lottery, masks, models, pruning, train

REQUIRED = {
    "lenet_300_100_mnist", "lenet_300_100_mnist_openlth", "conv2_cifar10", "conv4_cifar10",
    "conv6_cifar10", "resnet20_cifar10", "resnet20_cifar10_lowlr", "resnet20_cifar10_warmup",
    "vgg16_cifar10", "vgg16_cifar10_lowlr", "vgg16_cifar10_warmup", "resnet50_imagenet", "demo",
}


def _stand_in(abstract):
    """Random weights with the model's tree and leaf paths (the names pruning rules select
    on) but small leaves of the same rank: kernels hold 2,000 entries, so each per-layer
    rate comes out exact, and the test does not pay for pruning millions of weights."""
    leaves = jax.tree.leaves(abstract)
    keys = jax.random.split(jax.random.key(0), len(leaves))
    shapes = [(1,) * (x.ndim - 2) + (40, 50) if x.ndim >= 2 else (50,) for x in leaves]
    return jax.tree.unflatten(jax.tree.structure(abstract),
                              [jax.random.normal(k, s) for k, s in zip(keys, shapes)])


def _one_level_densities(config: lottery.LotteryConfig):
    """Per-leaf density (``None`` for unprunable leaves) and overall density after one
    pruning level of the preset's pruner, on stand-in weights of its model."""
    params = _stand_in(train.task_from_config(config.train, steps_per_epoch=1).abstract_params())
    mask = masks.ones_like(params, config.imp.prunable)
    new = pruning.from_config(config.pruner)(params, mask, jax.random.key(1))
    out = {}
    for path, keep, flag in zip(masks.leaf_paths(params), new.leaves(), new.prunable):
        out[path] = float(np.mean(np.asarray(keep))) if flag else None
    return out, float(masks.density(new))


def _prunable(config) -> set:
    """The leaf paths the preset may prune."""
    mask = masks.ones_like(train.task_from_config(config.train, steps_per_epoch=1).abstract_params(), config.imp.prunable)
    return {p for p, f in zip(masks.leaf_paths(mask.keep), mask.prunable) if f}


def test_registry_lists_the_required_presets():
    assert REQUIRED <= set(configs.names())
    assert configs.names() == sorted(configs.names())


@pytest.mark.parametrize("name", configs.names())
def test_every_preset_builds_validates_and_is_documented(name):
    config = configs.get(name)
    assert isinstance(config, lottery.LotteryConfig)
    lottery.check_config(config)  # also builds the pruner
    train.validate_config(config.train)
    data.get_spec(config.train.dataset)
    models.get(config.train.model, num_classes=config.train.num_classes)
    text = configs.describe(name)
    assert text.startswith(name) and "Source:" in text and "Expected:" in text
    assert configs.lookup(name).summary
    # plain data: round-trips through its dict
    assert lottery.LotteryConfig.from_dict(config.to_dict()) == config
    assert configs.get(name) == config  # fresh and deterministic


def test_unknown_preset_names_the_closest_and_all():
    with pytest.raises(ValueError) as e:
        configs.get("lenet_300_100_mnst")
    msg = str(e.value)
    assert "'lenet_300_100_mnist'" in msg and "conv6_cifar10" in msg and "demo" in msg


def test_lenet_frankle_carbin():
    c = configs.get("lenet_300_100_mnist")
    t, f = c.train, c.imp.fit
    assert (t.model, t.dataset, t.optimizer, t.lr, f.batch_size, f.steps, f.eval_every) == (
        "lenet_300_100", "mnist", "adam", 1.2e-3, 60, 50_000, 100)
    assert (c.train.validation_size, c.imp.rewind_step, c.imp.reset, c.imp.levels) == (5000, 0, "rewind", 20)
    dens, _ = _one_level_densities(c)
    assert dens["output/kernel"] == pytest.approx(0.9, abs=1e-6)
    assert dens["fc1/kernel"] == pytest.approx(0.8, abs=1e-6)
    assert dens["fc2/kernel"] == pytest.approx(0.8, abs=1e-6)
    assert dens["fc1/bias"] is None


def test_lenet_openlth():
    c = configs.get("lenet_300_100_mnist_openlth")
    t, f = c.train, c.imp.fit
    assert (t.optimizer, t.lr, t.momentum, f.batch_size, f.steps) == ("sgd", 0.1, 0.0, 128, 40 * 468)
    assert c.train.validation_size == 0
    dens, overall = _one_level_densities(c)
    assert dens["output/kernel"] is None  # open_lth ignores the output layer
    assert overall == pytest.approx(0.8, abs=1e-5)  # global 20%


@pytest.mark.parametrize("name,lr,steps,conv_rate", [
    ("conv2_cifar10", 2e-4, 20_000, 0.10),
    ("conv4_cifar10", 3e-4, 25_000, 0.10),
    ("conv6_cifar10", 3e-4, 30_000, 0.15),
])
def test_conv_frankle_carbin(name, lr, steps, conv_rate):
    c = configs.get(name)
    t, f = c.train, c.imp.fit
    assert (t.model, t.dataset, t.optimizer, t.lr, f.batch_size, f.steps) == (
        name.split("_")[0], "cifar10", "adam", lr, 60, steps)
    assert (c.train.validation_size, c.imp.rewind_step, f.augment) == (5000, 0, False)
    rates = {sel: rule["fraction"] for sel, rule in c.pruner["rules"]}
    assert sorted(rates.values()) == sorted([0.1, 0.2, conv_rate])
    assert c.pruner == configs.conv.conv_pruner(conv_rate)


def test_conv6_per_layer_densities_after_one_level():
    dens, _ = _one_level_densities(configs.get("conv6_cifar10"))
    convs = [p for p in dens if p.startswith("conv") and p.endswith("kernel")]
    fcs = [p for p in dens if p.startswith("fc") and p.endswith("kernel")]
    assert len(convs) == 6 and len(fcs) == 2
    for p in convs:
        assert dens[p] == pytest.approx(0.85, abs=1e-6), p
    for p in fcs:
        assert dens[p] == pytest.approx(0.8, abs=1e-6), p
    assert dens["output/kernel"] == pytest.approx(0.9, abs=1e-6)
    assert all(dens[p] is None for p in dens if p.endswith("bias"))


@pytest.mark.parametrize("name,lr,warmup,rewind", [
    ("resnet20_cifar10", 0.1, 0, 0),
    ("resnet20_cifar10_lowlr", 0.01, 0, 0),
    ("resnet20_cifar10_warmup", 0.03, 20_000, 0),
    ("resnet20_cifar10_rewind2000", 0.1, 0, 2000),
    ("vgg16_cifar10", 0.1, 0, 0),
    ("vgg16_cifar10_lowlr", 0.01, 0, 0),
    ("vgg16_cifar10_warmup", 0.1, 10_000, 0),
    ("vgg16_cifar10_rewind2000", 0.1, 0, 2000),
])
def test_cifar_open_lth(name, lr, warmup, rewind):
    c = configs.get(name)
    t, f = c.train, c.imp.fit
    assert (t.optimizer, t.lr, t.momentum, t.weight_decay, f.batch_size) == ("sgd", lr, 0.9, 1e-4, 128)
    assert (f.steps, t.milestones, t.milestone_unit, t.gamma) == (160 * 390, (80, 120), "epochs", 0.1)
    assert (t.warmup_steps, c.imp.rewind_step, f.augment, c.train.validation_size) == (warmup, rewind, True, 0)
    assert c.pruner == {"method": "magnitude", "fraction": 0.2, "scope": "global"}
    # the schedule: 10x drops at epochs 80 and 120 of 390 steps
    sched = train.make_schedule(t, steps_per_epoch=390)
    assert float(sched(80 * 390 + 1)) == pytest.approx(lr * 0.1, rel=1e-5)
    assert float(sched(120 * 390 + 1)) == pytest.approx(lr * 0.01, rel=1e-5)


def test_resnet20_global_pruning_after_one_level():
    dens, overall = _one_level_densities(configs.get("resnet20_cifar10"))
    assert overall == pytest.approx(0.8, abs=1e-6)
    assert dens["output/kernel"] is not None and dens["stage2_block1/shortcut_conv/kernel"] is not None
    kernels = [d for p, d in dens.items() if d is not None]
    assert len({round(d, 3) for d in kernels}) > 1  # global: per-layer rates differ


def test_vgg16_keeps_its_output_layer():
    prunable = _prunable(configs.get("vgg16_cifar10"))
    assert "output/kernel" not in prunable
    assert {f"conv{i}/kernel" for i in range(1, 14)} <= prunable


def test_resnet50_imagenet_open_lth():
    c = configs.get("resnet50_imagenet")
    t, f = c.train, c.imp.fit
    assert (t.model, t.dataset, t.lr, t.momentum, t.weight_decay, f.batch_size) == (
        "resnet50", "imagenet2012", 0.4, 0.9, 1e-4, 1024)
    epoch = data.get_spec(t.dataset).split_sizes["train"] // f.batch_size  # ImageNet's 1,281,167 images
    assert epoch == 1251
    assert (f.steps, t.warmup_steps, t.milestones, t.milestone_unit) == (90 * epoch, 5 * epoch, (30, 60, 80), "epochs")
    assert data.get_spec(t.dataset).streaming  # streamed from the host


def test_demo_is_offline_and_small():
    c = configs.get("demo")
    t, f = c.train, c.imp.fit
    assert (t.model, t.dataset, t.input_shape) == ("lenet_300_100", "digits", (8, 8, 1))
    assert data.get_spec("digits").source == "embedded"
    assert c.imp.levels >= 4 and f.steps <= 500 and c.train.validation_size > 0
    assert c.pruner == {"method": "magnitude", "fraction": 0.5, "scope": "global"}
