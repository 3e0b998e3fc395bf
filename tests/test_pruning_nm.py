"""N:M and block sparsity, and per-layer densities (uniform, ERK), against NumPy references."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxticket as jt
from jaxticket import masks, pruning


def nm_reference(w, keep, n, m, axis):
    """Per group of m consecutive entries along axis: keep the n largest alive |w|; ties:
    the earlier entry goes first (so the later one is kept)."""
    w, keep = np.moveaxis(np.abs(np.asarray(w, np.float64)), axis, -1), np.moveaxis(np.asarray(keep), axis, -1)
    out = np.zeros_like(keep)
    length = w.shape[-1]
    for idx in np.ndindex(w.shape[:-1]):
        for g0 in range(0, length, m):
            pos = [p for p in range(g0, min(g0 + m, length)) if keep[idx + (p,)]]
            ranked = sorted(pos, key=lambda p: (w[idx + (p,)], p), reverse=True)
            for p in ranked[:n]:
                out[idx + (p,)] = True
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("n, m, axis, shape", [(2, 4, -2, (8, 3)), (1, 4, 0, (10, 5)), (2, 4, -1, (3, 7)),
                                               (3, 8, -2, (2, 2, 16, 4)), (1, 3, 1, (4, 6))])
def test_n_m_matches_numpy_reference(n, m, axis, shape):
    rng = np.random.default_rng(0)
    w = rng.normal(size=shape).astype(np.float32)
    w.flat[::5] = 0.5  # some ties
    keep = rng.random(shape) < 0.8
    params = {"layer": {"kernel": jnp.asarray(w)}}
    mask = masks.ones_like(params).replace(keep={"layer": {"kernel": jnp.asarray(keep)}})
    got = np.asarray(pruning.n_m(n, m, axis=axis)(params, mask).keep["layer"]["kernel"])
    np.testing.assert_array_equal(got, nm_reference(w, keep, n, m, axis))
    assert not (got & ~keep).any()  # only removes


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 4), extra=st.integers(0, 4), rows=st.integers(1, 13), cols=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_n_m_keeps_exactly_n_per_group(n, extra, rows, cols, seed):
    m = n + extra if n + extra > 0 else 1
    n = min(n, m)
    w = np.random.default_rng(seed).normal(size=(rows, cols)).astype(np.float32)
    params = {"fc": {"kernel": jnp.asarray(w)}}
    keep = np.asarray(pruning.n_m(n, m, axis=0)(params, masks.ones_like(params)).keep["fc"]["kernel"])
    for g0 in range(0, rows, m):
        group = keep[g0:g0 + m]
        np.testing.assert_array_equal(group.sum(0), np.full(cols, min(n, group.shape[0])))


def test_n_m_is_registered_idempotent_and_round_trips():
    assert "n_m" in pruning.methods() and "block" in pruning.methods()
    p = pruning.n_m(2, 4, axis=0)
    assert pruning.from_config(pruning.to_config(p)) == p
    assert pruning.to_config(p) == {"method": "n_m", "n": 2, "m": 4, "axis": 0}
    params = {"fc": {"kernel": jax.random.normal(jax.random.key(1), (12, 5))}}
    once = p(params, masks.ones_like(params))
    twice = p(params, once)
    np.testing.assert_array_equal(once.keep["fc"]["kernel"], twice.keep["fc"]["kernel"])
    assert float(masks.density(once)) == 0.5
    with pytest.raises(ValueError, match="n must be <= m"):
        pruning.n_m(5, 4)
    with pytest.raises(ValueError, match="axis -2 does not exist for leaf 'v'"):
        pruning.n_m(2, 4)({"v": jnp.ones(4)}, masks.ones_like({"v": jnp.ones(4)}, "all"))


def block_reference(w, keep, fraction, bh, bw):
    a, b = w.shape
    tiles = []
    for i in range(0, a, bh):
        for j in range(0, b, bw):
            k = keep[i:i + bh, j:j + bw]
            if k.any():
                tiles.append((np.abs(w[i:i + bh, j:j + bw])[k].astype(np.float32).sum(dtype=np.float32), i, j))
    remove = math.floor(fraction * len(tiles) + 0.5)
    out = keep.copy()
    for _, i, j in sorted(tiles, key=lambda t: (t[0], t[1] * b + t[2]))[:remove]:
        out[i:i + bh, j:j + bw] = False
    return out


@pytest.mark.parametrize("shape, block_shape", [((8, 8), (2, 2)), ((10, 7), (4, 4)), ((6, 9), (1, 3))])
def test_block_matches_numpy_reference(shape, block_shape):
    rng = np.random.default_rng(3)
    w = rng.normal(size=shape).astype(np.float32)
    keep = rng.random(shape) < 0.9
    params = {"fc": {"kernel": jnp.asarray(w)}}
    mask = masks.ones_like(params).replace(keep={"fc": {"kernel": jnp.asarray(keep)}})
    got = np.asarray(pruning.block(0.4, block_shape)(params, mask).keep["fc"]["kernel"])
    np.testing.assert_array_equal(got, block_reference(w, keep, 0.4, *block_shape))


# ----------------------------------------------------------------------------- layer densities


def shapes_tree(*shapes):
    return {f"l{i}": {"kernel": jax.ShapeDtypeStruct(s, jnp.float32)} for i, s in enumerate(shapes)}


@pytest.mark.parametrize("density", [0.5, 0.1, 0.02])
def test_erk_densities_are_proportional_capped_and_hit_the_target(density):
    shapes = [(784, 300), (300, 100), (100, 10), (3, 3, 16, 32)]
    tree = shapes_tree(*shapes)
    dens = pruning.layer_densities(tree, density, "erk")
    sizes = [np.prod(s) for s in shapes]
    raw = [sum(s) / np.prod(s) for s in shapes]
    assert all(0 < d <= 1 for d in dens.values())
    np.testing.assert_allclose(sum(d * n for d, n in zip(dens.values(), sizes)), density * sum(sizes), rtol=1e-12)
    sparse = [(d, r) for d, r in zip(dens.values(), raw) if d < 1]
    scale = sparse[0][0] / sparse[0][1]
    for d, r in sparse:  # density proportional to (sum of dims) / (prod of dims)
        assert d == pytest.approx(scale * r, rel=1e-12)
    for d, r in zip(dens.values(), raw):  # capped layers are exactly those whose scaled raw would exceed 1
        assert (d == 1.0) == (scale * r >= 1.0)
    counts = pruning.layer_counts(tree, density, "erk")
    assert sum(counts.values()) == math.floor(density * sum(sizes) + 0.5)
    for (p, c), d, n in zip(counts.items(), dens.values(), sizes):
        assert math.floor(d * n) <= c <= math.ceil(d * n)


def test_uniform_counts_and_rigl_reference_numbers():
    tree = shapes_tree((10, 10), (7, 3))
    assert pruning.layer_densities(tree, 0.3, "uniform") == {"l0/kernel": 0.3, "l1/kernel": 0.3}
    assert pruning.layer_counts(tree, 0.3, "uniform") == {"l0/kernel": 30, "l1/kernel": 6}  # 6.3 -> 6; total 36
    # LeNet-300-100 at 10%: the output layer is capped at 1, the rest re-solved (RigL's algorithm by hand)
    lenet = shapes_tree((784, 300), (300, 100), (100, 10))
    eps = (0.1 * (235200 + 30000) - 0.9 * 1000) / (1084 + 400)
    dens = pruning.layer_densities(lenet, 0.1, "erk")
    assert dens["l2/kernel"] == 1.0
    assert dens["l0/kernel"] == pytest.approx(eps * 1084 / 235200) and dens["l1/kernel"] == pytest.approx(eps * 400 / 30000)
    with pytest.raises(ValueError, match="distribution must be one of"):
        pruning.layer_densities(lenet, 0.1, "er")


# ----------------------------------------------------------------------------- N:M in IMP


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(nn.relu(nn.Dense(16)(x)))


def test_n_m_in_imp_reaches_half_density_exactly():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 8)).astype(np.float32)
    y = x[:, :4].argmax(1).astype(np.int32)
    data = jt.data.from_arrays(train=(x[:80], y[:80]), test=(x[80:], y[80:]))
    task = jt.Task(MLP(), input_shape=(8,), tx=optax.sgd(0.1))
    run = jt.imp(task, data, jt.pruning.n_m(2, 4, axis=0), levels=2, steps=10, batch_size=20, seeds=2, log=None)
    assert run.levels[1].density.tolist() == [0.5, 0.5] and run.levels[2].density.tolist() == [0.5, 0.5]
    k = np.asarray(run.levels[1].mask.keep["Dense_1"]["kernel"])  # [S, 8, 16]: the hidden layer
    assert (k.reshape(2, 2, 4, 16).sum(2) == 2).all()
