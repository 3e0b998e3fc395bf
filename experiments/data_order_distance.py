"""Frankle et al. (2019), "Stabilizing the Lottery Ticket Hypothesis": copies of an IMP
subnetwork trained from one initialisation under different data orders end closer
together than copies of a random subnetwork (LeNet-300-100 at 10.7%: 2.8x closer).

    python experiments/data_order_distance.py --manual-dir ../shared/data/mnist          # this CPU (committed)
    python experiments/data_order_distance.py --manual-dir ../shared/data/mnist --steps 50000   # the paper's length
    python experiments/data_order_distance.py --manual-dir ../shared/data/mnist --quick  # a check (~5 min)

Setting: the ``lenet_300_100_mnist`` preset (Adam 1.2e-3, batch 60, Glorot-normal
init, 5,000 training images held out, layer-wise magnitude pruning of 20% of the hidden
and 10% of the output weights per level, rewinding to the initialisation, k = 0), five
seeds trained together, with ``--steps`` iterations per level (default 10,000: a fifth of
the preset's 50K, which did not fit in this session on 2 shared cores; evaluation every
1,000). IMP runs to level 10 (10.7% of the hidden weights). At levels 10, 3 and 7 (10.7%,
51%, 21%; trained in that order, the paper's density first), two kinds of subnetwork
start from the same initial weights (the rewind point, k = 0):

* ``imp``: the level's IMP mask (``run.branch_state("rewind", level)``);
* ``random``: a random mask with the same per-layer survivor counts
  (``run.branch_state("random_mask", level)``);

and for each seed two copies of it are trained for ``--steps`` iterations with different
data orders (:func:`jaxticket.instability.copies_from`, noise seed = the replica's data
seed), then measured: the L2 distance between the two copies' final weights over the
surviving weights (``stability.l2_distance(a, b, mask)``, kernels only: biases are not
pruned and not counted), the same divided by copy a's norm, each copy's distance from the
initial weights, and the copies' test accuracy.

Writes ``experiments/results/data_order_distance/``: ``results.csv`` (one row per
subnetwork kind, level and seed), ``ratios.csv`` (random / imp distance per level and
seed), ``lineage.csv`` (the IMP lineage's accuracy per level and seed), ``summary.md``,
``distance_vs_density.png``, ``ratio_vs_density.png`` and ``provenance.json``. The run
folder (``--workdir``, default ``runs/data_order_distance``) is resumable: the lineage
resumes level by level, each (kind, level) point is saved when done; ``--report``
writes the results of what it holds.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxticket import configs, instability, lottery, masks, report, rundir, stability, train  # noqa: E402

NAME = "data_order_distance"
KINDS = {"imp": "rewind", "random": "random_mask"}  # subnetwork -> branch kind of its start state
FIELDS = ("subnetwork", "level", "density", "seed", "steps", "l2_distance", "l2_distance_normalized",
          "l2_from_init_a", "l2_from_init_b", "test_accuracy_a", "test_accuracy_b")
RATIO_FIELDS = ("level", "density", "seed", "l2_imp", "l2_random", "ratio_random_over_imp",
                "ratio_normalized")
LINEAGE_FIELDS = ("level", "density", "seed", "test_accuracy", "early_stop_step", "test_accuracy_at_early_stop")
PAPER_RATIO = 2.8  # at 10.7% (LeNet-300-100), as issue 24 quotes the paper


def settings(quick: bool, steps: int | None = None) -> dict:
    s = ({"seeds": 2, "levels": 3, "steps": 500, "copy_levels": [3], "eval_every": 250} if quick else
         {"seeds": 5, "levels": 10, "steps": 10_000, "copy_levels": [10, 3, 7], "eval_every": 1000})
    if steps:
        s.update(steps=steps, eval_every=min(s["eval_every"], steps))
    return s


def lottery_config(s: dict) -> lottery.LotteryConfig:
    preset = configs.get("lenet_300_100_mnist")
    return preset.replace(seeds=s["seeds"], levels=s["levels"], steps=s["steps"], eval_every=s["eval_every"])


def load_data(config: lottery.LotteryConfig, args):
    """The preset's MNIST splits (the test replaces this with tiny arrays)."""
    return lottery.load_data(config, args.data_dir, args.manual_dir)


def lineage(config: lottery.LotteryConfig, data, workdir: pathlib.Path):
    """The IMP lineage (resumable in ``workdir``), as an :class:`~jaxticket.lottery.ImpRun`."""
    task, data, pruner, st = lottery.objects_from_config(config, data=data)
    return lottery.imp(task, data, pruner, settings=st, workdir=workdir, progress=False,
                       identity={"lottery": config.to_dict()}, log=lambda line: print(line, flush=True))


def pair_rows(task, start, finals, data, subnetwork: str, level: int, s: dict) -> list[dict]:
    """One row per seed from the copies ``finals`` (``[2 * seeds]``, seed-major) of the
    start state ``start`` (``[seeds]``)."""
    accuracy = np.asarray(jax.device_get(train.evaluate(task, finals, data.test, batch_size=2000)["accuracy"]))
    rows = []
    for seed in range(s["seeds"]):
        a, b = train.replica(finals, 2 * seed), train.replica(finals, 2 * seed + 1)
        init, mask = train.replica(start, seed), a.mask
        rows.append({"subnetwork": subnetwork, "level": level, "seed": seed, "steps": s["steps"],
                     "density": round(float(masks.density(mask)), 6),
                     "l2_distance": float(stability.l2_distance(a.params, b.params, mask)),
                     "l2_distance_normalized": float(stability.l2_distance(a.params, b.params, mask, normalize=True)),
                     "l2_from_init_a": float(stability.l2_distance(init.params, a.params, mask)),
                     "l2_from_init_b": float(stability.l2_distance(init.params, b.params, mask)),
                     "test_accuracy_a": float(accuracy[2 * seed]), "test_accuracy_b": float(accuracy[2 * seed + 1])})
    return rows


def run_point(run, data, subnetwork: str, level: int, s: dict, points: pathlib.Path) -> list[dict]:
    """Trains (or reads back) the two copies per seed of one kind of subnetwork at ``level``."""
    path = points / f"{subnetwork}_level{level:02d}.json"
    if path.exists():
        return json.loads(path.read_text())
    start = run.branch_state(KINDS[subnetwork], level)  # [seeds], step 0, the subnetwork's mask
    noise = train.replica_seeds(s["seeds"], run.settings.vary, **run.settings.fit.seed_streams)["data"]
    copies = [instability.copies_from(train.replica(start, seed), 2, noise[seed]) for seed in range(s["seeds"])]
    stacked = jax.tree.map(lambda *xs: jax.numpy.concatenate(xs), *copies)
    finals = train.fit(run.task, stacked, data.train, steps=s["steps"], batch_size=run.settings.fit.batch_size,
                       progress=False).state
    rows = pair_rows(run.task, start, finals, data, subnetwork, level, s)
    points.mkdir(parents=True, exist_ok=True)
    rundir.write_atomic(path, json.dumps(rows, indent=2) + "\n")
    for r in rows:
        print(f"[{subnetwork}] level {level:2d} seed {r['seed']}  density {r['density']:.4f}  "
              f"L2 {r['l2_distance']:.3f}  acc {100 * r['test_accuracy_a']:.2f}/{100 * r['test_accuracy_b']:.2f}",
              flush=True)
    return rows


# ---------------------------------------------------------------------------- results


def collect(workdir: pathlib.Path) -> tuple[list[dict], list[dict]]:
    """``(rows, lineage rows)`` from the run folder."""
    rows = []
    for path in sorted((workdir / "points").glob("*_level*.json")) if (workdir / "points").exists() else []:
        rows += json.loads(path.read_text())
    rows.sort(key=lambda r: (list(KINDS).index(r["subnetwork"]), r["level"], r["seed"]))
    lineage_rows = []
    if (workdir / "imp").exists():
        for r in lottery.load_results(workdir / "imp"):
            if r["kind"] == "imp":
                lineage_rows.append({"level": r["level"], "density": round(r["density"], 6), "seed": r["seed"],
                                     "test_accuracy": r["final_test_accuracy"],
                                     "early_stop_step": r["early_stop_step"],
                                     "test_accuracy_at_early_stop": r["early_stop_test_accuracy"]})
    return rows, sorted(lineage_rows, key=lambda r: (r["level"], r["seed"]))


def ratios(rows: list[dict]) -> list[dict]:
    """Per (level, seed) where both kinds were measured: random / imp distance."""
    by = {(r["subnetwork"], r["level"], r["seed"]): r for r in rows}
    out = []
    for (kind, level, seed), imp in sorted(by.items()):
        rnd = by.get(("random", level, seed))
        if kind != "imp" or rnd is None:
            continue
        out.append({"level": level, "density": imp["density"], "seed": seed, "l2_imp": imp["l2_distance"],
                    "l2_random": rnd["l2_distance"], "ratio_random_over_imp": rnd["l2_distance"] / imp["l2_distance"],
                    "ratio_normalized": rnd["l2_distance_normalized"] / imp["l2_distance_normalized"]})
    return out


def vals(rows, key, **where):
    return [r[key] for r in rows if all(r[f] == v for f, v in where.items()) and r.get(key) is not None]


def summarize(rows, ratio_rows, lineage_rows) -> str:
    levels = sorted({r["level"] for r in rows})
    dense = {r["seed"]: r["test_accuracy"] for r in lineage_rows if r["level"] == 0}
    lines = ["| level | weights % | subnetwork | seeds | L2 between copies | L2 / norm | L2 from init | "
             "test acc % (copies) |", "|---|---|---|---|---|---|---|---|"]
    for level in levels:
        for kind in KINDS:
            l2 = common.stats(vals(rows, "l2_distance", subnetwork=kind, level=level))
            if l2 is None:
                continue
            acc = common.stats(vals(rows, "test_accuracy_a", subnetwork=kind, level=level)
                               + vals(rows, "test_accuracy_b", subnetwork=kind, level=level))
            init = common.stats(vals(rows, "l2_from_init_a", subnetwork=kind, level=level)
                                + vals(rows, "l2_from_init_b", subnetwork=kind, level=level))
            lines.append(f"| {level} | {100 * np.mean(vals(rows, 'density', subnetwork=kind, level=level)):.1f} | "
                         f"{kind} | {l2.n} | {common.fmt(l2, 1.0)} | "
                         f"{common.fmt(common.stats(vals(rows, 'l2_distance_normalized', subnetwork=kind, level=level)), 1.0, 3)} | "
                         f"{init.format()} | {common.fmt(acc)} |")
    lines += ["", "Random / IMP distance per seed, mean ± std [95% t-interval over seeds]; the per-seed "
              "values; the geometric mean with the t-interval of the log ratio:", "",
              "| level | weights % | seeds | ratio (raw L2) | per seed | geometric mean [95%] | ratio of normalised L2 |",
              "|---|---|---|---|---|---|---|"]
    for level in sorted({r["level"] for r in ratio_rows}):
        rr = [r for r in ratio_rows if r["level"] == level]
        st = common.stats([r["ratio_random_over_imp"] for r in rr])
        lg = common.stats([float(np.log(r["ratio_random_over_imp"])) for r in rr])
        geo = (f"{np.exp(lg.mean):.2f} [{np.exp(lg.ci95[0]):.2f}, {np.exp(lg.ci95[1]):.2f}]" if lg.n > 1
               else f"{np.exp(lg.mean):.2f} (one seed: no interval)")
        per_seed = ", ".join("%.2f" % r["ratio_random_over_imp"] for r in rr)
        lines.append(f"| {level} | {100 * np.mean([r['density'] for r in rr]):.1f} | {st.n} | {common.fmt(st, 1.0)} | "
                     f"{per_seed} | {geo} | "
                     f"{common.fmt(common.stats([r['ratio_normalized'] for r in rr]), 1.0)} |")
    if lineage_rows:
        lines += ["", "The IMP lineage (one training per level and seed, its own data order), final test accuracy %, "
                  "and minus the dense network of the same seed (paired, 95% t-interval):", "",
                  "| level | weights % | test accuracy | minus dense |", "|---|---|---|---|"]
        for level in sorted({r["level"] for r in lineage_rows}):
            acc = {r["seed"]: r["test_accuracy"] for r in lineage_rows if r["level"] == level}
            lines.append(f"| {level} | {100 * np.mean(vals(lineage_rows, 'density', level=level)):.1f} | "
                         f"{common.fmt(common.stats(acc.values()))} | "
                         f"{'-' if level == 0 else common.fmt_paired(report.paired_stats(acc, dense))} |")
    return "\n".join(lines)


def write_outputs(workdir: pathlib.Path, out: pathlib.Path, s: dict, plots: bool = True) -> list[dict]:
    """The tidy CSVs and the summary (and, with ``plots``, the plots) of what the run folder holds."""
    rows, lineage_rows = collect(workdir)
    ratio_rows = ratios(rows)
    common.write_csv(out / "results.csv", rows, FIELDS)
    common.write_csv(out / "ratios.csv", ratio_rows, RATIO_FIELDS)
    common.write_csv(out / "lineage.csv", lineage_rows, LINEAGE_FIELDS)
    if not rows:
        return rows
    rundir.write_atomic(out / "summary.md", f"# {NAME}: copies from one initialisation, different data orders\n\n"
                        f"LeNet-300-100 on MNIST, {s['steps']} iterations per training; accuracy in %, "
                        "distances over the surviving kernel weights; mean ± std [95% t-interval] over seeds\n\n"
                        f"{summarize(rows, ratio_rows, lineage_rows)}\n")
    if not plots:
        return rows
    n = len({r["seed"] for r in rows})
    note = f"n = {n} seeds; bars: 95% t-interval of the mean"
    levels = sorted({r["level"] for r in rows})
    series = {kind: [(np.mean(vals(rows, "density", subnetwork=kind, level=l)),
                      common.stats(vals(rows, "l2_distance", subnetwork=kind, level=l))) for l in levels
                     if vals(rows, "density", subnetwork=kind, level=l)] for kind in KINDS}
    common.plot_ci({f"{k} subnetwork": v for k, v in series.items()}, out / "distance_vs_density.png",
                   xlabel="percent of weights remaining", ylabel="L2 distance between the two copies",
                   title="LeNet-300-100: copies under different data orders", note=note, log_density_x=True)
    rl = sorted({r["level"] for r in ratio_rows})
    ratio_series = {"random / IMP distance": [(np.mean(vals(ratio_rows, "density", level=l)),
                                              common.stats(vals(ratio_rows, "ratio_random_over_imp", level=l)))
                                             for l in rl]}
    common.plot_ci(ratio_series, out / "ratio_vs_density.png", xlabel="percent of weights remaining",
                   ylabel="distance ratio (random / IMP)", title="How much closer IMP copies end", note=note,
                   log_density_x=True, hlines=[(PAPER_RATIO, "paper at 10.7%: 2.8"), (1.0, "no difference")])
    return rows


def main(argv=None) -> int:
    parser = common.parser(NAME, __doc__, manual_help="folder with the four MNIST *-ubyte.gz files",
                           quick_help="2 seeds, 3 levels, 500 iterations, copies at level 3")
    parser.add_argument("--steps", type=int, default=None,
                        help="iterations per training (default 10,000; the preset: 50,000; a new value needs "
                             "a new --workdir)")
    parser.add_argument("--report", action="store_true", help="train nothing: write the results the run folder holds")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    s = settings(args.quick, args.steps)
    out = pathlib.Path(args.out or common.RESULTS / (NAME + ("_quick" if args.quick else "")))
    out.mkdir(parents=True, exist_ok=True)
    workdir = pathlib.Path(args.workdir + ("_quick" if args.quick and args.workdir.endswith(NAME) else ""))
    config = lottery_config(s)
    if not args.report:
        prov = common.Provenance(out, {**s, "preset": "lenet_300_100_mnist", "config": config.to_dict()})
        data = load_data(config, args)
        t = time.perf_counter()
        run = lineage(config, data, workdir / "imp")
        prov.stage("lineage", time.perf_counter() - t)
        for level in s["copy_levels"]:
            for kind in KINDS:
                t = time.perf_counter()
                run_point(run, data, kind, level, s, workdir / "points")
                prov.stage(f"{kind}_level{level}", time.perf_counter() - t)
                write_outputs(workdir, out, s, plots=False)
    write_outputs(workdir, out, s)
    return common.print_summary(out)


if __name__ == "__main__":
    sys.exit(main())
