"""The ``jaxticket`` command: flags and ``--set``, one-line errors and exit codes, a tiny
imp + branch + report on the embedded digits, a SIGKILL mid-level that resumes to the
uninterrupted result, and the demo end to end in a subprocess."""

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxticket import cli, configs, lottery, report, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config", "demo", "--steps", "50", "--seeds", "2", "--no-progress", "--set", "eval_every=10"]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"  # compile time dominates
    return env


def _cli(*args):
    return [sys.executable, "-m", "jaxticket.cli", *args]


def _one_line_error(capsys, code, expected_code, *needles):
    err = capsys.readouterr().err
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxticket: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ============================================================================ --set


def test_set_accepts_both_spellings_and_json_values():
    given = cli.parse_overrides([
        "lr=0.01", "train.batch_size=32", "reset=finetune", "milestones=[10, 20]",
        'pruner={"method": "partition", "rules": [["^output/", null], ["kernel$", {"method": "magnitude", "fraction": 0.3}]]}',
        "prunable=^(?!output/).*kernel$", "dataset=digits", "augment=true", "validation_size=null",
    ])
    values = {k: v for k, (_, v) in given.items()}
    assert {k: values[k] for k in ("lr", "train.batch_size", "milestones", "dataset", "augment")} == \
        {"lr": 0.01, "train.batch_size": 32, "milestones": (10, 20), "dataset": "digits", "augment": True}
    assert values["reset"] == "finetune" and values["prunable"] == "^(?!output/).*kernel$"
    assert values["validation_size"] is None and given["lr"][0] == "--set lr=0.01"
    assert values["pruner"]["rules"][1] == ["kernel$", {"method": "magnitude", "fraction": 0.3}]
    both = cli.parse_overrides(['train={"lr": 0.5, "steps": 7}'])
    assert {k: v for k, (_, v) in both.items()} == {"train.lr": 0.5, "train.steps": 7}
    args = cli.build_parser().parse_args(["imp", "--config", "demo", "--set", 'train={"lr": 0.5, "steps": 7}'])
    config = cli.resolve_config(args)  # the old spellings reach the settings' new homes
    assert (config.train.lr, config.imp.fit.steps) == (0.5, 7)


def test_set_unknown_key_lists_the_valid_keys():
    args = cli.build_parser().parse_args(["imp", "--config", "demo", "--set", "lrr=0.1"])
    with pytest.raises(cli.UsageError) as e:
        cli.resolve_config(args)
    msg = str(e.value)
    assert "--set lrr=0.1" in msg and "did you mean 'lr'" in msg and "rewind_step" in msg and "batch_size" in msg
    with pytest.raises(cli.UsageError):
        cli.parse_overrides(["no-equals-sign"])


def test_resolved_config_applies_preset_then_set_then_flags():
    args = cli.build_parser().parse_args(
        ["imp", "--config", "demo", "--steps", "40", "--levels", "1",
         "--set", "train.lr=0.02", "--rewind-step", "5", "--batch-size", "30", "--set", "reset=finetune"])
    config = cli.resolve_config(args)
    assert (config.imp.fit.steps, config.train.lr, config.imp.fit.batch_size) == (40, 0.02, 30)
    assert (config.imp.levels, config.imp.rewind_step, config.imp.reset) == (1, 5, "finetune")
    assert config.train.dataset == configs.get("demo").train.dataset


def _resolved(*flags):
    return cli.resolve_config(cli.build_parser().parse_args(["imp", "--config", "demo", *flags]))


def test_a_setting_given_by_a_flag_and_by_set_is_a_conflict_and_writes_nothing(capsys, tmp_path):
    workdir = tmp_path / "X"
    code = cli.main(["imp", "--config", "demo", "--levels", "1", "--set", "levels=-1", "--workdir", str(workdir)])
    line = _one_line_error(capsys, code, 2, "--levels 1", "--set levels=-1", "give it once")
    assert "must be an integer" not in line  # refused as a conflict, before either value is judged
    assert not workdir.exists()


def test_a_bad_value_by_set_is_one_line_naming_the_item(capsys, tmp_path):
    workdir = tmp_path / "X"
    code = cli.main(["imp", "--config", "demo", "--set", "levels=-1", "--workdir", str(workdir)])
    _one_line_error(capsys, code, 2, "--set levels=-1", "levels must be an integer >= 0")
    assert not workdir.exists()


def test_the_old_set_spelling_resolves_as_the_flag():
    old = _resolved("--set", "train.steps=50")
    assert old == _resolved("--steps", "50") == _resolved("--set", "imp.fit.steps=50") == _resolved("--set", "steps=50")
    assert old.to_dict() == _resolved("--steps", "50").to_dict()
    assert old.imp.fit.steps == 50 and old != _resolved()  # the preset's steps are not 50


def test_an_unknown_set_key_names_the_closest_setting(capsys, tmp_path):
    workdir = tmp_path / "X"
    code = cli.main(["imp", "--config", "demo", "--set", "stepz=5", "--workdir", str(workdir)])
    _one_line_error(capsys, code, 2, "--set stepz=5", "no such setting", "did you mean 'steps'")
    assert not workdir.exists()


# ============================================================================ errors


@pytest.mark.parametrize("argv,needles", [
    (["imp", "--config", "lenet_300_100_mnst"], ["did you mean 'lenet_300_100_mnist'", "conv6_cifar10"]),
    (["imp", "--config", "demo", "--set", "lrr=1"], ["--set lrr=1", "no such setting", "did you mean 'lr'"]),
    (["imp", "--config", "demo", "--levels", "1", "--set", "levels=-1"], ["--set levels=-1", "--levels 1", "give it once"]),
    (["imp", "--config", "demo", "--set", "levels=-1"], ["--set levels=-1", "levels must be an integer >= 0"]),
    (["imp", "--config", "demo", "--steps", "40", "--set", "imp.fit.steps=50"], ["--steps 40", "give it once"]),
    (["imp", "--config", "demo", "--set", "stepz=5"], ["did you mean 'steps'"]),
    (["imp", "--config", "demo", "--set", "lr=-1"], ["lr must be"]),
    (["imp", "--config", "demo", "--set", "reset=bogus"], ["'rewind', 'finetune'"]),
    (["imp", "--config", "demo", "--set", "lr=true"], ["lr must be a finite number > 0, got True"]),
    (["imp", "--config", "demo", "--set", 'pruner={"method": "magnitude", "fraction": "0.2"}'],
     ["fraction must be a number"]),
    (["imp", "--config", "demo", "--import", "no_such_module_xyz"], ["--import no_such_module_xyz"]),
    (["instability", "--config", "demo", "--ks", "0", "100000"], ["--ks [100000] are outside [0, steps=300]"]),
    (["imp", "--config", "demo", "--set", "model=lenet_bogus"], ["bad config value"]),
    (["imp", "--config", "demo", "--set", "dataset=nope"], ["valid datasets: ", "digits"]),
    (["imp", "--config", "demo", "--levels", "x"], ["invalid int value"]),
    (["imp", "--levels", "3"], ["--config"]),
    (["frobnicate"], ["invalid choice"]),
    (["branch", "somewhere", "--kind", "bogus"], ["reinit"]),
    (["configs", "nope"], ["valid presets"]),
    (["imp", "--config", "demo", "--set", 'pruner={"method": "magnitude", "fraction": 0.2'],
     ["--set pruner=", "not valid JSON", "Expecting ','"]),
    (["imp", "--config", "demo", "--set", "milestones=[10, 20"], ["--set milestones=", "not valid JSON"]),
    (["imp", "--config", "demo", "--set", "pruner=magnitude"],
     ["missing setting 'fraction'", '''--set 'pruner={"method": "magnitude", "fraction": 0.2}''']),
    (["imp", "--config", "demo", "--set", "pruner=magnitud"], ["not a pruning method", "did you mean 'magnitude'"]),
    (["imp", "--config", "demo", "--batch-size", "100000"], ["--batch-size 100000", "1,200 training examples"]),
    (["imp", "--config", "demo", "--set", "validation_size=1797"], ["validation_size=1797", "[0, 1437)"]),
    (["compare", "somewhere", "--out", "x"], ["at least two run directories"]),
])
def test_usage_errors_are_one_line_exit_2(capsys, argv, needles):
    _one_line_error(capsys, cli.main(argv), 2, *needles)


def test_set_bare_pruner_name_and_regex_values(monkeypatch):
    """A registered method that needs no settings may be named bare; a value that starts
    with "[" stays a string for prunable (a regex)."""
    from jaxticket import pruning
    from jaxticket.pruning import core

    monkeypatch.setitem(core._REGISTRY, "cli_test_all_defaults", lambda fraction=0.3: pruning.magnitude(fraction))
    assert cli.parse_overrides(["pruner=cli_test_all_defaults"]) == \
        {"pruner": ("--set pruner=cli_test_all_defaults", {"method": "cli_test_all_defaults"})}
    assert cli.parse_overrides(["prunable=[a-z]+/kernel$"]) == \
        {"prunable": ("--set prunable=[a-z]+/kernel$", "[a-z]+/kernel$")}


@pytest.mark.parametrize("flags,needles", [
    (["--train-examples", "-5"], ["--train-examples must be >= 1", "-5"]),
    (["--train-examples", "0"], ["--train-examples must be >= 1"]),
    (["--alphas", "0"], ["--alphas must be >= 2"]),
    (["--alphas", "-3"], ["--alphas must be >= 2"]),
    (["--levels", "99"], ["--levels 99", "by level 15", "choose levels=14 or fewer"]),
    (["--levels", "5", "--set", 'pruner={"method": "to_density", "target": 0.1, "levels": 3}'],
     ["--levels 5", "past the schedule's 3 levels"]),
])
def test_instability_flags_are_checked_before_anything_is_written(capsys, tmp_path, flags, needles):
    workdir = tmp_path / "sweep"
    code = cli.main(["instability", "--config", "demo", "--ks", "0", "--workdir", str(workdir), "--no-progress", *flags])
    _one_line_error(capsys, code, 2, *needles)
    assert not workdir.exists()


def _stop_before_training(monkeypatch):
    from jaxticket import instability

    def stop(*args, **kwargs):
        raise RuntimeError("stopped before training (test)")

    monkeypatch.setattr(instability, "sweep_from_config", stop)


def test_instability_overwrite_refuses_a_folder_that_is_no_sweep(capsys, tmp_path, monkeypatch):
    _stop_before_training(monkeypatch)
    folder = tmp_path / "project"
    (folder / "src").mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    (folder / "config.json").write_text('{"config": {"lr": 1}}')  # someone else's config.json
    argv = ["instability", "--config", "demo", "--ks", "0", "--no-progress", "--overwrite"]
    _one_line_error(capsys, cli.main([*argv, "--workdir", str(folder)]), 2, "not an instability sweep folder",
                    "notes.txt", "nothing deleted")
    monkeypatch.chdir(folder)  # --workdir . is the same folder
    _one_line_error(capsys, cli.main([*argv, "--workdir", "."]), 2, "not an instability sweep folder")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "notes.txt", "src"]
    assert (folder / "notes.txt").read_text() == "mine"


def test_instability_overwrite_deletes_only_what_the_sweep_wrote(capsys, tmp_path, monkeypatch):
    _stop_before_training(monkeypatch)
    folder = tmp_path / "sweep"
    for d in ("points", "checkpoints", "rewind", "imp_k000010/levels", "src"):
        (folder / d).mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"config_hash": "x", "config": {"sweep": {"ks": [10]}}}))
    for name in ("results.json", "results.csv", "instability_vs_k.png", "error_curves.png", ".results.csv.abc.tmp",
                 "points/k000010_level00.json", "notes.txt", "src/model.py"):
        (folder / name).write_text("x")
    code = cli.main(["instability", "--config", "demo", "--ks", "0", "--no-progress", "--overwrite",
                     "--workdir", str(folder)])
    _one_line_error(capsys, code, 1, "stopped before training")
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == ["notes.txt", "src", "src/model.py"]


def test_workdir_that_is_a_file_or_not_writable(capsys, tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for argv in (["imp", "--config", "demo"], ["instability", "--config", "demo", "--ks", "0"], ["demo"]):
        line = _one_line_error(capsys, cli.main([*argv, "--workdir", str(afile)]), 2, "is a file, not a folder")
        assert "Errno" not in line
    assert afile.read_text() == "x"
    monkeypatch.setattr(cli.os, "access", lambda *args, **kwargs: False)  # (root writes anywhere)
    _one_line_error(capsys, cli.main(["imp", "--config", "demo", "--workdir", str(tmp_path / "new" / "run")]), 2,
                    f"the folder {tmp_path} is not writable", "choose another --workdir")


def test_runtime_messages_name_flags_and_unwritable_folders(capsys, tmp_path, monkeypatch):
    import errno

    from jaxticket import checkpoints

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", "ro1/run.lock")

    monkeypatch.setattr(lottery, "run_imp", read_only)
    line = _one_line_error(capsys, cli.main(["imp", "--config", "demo", "--workdir", str(tmp_path / "r")]), 1,
                           "the folder ro1 is not writable (Read-only file system)", "--workdir")
    assert "Errno" not in line
    from jaxticket import rundir

    message = cli._runtime_message(checkpoints.ConfigMismatchError(rundir.identity.mismatch_message(
        tmp_path, [("lr", 0.1, 0.2)])))
    assert "overwrite=True" not in message and "--workdir" in message and message.count("--overwrite") == 1


def test_debug_shows_the_exception():
    with pytest.raises(cli.UsageError):
        cli.main(["--debug", "imp", "--config", "nope"])


def test_instability_refuses_streamed_datasets_in_one_line(capsys, tmp_path):
    """`imp` streams ImageNet (tests/test_streaming_train.py); the instability sweep cannot yet."""
    code = cli.main(["instability", "--config", "resnet50_imagenet", "--ks", "0", "--workdir", str(tmp_path / "r")])
    _one_line_error(capsys, code, 1, "streams from the host", "resnet50_imagenet")
    assert not (tmp_path / "r").exists()
    assert "resnet50_imagenet" in [n for n in configs.names()]


def test_unavailable_dataset_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXTICKET_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.delenv("JAXTICKET_MANUAL_DIR", raising=False)
    monkeypatch.delenv("JAXTICKET_DOWNLOAD", raising=False)
    code = cli.main(["imp", "--config", "lenet_300_100_mnist", "--workdir", str(tmp_path / "r"), "--no-progress"])
    _one_line_error(capsys, code, 1, "mnist", "--manual-dir")


def test_non_finite_loss_is_one_line(capsys, tmp_path, monkeypatch):
    """train.fit's NaN detection is tested in test_train; here, what the command prints."""
    def nan_run(*args, **kwargs):
        raise train.NonFiniteLossError(12, [1], float("nan"))

    monkeypatch.setattr(lottery, "run_imp", nan_run)
    code = cli.main(["imp", "--config", "demo", "--workdir", str(tmp_path / "r"), "--no-progress"])
    _one_line_error(capsys, code, 1, "non-finite training loss nan at step 12 (replicas [1])")


def test_interrupt_says_how_to_resume(capsys, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lottery, "run_imp", interrupted)
    assert cli.main(["imp", "--config", "demo", "--workdir", str(tmp_path / "r")]) == 130
    assert "resume" in capsys.readouterr().err


def test_missing_run_dir_is_one_line(capsys, tmp_path):
    _one_line_error(capsys, cli.main(["report", str(tmp_path / "nothing")]), 1, "nothing")
    _one_line_error(capsys, cli.main(["branch", str(tmp_path / "nothing"), "--kind", "reinit"]), 1, "jaxticket imp")


# ============================================================================ commands


def test_configs_lists_presets_and_prints_one(capsys):
    assert cli.main(["configs"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in out] == configs.names()
    assert cli.main(["configs", "conv6_cifar10"]) == 0
    out = capsys.readouterr().out
    assert "Source:" in out and '"lr": 0.0003' in out and '"steps": 30000' in out


def test_console_script_is_declared():
    scripts = importlib.metadata.entry_points(group="console_scripts")
    assert any(ep.name == "jaxticket" and ep.value == "jaxticket.cli:main" for ep in scripts)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-level IMP run on digits, then reinit and random-mask baselines at levels 1 2."""
    workdir = tmp_path_factory.mktemp("cli") / "run"
    assert cli.main(["imp", *TINY, "--workdir", str(workdir), "--levels", "2"]) == 0
    for kind in ("reinit", "random_mask"):
        assert cli.main(["branch", str(workdir), "--kind", kind, "--levels", "1", "2", "--no-progress"]) == 0
    return workdir


def test_imp_branch_report(tiny_run, capsys):
    rows = lottery.load_results(tiny_run)
    kinds = {(r["kind"], r["level"]) for r in rows}
    assert kinds == {("imp", 0), ("imp", 1), ("imp", 2), ("reinit", 1), ("reinit", 2),
                     ("random_mask", 1), ("random_mask", 2)}
    assert len(rows) == 2 * len(kinds)  # 2 seeds
    assert (tiny_run / "results.csv").exists() and (tiny_run / "results.json").exists()
    capsys.readouterr()
    assert cli.main(["report", str(tiny_run)]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    for col in ("weights %", "imp acc %", "imp stop", "reinit acc %", "random_mask acc %"):
        assert col in header
    assert "| 2 | 25.00 |" in out and " ± " in out  # two levels of global 50%
    text = (tiny_run / "report.md").read_text()
    assert header in text and "mean ± std over 2 seed(s)" in text
    assert str(tiny_run.parent) not in text and "# jaxticket report: run" in text  # no machine paths
    for name in (report.ACCURACY_PLOT, report.EARLY_STOP_PLOT):
        assert (tiny_run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_imp_again_resumes_and_a_different_config_is_refused(tiny_run, capsys):
    assert cli.main(["imp", *TINY, "--workdir", str(tiny_run), "--levels", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("done, read back") == 3 and '"levels": 2' in out  # config printed first
    code = cli.main(["imp", *TINY, "--workdir", str(tiny_run), "--levels", "2", "--set", "lr=0.5"])
    _one_line_error(capsys, code, 1, "--overwrite")


@pytest.mark.parametrize("argv,needles", [
    (["branch", "{run}", "--kind", "reinit", "--levels", "0"],
     ["--levels / --redo-level", "branch levels [0]", "IMP levels >= 1", "finished: [0, 1, 2]"]),
    (["branch", "{run}", "--kind", "reinit", "--levels", "7"],
     ["--levels / --redo-level", "branch levels [7]", "finished: [0, 1, 2]"]),
    (["branch", "{run}", "--kind", "reinit", "--levels", "-1"], ["--levels / --redo-level", "branch levels [-1]"]),
    (["branch", "{run}", "--kind", "reinit", "--redo-level", "9"], ["--levels / --redo-level", "branch levels [9]"]),
    (["compare", "{run}", "--out", "{out}"], ["at least two run directories, got 1"]),
    (["compare", "{run}", "{run}", "--out", "{out}"], ["both named 'run'", "--names"]),
    (["compare", "{run}", "{run}", "--names", "a", "b", "--out", "{out}", "--seed", "5"],
     ["--seed 5", "seeds 0..1"]),
    (["compare", "{run}", "{run}", "--names", "a", "b", "--out", "{out}", "--level", "99"],
     ["--level 99", "levels in common: [0, 1, 2]"]),
    (["compare", "{run}", "{run}", "--names", "a", "b", "--out", "{out}", "--layer", "fc1/kernl"],
     ["--layer fc1/kernl", "did you mean 'fc1/kernel'"]),
])
def test_levels_seeds_and_layers_not_in_the_run_are_usage_errors(tiny_run, tmp_path, capsys, argv, needles):
    out = tmp_path / "out"
    argv = [a.format(run=tiny_run, out=out) for a in argv]
    _one_line_error(capsys, cli.main([*argv, "--no-progress"]), 2, *needles)
    assert not out.exists()


def test_train_is_level_zero(tmp_path, capsys):
    workdir = tmp_path / "dense"
    assert cli.main(["train", "--config", "demo", "--workdir", str(workdir), "--steps", "20", "--seeds", "1",
                     "--no-progress"]) == 0
    assert '"levels": 0' in capsys.readouterr().out
    rows = lottery.load_results(workdir)
    assert [(r["kind"], r["level"], r["density"]) for r in rows] == [("imp", 0, 1.0)]


# ============================================================================ subprocesses


def _checkpoint_steps(level_dir):
    try:
        return [d for d in os.listdir(level_dir / "checkpoints") if d.isdigit()]
    except FileNotFoundError:
        return []


@pytest.mark.slow
def test_sigkill_mid_level_then_resume_equals_uninterrupted_run(tmp_path):
    """SIGKILL while level 1 trains (a checkpoint exists, its summary does not), run again:
    results.json and every level's final params equal a straight run's, bitwise."""
    flags = ["--config", "demo", "--levels", "1", "--seeds", "1", "--steps", "300", "--no-progress",
             "--set", "checkpoint_every=20", "--set", "eval_every=100"]
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    # the straight run goes at the same time, on the other core
    ref = subprocess.Popen(_cli("imp", *flags, "--workdir", str(straight)), env=_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = subprocess.Popen(_cli("imp", *flags, "--workdir", str(killed)), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    level1 = killed / "levels" / "level_01"
    deadline = time.monotonic() + 120
    while not _checkpoint_steps(level1) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    log = proc.communicate(timeout=30)[0]
    assert proc.returncode == -signal.SIGKILL, f"finished before it could be killed:\n{log[-2000:]}"
    assert _checkpoint_steps(level1) and not (level1 / "summary.json").exists()
    assert (killed / "levels" / "level_00" / "summary.json").exists()

    again = subprocess.run(_cli("imp", *flags, "--workdir", str(killed)), env=_env(),
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "level  0  done, read back" in again.stdout
    ref_log = ref.communicate(timeout=120)[0]
    assert ref.returncode == 0, ref_log[-3000:]

    results = json.loads((killed / "results.json").read_text())
    assert results == json.loads((straight / "results.json").read_text())
    assert [r["level"] for r in results] == [0, 1]
    for level in ("level_00", "level_01"):
        a = np.load(killed / "levels" / level / "final_params.npz")
        b = np.load(straight / "levels" / level / "final_params.npz")
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name])


def test_sigint_during_start_up_exits_130(tmp_path):
    """Ctrl-C while the run starts (data, compilation): the message and exit code 130,
    not a crash of the interpreter's teardown (it segfaulted in about half the tries)."""
    workdir = tmp_path / "run"
    # without the persistent cache the start compiles for seconds, also on a machine whose cache is warm
    proc = subprocess.Popen(_cli("imp", "--config", "demo", "--levels", "3", "--no-progress", "--no-compilation-cache",
                                 "--workdir", str(workdir)), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # a pytest-xdist worker ignores SIGINT, and a child inherits that: Ctrl-C's default back
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in proc.stdout:  # the config is printed in full; then the run starts
            if line.rstrip() == "}":
                break
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, f"{proc.returncode}\n{out[-1000:]}\n{err[-2000:]}"
    assert err.strip().splitlines()[-1] == "jaxticket: interrupted; run the same command again to resume"
    lock = workdir / "run.lock"
    assert not lock.exists() or lock.read_text() == ""  # released: the next run takes it without a word


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    """`jaxticket demo` from a clean directory: table, CSV and plots, within 2 minutes."""
    workdir = tmp_path / "jaxticket_demo"
    t0 = time.monotonic()
    done = subprocess.run(_cli("demo", "--no-progress"), env=_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - t0
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    assert "random_mask acc %" in out and "demo finished" in out
    for name in ("results.csv", "results.json", report.REPORT_FILE, report.ACCURACY_PLOT, report.EARLY_STOP_PLOT):
        assert (workdir / name).exists() and f"{cli.DEMO_WORKDIR}/{name}" in out
    config = configs.get("demo")
    rows = lottery.load_results(workdir)
    assert len(rows) == (2 * config.imp.levels + 1) * config.imp.seeds
    print(f"jaxticket demo: {elapsed:.1f} s")  # pytest -s shows it; the timeout bounds it


def test_levels_past_an_emptied_layer_are_refused_unless_empty_layers_are_allowed():
    config = configs.get("demo")
    with pytest.raises(cli.UsageError, match="empty a layer"):
        cli.commands._check_levels_reachable(config, [99])
    cli.commands._check_levels_reachable(config.replace(allow_empty_layers=True), [99])  # asked for: no refusal
