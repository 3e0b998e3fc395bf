"""``import jaxticket`` changes nothing outside itself, and the version is written once."""

import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import jaxticket

ROOT = pathlib.Path(__file__).resolve().parent.parent

CONFIG_AROUND_IMPORT = textwrap.dedent("""
    import json
    import jax
    before = {k: repr(v) for k, v in jax.config.values.items()}
    import jaxticket
    after = {k: repr(v) for k, v in jax.config.values.items()}
    print(json.dumps({"before": before, "after": after}))
""")


def test_import_leaves_every_jax_config_value_as_it_was(tmp_path):
    # the persistent cache would be switched on here if the import did it: no switch says
    # off, no JAX cache folder is configured, and the user cache folder is writable
    env = {k: v for k, v in os.environ.items() if k not in ("JAXTICKET_COMPILATION_CACHE", "JAX_COMPILATION_CACHE_DIR")}
    env.update(PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu",
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", CONFIG_AROUND_IMPORT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    before, after = seen["before"], seen["after"]
    changed = {k: (before.get(k), after.get(k)) for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert not changed, f"import jaxticket changed jax.config: {changed}"
    assert not (tmp_path / "cache").exists()  # and made no cache folder


def test_the_installed_version_is_jaxticket_version():
    try:
        installed = importlib.metadata.version("jaxticket")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("jaxticket is not installed (imported from the source tree)")
    assert installed == jaxticket.__version__, (
        f"installed metadata says {installed}, jaxticket.__version__ {jaxticket.__version__}: "
        "reinstall (pip install -e .) after changing the version")


def test_pyproject_takes_the_version_from_the_package():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "jaxticket.__version__"}
