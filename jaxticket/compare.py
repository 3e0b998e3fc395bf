"""Comparing subnetworks found by different pruning methods or reset modes.

After Paganini & Forde (2020): given IMP run directories made with different pruners
(L1 unstructured, Ln-structured, random, hybrid, fc-only, ...) or reset modes (rewind,
fine-tune), :func:`compare_runs` writes, at a chosen level,

* ``masks_jaccard.png`` / ``.json``: Jaccard similarity of the masks (overall and per layer),
* ``agreement.png`` / ``.json``: how many test examples two subnetworks label alike,
* ``ensembles.json`` and a table: accuracy of averaged softmax and of majority vote for
  every method alone, all together, and each leave-one-out subset,
* ``trajectories_<run>.png``: the surviving weights of one layer across levels, and how
  much they move from level to level,
* ``connectivity.json``: per layer, the fraction of input units left without any
  outgoing weight and of output units without inputs (structure that unstructured
  pruning with rewinding can produce),

all from the files each run directory already holds (masks, final weights, test
logits); nothing is retrained. ``summary.md`` gathers the tables.

Example::

    report = compare_runs(["runs/l1", "runs/l2_structured", "runs/hybrid", "runs/fc_only"],
                          out_dir="runs/compare", level=5)
"""

from __future__ import annotations

import json
import pathlib
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxticket import analysis, lottery, masks as masks_lib, rundir as rundir_lib

__all__ = ["compare_runs", "format_summary", "load_run", "test_labels_of"]


def load_run(run_dir, level: int, seed: int = 0) -> dict:
    """One IMP run's identity, and its mask / final params / test logits at ``level``
    for replica ``seed``, read from the run directory's files (no model is built)."""
    run = rundir_lib.RunDir(run_dir)
    identity = run.identity()
    if identity is None:
        raise FileNotFoundError(f"{run_dir} is not an IMP run directory (no {rundir_lib.CONFIG_FILE}).")
    finished = run.finished()
    if level not in finished:
        raise ValueError(f"{run_dir} has no finished level {level}; finished levels: {finished}.")
    run.check_level(level)  # every file as it was written, or one line naming the first that is not
    mask = run.load_mask(level)
    seeds = int(np.shape(mask.leaves()[0])[0])
    if not 0 <= seed < seeds:
        raise ValueError(f"{run_dir} has seeds 0..{seeds - 1}, not {seed}.")
    pick = lambda tree: jax.tree.map(lambda x: x[seed], tree)  # noqa: E731
    mask = pick(mask)
    return {
        "identity": identity.get("config", {}),
        "mask": mask,
        "params": pick(run.load_params(level)),
        "logits": run.load_logits(level)[seed],
        "density": float(masks_lib.density(mask)),
    }


def _finished_levels(run_dir) -> set[int]:
    return set(rundir_lib.RunDir(run_dir).finished())


def _model_and_data(identity: dict):
    """What identifies a run's model and data, for refusing to compare unlike runs."""
    if "config" in identity:  # made from a LotteryConfig
        tc = identity["config"]["train"]
        return (tc["model"], json.dumps(identity.get("data", {}).get("dataset"), sort_keys=True))
    task = identity.get("task", {})
    return (task.get("model"), json.dumps(identity.get("data"), sort_keys=True))


def test_labels_of(run_dir, data_dir=None, manual_dir=None) -> np.ndarray:
    """The test labels of a run: ``test_labels.npy`` in its directory, or (older runs made
    from a config) its dataset loaded again."""
    run = rundir_lib.RunDir(run_dir)
    labels = run.load_test_labels()
    if labels is not None:
        return labels
    identity = run.identity() or {}
    if "config" in identity.get("config", {}):
        config = lottery.LotteryConfig.from_dict(identity["config"]["config"])
        return np.asarray(lottery.load_data(config, data_dir, manual_dir).test.labels)
    raise ValueError(f"{run_dir} holds no test labels; pass test_labels=")


def _ensemble_subsets(names: Sequence[str]) -> dict[str, list[str]]:
    subsets = {"all": list(names)}
    for n in names:
        subsets[n] = [n]
    if len(names) > 2:
        for n in names:
            subsets[f"all but {n}"] = [m for m in names if m != n]
    return subsets


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def compare_runs(run_dirs: Sequence, *, out_dir, level: Optional[int] = None, names: Optional[Sequence[str]] = None,
                 seed: int = 0, layer: Optional[str] = None, test_labels=None, data_dir=None,
                 manual_dir=None) -> dict:
    """Similarity, agreement, ensembles, trajectories and connectivity of several runs.

    Args:
      run_dirs: IMP run directories (same model and dataset).
      out_dir: where the files go.
      level: the level compared (default: the highest level every run finished).
      names: labels of the runs (default: directory names).
      seed: which replica of each run.
      layer: leaf path for the weight trajectories (default: the first prunable leaf).
      test_labels: ``int[N]`` test labels (default: loaded from the runs' dataset);
        ``[N, 1]`` 0/1 targets for single-logit (sigmoid) binary classifiers, whose
        predictions are ``logit > 0`` (:func:`jaxticket.analysis.predicted_labels`).

    Returns:
      dict with ``level``, ``names``, ``densities``, ``jaccard`` ``[n, n]``,
      ``agreement`` (counts and fraction ``[n, n]``), ``ensembles`` rows,
      ``trajectory_movement`` per run and ``connectivity`` per run; ``summary.md`` and
      the PNG/JSON files are in ``out_dir``.

    Example (``jaxticket compare runs/l1 runs/l2_structured --out cmp``)::

        out = compare_runs(["runs/l1", "runs/l2_structured"], "cmp", level=5)
        out["jaccard"][0][1]                  # mask overlap of the two subnetworks
        out["agreement_fraction"][0][1]       # share of test examples both predict alike
    """
    from jaxticket import plots

    if len(run_dirs) < 2:
        raise ValueError("compare needs at least two run directories.")
    run_dirs = [pathlib.Path(d) for d in run_dirs]
    names = list(names) if names is not None else [d.name for d in run_dirs]
    if len(names) != len(run_dirs) or len(set(names)) != len(names):
        raise ValueError(f"names must be unique, one per run; got {names}.")
    for d in run_dirs:
        if not (d / rundir_lib.CONFIG_FILE).exists():
            raise FileNotFoundError(f"{d} is not an IMP run directory (no {rundir_lib.CONFIG_FILE}).")
    common = set.intersection(*(_finished_levels(d) for d in run_dirs))
    if level is None:
        if not common:
            raise ValueError("the runs have no finished level in common.")
        level = max(common)
    runs = [load_run(d, level, seed) for d in run_dirs]
    shapes = {_model_and_data(r["identity"]) for r in runs}
    if len(shapes) != 1:
        raise ValueError(f"the runs differ in model/dataset: {sorted(shapes)}; compare runs of one model.")
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # mask similarity
    mask_list = [r["mask"] for r in runs]
    jacc = np.asarray(analysis.similarity_matrix(mask_list, "jaccard"))
    per_layer = {f"{names[i]} vs {names[j]}": {k: float(v) for k, v in
                                               analysis.jaccard(mask_list[i], mask_list[j], per_layer=True).items()}
                 for i in range(len(runs)) for j in range(i + 1, len(runs))}
    plots.plot_heatmap(jacc, names, out / "masks_jaccard.png", title=f"Mask Jaccard similarity, level {level}")

    # prediction agreement and ensembles
    logits = np.stack([r["logits"] for r in runs])
    agree = analysis.agreement(jnp.asarray(logits))
    plots.plot_heatmap(np.asarray(agree.fraction), names, out / "agreement.png",
                       title=f"Test prediction agreement, level {level}")
    if test_labels is None:
        test_labels = test_labels_of(run_dirs[0], data_dir, manual_dir)
    test_labels = np.asarray(test_labels)
    if test_labels.shape[0] != logits.shape[1]:
        raise ValueError(f"{test_labels.shape[0]} test labels for {logits.shape[1]} logged test predictions.")
    # binary targets [N, 1] of a single-logit (sigmoid) model compare as [N]
    flat_labels = test_labels.reshape(test_labels.shape[0]) if test_labels.shape[1:] == (1,) else test_labels
    ensembles = analysis.ensemble_table(jnp.asarray(logits), jnp.asarray(test_labels), names,
                                        _ensemble_subsets(names))

    # trajectories across levels and connectivity
    layer = layer or next(p for p, f in zip(mask_list[0].paths(), mask_list[0].prunable) if f)
    movement, connectivity = {}, {}
    for name, run_dir, run in zip(names, run_dirs, runs):
        loaded = [load_run(run_dir, l, seed) for l in range(level + 1)]
        traj = analysis.weight_trajectories([l["params"] for l in loaded], [l["mask"] for l in loaded], layer)
        move = analysis.trajectory_movement(traj)
        movement[name] = {"mean_abs_change": np.asarray(move.mean_abs_change).tolist(),
                          "relative_change": np.asarray(move.relative_change).tolist()}
        plots.plot_trajectories(traj, out / f"trajectories_{name}.png")
        connectivity[name] = analysis.connectivity_summary(run["mask"])

    report = {
        "level": level, "names": names, "runs": [str(d) for d in run_dirs],
        "densities": [r["density"] for r in runs],
        "test_accuracy": [float(np.mean(np.asarray(analysis.predicted_labels(r["logits"])) == flat_labels))
                          for r in runs],
        "jaccard": jacc.tolist(), "jaccard_per_layer": per_layer,
        "agreement_counts": np.asarray(agree.counts).tolist(),
        "agreement_fraction": np.asarray(agree.fraction).tolist(),
        "ensembles": ensembles, "trajectory_layer": layer, "trajectory_movement": movement,
        "connectivity": connectivity,
    }
    for name, keys in (("masks_jaccard", ("jaccard", "jaccard_per_layer")),
                       ("agreement", ("agreement_counts", "agreement_fraction")),
                       ("ensembles", ("ensembles",)), ("connectivity", ("connectivity",))):
        rundir_lib.write_atomic(out / f"{name}.json",
                                   json.dumps({"level": level, "names": names, **{k: report[k] for k in keys}},
                                              indent=2, default=float) + "\n")
    rundir_lib.write_atomic(out / "summary.md", format_summary(report) + "\n")
    return report


def format_summary(report: dict) -> str:
    """The comparison as Markdown tables."""
    names = report["names"]
    parts = [f"# Subnetworks compared at level {report['level']}", ""]
    parts.append(_markdown_table(
        ["run", "density", "test accuracy"],
        [[n, f"{100 * d:.2f}%", f"{100 * a:.2f}%"] for n, d, a in
         zip(names, report["densities"], report["test_accuracy"])]))
    parts += ["", "## Mask Jaccard similarity", ""]
    parts.append(_markdown_table([""] + names, [[n] + [f"{v:.3f}" for v in row]
                                               for n, row in zip(names, report["jaccard"])]))
    parts += ["", "## Test prediction agreement (fraction of examples)", ""]
    parts.append(_markdown_table([""] + names, [[n] + [f"{v:.4f}" for v in row]
                                               for n, row in zip(names, report["agreement_fraction"])]))
    parts += ["", "## Ensembles", ""]
    parts.append(_markdown_table(
        ["subset", "mean softmax", "majority vote", "best member"],
        [[r["subset"], f"{100 * r['mean_softmax']:.2f}%", f"{100 * r['vote']:.2f}%",
          f"{100 * r['best_single']:.2f}% ({r['best_member']})"] for r in report["ensembles"]]))
    parts += ["", f"## Movement of the surviving weights of `{report['trajectory_layer']}` per level", ""]
    parts.append(_markdown_table(
        ["run", "mean |change| per level", "relative change per level"],
        [[n, ", ".join(f"{v:.4f}" for v in m["mean_abs_change"]),
          ", ".join(f"{v:.3f}" for v in m["relative_change"])] for n, m in report["trajectory_movement"].items()]))
    return "\n".join(parts)
