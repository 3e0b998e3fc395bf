"""A search on MNIST-1D for the Stabilizing papers' central failure: IMP rewound to k = 0
falls below the dense network where the dense network is unstable at initialisation,
and rewinding a little (k > 0) fixes it (Frankle et al. 2019/2020).

    python experiments/rewinding_mnist1d.py                 # grid, IMP on the unstable points, a k sweep (committed)
    python experiments/rewinding_mnist1d.py --quick         # a check of every stage (~5 min)
    python experiments/rewinding_mnist1d.py --report        # write the results of what the run folder holds

Data: MNIST-1D (Greydanus 2020), generated offline by the ``mnist1d`` package
(``make_dataset`` with its default arguments, seed 42, but 10,000 samples instead of
5,000: 8,000 training and 2,000 test sequences of 40 points), inputs ``[N, 40, 1]``.

Training (every stage): SGD with momentum 0.9, weight decay 1e-4, batch 128, ``--steps``
iterations (default 1,000: 16 epochs; the shared 2-core machine allowed no more),
learning rate x0.1 at 50% and 75% of training, linear warm-up over ``warmup`` steps (0 =
none); IMP prunes 20% of the kernels per level globally by magnitude (output layer
included, biases and BatchNorm not).

1. ``grid``: the 1-D CNN (:class:`jaxticket.models.conv1d.Conv1DNet`: depth 3 and 6,
   width 16 and 32, no BatchNorm) at lr 0.01, 0.04 and 0.16 and the 1-D ResNet
   (:class:`~jaxticket.models.conv1d.ResNet1D`: depth 8 and 14, width 8, BatchNorm
   statistics recomputed along the path) at lr 0.05, 0.2 and 0.8, each with warm-up 0
   and 100 steps, one seed: two copies of the dense network trained from one
   initialisation under different data orders, the error barrier between them (15
   points; test and training error) and their accuracy. A setting whose loss becomes
   NaN is recorded as diverged.
2. ``imp``: where the dense network is unstable (test barrier > 2 points; at most the 8
   most unstable), IMP at k = 0 (one seed, levels 1-6: down to 26% of the weights); a
   setting *fails* when a level's accuracy is more than 1 point below the dense
   network's.
3. ``sweep``: for the failing setting with the largest dense barrier (if any), five
   seeds: IMP rewound to k in {0, 25, 100} (0, 2.5, 10% of training), every level's
   accuracy, and at levels 0 and 6 two copies from the state at k: the barrier and the
   L2 distance of copy 0's trained weights to the dense network's trained weights over the
   surviving weights (``l2_to_full``, the paper's) and over every parameter
   (``l2_to_full_all``).

``--quick`` runs every stage on a small grid with thresholds that every setting passes (so
IMP and the sweep run whatever the numbers). Writes ``experiments/results/rewinding_mnist1d/``: ``results.csv`` (one
row per setting, stage, k, level and seed), ``summary.md``, plots and
``provenance.json``. The run folder (``--workdir``, default ``runs/rewinding_mnist1d``)
is resumable: a grid point, a lineage level and a sweep point are each saved when done.
"""

from __future__ import annotations

import itertools
import json
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxticket import instability, lottery, report, rundir, stability, train  # noqa: E402
from jaxticket.models.conv1d import Conv1DNet, ResNet1D  # noqa: E402

NAME = "rewinding_mnist1d"
FIELDS = ("stage", "setting", "family", "depth", "width", "lr", "warmup", "k", "level", "density", "seed",
          "test_accuracy", "test_barrier", "train_barrier", "l2_to_full", "l2_to_full_all", "copies_test_accuracy",
          "note")
BATCH = 128
PRUNER = {"method": "magnitude", "fraction": 0.2, "scope": "global"}


def settings(quick: bool, steps: int | None) -> dict:
    if quick:
        s = {"grid": {"cnn": {"depths": [3], "widths": [16], "lrs": [0.05]},
                      "resnet": {"depths": [8], "widths": [8], "lrs": [0.2]}},
             "warmups": [0], "steps": 300, "imp_levels": 2, "failure_points": -1.0,
             "unstable_barrier": -1.0, "sweep_ks": [0, 20], "sweep_levels": [0, 2], "sweep_seeds": 2,
             "max_imp_points": 2}
    else:
        s = {"grid": {"cnn": {"depths": [3, 6], "widths": [16, 32], "lrs": [0.01, 0.04, 0.16]},
                      "resnet": {"depths": [8, 14], "widths": [8], "lrs": [0.05, 0.2, 0.8]}},
             "warmups": [0, 100], "steps": 1000, "imp_levels": 6, "failure_points": 0.01,
             "unstable_barrier": 0.02, "sweep_ks": [0, 25, 100], "sweep_levels": [0, 6], "sweep_seeds": 5,
             "max_imp_points": 8}
    if steps:
        s["steps"] = steps
        s["sweep_ks"] = sorted({min(k, steps) for k in s["sweep_ks"]})
        s["warmups"] = sorted({min(w, steps) for w in s["warmups"]})
    s.update(num_samples=10_000, num_alphas=15, weight_decay=1e-4, momentum=0.9, batch_size=BATCH)
    return s


def grid_points(s: dict) -> list[dict]:
    """Every grid setting, as a dict with its name."""
    out = []
    for family, g in s["grid"].items():
        for depth, width, lr, warmup in itertools.product(g["depths"], g["widths"], g["lrs"], s["warmups"]):
            name = f"{family}{depth}_w{width}_lr{lr:g}_wu{warmup}"
            out.append({"setting": name, "family": family, "depth": depth, "width": width, "lr": lr,
                        "warmup": warmup})
    return out


def load_data(args, s: dict):
    """MNIST-1D from the ``mnist1d`` package (offline), ``[N, 40, 1]`` float32 (the test replaces this)."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise SystemExit("rewinding_mnist1d needs the mnist1d package: pip install 'jaxticket[experiments]' "
                         "(or pip install mnist1d)") from None
    from jaxticket import data as data_lib

    config = get_dataset_args()
    config.num_samples = s["num_samples"]
    d = make_dataset(config)
    x, xt = (np.asarray(d[k], np.float32)[..., None] for k in ("x", "x_test"))
    return data_lib.from_arrays(train=(x, np.asarray(d["y"], np.int32)), test=(xt, np.asarray(d["y_test"], np.int32)),
                                name="mnist1d")


def task_of(point: dict, s: dict) -> train.Task:
    model = (Conv1DNet(depth=point["depth"], width=point["width"]) if point["family"] == "cnn"
             else ResNet1D(depth=point["depth"], width=point["width"]))
    steps = s["steps"]
    tx = train.make_optimizer(train.TrainConfig(optimizer="sgd", lr=point["lr"], momentum=s["momentum"],
                                                weight_decay=s["weight_decay"], warmup_steps=point["warmup"],
                                                milestones=(steps // 2, 3 * steps // 4)))
    return train.Task(model, input_shape=(40, 1), tx=tx, name=point["setting"])


def batch_stats_mode(point: dict) -> str:
    return "recompute" if point["family"] == "resnet" else "interpolate"


def sweep(point, data, s, workdir, ks, levels, seeds):
    """One :func:`jaxticket.instability_sweep` of ``point`` (resumable in ``workdir``)."""
    return instability.instability_sweep(task_of(point, s), data, PRUNER, ks, levels, workdir=workdir,
                                         steps=s["steps"], batch_size=BATCH, copies=2, seeds=seeds,
                                         num_alphas=s["num_alphas"], batch_stats=batch_stats_mode(point),
                                         progress=False, log=lambda line: print(line, flush=True))


def run_grid_point(point, data, s, root: pathlib.Path) -> dict:
    """Stage 1: the dense network's two copies from its initialisation (one seed)."""
    folder = root / "grid" / point["setting"]
    if (folder / "diverged.txt").exists():
        return {"note": (folder / "diverged.txt").read_text().strip()}
    try:
        rows = sweep(point, data, s, folder, [0], [0], 1)
    except train.NonFiniteLossError as err:  # a setting that diverges is a result too
        rundir.write_atomic(folder / "diverged.txt", f"{err}\n")
        return {"note": str(err)}
    return rows[0]


def run_imp(point, data, s, root: pathlib.Path):
    """Stage 2: IMP at k = 0, one seed, levels 0..imp_levels (the ``ImpRun``)."""
    return lottery.imp(task_of(point, s), data, PRUNER, levels=s["imp_levels"], steps=s["steps"], batch_size=BATCH,
                       rewind_step=0, seeds=1, workdir=root / "imp" / point["setting"], progress=False,
                       log=lambda line: print(line, flush=True))


def distances(point, data, s, folder: pathlib.Path, rows: list[dict]) -> list[dict]:
    """``l2_to_full`` (over the copy's surviving weights) and ``l2_to_full_all`` (every
    parameter) for each sweep row with copies: copy 0's final weights (saved by the sweep)
    against the dense network's final weights of the same seed and k."""
    task = task_of(point, s)
    out = []
    for k in sorted({r["k"] for r in rows}):
        run = lottery.imp(task, data, PRUNER, levels=max(s["sweep_levels"]), steps=s["steps"], batch_size=BATCH,
                          rewind_step=k, seeds=s["sweep_seeds"], workdir=folder / f"imp_k{k:06d}", progress=False,
                          log=None)  # reads the sweep's lineage back
        dense = run.levels[0].params
        for r in [r for r in rows if r["k"] == k]:
            seed, level = r["seed"], r["level"]
            name = f"k{k:06d}_level{level:02d}" + (f"_seed{seed}" if s["sweep_seeds"] > 1 else "")
            finals = rundir.load_tree(folder / "points" / f"{name}_finals.npz")
            copy0 = jax.tree.map(lambda x: x[0], finals["params"])
            mask = jax.tree.map(lambda x: x[seed], run.levels[level].mask)
            dense_s = jax.tree.map(lambda x: x[seed], dense)
            out.append({**r, "l2_to_full": float(stability.l2_distance(dense_s, copy0, mask)),
                        "l2_to_full_all": float(stability.l2_distance(dense_s, copy0))})
    return out


# ---------------------------------------------------------------------------- stages and results


def point_row(point, stage, **values) -> dict:
    return {"stage": stage, **{k: point[k] for k in ("setting", "family", "depth", "width", "lr", "warmup")},
            **values}


def grid_rows(s: dict, root: pathlib.Path) -> list[dict]:
    """The grid's rows (stage ``grid``) from the run folder, a diverged setting with a note."""
    rows = []
    for point in grid_points(s):
        folder = root / "grid" / point["setting"]
        if (folder / "diverged.txt").exists():
            rows.append(point_row(point, "grid", k=0, level=0, density=1.0, seed=0,
                                  note=(folder / "diverged.txt").read_text().strip()))
        elif (folder / "results.json").exists():
            for r in json.loads((folder / "results.json").read_text()):
                rows.append(point_row(point, "grid", k=0, level=0, density=1.0, seed=0,
                                      test_accuracy=1.0 - r["final_test_error"], test_barrier=r["test_barrier"],
                                      train_barrier=r["train_barrier"], copies_test_accuracy=1.0 - r["final_test_error"]))
    return rows


def imp_rows(s: dict, root: pathlib.Path) -> list[dict]:
    rows = []
    for point in grid_points(s):
        folder = root / "imp" / point["setting"]
        if (folder / "results.json").exists():
            for r in lottery.load_results(folder):
                if r["kind"] == "imp":
                    rows.append(point_row(point, "imp", k=0, level=r["level"], density=round(r["density"], 6),
                                          seed=r["seed"], test_accuracy=r["final_test_accuracy"]))
    return rows


def candidates(grid: list[dict], s: dict) -> list[str]:
    """Settings whose dense network is unstable at k = 0, most unstable first (at most ``max_imp_points``)."""
    unstable = [r for r in grid if r.get("test_barrier") is not None and r["test_barrier"] >= s["unstable_barrier"]]
    return [r["setting"] for r in sorted(unstable, key=lambda r: -r["test_barrier"])][:s["max_imp_points"]]


def failures(imp: list[dict], s: dict) -> list[str]:
    """Settings where IMP at k = 0 falls more than ``failure_points`` below its dense network
    at some level (in the order of the IMP rows' settings)."""
    out = []
    for setting in dict.fromkeys(r["setting"] for r in imp):
        acc = {r["level"]: r["test_accuracy"] for r in imp if r["setting"] == setting}
        if 0 in acc and any(a < acc[0] - s["failure_points"] for level, a in acc.items() if level > 0):
            out.append(setting)
    return out


def sweep_rows(point, data, s, root: pathlib.Path, with_distances: bool) -> list[dict]:
    folder = root / "sweep" / point["setting"]
    rows = []
    if not (folder / "results.json").exists():
        return rows
    copies = json.loads((folder / "results.json").read_text())
    if with_distances and data is not None:
        copies = distances(point, data, s, folder, copies)
    by = {(r["k"], r["level"], r["seed"]): r for r in copies}
    for results in sorted(folder.glob("imp_k*/results.json")):
        k = int(results.parent.name[len("imp_k"):])
        for r in lottery.load_results(results.parent):
            if r["kind"] != "imp":
                continue
            c = by.get((k, r["level"], r["seed"]), {})
            rows.append(point_row(point, "sweep", k=k, level=r["level"], density=round(r["density"], 6), seed=r["seed"],
                                  test_accuracy=r["final_test_accuracy"], test_barrier=c.get("test_barrier"),
                                  train_barrier=c.get("train_barrier"), l2_to_full=c.get("l2_to_full"),
                                  l2_to_full_all=c.get("l2_to_full_all"),
                                  copies_test_accuracy=None if not c else 1.0 - c["final_test_error"]))
    return rows


def vals(rows, key, **where):
    return [r[key] for r in rows if all(r.get(f) == v for f, v in where.items()) and r.get(key) is not None]


def summarize(rows: list[dict], s: dict, swept: list[str]) -> str:
    grid = [r for r in rows if r["stage"] == "grid"]
    imp = [r for r in rows if r["stage"] == "imp"]
    lines = ["## Grid: dense network, two copies from one initialisation (one seed)", "",
             "| setting | dense test acc % | test barrier % | train barrier % | note |", "|---|---|---|---|---|"]
    for r in grid:
        acc = "-" if r.get("test_accuracy") is None else f"{100 * r['test_accuracy']:.2f}"
        tb = "-" if r.get("test_barrier") is None else f"{100 * r['test_barrier']:.2f}"
        trb = "-" if r.get("train_barrier") is None else f"{100 * r['train_barrier']:.2f}"
        lines.append(f"| {r['setting']} | {acc} | {tb} | {trb} | {r.get('note') or ''} |")
    if imp:
        lines += ["", "## IMP at k = 0 where the dense network is unstable (one seed): test accuracy % per level "
                  "(minus dense)", ""]
        levels = sorted({r["level"] for r in imp})
        lines += ["| setting | " + " | ".join(f"level {l} ({100 * 0.8 ** l:.0f}%)" for l in levels) + " |",
                  "|---|" + "---|" * len(levels)]
        for setting in dict.fromkeys(r["setting"] for r in imp):
            acc = {r["level"]: r["test_accuracy"] for r in imp if r["setting"] == setting}
            cells = [f"{100 * acc[l]:.2f}" + ("" if l == 0 else f" ({100 * (acc[l] - acc[0]):+.2f})")
                     if l in acc else "-" for l in levels]
            lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    for setting in swept:
        sw = [r for r in rows if r["stage"] == "sweep" and r["setting"] == setting]
        if not sw:
            continue
        lines += ["", f"## Sweep of k for {setting} (mean ± std [95% t-interval] over seeds)", "",
                  "| k | level | weights % | seeds | test accuracy % | minus dense (paired) | minus k = 0 (paired) | "
                  "test barrier % | l2_to_full | l2_to_full_all |", "|---|---|---|---|---|---|---|---|---|---|"]
        ks = sorted({r["k"] for r in sw})
        for k in ks:
            for level in sorted({r["level"] for r in sw if r["k"] == k}):
                acc = {r["seed"]: r["test_accuracy"] for r in sw if r["k"] == k and r["level"] == level}
                dense = {r["seed"]: r["test_accuracy"] for r in sw if r["k"] == k and r["level"] == 0}
                at0 = {r["seed"]: r["test_accuracy"] for r in sw if r["k"] == ks[0] and r["level"] == level}
                l2 = common.stats(vals(sw, "l2_to_full", k=k, level=level))
                l2a = common.stats(vals(sw, "l2_to_full_all", k=k, level=level))
                lines.append(
                    f"| {k} | {level} | {100 * np.mean(vals(sw, 'density', k=k, level=level)):.1f} | {len(acc)} | "
                    f"{common.fmt(common.stats(acc.values()))} | "
                    f"{'-' if level == 0 else common.fmt_paired(report.paired_stats(acc, dense))} | "
                    f"{'-' if k == ks[0] else common.fmt_paired(report.paired_stats(acc, at0))} | "
                    f"{common.fmt(common.stats(vals(sw, 'test_barrier', k=k, level=level)))} | "
                    f"{'-' if l2 is None else l2.format()} | {'-' if l2a is None else l2a.format()} |")
    return "\n".join(lines)


def write_outputs(rows: list[dict], out: pathlib.Path, s: dict, swept: list[str], plots: bool = True) -> None:
    common.write_csv(out / "results.csv", rows, FIELDS)
    rundir.write_atomic(out / "summary.md", f"# {NAME}\n\nMNIST-1D, SGD momentum 0.9, {s['steps']} iterations; "
                        f"accuracy and barriers in %\n\n{summarize(rows, s, swept)}\n")
    if not plots:
        return
    grid = [r for r in rows if r["stage"] == "grid" and r.get("test_barrier") is not None]
    if grid:
        plot_grid(grid, out / "grid_barriers.png")
    for setting in swept:
        sw = [r for r in rows if r["stage"] == "sweep" and r["setting"] == setting]
        if not sw:
            continue
        n = len({r["seed"] for r in sw})
        note = f"n = {n} seeds; bars: 95% t-interval of the mean"
        ks = sorted({r["k"] for r in sw})
        levels = sorted({r["level"] for r in sw if r["test_barrier"] is not None})
        for key, name, label, scale in (("test_barrier", "barrier_vs_k", "test error barrier (%)", 100),
                                        ("test_accuracy", "accuracy_vs_k", "test accuracy (%)", 100),
                                        ("l2_to_full", "l2_vs_k", "L2 to the dense final weights (surviving)", 1)):
            series = {f"level {l} ({100 * np.mean(vals(sw, 'density', level=l)):.0f}% weights)":
                      [(k, common.stats(vals(sw, key, k=k, level=l))) for k in ks] for l in levels}
            common.plot_ci(series, out / f"{name}.png", xlabel="rewind step k", ylabel=label,
                           title=f"MNIST-1D {setting}", note=note, scale=scale, xscale="symlog",
                           hlines=[(2.0, "stability threshold (2 points)")] if key == "test_barrier" else ())


def plot_grid(grid: list[dict], path) -> None:
    """The dense test barrier of every grid setting (one seed each: points, no bars)."""
    from jaxticket import plots

    fig = plots.figure((7.5, 4.2))
    ax = fig.add_subplot()
    for i, (lr, wu) in enumerate(sorted({(r["lr"], r["warmup"]) for r in grid})):
        sel = [r for r in grid if (r["lr"], r["warmup"]) == (lr, wu)]
        ax.scatter([r["setting"].split("_lr")[0] for r in sel], [100 * r["test_barrier"] for r in sel],
                   marker=common.MARKERS[i % len(common.MARKERS)], color=f"C{i}", label=f"lr {lr:g}, warm-up {wu}")
    ax.axhline(2.0, color="gray", linestyle="--", linewidth=1, label="stability threshold")
    ax.set_ylabel("dense test error barrier at k = 0 (%)")
    ax.set_title("MNIST-1D grid: two copies from one initialisation\nn = 1 seed per setting (points, no bars)",
                 fontsize="medium")
    ax.tick_params(axis="x", rotation=45)
    ax.legend(fontsize="x-small")
    ax.grid(alpha=0.3)
    plots.save_figure(fig, path)


def main(argv=None) -> int:
    parser = common.parser(NAME, __doc__, manual_help="unused (MNIST-1D is generated)",
                           quick_help="a small grid, every stage whatever the numbers, 300 iterations")
    parser.add_argument("--steps", type=int, default=None, help="iterations per training (default 1,000)")
    parser.add_argument("--report", action="store_true", help="train nothing: write the results the run folder holds")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    s = settings(args.quick, args.steps)
    out = pathlib.Path(args.out or common.RESULTS / (NAME + ("_quick" if args.quick else "")))
    out.mkdir(parents=True, exist_ok=True)
    suffix = ("_quick" if args.quick else "") + ("" if args.steps is None else f"_steps{args.steps}")
    root = pathlib.Path(args.workdir + (suffix if args.workdir.endswith(NAME) else ""))
    data = load_data(args, s)
    prov = None if args.report else common.Provenance(out, s)
    points = {p["setting"]: p for p in grid_points(s)}
    for point in points.values():  # stage 1
        if args.report:
            break
        t = time.perf_counter()
        run_grid_point(point, data, s, root)
        prov.stage(f"grid/{point['setting']}", time.perf_counter() - t)
        if not args.quick:  # --quick's two models: the next stage reuses their compiled programs
            jax.clear_caches()  # many small models in one process (see the README)
    todo = candidates(grid_rows(s, root), s)
    for setting in todo:  # stage 2
        if args.report:
            break
        t = time.perf_counter()
        run_imp(points[setting], data, s, root)
        prov.stage(f"imp/{setting}", time.perf_counter() - t)
        if not args.quick:
            jax.clear_caches()
    imp = [r for r in imp_rows(s, root) if r["setting"] in todo]
    failed = failures(imp, s)
    swept = failed[:1]
    for setting in swept:  # stage 3
        if args.report:
            break
        t = time.perf_counter()
        sweep(points[setting], data, s, root / "sweep" / setting, s["sweep_ks"], s["sweep_levels"], s["sweep_seeds"])
        prov.stage(f"sweep/{setting}", time.perf_counter() - t)
    rows = grid_rows(s, root) + imp
    for setting in swept:
        rows += sweep_rows(points[setting], data, s, root, with_distances=True)
    if prov is not None:
        prov.session["outcome"] = {"unstable": todo, "failed": failed, "swept": swept}
        prov.write()
    write_outputs(rows, out, s, swept)
    return common.print_summary(out)


if __name__ == "__main__":
    sys.exit(main())
