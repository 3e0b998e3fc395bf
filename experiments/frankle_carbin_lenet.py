"""Frankle & Carbin (2019), "The Lottery Ticket Hypothesis", LeNet-300-100 on MNIST.

    python experiments/frankle_carbin_lenet.py --manual-dir ../shared/data/mnist          # full scale
    python experiments/frankle_carbin_lenet.py --manual-dir ../shared/data/mnist --quick  # ~10 min check

The paper's setting (the ``lenet_300_100_mnist`` preset): Adam 1.2e-3, batch 60, 50K
iterations, Glorot-normal init, 5,000 training images held out for validation,
evaluation every 100 iterations, layer-wise magnitude pruning of 20% of the hidden and
10% of the output weights per level, rewinding to the initialisation (k = 0), levels
0-20. Here with 5 seeds trained together, and the random-reinitialisation and
random-mask controls at every second level (2, 4, ..., 20; trained in an order spread over
the densities, both controls per level).

Measured per (kind, level, seed): the early-stopping iteration (minimum validation
loss), the test accuracy there, and the final test accuracy. Writes
``experiments/results/frankle_carbin_lenet/results.csv`` (tidy), ``summary.md`` (mean,
std and 95% interval over seeds per kind and level, and the claims' checks), the plots
and ``provenance.json`` (commit, machine, settings, wall time per stage). The run
directory (``--workdir``, default ``runs/frankle_carbin_lenet``) is resumable: run the
same command again after an interruption.

Compute: ~0.65 ms per seed-step on 2 CPU cores plus evaluation of 15K images every 100
steps: about 3 hours for tickets and controls.
"""

from __future__ import annotations

import csv
import json
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import numpy as np  # noqa: E402

from jaxticket import configs, lottery, plots, report  # noqa: E402

NAME = "frankle_carbin_lenet"
FIELDS = ("kind", "level", "density", "seed", "early_stop_step", "test_accuracy_at_early_stop",
          "final_test_accuracy")
KIND_NAMES = {"imp": "ticket", "reinit": "reinit", "random_mask": "random_mask"}


QUICK = {"seeds": 2, "levels": 8, "steps": 5000, "control_levels": [2, 4, 6, 8]}  # --quick


def settings(quick: bool) -> dict:
    if quick:
        return dict(QUICK)
    # every second level, in an order that spreads over the densities (so that a run cut
    # short still shows the controls from 64% to 1.2%), both controls at each level
    return {"seeds": 5, "levels": 20, "steps": 50_000, "control_levels": [12, 6, 16, 2, 20, 8, 14, 4, 10, 18]}


def load_data(config, args):
    """MNIST with the preset's 5,000 validation images (``--manual-dir`` / ``--data-dir``)."""
    return lottery.load_data(config, args.data_dir, args.manual_dir)


def tidy(rows) -> list[dict]:
    out = []
    for r in rows:
        out.append({"kind": KIND_NAMES[r["kind"]], "level": r["level"], "density": round(r["density"], 6),
                    "seed": r["seed"], "early_stop_step": r["early_stop_step"],
                    "test_accuracy_at_early_stop": r["early_stop_test_accuracy"],
                    "final_test_accuracy": r["final_test_accuracy"]})
    return sorted(out, key=lambda r: (list(KIND_NAMES.values()).index(r["kind"]), r["level"], r["seed"]))


def by(rows, kind, level, key):
    return [r[key] for r in rows if r["kind"] == kind and r["level"] == level and r[key] is not None]


def summarize(rows: list[dict]) -> tuple[str, list[dict]]:
    """The per-level table (mean ± std [95% CI] over seeds) and the claims' numbers."""
    levels = sorted({r["level"] for r in rows})
    lines = ["| level | weights % | ticket acc @ early stop | ticket early stop | reinit acc @ es | "
             "random-mask acc @ es | ticket final acc |", "|---|---|---|---|---|---|---|"]
    for level in levels:
        density = np.mean(by(rows, "ticket", level, "density"))
        es = common.stats(by(rows, "ticket", level, "early_stop_step"))
        cells = [str(level), f"{100 * density:.2f}",
                 common.fmt(common.stats(by(rows, "ticket", level, "test_accuracy_at_early_stop"))),
                 "-" if es is None else es.format(digits=0),
                 common.fmt(common.stats(by(rows, "reinit", level, "test_accuracy_at_early_stop"))),
                 common.fmt(common.stats(by(rows, "random_mask", level, "test_accuracy_at_early_stop"))),
                 common.fmt(common.stats(by(rows, "ticket", level, "final_test_accuracy")))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), levels


def per_seed(rows, kind, level, key) -> dict:
    return {r["seed"]: r[key] for r in rows if r["kind"] == kind and r["level"] == level}


def paired_table(rows: list[dict]) -> str:
    """Differences paired by seed, mean [95% t-interval] over seeds: each level's ticket
    against the dense network (level 0) of the same seed, and the controls against the
    ticket of the same level and seed."""
    def cell(d, scale=100.0, digits=2):
        if d is None:
            return "-"
        lo, hi = d.ci95
        return f"{d.mean * scale:+.{digits}f} [{lo * scale:+.{digits}f}, {hi * scale:+.{digits}f}]"

    lines = ["| level | weights % | ticket - dense acc @ es (points) | ticket - dense final acc | "
             "ticket - dense early stop (iterations) | reinit - ticket acc @ es | random mask - ticket acc @ es |",
             "|---|---|---|---|---|---|---|"]
    acc, final, es = "test_accuracy_at_early_stop", "final_test_accuracy", "early_stop_step"
    for level in sorted({r["level"] for r in rows if r["kind"] == "ticket" and r["level"] > 0}):
        ticket = {key: per_seed(rows, "ticket", level, key) for key in (acc, final, es)}
        cells = [str(level), f"{100 * np.mean(by(rows, 'ticket', level, 'density')):.2f}",
                 cell(report.paired_stats(ticket[acc], per_seed(rows, "ticket", 0, acc))),
                 cell(report.paired_stats(ticket[final], per_seed(rows, "ticket", 0, final))),
                 cell(report.paired_stats(ticket[es], per_seed(rows, "ticket", 0, es)), scale=1, digits=0),
                 cell(report.paired_stats(per_seed(rows, "reinit", level, acc), ticket[acc])),
                 cell(report.paired_stats(per_seed(rows, "random_mask", level, acc), ticket[acc]))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_rows(path: pathlib.Path) -> list[dict]:
    """``results.csv`` back as rows (numbers as numbers, empty cells as None)."""
    def num(key, v):
        if v == "":
            return None
        return v if key == "kind" else (int(v) if key in ("level", "seed", "early_stop_step") else float(v))

    with open(path, newline="") as f:
        return [{k: num(k, v) for k, v in r.items()} for r in csv.DictReader(f)]


def write_outputs(workdir: pathlib.Path, out: pathlib.Path, rows=None) -> list[dict]:
    """results.csv, summary.md and the plots from the run folder (or from ``rows``)."""
    rows = tidy(lottery.load_results(workdir)) if rows is None else rows
    common.write_csv(out / "results.csv", rows, FIELDS)
    table, _ = summarize(rows)
    common.rundir.write_atomic(out / "summary.md", f"# {NAME}: per level, over seeds\n\n"
                               "accuracy in %, mean ± std (ddof=1) [95% t-interval] over seeds; early stop = "
                               f"iteration of minimum validation loss\n\n{table}\n\n## Paired by seed\n\n"
                               f"{paired_table(rows)}\n")
    acc_rows = [{"method": r["kind"], "density": r["density"], "accuracy": r["test_accuracy_at_early_stop"]}
                for r in rows if r["test_accuracy_at_early_stop"] is not None]
    plots.plot_density_accuracy(acc_rows, out / "accuracy_vs_density.png",
                                title="LeNet-300-100 on MNIST: test accuracy at early stop")
    series, ns = {}, {}
    for kind in KIND_NAMES.values():
        levels = sorted({r["level"] for r in rows if r["kind"] == kind})
        pts = [(np.mean(by(rows, kind, l, "density")), common.stats(by(rows, kind, l, "early_stop_step")))
               for l in levels]
        pts = [(d, s) for d, s in pts if s is not None]
        if pts:
            series[kind] = ([d for d, _ in pts], [s.mean for _, s in pts], [s.std for _, s in pts])
            ns[kind] = [s.n for _, s in pts]
    plots.plot_series_vs_density(series, out / "early_stop_vs_density.png", ylabel="early-stop iteration",
                                 title="LeNet-300-100 on MNIST: early stopping", n=ns)
    return rows


def main(argv=None) -> int:
    parser = common.parser(NAME, __doc__, manual_help="folder with the four MNIST *-ubyte.gz files",
                           quick_help="2 seeds, 8 levels, 5K iterations (a check, ~10 min)")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: write the results of the levels and controls the run folder holds")
    parser.add_argument("--from-csv", action="store_true",
                        help="train and read nothing but the results folder's results.csv: rewrite its summary "
                             "and plots (where the run folder is gone)")
    args = parser.parse_args(argv)
    s = settings(args.quick)
    out = pathlib.Path(args.out or common.RESULTS / (NAME + ("_quick" if args.quick else "")))
    out.mkdir(parents=True, exist_ok=True)
    workdir = pathlib.Path(args.workdir + ("_quick" if args.quick and args.workdir.endswith(NAME) else ""))
    preset = configs.get("lenet_300_100_mnist")
    config = preset.replace(seeds=s["seeds"], levels=s["levels"], steps=s["steps"])
    if args.from_csv:
        write_outputs(workdir, out, read_rows(out / "results.csv"))
        return common.print_summary(out)
    prov = common.Provenance(out, {**s, "preset": "lenet_300_100_mnist", "config": config.to_dict()})
    if args.report:
        write_outputs(workdir, out)
        return common.print_summary(out)
    data_kw = dict(datasets=load_data(config, args))
    t = time.perf_counter()
    lottery.run_imp(config, workdir, progress=False, **data_kw)
    prov.stage("tickets", time.perf_counter() - t)
    write_outputs(workdir, out)
    for level in s["control_levels"]:
        for kind in ("random_mask", "reinit"):
            t = time.perf_counter()
            lottery.run_branch(workdir, kind, [level], progress=False, **data_kw)
            prov.stage(f"{kind}_level{level}", time.perf_counter() - t)
        write_outputs(workdir, out)
    print(json.dumps(prov.data["sessions"][-1]["stages"]))
    return common.print_summary(out)


if __name__ == "__main__":
    sys.exit(main())
