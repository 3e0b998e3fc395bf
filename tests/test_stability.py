"""Tests for jaxticket.stability: interpolation, error curves, barriers, BN recompute, distances."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxticket import masks, stability


def _tree(key, dtype=jnp.float32):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "fc1": {"kernel": jax.random.normal(k1, (4, 3), dtype), "bias": jax.random.normal(k2, (3,), dtype)},
        "output": {"kernel": jax.random.normal(k3, (3, 2), dtype)},
    }


# ----------------------------------------------------------------------------- barrier math


def test_barrier_identical_endpoints_flat_is_zero():
    assert float(stability.error_barrier(jnp.full((30,), 0.1))) == 0.0
    # identical endpoints, convex (nothing above them) -> 0
    a = stability.alphas()
    convex = 0.3 * (a - 0.5) ** 2 + 0.1
    assert float(stability.error_barrier(convex)) <= 1e-7


def test_barrier_convex_curve_nonpositive_against_chord():
    a = stability.alphas()
    convex = 0.4 * (a - 0.3) ** 2 + 0.05 + 0.1 * a  # unequal endpoints
    # Frankle's mean-of-endpoints definition gives half the endpoint gap ...
    np.testing.assert_allclose(
        stability.error_barrier(convex), abs(float(convex[0] - convex[-1])) / 2, rtol=1e-5
    )
    # ... the chord reference gives <= 0 (0 at the endpoints) for any convex curve.
    assert float(stability.error_barrier(convex, reference="linear")) <= 1e-7


def test_barrier_bump_gives_its_height():
    a = stability.alphas(31)
    bump = 0.1 + 0.25 * jnp.exp(-((a - 0.5) ** 2) / 0.01)
    np.testing.assert_allclose(stability.error_barrier(bump), 0.25, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stability.error_barrier(jnp.array([0.1, 0.3, 0.1])), 0.2, rtol=1e-6)
    np.testing.assert_allclose(
        stability.error_barrier(jnp.array([0.1, 0.3, 0.1]), reference="linear"), 0.2, rtol=1e-6
    )


def test_barrier_batched_jitted_and_pytree():
    errs = jax.random.uniform(jax.random.key(0), (3, 4, 30))
    got = jax.jit(stability.error_barrier)(errs)
    chex.assert_shape(got, (3, 4))
    e = np.asarray(errs)
    np.testing.assert_allclose(got, e.max(-1) - (e[..., 0] + e[..., -1]) / 2, rtol=1e-6)
    d = stability.error_barrier({"train": errs[0], "test": errs[1]})
    np.testing.assert_allclose(d["test"], got[1], rtol=1e-6)
    stable = stability.is_stable(jnp.array([0.0, 0.019, 0.02, 0.5]))
    np.testing.assert_array_equal(stable, [True, True, False, False])


# ----------------------------------------------------------------------------- interpolation


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_interpolate_endpoints_bitwise_and_dtypes(dtype):
    a, b = _tree(jax.random.key(1), dtype), _tree(jax.random.key(2), dtype)
    a["fc1"]["bias"] = a["fc1"]["bias"].at[0].set(-0.0)  # -0.0 + 0.0 would lose the sign
    a["step"] = jnp.array(7, jnp.int32)
    b["step"] = jnp.array(7, jnp.int32)
    for alpha, want in ((0.0, a), (1.0, b), (jnp.float32(0), a), (jnp.float32(1), b)):
        got = stability.interpolate(a, b, alpha)
        for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(
                np.asarray(x).view(np.uint8) if x.dtype != jnp.int32 else x,
                np.asarray(y).view(np.uint8) if y.dtype != jnp.int32 else y,
            )
    # traced alpha (vmap) keeps endpoints bitwise as well
    stacked = jax.vmap(lambda al: stability.interpolate(a, b, al))(jnp.array([0.0, 1.0]))
    np.testing.assert_array_equal(
        np.asarray(stacked["output"]["kernel"][1]).view(np.uint8), np.asarray(b["output"]["kernel"]).view(np.uint8)
    )
    mid = stability.interpolate(a, b, 0.25)
    np.testing.assert_allclose(
        np.asarray(mid["fc1"]["kernel"], np.float32),
        0.75 * np.asarray(a["fc1"]["kernel"], np.float32) + 0.25 * np.asarray(b["fc1"]["kernel"], np.float32),
        rtol=1e-2 if dtype != jnp.float32 else 1e-6,
        atol=1e-2 if dtype != jnp.float32 else 1e-7,
    )


def test_interpolate_non_float_leaves_pass_through_or_error():
    a = {"w": jnp.zeros(3), "m": masks.ones_like({"k": jnp.ones((2, 2))})}
    b = {"w": jnp.ones(3), "m": masks.ones_like({"k": jnp.ones((2, 2))})}
    out = stability.interpolate(a, b, 0.5)
    assert isinstance(out["m"], masks.Mask) and out["m"].keep["k"].dtype == jnp.bool_
    b_bad = {"w": jnp.ones(3), "m": b["m"].replace(keep={"k": jnp.zeros((2, 2), bool)})}
    with pytest.raises(ValueError, match="non-float leaf"):
        stability.interpolate(a, b_bad, 0.5)
    with pytest.raises(ValueError, match="differ in structure"):
        stability.interpolate({"w": jnp.zeros(3)}, {"v": jnp.zeros(3)}, 0.5)
    with pytest.raises(ValueError, match="float32"):
        stability.interpolate({"w": jnp.zeros(3)}, {"w": jnp.zeros(4)}, 0.5)


def test_alphas():
    a = stability.alphas()
    chex.assert_shape(a, (30,))
    assert float(a[0]) == 0.0 and float(a[-1]) == 1.0
    np.testing.assert_allclose(np.diff(a), 1 / 29, rtol=1e-5)


# ----------------------------------------------------------------------------- error curves


def _quad_eval(p):
    """A toy model: error = sum(w^2) + sum(v) (quadratic in alpha along a line)."""
    return jnp.sum(p["w"] ** 2) + jnp.sum(p["v"])


def test_error_curve_quadratic_closed_form_and_loop():
    a = {"w": jnp.array([-1.0, 2.0]), "v": jnp.array([0.5])}
    b = {"w": jnp.array([1.0, 0.0]), "v": jnp.array([1.5])}
    al = stability.alphas(30)
    errs = stability.error_curve(_quad_eval, a, b, al)
    chex.assert_shape(errs, (30,))
    t = np.asarray(al, np.float64)
    w = (1 - t)[:, None] * np.array([-1.0, 2.0]) + t[:, None] * np.array([1.0, 0.0])
    closed = (w**2).sum(1) + (1 - t) * 0.5 + t * 1.5
    np.testing.assert_allclose(errs, closed, rtol=1e-5)
    loop = np.array([_quad_eval(stability.interpolate(a, b, x)) for x in al])
    np.testing.assert_allclose(errs, loop, rtol=1e-6)
    # lax.map in chunks (with a remainder) gives the same numbers
    np.testing.assert_allclose(stability.error_curve(_quad_eval, a, b, al, batch_size=7), errs, rtol=1e-6)


def _linear_model_eval(p, x, y):
    """Linear classifier: error = fraction misclassified; also a dict of errors."""
    pred = jnp.argmax(x @ p["kernel"] + p["bias"], axis=-1)
    err = jnp.mean(pred != y)
    return {"train": err, "test": 1.0 - err}


def test_error_curve_dict_outputs_with_eval_args_matches_loop():
    k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
    x = jax.random.normal(k1, (64, 5))
    y = jnp.arange(64) % 3
    a = {"kernel": jax.random.normal(k2, (5, 3)), "bias": jnp.zeros(3)}
    b = {"kernel": jax.random.normal(k3, (5, 3)), "bias": jnp.ones(3)}
    al = stability.alphas(11)
    got = stability.error_curve(_linear_model_eval, a, b, al, eval_args=(x, y))
    assert set(got) == {"train", "test"}
    loop = [_linear_model_eval(stability.interpolate(a, b, t), x, y) for t in al]
    np.testing.assert_allclose(got["train"], [l["train"] for l in loop], rtol=1e-6)
    np.testing.assert_allclose(got["test"], [l["test"] for l in loop], rtol=1e-6)
    np.testing.assert_allclose(got["train"][0], _linear_model_eval(a, x, y)["train"])


def test_pairwise_barriers():
    stack = {"w": jnp.array([[-1.0], [1.0], [3.0]]), "v": jnp.zeros((3, 1))}
    res = stability.pairwise_barriers(_quad_eval, stack, stability.alphas(21))
    np.testing.assert_array_equal(res.pairs, [[0, 1], [0, 2], [1, 2]])
    chex.assert_shape(res.curves, (3, 21))
    # reference: per-pair error_curve + error_barrier
    want = []
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        a = jax.tree.map(lambda x: x[i], stack)
        b = jax.tree.map(lambda x: x[j], stack)
        want.append(float(stability.error_barrier(stability.error_curve(_quad_eval, a, b, stability.alphas(21)))))
    np.testing.assert_allclose(res.values, want, rtol=1e-6)
    np.testing.assert_allclose(res.mean, np.mean(want), rtol=1e-6)
    np.testing.assert_allclose(res.std, np.std(want), rtol=1e-5)
    # w=-1 -> w=1 through 0: convex, equal endpoints -> no barrier
    assert abs(float(res.values[0])) < 1e-6
    with pytest.raises(ValueError, match="differs between copies"):
        stability.pairwise_barriers(_quad_eval, {**stack, "n": jnp.arange(3)})
    with pytest.raises(ValueError, match="at least 2"):
        stability.pairwise_barriers(_quad_eval, {"w": jnp.ones((1, 1)), "v": jnp.ones((1, 1))})


# ----------------------------------------------------------------------------- BatchNorm


class _TinyBN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(4, name="fc1")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn1")(x)
        return nn.Dense(2, name="output")(nn.relu(x))


def _tiny_bn():
    model = _TinyBN()
    x = jax.random.normal(jax.random.key(0), (5, 8, 3)) * 2.0 + 1.0  # 5 batches of 8
    variables = model.init(jax.random.key(1), x[0], train=False)
    variables = {
        **variables,
        "batch_stats": jax.tree.map(lambda s: s + 3.0, variables["batch_stats"]),  # stale stats
    }
    return model, variables, x


def test_recompute_batch_stats_is_exact_average_of_batch_statistics():
    model, variables, x = _tiny_bn()
    recompute = stats = stability.recompute_batch_stats(model.apply, variables, x)
    fc1 = variables["params"]["fc1"]
    h = np.asarray(x, np.float64) @ np.asarray(fc1["kernel"], np.float64) + np.asarray(fc1["bias"], np.float64)
    want_mean = h.mean(axis=1).mean(axis=0)  # average of per-batch means
    want_var = h.var(axis=1).mean(axis=0)  # average of per-batch (biased) variances
    np.testing.assert_allclose(stats["bn1"]["mean"], want_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["bn1"]["var"], want_var, rtol=1e-5, atol=1e-6)
    # a Python list of batches gives the same, and it is jit-able
    as_list = stability.recompute_batch_stats(model.apply, variables, list(x))
    jitted = jax.jit(lambda v, xs: stability.recompute_batch_stats(model.apply, v, xs))(variables, x)
    chex.assert_trees_all_close(as_list, recompute, rtol=1e-6)
    chex.assert_trees_all_close(jitted, recompute, rtol=1e-5, atol=1e-6)


def test_interpolate_variables_modes_and_error_curve_with_recompute():
    model, va, x = _tiny_bn()
    vb = jax.tree.map(lambda t: t * 1.5, va)
    lin = stability.interpolate_variables(va, vb, 0.5)
    np.testing.assert_allclose(lin["batch_stats"]["bn1"]["mean"], 1.25 * np.asarray(va["batch_stats"]["bn1"]["mean"]), rtol=1e-6)
    recompute_fn = functools.partial(stability.recompute_batch_stats, model.apply, batches=x)
    rec = stability.interpolate_variables(va, vb, 0.5, "recompute", recompute_fn)
    chex.assert_trees_all_close(rec["params"], lin["params"])
    chex.assert_trees_all_close(rec["batch_stats"], recompute_fn(lin), rtol=1e-6)
    with pytest.raises(ValueError, match="recompute_fn"):
        stability.interpolate_variables(va, vb, 0.5, "recompute")
    with pytest.raises(ValueError, match="'interpolate' or 'recompute'"):
        stability.interpolate_variables(va, vb, 0.5, "bogus")

    interp = functools.partial(stability.interpolate_variables, batch_stats="recompute", recompute_fn=recompute_fn)

    def eval_fn(v, xs):
        return jnp.mean(model.apply(v, xs[0], train=False) ** 2)

    al = stability.alphas(4)
    errs = stability.error_curve(eval_fn, va, vb, al, interpolate_fn=interp, eval_args=(x,))
    loop = [eval_fn(interp(va, vb, t), x) for t in al]
    np.testing.assert_allclose(errs, loop, rtol=1e-5)


class _TinyBNDropout(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dropout(0.5, deterministic=not train)(nn.Dense(4, name="fc1")(x))
        return nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn1")(x)


def test_recompute_batch_stats_with_dropout_runs_it_as_in_training():
    model = _TinyBNDropout()
    x = jax.random.normal(jax.random.key(0), (3, 8, 3)) + 1.0  # 3 batches of 8
    variables = model.init(jax.random.key(1), x[0], train=False)
    with pytest.raises(ValueError, match="dropout_key=jax.random.key"):
        stability.recompute_batch_stats(model.apply, variables, x)
    key = jax.random.key(7)
    stats = stability.recompute_batch_stats(model.apply, variables, x, dropout_key=key)
    # reference: the dropped activations of batch i (masks from fold_in(key, i)), their
    # batch mean / variance averaged over the batches
    dropped = [model.apply(variables, x[i], train=True, rngs={"dropout": jax.random.fold_in(key, i)},
                           mutable=["batch_stats", "intermediates"], capture_intermediates=True)
               [1]["intermediates"]["Dropout_0"]["__call__"][0] for i in range(3)]
    dropped = np.asarray(dropped, np.float64)
    np.testing.assert_allclose(stats["bn1"]["mean"], dropped.mean(1).mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["bn1"]["var"], dropped.var(1).mean(0), rtol=1e-5, atol=1e-6)
    assert np.any(dropped == 0)  # dropout was on
    again = jax.jit(lambda v: stability.recompute_batch_stats(model.apply, v, x, dropout_key=key))(variables)
    chex.assert_trees_all_close(again, stats, rtol=1e-5, atol=1e-6)  # deterministic in the key


# ----------------------------------------------------------------------------- distances


def test_l2_distance_and_masked_and_normalized():
    a = {"w": jnp.array([[0.0, 0.0], [1.0, 1.0]]), "b": jnp.array([0.0])}
    b = {"w": jnp.array([[3.0, 0.0], [1.0, 5.0]]), "b": jnp.array([10.0])}
    np.testing.assert_allclose(stability.l2_distance(a, b), np.sqrt(9 + 16 + 100), rtol=1e-6)
    m = masks.ones_like(a)  # only w prunable
    np.testing.assert_allclose(stability.l2_distance(a, b, m), 5.0, rtol=1e-6)
    m2 = masks.from_tree({"w": jnp.array([[True, True], [True, False]]), "b": jnp.array([True])})
    np.testing.assert_allclose(stability.l2_distance(a, b, m2), 3.0, rtol=1e-6)
    np.testing.assert_allclose(stability.normalized_l2_distance(a, b, m), 5.0 / np.sqrt(2.0), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(stability.l2_distance)(a, b, m), 5.0, rtol=1e-6)


def test_pairwise_l2():
    stack = jax.tree.map(lambda *xs: jnp.stack(xs), *[_tree(jax.random.key(i)) for i in range(4)])
    d = stability.pairwise_l2(stack)
    chex.assert_shape(d, (4, 4))
    np.testing.assert_array_equal(np.diag(d), 0.0)
    np.testing.assert_array_equal(d, d.T)
    for i in range(4):
        for j in range(4):
            a = jax.tree.map(lambda x: x[i], stack)
            b = jax.tree.map(lambda x: x[j], stack)
            np.testing.assert_allclose(d[i, j], stability.l2_distance(a, b), rtol=1e-5)
    m = masks.ones_like(_tree(jax.random.key(0)))
    dm = stability.pairwise_l2(stack, m)
    a0, a1 = (jax.tree.map(lambda x: x[i], stack) for i in (0, 1))
    np.testing.assert_allclose(dm[0, 1], stability.l2_distance(a0, a1, m), rtol=1e-5)
