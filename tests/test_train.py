"""jaxticket.train: the Task, masking, optimizers, schedules, fit and its hooks, seeds axis."""

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxticket import data as data_lib
from jaxticket import masks, train

FIT = dict(batch_size=16, chunk_size=8, eval_batch_size=48)


@pytest.fixture(scope="module")
def ds(toy):
    """The default toy dataset (conftest's ``toy``: 256 8x8x1 images)."""
    return toy


@pytest.fixture(scope="module")
def task(toy_task):
    """The Task of conftest's ``toy_config`` as it is."""
    return toy_task()


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
def test_pruned_weights_and_moments_stay_exactly_zero(opt, ds, toy_task):
    task = toy_task(**opt)
    mask = random_mask(train.init_state(task).params)
    state = train.init_state(task, mask=mask)
    out = train.fit(task, state, ds, steps=30, **FIT).state
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


def test_dense_state_has_no_mask_and_trains(ds, task):
    state = train.init_state(task, mask=None)
    assert state.mask is None
    out = train.fit(task, state, ds, steps=5, **FIT).state
    assert int(out.step) == 5


# --------------------------------------------------------------------------- the Task: your own model, data, loss


class OwnMLP(nn.Module):
    """An MLP of one's own on 1-D inputs, with dropout switched by ``deterministic``."""

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        x = nn.relu(nn.Dense(32)(x))
        x = nn.Dropout(0.2, deterministic=deterministic)(x)
        return nn.Dense(10)(x)


def label_smoothing_loss(logits, labels):
    return optax.softmax_cross_entropy(logits, optax.smooth_labels(jax.nn.one_hot(labels, 10), 0.1))


def top2(logits, labels):
    return jnp.any(jax.lax.top_k(logits, 2)[1] == labels[:, None], axis=-1)


def one_d_data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 40)).astype(np.float32) * 3.0 + 1.0
    y = x[:, :4].argmax(1).astype(np.int32)
    return data_lib.from_arrays(train=(x[:500], y[:500]), test=(x[500:], y[500:]), validation_size=50)


def test_own_model_loss_optimizer_and_metrics_train_without_rescaling():
    data = one_d_data()
    decay_kernels = lambda params: jax.tree.map(lambda w: w.ndim == 2, params)  # noqa: E731
    tx = optax.chain(optax.add_decayed_weights(1e-3, mask=decay_kernels), optax.adam(3e-3))
    task = train.Task(OwnMLP(), input_shape=(40,), loss=label_smoothing_loss, tx=tx,
                      metrics={"accuracy": train.accuracy, "top2": top2})
    state = train.init_state(task)
    assert state.params["Dense_0"]["kernel"].shape == (40, 32)
    res = train.fit(task, state, data.train, steps=200, batch_size=20, val=data.validation, test=data.test,
                    eval_every=100)
    last = res.history[-1]
    assert {"train_loss", "train_accuracy", "train_top2", "test_top2", "val_accuracy"} <= set(last)
    assert last["test_accuracy"] > 0.7 and last["test_top2"] >= last["test_accuracy"]
    # nothing was normalised: the model saw the raw floats (mean ~1, std ~3)
    x, _ = data_lib.make_batch(data.train, jax.random.key(0), jax.random.key(0), 0, 20)
    raw = np.asarray(data.train.inputs)
    assert any(np.array_equal(np.asarray(x)[0], row) for row in raw)
    # dropout was on in training only (evaluation is deterministic: same outputs twice)
    a = train.evaluate(task, res.state, data.test, logits=True)["logits"]
    b = train.evaluate(task, res.state, data.test, logits=True)["logits"]
    np.testing.assert_array_equal(a, b)


def test_models_without_a_mode_keyword_and_bad_collections(ds):
    class Plain(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(10)(x.reshape(x.shape[0], -1))

    task = train.Task(Plain(), input_shape=(8, 8, 1), tx=optax.sgd(0.1))
    train.fit(task, train.init_state(task), ds, steps=3, **FIT)

    class Cached(nn.Module):
        @nn.compact
        def __call__(self, x):
            self.variable("cache", "seen", jnp.zeros, ())
            return nn.Dense(10)(x)

    with pytest.raises(ValueError, match=r"variable collections \['cache'\]"):
        train.init_state(train.Task(Cached(), input_shape=(4,)))
    with pytest.raises(ValueError, match=r"expects inputs of shape \(40,\) per example, the data has \(8, 8, 1\)"):
        task40 = train.Task(Plain(), input_shape=(40,))
        train.fit(task40, train.init_state(task40), ds, steps=1, batch_size=4)
    with pytest.raises(TypeError, match="tx must be an optax"):
        train.Task(Plain(), input_shape=(4,), tx="adam")
    with pytest.raises(ValueError, match="cannot be called 'loss'"):
        train.Task(Plain(), input_shape=(4,), metrics={"loss": train.accuracy})


def test_equal_tasks_share_compiled_programs(ds, task, toy_config, toy_task):
    again = train.task_from_config(toy_config.replace(validation_size=0))  # not what the task is built from
    assert again == task and hash(again) == hash(task)
    assert toy_task(lr=0.01) != task
    state = train.init_state(task)
    train.fit(task, state, ds, steps=8, **FIT)
    from jaxticket.train import step as step_lib

    before = step_lib._run_steps._cache_size()
    train.fit(again, train.init_state(again, data_seed=5), ds, steps=16, **FIT)
    assert step_lib._run_steps._cache_size() == before  # no recompilation


# --------------------------------------------------------------------------- optimizers


def test_sgd_matches_pytorch_formula(toy_config):
    """PyTorch SGD: g += wd*w; buf = m*buf + g; g = g + m*buf (nesterov); w -= lr*g."""
    config = toy_config.replace(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    tx = train.make_optimizer(config)
    w = jnp.array([1.0, -2.0])
    state = tx.init(w)
    buf, w_ref = np.zeros(2), np.array([1.0, -2.0])
    for i, g in enumerate(([0.5, 0.25], [-1.0, 2.0], [0.1, 0.0])):
        upd, state = tx.update(jnp.array(g), state, w, step=jnp.int32(i))
        w = optax.apply_updates(w, upd)
        gr = np.array(g) + 0.01 * w_ref
        buf = 0.9 * buf + gr
        w_ref = w_ref - 0.1 * (gr + 0.9 * buf)
    np.testing.assert_allclose(np.asarray(w), w_ref, rtol=1e-6)


def test_adam_coupled_weight_decay(toy_config):
    config = toy_config.replace(optimizer="adam", lr=0.01, momentum=0.0, weight_decay=0.1)
    tx = train.make_optimizer(config)
    w = jnp.array([1.0])
    upd, _ = tx.update(jnp.array([0.0]), tx.init(w), w, step=jnp.int32(0))
    # first Adam step moves by ~lr * sign(g + wd*w)
    np.testing.assert_allclose(np.asarray(upd), [-0.01], rtol=1e-4)
    with pytest.raises(ValueError, match="follows the global training step"):
        tx.update(jnp.array([0.0]), tx.init(w), w)


def test_schedule_milestones_and_warmup(toy_config):
    c = toy_config.replace(lr=0.1, milestones=(10, 20), gamma=0.1, warmup_steps=4)
    lr = train.make_schedule(c)
    got = [float(lr(s)) for s in (0, 2, 4, 9, 10, 19, 20, 100)]
    np.testing.assert_allclose(got, [0.0, 0.05, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-5)
    e = toy_config.replace(lr=1.0, milestones=(2,), milestone_unit="epochs", gamma=0.5)
    lr_e = train.make_schedule(e, steps_per_epoch=16)
    assert float(lr_e(31)) == 1.0 and float(lr_e(32)) == 0.5
    with pytest.raises(ValueError, match="steps_per_epoch"):
        train.make_schedule(e)


def test_schedule_follows_the_global_step_even_with_a_fresh_optimizer(ds, toy_config):
    c = toy_config.replace(optimizer="sgd", momentum=0.0, lr=1.0, milestones=(2,), gamma=0.5)
    tx = train.make_optimizer(c)
    w = jnp.zeros(())
    steps = [-float(tx.update(jnp.ones(()), tx.init(w), w, step=jnp.int32(s))[0]) for s in range(4)]
    assert steps == [1.0, 1.0, 0.5, 0.5]  # a fresh state at step 3 still takes the step-3 rate
    # and inside fit: a rewound state at step k (fresh optimizer) trains at lr(k)
    task = train.task_from_config(c.replace(milestones=(5,), gamma=0.0001))
    state = train.fit(task, train.init_state(task), ds, steps=6, **FIT).state
    fresh = state.replace(opt_state=task.tx.init(state.params))
    moved = train.fit(task, fresh, ds, steps=7, **FIT).state
    delta = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                for a, b in zip(jax.tree.leaves(moved.params), jax.tree.leaves(fresh.params)))
    assert 0 < delta < 1e-3  # lr 1e-4 past the milestone, not the initial 1.0


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("changes, match", [
    (dict(optimizer="rmsprop"), r"optimizer must be one of 'sgd', 'adam', got 'rmsprop'"),
    (dict(lr=-0.1), "lr must be"),
    (dict(lr=float("nan")), "lr must be"),
    (dict(lr=True), "lr must be"),
    (dict(momentum="0.9"), "momentum must be a finite number"),
    (dict(momentum=1.5), "momentum"),
    (dict(nesterov=True, momentum=0.0), "nesterov"),
    (dict(nesterov="yes"), "nesterov must be true or false"),
    (dict(milestones=(20, 10)), "milestones"),
    (dict(milestone_unit="hours"), "milestone_unit"),
    (dict(weight_decay=-1.0), "weight_decay"),
    (dict(validation_size=-1), "validation_size must be an integer >= 0"),
])
def test_config_validation(changes, match, toy_config):
    with pytest.raises(ValueError, match=match) as error:
        toy_config.replace(**changes)
    assert error.value.setting == next(iter(changes))  # the message names the setting


@pytest.mark.parametrize("changes, match", [
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(steps=10.5), "steps must be an integer"),
    (dict(eval_every=-1), "eval_every must be an integer >= 0"),
    (dict(augment="yes"), "augment must be true or false"),
])
def test_fit_settings_validation(changes, match, toy_fit):
    with pytest.raises(ValueError, match=match):
        toy_fit.replace(**changes)
    with pytest.raises(TypeError, match="unexpected keyword"):
        train.fit_settings(toy_fit, {"stepz": 3})


def test_config_is_plain_json_data(toy_config):
    d = dataclasses.asdict(toy_config.replace(milestones=(5, 9)))
    back = train.TrainConfig(**json.loads(json.dumps(d)))
    assert back == toy_config.replace(milestones=(5, 9)) and hash(back) == hash(toy_config.replace(milestones=(5, 9)))


# --------------------------------------------------------------------------- fit


def test_loss_decreases_and_metrics_file(tmp_path, ds, task):
    path = tmp_path / "metrics.jsonl"
    res = train.fit(task, train.init_state(task), ds, steps=120, val=ds, test=ds, eval_every=40,
                    metrics_path=path, batch_size=16, chunk_size=16, eval_batch_size=48)
    lines = [json.loads(l) for l in path.read_text().splitlines()]
    assert [l["step"] for l in lines] == [0, 40, 80, 120]
    assert lines == res.history
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
            "elapsed_s"} == set(lines[-1]) - {"step"}
    assert lines[-1]["train_loss"] < 0.5 * lines[1]["train_loss"]
    assert lines[-1]["val_loss"] < 0.5 * lines[0]["val_loss"]
    assert lines[-1]["val_accuracy"] > 0.8


def test_hooks_see_every_boundary_they_ask_for(ds, task):
    class Recorder(train.Hook):
        def __init__(self):
            self.seen, self.records, self.ended = [], [], False

        def boundaries(self, start, end):
            return {13, 29}

        def on_boundary(self, step, state, record):
            assert int(state.step) == step
            self.seen.append(step)
            if record is not None:
                self.records.append(step)

        def on_end(self, state):
            self.ended = True

    rec = Recorder()
    train.fit(task, train.init_state(task), ds, steps=40, eval_every=20, test=ds, hooks=[rec], **FIT)
    assert {0, 13, 20, 29, 40} <= set(rec.seen) and rec.seen == sorted(rec.seen)
    assert rec.records == [0, 20, 40] and rec.ended


def test_rewind_state_is_the_state_at_exactly_k(ds, task):
    k, T = 13, 40  # 13 is not a multiple of chunk_size=8
    state = train.init_state(task)
    both = train.fit(task, state, ds, steps=T, rewind_step=k, **FIT)
    stopped = train.fit(task, state, ds, steps=k, **FIT).state
    assert int(both.rewind_state.step) == k and int(both.state.step) == T
    assert same(both.rewind_state, stopped)
    # continuing from the rewind state reaches the same final state
    assert same(train.fit(task, stopped, ds, steps=T, **FIT).state, both.state)
    # and the step-by-step jitted train_step agrees with the chunked loop
    step = jax.jit(train.train_step, static_argnums=0)
    s = state
    for _ in range(k):
        batch = data_lib.make_batch(ds, jax.random.wrap_key_data(s.data_key), jax.random.wrap_key_data(s.aug_key),
                                    s.step, 16)
        s, _ = step(task, s, batch)
    np.testing.assert_allclose(np.asarray(s.params["fc1"]["kernel"]),
                               np.asarray(stopped.params["fc1"]["kernel"]), rtol=1e-5, atol=1e-6)


def test_nan_loss_names_the_first_bad_step(ds, toy_task):
    task = toy_task(lr=1000.0)
    state = train.init_state(task)
    step = jax.jit(train.train_step, static_argnums=0)
    first_bad, s = None, state
    for i in range(60):
        batch = data_lib.make_batch(ds, jax.random.wrap_key_data(s.data_key), jax.random.wrap_key_data(s.aug_key),
                                    s.step, 16)
        s, m = step(task, s, batch)
        if not np.isfinite(float(m["loss"])):
            first_bad = i
            break
    assert first_bad is not None and first_bad > 0
    with pytest.raises(train.NonFiniteLossError) as err:
        train.fit(task, state, ds, steps=60, **FIT)
    assert err.value.step == first_bad
    assert f"step {first_bad}" in str(err.value)


def test_determinism_and_separate_streams(ds, task):
    a = train.fit(task, train.init_state(task), ds, steps=16, **FIT).state
    b = train.fit(task, train.init_state(task), ds, steps=16, **FIT).state
    assert same(a.params, b.params)
    c = train.fit(task, train.init_state(task, data_seed=1), ds, steps=16, **FIT).state
    assert same(train.init_state(task, data_seed=1).params, train.init_state(task).params)  # same init
    assert not same(a.params, c.params)                                                    # other order


def test_evaluate_chunks_match_one_batch(ds, task):
    n = ds.num_examples
    state = train.fit(task, train.init_state(task), ds, steps=8, **FIT).state
    chunked = train.evaluate(task, state, ds, batch_size=48, logits=True)  # 256 = 5 x 48 + 16 (padded)
    whole = train.evaluate(task, state, ds, batch_size=n, logits=True)
    assert chunked["logits"].shape == (n, 10) and chunked["predictions"].shape == (n,)
    np.testing.assert_allclose(chunked["logits"], whole["logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(chunked["loss"], whole["loss"], rtol=1e-5)
    acc = np.mean(np.asarray(chunked["predictions"]) == np.asarray(ds.labels))
    assert float(chunked["accuracy"]) == pytest.approx(acc)
    assert "logits" not in train.evaluate(task, state, ds)  # not kept unless asked


def test_batchnorm_model_updates_stats_and_masks(toy_dataset):
    ds = toy_dataset(64, (8, 8, 3))
    task = train.task_from_config(train.TrainConfig(model="resnet8", input_shape=(8, 8, 3), lr=0.05, momentum=0.9))
    mask = random_mask(train.init_state(task).params, 0.7)
    state = train.init_state(task, mask=mask)
    assert jax.tree.leaves(state.batch_stats)
    out = train.fit(task, state, ds, steps=6, batch_size=4, chunk_size=3, eval_batch_size=32, val=ds)
    assert not same(out.state.batch_stats, state.batch_stats)
    for leaf, keep, flag in zip(jax.tree.leaves(out.state.params), mask.leaves(), mask.prunable):
        if flag:
            assert np.all(np.asarray(leaf)[~np.asarray(keep)] == 0)
    assert np.isfinite(out.history[-1]["val_loss"])


# --------------------------------------------------------------------------- seeds axis


@pytest.mark.parametrize("strategy", ["vmap", "sequential"])
def test_seeds_axis_equals_separate_runs(strategy, ds, task):
    S = 3
    params0 = train.init_state(task).params
    mask = jax.tree.map(lambda *xs: jnp.stack(xs), *[random_mask(params0, 0.6, i) for i in range(S)])
    state = train.init_state(task, seeds=S, mask=mask)
    assert state.params["fc1"]["kernel"].shape == (S, 64, 32)
    assert train.num_replicas(state) == S
    kw = dict(steps=20, augment=True, val=ds, rewind_step=7, **FIT)
    res = train.fit(task, state, ds, seed_strategy=strategy, **kw)
    assert len(res.history[-1]["val_loss"]) == S
    for i in range(S):
        mi = jax.tree.map(lambda x: x[i], mask)
        single_state = train.init_state(task, mask=mi, init_seed=i, data_seed=i, aug_seed=i)
        single = train.fit(task, single_state, ds, **kw)
        assert same(train.replica(state, i), single_state)
        for got, want in ((train.replica(res.state, i), single.state),
                          (train.replica(res.rewind_state, i), single.rewind_state)):
            for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
                if jax.default_backend() == "cpu":  # bitwise on CPU
                    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
                else:
                    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
        assert res.history[-1]["val_loss"][i] == pytest.approx(single.history[-1]["val_loss"], rel=1e-4)


def test_vary_only_data_order_keeps_the_init(task):
    state = train.init_state(task, seeds=2, vary=("data", "aug"))
    a, b = train.replica(state, 0), train.replica(state, 1)
    assert same(a.params, b.params) and not same(a.data_key, b.data_key)
    with pytest.raises(ValueError, match="unknown streams"):
        train.init_state(task, seeds=2, vary=("weights",))


def test_host_loop_matches_device_loop(ds, task):
    state = train.init_state(task)
    dev = train.fit(task, state, ds, steps=20, rewind_step=11, loop="device", **FIT)
    host = train.fit(task, state, ds, steps=20, rewind_step=11, loop="host", **FIT)
    assert int(host.rewind_state.step) == 11 and int(host.state.step) == 20
    for a, b in ((host.state, dev.state), (host.rewind_state, dev.rewind_state)):
        for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="loop must be one of"):
        train.fit(task, state, ds, steps=20, loop="gpu", **FIT)
    with pytest.raises(ValueError, match="seed_strategy must be one of"):
        train.fit(task, train.init_state(task, seeds=2), ds, steps=20, seed_strategy="pmap", **FIT)


def test_with_mask_zeroes_params_and_moments_of_newly_pruned(ds, toy_task):
    task = toy_task(optimizer="adam", lr=1e-3, momentum=0.0)
    state = train.fit(task, train.init_state(task), ds, steps=8, **FIT).state
    mask = random_mask(state.params, 0.5, seed=3)
    pruned = train.with_mask(state, mask)
    moments = params_shaped_subtrees(pruned.opt_state, pruned.params)
    assert len(moments) == 2
    for tree in [pruned.params, *moments]:
        for leaf, keep, flag in zip(jax.tree.leaves(tree), mask.leaves(), mask.prunable):
            if flag:
                assert np.all(np.asarray(leaf)[~np.asarray(keep)] == 0)
                assert np.any(np.asarray(leaf)[np.asarray(keep)] != 0)
    assert int(pruned.step) == 8 and pruned.mask.prunable == mask.prunable
    assert same(pruned.mask.keep, mask.keep)


def test_kernel_init_selects_the_initialiser_by_name():
    import math as _math

    base = train.TrainConfig(model="lenet_300_100", input_shape=(28, 28, 1))
    stds = {}
    for name in (None, "kaiming_normal"):
        params = train.init_state(train.task_from_config(base.replace(kernel_init=name))).params
        stds[name] = float(np.std(np.asarray(params["fc1"]["kernel"])))
    assert stds[None] == pytest.approx(_math.sqrt(2 / (784 + 300)), rel=0.02)   # Glorot, the LeNet default
    assert stds["kaiming_normal"] == pytest.approx(_math.sqrt(2 / 784), rel=0.02)  # He, fan-in
    with pytest.raises(ValueError, match=r"kernel_init must be None .* one of \('binary'"):
        base.replace(kernel_init="xavier")


def test_conv_replicas_train_sequentially_as_their_single_runs(toy_dataset):
    ds = toy_dataset(64, (8, 8, 3))
    task = train.task_from_config(train.TrainConfig(model="conv2", input_shape=(8, 8, 3), optimizer="adam", lr=1e-3))
    kw = dict(steps=3, batch_size=8, test=ds, eval_batch_size=32, loop="host")
    both = train.fit(task, train.init_state(task, seeds=2), ds, seed_strategy="sequential", **kw)
    for i in range(2):
        single = train.fit(task, train.init_state(task, init_seed=i, data_seed=i, aug_seed=i), ds, **kw)
        assert same(train.replica(both.state, i), single.state)
        assert both.history[-1]["test_loss"][i] == single.history[-1]["test_loss"]
