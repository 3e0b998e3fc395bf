"""Tests for jaxticket.analysis (mask similarity, agreement, ensembles, trajectories,
connectivity) and jaxticket.plots (PNG files)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxticket import analysis, masks, plots

SHAPES = {"conv1": (3, 3, 2, 4), "fc1": (6, 5), "output": (5, 3)}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _params():
    p = {}
    for name, shape in SHAPES.items():
        p[name] = {"kernel": jnp.ones(shape), "bias": jnp.ones(shape[-1])}
    return p


def _mask(keeps: dict) -> masks.Mask:
    """Mask over _params() with the given kernel keep arrays (biases all-True, not prunable)."""
    tree = {n: {"kernel": jnp.asarray(keeps[n], bool), "bias": jnp.ones(SHAPES[n][-1], bool)} for n in SHAPES}
    return masks.from_tree(tree)


def _random_keeps(rng: np.random.Generator, density: float) -> dict:
    return {n: rng.random(s) < density for n, s in SHAPES.items()}


def _np_metrics(ka: dict, kb: dict):
    a = np.concatenate([ka[n].ravel() for n in SHAPES])
    b = np.concatenate([kb[n].ravel() for n in SHAPES])
    inter, union = np.sum(a & b), np.sum(a | b)
    jac = 1.0 if union == 0 else inter / union
    small = min(a.sum(), b.sum())
    ovl = 1.0 if (a.sum() == 0 and b.sum() == 0) else (0.0 if small == 0 else inter / small)
    ham = np.sum(a != b)
    return jac, ovl, ham, ham / a.size


# ----------------------------------------------------------------------------- mask similarity


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    da=st.sampled_from([0.0, 0.05, 0.3, 0.7, 1.0]),
    db=st.sampled_from([0.0, 0.05, 0.3, 0.7, 1.0]),
)
def test_similarity_against_numpy_reference(seed, da, db):
    rng = np.random.default_rng(seed)
    ka, kb = _random_keeps(rng, da), _random_keeps(rng, db)
    ma, mb = _mask(ka), _mask(kb)
    jac, ovl, ham, frac = _np_metrics(ka, kb)
    np.testing.assert_allclose(analysis.jaccard(ma, mb), jac, rtol=1e-6)
    np.testing.assert_allclose(analysis.overlap(ma, mb), ovl, rtol=1e-6)
    h = analysis.hamming(ma, mb)
    assert int(h.count) == ham
    np.testing.assert_allclose(h.fraction, frac, rtol=1e-6)
    # symmetry
    np.testing.assert_allclose(analysis.jaccard(mb, ma), analysis.jaccard(ma, mb))
    np.testing.assert_allclose(analysis.overlap(mb, ma), analysis.overlap(ma, mb))
    # per layer against the reference on each kernel alone
    per = analysis.jaccard(ma, mb, per_layer=True)
    assert set(per) == {f"{n}/kernel" for n in SHAPES}  # biases are not prunable
    for n in SHAPES:
        inter, union = np.sum(ka[n] & kb[n]), np.sum(ka[n] | kb[n])
        np.testing.assert_allclose(per[f"{n}/kernel"], 1.0 if union == 0 else inter / union, rtol=1e-6)
    # the matrix agrees with the pairwise functions
    sim = analysis.similarity_matrix([ma, mb, ma])
    np.testing.assert_allclose(sim[0, 1], jac, rtol=1e-6)
    np.testing.assert_allclose(np.diag(sim), 1.0)
    np.testing.assert_array_equal(sim, sim.T)
    np.testing.assert_allclose(analysis.similarity_matrix([ma, mb], "overlap")[0, 1], ovl, rtol=1e-6)
    assert int(analysis.similarity_matrix([ma, mb], "hamming_count")[1, 0]) == ham
    np.testing.assert_allclose(analysis.similarity_matrix([ma, mb], "hamming")[0, 1], frac, rtol=1e-6)


def test_similarity_identities():
    rng = np.random.default_rng(0)
    ka = _random_keeps(rng, 0.4)
    ma = _mask(ka)
    assert float(analysis.jaccard(ma, ma)) == 1.0
    assert float(analysis.overlap(ma, ma)) == 1.0
    assert int(analysis.hamming(ma, ma).count) == 0
    # disjoint masks
    mb = _mask({n: ~k for n, k in ka.items()})
    assert float(analysis.jaccard(ma, mb)) == 0.0
    assert float(analysis.overlap(ma, mb)) == 0.0
    total = sum(int(np.prod(s)) for s in SHAPES.values())
    assert int(analysis.hamming(ma, mb).count) == total
    assert float(analysis.hamming(ma, mb).fraction) == 1.0
    # two empty masks
    empty = _mask({n: np.zeros(s, bool) for n, s in SHAPES.items()})
    assert float(analysis.jaccard(empty, empty)) == 1.0
    assert float(analysis.overlap(empty, empty)) == 1.0
    # nested masks: overlap 1
    sub = _mask({n: k & (rng.random(k.shape) < 0.5) for n, k in ka.items()})
    assert float(analysis.overlap(ma, sub)) == 1.0
    # jit and a stacked (vmapped) Mask
    assert float(jax.jit(analysis.jaccard)(ma, ma)) == 1.0
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), ma, mb, ma)
    np.testing.assert_allclose(
        analysis.similarity_matrix(stacked), analysis.similarity_matrix([ma, mb, ma]), rtol=1e-6
    )
    h = analysis.hamming(ma, mb, per_layer=True)["fc1/kernel"]
    assert int(h.count) == 30 and float(h.fraction) == 1.0


def test_non_prunable_leaves_ignored():
    # Same kernels; the "bias" leaves are made prunable in one tree-shaped but non-prunable
    # mask; only prunable leaves count, so a changed non-prunable leaf is invisible.
    params = {"fc": {"kernel": jnp.ones((3, 2)), "scale": jnp.ones((2,))}}
    ma = masks.ones_like(params)  # scale not prunable
    k = np.array([[1, 0], [1, 1], [0, 0]], bool)
    mb = ma.replace(keep={"fc": {"kernel": jnp.asarray(k), "scale": jnp.zeros(2, bool)}})
    np.testing.assert_allclose(analysis.jaccard(ma, mb), 3 / 6, rtol=1e-6)
    assert int(analysis.hamming(ma, mb).count) == 3
    assert list(analysis.jaccard(ma, mb, per_layer=True)) == ["fc/kernel"]


def test_masks_must_fit():
    ma = masks.ones_like({"a": jnp.ones((2, 2))})
    with pytest.raises(ValueError, match="do not fit"):
        analysis.jaccard(ma, masks.ones_like({"b": jnp.ones((2, 2))}))
    with pytest.raises(ValueError, match="do not fit"):
        analysis.overlap(ma, masks.ones_like({"a": jnp.ones((2, 3))}))
    with pytest.raises(ValueError, match="prunable"):
        analysis.hamming(ma, masks.ones_like({"a": jnp.ones((2, 2))}, prunable="nothing"))
    with pytest.raises(TypeError, match="not a jaxticket Mask"):
        analysis.jaccard(ma, {"a": jnp.ones((2, 2), bool)})
    with pytest.raises(ValueError, match="mask 1"):
        analysis.similarity_matrix([ma, masks.ones_like({"a": jnp.ones((3, 2))})])
    with pytest.raises(ValueError, match="unknown metric"):
        analysis.similarity_matrix([ma], "cosine")


# ----------------------------------------------------------------------------- predictions


def test_agreement_against_numpy_and_logits():
    rng = np.random.default_rng(1)
    preds = rng.integers(0, 4, size=(5, 40))
    res = analysis.agreement(preds)
    want = np.array([[np.sum(preds[i] == preds[j]) for j in range(5)] for i in range(5)])
    np.testing.assert_array_equal(res.counts, want)
    np.testing.assert_array_equal(res.counts, res.counts.T)
    np.testing.assert_array_equal(np.diag(res.counts), 40)
    np.testing.assert_allclose(res.fraction, want / 40)
    logits = jax.nn.one_hot(preds, 4) * 3.0 + rng.normal(size=(5, 40, 4)) * 0.1
    np.testing.assert_array_equal(analysis.agreement(logits).counts, want)
    np.testing.assert_array_equal(jax.jit(analysis.agreement)(preds).counts, want)
    with pytest.raises(ValueError, match="n_models"):
        analysis.agreement(np.zeros(3))


def test_error_overlap():
    labels = np.array([0, 1, 2, 0])
    preds = np.array([[0, 1, 2, 0], [1, 1, 0, 0], [1, 0, 0, 0]])  # errors: {}, {0,2}, {0,1,2}
    res = analysis.error_overlap(preds, labels)
    np.testing.assert_array_equal(res.both_wrong, [[0, 0, 0], [0, 2, 2], [0, 2, 3]])
    np.testing.assert_allclose(res.jaccard, [[1, 0, 0], [0, 1, 2 / 3], [0, 2 / 3, 1]], rtol=1e-6)
    np.testing.assert_allclose(res.fraction[2, 2], 0.75)


def test_single_logit_is_a_sigmoid_binary_classifier():
    # [3 models, 4 examples, 1 logit]: class 1 iff logit > 0 (argmax over one class would say 0)
    logits = np.array([[2.0, -1.0, 0.5, -3.0], [1.0, 1.0, -0.5, -1.0], [-4.0, -2.0, 0.2, 2.0]], np.float32)[..., None]
    labels = np.array([[1.0], [0.0], [1.0], [0.0]], np.float32)  # BCE targets [N, 1]
    np.testing.assert_array_equal(analysis.predicted_labels(logits), [[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 1, 1]])
    np.testing.assert_array_equal(analysis.predicted_labels(np.array([[0.0], [-0.0], [1e-30]])), [0, 0, 1])
    probs = analysis.class_probabilities(logits)
    np.testing.assert_allclose(probs[..., 1], 1 / (1 + np.exp(-logits[..., 0])), rtol=1e-6)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(analysis.agreement(logits).counts, [[4, 2, 2], [2, 4, 0], [2, 0, 4]])
    np.testing.assert_array_equal(analysis.error_overlap(logits, labels).both_wrong, [[0, 0, 0], [0, 2, 0], [0, 0, 2]])
    # all three: mean sigmoid [.543, .373, .517, .399] -> [1, 0, 1, 0]; votes 2-1 the same way
    for method in ("mean_softmax", "vote"):
        assert float(analysis.ensemble_accuracy(logits, labels, method=method)) == 1.0
    # members 1, 2: every vote ties 1-1, broken by the mean sigmoid [.374, .425, .464, .575]
    np.testing.assert_array_equal(analysis.ensemble_predictions(logits, [1, 2], "vote"), [0, 0, 0, 1])
    assert float(analysis.ensemble_accuracy(logits, labels[:, 0], [1, 2])) == 0.25
    rows = analysis.ensemble_table(logits, labels, ["a", "b", "c"], {"all": ["a", "b", "c"]})
    assert (rows[0]["mean_softmax"], rows[0]["best_single"], rows[0]["best_member"]) == (1.0, 1.0, "a")


# ----------------------------------------------------------------------------- ensembles


def test_ensemble_of_identical_members_equals_member():
    rng = np.random.default_rng(2)
    member = rng.normal(size=(50, 6)).astype(np.float32)
    labels = rng.integers(0, 6, size=50)
    logits = np.stack([member] * 3)
    single = np.mean(member.argmax(-1) == labels)
    for method in ("mean_softmax", "vote"):
        np.testing.assert_allclose(analysis.ensemble_accuracy(logits, labels, method=method), single)
        np.testing.assert_array_equal(
            analysis.ensemble_predictions(logits, [0, 2], method), member.argmax(-1)
        )


def test_ensemble_mean_softmax_and_vote_reference():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(4, 30, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=30)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    want = np.mean(probs[[0, 2, 3]].mean(0).argmax(-1) == labels)
    np.testing.assert_allclose(analysis.ensemble_accuracy(logits, labels, [0, 2, 3]), want, rtol=1e-6)
    names = ["a", "b", "c", "d"]
    np.testing.assert_allclose(
        analysis.ensemble_accuracy(logits, labels, ["a", "c", "d"], names=names), want, rtol=1e-6
    )
    # vote against a NumPy majority with the documented tie-break
    sub = [0, 1, 2, 3]
    votes = np.stack([np.bincount(logits[sub, e].argmax(-1), minlength=5) for e in range(30)])
    mean_p = probs[sub].mean(0)
    tied = votes == votes.max(-1, keepdims=True)
    vote_pred = np.where(tied, mean_p, -np.inf).argmax(-1)
    np.testing.assert_array_equal(analysis.ensemble_predictions(logits, sub, "vote"), vote_pred)
    with pytest.raises(ValueError, match="unknown member"):
        analysis.ensemble_accuracy(logits, labels, ["zz"], names=names)
    with pytest.raises(ValueError, match="method"):
        analysis.ensemble_accuracy(logits, labels, method="median")


def test_vote_tie_break_by_summed_softmax_then_lowest_index():
    # Two members, one example: member 0 votes class 2 (confidently), member 1 votes class 0
    # (barely). Tie 1-1 -> the class with the larger summed softmax: 2.
    logits = np.array([[[0.0, 0.0, 5.0]], [[0.1, 0.0, 0.0]]], np.float32)
    assert int(analysis.ensemble_predictions(logits, method="vote")[0]) == 2
    # Mirror image: the confident vote is class 0.
    logits = np.array([[[5.0, 0.0, 0.0]], [[0.0, 0.0, 0.1]]], np.float32)
    assert int(analysis.ensemble_predictions(logits, method="vote")[0]) == 0
    # Complete symmetry (equal summed softmax) -> lowest class index among the tied classes.
    logits = np.array([[[0.0, 3.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 3.0]]], np.float32)
    assert int(analysis.ensemble_predictions(logits, method="vote")[0]) == 1
    # A clear majority wins even against a more confident minority.
    logits = np.array([[[0.1, 0.0]], [[0.1, 0.0]], [[0.0, 9.0]]], np.float32)
    assert int(analysis.ensemble_predictions(logits, method="vote")[0]) == 0


def test_ensemble_table():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(3, 40, 4)).astype(np.float32)
    labels = rng.integers(0, 4, size=40)
    names = ["l1", "l2", "rand"]
    rows = analysis.ensemble_table(logits, labels, names, {"all": names, "l1+rand": ["l1", "rand"]})
    assert [r["subset"] for r in rows] == ["all", "l1+rand"]
    assert rows[1]["members"] == ["l1", "rand"]
    singles = (logits.argmax(-1) == labels).mean(-1)
    assert rows[0]["best_single"] == pytest.approx(singles.max())
    assert rows[1]["best_single"] == pytest.approx(max(singles[0], singles[2]))
    assert rows[0]["vote"] == pytest.approx(float(analysis.ensemble_accuracy(logits, labels, method="vote")))
    assert rows[0]["mean_softmax"] == pytest.approx(float(analysis.ensemble_accuracy(logits, labels)))


# ----------------------------------------------------------------------------- trajectories


def test_weight_trajectories_and_movement():
    base = {"fc1": {"kernel": jnp.arange(6.0).reshape(2, 3) + 1.0, "bias": jnp.zeros(3)}}
    m0 = masks.ones_like(base)
    k1 = np.array([[1, 1, 0], [1, 1, 1]], bool)
    k2 = np.array([[1, 0, 0], [0, 1, 1]], bool)  # survivors at the last level: 1, 5, 6
    ms = [m0, m0.replace(keep={"fc1": {"kernel": jnp.asarray(k1), "bias": jnp.ones(3, bool)}}),
          m0.replace(keep={"fc1": {"kernel": jnp.asarray(k2), "bias": jnp.ones(3, bool)}})]
    ps = [jax.tree.map(lambda x, s=s: x * s, base) for s in (1.0, 2.0, 2.0)]
    traj = analysis.weight_trajectories(ps, ms, "fc1/kernel")
    np.testing.assert_array_equal(traj, [[1, 5, 6], [2, 10, 12], [2, 10, 12]])
    mv = analysis.trajectory_movement(traj)
    np.testing.assert_allclose(mv.mean_abs_change, [4.0, 0.0])
    np.testing.assert_allclose(mv.relative_change, [1.0, 0.0])
    with pytest.raises(KeyError, match="fc1/kernel"):
        analysis.weight_trajectories(ps, ms, "fc2/kernel")
    with pytest.raises(ValueError, match="per level"):
        analysis.weight_trajectories(ps, ms[:2], "fc1/kernel")


# ----------------------------------------------------------------------------- connectivity


def test_connectivity_dense_and_conv():
    kd = np.array([[1, 0, 0], [1, 0, 1], [0, 0, 0], [1, 0, 1]], bool)  # (in=4, out=3)
    kc = np.zeros((3, 3, 2, 4), bool)  # (h, w, in=2, out=4)
    kc[0, 0, 0, 0] = kc[1, 1, 0, 0] = kc[2, 2, 0, 1] = True  # only input channel 0 used
    kc[:, :, 0, 3] = True
    tree = {"conv1": {"kernel": kc, "bias": np.ones(4, bool)}, "fc1": {"kernel": kd, "bias": np.ones(3, bool)}}
    mask = masks.from_tree(tree)
    cd = analysis.connectivity(mask, "fc1/kernel")
    np.testing.assert_array_equal(cd.per_output, [3, 0, 2])
    np.testing.assert_array_equal(cd.per_input, [1, 2, 0, 2])
    assert float(cd.empty_outputs) == pytest.approx(1 / 3)
    assert float(cd.empty_inputs) == pytest.approx(1 / 4)
    assert float(cd.empty_pairs) == pytest.approx(7 / 12)
    cc = analysis.connectivity(mask, "conv1/kernel")
    np.testing.assert_array_equal(cc.per_output, [2, 1, 0, 9])
    np.testing.assert_array_equal(cc.per_input, [12, 0])
    np.testing.assert_array_equal(cc.per_pair, [[2, 1, 0, 9], [0, 0, 0, 0]])
    assert float(cc.empty_inputs) == 0.5 and float(cc.empty_outputs) == 0.25
    assert float(cc.empty_pairs) == pytest.approx(5 / 8)
    cj = jax.jit(analysis.connectivity, static_argnums=1)(mask, "conv1/kernel")
    np.testing.assert_array_equal(cj.per_pair, cc.per_pair)
    summary = analysis.connectivity_summary(mask)
    assert set(summary) == {"conv1/kernel", "fc1/kernel"}
    assert summary["fc1/kernel"]["density"] == pytest.approx(5 / 12)
    assert summary["conv1/kernel"]["empty_inputs"] == 0.5
    with pytest.raises(ValueError, match="kernel"):
        analysis.connectivity(mask, "fc1/bias")


def test_connectivity_upstream_counts_only_live_inputs():
    kc = np.zeros((3, 3, 2, 4), bool)  # conv: 2 input channels, 4 outputs
    kc[0, 0, 0, 0] = kc[2, 2, 0, 1] = True
    kc[1, 1, 1, 2] = True  # output 2 keeps a weight from input 1 only
    tree = {"conv": {"kernel": kc}}
    raw = analysis.connectivity(tree, "conv/kernel")
    assert float(raw.empty_inputs) == 0.0 and float(raw.empty_outputs) == 0.25  # output 3 empty
    dead1 = analysis.connectivity(tree, "conv/kernel", upstream=np.array([True, False]))
    # input 1 carries nothing: its weights do not count, output 2 is dead too
    np.testing.assert_array_equal(dead1.per_output, [1, 1, 0, 0])
    np.testing.assert_array_equal(dead1.per_input, [2, 0])
    assert float(dead1.empty_inputs) == 0.0  # of the one live input, none is empty
    assert float(dead1.empty_outputs) == 0.5
    assert float(dead1.empty_pairs) == pytest.approx(2 / 4)  # live input 0 with outputs 2 and 3
    # an input emptied downstream of a dead unit is excluded; an emptied live one is counted
    kd = np.zeros((3, 2), bool)
    kd[0, 0] = True  # input 0 used, inputs 1 and 2 empty
    live = np.array([True, True, False])  # input 2 is fed by a dead unit
    c = analysis.connectivity({"fc": {"kernel": kd}}, "fc/kernel", upstream=live)
    assert float(c.empty_inputs) == 0.5  # input 1 of the two live ones
    assert float(analysis.connectivity({"fc": {"kernel": kd}}, "fc/kernel").empty_inputs) == pytest.approx(2 / 3)
    none = analysis.connectivity({"fc": {"kernel": kd}}, "fc/kernel", upstream=np.zeros(3, bool))
    assert np.isnan(float(none.empty_inputs)) and float(none.empty_outputs) == 1.0
    with pytest.raises(ValueError, match="one bool per input"):
        analysis.connectivity({"fc": {"kernel": kd}}, "fc/kernel", upstream=np.ones(2, bool))
    jitted = jax.jit(analysis.connectivity, static_argnums=1)(tree, "conv/kernel", np.array([True, False]))
    np.testing.assert_array_equal(jitted.per_output, dead1.per_output)


def test_live_units_chain_matches_what_a_lenet5_computes():
    # the definition checked against the network: a conv1 channel without weights, and the
    # conv2 channels fed only by it, give the same output whatever the input image
    import jax.numpy as jnp

    from jaxticket import models

    model = models.LeNet5()
    params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)["params"]
    keep = jax.tree.map(lambda x: np.ones(x.shape, bool), params)
    keep["conv1"]["kernel"][..., 1:] = False  # conv1: only channel 0 keeps weights
    keep["conv2"]["kernel"][:, :, 0, :8] = False  # conv2 outputs 0-7 lose their weights from channel 0
    live1 = analysis.live_units(keep, "conv1/kernel")
    assert live1.tolist() == [True] + [False] * 5
    live2 = analysis.live_units(keep, "conv2/kernel", upstream=live1)
    assert live2.tolist() == [False] * 8 + [True] * 8
    raw2 = analysis.connectivity(keep, "conv2/kernel")
    assert float(raw2.empty_inputs) == 0.0 and float(raw2.empty_outputs) == 0.0  # the raw figure sees none of it
    masked = jax.tree.map(lambda p, k: p * k, params, keep)

    def conv2_out(x):
        _, state = model.apply({"params": masked}, x, train=False, capture_intermediates=True,
                               mutable=["intermediates"])
        return state["intermediates"]["conv2"]["__call__"][0]

    x = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
    out = np.asarray(conv2_out(x))  # [2, 11, 11, 16], before ReLU
    varies = np.abs(out[0] - out[1]).max(axis=(0, 1)) > 1e-6  # per channel: depends on the image?
    np.testing.assert_array_equal(varies, np.asarray(live2))
    fc1_live = analysis.flattened_live(live2, 25)
    assert fc1_live.shape == (400,) and int(fc1_live.sum()) == 8 * 25
    assert not bool(fc1_live[0]) and bool(fc1_live[8]) and bool(fc1_live[16 + 8])


# ----------------------------------------------------------------------------- plots


def _is_png(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC


def test_plots_write_pngs(tmp_path):
    a = np.linspace(0, 1, 30)
    rng = np.random.default_rng(5)
    paths = [
        plots.plot_error_curve(a, {"train": 0.1 + 0.2 * a * (1 - a), "test": 0.2 + 0 * a}, tmp_path / "curve.png"),
        plots.plot_instability_vs_k(
            [0, 10, 100, 1000], {"test": ([0.3, 0.2, 0.01, 0.0], [0.01, 0.02, 0.0, 0.0])}, tmp_path / "k.png"
        ),
        plots.plot_density_accuracy(
            [{"method": "imp", "density": 0.8**l, "accuracy": [0.98 - 0.01 * l, 0.97]} for l in range(6)]
            + [{"method": "random", "density": 0.8**l, "accuracy": 0.9} for l in range(6)],
            tmp_path / "sub" / "density.png",
        ),
        plots.plot_heatmap(rng.random((3, 3)), ["a", "b", "c"], tmp_path / "heat.png", "Jaccard"),
        plots.plot_trajectories(rng.normal(size=(4, 300)), tmp_path / "traj.png"),
    ]
    for p in paths:
        assert _is_png(p), p
    # nothing but the PNGs (no temp files) left behind
    left = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["curve.png", "density.png", "heat.png", "k.png", "traj.png"]
    with pytest.raises(ValueError, match="labels"):
        plots.plot_heatmap(np.eye(2), ["a", "b", "c"], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_plot_conventions_styles_bars_and_captions(tmp_path):
    styles = [plots.series_style(i) for i in range(40)]
    assert len({st["color"] for st in styles[:20]}) == 20  # pruning_at_init draws 15 series
    assert len({(st["color"], st["marker"]) for st in styles}) == 40
    # bars: the sample SD (ddof=1), as the tables' ±, or the 95% t-interval
    x = [0.90, 0.92, 0.97]
    assert plots.point_stats(x) == pytest.approx((np.mean(x), np.std(x, ddof=1), 3))
    assert plots.point_stats(x, "ci95")[1] == pytest.approx(4.302652729911275 * np.std(x, ddof=1) / np.sqrt(3))
    assert plots.point_stats([0.5, np.nan]) == (0.5, 0.0, 1) and plots.point_stats([0.1, 0.2], "none")[1] == 0.0
    with pytest.raises(ValueError, match="choose one of"):
        plots.point_stats(x, "sem")
    assert plots.bar_note("sd", [5, 5]) == "mean over n = 5 seeds; bars: ±1 SD (ddof=1)"
    assert plots.bar_note("sd", [1, 1]) == "one seed each (no bars)"
    assert "n = 1-5" in plots.bar_note("ci95", [1, 5, 5]) and "hollow" in plots.bar_note("ci95", [1, 5])
    # the plots take the new options and stay compatible with the old calls
    rows = [{"method": "five", "density": 0.8 ** l, "accuracy": [0.98, 0.97, 0.96, 0.975, 0.97]} for l in range(4)]
    rows += [{"method": "one", "density": 0.8 ** l, "accuracy": 0.9} for l in range(4)]
    for bars in plots.BARS:
        assert _is_png(plots.plot_density_accuracy(rows, tmp_path / f"d_{bars}.png", bars=bars))
    assert _is_png(plots.plot_series_vs_density({"a": ([1, 0.5], [90.0, 80.0], [1.0, 2.0]),
                                                 "b": ([1, 0.5], [91.0, 85.0], [0.0, 0.0])},
                                                tmp_path / "s.png", ylabel="accuracy (%)", n={"a": 5, "b": 1}))
    assert _is_png(plots.plot_instability_vs_k([0, 25, 100], {"k": ([0.1, np.nan, 0.01], [0.01, 0.0, 0.0])},
                                               tmp_path / "k.png", n={"k": [5, 0, 5]}))
    with pytest.raises(ValueError, match="bars"):
        plots.plot_density_accuracy(rows, tmp_path / "bad.png", bars="sem")
