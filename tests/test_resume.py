"""Kill a real training process mid-run, restart it, and get the uninterrupted result.

``tests/resume_script.py`` checkpoints every 20 steps through ``RunCheckpoints``; this
test SIGKILLs it once a checkpoint exists, runs it again in the same directory (it
resumes from the latest checkpoint), and compares the final params and the rewind
state bitwise with a run straight through.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "resume_script.py")


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(HERE) + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"  # compile time dominates
    return env


def _checkpoint_steps(run_dir):
    try:
        return [int(d) for d in os.listdir(os.path.join(run_dir, "checkpoints")) if d.isdigit()]
    except FileNotFoundError:
        return []


def test_kill_and_resume_equals_straight_run(tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "resumed.npz"
    proc = subprocess.Popen([sys.executable, SCRIPT, str(run_dir), str(out)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not _checkpoint_steps(run_dir) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    log = proc.communicate(timeout=30)[0]
    assert proc.returncode == -signal.SIGKILL, f"finished before it could be killed:\n{log[-2000:]}"
    assert not out.exists()
    killed_at = max(_checkpoint_steps(run_dir))
    assert 0 < killed_at < 600

    again = subprocess.run([sys.executable, SCRIPT, str(run_dir), str(out)], env=_env(),
                           capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    straight_out = tmp_path / "straight.npz"
    straight = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "straight"), str(straight_out),
                               "--no-checkpoints"], env=_env(), capture_output=True, text=True,
                              timeout=180)
    assert straight.returncode == 0, straight.stderr[-3000:]

    a, b = np.load(out), np.load(straight_out)
    assert int(a["step"]) == int(b["step"]) == 600 and int(a["rewind_step"]) == 33
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # bitwise
    assert max(_checkpoint_steps(run_dir)) == 600
