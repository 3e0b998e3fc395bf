"""Permutation symmetries of the model zoo and weight matching (Git Re-Basin)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxticket import alignment, masks, models, stability

CASES = [  # (model name, input shape, kwargs): one per family, kept small
    ("lenet_32_16", (8, 8, 1), {}),
    ("lenet5", (28, 28, 1), {}),
    ("conv2", (8, 8, 3), {}),
    ("vgg11", (32, 32, 3), {}),
    ("resnet8", (8, 8, 3), {}),
    ("resnet18_w8", (32, 32, 3), {"num_classes": 10}),
    ("resnet50_w8", (32, 32, 3), {"num_classes": 10}),
    ("alexnet", (32, 32, 3), {}),
]


def build(name, shape, kw, seed=0):
    model = models.get(name, **kw)
    x = jax.random.normal(jax.random.key(seed + 1), (3, *shape))
    variables = model.init(jax.random.key(seed), x, train=False)
    if "batch_stats" in variables:  # non-trivial running statistics, so they matter
        stats = jax.tree.map(lambda v: jax.random.uniform(jax.random.key(seed + 2), v.shape) + 0.5,
                             variables["batch_stats"])
        variables = {**variables, "batch_stats": stats}
    return model, variables, x


@pytest.mark.parametrize("name,shape,kw", CASES, ids=[c[0] for c in CASES])
def test_a_permuted_network_computes_the_same_function(name, shape, kw):
    model, variables, x = build(name, shape, kw)
    params, stats = variables["params"], variables.get("batch_stats")
    spec = models.permutation_spec(model, params)
    perm = alignment.random_permutation(spec, params, seed=3)
    assert any((p != np.arange(len(p))).any() for p in perm.values())
    mask = masks.ones_like(params)
    parts = alignment.permute(spec, perm, params, stats, mask) if stats is not None else \
        alignment.permute(spec, perm, params, None, mask)
    new_params, new_mask = parts[0], parts[-1]
    new_vars = {"params": new_params}
    if stats is not None:
        new_vars["batch_stats"] = parts[1]
    before = model.apply(variables, x, train=False)
    after = model.apply(new_vars, x, train=False)
    np.testing.assert_allclose(np.asarray(after), np.asarray(before), rtol=1e-4, atol=1e-4)
    changed = sum(not np.array_equal(np.asarray(a), np.asarray(b))
                  for a, b in zip(jax.tree.leaves(new_params), jax.tree.leaves(params)))
    assert changed >= len(spec)  # the weights did move
    masks.validate(new_params, new_mask)


@pytest.mark.parametrize("name,shape,kw", [CASES[0], CASES[2], CASES[4]], ids=["lenet", "conv2", "resnet8"])
def test_weight_matching_recovers_a_permuted_copy(name, shape, kw):
    model, variables, _ = build(name, shape, kw)
    params = variables["params"]
    spec = models.permutation_spec(model, params)
    perm = alignment.random_permutation(spec, params, seed=5)
    shuffled = alignment.permute(spec, perm, params)
    found = alignment.weight_matching(spec, params, shuffled)
    recovered = alignment.permute(spec, found, shuffled)
    for a, b in zip(jax.tree.leaves(recovered), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for name_ in spec:  # found is the inverse of perm
        np.testing.assert_array_equal(np.asarray(perm[name_])[found[name_]], np.arange(len(found[name_])))


def test_alignment_lowers_the_distance_between_independent_networks():
    model, va, _ = build("lenet_32_16", (8, 8, 1), {}, seed=0)
    _, vb, _ = build("lenet_32_16", (8, 8, 1), {}, seed=10)
    spec = models.permutation_spec(model, va["params"])
    aligned, perm = alignment.align(spec, va["params"], vb["params"])
    before = float(stability.l2_distance(va["params"], vb["params"]))
    after = float(stability.l2_distance(va["params"], aligned))
    assert after < before


def test_unknown_models_say_how_to_declare_a_spec():
    import flax.linen as nn

    class Mine(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(x)

    with pytest.raises(ValueError, match="register_permutation_spec"):
        models.permutation_spec(Mine(), {})
