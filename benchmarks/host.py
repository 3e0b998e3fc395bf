"""The host a benchmark ran on: :func:`jaxticket.machine.describe`.

Read from ``jaxticket/machine.py`` on its own, without importing the ``jaxticket``
package, which imports JAX (process.py's parent must not).

    >>> sorted(host())[:3]
    ['cpu', 'cpu_count', 'loadavg_at_start']
"""

from __future__ import annotations

import importlib.util
import pathlib


def _machine_module():
    path = pathlib.Path(__file__).resolve().parents[1] / "jaxticket" / "machine.py"
    spec = importlib.util.spec_from_file_location("_jaxticket_machine", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


host = _machine_module().describe  # platform, CPU model, cores, Python, load
