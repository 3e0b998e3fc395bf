"""The argument parser of the ``jaxticket`` command."""

from __future__ import annotations

import argparse

from jaxticket.cli import sparse_command
from jaxticket.cli.errors import PROG, Parser

__all__ = ["DEMO_WORKDIR", "build_parser"]

DEMO_WORKDIR = "jaxticket_demo"


def _add_run_flags(p: argparse.ArgumentParser, *, levels: bool) -> None:
    p.add_argument("--config", required=True, metavar="NAME", help="a preset (`jaxticket configs`)")
    p.add_argument("--workdir", metavar="DIR", help="run directory (default: runs/<config>)")
    if levels:
        p.add_argument("--levels", type=int, metavar="N", help="pruning levels after the dense one")
    p.add_argument("--rewind-step", type=int, metavar="K", help="step rewound to (0 = init)")
    p.add_argument("--seeds", type=int, metavar="S", help="replicas trained together (vmapped)")
    p.add_argument("--steps", type=int, metavar="N", help="training steps per level")
    p.add_argument("--batch-size", type=int, metavar="B")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="any other setting, by name (lr=0.01, eval_every=100) or path (imp.fit.steps); "
                        "VALUE is JSON if it parses, else a string; repeatable")
    _add_data_flags(p)
    _add_mesh_flag(p)
    p.add_argument("--overwrite", action="store_true", help="discard a previous run in --workdir")
    p.add_argument("--redo-level", type=int, nargs="+", default=[], metavar="L", dest="redo_levels",
                   help="discard these finished levels (e.g. a damaged one) and train them again; keeps the others")


def _add_mesh_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mesh", metavar="R,D",
                   help="train on a device mesh: R replica devices (the seeds) x D data devices (each batch), "
                        "or 'auto' (every device of every process, replicas first); default: one device")


def _add_distributed_flags(p: argparse.ArgumentParser, default) -> None:
    p.add_argument("--distributed", action="store_true", default=default,
                   help="one of several processes (every host of a TPU pod slice or SLURM job runs the same "
                        "command): jax.distributed.initialize, auto-detected, or with the three flags below")
    p.add_argument("--coordinator", metavar="HOST:PORT", default=default, help="process 0's address (with --distributed)")
    p.add_argument("--num-processes", type=int, metavar="N", default=default, help="processes in all (with --distributed)")
    p.add_argument("--process-id", type=int, metavar="I", default=default, help="this process, 0..N-1 (with --distributed)")


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR", help="TFDS data dir (default $JAXTICKET_DATA_DIR)")
    p.add_argument("--manual-dir", metavar="DIR",
                   help="folder of manually downloaded dataset files (default $JAXTICKET_MANUAL_DIR)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``jaxticket`` command."""
    from jaxticket import lottery

    parser = Parser(prog=PROG, description="Lottery tickets and pruning research in JAX.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--import", action="append", default=[], metavar="MODULE", dest="imports",
                        help="import a module first (one that registers pruners or branch kinds); repeatable")
    parser.add_argument("--no-compilation-cache", action="store_true",
                        help="do not use JAX's persistent compilation cache (also JAXTICKET_COMPILATION_CACHE=off)")
    _add_distributed_flags(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)

    p = sub.add_parser("configs", help="list the presets, or print one in full")
    p.add_argument("name", nargs="?", metavar="NAME")

    p = sub.add_parser("train", help="train one dense network (IMP level 0 only)")
    _add_run_flags(p, levels=False)

    p = sub.add_parser("imp", help="run or resume iterative magnitude pruning")
    _add_run_flags(p, levels=True)

    p = sub.add_parser("branch", help="a baseline from an IMP run, at chosen levels")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--kind", required=True, choices=lottery.branch_kinds())
    p.add_argument("--levels", type=int, nargs="+", metavar="L", help="default: all finished levels >= 1")
    p.add_argument("--redo-level", type=int, nargs="+", default=[], metavar="L", dest="redo_levels",
                   help="discard these levels of this branch and train them again")
    _add_data_flags(p)
    _add_mesh_flag(p)

    p = sub.add_parser("sparse", help="one sparse training run: gradual magnitude pruning, SET, RigL or static")
    sparse_command.add_arguments(p)
    _add_mesh_flag(p)

    p = sub.add_parser("report", help="table and plots of density vs accuracy")
    p.add_argument("run_dir", metavar="RUN_DIR")

    p = sub.add_parser("verify", help="check every file of a run directory against its checksums")
    p.add_argument("run_dir", metavar="RUN_DIR")

    p = sub.add_parser("instability", help="instability (error barrier) vs rewind step k, dense and IMP levels")
    _add_run_flags(p, levels=False)
    p.add_argument("--ks", type=int, nargs="+", required=True, metavar="K", help="rewind steps, e.g. 0 25 100 500")
    p.add_argument("--levels", type=int, nargs="+", default=[0], metavar="L", dest="analysis_levels",
                   help="IMP levels to analyse (0 = the dense network; default: 0)")
    p.add_argument("--copies", type=int, default=2, metavar="C", help="copies trained from each state (default 2)")
    p.add_argument("--alphas", type=int, default=30, metavar="N", help="points on each segment (default 30)")
    p.add_argument("--batch-stats", choices=("interpolate", "recompute"), default="interpolate",
                   help="BatchNorm statistics of interpolated networks")
    p.add_argument("--train-examples", type=int, metavar="N", help="train error on the first N examples (default all)")
    p.add_argument("--align", action="store_true",
                   help="also measure the barriers after aligning the copies by weight matching (Git Re-Basin)")

    p = sub.add_parser("compare", help="mask similarity, agreement, ensembles, trajectories across runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="DIR", help="where the tables and plots go")
    p.add_argument("--level", type=int, metavar="L", help="level compared (default: highest common)")
    p.add_argument("--names", nargs="+", metavar="NAME", help="labels of the runs (default: directory names)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="which replica of each run")
    p.add_argument("--layer", metavar="PATH", help="leaf path for weight trajectories, e.g. fc1/kernel")
    _add_data_flags(p)

    p = sub.add_parser("demo", help="offline quick start: IMP + random-mask baseline on digits")
    p.add_argument("--workdir", default=DEMO_WORKDIR, metavar="DIR", help=f"default ./{DEMO_WORKDIR}")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")

    for command in sub.choices.values():
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        command.add_argument("--import", action="append", default=argparse.SUPPRESS, metavar="MODULE",
                             dest="imports", help="import a module first (your pruners); repeatable")
        command.add_argument("--no-compilation-cache", action="store_true", default=argparse.SUPPRESS,
                             help="do not use JAX's persistent compilation cache")
        _add_distributed_flags(command, argparse.SUPPRESS)
    return parser
