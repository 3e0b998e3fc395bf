"""Sparse training against lottery tickets at matched density: IMP with weight rewinding,
IMP with learning-rate rewinding, fine-tuning, gradual magnitude pruning, SET, RigL,
static ERK and SNIP, on LeNet-300-100 / MNIST and LeNet-5 / Fashion-MNIST.

    python experiments/sparse_training.py --manual-dir ../shared/data            # this CPU (committed)
    python experiments/sparse_training.py --manual-dir ../shared/data --quick    # a check (~3 min)
    python experiments/sparse_training.py --report                               # results of what the run folder holds

``--manual-dir`` holds ``mnist/`` and ``fashion_mnist/`` (TFDS manual downloads).

Setting, per setup (``SETUPS``): Adam at the setup's learning rate with step decay (x0.1
at 50% and 75% of the T steps a training run takes: a schedule, so that fine-tuning
and learning-rate rewinding differ), batch 60 (LeNet-300-100) or 64 (LeNet-5), every
kernel prunable (output layer included), three seeds (init and data order ``+ seed``,
the same for every method: differences are paired by seed).

* ``imp_rewind``: IMP, 20% of each layer's survivors by magnitude per level, weights
  rewound to the initialisation (k = 0; Frankle & Carbin);
* ``imp_lr_rewind``: the same pruning, the previous level's trained weights kept and the
  learning-rate schedule replayed from step 0 (Renda et al. 2020's learning-rate rewinding);
* ``imp_finetune``: the same pruning, the trained weights kept and trained T steps at the
  schedule's final learning rate (Renda et al.'s fine-tuning baseline);
* ``gmp``: one run of T steps, magnitude pruning on Zhu & Gupta's cubic ramp from 10% to
  50% of training (every 1% of it), uniform layer densities;
* ``set`` / ``rigl``: one run of T steps from a random ERK mask, 30% of each layer's
  survivors dropped by magnitude and regrown at random (SET) or where the dense gradient
  is largest (RigL), update fraction cosine-decayed, every 2% of training until 75%;
* ``static``: one run of T steps on a fixed random ERK mask;
* ``snip``: SNIP (Lee et al. 2019) at the initialisation on one batch, global, then T steps.

Matched densities: IMP levels 7, 13 and 19 keep 0.8^L of every layer (20.97%, 5.50%,
1.44%); the one-run methods target exactly those overall densities (the prunable
weights kept); SNIP prunes the level's own initial weights to the level's density (a
branch of the ``imp_rewind`` lineage). Training cost: ``train_steps`` is the number of
optimizer steps to produce the network (IMP at level L: (L + 1) T; the one-run methods:
T), ``wall_s`` its wall time on this machine (IMP: levels 0..L summed).

Writes ``experiments/results/sparse_training/``: ``results.csv`` (one row per network
trained: ``setup, method, level, target_density, density, seed, test_accuracy,
train_steps, wall_s``), ``summary.md`` (accuracy per method and density, seed-paired
differences with 95% t-intervals and what each allows, cost), ``accuracy_<setup>.png``
and ``provenance.json``. The run folder (``--workdir``, default ``runs/sparse_training``)
is resumable: every network trained is kept there and read back.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import numpy as np  # noqa: E402

from jaxticket import lottery, masks, pruning, report, rundir, sparse, train  # noqa: E402

NAME = "sparse_training"
FIELDS = ("setup", "method", "level", "target_density", "density", "seed", "test_accuracy", "train_steps", "wall_s")
RATE = 0.2
SETUPS = {
    "lenet300_mnist": {"model": "lenet_300_100", "dataset": "mnist", "lr": 1.2e-3, "batch_size": 60,
                       "steps": 2000},
    "lenet5_fashion": {"model": "lenet5", "dataset": "fashion_mnist", "lr": 1e-3, "batch_size": 64,
                       "steps": 938},
}
FULL = {"seeds": 3, "levels": 19, "match_levels": (7, 13, 19), "setups": list(SETUPS)}
QUICK = {"seeds": 2, "levels": 2, "match_levels": (1, 2), "setups": ["lenet300_mnist"], "steps": 60}
LINEAGES = {"imp_rewind": "rewind", "imp_lr_rewind": "lr_rewind", "imp_finetune": "finetune"}
ONE_RUN = ("gmp", "set", "rigl", "static")
METHODS = (*LINEAGES, *ONE_RUN, "snip")
SNIP_KIND = "snip_at_init"
MARGIN = 0.005  # equivalence margin of the verdicts: +-0.5 points


def settings(quick: bool) -> dict:
    s = dict(QUICK if quick else FULL)
    s["setups"] = {name: {**SETUPS[name], **({"steps": s["steps"]} if "steps" in s else {})} for name in s["setups"]}
    s.pop("steps", None)
    return s


def task_of(spec: dict) -> train.Task:
    """Adam with step decay (x0.1 at 50% and 75% of the spec's steps) on the spec's model.

    An optax schedule (it counts the optimizer's updates): fine-tuning sets its counter to
    T - 1 (the final learning rate), learning-rate rewinding to k."""
    import optax

    t = spec["steps"]
    base = train.task_from_config(train.TrainConfig(model=spec["model"], dataset=spec["dataset"]))
    schedule = optax.piecewise_constant_schedule(spec["lr"], {t // 2: 0.1, (3 * t) // 4: 0.1})
    return train.Task(base.model, base.input_shape, tx=optax.adam(schedule), name=base.name)


def load_data(spec: dict, args):
    """The setup's dataset, all its training images, no validation split (the test replaces this)."""
    from jaxticket import data

    manual = None if args.manual_dir is None else str(pathlib.Path(args.manual_dir) / spec["dataset"])
    return data.splits(spec["dataset"], validation_size=0, data_dir=args.data_dir, manual_dir=manual)


def method_settings(method: str, steps: int) -> dict:
    """The one-run methods' schedules (module docstring), in steps of a T-step run."""
    def at(fraction):
        return max(1, int(round(fraction * steps)))

    if method == "gmp":
        return {"start": at(0.1), "end": at(0.5), "every": at(0.01)}
    if method in ("set", "rigl"):
        return {"fraction": 0.3, "every": at(0.02), "end": at(0.75), "distribution": "erk"}
    return {"distribution": "erk"}


def fit_kw(spec: dict, s: dict) -> dict:
    return dict(steps=spec["steps"], batch_size=spec["batch_size"], seeds=s["seeds"], eval_batch_size=2000,
                log=lambda line: print(line, flush=True))


def register_snip() -> None:
    """The branch kind ``snip_at_init``: SNIP on the initial weights, to the level's density, rewound."""
    def build(ctx):
        removed = 1.0 - float(masks.host_density(ctx.mask)[0])
        return ctx.rewound(ctx.prune_at_rewind(pruning.snip(removed)))

    lottery.register_branch(SNIP_KIND, overwrite=True)(build)


def run_lineage(name: str, spec: dict, data, s: dict, workdir: pathlib.Path):
    return lottery.imp(task_of(spec), data, pruning.magnitude(RATE, scope="layer"), levels=s["levels"],
                       rewind_step=0, reset=LINEAGES[name], workdir=workdir / name, progress=False,
                       **fit_kw(spec, s))


def run_one(method: str, level: int, spec: dict, data, s: dict, workdir: pathlib.Path):
    return sparse.train_sparse(task_of(spec), data, method, density=(1 - RATE) ** level,
                               workdir=workdir / f"{method}_level{level:02d}",
                               **fit_kw(spec, s), **method_settings(method, spec["steps"]))


# ----------------------------------------------------------------------------- results


def _level_summaries(root: pathlib.Path, kind: str) -> dict:
    base = root / "levels" if kind == rundir.IMP_KIND else root / "branches" / kind
    out = {}
    for path in sorted(base.glob("level_*/" + rundir.SUMMARY_FILE)):
        summary = json.loads(path.read_text())
        out[int(summary["level"])] = summary
    return out


def rows_of(workdir: pathlib.Path, s: dict) -> list[dict]:
    """Tidy rows from the run folder (whatever it holds)."""
    rows = []
    for setup, spec in s["setups"].items():
        t, root = spec["steps"], workdir / setup

        def add(method, level, target, row, steps, wall):
            rows.append({"setup": setup, "method": method, "level": level, "target_density": round(target, 6),
                         "density": round(float(row["density"]), 6), "seed": int(row["seed"]),
                         "test_accuracy": row["final_test_accuracy"], "train_steps": steps,
                         "wall_s": round(float(wall), 1)})

        for name in LINEAGES:
            levels = _level_summaries(root / name, rundir.IMP_KIND)
            for level, summary in levels.items():
                if level not in (0, *s["match_levels"]):
                    continue
                wall = sum(levels[i].get("elapsed_s", np.nan) for i in range(level + 1) if i in levels)
                for row in summary["rows"]:
                    add("dense" if level == 0 else name, level, (1 - RATE) ** level, row, (level + 1) * t, wall)
            if name == "imp_rewind":
                for level, summary in _level_summaries(root / name, SNIP_KIND).items():
                    for row in summary["rows"]:
                        add("snip", level, (1 - RATE) ** level, row, t, summary.get("elapsed_s", np.nan))
        for method in ONE_RUN:
            for level in s["match_levels"]:
                path = root / f"{method}_level{level:02d}" / "summary.json"
                if path.exists():
                    for row in json.loads(path.read_text())["rows"]:
                        add(method, level, (1 - RATE) ** level, row, t, row.get("elapsed_s", np.nan))
    dense = {(r["setup"], r["seed"]) for r in rows if r["method"] == "dense"}
    rows = [r for r in rows if r["method"] != "dense" or (r["setup"], r["seed"]) in dense]
    return sorted({(r["setup"], r["method"], r["level"], r["seed"]): r for r in rows}.values(),
                  key=lambda r: (list(s["setups"]).index(r["setup"]), r["level"], r["method"], r["seed"]))


def per_seed(rows, **match) -> dict:
    return {r["seed"]: r["test_accuracy"] for r in rows if all(r[k] == v for k, v in match.items())
            and r["test_accuracy"] is not None}


# The claims: (label, a, b, what the paper says of a - b)
CLAIMS = (
    ("Renda et al.: learning-rate rewinding >= weight rewinding", "imp_lr_rewind", "imp_rewind", ">="),
    ("Renda et al.: weight rewinding > fine-tuning", "imp_rewind", "imp_finetune", ">"),
    ("Renda et al.: learning-rate rewinding > fine-tuning", "imp_lr_rewind", "imp_finetune", ">"),
    ("Evci et al.: RigL >= SET", "rigl", "set", ">="),
    ("Evci et al.: SET >= static", "set", "static", ">="),
    ("Evci et al.: RigL >= static", "rigl", "static", ">="),
    ("Zhu & Gupta: one gradual run matches IMP", "gmp", "imp_rewind", "="),
    ("Lee et al.: SNIP vs IMP (not a claim of the paper; a baseline)", "snip", "imp_rewind", "?"),
)


def claim_verdict(d, relation: str) -> str:
    """What the 95% interval of a seed-paired difference allows about a claimed relation."""
    if d is None or d.n < 2:
        return "not testable here (fewer than 2 seeds)"
    found = common.difference_verdict(d, MARGIN)
    if relation == ">":
        return {"higher": "reproduced"}.get(found, "not reproduced" if found == "lower" else
                                           f"not reproduced ({found})")
    if relation == ">=":
        if found in ("higher", "equal within ±margin"):
            return f"reproduced ({found})"
        return "not reproduced (lower)" if found == "lower" else f"not shown ({found})"
    if relation == "=":
        return "reproduced (equal within ±0.5 points)" if found == "equal within ±margin" else \
            f"not reproduced ({found})"
    return found


def comparisons(rows, s) -> list[dict]:
    out = []
    for setup in s["setups"]:
        for level in s["match_levels"]:
            for label, a, b, relation in CLAIMS:
                d = report.paired_stats(per_seed(rows, setup=setup, method=a, level=level),
                                        per_seed(rows, setup=setup, method=b, level=level))
                out.append({"setup": setup, "level": level, "claim": label, "a": a, "b": b, "relation": relation,
                            "diff": d, "verdict": claim_verdict(d, relation)})
    return out


def density_of(rows, setup, level) -> float:
    ds = [r["density"] for r in rows if r["setup"] == setup and r["level"] == level and r["method"] == "imp_rewind"]
    return float(np.mean(ds)) if ds else (1 - RATE) ** level


def summarize(rows, s) -> str:
    seeds = s["seeds"]
    parts = [f"# {NAME}: test accuracy (%), mean ± SD (ddof = 1) [95% t-interval] over {seeds} seeds\n",
             "Every method at a level has the same density (the level's 0.8^L of the prunable weights); "
             "differences are paired by seed (the same init and data-order seed), 95% t-intervals; "
             f"'equal' means the interval lies inside ±{100 * MARGIN:.1f} points.\n"]
    by_claim = comparisons(rows, s)
    for setup, spec in s["setups"].items():
        parts.append(f"## {setup} ({spec['model']} on {spec['dataset']}, T = {spec['steps']} steps per training)\n")
        parts.append(f"dense: {common.fmt(common.stats(per_seed(rows, setup=setup, method='dense', level=0).values()))}\n")
        header = "| method | " + " | ".join(f"level {l}: {100 * density_of(rows, setup, l):.2f}%"
                                          for l in s["match_levels"]) + " |"
        parts += [header, "|---" * (len(s["match_levels"]) + 1) + "|"]
        for method in METHODS:
            cells = [common.fmt(common.stats(per_seed(rows, setup=setup, method=method, level=l).values()))
                     for l in s["match_levels"]]
            parts.append(f"| {method} | " + " | ".join(cells) + " |")
        parts.append("\n### Claims: seed-paired difference a - b (points) [95% t-interval], verdict\n")
        parts += ["| claim | a - b | " + " | ".join(f"level {l}" for l in s["match_levels"]) + " |",
                  "|---|---|" + "---|" * len(s["match_levels"])]
        for label, a, b, _ in CLAIMS:
            cells = []
            for c in by_claim:
                if c["setup"] == setup and c["claim"] == label:
                    cells.append(f"{common.fmt_paired(c['diff'])}: {c['verdict']}")
            parts.append(f"| {label} | {a} - {b} | " + " | ".join(cells) + " |")
        parts.append("\n### Cost to produce the network: optimizer steps, wall time (s, mean over seeds' runs)\n")
        parts += ["| method | " + " | ".join(f"level {l}" for l in s["match_levels"]) + " |",
                  "|---" * (len(s["match_levels"]) + 1) + "|"]
        for method in METHODS:
            cells = []
            for l in s["match_levels"]:
                rs = [r for r in rows if r["setup"] == setup and r["method"] == method and r["level"] == l]
                cells.append("-" if not rs else f"{rs[0]['train_steps']} steps, {np.mean([r['wall_s'] for r in rs]):.0f} s")
            parts.append(f"| {method} | " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts) + "\n"


def write_outputs(workdir, out: pathlib.Path, s: dict, plots: bool = True) -> list[dict]:
    rows = rows_of(workdir, s)
    common.write_csv(out / "results.csv", rows, FIELDS)
    rundir.write_atomic(out / "summary.md", summarize(rows, s))
    if plots:
        for setup, spec in s["setups"].items():
            series = {}
            for method in METHODS:
                pts = [(density_of(rows, setup, l),
                        common.stats(per_seed(rows, setup=setup, method=method, level=l).values()))
                       for l in s["match_levels"]]
                if any(p[1] is not None for p in pts):
                    series[method] = pts
            if series:
                common.plot_ci(series, out / f"accuracy_{setup}.png", xlabel="percent of weights remaining",
                               ylabel="test accuracy (%)", title=f"{spec['model']} on {spec['dataset']}",
                               note=f"n = {s['seeds']} seeds, bars: 95% t-intervals", scale=100,
                               log_density_x=True)
    return rows


def main(argv=None) -> int:
    parser = common.parser(NAME, __doc__, manual_help="folder holding mnist/ and fashion_mnist/ (TFDS manual files)",
                           quick_help="2 seeds, LeNet-300-100 only, levels 0-2, 60 steps per training")
    parser.add_argument("--report", action="store_true", help="train nothing: write the results the run folder holds")
    args = parser.parse_args(argv)
    s = settings(args.quick)
    out = pathlib.Path(args.out or common.RESULTS / (NAME + ("_quick" if args.quick else "")))
    out.mkdir(parents=True, exist_ok=True)
    workdir = pathlib.Path(args.workdir + ("_quick" if args.quick and args.workdir.endswith(NAME) else ""))
    if not args.report:
        register_snip()
        prov = common.Provenance(out, {**s, "rate": RATE, "optimizer": "adam, x0.1 at 50% and 75% of T",
                                       "methods": {m: method_settings(m, 100) for m in ONE_RUN},
                                       "method_settings_note": "in steps of a 100-step run; scaled to T"})
        for setup, spec in s["setups"].items():
            data = load_data(spec, args)
            for method in ONE_RUN:  # cheap ones first: a run cut short still has every method at some density
                for level in sorted(s["match_levels"], reverse=True):
                    t = time.perf_counter()
                    run_one(method, level, spec, data, s, workdir / setup)
                    prov.stage(f"{setup}/{method}_level{level}", time.perf_counter() - t)
                write_outputs(workdir, out, s, plots=False)
            for name in LINEAGES:
                t = time.perf_counter()
                lineage = run_lineage(name, spec, data, s, workdir / setup)
                prov.stage(f"{setup}/{name}", time.perf_counter() - t)
                if name == "imp_rewind":
                    t = time.perf_counter()
                    lineage.branch(SNIP_KIND, levels=list(s["match_levels"]))
                    prov.stage(f"{setup}/snip", time.perf_counter() - t)
                write_outputs(workdir, out, s, plots=False)
    write_outputs(workdir, out, s)
    return common.print_summary(out)


if __name__ == "__main__":
    sys.exit(main())
