"""The run handle of IMP (:class:`ImpRun`) and :func:`imp`, which trains a lineage on objects.

:class:`ImpRun` trains; opening its directory (lock, identity, data, overwrite, redo) is
:func:`jaxticket.rundir.open_run_dir`'s, and the files of its levels are
:class:`jaxticket.rundir.RunDir`'s.
"""

from __future__ import annotations

import contextlib
import functools
import pathlib
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

from jaxticket import checkpoints as ckpt_lib
from jaxticket import data as data_lib
from jaxticket import masks as masks_lib
from jaxticket import parallel
from jaxticket import pruning
from jaxticket import rundir as rundir_lib
from jaxticket import train as train_lib
from jaxticket.lottery.branches import BRANCHES, BranchContext
from jaxticket.lottery.engine import Engine
from jaxticket.lottery.results import LevelResult, level_rows, per_seed
from jaxticket.lottery.settings import ImpSettings
from jaxticket.masks import Mask

__all__ = ["BranchLevelError", "ImpRun", "branch_levels", "imp", "imp_settings", "place_data"]


class BranchLevelError(ValueError):
    """A branch asked for at a level that is not a finished IMP level >= 1."""


def branch_levels(finished: Sequence[int], levels: Optional[Sequence[int]] = None,
                  redo: Sequence[int] = ()) -> list[int]:
    """The levels a branch trains at, given the lineage's ``finished`` levels: ``levels``
    (default every finished level >= 1); each of them and of ``redo`` must be a finished
    level >= 1, else :class:`BranchLevelError` naming the others.

    Example:
        >>> branch_levels([0, 1, 2], None), branch_levels([0, 1, 2], [2])
        ([1, 2], [2])
        >>> branch_levels([0, 1, 2], [0, 3])
        Traceback (most recent call last):
        ...
        jaxticket.lottery.run.BranchLevelError: branch levels [0, 3] are not finished IMP levels >= 1 (a branch starts at level 1); finished: [0, 1, 2]
    """
    finished = sorted(int(l) for l in finished)
    wanted = [l for l in finished if l >= 1] if levels is None else [int(l) for l in levels]
    bad = sorted({int(l) for l in [*wanted, *redo]} - {l for l in finished if l >= 1})
    if bad:
        raise BranchLevelError(f"branch levels {bad} are not finished IMP levels >= 1 (a branch starts at level 1); "
                               f"finished: {finished}")
    return wanted


def place_data(data, mesh):
    """``data``'s device-resident splits replicated on every device of ``mesh`` (each
    replica gathers its own batches from them on the device; a host stream is left to
    put each batch on the mesh itself); ``data`` itself without a mesh."""
    if mesh is None:
        return data
    import dataclasses

    placed = {name: split if split is None or isinstance(split, train_lib.HostStream) else parallel.replicate(split, mesh)
              for name, split in (("train", data.train), ("validation", data.validation), ("test", data.test))}
    return dataclasses.replace(data, **placed)


class ImpRun:
    """The handle of an IMP run: its levels, branches and rewind point.

    ``run.levels[i]`` is a :class:`LevelResult` (``.mask``, ``.density``,
    ``.test_accuracy`` one value per seed, ``.params`` the final params); ``run.branch(kind)``
    trains a baseline at chosen levels (:func:`register_branch`), kept in
    ``run.branches[kind][level]``; ``run.rows()`` gives every row.

    Example::

        run = jt.imp(task, data, jt.magnitude(0.2), levels=5, steps=2000, batch_size=64, seeds=3)
        [float(l.density.mean()) for l in run.levels]    # [1.0, 0.8, 0.64, ...]
        run.levels[5].mask.keep["Dense_0"]["kernel"]      # bool [3, in, out]: one mask per seed
        reinit = run.branch("reinit", levels=[5])          # run.branches["reinit"][5] too
        jt.seed_stats(reinit[5].test_accuracy)             # mean, std, 95% interval over seeds
    """

    def __init__(self, task, data, pruner, settings: ImpSettings, workdir=None, identity: Optional[dict] = None,
                 *, overwrite: bool = False, redo_levels: Sequence[int] = (), redo_kind: str = rundir_lib.IMP_KIND,
                 progress=None, log: Optional[Callable] = print, mesh=None):
        self.mesh = parallel.resolve_mesh(mesh, seeds=settings.seeds, batch_size=settings.fit.batch_size)
        self.task, self.data, self.pruner, self.settings = task, place_data(data, self.mesh), pruner, settings
        self.progress, self.log = progress, (log or (lambda *_: None))
        if not parallel.is_primary():  # one process speaks for a multi-process run
            self.log, self.progress = (lambda *_: None), False
        self.engine = Engine(task, settings, self.mesh)
        self.levels: list[LevelResult] = []
        self.branches: dict[str, dict[int, LevelResult]] = {}
        self._rewind_state = None
        self._finals: dict[int, Any] = {}
        self.workdir = None if workdir is None else pathlib.Path(workdir)
        self._dir = None if workdir is None else rundir_lib.RunDir(workdir)
        self._opened: Optional[rundir_lib.OpenRunDir] = None
        self._checkpoints: Optional[ckpt_lib.RunCheckpoints] = None
        self._identity = identity
        if self._dir is not None:
            train_lib.check_inputs(task, data.train)  # a bad input is refused before anything is written
            self._open(identity, overwrite, redo_levels, redo_kind)

    def __repr__(self) -> str:
        where = f", workdir={str(self.workdir)!r}" if self.workdir else ""
        return f"ImpRun({self.task.name}, levels done {len(self.levels)}/{self.settings.levels + 1}{where})"

    # ------------------------------------------------------------------ directory

    def _open(self, identity, overwrite, redo_levels=(), redo_kind=rundir_lib.IMP_KIND):
        """Opens the run directory (:func:`jaxticket.rundir.open_run_dir`: lock, identity, data,
        overwrite, redo) and its rewind points; records the test labels."""
        self._opened = rundir_lib.open_run_dir(self._dir.root, identity, overwrite=overwrite,
                                               redo_levels=redo_levels, redo_kind=redo_kind, log=self.log)
        try:
            self._checkpoints = ckpt_lib.RunCheckpoints(self._dir.root)
            test = self.data.test
            if hasattr(test, "labels") and not (self._dir.root / rundir_lib.TEST_LABELS_FILE).exists():
                self._dir.save_test_labels(test.labels)
        except BaseException:
            self.close()
            raise

    @contextlib.contextmanager
    def _directory_open(self):
        """The run directory open (locked, its checkpoints at hand) for the block: reopened
        when the run was closed (``imp`` closes it when it returns), closed again after."""
        if self._dir is None or self._opened is not None:
            yield
            return
        self._open(self._identity, False)
        try:
            yield
        finally:
            self.close()

    def close(self) -> None:
        """Releases the run directory (its lock and checkpoint managers); reopened on use."""
        if self._checkpoints is not None:
            self._checkpoints.close()
            self._checkpoints = None
        if self._opened is not None:
            self._opened.close()
            self._opened = None

    @property
    def run_hash(self) -> Optional[str]:
        """The hash the run directory stamps its levels with (``None`` when closed or in memory)."""
        return None if self._opened is None else self._opened.run_hash

    @property
    def rewind_state(self):
        """The (seeds-batched) state at the rewind step ``k``."""
        if self._rewind_state is None and self._dir is not None:
            with self._directory_open():
                k = self.settings.rewind_step
                if k not in self._checkpoints.rewind_steps():
                    raise RuntimeError(f"the rewind point at step {k} is missing from {self.workdir}; "
                                       "rerun with overwrite to start this experiment again.")
                self._rewind_state = self._checkpoints.restore_rewind_point(k, train_lib.abstract(self.engine.initial()))
        return self._rewind_state

    def final_state(self, level: int):
        """Level ``level``'s trained state (seeds-batched): on the device for the level just
        trained, else rebuilt from its result."""
        if level in self._finals:
            return self._finals[level]
        result = self.levels[level]
        like = self.engine.initial()
        state = like.replace(params=result.params, batch_stats=result.batch_stats, mask=result.mask)
        return state

    def _read_level(self, level: int, kind: str) -> Optional[LevelResult]:
        if self._dir is None or not self._dir.is_done(level, kind):
            return None
        self._dir.check_level(level, kind)  # every file as it was written, or one line saying which is not
        trained_by = self._dir.level_run_hash(level, kind)
        if self.run_hash is not None and trained_by is not None and trained_by != self.run_hash:
            raise rundir_lib.CorruptRunError(
                f"{self._dir.level_dir(level, kind)} was trained by another run (hash {trained_by}, this run "
                f"{self.run_hash}); redo that level (jaxticket imp/branch ... --redo-level {level}, or "
                f"redo_levels=[{level}])")
        summary = self._dir.summary(level, kind)
        like = self.engine.initial()
        d = self._dir

        @functools.lru_cache(maxsize=1)
        def weights():
            return (d.load_params(level, kind, like.params), d.load_batch_stats(level, kind, like.batch_stats))

        mask = d.load_mask(level, kind, like.mask)
        return LevelResult(kind, level, mask, summary["rows"], d.history(level, kind), weights,
                           lambda: d.load_logits(level, kind))

    # ------------------------------------------------------------------ training a level

    def _train(self, state, kind: str, level: int, rewind_step: Optional[int] = None):
        s, data = self.settings, self.data
        t0 = time.perf_counter()
        start_step = train_lib.host_step(state)
        fit_kw = dict(val=data.validation, test=data.test, rewind_step=rewind_step, progress=self.progress,
                      mesh=self.mesh)
        if self._dir is not None:
            self._dir.save_mask(level, kind, state.mask)
            level_dir = self._dir.level_dir(level, kind)
            level_identity = {"run": self.run_hash, "kind": kind, "level": level}
            with ckpt_lib.RunCheckpoints(level_dir, level_identity) as ckpts:
                result = train_lib.fit(self.task, state, data.train, s.fit, checkpoints=ckpts,
                                       metrics_path=level_dir / rundir_lib.METRICS_FILE, **fit_kw)
            parallel.sync(f"trained:{kind}:{level}")  # process 0's metrics file complete for every process
            history = self._dir.history(level, kind)
        else:
            result = train_lib.fit(self.task, state, data.train, s.fit, **fit_kw)
            history = result.history
        final, logits = {}, None
        for name, ds in (("test", data.test), ("val", data.validation)):
            if ds is None:
                continue
            ev = parallel.to_host(train_lib.evaluate(self.task, result.state, ds, batch_size=s.fit.eval_batch_size,
                                                     logits=name == "test", mesh=self.mesh))
            final[f"{name}_accuracy"] = per_seed(ev.get("accuracy"), s.seeds)
            final[f"{name}_loss"] = per_seed(ev["loss"], s.seeds)
            for metric in self.task.metric_names:  # a task's own metrics (regression: mae, ...)
                if metric != "accuracy":
                    final[f"{name}_{metric}"] = per_seed(ev.get(metric), s.seeds)
            if name == "test":
                logits = np.asarray(ev["logits"], np.float32)
        density = masks_lib.host_density(parallel.to_host(result.state.mask), batch_dims=1).tolist()
        rows = level_rows(kind, level, s.seeds, density, final, history, start_step, s.fit.steps)
        elapsed = round(time.perf_counter() - t0, 3)
        if self._dir is not None:
            self._dir.save_level(level, kind, params=result.state.params, batch_stats=result.state.batch_stats,
                                 test_logits=logits,
                                 summary={"kind": kind, "level": level, "density": density, "rows": rows,
                                          "elapsed_s": elapsed})
        accs = ", ".join("-" if a is None else f"{a:.4f}" for a in final["test_accuracy"])
        self.log(f"[{kind}] level {level:2d}  density {np.mean(density):7.4f}  test accuracy {accs}  ({elapsed:.1f} s)")
        state = result.state
        out = LevelResult(kind, level, state.mask, rows, history,
                          lambda: (state.params, state.batch_stats), lambda: logits)
        return out, result

    # ------------------------------------------------------------------ the lineage

    def run(self) -> "ImpRun":
        """Trains (or reads back) every level of the lineage; returns ``self``."""
        s = self.settings
        previous_mask = self.engine.ones
        failed = True
        try:
            for level in range(s.levels + 1):
                done = self._read_level(level, rundir_lib.IMP_KIND)
                if done is not None and (level > 0 or s.rewind_step in self._checkpoints.rewind_steps()):
                    self.log(f"[imp] level {level:2d}  done, read back from {self._dir.level_dir(level)}")
                    self.levels.append(done)
                    previous_mask = done.mask
                    continue
                if level == 0:
                    state = self.engine.initial()
                else:
                    previous = self.final_state(level - 1)
                    scored = previous.params if s.prune_from == "final" else self.rewind_state.params
                    mask = self.engine.prune(self.pruner, level, scored, previous_mask)
                    if s.reset == "rewind":
                        state = self.engine.rewound(self.rewind_state, mask)
                    elif s.reset == "lr_rewind":
                        state = self.engine.lr_rewound(self.rewind_state, previous, mask)
                    else:
                        state = self.engine.finetuned(self.rewind_state, previous, mask)
                result, fitted = self._train(state, rundir_lib.IMP_KIND, level,
                                             rewind_step=s.rewind_step if level == 0 else None)
                if level == 0:
                    self._rewind_state = fitted.rewind_state
                    if self._checkpoints is not None and s.rewind_step not in self._checkpoints.rewind_steps():
                        self._checkpoints.save_rewind_point(s.rewind_step, fitted.rewind_state)
                self._finals = {level: fitted.state}  # the previous level's final state, on the device
                self.levels.append(result)
                previous_mask = result.mask
                if self._dir is not None:
                    self._dir.write_results()
            failed = False
        finally:
            if self._dir is not None and self._opened is not None:
                self._write_results(quietly=failed)
        return self

    def _write_results(self, *, quietly: bool) -> None:
        """The results files from the finished levels; ``quietly`` (an error is on its way
        out): a damaged level must not replace that error with its own."""
        try:
            self._dir.write_results()
        except (OSError, ValueError):
            if not quietly:
                raise

    def branch(self, kind: str, levels: Optional[Sequence[int]] = None) -> list[LevelResult]:
        """Trains branch ``kind`` (:func:`branch_kinds`) at ``levels`` (default: every IMP
        level >= 1), from this lineage's masks; finished ones are read back."""
        BRANCHES.get(kind)  # an unknown kind: the valid ones
        levels = self.branch_levels(levels)
        with self._directory_open():
            return self._branch(kind, levels)

    def _branch(self, kind: str, levels: list[int]) -> list[LevelResult]:
        out = []
        for level in levels:
            result = self._read_level(level, kind)
            if result is not None:
                self.log(f"[{kind}] level {level:2d}  done, read back from {self._dir.level_dir(level, kind)}")
            else:
                state = BRANCHES.get(kind)(BranchContext(self, kind, level))
                result, _ = self._train(state, kind, level)
            self.branches.setdefault(kind, {})[level] = result
            out.append(result)
        if self._dir is not None:
            self._dir.write_results()
        return out

    def branch_levels(self, levels: Optional[Sequence[int]] = None, redo: Sequence[int] = ()) -> list[int]:
        """The levels a branch trains at: ``levels`` (default every finished IMP level >= 1),
        each (and each of ``redo``) a finished IMP level >= 1, or :class:`BranchLevelError`
        naming the ones that are not. The one check of branch levels."""
        return branch_levels([l.level for l in self.levels], levels, redo)

    def discard_branch_levels(self, kind: str, levels: Sequence[int]) -> None:
        """Deletes branch ``kind``'s files at ``levels`` (to train them again)."""
        with self._directory_open():
            for level in levels:
                self._dir.discard_level(int(level), kind)
                self.log(f"[{kind}] level {int(level):2d}  discarded, to be trained again")

    def read_levels(self) -> "ImpRun":
        """Reads back the lineage's finished levels (in order, up to the first missing); trains nothing."""
        with self._directory_open():
            for level in range(len(self.levels), self.settings.levels + 1):
                result = self._read_level(level, rundir_lib.IMP_KIND)
                if result is None:
                    break
                self.levels.append(result)
        return self

    def prune(self, level: int, pruner=None) -> Mask:
        """The mask the lineage's pruner (or ``pruner``) gives ``level`` (>= 1): from level
        ``level - 1``'s mask and the weights it scores (``prune_from``: the previous level's
        final weights, or the rewind point's); recomputed, deterministic."""
        return self.engine.prune(self.pruner if pruner is None else pruner, level, self._scored_params(level),
                                  self.levels[level - 1].mask)

    def _scored_params(self, level: int):
        if self.settings.prune_from == "rewind":
            return self.rewind_state.params
        return self.final_state(level - 1).params

    def branch_state(self, kind: str, level: int):
        """The start state branch ``kind`` would train at ``level`` (e.g. the rewound
        level-``L`` subnetwork, ``branch_state("rewind", L)``), without training it."""
        fn = BRANCHES.get(kind)
        with self._directory_open():
            return fn(BranchContext(self, kind, level))

    def rows(self) -> list[dict]:
        """Every row: the lineage's levels, then the branches by kind."""
        out = [r for l in self.levels for r in l.rows]
        for kind in sorted(self.branches):
            out += [r for level in sorted(self.branches[kind]) for r in self.branches[kind][level].rows]
        return out


def imp(task: train_lib.Task, data, pruner, *, settings: Optional[ImpSettings] = None, workdir=None,
        overwrite: bool = False, redo_levels: Sequence[int] = (), progress=None, log: Optional[Callable] = print,
        identity: Optional[dict] = None, mesh=None, **named) -> ImpRun:
    """Iterative magnitude pruning on objects: trains (or resumes) the lineage, returns its handle.

    Args:
      task: the :class:`~jaxticket.train.Task` (model, input shape, loss, optimizer, metrics).
      data: :class:`~jaxticket.data.Data` (``from_arrays`` or ``data.splits``); IMP
        trains on ``train``, evaluates ``validation`` (early stopping) and ``test``.
      pruner: any pruner callable ``(params, mask, key) -> mask``, a pruner config dict,
        or a level schedule (:func:`jaxticket.pruning.per_level`, ``to_density``).
      settings: the :class:`ImpSettings` (with its :class:`~jaxticket.train.FitSettings`),
        or none and the settings by name (``levels``, ``steps`` and ``batch_size`` then
        required): ``levels``, ``rewind_step``, ``seeds``, ``eval_every``, ``reset``,
        ``prunable``, ``vary``, ``init_seed``, ``augment``, ...; with ``settings``, names
        change it.
      workdir: ``None``: in memory. A directory: on disk and resumable (see the module
        docstring), locked while the run works in it; ``overwrite`` discards what it holds,
        ``redo_levels`` only those levels (e.g. one whose files were damaged).
      progress: per-level progress bars (``None``: automatic). ``log``: called with a line
        per level (``None``: quiet).
      identity: what the run directory records as the run's identity (default: the
        task's description, the pruner, the settings); the data fingerprint is added.
      mesh: where it trains (:func:`jaxticket.parallel.resolve_mesh`): ``None`` one
        device; a :func:`jaxticket.parallel.make_mesh` mesh, ``(R, D)`` or ``"auto"``: the
        seeds over ``R`` replica devices, each replica's batch over ``D``. The same seeds
        give the same results on any ``(R, 1)`` mesh (bit for bit on the CPU); ``D > 1``
        sums each gradient in another order (float tolerance). Not part of the run's
        identity: a run may resume on another mesh.

    Returns:
      :class:`ImpRun`: ``run.levels[i].mask / .density / .test_accuracy / .params``,
      ``run.branch("reinit")``, ``run.rows()``.

    Example (a run to execute, with timings, is in this module's docstring)::

        data = jt.data.from_arrays(train=(x_train, y_train), test=(x_test, y_test),
                                   validation_size=5000)          # x: float32 [N, 28, 28, 1]
        task = jt.Task(MyModel(), input_shape=(28, 28, 1), tx=optax.adam(1.2e-3))
        run = jt.imp(task, data, jt.magnitude(0.2), levels=20, steps=50_000, batch_size=60,
                     rewind_step=0, seeds=5, eval_every=100, workdir="runs/lenet")
        run.levels[9].density          # float [5]: ~0.134 for every seed
        run.levels[9].test_accuracy    # float [5]
        run.branch("reinit", levels=[5, 10, 15])
    """
    data = data_lib.as_data(data)
    if data.train is None or data.test is None:
        raise ValueError("imp needs data with a train and a test split")
    pruner = pruning.from_config(pruner) if isinstance(pruner, dict) else pruner
    if not hasattr(pruner, "at_level"):
        pruner = pruning.as_pruner(pruner)
    pruner = pruning.bind(pruner, task, data)  # SNIP, GraSP, SynFlow: the model and a batch
    s = imp_settings(settings, named)
    if s.fit.augment and not data_lib.is_image_data(data.train):
        raise ValueError("augment=True is the CIFAR crop + flip of images [N, H, W, C]; the data's inputs are "
                         f"{data.train.inputs.dtype}{list(data.train.example_shape)}")
    if workdir is not None:
        base = identity if identity is not None else {
            "task": task.describe(), "pruner": pruning.describe(pruner), "settings": s.to_dict()}
        identity = {**base, "data": data.fingerprint()}
    run = ImpRun(task, data, pruner, s, workdir, identity, overwrite=overwrite, redo_levels=redo_levels,
                 progress=progress, log=log, mesh=mesh)
    try:
        return run.run()
    finally:
        run.close()




def imp_settings(settings: Optional[ImpSettings], named: dict) -> ImpSettings:
    """``settings`` changed by ``named`` settings; without ``settings``, built from them
    (``levels``, ``steps`` and ``batch_size`` required)."""
    if settings is not None:
        return settings.replace(**named) if named else settings
    missing = [name for name in ("levels", "steps", "batch_size") if name not in named]
    if missing:
        raise TypeError(f"imp() needs settings=ImpSettings(...) or {', '.join(missing)}=...")
    return ImpSettings.of(**named)
