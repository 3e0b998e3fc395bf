"""The host a benchmark ran on, without importing JAX (process.py's parent must not).

    >>> sorted(host())[:3]
    ['cpu', 'cpu_count', 'loadavg_at_start']
"""

from __future__ import annotations

import os
import platform


def host() -> dict:
    """Platform, CPU model (from /proc/cpuinfo where there is one), cores, Python, load."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "loadavg_at_start": os.getloadavg()}
