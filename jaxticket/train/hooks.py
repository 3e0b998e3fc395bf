"""The hooks of :func:`~jaxticket.train.fit`: rewind points, checkpoints, a metrics file and a
progress bar, and the protocol a hook of your own follows (:class:`Hook`).

A hook is any object with some of ``boundaries(start, end) -> steps``,
``on_start(state, end) -> state``, ``on_boundary(step, state, record)`` and
``on_end(state)``; ``fit(..., hooks=[...])`` runs them after the standard ones.

Example:
    >>> class CountEvaluations(Hook):
    ...     def __init__(self):
    ...         self.seen = 0
    ...     def on_boundary(self, step, state, record):
    ...         self.seen += record is not None
    >>> CountEvaluations().boundaries(0, 100)
    set()
"""

from __future__ import annotations

import json
import os
from typing import Optional

import jax

from jaxticket.train.state import TrainState, abstract, host_step

__all__ = ["Checkpointing", "Hook", "MetricsFile", "ProgressBar", "RewindPoint", "cut_unfinished_line"]


class Hook:
    """The hook protocol of :func:`fit` (every method optional; these are the no-ops)."""

    def boundaries(self, start: int, end: int) -> set:
        """Steps at which a compiled call must end so that :meth:`on_boundary` sees them."""
        return set()

    def on_start(self, state: TrainState, end: int) -> TrainState:
        """Before the first step; may return another state (e.g. a restored checkpoint)."""
        return state

    def on_boundary(self, step: int, state: TrainState, record: Optional[dict]) -> None:
        """After every compiled call (and at the start), with the evaluation record when one
        was made at ``step``."""

    def on_end(self, state: TrainState) -> None:
        """After the last step (also called when training stops with an error)."""


class Checkpointing(Hook):
    """Saves ``checkpoints`` (a :class:`jaxticket.checkpoints.RunCheckpoints`) every ``every``
    steps and at the end, and on start resumes from its latest step if that is ahead of
    the state (bit-identical continuation)."""

    def __init__(self, checkpoints, every: int = 0):
        self.checkpoints, self.every, self.end, self.start = checkpoints, int(every), None, None

    def boundaries(self, start, end):
        return set(range(self.every, end, self.every)) if self.every else set()

    def on_start(self, state, end):
        latest = self.checkpoints.latest_step()
        if latest is not None and latest > end:
            raise ValueError(f"{self.checkpoints!r} holds a checkpoint at step {latest}, past "
                             f"steps={end}; use another run directory for a shorter run")
        if latest is not None and host_step(state) < latest:
            state = self.checkpoints.restore(latest, abstract(state))
        self.end, self.start = end, host_step(state)
        return state

    def on_boundary(self, step, state, record):
        if step > self.start and ((self.every and step % self.every == 0 and step < self.end) or step == self.end):
            self.checkpoints.save(step, state)

    def on_end(self, state):
        self.checkpoints.wait()


class RewindPoint(Hook):
    """Keeps the state at exactly ``step`` (``.state``); with ``checkpoints`` it is saved as
    a rewind point, and restored from there when training resumes past it."""

    def __init__(self, step: int, checkpoints=None):
        self.step, self.checkpoints, self.state = int(step), checkpoints, None

    def boundaries(self, start, end):
        return {self.step}

    def on_start(self, state, end):
        start = host_step(state)
        if not 0 <= self.step <= end:
            raise ValueError(f"rewind_step {self.step} outside [0, {end}]")
        if self.step < start:
            if self.checkpoints is not None and self.step in self.checkpoints.rewind_steps():
                self.state = self.checkpoints.restore_rewind_point(self.step, abstract(state))
            else:
                raise ValueError(f"rewind_step {self.step} is before the state's step {start} "
                                 "and no rewind point was saved for it")
        return state

    def on_boundary(self, step, state, record):
        if step == self.step and self.state is None:
            self.state = state
            if self.checkpoints is not None and self.step not in self.checkpoints.rewind_steps():
                self.checkpoints.save_rewind_point(step, state)


class MetricsFile(Hook):
    """Appends every evaluation record to a JSON-lines file (flushed; process 0 only).

    On start, an unfinished last line (a write cut by a crash or a full disk) is cut off:
    the resumed training evaluates that step again and appends it whole."""

    def __init__(self, path):
        self.path, self.file = path, None

    def on_start(self, state, end):
        if jax.process_index() == 0:
            cut_unfinished_line(self.path)
            self.file = open(self.path, "a")
        return state

    def on_boundary(self, step, state, record):
        if record is not None and self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def on_end(self, state):
        if self.file is not None:
            self.file.close()


def cut_unfinished_line(path) -> bool:
    """Truncates a text file after its last newline when its last line is unfinished (no
    newline at the end); returns whether it did. A missing file is left alone."""
    try:
        with open(path, "rb+") as f:
            data = f.read()
            if not data or data.endswith(b"\n"):
                return False
            f.truncate(data.rfind(b"\n") + 1)
            f.flush()
            os.fsync(f.fileno())
            return True
    except FileNotFoundError:
        return False


class ProgressBar(Hook):
    """A tqdm bar over the steps (process 0 only)."""

    def __init__(self):
        self.bar, self.last = None, 0

    def on_start(self, state, end):
        if jax.process_index() == 0:
            from tqdm.auto import tqdm

            self.last = host_step(state)
            self.bar = tqdm(total=end, initial=self.last, desc="train", unit="step", leave=False)
        return state

    def on_boundary(self, step, state, record):
        if self.bar is not None:
            self.bar.update(step - self.last)
            self.last = step

    def on_end(self, state):
        if self.bar is not None:
            self.bar.close()
