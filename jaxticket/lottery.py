"""Iterative magnitude pruning (IMP) with rewinding, and its baselines.

Level 0 trains the dense network (under an all-True mask) and keeps the state at the
rewind step ``k`` (``k = 0`` is the initialisation: Frankle & Carbin's lottery ticket;
``k > 0`` is late resetting / rewinding). Every later level

1. prunes the previous level's final weights with the configured pruner
   (``pruner(params_T, mask) -> mask'``, a subset of ``mask``),
2. builds the level's start state according to ``reset``, and
3. trains it to the end of training.

Reset modes (``LotteryConfig.reset``, also the branch kinds of :func:`run_branch`):

* ``"rewind"``: the rewind point's weights (and, by default, BatchNorm statistics)
  masked with ``mask'``; fresh optimizer state; the step counter, and so the learning
  rate schedule and the data order, resume at ``k`` (open_lth's behaviour). What is
  restored is ``rewind_restores``, a subset of ``("params", "batch_stats",
  "opt_state")``; ``params`` is always restored.
* ``"finetune"``: the previous level's *final* weights and BatchNorm statistics, masked;
  fresh optimizer state; trains steps ``k..T`` like a rewound level, so the two use the
  same budget and schedule positions.
* ``"reinit"``: the same mask on a fresh random initialisation (init seed
  ``init_seed + REINIT_SEED_STRIDE * level``), trained from step 0 to ``T``.
* ``"random_mask"``: a random mask with the same per-layer number of survivors as the
  pruner's mask (:func:`jaxticket.pruning.random_like`), on the rewind point's weights.

Seeds are a leading axis: ``seeds=S`` replicas (init / data order / augmentation seeds
``+ i`` for the streams in ``vary``) train in one vmapped program, each with its own
masks, and the pruner is vmapped over them.

Run directory (``workdir``)::

    config.json           the full resolved config and its hash (a different config is refused)
    rewind/               the rewind point at step k (orbax, never garbage-collected)
    levels/level_LL/      one per level: mask.npz, checkpoints/ (resume), metrics.jsonl,
                          final_params.npz, final_batch_stats.npz, test_logits.npy,
                          summary.json (written last: the level is done)
    branches/MODE/level_LL/   the same for baselines run from this IMP run
    results.json, results.csv one row per (kind, level, seed)

Running the same thing again continues where it stopped: finished levels are read back,
an interrupted level resumes from its last checkpoint, and the results equal those of an
uninterrupted run (bitwise on CPU).

Example::

    from jaxticket import lottery, train

    config = lottery.LotteryConfig(
        train=train.TrainConfig(model="lenet_300_100", dataset="mnist", optimizer="adam",
                                lr=1.2e-3, batch_size=60, steps=50_000, eval_every=100),
        levels=10, pruner={"method": "partition", "rules": [
            ["^output/kernel", {"method": "magnitude", "fraction": 0.1}],
            ["kernel$", {"method": "magnitude", "fraction": 0.2}]]},
        rewind_step=0, validation_size=5000)
    rows = lottery.run_imp(config, "runs/lenet")
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import pathlib
import shutil
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxticket import checkpoints as ckpt_lib
from jaxticket import masks as masks_lib
from jaxticket import pruning
from jaxticket import train as train_lib
from jaxticket.masks import Mask

__all__ = [
    "RESETS",
    "REWIND_PARTS",
    "LotteryConfig",
    "load_level",
    "load_results",
    "prune_level",
    "run_branch",
    "run_imp",
    "start_state",
]

RESETS = ("rewind", "finetune", "reinit", "random_mask")
REWIND_PARTS = ("params", "batch_stats", "opt_state")
REINIT_SEED_STRIDE = 100_003
RESULT_FIELDS = (
    "kind", "level", "seed", "density", "final_test_accuracy", "final_test_loss",
    "best_test_accuracy", "final_val_accuracy", "final_val_loss", "early_stop_step",
    "early_stop_val_loss", "early_stop_test_accuracy", "start_step", "end_step",
)


# ============================================================================ config


@dataclasses.dataclass(frozen=True)
class LotteryConfig:
    """An IMP experiment: the training run of every level, and how levels follow.

    Attributes:
      train: the :class:`jaxticket.train.TrainConfig` of every level (``steps`` = T).
      levels: pruning levels after the dense level 0 (so ``levels + 1`` trainings).
      pruner: the pruner as plain data (:func:`jaxticket.pruning.from_config`), e.g.
        ``{"method": "magnitude", "fraction": 0.2, "scope": "global"}``.
      prunable: regex over leaf paths of the prunable leaves; ``None`` = all kernels
        (leaves with ndim >= 2).
      rewind_step: k, the step rewound to (0 = reset to initialisation).
      reset: one of :data:`RESETS` (see the module docstring).
      rewind_restores: what a rewind restores, a subset of :data:`REWIND_PARTS`
        containing ``"params"``; the default is open_lth's (weights and BN statistics;
        optimizer state fresh; the schedule resumes at k in every case).
      seeds: replicas trained together (vmapped), each with its own masks.
      vary: which random streams differ across replicas (``init``, ``data``, ``aug``,
        ``dropout``).
      pruning_seed: the key of random pruners and random masks.
      validation_size: training examples held out for validation/early stopping
        (``None`` = the dataset's default; 0 = none).
    """

    train: train_lib.TrainConfig = dataclasses.field(default_factory=train_lib.TrainConfig)
    levels: int = 3
    pruner: Any = dataclasses.field(
        default_factory=lambda: {"method": "magnitude", "fraction": 0.2, "scope": "global"}
    )
    prunable: Optional[str] = None
    rewind_step: int = 0
    reset: str = "rewind"
    rewind_restores: tuple = ("params", "batch_stats")
    seeds: int = 1
    vary: tuple = ("init", "data", "aug")
    pruning_seed: int = 0
    validation_size: Optional[int] = None

    def __post_init__(self):
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", train_lib.TrainConfig(**self.train))
        object.__setattr__(self, "rewind_restores", tuple(self.rewind_restores))
        object.__setattr__(self, "vary", tuple(self.vary))
        if not isinstance(self.pruner, dict):
            object.__setattr__(self, "pruner", pruning.to_config(self.pruner))
        validate_config(self)

    def replace(self, **changes) -> "LotteryConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LotteryConfig":
        d = dict(d)
        if "train" in d:
            d["train"] = train_lib.TrainConfig(**d["train"])
        return cls(**d)

    def make_pruner(self) -> pruning.Pruner:
        return pruning.from_config(self.pruner)


def validate_config(config: LotteryConfig) -> None:
    """Raises ``ValueError`` naming the bad field and what is allowed."""
    def bad(msg):
        raise ValueError(f"LotteryConfig: {msg}")

    if not isinstance(config.levels, int) or config.levels < 0:
        bad(f"levels must be an int >= 0 (pruning levels after the dense one), got {config.levels!r}")
    if not isinstance(config.rewind_step, int) or not 0 <= config.rewind_step <= config.train.steps:
        bad(f"rewind_step must be an int in [0, train.steps={config.train.steps}], got {config.rewind_step!r}")
    if config.reset not in RESETS:
        bad(f"reset must be one of {RESETS}, got {config.reset!r}")
    unknown = sorted(set(config.rewind_restores) - set(REWIND_PARTS))
    if unknown or "params" not in config.rewind_restores:
        bad(f"rewind_restores must be a subset of {REWIND_PARTS} containing 'params', got {config.rewind_restores!r}")
    if not isinstance(config.seeds, int) or config.seeds < 1:
        bad(f"seeds must be an int >= 1, got {config.seeds!r}")
    unknown = sorted(set(config.vary) - set(train_lib.VARY_STREAMS))
    if unknown:
        bad(f"vary: unknown streams {unknown}; valid: {train_lib.VARY_STREAMS}")
    if config.validation_size is not None and (not isinstance(config.validation_size, int) or config.validation_size < 0):
        bad(f"validation_size must be None or an int >= 0, got {config.validation_size!r}")
    pruning.from_config(config.pruner)  # raises with the valid methods/settings


# ============================================================================ files


def _write_bytes_atomic(path: pathlib.Path, write: Callable[[io.BufferedWriter], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_text_atomic(path: pathlib.Path, text: str) -> None:
    _write_bytes_atomic(path, lambda f: f.write(text.encode()))


def _save_tree(path: pathlib.Path, tree, extra: Optional[dict] = None) -> None:
    arrays = {p: np.asarray(jax.device_get(x)) for p, x in zip(masks_lib.leaf_paths(tree), jax.tree.leaves(tree))}
    arrays.update(extra or {})
    _write_bytes_atomic(path, lambda f: np.savez(f, **arrays))


def _load_tree(path: pathlib.Path, like):
    with np.load(path) as stored:
        paths = masks_lib.leaf_paths(like)
        missing = [p for p in paths if p not in stored.files]
        if missing:
            raise ValueError(f"{path} does not hold {missing[:3]}...: it was written for another model.")
        leaves = [jnp.asarray(stored[p]) for p in paths]
    return jax.tree.unflatten(jax.tree.structure(like), leaves)


def save_mask(path, mask: Mask) -> None:
    """Writes a (possibly seeds-batched) mask as ``.npz``: one bool array per leaf path."""
    _save_tree(pathlib.Path(path), mask.keep, {"__prunable__": np.asarray(mask.prunable, bool)})


def load_mask(path, like: Mask) -> Mask:
    """Reads a mask written by :func:`save_mask` into the structure of ``like``."""
    with np.load(path) as stored:
        prunable = tuple(bool(x) for x in stored["__prunable__"])
    return Mask(_load_tree(pathlib.Path(path), like.keep), prunable)


def _level_dir(workdir, level: int, branch: Optional[str] = None) -> pathlib.Path:
    root = pathlib.Path(workdir)
    base = root / "levels" if branch is None else root / "branches" / branch
    return base / f"level_{level:02d}"


# ============================================================================ state building


def _datasets(config: LotteryConfig, data_dir=None, manual_dir=None) -> dict:
    """The run's splits: device-resident (``data.splits``), or for a streaming dataset
    (ImageNet) ``jaxticket.train.HostStream`` objects over ``data.make_stream``: train
    batches of ``batch_size`` shuffled and augmented with seed ``data_seed``, evaluation
    batches of ``eval_batch_size``, images of the model's input size."""
    from jaxticket import data as data_lib

    tc = config.train
    spec = data_lib.get_spec(tc.dataset)
    if spec.streaming:
        validation_size = config.validation_size
        if validation_size is None:
            validation_size = spec.default_validation_size
        kw = dict(image_size=int(train_lib._input_shape(tc)[0]), validation_size=validation_size,
                  data_dir=data_dir, manual_dir=manual_dir)

        def stream(split, **extra):
            return data_lib.make_stream(tc.dataset, split, **extra, **kw)

        steps_per_epoch = len(stream("train", batch_size=tc.batch_size, seed=tc.data_seed, num_epochs=1))
        def host(s, **extra):
            return train_lib.HostStream(s, name=tc.dataset, **extra)

        return {"train": host(stream("train", batch_size=tc.batch_size, seed=tc.data_seed),
                              steps_per_epoch=steps_per_epoch),
                "validation": (host(stream("validation", batch_size=tc.eval_batch_size))
                               if validation_size else None),
                "test": host(stream("test", batch_size=tc.eval_batch_size))}
    return data_lib.splits(config.train.dataset, validation_size=config.validation_size,
                           data_dir=data_dir, manual_dir=manual_dir)


def _initial_state(config: LotteryConfig, train_config: Optional[train_lib.TrainConfig] = None,
                   mask: Any = None):
    tc = train_config or config.train
    if mask is None:
        mask = masks_lib.ones_like(train_lib._abstract_params(tc), config.prunable)
    return train_lib.init_state(tc, mask=mask, seeds=config.seeds, vary=config.vary)


def _fresh_opt_state(config: LotteryConfig, params):
    tx = train_lib.make_optimizer(config.train, steps_per_epoch=1)
    return jax.vmap(tx.init)(params)


def prune_level(config: LotteryConfig, params, mask: Mask, level: int, *, reset: Optional[str] = None) -> Mask:
    """The mask of ``level`` from the previous level's final ``params`` and ``mask``.

    Vmapped over the seeds axis (each replica prunes its own weights). For
    ``reset="random_mask"`` the result is a random mask with the pruner's per-layer
    survivor counts. Random pruners get ``fold_in(key(pruning_seed), level)``, split per
    replica.
    """
    pruner = config.make_pruner()
    keys = jax.random.split(jax.random.fold_in(jax.random.key(config.pruning_seed), level), config.seeds)
    new = jax.vmap(pruner)(params, mask, keys)
    if (reset or config.reset) == "random_mask":
        random_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
        new = jax.vmap(lambda m, k: pruning.random_like(m, k, "layer"))(new, random_keys)
    return new


def start_state(config: LotteryConfig, mode: str, level: int, mask: Mask, *, rewind_state, previous_final=None):
    """The state a level starts from, for reset ``mode`` (see the module docstring).

    ``rewind_state``: the (seeds-batched) state at step ``k``; ``previous_final``: the
    previous level's final state (for ``"finetune"``).
    """
    if mode not in RESETS:
        raise ValueError(f"unknown reset mode {mode!r}; valid: {RESETS}")
    if mode == "reinit":
        tc = config.train.replace(init_seed=config.train.init_seed + REINIT_SEED_STRIDE * level)
        return _initial_state(config, tc, mask)
    if mode == "finetune":
        if previous_final is None:
            raise ValueError("finetune needs the previous level's final state")
        trained = rewind_state.replace(params=previous_final.params, batch_stats=previous_final.batch_stats)
        state = train_lib.with_mask(trained, mask)
        return state.replace(opt_state=_fresh_opt_state(config, state.params))
    state = train_lib.with_mask(rewind_state, mask)  # params and optimizer moments masked
    if "opt_state" not in config.rewind_restores:
        state = state.replace(opt_state=_fresh_opt_state(config, state.params))
    if "batch_stats" not in config.rewind_restores:
        state = state.replace(batch_stats=_initial_state(config, mask=mask).batch_stats)
    return state


# ============================================================================ one level


def _read_history(path: pathlib.Path) -> list[dict]:
    """Metrics records by step; after a resume the later record of a step wins."""
    if not path.exists():
        return []
    by_step = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            by_step[rec["step"]] = rec
    return [by_step[s] for s in sorted(by_step)]


def _per_seed(value, seeds: int) -> list:
    if value is None:
        return [None] * seeds
    arr = np.asarray(value, dtype=float).reshape(-1)
    return arr.tolist() if arr.size == seeds else [float(arr[0])] * seeds


def _level_rows(kind: str, level: int, seeds: int, density, final: dict, history: list[dict],
                start_step: int, end_step: int) -> list[dict]:
    rows = []
    for s in range(seeds):
        test_acc = [(r["step"], _per_seed(r.get("test_accuracy"), seeds)[s]) for r in history
                    if r.get("test_accuracy") is not None]
        val_loss = [(r["step"], _per_seed(r.get("val_loss"), seeds)[s]) for r in history
                    if r.get("val_loss") is not None and r["step"] > start_step]
        row = {
            "kind": kind, "level": level, "seed": s, "density": float(density[s]),
            "final_test_accuracy": final["test_accuracy"][s], "final_test_loss": final["test_loss"][s],
            "best_test_accuracy": max((a for _, a in test_acc), default=final["test_accuracy"][s]),
            "final_val_accuracy": final.get("val_accuracy", [None] * seeds)[s],
            "final_val_loss": final.get("val_loss", [None] * seeds)[s],
            "early_stop_step": None, "early_stop_val_loss": None, "early_stop_test_accuracy": None,
            "start_step": start_step, "end_step": end_step,
        }
        if val_loss:  # Frankle & Carbin: the iteration of minimum validation loss
            step, loss = min(val_loss, key=lambda t: (t[1], t[0]))
            row["early_stop_step"], row["early_stop_val_loss"] = step, loss
            row["early_stop_test_accuracy"] = dict(test_acc).get(step)
        rows.append(row)
    return rows


def _train_level(config: LotteryConfig, datasets: dict, level_dir: pathlib.Path, state, *, kind: str,
                 level: int, run_hash: str, rewind_step: Optional[int] = None, progress=None, log=print):
    """Trains one level (resuming if interrupted); writes its files; returns (final, rewind, rows)."""
    tc = config.train
    level_dir.mkdir(parents=True, exist_ok=True)
    save_mask(level_dir / "mask.npz", state.mask)
    level_config = {"run": run_hash, "kind": kind, "level": level}
    start_step = int(np.ravel(jax.device_get(state.step))[0])
    t0 = time.perf_counter()
    with ckpt_lib.RunCheckpoints(level_dir, level_config) as ckpts:
        result = train_lib.fit(tc, state, datasets["train"], val_ds=datasets.get("validation"),
                               test_ds=datasets["test"], rewind_step=rewind_step,
                               metrics_path=level_dir / "metrics.jsonl", checkpoints=ckpts,
                               progress=progress)
    final = {}
    for name, ds in (("test", datasets["test"]), ("val", datasets.get("validation"))):
        if ds is None:
            continue
        ev = jax.device_get(train_lib.evaluate(tc, result.state, ds))
        final[f"{name}_accuracy"] = _per_seed(ev["accuracy"], config.seeds)
        final[f"{name}_loss"] = _per_seed(ev["loss"], config.seeds)
        if name == "test":
            _write_bytes_atomic(level_dir / "test_logits.npy",
                                lambda f, x=np.asarray(ev["logits"]): np.save(f, x))
    density = np.asarray(jax.vmap(masks_lib.density)(result.state.mask)).tolist()
    rows = _level_rows(kind, level, config.seeds, density, final, _read_history(level_dir / "metrics.jsonl"),
                       start_step, tc.steps)
    _save_tree(level_dir / "final_params.npz", result.state.params)
    _save_tree(level_dir / "final_batch_stats.npz", result.state.batch_stats)
    summary = {"kind": kind, "level": level, "density": density, "rows": rows,
               "elapsed_s": round(time.perf_counter() - t0, 3)}
    _write_text_atomic(level_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    accs = ", ".join(f"{a:.4f}" for a in final["test_accuracy"])
    log(f"[{kind}] level {level:2d}  density {np.mean(density):7.4f}  test accuracy {accs}  "
        f"({summary['elapsed_s']:.1f} s)")
    return result.state, result.rewind_state, rows


def load_level(config: LotteryConfig, level_dir, like_state):
    """A finished level's final state (params, BN stats, mask) read back from its files."""
    level_dir = pathlib.Path(level_dir)
    mask = load_mask(level_dir / "mask.npz", like_state.mask)
    params = _load_tree(level_dir / "final_params.npz", like_state.params)
    stats = like_state.batch_stats
    if jax.tree.leaves(stats):
        stats = _load_tree(level_dir / "final_batch_stats.npz", stats)
    return like_state.replace(params=params, batch_stats=stats, mask=mask)


def _level_done(level_dir: pathlib.Path) -> Optional[list[dict]]:
    path = level_dir / "summary.json"
    return json.loads(path.read_text())["rows"] if path.exists() else None


# ============================================================================ IMP


def _open_run(config: LotteryConfig, workdir, overwrite: bool) -> ckpt_lib.RunCheckpoints:
    workdir = pathlib.Path(workdir)
    if overwrite:
        for sub in ("levels", "branches"):
            shutil.rmtree(workdir / sub, ignore_errors=True)
        for name in ("results.json", "results.csv"):
            (workdir / name).unlink(missing_ok=True)
    return ckpt_lib.RunCheckpoints(workdir, config.to_dict(), overwrite=overwrite)


def _rewind_point(config, run, initial, result_rewind):
    k = config.rewind_step
    if result_rewind is not None:
        if k not in run.rewind_steps():
            run.save_rewind_point(k, result_rewind)
        return result_rewind
    if k not in run.rewind_steps():
        raise RuntimeError(f"the rewind point at step {k} is missing from {run.directory}; "
                           "rerun with --overwrite to start this experiment again.")
    return run.restore_rewind_point(k, train_lib._abstract(initial))


def run_imp(config: LotteryConfig, workdir, *, datasets: Optional[dict] = None, data_dir=None,
            manual_dir=None, overwrite: bool = False, progress=None, log: Callable = print) -> list[dict]:
    """Runs (or resumes) IMP: level 0 dense, then ``config.levels`` pruned levels.

    Args:
      config: the experiment.
      workdir: the run directory (see the module docstring); refused if it was made by a
        different config, unless ``overwrite``.
      datasets: ``{"train", "validation", "test"}`` device datasets; default: loaded with
        :func:`jaxticket.data.splits` (``data_dir``/``manual_dir`` for TFDS).
      progress: per-level progress bars (``None``: automatic).
      log: called with a one-line summary per level.

    Returns:
      One row per (level, seed), also written to ``results.json`` / ``results.csv``.
    """
    workdir = pathlib.Path(workdir)
    datasets = datasets or _datasets(config, data_dir, manual_dir)  # before anything is written
    run = _open_run(config, workdir, overwrite)
    rows: list[dict] = []
    try:
        initial = _initial_state(config)
        rewind_state = None
        previous = None
        mask = initial.mask
        for level in range(config.levels + 1):
            level_dir = _level_dir(workdir, level)
            done = _level_done(level_dir)
            if done is not None and (level > 0 or config.rewind_step in run.rewind_steps()):
                log(f"[imp] level {level:2d}  done, read back from {level_dir}")
                rows += done
                previous = load_level(config, level_dir, initial)
                mask = previous.mask
                continue
            if level == 0:
                state = initial
            else:
                if rewind_state is None:
                    rewind_state = _rewind_point(config, run, initial, None)
                mask = prune_level(config, previous.params, mask, level)
                state = start_state(config, config.reset, level, mask, rewind_state=rewind_state,
                                    previous_final=previous)
            final, rewound, level_rows = _train_level(
                config, datasets, level_dir, state, kind="imp", level=level, run_hash=run.config_hash,
                rewind_step=config.rewind_step if level == 0 else None, progress=progress, log=log)
            if level == 0:
                rewind_state = _rewind_point(config, run, initial, rewound)
            previous, mask = final, final.mask
            rows += level_rows
            _write_results(workdir, rows)
    finally:
        run.close()
    _write_results(workdir, _all_rows(workdir))
    return rows


# ============================================================================ branches


def run_branch(workdir, mode: str, levels: Optional[Sequence[int]] = None, *, datasets: Optional[dict] = None,
               data_dir=None, manual_dir=None, progress=None, log: Callable = print) -> list[dict]:
    """Runs a baseline from an existing IMP run at chosen levels, reusing its masks.

    ``mode``: ``"reinit"`` (the IMP mask at level L on a fresh init), ``"random_mask"``
    (a random mask with level L's per-layer counts, rewound weights), ``"finetune"`` (the
    IMP level L-1 final weights under level L's mask) or ``"rewind"`` (a re-run of the
    IMP level, e.g. with more seeds of the data order). ``levels``: default all finished
    IMP levels >= 1. Results go to ``branches/MODE/level_LL`` and the run's results files.
    """
    workdir = pathlib.Path(workdir)
    if mode not in RESETS:
        raise ValueError(f"unknown branch {mode!r}; valid: {RESETS}")
    config_path = workdir / ckpt_lib.CONFIG_FILE
    if not config_path.exists():
        raise FileNotFoundError(f"{workdir} holds no IMP run (no {ckpt_lib.CONFIG_FILE}); run `jaxticket imp` first.")
    config = LotteryConfig.from_dict(json.loads(config_path.read_text())["config"])
    finished = sorted(int(p.parent.name.split("_")[1]) for p in (workdir / "levels").glob("level_*/summary.json"))
    levels = [l for l in finished if l >= 1] if levels is None else list(levels)
    missing = [l for l in levels if l not in finished or l < 1]
    if missing:
        raise ValueError(f"branch levels {missing} are not finished IMP levels >= 1; finished: {finished}")
    run = ckpt_lib.RunCheckpoints(workdir, config.to_dict())
    datasets = datasets or _datasets(config, data_dir, manual_dir)
    rows: list[dict] = []
    try:
        initial = _initial_state(config)
        rewind_state = _rewind_point(config, run, initial, None)
        for level in levels:
            level_dir = _level_dir(workdir, level, mode)
            done = _level_done(level_dir)
            if done is not None:
                log(f"[{mode}] level {level:2d}  done, read back from {level_dir}")
                rows += done
                continue
            imp_mask = load_mask(_level_dir(workdir, level) / "mask.npz", initial.mask)
            previous = load_level(config, _level_dir(workdir, level - 1), initial)
            mask = imp_mask
            if mode == "random_mask":
                keys = jax.random.split(jax.random.fold_in(jax.random.key(config.pruning_seed + 1), level), config.seeds)
                mask = jax.vmap(lambda m, k: pruning.random_like(m, k, "layer"))(imp_mask, keys)
            state = start_state(config, mode, level, mask, rewind_state=rewind_state, previous_final=previous)
            _, _, level_rows = _train_level(config, datasets, level_dir, state, kind=mode, level=level,
                                            run_hash=run.config_hash, progress=progress, log=log)
            rows += level_rows
    finally:
        run.close()
    _write_results(workdir, _all_rows(workdir))
    return rows


# ============================================================================ results


def _all_rows(workdir) -> list[dict]:
    workdir = pathlib.Path(workdir)
    rows = []
    for path in sorted(workdir.glob("levels/level_*/summary.json")) + sorted(workdir.glob("branches/*/level_*/summary.json")):
        rows += json.loads(path.read_text())["rows"]
    return rows


def _write_results(workdir, rows: list[dict]) -> None:
    workdir = pathlib.Path(workdir)
    _write_text_atomic(workdir / "results.json", json.dumps(rows, indent=2) + "\n")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=RESULT_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    _write_text_atomic(workdir / "results.csv", out.getvalue())


def load_results(workdir) -> list[dict]:
    """All rows (IMP levels and branches) of a run directory, from the level summaries."""
    return _all_rows(workdir)
