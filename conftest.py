"""Test-session settings that must exist before ``jaxticket`` is imported.

The tests run without JAX's persistent compilation cache (set
``JAXTICKET_COMPILATION_CACHE`` to a folder to test with one): they neither read programs
that other processes on this machine wrote nor leave theirs in the user's cache, and the
tests of the cache itself give their subprocesses a folder of their own.
"""

import os

os.environ.setdefault("JAXTICKET_COMPILATION_CACHE", "off")
