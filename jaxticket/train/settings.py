"""FitSettings: the training loop's settings, one dataclass that :func:`~jaxticket.train.fit` takes.

Steps, batch size, evaluation, chunking, checkpointing and the random streams of a
training run. :class:`~jaxticket.lottery.ImpSettings` embeds it (every level of a lineage
trains with it), :class:`~jaxticket.lottery.LotteryConfig` reaches it as ``config.imp.fit``,
and a setting is named by its name alone everywhere (``steps``, ``--steps``,
``--set steps=...``; see :mod:`jaxticket.settings`).

Example:
    >>> s = FitSettings(steps=300, batch_size=50, eval_every=100)
    >>> s.seed_streams
    {'init_seed': 0, 'data_seed': 0, 'aug_seed': 0, 'dropout_seed': 0}
    >>> FitSettings(steps=0, batch_size=50)
    Traceback (most recent call last):
    ...
    jaxticket.settings.SettingError: steps must be an integer >= 1, got 0
"""

from __future__ import annotations

import dataclasses

from jaxticket import settings as settings_lib

__all__ = ["FitSettings", "SEED_STREAMS"]

SEED_STREAMS = ("init_seed", "data_seed", "aug_seed", "dropout_seed")


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """How a training run trains (plain data, frozen, validated on construction).

    Attributes:
      steps: train until the step counter reaches this (T).
      batch_size: examples per step, per replica.
      eval_every: evaluate the validation and test splits at multiples of it, at step 0
        and at the end (0: only at the end).
      eval_batch_size: examples per evaluation batch.
      augment: ``True``: CIFAR's random crop (pad 4) + horizontal flip at every step, on
        the device; ``False``: none. (:func:`~jaxticket.train.fit` also takes a function
        ``(key, x) -> x`` in its place.)
      chunk_size: training steps per compiled call.
      checkpoint_every: periodic checkpoints every this many steps (a run directory
        only; 0: at the end).
      init_seed, data_seed, aug_seed, dropout_seed: the random streams (of replica 0;
        replica ``i`` adds ``i`` to the streams that vary).
    """

    steps: int = 1000
    batch_size: int = 128
    eval_every: int = 0
    eval_batch_size: int = 1000
    augment: bool = False
    chunk_size: int = 100
    checkpoint_every: int = 0
    init_seed: int = 0
    data_seed: int = 0
    aug_seed: int = 0
    dropout_seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_batch_size", "chunk_size"):
            settings_lib.check_int(name, getattr(self, name), minimum=1)
        for name in ("eval_every", "checkpoint_every", *SEED_STREAMS):
            settings_lib.check_int(name, getattr(self, name), minimum=0)
        if not callable(self.augment):
            settings_lib.check_bool("augment", self.augment)

    def replace(self, **changes) -> "FitSettings":
        """A copy with some settings changed (validated)."""
        return dataclasses.replace(self, **changes)

    @property
    def seed_streams(self) -> dict:
        """The random streams as keyword arguments of :func:`~jaxticket.train.init_state`."""
        return {name: getattr(self, name) for name in SEED_STREAMS}
