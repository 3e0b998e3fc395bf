"""Permutation-aligned linear mode connectivity (Ainsworth et al. 2023, "Git Re-Basin"):
error barriers before and after weight matching, LeNet-300-100 on MNIST.

    python experiments/aligned_connectivity.py --manual-dir ../shared/data/mnist
    python experiments/aligned_connectivity.py --manual-dir ../shared/data/mnist --quick

Two kinds of pairs:

* ``independent``: two dense networks trained from different initialisations and data
  orders (three disjoint pairs, seeds 2i and 2i+1). Git Re-Basin reports a large barrier
  between such MLPs on MNIST that nearly vanishes after weight matching.
* ``imp_L_L+1``: the final weights of consecutive levels of one IMP lineage (the same
  initialisation, rewound to it, k = 0), per seed: levels 0-1, ..., 7-8 of Frankle &
  Carbin's layer-wise pruning (20% of the hidden, 10% of the output weights per level).

Training: Adam 1.2e-3, batch 60, 10,000 steps, no validation split. The barrier is
``max over alpha of err(alpha) - mean(err(0), err(1))`` on 30 points of the segment, test
error on the 10,000 test images, train error on the first 10,000 training images; the
interpolated weights are evaluated as they are (both ends masked). ``aligned``: the
second network permuted to the first by weight matching (hidden units of fc1 and fc2;
its mask moves with it), which computes the same function.

Writes ``experiments/results/aligned_connectivity/``: ``results.csv`` (``pair, aligned,
seed, test_barrier, train_barrier`` and the levels, densities, test errors of both ends
and their L2 distance), ``summary.md``, ``barriers.png``, ``provenance.json``. Resumable:
the trainings are run directories under ``--workdir``; the barriers are recomputed.
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
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxticket import configs, instability, lottery, plots, train  # noqa: E402

NAME = "aligned_connectivity"
FIELDS = ("pair", "aligned", "seed", "test_barrier", "train_barrier", "level_a", "level_b", "density_a",
          "density_b", "test_error_a", "test_error_b", "l2_distance")


QUICK = {"steps": 1000, "pairs": 2, "seeds": 2, "levels": 3, "train_examples": 2000}  # --quick


def settings(quick: bool) -> dict:
    if quick:
        return dict(QUICK)
    return {"steps": 10_000, "pairs": 3, "seeds": 3, "levels": 8, "train_examples": 10_000}


def load_data(config: lottery.LotteryConfig, args):
    """MNIST without a validation split (``--manual-dir`` / ``--data-dir``)."""
    return lottery.load_data(config, data_dir=args.data_dir, manual_dir=args.manual_dir)


def config(s: dict, seeds: int, levels: int) -> lottery.LotteryConfig:
    preset = configs.get("lenet_300_100_mnist")
    return preset.replace(steps=s["steps"], eval_every=0, seeds=seeds, levels=levels, validation_size=0)


def stacked(*states):
    """Single-run states as one state with a leading copies axis."""
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *states)


def measure(task, finals, data, s) -> list[dict]:
    """The barrier of one pair before and after alignment."""
    res = instability.instability(task, finals, data, train_examples=s["train_examples"], align=True)
    out = []
    for aligned in (False, True):
        p = "aligned_" if aligned else ""
        out.append({"aligned": aligned, "test_barrier": res[f"{p}test_barriers"][0],
                    "train_barrier": res[f"{p}train_barriers"][0], "l2_distance": res[f"{p}copy_l2"][0]})
    return out


def error_of(level_result, seed: int) -> float:
    return 1.0 - level_result.rows[seed]["final_test_accuracy"]


def run(args, s, out: pathlib.Path, prov) -> list[dict]:
    root = pathlib.Path(args.workdir)
    rows = []
    # independent dense networks: level 0 of a lineage with 2 * pairs seeds (init and data vary)
    dense_cfg = config(s, 2 * s["pairs"], 0)
    data = load_data(dense_cfg, args)
    t = time.perf_counter()
    lottery.run_imp(dense_cfg, root / "independent", datasets=data, progress=False)
    prov.stage("train independent", time.perf_counter() - t)
    dense = lottery.open_run(root / "independent", datasets=data, progress=False)
    try:
        level0 = dense.levels[0]
        states = [_state(dense, level0, i) for i in range(2 * s["pairs"])]
        t = time.perf_counter()
        for pair in range(s["pairs"]):
            for r in measure(dense.task, stacked(states[2 * pair], states[2 * pair + 1]), data, s):
                rows.append({"pair": "independent", "seed": pair, "level_a": 0, "level_b": 0, "density_a": 1.0,
                             "density_b": 1.0, "test_error_a": error_of(level0, 2 * pair),
                             "test_error_b": error_of(level0, 2 * pair + 1), **r})
        prov.stage("barriers independent", time.perf_counter() - t)
    finally:
        dense.close()
    write(rows, out)
    imp_cfg = config(s, s["seeds"], s["levels"])
    t = time.perf_counter()
    lottery.run_imp(imp_cfg, root / "imp", datasets=data, progress=False)
    prov.stage("train imp", time.perf_counter() - t)
    lineage = lottery.open_run(root / "imp", datasets=data, progress=False)
    try:
        t = time.perf_counter()
        for level in range(s["levels"]):
            la, lb = lineage.levels[level], lineage.levels[level + 1]
            for seed in range(s["seeds"]):
                pair = stacked(_state(lineage, la, seed), _state(lineage, lb, seed))
                for r in measure(lineage.task, pair, data, s):
                    rows.append({"pair": f"imp_{level}_{level + 1}", "seed": seed, "level_a": level,
                                 "level_b": level + 1, "density_a": la.rows[seed]["density"],
                                 "density_b": lb.rows[seed]["density"], "test_error_a": error_of(la, seed),
                                 "test_error_b": error_of(lb, seed), **r})
            write(rows, out)
        prov.stage("barriers imp", time.perf_counter() - t)
    finally:
        lineage.close()
    return rows


def _state(run: lottery.ImpRun, level_result, seed: int):
    """Seed ``seed``'s final state of a level (params, statistics, mask) as a single-run state."""
    template = train.replica(run.rewind_state, seed)
    return template.replace(params=jax.tree.map(lambda x: x[seed], level_result.params),
                            batch_stats=jax.tree.map(lambda x: x[seed], level_result.batch_stats),
                            mask=jax.tree.map(lambda x: x[seed], level_result.mask))


def write(rows: list[dict], out: pathlib.Path) -> None:
    rows = sorted(rows, key=lambda r: (r["pair"] != "independent", r["level_a"], r["seed"], r["aligned"]))
    common.write_csv(out / "results.csv", rows, FIELDS)
    pairs = sorted({r["pair"] for r in rows}, key=lambda p: (p != "independent", len(p), p))
    lines = [f"# {NAME}: error barriers (points of error), mean ± std [95% t-interval] over seeds/pairs\n",
             "| pair | density a -> b (%) | test barrier | test barrier aligned | train barrier | "
             "train barrier aligned | L2 | L2 aligned |", "|---|---|---|---|---|---|---|---|"]
    for p in pairs:
        sel = [r for r in rows if r["pair"] == p]

        def col(key, aligned):
            return common.stats([r[key] for r in sel if r["aligned"] == aligned])

        da, db = np.mean([r["density_a"] for r in sel]), np.mean([r["density_b"] for r in sel])
        l2, l2a = col("l2_distance", False), col("l2_distance", True)
        lines.append(f"| {p} | {100 * da:.1f} -> {100 * db:.1f} | {common.fmt(col('test_barrier', False))} | "
                     f"{common.fmt(col('test_barrier', True))} | {common.fmt(col('train_barrier', False))} | "
                     f"{common.fmt(col('train_barrier', True))} | {l2.mean:.2f} | {l2a.mean:.2f} |")
    common.rundir.write_atomic(out / "summary.md", "\n".join(lines) + "\n")
    plot_barriers(rows, pairs, out / "barriers.png")


def plot_barriers(rows: list[dict], pairs: list[str], path: pathlib.Path) -> None:
    """Each pair's barriers as points (no lines: the pairs are categories), mean ± SD
    (ddof=1) over its seeds as bars, each seed a small dot; the independent pairs on their
    own axes (their barriers are ~200 times larger)."""
    groups = [[p for p in pairs if p == "independent"], [p for p in pairs if p != "independent"]]
    groups = [g for g in groups if g]
    fig = plots.figure((2.0 + 0.6 * sum(len(g) for g in groups) + 1.0 * len(groups), 3.8))
    grid = fig.add_gridspec(1, len(groups), width_ratios=[len(g) + 1 for g in groups], wspace=0.35)
    series = [(key, aligned) for key in ("test_barrier", "train_barrier") for aligned in (False, True)]
    ns = []
    for gi, group in enumerate(groups):
        ax = fig.add_subplot(grid[0, gi])
        x = np.arange(len(group))
        for si, (key, aligned) in enumerate(series):
            style = plots.series_style(si)
            off = (si - 1.5) * 0.16
            means, errs = [], []
            for j, p in enumerate(group):
                vals = [100 * r[key] for r in rows if r["pair"] == p and r["aligned"] == aligned]
                m, e, n = plots.point_stats(vals)
                means.append(m), errs.append(e), ns.append(n)
                ax.plot(np.full(len(vals), j + off), vals, linestyle="none", marker=".", markersize=3,
                        color=style["color"], alpha=0.5)
            ax.errorbar(x + off, means, yerr=errs, linestyle="none", capsize=2, markersize=5,
                        label=f"{key.split('_')[0]}{', aligned' if aligned else ''}", **style)
        ax.set_xticks(x, group, rotation=45, ha="right", fontsize=7)
        ax.set_xlim(-0.6, len(group) - 0.4)
        ax.set_ylabel("error barrier (points)")
        ax.grid(alpha=0.3, axis="y")
        if gi == len(groups) - 1:
            ax.legend(fontsize=6)
    fig.suptitle("LeNet-300-100 on MNIST: barriers before / after weight matching", fontsize=9)
    fig.text(0.01, -0.1, plots.bar_note("sd", ns) + " (dots: the seeds/pairs)", fontsize=7, color="0.25")
    plots.save_figure(fig, path)


def read_rows(path: pathlib.Path) -> list[dict]:
    """``results.csv`` back as rows (numbers as numbers, ``aligned`` as a bool)."""
    import csv

    def num(key, v):
        if key == "pair":
            return v
        if key == "aligned":
            return v == "True"
        return int(v) if key in ("seed", "level_a", "level_b") else float(v)

    with open(path, newline="") as f:
        return [{k: num(k, v) for k, v in r.items()} for r in csv.DictReader(f)]


def main(argv=None) -> int:
    parser = common.parser(NAME, __doc__, manual_help="folder with the four MNIST *-ubyte.gz files",
                           quick_help="1,000 steps, 2 pairs, 3 levels (a check)")
    parser.add_argument("--from-csv", action="store_true",
                        help="train nothing: rewrite summary.md and barriers.png from the results folder's results.csv")
    args = parser.parse_args(argv)
    s = settings(args.quick)
    suffix = "_quick" if args.quick else ""
    out = pathlib.Path(args.out or common.RESULTS / (NAME + suffix))
    out.mkdir(parents=True, exist_ok=True)
    if args.from_csv:
        write(read_rows(out / "results.csv"), out)
        return common.print_summary(out)
    args.workdir += suffix if args.workdir.endswith(NAME) else ""
    prov = common.Provenance(out, {**s, "config": config(s, s["seeds"], s["levels"]).to_dict()})
    run(args, s, out, prov)
    print(json.dumps(prov.data["sessions"][-1]["stages"]))
    return common.print_summary(out)


if __name__ == "__main__":
    sys.exit(main())
