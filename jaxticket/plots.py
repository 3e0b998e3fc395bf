"""Matplotlib figures of the papers (Agg, no display needed).

Every function draws on its own ``matplotlib.figure.Figure`` with the Agg canvas (no
pyplot, no global backend change, safe in notebooks and threads), writes a PNG
atomically (a temporary file in the same folder, then ``os.replace``), creates missing
parent folders and returns the path.

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
    "figure",
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
) -> str:
    """Instability (error barrier) vs the step ``k`` the two copies branch from.

    Frankle et al.'s central figure. The x axis is symlog (linear below 1), so ``k = 0``
    sits at the left edge of a log-like axis. A dashed line marks the stability
    ``threshold`` (2 percentage points; ``None`` to omit).

    Args:
      ks: ``[n_k]`` steps (or epochs; set ``xlabel``).
      barriers: ``{label: (mean [n_k], std [n_k])}`` (fractions), e.g. test/train.
      ylabel: the y axis label (default "instability", with "(%)" when ``percent``);
        any other per-k quantity (a distance) plots the same way with its own label.

    Example:
        >>> import os, shutil, tempfile
        >>> m, s = [0.15, 0.08, 0.01, 0.005], [0.02, 0.01, 0.005, 0.002]
        >>> d = tempfile.mkdtemp()
        >>> path = plot_instability_vs_k([0, 100, 500, 2000], {"test": (m, s)},
        ...                              os.path.join(d, "instability.png"))
        >>> os.path.isfile(path)
        True
        >>> shutil.rmtree(d)
    """
    fig = figure()
    ax = fig.add_subplot()
    x = _np(ks)
    scale = 100.0 if percent else 1.0
    for label, (mean, std) in barriers.items():
        m, s = _np(mean), _np(std)
        if m.shape != x.shape or s.shape != x.shape:
            raise ValueError(
                f"plot_instability_vs_k: {label!r} has mean {m.shape}, std {s.shape}; ks {x.shape}."
            )
        ax.errorbar(x, scale * m, yerr=scale * s, marker="o", capsize=3, label=str(label))
    ax.set_xscale("symlog", linthresh=1.0)
    if threshold is not None:
        ax.axhline(scale * threshold, color="gray", linestyle="--", linewidth=1, label="stability threshold")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel or ("instability (%)" if percent else "instability"))
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _as_values(v) -> np.ndarray:
    return np.atleast_1d(_np(v)).ravel()


def plot_density_accuracy(
    rows: Iterable[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    method_key: str = "method",
    density_key: str = "density",
    accuracy_key: str = "accuracy",
    percent: bool = True,
) -> str:
    """Accuracy vs fraction of weights remaining, one line per method/baseline.

    The x axis is "percent of weights remaining", log scale, reversed (dense on the left,
    sparser to the right) as in the lottery-ticket papers. Error bars are the standard
    deviation over seeds; the line is the mean.

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
    fig = figure((5.5, 3.8))
    ax = fig.add_subplot()
    scale = 100.0 if percent else 1.0
    for method, by_density in pooled.items():
        d = np.array(sorted(by_density, reverse=True))
        vals = [np.asarray(by_density[x]) for x in d]
        mean = np.array([v.mean() for v in vals])
        std = np.array([v.std() for v in vals])
        ax.errorbar(100.0 * d, scale * mean, yerr=scale * std, marker="o", markersize=3, capsize=2, label=method)
    ax.set_xscale("log")
    all_d = sorted({100.0 * x for by_density in pooled.values() for x in by_density}, reverse=True)
    if all_d:
        ticks = all_d[:: max(1, int(np.ceil(len(all_d) / 10)))]
        ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
        from matplotlib.ticker import NullFormatter

        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.invert_xaxis()
    ax.set_xlabel("percent of weights remaining")
    ax.set_ylabel("accuracy (%)" if percent else "accuracy")
    if title:
        ax.set_title(title)
    if pooled:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, path)


def plot_series_vs_density(
    series: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    *,
    ylabel: str,
    title: str | None = None,
) -> str:
    """Any quantity vs percent of weights remaining (log x, reversed), one line per label.

    Args:
      series: ``{label: (densities, means, stds)}`` (densities as fractions).

    Example:
        >>> import os, shutil, tempfile
        >>> d = tempfile.mkdtemp()
        >>> path = plot_series_vs_density(
        ...     {"imp": ([1, .5, .25], [2500, 2100, 1900], [200, 150, 90])},
        ...     os.path.join(d, "early_stop.png"), ylabel="early-stop iteration")
        >>> os.path.isfile(path)
        True
        >>> shutil.rmtree(d)
    """
    from matplotlib import ticker

    many = len(series) > 6  # then the legend goes beside the axes and line styles vary
    fig = figure((7.5 if many else 5.5, 3.8))
    ax = fig.add_subplot()
    percents = []
    for i, (label, (d, m, sd)) in enumerate(series.items()):
        percents += list(100.0 * _np(d))
        ax.errorbar(100.0 * _np(d), _np(m), yerr=_np(sd), marker="o", markersize=3, capsize=2, label=str(label),
                    linestyle=("-", "--", ":", "-.")[(i // 10) % 4])
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
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if many:
        ax.legend(fontsize="x-small", bbox_to_anchor=(1.02, 1.0), loc="upper left", borderaxespad=0.0)
    else:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3, which="both")
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
