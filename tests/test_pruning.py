"""Pruners: exact counts, masks only shrink, scopes against NumPy, structure, jit/vmap."""

import functools
import math
from fractions import Fraction

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

import jaxticket as jt
from jaxticket import data as data_lib
from jaxticket import masks, models, pruning
from jaxticket.registry import UnknownNameError

# ----------------------------------------------------------------------------- helpers

SHAPES = [(4, 3), (5, 2, 3), (2, 2, 3, 4), (7, 1)]


def round_half_up(fraction, n):
    """The documented removal count, computed independently with exact rationals."""
    ratio = Fraction(float(fraction)).limit_denominator(2**15)
    return math.floor(ratio * n + Fraction(1, 2))


def reference_count(fraction, n, rounding):
    """round(fraction * n) by each documented rule, with exact rationals and Python's round."""
    x = Fraction(float(fraction)).limit_denominator(2**15) * n
    return {"half_up": math.floor(x + Fraction(1, 2)), "half_even": round(x), "ceil": math.ceil(x)}[rounding]


@st.composite
def trees(draw, min_leaves=1, max_leaves=4):
    """A dict of kernels (ndim >= 2, distinct |w|) plus a bias, and a random prior mask."""
    n = draw(st.integers(min_leaves, max_leaves))
    shapes = [draw(st.sampled_from(SHAPES)) for _ in range(n)]
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    params, keep = {}, {}
    for i, shape in enumerate(shapes):
        params[f"layer{i}"] = {
            "kernel": rng.standard_normal(shape).astype(np.float32),
            "bias": rng.standard_normal(shape[-1]).astype(np.float32),
        }
        keep[f"layer{i}"] = {
            "kernel": rng.random(shape) < draw(st.sampled_from([1.0, 0.9, 0.5])),
            "bias": np.ones(shape[-1], bool),
        }
    mask = masks.from_tree(keep)
    return jax.tree.map(jnp.asarray, params), mask


def np_leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def reference_unstructured(params, mask, fraction, scope):
    """NumPy reference for magnitude pruning: stable sort by (|w|, position)."""
    ws, ks = np_leaves(params), np_leaves(mask.keep)
    idx = [i for i, f in enumerate(mask.prunable) if f]
    out = [k.copy() for k in ks]
    groups = [[i] for i in idx] if scope == "layer" else [idx]
    for group in groups:
        scores = np.concatenate([np.abs(ws[i]).ravel() for i in group])
        alive = np.concatenate([ks[i].ravel() for i in group])
        k = round_half_up(fraction, int(alive.sum()))
        order = np.argsort(np.where(alive, scores, np.inf), kind="stable")
        removed = np.zeros(alive.shape, bool)
        removed[order[:k]] = True
        start = 0
        for i in group:
            n = ks[i].size
            out[i] = ks[i] & ~removed[start:start + n].reshape(ks[i].shape)
            start += n
    return out


def reference_structured(params, mask, fraction, n):
    ws, ks = np_leaves(params), np_leaves(mask.keep)
    out = [k.copy() for k in ks]
    for i, flag in enumerate(mask.prunable):
        if not flag:
            continue
        w = np.abs(ws[i]).reshape(-1, ws[i].shape[-1]).astype(np.float64)
        alive = ks[i].reshape(-1, ws[i].shape[-1])
        if n == 1:
            score = (w * alive).sum(0)
        elif n == 2:
            score = np.sqrt((w**2 * alive).sum(0))
        elif n == math.inf:
            score = np.where(alive, w, 0).max(0)
        else:
            score = np.where(alive, w, np.inf).min(0)
        ch_alive = alive.any(0)
        k = round_half_up(fraction, int(ch_alive.sum()))
        order = np.argsort(np.where(ch_alive, score, np.inf), kind="stable")
        removed = np.zeros(ch_alive.shape, bool)
        removed[order[:k]] = True
        out[i] = ks[i] & ~removed
    return out


def assert_subset_and_fixed(old, new):
    for o, n, flag in zip(np_leaves(old.keep), np_leaves(new.keep), old.prunable):
        assert not np.any(n & ~o), "a pruned weight was revived"
        if not flag:
            assert n.all(), "a non-prunable leaf was touched"
    assert new.prunable == old.prunable


fractions = st.sampled_from([0.0, 0.1, 0.2, 0.25, 0.5, 0.75, 1.0, 0.3333])

# ----------------------------------------------------------------------------- properties


@settings(max_examples=6, deadline=None)
@given(trees(), fractions, st.sampled_from(["layer", "global"]))
def test_magnitude_matches_numpy_reference(tree, fraction, scope):
    params, mask = tree
    new = pruning.magnitude(fraction, scope, allow_empty=True)(params, mask)
    assert_subset_and_fixed(mask, new)
    for got, want in zip(np_leaves(new.keep), reference_unstructured(params, mask, fraction, scope)):
        np.testing.assert_array_equal(got, want)


@settings(max_examples=6, deadline=None)
@given(trees(), fractions, st.sampled_from([1, 2, math.inf, -math.inf]))
def test_ln_structured_matches_numpy_and_removes_whole_channels(tree, fraction, n):
    params, mask = tree
    new = pruning.ln_structured(fraction, n=n, allow_empty=True)(params, mask)
    assert_subset_and_fixed(mask, new)
    expected = reference_structured(params, mask, fraction, n)
    for old, got, want, flag in zip(np_leaves(mask.keep), np_leaves(new.keep), expected, mask.prunable):
        np.testing.assert_array_equal(got, want)
        if flag:  # every channel either keeps all its survivors or loses all of them
            lost = (old & ~got).reshape(-1, old.shape[-1])
            survivors = old.reshape(-1, old.shape[-1])
            touched = lost.any(0)
            np.testing.assert_array_equal(lost[:, touched], survivors[:, touched])


@settings(max_examples=5, deadline=None)
@given(trees(), fractions, st.sampled_from(["layer", "global"]), st.integers(0, 2**31 - 1))
def test_random_unstructured_exact_counts(tree, fraction, scope, seed):
    params, mask = tree
    new = pruning.random(fraction, scope, allow_empty=True)(params, mask, jax.random.key(seed))
    assert_subset_and_fixed(mask, new)
    old_k = [k for k, f in zip(np_leaves(mask.keep), mask.prunable) if f]
    new_k = [k for k, f in zip(np_leaves(new.keep), mask.prunable) if f]
    if scope == "layer":
        for o, nk in zip(old_k, new_k):
            assert o.sum() - nk.sum() == round_half_up(fraction, int(o.sum()))
    else:
        before = sum(int(o.sum()) for o in old_k)
        assert before - sum(int(nk.sum()) for nk in new_k) == round_half_up(fraction, before)


@settings(max_examples=6, deadline=None)
@given(trees(), fractions, st.integers(0, 2**31 - 1))
def test_random_structured_exact_channel_counts(tree, fraction, seed):
    params, mask = tree
    new = pruning.random_structured(fraction, allow_empty=True)(params, mask, jax.random.key(seed))
    assert_subset_and_fixed(mask, new)
    for o, nk, f in zip(np_leaves(mask.keep), np_leaves(new.keep), mask.prunable):
        if f:
            ch_before = o.reshape(-1, o.shape[-1]).any(0)
            ch_after = nk.reshape(-1, nk.shape[-1]).any(0)
            assert ch_before.sum() - ch_after.sum() == round_half_up(fraction, int(ch_before.sum()))
            removed = ch_before & ~ch_after
            assert not nk.reshape(-1, nk.shape[-1])[:, removed].any()
            np.testing.assert_array_equal(  # surviving channels are untouched
                nk.reshape(-1, nk.shape[-1])[:, ~removed], o.reshape(-1, o.shape[-1])[:, ~removed]
            )


@settings(max_examples=6, deadline=None)
@given(st.sampled_from([0.1, 0.2, 0.5]), st.integers(1, 6), st.sampled_from(["layer", "global"]))
def test_density_arithmetic_over_levels(fraction, levels, scope):
    rng = np.random.default_rng(levels)
    params = {"a": {"kernel": jnp.asarray(rng.standard_normal((40, 30)), jnp.float32)},
              "b": {"kernel": jnp.asarray(rng.standard_normal((30, 10)), jnp.float32)}}
    mask = masks.ones_like(params)
    pruner = pruning.magnitude(fraction, scope)
    expected = 1500
    for _ in range(levels):
        mask = pruner(params, mask)
        expected -= round_half_up(fraction, expected) if scope == "global" else 0
    kept, total = masks.count(mask)
    if scope == "layer":
        expected = 0
        for n in (1200, 300):
            for _ in range(levels):
                n -= round_half_up(fraction, n)
            expected += n
    assert int(kept) == expected
    assert float(masks.density(mask)) == pytest.approx((1 - fraction) ** levels, abs=4 / total * levels)


def test_density_is_point_eight_to_the_l_on_lenet():
    rng = np.random.default_rng(0)
    params = {"fc1": {"kernel": rng.standard_normal((784, 300)), "bias": np.zeros(300)},
              "fc2": {"kernel": rng.standard_normal((300, 100)), "bias": np.zeros(100)},
              "output": {"kernel": rng.standard_normal((100, 10)), "bias": np.zeros(10)}}
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    mask = masks.ones_like(params)
    prune = jax.jit(pruning.magnitude(0.2, "global"))
    for level in range(1, 6):
        mask = prune(params, mask)
        assert abs(float(masks.density(mask)) - 0.8**level) < 1e-5


# ----------------------------------------------------------------------------- ties, keys


def test_ties_broken_by_position():
    params = {"a": {"kernel": jnp.zeros((3, 4))}, "b": {"kernel": jnp.zeros((2, 4))}}
    mask = masks.ones_like(params)
    new = pruning.magnitude(0.35, "global")(params, mask)  # round(0.35 * 20) = 7
    flat = np.concatenate([np.asarray(new.keep["a"]["kernel"]).ravel(), np.asarray(new.keep["b"]["kernel"]).ravel()])
    np.testing.assert_array_equal(flat, np.arange(20) >= 7)
    layer = pruning.magnitude(0.5, "layer")(params, mask)
    np.testing.assert_array_equal(np.asarray(layer.keep["a"]["kernel"]).ravel(), np.arange(12) >= 6)


def test_removal_count_is_exact_for_large_counts():
    assert int(pruning.removal_count(0.2, 25_557_032)) == 5_111_406
    assert int(pruning.removal_count(0.5, 5)) == 3  # half up
    assert int(pruning.removal_count(0.1, 266_200)) == 26_620
    assert int(jax.jit(pruning.removal_count, static_argnums=0)(0.15, 2_261_184)) == round_half_up(0.15, 2_261_184)


def test_random_pruners_are_deterministic_per_key_and_differ_across_keys():
    rng = np.random.default_rng(1)
    params = {"k": {"kernel": jnp.asarray(rng.standard_normal((50, 40)), jnp.float32)}}
    mask = masks.ones_like(params)
    for pruner in (pruning.random(0.5), pruning.random_structured(0.5)):
        a = pruner(params, mask, jax.random.key(0))
        b = pruner(params, mask, jax.random.key(0))
        c = pruner(params, mask, jax.random.key(1))
        chex.assert_trees_all_equal(a.keep, b.keep)
        assert not np.array_equal(np.asarray(a.keep["k"]["kernel"]), np.asarray(c.keep["k"]["kernel"]))


def test_random_like_preserves_counts():
    rng = np.random.default_rng(2)
    params = {"a": {"kernel": jnp.asarray(rng.standard_normal((30, 20)), jnp.float32), "bias": jnp.zeros(20)},
              "b": {"kernel": jnp.asarray(rng.standard_normal((20, 10)), jnp.float32), "bias": jnp.zeros(10)}}
    mask = pruning.magnitude(0.7, "global")(params, masks.ones_like(params))
    per_layer = pruning.random_like(mask, jax.random.key(0), scope="layer")
    for old, new, flag in zip(np_leaves(mask.keep), np_leaves(per_layer.keep), mask.prunable):
        assert old.sum() == new.sum()
        if flag:
            assert not np.array_equal(old, new)
    glob = pruning.random_like(mask, jax.random.key(0), scope="global")
    assert int(masks.count(glob)[0]) == int(masks.count(mask)[0])
    assert all(leaf.all() for leaf, f in zip(np_leaves(glob.keep), glob.prunable) if not f)
    again = jax.jit(pruning.random_like, static_argnames="scope")(mask, jax.random.key(0), scope="layer")
    chex.assert_trees_all_equal(again.keep, per_layer.keep)


# ----------------------------------------------------------------------------- partition


def lenet():
    rng = np.random.default_rng(3)
    shapes = {"fc1": (784, 300), "fc2": (300, 100), "output": (100, 10)}
    return {name: {"kernel": jnp.asarray(rng.standard_normal(s), jnp.float32), "bias": jnp.zeros(s[1])}
            for name, s in shapes.items()}


def test_partition_frankle_carbin_lenet_rates():
    params = lenet()
    pruner = pruning.partition([("output/kernel", pruning.magnitude(0.1)), (r"kernel$", pruning.magnitude(0.2))])
    mask = masks.ones_like(params)
    for _ in range(2):
        mask = pruner(params, mask)
    rows = {r.path: r for r in masks.summary(mask).rows}
    assert rows["fc1/kernel"].kept == 235_200 - 47_040 - 37_632
    assert rows["fc2/kernel"].kept == 30_000 - 6_000 - 4_800
    assert rows["output/kernel"].kept == 1000 - 100 - 90
    assert rows["fc1/bias"].kept == rows["fc1/bias"].total


def test_partition_hybrid_fc_only_and_protection():
    rng = np.random.default_rng(4)
    params = {"conv1": {"kernel": jnp.asarray(rng.standard_normal((3, 3, 3, 8)), jnp.float32)},
              "conv2": {"kernel": jnp.asarray(rng.standard_normal((3, 3, 8, 16)), jnp.float32)},
              "fc1": {"kernel": jnp.asarray(rng.standard_normal((64, 32)), jnp.float32)},
              "output": {"kernel": jnp.asarray(rng.standard_normal((32, 10)), jnp.float32)}}
    mask = masks.ones_like(params)
    hybrid = pruning.partition([(r"conv", pruning.ln_structured(0.25, n=1)),
                                (r"fc|output", pruning.magnitude(0.2))])
    h = hybrid(params, mask)
    conv1 = np.asarray(h.keep["conv1"]["kernel"])
    assert (~conv1.reshape(-1, 8).any(0)).sum() == 2 and conv1.reshape(-1, 8).all(0).sum() == 6
    assert np.asarray(h.keep["fc1"]["kernel"]).sum() == 2048 - 410
    fc_only = pruning.partition([(r"^fc", pruning.magnitude(0.5))])(params, mask)
    assert np.asarray(fc_only.keep["conv2"]["kernel"]).all() and np.asarray(fc_only.keep["output"]["kernel"]).all()
    assert np.asarray(fc_only.keep["fc1"]["kernel"]).sum() == 1024
    protected = pruning.partition([("output", None), ("kernel", pruning.magnitude(0.5, "global"))])(params, mask)
    assert np.asarray(protected.keep["output"]["kernel"]).all()
    kept = sum(np.asarray(protected.keep[n]["kernel"]).sum() for n in ("conv1", "conv2", "fc1"))
    assert kept == (216 + 1152 + 2048) // 2
    # global within a rule equals global over the same leaves alone
    sub = {n: params[n] for n in ("conv1", "conv2", "fc1")}
    alone = pruning.magnitude(0.5, "global")(sub, masks.ones_like(sub))
    for n in sub:
        np.testing.assert_array_equal(np.asarray(alone.keep[n]["kernel"]), np.asarray(protected.keep[n]["kernel"]))


def test_partition_and_chain_keys():
    params = lenet()
    mask = masks.ones_like(params)
    rand = pruning.partition([("fc", pruning.random(0.5)), ("output", pruning.magnitude(0.5))])
    assert rand.needs_key
    with pytest.raises(ValueError, match="needs a key"):
        rand(params, mask)
    a = rand(params, mask, jax.random.key(0))
    assert int(masks.count(a)[0]) == 266_200 - 117_600 - 15_000 - 500
    both = pruning.chain(pruning.ln_structured(0.1), pruning.magnitude(0.2))
    c = both(params, mask)
    assert int(np.asarray(c.keep["fc2"]["kernel"]).sum()) == round(30_000 * 0.9 * 0.8)


# ----------------------------------------------------------------------------- the contract, every method

# Every registered method on each of its registered examples (pruning.register(...,
# examples=...)): a new method is covered without editing a list. The params are a 20-12-5
# network with biases, as a 3-seed stack; SNIP, GraSP and SynFlow score them with the same
# network (lenet_12) and a batch (pruning.bind).
SEEDS = 3


def contract_params():
    rng = np.random.default_rng(5)
    params = {"fc1": {"kernel": rng.standard_normal((SEEDS, 20, 12)), "bias": rng.standard_normal((SEEDS, 12))},
              "output": {"kernel": rng.standard_normal((SEEDS, 12, 5)), "bias": rng.standard_normal((SEEDS, 5))}}
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)


@functools.lru_cache(maxsize=None)
def contract_task_and_data():
    task = jt.Task(models.get("lenet_12", num_classes=5), input_shape=(4, 5, 1), tx=optax.sgd(0.1))
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(16, 4, 5, 1)).astype(np.float32), rng.integers(0, 5, 16).astype(np.int32)
    return task, data_lib.from_arrays(train=(x, y), test=(x, y))


def registered_examples():
    return [pytest.param(name, settings, id=f"{name}-{i}")
            for name in pruning.methods() for i, settings in enumerate(pruning.examples(name))]


def alive_units(step, keep):
    """Surviving weights, or for a channel pruner surviving channels (any weight alive)."""
    keep = np.asarray(keep)
    if step.unit == "weight":
        return int(keep.sum())
    axis = getattr(step, "axis", -1)
    return int(np.moveaxis(keep, axis, -1).reshape(-1, keep.shape[axis]).any(0).sum())


def assert_counts(step, before, after):
    """The counts a pruner promises: a Scored step removes round(fraction * alive) in each
    scope (checked with the test's own rationals); any step's ``survivors`` prediction,
    where it makes one, is what happened."""
    idx = [i for i, flag in enumerate(before.prunable) if flag]
    old, new = before.leaves(), after.leaves()
    if isinstance(step, pruning.Scored):
        groups = [[i] for i in idx] if step.scope == "layer" else [idx]
        for g in groups:
            n = sum(alive_units(step, old[i]) for i in g)
            assert sum(alive_units(step, new[i]) for i in g) == n - reference_count(step.fraction, n, step.rounding)
    known = step.survivors(pruning.Survivors.of(before))
    if known is not None:
        for i, count in enumerate(known.counts):
            if count is not None:
                assert int(np.asarray(new[i]).sum()) == count
        for members, total in known.pools:
            assert sum(int(np.asarray(new[i]).sum()) for i in members) == total


def test_every_built_in_method_has_examples():
    built_in = [name for name in pruning.methods()
                if getattr(pruning.METHODS.get(name), "__module__", "").startswith("jaxticket.")]
    assert {"magnitude", "random", "ln_structured", "random_structured", "by_score", "partition", "chain",
            "per_level", "to_density", "snip", "grasp", "synflow"} <= set(built_in)
    missing = [name for name in built_in if not pruning.examples(name)]
    assert not missing, f"registered without examples=: {missing} (the contract test below cannot run them)"


@pytest.mark.parametrize("method, settings", registered_examples())
def test_every_registered_method_keeps_the_contract(method, settings):
    """mask' is a subset of mask, non-prunable leaves untouched, jit and vmap give what the
    eager call gives, the same call gives the same mask, the counts are the documented ones;
    a level schedule at each of its levels in turn."""
    task, data = contract_task_and_data()
    built = pruning.bind(pruning.from_config({"method": method, **settings}), task, data)
    is_schedule = callable(getattr(built, "at_level", None))
    steps = [pruning.for_level(built, level) for level in range(1, (built.levels if is_schedule else 1) + 1)]
    params = contract_params()
    one = jax.tree.map(lambda x: x[0], params)
    prior = pruning.magnitude(0.4)(one, masks.ones_like(one))  # a non-trivial starting mask
    mask = jax.tree.map(lambda x: jnp.stack([x] * SEEDS), prior)
    keys = jax.random.split(jax.random.key(7), SEEDS)
    for step in steps:
        batched = jax.vmap(step)(params, mask, keys)
        jitted = jax.jit(step)
        for s in range(SEEDS):
            p_s, m_s = jax.tree.map(lambda x: x[s], params), jax.tree.map(lambda x: x[s], mask)
            single = jitted(p_s, m_s, keys[s])
            chex.assert_trees_all_equal(single.keep, jitted(p_s, m_s, keys[s]).keep)  # deterministic
            if s == 0:  # op by op (each new shape compiles every op: once is enough)
                chex.assert_trees_all_equal(single.keep, step(p_s, m_s, keys[s]).keep)
            chex.assert_trees_all_equal(single.keep, jax.tree.map(lambda x: x[s], batched.keep))
            assert_subset_and_fixed(m_s, single)
            assert_counts(step, m_s, single)
        assert batched.prunable == prior.prunable
        mask = batched


# ----------------------------------------------------------------------------- bad input


def test_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\].*1.5"):
        pruning.magnitude(1.5)
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\]"):
        pruning.random(-0.1)
    with pytest.raises(ValueError, match="fraction must be a number"):
        pruning.magnitude("lots")
    with pytest.raises(ValueError, match=r"scope must be one of \('layer', 'global'\), got 'model'"):
        pruning.magnitude(0.2, scope="model")
    with pytest.raises(ValueError, match=r"n must be one of 1, 2, inf, -inf.*got 3"):
        pruning.ln_structured(0.2, n=3)
    with pytest.raises(ValueError, match="scope must be one of"):
        pruning.random_like(masks.ones_like({"k": jnp.ones((2, 2))}), jax.random.key(0), scope="x")
    with pytest.raises(ValueError, match="rule must be a"):
        pruning.partition(["kernel"])
    with pytest.raises(ValueError, match="must be a pruner"):
        pruning.partition([("kernel", 0.2)])
    with pytest.raises(ValueError, match="fraction must be a number"):
        pruning.magnitude(True)


def test_bad_calls_raise_clear_errors():
    params = lenet()
    mask = masks.ones_like(params)
    with pytest.raises(ValueError, match=r"pruning.random is random and needs a key: call it as pruner\(params, mask, key\)"):
        pruning.random(0.2)(params, mask)
    with pytest.raises(ValueError, match="pruning.random_structured is random and needs a key"):
        pruning.random_structured(0.2)(params, mask)
    with pytest.raises(ValueError, match="needs a key"):
        pruning.random_like(mask, None)
    with pytest.raises(ValueError, match=r"axis 2 does not exist for leaf 'fc1/kernel' of shape \(784, 300\)"):
        pruning.ln_structured(0.2, axis=2)(params, mask)
    other = {"conv": {"kernel": jnp.ones((3, 3, 1, 4))}}
    with pytest.raises(ValueError, match="mask does not match params"):
        pruning.magnitude(0.2)(other, mask)


def test_pruners_round_trip_through_plain_data():
    import json

    pruners = [
        pruning.magnitude(0.2, "global"),
        pruning.random(0.1),
        pruning.ln_structured(0.3, n=-math.inf),
        pruning.random_structured(0.5),
        pruning.partition([("output", pruning.magnitude(0.1)), ("conv", pruning.ln_structured(0.2, n=1)),
                           ("bias", None)]),
        pruning.chain(pruning.magnitude(0.1), pruning.random(0.2, "global")),
    ]
    for p in pruners:
        data = json.loads(json.dumps(pruning.to_config(p)))
        assert pruning.from_config(data) == p
    with pytest.raises(UnknownNameError, match=r"unknown pruning method 'l1'; valid pruning methods: .*magnitude, "):
        pruning.from_config({"method": "l1", "fraction": 0.2})
    with pytest.raises(ValueError, match=r"unknown settings \['scop'\]; valid: \['allow_empty', 'fraction', 'invert', 'rounding', 'scope'\]"):
        pruning.from_config({"method": "magnitude", "fraction": 0.2, "scop": "global"})
    with pytest.raises(ValueError, match="missing setting 'fraction'"):
        pruning.from_config({"method": "magnitude"})
    with pytest.raises(ValueError, match="a dict with a 'method'"):
        pruning.from_config("magnitude")


# ----------------------------------------------------------------------------- count rules


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([0.1, 0.2, 0.25, 0.3, 0.5, 0.75, 0.9, 0.3333, 0.0001]), st.integers(0, 3_000_000),
       st.sampled_from(["half_up", "half_even", "ceil"]))
def test_count_rules_match_exact_rationals(fraction, n, rounding):
    assert int(pruning.removal_count(fraction, n, rounding)) == reference_count(fraction, n, rounding)


def test_count_rules_differ_only_where_documented():
    # PyTorch (round half to even) keeps the last of 1 channel at 0.5, half-up removes it
    assert [int(pruning.removal_count(0.5, n, "half_even")) for n in (1, 2, 3, 5)] == [0, 1, 2, 2]
    assert [int(pruning.removal_count(0.5, n, "half_up")) for n in (1, 2, 3, 5)] == [1, 1, 2, 3]
    assert int(pruning.removal_count(0.2, 11, "ceil")) == 3 and int(pruning.removal_count(0.2, 11)) == 2
    with pytest.raises(ValueError, match="rounding must be one of"):
        pruning.magnitude(0.2, rounding="banker")


def test_structured_pruning_never_silently_empties_a_layer():
    # LeNet-5's conv1 has 6 channels: at 0.5 per level half-up goes 6 -> 3 -> 1 -> 0
    params = {"conv1": {"kernel": jax.random.normal(jax.random.key(0), (3, 3, 1, 6))}}
    mask = masks.ones_like(params)
    up, even = pruning.ln_structured(0.5, n=1), pruning.ln_structured(0.5, n=1, rounding="half_even")
    m_up = m_even = mask
    for _ in range(2):
        m_up, m_even = up(params, m_up), even(params, m_even)
    channels = lambda m: int(np.asarray(m.keep["conv1"]["kernel"]).any(axis=(0, 1, 2)).sum())  # noqa: E731
    assert channels(m_up) == 1 and channels(m_even) == 1  # 6 -> 3 -> 1 both (1.5 -> 2 removed either way)
    with pytest.raises(pruning.PruningError, match=r"last weight of \['conv1/kernel'\].*allow_empty=True"):
        up(params, m_up)  # round(0.5) = 1: the last channel would go
    assert channels(even(params, even(params, m_even))) == 1  # round-half-even(0.5) = 0: PyTorch keeps it
    emptied = pruning.ln_structured(0.5, n=1, allow_empty=True)(params, m_up)
    assert channels(emptied) == 0
    # under jit the pruner cannot raise; the IMP engine checks (masks.emptied_leaves)
    assert masks.emptied_leaves(m_up, jax.jit(up)(params, m_up)) == ["conv1/kernel"]


# ----------------------------------------------------------------------------- registry, callables


def test_registered_pruner_works_by_name_and_round_trips():
    @pruning.register("test_smallest_rows", overwrite=True)
    def smallest_rows(fraction=0.5):
        def prune(params, mask, key=None):
            return pruning.by_score(lambda w, k: jnp.abs(w).sum(-1, keepdims=True) + 0 * w, fraction)(
                params, mask, key)
        return prune

    assert "test_smallest_rows" in pruning.methods()
    p = pruning.from_config({"method": "test_smallest_rows", "fraction": 0.25})
    assert pruning.to_config(p) == {"method": "test_smallest_rows", "fraction": 0.25}
    assert pruning.to_config(smallest_rows()) == {"method": "test_smallest_rows", "fraction": 0.5}
    params = lenet()
    mask = p(params, masks.ones_like(params))
    assert int(np.asarray(mask.keep["fc2"]["kernel"]).sum()) == 30_000 - 7_500
    inside = pruning.partition([("fc", {"method": "test_smallest_rows", "fraction": 0.5}), ("output", None)])
    assert pruning.from_config(pruning.to_config(inside)) == inside
    with pytest.raises(ValueError, match="registered already"):
        pruning.register("magnitude")(smallest_rows)
    with pytest.raises(ValueError, match=r"unknown settings \['frac'\]; valid: \['fraction'\]"):
        pruning.get("test_smallest_rows", frac=0.1)


def test_any_callable_is_held_to_the_pruner_contract():
    params = lenet()
    mask = pruning.magnitude(0.5)(params, masks.ones_like(params))

    def unruly(params, mask, key):  # returns a plain tree that revives weights and prunes biases
        return jax.tree.map(lambda w: w > 0, params)

    new = pruning.as_pruner(unruly)(params, mask)
    assert_subset_and_fixed(mask, new)
    for o, n, w, flag in zip(np_leaves(mask.keep), np_leaves(new.keep), np_leaves(params), mask.prunable):
        np.testing.assert_array_equal(n, (o & (w > 0)) if flag else o)
    with pytest.raises(ValueError, match="not a mask of these params"):
        pruning.as_pruner(lambda p, m, k: {"x": True})(params, mask)
    with pytest.raises(ValueError, match="level schedule, not a pruner"):
        pruning.as_pruner(pruning.per_level([pruning.magnitude(0.2)]))


def test_partition_rule_matching_nothing_lists_the_paths():
    params = lenet()
    with pytest.raises(ValueError, match=r"rule 0 \('\^conv'\) matches no parameter.*'fc1/bias', 'fc1/kernel'"):
        pruning.partition([("^conv", pruning.magnitude(0.2)), ("kernel", pruning.magnitude(0.2))])(
            params, masks.ones_like(params))
    with pytest.raises(ValueError, match="rule 1 .* earlier rule took"):
        pruning.partition([("kernel", pruning.magnitude(0.2)), ("fc1/kernel", None)])(params, masks.ones_like(params))
    with pytest.raises(ValueError, match="not prunable"):
        pruning.partition([("bias", pruning.magnitude(0.2))])(params, masks.ones_like(params))
    every = masks.ones_like(params, "all")  # biases prunable on request
    pruned = pruning.partition([("bias", pruning.magnitude(0.5))])(params, every)
    assert int(np.asarray(pruned.keep["fc1"]["bias"]).sum()) == 150 and np.asarray(pruned.keep["fc1"]["kernel"]).all()


def test_by_score_shares_the_selection_of_magnitude():
    params = lenet()
    mask = masks.ones_like(params)
    ours = pruning.by_score(lambda w, k: w, 0.3, "global")(params, mask)  # |score| = |w|
    chex.assert_trees_all_equal(ours.keep, pruning.magnitude(0.3, "global")(params, mask).keep)
    channels = pruning.by_score(lambda w, k: jnp.abs(w), 0.2, structured=True)(params, mask)
    chex.assert_trees_all_equal(channels.keep, pruning.ln_structured(0.2, n=1)(params, mask).keep)


def test_level_schedules():
    params = lenet()
    sched = pruning.to_density(0.1, levels=5)
    mask = masks.ones_like(params)
    for level in range(1, 6):
        mask = pruning.for_level(sched, level)(params, mask)
    assert abs(float(masks.density(mask)) - 0.1) < 5 / 266_200
    per = pruning.per_level([pruning.magnitude(0.5), {"method": "magnitude", "fraction": 0.1}])
    assert pruning.for_level(per, 2).fraction == 0.1
    with pytest.raises(ValueError, match="level 3 has no pruner"):
        pruning.for_level(per, 3)
    for s in (sched, per):
        assert pruning.from_config(pruning.to_config(s)).at_level(1) == s.at_level(1)
    with pytest.raises(TypeError, match="level schedule, not a pruner"):
        sched(params, mask)
    with pytest.raises(ValueError, match="must not set 'fraction'"):
        pruning.to_density(0.1, 5, {"method": "magnitude", "fraction": 0.2})


def test_to_density_takes_a_pruner_and_sets_its_fraction():
    params = {"fc": {"kernel": jax.random.normal(jax.random.key(0), (20, 10))}}
    sched = pruning.to_density(0.1, 3, pruning.magnitude(0.2, "global", rounding="ceil"))
    want = pruning.magnitude(1 - 0.1 ** (1 / 3), "global", rounding="ceil")  # the schedule's fraction
    assert pruning.for_level(sched, 2) == want
    mask = masks.ones_like(params)
    for level in (1, 2, 3):
        mask = pruning.for_level(sched, level)(params, mask)
    assert int(np.asarray(mask.keep["fc"]["kernel"]).sum()) == 19  # 200 -> 92 -> 42 -> 19: ceil kept
    config = pruning.to_config(sched)  # saved without the pruner's own fraction, rebuilt alike
    assert config["pruner"] == {"method": "magnitude", "scope": "global", "rounding": "ceil"}
    assert pruning.from_config(config).at_level(1) == sched.at_level(1)
    for bad, match in ((pruning.chain(pruning.magnitude(0.2)), "has no fraction"),
                       (lambda params, mask, key: mask, "does not take a fraction alone"),
                       (3, "the pruner is a int")):
        with pytest.raises(TypeError, match=match):
            pruning.to_density(0.1, 3, bad)


@settings(max_examples=8, deadline=None)
@given(trees(), fractions, st.sampled_from(["layer", "global"]), st.integers(1, 4))
def test_many_ties_are_broken_by_position_like_a_stable_sort(tree, fraction, scope, levels):
    params, mask = tree
    # magnitudes from a handful of values: many weights tie at the threshold
    tied = jax.tree.map(lambda w: jnp.round(w * levels) / levels, params)
    new = pruning.magnitude(fraction, scope, allow_empty=True)(tied, mask)
    for got, want in zip(np_leaves(new.keep), reference_unstructured(tied, mask, fraction, scope)):
        np.testing.assert_array_equal(got, want)


def test_pruners_refuse_a_seed_stacked_mask_unless_vmapped():
    params = lenet()
    mask = masks.ones_like(params)
    stacked_params = jax.tree.map(lambda x: jnp.stack([x, -x]), params)
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), mask)
    assert stacked.batch_dims == 1 and mask.batch_dims == 0
    with pytest.raises(ValueError, match=r"leading seeds axis.*jax.vmap\(pruner\)"):
        pruning.magnitude(0.2, "global")(stacked_params, stacked)
    per_seed = jax.vmap(pruning.magnitude(0.2, "global"))(stacked_params, stacked, jax.random.split(jax.random.key(0), 2))
    assert per_seed.batch_dims == 1
    chex.assert_trees_all_equal(jax.tree.map(lambda x: x[0], per_seed.keep),
                                pruning.magnitude(0.2, "global")(params, mask).keep)
