"""IMP: levels, reset modes, branches, run directory, resume, config refusal."""

import json
import shutil

import chex
import jax
import numpy as np
import pytest

from jaxticket import checkpoints, lottery, masks, train
from jaxticket import data as data_lib


def tiny_config(**changes):
    tc = train.TrainConfig(model="lenet_300_100", dataset="digits", input_shape=(8, 8, 1), optimizer="adam",
                           lr=1e-3, batch_size=32, steps=40, eval_every=10, chunk_size=10, checkpoint_every=20)
    base = dict(train=tc, levels=2, rewind_step=10, seeds=2, validation_size=100,
                pruner={"method": "magnitude", "fraction": 0.5, "scope": "global"})
    base.update(changes)
    return lottery.LotteryConfig(**base)


@pytest.fixture(scope="module")
def digits():
    return data_lib.splits("digits", validation_size=100)


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
    like = lottery._initial_state(config)
    previous = None
    for level in range(3):  # masks only shrink, and the seeds have their own masks
        m = lottery.load_mask(workdir / "levels" / f"level_{level:02d}" / "mask.npz", like.mask)
        if previous is not None:
            for old, new in zip(previous.leaves(), m.leaves()):
                assert not np.any(np.asarray(new) & ~np.asarray(old))
        previous = m
    k = np.asarray(previous.keep["fc1"]["kernel"])
    assert not np.array_equal(k[0], k[1])


def test_results_files_and_resume_skips_finished_levels(imp_run, digits):
    config, workdir, rows = imp_run
    stored = json.loads((workdir / "results.json").read_text())
    assert stored == rows
    csv_lines = (workdir / "results.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == list(lottery.RESULT_FIELDS) and len(csv_lines) == 1 + len(rows)
    messages = []
    again = lottery.run_imp(config, workdir, datasets=digits, progress=False, log=messages.append)
    assert again == rows
    assert all("done, read back" in m for m in messages)


def test_interrupted_run_resumes_to_identical_results(imp_run, digits, tmp_path):
    config, workdir, rows = imp_run
    # Interrupt after level 1 has started: keep its mid-level checkpoint, drop the rest.
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    level1 = copy / "levels" / "level_01"
    shutil.rmtree(copy / "levels" / "level_02")
    for name in ("summary.json", "final_params.npz", "final_batch_stats.npz", "test_logits.npy"):
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


def test_a_different_config_is_refused(imp_run, digits):
    config, workdir, _ = imp_run
    with pytest.raises(checkpoints.ConfigMismatchError, match="rewind_step"):
        lottery.run_imp(config.replace(rewind_step=20), workdir, datasets=digits, progress=False)


def test_reset_modes_build_the_documented_start_states(imp_run):
    config, workdir, _ = imp_run
    initial = lottery._initial_state(config)
    run = checkpoints.RunCheckpoints(workdir, config.to_dict())
    rewind = lottery._rewind_point(config, run, initial, None)
    run.close()
    previous = lottery.load_level(config, workdir / "levels" / "level_00", initial)
    mask = lottery.prune_level(config, previous.params, previous.mask, 1)
    stored = lottery.load_mask(workdir / "levels" / "level_01" / "mask.npz", initial.mask)
    chex.assert_trees_all_equal(mask.keep, stored.keep)  # pruning is deterministic

    rewound = lottery.start_state(config, "rewind", 1, mask, rewind_state=rewind)
    chex.assert_trees_all_equal(rewound.params, jax.vmap(masks.apply)(rewind.params, mask))
    assert np.all(np.asarray(rewound.step) == config.rewind_step)
    for leaf in jax.tree.leaves(rewound.opt_state):
        if np.asarray(leaf).dtype.kind == "f":
            assert not np.any(np.asarray(leaf))  # fresh Adam moments

    tuned = lottery.start_state(config, "finetune", 1, mask, rewind_state=rewind, previous_final=previous)
    chex.assert_trees_all_equal(tuned.params, jax.vmap(masks.apply)(previous.params, mask))
    assert np.all(np.asarray(tuned.step) == config.rewind_step)

    fresh = lottery.start_state(config, "reinit", 1, mask, rewind_state=rewind)
    assert np.all(np.asarray(fresh.step) == 0)
    w_fresh = np.asarray(jax.tree.leaves(fresh.params)[1])
    w_rewind = np.asarray(jax.tree.leaves(rewound.params)[1])
    np.testing.assert_array_equal(w_fresh == 0, w_rewind == 0)  # same mask
    assert not np.allclose(w_fresh, w_rewind)                   # other weights

    keep_opt = config.replace(rewind_restores=("params", "batch_stats", "opt_state"))
    restored = lottery.start_state(keep_opt, "rewind", 1, mask, rewind_state=rewind)
    chex.assert_trees_all_equal(restored.opt_state, train.with_mask(rewind, mask).opt_state)
    mu = np.asarray(restored.opt_state[0].mu["fc1"]["kernel"])  # Adam's first moment, restored
    keep = np.asarray(mask.keep["fc1"]["kernel"])
    assert not np.any(mu[~keep]) and np.any(mu[keep])  # zero exactly where pruned


def test_branches_reuse_the_imp_masks(imp_run, digits):
    config, workdir, _ = imp_run
    quiet = dict(datasets=digits, progress=False, log=lambda *_: None)
    random_rows = lottery.run_branch(workdir, "random_mask", [2], **quiet)
    reinit_rows = lottery.run_branch(workdir, "reinit", [1, 2], **quiet)
    like = lottery._initial_state(config).mask
    imp_mask = lottery.load_mask(workdir / "levels" / "level_02" / "mask.npz", like)
    rnd_mask = lottery.load_mask(workdir / "branches" / "random_mask" / "level_02" / "mask.npz", like)
    re_mask = lottery.load_mask(workdir / "branches" / "reinit" / "level_02" / "mask.npz", like)
    chex.assert_trees_all_equal(re_mask.keep, imp_mask.keep)
    for a, b, flag in zip(imp_mask.leaves(), rnd_mask.leaves(), like.prunable):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_array_equal(a.reshape(2, -1).sum(1), b.reshape(2, -1).sum(1))  # per layer, per seed
        if flag:
            assert not np.array_equal(a, b)
    assert {r["kind"] for r in random_rows} == {"random_mask"} and len(reinit_rows) == 4
    kinds = {r["kind"] for r in lottery.load_results(workdir)}
    assert kinds == {"imp", "random_mask", "reinit"}
    with pytest.raises(ValueError, match=r"not finished IMP levels >= 1; finished: \[0, 1, 2\]"):
        lottery.run_branch(workdir, "reinit", [5], **quiet)
    with pytest.raises(ValueError, match="unknown branch 'shuffle'"):
        lottery.run_branch(workdir, "shuffle", [1], **quiet)


def test_config_validation_messages():
    with pytest.raises(ValueError, match=r"reset must be one of \('rewind', 'finetune', 'reinit', 'random_mask'\)"):
        tiny_config(reset="lottery")
    with pytest.raises(ValueError, match=r"rewind_step must be an int in \[0, train.steps=40\]"):
        tiny_config(rewind_step=100)
    with pytest.raises(ValueError, match="rewind_restores must be a subset"):
        tiny_config(rewind_restores=("batch_stats",))
    with pytest.raises(ValueError, match="unknown pruning method"):
        tiny_config(pruner={"method": "l0"})
    round_trip = lottery.LotteryConfig.from_dict(json.loads(json.dumps(tiny_config().to_dict())))
    assert round_trip == tiny_config()
