"""Pruning at initialization (SNIP, GraSP, SynFlow) against their equations, the inverted
scores, binding to a task and data, and the sanity-check branches of an IMP run."""

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxticket as jt
from jaxticket import data as data_lib
from jaxticket import masks, pruning
from jaxticket.pruning.combinators import Chain, Partition
from jaxticket.pruning.core import Callable_, Configured
from jaxticket.pruning.schedules import PerLevel, ToDensity


class Net(nn.Module):
    bias: bool = True

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(16, use_bias=self.bias, name="hidden")(x))
        return nn.Dense(4, use_bias=self.bias, name="out")(x)


def setup(bias=True, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(32, 6)).astype(np.float32)
    y = (x[:, :4].argmax(1)).astype(np.int32)
    task = jt.Task(Net(bias), input_shape=(6,), tx=optax.sgd(0.1))
    params = jt.init_state(task, init_seed=seed).params
    return task, params, (x, y)


def keep_highest(scores, fraction):
    """NumPy reference: a global mask removing round(fraction * n) lowest (signed) scores."""
    flat = np.concatenate([np.asarray(s).ravel() for s in scores])
    k = int(np.floor(fraction * flat.size + 0.5))
    order = np.argsort(flat, kind="stable")
    keep = np.ones(flat.size, bool)
    keep[order[:k]] = False
    out, start = [], 0
    for s in scores:
        out.append(keep[start:start + np.size(s)].reshape(np.shape(s)))
        start += np.size(s)
    return out


def kernels(tree):
    return [tree["hidden"]["kernel"], tree["out"]["kernel"]]


def loss_fn(task, batch, temperature=1.0):
    x, y = batch
    return lambda p: task.loss(task.model.apply({"params": p}, x) / temperature, y).mean()


def test_snip_is_abs_gradient_times_weight():
    task, params, batch = setup()
    grads = jax.grad(loss_fn(task, batch))(params)
    want = keep_highest([np.abs(g * w) for g, w in zip(kernels(grads), kernels(params))], 0.7)
    mask = pruning.snip(0.7, task=task, batch=batch)(params, masks.ones_like(params))
    for got, ref in zip(kernels(mask.keep), want):
        np.testing.assert_array_equal(np.asarray(got), ref)
    assert np.asarray(mask.keep["hidden"]["bias"]).all()  # biases are not prunable by default


@pytest.mark.parametrize("temperature", [200.0, 1.0])  # the authors' code divides the logits by 200
def test_grasp_removes_the_highest_minus_w_times_hessian_gradient(temperature):
    task, params, batch = setup()
    loss = loss_fn(task, batch, temperature)
    g = jax.grad(loss)(params)
    # the authors' code: gradient and Hessian of the weights only (biases fixed): H_ww g_w
    g_weights = {name: {"kernel": layer["kernel"], "bias": jnp.zeros_like(layer["bias"])} for name, layer in g.items()}
    hvp = lambda v: jax.jvp(jax.grad(loss), (params,), (v,))[1]  # forward-over-reverse Hessian-vector product
    want_scores = [np.asarray(h * w) for h, w in zip(kernels(hvp(g_weights)), kernels(params))]
    all_scores = [np.asarray(h * w) for h, w in zip(kernels(hvp(g)), kernels(params))]  # biases in g: not GraSP's
    grasp = pruning.grasp(0.5, task=task, batch=batch, temperature=temperature)
    got_scores = kernels(grasp.score_tree(params, masks.ones_like(params)))
    scale = max(np.abs(s).max() for s in want_scores)
    for got, want, other in zip(got_scores, want_scores, all_scores):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5 * scale)
    assert max(np.abs(w - o).max() for w, o in zip(want_scores, all_scores)) > 1e-2 * scale  # the test tells them apart
    want = keep_highest(want_scores, 0.5)  # lowest w*Hg = highest S(-w)
    mask = grasp(params, masks.ones_like(params))
    agree = np.mean(np.concatenate([(np.asarray(a) == b).ravel() for a, b in zip(kernels(mask.keep), want)]))
    assert agree > 0.99  # reverse-over-reverse vs forward-over-reverse: float rounding at the threshold
    other = pruning.grasp(0.5, task=task, batch=batch, temperature=201.0 - temperature)(params, masks.ones_like(params))
    assert any((np.asarray(a) != np.asarray(b)).any() for a, b in zip(kernels(mask.keep), kernels(other.keep)))


def test_synflow_conserves_the_flow_and_matches_the_linear_formula():
    task, params, _ = setup(bias=False)
    w1, w2 = (np.abs(np.asarray(k, np.float64)) for k in kernels(params))
    # R = 1^T |W2|^T |W1|^T 1: the flow through w1[i, j] is |w1[i, j]| * sum_k |w2[j, k]|
    s1 = w1 * w2.sum(1)[None, :]
    s2 = w2 * w1.sum(0)[:, None]
    assert np.isclose(s1.sum(), s2.sum())  # every layer carries the whole synaptic flow
    one_shot = pruning.synflow(0.6, task=task, iterations=1)(params, masks.ones_like(params))
    for got, ref in zip(kernels(one_shot.keep), keep_highest([s1, s2], 0.6)):
        np.testing.assert_array_equal(np.asarray(got), ref)
    iterative = pruning.synflow(0.9, task=task)(params, masks.ones_like(params))  # 100 rounds
    kept = sum(int(np.asarray(k).sum()) for k in kernels(iterative.keep))
    assert abs(kept - 0.1 * (6 * 16 + 16 * 4)) <= 2  # the exponential schedule reaches the target
    for k in kernels(iterative.keep):  # SynFlow avoids layer collapse: no layer emptied
        assert np.asarray(k).any()


def test_inverted_scores_remove_the_highest():
    task, params, batch = setup()
    normal = pruning.snip(0.5, task=task, batch=batch)(params, masks.ones_like(params))
    inverse = pruning.inverted(pruning.snip(0.5, task=task, batch=batch))(params, masks.ones_like(params))
    for a, b in zip(kernels(normal.keep), kernels(inverse.keep)):
        np.testing.assert_array_equal(np.asarray(a), ~np.asarray(b))  # exactly complementary at 50%
    mag = pruning.inverted(pruning.partition([("hidden", pruning.magnitude(0.25)), ("out", None)]))
    kept = np.asarray(mag(params, masks.ones_like(params)).keep["hidden"]["kernel"])
    w = np.abs(np.asarray(params["hidden"]["kernel"]))
    assert w[~kept].min() >= w[kept].max()  # the largest quarter went
    with pytest.raises(ValueError, match="not score-based"):
        pruning.inverted(pruning.as_pruner(lambda p, m, k: m))


def test_unbound_pruners_say_what_they_need_and_round_trip():
    task, params, _ = setup()
    with pytest.raises(ValueError, match=r"pruning.snip needs a task and a batch.*\.bind\(task, data\)"):
        pruning.snip(0.5)(params, masks.ones_like(params))
    for p in (pruning.snip(0.5), pruning.grasp(0.3, scope="layer"), pruning.synflow(0.9, iterations=10)):
        again = pruning.from_config(pruning.to_config(p))
        assert pruning.to_config(again) == pruning.to_config(p) and type(again) is type(p)


def test_pruning_at_initialization_runs_with_the_sanity_checks():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = x[:, :4].argmax(1).astype(np.int32)
    data = data_lib.from_arrays(train=(x[:300], y[:300]), test=(x[300:], y[300:]))
    task = jt.Task(Net(), input_shape=(6,), tx=optax.adam(1e-2))
    run = jt.imp(task, data, {"method": "snip", "fraction": 0.75}, levels=1, steps=30, batch_size=30,
                 prune_from="rewind", seeds=2, log=None)
    ticket = run.levels[1]
    np.testing.assert_allclose(ticket.density, 0.25, atol=1e-3)
    # the mask is SNIP's on the *initial* weights (prune_from="rewind", k = 0)
    init = run.rewind_state
    bound = pruning.bind(pruning.snip(0.75), task, data)
    for s in range(2):
        params0 = jax.tree.map(lambda a: a[s], init.params)
        want = bound(params0, masks.ones_like(params0))
        for a, b in zip(kernels(want.keep), kernels(jax.tree.map(lambda a: a[s], ticket.mask.keep))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    shuffle, invert, reinit = (run.branch(kind)[0] for kind in ("shuffle", "invert", "reinit"))
    for branch in (shuffle, invert, reinit):
        np.testing.assert_allclose(branch.density, 0.25, atol=1e-3)
    per_layer = lambda m: [np.asarray(m.keep[l]["kernel"]).reshape(2, -1).sum(1) for l in ("hidden", "out")]  # noqa: E731
    for a, b in zip(per_layer(shuffle.mask), per_layer(ticket.mask)):
        np.testing.assert_array_equal(a, b)  # shuffled within each layer
    overlap = np.asarray(invert.mask.keep["hidden"]["kernel"]) & np.asarray(ticket.mask.keep["hidden"]["kernel"])
    assert overlap.sum() == 0  # the inverted scores kept the other weights


# ----------------------------------------------------------------------------- binding and inverting, generically



def reference_bind(pruner, task, data):
    """``pruning.bind`` as it was before the composite protocol (commit 244c3ba: an
    isinstance ladder over every combinator), kept as the reference its masks must equal."""
    if isinstance(pruner, (pruning.SNIP, pruning.GraSP, pruning.SynFlow)):
        return pruner.bind(task, data)
    if isinstance(pruner, Partition):
        return Partition(tuple((s, None if p is None else reference_bind(p, task, data)) for s, p in pruner.rules))
    if isinstance(pruner, Chain):
        return Chain(tuple(reference_bind(p, task, data) for p in pruner.pruners))
    if isinstance(pruner, Callable_) and isinstance(pruner.fn, Configured):
        return reference_bind(pruner.fn, task, data)
    if isinstance(pruner, Configured):
        return Configured(pruner.method, pruner.settings, reference_bind(pruner.pruner, task, data))
    if isinstance(pruner, PerLevel):
        return PerLevel(tuple(reference_bind(p, task, data) for p in pruner.pruners))
    if isinstance(pruner, ToDensity):
        return ReferenceBoundSchedule(pruner, task, data)
    return pruner


class ReferenceBoundSchedule:
    def __init__(self, schedule, task, data):
        self.schedule, self.task, self.data = schedule, task, data

    def at_level(self, level):
        return reference_bind(self.schedule.at_level(level), self.task, self.data)

    def config(self):
        return self.schedule.config()


def reference_inverted(pruner):
    """``pruning.inverted`` before the composite protocol (commit 244c3ba)."""
    if isinstance(pruner, pruning.Scored):
        return dataclasses.replace(pruner, invert=not pruner.invert)
    if isinstance(pruner, Partition):
        return Partition(tuple((s, None if p is None else reference_inverted(p)) for s, p in pruner.rules))
    if isinstance(pruner, Chain):
        return Chain(tuple(reference_inverted(p) for p in pruner.pruners))
    if isinstance(pruner, Callable_) and isinstance(pruner.fn, Configured):
        return reference_inverted(pruner.fn)
    if isinstance(pruner, Configured):
        return reference_inverted(pruner.pruner)
    if isinstance(pruner, PerLevel):
        return PerLevel(tuple(reference_inverted(p) for p in pruner.pruners))
    raise ValueError("not score-based")


@pruning.register("test_snip_then_keep", overwrite=True)
def snip_then_keep(fraction=0.5):
    """A registered method whose pruner has no plain data of its own (a chain with a lambda):
    built, it is a Configured recording its settings."""
    return pruning.chain(pruning.snip(fraction), lambda params, mask, key: mask)


def composites():
    """Pruners of every shape the protocol covers, SNIP/GraSP/SynFlow inside each."""
    return {
        "snip": pruning.snip(0.5),
        "partition": pruning.partition([("bias", None), ("out", pruning.grasp(0.3)),
                                        ("hidden", pruning.magnitude(0.2))]),
        "chain": pruning.chain(pruning.synflow(0.3, iterations=3), pruning.magnitude(0.1, "global")),
        "per_level": pruning.per_level([pruning.snip(0.5), pruning.chain(pruning.grasp(0.2), pruning.random(0.1))]),
        "to_density": pruning.to_density(0.3, 2, pruning.snip(0.2, scope="layer")),
        "configured": snip_then_keep(0.4),
        "partition of configured": pruning.partition([("hidden", snip_then_keep(0.3)),
                                                      ("out", {"method": "synflow", "fraction": 0.2, "iterations": 2})]),
        "magnitude": pruning.magnitude(0.5, "global"),
    }


def masks_by_level(pruner, params, levels):
    mask, out = masks.ones_like(params), []
    for level in range(1, levels + 1):
        step = pruning.for_level(pruner, level)
        mask = step(params, mask, jax.random.key(level))
        out.append(mask)
    return out


@pytest.mark.parametrize("name", sorted(composites()))
def test_bind_and_inverted_give_the_masks_of_before(name):
    task, params, (x, y) = setup()
    data = data_lib.from_arrays(train=(x, y), test=(x, y))
    pruner = composites()[name]
    levels = getattr(pruner, "levels", 1)
    bound, reference = pruning.bind(pruner, task, data), reference_bind(pruner, task, data)
    for new, old in zip(masks_by_level(bound, params, levels), masks_by_level(reference, params, levels)):
        chex.assert_trees_all_equal(new.keep, old.keep)
    assert pruning.to_config(bound) == pruning.to_config(reference) == pruning.to_config(pruner)  # saved as before
    if name == "to_density":  # inverted: new (a level schedule of Scored); before it raised
        inverse = pruning.inverted(bound)
        ones = masks.ones_like(params)
        for level in (1, 2):  # each level's pruner is that level's pruner inverted (the same masks)
            key = jax.random.key(level)
            mine = pruning.for_level(inverse, level)(params, ones, key)
            expected = pruning.inverted(pruning.for_level(bound, level))(params, ones, key)
            chex.assert_trees_all_equal(mine.keep, expected.keep)
        with pytest.raises(ValueError, match="no plain-data form"):
            pruning.to_config(inverse)  # it does not claim to be the schedule it came from
        return
    if name in ("configured", "partition of configured"):
        with pytest.raises(ValueError, match="not score-based"):  # the lambda in the chain
            pruning.inverted(bound)
        with pytest.raises(ValueError, match="not score-based"):
            reference_inverted(bound)
        return
    for new, old in zip(masks_by_level(pruning.inverted(bound), params, levels),
                        masks_by_level(reference_inverted(bound), params, levels)):
        chex.assert_trees_all_equal(new.keep, old.keep)


def test_inverting_a_registered_method_drops_its_settings():
    @pruning.register("test_two_magnitudes", overwrite=True)
    def two_magnitudes(fraction=0.2):
        return pruning.partition([("hidden", pruning.magnitude(fraction)), (lambda path, leaf: "out" in path,
                                                                          pruning.magnitude(fraction))])

    built = two_magnitudes(0.25)
    assert isinstance(built, Configured) and pruning.to_config(built) == {"method": "test_two_magnitudes",
                                                                          "fraction": 0.25}
    inverse = pruning.inverted(built)
    assert not isinstance(inverse, Configured)  # its settings describe the pruner before inversion
    with pytest.raises(ValueError):
        pruning.to_config(inverse)  # a predicate selector: no plain data, so the run describes it by hash
    assert pruning.describe(inverse) != pruning.describe(built)
    assert pruning.describe(inverse) != pruning.describe(pruning.inverted(two_magnitudes(0.3)))


@dataclasses.dataclass(frozen=True)
class Twice(pruning.Pruner):
    """A combinator of the test's own: its pruner applied twice. It implements the protocol
    (children, with_children) and nothing else; bind and inverted work on it unchanged."""

    pruner: object

    @property
    def needs_key(self):
        return self.pruner.needs_key

    def children(self):
        return (self.pruner,)

    def with_children(self, children):
        return Twice(children[0])

    def compute(self, params, mask, key):
        return self.pruner.compute(params, self.pruner.compute(params, mask, key), key)


def test_a_new_combinator_needs_nothing_in_bind_or_inverted():
    task, params, (x, y) = setup()
    data = data_lib.from_arrays(train=(x, y), test=(x, y))
    ones = masks.ones_like(params)
    bound = pruning.bind(Twice(pruning.snip(0.5)), task, data)
    once = pruning.bind(pruning.snip(0.5), task, data)
    chex.assert_trees_all_equal(bound(params, ones).keep, once(params, once(params, ones)).keep)
    inverse = pruning.inverted(Twice(pruning.magnitude(0.25)))
    flipped = dataclasses.replace(pruning.magnitude(0.25), invert=True)
    chex.assert_trees_all_equal(inverse(params, ones).keep, flipped(params, flipped(params, ones)).keep)
    assert [type(p).__name__ for p in pruning.leaves(Twice(pruning.chain(pruning.magnitude(0.1), pruning.random(0.1))))] \
        == ["Magnitude", "RandomUnstructured"]
