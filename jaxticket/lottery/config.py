"""The config edge of IMP: :class:`LotteryConfig` (plain data: presets, JSON, the command
line) turned into objects once (:func:`objects_from_config`), and the functions that run a
config in a run directory (:func:`run_imp`, :func:`open_run`, :func:`run_branch`).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Callable, Optional, Sequence

from jaxticket import data as data_lib
from jaxticket import models as models_lib
from jaxticket import pruning
from jaxticket import rundir as rundir_lib
from jaxticket import settings as settings_lib
from jaxticket import train as train_lib
from jaxticket.lottery.branches import BRANCHES
from jaxticket.lottery.run import ImpRun, branch_levels
from jaxticket.lottery.settings import ImpSettings

__all__ = ["LotteryConfig", "check_config", "load_data", "load_results", "objects_from_config", "open_run",
           "run_branch", "run_imp", "upgrade_config"]


@dataclasses.dataclass(frozen=True)
class LotteryConfig:
    """An IMP experiment as plain data (presets, JSON, the command line): the edge, read once.

    Attributes:
      train: the :class:`~jaxticket.train.TrainConfig`: model, data, optimizer.
      imp: the :class:`~jaxticket.lottery.ImpSettings` (levels, rewind step, seeds, ...),
        with the training loop's :class:`~jaxticket.train.FitSettings` as ``imp.fit``
        (steps = T, batch size, evaluation, seeds).
      pruner: the pruner (or level schedule) as plain data
        (:func:`jaxticket.pruning.from_config`), e.g.
        ``{"method": "magnitude", "fraction": 0.2, "scope": "global"}``; registered
        methods of your own too.

    Every setting has a unique name, so :meth:`replace` and :meth:`of` take names
    (``steps``, ``lr``, ``levels``) or paths (``imp.fit.steps``); :meth:`from_dict` reads
    the nested layout of :meth:`to_dict` and the flat one of configs written before
    (``{"train": {"steps": ...}, "levels": ...}``).

    Example:
        >>> from jaxticket import configs
        >>> config = configs.get("lenet_300_100_mnist")      # Frankle & Carbin's settings
        >>> config.train.lr, config.imp.fit.batch_size, config.imp.fit.steps, config.imp.levels
        (0.0012, 60, 50000, 20)
        >>> config = config.replace(levels=5, rewind_step=500)
        >>> LotteryConfig.from_dict(config.to_dict()) == config   # plain data, round trip
        True
        >>> config.replace(rewind_step=-1)
        Traceback (most recent call last):
        ...
        jaxticket.settings.SettingError: rewind_step must be an integer >= 0, got -1
    """

    train: train_lib.TrainConfig = dataclasses.field(default_factory=train_lib.TrainConfig)
    imp: ImpSettings = dataclasses.field(default_factory=ImpSettings)
    pruner: Any = dataclasses.field(
        default_factory=lambda: {"method": "magnitude", "fraction": 0.2, "scope": "global"}
    )

    def __post_init__(self):
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", settings_lib.from_dict(train_lib.TrainConfig, self.train))
        if isinstance(self.imp, dict):
            object.__setattr__(self, "imp", ImpSettings.from_dict(self.imp))
        if not isinstance(self.pruner, dict):
            object.__setattr__(self, "pruner", pruning.to_config(self.pruner))
        check_config(self)

    @classmethod
    def of(cls, **settings) -> "LotteryConfig":
        """A config from settings named in any order (``model=``, ``lr=``, ``steps=``,
        ``levels=``, ``pruner=``), the rest at their defaults."""
        return settings_lib.from_flat(cls, **settings)

    def replace(self, **changes) -> "LotteryConfig":
        """A copy with settings changed by name or path, each checked by its owner."""
        return settings_lib.replace(self, **changes)

    def to_dict(self) -> dict:
        return settings_lib.to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LotteryConfig":
        """The config of :meth:`to_dict` (or of the flat layout of older configs); a setting
        this jaxticket does not know (a run directory written by a newer version) is a
        ``ValueError`` naming it."""
        try:
            return settings_lib.from_dict(cls, d)
        except settings_lib.SettingError as e:
            if "no such setting" in e.problem:
                raise ValueError(f"the config has a setting this jaxticket does not know ({e.setting}): it was "
                                 "written by a newer jaxticket, or misspelt; upgrade jaxticket to read it, or fix "
                                 "the name") from None
            raise

    def make_pruner(self):
        return pruning.from_config(self.pruner)


def check_config(config: LotteryConfig) -> None:
    """What a config adds to its parts' own checks: the pruner's fractions and settings."""
    for name, cls in (("train", train_lib.TrainConfig), ("imp", ImpSettings)):
        if not isinstance(getattr(config, name), cls):
            raise settings_lib.SettingError(name, f"must be a {cls.__name__}, got {type(getattr(config, name)).__name__}")
    for where, value in _fractions(config.pruner, "pruner"):
        if isinstance(value, (bool, str)) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise settings_lib.SettingError(where, "must be a number in (0, 1) (the fraction of the surviving "
                                                   f"weights pruned per level), got {value!r}")
    pruning.from_config(config.pruner)  # raises with the valid methods/settings


def _fractions(cfg, where: str):
    """``(where, value)`` of every ``fraction`` in a pruner config."""
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            if k == "fraction":
                yield f"{where}.fraction", v
            else:
                yield from _fractions(v, f"{where}.{k}")
    elif isinstance(cfg, (list, tuple)):
        for i, v in enumerate(cfg):
            yield from _fractions(v, f"{where}[{i}]")


def load_data(config: LotteryConfig, data_dir=None, manual_dir=None) -> data_lib.Data:
    """The run's data: device-resident splits, or for a streaming dataset (ImageNet)
    :class:`~jaxticket.train.HostStream` splits over ``data.make_stream``: train batches
    of ``batch_size`` shuffled and augmented with seed ``data_seed``, evaluation batches
    of ``eval_batch_size``, images of the model's input size."""
    tc, fit = config.train, config.imp.fit
    spec = data_lib.get_spec(tc.dataset)
    if not spec.streaming:
        return data_lib.splits(tc.dataset, validation_size=tc.validation_size, data_dir=data_dir,
                               manual_dir=manual_dir)
    validation_size = spec.default_validation_size if tc.validation_size is None else tc.validation_size
    image_size = int((tc.input_shape or models_lib.input_shape(tc.model))[0])
    kw = dict(image_size=image_size, validation_size=validation_size, data_dir=data_dir, manual_dir=manual_dir)

    def stream(split, **extra):
        return data_lib.make_stream(tc.dataset, split, **extra, **kw)

    steps_per_epoch = len(stream("train", batch_size=fit.batch_size, seed=fit.data_seed, num_epochs=1))
    host = functools.partial(train_lib.HostStream, name=tc.dataset)
    return data_lib.Data(
        train=host(stream("train", batch_size=fit.batch_size, seed=fit.data_seed), steps_per_epoch=steps_per_epoch),
        validation=host(stream("validation", batch_size=fit.eval_batch_size)) if validation_size else None,
        test=host(stream("test", batch_size=fit.eval_batch_size)),
        source={"dataset": tc.dataset, "version": spec.tfds_version, "validation_size": int(validation_size)})


def objects_from_config(config: LotteryConfig, *, data=None, data_dir=None, manual_dir=None):
    """``(task, data, pruner, settings)`` of a LotteryConfig: the edge where names become
    objects. ``data`` (a :class:`~jaxticket.data.Data`) skips loading the dataset."""
    data = data_lib.as_data(data) if data is not None else load_data(config, data_dir, manual_dir)
    steps_per_epoch = train_lib.steps_per_epoch(data.train, config.imp.fit.batch_size)
    train_config = config.train
    if train_config.input_shape is None and len(getattr(data.train, "example_shape", ())) == 3:
        # The model is built for the data it is given (ResNet-20 on 28x28x1 Fashion-MNIST).
        train_config = dataclasses.replace(train_config, input_shape=tuple(data.train.example_shape))
    task = train_lib.task_from_config(train_config, steps_per_epoch=steps_per_epoch)
    return task, data, pruning.bind(config.make_pruner(), task, data), config.imp


def _config_run(config: LotteryConfig, workdir, *, datasets=None, data_dir=None, manual_dir=None, **kw) -> ImpRun:
    if workdir is not None and not kw.get("overwrite"):  # another run there: refused before its data is prepared
        rundir_lib.preflight(workdir, {"config": config.to_dict()})
    task, data, pruner, settings = objects_from_config(config, data=datasets, data_dir=data_dir, manual_dir=manual_dir)
    identity = {"config": config.to_dict(), "data": data.fingerprint()}
    return ImpRun(task, data, pruner, settings, workdir, identity, **kw)


def run_imp(config: LotteryConfig, workdir, *, datasets=None, data_dir=None, manual_dir=None,
            overwrite: bool = False, redo_levels: Sequence[int] = (), progress=None,
            log: Callable = print, mesh=None) -> list[dict]:
    """Runs (or resumes) the IMP experiment of a LotteryConfig in ``workdir``.

    The dataset is loaded (``data_dir``/``manual_dir`` for TFDS; or pass ``datasets``, a
    :class:`~jaxticket.data.Data`) before anything is written. Returns one row per
    (level, seed), also in ``results.json`` / ``results.csv``.

    Example (what ``jaxticket imp --config lenet_300_100_mnist --levels 10`` does)::

        config = configs.get("lenet_300_100_mnist").replace(levels=10)  # jaxticket.configs
        rows = jt.run_imp(config, "runs/lenet", manual_dir="data/mnist")
        rows[0]["final_test_accuracy"], rows[-1]["density"]
        jt.run_branch("runs/lenet", "random_mask", levels=[5, 10])
    """
    run = _config_run(config, workdir, datasets=datasets, data_dir=data_dir, manual_dir=manual_dir,
                      overwrite=overwrite, redo_levels=redo_levels, progress=progress, log=log, mesh=mesh)
    try:
        return [r for level in run.run().levels for r in level.rows]
    finally:
        run.close()


def open_run(workdir, *, datasets=None, data_dir=None, manual_dir=None, progress=None,
             log: Callable = print, **kw) -> ImpRun:
    """The handle of a run directory made by :func:`run_imp` (or ``jaxticket imp``): its
    finished levels read back, nothing trained. Close it with ``run.close()``."""
    workdir = pathlib.Path(workdir)
    stored = rundir_lib.read_identity(workdir)
    if stored is None:
        raise FileNotFoundError(f"{workdir} holds no IMP run (no {rundir_lib.CONFIG_FILE}); run `jaxticket imp` first.")
    if "config" not in stored.get("config", {}):
        raise ValueError(f"{workdir} was made by jaxticket.imp on objects; reopen it by calling jaxticket.imp "
                         "with the same task, data and pruner")
    config = LotteryConfig.from_dict(stored["config"]["config"])
    run = _config_run(config, workdir, datasets=datasets, data_dir=data_dir, manual_dir=manual_dir,
                      progress=progress, log=log, **kw)
    return run.read_levels()


def run_branch(workdir, kind: str, levels: Optional[Sequence[int]] = None, *, datasets=None, data_dir=None,
               manual_dir=None, redo_levels: Sequence[int] = (), progress=None, log: Callable = print,
               mesh=None) -> list[dict]:
    """Runs a baseline from a run directory made by :func:`run_imp` at chosen levels.

    ``kind``: a registered branch kind (:func:`branch_kinds`). ``levels``: default all
    finished IMP levels >= 1. Results go to ``branches/KIND/level_LL`` and the run's
    results files; returns the branch's rows.

    Example (``jaxticket branch runs/lenet --kind reinit --levels 3 7``)::

        rows = jt.run_branch("runs/lenet", "reinit", levels=[3, 7], manual_dir="data/mnist")
        sorted({r["level"] for r in rows})    # [3, 7]
    """
    BRANCHES.get(kind)  # an unknown kind: the valid ones, before the dataset is loaded
    directory = rundir_lib.RunDir(workdir)
    if directory.identity() is not None:  # the levels checked before the dataset is loaded too
        branch_levels(directory.finished(), levels, redo_levels)
    run = open_run(workdir, datasets=datasets, data_dir=data_dir, manual_dir=manual_dir, progress=progress, log=log,
                   mesh=mesh)
    try:
        wanted = run.branch_levels(levels, redo=redo_levels)  # checked before a redone level is deleted
        run.discard_branch_levels(kind, redo_levels)
        return [r for result in run.branch(kind, wanted) for r in result.rows]
    finally:
        run.close()


def load_results(workdir) -> list[dict]:
    """All rows (IMP levels and branches) of a run directory, from the level summaries."""
    return rundir_lib.RunDir(workdir).rows()


def upgrade_config(d: dict) -> dict:
    """A LotteryConfig's plain data in any layout (the flat one of jaxticket <= 0.2, where
    ``train`` held the steps and the IMP settings sat at the top) as today's."""
    return LotteryConfig.from_dict(d).to_dict()


def _upgrade_settings(d: dict) -> dict:
    return ImpSettings.from_dict(d).to_dict()


# Run directories written before the settings were composed read as today's, with their hash.
rundir_lib.register_upgrade("config", upgrade_config)
rundir_lib.register_upgrade("lottery", upgrade_config)
rundir_lib.register_upgrade("settings", _upgrade_settings)
