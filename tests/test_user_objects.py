"""A researcher's own objects: callables a run directory must tell apart, optax
optimizers with their own structure and schedules, and labels/params the engine refuses
with one clear line."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxticket as jt
from jaxticket import fingerprints, train

RNG = np.random.default_rng(0)
X = RNG.normal(size=(160, 12)).astype(np.float32)
Y = X[:, :4].argmax(1).astype(np.int32)
DATA = jt.data.from_arrays(train=(X[:128], Y[:128]), test=(X[128:], Y[128:]))
RUN = dict(levels=1, steps=20, batch_size=32, log=None)
DENSE_ONLY = dict(RUN, levels=0)  # what a run directory records is all a refusal needs


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4, name="out")(nn.relu(nn.Dense(16, name="hidden")(x)))


def test_callable_fingerprints_tell_closures_lambdas_and_constants_apart():
    def factory(fraction):
        return lambda params, mask, key: fraction

    assert fingerprints.callable_fingerprint(factory(0.5)) != fingerprints.callable_fingerprint(factory(0.9))
    assert fingerprints.callable_fingerprint(factory(0.5)) == fingerprints.callable_fingerprint(factory(0.5))
    assert fingerprints.callable_fingerprint(lambda y: y + 1) != fingerprints.callable_fingerprint(lambda y: y + 2)
    # decorated (jitted) functions are told apart by what they wrap
    assert fingerprints.callable_fingerprint(jax.jit(lambda y: y + 1)) != \
        fingerprints.callable_fingerprint(jax.jit(lambda y: y + 2))
    # library functions keep their plain name (saved runs keep their identity)
    assert fingerprints.callable_fingerprint(train.softmax_cross_entropy) == \
        "jaxticket.train.task.softmax_cross_entropy"


def test_a_run_directory_refuses_another_unregistered_pruner(tmp_path):
    task = jt.Task(MLP(), input_shape=(12,))

    def half(params, mask, key):
        return jt.magnitude(0.5)(params, mask, key)

    def most(params, mask, key):
        return jt.magnitude(0.9)(params, mask, key)

    jt.imp(task, DATA, half, workdir=tmp_path, **DENSE_ONLY).close()
    with pytest.raises(ValueError, match="different"):
        jt.imp(task, DATA, most, workdir=tmp_path, **DENSE_ONLY)
    jt.imp(task, DATA, half, workdir=tmp_path, **DENSE_ONLY).close()  # the same pruner resumes


def test_a_run_directory_refuses_another_lambda_loss(tmp_path):
    ce = train.softmax_cross_entropy
    jt.imp(jt.Task(MLP(), input_shape=(12,), loss=lambda o, y: ce(o, y)), DATA, jt.magnitude(0.5),
           workdir=tmp_path, **DENSE_ONLY).close()
    with pytest.raises(ValueError, match="different"):
        jt.imp(jt.Task(MLP(), input_shape=(12,), loss=lambda o, y: 10 * ce(o, y)), DATA, jt.magnitude(0.5),
               workdir=tmp_path, **DENSE_ONLY)


LABELS = {"hidden": {"kernel": "k", "bias": "b"}, "out": {"kernel": "k", "bias": "b"}}


def test_multi_transform_with_a_label_tree_runs_in_a_run_directory_and_its_moments_are_masked(tmp_path):
    tx = optax.multi_transform({"k": optax.adam(1e-2), "b": optax.sgd(1e-2)}, LABELS)
    task = jt.Task(MLP(), input_shape=(12,), tx=tx)
    run = jt.imp(task, DATA, jt.magnitude(0.5), workdir=tmp_path, rewind_step=10,
                 rewind_restores=("params", "opt_state"), **RUN)
    mask = run.levels[1].mask
    state = train.with_mask(run.rewind_state, mask)
    adam = state.opt_state.inner_states["k"].inner_state[0]
    pruned = ~np.asarray(mask.keep["hidden"]["kernel"])
    assert pruned.sum() > 0
    assert np.all(np.asarray(adam.mu["hidden"]["kernel"])[pruned] == 0)
    assert np.all(np.asarray(adam.nu["hidden"]["kernel"])[pruned] == 0)
    assert isinstance(adam.mu["hidden"]["bias"], optax.MaskedNode)  # left as optax keeps it
    # before rewinding, those moments were not zero: the test can fail
    before = run.rewind_state.opt_state.inner_states["k"].inner_state[0]
    assert np.any(np.asarray(before.mu["hidden"]["kernel"])[pruned] != 0)
    run.close()


def test_an_optax_schedule_resumes_at_the_rewind_step():
    # learning rate 0 until step 10, then 0.1: a rewound level (k = 10) must train
    schedule = optax.join_schedules([optax.constant_schedule(0.0), optax.constant_schedule(0.1)], [10])
    task = jt.Task(MLP(), input_shape=(12,), tx=optax.sgd(schedule))
    run = jt.imp(task, DATA, jt.magnitude(0.5), rewind_step=10, **RUN)
    start = train.with_mask(run.rewind_state, run.levels[1].mask).params["hidden"]["kernel"]
    moved = np.abs(np.asarray(run.levels[1].params["hidden"]["kernel"]) - np.asarray(start)).max()
    assert moved > 1e-3
    batched = jax.vmap(optax.sgd(schedule).init)({"w": jnp.zeros((2, 3))})  # a seeds axis of 2
    state = train.advance_schedules(batched, jnp.array([10, 10]))
    assert np.asarray(jax.tree.leaves(state)[-1]).tolist() == [10, 10]


@pytest.mark.parametrize("labels, match", [
    (np.where(Y[:128] == 3, 42, Y[:128]), "labels from 0 to 42, the model has 4 outputs"),
    (np.where(Y[:128] == 3, -1, Y[:128]), "labels from -1 to 2"),
    (np.eye(4, dtype=np.float32)[Y[:128]], "integer class indices"),
])
def test_labels_the_default_loss_cannot_take_are_refused_in_one_line(labels, match):
    data = jt.data.from_arrays(train=(X[:128], labels), test=(X[128:], Y[128:]))
    with pytest.raises(ValueError, match=match):
        jt.imp(jt.Task(MLP(), input_shape=(12,)), data, jt.magnitude(0.5), **RUN)


def test_integer_params_are_refused_with_their_path():
    class WithIndex(nn.Module):
        @nn.compact
        def __call__(self, x):
            self.param("perm", lambda key: jnp.arange(12))
            return nn.Dense(4)(x)

    with pytest.raises(ValueError, match=r"\['perm'\] \(int32\)"):
        train.init_state(jt.Task(WithIndex(), input_shape=(12,)))


def test_a_numpy_pruner_gets_a_hint_that_pruners_are_traced():
    def numpy_pruner(params, mask, key):
        w = np.asarray(params["hidden"]["kernel"])  # fails under jit: a tracer
        return jax.tree.map(lambda p: np.abs(np.asarray(p)) > np.median(np.abs(w)), params)

    with pytest.raises(TypeError, match="jax.numpy"):
        jt.imp(jt.Task(MLP(), input_shape=(12,)), DATA, numpy_pruner, **RUN)


def test_a_use_running_average_keyword_sets_the_mode():
    class BNNet(nn.Module):
        @nn.compact
        def __call__(self, x, use_running_average: bool):
            return nn.Dense(4)(nn.BatchNorm(use_running_average=use_running_average)(x))

    task = jt.Task(BNNet(), input_shape=(12,))
    state = train.init_state(task)
    out, stats = task.forward(state.params, state.batch_stats, jnp.asarray(X[:8]), train=True)
    assert out.shape == (8, 4)
    assert not np.allclose(np.asarray(stats["BatchNorm_0"]["mean"]), 0)  # training updated the statistics


def test_a_regression_task_keeps_its_metrics_in_results_and_report(tmp_path):
    from jaxticket import report

    class Regressor(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(nn.relu(nn.Dense(16)(x)))[:, 0]

    target = (X @ np.linspace(-1, 1, 12)).astype(np.float32)
    data = jt.data.from_arrays(train=(X[:128], target[:128]), test=(X[128:], target[128:]))
    task = jt.Task(Regressor(), input_shape=(12,), loss=lambda out, y: (out - y) ** 2,
                   metrics={"mae": lambda out, y: jnp.abs(out - y)})
    run = jt.imp(task, data, jt.magnitude(0.5), workdir=tmp_path / "reg", **RUN)
    run.close()
    row = run.rows()[-1]
    assert row["final_test_accuracy"] is None and row["final_test_mae"] > 0
    csv_text = (tmp_path / "reg" / "results.csv").read_text()
    assert "final_test_mae" in csv_text.splitlines()[0]
    table, paths = report.write_report(tmp_path / "reg")
    assert "imp test loss" in table and not any(p.name == report.ACCURACY_PLOT for p in paths)
    assert f"{row['final_test_loss']:.4f} (one seed)" in table  # level 1's test loss: one seed, no spread
