"""Fault injection on an unfinished level, as the command sees it in its own process: the
periodic checkpoint it resumes from damaged or gone while the level's other files are
partly there. Each ends in one line on stderr (no traceback, no orbax/absl noise at exit)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = ["--config", "demo", "--levels", "1", "--steps", "40", "--seeds", "1", "--no-progress",
       "--set", "checkpoint_every=10"]


def _jaxticket(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
    code = "import sys; from jaxticket.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("faults") / "run"
    done = _jaxticket("imp", *RUN, "--workdir", str(workdir))
    assert done.returncode == 0, done.stderr
    return workdir


def _only_line(result, code, *needles):
    lines = [l for l in result.stderr.strip().splitlines() if not l.startswith("jaxticket: warning")]
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("jaxticket: error: "), result.stderr
    assert "Traceback" not in result.stderr and "Event loop" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def _unfinished_copy(finished, tmp_path, *remove):
    import shutil

    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)
    level = workdir / "levels" / "level_01"
    for name in remove:
        path = level / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return workdir, level


def test_a_damaged_latest_checkpoint_is_one_line_in_the_commands_process(finished, tmp_path):
    workdir, level = _unfinished_copy(finished, tmp_path, "manifest.json", "summary.json", "final_params.npz")
    latest = max((p for p in (level / "checkpoints").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    for f in [f for f in latest.rglob("*") if f.is_file()]:
        f.write_bytes(b"\0" * 8)
    _only_line(_jaxticket("imp", *RUN, "--workdir", str(workdir)), 1, "cannot be restored", "checkpoints")


def test_a_finished_level_without_its_summary_is_one_line_not_errno(finished, tmp_path):
    workdir, level = _unfinished_copy(finished, tmp_path, "summary.json", "checkpoints")
    result = _jaxticket("imp", *RUN, "--workdir", str(workdir))
    _only_line(result, 1, "summary.json", "--redo-level 1")
    assert "Errno" not in result.stderr
    redone = _jaxticket("imp", *RUN, "--workdir", str(workdir), "--redo-level", "1")
    assert redone.returncode == 0, redone.stderr
    assert (level / "summary.json").exists()
