"""Shared pieces of the experiment scripts: provenance, tidy CSV, seed statistics.

Every experiment writes ``experiments/results/<name>/``: ``results.csv`` (one row per
measurement), ``provenance.json`` (the commit, the machine, the settings and the wall
time the results came from), plots, and a README with the paper's numbers beside ours.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import pathlib
import subprocess
import sys
import time
from typing import Iterable, Sequence

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(ROOT))

from jaxticket import report, rundir  # noqa: E402


def parser(name: str, doc: str, *, manual_help: str, quick_help: str) -> argparse.ArgumentParser:
    """The options every experiment script takes: ``--manual-dir``, ``--data-dir``,
    ``--workdir`` (default ``runs/<name>``), ``--out`` (default
    ``experiments/results/<name>[_quick]``) and ``--quick``."""
    out = argparse.ArgumentParser(description=doc.splitlines()[0])
    out.add_argument("--manual-dir", default=None, help=manual_help)
    out.add_argument("--data-dir", default=None)
    out.add_argument("--workdir", default=str(ROOT / "runs" / name))
    out.add_argument("--out", default=None, help=f"results folder (default experiments/results/{name}[_quick])")
    out.add_argument("--quick", action="store_true", help=quick_help)
    return out


def git_commit() -> str:
    """The commit the code runs from (with ``+dirty`` when the working tree has changes)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "jaxticket", "experiments/*.py"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    """The machine, as benchmarks record it (:func:`benchmarks.host.host`), and JAX's backend."""
    import jax

    from benchmarks.host import host

    dev = jax.devices()[0]
    return {**host(), "jax": jax.__version__, "backend": jax.default_backend(),
            "device": getattr(dev, "device_kind", str(dev))}


class Provenance:
    """Records the commit, machine, settings and wall time of an experiment's stages in
    ``provenance.json`` (kept across resumed runs: every session appends its stages)."""

    def __init__(self, out_dir: pathlib.Path, settings: dict):
        self.path = pathlib.Path(out_dir) / "provenance.json"
        old = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.data = {"settings": settings, "sessions": old.get("sessions", [])}
        self.session = {"commit": git_commit(), "machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                        "settings": settings, "stages": {}}  # a later session may run other settings
        self.data["sessions"].append(self.session)

    def stage(self, name: str, seconds: float) -> None:
        self.session["stages"][name] = round(seconds, 1)
        self.write()

    def write(self) -> None:
        rundir.write_atomic(self.path, json.dumps(self.data, indent=2) + "\n")


def write_csv(path, rows: Sequence[dict], fields: Sequence[str]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    rundir.write_atomic(path, out.getvalue())


def stats(values: Iterable) -> report.SeedStats:
    return report.seed_stats(list(values))


def fmt(s, scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± std [ci95]`` of a :class:`jaxticket.report.SeedStats`."""
    if s is None:
        return "-"
    lo, hi = s.ci95
    return f"{s.mean * scale:.{digits}f} ± {s.std * scale:.{digits}f} [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"
