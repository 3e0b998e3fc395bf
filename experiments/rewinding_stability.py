"""Frankle et al. (2019/2020), "Stabilizing the LTH" / "Linear mode connectivity and the
LTH": IMP fails at k = 0, rewinding to a small k fixes it, and stability explains it.

    python experiments/rewinding_stability.py --manual-dir ../shared/data            # CPU setting
    python experiments/rewinding_stability.py --manual-dir ../shared/data --quick    # ~10 min check
    python experiments/rewinding_stability.py --setting resnet20_cifar10 --data-dir D  # accelerator

The papers show the failure on CIFAR-10 with ResNet-20 and VGG-16 (SGD 0.1, no
warm-up), which a 2-core CPU cannot train in a session. The CPU setting
(``lenet5_fashion``, the default) is the one found here where the dense network is
unstable at initialisation: LeNet-5 on Fashion-MNIST, SGD with momentum 0.9 at lr 0.05,
no warm-up, batch 128, 2,000 iterations (4.3 epochs; lr x0.1 at 1,000 and 1,500),
weight decay 1e-4, global magnitude pruning of 20% of the kernels per level. The
``resnet20_cifar10`` and ``vgg16_cifar10`` settings are the papers' presets (160
epochs, k up to 2,000) for an accelerator with the CIFAR-10 data.

For every seed and rewind step ``k``: one IMP lineage rewound to ``k`` (levels 0-L, the
accuracy of every level), then for some levels two copies of the subnetwork at ``k``
trained with different data orders and the error barrier between them on the test set
and on 10,000 training examples (15 interpolation points), and the L2 distance of the
copy's trained weights to the dense network's trained weights
(:func:`jaxticket.instability.instability_sweep`). Seeds differ in initialisation and
data order.

Writes ``experiments/results/rewinding_stability/``: ``results.csv`` (one row per k,
level and seed; the barrier and distance columns are empty at levels without copies),
``summary.md`` (mean ± std [95% interval] over seeds), ``accuracy_vs_density.png``,
``barrier_vs_k.png``, ``l2_vs_k.png`` and ``provenance.json``. The run folder
(``--workdir``, default ``runs/rewinding_stability``) is resumable: run the same command
again after an interruption; ``--report`` writes the results of what it holds.
"""

from __future__ import annotations

import functools
import json
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxticket import configs, instability, lottery, plots, report, rundir  # noqa: E402
from jaxticket import train as train_lib  # noqa: E402

NAME = "rewinding_stability"
FIELDS = ("k", "level", "density", "seed", "test_barrier", "train_barrier", "l2_to_full", "l2_to_full_all",
          "test_accuracy", "copies_test_accuracy")
GLOBAL_20 = {"method": "magnitude", "fraction": 0.2, "scope": "global"}


QUICK = {"steps": 600, "levels": 4, "ks": [0, 100], "copy_levels": [0, 4], "seeds": 2,  # --quick
         "train_examples": 10_000}


def fashion(model: str = "lenet5", lr: float = 0.05, quick: bool = False) -> dict:
    """``model`` on Fashion-MNIST, SGD momentum 0.9 at ``lr`` without warm-up, batch 128,
    2,000 iterations (lr x0.1 at 1,000 and 1,500), weight decay 1e-4, global 20% per level."""
    q = QUICK if quick else {"steps": 2000, "levels": 10, "ks": [0, 25, 100, 500], "copy_levels": [0, 4, 7, 10],
                             "seeds": 5, "train_examples": 10_000}
    steps = q["steps"]
    config = lottery.LotteryConfig.of(model=model, dataset="fashion_mnist", optimizer="sgd", lr=lr, momentum=0.9,
                                      weight_decay=1e-4, batch_size=128, steps=steps,
                                      milestones=(steps // 2, 3 * steps // 4), milestone_unit="steps", gamma=0.1,
                                      eval_every=steps, levels=q["levels"], pruner=GLOBAL_20, validation_size=0)
    return {"config": config, "ks": list(q["ks"]), "copy_levels": list(q["copy_levels"]), "seeds": q["seeds"],
            "batch_stats": "interpolate", "train_examples": q["train_examples"], "num_alphas": 15}


def load_data(config: lottery.LotteryConfig, args):
    """The setting's dataset (``--manual-dir`` / ``--data-dir``), without a validation split."""
    return lottery.load_data(config, args.data_dir, args.manual_dir)


def lenet5_fashion(quick: bool = False) -> dict:
    return fashion("lenet5", 0.05, quick)


# The search for a setting where IMP at k = 0 fails: one seed, k in {0, 100}, the dense
# network and the most pruned subnetwork with copies, every level's accuracy. (The default
# setting, LeNet-5 at lr 0.05, is the main run's seed 0.) ResNet-20 at a quarter of its
# width (4-8-16 channels, BatchNorm) is the paper's architecture at a cost this CPU can pay:
# 1,200 iterations, 7 levels (21% of weights), BatchNorm statistics recomputed along the path.
# ``lenet5_lr0.1_deep`` follows the most unstable LeNet-5 to 20 levels (1.15% of weights), copies
# at levels 0, 10, 15 and 20: does IMP at k = 0 fall behind k = 100 at extreme sparsity?
SEARCH = {"lenet_300_100_lr0.1": ("lenet_300_100", 0.1), "lenet_300_100_lr0.4": ("lenet_300_100", 0.4),
          "resnet20_w4_lr0.1": ("resnet20_w4", 0.1), "lenet5_lr0.1": ("lenet5", 0.1),
          "lenet5_lr0.1_deep": ("lenet5", 0.1)}
DEEP_LEVELS = {"lenet5_lr0.1_deep": (20, [0, 10, 15, 20])}
SEARCH_FIELDS = ("setting", "model", "lr") + FIELDS + ("note",)


def search_setting(name: str) -> dict:
    model, lr = SEARCH[name]
    s = {**fashion(model, lr), "ks": [0, 100], "copy_levels": [0, 10], "seeds": 1}
    if model.startswith("resnet"):
        s.update(config=s["config"].replace(steps=1200, milestones=(600, 900), eval_every=1200, levels=7),
                 copy_levels=[0, 7], batch_stats="recompute")
    if name in DEEP_LEVELS:
        levels, copy_levels = DEEP_LEVELS[name]
        s.update(config=s["config"].replace(levels=levels), copy_levels=copy_levels)
    return s


def cifar(preset: str) -> dict:
    config = configs.get(preset)
    return {"config": config, "ks": [0, 100, 250, 500, 1000, 2000], "copy_levels": [0, 4, 8, 12],
            "seeds": 3, "batch_stats": "recompute", "train_examples": 10_000, "num_alphas": 15}


SETTINGS = {"lenet5_fashion": lenet5_fashion, "resnet20_cifar10": lambda quick: cifar("resnet20_cifar10"),
            "vgg16_cifar10": lambda quick: cifar("vgg16_cifar10")}


def seed_config(config: lottery.LotteryConfig, seed: int) -> lottery.LotteryConfig:
    """The setting with replica ``seed``'s initialisation and data order."""
    return config.replace(init_seed=seed, data_seed=seed)


def started_sweep(workdir: pathlib.Path) -> dict:
    """The ks and copy levels a seed's folder was started with (``{}`` for a new folder): a
    sweep's identity holds them, so a folder continues with its own (more ks for a seed
    need another folder)."""
    if not rundir.is_sweep_folder(workdir):
        return {}
    sweep = json.loads((workdir / "config.json").read_text())["config"]["sweep"]
    return {"ks": sweep["ks"], "copy_levels": sweep["levels"]}


def run_seed(s: dict, seed: int, workdir: pathlib.Path, data) -> None:
    started = started_sweep(workdir)
    if started and (started["ks"], started["copy_levels"]) != (s["ks"], s["copy_levels"]):
        print(f"seed {seed}: {workdir.name} was started with ks {started['ks']}, copies at levels "
              f"{started['copy_levels']}: continuing with those", flush=True)
    s = {**s, **started}
    instability.sweep_from_config(seed_config(s["config"], seed), s["ks"], s["copy_levels"], workdir=workdir,
                                  copies=2, datasets=data, num_alphas=s["num_alphas"],
                                  train_examples=s["train_examples"], batch_stats=s["batch_stats"],
                                  progress=False)


def run_dense_ks(s: dict, first_seed: int, ks, workdir: pathlib.Path, data) -> None:
    """The dense network's barrier at extra ``ks`` for seeds ``first_seed``..: one
    seeds-together sweep of level 0 (replica i has the initialisation and data order of
    seed ``first_seed + i``'s folder; its dense trajectory is trained again, not read from
    that folder, and bit-identity with the folder's rewind point is not checked)."""
    config = seed_config(s["config"], first_seed).replace(seeds=s["seeds"] - first_seed)
    instability.sweep_from_config(config, ks, [0], workdir=workdir, copies=2, datasets=data,
                                  num_alphas=s["num_alphas"], train_examples=s["train_examples"],
                                  batch_stats=s["batch_stats"], progress=False)


DENSE_FIELDS = ("k", "seed", "test_barrier", "train_barrier", "source")


def dense_barriers(workdir: pathlib.Path, seeds: int) -> list[dict]:
    """The dense network's barriers per k and seed: from the seed folders and the
    seeds-together dense sweep (``workdir/dense_ks``, whose config says its first seed)."""
    rows = [{"k": r["k"], "seed": r["seed"], "test_barrier": r["test_barrier"], "train_barrier": r["train_barrier"],
             "source": f"seed{r['seed']}"} for r in collect(workdir, seeds)
            if r["level"] == 0 and r["test_barrier"] is not None]
    extra = workdir / "dense_ks"
    if (extra / "results.json").exists():
        first = json.loads((extra / "config.json").read_text())["config"]["lottery"]["train"]["init_seed"]
        rows += [{"k": r["k"], "seed": first + r["seed"], "test_barrier": r["test_barrier"],
                  "train_barrier": r["train_barrier"], "source": "dense_ks"}
                 for r in json.loads((extra / "results.json").read_text())]
    return sorted(rows, key=lambda r: (r["k"], r["seed"]))


# ---------------------------------------------------------------------------- results


def collect(workdir: pathlib.Path, seeds: int) -> list[dict]:
    """Tidy rows from the seed folders: every lineage level's accuracy, and the copies'
    barriers and distances where they were trained (each seed with the ks its folder holds).

    ``l2_to_full``: a copy's distance to the dense network's trained weights over the copy's
    surviving weights (the Stabilizing paper's); ``l2_to_full_all``: over every parameter
    (pruned positions, 0 in the copy, and biases count). Points written before the
    surviving-weight distance existed hold only the second (``l2_to_dense_final``)."""
    rows = []
    for seed in range(seeds):
        folder = workdir / f"seed{seed}"
        points = {}
        for path in sorted((folder / "points").glob("k*_level*.json")) if (folder / "points").exists() else []:
            if path.stem.endswith("_finals"):
                continue
            p = json.loads(path.read_text())
            points[(p["k"], p["level"])] = p
        for results in sorted(folder.glob("imp_k*/results.json")):
            k = int(results.parent.name[len("imp_k"):])
            for r in json.loads(results.read_text()):
                p = points.get((k, r["level"])) or {}
                rows.append({"k": k, "level": r["level"], "density": round(r["density"], 6), "seed": seed,
                             "test_barrier": p.get("test_barrier"), "train_barrier": p.get("train_barrier"),
                             "l2_to_full": p.get("l2_to_full"),
                             "l2_to_full_all": p.get("l2_to_full_all", p.get("l2_to_dense_final")),
                             "test_accuracy": r["final_test_accuracy"],
                             "copies_test_accuracy": 1.0 - p["final_test_error"] if p else None})
    return sorted(rows, key=lambda r: (r["k"], r["level"], r["seed"]))


COMMON_FIELDS = ("k", "level", "density", "seed", "common_density", "jaccard_to_first_k", "l2_to_full_common",
                 "l2_to_full")


def common_mask_distances(workdir: pathlib.Path, seeds: int) -> list[dict]:
    """Copy 0's distance to the dense network's trained weights (same seed) over the
    weights that *every* k's lineage of a seed's folder keeps at that level, per k, copy
    level (> 0) and seed: the lineages at different k have different masks, so the
    distance over each copy's own surviving weights (``l2_to_full``) mixes the effect of k
    with that of the mask; over the common mask only k differs. Beside it: the common
    mask's density (of the prunable weights) and the Jaccard index of the lineage's mask
    with the first k's. Needs the seed folders (their masks and the copies' weights); a
    folder with one k gives no rows.

    The copies' weights are checked to be 0 wherever their lineage's mask prunes (the
    level's mask is the one the copies trained under)."""
    from jaxticket import masks as masks_lib
    from jaxticket import stability
    from jaxticket.analysis import similarity

    rows = []
    first = functools.partial(jax.tree.map, lambda x: x[0])  # a one-seed folder's trees: leading axis [1]
    for seed in range(seeds):
        folder = workdir / f"seed{seed}"
        ks = sorted(int(p.name[len("imp_k"):]) for p in folder.glob("imp_k*") if (p / "levels").exists())
        points = folder / "points"
        if len(ks) < 2 or not points.exists():
            continue
        dense = first(rundir.load_tree(folder / f"imp_k{ks[0]:06d}" / "levels" / "level_00" / "final_params.npz"))
        levels = sorted({int(p.stem.split("_level")[1][:2]) for p in points.glob("k*_level*_finals.npz")} - {0})
        for level in levels:
            finals = {k: points / f"k{k:06d}_level{level:02d}_finals.npz" for k in ks}
            if not all(f.exists() for f in finals.values()):
                continue
            masks = {}
            for k in ks:
                m = rundir.load_mask(folder / f"imp_k{k:06d}" / "levels" / f"level_{level:02d}" / "mask.npz")
                masks[k] = m.replace(keep=first(m.keep))
            common_mask = masks[ks[0]].replace(keep=jax.tree.map(lambda *keeps: np.logical_and.reduce(keeps),
                                                                 *[masks[k].keep for k in ks]))
            for k in ks:
                copy = first(rundir.load_tree(finals[k])["params"])
                for w, keep in zip(jax.tree.leaves(copy), masks[k].leaves()):
                    if np.any(w[~keep] != 0):
                        raise ValueError(f"seed {seed}, k = {k}, level {level}: the copy has weights where its "
                                         "lineage's mask prunes; the mask file is not the copies' mask")
                rows.append({"k": k, "level": level, "seed": seed, "density": float(masks_lib.host_density(masks[k])),
                             "common_density": float(masks_lib.host_density(common_mask)),
                             "jaccard_to_first_k": float(similarity.jaccard(masks[k], masks[ks[0]])),
                             "l2_to_full_common": float(stability.l2_distance(dense, copy, common_mask)),
                             "l2_to_full": float(stability.l2_distance(dense, copy, masks[k]))})
    return sorted(rows, key=lambda r: (r["k"], r["level"], r["seed"]))


def values(rows, key, **where):
    return [r[key] for r in rows if all(r[f] == v for f, v in where.items()) and r.get(key) is not None]


def summarize(rows: list[dict]) -> str:
    """Per (k, level): accuracy, barriers and distances, mean ± std [95% interval] over seeds,
    and whether the subnetwork matches the dense network (mean accuracy >= dense mean -
    dense std, the papers' 'within one standard deviation'), and its accuracy minus the
    dense network's of the same seed, mean [95% interval] (paired)."""
    ks, levels = sorted({r["k"] for r in rows}), sorted({r["level"] for r in rows})
    # Level 0 is the same dense training in every k's lineage of a seed: one value per seed.
    dense = common.stats(values(rows, "test_accuracy", level=0, k=ks[0]))
    dense_by_seed = {r["seed"]: r["test_accuracy"] for r in rows if r["level"] == 0 and r["k"] == ks[0]}
    lines = [f"Dense test accuracy (level 0, one per seed): {common.fmt(dense)}", "",
             "| k | level | weights % | seeds | test accuracy | matches dense | minus dense (paired) | test barrier | "
             "train barrier | L2 to full, surviving weights | L2 to full, every parameter |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def l2(key, k, level):
        st = common.stats(values(rows, key, k=k, level=level))
        return "-" if st is None else st.format()

    for k in ks:
        for level in levels:
            acc = common.stats(values(rows, "test_accuracy", k=k, level=level))
            if acc is None:
                continue
            density = np.mean(values(rows, "density", k=k, level=level))
            matches = "-" if dense is None else ("yes" if acc.mean >= dense.mean - dense.std else "no")
            paired = report.paired_stats({r["seed"]: r["test_accuracy"] for r in rows
                                          if r["k"] == k and r["level"] == level}, dense_by_seed)
            diff = "-" if level == 0 else common.fmt_paired(paired)
            cells = [str(k), str(level), f"{100 * density:.1f}", str(acc.n), common.fmt(acc), matches, diff,
                     common.fmt(common.stats(values(rows, "test_barrier", k=k, level=level))),
                     common.fmt(common.stats(values(rows, "train_barrier", k=k, level=level))),
                     l2("l2_to_full", k, level), l2("l2_to_full_all", k, level)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarize_common(rows: list[dict]) -> str:
    """The distance over the weights every k's lineage keeps (:func:`common_mask_distances`):
    per level and k, mean ± std over seeds, and k minus the first k, paired by seed."""
    ks, levels = sorted({r["k"] for r in rows}), sorted({r["level"] for r in rows})
    lines = ["| level | weights % | kept by every k, % | k | seeds | Jaccard with k = " + str(ks[0]) + " | "
             "L2 to full, common weights | minus k = " + str(ks[0]) + " (paired) | L2 to full, own surviving weights |",
             "|---|---|---|---|---|---|---|---|---|"]
    for level in levels:
        first = {r["seed"]: r["l2_to_full_common"] for r in rows if r["level"] == level and r["k"] == ks[0]}
        for k in ks:
            here = [r for r in rows if r["level"] == level and r["k"] == k]
            if not here:
                continue
            st = lambda key: common.stats([r[key] for r in here])  # noqa: E731
            paired = report.paired_stats({r["seed"]: r["l2_to_full_common"] for r in here}, first)
            lines.append(f"| {level} | {100 * np.mean([r['density'] for r in here]):.1f} | "
                         f"{st('common_density').format(100, 1)} | {k} | {len(here)} | {st('jaccard_to_first_k').format(1, 3)} | "
                         f"{common.fmt(st('l2_to_full_common'), 1.0)} | "
                         f"{'-' if k == ks[0] else common.fmt_paired(paired, 1.0)} | {st('l2_to_full').format()} |")
    return "\n".join(lines)


def write_outputs(workdir: pathlib.Path, out: pathlib.Path, s: dict, title: str, rows=None, dense=None,
                  common_rows=None) -> list[dict]:
    """results.csv, common_mask.csv, summary.md and the plots, from the seed folders (or
    from ``rows``, ``dense``, the dense network's barriers per k and seed, and
    ``common_rows``, :func:`common_mask_distances`)."""
    rows = collect(workdir, s["seeds"]) if rows is None else rows
    dense = dense_barriers(workdir, s["seeds"]) if dense is None else dense
    if common_rows is None:
        common_rows = common_mask_distances(workdir, s["seeds"])
        if common_rows:
            common.write_csv(out / "common_mask.csv", common_rows, COMMON_FIELDS)
    common.write_csv(out / "results.csv", rows, FIELDS)
    if not rows:
        return rows
    shared = ("" if not common_rows else
              "\n## The distance over the weights every k's lineage keeps\n\nThe lineages at different k have "
              "different masks; over the weights all of a seed's lineages keep at a level, only k differs "
              "(`common_mask.csv`; L2 of copy 0 to the dense network's trained weights, mean ± std [95% t-interval]; "
              "paired differences over the seeds with every k).\n\n" + summarize_common(common_rows) + "\n")
    common.rundir.write_atomic(out / "summary.md", f"# {NAME}: per rewind step k and level, over seeds\n\n"
                               "accuracy and barriers in %, mean ± std (ddof=1) [95% t-interval]; L2 distances "
                               "of copy 0 to the dense network's trained weights (same seed), mean ± std\n\n"
                               f"{summarize(rows)}\n{shared}")
    ks = sorted({r["k"] for r in rows})
    series, ns = {}, {}
    for k in ks:
        levels = sorted({r["level"] for r in rows if r["k"] == k})
        st = [common.stats(values(rows, "test_accuracy", k=k, level=l)) for l in levels]
        series[f"k = {k}"] = ([np.mean(values(rows, "density", k=k, level=l)) for l in levels],
                              [100 * x.mean for x in st], [100 * x.std for x in st])
        ns[f"k = {k}"] = [x.n for x in st]
    plots.plot_series_vs_density(series, out / "accuracy_vs_density.png", ylabel="test accuracy (%)",
                                 title=f"{title}: IMP rewound to k", n=ns)
    copy_levels = sorted({r["level"] for r in rows if r["test_barrier"] is not None})
    # the dense network's barrier: every seed's value per k (dense_barriers.csv), not only the seed folders'
    dense_rows = [{"k": d["k"], "level": 0, "seed": d["seed"], "test_barrier": d["test_barrier"]} for d in dense]
    # l2_vs_k.png: the paper's distance (surviving weights) where measured, else every parameter's;
    # l2_all_vs_k.png beside it when both were measured
    surviving = any(r.get("l2_to_full") is not None for r in rows)
    plotted = [("test_barrier", "barrier_vs_k.png", "test barrier"),
               ("l2_to_full" if surviving else "l2_to_full_all", "l2_vs_k.png", "L2 to the dense network's final weights")]
    if surviving and any(r.get("l2_to_full_all") is not None for r in rows):
        plotted.append(("l2_to_full_all", "l2_all_vs_k.png", "L2 to the dense network's final weights"))
    for key, name, label in plotted:
        curves, counts = {}, {}
        # the ks where this quantity was measured (a distance added later may lack the older ks)
        measured = [k for k in ks if values(dense_rows + rows, key, k=k)]
        for level in copy_levels:
            source = dense_rows if key == "test_barrier" and level == 0 and dense_rows else rows
            st = [common.stats(values(source, key, k=k, level=level)) for k in measured]
            density = np.mean(values(rows, "density", level=level))
            lab = f"{100 * density:.1f}% weights"
            curves[lab] = ([np.nan if x is None else x.mean for x in st], [0.0 if x is None else x.std for x in st])
            counts[lab] = [0 if x is None else x.n for x in st]
        if curves:
            plots.plot_instability_vs_k(measured, curves, out / name, title=f"{title}: {label}",
                                        percent=key == "test_barrier", n=counts,
                                        threshold=0.02 if key == "test_barrier" else None,
                                        ylabel="test error barrier (%)" if key == "test_barrier" else
                                        ("L2 over the copy's surviving weights" if key == "l2_to_full" else
                                         "L2 over every parameter"))
    return rows


def read_csv(path: pathlib.Path) -> list[dict]:
    """A tidy CSV back as rows (numbers as numbers, empty cells as None). A results.csv
    written before ``l2_to_full_all`` existed has the every-parameter distance in its
    ``l2_to_full`` column: it moves to ``l2_to_full_all``."""
    import csv

    def num(v):
        if v == "":
            return None
        for cast in (int, float):
            try:
                return cast(v)
            except ValueError:
                pass
        return v

    with open(path, newline="") as f:
        rows = [{k: num(v) for k, v in r.items()} for r in csv.DictReader(f)]
    if rows and "l2_to_full" in rows[0] and "l2_to_full_all" not in rows[0] and "test_accuracy" in rows[0]:
        rows = [{**r, "l2_to_full_all": r["l2_to_full"], "l2_to_full": None} for r in rows]
    return rows


def search(names, workdir: pathlib.Path, out: pathlib.Path, args) -> int:
    """Run (or read back) the search settings ``names`` and write ``search.csv`` with
    every setting the search folder holds."""
    out.mkdir(parents=True, exist_ok=True)
    data = None
    for name in names:
        s = search_setting(name)
        if not args.report:
            data = data or load_data(s["config"], args)
            try:
                run_seed(s, 0, workdir / name / "seed0", data)
            except train_lib.NonFiniteLossError as err:  # a setting that diverges is a result too
                print(f"[search] {name}: {err}")
                rundir.write_atomic(workdir / name / "diverged.txt", f"{err}\n")
    rows = []
    for name in sorted(SEARCH):
        model, lr = SEARCH[name]
        found = collect(workdir / name, 1)
        diverged = workdir / name / "diverged.txt"
        if diverged.exists():
            found.append({"k": 0, "level": 0, "density": 1.0, "seed": 0, "note": diverged.read_text().strip()})
        rows += [{"setting": name, "model": model, "lr": lr, **r} for r in found]
    common.write_csv(out / "search.csv", rows, SEARCH_FIELDS)
    for r in rows:
        if r.get("test_barrier") is not None:
            print(f"{r['setting']:22s} k={r['k']:4d} level {r['level']:2d}  acc {100 * r['test_accuracy']:.2f}  "
                  f"test barrier {100 * r['test_barrier']:.2f}")
    return 0


def main(argv=None) -> int:
    parser = common.parser(NAME, __doc__, manual_help="folder with Fashion-MNIST's files (or one holding "
                           "mnist/ and fashion_mnist/)", quick_help="600 iterations, 2 seeds, 4 levels, k in {0, 100}")
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="lenet5_fashion")
    parser.add_argument("--seeds", type=int, default=None, help="override the number of seeds")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="train seeds from this one on (the earlier ones are only read back)")
    parser.add_argument("--ks", type=int, nargs="+", default=None,
                        help="override the rewind steps for the seeds trained now (a shorter sweep for extra seeds)")
    parser.add_argument("--search", nargs="*", choices=sorted(SEARCH), default=None,
                        help="the settings tried for a failure at k = 0 (all when none named): one seed, "
                             "k in {0, 100}; writes search.csv")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: write the results of what the run folder holds")
    parser.add_argument("--dense-ks", type=int, nargs="+", default=None,
                        help="also the dense network's barrier at these ks for seeds --first-seed.. "
                             "(one seeds-together sweep in <workdir>/dense_ks); writes dense_barriers.csv")
    parser.add_argument("--from-csv", action="store_true",
                        help="train and read nothing but the results folder's results.csv and dense_barriers.csv: "
                             "rewrite summary.md and the plots (where the run folder is gone)")
    args = parser.parse_args(argv)
    if args.search is not None:
        return search(args.search or sorted(SEARCH), pathlib.Path(args.workdir + "_search"),
                      pathlib.Path(args.out or common.RESULTS / NAME), args)
    s = SETTINGS[args.setting](args.quick)
    if args.seeds:
        s["seeds"] = args.seeds
    if args.ks:
        s["ks"] = sorted(set(args.ks))
    suffix = ("" if args.setting == "lenet5_fashion" else "_" + args.setting) + ("_quick" if args.quick else "")
    out = pathlib.Path(args.out or common.RESULTS / (NAME + suffix))
    out.mkdir(parents=True, exist_ok=True)
    workdir = pathlib.Path(args.workdir + (suffix if args.workdir.endswith(NAME) else ""))
    title = {"lenet5_fashion": "LeNet-5 on Fashion-MNIST", "resnet20_cifar10": "ResNet-20 on CIFAR-10",
             "vgg16_cifar10": "VGG-16 on CIFAR-10"}[args.setting]
    if args.from_csv:
        dense = read_csv(out / "dense_barriers.csv") if (out / "dense_barriers.csv").exists() else []
        shared = read_csv(out / "common_mask.csv") if (out / "common_mask.csv").exists() else []
        write_outputs(workdir, out, s, title, rows=read_csv(out / "results.csv"), dense=dense, common_rows=shared)
        return common.print_summary(out)
    settings = {k: v for k, v in s.items() if k != "config"}
    prov = common.Provenance(out, {**settings, "setting": args.setting, "config": s["config"].to_dict()})
    if not args.report:
        data = load_data(s["config"], args)
        for seed in range(args.first_seed, s["seeds"]):
            t = time.perf_counter()
            run_seed(s, seed, workdir / f"seed{seed}", data)
            prov.stage(f"seed{seed}", time.perf_counter() - t)
            write_outputs(workdir, out, s, title)
        if args.dense_ks:
            t = time.perf_counter()
            run_dense_ks(s, args.first_seed, args.dense_ks, workdir / "dense_ks", data)
            prov.stage(f"dense_ks_from_seed{args.first_seed}", time.perf_counter() - t)
    write_outputs(workdir, out, s, title)
    dense = dense_barriers(workdir, s["seeds"])
    if (workdir / "dense_ks").exists():
        common.write_csv(out / "dense_barriers.csv", dense, DENSE_FIELDS)
    return common.print_summary(out)


if __name__ == "__main__":
    sys.exit(main())
