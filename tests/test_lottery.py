"""IMP: levels, reset modes, branches, the run handle, run directory, resume, refusals."""

import dataclasses
import json
import shutil

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxticket as jt
from jaxticket import checkpoints, lottery, masks, pruning, rundir, train
from jaxticket import data as data_lib

QUIET = dict(progress=False, log=None)


def tiny_config(**changes):
    base = dict(model="lenet_300_100", dataset="digits", input_shape=(8, 8, 1), optimizer="adam",
                lr=1e-3, batch_size=32, steps=40, eval_every=10, chunk_size=10, checkpoint_every=20,
                levels=2, rewind_step=10, seeds=2, validation_size=100,
                pruner={"method": "magnitude", "fraction": 0.5, "scope": "global"})
    base.update(changes)
    return lottery.LotteryConfig.of(**base)


@pytest.fixture(scope="module")
def imp_run(tmp_path_factory, digits):
    workdir = tmp_path_factory.mktemp("imp")
    config = tiny_config()
    rows = lottery.run_imp(config, workdir, datasets=digits, progress=False, log=lambda *_: None)
    return config, workdir, rows


def test_levels_prune_by_the_configured_fraction(imp_run):
    config, workdir, rows = imp_run
    assert [(r["level"], r["seed"]) for r in rows] == [(l, s) for l in range(3) for s in range(2)]
    total = 64 * 300 + 300 * 100 + 100 * 10
    for r in rows:
        kept = total
        for _ in range(r["level"]):
            kept -= int(np.floor(0.5 * kept + 0.5))
        assert r["density"] == pytest.approx(kept / total, abs=1e-7)
        assert 0.0 <= r["final_test_accuracy"] <= 1.0
        assert r["early_stop_step"] in range(r["start_step"] + 10, 41, 10)
    run = rundir.RunDir(workdir)
    previous = None
    for level in range(3):  # masks only shrink, and the seeds have their own masks
        m = run.load_mask(level)
        if previous is not None:
            for old, new in zip(previous.leaves(), m.leaves()):
                assert not np.any(np.asarray(new) & ~np.asarray(old))
        previous = m
    k = np.asarray(previous.keep["fc1"]["kernel"])
    assert not np.array_equal(k[0], k[1])
    np.testing.assert_array_equal(np.load(workdir / "test_labels.npy"),
                                  np.asarray(data_lib.load("digits", "test").labels))


def test_results_files_and_resume_skips_finished_levels(imp_run, digits):
    config, workdir, rows = imp_run
    stored = json.loads((workdir / "results.json").read_text())
    assert stored == rows
    csv_lines = (workdir / "results.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == list(lottery.RESULT_FIELDS) and len(csv_lines) == 1 + len(rows)
    messages = []
    again = lottery.run_imp(config, workdir, datasets=digits, progress=False, log=messages.append)
    assert again == rows
    assert len(messages) == 3 and all("done, read back" in m for m in messages)


def test_a_run_saved_before_a_settings_field_existed_resumes(imp_run, digits, tmp_path):
    """A field added to LotteryConfig later (here: prune_from) must not lock out runs saved
    before it: at its default the run resumes and reads its levels back."""
    config, workdir, rows = imp_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    saved = json.loads((copy / "config.json").read_text())
    del saved["config"]["config"]["imp"]["prune_from"]
    (copy / "config.json").write_text(json.dumps(saved))
    messages = []
    assert lottery.run_imp(config, copy, datasets=digits, progress=False, log=messages.append) == rows
    assert len(messages) == 3 and all("done, read back" in m for m in messages)
    with pytest.raises(checkpoints.ConfigMismatchError, match="prune_from"):
        lottery.run_imp(config.replace(prune_from="rewind"), copy, datasets=digits, progress=False)


def test_interrupted_run_resumes_to_identical_results(imp_run, digits, tmp_path):
    config, workdir, rows = imp_run
    # Interrupt after level 1 has started: keep its mid-level checkpoint, drop the rest.
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    level1 = copy / "levels" / "level_01"
    shutil.rmtree(copy / "levels" / "level_02")
    for name in ("manifest.json", "summary.json", "final_params.npz", "final_batch_stats.npz", "test_logits.npy"):
        (level1 / name).unlink()
    ckpt = checkpoints.RunCheckpoints(level1, json.loads((level1 / "config.json").read_text())["config"])
    assert 20 in ckpt.steps()
    for step in ckpt.steps():  # forget everything after the mid-level checkpoint at step 20
        if step > 20:
            shutil.rmtree(level1 / "checkpoints" / str(step))
    ckpt.close()
    lines = (level1 / "metrics.jsonl").read_text().splitlines()
    (level1 / "metrics.jsonl").write_text("\n".join(lines[:2]) + "\n")
    resumed = lottery.run_imp(config, copy, datasets=digits, progress=False, log=lambda *_: None)
    assert resumed == rows


def test_a_different_config_or_other_data_is_refused(imp_run, digits):
    config, workdir, _ = imp_run
    with pytest.raises(checkpoints.ConfigMismatchError, match="rewind_step"):
        lottery.run_imp(config.replace(rewind_step=20), workdir, datasets=digits, progress=False)
    with pytest.raises(checkpoints.ConfigMismatchError, match="validation_size"):  # before any data is loaded
        lottery.run_imp(config.replace(validation_size=50), workdir, datasets=digits, progress=False)
    other = data_lib.splits("digits", validation_size=50)
    with pytest.raises(checkpoints.DataMismatchError,
                       match=r"trained on dataset digits None \(validation 100\), not on dataset digits None "
                             r"\(validation 50\)"):
        lottery.run_imp(config, workdir, datasets=other, progress=False)


def test_reset_modes_and_branch_states(imp_run, digits):
    config, workdir, _ = imp_run
    run = lottery.open_run(workdir, datasets=digits, **QUIET)
    try:
        rewind = run.rewind_state
        assert np.all(np.asarray(rewind.step) == config.imp.rewind_step)
        previous = run.levels[0]
        mask = run.prune(1)
        chex.assert_trees_all_equal(mask.keep, run.levels[1].mask.keep)  # pruning is deterministic

        rewound = run.branch_state("rewind", 1)
        chex.assert_trees_all_equal(rewound.params, jax.vmap(masks.apply)(rewind.params, mask))
        assert np.all(np.asarray(rewound.step) == config.imp.rewind_step)
        for leaf in jax.tree.leaves(rewound.opt_state):
            if np.asarray(leaf).dtype.kind == "f":
                assert not np.any(np.asarray(leaf))  # fresh Adam moments

        tuned = run.branch_state("finetune", 1)
        chex.assert_trees_all_equal(tuned.params, jax.vmap(masks.apply)(previous.params, mask))
        assert np.all(np.asarray(tuned.step) == config.imp.rewind_step)

        fresh = run.branch_state("reinit", 1)
        assert np.all(np.asarray(fresh.step) == 0)
        w_fresh = np.asarray(jax.tree.leaves(fresh.params)[1])
        w_rewind = np.asarray(jax.tree.leaves(rewound.params)[1])
        np.testing.assert_array_equal(w_fresh == 0, w_rewind == 0)  # same mask
        assert not np.allclose(w_fresh, w_rewind)                   # other weights
    finally:
        run.close()


def test_rewinding_can_restore_the_optimizer_state():
    run = jt.imp(TASK, VECTOR, jt.magnitude(0.5), levels=1, rewind_step=20,
                 rewind_restores=("params", "batch_stats", "opt_state"), **SMALL)
    restored, mask = run.branch_state("rewind", 1), run.levels[1].mask
    chex.assert_trees_all_equal(restored.opt_state, train.with_mask(run.rewind_state, mask).opt_state)
    mu = np.asarray(restored.opt_state[0].mu["hidden"]["kernel"])  # Adam's first moment, restored
    keep = np.asarray(mask.keep["hidden"]["kernel"])
    assert not np.any(mu[~keep]) and np.any(mu[keep])  # zero exactly where pruned


def test_branches_reuse_the_imp_masks(imp_run, digits):
    config, workdir, _ = imp_run
    quiet = dict(datasets=digits, progress=False, log=lambda *_: None)
    random_rows = lottery.run_branch(workdir, "random_mask", [2], **quiet)
    reinit_rows = lottery.run_branch(workdir, "reinit", [1, 2], **quiet)
    run = rundir.RunDir(workdir)
    imp_mask, rnd_mask, re_mask = run.load_mask(2), run.load_mask(2, "random_mask"), run.load_mask(2, "reinit")
    chex.assert_trees_all_equal(re_mask.keep, imp_mask.keep)
    for a, b, flag in zip(imp_mask.leaves(), rnd_mask.leaves(), imp_mask.prunable):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_array_equal(a.reshape(2, -1).sum(1), b.reshape(2, -1).sum(1))  # per layer, per seed
        if flag:
            assert not np.array_equal(a, b)
    assert {r["kind"] for r in random_rows} == {"random_mask"} and len(reinit_rows) == 4
    kinds = {r["kind"] for r in lottery.load_results(workdir)}
    assert kinds == {"imp", "random_mask", "reinit"}
    with pytest.raises(ValueError, match=r"not finished IMP levels >= 1 \(a branch starts at level 1\); finished: \[0, 1, 2\]"):
        lottery.run_branch(workdir, "reinit", [5], **quiet)
    with pytest.raises(ValueError, match=r"unknown branch kind 'shuffled' \(did you mean 'shuffle'\?\); valid branch kinds: "):
        lottery.run_branch(workdir, "shuffled", [1], **quiet)


def test_config_validation_messages():
    with pytest.raises(ValueError, match=r"reset must be one of 'rewind', 'finetune', 'lr_rewind', got 'lottery'"):
        tiny_config(reset="lottery")
    with pytest.raises(ValueError, match=r"rewind_step must be in \[0, steps=40\]"):
        tiny_config(rewind_step=100)
    with pytest.raises(ValueError, match="rewind_restores must be a subset"):
        tiny_config(rewind_restores=("batch_stats",))
    with pytest.raises(ValueError, match="unknown pruning method"):
        tiny_config(pruner={"method": "l0"})
    with pytest.raises(ValueError, match="seeds must be an integer >= 1"):
        tiny_config(seeds=True)
    round_trip = lottery.LotteryConfig.from_dict(json.loads(json.dumps(tiny_config().to_dict())))
    assert round_trip == tiny_config()


# --------------------------------------------------------------------------- IMP on objects


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10, name="output")(nn.relu(nn.Dense(48, name="hidden")(x)))


def vector_data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(700, 20)).astype(np.float32)
    y = x[:, :5].argmax(1).astype(np.int32)
    return data_lib.from_arrays(train=(x[:600], y[:600]), test=(x[600:], y[600:]), validation_size=100)


VECTOR = vector_data()
TASK = jt.Task(MLP(), input_shape=(20,), tx=optax.adam(3e-3))
SMALL = dict(steps=60, batch_size=30, eval_every=20, **QUIET)


def test_imp_on_objects_in_memory_with_branches():
    run = jt.imp(TASK, VECTOR, jt.magnitude(0.5, "global"), levels=2, seeds=2, **SMALL)
    assert run.workdir is None and len(run.levels) == 3
    assert [round(float(d), 4) for d in run.levels[2].density] == [0.25, 0.25]
    assert run.levels[2].test_accuracy.shape == (2,) and np.all(run.levels[2].test_accuracy > 0.3)
    assert run.levels[2].mask.keep["hidden"]["kernel"].shape == (2, 20, 48)
    assert np.all(np.isfinite(run.levels[1].early_stop_step))
    params = run.levels[2].params
    assert np.all(np.asarray(params["hidden"]["kernel"])[~np.asarray(run.levels[2].mask.keep["hidden"]["kernel"])] == 0)
    assert run.levels[2].test_logits.shape == (2, 100, 10)
    controls = run.branch("random_mask", levels=[2])
    assert controls[0].kind == "random_mask" and np.allclose(controls[0].density, 0.25)
    assert run.branches["random_mask"][2] is controls[0]
    assert {r["kind"] for r in run.rows()} == {"imp", "random_mask"}


def test_imp_on_objects_in_a_run_directory_resumes_and_refuses_other_arrays(tmp_path):
    first = jt.imp(TASK, VECTOR, jt.magnitude(0.5), levels=1, workdir=tmp_path / "run", **SMALL)
    again = jt.imp(TASK, VECTOR, jt.magnitude(0.5), levels=1, workdir=tmp_path / "run", **SMALL)
    assert again.rows() == first.rows()
    stored = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert {"task", "pruner", "settings", "data"} <= set(stored) and "sha256" in stored["data"]
    with pytest.raises(checkpoints.DataMismatchError, match=r"trained on arrays sha256:\w+ \(train 500"):
        jt.imp(TASK, vector_data(seed=1), jt.magnitude(0.5), levels=1, workdir=tmp_path / "run", **SMALL)
    with pytest.raises(checkpoints.ConfigMismatchError, match="tx"):  # another optimizer, same everything else
        jt.imp(jt.Task(MLP(), input_shape=(20,), tx=optax.adam(1e-3)), VECTOR, jt.magnitude(0.5), levels=1,
               workdir=tmp_path / "run", **SMALL)


def test_registered_pruner_by_name_custom_callables_and_branch_kinds(tmp_path):
    @pruning.register("test_drop_smallest_rows", overwrite=True)
    def drop_smallest_rows(fraction=0.25):
        return pruning.by_score(lambda w, k: jnp.sum(jnp.abs(w), axis=-1, keepdims=True) + 0 * w, fraction)

    run = jt.imp(TASK, VECTOR, {"method": "test_drop_smallest_rows", "fraction": 0.5}, levels=1, **SMALL)
    kernel = np.asarray(run.levels[1].mask.keep["hidden"]["kernel"][0])
    assert kernel.all(axis=1).sum() == 10 and (~kernel).all(axis=1).sum() == 10  # whole input rows

    def keep_positive(params, mask, key):  # a plain function is a pruner too
        return jax.tree.map(lambda w: w > 0, params)

    run = jt.imp(TASK, VECTOR, keep_positive, levels=1, **SMALL)
    assert 0.4 < float(run.levels[1].density[0]) < 0.6
    assert np.asarray(run.levels[1].mask.keep["hidden"]["bias"]).all()  # biases are not prunable by default

    @lottery.register_branch("test_rewind_to_half", overwrite=True)
    def rewind_half(ctx):
        return ctx.rewound(jax.vmap(lambda m, k: pruning.random_like(m, k))(ctx.mask, ctx.keys))

    assert "test_rewind_to_half" in lottery.branch_kinds()
    assert run.branch("test_rewind_to_half")[0].kind == "test_rewind_to_half"


def test_biases_prunable_on_request_schedules_and_empty_layers():
    run = jt.imp(TASK, VECTOR, jt.magnitude(0.5), levels=1, prunable="all", **SMALL)
    assert np.asarray(run.levels[1].mask.keep["hidden"]["bias"]).sum() == 24
    sched = jt.to_density(0.2, levels=2)
    run = jt.imp(TASK, VECTOR, sched, levels=2, **SMALL)
    assert abs(float(run.levels[2].density[0]) - 0.2) < 3e-3
    run = jt.imp(TASK, VECTOR, jt.per_level([jt.magnitude(0.5), jt.magnitude(0.1)]), levels=2, **SMALL)
    assert [round(float(l.density[0]), 3) for l in run.levels] == [1.0, 0.5, 0.45]
    output_only = jt.partition([("output", jt.magnitude(1.0)), ("hidden", None)])
    with pytest.raises(pruning.PruningError, match=r"level 1: the pruner would remove the last weight of "
                                                   r"\['output/kernel'\]"):
        jt.imp(TASK, VECTOR, output_only, levels=1, **{**SMALL, "steps": 5})
    allowed = jt.imp(TASK, VECTOR, output_only, levels=1, allow_empty_layers=True, **{**SMALL, "steps": 5})
    assert not np.asarray(allowed.levels[1].mask.keep["output"]["kernel"]).any()


def test_imp_refuses_bad_settings_in_one_line():
    with pytest.raises(ValueError, match="reset must be one of"):
        jt.imp(TASK, VECTOR, jt.magnitude(0.2), levels=1, reset="reinit", **SMALL)
    with pytest.raises(ValueError, match="augment=True is the CIFAR crop"):
        jt.imp(TASK, VECTOR, jt.magnitude(0.2), levels=1, augment=True, **SMALL)
    with pytest.raises(ValueError, match="imp needs data with a train and a test split"):
        jt.imp(TASK, data_lib.Data(train=VECTOR.train), jt.magnitude(0.2), levels=1, **SMALL)


def test_a_config_without_input_shape_takes_the_datas(digits):
    """model=resnet8 (CIFAR's 32x32x3 by default) on 8x8x1 digits: the model is built for
    the data, and the run trains; an explicit input_shape still wins (and is checked)."""
    config = lottery.LotteryConfig.of(model="resnet8_w4", dataset="digits", optimizer="sgd", lr=0.05, momentum=0.9,
                                      batch_size=32, steps=4, eval_every=4, levels=0, validation_size=100)
    task, data, _, _ = lottery.objects_from_config(config, data=digits)
    assert task.input_shape == (8, 8, 1)
    rows = lottery.run_imp(config, None, datasets=digits, progress=False, log=lambda *_: None)
    assert len(rows) == 1 and 0.0 <= rows[0]["final_test_accuracy"] <= 1.0
    explicit = config.replace(input_shape=(32, 32, 3))
    assert lottery.objects_from_config(explicit, data=digits)[0].input_shape == (32, 32, 3)
