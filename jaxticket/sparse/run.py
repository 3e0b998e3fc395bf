"""``train_sparse``: one sparse training run (all seeds together), in memory or in a run directory.

With ``workdir`` the run lives in a directory::

    config.json        the run's identity (task, method, settings, data fingerprint); another run is refused
    run.lock           held while a process works in it
    checkpoints/       periodic train states (``checkpoint_every``; the last one at the end)
    metrics.jsonl      one JSON object per evaluation
    mask.npz, final_params.npz, final_batch_stats.npz
    summary.json       the rows and history, written last: the run is done

Running the same call again reads a finished run back; an interrupted one resumes from its
last periodic checkpoint (the mask is in the train state and the updates are pure
functions of the state, the step and the seeds, so the continuation is bit for bit the
uninterrupted run's on the same machine).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import time
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from jaxticket import checkpoints as ckpt_lib
from jaxticket import data as data_lib
from jaxticket import masks as masks_lib
from jaxticket import parallel
from jaxticket import rundir as rundir_lib
from jaxticket import train as train_lib
from jaxticket.lottery.results import PerSeedResult, level_rows, per_seed
from jaxticket.lottery.run import place_data
from jaxticket.masks import Mask
from jaxticket.sparse import methods as methods_lib
from jaxticket.sparse.loop import run_sparse_steps
from jaxticket.train.sources import DeviceFeed

__all__ = ["SparseResult", "SPARSE_STREAM", "network", "sparse_keys", "train_sparse"]

#: stream id folded into the sparse seed (the method's random masks and regrowth)
SPARSE_STREAM = 5
_SUMMARY, _METRICS = "summary.json", "metrics.jsonl"


@dataclasses.dataclass
class SparseResult(PerSeedResult):
    """A finished sparse run: per-seed values like an IMP level's, lazily its weights.

    Attributes:
      method: the resolved method's description. ``mask``: the final mask, leaves ``[S, ...]``.
      history: one record per evaluation (``step``, ``train_loss``, ``test_accuracy``,
        ``density``, ... lists over seeds).
    """

    method: dict
    mask: Mask
    history: list
    _rows: list
    _weights: Callable = dataclasses.field(repr=False, default=None)
    elapsed_s: float = 0.0

    def rows(self) -> list[dict]:
        """One tidy row per seed (:data:`jaxticket.rundir.RESULT_FIELDS` plus ``method``,
        ``target_density``, ``steps``, ``elapsed_s``)."""
        return [dict(r) for r in self._rows]

    def seed_rows(self) -> list:
        return self._rows


def sparse_keys(seeds: int, sparse_seed: int = 0) -> np.ndarray:
    """The method's raw keys ``uint32[S, 2]``: replica ``i`` uses ``key(sparse_seed + i)``
    folded with :data:`SPARSE_STREAM`, so replica ``i`` equals the single run with every
    seed ``+ i``."""
    return np.stack([np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.key(sparse_seed + i),
                                                                        SPARSE_STREAM))) for i in range(seeds)])


@functools.partial(jax.jit, static_argnums=0)
def _initial_masks(method, ones: Mask, keys):
    """Every replica's starting mask (``fold_in(key, 0)``; the updates use ``fold_in(key, 1)``)."""
    return jax.vmap(lambda k: method.initial_mask(ones, jax.random.fold_in(jax.random.wrap_key_data(k), 0)))(keys)


def _update_keys(keys):
    return np.stack([np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(k), 1)))
                     for k in keys])


def _segments(start, end, chunk, cuts):
    out, s = [], start
    for c in sorted({c for c in cuts if start < c < end} | {end}):
        while s < c:
            n = min(chunk, c - s)
            out.append((s, n))
            s += n
    return out


def train_sparse(task: train_lib.Task, data, method, *, density: Optional[float] = None, steps: int,
                 batch_size: int, seeds: int = 1, workdir=None, overwrite: bool = False,
                 eval_every: int = 0, eval_batch_size: int = 1000, chunk_size: int = 100,
                 checkpoint_every: int = 0, augment=False, vary: Sequence[str] = ("init", "data", "aug"),
                 init_seed: int = 0, data_seed: int = 0, aug_seed: int = 0, dropout_seed: int = 0,
                 sparse_seed: int = 0, prunable=None, loop: str = "auto", seed_strategy: str = "auto",
                 mesh=None, log: Optional[Callable] = print, **method_settings) -> SparseResult:
    """Sparse training in one run: a mask that changes inside the compiled loop (GMP, SET,
    RigL), a fixed sparse mask (static), or any pruner at chosen steps.

    Args:
      task: the :class:`~jaxticket.train.Task`; ``data``: :class:`~jaxticket.data.Data`
        with ``train`` and ``test`` (``validation`` evaluated too when present), arrays on
        the device (host streams are not supported here).
      method: ``"gmp"``, ``"set"``, ``"rigl"``, ``"static"`` or a method object
        (:mod:`jaxticket.sparse.methods`: ``gmp(...)``, ``rigl(...)``, ``one_shot(pruner,
        step)``, ...); settings of a named method by name (``every=``, ``end=``,
        ``fraction=``, ``distribution=``, ``decay=``, ``start=``, ``scorer=``).
      density: the final fraction of *prunable* weights kept (required for a name).
      steps, batch_size, eval_every, eval_batch_size, chunk_size, checkpoint_every,
        augment: as :class:`~jaxticket.train.FitSettings`.
      seeds, vary, init_seed, data_seed, aug_seed, dropout_seed: replicas and streams as
        :func:`~jaxticket.train.init_state`; ``sparse_seed``: the method's random masks and
        regrowth (replica ``i``: ``sparse_seed + i``).
      prunable: which leaves are sparse (:func:`jaxticket.masks.ones_like`).
      workdir: a run directory (module docstring) or ``None`` (in memory); ``overwrite``.
      loop, seed_strategy: as :func:`~jaxticket.train.fit`.
      mesh: where it trains (:func:`jaxticket.parallel.resolve_mesh`: ``None`` takes the
        default mesh, by default one device; a mesh, ``(R, D)`` or ``"auto"``): the seeds
        (state, masks, the method's keys) over ``R`` replica devices, each batch over ``D``
        data devices, the data replicated. Not part of the run's identity: a run may
        resume on another mesh.

    Returns:
      :class:`SparseResult`: ``.density`` and ``.test_accuracy`` per seed, ``.mask``,
      ``.params``, ``.rows()``, ``.history``.

    Example::

        result = jt.train_sparse(task, data, "rigl", density=0.1, steps=5000, batch_size=60, seeds=3)
        result.density, result.test_accuracy        # [3] each
    """
    t0 = time.perf_counter()
    data = data_lib.as_data(data)
    if data.train is None or data.test is None:
        raise ValueError("train_sparse needs data with a train and a test split")
    if train_lib.sources.is_streamed(data.train):
        raise ValueError("train_sparse trains on device-resident data (an ArrayDataset); host streams are not "
                         "supported yet")
    fit = train_lib.FitSettings(steps=steps, batch_size=batch_size, eval_every=eval_every,
                                eval_batch_size=eval_batch_size, chunk_size=chunk_size,
                                checkpoint_every=checkpoint_every, augment=augment, init_seed=init_seed,
                                data_seed=data_seed, aug_seed=aug_seed, dropout_seed=dropout_seed)
    train_lib.check_inputs(task, data.train)
    mesh = parallel.resolve_mesh(mesh, seeds=seeds, batch_size=batch_size)
    m = methods_lib.get(method, density, **method_settings).resolve(fit.steps)
    ones = masks_lib.ones_like(task.abstract_params(), prunable)
    base = train_lib.init_state(task, mask=ones, seeds=seeds, vary=vary, **fit.seed_streams)
    raw = sparse_keys(seeds, sparse_seed)
    masks0 = _initial_masks(m, ones, raw)
    state = train_lib.with_mask(base, masks0)
    keys = _update_keys(raw)
    if mesh is None:
        keys = jax.device_put(keys, jax.local_devices()[0])
    else:
        state = parallel.shard_state(parallel.to_host(state), mesh)
        keys = parallel.put(keys, parallel.state_sharding(keys, mesh, batched=True))
        data = place_data(data, mesh)
    description = m.describe()
    if workdir is None:
        return _train(task, data, m, description, fit, state, keys, None, loop, seed_strategy, mesh, log, t0)
    identity = {"kind": "sparse", "task": task.describe(), "method": description,
                "sparse_settings": {**dataclasses.asdict(fit), "augment": bool(fit.augment) if not callable(fit.augment)
                             else "callable", "seeds": seeds, "vary": list(vary), "sparse_seed": sparse_seed,
                             "prunable": None if prunable is None else str(prunable)},
                "data": data.fingerprint()}
    root = pathlib.Path(workdir)
    with rundir_lib.RunLock(root):
        if overwrite and parallel.is_primary():
            for name in (_SUMMARY, _METRICS, "mask.npz", "final_params.npz", "final_batch_stats.npz"):
                (root / name).unlink(missing_ok=True)
        if overwrite:
            parallel.sync("sparse_overwrite")  # no process may see the old summary once process 0 removed it
        with ckpt_lib.RunCheckpoints(root, identity, overwrite=overwrite) as ckpts:
            if (root / _SUMMARY).exists():
                return _read_back(root, state, description, log)
            return _train(task, data, m, description, fit, state, keys, (root, ckpts), loop, seed_strategy, mesh,
                          log, t0)


def _read_back(root, like, description, log) -> SparseResult:
    summary = rundir_lib.read_json(root / _SUMMARY)
    mask = rundir_lib.load_mask(root / "mask.npz", like.mask)

    def weights():
        return (rundir_lib.load_tree(root / "final_params.npz", like.params),
                rundir_lib.load_tree(root / "final_batch_stats.npz", like.batch_stats))

    if log is not None:
        log(f"[sparse] {description['method']}: done, read back from {root}")
    return SparseResult(description, mask, summary["history"], summary["rows"], weights, summary["elapsed_s"])


def _history_file(root, start):
    """The evaluation records up to ``start`` (a resumed run evaluates the later ones again)."""
    path = root / _METRICS
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            break
        if rec["step"] <= start:
            records.append(rec)
    if parallel.is_primary():  # every process reads it, process 0 writes it
        rundir_lib.write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))
    return records


def _train(task, data, m, description, fit, state, keys, directory, loop, seed_strategy, mesh, log, t0):
    s = fit
    root, ckpts = directory if directory is not None else (None, None)
    start = 0
    if ckpts is not None and ckpts.latest_step() is not None:
        start = ckpts.latest_step()
        state = ckpts.restore(start, train_lib.abstract(state))
    history = _history_file(root, start) if root is not None else []
    feed = DeviceFeed(s.batch_size, s.augment)
    loop = train_lib.resolve_loop(loop, state)
    length = s.chunk_size if loop == "device" else None
    chunk = s.chunk_size if loop == "device" else 1
    evals = ({0, *range(s.eval_every, s.steps, s.eval_every)} if s.eval_every else set()) | {s.steps}
    saves = set(range(s.checkpoint_every, s.steps, s.checkpoint_every)) if s.checkpoint_every else set()
    plan = _segments(start, s.steps, chunk, evals | saves)
    sums, count = {}, 0

    def record(step, state):
        nonlocal sums, count
        rec = {"step": step}
        for k in ("loss", *task.metric_names):
            rec[f"train_{k}"] = train_lib.as_lists(sums[k] / count) if count else None
        for name, ds in (("val", data.validation), ("test", data.test)):
            if ds is not None:
                out = parallel.to_host(train_lib.evaluate(task, network(m, state), ds, batch_size=s.eval_batch_size,
                                                          mesh=mesh, seed_strategy=seed_strategy))
                rec.update({f"{name}_{k}": train_lib.as_lists(v) for k, v in out.items()})
        rec["density"] = masks_lib.host_density(parallel.to_host(state.mask), batch_dims=1).tolist()
        rec["elapsed_s"] = round(time.perf_counter() - t0, 3)
        sums, count = {}, 0
        history.append(rec)
        if root is not None and parallel.is_primary():
            with open(root / _METRICS, "a") as f:
                f.write(json.dumps(rec) + "\n")

    if start == 0 and 0 in evals:
        record(0, state)
    for first, n in plan:
        state, metrics = run_sparse_steps(task, feed, m, state, keys, data.train, first, n, length=length,
                                          mesh=mesh, seed_strategy=seed_strategy)
        host = {k: np.asarray(v)[:n] for k, v in parallel.to_host(metrics).items()}
        finite = np.isfinite(host["loss"])
        if not finite.all():
            bad = int(np.argwhere(~finite)[0, 0])
            raise train_lib.NonFiniteLossError(first + bad, None, train_lib.as_lists(host["loss"][bad]))
        for k, v in host.items():
            sums[k] = sums.get(k, 0.0) + v.astype(np.float64).sum(0)
        count += n
        if first + n in evals:
            record(first + n, state)
        if ckpts is not None and (first + n in saves or first + n == s.steps):
            ckpts.save(first + n, state)
    return _finish(task, data, m, description, fit, state, history, root, mesh, log, t0)


def network(method, state):
    """The network a state computes: itself, or with straight-through training (dense
    weights kept in the state) its params and moments masked."""
    return train_lib.with_mask(state, state.mask) if method.straight_through else state


def _finish(task, data, m, description, fit, state, history, root, mesh, log, t0) -> SparseResult:
    state = network(m, state)
    seeds = train_lib.num_replicas(state)
    final = {}
    for name, ds in (("test", data.test), ("val", data.validation)):
        if ds is None:
            continue
        ev = parallel.to_host(train_lib.evaluate(task, state, ds, batch_size=fit.eval_batch_size, mesh=mesh))
        final[f"{name}_accuracy"] = per_seed(ev.get("accuracy"), seeds)
        final[f"{name}_loss"] = per_seed(ev["loss"], seeds)
    host_mask = parallel.to_host(state.mask)
    density = masks_lib.host_density(host_mask, batch_dims=1).tolist()
    elapsed = round(time.perf_counter() - t0, 3)
    rows = level_rows(description["method"], 0, seeds, density, final, history, 0, fit.steps)
    for r in rows:
        r.update({"method": description["method"], "target_density": m.final_density(), "steps": fit.steps,
                  "elapsed_s": elapsed})
    if root is not None:  # called on every process: they gather the arrays together, process 0 writes
        rundir_lib.save_mask(root / "mask.npz", host_mask)
        rundir_lib.save_tree(root / "final_params.npz", state.params)
        rundir_lib.save_tree(root / "final_batch_stats.npz", state.batch_stats)
        rundir_lib.write_atomic(root / _SUMMARY, json.dumps({"rows": rows, "history": history,
                                                             "elapsed_s": elapsed}, indent=1))
    if log is not None:
        accs = ", ".join("-" if a is None else f"{a:.4f}" for a in final["test_accuracy"])
        log(f"[sparse] {description['method']}  density {np.mean(density):7.4f}  test accuracy {accs}  "
            f"({elapsed:.1f} s)")
    final_state = state
    return SparseResult(description, state.mask, history, rows,
                        lambda: (final_state.params, final_state.batch_stats), elapsed)
