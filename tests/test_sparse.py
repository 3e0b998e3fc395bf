"""Sparse training (jaxticket.sparse): each update against NumPy, exact counts, exact zeros,
vmapped seeds equal to single runs, resuming in a run directory; learning-rate rewinding."""

import functools
import math
import shutil

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxticket as jt
from jaxticket import masks, pruning, sparse, train


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4, name="out")(nn.relu(nn.Dense(16, name="fc")(x)))


@functools.lru_cache(maxsize=None)
def setup():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 8)).astype(np.float32)
    y = x[:, :4].argmax(1).astype(np.int32)
    data = jt.data.from_arrays(train=(x[:80], y[:80]), test=(x[80:], y[80:]))
    task = jt.Task(MLP(), input_shape=(8,), tx=optax.adam(1e-2))
    return task, data


RUN = dict(steps=30, batch_size=16, every=5, log=None, loop="device", chunk_size=10)


def prunable_leaves(tree_or_mask, mask):
    leaves = tree_or_mask.leaves() if isinstance(tree_or_mask, masks.Mask) else jax.tree.leaves(tree_or_mask)
    return [np.asarray(x) for x, f in zip(leaves, mask.prunable) if f]


def assert_zeros_where_pruned(state):
    """Params and every params-shaped part of the optimizer state exactly 0 where pruned."""
    keep = prunable_leaves(state.mask, state.mask)
    for w, k in zip(prunable_leaves(state.params, state.mask), keep):
        assert (w[~k] == 0).all()
    params_def = jax.tree.structure(state.params)
    moments = [x for x in jax.tree.leaves(state.opt_state, is_leaf=lambda t: jax.tree.structure(t) == params_def)
               if jax.tree.structure(x) == params_def]
    assert moments  # Adam's mu and nu
    for tree in moments:
        for v, k in zip(prunable_leaves(tree, state.mask), keep):
            assert (v[~k] == 0).all()


# ----------------------------------------------------------------------------- the updates vs NumPy


def np_lowest(scores, alive, k):
    """Flags of the k alive entries with the smallest |score|, ties by position."""
    order = sorted(np.flatnonzero(alive.ravel()), key=lambda i: (abs(scores.ravel()[i]), i))
    out = np.zeros(alive.size, bool)
    out[order[:k]] = True
    return out.reshape(alive.shape)


def np_highest(scores, alive, k):
    order = sorted(np.flatnonzero(alive.ravel()), key=lambda i: (-abs(scores.ravel()[i]), i))
    out = np.zeros(alive.size, bool)
    out[order[:k]] = True
    return out.reshape(alive.shape)


def test_gmp_ramp_is_zhu_gupta_cubic_and_ends_exactly():
    task, _ = setup()
    ones = masks.ones_like(task.abstract_params())
    m = sparse.gmp(0.2, start=4, end=20, every=4).resolve(30)
    assert m.update_steps() == (4, 8, 12, 16, 20)
    table = m.keep_table(ones)
    final = list(pruning.layer_counts(ones, 0.2, "uniform").values())
    sizes = [8 * 16, 16 * 4]
    for j, t in enumerate(m.update_steps()):
        s_t = 0.8 + (0.0 - 0.8) * (1 - (t - 4) / 16) ** 3  # s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3
        for l, n in enumerate(sizes):
            assert abs(table[j, l] - (1 - s_t) * n) <= 1.0 + 1e-9  # K_l + round((N_l - K_l) r): two roundings
    assert table[-1].tolist() == final
    with pytest.raises(ValueError, match="end .* < steps"):
        sparse.gmp(0.2, end=30).resolve(30)


def make_state(seed=0):
    task, data = setup()
    state = train.init_state(task, init_seed=seed)
    step = jax.jit(train.train_step, static_argnums=0)
    x, y = np.asarray(data.train.inputs[:16]), np.asarray(data.train.labels[:16])
    for _ in range(3):
        state, _ = step(task, state, (x, y))
    return task, state, (jnp.asarray(x), jnp.asarray(y))


@pytest.mark.parametrize("kind", ["set", "rigl"])
def test_set_and_rigl_update_match_numpy(kind):
    task, state, batch = make_state()
    method = sparse.get(kind, 0.3, every=5, distribution="uniform").resolve(40)
    init = method.initial_mask(state.mask, jax.random.key(3))
    state = train.with_mask(state, init)
    t = jnp.int32(10)
    key = jax.random.key(4)
    new = jax.jit(lambda s: method.update(task, s, batch, t, key))(state)
    alpha = 0.15 * (1 + math.cos(math.pi * 10 / 30))
    grads = jax.jit(sparse.dense_grads, static_argnums=0)(task, state, batch)
    idx = [i for i, f in enumerate(state.mask.prunable) if f]
    for j, i in enumerate(idx):
        w = np.asarray(jax.tree.leaves(state.params)[i])
        k = np.asarray(state.mask.leaves()[i])
        kk = math.floor(alpha * k.sum() + 0.5)
        dropped = k & ~np_lowest(w, k, kk)
        if kind == "rigl":
            grow = np_highest(np.asarray(jax.tree.leaves(grads)[i]), ~dropped, kk)
        else:
            grow = np_highest(np.asarray(jax.random.uniform(jax.random.fold_in(key, j), w.shape)), ~dropped, kk)
        got = np.asarray(new.mask.leaves()[i])
        np.testing.assert_array_equal(got, dropped | grow)
        assert got.sum() == k.sum() and kk > 0
        w_new = np.asarray(jax.tree.leaves(new.params)[i])
        assert (w_new[grow] == 0).all()  # regrown weights start at 0
        np.testing.assert_array_equal(w_new[dropped], w[dropped])
    assert_zeros_where_pruned(new)


def test_gmp_update_matches_numpy():
    task, state, batch = make_state()
    method = sparse.gmp(0.2, start=4, end=20, every=4).resolve(30)
    table = method.keep_table(state.mask)
    new = jax.jit(lambda s: method.update(task, s, batch, jnp.int32(8), jax.random.key(0)))(state)
    idx = [i for i, f in enumerate(state.mask.prunable) if f]
    for j, i in enumerate(idx):
        w = np.asarray(jax.tree.leaves(state.params)[i])
        k = np.asarray(state.mask.leaves()[i])
        ref = k & ~np_lowest(w, k, int(k.sum()) - int(table[1, j]))  # update 1 (t = 8): the table's count
        np.testing.assert_array_equal(np.asarray(new.mask.leaves()[i]), ref)
    assert_zeros_where_pruned(new)


# ----------------------------------------------------------------------------- whole runs


def assert_counts(result, task, density, distribution, seeds):
    """Every replica's layers hold exactly their layer_counts; the density is their total."""
    ones = masks.ones_like(task.abstract_params())
    counts = pruning.layer_counts(ones, density, distribution)
    for path, leaf in zip(result.mask.paths(), result.mask.leaves()):
        if path in counts:
            assert np.asarray(leaf).reshape(seeds, -1).sum(1).tolist() == [counts[path]] * seeds
    total = sum(counts.values()) / (8 * 16 + 16 * 4)
    np.testing.assert_array_equal(result.density, np.float32(total))
    for w, k in zip(prunable_leaves(result.params, result.mask), prunable_leaves(result.mask, result.mask)):
        assert (w[~k] == 0).all()
    assert result.test_accuracy.shape == (seeds,) and len(result.rows()) == seeds


@pytest.mark.parametrize("method", ["gmp", "static"])  # set: the run-directory test; rigl: the seeds test
def test_each_method_reaches_its_counts_exactly(method):
    task, data = setup()
    kwargs = dict(RUN, end=20) if method == "gmp" else {k: v for k, v in RUN.items() if k != "every"}
    result = jt.train_sparse(task, data, method, density=0.25, seeds=2, **kwargs)
    assert_counts(result, task, 0.25, "uniform" if method == "gmp" else "erk", 2)
    assert result.rows()[0]["method"] == method and result.rows()[0]["target_density"] == 0.25


def test_zeros_exact_in_optimizer_state_through_the_loop():
    task, data = setup()
    m = sparse.get("rigl", 0.25, every=5).resolve(30)
    ones = masks.ones_like(task.abstract_params())
    state = train.init_state(task, seeds=2)
    raw = sparse.sparse_keys(2)
    from jaxticket.sparse.run import _initial_masks, _update_keys
    state = train.with_mask(state, _initial_masks(m, ones, raw))
    before = np.asarray(state.mask.keep["fc"]["kernel"])
    state, _ = sparse.run_sparse_steps(task, train.sources.DeviceFeed(16), m, state, jnp.asarray(_update_keys(raw)),
                                       data.train, 0, 10, length=10, seed_strategy="vmap")  # the vmap test's program
    state, _ = sparse.run_sparse_steps(task, train.sources.DeviceFeed(16), m, state, jnp.asarray(_update_keys(raw)),
                                       data.train, 10, 2, length=10, seed_strategy="vmap")
    assert not np.array_equal(before, np.asarray(state.mask.keep["fc"]["kernel"]))  # updated at 5 and 10
    assert_zeros_where_pruned(state)


def test_vmapped_seeds_equal_single_runs():
    """Replica 1 of a 2-seed run is the single run with every seed + 1: bitwise with each
    replica's own program (sequential), the same masks and params to float tolerance vmapped
    (XLA:CPU's batched matmuls round differently in the last bits)."""
    task, data = setup()
    single = jt.train_sparse(task, data, "rigl", density=0.25, seeds=1, init_seed=1, data_seed=1, aug_seed=1,
                             sparse_seed=1, **RUN)
    one = lambda tree: jax.tree.map(lambda x: x[0], tree)  # noqa: E731
    two = lambda tree: jax.tree.map(lambda x: x[1], tree)  # noqa: E731
    seq = jt.train_sparse(task, data, "rigl", density=0.25, seeds=2, seed_strategy="sequential", **RUN)
    chex.assert_trees_all_equal(two(seq.mask.keep), one(single.mask.keep))
    chex.assert_trees_all_equal(two(seq.params), one(single.params))
    assert seq.test_accuracy[1] == single.test_accuracy[0]
    vm = jt.train_sparse(task, data, "rigl", density=0.25, seeds=2, seed_strategy="vmap", **RUN)
    chex.assert_trees_all_equal(two(vm.mask.keep), one(single.mask.keep))
    chex.assert_trees_all_close(two(vm.params), one(single.params), rtol=1e-5, atol=1e-6)
    for result in (seq, vm):
        assert_counts(result, task, 0.25, "erk", 2)


def test_the_update_is_a_real_cond_on_an_unbatched_counter():
    task, data = setup()
    m = sparse.rigl(0.25, every=5).resolve(30)
    state = train.init_state(task, seeds=2)
    from jaxticket.sparse.loop import _run
    jaxpr = jax.make_jaxpr(lambda s, k: _run(task, train.sources.DeviceFeed(16), m, 10, None, s, k, data.train,
                                             np.int32(0), np.int32(10)))(state, jnp.zeros((2, 2), jnp.uint32))
    assert "cond[" in str(jaxpr)  # a vmapped cond would have become a select of both branches


def test_scheduled_n_m_one_shot():
    task, data = setup()
    result = jt.train_sparse(task, data, sparse.one_shot(pruning.n_m(2, 4, axis=0), 10), steps=20, batch_size=16,
                             log=None, loop="device")
    k = np.asarray(result.mask.keep["fc"]["kernel"])[0]  # (8, 16)
    assert (k.reshape(2, 4, 16).sum(1) == 2).all()
    assert result.rows()[0]["target_density"] is None


def test_run_directory_reads_back_and_resumes_bit_for_bit(tmp_path):
    task, data = setup()
    kw = dict(RUN, checkpoint_every=10, seeds=2, eval_every=10)
    first = jt.train_sparse(task, data, "set", density=0.25, workdir=tmp_path / "run", **kw)
    assert_counts(first, task, 0.25, "erk", 2)
    lines = []
    again = jt.train_sparse(task, data, "set", density=0.25, workdir=tmp_path / "run", **{**kw, "log": lines.append})
    assert "read back" in lines[0]
    chex.assert_trees_all_equal(first.params, again.params)
    assert again.rows() == first.rows()
    # an interrupted run: the last checkpoint and the summary gone, resume from step 20
    (tmp_path / "run" / "summary.json").unlink()
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "30")
    resumed = jt.train_sparse(task, data, "set", density=0.25, workdir=tmp_path / "run", **kw)
    chex.assert_trees_all_equal(first.params, resumed.params)
    chex.assert_trees_all_equal(first.mask.keep, resumed.mask.keep)
    assert [r["step"] for r in resumed.history] == [0, 10, 20, 30]
    assert resumed.history == first.history[:3] + resumed.history[3:]
    with pytest.raises(ValueError, match="different config"):
        jt.train_sparse(task, data, "set", density=0.2, workdir=tmp_path / "run", **kw)


def test_bad_inputs_raise_clear_errors():
    task, data = setup()
    with pytest.raises(ValueError, match="needs density="):
        jt.train_sparse(task, data, "rigl", steps=10, batch_size=8, log=None)
    with pytest.raises(ValueError, match="unknown sparse training method 'rigel'"):
        jt.train_sparse(task, data, "rigel", density=0.1, steps=10, batch_size=8, log=None)
    with pytest.raises(ValueError, match="density must be in"):
        sparse.set_(1.5)
    with pytest.raises(ValueError, match="weight-scoring pruner"):
        sparse.gmp(0.1, scorer=pruning.n_m(2, 4))


# ----------------------------------------------------------------------------- learning-rate rewinding


def test_lr_rewind_branch_and_reset_mode():
    task, data = setup()
    assert "lr_rewind" in jt.branch_kinds()
    kw = dict(levels=1, steps=20, batch_size=16, rewind_step=5, seeds=2, log=None)
    lineage = jt.imp(task, data, jt.magnitude(0.5), **kw)
    lr = jt.imp(task, data, jt.magnitude(0.5), reset="lr_rewind", **kw)
    (branch,) = lineage.branch("lr_rewind", levels=[1])
    # the level-1 start: level 0's final weights under the level-1 mask, the step counter at k
    start = lineage.branch_state("lr_rewind", 1)
    assert np.asarray(start.step).tolist() == [5, 5]
    final0 = lineage.final_state(0)
    expect = jt.apply_mask(final0.params, lineage.levels[1].mask)
    chex.assert_trees_all_equal(start.params, expect)
    chex.assert_trees_all_equal(branch.params, lr.levels[1].params)  # branch == the reset mode's level
    assert not np.array_equal(np.asarray(branch.params["fc"]["kernel"]),
                              np.asarray(lineage.levels[1].params["fc"]["kernel"]))  # != weight rewinding
    assert lr.settings.reset == "lr_rewind"


def test_sparse_command_runs_and_refuses_bad_flags(tmp_path, capsys):
    from jaxticket import cli

    workdir = tmp_path / "rigl"
    assert cli.main(["sparse", "--config", "demo", "--method", "rigl", "--density", "0.2", "--steps", "20",
                     "--seeds", "1", "--workdir", str(workdir), "--mesh", "1,1"]) == 0
    out = capsys.readouterr().out
    assert "seed 0: density 0.2" in out and (workdir / "summary.json").exists()
    assert cli.main(["sparse", "--config", "demo", "--method", "rigl", "--density", "1.5"]) == 2
    assert "--density 1.5" in capsys.readouterr().err
    assert cli.main(["sparse", "--config", "nope", "--method", "set", "--density", "0.5"]) == 2
    assert cli.main(["sparse", "--config", "demo", "--method", "rigl", "--density", "0.5", "--straight-through"]) == 2
    assert "--straight-through is a setting of --method gmp" in capsys.readouterr().err
    assert cli.main(["sparse", "--config", "demo", "--method", "rigl", "--density", "0.5", "--mesh", "3,1"]) == 2
    err = capsys.readouterr().err
    assert "--mesh 3,1" in err and len(err.strip().splitlines()) == 1, err


def test_finetune_holds_the_final_learning_rate_and_lr_rewind_replays_the_schedule():
    task, data = setup()
    steps, k = 20, 5
    task = jt.Task(MLP(), input_shape=(8,), tx=optax.adam(optax.piecewise_constant_schedule(0.05, {10: 0.1})))
    kw = dict(levels=1, steps=steps, batch_size=16, rewind_step=k, seeds=2, log=None)
    lineage = jt.imp(task, data, jt.magnitude(0.5), **kw)

    def schedule_counts(state):
        return sorted({int(c) for c in np.ravel([np.asarray(x.count) for x in jax.tree.leaves(
            state.opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByScheduleState))
            if isinstance(x, optax.ScaleByScheduleState)])})

    tuned, rewound_lr = lineage.branch_state("finetune", 1), lineage.branch_state("lr_rewind", 1)
    assert np.asarray(tuned.step).tolist() == np.asarray(rewound_lr.step).tolist() == [k, k]  # same budget
    assert schedule_counts(tuned) == [steps - 1] and schedule_counts(rewound_lr) == [k]
    chex.assert_trees_all_equal(tuned.params, rewound_lr.params)  # the same trained weights, masked
    (ft,) = lineage.branch("finetune", levels=[1])
    (lr,) = lineage.branch("lr_rewind", levels=[1])
    assert not np.array_equal(np.asarray(ft.params["fc"]["kernel"]), np.asarray(lr.params["fc"]["kernel"]))


def test_finetune_holds_a_preset_schedule_of_the_global_step_at_its_end():
    # the presets' optimizers read the training step (scale_by_step_schedule): finetune offsets it by T - 1 - k
    task, data = setup()
    steps, k = 20, 5
    tx = train.make_optimizer(train.TrainConfig(optimizer="adam", lr=0.05, milestones=(10,), gamma=0.1))
    task = jt.Task(MLP(), input_shape=(8,), tx=tx)
    lineage = jt.imp(task, data, jt.magnitude(0.5), levels=1, steps=steps, batch_size=16, rewind_step=k, seeds=2,
                     log=None)

    def offsets(state):
        return sorted({int(o) for x in jax.tree.leaves(state.opt_state, is_leaf=lambda x: isinstance(
            x, train.StepScheduleState)) if isinstance(x, train.StepScheduleState)
            for o in np.ravel(np.asarray(x.schedule_offset))})

    assert offsets(lineage.branch_state("finetune", 1)) == [steps - 1 - k]
    assert offsets(lineage.branch_state("lr_rewind", 1)) == [0] == offsets(lineage.branch_state("rewind", 1))
    (ft,) = lineage.branch("finetune", levels=[1])
    (lr,) = lineage.branch("lr_rewind", levels=[1])
    assert not np.array_equal(np.asarray(ft.params["fc"]["kernel"]), np.asarray(lr.params["fc"]["kernel"]))


# ----------------------------------------------------------------------------- straight-through


def test_straight_through_step_masks_the_forward_pass_and_updates_every_weight():
    task, data = setup()
    state = train.init_state(task)
    keep = jax.tree.map(lambda k: k.at[::2].set(False) if k.ndim == 2 else k, state.mask.keep)
    mask = state.mask.replace(keep=keep)
    dense = state.replace(mask=mask)  # params left dense
    masked = train.with_mask(state, mask)
    batch = (data.train.inputs[:16], data.train.labels[:16])
    ste, m_ste = jax.jit(train.straight_through_step, static_argnums=0)(task, dense, batch)
    plain, m_plain = jax.jit(train.train_step, static_argnums=0)(task, masked, batch)
    np.testing.assert_allclose(m_ste["loss"], m_plain["loss"], rtol=1e-6)  # the same (masked) network forward
    w0, w1 = np.asarray(dense.params["fc"]["kernel"]), np.asarray(ste.params["fc"]["kernel"])
    pruned = ~np.asarray(keep["fc"]["kernel"])
    # a pruned weight moves exactly where the masked network's (dense) gradient is non-zero (Adam's first
    # step), so where RigL would see it grow; none is set to 0
    grad = np.asarray(sparse.dense_grads(task, masked, batch)["fc"]["kernel"])
    np.testing.assert_array_equal((w1 != w0)[pruned], (grad != 0)[pruned])
    assert (w1 != w0)[pruned].any() and (w1[pruned] != 0).all()
    np.testing.assert_array_equal(np.asarray(plain.params["fc"]["kernel"])[pruned], 0)


def test_straight_through_gmp_and_n_m_end_exactly_sparse():
    task, data = setup()
    kw = dict(steps=30, batch_size=16, log=None, loop="device", chunk_size=10)
    ste = jt.train_sparse(task, data, "gmp", density=0.3, every=5, end=20, straight_through=True, seeds=2, **kw)
    plain = jt.train_sparse(task, data, "gmp", density=0.3, every=5, end=20, seeds=2, **kw)
    assert ste.method["straight_through"] is True and ste.density.tolist() == plain.density.tolist()
    for w, k in zip(jax.tree.leaves(ste.params), jax.tree.leaves(ste.mask.keep)):
        if w.ndim == 3:  # seeds x kernel: the result holds the masked weights
            assert (np.asarray(w)[~np.asarray(k)] == 0).all()
    # other masks: the dense weights went on learning
    assert not np.array_equal(np.asarray(ste.mask.keep["fc"]["kernel"]), np.asarray(plain.mask.keep["fc"]["kernel"]))
    # n:m re-chosen from the dense weights every 10 steps: a pattern that changed, 2 of every 4 kept at the end
    nm = sparse.every(pruning.n_m(2, 4, axis=0), 10, 0, 20, straight_through=True)
    out = jt.train_sparse(task, data, nm, prunable="^fc/kernel$", **kw)
    keep = np.asarray(out.mask.keep["fc"]["kernel"])[0]
    assert (keep.reshape(2, 4, -1).sum(1) == 2).all()
    with pytest.raises(TypeError, match="straight_through"):
        sparse.rigl(0.2, straight_through=True)
