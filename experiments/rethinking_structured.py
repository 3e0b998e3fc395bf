"""Liu et al. (2019), "Rethinking the value of network pruning": with structured pruning,
the pruned architecture trained from a random re-initialisation, or from scratch as a
smaller dense network, matches the rewound subnetwork.

    python experiments/rethinking_structured.py --manual-dir ../shared/data/mnist            # this CPU (committed)
    python experiments/rethinking_structured.py --manual-dir ../shared/data/mnist --epochs 30 # Paganini & Forde's length
    python experiments/rethinking_structured.py --manual-dir ../shared/data/mnist --quick    # a check (~5 min)

Setting (the structured lineages of ``paganini_forde_lenet5``): the PyTorch tutorial's
LeNet-5 (``lenet5``: 3x3 convs 6-16, fc 120-84-10), MNIST's 60K training images, Adam
1e-3, batch 64, ``--epochs`` per level (default 1, as the committed Paganini & Forde
results), per-layer Ln-structured pruning (L1 and L2 norms) of 20% of the output
channels / units of conv1, conv2, fc1 and fc2 per level (counts rounded half to even),
the output layer kept, rewinding to the initialisation (k = 0), five seeds trained
together, levels 0-10. At levels 2, 4, 6, 8 and 10 (trained in the order 10, 2, 6, 4, 8, so
that a run cut short still spans the densities), per seed:

* ``rewind``: the lineage's level (the mask on the initial weights, IMP at k = 0);
* ``reinit``: the same mask on a fresh initialisation (branch ``reinit``);
* ``scratch``: the smaller dense architecture the structured mask leaves (conv1, conv2,
  fc1 and fc2 with the kept channel / unit counts, every input of the next layer that a
  removed unit fed dropped as well; output 10), a fresh Glorot-normal initialisation,
  trained for the same number of iterations (Liu et al.'s Scratch-E);
* ``scratch_b``: the same with the same training FLOPs as the full network, capped at
  twice the iterations (Liu et al.'s Scratch-B rule: ``steps x min(FLOPs_full /
  FLOPs_small, 2)``, FLOPs = multiply-accumulates of one forward pass).

The kept counts depend only on the level (the same for L1 and L2 and every seed), so
one ``scratch`` / ``scratch_b`` network per level and seed serves both lineages (rows
with ``method = structured``). A structured mask zeroes a removed unit's weights but not
its bias: the unit still passes relu(bias), a constant, to the next layer, which the
smaller architecture does not have.

Writes ``experiments/results/rethinking_structured/``: ``results.csv`` (``method, init,
level, density, mask_density, widths, params, flops, steps, seed, test_accuracy``; one
row per network trained), ``summary.md`` (accuracies and seed-paired differences against
the rewound subnetwork with 95% t-intervals), ``accuracy_vs_level.png``,
``difference_vs_level.png`` and ``provenance.json``. The run folder (``--workdir``,
default ``runs/rethinking_structured``) is resumable; ``--report`` writes the results of
what it holds.
"""

from __future__ import annotations

import pathlib
import sys
import time
from typing import Sequence

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import linen as nn  # noqa: E402

from jaxticket import lottery, pruning, report, rundir, train  # noqa: E402
from jaxticket.models import layers  # noqa: E402

NAME = "rethinking_structured"
FULL_WIDTHS = (6, 16, 120, 84)
STEPS_PER_EPOCH = 60_000 // 64
MARGIN = 0.005  # "equal within ±0.5 points": the equivalence margin of the verdicts
FIELDS = ("method", "init", "level", "density", "mask_density", "widths", "params", "flops", "steps", "seed",
          "test_accuracy")
INITS = ("rewind", "reinit", "scratch", "scratch_b")
CONV = "^conv[12]/kernel$"
HIDDEN_FC = "^(fc1|fc2)/kernel$"


class LeNet5Widths(nn.Module):
    """``lenet5`` with other widths: conv1 ``c1``, conv2 ``c2`` (3x3, VALID, ReLU, 2x2 max
    pool each), fc1 ``f1``, fc2 ``f2``, output ``num_classes``; Glorot-normal kernels,
    zero biases. ``widths=(6, 16, 120, 84)`` is ``lenet5`` (the same params from the same key).

    Input ``[B, 28, 28, 1]``, output ``[B, num_classes]``.

    Example::

        model = LeNet5Widths((4, 10, 62, 43))
        model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)["params"]["conv2"]["kernel"].shape
        # (3, 3, 4, 10)
    """

    widths: tuple = FULL_WIDTHS
    num_classes: int = 10
    kernel_init: str = "glorot_normal"

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        del train
        c1, c2, f1, f2 = self.widths
        k = self.kernel_init
        x = layers.max_pool(nn.relu(layers.conv(c1, 3, padding="VALID", name="conv1", kernel_init=k)(x)))
        x = layers.max_pool(nn.relu(layers.conv(c2, 3, padding="VALID", name="conv2", kernel_init=k)(x)))
        x = layers.flatten(x)
        x = nn.relu(layers.dense(f1, name="fc1", kernel_init=k)(x))
        x = nn.relu(layers.dense(f2, name="fc2", kernel_init=k)(x))
        return layers.dense(self.num_classes, name="output", kernel_init=k)(x)


def weights(widths: Sequence[int], num_classes: int = 10) -> int:
    """Kernel weights of :class:`LeNet5Widths` (59,838 for the full widths)."""
    c1, c2, f1, f2 = widths
    return 9 * c1 + 9 * c1 * c2 + 25 * c2 * f1 + f1 * f2 + f2 * num_classes


def flops(widths: Sequence[int], num_classes: int = 10) -> int:
    """Multiply-accumulates of one forward pass of :class:`LeNet5Widths` (199,968 for the full widths)."""
    c1, c2, f1, f2 = widths
    return 26 * 26 * 9 * c1 + 11 * 11 * 9 * c1 * c2 + 25 * c2 * f1 + f1 * f2 + f2 * num_classes


def kept_widths(mask) -> tuple[int, int, int, int]:
    """The output channels / units of conv1, conv2, fc1, fc2 that keep a weight in ``mask``
    (leaves ``[S, ...]``); the same for every seed (else ``ValueError``)."""
    out = []
    for layer in ("conv1", "conv2", "fc1", "fc2"):
        keep = np.asarray(mask.keep[layer]["kernel"])
        alive = keep.reshape(keep.shape[0], -1, keep.shape[-1]).any(axis=1).sum(axis=1)
        if len(set(alive.tolist())) != 1:
            raise ValueError(f"{layer}: the seeds keep different unit counts {alive.tolist()}")
        out.append(int(alive[0]))
    return tuple(out)


def structured_pruner(n) -> dict:
    """Paganini & Forde's Ln-structured pruner (``paganini_forde_lenet5.methods()``)."""
    rule = lambda sel: [sel, {"method": "ln_structured", "n": n, "fraction": 0.2, "rounding": "half_even"}]  # noqa: E731
    return {"method": "partition", "rules": [rule(CONV), rule(HIDDEN_FC), ["^output/", None]]}


METHODS = {"l1_structured": structured_pruner(1), "l2_structured": structured_pruner(2)}


def settings(quick: bool, epochs: int, steps: int | None) -> dict:
    s = ({"seeds": 2, "levels": 2, "branch_levels": [2], "methods": ["l1_structured"]} if quick else
         {"seeds": 5, "levels": 10, "branch_levels": [10, 2, 6, 4, 8], "methods": list(METHODS)})
    s["epochs"] = 1 if quick else epochs
    s["steps"] = steps or s["epochs"] * STEPS_PER_EPOCH
    return s


def base_task(widths=FULL_WIDTHS) -> train.Task:
    """Adam 1e-3 on ``lenet5`` (full widths: the registry's model) or :class:`LeNet5Widths`."""
    config = train.TrainConfig(model="lenet5", dataset="mnist", optimizer="adam", lr=1e-3)
    if tuple(widths) == FULL_WIDTHS:
        return train.task_from_config(config)
    return train.Task(LeNet5Widths(tuple(int(w) for w in widths)), input_shape=(28, 28, 1),
                      tx=train.make_optimizer(config), name=f"lenet5_w{'-'.join(str(w) for w in widths)}")


def load_data(args):
    """MNIST, all 60K training images (the test replaces this with tiny arrays)."""
    from jaxticket import data

    return data.splits("mnist", validation_size=0, data_dir=args.data_dir, manual_dir=args.manual_dir)


def imp_kw(s: dict) -> dict:
    return dict(steps=s["steps"], batch_size=64, seeds=s["seeds"], eval_batch_size=2000, progress=False,
                log=lambda line: print(line, flush=True))


def run_lineage(method: str, data, s: dict, workdir: pathlib.Path):
    """The Ln-structured lineage (levels 0..L, rewound to k = 0), resumable."""
    return lottery.imp(base_task(), data, METHODS[method], levels=s["levels"], rewind_step=0,
                       workdir=workdir / method, **imp_kw(s))


def scratch_steps(widths, steps: int) -> int:
    """Scratch-B: ``steps x min(FLOPs_full / FLOPs_small, 2)``, rounded to an integer."""
    return int(round(steps * min(flops(FULL_WIDTHS) / flops(widths), 2.0)))


def run_scratch(widths, level: int, budget: str, data, s: dict, workdir: pathlib.Path):
    """The dense smaller architecture (fresh init: init seed 50,000 + 100 x level + replica),
    trained ``steps`` (``scratch``) or :func:`scratch_steps` (``scratch_b``)."""
    steps = s["steps"] if budget == "scratch" else scratch_steps(widths, s["steps"])
    kw = {**imp_kw(s), "steps": steps}
    return lottery.imp(base_task(widths), data, pruning.magnitude(0.2), levels=0, init_seed=50_000 + 100 * level,
                       workdir=workdir / "scratch" / f"level{level:02d}_{budget}", **kw)


# ---------------------------------------------------------------------------- results


def rows_of(workdir: pathlib.Path, s: dict) -> list[dict]:
    """Tidy rows from the run folder: the lineages' levels (``rewind``), their ``reinit``
    branches and the scratch networks."""
    rows = []
    for method in s["methods"]:
        if not (workdir / method / "results.json").exists():
            continue
        for r in lottery.load_results(workdir / method):
            if r["kind"] not in ("imp", "reinit"):
                continue
            rows.append({"method": method, "init": "rewind" if r["kind"] == "imp" else "reinit", "level": r["level"],
                         "mask_density": round(r["density"], 6), "seed": r["seed"], "steps": s["steps"],
                         "test_accuracy": r["final_test_accuracy"]})
    for level in s["branch_levels"]:
        for budget in ("scratch", "scratch_b"):
            folder = workdir / "scratch" / f"level{level:02d}_{budget}"
            if (folder / "results.json").exists():
                for r in lottery.load_results(folder):
                    rows.append({"method": "structured", "init": budget, "level": level, "mask_density": None,
                                 "seed": r["seed"], "steps": r["end_step"], "test_accuracy": r["final_test_accuracy"]})
    widths_at = level_widths(workdir, s)
    for r in rows:
        w = widths_at.get(r["level"])
        if w is not None:
            r.update(widths="-".join(map(str, w)), params=weights(w), flops=flops(w),
                     density=round(r["mask_density"] if r["mask_density"] is not None else weights(w) / weights(FULL_WIDTHS), 6))
    return sorted(rows, key=lambda r: (r["level"], INITS.index(r["init"]), r["method"], r["seed"]))


def level_widths(workdir: pathlib.Path, s: dict) -> dict:
    """``{level: widths}`` read from the first lineage's masks (every lineage keeps the same counts)."""
    import json

    for method in s["methods"]:
        path = workdir / method / "widths.json"
        if path.exists():
            return {int(k): tuple(v) for k, v in json.loads(path.read_text()).items()}
    return {}


def save_widths(run, method: str, workdir: pathlib.Path) -> dict:
    import json

    widths = {level.level: kept_widths(level.mask) for level in run.levels}
    rundir.write_atomic(workdir / method / "widths.json", json.dumps({str(k): v for k, v in widths.items()}) + "\n")
    return widths


def per_seed(rows, **where) -> dict:
    return {r["seed"]: r["test_accuracy"] for r in rows if all(r[k] == v for k, v in where.items())}


def comparisons(rows: list[dict], s: dict) -> list[dict]:
    """Per method, branch level and other init: the seed-paired difference other - rewind."""
    out = []
    for method in s["methods"]:
        for level in sorted(s["branch_levels"]):
            ticket = per_seed(rows, method=method, init="rewind", level=level)
            for init in INITS[1:]:
                other = per_seed(rows, method=method if init == "reinit" else "structured", init=init, level=level)
                d = report.paired_stats(other, ticket)
                if d is not None:
                    out.append({"method": method, "level": level, "init": init, "diff": d,
                                "verdict": common.difference_verdict(d, MARGIN)})
    return out


def summarize(rows: list[dict], s: dict) -> str:
    widths = {r["level"]: r.get("widths") for r in rows}
    lines = ["| level | kept widths (c1-c2-f1-f2) | mask weights % | scratch weights % | FLOPs % | method | "
             + " | ".join(INITS) + " |", "|---|---|---|---|---|---|" + "---|" * len(INITS)]
    dense = per_seed(rows, init="rewind", level=0)
    for level in sorted({r["level"] for r in rows if r["level"] in s["branch_levels"] or r["level"] == 0}):
        for method in s["methods"]:
            def cell(init):
                m = method if init in ("rewind", "reinit") else "structured"
                return common.fmt(common.stats(per_seed(rows, method=m, init=init, level=level).values()))
            sel = [r for r in rows if r["level"] == level and r["method"] == method and r["init"] == "rewind"]
            if not sel:
                continue
            w = tuple(int(v) for v in widths[level].split("-")) if widths.get(level) else None
            lines.append(f"| {level} | {widths.get(level, '-')} | {100 * np.mean([r['mask_density'] for r in sel]):.1f} | "
                         f"{'-' if w is None else f'{100 * weights(w) / weights(FULL_WIDTHS):.1f}'} | "
                         f"{'-' if w is None else f'{100 * flops(w) / flops(FULL_WIDTHS):.1f}'} | {method} | "
                         + " | ".join(cell(i) for i in INITS) + " |")
    lines += ["", f"Seed-paired differences from the rewound subnetwork (points, mean [95% t-interval], n = seeds); "
              f"verdict with an equivalence margin of ±{100 * MARGIN:.1f} points:", "",
              "| method | level | init | other - rewind | verdict |", "|---|---|---|---|---|"]
    for c in comparisons(rows, s):
        lines.append(f"| {c['method']} | {c['level']} | {c['init']} | {common.fmt_paired(c['diff'])} (n = {c['diff'].n}) "
                     f"| {c['verdict']} |")
    if dense:
        lines += ["", f"Dense network (level 0): {common.fmt(common.stats(dense.values()))}"]
    return "\n".join(lines)


def write_outputs(workdir: pathlib.Path, out: pathlib.Path, s: dict, plots: bool = True) -> list[dict]:
    rows = rows_of(workdir, s)
    common.write_csv(out / "results.csv", rows, FIELDS)
    if not rows:
        return rows
    steps = s["steps"]
    rundir.write_atomic(out / "summary.md", f"# {NAME}: structured LeNet-5 on MNIST, rewound vs reinit vs scratch\n\n"
                        f"{steps} iterations per training ({s['epochs']} epoch(s) of batch 64; scratch_b up to twice "
                        "that); test accuracy in %, mean ± std [95% t-interval] over seeds\n\n"
                        f"{summarize(rows, s)}\n")
    if not plots:
        return rows
    n = len({r["seed"] for r in rows})
    note = f"n = {n} seeds; bars: 95% t-interval of the mean"
    levels = sorted(s["branch_levels"])
    acc, diff = {}, {}
    for method in s["methods"]:
        for init in ("rewind", "reinit"):
            acc[f"{method} {init}"] = [(l, common.stats(per_seed(rows, method=method, init=init, level=l).values()))
                                       for l in [0] + levels]
    for init in ("scratch", "scratch_b"):
        acc[f"smaller dense net, {init}"] = [(l, common.stats(per_seed(rows, method="structured", init=init,
                                                                       level=l).values())) for l in levels]
    for c in comparisons(rows, s):
        diff.setdefault(f"{c['method']}: {c['init']} - rewind", []).append((c["level"], c["diff"]))
    common.plot_ci(acc, out / "accuracy_vs_level.png", xlabel="pruning level (20% of units per level)",
                   ylabel="test accuracy (%)", title="Structured LeNet-5 on MNIST", note=note, scale=100)
    common.plot_ci(diff, out / "difference_vs_level.png", xlabel="pruning level (20% of units per level)",
                   ylabel="minus the rewound subnetwork (points)", title="Paired differences from the rewound ticket",
                   note=note + f"; dotted: ±{100 * MARGIN:.1f} points", scale=100,
                   hlines=[(100 * MARGIN, None), (-100 * MARGIN, None), (0.0, None)])
    return rows


def main(argv=None) -> int:
    parser = common.parser(NAME, __doc__, manual_help="folder with the four MNIST *-ubyte.gz files",
                           quick_help="2 seeds, L1 only, 2 levels, branches at level 2, 1 epoch")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per level (default 1; Paganini & Forde: 30)")
    parser.add_argument("--steps", type=int, default=None, help="iterations per level instead of --epochs x 937")
    parser.add_argument("--report", action="store_true", help="train nothing: write the results the run folder holds")
    args = parser.parse_args(argv)
    for name in ("epochs", "steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    s = settings(args.quick, args.epochs, args.steps)
    out = pathlib.Path(args.out or common.RESULTS / (NAME + ("_quick" if args.quick else "")))
    out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ("" if s["steps"] == STEPS_PER_EPOCH else f"_steps{s['steps']}")
    workdir = pathlib.Path(args.workdir + (suffix if args.workdir.endswith(NAME) else ""))
    if not args.report:
        prov = common.Provenance(out, {**s, "pruners": {m: METHODS[m] for m in s["methods"]}, "optimizer": "adam 1e-3",
                                       "batch_size": 64, "model": "lenet5 / LeNet5Widths"})
        data = load_data(args)
        runs, widths = {}, {}
        for method in s["methods"]:
            t = time.perf_counter()
            runs[method] = run_lineage(method, data, s, workdir)
            widths = save_widths(runs[method], method, workdir)
            prov.stage(method, time.perf_counter() - t)
            write_outputs(workdir, out, s, plots=False)
        for level in s["branch_levels"]:  # in an order spread over the densities
            for method in s["methods"]:
                t = time.perf_counter()
                runs[method].branch("reinit", levels=[level])
                prov.stage(f"{method}_reinit_level{level}", time.perf_counter() - t)
            for budget in ("scratch", "scratch_b"):
                t = time.perf_counter()
                run_scratch(widths[level], level, budget, data, s, workdir)
                prov.stage(f"level{level}_{budget}", time.perf_counter() - t)
                write_outputs(workdir, out, s, plots=False)
    write_outputs(workdir, out, s)
    return common.print_summary(out)


if __name__ == "__main__":
    sys.exit(main())
