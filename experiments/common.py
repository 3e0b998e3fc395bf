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

from jaxticket import compilation_cache, report, rundir  # noqa: E402
from jaxticket import machine as machine_lib  # noqa: E402


class _Parser(argparse.ArgumentParser):
    """Parses as argparse does, then places every run of the script on ``--mesh``."""

    def parse_args(self, *args, **kwargs):
        out = super().parse_args(*args, **kwargs)
        spec = getattr(out, "mesh", None)
        if spec is not None:
            import jax

            from jaxticket import parallel

            if spec.strip().lower() != "auto":
                try:
                    replicas, data = (int(x) for x in spec.split(","))
                except ValueError:
                    self.error(f"--mesh {spec}: give R,D (R replicas x D data devices, e.g. 4,2) or auto")
                if replicas * data > jax.device_count():
                    self.error(f"--mesh {spec}: needs {replicas * data} devices, this process sees "
                               f"{jax.device_count()}")
            parallel.set_default_mesh(spec)
        return out


def mesh_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with ``--mesh R,D|auto``: once parsed, every IMP lineage, branch
    and sweep of the script trains on that mesh (:func:`jaxticket.parallel.set_default_mesh`;
    ``train_sparse`` runs stay on one device). A malformed mesh is a usage error."""
    out = _Parser(description=description)
    out.add_argument("--mesh", default=None, help="R,D or auto: train IMP, branches and sweeps on a device mesh "
                     "(R replicas x D data devices); default one device")
    return out


def parser(name: str, doc: str, *, manual_help: str, quick_help: str) -> argparse.ArgumentParser:
    """The options every experiment script takes: ``--mesh``, ``--manual-dir``, ``--data-dir``,
    ``--workdir`` (default ``runs/<name>``), ``--out`` (default
    ``experiments/results/<name>[_quick]``) and ``--quick``.

    Called first by a script's ``main``, it also turns on JAX's persistent compilation
    cache as the ``jaxticket`` command does (:func:`jaxticket.compilation_cache.enable_default`;
    ``JAXTICKET_COMPILATION_CACHE=off`` keeps it off)."""
    compilation_cache.enable_default()
    out = mesh_parser(doc.splitlines()[0])
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
    """The machine (:func:`jaxticket.machine.describe`, as the benchmarks record it) and
    JAX's backend."""
    import jax

    dev = jax.devices()[0]
    return {**machine_lib.describe(), "jax": jax.__version__, "backend": jax.default_backend(),
            "device": getattr(dev, "device_kind", str(dev))}


class Provenance:
    """Records the commit, machine, settings and wall time of an experiment's stages in
    ``provenance.json`` (kept across resumed runs: every session appends its stages)."""

    def __init__(self, out_dir: pathlib.Path, settings: dict):
        compilation_cache.enable_default()  # for scripts with a parser of their own (before they train)
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


def print_summary(out) -> int:
    """Prints ``out/summary.md`` (or that there are no results yet); 0, a script's exit code."""
    summary = pathlib.Path(out) / "summary.md"
    print(summary.read_text() if summary.exists() else "no results yet")
    return 0


def stats(values: Iterable) -> report.SeedStats:
    return report.seed_stats(list(values))


def fmt(s, scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± std [ci95]`` of a :class:`jaxticket.report.SeedStats`."""
    if s is None:
        return "-"
    if s.n < 2:  # one seed has no spread and no interval
        return f"{s.mean * scale:.{digits}f} (one seed: no interval)"
    lo, hi = s.ci95
    return f"{s.mean * scale:.{digits}f} ± {s.std * scale:.{digits}f} [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"


# ---------------------------------------------------------------------------------------------
# Added for issue 24's experiments (rethinking_structured, data_order_distance, rewinding_mnist1d):
# paired differences with a margin, and plots whose bars are 95% t-intervals with n stated.

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def fmt_paired(d, scale: float = 100.0, digits: int = 2) -> str:
    """``+mean [lo, hi]`` of a paired :class:`jaxticket.report.SeedStats` (``-`` for ``None``).

    Example: ``fmt_paired(report.paired_stats({0: .98, 1: .97}, {0: .97, 1: .97}))`` -> ``'+0.50 [-5.85, +6.85]'``.
    """
    if d is None:
        return "-"
    if d.n < 2:
        return f"{d.mean * scale:+.{digits}f} (one seed: no interval)"
    lo, hi = d.ci95
    return f"{d.mean * scale:+.{digits}f} [{lo * scale:+.{digits}f}, {hi * scale:+.{digits}f}]"


def difference_verdict(d, margin: float) -> str:
    """What a paired difference's 95% interval allows, with an equivalence ``margin`` (same units):
    ``"higher"`` (interval above 0), ``"lower"`` (below 0), ``"equal within ±margin"`` (the
    interval inside [-margin, +margin]), else ``"no difference detected"`` (the interval holds
    0 but is wider than the margin: not evidence of equality). ``"-"`` for ``None``.

    Example: an interval [-0.2, +0.1] points with margin 0.5 -> ``"equal within ±margin"``.
    """
    if d is None or d.n < 2:
        return "-"
    lo, hi = d.ci95
    if lo > 0:
        return "higher"
    if hi < 0:
        return "lower"
    if lo >= -margin and hi <= margin:
        return "equal within ±margin"
    return "no difference detected"


def ci_series(points) -> tuple[list, list, list, list]:
    """``[(x, SeedStats)]`` -> ``(xs, means, lower errors, upper errors)`` for an errorbar plot of
    95% t-intervals (``None`` stats dropped)."""
    pts = [(x, s) for x, s in points if s is not None]
    return ([x for x, _ in pts], [s.mean for _, s in pts], [s.mean - s.ci95[0] for _, s in pts],
            [s.ci95[1] - s.mean for _, s in pts])


def plot_ci(series: dict, path, *, xlabel: str, ylabel: str, title: str, note: str, scale: float = 1.0,
            log_density_x: bool = False, xscale: str = "linear", hlines: Sequence = ()) -> None:
    """One line per label, bars = 95% t-intervals, ``note`` (n and what the bars are) under the title.

    Args:
      series: ``{label: [(x, SeedStats or None), ...]}``; a label ending in ``" (1 seed)"`` is
        drawn dashed without bars (a single-seed line, marked as such).
      log_density_x: x are densities (fractions) drawn as percent of weights remaining, log
        scale, reversed. ``xscale``: otherwise ``"linear"``, ``"log"`` or ``"symlog"`` (k = 0).
      scale: y multiplier (100 for fractions shown as %). ``hlines``: ``[(y, label)]`` reference lines.
    """
    from jaxticket import plots

    fig = plots.figure((6.2, 4.0))
    ax = fig.add_subplot()
    for i, (label, points) in enumerate(series.items()):
        xs, m, lo, hi = ci_series(points)
        if not xs:
            continue
        x = [100 * v for v in xs] if log_density_x else xs
        single = str(label).endswith("(1 seed)")
        ax.errorbar(x, [scale * v for v in m], yerr=None if single else [[scale * v for v in lo],
                                                                         [scale * v for v in hi]],
                    marker=MARKERS[i % len(MARKERS)], markersize=4, capsize=3, color=f"C{i % 10}",
                    linestyle="--" if single else "-", label=str(label))
    for j, (y, label) in enumerate(hlines):
        ax.axhline(y, color="gray", linestyle=(":", "--", "-.")[j % 3], linewidth=1, label=label)
    if log_density_x:
        from matplotlib import ticker

        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel(xlabel or "percent of weights remaining")
    else:
        if xscale == "symlog":
            ax.set_xscale("symlog", linthresh=1.0)
        elif xscale != "linear":
            ax.set_xscale(xscale)
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n{note}", fontsize="medium")
    ax.legend(fontsize="x-small")
    ax.grid(alpha=0.3, which="both")
    plots.save_figure(fig, path)
