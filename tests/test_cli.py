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
    lot, tr = cli.parse_overrides([
        "lr=0.01", "train.batch_size=32", "reset=finetune", "milestones=[10, 20]",
        'pruner={"method": "partition", "rules": [["^output/", null], ["kernel$", {"method": "magnitude", "fraction": 0.3}]]}',
        "prunable=^(?!output/).*kernel$", "dataset=digits", "augment=true", "validation_size=null",
    ])
    assert tr == {"lr": 0.01, "batch_size": 32, "milestones": (10, 20), "dataset": "digits", "augment": True}
    assert lot["reset"] == "finetune" and lot["prunable"] == "^(?!output/).*kernel$"
    assert lot["validation_size"] is None
    assert lot["pruner"]["rules"][1] == ["kernel$", {"method": "magnitude", "fraction": 0.3}]
    assert cli.parse_overrides(['train={"lr": 0.5, "steps": 7}']) == ({}, {"lr": 0.5, "steps": 7})


def test_set_unknown_key_lists_the_valid_keys():
    with pytest.raises(cli.UsageError) as e:
        cli.parse_overrides(["lrr=0.1"])
    msg = str(e.value)
    assert "'lr'" in msg and "rewind_step" in msg and "batch_size" in msg
    with pytest.raises(cli.UsageError):
        cli.parse_overrides(["no-equals-sign"])


def test_resolved_config_applies_preset_then_set_then_flags():
    args = cli.build_parser().parse_args(
        ["imp", "--config", "demo", "--set", "steps=99", "--steps", "40", "--levels", "1",
         "--set", "train.lr=0.02", "--rewind-step", "5", "--batch-size", "30", "--set", "reset=finetune"])
    config = cli.resolve_config(args)
    assert (config.train.steps, config.train.lr, config.train.batch_size) == (40, 0.02, 30)
    assert (config.levels, config.rewind_step, config.reset) == (1, 5, "finetune")
    assert config.train.dataset == configs.get("demo").train.dataset


# ============================================================================ errors


@pytest.mark.parametrize("argv,needles", [
    (["imp", "--config", "lenet_300_100_mnst"], ["did you mean 'lenet_300_100_mnist'", "conv6_cifar10"]),
    (["imp", "--config", "demo", "--set", "lrr=1"], ["'lrr'", "valid keys"]),
    (["imp", "--config", "demo", "--set", "lr=-1"], ["lr must be"]),
    (["imp", "--config", "demo", "--set", "reset=bogus"], ["'rewind', 'finetune'"]),
    (["imp", "--config", "demo", "--set", "lr=true"], ["lr must be a finite number > 0, got True"]),
    (["imp", "--config", "demo", "--set", 'pruner={"method": "magnitude", "fraction": "0.2"}'],
     ["fraction must be a number"]),
    (["imp", "--config", "demo", "--import", "no_such_module_xyz"], ["--import no_such_module_xyz"]),
    (["instability", "--config", "demo", "--ks", "0", "100000"], ["--ks [100000] are outside [0, steps=300]"]),
    (["imp", "--config", "demo", "--set", "model=lenet_bogus"], ["bad config value"]),
    (["imp", "--config", "demo", "--set", "dataset=nope"], ["Valid names", "digits"]),
    (["imp", "--config", "demo", "--levels", "x"], ["invalid int value"]),
    (["imp", "--levels", "3"], ["--config"]),
    (["frobnicate"], ["invalid choice"]),
    (["branch", "somewhere", "--kind", "bogus"], ["reinit"]),
    (["configs", "nope"], ["valid presets"]),
])
def test_usage_errors_are_one_line_exit_2(capsys, argv, needles):
    _one_line_error(capsys, cli.main(argv), 2, *needles)


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
    assert len(rows) == (2 * config.levels + 1) * config.seeds
    print(f"jaxticket demo: {elapsed:.1f} s")  # pytest -s shows it; the timeout bounds it
