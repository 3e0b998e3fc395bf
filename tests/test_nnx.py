"""Flax NNX models through the engine: ``Task.from_nnx`` against the same Linen model,
BatchNorm and dropout, IMP with a branch and an instability sweep, the command line with
``--import``, and the trained module given back."""

import functools
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxticket as jt
from jaxticket import masks, train

RNG = np.random.default_rng(0)
X = RNG.normal(size=(160, 12)).astype(np.float32)
Y = X[:, :4].argmax(1).astype(np.int32)
DATA = jt.data.from_arrays(train=(X[:128], Y[:128]), test=(X[128:], Y[128:]))
RUN = dict(levels=2, steps=20, batch_size=32, log=None, progress=False)
# Equivalence tolerance: the NNX and Linen steps are the same XLA operations on the same
# arrays; losses and weights agree to float32 rounding (we allow 1e-6 relative).
RTOL, ATOL = 1e-6, 1e-6


class LinenMLP(nn.Module):
    batch_norm: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(16, name="hidden")(x)
        if self.batch_norm:
            x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
        return nn.Dense(4, name="out")(nn.relu(x))


class MLP(nnx.Module):
    """The same network in NNX; ``init`` (Linen params) sets its weights when given."""

    def __init__(self, rngs: nnx.Rngs, batch_norm: bool = False, dropout: float = 0.0, init=None):
        def w(name, leaf):  # an initializer returning the Linen model's weight
            return None if init is None else (lambda *_: init[name][leaf])

        def linear(din, dout, name):
            kw = {} if init is None else {"kernel_init": w(name, "kernel"), "bias_init": w(name, "bias")}
            return nnx.Linear(din, dout, rngs=rngs, **kw)

        self.hidden = linear(12, 16, "hidden")
        self.bn = nnx.BatchNorm(16, rngs=rngs) if batch_norm else None
        self.drop = nnx.Dropout(dropout, rngs=rngs) if dropout else None
        self.out = linear(16, 4, "out")

    def __call__(self, x):
        x = self.hidden(x)
        if self.bn is not None:
            x = self.bn(x)
        x = nnx.relu(x)
        if self.drop is not None:
            x = self.drop(x)
        return self.out(x)


def like_linen(rngs, batch_norm=False):
    """The NNX model holding the Linen model's init for the same key (the Rngs' key)."""
    key = rngs.default.key[...]
    init = LinenMLP(batch_norm).init(key, jnp.zeros((1, 12)))["params"]
    return MLP(rngs, batch_norm=batch_norm, init=init)


def _close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=RTOL, atol=ATOL)


@pytest.mark.slow
def test_nnx_and_linen_train_identically_under_imp(batch_norm=True):
    tx = optax.sgd(0.1, momentum=0.9)
    linen = jt.Task(LinenMLP(batch_norm), input_shape=(12,), tx=tx)
    ours = jt.Task.from_nnx(functools.partial(like_linen, batch_norm=batch_norm), input_shape=(12,), tx=tx)
    assert ours.name == "MLP" and jax.tree.map(jnp.shape, ours.abstract_params()) == \
        jax.tree.map(jnp.shape, linen.abstract_params())
    a = jt.imp(linen, DATA, jt.magnitude(0.5), rewind_step=5, **RUN)
    b = jt.imp(ours, DATA, jt.magnitude(0.5), rewind_step=5, **RUN)
    for level in range(3):
        la, lb = a.levels[level], b.levels[level]
        assert jax.tree.map(np.asarray, la.mask.keep).keys() == lb.mask.keep.keys()
        for x, y in zip(jax.tree.leaves(la.mask.keep), jax.tree.leaves(lb.mask.keep), strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        _close(la.params, lb.params)
        _close(la.batch_stats, lb.batch_stats)
        def losses(history):
            return [np.hstack([r.get("train_loss", np.nan), r["test_loss"]]) for r in history]

        np.testing.assert_allclose(losses(la.history), losses(lb.history), rtol=RTOL, atol=ATOL)
    if batch_norm:
        assert jax.tree.leaves(b.levels[2].batch_stats)[0].std() > 0  # statistics were updated


def test_init_seed_is_the_factory_with_nnx_rngs_of_that_seed():
    task = jt.Task.from_nnx(lambda rngs: MLP(rngs, batch_norm=True), input_shape=(12,))
    state = train.init_state(task, init_seed=3)
    model = MLP(nnx.Rngs(3), batch_norm=True)
    np.testing.assert_array_equal(state.params["hidden"]["kernel"], model.hidden.kernel[...])
    np.testing.assert_array_equal(state.batch_stats["bn"]["var"], model.bn.var[...])
    assert sorted(state.params) == ["bn", "hidden", "out"]
    assert task == jt.Task.from_nnx(task.model.make_model, input_shape=(12,), tx=task.tx)
    assert jt.Task.from_nnx(functools.partial(MLP, batch_norm=True), (12,)).model == \
        jt.Task.from_nnx(functools.partial(MLP, batch_norm=True), (12,)).model  # partials compare by value
    described = task.describe()
    assert described["name"] == "MLP" and described["params"]["hidden"]["kernel"] == [12, 16]
    assert "0x" not in described["model"]  # no memory address: the run directory's identity is stable


def test_dropout_draws_from_the_step_key_and_not_in_evaluation():
    task = jt.Task.from_nnx(lambda rngs: MLP(rngs, dropout=0.5), input_shape=(12,))
    variables = task.init_variables(jax.random.key(0))
    x = jnp.ones((8, 12))

    def fwd(key, train):
        return task.forward(variables["params"], {}, x, train=train, dropout_key=key)[0]

    k1, k2 = jax.random.key(1), jax.random.key(2)
    np.testing.assert_array_equal(fwd(k1, True), fwd(k1, True))
    assert not np.array_equal(fwd(k1, True), fwd(k2, True))
    np.testing.assert_array_equal(fwd(k1, False), fwd(k2, False))  # evaluation: no dropout
    np.testing.assert_array_equal(fwd(None, False), task.model.apply(variables, x, train=False))


def test_an_instance_where_the_factory_belongs_gets_one_line():
    with pytest.raises(TypeError, match=r"pass a function rngs -> module, e\.g\. .*lambda rngs: CNN\(rngs=rngs\)"):
        jt.Task.from_nnx(MLP(nnx.Rngs(0)), input_shape=(12,))
    with pytest.raises(TypeError, match=r"use Task\.from_nnx\(lambda rngs: MLP"):
        jt.Task(MLP(nnx.Rngs(0)), input_shape=(12,))
    with pytest.raises(TypeError, match="not an nnx.Module"):
        jt.Task.from_nnx(lambda rngs: LinenMLP(), input_shape=(12,))


def test_state_other_than_params_and_batch_stats_is_refused():
    class Counter(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(12, 4, rngs=rngs)
            self.calls = nnx.Variable(jnp.zeros(()))

        def __call__(self, x):
            return self.lin(x)

    with pytest.raises(ValueError, match=r"calls \(Variable\)"):
        jt.Task.from_nnx(lambda rngs: Counter(rngs), input_shape=(12,))


@pytest.mark.slow
def test_imp_branch_sweep_and_the_module_back_with_dropout(tmp_path):
    task = jt.Task.from_nnx(lambda rngs: MLP(rngs, dropout=0.25), input_shape=(12,), tx=optax.adam(1e-2))
    run = jt.imp(task, DATA, jt.magnitude(0.5), workdir=tmp_path / "imp", seeds=2, **dict(RUN, levels=1))
    reinit = run.branch("reinit", levels=[1])[0]
    assert reinit.density.tolist() == pytest.approx(run.levels[1].density.tolist())
    level = run.levels[1]
    model = task.to_nnx(level.params, level.batch_stats, mask=level.mask, replica=1)
    assert isinstance(model, MLP)
    keep = np.asarray(level.mask.keep["hidden"]["kernel"][1])
    assert (np.asarray(model.hidden.kernel[...])[~keep] == 0).all() and (~keep).sum() > 0
    state = train.replica(run.final_state(1), 1)
    logits, _ = task.forward(masks.apply(state.params, state.mask), state.batch_stats, X[128:], train=False)
    np.testing.assert_allclose(model(X[128:]), logits, rtol=1e-6, atol=1e-6)
    rows = jt.instability_sweep(task, DATA, jt.magnitude(0.5), ks=[5], levels=[0], workdir=tmp_path / "lmc",
                                steps=10, batch_size=32, copies=2, num_alphas=3, progress=False, log=None)
    assert [r["k"] for r in rows] == [5] and np.isfinite(rows[0]["test_barrier"])


@pytest.mark.slow
def test_pruning_at_init_on_an_nnx_task():
    task = jt.Task.from_nnx(lambda rngs: MLP(rngs, batch_norm=True), input_shape=(12,))
    params = train.init_state(task).params
    for pruner in (jt.pruning.snip(0.5), jt.pruning.grasp(0.5), jt.pruning.synflow(0.5, iterations=2)):
        mask = jt.pruning.bind(pruner, task, DATA)(params, masks.ones_like(params), jax.random.key(0))
        assert 0.3 < float(masks.density(mask)) < 0.7, type(pruner).__name__


PLUGIN = textwrap.dedent('''
    import functools
    from flax import nnx
    import jaxticket as jt

    class DigitsMLP(nnx.Module):
        def __init__(self, rngs, num_classes=10):
            self.fc1 = nnx.Linear(64, 32, rngs=rngs)
            self.output = nnx.Linear(32, num_classes, rngs=rngs)

        def __call__(self, x):
            return self.output(nnx.relu(self.fc1(x.reshape(x.shape[0], -1))))

    def digits_mlp(num_classes=10):
        return jt.train.NNXModel(functools.partial(DigitsMLP, num_classes=num_classes))

    jt.models.register_model("nnx_digits_mlp", digits_mlp, input_shape=(8, 8, 1), overwrite=True)
''')


@pytest.mark.slow
def test_the_command_line_with_an_nnx_model_from_import(tmp_path, monkeypatch, capsys):
    from jaxticket import cli

    (tmp_path / "nnx_plugin_for_tests.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = str(tmp_path / "run")
    common = ["--import", "nnx_plugin_for_tests", "--no-compilation-cache"]
    tiny = ["--set", "model=nnx_digits_mlp", "--steps", "10", "--batch-size", "32", "--seeds", "1",
            "--set", "eval_every=10", "--no-progress"]
    assert cli.main(["imp", "--config", "demo", "--workdir", run, "--levels", "1", *tiny, *common]) == 0
    assert cli.main(["branch", run, "--kind", "reinit", "--levels", "1", *common]) == 0
    lmc = str(tmp_path / "lmc")
    assert cli.main(["instability", "--config", "demo", "--workdir", lmc, "--ks", "5", "--copies", "2",
                     "--alphas", "3", *tiny, *common]) == 0
    assert '"model": "nnx_digits_mlp"' in (tmp_path / "run" / "config.json").read_text()
    assert (tmp_path / "run" / "branches" / "reinit").is_dir() and (tmp_path / "lmc" / "results.json").is_file()


def test_weight_matching_uses_the_spec_registered_for_the_nnx_class():
    from jaxticket import alignment, models
    from jaxticket.models.permutations import Axis

    class Pair(MLP):  # a class of its own: the registry is global
        pass

    @models.register_permutation_spec(Pair)
    def _pair_spec(module, params):
        assert isinstance(module, Pair)  # the abstract module: attributes, no arrays
        return {"hidden": (Axis("hidden/kernel", -1), Axis("hidden/bias", 0), Axis("out/kernel", 0))}

    task = jt.Task.from_nnx(lambda rngs: Pair(rngs), input_shape=(12,))
    a, b = (task.init_variables(jax.random.key(s))["params"] for s in (0, 1))
    spec = models.permutation_spec(task.model, a)
    moved, _, _ = alignment.permute(spec, alignment.weight_matching(spec, a, b), b, {}, masks.ones_like(b))
    x = jnp.asarray(X[:8])
    np.testing.assert_allclose(task.apply({"params": moved}, x, train=False),
                               task.apply({"params": b}, x, train=False), rtol=1e-5, atol=1e-5)
    assert not np.allclose(moved["hidden"]["kernel"], b["hidden"]["kernel"])
