"""Matplotlib figures of the papers (Agg, no display needed).

Every function draws on its own ``matplotlib.figure.Figure`` with the Agg canvas (no
pyplot, no global backend change, safe in notebooks and threads), writes a PNG
atomically (a temporary file in the same folder, then ``os.replace``), creates missing
parent folders and returns the path.

One convention for multi-seed plots (the tables' ``mean ± std``): the line is the mean
over seeds, the error bars the sample standard deviation (``ddof=1``, as
:func:`jaxticket.report.seed_stats`), ``bars="ci95"`` the 95% t-interval of the mean
instead; the figure says which, and over how many seeds (:func:`bar_note`). A point
with one seed has a hollow marker and no bar; a series of single seeds is dashed and
labelled "(1 seed)". Series get
distinct colour-marker pairs (:func:`series_style`), accuracies are in percent.

Example:
    >>> import os, shutil, tempfile
    >>> import numpy as np
    >>> from jaxticket import plots, stability
    >>> a = stability.alphas()
    >>> errs0 = 0.1 + 0.2 * np.sin(np.pi * np.asarray(a))     # a barrier of about 0.2
    >>> errs500 = np.full(30, 0.1)                            # stable
    >>> d = tempfile.mkdtemp()
    >>> path = plots.plot_error_curve(a, {"k=0 test": errs0, "k=500 test": errs500},
    ...                               os.path.join(d, "runs", "curve.png"))
    >>> with open(path, "rb") as f:                           # the PNG signature
    ...     f.read(4)[1:]
    b'PNG'
    >>> shutil.rmtree(d)
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "BARS",
    "bar_note",
    "figure",
    "point_stats",
    "series_style",
    "plot_density_accuracy",
    "plot_error_curve",
    "plot_heatmap",
    "plot_instability_vs_k",
    "plot_series_vs_density",
    "plot_trajectories",
    "save_figure",
]


def figure(figsize=(5.0, 3.6)):
    """A matplotlib ``Figure`` on the Agg canvas (no pyplot), for :func:`save_figure`.

    matplotlib is imported here, not with the module: it is a third of ``import jaxticket``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=120)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike) -> str:
    """Writes ``fig`` as a PNG to ``path`` atomically (:func:`jaxticket.rundir.write_atomic`)."""
    from jaxticket.rundir import write_atomic

    write_atomic(path, lambda f: fig.savefig(f, format="png", bbox_inches="tight"))
    return os.fspath(path)


def _np(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)

#: What the error bars of a multi-seed plot show: ``"sd"`` (sample standard deviation,
#: ddof=1), ``"ci95"`` (the 95% t-interval of the mean) or ``"none"``.
BARS = ("sd", "ci95", "none")

# twenty distinguishable colours: tab10, then the light halves of tab20
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
            "#dbdb8d", "#9edae5")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h")


def series_style(i: int) -> dict:
    """Matplotlib ``color`` and ``marker`` of the ``i``-th series: no two of the first 20
    share a colour, and the marker changes with the colour (so grey-scale prints and
    colour-blind readers can still tell the lines apart); beyond 20 the pairs stay unique.

    Example:
        >>> styles = [series_style(i) for i in range(15)]
        >>> len({s["color"] for s in styles}), len({(s["color"], s["marker"]) for s in styles})
        (15, 15)
    """
    return {"color": _COLOURS[i % len(_COLOURS)],
            "marker": _MARKERS[(i + i // len(_COLOURS)) % len(_MARKERS)]}


def point_stats(values, bars: str = "sd") -> tuple[float, float, int]:
    """``(mean, half-width of the bar, n)`` of one point's values over seeds (NaN dropped):
    ``bars="sd"`` the sample standard deviation (ddof=1), ``"ci95"`` the half-width of
    the 95% t-interval of the mean, ``"none"`` 0. One value: bar 0.

    Example:
        >>> m, e, n = point_stats([0.97, 0.98, 0.99])
        >>> round(m, 4), round(e, 4), n
        (0.98, 0.01, 3)
        >>> round(point_stats([0.97, 0.98, 0.99], "ci95")[1], 4)    # t(0.975, 2) * sd / sqrt(3)
        0.0248
    """
    if bars not in BARS:
        raise ValueError(f"bars={bars!r}: choose one of {BARS}")
    x = _np(values).ravel()
    x = x[~np.isnan(x)]
    if x.size == 0:
        return float("nan"), 0.0, 0
    if x.size == 1 or bars == "none":
        return float(x.mean()), 0.0, int(x.size)
    sd = float(x.std(ddof=1))
    if bars == "sd":
        return float(x.mean()), sd, int(x.size)
    from scipy import stats

    return float(x.mean()), float(stats.t.ppf(0.975, x.size - 1) * sd / np.sqrt(x.size)), int(x.size)


def bar_note(bars: str, ns) -> str:
    """The caption of a multi-seed plot: what its lines and bars are, and over how many
    seeds (``ns``: the seed counts of its points; a range when they differ).

    Example:
        >>> bar_note("sd", [5, 5, 5])
        'mean over n = 5 seeds; bars: ±1 SD (ddof=1)'
        >>> bar_note("ci95", [5, 1])
        'mean over n = 1-5 seeds (n = 1: hollow marker, no bar); bars: 95% t-interval of the mean'
    """
    if bars not in BARS:
        raise ValueError(f"bars={bars!r}: choose one of {BARS}")
    ns = sorted({int(n) for n in np.atleast_1d(ns) if int(n) > 0})
    if not ns:
        return ""
    count = f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}-{ns[-1]}"
    single = " (n = 1: hollow marker, no bar)" if ns[0] == 1 and len(ns) > 1 else ""
    what = {"sd": "bars: ±1 SD (ddof=1)", "ci95": "bars: 95% t-interval of the mean", "none": "no bars"}[bars]
    if ns == [1]:
        return "one seed each (no bars)"
    return f"mean over {count} seed{'s' if ns[-1] > 1 else ''}{single}; {what}"


def _caption(fig, text: str | None) -> None:
    """``text`` under the first axes, below its tick labels and x label."""
    if text and fig.axes:
        fig.axes[0].annotate(text, xy=(0, 0), xycoords="axes fraction", xytext=(-30, -42),
                             textcoords="offset points", fontsize=7, ha="left", va="top", color="0.25",
                             annotation_clip=False)


def _errorbar(ax, i: int, x, y, err, n, label: str, **kw):
    """One series: colour and marker from :func:`series_style`; a point with one seed has a
    hollow marker and no bar; a series whose points all have one seed is dashed and
    labelled '(1 seed)'."""
    style = {**series_style(i), **kw}
    if n is not None:
        n = np.broadcast_to(np.asarray(n), np.shape(x))
        if np.max(n) == 1:
            style["linestyle"] = "--"
            label = f"{label} (1 seed)"
        if err is not None:
            err = np.where(n <= 1, 0.0, _np(err))
    out = ax.errorbar(x, y, yerr=err, markersize=4, capsize=2, label=label, **style)
    if n is not None and np.any(n == 1):
        one = n == 1
        ax.plot(_np(x)[one], _np(y)[one], linestyle="none", marker=style["marker"], markersize=4,
                markerfacecolor="white", markeredgecolor=style["color"])
    return out

def plot_error_curve(
    alphas: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    percent: bool = True,
) -> str:
    """Error along the interpolation path, one line per label (e.g. train/test, per k).

    Args:
      alphas: ``[num_alphas]`` interpolation coefficients (x axis).
      curves: ``{label: errors [num_alphas]}`` (errors as fractions).
      percent: show errors in percent.

    Example: ``plot_error_curve(alphas(), {"test": errs}, "curve.png")``.
    """
    fig = figure()
    ax = fig.add_subplot()
    x = _np(alphas)
    scale = 100.0 if percent else 1.0
    for label, errs in curves.items():
        e = _np(errs)
        if e.shape != x.shape:
            raise ValueError(f"plot_error_curve: curve {label!r} has shape {e.shape}, alphas {x.shape}.")
        ax.plot(x, scale * e, marker=".", label=str(label))
    ax.set_xlabel("interpolation $\\alpha$")
    ax.set_ylabel("error (%)" if percent else "error")
    ax.set_xlim(0, 1)
    if title:
        ax.set_title(title)
    if curves:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _seed_counts(n, label, size: int):
    """``n`` (None, an int, or a ``{label: int | [size]}`` mapping) as ``[size]`` ints or None."""
    if n is None:
        return None
    v = n.get(label) if isinstance(n, Mapping) else n
    if v is None:
        return None
    return np.broadcast_to(np.asarray(v, int), (size,))


def plot_instability_vs_k(
    ks: Sequence[float],
    barriers: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    xlabel: str = "rewind step k",
    percent: bool = True,
    threshold: float | None = 0.02,
    ylabel: str | None = None,
    n=None,
    bars: str = "sd",
    note: str | None = None,
) -> str:
    """Instability (error barrier) vs the step ``k`` the two copies branch from.

    Frankle et al.'s central figure. The x axis is symlog (linear below 1), so ``k = 0``
    sits at the left edge of a log-like axis. A dashed line marks the stability
    ``threshold`` (2 percentage points; ``None`` to omit).

    Args:
      ks: ``[n_k]`` steps (or epochs; set ``xlabel``).
      barriers: ``{label: (mean [n_k], std [n_k])}`` (fractions), e.g. test/train; NaN
        where a k has no value (a gap in the line).
      ylabel: the y axis label (default "instability", with "(%)" when ``percent``);
        any other per-k quantity (a distance) plots the same way with its own label.
      n: the seeds behind each point: an int, or ``{label: int | [n_k]}``; with it the
        figure carries :func:`bar_note` (``bars`` says what the given stds are) and a
        label whose points all have one seed is drawn dashed, "(1 seed)".
      note: a caption of your own instead (e.g. over copies rather than seeds).

    Example:
        >>> import os, shutil, tempfile
        >>> m, s = [0.15, 0.08, 0.01, 0.005], [0.02, 0.01, 0.005, 0.002]
        >>> d = tempfile.mkdtemp()
        >>> path = plot_instability_vs_k([0, 100, 500, 2000], {"test": (m, s)},
        ...                              os.path.join(d, "instability.png"), n=5)
        >>> os.path.isfile(path)
        True
        >>> shutil.rmtree(d)
    """
    fig = figure()
    ax = fig.add_subplot()
    x = _np(ks)
    scale = 100.0 if percent else 1.0
    counts = []
    for i, (label, (mean, std)) in enumerate(barriers.items()):
        m, s = _np(mean), _np(std)
        if m.shape != x.shape or s.shape != x.shape:
            raise ValueError(
                f"plot_instability_vs_k: {label!r} has mean {m.shape}, std {s.shape}; ks {x.shape}."
            )
        c = _seed_counts(n, label, x.size)
        if c is not None:
            counts += [int(v) for v, mm in zip(c, m) if not np.isnan(mm)]
        _errorbar(ax, i, x, scale * m, scale * s, c, str(label))
    ax.set_xscale("symlog", linthresh=1.0)
    if threshold is not None:
        ax.axhline(scale * threshold, color="gray", linestyle="--", linewidth=1, label="stability threshold")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel or ("instability (%)" if percent else "instability"))
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    _caption(fig, note if note is not None else (bar_note(bars, counts) if counts else None))
    return save_figure(fig, path)


def _as_values(v) -> np.ndarray:
    return np.atleast_1d(_np(v)).ravel()


def _density_axis(ax, percents) -> None:
    """Log x axis of percent of weights remaining, reversed, with readable ticks."""
    from matplotlib import ticker

    ax.set_xscale("log")
    ax.invert_xaxis()
    if percents:  # readable ticks: 100, 50, 20, 10, 5, ... within the data's range
        lo, hi = min(percents), max(percents)
        ticks = [t * 10.0 ** e for e in range(2, -4, -1) for t in (5, 2, 1) if lo <= t * 10.0 ** e <= hi]
        if len(ticks) >= 2:
            ax.xaxis.set_major_locator(ticker.FixedLocator(ticks))
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("percent of weights remaining")


def _legend(ax, many: bool) -> None:
    if many:
        ax.legend(fontsize="x-small", bbox_to_anchor=(1.02, 1.0), loc="upper left", borderaxespad=0.0)
    else:
        ax.legend(fontsize="small")


def plot_density_accuracy(
    rows: Iterable[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    method_key: str = "method",
    density_key: str = "density",
    accuracy_key: str = "accuracy",
    percent: bool = True,
    bars: str = "sd",
) -> str:
    """Accuracy vs fraction of weights remaining, one line per method/baseline.

    The x axis is "percent of weights remaining", log scale, reversed (dense on the left,
    sparser to the right) as in the lottery-ticket papers. The line is the mean over
    seeds, the bars ``bars`` (:data:`BARS`: the sample SD, ddof=1, by default); the
    caption says which and over how many seeds; a method with one seed per point is
    dashed and labelled "(1 seed)".

    Args:
      rows: mappings with ``method`` (line label), ``density`` (fraction in (0, 1]) and
        ``accuracy`` (a fraction: one value per row/seed, or a sequence over seeds). Rows
        with the same method and density are pooled.

    Example:
        >>> import os, shutil, tempfile
        >>> acc = [[0.98, 0.97], [0.985, 0.98], [0.982, 0.979], [0.97, 0.965]]  # [level][seed]
        >>> rows = [{"method": "imp rewind", "density": 0.8 ** l, "accuracy": acc[l]}
        ...         for l in range(4)]
        >>> d = tempfile.mkdtemp()
        >>> path = plot_density_accuracy(rows, os.path.join(d, "density.png"))
        >>> os.path.isfile(path)
        True
        >>> shutil.rmtree(d)
    """
    if bars not in BARS:
        raise ValueError(f"plot_density_accuracy: bars={bars!r}; choose one of {BARS}")
    pooled: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        try:
            method, density, acc = row[method_key], float(row[density_key]), row[accuracy_key]
        except KeyError as e:
            raise KeyError(
                f"plot_density_accuracy: row {dict(row)} lacks {e}; rows need '{method_key}', "
                f"'{density_key}', '{accuracy_key}'."
            ) from None
        pooled[str(method)][density].extend(_as_values(acc).tolist())
    many = len(pooled) > 6
    fig = figure((7.5 if many else 5.5, 3.8))
    ax = fig.add_subplot()
    scale = 100.0 if percent else 1.0
    counts = []
    for i, (method, by_density) in enumerate(pooled.items()):
        d = np.array(sorted(by_density, reverse=True))
        st = [point_stats(by_density[x], bars) for x in d]
        c = np.array([n for _, _, n in st])
        counts += [int(v) for v in c if v > 0]
        _errorbar(ax, i, 100.0 * d, scale * np.array([m for m, _, _ in st]), scale * np.array([e for _, e, _ in st]),
                  c, method)
    _density_axis(ax, sorted({100.0 * x for by_density in pooled.values() for x in by_density}))
    ax.set_ylabel("accuracy (%)" if percent else "accuracy")
    if title:
        ax.set_title(title)
    if pooled:
        _legend(ax, many)
    ax.grid(alpha=0.3, which="both")
    _caption(fig, bar_note(bars, counts))
    return save_figure(fig, path)


def plot_series_vs_density(
    series: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    *,
    ylabel: str,
    title: str | None = None,
    n=None,
    bars: str = "sd",
    note: str | None = None,
) -> str:
    """Any quantity vs percent of weights remaining (log x, reversed), one line per label.

    Args:
      series: ``{label: (densities, means, stds)}`` (densities as fractions; means and
        stds as they are to be drawn, e.g. already in percent).
      n: the seeds behind each point: an int, or ``{label: int | [points]}``; with it the
        figure carries :func:`bar_note` (``bars`` says what the stds are) and a label
        whose points all have one seed is drawn dashed, "(1 seed)".
      note: a caption of your own instead.

    Example:
        >>> import os, shutil, tempfile
        >>> d = tempfile.mkdtemp()
        >>> path = plot_series_vs_density(
        ...     {"imp": ([1, .5, .25], [2500, 2100, 1900], [200, 150, 90])},
        ...     os.path.join(d, "early_stop.png"), ylabel="early-stop iteration", n=5)
        >>> os.path.isfile(path)
        True
        >>> shutil.rmtree(d)
    """
    many = len(series) > 6  # then the legend goes beside the axes
    fig = figure((7.5 if many else 5.5, 3.8))
    ax = fig.add_subplot()
    percents, counts = [], []
    for i, (label, (d, m, sd)) in enumerate(series.items()):
        x = 100.0 * _np(d)
        percents += list(x)
        c = _seed_counts(n, label, x.size)
        if c is not None:
            counts += [int(v) for v in c]
        _errorbar(ax, i, x, _np(m), _np(sd), c, str(label))
    _density_axis(ax, percents)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    _legend(ax, many)
    ax.grid(alpha=0.3, which="both")
    _caption(fig, note if note is not None else (bar_note(bars, counts) if counts else None))
    return save_figure(fig, path)


def plot_heatmap(
    matrix,
    labels: Sequence[str],
    path: str | os.PathLike,
    title: str | None = None,
    *,
    fmt: str = ".2f",
    cmap: str = "viridis",
    annotate: bool | None = None,
) -> str:
    """Square matrix as a heatmap (mask similarity, prediction agreement, ...).

    Cells carry their values when ``n <= 12`` (or ``annotate=True``).

    Example: ``plot_heatmap(similarity_matrix(masks), names, "jaccard.png", "Jaccard")``.
    """
    m = _np(matrix)
    if m.ndim != 2 or m.shape[0] != len(labels) or m.shape[1] != len(labels):
        raise ValueError(f"plot_heatmap: matrix {m.shape} does not match {len(labels)} labels.")
    n = len(labels)
    size = max(3.5, 0.5 * n + 2.0)
    fig = figure((size + 1.0, size))
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap=cmap)
    fig.colorbar(im, ax=ax)
    ax.set_xticks(range(n), [str(l) for l in labels], rotation=45, ha="right")
    ax.set_yticks(range(n), [str(l) for l in labels])
    if annotate or (annotate is None and n <= 12):
        finite = m[np.isfinite(m)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, format(m[i, j], fmt), ha="center", va="center", fontsize=7,
                        color="black" if m[i, j] > mid else "white")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_trajectories(
    traj,
    path: str | os.PathLike,
    *,
    title: str | None = None,
    level_labels: Sequence[str] | None = None,
    max_lines: int = 200,
    seed: int = 0,
) -> str:
    """Surviving weights' values across pruning levels (one thin line per weight).

    At most ``max_lines`` weights are drawn (a fixed random subset, ``seed``); the
    median absolute value per level is drawn on top.

    Args:
      traj: ``[n_levels, n_surviving]`` from :func:`jaxticket.analysis.weight_trajectories`.

    Example: ``plot_trajectories(weight_trajectories(ps, ms, "fc1/kernel"), "traj.png")``.
    """
    t = _np(traj)
    if t.ndim != 2:
        raise ValueError(f"plot_trajectories: expected [n_levels, n_surviving], got {t.shape}.")
    n_levels, n = t.shape
    if level_labels is not None and len(level_labels) != n_levels:
        raise ValueError(f"plot_trajectories: {len(level_labels)} level labels for {n_levels} levels.")
    cols = np.arange(n)
    if n > max_lines:
        cols = np.sort(np.random.default_rng(seed).choice(n, size=max_lines, replace=False))
    fig = figure()
    ax = fig.add_subplot()
    x = np.arange(n_levels)
    if cols.size:
        ax.plot(x, t[:, cols], color="tab:blue", alpha=0.25, linewidth=0.7)
        ax.plot(x, np.median(np.abs(t), axis=1), color="tab:red", linewidth=2, label="median |w|")
        ax.legend(fontsize="small")
    ax.set_xticks(x, level_labels if level_labels is not None else [str(i) for i in x])
    ax.set_xlabel("pruning level")
    ax.set_ylabel("weight value")
    ax.set_title(title or f"{n} surviving weights" + (f" ({cols.size} shown)" if cols.size < n else ""))
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
