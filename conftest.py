"""Test-session settings that must exist before ``jaxticket`` is imported.

The tests share one persistent compilation cache per test session: a fresh temporary
folder, made by the first pytest process (the xdist controller, or the only process with
``-n 0``), handed to the xdist workers and to every subprocess the tests start through
the environment (``JAXTICKET_COMPILATION_CACHE``), and removed when that process exits.
A program compiled by one test module, worker or subprocess is read back by the next
instead of compiled again (the suite clears JAX's in-memory caches after each module).
The tests neither read programs that other sessions or the user's runs wrote nor leave
theirs in the user's cache; the tests of the cache itself give their subprocesses a
folder of their own. ``JAXTICKET_COMPILATION_CACHE=off`` runs the tests without a cache,
``JAXTICKET_COMPILATION_CACHE=/some/folder`` with that one (kept).

XLA compiles the tests' programs with LLVM optimisation level 0
(``--xla_backend_optimization_level=0``, appended to ``XLA_FLAGS`` for this process, the
xdist workers and the subprocesses unless ``XLA_FLAGS`` names a level already): on tiny
data the suite is compile-bound (a LeNet's init compiles in ~1.7 s at the default level on
this 2-core CPU), and level 0 roughly halves an experiment script's ``--quick`` test. What
the tests assert (equal runs, masks that hold, tolerances) does not depend on the level; the
``jaxticket`` command, the experiment scripts and the benchmarks keep XLA's default.
"""

import atexit
import os
import shutil
import tempfile

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
if "JAXTICKET_COMPILATION_CACHE" not in os.environ:
    _session_cache = tempfile.mkdtemp(prefix="jaxticket-tests-xla-")
    os.environ["JAXTICKET_COMPILATION_CACHE"] = _session_cache
    atexit.register(shutil.rmtree, _session_cache, ignore_errors=True)
