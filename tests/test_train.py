"""Tests of jaxticket.train: masking, optimizers, schedules, fit, rewind, NaN, seeds axis."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxticket import masks, train
from jaxticket.data import ArrayDataset

N = 256


def toy_dataset(n=N, shape=(8, 8, 1), seed=0):
    """Random uint8 images; the label is the brightest of the first 4 pixels (learnable)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    labels = images.reshape(n, -1)[:, :4].argmax(1).astype(np.int32)
    return ArrayDataset(jnp.asarray(images), jnp.asarray(labels), "mnist", 10,
                        (0.5,) * shape[-1], (0.25,) * shape[-1])


DS = toy_dataset()
BASE = train.TrainConfig(model="lenet_32_16", input_shape=(8, 8, 1), lr=0.05, momentum=0.9,
                         batch_size=16, steps=40, eval_batch_size=48, chunk_size=8)


def same(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def random_mask(params, density=0.5, seed=1):
    mask = masks.ones_like(params)
    keys = jax.random.split(jax.random.key(seed), len(mask.leaves()))
    leaves = [jax.random.bernoulli(k, density, np.shape(l)) if flag else l
              for k, l, flag in zip(keys, mask.leaves(), mask.prunable)]
    return mask.replace(keep=jax.tree.unflatten(jax.tree.structure(mask.keep), leaves))


def params_shaped_subtrees(opt_state, params):
    """The params-shaped trees in an optax state (momentum trace, Adam mu/nu)."""
    target = jax.tree.structure(params)
    found = []

    def walk(node):
        if jax.tree.structure(node) == target:
            found.append(node)
        elif isinstance(node, (tuple, list)):
            for child in node:
                walk(child)

    walk(opt_state)
    return found


# --------------------------------------------------------------------------- masking


@pytest.mark.parametrize("opt", [
    dict(optimizer="sgd", momentum=0.9, nesterov=True, weight_decay=5e-4),
    dict(optimizer="adam", lr=1e-3, weight_decay=1e-4),
])
def test_pruned_weights_and_moments_stay_exactly_zero(opt):
    config = BASE.replace(steps=30, **opt)
    params0 = train.init_state(config).params
    mask = random_mask(params0)
    state = train.init_state(config, mask=mask)
    out = train.fit(config, state, DS, progress=False).state
    moments = params_shaped_subtrees(out.opt_state, out.params)
    assert len(moments) == (2 if opt["optimizer"] == "adam" else 1)
    for tree in [out.params, *moments]:
        for leaf, keep, flag in zip(jax.tree.leaves(tree), mask.leaves(), mask.prunable):
            leaf, keep = np.asarray(leaf), np.asarray(keep)
            if flag:
                assert np.all(leaf[~keep] == 0.0)
                assert np.any(leaf[keep] != 0.0)  # the survivors did train
    assert float(masks.density(masks.from_tree(jax.tree.map(lambda w: w != 0, out.params)))) \
        == pytest.approx(float(masks.density(mask)))


def test_dense_state_has_no_mask_and_trains():
    state = train.init_state(BASE, mask=None)
    assert state.mask is None
    out = train.fit(BASE, state, DS, steps=5, progress=False).state
    assert int(out.step) == 5


# --------------------------------------------------------------------------- optimizers


def test_sgd_matches_pytorch_formula():
    """PyTorch SGD: g += wd*w; buf = m*buf + g; g = g + m*buf (nesterov); w -= lr*g."""
    config = BASE.replace(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    tx = train.make_optimizer(config)
    w = jnp.array([1.0, -2.0])
    state = tx.init(w)
    buf, w_ref = np.zeros(2), np.array([1.0, -2.0])
    for g in ([0.5, 0.25], [-1.0, 2.0], [0.1, 0.0]):
        upd, state = tx.update(jnp.array(g), state, w)
        w = optax.apply_updates(w, upd)
        gr = np.array(g) + 0.01 * w_ref
        buf = 0.9 * buf + gr
        w_ref = w_ref - 0.1 * (gr + 0.9 * buf)
    np.testing.assert_allclose(np.asarray(w), w_ref, rtol=1e-6)


def test_adam_coupled_weight_decay():
    config = BASE.replace(optimizer="adam", lr=0.01, momentum=0.0, weight_decay=0.1)
    tx = train.make_optimizer(config)
    w = jnp.array([1.0])
    upd, _ = tx.update(jnp.array([0.0]), tx.init(w), w)
    # first Adam step moves by ~lr * sign(g + wd*w)
    np.testing.assert_allclose(np.asarray(upd), [-0.01], rtol=1e-4)


def test_schedule_milestones_and_warmup():
    c = BASE.replace(lr=0.1, milestones=(10, 20), gamma=0.1, warmup_steps=4)
    lr = train.make_schedule(c)
    got = [float(lr(s)) for s in (0, 2, 4, 9, 10, 19, 20, 100)]
    np.testing.assert_allclose(got, [0.0, 0.05, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-5)
    e = BASE.replace(lr=1.0, milestones=(2,), milestone_unit="epochs", gamma=0.5)
    lr_e = train.make_schedule(e, steps_per_epoch=16)
    assert float(lr_e(31)) == 1.0 and float(lr_e(32)) == 0.5
    with pytest.raises(ValueError, match="steps_per_epoch"):
        train.make_schedule(e)


def test_schedule_is_what_the_optimizer_applies():
    c = BASE.replace(optimizer="sgd", momentum=0.0, lr=1.0, milestones=(2,), gamma=0.5)
    tx = train.make_optimizer(c)
    w = jnp.zeros(())
    state = tx.init(w)
    steps = []
    for _ in range(4):
        upd, state = tx.update(jnp.ones(()), state, w)
        steps.append(-float(upd))
    assert steps == [1.0, 1.0, 0.5, 0.5]


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("changes, match", [
    (dict(optimizer="rmsprop"), r"optimizer must be one of \('sgd', 'adam'\)"),
    (dict(lr=-0.1), "lr must be"),
    (dict(lr=float("nan")), "lr must be"),
    (dict(momentum=1.5), "momentum"),
    (dict(momentum=0.0, nesterov=True), "nesterov"),
    (dict(batch_size=0), "batch_size"),
    (dict(milestones=(20, 10)), "milestones"),
    (dict(milestone_unit="hours"), "milestone_unit"),
    (dict(weight_decay=-1.0), "weight_decay"),
    (dict(eval_every=-1), "eval_every"),
])
def test_config_validation(changes, match):
    with pytest.raises(ValueError, match=match):
        BASE.replace(**changes)


def test_config_is_plain_json_data():
    d = dataclasses.asdict(BASE.replace(milestones=(5, 9)))
    back = train.TrainConfig(**json.loads(json.dumps(d)))
    assert back == BASE.replace(milestones=(5, 9)) and hash(back) == hash(BASE.replace(milestones=(5, 9)))


# --------------------------------------------------------------------------- fit


def test_loss_decreases_and_metrics_file(tmp_path):
    config = BASE.replace(steps=120, eval_every=40, chunk_size=16)
    path = tmp_path / "metrics.jsonl"
    res = train.fit(config, train.init_state(config), DS, val_ds=DS, test_ds=DS,
                    metrics_path=path, progress=False)
    lines = [json.loads(l) for l in path.read_text().splitlines()]
    assert [l["step"] for l in lines] == [0, 40, 80, 120]
    assert lines == res.history
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss",
            "test_accuracy", "lr"} <= set(lines[-1])
    assert lines[-1]["train_loss"] < 0.5 * lines[1]["train_loss"]
    assert lines[-1]["val_loss"] < 0.5 * lines[0]["val_loss"]
    assert lines[-1]["val_accuracy"] > 0.8


def test_rewind_state_is_the_state_at_exactly_k():
    k, T = 13, 40  # 13 is not a multiple of chunk_size=8
    state = train.init_state(BASE)
    both = train.fit(BASE, state, DS, steps=T, rewind_step=k, progress=False)
    stopped = train.fit(BASE, state, DS, steps=k, progress=False).state
    assert int(both.rewind_state.step) == k and int(both.state.step) == T
    assert same(both.rewind_state, stopped)
    # continuing from the rewind state reaches the same final state
    assert same(train.fit(BASE, stopped, DS, steps=T, progress=False).state, both.state)
    # and the step-by-step jitted train_step agrees with the chunked loop
    step = jax.jit(train.train_step, static_argnums=0)
    s = state
    for _ in range(k):
        s, _ = step(BASE, s, DS)
    np.testing.assert_allclose(np.asarray(s.params["fc1"]["kernel"]),
                               np.asarray(stopped.params["fc1"]["kernel"]), rtol=1e-5, atol=1e-6)


def test_nan_loss_names_the_first_bad_step():
    config = BASE.replace(lr=1000.0, chunk_size=8, steps=60)  # first NaN at step 15
    state = train.init_state(config)
    step = jax.jit(train.train_step, static_argnums=0)
    first_bad, s = None, state
    for i in range(config.steps):
        s, m = step(config, s, DS)
        if not np.isfinite(float(m["loss"])):
            first_bad = i
            break
    assert first_bad is not None and first_bad > 0
    with pytest.raises(train.NonFiniteLossError) as err:
        train.fit(config, state, DS, progress=False)
    assert err.value.step == first_bad
    assert f"step {first_bad}" in str(err.value)


def test_determinism_and_separate_streams():
    cfg = BASE.replace(steps=16)
    a = train.fit(cfg, train.init_state(cfg), DS, progress=False).state
    b = train.fit(cfg, train.init_state(cfg), DS, progress=False).state
    assert same(a.params, b.params)
    c2 = cfg.replace(data_seed=1)
    c = train.fit(c2, train.init_state(c2), DS, progress=False).state
    assert same(train.init_state(c2).params, train.init_state(cfg).params)  # same init
    assert not same(a.params, c.params)                                      # other order


def test_evaluate_chunks_match_one_batch():
    state = train.fit(BASE, train.init_state(BASE), DS, steps=8, progress=False).state
    chunked = train.evaluate(BASE, state, DS)  # 256 = 5 x 48 + 16 (padded)
    whole = train.evaluate(BASE.replace(eval_batch_size=N), state, DS)
    assert chunked["logits"].shape == (N, 10) and chunked["predictions"].shape == (N,)
    np.testing.assert_allclose(chunked["logits"], whole["logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(chunked["loss"], whole["loss"], rtol=1e-5)
    acc = np.mean(np.asarray(chunked["predictions"]) == np.asarray(DS.labels))
    assert float(chunked["accuracy"]) == pytest.approx(acc)


def test_batchnorm_model_updates_stats_and_masks():
    ds = toy_dataset(64, (8, 8, 3))
    config = train.TrainConfig(model="resnet8", input_shape=(8, 8, 3), lr=0.05, momentum=0.9,
                               batch_size=4, steps=6, chunk_size=3, eval_batch_size=32)
    s0 = train.init_state(config)
    mask = random_mask(s0.params, 0.7)
    state = train.init_state(config, mask=mask)
    assert jax.tree.leaves(state.batch_stats)
    out = train.fit(config, state, ds, val_ds=ds, progress=False)
    assert not same(out.state.batch_stats, state.batch_stats)
    for leaf, keep, flag in zip(jax.tree.leaves(out.state.params), mask.leaves(), mask.prunable):
        if flag:
            assert np.all(np.asarray(leaf)[~np.asarray(keep)] == 0)
    assert np.isfinite(out.history[-1]["val_loss"])


# --------------------------------------------------------------------------- seeds axis


def test_vmapped_seeds_equal_separate_runs():
    S = 3
    cfg = BASE.replace(steps=20, augment=True)
    params0 = train.init_state(cfg).params
    mask = jax.tree.map(lambda *xs: jnp.stack(xs), *[random_mask(params0, 0.6, i) for i in range(S)])
    state = train.init_state(cfg, seeds=S, mask=mask)
    assert state.params["fc1"]["kernel"].shape == (S, 64, 32)
    assert train.num_replicas(state) == S
    res = train.fit(cfg, state, DS, val_ds=DS, rewind_step=7, progress=False)
    assert len(res.history[-1]["val_loss"]) == S
    for i in range(S):
        ci = cfg.replace(init_seed=i, data_seed=i, aug_seed=i)
        mi = jax.tree.map(lambda x: x[i], mask)
        single = train.fit(ci, train.init_state(ci, mask=mi), DS, val_ds=DS, rewind_step=7,
                           progress=False)
        assert same(train.replica(state, i), train.init_state(ci, mask=mi))
        for got, want in ((train.replica(res.state, i), single.state),
                          (train.replica(res.rewind_state, i), single.rewind_state)):
            for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
                if jax.default_backend() == "cpu":  # bitwise on CPU
                    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
                else:
                    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
        assert res.history[-1]["val_loss"][i] == pytest.approx(single.history[-1]["val_loss"], rel=1e-4)


def test_vary_only_data_order_keeps_the_init():
    state = train.init_state(BASE, seeds=2, vary=("data", "aug"))
    a, b = train.replica(state, 0), train.replica(state, 1)
    assert same(a.params, b.params) and not same(a.data_key, b.data_key)
    with pytest.raises(ValueError, match="unknown streams"):
        train.init_state(BASE, seeds=2, vary=("weights",))


def test_host_loop_matches_device_loop():
    state = train.init_state(BASE)
    dev = train.fit(BASE, state, DS, steps=20, rewind_step=11, loop="device", progress=False)
    host = train.fit(BASE, state, DS, steps=20, rewind_step=11, loop="host", progress=False)
    assert int(host.rewind_state.step) == 11 and int(host.state.step) == 20
    for a, b in ((host.state, dev.state), (host.rewind_state, dev.rewind_state)):
        for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="loop must be one of"):
        train.fit(BASE, state, DS, loop="gpu")


def test_with_mask_zeroes_params_and_moments_of_newly_pruned():
    config = BASE.replace(optimizer="adam", lr=1e-3, momentum=0.0)
    state = train.fit(config, train.init_state(config), DS, steps=8, progress=False).state
    mask = random_mask(state.params, 0.5, seed=3)
    pruned = train.with_mask(state, mask)
    moments = params_shaped_subtrees(pruned.opt_state, pruned.params)
    assert len(moments) == 2
    for tree in [pruned.params, *moments]:
        for leaf, keep, flag in zip(jax.tree.leaves(tree), mask.leaves(), mask.prunable):
            if flag:
                assert np.all(np.asarray(leaf)[~np.asarray(keep)] == 0)
                assert np.any(np.asarray(leaf)[np.asarray(keep)] != 0)
    assert int(pruned.step) == 8 and pruned.mask is mask


def test_kernel_init_selects_the_initialiser_by_name():
    import math as _math

    base = train.TrainConfig(model="lenet_300_100", input_shape=(28, 28, 1))
    stds = {}
    for name in (None, "kaiming_normal"):
        params = train.init_state(base.replace(kernel_init=name)).params
        stds[name] = float(np.std(np.asarray(params["fc1"]["kernel"])))
    assert stds[None] == pytest.approx(_math.sqrt(2 / (784 + 300)), rel=0.02)   # Glorot, the LeNet default
    assert stds["kaiming_normal"] == pytest.approx(_math.sqrt(2 / 784), rel=0.02)  # He, fan-in
    with pytest.raises(ValueError, match=r"kernel_init must be None .* one of \('binary'"):
        base.replace(kernel_init="xavier")
