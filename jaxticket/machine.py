"""The machine a run, an experiment or a benchmark ran on, for its provenance.

Plain Python only (no JAX, no jaxticket import), so that a process that must not import
JAX (``benchmarks/process.py``'s parent) can read this file on its own; JAX's backend
and devices are the caller's to add.

Example:
    >>> from jaxticket import machine
    >>> sorted(machine.describe())
    ['cpu', 'cpu_count', 'loadavg_at_start', 'platform', 'python']
"""

from __future__ import annotations

import os
import platform
from typing import Optional

__all__ = ["cpu_model", "describe"]


def cpu_model() -> str:
    """The CPU's model name: ``/proc/cpuinfo``'s ``model name`` where there is one (Linux),
    else :func:`platform.processor` (may be ``""``)."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return cpu


def _loadavg() -> Optional[tuple]:
    try:
        return os.getloadavg()
    except (AttributeError, OSError):  # not on Windows, nor where the OS cannot say
        return None


def describe() -> dict:
    """The host, as plain JSON-ready data.

    Returns:
      ``{"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
      "python": "3.x.y", "loadavg_at_start": (1, 5, 15 min) or None}``.
    """
    return {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "loadavg_at_start": _loadavg()}
