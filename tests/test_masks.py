"""Masks: creation, prunability, apply, counting, summaries, validation."""

import re

import chex
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxticket import masks


def lenet_params(key=0):
    k = jax.random.split(jax.random.key(key), 3)
    return {
        "fc1": {"kernel": jax.random.normal(k[0], (784, 300)), "bias": jnp.zeros(300)},
        "fc2": {"kernel": jax.random.normal(k[1], (300, 100)), "bias": jnp.zeros(100)},
        "output": {"kernel": jax.random.normal(k[2], (100, 10)), "bias": jnp.zeros(10)},
    }


def test_default_prunable_is_kernels_only():
    params = {
        "conv": {"kernel": jnp.ones((3, 3, 2, 4)), "bias": jnp.ones(4)},
        "bn": {"scale": jnp.ones(4), "bias": jnp.zeros(4)},
        "dense": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones(2)},
    }
    mask = masks.ones_like(params)
    flags = dict(zip(mask.paths(), mask.prunable))
    assert flags == {
        "bn/bias": False, "bn/scale": False, "conv/bias": False, "conv/kernel": True,
        "dense/bias": False, "dense/kernel": True,
    }
    assert all(bool(jnp.all(leaf)) for leaf in mask.leaves())
    assert jax.tree.structure(mask.keep) == jax.tree.structure(params)
    chex.assert_trees_all_equal_shapes(mask.keep, params)
    assert all(leaf.dtype == jnp.bool_ for leaf in mask.leaves())


def test_prunable_regex_and_predicate():
    params = lenet_params()
    by_regex = masks.ones_like(params, prunable=r"fc\d/kernel")
    assert [p for p, f in zip(by_regex.paths(), by_regex.prunable) if f] == ["fc1/kernel", "fc2/kernel"]
    by_compiled = masks.ones_like(params, prunable=re.compile("output/kernel"))
    assert [p for p, f in zip(by_compiled.paths(), by_compiled.prunable) if f] == ["output/kernel"]
    by_pred = masks.ones_like(params, prunable=lambda path, leaf: leaf.ndim == 1)
    assert sum(by_pred.prunable) == 3 and all(
        f == p.endswith("bias") for p, f in zip(by_pred.paths(), by_pred.prunable)
    )
    with pytest.raises(TypeError, match="regex string"):
        masks.ones_like(params, prunable=3)


def test_paths_of_flax_variables_and_lists():
    tree = {"params": {"Dense_0": {"kernel": jnp.ones((2, 2))}}, "extra": [jnp.ones((2, 2))]}
    assert masks.leaf_paths(tree) == ["extra/0", "params/Dense_0/kernel"]


def test_apply_zeroes_exactly_and_keeps_dtype():
    params = {
        "a": jnp.arange(1, 7, dtype=jnp.bfloat16).reshape(2, 3),
        "b": jnp.arange(1, 7, dtype=jnp.float32).reshape(3, 2),
        "bias": jnp.array([1.5, -2.0], dtype=jnp.float16),
    }
    mask = masks.ones_like(params)
    keep = dict(mask.keep)
    keep["a"] = jnp.array([[True, False, True], [False, True, False]])
    keep["b"] = jnp.array([[False, True], [True, True], [False, False]])
    mask = mask.replace(keep=keep)
    out = masks.apply(params, mask)
    for name in ("a", "b"):
        assert out[name].dtype == params[name].dtype
        np.testing.assert_array_equal(
            np.asarray(out[name], np.float32),
            np.where(np.asarray(keep[name]), np.asarray(params[name], np.float32), 0.0),
        )
    assert out["bias"] is params["bias"]  # non-prunable leaf returned as is
    jitted = jax.jit(masks.apply)(params, mask)
    chex.assert_trees_all_equal(jitted, out)


def test_density_sparsity_and_counts():
    params = lenet_params()
    mask = masks.ones_like(params)
    keep = dict(mask.keep)
    keep["fc1"] = {**keep["fc1"], "kernel": keep["fc1"]["kernel"].at[:100].set(False)}
    mask = mask.replace(keep=keep)
    kept, total = masks.count(mask)
    assert total == 266_200  # LeNet-300-100 weights; biases excluded
    assert int(kept) == 266_200 - 100 * 300
    np.testing.assert_allclose(masks.density(mask), (266_200 - 30_000) / 266_200, rtol=1e-6)
    np.testing.assert_allclose(masks.sparsity(mask), 30_000 / 266_200, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(masks.density)(mask), masks.density(mask))


def test_density_under_vmap_with_seed_axis():
    params = {"k": jnp.ones((4, 5)), "b": jnp.ones(5)}
    mask = masks.ones_like(params)
    stacked = jax.tree.map(lambda x: jnp.stack([x, x, x]), mask)
    keep = dict(stacked.keep)
    keep["k"] = keep["k"].at[1, 0].set(False).at[2].set(False)
    stacked = stacked.replace(keep=keep)
    np.testing.assert_allclose(jax.vmap(masks.density)(stacked), [1.0, 15 / 20, 0.0])
    masks.validate(params, stacked, batch_dims=1)


def test_summary_table():
    params = lenet_params()
    mask = masks.ones_like(params)
    keep = dict(mask.keep)
    keep["output"] = {**keep["output"], "kernel": keep["output"]["kernel"].at[0].set(False)}
    s = masks.summary(mask.replace(keep=keep))
    rows = {r.path: r for r in s.rows}
    assert rows["output/kernel"].kept == 990 and rows["output/kernel"].total == 1000
    assert rows["fc1/bias"].prunable is False
    assert s.kept == 266_190 and s.total == 266_200
    text = str(s)
    assert "output/kernel" in text and "266,190" in text and "yes" in text and "no" in text
    assert s.as_dicts()[0]["path"] == "fc1/bias"


def test_validate_names_first_mismatch():
    params = lenet_params()
    mask = masks.ones_like(params)
    other = {**params, "fc2": {"kernel": jnp.ones((300, 50)), "bias": jnp.zeros(50)}}
    with pytest.raises(ValueError, match=r"fc2/bias.*params shape \(50,\), mask shape \(100,\)"):
        masks.validate(other, mask)
    renamed = {"hidden": params["fc1"], "fc2": params["fc2"], "output": params["output"]}
    with pytest.raises(ValueError, match="leaf 0 is 'fc2/bias' in params but 'fc1/bias' in the mask"):
        masks.validate(renamed, mask)
    fewer = {"fc1": params["fc1"], "fc2": params["fc2"]}
    with pytest.raises(ValueError, match="params have 4 leaves, the mask 6"):
        masks.validate(fewer, mask)
    with pytest.raises(ValueError, match="mask does not match"):
        masks.apply(other, mask)
    with pytest.raises(TypeError, match="ones_like"):
        masks.apply(params, mask.keep)


def test_from_tree_round_trip_and_rejects_pruned_fixed_leaves():
    params = lenet_params()
    keep = jax.tree.map(lambda w: jnp.abs(w) > 0.5, params)
    with pytest.raises(ValueError, match="fc1/bias"):
        masks.from_tree(keep)  # biases are all False (zeros) but not prunable
    keep = {k: {"kernel": v["kernel"], "bias": jnp.ones_like(v["bias"], bool)} for k, v in keep.items()}
    mask = masks.from_tree(keep)
    assert mask.prunable == masks.ones_like(params).prunable
    again = masks.from_tree(mask.keep, mask.prunable)
    chex.assert_trees_all_equal(again.keep, mask.keep)


def test_mask_is_a_pytree_for_jit_vmap_scan():
    params = {"k": jnp.ones((3, 4))}
    mask = masks.ones_like(params)
    leaves, treedef = jax.tree.flatten(mask)
    assert len(leaves) == 1 and jax.tree.unflatten(treedef, leaves).prunable == mask.prunable

    def body(m, _):
        return m.replace(keep={"k": m.keep["k"].at[0, 0].set(False)}), masks.density(m)

    final, densities = jax.lax.scan(body, mask, None, length=2)
    assert isinstance(final, masks.Mask) and final.prunable == (True,)
    np.testing.assert_allclose(densities, [1.0, 11 / 12])
    with pytest.raises(ValueError, match="2 flags but `keep` has 1"):
        masks.Mask({"k": jnp.ones((2, 2), bool)}, (True, False))


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
               elements=st.floats(-10, 10, width=32)),
    st.data(),
)
def test_apply_property_matches_numpy(w, data):
    keep = data.draw(hnp.arrays(np.bool_, w.shape))
    params = {"w": jnp.asarray(w)}
    mask = masks.Mask({"w": jnp.asarray(keep)}, (True,))
    out = masks.apply(params, mask)["w"]
    np.testing.assert_array_equal(np.asarray(out), np.where(keep, w, 0.0))
    assert float(masks.density(mask)) == pytest.approx(keep.mean() if keep.size else 1.0)
