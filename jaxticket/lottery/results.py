"""The results of IMP levels and branches: :class:`LevelResult` and its rows.

Example:
    >>> rows = level_rows("imp", 1, 2, [0.5, 0.5], {"test_accuracy": [0.9, 0.8], "test_loss": [0.3, 0.4]},
    ...                   [{"step": 100, "test_accuracy": [0.9, 0.8]}], 0, 100)
    >>> [(r["seed"], r["final_test_accuracy"], r["best_test_accuracy"]) for r in rows]
    [(0, 0.9, 0.9), (1, 0.8, 0.8)]
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable

import numpy as np

from jaxticket.masks import Mask
from jaxticket.rundir import RESULT_FIELDS

__all__ = ["LevelResult", "PerSeedResult", "RESULT_FIELDS", "level_rows", "per_seed"]


class PerSeedResult(abc.ABC):
    """What a trained result with one row per seed offers: its columns as ``[S]`` arrays
    and its weights, loaded when first asked for. A subclass gives ``seed_rows()`` (the
    rows) and a ``_weights`` loader ``() -> (params, batch_stats)``
    (:class:`LevelResult`, :class:`jaxticket.sparse.SparseResult`)."""

    _weights: Callable

    @abc.abstractmethod
    def seed_rows(self) -> list:
        """One dict per seed (:data:`RESULT_FIELDS` and whatever the result adds)."""

    def column(self, name: str) -> np.ndarray:
        """The rows' ``name`` per seed, float64 ``[S]`` (NaN where a row has none)."""
        return np.asarray([np.nan if r[name] is None else r[name] for r in self.seed_rows()], np.float64)

    @property
    def density(self) -> np.ndarray:
        """Fraction of prunable weights kept (at the end), per seed ``[S]``."""
        return self.column("density")

    @property
    def test_accuracy(self) -> np.ndarray:
        """Final test accuracy per seed ``[S]``."""
        return self.column("final_test_accuracy")

    @property
    def params(self):
        """The final params, leaves ``[S, ...]``."""
        return self._weights()[0]

    @property
    def batch_stats(self):
        return self._weights()[1]


@dataclasses.dataclass
class LevelResult(PerSeedResult):
    """One trained level (of the lineage or of a branch): per-seed values, lazily its weights.

    Attributes:
      kind: ``"imp"`` or a branch kind. ``level``: the level.
      mask: the level's :class:`~jaxticket.masks.Mask`, leaves ``[S, ...]``.
      rows: one dict per seed (:data:`RESULT_FIELDS`).
      history: the evaluation records of its training.
    """

    kind: str
    level: int
    mask: Mask
    rows: list
    history: list
    _weights: Callable = dataclasses.field(repr=False, default=None)
    _logits: Callable = dataclasses.field(repr=False, default=None)

    def seed_rows(self) -> list:
        return self.rows

    @property
    def early_stop_step(self) -> np.ndarray:
        """Iteration of minimum validation loss per seed (NaN without a validation split)."""
        return self.column("early_stop_step")

    @property
    def test_logits(self) -> np.ndarray:
        """float32 ``[S, N, C]`` outputs on the test split."""
        return self._logits()


def per_seed(value, seeds: int) -> list:
    """``value`` as one float per seed (``None``: ``None`` each; one value: repeated)."""
    if value is None:
        return [None] * seeds
    arr = np.asarray(value, dtype=float).reshape(-1)
    return arr.tolist() if arr.size == seeds else [float(arr[0])] * seeds


def level_rows(kind: str, level: int, seeds: int, density, final: dict, history: list[dict],
               start_step: int, end_step: int) -> list[dict]:
    """One row per seed (:data:`RESULT_FIELDS`): final accuracies, the best test accuracy,
    and Frankle & Carbin's early stopping (the iteration of minimum validation loss after
    the level's start, and the test accuracy there)."""
    rows = []
    for s in range(seeds):
        test_acc = [(r["step"], per_seed(r.get("test_accuracy"), seeds)[s]) for r in history
                    if r.get("test_accuracy") is not None]
        val_loss = [(r["step"], per_seed(r.get("val_loss"), seeds)[s]) for r in history
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
        for key in sorted(final):  # the task's other metrics: final_test_<metric>, final_val_<metric>
            if key not in ("test_accuracy", "test_loss", "val_accuracy", "val_loss") and final[key] is not None:
                row[f"final_{key}"] = final[key][s]
        if val_loss:
            step, loss = min(val_loss, key=lambda t: (t[1], t[0]))
            row["early_stop_step"], row["early_stop_val_loss"] = step, loss
            row["early_stop_test_accuracy"] = dict(test_acc).get(step)
        rows.append(row)
    return rows
