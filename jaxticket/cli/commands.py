"""The commands of ``jaxticket``: each parses nothing and checks only what needs its flags'
names; the work is the library's."""

from __future__ import annotations

import difflib
import json
import os
import pathlib
import sys
import time
from typing import Optional, Sequence

from jaxticket.cli.errors import RunError, UsageError
from jaxticket.cli.overrides import resolve_config, resolve_mesh_flag

__all__ = ["COMMANDS"]


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
    mesh = _mesh(args, config)
    _check_workdir(workdir)
    _print_config(config, f"jaxticket {args.command}: preset {args.config}, workdir {workdir}\nconfig:")
    lottery.run_imp(config, workdir, data_dir=args.data_dir, manual_dir=args.manual_dir,
                    overwrite=args.overwrite, redo_levels=args.redo_levels, progress=_progress(args), log=_log,
                    mesh=mesh)
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
    from jaxticket import lottery

    try:
        lottery.run_branch(args.run_dir, args.kind, args.levels, data_dir=args.data_dir, manual_dir=args.manual_dir,
                           redo_levels=args.redo_levels, progress=_progress(args), log=_log, mesh=args.mesh)
    except lottery.BranchLevelError as e:
        raise UsageError(f"--levels / --redo-level: {e}") from None
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


def _check_levels_reachable(config, levels: Sequence[int]) -> None:
    """The deepest ``--levels`` against what the pruner can reach without data
    (:func:`jaxticket.pruning.check_levels_reachable`), before anything is trained."""
    from jaxticket import masks, pruning, train

    try:
        task = train.task_from_config(config.train, steps_per_epoch=1)
        mask = masks.ones_like(task.abstract_params(), config.imp.prunable)
    except Exception:  # noqa: BLE001: no bound then; the sweep reports its own errors
        return
    try:
        pruning.check_levels_reachable(config.make_pruner(), mask, max(levels),
                                       allow_empty=config.imp.allow_empty_layers)
    except pruning.PruningError as e:
        raise UsageError(str(e).replace(f"levels={max(levels)}:", f"--levels {max(levels)}:", 1)) from None


def cmd_instability(args) -> int:
    """``jaxticket instability --config NAME --ks ... --levels ...``: the stability sweep.

    Every flag is checked before anything is written or trained."""
    from jaxticket import instability, report, rundir

    config = resolve_config(args)
    workdir = pathlib.Path(args.workdir or f"runs/{args.config}_instability")
    _check_trainable(config, args.config)
    bad = [k for k in args.ks if not 0 <= k <= config.imp.fit.steps]
    if bad:
        raise UsageError(f"--ks {bad} are outside [0, steps={config.imp.fit.steps}]")
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
    if args.mesh is not None:
        _mesh(args, config, copies=args.copies)
    _check_workdir(workdir)
    try:
        doomed = rundir.check_sweep_folder(workdir) if args.overwrite else []
    except ValueError as e:
        raise UsageError(f"--overwrite: {e} (--workdir)") from None
    _print_config(config, f"jaxticket instability: preset {args.config}, workdir {workdir}, "
                          f"ks {args.ks}, levels {args.analysis_levels}, copies {args.copies}\nconfig:")
    if doomed:
        rundir.overwrite_sweep(workdir)
        kept = rundir.sweep_entries(workdir)[1]
        if kept:
            print(f"--overwrite: deleted the previous sweep in {workdir}; kept "
                  f"{', '.join(e.name for e in kept)} (not written by the sweep)", flush=True)
    rows = instability.sweep_from_config(
        config, args.ks, args.analysis_levels, workdir=workdir, copies=args.copies, data_dir=args.data_dir,
        manual_dir=args.manual_dir, num_alphas=args.alphas, batch_stats=args.batch_stats,
        train_examples=args.train_examples, align=args.align, progress=_progress(args), log=_log, mesh=args.mesh)
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


def _mesh(args, config, copies: int = 1):
    """``--mesh`` checked against the seeds (x copies) and the batch before anything is loaded."""
    return resolve_mesh_flag(args.mesh, seeds=config.imp.seeds * copies,
                             batch_size=config.imp.fit.batch_size)


def cmd_sparse(args) -> int:
    """``jaxticket sparse --config NAME --method rigl --density 0.1``: one sparse training run."""
    from jaxticket import configs
    from jaxticket.cli import sparse_command

    if not 0.0 < args.density <= 1.0:
        raise UsageError(f"--density {args.density}: the fraction of prunable weights kept, in (0, 1]")
    if getattr(args, "straight_through", False) and args.method != "gmp":
        raise UsageError(f"--straight-through is a setting of --method gmp, not {args.method}")
    for flag in ("seeds", "steps", "every"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag} must be >= 1, got {value}")
    try:
        configs.lookup(args.config)
    except ValueError as e:
        raise UsageError(str(e)) from None
    _check_workdir(pathlib.Path(args.workdir or "."))
    return sparse_command.run(args)


def _log(line: str) -> None:
    print(line, flush=True)


COMMANDS = {"configs": cmd_configs, "train": cmd_train, "imp": cmd_imp, "branch": cmd_branch,
            "report": cmd_report, "verify": cmd_verify, "instability": cmd_instability, "compare": cmd_compare,
            "demo": cmd_demo, "sparse": cmd_sparse}
