"""The ``jaxticket`` command: presets, training, IMP, baselines, reports, a demo.

::

    jaxticket configs [NAME]                     presets (NAME: resolved config as JSON)
    jaxticket train --config NAME [flags]        one dense training run (IMP level 0 only)
    jaxticket imp --config NAME [flags]          run / resume IMP into --workdir
    jaxticket branch RUN_DIR --kind KIND [--levels 1 2 3]
                                                 baselines from an IMP run (reinit,
                                                 random_mask, finetune, rewind, and
                                                 registered kinds)
    jaxticket report RUN_DIR                     density vs accuracy table, report.md, PNGs
    jaxticket verify RUN_DIR                     every level's files against their checksums
    jaxticket demo [--workdir DIR]               offline quick start on the embedded digits

Flags of ``train`` / ``imp``: ``--config NAME``, ``--workdir DIR``, ``--levels N``,
``--rewind-step K``, ``--seeds S``, ``--steps N`` (training steps per level),
``--batch-size B``, ``--data-dir``, ``--manual-dir``, ``--overwrite``, ``--no-progress``,
``--set key=value`` (repeatable: any :class:`~jaxticket.lottery.LotteryConfig` field, or
a :class:`~jaxticket.train.TrainConfig` field as ``lr=0.01`` or ``train.lr=0.01``;
values are JSON when they parse as JSON, else strings, but one starting with ``{`` or ``[``
must be valid JSON; JSON lists become tuples; a pruner is a JSON object, or the bare name of
a registered method that needs no settings) and
``--debug`` (tracebacks). ``--no-compilation-cache`` runs without JAX's persistent
compilation cache (on by default, see :mod:`jaxticket.compilation_cache`). The preset is applied first, then ``--set``, then the named
flags. ``--import MODULE`` (any command, repeatable) imports a module first, e.g. one that
registers a pruner of your own (``@jaxticket.pruning.register("mine")``) so that
``--set 'pruner={"method": "mine", ...}'`` finds it.

Errors print one line on stderr: exit code 2 for usage errors (flags, presets, config
keys and values), 1 for runtime errors (a workdir made by another config, a dataset not
available offline, a non-finite loss, ...), 130 when interrupted (run again to resume).
``instability --overwrite`` deletes only what a previous sweep wrote in ``--workdir`` and
refuses a non-empty folder that holds no sweep.

Example::

    jaxticket imp --config lenet_300_100_mnist --workdir runs/lenet --levels 5 \\
        --set lr=1e-3 --set 'pruner={"method": "magnitude", "fraction": 0.2, "scope": "global"}'
    jaxticket branch runs/lenet --kind reinit --levels 1 2 3
    jaxticket report runs/lenet
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import errno
import json
import os
import pathlib
import sys
import time
from typing import Optional, Sequence

PROG = "jaxticket"
DEMO_WORKDIR = "jaxticket_demo"


# ============================================================================ errors


class UsageError(Exception):
    """A bad command line: flags, preset, config key or value (exit code 2)."""

    exit_code = 2


class RunError(Exception):
    """The command was fine but could not be carried out (exit code 1)."""

    exit_code = 1


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` (one line) instead of printing usage."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


# ============================================================================ parser


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
                   help="any other config field (LotteryConfig or TrainConfig; train.KEY too); "
                        "VALUE is JSON if it parses, else a string; repeatable")
    _add_data_flags(p)
    p.add_argument("--overwrite", action="store_true", help="discard a previous run in --workdir")
    p.add_argument("--redo-level", type=int, nargs="+", default=[], metavar="L", dest="redo_levels",
                   help="discard these finished levels (e.g. a damaged one) and train them again; keeps the others")


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR", help="TFDS data dir (default $JAXTICKET_DATA_DIR)")
    p.add_argument("--manual-dir", metavar="DIR",
                   help="folder of manually downloaded dataset files (default $JAXTICKET_MANUAL_DIR)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``jaxticket`` command."""
    from jaxticket import lottery

    parser = _Parser(prog=PROG, description="Lottery tickets and pruning research in JAX.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--import", action="append", default=[], metavar="MODULE", dest="imports",
                        help="import a module first (one that registers pruners or branch kinds); repeatable")
    parser.add_argument("--no-compilation-cache", action="store_true",
                        help="do not use JAX's persistent compilation cache (also JAXTICKET_COMPILATION_CACHE=off)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

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
    return parser


# ============================================================================ config from flags


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


# --set values that may legitimately start with "[" or "{" without being JSON (a regex)
_STRING_KEYS = ("prunable",)


def parse_value(raw: str, *, keep_lists: bool = False, key: Optional[str] = None):
    """JSON if ``raw`` parses as JSON (lists -> tuples unless ``keep_lists``), else the string.

    A value that starts with ``{`` or ``[`` is meant as JSON: when it does not parse, a
    :class:`UsageError` names the JSON error (and ``key``, the ``--set`` key).
    """
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        if raw.lstrip()[:1] in ("{", "[") and key not in _STRING_KEYS:
            where = f"--set {key}=" if key else "--set "
            raise UsageError(f"{where}{raw}: not valid JSON ({e.msg} at column {e.colno}); write the whole "
                             "value as JSON in single quotes, e.g. --set 'pruner={\"method\": \"magnitude\", "
                             "\"fraction\": 0.2}' or --set 'milestones=[10, 20]'") from None
        return raw
    if isinstance(value, list) and not keep_lists:
        return tuple(value)
    return value


def _pruner_value(raw: str, value):
    """``--set pruner=...``: a JSON object as given; a bare registered method name that
    needs no settings becomes ``{"method": name}``; any other bare name is a usage error
    saying how to write a pruner."""
    from jaxticket import pruning

    if not isinstance(value, str):
        return value
    name = value.strip()
    example = '--set \'pruner={"method": "magnitude", "fraction": 0.2, "scope": "global"}\''
    if name not in pruning.methods():
        close = difflib.get_close_matches(name, pruning.methods(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"--set pruner={raw}: a pruner is a JSON object with a method and its settings, "
                         f"e.g. {example}; {name!r} is not a pruning method{hint}; methods: "
                         f"{', '.join(pruning.methods())} (or your own, registered in an --import module)")
    try:
        pruning.from_config({"method": name})
    except ValueError as e:
        try:
            pruning.from_config({"method": name, "fraction": 0.2})
            example = f'--set \'pruner={{"method": "{name}", "fraction": 0.2}}\''
        except (ValueError, TypeError):
            pass
        raise UsageError(f"--set pruner={raw}: {str(e).rstrip('.')}; write the pruner as JSON with its settings, "
                         f"e.g. {example}") from None
    return {"method": name}


def parse_overrides(items: Sequence[str]) -> tuple[dict, dict]:
    """``--set key=value`` items -> ``(lottery_changes, train_changes)``.

    ``key`` is a LotteryConfig field, a TrainConfig field, or ``train.FIELD``; a JSON
    object for ``train`` sets several train fields. Raises :class:`UsageError` for an
    unknown key (naming the valid ones) or an item without ``=``.
    """
    from jaxticket.lottery import LotteryConfig
    from jaxticket.train import TrainConfig

    lottery_keys = [k for k in _field_names(LotteryConfig) if k != "train"]
    train_keys = _field_names(TrainConfig)
    lottery_changes, train_changes = {}, {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        name = key[len("train."):] if key.startswith("train.") else key
        if key == "train":
            value = parse_value(raw, key=key)
            if not isinstance(value, dict):
                raise UsageError(f"--set train=... expects a JSON object of TrainConfig fields, got {raw!r}")
            for k, v in value.items():
                train_changes.update(parse_overrides([f"train.{k}={json.dumps(v)}"])[1])
        elif name in train_keys and (key != name or name not in lottery_keys):
            train_changes[name] = parse_value(raw, key=key)
        elif key == "pruner":
            lottery_changes[key] = _pruner_value(raw, parse_value(raw, keep_lists=True, key=key))
        elif key in lottery_keys:
            lottery_changes[key] = parse_value(raw, key=key)
        else:
            valid = lottery_keys + train_keys
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"unknown config key {key!r}{hint}; valid keys: LotteryConfig "
                             f"{', '.join(lottery_keys)}; TrainConfig (also as train.KEY) {', '.join(train_keys)}")
    return lottery_changes, train_changes


def _flag_changes(args) -> tuple[dict, dict]:
    lottery_changes = {k: getattr(args, a) for k, a in
                       (("levels", "levels"), ("rewind_step", "rewind_step"), ("seeds", "seeds"))
                       if getattr(args, a, None) is not None}
    train_changes = {k: getattr(args, a) for k, a in (("steps", "steps"), ("batch_size", "batch_size"))
                     if getattr(args, a, None) is not None}
    return lottery_changes, train_changes


def resolve_config(args, *, levels: Optional[int] = None):
    """The LotteryConfig of ``--config`` with ``--set`` and the named flags applied.

    Raises :class:`UsageError` (one line) for an unknown preset, key, model or dataset
    and for values that LotteryConfig / TrainConfig reject.
    """
    from jaxticket import configs, data, models

    try:
        config = configs.get(args.config)
    except ValueError as e:
        raise UsageError(str(e)) from None
    lottery_changes, train_changes = parse_overrides(args.overrides)
    flag_lottery, flag_train = _flag_changes(args)
    lottery_changes.update(flag_lottery)
    train_changes.update(flag_train)
    if levels is not None:
        lottery_changes["levels"] = levels
    try:
        train = config.train.replace(**train_changes)
        config = config.replace(train=train, **lottery_changes)
        data.get_spec(config.train.dataset)
        models.get(config.train.model, num_classes=config.train.num_classes)
    except (ValueError, TypeError) as e:
        raise UsageError(f"bad config value: {e}") from None
    _check_sizes(config)
    return config


def _train_examples(config) -> Optional[int]:
    """Training examples left after the validation split, from the dataset's registry
    entry (``None`` when the registry does not say); a ``validation_size`` that leaves
    none is a :class:`UsageError`."""
    from jaxticket import data

    spec = data.get_spec(config.train.dataset)
    n = (spec.split_sizes or {}).get("train")
    if not n:
        return None
    validation = spec.default_validation_size if config.validation_size is None else config.validation_size
    if not 0 <= validation < n:
        raise UsageError(f"--set validation_size={validation}: {config.train.dataset} has {n:,} training examples "
                         f"and the validation split must leave some to train on; choose a value in [0, {n})")
    return n - validation


def _check_sizes(config) -> None:
    """``validation_size`` and ``batch_size`` against the dataset's size, before anything loads."""
    n = _train_examples(config)
    if n is not None and config.train.batch_size > n:
        raise UsageError(f"--batch-size {config.train.batch_size} is larger than the {n:,} training examples of "
                         f"{config.train.dataset} (after validation_size); choose at most {n}")


def _check_workdir(workdir: pathlib.Path, flag: str = "--workdir") -> None:
    """A folder (new or existing) that can be written to; else a :class:`UsageError`."""
    if workdir.exists() and not workdir.is_dir():
        raise UsageError(f"{flag} {workdir} is a file, not a folder; choose a folder (new or existing) for the run")
    existing = workdir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise UsageError(f"{flag} {workdir}: {existing} is a file, not a folder; choose another {flag}")
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {workdir}: the folder {existing} is not writable; choose another {flag}")


def _check_trainable(config, preset: str) -> None:
    """Refuses streaming datasets where the command needs them on the device.

    ``imp`` / ``train`` stream them from the host (``train.HostStream``); the
    instability sweep evaluates training subsets and interpolations on device-resident
    arrays, so it still refuses them.
    """
    from jaxticket import data

    if data.get_spec(config.train.dataset).streaming:
        raise RunError(
            f"preset {preset!r} uses dataset {config.train.dataset!r}, which streams from the host "
            "(jaxticket.data.make_stream); `jaxticket imp` and `train` run it, but the instability "
            "sweep needs a device-resident dataset")


# ============================================================================ commands


def _progress(args) -> Optional[bool]:
    if args.no_progress:
        return False
    return True if sys.stderr.isatty() else None


def _print_config(config, title: str) -> None:
    print(f"{title}\n{json.dumps(config.to_dict(), indent=2)}", flush=True)


def cmd_configs(args) -> int:
    """``jaxticket configs [NAME]``: one line per preset, or one preset in full."""
    from jaxticket import configs

    if args.name is None:
        width = max(len(n) for n in configs.names())
        for name in configs.names():
            print(f"{name:<{width}}  {configs.lookup(name).summary}")
        return 0
    try:
        config = configs.get(args.name)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(configs.describe(args.name))
    print()
    _print_config(config, "Resolved config:")
    return 0


def _run(args, *, levels: Optional[int], default_suffix: str) -> int:
    from jaxticket import lottery

    config = resolve_config(args, levels=levels)
    workdir = pathlib.Path(args.workdir or f"runs/{args.config}{default_suffix}")
    _check_workdir(workdir)
    _print_config(config, f"jaxticket {args.command}: preset {args.config}, workdir {workdir}\nconfig:")
    lottery.run_imp(config, workdir, data_dir=args.data_dir, manual_dir=args.manual_dir,
                    overwrite=args.overwrite, redo_levels=args.redo_levels, progress=_progress(args), log=_log)
    print(f"results: {workdir / 'results.csv'} (`jaxticket report {workdir}` for the table and plots)")
    return 0


def cmd_train(args) -> int:
    """``jaxticket train``: the dense network only (IMP with ``levels=0``)."""
    return _run(args, levels=0, default_suffix="_dense")


def cmd_imp(args) -> int:
    """``jaxticket imp``: run or resume IMP into ``--workdir``."""
    return _run(args, levels=None, default_suffix="")


def cmd_branch(args) -> int:
    """``jaxticket branch RUN_DIR --kind KIND``: a baseline at chosen IMP levels."""
    from jaxticket import lottery, rundir

    run = rundir.RunDir(args.run_dir)
    if run.identity() is not None:  # (no run there: run_branch says so)
        finished = run.finished()
        usable = [level for level in finished if level >= 1]
        for flag, levels in (("--levels", args.levels or []), ("--redo-level", args.redo_levels)):
            bad = sorted({level for level in levels if level not in usable})
            if bad:
                choose = (f"choose among {', '.join(map(str, usable))}" if usable
                          else "none is yet: run `jaxticket imp` further first")
                raise UsageError(f"{flag} {' '.join(map(str, bad))}: not a finished pruned level of {args.run_dir} "
                                 f"(finished IMP levels: {finished}; a branch starts at level 1); {choose}")
    lottery.run_branch(args.run_dir, args.kind, args.levels, data_dir=args.data_dir, manual_dir=args.manual_dir,
                       redo_levels=args.redo_levels, progress=_progress(args), log=_log)
    print(f"results: {pathlib.Path(args.run_dir) / 'results.csv'}")
    return 0


def cmd_report(args) -> int:
    """``jaxticket report RUN_DIR``: print the table; write report.md and the plots."""
    from jaxticket import report

    if not pathlib.Path(args.run_dir).is_dir():
        raise RunError(f"no run directory {args.run_dir!r}")
    table, paths = report.write_report(args.run_dir)
    print(table)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_verify(args) -> int:
    """``jaxticket verify RUN_DIR``: every level's files against their manifests; exit 1 on a problem."""
    from jaxticket import rundir

    run = rundir.RunDir(args.run_dir)
    if run.identity() is None:
        raise RunError(f"{args.run_dir} holds no run (no {rundir.CONFIG_FILE})")
    problems, checked, legacy = [], 0, 0
    for kind in run.kinds():
        for level in run.finished(kind):
            found = run.verify_level(level, kind)
            checked += 1
            legacy += not (run.level_dir(level, kind) / rundir.MANIFEST_FILE).exists()
            problems += [f"{run.level_dir(level, kind).relative_to(run.root)}/{p}" for p in found]
    for p in problems:
        print(f"BAD  {p}")
    note = f" ({legacy} written before checksums existed, not checked)" if legacy else ""
    print(f"{checked} finished level(s){note}: " + (f"{len(problems)} problem(s)" if problems else "every file as written"))
    if problems:
        raise RunError(f"{len(problems)} damaged file(s) in {args.run_dir}; redo the level(s) named above with --redo-level")
    return 0


def cmd_demo(args) -> int:
    """``jaxticket demo``: IMP on digits, a random-mask baseline, the table and the plots."""
    from jaxticket import configs, lottery, report

    t0 = time.perf_counter()
    config = configs.get("demo")
    workdir = pathlib.Path(args.workdir)
    _check_workdir(workdir)
    print(f"jaxticket demo: {configs.lookup('demo').summary}\nworkdir: {workdir}", flush=True)
    progress = _progress(args)
    lottery.run_imp(config, workdir, overwrite=args.overwrite, progress=progress, log=_log)
    lottery.run_branch(workdir, "random_mask", progress=progress, log=_log)
    table, paths = report.write_report(workdir)
    print(table)
    print(f"files in {workdir}:")
    for p in [workdir / "results.csv", workdir / "results.json", *paths]:
        print(f"  {p}")
    print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return 0


def _check_overwrite_sweep(workdir: pathlib.Path) -> list[pathlib.Path]:
    """What ``instability --overwrite`` deletes in ``workdir``: the files a previous sweep
    wrote there, nothing else. A non-empty folder that holds no sweep is a :class:`UsageError`."""
    from jaxticket import instability

    if not workdir.is_dir():
        return []
    entries = list(workdir.iterdir())
    if not entries:
        return []
    if not instability.is_sweep_folder(workdir):
        shown = ", ".join(sorted(e.name for e in entries)[:5]) + (", ..." if len(entries) > 5 else "")
        raise UsageError(f"--overwrite: {workdir} is not an instability sweep folder (no sweep config.json) and "
                         f"holds {shown}; nothing deleted: choose a new or empty --workdir")
    return instability.sweep_entries(workdir)[0]


def _check_levels_reachable(config, levels: Sequence[int]) -> None:
    """The deepest ``--levels`` against what the pruner can reach: a level schedule's
    length, and for unstructured magnitude / random pruning the level by which a layer
    must be emptied (the prunable weight counts are known without data). A global pruner
    may empty a layer earlier (it depends on the trained weights): that still shows only
    after training."""
    from jaxticket import lottery, masks, pruning, train

    deepest = max(levels)
    if deepest < 1 or config.allow_empty_layers:
        return
    pruner = config.make_pruner()
    try:
        per_level = [pruning.for_level(pruner, level) for level in range(1, deepest + 1)]
    except ValueError as e:
        raise UsageError(f"--levels {deepest}: the pruner's schedule stops earlier ({e}); choose lower --levels "
                         "or a longer schedule (--set pruner=...)") from None
    try:
        task = train.task_from_config(config.train, steps_per_epoch=1)
        mask = masks.ones_like(task.abstract_params(), lottery.settings_from_config(config).prunable)
    except Exception:  # noqa: BLE001: no bound then; the sweep reports its own errors
        return
    layers = [int(leaf.size) for leaf, prunable in zip(mask.leaves(), mask.prunable) if prunable]
    total = None  # after a global step: the prunable weights left, all layers together
    for level, step in enumerate(per_level, start=1):
        if not isinstance(step, (pruning.Magnitude, pruning.scored.RandomUnstructured)) or step.allows_empty:
            return
        if step.scope == "global":
            total = sum(layers) if total is None else total
            total -= int(pruning.removal_count(step.fraction, total, step.rounding))
            empty = total < len(layers)  # fewer weights than layers: one of them is empty
        elif total is None:
            layers = [c - int(pruning.removal_count(step.fraction, c, step.rounding)) for c in layers]
            empty = min(layers, default=1) < 1
        else:  # layer scope after a global step: the layers' counts are not known
            return
        if empty:
            raise UsageError(f"--levels {deepest}: the pruner {json.dumps(config.pruner)} leaves too few weights "
                             f"for every prunable layer by level {level} (it would empty a layer); choose "
                             f"--levels {level - 1} or fewer")


def cmd_instability(args) -> int:
    """``jaxticket instability --config NAME --ks ... --levels ...``: the stability sweep.

    Every flag is checked before anything is written or trained."""
    from jaxticket import instability, report

    config = resolve_config(args)
    workdir = pathlib.Path(args.workdir or f"runs/{args.config}_instability")
    _check_trainable(config, args.config)
    bad = [k for k in args.ks if not 0 <= k <= config.train.steps]
    if bad:
        raise UsageError(f"--ks {bad} are outside [0, steps={config.train.steps}]")
    bad = [level for level in args.analysis_levels if level < 0]
    if bad:
        raise UsageError(f"--levels must be >= 0, got {bad}")
    if args.copies < 2:
        raise UsageError(f"--copies must be >= 2, got {args.copies}")
    if args.alphas < 2:
        raise UsageError(f"--alphas must be >= 2 (both ends of the segment), got {args.alphas}")
    if args.train_examples is not None and args.train_examples < 1:
        raise UsageError(f"--train-examples must be >= 1 (or left out for all), got {args.train_examples}")
    _check_levels_reachable(config, args.analysis_levels)
    _check_workdir(workdir)
    doomed = _check_overwrite_sweep(workdir) if args.overwrite else []
    _print_config(config, f"jaxticket instability: preset {args.config}, workdir {workdir}, "
                          f"ks {args.ks}, levels {args.analysis_levels}, copies {args.copies}\nconfig:")
    if doomed:
        import shutil

        # config.json last: a deletion cut short still leaves a folder recognised as a sweep
        for entry in sorted(doomed, key=lambda e: e.name == "config.json"):
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink(missing_ok=True)
        kept = instability.sweep_entries(workdir)[1]
        if kept:
            print(f"--overwrite: deleted the previous sweep in {workdir}; kept "
                  f"{', '.join(e.name for e in kept)} (not written by the sweep)", flush=True)
    rows = instability.sweep_from_config(
        config, args.ks, args.analysis_levels, workdir=workdir, copies=args.copies, data_dir=args.data_dir,
        manual_dir=args.manual_dir, num_alphas=args.alphas, batch_stats=args.batch_stats,
        train_examples=args.train_examples, align=args.align, progress=_progress(args), log=_log)
    print(report.format_instability_table(rows))
    print(f"results: {workdir / 'results.csv'}, plots: {workdir / 'instability_vs_k.png'}, "
          f"{workdir / 'error_curves.png'}")
    return 0


def cmd_compare(args) -> int:
    """``jaxticket compare RUN_DIR... --out DIR``: Paganini & Forde's comparisons."""
    from jaxticket import compare

    _check_compare(args)
    report = compare.compare_runs(args.run_dirs, out_dir=args.out, level=args.level, names=args.names,
                                  seed=args.seed, layer=args.layer, data_dir=args.data_dir,
                                  manual_dir=args.manual_dir)
    print(compare.format_summary(report))
    print(f"files in {args.out}: summary.md, masks_jaccard.png/.json, agreement.png/.json, "
          "ensembles.json, connectivity.json, trajectories_*.png")
    return 0


def _check_compare(args) -> None:
    """The flags of ``compare`` against the run directories (their masks only), before
    anything is written; a directory that holds no run is left to ``compare_runs``."""
    from jaxticket import rundir

    if len(args.run_dirs) < 2:
        raise UsageError(f"compare needs at least two run directories, got {len(args.run_dirs)}")
    dirs = [pathlib.Path(d) for d in args.run_dirs]
    names = list(args.names) if args.names is not None else [d.name for d in dirs]
    if len(names) != len(dirs):
        raise UsageError(f"--names gives {len(names)} label(s) for {len(dirs)} run directories; give one per run")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        how = "give distinct --names" if args.names is not None else "label them with --names"
        raise UsageError(f"two runs are both named {twice[0]!r}; {how} (one per run, in order)")
    runs = [rundir.RunDir(d) for d in dirs]
    if any(run.identity() is None for run in runs):
        return
    finished = [set(run.finished()) for run in runs]
    common = sorted(set.intersection(*finished))
    if args.level is not None and args.level not in common:
        raise UsageError(f"--level {args.level}: not a level every run finished; levels in common: "
                         f"{common or 'none'}")
    level = args.level if args.level is not None else (max(common) if common else None)
    if level is None:
        return
    leaves = None
    for d, run in zip(dirs, runs):
        try:
            mask = run.load_mask(level)
        except (OSError, ValueError):
            return  # a damaged run: compare_runs names the file
        seeds = int(mask.leaves()[0].shape[0])
        if not 0 <= args.seed < seeds:
            raise UsageError(f"--seed {args.seed}: {d} has seeds 0..{seeds - 1}; choose one of them")
        leaves = leaves or list(mask.paths())
    if args.layer is not None and args.layer not in leaves:
        close = difflib.get_close_matches(args.layer, leaves, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"--layer {args.layer}: no such leaf{hint}; leaves: {', '.join(leaves)}")


def _log(line: str) -> None:
    print(line, flush=True)


# ============================================================================ main


COMMANDS = {"configs": cmd_configs, "train": cmd_train, "imp": cmd_imp, "branch": cmd_branch,
            "report": cmd_report, "verify": cmd_verify, "instability": cmd_instability, "compare": cmd_compare,
            "demo": cmd_demo}


def _quiet_logs() -> None:
    """Silences absl/orbax warnings that are noise for a command-line user, and prints
    Python warnings (e.g. a diverging loss) as one line each."""
    import logging
    import warnings

    def one_line(message, category, filename, lineno, file=None, line=None):
        print(f"{PROG}: warning: {_one_line(message)}", file=sys.stderr, flush=True)

    warnings.showwarning = one_line
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("orbax").setLevel(logging.CRITICAL)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass


def _runtime_message(e: BaseException) -> Optional[str]:
    """One line for the runtime errors users meet; ``None`` for unexpected ones."""
    from jaxticket import checkpoints, data, pruning, rundir, train

    if isinstance(e, (rundir.RunLockedError, rundir.CorruptRunError, checkpoints.CheckpointError)):
        return str(e)
    if isinstance(e, (checkpoints.DataMismatchError, checkpoints.ConfigMismatchError)):
        message = _as_flags(str(e))
        return message if "--overwrite" in message else \
            f"{message} (use another --workdir, or --overwrite to discard that run)"
    if isinstance(e, data.DatasetUnavailableError):
        return str(e)
    if isinstance(e, (train.NonFiniteLossError, pruning.PruningError)):
        return str(e)
    if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        where = pathlib.Path(e.filename).parent if e.filename else None
        folder = f"the folder {where}" if where is not None else "the folder"
        reason = e.strerror or str(e)
        return f"{folder} is not writable ({reason}); make it writable, or choose another folder (--workdir)"
    if isinstance(e, (RunError, FileNotFoundError, ValueError, RuntimeError, OSError)):
        return _as_flags(str(e))
    return None


def _as_flags(message: str) -> str:
    """Library wording of options (``overwrite=True``) as the command's flags."""
    for old, new in (("pass overwrite=True (--overwrite)", "pass --overwrite"), ("overwrite=True (--overwrite)",
                     "--overwrite"), ("overwrite=True", "--overwrite"),
                     ("or overwrite to start over", "or --overwrite to start over")):
        message = message.replace(old, new)
    return message


def import_plugins(argv: Sequence[str]) -> list[str]:
    """Imports the modules named by ``--import MODULE`` / ``--import=MODULE`` in ``argv``
    (before the parser is built, so that their pruners and branch kinds are known)."""
    import importlib

    names = []
    for i, item in enumerate(argv):
        if item == "--import" and i + 1 < len(argv):
            names.append(argv[i + 1])
        elif item.startswith("--import="):
            names.append(item.split("=", 1)[1])
    if names and "" not in sys.path:
        sys.path.insert(0, "")  # modules beside the experiment script
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise UsageError(f"--import {name}: {e}") from None
    return names


def _install_interrupt_handler() -> None:
    """Ctrl-C as ``KeyboardInterrupt``, but never raised inside a garbage-collector
    callback or a ``__del__`` (JAX runs one at every collection): Python swallows an
    exception there ("Exception ignored in ...") and the run would go on as if Ctrl-C had
    not been pressed. There the interrupt is delivered again 50 ms later."""
    import _thread
    import gc
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return  # someone else's handler: leave it

    def swallowed_here(frame) -> bool:
        callbacks = {getattr(cb, "__code__", None) for cb in gc.callbacks}
        while frame is not None:
            if frame.f_code in callbacks or frame.f_code.co_name == "__del__":
                return True
            frame = frame.f_back
        return False

    def on_sigint(signum, frame):
        if swallowed_here(frame):
            timer = threading.Timer(0.05, _thread.interrupt_main)
            timer.daemon = True
            timer.start()
            return
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)


def _interrupted(*, exit_now: bool) -> int:
    """Ctrl-C: the message, and exit code 130.

    By the time the ``KeyboardInterrupt`` reaches :func:`main` the run has unwound: its
    ``finally`` blocks wrote the results files, closed the orbax managers (their saves
    are synchronous) and released the run's lock. As the process's own command line
    (``exit_now``) the process then ends at once with ``os._exit(130)``: an ordinary
    interpreter exit tears JAX/XLA down while its compile and runtime threads may still
    be busy, which crashed (SIGSEGV) when Ctrl-C came during start-up or compilation.
    Called as a function (``main([...])``) it returns 130.
    """
    import signal

    if exit_now:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut this short
        except ValueError:  # not the main thread
            pass
    print(f"{PROG}: interrupted; run the same command again to resume", file=sys.stderr)
    if not exit_now:
        return 130
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(130)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Without ``argv`` (the ``jaxticket`` command itself) an interrupted run ends the
    process with exit code 130 (see :func:`_interrupted`); with ``argv`` it returns 130."""
    argv_given = argv is not None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if not argv_given:
        _install_interrupt_handler()
    try:
        import_plugins(argv)
        args = build_parser().parse_args(argv)
        from jaxticket import compilation_cache

        if getattr(args, "no_compilation_cache", False):
            compilation_cache.disable()
        else:
            compilation_cache.enable_default()  # the command's programs compile once per machine
        _quiet_logs()
        return COMMANDS[args.command](args)
    except UsageError as e:
        if debug:
            raise
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return UsageError.exit_code
    except KeyboardInterrupt:
        return _interrupted(exit_now=argv_given is False)
    except Exception as e:  # noqa: BLE001: one line unless --debug
        if debug:
            raise
        message = _runtime_message(e)
        if message is None:
            message = f"unexpected {type(e).__name__}: {e} (rerun with --debug for the traceback)"
        print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)
        return RunError.exit_code


if __name__ == "__main__":
    sys.exit(main())
