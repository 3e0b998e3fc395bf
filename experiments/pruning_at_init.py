"""Frankle et al. (2021), "Pruning neural networks at initialization: why are we missing the
mark?": SNIP, GraSP, SynFlow, magnitude and random pruning at initialization against
magnitude pruning after training (IMP with rewinding), and the paper's sanity checks.

    python experiments/pruning_at_init.py --manual-dir ../shared/data            # both setups
    python experiments/pruning_at_init.py --manual-dir ../shared/data --quick    # a check

``--manual-dir`` is a folder holding ``mnist/`` and ``fashion_mnist/`` (the four
``*-ubyte.gz`` files each). Two setups (the paper's networks, ResNet-20/VGG-16 on CIFAR-10
and larger, are beyond a 2-core CPU; these are the same questions on networks that train
here):

* ``lenet_300_100_mnist``: LeNet-300-100 on MNIST, Adam 1.2e-3, batch 60, 5,000 steps per
  training; IMP with global magnitude pruning of 20% per level to level 19 (1.4% of the
  weights left); methods and checks at levels 7, 13 and 19 (21%, 5.5%, 1.4%).
* ``lenet5_fashion_mnist``: LeNet-5 (3x3 convs 6-16, fc 120-84-10) on Fashion-MNIST,
  Adam 1e-3, batch 64, 1,875 steps (2 epochs) per training; IMP to level 13; methods
  and checks at levels 7 and 13.

Every kernel is prunable (the output layer's too), three seeds (different
initialisations and data orders), rewinding to the initialization (k = 0). At each
chosen IMP level, every pruning-at-initialization method prunes the *same* initial
weights of each seed to the IMP mask's density in one shot (SynFlow in its 100 rounds),
globally (random: the same fraction of every layer), and is trained as a branch of the
run (``BranchContext.prune_at_rewind``). The sanity checks of the paper's Section 5, on
every method: ``shuffle`` (the mask shuffled within each layer: same layer-wise
densities, random places), ``reinit`` (the mask on a fresh initialisation) and
``invert`` (the scores inverted: the highest-scoring weights go); IMP's own shuffle and
reinit use the lineage's branches. ``random`` has no checks (they leave it a random
mask). A second IMP lineage per setup rewinds to step k = ``rewind_step`` (5% of
training: 250 and 94 steps) instead of the initialization, with its own shuffle and
reinit checks at the same levels (``imp_rewound``: the paper's "lottery ticket
rewinding" baseline); ``--lineages k0`` or ``rewound`` runs one of the two.

Writes ``experiments/results/pruning_at_init/``: ``results.csv`` (``setup, method,
check, level, density, seed, test_accuracy``: the final test accuracy after the same
number of steps), ``summary.md`` (mean ± std [95% interval] over seeds, the claims'
differences), ``accuracy_vs_density_<setup>.png`` and ``provenance.json``. Resumable: the
run directories under ``--workdir`` keep every finished training.
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

from jaxticket import lottery, masks, plots, pruning  # noqa: E402

NAME = "pruning_at_init"
FIELDS = ("setup", "method", "check", "level", "density", "seed", "test_accuracy")
METHODS = ("snip", "grasp", "synflow", "magnitude", "random")  # at initialization
CHECKS = ("none", "shuffle", "reinit", "invert")


def setups(quick: bool) -> dict:
    full = {
        "lenet_300_100_mnist": dict(model="lenet_300_100", dataset="mnist", lr=1.2e-3, batch_size=60, steps=5000,
                                    levels=19, branch_levels=[7, 13, 19], rewind_step=250),
        "lenet5_fashion_mnist": dict(model="lenet5", dataset="fashion_mnist", lr=1e-3, batch_size=64, steps=1875,
                                     levels=13, branch_levels=[7, 13], rewind_step=94),
    }
    if quick:
        for s in full.values():
            s.update(QUICK)
    return full


QUICK = {"steps": 300, "levels": 4, "branch_levels": [2, 4], "rewind_step": 15}  # --quick, per setup


def load_data(config: lottery.LotteryConfig, args):
    """The setup's dataset without a validation split (``--manual-dir`` holds mnist/ and fashion_mnist/)."""
    return lottery.load_data(config, data_dir=args.data_dir, manual_dir=args.manual_dir)


LINEAGES = ("k0", "rewound")  # IMP rewound to the initialization, and to s["rewind_step"]


def lineage_dir(setup: str, lineage: str) -> str:
    return setup if lineage == "k0" else f"{setup}_rewound"


def config(s: dict, seeds: int, rewind_step: int = 0) -> lottery.LotteryConfig:
    return lottery.LotteryConfig.of(model=s["model"], dataset=s["dataset"], optimizer="adam", lr=s["lr"],
                                    batch_size=s["batch_size"], steps=s["steps"], eval_every=0, eval_batch_size=2000,
                                    levels=s["levels"], seeds=seeds, validation_size=0, rewind_step=rewind_step,
                                    pruner={"method": "magnitude", "fraction": 0.2, "scope": "global"},
                                    prunable="kernels")


# ----------------------------------------------------------------------------- the branches


def at_init_pruner(method: str, fraction: float, allow_empty: bool = False):
    """``allow_empty``: the inverted scores may remove a whole layer (inverted SynFlow
    removes the output layer first); the check then trains a disconnected network, as
    the paper's code would, instead of stopping."""
    if method == "random":
        return pruning.random(fraction, scope="layer", allow_empty=allow_empty)
    if method == "magnitude":
        return pruning.magnitude(fraction, scope="global", allow_empty=allow_empty)
    factory = {"snip": pruning.snip, "grasp": pruning.grasp, "synflow": pruning.synflow}[method]
    return factory(fraction, allow_empty=allow_empty)


def removed_fraction(mask: masks.Mask) -> float:
    """The fraction of prunable weights the lineage's mask (seed 0) has removed."""
    return 1.0 - float(masks.host_density(mask)[0])


def kind_name(method: str, check: str) -> str:
    return f"init_{method}" + ("" if check == "none" else f"_{check}")


def register_kinds() -> list[tuple[str, str, str]]:
    """Registers one branch kind per (method, check); returns ``(kind, method, check)``."""
    out = []
    for method in METHODS:
        for check in (("none",) if method == "random" else CHECKS):
            kind = kind_name(method, check)

            def build(ctx, method=method, check=check):
                pruner = at_init_pruner(method, removed_fraction(ctx.mask), allow_empty=check == "invert")
                mask = ctx.prune_at_rewind(pruning.inverted(pruner) if check == "invert" else pruner)
                if check == "shuffle":
                    mask = jax.vmap(lambda m, k: pruning.random_like(m, k, "layer"))(mask, ctx.keys)
                if check == "reinit":
                    return ctx.fresh(mask, lottery.REINIT_SEED_STRIDE * ctx.level)
                return ctx.rewound(mask)

            lottery.register_branch(kind, overwrite=True)(build)
            out.append((kind, method, check))
    return out


# ----------------------------------------------------------------------------- outputs


def tidy(setup: str, rows: list[dict], kinds: dict, lineage: str = "k0") -> list[dict]:
    """Tidy rows of one lineage's run folder. The rewound lineage gives ``imp_rewound``
    (its level 0 is the same dense training as the k = 0 lineage's and is left out)."""
    out = []
    imp = "imp" if lineage == "k0" else "imp_rewound"
    for r in rows:
        if r["kind"] == "imp":
            if lineage != "k0" and r["level"] == 0:
                continue
            method, check = ("dense" if r["level"] == 0 else imp), "none"
        elif r["kind"] in ("shuffle", "reinit"):
            method, check = imp, r["kind"]
        elif r["kind"] in kinds:
            method, check = kinds[r["kind"]]
        else:
            continue
        out.append({"setup": setup, "method": method, "check": check, "level": r["level"],
                    "density": round(r["density"], 6), "seed": r["seed"], "test_accuracy": r["final_test_accuracy"]})
    return out


def acc(rows, setup, method, check, level):
    return [r["test_accuracy"] for r in rows if (r["setup"], r["method"], r["check"], r["level"]) == (setup, method, check, level)]


def difference(a, b) -> str:
    """mean(a) - mean(b) in points with its 95% Welch interval, or '-'."""
    from scipy import stats as st

    if len(a) < 2 or len(b) < 2:
        return "-"
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    se = np.sqrt(va + vb)
    dof = (va + vb) ** 2 / max(va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1), 1e-300)
    half = float(st.t.ppf(0.975, dof) * se) if se > 0 else 0.0
    return f"{100 * (np.mean(a) - np.mean(b)):+.2f} ± {100 * half:.2f}"


def summarize(rows: list[dict], plan: dict) -> str:
    parts = [f"# {NAME}: test accuracy (%) after training, mean ± std [95% t-interval] over seeds\n"]
    for setup, s in plan.items():
        parts.append(f"## {setup}\n")
        dense = common.stats(acc(rows, setup, "dense", "none", 0))
        parts.append(f"dense: {common.fmt(dense)}\n")
        for level in s["branch_levels"]:
            dens = [r["density"] for r in rows if r["setup"] == setup and r["level"] == level and r["method"].startswith("imp")]
            if not dens:
                continue
            parts.append(f"### level {level}: {100 * np.mean(dens):.2f}% of the weights\n")
            parts.append("| method | none | shuffle | reinit | invert | shuffle - none | reinit - none | invert - none |")
            parts.append("|---|---|---|---|---|---|---|---|")
            for method in ("imp", "imp_rewound", *METHODS):
                base = acc(rows, setup, method, "none", level)
                if not base:
                    continue
                cells = [method] + [common.fmt(common.stats(acc(rows, setup, method, c, level))) for c in CHECKS]
                cells += [difference(acc(rows, setup, method, c, level), base) for c in CHECKS[1:]]
                parts.append("| " + " | ".join(cells) + " |")
            imp = acc(rows, setup, "imp", "none", level)
            parts.append("\nIMP minus each method at initialization (points, 95% interval): " + ", ".join(
                f"{m} {difference(imp, acc(rows, setup, m, 'none', level))}" for m in METHODS) + "\n")
    return "\n".join(parts) + "\n"


def plot(rows: list[dict], setup: str, path: pathlib.Path) -> None:
    series, ns = {}, {}
    for method in ("imp", "imp_rewound", *METHODS):
        for check in CHECKS:
            levels = sorted({r["level"] for r in rows if (r["setup"], r["method"], r["check"]) == (setup, method, check)})
            if not levels or (check != "none" and method == "random"):
                continue
            pts = [(np.mean([r["density"] for r in rows if (r["setup"], r["method"], r["check"], r["level"]) ==
                             (setup, method, check, l)]), common.stats(acc(rows, setup, method, check, l)))
                   for l in levels]
            pts = [(d, st) for d, st in pts if st is not None and d < 1.0]
            if pts and (check in ("none", "shuffle") or method.startswith("imp")):
                label = method if check == "none" else f"{method} ({check})"
                series[label] = ([d for d, _ in pts], [100 * st.mean for _, st in pts], [100 * st.std for _, st in pts])
                ns[label] = [st.n for _, st in pts]
    plots.plot_series_vs_density(series, path, ylabel="test accuracy (%)", title=f"{setup}: pruning at init vs IMP",
                                 n=ns)


def read_rows(path: pathlib.Path) -> list[dict]:
    """``results.csv`` back as rows (numbers as numbers)."""
    import csv

    def num(key, v):
        return v if key in ("setup", "method", "check") else (int(v) if key in ("level", "seed") else float(v))

    with open(path, newline="") as f:
        return [{k: num(k, v) for k, v in r.items()} for r in csv.DictReader(f)]


def main(argv=None) -> int:
    parser = common.parser(NAME, __doc__, manual_help="folder holding mnist/ and fashion_mnist/",
                           quick_help="300 steps, 4 levels (a check)")
    parser.add_argument("--setups", nargs="+", default=None, help="a subset of the setups")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lineages", nargs="+", choices=LINEAGES, default=list(LINEAGES),
                        help="k0: IMP rewound to the initialization, with every method and check at its "
                             "densities; rewound: IMP rewound to the setup's rewind_step, with its shuffle "
                             "and reinit checks (default: both)")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: write the results of what the run folders hold")
    parser.add_argument("--from-csv", action="store_true",
                        help="train and read nothing but the results folder's results.csv: rewrite its summary "
                             "and plots (where the run folders are gone)")
    args = parser.parse_args(argv)
    plan = setups(args.quick)
    if args.setups:
        plan = {k: plan[k] for k in args.setups}
    suffix = "_quick" if args.quick else ""
    out = pathlib.Path(args.out or common.RESULTS / (NAME + suffix))
    out.mkdir(parents=True, exist_ok=True)
    root = pathlib.Path(args.workdir + suffix)
    kinds = register_kinds()
    names = {k: (m, c) for k, m, c in kinds}

    def write_outputs():
        rows = []
        for setup in plan:
            for lineage in LINEAGES:
                if (root / lineage_dir(setup, lineage)).is_dir():
                    rows += tidy(setup, lottery.load_results(root / lineage_dir(setup, lineage)), names, lineage)
            plot(rows, setup, out / f"accuracy_vs_density_{setup}.png")
        common.write_csv(out / "results.csv", rows, FIELDS)
        common.rundir.write_atomic(out / "summary.md", summarize(rows, plan))

    if args.from_csv:
        rows = read_rows(out / "results.csv")
        for setup in plan:
            plot(rows, setup, out / f"accuracy_vs_density_{setup}.png")
        common.rundir.write_atomic(out / "summary.md", summarize(rows, plan))
        return common.print_summary(out)
    if args.report:
        write_outputs()
        return common.print_summary(out)
    prov = common.Provenance(out, {"seeds": args.seeds, "setups": plan, "lineages": args.lineages, "configs": {
        lineage_dir(k, lineage): config(s, args.seeds, s["rewind_step"] if lineage == "rewound" else 0).to_dict()
        for k, s in plan.items() for lineage in args.lineages}})
    for lineage in args.lineages:
        for setup, s in plan.items():
            cfg = config(s, args.seeds, s["rewind_step"] if lineage == "rewound" else 0)
            workdir = root / lineage_dir(setup, lineage)
            data = load_data(cfg, args)
            t = time.perf_counter()
            lottery.run_imp(cfg, workdir, datasets=data, progress=False)
            prov.stage(f"{workdir.name}/imp", time.perf_counter() - t)
            write_outputs()
            run = lottery.open_run(workdir, datasets=data, progress=False)
            try:
                # the sparsest level first: there the methods differ most
                for level in sorted(s["branch_levels"], reverse=True):
                    for kind in ["shuffle", "reinit"] + (list(names) if lineage == "k0" else []):
                        t = time.perf_counter()
                        run.branch(kind, [level])
                        prov.stage(f"{workdir.name}/{kind}/{level}", time.perf_counter() - t)
                        write_outputs()
            finally:
                run.close()
    print(json.dumps(prov.data["sessions"][-1]["stages"]))
    return common.print_summary(out)


if __name__ == "__main__":
    sys.exit(main())
