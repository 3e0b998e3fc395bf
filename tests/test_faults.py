"""Fault injection: a run directory survives kills, concurrent runs, damaged files, a full
disk and bad configs, and every case ends with nothing lost and one clear line.

Each case checks both the message and that the run, once the fault is removed, completes
to the results of a run that never met it (bit for bit on CPU).
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from jaxticket import checkpoints, cli, lottery, rundir, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config", "demo", "--levels", "2", "--steps", "40", "--seeds", "1", "--no-progress",
        "--set", "eval_every=20", "--set", "checkpoint_every=10"]


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")


def _one_line(capsys, code, expected, *needles):
    err = capsys.readouterr().err
    lines = [l for l in err.strip().splitlines() if not l.startswith("jaxticket: warning")]
    assert code == expected, err
    assert len(lines) == 1 and lines[0].startswith("jaxticket: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _final_params(workdir):
    out = {}
    for d in sorted((workdir / "levels").glob("level_*")):
        with np.load(d / "final_params.npz") as f:
            out[d.name] = {k: f[k] for k in f.files}
    return out


def _same_results(a, b):
    assert json.loads((a / "results.json").read_text()) == json.loads((b / "results.json").read_text())
    pa, pb = _final_params(a), _final_params(b)
    assert pa.keys() == pb.keys()
    for level in pa:
        for k in pa[level]:
            np.testing.assert_array_equal(pa[level][k], pb[level][k])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The reference: the tiny IMP run straight through."""
    workdir = tmp_path_factory.mktemp("straight") / "run"
    assert cli.main(["imp", *TINY, "--workdir", str(workdir)]) == 0
    return workdir


@pytest.fixture
def copy(straight, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(straight, target)
    return target


# ----------------------------------------------------------------------------- damaged files


@pytest.mark.parametrize("damage, needle", [
    ("edit_summary", "summary.json: "),
    ("truncate_params", "final_params.npz: "),
    ("delete_logits", "test_logits.npy: missing"),
    ("edit_mask", "mask.npz: changed since it was written"),
])
def test_damaged_files_are_named_and_a_redo_restores_them(copy, straight, capsys, damage, needle):
    level1 = copy / "levels" / "level_01"
    if damage == "edit_summary":  # a hand edit that keeps the JSON valid
        summary = json.loads((level1 / "summary.json").read_text())
        summary["rows"][0]["final_test_accuracy"] = 0.999
        (level1 / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    elif damage == "truncate_params":
        data = (level1 / "final_params.npz").read_bytes()
        (level1 / "final_params.npz").write_bytes(data[: len(data) // 2])
    elif damage == "delete_logits":
        (level1 / "test_logits.npy").unlink()
    else:
        data = bytearray((level1 / "mask.npz").read_bytes())
        data[-100] ^= 0xFF
        (level1 / "mask.npz").write_bytes(bytes(data))
    capsys.readouterr()
    assert cli.main(["verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert f"levels/level_01/{needle}" in out and "1 problem(s)" in out
    line = _one_line(capsys, cli.main(["imp", *TINY, "--workdir", str(copy)]), 1, needle, "--redo-level 1")
    assert str(level1) in line
    assert cli.main(["imp", *TINY, "--workdir", str(copy), "--redo-level", "1"]) == 0
    _same_results(copy, straight)  # the redone level is bit for bit the lost one
    assert cli.main(["verify", str(copy)]) == 0


def test_stray_temporary_files_are_cleaned_and_a_resume_rewrites_nothing(copy, straight):
    stray = copy / "levels" / "level_01" / ".final_params.npz.abcd.tmp"
    stray.write_bytes(b"half a file")
    before = {p: p.stat().st_mtime_ns for p in copy.rglob("*") if p.is_file() and "checkpoints" not in p.parts}
    assert cli.main(["imp", *TINY, "--workdir", str(copy)]) == 0
    assert not stray.exists()
    changed = [p for p, t in before.items() if p.exists() and p.stat().st_mtime_ns != t
               and p.name not in ("results.json", "results.csv", "run.lock")]
    assert changed == []  # nothing it read back was written again


def test_a_damaged_checkpoint_is_one_line(tmp_path, capsys):
    """Killed mid-level (checkpoints, no manifest), then the checkpoint it resumes from is damaged."""
    workdir = tmp_path / "run"
    args = ["imp", *TINY[:2], "--levels", "0", *TINY[4:], "--workdir", str(workdir)]
    assert cli.main(args) == 0
    level0 = workdir / "levels" / "level_00"
    (level0 / "manifest.json").unlink()  # as if killed before the level finished
    ckpt = max((p for p in (level0 / "checkpoints").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    damaged = [f for f in ckpt.rglob("*") if f.is_file()]
    assert damaged
    for f in damaged:
        f.write_bytes(b"\0" * 8)
    capsys.readouterr()
    _one_line(capsys, cli.main(args), 1, "cannot be restored", ckpt.parent.name)


# ----------------------------------------------------------------------------- concurrency, kills


def test_a_second_process_is_refused_naming_the_holder(tmp_path, capsys):
    workdir = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "jaxticket.cli", "imp", "--config", "demo", "--levels", "3",
                              "--steps", "300", "--no-progress", "--workdir", str(workdir)],
                             env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lock = workdir / rundir.LOCK_FILE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        if lock.exists() and str(first.pid) in lock.read_text():
            break
        time.sleep(0.05)
    try:
        assert first.poll() is None, first.communicate()[0][-2000:]
        capsys.readouterr()
        code = cli.main(["imp", "--config", "demo", "--levels", "3", "--steps", "300", "--no-progress",
                         "--workdir", str(workdir)])
        _one_line(capsys, code, 1, f"in use by pid {first.pid} on ")
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    # the kernel released the dead process's lock: the next run takes it over and finishes
    messages = []
    config = cli.resolve_config(cli.build_parser().parse_args(
        ["imp", "--config", "demo", "--levels", "3", "--steps", "300"]))
    lottery.run_imp(config, workdir, progress=False, log=messages.append)
    assert any(f"took over the lock of pid {first.pid}" in m for m in messages)


@pytest.mark.slow
def test_kills_at_random_moments_then_resume_equal_a_straight_run(straight, tmp_path):
    rng = np.random.default_rng(7)
    workdir = tmp_path / "run"
    argv = [sys.executable, "-m", "jaxticket.cli", "imp", *TINY, "--workdir", str(workdir)]
    for delay in rng.uniform(1.5, 6.0, size=3):
        proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    done = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    _same_results(workdir, straight)


# ----------------------------------------------------------------------------- disk full


def test_disk_full_names_the_file_loses_nothing_and_resumes(tmp_path, straight, capsys, monkeypatch):
    workdir = tmp_path / "run"
    real_fsync, calls = os.fsync, {"n": 0}

    def full_after_a_while(fd):
        calls["n"] += 1
        if calls["n"] > 12:  # level 0 written, then the disk fills up
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(rundir.files.os, "fsync", full_after_a_while)
    code = cli.main(["imp", *TINY, "--workdir", str(workdir)])
    line = _one_line(capsys, code, 1, "disk full", str(workdir))
    assert "cannot write" in line
    monkeypatch.setattr(rundir.files.os, "fsync", real_fsync)
    assert not list(workdir.rglob(".*.tmp"))  # no half-written file left behind
    assert cli.main(["verify", str(workdir)]) == 0  # what was written is intact
    assert cli.main(["imp", *TINY, "--workdir", str(workdir)]) == 0
    _same_results(workdir, straight)


# ----------------------------------------------------------------------------- configs, divergence


@pytest.mark.parametrize("override, needle", [
    ("lr=true", "lr must be a finite number > 0, got True"),
    ("lr=-0.1", "lr must be"),
    ('pruner={"method": "magnitude", "fraction": "0.2"}', "fraction must be a number in (0, 1)"),
    ('pruner={"method": "magnitude", "fraction": 1.5}', "fraction must be a number in (0, 1)"),
    ("seeds=2.5", "seeds must be an integer >= 1"),
    ("momentum=\"0.9\"", "momentum must be a finite number"),
    ("steps=0", "steps must be an integer >= 1"),
    ('pruner={"method": "magnitud", "fraction": 0.2}', "did you mean 'magnitude'"),
    ("model=lenet_99x", "unknown model"),
])
def test_bad_config_values_are_usage_errors(capsys, tmp_path, override, needle):
    code = cli.main(["imp", "--config", "demo", "--set", override, "--workdir", str(tmp_path / "r")])
    _one_line(capsys, code, 2, needle)
    assert not (tmp_path / "r").exists()


def test_divergence_warns_once_with_the_step(toy_dataset, toy_task):
    task = toy_task(optimizer="adam", lr=1e6, momentum=0.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            train.fit(task, train.init_state(task), toy_dataset(), steps=40, batch_size=16, chunk_size=8)
        except train.NonFiniteLossError:
            pass
    diverging = [w for w in caught if issubclass(w.category, train.DivergenceWarning)]
    assert len(diverging) == 1 and "over 100x its starting value" in str(diverging[0].message)
    assert "at step " in str(diverging[0].message)


def test_non_finite_loss_names_step_and_replica(capsys, tmp_path):
    code = cli.main(["imp", "--config", "demo", "--levels", "0", "--steps", "60", "--set", "lr=1e30",
                     "--workdir", str(tmp_path / "r"), "--no-progress"])
    _one_line(capsys, code, 1, "non-finite training loss", "at step", "replicas")


def test_non_finite_loss_of_a_single_seed_names_replica_0(capsys, tmp_path):
    """One seed is still a stacked run: the message names replica 0, not an empty list."""
    code = cli.main(["imp", "--config", "demo", "--levels", "0", "--steps", "60", "--set", "lr=1e30",
                     "--set", "seeds=1", "--workdir", str(tmp_path / "r"), "--no-progress"])
    _one_line(capsys, code, 1, "non-finite training loss", "(replicas [0])")


# ----------------------------------------------------------------------------- nothing good deleted, nothing silently reused


def test_a_run_without_its_config_file_is_refused_not_reused(copy, capsys):
    (copy / "config.json").unlink()
    before = sorted(p.name for p in (copy / "levels").iterdir())
    capsys.readouterr()
    _one_line(capsys, cli.main(["imp", *TINY, "--set", "lr=0.01", "--workdir", str(copy)]), 1,
              "no config.json", "overwrite")
    assert sorted(p.name for p in (copy / "levels").iterdir()) == before


def test_a_run_of_another_preset_is_refused_before_its_dataset_is_prepared(tmp_path, capsys, monkeypatch):
    """A demo run's folder given to another preset: the config mismatch, before the new
    preset's dataset (MNIST: absent here, and loading it raises) is looked for or loaded."""
    from jaxticket import data
    from jaxticket.data import dataset as data_dataset
    from jaxticket.lottery import config as lottery_config

    workdir = tmp_path / "run"
    assert cli.main(["imp", "--config", "demo", "--steps", "20", "--levels", "0", "--no-progress",
                     "--workdir", str(workdir)]) == 0
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file() and p.name != rundir.LOCK_FILE}

    def prepared(*args, **kwargs):
        raise RuntimeError("test: the new preset's dataset was prepared")

    monkeypatch.setenv("JAXTICKET_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.delenv("JAXTICKET_MANUAL_DIR", raising=False)
    monkeypatch.delenv("JAXTICKET_DOWNLOAD", raising=False)
    for module, name in ((data, "splits"), (data, "load"), (data, "make_stream"), (data, "prepare"),
                         (data_dataset, "_base_arrays"), (lottery_config, "load_data")):
        monkeypatch.setattr(module, name, prepared)
    capsys.readouterr()
    code = cli.main(["imp", "--config", "lenet_300_100_mnist", "--no-progress", "--workdir", str(workdir)])
    line = _one_line(capsys, code, 1, "holds a run with a different config", "train.dataset", "another --workdir",
                     "--overwrite")
    assert "dataset was prepared" not in line and "'mnist' (new)" in line  # the differing keys name it
    after = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file() and p.name != rundir.LOCK_FILE}
    assert after == before  # the demo run is as it was


def test_a_level_trained_by_another_run_is_refused(copy, capsys):
    path = copy / "levels" / "level_01" / "config.json"
    level = json.loads(path.read_text())
    level["config"]["run"] = "0123456789ab"
    path.write_text(json.dumps(level))
    capsys.readouterr()
    _one_line(capsys, cli.main(["imp", *TINY, "--workdir", str(copy)]), 1, "trained by another run",
              "--redo-level 1")


def test_redo_with_a_different_config_deletes_nothing(copy, capsys):
    capsys.readouterr()
    code = cli.main(["imp", *TINY, "--set", "lr=0.002", "--redo-level", "1", "--workdir", str(copy)])
    assert code != 0
    assert rundir.RunDir(copy).is_done(1)  # the good level is still there


def test_branch_levels_are_checked_before_a_redone_level_is_deleted(copy, capsys):
    assert cli.main(["branch", str(copy), "--kind", "reinit", "--levels", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert cli.main(["branch", str(copy), "--kind", "reinit", "--levels", "9", "--redo-level", "1",
                     "--no-progress"]) != 0
    assert rundir.RunDir(copy).is_done(1, "reinit")


def test_overwrite_refuses_a_folder_of_other_files(tmp_path, capsys):
    folder = tmp_path / "project"
    (folder / "src").mkdir(parents=True)
    (folder / "notes.txt").write_text("important")
    (folder / "levels").mkdir()
    (folder / "levels" / "draft.txt").write_text("mine")
    capsys.readouterr()
    _one_line(capsys, cli.main(["imp", *TINY, "--workdir", str(folder), "--overwrite"]), 1,
              "not a jaxticket run", "notes.txt")
    assert (folder / "notes.txt").read_text() == "important" and (folder / "levels" / "draft.txt").exists()
    assert (folder / "src").is_dir()


def test_a_bad_input_writes_no_run_directory(tmp_path, capsys):
    workdir = tmp_path / "bad"
    capsys.readouterr()
    code = cli.main(["imp", *TINY, "--set", "input_shape=[4,4,1]", "--workdir", str(workdir)])
    assert code != 0 and "input" in capsys.readouterr().err
    assert not (workdir / "config.json").exists()
    assert cli.main(["imp", *TINY, "--levels", "0", "--workdir", str(workdir)]) == 0  # the fixed command runs


def test_an_unfinished_metrics_line_is_cut_and_the_run_resumes(copy, straight):
    level2 = copy / "levels" / "level_02"
    (level2 / "manifest.json").unlink()  # level 2 unfinished: it resumes from its last checkpoint
    shutil.rmtree(level2 / "checkpoints" / "40", ignore_errors=True)
    metrics = level2 / "metrics.jsonl"
    text = metrics.read_text()
    last = text.rstrip("\n").rfind("\n") + 1
    metrics.write_text(text[:last] + text[last:last + 30])  # a write cut mid-line (crash, full disk)
    assert train.hooks.cut_unfinished_line(metrics) and metrics.read_text() == text[:last]
    metrics.write_text(text[:last] + text[last:last + 30])
    assert cli.main(["imp", *TINY, "--workdir", str(copy)]) == 0
    _same_results(copy, straight)


def test_branch_after_imp_with_a_run_directory(tmp_path):
    import flax.linen as nn
    import jaxticket as jt

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 8)).astype(np.float32)
    data = jt.data.from_arrays(train=(x[:100], (x[:100, 0] > 0).astype(np.int32)),
                               test=(x[100:], (x[100:, 0] > 0).astype(np.int32)))
    task = jt.Task(nn.Dense(2), input_shape=(8,))
    run = jt.imp(task, data, jt.magnitude(0.5), levels=1, steps=10, batch_size=20, workdir=tmp_path / "run", log=None)
    controls = run.branch("random_mask")  # imp closed the directory; branch reopens it
    assert len(controls) == 1 and rundir.RunDir(tmp_path / "run").is_done(1, "random_mask")
    again = jt.imp(task, data, jt.magnitude(0.5), levels=1, steps=10, batch_size=20, workdir=tmp_path / "run",
                   log=None)  # and released it: the same process opens it again
    again.close()


def test_report_and_compare_check_the_files_they_read(copy, capsys):
    from jaxticket import compare, report

    summary_path = copy / "levels" / "level_01" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["rows"][0]["final_test_accuracy"] = 0.123  # a hand edit keeping the JSON valid
    summary_path.write_text(json.dumps(summary))
    with pytest.raises(rundir.CorruptRunError, match="summary.json"):
        report.write_report(copy)
    mask_path = copy / "levels" / "level_02" / "mask.npz"
    mask_path.write_bytes(b"not a zip file at all")
    with pytest.raises(rundir.CorruptRunError, match="mask.npz"):
        compare.load_run(copy, 2)
    with pytest.raises(ValueError, match="mask.npz"):  # read directly, the file is named too
        rundir.load_mask(mask_path)
    (copy / "test_labels.npy").write_bytes(b"garbage")
    with pytest.raises(rundir.CorruptRunError, match="test_labels.npy"):
        compare.test_labels_of(copy)


def test_a_run_from_a_newer_jaxticket_is_named_as_such(copy, capsys):
    path = copy / "config.json"
    stored = json.loads(path.read_text())
    stored["config"]["config"]["train"]["future_setting"] = 1
    path.write_text(json.dumps(stored))
    capsys.readouterr()
    _one_line(capsys, cli.main(["branch", str(copy), "--kind", "reinit", "--no-progress"]), 1,
              "train.future_setting", "newer jaxticket")


def test_a_finished_run_is_extended_by_more_levels(copy, straight, tmp_path):
    assert cli.main(["imp", *TINY, "--levels", "3", "--workdir", str(copy)]) == 0
    assert rundir.RunDir(copy).finished() == [0, 1, 2, 3]
    longer = tmp_path / "longer"  # the same run trained with 3 levels from the start
    assert cli.main(["imp", *TINY, "--levels", "3", "--workdir", str(longer)]) == 0
    _same_results(copy, longer)
    stored = json.loads((copy / "config.json").read_text())
    assert stored["config"]["config"]["imp"]["levels"] == 3
    assert stored["config_hash"] == json.loads((straight / "config.json").read_text())["config_hash"]
    assert cli.main(["imp", *TINY, "--workdir", str(copy)]) == 0  # fewer levels: read back, nothing lost
    assert rundir.RunDir(copy).finished() == [0, 1, 2, 3]
    assert cli.main(["branch", str(copy), "--kind", "reinit", "--levels", "3", "--no-progress"]) == 0


def test_a_damaged_config_file_names_the_fix(copy, capsys):
    (copy / "config.json").write_text("{ broken")
    capsys.readouterr()
    _one_line(capsys, cli.main(["imp", *TINY, "--workdir", str(copy)]), 1, "config.json is not valid JSON",
              "restore it", "--overwrite")
    assert rundir.RunDir(copy).finished() == [0, 1, 2]  # nothing deleted
