"""Fixed cost: how many programs a run compiles, and the persistent compilation cache.

Compilations are counted in a fresh process: JAX's ``backend_compile`` monitoring events
less the persistent cache's hits (the event fires for both).
"""

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COUNT = textwrap.dedent("""
    import json, sys
    import jax
    compiles, hits = [], []
    jax.monitoring.register_event_duration_secs_listener(  # fires for cache hits too
        lambda event, duration, **kw: compiles.append(event) if event.endswith("backend_compile_duration") else None)
    jax.monitoring.register_event_listener(
        lambda event, **kw: hits.append(event) if event.endswith("compilation_cache/cache_hits") else None)
    from jaxticket import cli, configs, lottery
    if sys.argv[1] == "cli":
        code = cli.main(sys.argv[2:])
        print(json.dumps({"code": code, "compiles": len(compiles) - len(hits), "hits": len(hits)}))
    else:
        per_level = []
        config = configs.get("demo").replace(levels=3, seeds=2, steps=50, eval_every=25)
        lottery.run_imp(config, sys.argv[2], log=lambda line: per_level.append(len(compiles)))
        print(json.dumps({"per_level": per_level}))
""")


def _run(*args, cache="off"):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu",
               JAXTICKET_COMPILATION_CACHE=cache)
    done = subprocess.run([sys.executable, "-c", COUNT, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_imp_compiles_a_handful_of_programs(tmp_path):
    """`jaxticket imp --config demo --levels 1`: init, the train chunk, evaluation of the
    validation and test splits, the pruner, the rewound state: 6 programs (58 before the
    engine was keyed on the Task; the target was 12)."""
    out = _run("cli", "imp", "--config", "demo", "--levels", "1", "--workdir", str(tmp_path / "run"),
               "--no-progress")
    assert out["code"] == 0
    assert out["compiles"] <= 8, out


def test_levels_after_the_first_compile_nothing(tmp_path):
    per_level = _run("imp", str(tmp_path / "run"))["per_level"]
    assert len(per_level) == 4
    assert per_level[1] > per_level[0]           # level 1 compiles the pruner and the rewound state
    assert per_level[3] == per_level[2] == per_level[1], per_level  # levels 2, 3: zero new programs


def test_persistent_cache_is_on_by_default_and_shared_across_processes(tmp_path):
    cache = tmp_path / "xla"
    first = _run("cli", "imp", "--config", "demo", "--levels", "1", "--steps", "30", "--workdir",
                 str(tmp_path / "a"), "--no-progress", cache=str(cache))
    files = [p for p in cache.iterdir() if p.name.endswith("-cache")]
    assert first["code"] == 0 and len(files) >= first["compiles"] >= 4
    second = _run("cli", "imp", "--config", "demo", "--levels", "1", "--steps", "30", "--workdir",
                  str(tmp_path / "b"), "--no-progress", cache=str(cache))
    assert second["code"] == 0 and second["compiles"] == 0 and second["hits"] >= 4  # all from the cache
    third = _run("cli", "--no-compilation-cache", "imp", "--config", "demo", "--levels", "1", "--steps", "30",
                 "--workdir", str(tmp_path / "c"), "--no-progress", cache=str(cache))
    assert third["compiles"] >= first["compiles"]  # switched off by the flag: compiled again


def test_cache_switches():
    import jax

    from jaxticket import compilation_cache

    assert compilation_cache.folder() == jax.config.jax_compilation_cache_dir or compilation_cache.folder() is None
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", JAXTICKET_COMPILATION_CACHE="off")
    code = ("import jaxticket, jax; jaxticket.compilation_cache.enable_default(); "
            "print(jax.config.jax_compilation_cache_dir)")
    off = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert off.stdout.strip() == "None"
    env.pop("JAXTICKET_COMPILATION_CACHE")
    env["XDG_CACHE_HOME"] = "/tmp/jaxticket-test-xdg"
    on = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert on.stdout.strip() == "/tmp/jaxticket-test-xdg/jaxticket/xla"
