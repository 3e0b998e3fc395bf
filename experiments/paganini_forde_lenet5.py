"""Paganini & Forde (2020), "On iterative neural network pruning, reinitialization, and the
similarity of masks": LeNet-5 on MNIST, nine pruning methods, five seeds.

    python experiments/paganini_forde_lenet5.py --manual-dir ../shared/data/mnist --epochs 1   # this CPU (committed)
    python experiments/paganini_forde_lenet5.py --manual-dir ../shared/data/mnist              # the paper: 30
    python experiments/paganini_forde_lenet5.py --manual-dir ../shared/data/mnist --quick      # a check
    # the paper's 30 epochs for one lineage, seeds 0-2 now and seeds 3-4 later (same numbers as five at once):
    python experiments/paganini_forde_lenet5.py --manual-dir ../shared/data/mnist --methods l1_unstructured \
        --seeds 3 --root runs/paganini_30ep --out experiments/results/paganini_forde_lenet5_30epochs
    python experiments/paganini_forde_lenet5.py ... --seeds 2 --first-seed 3     # -> l1_unstructured_seeds3-4/

Setting: the PyTorch pruning tutorial's LeNet (``lenet5``: 3x3 convs 6-16, fc 120-84-10),
MNIST's 60K training images, Adam 1e-3, batch 64 (our choice: the paper does not pin
them), ``--epochs`` per level (the paper: 30), 18 pruning iterations of 20% with
rewinding to the initialisation, counts rounded half to even as ``torch.nn.utils.prune``
does, per layer. Methods (the paper's nine):

* ``l1_unstructured``, ``random_unstructured``: every kernel, output layer included;
* ``l1_structured``, ``l2_structured``, ``linf_structured``, ``lneginf_structured``
  (Ln norms of output channels/units), ``random_structured``: the convs and hidden fc
  layers (the output layer's units are the classes, so it is kept);
* ``hybrid``: L1-structured convs + L1-unstructured fc (output included);
* ``fc_only``: L1-unstructured fc layers, convs untouched;

and ``l1_unstructured_finetune`` (fine-tuning instead of rewinding) for the connectivity
comparison. Writes ``experiments/results/paganini_forde_lenet5/``: ``results.csv``
(``method, epochs, level, density, seed, test_accuracy``), ``agreement.csv`` (pairs of methods at
the last level, per seed), ``ensembles.csv``, ``connectivity.csv`` (how unit-like each
method's connectivity is, against random placement at the same per-layer density),
``summary.md``, the plots and ``provenance.json``. Resumable.

Compute: ~6 ms per LeNet-5 seed-step on 2 CPU cores, ~5.6 s per seed-epoch: 10 lineages x
19 levels x 5 seeds is ~1.5 hours per epoch per level; the committed results use 1 epoch
per level (LeNet-5 passes 97.5% after one epoch), the 30 of the paper are the default for
an accelerator.
"""

from __future__ import annotations

import itertools
import json
import pathlib
import re
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxticket import analysis, compare, lottery, pruning, plots, report  # noqa: E402

NAME = "paganini_forde_lenet5"
FC = "^(fc1|fc2|output)/kernel$"
HIDDEN_FC = "^(fc1|fc2)/kernel$"
CONV = "^conv[12]/kernel$"


def _rule(sel, method, **kw):
    return [sel, {"method": method, "fraction": 0.2, "rounding": "half_even", **kw}]


def methods() -> dict:
    """The nine methods of the paper as pruner configs, and the fine-tuning lineage."""
    structured = lambda n: {"method": "partition", "rules": [  # noqa: E731
        _rule(CONV, "ln_structured", n=n), _rule(HIDDEN_FC, "ln_structured", n=n), ["^output/", None]]}
    return {
        "l1_unstructured": {"method": "partition", "rules": [_rule("kernel$", "magnitude")]},
        "random_unstructured": {"method": "partition", "rules": [_rule("kernel$", "random")]},
        "l1_structured": structured(1),
        "l2_structured": structured(2),
        "linf_structured": structured("inf"),
        "lneginf_structured": structured("-inf"),
        "random_structured": {"method": "partition", "rules": [
            _rule(CONV, "random_structured"), _rule(HIDDEN_FC, "random_structured"), ["^output/", None]]},
        "hybrid": {"method": "partition", "rules": [_rule(CONV, "ln_structured", n=1), _rule(FC, "magnitude")]},
        "fc_only": {"method": "partition", "rules": [_rule(FC, "magnitude"), [CONV, None]]},
    }


PAPER_ITERATION_18 = {  # the paper's test accuracy (%) at iteration 18, as quoted in the issue
    "l2_structured": 36.7, "l1_structured": 37.8, "l1_unstructured": 32.4, "hybrid": 81.8,
    "random_structured": 11.3, "lneginf_structured": 14.5, "fc_only": 87.4,
}


TRAIN_EXAMPLES = 60_000  # MNIST's training set (no validation split): 937 steps of 64 per epoch
BATCH = 64


QUICK = {"seeds": 2, "levels": 4, "epochs": 1,  # --quick
         "methods": ["l1_unstructured", "l1_structured", "hybrid", "l1_unstructured_finetune"]}


def load_data(config: lottery.LotteryConfig, args):
    """MNIST (``--manual-dir`` / ``--data-dir``), once for every lineage."""
    return lottery.load_data(config, args.data_dir, args.manual_dir)


PAPER_ENSEMBLES = {"all": 91.0, "hybrid+fc_only+l1_unstructured": 91.6}  # mean softmax, iteration 18


def config(method: str, pruner: dict, s: dict) -> lottery.LotteryConfig:
    """The lineage's settings; ``s["first_seed"]`` (default 0) is replica 0's initialisation
    and data order (replica i has seed ``first_seed + i``, bit for bit the same as in a
    run of more seeds: the seeds are the streams of ``vary``)."""
    epoch = TRAIN_EXAMPLES // BATCH
    first = s.get("first_seed", 0)
    return lottery.LotteryConfig.of(model="lenet5", dataset="mnist", optimizer="adam", lr=1e-3, batch_size=BATCH,
                                    steps=s["epochs"] * epoch, eval_every=epoch, eval_batch_size=2000,
                                    init_seed=first, data_seed=first, levels=s["levels"], pruner=pruner,
                                    seeds=s["seeds"], validation_size=0,
                                    reset="finetune" if method.endswith("_finetune") else "rewind", rewind_step=0)


def lineage_dir(root: pathlib.Path, method: str, first_seed: int = 0, seeds: int = 5) -> pathlib.Path:
    """A lineage's run folder: ``root/method`` for seeds 0.., ``root/method_seedsA-B`` for a
    run of seeds A..B (more seeds for a lineage, trained later)."""
    return root / (method if first_seed == 0 else f"{method}_seeds{first_seed}-{first_seed + seeds - 1}")


def seed_folders(root: pathlib.Path, method: str) -> list[tuple[pathlib.Path, int]]:
    """``(folder, first seed)`` of every run folder of ``method`` under ``root``, by first seed."""
    out = [(root / method, 0)] if (root / method).is_dir() else []
    for path in root.glob(f"{method}_seeds*-*"):
        m = re.fullmatch(re.escape(method) + r"_seeds(\d+)-(\d+)", path.name)
        if m and path.is_dir():
            out.append((path, int(m.group(1))))
    return sorted(out, key=lambda x: x[1])


def held_seeds(folder: pathlib.Path, first: int) -> set[int]:
    """The seeds a lineage folder holds (its first seed + its replicas)."""
    return {first + r["seed"] for r in lottery.load_results(folder) if r["kind"] == "imp"}


def load_seed(root: pathlib.Path, method: str, level: int, seed: int) -> dict:
    """:func:`jaxticket.compare.load_run` of seed ``seed`` of a lineage, from the first of its
    folders that holds it."""
    for folder, first in seed_folders(root, method):
        if seed in held_seeds(folder, first):
            return compare.load_run(folder, level, seed - first)
    raise FileNotFoundError(f"no run folder of {method} under {root} holds seed {seed}")


def lineages(s) -> dict:
    """The pruner of each lineage of ``s["methods"]``, in that order."""
    out = methods()
    out["l1_unstructured_finetune"] = out["l1_unstructured"]
    return {k: out[k] for k in s["methods"]}


FIELDS = ("method", "epochs", "level", "density", "seed", "test_accuracy")


ALL_LINEAGES = (*methods(), "l1_unstructured_finetune")


def tidy_rows(root: pathlib.Path, s) -> list[dict]:
    """One row per (method, level, seed) of every lineage folder under ``root`` (whichever
    lineages this command trains: a results folder holds every lineage of its run folder;
    ``epochs``: training epochs per level; ``seed``: the folder's first seed + its replica)."""
    rows, seen = [], set()
    for method in ALL_LINEAGES:
        for folder, first in seed_folders(root, method):  # a seed two folders hold: the first folder's
            for r in lottery.load_results(folder):
                if r["kind"] == "imp" and (method, r["level"], first + r["seed"]) not in seen:
                    seen.add((method, r["level"], first + r["seed"]))
                    rows.append({"method": method, "epochs": s["epochs"], "level": r["level"],
                                 "density": round(r["density"], 6), "seed": first + r["seed"],
                                 "test_accuracy": r["final_test_accuracy"]})
    return sorted(rows, key=lambda r: (ALL_LINEAGES.index(r["method"]), r["level"], r["seed"]))


def last_seeds(rows, methods_: list, level: int) -> list[int]:
    """The seeds every lineage of ``methods_`` holds at ``level``."""
    held = [{r["seed"] for r in rows if r["method"] == m and r["level"] == level} for m in methods_]
    return sorted(set.intersection(*held)) if held else []


def last_level_analyses(root: pathlib.Path, s, out: pathlib.Path, rows) -> dict:
    """Agreement and ensembles at the last level (per seed), trajectories and connectivity."""
    level = s["levels"]
    names = [m for m in methods() if m in s["methods"]]
    labels = compare.test_labels_of(seed_folders(root, names[0])[0][0])
    agree_rows, ens_rows, conn_rows = [], [], []
    for seed in last_seeds(rows, names, level):
        runs = {m: load_seed(root, m, level, seed) for m in names}
        logits = np.stack([runs[m]["logits"] for m in names])
        ag = np.asarray(analysis.agreement(logits).fraction)
        for (i, a), (j, b) in itertools.combinations(enumerate(names), 2):
            agree_rows.append({"method_a": a, "method_b": b, "seed": seed, "agreement": float(ag[i, j]),
                               "jaccard": float(analysis.jaccard(runs[a]["mask"], runs[b]["mask"]))})
        subsets = {"all": names, **{m: [m] for m in names},
                   "hybrid+fc_only+l1_unstructured": [m for m in ("hybrid", "fc_only", "l1_unstructured") if m in names]}
        for subset, members in subsets.items():
            idx = [names.index(m) for m in members]
            ens_rows.append({"subset": subset, "seed": seed,
                             "mean_softmax_accuracy": float(analysis.ensemble_accuracy(logits[idx], labels))})
    for method in [m for m in ("l1_structured", "l1_unstructured", "l1_unstructured_finetune", "hybrid")
                   if m in lineages(s)]:
        for seed in last_seeds(rows, [method], level):
            run = load_seed(root, method, level, seed)
            control = pruning.random_like(run["mask"], jax.random.key(1000 + seed))
            conn_rows += connectivity_rows(method, seed, run["mask"], control)
    common.write_csv(out / "agreement.csv", agree_rows, ("method_a", "method_b", "seed", "agreement", "jaccard"))
    common.write_csv(out / "ensembles.csv", ens_rows, ("subset", "seed", "mean_softmax_accuracy"))
    common.write_csv(out / "connectivity.csv", conn_rows, CONNECTIVITY_FIELDS)
    plot_agreement(agree_rows, names, level, out / "agreement.png")
    # weights of conv2 across iterations (the first seed through the last level): structured, unstructured, hybrid
    for method in [m for m in ("l1_structured", "l1_unstructured", "hybrid") if m in names]:
        seed = min(last_seeds(rows, [method], level))
        per_level = [load_seed(root, method, l, seed) for l in range(level + 1)]
        traj = analysis.weight_trajectories([r["params"] for r in per_level], [r["mask"] for r in per_level],
                                            "conv2/kernel")
        plots.plot_trajectories(traj, out / f"conv2_weights_{method}.png",
                                title=f"{method}: conv2's {traj.shape[1]} surviving weights, seed {seed} (one seed)")
    # conv1 filters (the first seed) at levels where conv1 still has weights, and at the last
    shown, shown_seeds = {}, set()
    for m in [m for m in ("l1_structured", "l1_unstructured", "l1_unstructured_finetune") if m in lineages(s)]:
        if not last_seeds(rows, [m], level):
            continue
        seed = min(last_seeds(rows, [m], level))
        shown_seeds.add(seed)
        for lv in sorted({0, level // 3, 2 * level // 3, level}):
            run = load_seed(root, m, lv, seed)
            kept = int(np.sum(np.asarray(run["mask"].keep["conv1"]["kernel"])))
            shown[f"{m.replace('_', ' ')}\nit. {lv}: {kept} w."] = run
    if shown:
        plot_filters(shown, out / "conv1_filters.png", seeds=sorted(shown_seeds))


def plot_agreement(agree_rows, names, level: int, path) -> None:
    """The pairwise test-prediction agreement of the methods, mean over the seeds."""
    if len(names) < 2:
        return
    matrix, n = np.eye(len(names)), set()
    for a, b in itertools.combinations(names, 2):
        vals = [r["agreement"] for r in agree_rows if {r["method_a"], r["method_b"]} == {a, b}]
        n.add(len(vals))
        matrix[names.index(a), names.index(b)] = matrix[names.index(b), names.index(a)] = np.mean(vals)
    plots.plot_heatmap(matrix, names, path, title=f"test prediction agreement at iteration {level}\n(mean over "
                       f"n = {'/'.join(str(x) for x in sorted(n))} seeds)")


CONNECTIVITY_FIELDS = ("method", "seed", "layer", "density", "empty_pairs", "empty_pairs_random", "empty_outputs",
                       "empty_outputs_random", "empty_inputs", "empty_inputs_random", "live_inputs",
                       "live_inputs_random", "empty_inputs_live", "empty_inputs_live_random", "empty_outputs_live",
                       "empty_outputs_live_random")
LAYERS = ("conv1/kernel", "conv2/kernel", "fc1/kernel")


def connectivity_rows(method: str, seed: int, mask, control) -> list[dict]:
    """conv1, conv2 and fc1 of one mask and of its random control (same per-layer
    density): the raw figures (every input counts) and the *live* ones, over the inputs
    fed by units that keep a weight from a live input (:func:`jaxticket.analysis.live_units`:
    a conv1 channel without weights sends a constant, so the conv2 weights leaving it
    carry nothing), with the number of live inputs."""
    def chain(m):
        live1 = analysis.live_units(m, "conv1/kernel")
        live2 = analysis.live_units(m, "conv2/kernel", upstream=live1)
        spatial = np.shape(m.keep["fc1"]["kernel"])[0] // live2.shape[0]  # 5 x 5 positions, NHWC
        return {"conv1/kernel": None, "conv2/kernel": live1, "fc1/kernel": analysis.flattened_live(live2, spatial)}

    ups, ups_c = chain(mask), chain(control)
    out = []
    for layer in LAYERS:
        row = {"method": method, "seed": seed, "layer": layer,
               "density": float(np.mean(np.asarray(mask.keep[layer.split("/")[0]]["kernel"])))}
        for suffix, m, up in (("", mask, ups[layer]), ("_random", control, ups_c[layer])):
            raw, live = analysis.connectivity(m, layer), analysis.connectivity(m, layer, upstream=up)
            n_in = np.shape(m.keep[layer.split("/")[0]]["kernel"])[-2]
            row.update({f"empty_pairs{suffix}": float(raw.empty_pairs), f"empty_outputs{suffix}": float(raw.empty_outputs),
                        f"empty_inputs{suffix}": float(raw.empty_inputs),
                        f"live_inputs{suffix}": n_in if up is None else int(np.sum(np.asarray(up))),
                        f"empty_inputs_live{suffix}": float(live.empty_inputs),
                        f"empty_outputs_live{suffix}": float(live.empty_outputs)})
        out.append(row)
    return out


def plot_filters(runs: dict, path, seeds=(0,)) -> None:
    """conv1's six 3x3 filters (rows) of each labelled run (columns, of ``seeds``), one
    colour scale for all (the bar), pruned weights grey."""
    import matplotlib

    ws = {name: np.asarray(r["params"]["conv1"]["kernel"])[:, :, 0, :] for name, r in runs.items()}
    ks = {name: np.asarray(r["mask"].keep["conv1"]["kernel"])[:, :, 0, :] for name, r in runs.items()}
    vmax = max(float(np.abs(w[k]).max()) if k.any() else 0.0 for w, k in zip(ws.values(), ks.values())) or 1.0
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="0.8")
    fig = plots.figure((0.9 * len(runs) + 1.2, 6.0))
    im = None
    for col, name in enumerate(runs):
        for f in range(ws[name].shape[-1]):
            ax = fig.add_subplot(ws[name].shape[-1], len(runs), f * len(runs) + col + 1)
            im = ax.imshow(np.ma.masked_array(ws[name][:, :, f], ~ks[name][:, :, f]), cmap=cmap, vmin=-vmax, vmax=vmax)
            ax.set_xticks([]), ax.set_yticks([])
            if f == 0:
                ax.set_title(name, fontsize=5)
    if im is not None:
        fig.colorbar(im, ax=fig.axes, shrink=0.6, label="weight (grey: pruned)")
    fig.text(0.01, 0.0, f"conv1 filters (rows), seed {', '.join(map(str, seeds))}; one colour scale", fontsize=6)
    plots.save_figure(fig, path)


def _pm(st, scale: float = 100.0, digits: int = 1) -> str:
    return "-" if st is None else st.format(scale, digits)


def _diff(st, scale: float = 100.0, digits: int = 1) -> str:
    if st is None:
        return "-"
    if st.n < 2:
        return f"{st.mean * scale:+.{digits}f} (one seed: no interval)"
    return (f"{st.mean * scale:+.{digits}f} [{st.ci95[0] * scale:+.{digits}f}, {st.ci95[1] * scale:+.{digits}f}]"
            f" (n = {st.n})")


MATCHED_PAIRS = (("random_structured", "random_unstructured"), ("l1_structured", "l1_unstructured"),
                 ("hybrid", "l1_unstructured"), ("fc_only", "l1_unstructured"))


def accuracy_table(rows, s) -> list[str]:
    level, mid = s["levels"], s["levels"] // 2
    lines = [f"| method | epochs | weights % at it. 0 / {mid} / {level} | test acc % it. 0 | it. {mid} | it. {level} "
             f"| paper it. 18 | paper in our 95% interval |", "|---|---|---|---|---|---|---|---|"]
    for method in [m for m in ALL_LINEAGES if any(r["method"] == m for r in rows)]:
        cell = lambda l: common.stats([r["test_accuracy"] for r in rows if r["method"] == method and r["level"] == l])  # noqa: E731
        dens = lambda l: np.mean([r["density"] for r in rows if r["method"] == method and r["level"] == l] or [np.nan])  # noqa: E731
        last, paper = cell(level), PAPER_ITERATION_18.get(method)
        inside = "-" if paper is None or last is None or last.n < 2 or level != 18 else (
            "yes" if 100 * last.ci95[0] <= paper <= 100 * last.ci95[1] else "no")
        lines.append(f"| {method} | {s['epochs']} | {100 * dens(0):.0f} / {100 * dens(mid):.1f} / {100 * dens(level):.2f} | "
                     f"{common.fmt(cell(0))} | {common.fmt(cell(mid))} | {common.fmt(last)} (n = {last.n if last else 0}) "
                     f"| {paper if paper is not None else '-'} | {inside} |")
    return lines


def matched_table(rows) -> list[str]:
    """Method A against method B at A's densities (B interpolated per seed in log density)."""
    lines = ["| A | B | A's iteration | weights % | A acc % | B acc % at that density | A - B, points [95% CI] |",
             "|---|---|---|---|---|---|---|"]
    for a, b in MATCHED_PAIRS:
        ra, rb = [r for r in rows if r["method"] == a], [r for r in rows if r["method"] == b]
        if not ra or not rb:
            continue
        levels = sorted({r["level"] for r in ra if r["level"] > 0})
        dens = [float(np.mean([r["density"] for r in ra if r["level"] == l])) for l in levels]
        for level, m in zip(levels, report.matched_density(ra, rb, dens)):
            lines.append(f"| {a} | {b} | {level} | {100 * m.density:.2f} | {_pm(m.a)} | {_pm(m.b)} | {_diff(m.diff)} |")
    return lines if len(lines) > 2 else []  # no pair of methods trained: no table


def ensemble_table(ens_rows) -> list[str]:
    """Each ensemble against each seed's best single member, paired by seed."""
    seeds = sorted({r["seed"] for r in ens_rows})
    singles = {r["subset"] for r in ens_rows} & set(methods())
    if len(singles) < 2:  # one method: its "ensembles" are the method itself
        return []
    best = {sd: max(r["mean_softmax_accuracy"] for r in ens_rows if r["seed"] == sd and r["subset"] in singles)
            for sd in seeds}
    lines = ["| ensemble | accuracy % | paper | paper in our 95% interval | minus each seed's best member, points "
             "[95% CI] |", "|---|---|---|---|---|"]
    def members(subset):
        return singles if subset == "all" else set(subset.split("+")) & singles

    for subset in sorted(sub for sub in {r["subset"] for r in ens_rows} - singles if len(members(sub)) > 1):
        acc = {r["seed"]: r["mean_softmax_accuracy"] for r in ens_rows if r["subset"] == subset}
        st, paper = common.stats(acc.values()), PAPER_ENSEMBLES.get(subset)
        inside = "-" if paper is None or st.n < 2 else ("yes" if 100 * st.ci95[0] <= paper <= 100 * st.ci95[1] else "no")
        lines.append(f"| {subset} | {common.fmt(st)} | {paper if paper is not None else '-'} | {inside} | "
                     f"{_diff(report.paired_stats(acc, best), digits=2)} |")
    return lines


def connectivity_table(conn_rows) -> list[str]:
    """Empty inputs/outputs per method and layer, raw and with dead upstream units excluded."""
    if not conn_rows:
        return []
    live = "empty_inputs_live" in conn_rows[0] and conn_rows[0]["empty_inputs_live"] not in (None, "")
    head = "| method | layer | weights % | empty inputs % | random | empty outputs % | random |"
    if live:
        head += " live inputs | empty live inputs % | random |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for method in dict.fromkeys(r["method"] for r in conn_rows):
        for layer in LAYERS:
            sel = [r for r in conn_rows if r["method"] == method and r["layer"] == layer]
            st = lambda key: common.stats([float(r[key]) for r in sel])  # noqa: E731
            cells = [method, layer, f"{100 * st('density').mean:.2f}", _pm(st("empty_inputs")),
                     _pm(st("empty_inputs_random")), _pm(st("empty_outputs")), _pm(st("empty_outputs_random"))]
            if live:
                cells += [f"{st('live_inputs').mean:.1f} (random {st('live_inputs_random').mean:.1f})",
                          _pm(st("empty_inputs_live")), _pm(st("empty_inputs_live_random"))]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def read_csv(path: pathlib.Path) -> list[dict]:
    """A tidy CSV's rows with numbers as numbers."""
    import csv

    def num(v):
        try:
            return int(v)
        except ValueError:
            try:
                return float(v)
            except ValueError:
                return v

    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: num(v) for k, v in r.items()} for r in csv.DictReader(f)]


def summarize(rows, out: pathlib.Path, s) -> None:
    """summary.md from ``rows`` and the analyses' CSVs in ``out``, and the accuracy plot."""
    parts = [f"# {NAME}\n", f"{s['epochs']} epoch(s) per level. Test accuracy in %, mean ± SD (ddof=1) "
             "[95% t-interval] over the seeds (n); differences paired by seed, mean [95% t-interval].\n",
             "## Accuracy per method\n", *accuracy_table(rows, s)]
    matched = matched_table(rows)
    if matched:
        parts += ["\n## At matched density\n", "Iteration i of two methods is not the same density (structured "
                  "rounding, the output layer left out): here B's accuracy is interpolated per seed, linearly in log "
                  "density, at A's densities (`jaxticket.report.matched_density`).\n", *matched]
    ens = ensemble_table(read_csv(out / "ensembles.csv"))
    if ens:
        parts += [f"\n## Ensembles at iteration {s['levels']} (mean softmax)\n", *ens]
    conn = connectivity_table(read_csv(out / "connectivity.csv"))
    if conn:
        parts += [f"\n## Connectivity at iteration {s['levels']}\n",
                  "Fractions of the layer's input units/channels without outgoing weights and of its outputs without "
                  "inputs, beside a random mask of the same per-layer density; 'live': over the inputs fed by units "
                  "that keep a weight from a live input (a conv1 channel without weights sends a constant).\n", *conn]
    common.rundir.write_atomic(out / "summary.md", "\n".join(parts) + "\n")
    acc_rows = [{"method": r["method"], "density": r["density"], "accuracy": r["test_accuracy"]} for r in rows]
    plots.plot_density_accuracy(acc_rows, out / "accuracy_vs_density.png",
                                title=f"LeNet-5 on MNIST, {s['epochs']} epoch(s) per level: pruning methods")


def from_csv(out: pathlib.Path, s) -> list[dict]:
    """The rows of ``out/results.csv`` (a results folder whose run folders are gone), with
    the ``epochs`` column from its provenance settings where the file lacks it."""
    rows = read_csv(out / "results.csv")
    if not rows:
        raise SystemExit(f"{out / 'results.csv'} holds no rows: --from-csv rewrites a results folder's summary "
                         "and plots from its CSV files; train first (without --from-csv)")
    if "epochs" not in rows[0]:
        prov = json.loads((out / "provenance.json").read_text())
        epochs = {x.get("settings", prov["settings"])["epochs"] for x in prov["sessions"] if x["stages"]}  # trained
        if len(epochs) != 1:
            raise SystemExit(f"{out}: its sessions ran {sorted(epochs)} epochs; cannot name one epochs column")
        rows = [{**r, "epochs": next(iter(epochs))} for r in rows]
    s["epochs"] = rows[0]["epochs"]
    return sorted(rows, key=lambda r: (ALL_LINEAGES.index(r["method"]), r["level"], r["seed"]))


def main(argv=None) -> int:
    parser = common.mesh_parser(__doc__.splitlines()[0])
    parser.add_argument("--manual-dir", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=30, help="training epochs per level (the paper: 30)")
    parser.add_argument("--root", default=str(common.ROOT / "runs" / NAME))
    parser.add_argument("--out", default=None)
    parser.add_argument("--seeds", type=int, default=5, help="seeds per lineage (the paper: 5); the run "
                        "folder gets a suffix _s<N> when not 5 and --root is the default")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="train seeds FIRST..FIRST+SEEDS-1 (in folders <method>_seedsA-B beside the lineage's "
                             "own): more seeds for lineages that have some; --report reads every folder")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 4 levels, 4 lineages, 1 epoch")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="the lineages to train, in this order (default: all ten)")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: write the results of what the run folders hold (every run writes "
                             "every lineage of --root; those short of the last level stay out of its analyses)")
    parser.add_argument("--from-csv", action="store_true",
                        help="train and read nothing but the results folder's CSV files: rewrite its summary.md, "
                             "accuracy plot and results.csv (with the epochs column) where the run folders are gone")
    args = parser.parse_args(argv)
    all_methods = list(methods()) + ["l1_unstructured_finetune"]
    s = {"seeds": args.seeds, "levels": 18, "epochs": args.epochs, "methods": all_methods}
    if args.first_seed:
        s["first_seed"] = args.first_seed
    if args.quick:
        s = {**QUICK, **({"first_seed": args.first_seed} if args.first_seed else {})}
    if args.methods:
        unknown = sorted(set(args.methods) - set(all_methods))
        if unknown:
            parser.error(f"unknown methods {unknown}: choose from {all_methods}")
        s["methods"] = list(args.methods)
    out = pathlib.Path(args.out or common.RESULTS / (NAME + ("_quick" if args.quick else "")))
    out.mkdir(parents=True, exist_ok=True)
    if args.from_csv:
        rows = from_csv(out, s)
        common.write_csv(out / "results.csv", rows, FIELDS)
        agree = read_csv(out / "agreement.csv")
        names = [m for m in methods() if any(m in (r["method_a"], r["method_b"]) for r in agree)]
        plot_agreement(agree, names, s["levels"], out / "agreement.png")
        summarize(rows, out, s)
        return common.print_summary(out)
    default_root = str(common.ROOT / "runs" / NAME)
    suffix = "_quick" if args.quick else ("" if args.seeds == 5 else f"_s{args.seeds}")
    root = pathlib.Path(args.root + (suffix if args.root == default_root else ""))
    if args.report:
        s["methods"] = [m for m in s["methods"] if seed_folders(root, m)]
    prov = common.Provenance(out, {**s, "configs": {m: config(m, p, s).to_dict() for m, p in lineages(s).items()}})
    data = None
    for method, pruner in lineages(s).items():
        if args.report:
            break
        t = time.perf_counter()
        data = data or load_data(config(method, pruner, s), args)
        lottery.run_imp(config(method, pruner, s), lineage_dir(root, method, s.get("first_seed", 0), s["seeds"]),
                        datasets=data, progress=False, log=lambda line, m=method: print(f"{m}: {line}", flush=True))
        prov.stage(method, time.perf_counter() - t)
    rows = tidy_rows(root, s)  # every lineage the run folder holds, trained now or before
    common.write_csv(out / "results.csv", rows, FIELDS)
    done = {**s, "methods": [m for m in ALL_LINEAGES if any(r["method"] == m and r["level"] == s["levels"]
                                                            for r in rows)]}
    if [m for m in done["methods"] if m in methods()]:
        last_level_analyses(root, done, out, rows)  # the lineages that reached the last level
    summarize(rows, out, s)
    return common.print_summary(out)


if __name__ == "__main__":
    sys.exit(main())
