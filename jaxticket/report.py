"""Tables and plots of a run: multi-seed summaries, the density-accuracy table, report.md.

:func:`seed_stats` is the one multi-seed summary of the package (mean, standard
deviation, 95% confidence interval of the mean from Student's t), used by the reports
and the experiments alike.

Example:
    >>> s = seed_stats([0.981, 0.979, 0.983])
    >>> round(s.mean, 4), s.n, s.ci95[0] < s.mean < s.ci95[1]
    (0.981, 3, True)
"""

from __future__ import annotations

import math
import pathlib
from collections import defaultdict
from typing import NamedTuple, Optional, Sequence

import numpy as np

from jaxticket import rundir as rundir_lib

__all__ = [
    "ACCURACY_PLOT",
    "EARLY_STOP_PLOT",
    "REPORT_FILE",
    "SeedStats",
    "format_instability_table",
    "format_table",
    "Matched",
    "interpolate_log_density",
    "matched_density",
    "paired_stats",
    "seed_stats",
    "summarize",
    "write_report",
]

REPORT_FILE = "report.md"
ACCURACY_PLOT = "accuracy_vs_density.png"
EARLY_STOP_PLOT = "early_stop_vs_density.png"


class SeedStats(NamedTuple):
    """Summary of one quantity over seeds: ``mean``, ``std`` (sample, ``ddof=1``; 0 for one
    seed), ``ci95`` (the 95% confidence interval of the mean, Student's t; the mean
    itself for one seed) and ``n``."""

    mean: float
    std: float
    ci95: tuple
    n: int

    def format(self, scale: float = 1.0, digits: int = 2) -> str:
        """``"mean ± std"`` scaled (e.g. ``scale=100`` for percentages); one seed has no
        spread: ``"mean (one seed)"``.

        Example:
            >>> seed_stats([0.5]).format(scale=100)
            '50.00 (one seed)'
        """
        if self.n < 2:
            return f"{self.mean * scale:.{digits}f} (one seed)"
        return f"{self.mean * scale:.{digits}f} ± {self.std * scale:.{digits}f}"


def seed_stats(values: Sequence) -> Optional[SeedStats]:
    """Mean, sample std and 95% t-interval of ``values`` (``None`` entries dropped);
    ``None`` when nothing is left.

    ``values``: one number per seed (a list, or a float array ``[S]``).

    Example:
        >>> s = seed_stats([0.980, 0.982, None, 0.978])   # the seed without a value is dropped
        >>> round(s.mean, 4), round(s.std, 4), s.n, [round(c, 4) for c in s.ci95]
        (0.98, 0.002, 3, [0.975, 0.985])
        >>> s.format(scale=100)
        '98.00 ± 0.20'
    """
    x = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))], np.float64)
    if x.size == 0:
        return None
    mean = float(x.mean())
    if x.size == 1:
        return SeedStats(mean, 0.0, (mean, mean), 1)
    from scipy import stats

    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.975, x.size - 1)) * std / math.sqrt(x.size)
    return SeedStats(mean, std, (mean - half, mean + half), int(x.size))


def paired_stats(a: dict, b: dict) -> Optional[SeedStats]:
    """:func:`seed_stats` of the per-seed differences ``a[seed] - b[seed]`` over the seeds
    both hold a value for (``None`` values dropped): a paired comparison, which removes
    the variation between seeds that two unpaired means carry.

    ``a``, ``b``: ``{seed: value}``.

    Example:
        >>> d = paired_stats({0: 0.982, 1: 0.975, 2: 0.990}, {0: 0.980, 1: 0.972, 2: 0.987})
        >>> round(d.mean, 4), d.n, d.ci95[0] > 0   # small, but every seed agrees
        (0.0027, 3, True)
    """
    seeds = sorted(s for s in a if s in b and a[s] is not None and b[s] is not None)
    return seed_stats([float(a[s]) - float(b[s]) for s in seeds])


def interpolate_log_density(densities: Sequence[float], values: Sequence[float], at: float) -> Optional[float]:
    """A lineage's value at density ``at``, linear in log density between its two nearest
    levels (one seed). ``None`` outside the lineage's density range (no extrapolation).

    ``densities``, ``values``: ``[levels]`` (densities in (0, 1], any order).

    Example:
        >>> interpolate_log_density([1.0, 0.1, 0.01], [0.98, 0.90, 0.50], 0.1 ** 1.5)   # halfway
        0.7
        >>> interpolate_log_density([1.0, 0.1], [0.98, 0.90], 0.05) is None
        True
    """
    d = np.asarray(densities, np.float64)
    v = np.asarray(values, np.float64)
    if d.shape != v.shape or d.ndim != 1 or d.size == 0:
        raise ValueError(f"interpolate_log_density: need one value per density, got {d.shape} and {v.shape}")
    if np.any(d <= 0) or at <= 0:
        raise ValueError("interpolate_log_density: densities must be > 0 (it interpolates over their logarithm)")
    order = np.argsort(d)
    x, y = np.log(d[order]), v[order]
    if not x[0] - 1e-12 <= math.log(at) <= x[-1] + 1e-12:
        return None
    return round(float(np.interp(math.log(at), x, y)), 12)


class Matched(NamedTuple):
    """Two lineages compared at one density: ``a`` and ``b`` (:class:`SeedStats` over the
    seeds of each lineage's value interpolated there), ``diff`` (:func:`paired_stats` of
    ``a - b`` over the seeds both hold), ``density``."""

    density: float
    a: Optional[SeedStats]
    b: Optional[SeedStats]
    diff: Optional[SeedStats]


def _per_seed(rows, density_key, value_key, seed_key) -> dict:
    by_seed = defaultdict(list)
    for r in rows:
        if r.get(value_key) is not None:
            by_seed[r[seed_key]].append((float(r[density_key]), float(r[value_key])))
    return by_seed


def matched_density(rows_a: Sequence[dict], rows_b: Sequence[dict], densities: Optional[Sequence[float]] = None, *,
                    density_key: str = "density", value_key: str = "test_accuracy",
                    seed_key: str = "seed") -> list[Matched]:
    """Two lineages (methods) compared at matched density, paired by seed.

    Pruning methods that remove the same fraction per iteration do not keep the same
    fraction of the weights (structured rounding, layers left out), so "iteration i of A
    against iteration i of B" compares unequal densities. Here each seed's accuracy
    curve of each lineage is interpolated linearly in log density
    (:func:`interpolate_log_density`) at each of ``densities``, and the per-seed
    differences ``a - b`` get :func:`paired_stats` (mean, sd, 95% t-interval).

    Args:
      rows_a, rows_b: one row per (level, seed) of each lineage: ``seed``, ``density``
        (a fraction) and the value (``value_key``, e.g. ``test_accuracy``).
      densities: where to compare; default: lineage A's densities (the mean over seeds at
        each of its levels) that lie within lineage B's range. A density outside a seed's
        range gives no value for that seed (``None`` stats when no seed has one).

    Returns:
      One :class:`Matched` per density, in the order given (default: decreasing).

    Example (B keeps more weights per iteration: at iteration 1 it is above A, 0.96 at
    70% against 0.95 at 50%, but at A's 50% B's curve is below A):
        >>> a = [{"seed": s, "density": d, "test_accuracy": v + 0.01 * s}
        ...      for s in range(3) for d, v in [(1.0, 0.98), (0.5, 0.95), (0.25, 0.90)]]
        >>> b = [{"seed": s, "density": d, "test_accuracy": v + 0.01 * s}
        ...      for s in range(3) for d, v in [(1.0, 0.98), (0.7, 0.96), (0.49, 0.94)]]
        >>> m = matched_density(a, b)
        >>> [round(x.density, 2) for x in m]          # A's densities within B's range
        [1.0, 0.5]
        >>> round(m[1].b.mean, 4), round(m[1].diff.mean, 4), m[1].diff.n   # B at 50%, A - B
        (0.9511, 0.0089, 3)
    """
    a_seeds = _per_seed(rows_a, density_key, value_key, seed_key)
    b_seeds = _per_seed(rows_b, density_key, value_key, seed_key)
    if densities is None:
        by_level = defaultdict(list)
        for pts in a_seeds.values():
            for i, (d, _) in enumerate(sorted(pts, reverse=True)):
                by_level[i].append(d)
        b_all = [d for pts in b_seeds.values() for d, _ in pts]
        lo, hi = (min(b_all), max(b_all)) if b_all else (1.0, 0.0)
        densities = sorted({float(np.mean(ds)) for ds in by_level.values()
                            if lo * (1 - 1e-9) <= float(np.mean(ds)) <= hi * (1 + 1e-9)}, reverse=True)

    def at(curves, density):
        out = {}
        for seed, pts in curves.items():
            v = interpolate_log_density([d for d, _ in pts], [x for _, x in pts], density)
            if v is not None:
                out[seed] = v
        return out

    result = []
    for density in densities:
        va, vb = at(a_seeds, density), at(b_seeds, density)
        result.append(Matched(float(density), seed_stats(list(va.values())), seed_stats(list(vb.values())),
                              paired_stats(va, vb)))
    return result


def summarize(rows: Sequence[dict]) -> dict:
    """``{(kind, level): {"density", "accuracy", "loss", "early_stop", "early_stop_accuracy",
    "seeds"}}``, each a :class:`SeedStats` over seeds (``None`` where missing). Accuracy and
    loss are the final test ones; early stop is the iteration of minimum validation loss.

    Example (``rows``: ``run.rows()`` of :func:`jaxticket.imp`, or a run's results.json):
        >>> rows = [{"kind": "imp", "level": 1, "seed": s, "density": 0.8, "final_test_accuracy": a,
        ...          "early_stop_step": 300 + 100 * s} for s, a in enumerate([0.97, 0.98])]
        >>> stats = summarize(rows)[("imp", 1)]
        >>> stats["accuracy"].format(100), stats["early_stop"].mean, stats["seeds"]
        ('97.50 ± 0.71', 350.0, 2)
        >>> print(format_table(summarize(rows)))
        | level | weights % | imp acc % | imp stop |
        |---|---|---|---|
        | 1 | 80.00 | 97.50 ± 0.71 | 350 ± 71 |
    """
    groups = defaultdict(list)
    for row in rows:
        groups[(row["kind"], int(row["level"]))].append(row)
    return {key: {"density": seed_stats([r["density"] for r in rs]),
                  "accuracy": seed_stats([r["final_test_accuracy"] for r in rs]),
                  "loss": seed_stats([r.get("final_test_loss") for r in rs]),
                  "early_stop": seed_stats([r["early_stop_step"] for r in rs]),
                  "early_stop_accuracy": seed_stats([r.get("early_stop_test_accuracy") for r in rs]),
                  "seeds": len(rs)}
            for key, rs in groups.items()}


def _kinds(summary: dict) -> list[str]:
    present = {k for k, _ in summary}
    order = [rundir_lib.IMP_KIND, "rewind", "finetune", "reinit", "random_mask"]
    return [k for k in order if k in present] + sorted(present - set(order))


def _fmt(stats: Optional[SeedStats], scale: float = 1.0, digits: int = 2) -> str:
    return "-" if stats is None else stats.format(scale, digits)


def format_table(summary: dict) -> str:
    """A markdown table: one row per level, accuracy and early stop per kind side by side."""
    kinds = _kinds(summary)
    levels = sorted({level for _, level in summary})
    # a task without an accuracy metric (regression) is reported by its test loss
    quantity, label, scale = (("accuracy", "acc %", 100) if any(s["accuracy"] is not None for s in summary.values())
                              else ("loss", "test loss", 1))
    header = ["level", "weights %"]
    for kind in kinds:
        header += [f"{kind} {label}", f"{kind} stop"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for level in levels:
        ref = next(summary[(k, level)] for k in kinds if (k, level) in summary)
        cells = [str(level), f"{ref['density'].mean * 100:.2f}"]
        for kind in kinds:
            s = summary.get((kind, level))
            cells += ["", ""] if s is None else [_fmt(s[quantity], scale, 2 if scale == 100 else 4),
                                                 _fmt(s["early_stop"], 1, 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot_early_stop(summary: dict, path: pathlib.Path) -> Optional[pathlib.Path]:
    from jaxticket import plots

    series = {}
    for kind in _kinds(summary):
        pts = sorted(((s["density"].mean, s["early_stop"]) for (k, _), s in summary.items()
                      if k == kind and s["early_stop"] is not None), reverse=True)
        if pts:
            series[kind] = pts
    if not series:
        return None
    return pathlib.Path(plots.plot_series_vs_density(
        {k: ([d for d, _ in pts], [s.mean for _, s in pts], [s.std for _, s in pts]) for k, pts in series.items()},
        path, ylabel="early-stop iteration", n={k: [s.n for _, s in pts] for k, pts in series.items()}))


def write_report(run_dir) -> tuple[str, list[pathlib.Path]]:
    """Writes ``report.md`` and the PNGs into ``run_dir``; returns (table, paths written).

    The report names the run by its directory name only (no machine paths)."""
    from jaxticket import plots

    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run directory {str(run_dir)!r}")
    run = rundir_lib.RunDir(run_dir)
    for kind in run.kinds():  # the numbers reported are the numbers written, or one line says which are not
        for level in run.finished(kind):
            run.check_level(level, kind)
    rows = run.rows()
    if not rows:
        raise ValueError(f"{run_dir} holds no finished levels yet (run `jaxticket imp` first)")
    summary = summarize(rows)
    seeds = max(s["seeds"] for s in summary.values())
    table = format_table(summary)
    text = (f"# jaxticket report: {run_dir.resolve().name}\n\n{table}\n\n"
            f"acc / test loss: final test accuracy (or loss, for a task without accuracy), mean ± std "
            f"over {seeds} seed(s); stop: the iteration of "
            "minimum validation loss (Frankle & Carbin's early-stopping criterion), '-' without "
            "a validation set. weights %: density of the prunable weights.\n")
    rundir_lib.write_atomic(run_dir / REPORT_FILE, text)
    paths = [run_dir / REPORT_FILE]
    if any(r.get("final_test_accuracy") is not None for r in rows):  # none for a regression task
        paths.append(pathlib.Path(plots.plot_density_accuracy(
            rows, run_dir / ACCURACY_PLOT, method_key="kind", accuracy_key="final_test_accuracy",
            title=f"{run_dir.resolve().name}: test accuracy")))
    early = _plot_early_stop(summary, run_dir / EARLY_STOP_PLOT)
    if early is not None:
        paths.append(early)
    return table, paths


def format_instability_table(rows: Sequence[dict]) -> str:
    """Instability rows as a fixed-width table (percentage points; a ``seed`` column when
    the rows come from several seeds). A barrier is the mean over the pairs of copies,
    ``± std`` over the pairs when there are several (two copies make one pair: no spread).

    Example:
        >>> row = {"level": 1, "density": 0.5, "k": 10, "test_barrier": 0.0123, "test_barrier_std": 0.0,
        ...        "train_barrier": 0.02, "train_barrier_std": 0.0, "stable_test": True, "test_barriers": [0.0123],
        ...        "train_barriers": [0.02]}
        >>> print(format_instability_table([row]).splitlines()[-1])
            1    50.00%       10    1.23            2.00            yes
    """
    seeded = any(r.get("seed", 0) for r in rows)
    header = (f"{'level':>5}  {'density':>8}  {'k':>7}  " + (f"{'seed':>4}  " if seeded else "")
              + f"{'test barrier':>13}  {'train barrier':>14}  {'stable':>6}")
    lines = [header, "-" * len(header)]

    def cell(r, split, width):
        spread = len(r.get(f"{split}_barriers") or [None, None]) > 1
        mean = f"{100 * r[f'{split}_barrier']:>{width - 7}.2f}"
        return (f"{mean} ± {100 * r[f'{split}_barrier_std']:<4.2f}" if spread else f"{mean:<{width}}")

    for r in sorted(rows, key=lambda r: (r["level"], r["k"], r.get("seed", 0))):
        lines.append(f"{r['level']:>5}  {100 * r['density']:>7.2f}%  {r['k']:>7}  "
                     + (f"{r.get('seed', 0):>4}  " if seeded else "")
                     + f"{cell(r, 'test', 13)}  {cell(r, 'train', 14)}  {'yes' if r['stable_test'] else 'no':>6}")
    return "\n".join(lines)
