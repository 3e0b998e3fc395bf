"""ImpSettings: what IMP adds to the training loop's settings (plain data, validated once).

The training loop's settings are :class:`~jaxticket.train.FitSettings`, embedded as
``fit``; a setting is named by its name alone anywhere (``steps``, ``levels``; see
:mod:`jaxticket.settings`).

Example:
    >>> s = ImpSettings.of(levels=2, steps=100, batch_size=50, rewind_step=10)
    >>> s.fit.steps, s.levels, s.rewind_step
    (100, 2, 10)
    >>> s.replace(rewind_step=500)
    Traceback (most recent call last):
    ...
    jaxticket.settings.SettingError: rewind_step must be in [0, steps=100], got 500
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from jaxticket import settings as settings_lib
from jaxticket.train.settings import FitSettings
from jaxticket.train.state import VARY_STREAMS

__all__ = ["ImpSettings", "PRUNE_FROM", "RESETS", "REWIND_PARTS"]

RESETS = ("rewind", "finetune", "lr_rewind")
PRUNE_FROM = ("final", "rewind")
REWIND_PARTS = ("params", "batch_stats", "opt_state")


@dataclasses.dataclass(frozen=True)
class ImpSettings:
    """Everything :func:`~jaxticket.imp` takes besides the task, data and pruner.

    Attributes:
      fit: the :class:`~jaxticket.train.FitSettings` every level trains with (``steps``
        = T, ``batch_size`` per replica, evaluation, chunking, checkpoints, the random
        streams of replica 0).
      levels: pruning levels after the dense level 0 (so ``levels + 1`` trainings).
      rewind_step: k, the step rewound to (0 = reset to initialisation).
      seeds: replicas trained together (vmapped), each with its own masks.
      vary: which random streams differ across replicas (``init``, ``data``, ``aug``,
        ``dropout``).
      reset: the lineage's reset mode, one of :data:`RESETS`: ``"rewind"`` (the rewind
        point's weights), ``"finetune"`` (the previous level's final weights, steps k..T at the
        schedule's final learning rate),
        ``"lr_rewind"`` (Renda et al. 2020's learning-rate rewinding: the previous level's
        final weights, the step counter and so the learning-rate schedule set back to k).
      rewind_restores: what a rewind restores, a subset of :data:`REWIND_PARTS`
        containing ``"params"`` (default open_lth's: weights and BN statistics; the
        optimizer state fresh; the schedule resumes at k in every case).
      pruning_seed: the key of random pruners and random masks.
      prunable: which leaves may be pruned: ``None``/``"kernels"`` (``ndim >= 2``),
        ``"all"`` (biases and normalisation parameters too), or a regex over leaf paths.
      allow_empty_layers: let a pruner remove a layer's last weight (default: an error).
      prune_from: the weights a level's pruner scores: ``"final"`` (the previous level's
        trained weights: IMP) or ``"rewind"`` (the rewind point's: with ``rewind_step=0``
        pruning at initialization, e.g. SNIP, GraSP, SynFlow, with level 0 the dense
        baseline).
    """

    fit: FitSettings = dataclasses.field(default_factory=FitSettings)
    levels: int = 3
    rewind_step: int = 0
    seeds: int = 1
    vary: tuple = ("init", "data", "aug")
    reset: str = "rewind"
    rewind_restores: tuple = ("params", "batch_stats")
    pruning_seed: int = 0
    prunable: Optional[str] = None
    allow_empty_layers: bool = False
    prune_from: str = "final"

    def __post_init__(self):
        if isinstance(self.fit, dict):
            object.__setattr__(self, "fit", settings_lib.from_dict(FitSettings, self.fit))
        object.__setattr__(self, "vary", tuple(self.vary))
        object.__setattr__(self, "rewind_restores", tuple(self.rewind_restores))
        if not isinstance(self.fit, FitSettings):
            raise settings_lib.SettingError("fit", f"must be FitSettings, got {type(self.fit).__name__}")
        for name in ("levels", "rewind_step", "pruning_seed"):
            settings_lib.check_int(name, getattr(self, name), minimum=0)
        settings_lib.check_int("seeds", self.seeds, minimum=1)
        if self.rewind_step > self.fit.steps:
            raise settings_lib.SettingError("rewind_step", f"must be in [0, steps={self.fit.steps}], "
                                                           f"got {self.rewind_step}")
        settings_lib.check_choice("reset", self.reset, RESETS,
                                  " (reinit and random_mask are branches: run.branch('reinit'))")
        unknown = sorted(set(self.rewind_restores) - set(REWIND_PARTS))
        if unknown or "params" not in self.rewind_restores:
            raise settings_lib.SettingError("rewind_restores", f"must be a subset of {REWIND_PARTS} containing "
                                                               f"'params', got {self.rewind_restores!r}")
        unknown = sorted(set(self.vary) - set(VARY_STREAMS))
        if unknown:
            raise settings_lib.SettingError("vary", f"has unknown streams {unknown}; valid: {VARY_STREAMS}")
        settings_lib.check_bool("allow_empty_layers", self.allow_empty_layers)
        if self.prunable is not None and not isinstance(self.prunable, str):
            raise settings_lib.SettingError("prunable", "must be None, 'kernels', 'all' or a regex string, "
                                                        f"got {self.prunable!r}")
        settings_lib.check_choice("prune_from", self.prune_from, PRUNE_FROM)

    @classmethod
    def of(cls, **settings) -> "ImpSettings":
        """ImpSettings from settings named in any order (``steps``, ``levels``, ``seeds``, ...)."""
        return settings_lib.from_flat(cls, **settings)

    def replace(self, **changes) -> "ImpSettings":
        """A copy with settings changed by name (``rewind_step=``, ``steps=``), validated."""
        return settings_lib.replace(self, **changes)

    def to_dict(self) -> dict:
        return settings_lib.to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ImpSettings":
        """The settings of :meth:`to_dict`, or of the flat layout of before ``fit`` existed."""
        return settings_lib.from_dict(cls, d)
