"""``jaxticket sparse``: one sparse training run of a preset (GMP, SET, RigL, static).

``add_arguments(parser)`` adds the command's own arguments to its subcommand's parser
(the parser adds ``--mesh``, as on ``imp``), ``run(args) -> int`` runs it. The preset gives the
model, data, optimizer and training length (``--steps`` overrides); the run lives in
``--workdir`` (default ``runs/<config>_sparse_<method>_<density>``) and resumes there.

Example::

    jaxticket sparse --config lenet_300_100_mnist --method rigl --density 0.1 --seeds 3
"""

from __future__ import annotations

import argparse
import pathlib

__all__ = ["add_arguments", "run"]

METHOD_NAMES = ("gmp", "set", "rigl", "static")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", required=True, help="a preset (jaxticket configs)")
    parser.add_argument("--method", required=True, choices=METHOD_NAMES)
    parser.add_argument("--density", required=True, type=float, help="final fraction of prunable weights kept")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--seeds", type=int, default=None, help="replicas (default: the preset's)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    parser.add_argument("--every", type=int, default=None, help="steps between mask updates (default steps // 100)")
    parser.add_argument("--end", type=int, default=None, help="last update step (default 0.75 * steps)")
    parser.add_argument("--start", type=int, default=None, help="gmp: first pruning step (default 0)")
    parser.add_argument("--fraction", type=float, default=None, help="set/rigl: drop fraction alpha (default 0.3)")
    parser.add_argument("--distribution", choices=("uniform", "erk"), default=None,
                        help="layer densities (default: erk for set/rigl/static, uniform for gmp)")
    parser.add_argument("--straight-through", action="store_true",
                        help="gmp: keep dense weights, update them through the mask (pruned ones may return)")
    parser.add_argument("--sparse-seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--manual-dir", default=None)
    return parser


def run(args) -> int:
    from jaxticket import configs, lottery
    from jaxticket.sparse import train_sparse

    from jaxticket.cli.overrides import resolve_mesh_flag

    config = configs.get(args.config)
    seeds = args.seeds or config.imp.seeds
    mesh = resolve_mesh_flag(getattr(args, "mesh", None), seeds=seeds, batch_size=config.imp.fit.batch_size)
    task, data, _, settings = lottery.objects_from_config(config, data_dir=args.data_dir, manual_dir=args.manual_dir)
    fit = settings.fit
    steps = args.steps if args.steps is not None else fit.steps
    method_settings = {k: getattr(args, k) for k in ("every", "end", "start", "fraction", "distribution")
                       if getattr(args, k) is not None}
    if args.method == "gmp" and args.straight_through:
        method_settings["straight_through"] = True
    if args.method != "gmp":
        method_settings.pop("start", None)
    if args.method == "static":
        method_settings = {k: v for k, v in method_settings.items() if k == "distribution"}
    workdir = pathlib.Path(args.workdir or f"runs/{args.config}_sparse_{args.method}_{args.density:g}")
    result = train_sparse(task, data, args.method, density=args.density, steps=steps, batch_size=fit.batch_size,
                          seeds=seeds, workdir=workdir, overwrite=args.overwrite, mesh=mesh,
                          eval_every=fit.eval_every, eval_batch_size=fit.eval_batch_size,
                          chunk_size=fit.chunk_size, checkpoint_every=fit.checkpoint_every, augment=fit.augment,
                          vary=settings.vary, prunable=settings.prunable, sparse_seed=args.sparse_seed,
                          **fit.seed_streams, **method_settings)
    for row in result.rows():
        print(f"seed {row['seed']}: density {row['density']:.4f}  test accuracy {row['final_test_accuracy']}")
    print(f"results: {workdir / 'summary.json'}")
    return 0
