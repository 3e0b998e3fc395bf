"""Instability analysis runs (Frankle et al., "Linear mode connectivity and the LTH").

From one state at step ``k`` (the dense network, or an IMP subnetwork: its mask on the
rewind point at ``k``), train ``C`` copies to the end of training with different SGD
noise (data order and augmentation seeds) in one vmapped run, then measure the error
barrier along the straight line between every pair of final weight vectors, on train
and test error (:mod:`jaxticket.stability`). A network is *stable* at ``k`` when the
barrier is below 2 percentage points.

BatchNorm. ``batch_stats="interpolate"`` (default) interpolates the running statistics
linearly along with the weights; ``"recompute"`` recomputes them for every interpolated
network as the plain average over ``recompute_batches`` training batches (train mode),
which is what the paper's ResNet/VGG experiments need when interpolated statistics are
far off. Models without BatchNorm ignore the choice. The recomputation is the
training-mode forward pass, dropout on (keyed from copy 0's dropout key; see
:func:`jaxticket.stability.recompute_batch_stats` for why).

Error. ``error="accuracy"`` (default) measures ``1 - accuracy``, the paper's error;
``error="loss"`` the task's loss; any other name one of the task's metrics as it is (an
error: lower is better), e.g. for a regression task with only an MSE loss or an ``mae``
metric. ``stable_*`` compares the barrier with 0.02 whatever the quantity.

:func:`instability_sweep` runs the paper's central experiment: for every rewind step
``k`` and IMP level ``L``, IMP with rewinding to ``k`` (one lineage), then the
instability of the level-``L`` subnetwork at ``k``; level 0 is the dense network. Each
(k, level) result, the copies' final weights included, is saved as it finishes and
skipped on a rerun.

Example::

    rows = instability_sweep(task, data, jt.magnitude(0.2), ks=[0, 25, 100, 500], levels=[0, 3],
                             steps=5000, batch_size=60, copies=2, workdir="runs/instability")
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import math
import pathlib
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxticket import data as data_lib
from jaxticket import lottery, masks as masks_lib, parallel, pruning, rundir as rundir_lib, stability
from jaxticket import train as train_lib
from jaxticket.train.step import split_replicas, stack_replicas

__all__ = ["check_error", "copies_from", "distances_to_full", "error_of", "instability", "instability_sweep",
           "sweep_from_config", "sweep_settings", "train_copies"]

BATCH_STATS_MODES = ("interpolate", "recompute")
NOISE_STREAM = 0x5EED  # folded into the data/aug keys of the copies
RECOMPUTE_STREAM = 0xB57A75  # folded into copy 0's dropout key for recomputing BN statistics
SWEEP_FIELDS = ("k", "level", "seed", "density", "copies", "train_barrier", "train_barrier_std", "test_barrier",
                "test_barrier_std", "stable_train", "stable_test", "final_test_error", "batch_stats",
                "l2_to_full", "l2_to_full_normalized", "l2_to_full_all", "l2_to_full_all_normalized",
                "aligned_train_barrier", "aligned_test_barrier")


# ============================================================================ copies


def copies_from(state, copies: int, noise_seed: int = 0):
    """``copies`` replicas of a single-run state, identical except for their SGD noise.

    Copy ``i`` gets data-order and augmentation keys ``fold_in(key, NOISE_STREAM)``
    then ``fold_in(., noise_seed * copies + i)``, so the copies differ from each other
    and from the run that produced ``state``; weights, BN statistics, optimizer state,
    mask and step are shared. Returns a state with a leading ``[copies]`` axis.

    Example::

        pair = copies_from(result.rewind_state, 2)       # the state at step k, one network
        pair.params["fc1"]["kernel"].shape                # (2, 784, 300): identical weights
        pair.data_key                                     # uint32 [2, 2]: different data orders
    """
    if copies < 2:
        raise ValueError(f"instability needs at least 2 copies, got {copies}")
    return _copies(state, copies, jnp.uint32(noise_seed))


@functools.partial(jax.jit, static_argnums=1)
def _copies(state, copies: int, noise_seed):
    """:func:`copies_from` as one compiled program (not one stack per leaf shape)."""
    def noisy(raw, i):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(raw), NOISE_STREAM),
                                 noise_seed * copies + i)
        return jax.random.key_data(key)

    stacked = jax.tree.map(lambda x: jnp.stack([x] * copies), state)
    index = jnp.arange(copies, dtype=jnp.uint32)
    return stacked.replace(data_key=jax.vmap(noisy, (None, 0))(state.data_key, index),
                           aug_key=jax.vmap(noisy, (None, 0))(state.aug_key, index))


def train_copies(task: train_lib.Task, state, data, copies: int = 2, *, steps: int, batch_size: int,
                 augment=False, chunk_size: int = 100, noise_seed: int = 0, progress=None):
    """Trains ``copies`` noisy copies of ``state`` (single run, at step k) to ``steps``.

    One vmapped program; returns the final state with a leading ``[copies]`` axis.
    The copies differ in their data order (``noise_seed``) and augmentation, not in ``state``.

    Example::

        at_k = result.rewind_state                     # fit(..., rewind_step=k) of one network
        pair = train_copies(task, at_k, data, copies=2, steps=2000, batch_size=64)
        pair.params["Dense_0"]["kernel"].shape         # [2, in, out]
        instability(task, pair, data)                   # the error barrier between the two
    """
    batched = copies_from(state, copies, noise_seed)
    return train_lib.fit(task, batched, data["train"], steps=steps, batch_size=batch_size, augment=augment,
                         chunk_size=chunk_size, progress=progress).state


# ============================================================================ barriers


def check_error(task: train_lib.Task, error: str, fn: str = "instability") -> None:
    """``ValueError`` unless ``error`` names a quantity the task evaluates: ``"loss"`` or
    one of its metrics (``"accuracy"`` needs an ``accuracy`` metric).

    Example: ``check_error(regression_task, "loss")`` passes; with ``"accuracy"`` it says
    which metrics the task has and how to choose one.
    """
    names = ("loss", *task.metric_names)
    if not isinstance(error, str) or error not in names:
        raise ValueError(
            f"{fn}: error={error!r} is not evaluated by the task {task.name!r}, which has the loss and "
            f"{f'the metrics {list(task.metric_names)}' if task.metric_names else 'no metrics'}; pass "
            "error='loss' or the name of one of its metrics (taken as an error: lower is better; the default "
            "'accuracy' measures 1 - accuracy).")


def error_of(metrics: dict, error: str = "accuracy"):
    """The error quantity in a :func:`jaxticket.train.evaluate` result: ``1 - accuracy``
    for ``"accuracy"``, else ``metrics[error]`` (the loss or an error metric).

    Example: ``error_of({"loss": 0.3, "accuracy": 0.9})`` -> ``0.1`` (up to rounding);
    ``error_of({"loss": 0.3}, "loss")`` -> ``0.3``.
    """
    if error == "accuracy":
        return 1.0 - metrics["accuracy"]
    return metrics[error]


@dataclasses.dataclass(frozen=True)
class _Errors:
    """``variables, template, train_ds, test_ds[, batches, dropout_key] -> {"train": err,
    "test": err}`` for one network; equal for equal settings, so the path's program compiles
    once per structure (the template, a state whose params are replaced, and the
    recomputation's batches and key are arguments, not constants).

    The interpolated params are evaluated as they are (both ends are masked, so pruned
    weights stay 0 on the path; aligned copies have other masks than copy 0).
    ``recompute``: the BatchNorm statistics are first recomputed on ``batches``
    (:func:`jaxticket.stability.recompute_batch_stats`, dropout keyed by ``dropout_key``)."""
    task: train_lib.Task
    eval_batch_size: int
    error: str = "accuracy"
    recompute: bool = False

    def __call__(self, variables, template, train_ds, test_ds, batches=None, dropout_key=None):
        if self.recompute:
            variables = {**variables, "batch_stats": stability.recompute_batch_stats(
                self.task.apply, variables, batches, dropout_key=dropout_key)}
        state = template.replace(params=variables["params"], batch_stats=variables.get("batch_stats", {}))
        return {name: error_of(train_lib.evaluate(self.task, state, ds, batch_size=self.eval_batch_size), self.error)
                for name, ds in (("train", train_ds), ("test", test_ds))}


_INTERPOLATE_WITH_STATS = functools.partial(stability.interpolate_variables, batch_stats="interpolate")


def _recompute_inputs(template, train_ds, num_batches: int, batch_size: int):
    """The ``[num_batches, batch_size, ...]`` training inputs BatchNorm statistics are
    recomputed on, and the dropout key of that pass (one key for every interpolated network,
    so its masks are the same along the path: no dropout noise in the curve)."""
    batches = _training_inputs(train_ds, template.data_key, num_batches, batch_size)
    return batches, jax.random.fold_in(jax.random.wrap_key_data(template.dropout_key), RECOMPUTE_STREAM)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _training_inputs(train_ds, data_key, num_batches: int, batch_size: int):
    """The inputs of training batches ``0..num_batches-1`` under ``data_key`` (raw key
    data): ``[num_batches, batch_size, ...]``, one program (op by op, the shuffle's loop
    was traced again at every call)."""
    from jaxticket import data as data_lib

    key = jax.random.wrap_key_data(data_key)
    return jnp.stack([data_lib.make_batch(train_ds, key, key, s, batch_size)[0] for s in range(num_batches)])


def align_copies(task: train_lib.Task, finals):
    """Copies 1.. of ``finals`` permuted to match copy 0 by weight matching (Ainsworth et
    al. 2023), their BatchNorm statistics and masks with them; the same functions."""
    from jaxticket import alignment, models

    template = train_lib.replica(finals, 0)
    spec = models.permutation_spec(task.model, template.params)
    copies = [template]
    for i in range(1, int(np.shape(finals.step)[0])):
        other = train_lib.replica(finals, i)
        params, stats, mask = alignment.permute(
            spec, alignment.weight_matching(spec, template.params, other.params), other.params,
            other.batch_stats, other.mask if other.mask is not None else masks_lib.ones_like(other.params))
        copies.append(other.replace(params=params, batch_stats=stats, mask=mask if other.mask is not None else None))
    return stack_replicas(copies)


def instability(task: train_lib.Task, finals, data, *, num_alphas: int = 30, batch_stats: str = "interpolate",
                recompute_batches: int = 10, batch_size: int = 128, train_examples: Optional[int] = None,
                alpha_batch_size: Optional[int] = None, eval_batch_size: int = 1000, align: bool = False,
                error: str = "accuracy") -> dict:
    """Error barriers between every pair of copies in ``finals`` (leading ``[C]`` axis).

    Args:
      task: the copies' task.
      finals: final states of the copies, e.g. from :func:`train_copies`.
      data: with ``train`` and ``test`` device datasets; train error on the first
        ``train_examples`` training examples (``None``: all).
      num_alphas: points on the segment, endpoints included (the paper: 30).
      batch_stats: ``"interpolate"`` or ``"recompute"`` (over ``recompute_batches``
        training batches of ``batch_size``; see the module docstring).
      alpha_batch_size: alphas evaluated at once (memory bound; ``None``: all).
      align: also measure the barriers after permuting copies 1.. to match copy 0
        (:func:`align_copies`): ``aligned_train_barrier``, ``aligned_test_barrier``, ...
      error: the quantity on the path: ``"accuracy"`` (``1 - accuracy``), ``"loss"`` or
        another metric of the task, taken as an error (module docstring); a name the task
        does not evaluate is a ``ValueError`` listing its metrics.

    Returns:
      dict with ``train_barrier`` / ``test_barrier`` (mean over pairs), their ``_std``,
      per-pair values, the ``curves`` ``{"train", "test"}: [pairs, num_alphas]``,
      ``alphas``, the pairwise L2 distances between the copies' weights (raw and
      normalised by the first copy's norm), the copies' final test errors and ``error``.
    """
    if batch_stats not in BATCH_STATS_MODES:
        raise ValueError(f"batch_stats must be one of {BATCH_STATS_MODES}, got {batch_stats!r}")
    check_error(task, error)
    template = train_lib.replica(finals, 0)
    variables = {"params": finals.params}
    has_bn = bool(jax.tree.leaves(finals.batch_stats))
    if has_bn:
        variables["batch_stats"] = finals.batch_stats
    recompute = has_bn and batch_stats == "recompute"  # the interpolated statistics are then replaced
    train_ds = data["train"] if train_examples is None else data["train"].take(train_examples)
    eval_args = (template.replace(mask=None), train_ds, data["test"])
    if recompute:
        eval_args += _recompute_inputs(template, data["train"], recompute_batches, batch_size)
    alphas = stability.alphas(num_alphas)
    result = stability.pairwise_barriers(
        _Errors(task, eval_batch_size, error, recompute), variables, alphas, batch_size=alpha_batch_size,
        interpolate_fn=_INTERPOLATE_WITH_STATS if has_bn else stability.interpolate, eval_args=eval_args)
    distances = np.asarray(stability.pairwise_l2(finals.params, finals.mask))
    norms = np.asarray(_replica_norms(finals.params))
    iu = np.triu_indices(distances.shape[0], k=1)
    out = {
        "train_barrier": float(result.mean["train"]), "train_barrier_std": float(result.std["train"]),
        "test_barrier": float(result.mean["test"]), "test_barrier_std": float(result.std["test"]),
        "train_barriers": np.asarray(result.values["train"]).tolist(),
        "test_barriers": np.asarray(result.values["test"]).tolist(),
        "curves": {k: np.asarray(v) for k, v in result.curves.items()},
        "alphas": np.asarray(alphas),
        "copy_l2": distances[iu].tolist(),
        "copy_l2_normalized": (distances[iu] / norms[iu[0]]).tolist(),
        "batch_stats": batch_stats if has_bn else "none",
        "error": error,
    }
    if align:
        aligned = align_copies(task, finals)
        again = instability(task, aligned, data, num_alphas=num_alphas, batch_stats=batch_stats,
                            recompute_batches=recompute_batches, batch_size=batch_size, train_examples=train_examples,
                            alpha_batch_size=alpha_batch_size, eval_batch_size=eval_batch_size, error=error)
        out.update({f"aligned_{k}": again[k] for k in ("train_barrier", "train_barrier_std", "test_barrier",
                                                        "test_barrier_std", "train_barriers", "test_barriers",
                                                        "copy_l2")})
        out["aligned_curves"] = again["curves"]
    return out


# ============================================================================ sweep


def distances_to_full(copy, dense_params) -> dict:
    """How far a trained copy (a single-run state) ended from the dense network's final
    weights: ``l2_to_full`` over the copy's surviving weights (its mask: the distance the
    Stabilizing paper measures), ``l2_to_full_all`` over every parameter (pruned positions,
    0 in the copy, and biases count), each also divided by the dense network's norm over
    the same entries (``_normalized``). A copy without a mask counts every parameter in both.

    Example::

        distances_to_full(train_lib.replica(finals, 0), run.levels[0].params)["l2_to_full"]
    """
    d = functools.partial(stability.l2_distance, dense_params, copy.params)
    return {"l2_to_full": float(d(copy.mask)), "l2_to_full_normalized": float(d(copy.mask, normalize=True)),
            "l2_to_full_all": float(d()), "l2_to_full_all_normalized": float(d(normalize=True))}


def _dense_states_at(task, data, ks: Sequence[int], ones, settings: "lottery.ImpSettings", mesh=None) -> dict:
    """The dense network's state at every k (one trajectory, no IMP): a single-run state
    for one seed, else with a leading ``[seeds]`` axis (replicas trained together); on
    ``mesh`` when given (``data`` placed on it)."""
    streams, seeds = settings.fit.seed_streams, settings.seeds
    state = train_lib.init_state(task, mask=ones, **streams) if seeds == 1 else \
        train_lib.init_state(task, mask=ones, seeds=seeds, vary=settings.vary, **streams)
    if mesh is not None:
        state = parallel.shard_state(state, mesh)
    out = {}
    for k in sorted(set(ks)):
        if k > train_lib.host_step(state):
            state = train_lib.fit(task, state, data.train, _copy_training(settings.fit), steps=k, progress=False,
                                  mesh=mesh).state
        out[k] = state
    return out


def _copy_training(fit: train_lib.FitSettings) -> train_lib.FitSettings:
    """How the copies (and the dense trajectory) train: the run's settings without
    evaluations or checkpoints (the barriers are measured after)."""
    return fit.replace(eval_every=0, checkpoint_every=0)


def _seed_copies(state, seeds: int, copies: int, noise_seeds: Sequence[int]):
    """``copies`` noisy copies of each of the ``seeds`` replicas of ``state`` (a single-run
    state when ``seeds == 1``), stacked seed-major: ``[seeds * copies]``. Replica ``s``'s
    copies get ``noise_seeds[s]``, so they are the copies a one-seed sweep of that
    replica makes."""
    if seeds == 1 and not train_lib.is_batched(state):
        return copies_from(state, copies, noise_seeds[0])
    if copies < 2:
        raise ValueError(f"instability needs at least 2 copies, got {copies}")
    return _seed_major_copies(state, seeds, copies, jnp.asarray(noise_seeds[:seeds], jnp.uint32))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _seed_major_copies(state, seeds: int, copies: int, noise_seeds):
    per_seed = [_copies(jax.tree.map(lambda x, s=s: x[s], state), copies, noise_seeds[s]) for s in range(seeds)]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *per_seed)


@jax.jit
def _replica_norms(params) -> jax.Array:
    """``[||params[i]||_2 for i in replicas]`` over every parameter (leading axis: replicas),
    one program instead of one slice per leaf and replica."""
    replicas = jax.tree.leaves(params)[0].shape[0]
    one = [jax.tree.map(lambda x, i=i: x[i], params) for i in range(replicas)]
    return jnp.stack([stability.l2_distance(p, jax.tree.map(jnp.zeros_like, p)) for p in one])


@functools.partial(jax.jit, static_argnums=(1, 2))
def _copies_of_seed(stacked, seed: int, copies: int):
    """Seed ``seed``'s ``[copies]`` block of a seed-major stack of copies."""
    return jax.tree.map(lambda x: x[seed * copies:(seed + 1) * copies], stacked)


def _point_name(k: int, level: int, seed: int, seeds: int) -> str:
    """``kKKKKKK_levelLL`` (one seed: the layout of sweeps made before seeds) or ``..._seedS``."""
    return f"k{k:06d}_level{level:02d}" + (f"_seed{seed}" if seeds > 1 else "")


def instability_sweep(task: train_lib.Task, data, pruner, ks: Sequence[int], levels: Sequence[int] = (0,), *,
                      workdir, settings: Optional["lottery.ImpSettings"] = None, copies: int = 2,
                      num_alphas: int = 30, batch_stats: str = "interpolate", train_examples: Optional[int] = None,
                      align: bool = False, error: str = "accuracy", identity: Optional[dict] = None,
                      progress=None, log: Optional[Callable] = print, mesh=None, **named) -> list[dict]:
    """Instability vs rewind step ``k`` for the dense network (level 0) and IMP levels.

    ``settings`` (a :class:`~jaxticket.lottery.ImpSettings`, or the settings by name:
    ``steps``, ``batch_size``, ``seeds``, ...; its ``levels`` is the deepest of ``levels``)
    are those of :func:`jaxticket.imp`, and the sweep varies their ``rewind_step``. For
    each ``k``: IMP rewound to ``k`` (one lineage, ``workdir/imp_kNNNNNN``), then ``copies`` noisy
    copies of the level-``L`` subnetwork at ``k`` trained to ``steps``; with only level 0
    no IMP is run (one dense trajectory gives every ``k``). ``seeds``: replicas (the
    streams of ``vary`` differ, as in :func:`jaxticket.imp`) trained together: one IMP
    lineage of ``seeds`` replicas per ``k``, and the ``seeds x copies`` copies of a
    point in one program; replica ``s`` gives the numbers of a one-seed sweep with its
    seeds (``init_seed + s``, ... for the streams in ``vary``) and one row per seed. ``align``: also the barriers
    after weight matching the copies (:func:`align_copies`), as ``aligned_*`` columns.
    ``error``: the quantity on the path, as for :func:`instability` (checked before any
    training; ``final_test_error`` is that quantity too). ``mesh``: as for
    :func:`jaxticket.imp`, checked against the ``seeds x copies`` copies, which train
    sharded over its replica axis (the lineage over ``gcd(R, seeds)`` of them); the
    interpolation of a point's copies is evaluated on one device.

    Writes ``workdir/results.json`` / ``results.csv`` (one row per (k, level, seed)),
    the plots ``instability_vs_k.png`` (mean over seeds) and ``error_curves.png`` (seed
    0), and per point ``points/kK_levelL[_seedS].json`` / ``.npz`` (curves) /
    ``_finals.npz`` (the copies' final params), read back on a rerun;
    ``workdir/config.json`` refuses a different sweep.

    Example (the command ``jaxticket instability``, on objects)::

        rows = instability_sweep(task, data, jt.magnitude(0.2), ks=[0, 100, 500], levels=[0, 3, 7],
                                 workdir="runs/lmc", steps=2000, batch_size=64, copies=2, seeds=3)
        [(r["k"], r["level"], r["seed"], r["test_barrier"]) for r in rows]   # one row per (k, level, seed)
    """
    from jaxticket import plots

    log = log or (lambda *_: None)
    data = data_lib.as_data(data)
    ks, levels = sorted(set(int(k) for k in ks)), sorted(set(int(l) for l in levels))
    if any(l < 0 for l in levels):
        raise ValueError(f"levels must be >= 0, got {levels}")
    settings = sweep_settings(settings, named, levels)
    steps, seeds = settings.fit.steps, settings.seeds
    bad = [k for k in ks if not 0 <= k <= steps]
    if bad:
        raise ValueError(f"rewind steps {bad} are outside [0, steps={steps}]")
    check_error(task, error, "instability_sweep")
    copies_mesh = parallel.resolve_mesh(mesh, seeds=seeds * copies, batch_size=settings.fit.batch_size)
    lineage_mesh = None if copies_mesh is None else parallel.make_mesh(
        math.gcd(copies_mesh.shape[parallel.REPLICA], seeds), copies_mesh.shape[parallel.DATA])
    placed = lottery.place_data(data, copies_mesh)
    lineage_data = lottery.place_data(data, lineage_mesh)
    workdir = pathlib.Path(workdir)
    sweep = {"ks": ks, "levels": levels, "copies": copies, "num_alphas": num_alphas,
             "batch_stats": batch_stats, "train_examples": train_examples, "align": align}
    if error != "accuracy":  # only then: sweeps made before the option keep their identity
        sweep["error"] = error
    if seeds > 1:  # likewise; and a folder of one-seed points is never read as several seeds
        sweep["seeds"] = seeds
    base = identity if identity is not None else {"task": task.describe(), "pruner": pruning.describe(pruner),
                                                  "settings": settings.to_dict()}
    rundir_lib.claim(workdir, {**base, "sweep": sweep, "data": data.fingerprint()})
    points = workdir / rundir_lib.SWEEP_POINTS_DIR
    rows, curves, dense_states = [], {}, None
    noise_seeds = train_lib.replica_seeds(seeds, settings.vary, **settings.fit.seed_streams)["data"]
    for k in ks:
        todo = [l for l in levels if not all((points / f"{_point_name(k, l, s, seeds)}.json").exists()
                                             for s in range(seeds))]
        states, dense_final = {}, None
        if todo and max(levels) == 0:
            ones = masks_lib.ones_like(task.abstract_params(), settings.prunable)
            dense_states = dense_states or _dense_states_at(task, lineage_data, ks, ones, settings, lineage_mesh)
            states = {0: dense_states[k]}
        elif todo:
            run = lottery.imp(task, data, pruner, settings=dataclasses.replace(settings, rewind_step=k, reset="rewind"),
                              workdir=workdir / rundir_lib.sweep_imp_dir(k), progress=progress, log=log,
                              mesh=lineage_mesh)
            states = {level: run.branch_state("rewind", level) for level in levels}  # [seeds] leading
            dense_final = split_replicas(run.levels[0].params if copies_mesh is None
                                         else parallel.to_host(run.levels[0].params))  # one per seed
        for level in levels:
            names = [_point_name(k, level, s, seeds) for s in range(seeds)]
            if all((points / f"{name}.json").exists() for name in names):
                for s, name in enumerate(names):
                    rows.append({"seed": s, **rundir_lib.read_json(points / f"{name}.json")})
                    stored = rundir_lib.load_tree(points / f"{name}.npz")
                    curves[(k, level, s)] = {"train": stored["train"], "test": stored["test"]}
                continue
            # every seed's copies in one program (a point cut short is trained again whole)
            start = states[level]
            if copies_mesh is None:
                start = _seed_copies(start, seeds, copies, noise_seeds)
            else:
                start = parallel.shard_state(_seed_copies(parallel.to_host(start), seeds, copies, noise_seeds),
                                             copies_mesh)
            finals_all = train_lib.fit(task, start, placed.train, _copy_training(settings.fit), progress=progress,
                                       mesh=copies_mesh).state
            if copies_mesh is not None:  # a point's interpolation is evaluated on one device
                finals_all = parallel.to_host(finals_all)
            for s, name in enumerate(names):
                finals = _copies_of_seed(finals_all, s, copies)
                res = instability(task, finals, data, num_alphas=num_alphas, batch_stats=batch_stats,
                                  train_examples=train_examples, batch_size=settings.fit.batch_size,
                                  eval_batch_size=settings.fit.eval_batch_size, align=align, error=error)
                row = {"k": k, "level": level, "seed": s, "copies": copies,
                       "density": float(masks_lib.host_density(train_lib.replica(finals, 0).mask)),
                       **{key: res[key] for key in ("train_barrier", "train_barrier_std", "test_barrier",
                                                    "test_barrier_std", "train_barriers", "test_barriers",
                                                    "copy_l2", "copy_l2_normalized", "batch_stats")},
                       "stable_test": res["test_barrier"] < 0.02, "stable_train": res["train_barrier"] < 0.02,
                       "final_test_error": float(np.mean(np.asarray(res["curves"]["test"])[:, [0, -1]])),
                       "l2_to_full": None, "l2_to_full_normalized": None, "l2_to_full_all": None,
                       "l2_to_full_all_normalized": None,
                       **{key: res[key] for key in ("aligned_train_barrier", "aligned_test_barrier",
                                                    "aligned_train_barrier_std", "aligned_test_barrier_std")
                          if key in res}}
                if dense_final is not None:
                    row.update(distances_to_full(train_lib.replica(finals, 0), dense_final[s]))
                path = points / f"{name}.json"
                rundir_lib.save_tree(path.with_name(path.stem + "_finals.npz"),
                                     {"params": finals.params, "batch_stats": finals.batch_stats})
                rundir_lib.save_tree(path.with_suffix(".npz"), dict(res["curves"]))
                rundir_lib.write_atomic(path, json.dumps(row, indent=2) + "\n")
                curves[(k, level, s)] = res["curves"]
                rows.append(row)
                log(f"[instability] k={k:6d} level {level:2d}" + (f" seed {s}" if seeds > 1 else "")
                    + f" density {row['density']:.4f}  test barrier {100 * row['test_barrier']:6.2f}%  "
                    f"train barrier {100 * row['train_barrier']:6.2f}%")
    _write_outputs(workdir, rows, curves, num_alphas, plots)
    return rows


def sweep_settings(settings: Optional["lottery.ImpSettings"], named: dict, levels: Sequence[int]):
    """The sweep's :class:`~jaxticket.lottery.ImpSettings`: ``settings`` (or the settings
    ``named``) with ``levels`` the deepest level analysed."""
    deepest = max(levels) if levels else 0
    if settings is None:
        return lottery.imp_settings(None, {"levels": deepest, **named})
    return lottery.imp_settings(settings, {**named, "levels": deepest})


def sweep_from_config(config: "lottery.LotteryConfig", ks: Sequence[int], levels: Sequence[int] = (0,), *,
                      workdir, copies: int = 2, datasets=None, data_dir=None, manual_dir=None, **kw) -> list[dict]:
    """:func:`instability_sweep` for a LotteryConfig (a preset, the command line); its
    ``seeds`` replicas train together, and its rewind step and reset are the sweep's."""
    task, data, pruner, settings = lottery.objects_from_config(config, data=datasets, data_dir=data_dir,
                                                               manual_dir=manual_dir)
    settings = dataclasses.replace(settings, rewind_step=0, reset="rewind")
    return instability_sweep(task, data, pruner, ks, levels, workdir=workdir, settings=settings, copies=copies,
                             identity={"lottery": config.to_dict()}, **kw)


def _write_outputs(workdir: pathlib.Path, rows, curves, num_alphas, plots) -> None:
    """results.json / .csv, and the plots: barriers vs k (one seed: the spread over pairs
    of copies; several: mean and std over seeds) and seed 0's error curves."""
    rows = sorted(rows, key=lambda r: (r["level"], r["k"], r.get("seed", 0)))
    rundir_lib.write_atomic(workdir / rundir_lib.RESULTS_JSON, json.dumps(rows, indent=2) + "\n")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=SWEEP_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    rundir_lib.write_atomic(workdir / rundir_lib.RESULTS_CSV, out.getvalue())
    levels = sorted({r["level"] for r in rows})
    barriers = {}
    for level in levels:
        sel = [r for r in rows if r["level"] == level]
        name = "dense" if level == 0 else f"level {level} ({100 * sel[0]['density']:.1f}%)"
        for split in ("test", "train"):
            per_k = [[r for r in sel if r["k"] == k] for k in sorted({r["k"] for r in sel})]
            barriers[f"{name}, {split}"] = (
                [float(np.mean([r[f"{split}_barrier"] for r in at])) for at in per_k],
                [at[0][f"{split}_barrier_std"] if len(at) == 1 else float(np.std([r[f"{split}_barrier"] for r in at],
                                                                                 ddof=1)) for at in per_k])
    ks = sorted({r["k"] for r in rows})
    if all(len(v[0]) == len(ks) for v in barriers.values()):
        plots.plot_instability_vs_k(ks, barriers, workdir / "instability_vs_k.png",
                                    title="Instability vs rewind step")
    alphas = np.asarray(stability.alphas(num_alphas))
    labelled = {f"k={k}, level {l}": np.asarray(c["test"])[0] for (k, l, s), c in sorted(curves.items()) if s == 0}
    plots.plot_error_curve(alphas, labelled, workdir / "error_curves.png", title="Test error along the path")
