"""The fit loop (its evaluation is :mod:`~jaxticket.train.evaluation`, its hooks
:mod:`~jaxticket.train.hooks`).

:func:`fit` reads top to bottom: plan the compiled calls (cut at every evaluation and
at every step a hook asks for), run them (the next call is queued on the device before
the host waits for the current one's metrics), and after each call check the loss,
evaluate when due and hand the state to the hooks. A hook is any object with some of
``boundaries(start, end) -> steps``, ``on_start(state, end) -> state``,
``on_boundary(step, state, record)`` and ``on_end(state)`` (:class:`Hook`).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Optional, Sequence

import jax
import numpy as np

from jaxticket import parallel
from jaxticket.train import sources
from jaxticket.train.evaluation import as_lists, evaluate
from jaxticket.train.hooks import Checkpointing, Hook, MetricsFile, ProgressBar, RewindPoint
from jaxticket.train.state import TrainState, abstract, host_step, is_batched
from jaxticket.train.step import resolve_seed_strategy, run_steps, split_replicas, stack_replicas
from jaxticket.train.settings import FitSettings
from jaxticket.train.task import Task

__all__ = [
    "Checkpointing",
    "DIVERGENCE_FACTOR",
    "DivergenceWarning",
    "FitResult",
    "Hook",
    "LOOPS",
    "MetricsFile",
    "NonFiniteLossError",
    "ProgressBar",
    "RewindPoint",
    "abstract",
    "evaluate",
    "fit",
    "host_step",
    "resolve_loop",
]

LOOPS = ("auto", "device", "host")


#: A training loss this many times its starting value (the mean over the first compiled
#: call) warns once per fit: the run is probably diverging.
DIVERGENCE_FACTOR = 100.0


class DivergenceWarning(UserWarning):
    """The training loss rose far above its starting value (:data:`DIVERGENCE_FACTOR`)."""


class _DivergenceWatch:
    def __init__(self):
        self.start, self.warned = None, False

    def check(self, loss: np.ndarray, first: int) -> None:
        """``loss``: (n,) or (n, S) per-step training losses of steps first..first+n-1."""
        loss = np.asarray(loss, np.float64).reshape(len(loss), -1)
        if self.start is None:
            self.start = np.maximum(loss[0], 1e-12)
        if self.warned:
            return
        over = loss > DIVERGENCE_FACTOR * self.start
        if over.any():
            step, r = (int(i) for i in np.argwhere(over)[0])
            who = f" (replica {r})" if loss.shape[1] > 1 else ""
            warnings.warn(DivergenceWarning(
                f"training loss {loss[step, r]:.3g} at step {first + step}{who} is over "
                f"{DIVERGENCE_FACTOR:.0f}x its starting value {self.start[r]:.3g}: the run may be diverging "
                "(learning rate too high?)"), stacklevel=3)
            self.warned = True


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf. ``step``: the first step (0-based index of the
    batch) whose loss was not finite; ``replicas``: which replicas (``None`` single run)."""

    def __init__(self, step: int, replicas: Optional[list] = None, loss=None):
        self.step, self.replicas, self.loss = int(step), replicas, loss
        who = f" (replicas {replicas})" if replicas is not None else ""
        super().__init__(
            f"non-finite training loss {loss} at step {self.step}{who}; lower the learning "
            "rate, add warmup, or check the data/mask")


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns: the state after the last step, the state at exactly
    ``rewind_step`` (``None`` if not asked for), and one dict per evaluation.

    Example::

        result = fit(task, init_state(task, seeds=3), data.train, steps=1000, batch_size=64,
                     val=data.validation, eval_every=100, rewind_step=50)
        result.state.step, result.rewind_state.step        # 1000, 50
        [r["val_loss"] for r in result.history]           # per evaluation: a list over the 3 seeds
    """

    state: TrainState
    rewind_state: Optional[TrainState]
    history: list


# ============================================================================ fit


def resolve_loop(loop: str, state) -> str:
    """``"auto"``: ``"host"`` for conv models on the CPU backend, else ``"device"``.

    XLA:CPU emits the kernel-gradient convolution inside a while loop (``lax.scan`` /
    ``fori_loop``) as a naive loop nest, 20-100x slower than the same step compiled on
    its own (measured with jax 0.10.2), so on CPU conv models take one compiled call per
    step; dispatch costs ~0.1 ms against steps of tens of ms. GPU/TPU and dense models
    keep many steps per compiled call.
    """
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {LOOPS}, got {loop!r}")
    if loop != "auto":
        return loop
    lead = 1 if is_batched(state) else 0
    has_conv = any(np.ndim(x) - lead >= 4 for x in jax.tree.leaves(state.params))
    return "host" if (has_conv and jax.default_backend() == "cpu") else "device"


def _segments(start: int, end: int, chunk: int, boundaries: set) -> list[tuple[int, int]]:
    """``(first_step, n)`` of the compiled calls from ``start`` to ``end``, cut at every boundary."""
    cuts = sorted({b for b in boundaries if start < b < end} | {end})
    out, s = [], start
    for c in cuts:
        while s < c:
            n = min(chunk, c - s)
            out.append((s, n))
            s += n
    return out


class _Calls:
    """The compiled calls of one fit: ``calls(state)`` yields ``(state, metrics, first, n)``
    one call behind, so the next call is queued on the device before the host waits.

    ``metrics`` is a list over replicas (one entry for a single run or vmapped replicas)
    of lists over calls of per-call metric dicts; :func:`_host_metrics` joins them."""

    def __init__(self, task, train, plan, batch_size, augment, chunk, loop, mesh, seed_strategy):
        self.task, self.train, self.plan, self.loop, self.mesh, self.chunk = task, train, plan, loop, mesh, chunk
        self.sequential = resolve_seed_strategy(seed_strategy, mesh) == "sequential"
        if sources.is_streamed(train):
            self.feed = sources.StreamFeed(train.preprocess)
            self.fetcher = sources.ChunkFetcher(train, plan, batch_size, chunk if loop == "device" else 1)
        else:
            self.feed, self.fetcher = sources.DeviceFeed(batch_size, augment), None

    def _steps(self, state, data, n):
        """``n`` steps of one state (a single run or vmapped replicas) on ``data``."""
        if self.loop == "device":
            state, m = run_steps(self.task, self.feed, state, data, n, length=self.chunk, mesh=self.mesh,
                                 seed_strategy="vmap")
            return state, [m]
        ms = []
        for i in range(n):
            one = data if self.fetcher is None else sources.put_host(
                {k: v[i:i + 1] for k, v in data.items()}, self.mesh, lead=1)
            state, m = run_steps(self.task, self.feed, state, one, 1, mesh=self.mesh, seed_strategy="vmap")
            ms.append(m)
        return state, ms

    def _call(self, state, first, n):
        data = self.train
        if self.fetcher is not None:
            host = self.fetcher.next()
            data = {"image": host["image"], "label": host["label"]}
            if self.loop == "device":
                data = sources.put_host(data, self.mesh, lead=1)
        if self.sequential and is_batched(state):  # each replica's own program, in turn
            outs = [self._steps(s, data, n) for s in split_replicas(state)]
            return stack_replicas([s for s, _ in outs]), [m for _, m in outs]
        state, ms = self._steps(state, data, n)
        return state, [ms]

    def __call__(self, state):
        pending = None
        for first, n in self.plan:
            state, metrics = self._call(state, first, n)
            if pending is not None:
                yield pending
            pending = (state, metrics, first, n)
        if pending is not None:
            yield pending

    def close(self):
        if self.fetcher is not None:
            self.fetcher.close()


def _host_metrics(metrics: list, n: int) -> dict:
    """Per-step metrics on the host ``[n(, S)]``."""
    per_replica = []
    for calls in metrics:
        host = [parallel.to_host(m) for m in calls]
        per_replica.append({k: np.concatenate([h[k] for h in host])[:n] for k in host[0]})
    if len(per_replica) == 1:
        return per_replica[0]
    return {k: np.stack([r[k] for r in per_replica], axis=1) for k in per_replica[0]}


def _raise_if_non_finite(m: dict, first: int, batched: bool) -> None:
    """Raise :class:`NonFiniteLossError` at the first step whose loss is NaN or inf."""
    finite = np.isfinite(m["loss"])
    if not finite.all():
        bad = int(np.argwhere(~finite)[0, 0])
        if not batched:
            reps = None
        elif finite.ndim == 1:  # one replica: its metrics carry no replica axis
            reps = [0]
        else:
            reps = sorted(int(r) for r in np.argwhere(~finite[bad]).ravel())
        raise NonFiniteLossError(first + bad, reps, as_lists(m["loss"][bad]))


def _standard_hooks(rewind_step, checkpoints, checkpoint_every, metrics_path, progress, steps) -> list:
    hooks = []
    if checkpoints is not None:
        hooks.append(Checkpointing(checkpoints, checkpoint_every))
    if rewind_step is not None:
        hooks.append(RewindPoint(rewind_step, checkpoints))
    if metrics_path is not None:
        hooks.append(MetricsFile(metrics_path))
    if progress or (progress is None and steps >= 1000):
        hooks.append(ProgressBar())
    return hooks


def fit(task: Task, state: TrainState, train, settings: Optional[FitSettings] = None, *, val=None, test=None,
        hooks: Sequence[Hook] = (), rewind_step: Optional[int] = None, checkpoints=None, metrics_path=None,
        progress: Optional[bool] = None, loop: str = "auto", seed_strategy: str = "auto", mesh=None,
        **setting_changes) -> FitResult:
    """Train ``state`` to step ``steps``; evaluate every ``eval_every`` steps; run the hooks.

    Args:
      task: the :class:`~jaxticket.train.Task`.
      state: from :func:`~jaxticket.train.init_state` (possibly with replicas, possibly on
        a mesh), or a rewind state to continue from. Not modified.
      train, val, test: device-resident :class:`~jaxticket.data.ArrayDataset` s
        (``val``/``test`` optional), or host streams (:class:`HostStream`).
      settings: the :class:`~jaxticket.train.FitSettings` (``steps``: train until the
        state's step counter reaches it; ``batch_size`` per replica; ``eval_every``:
        evaluate ``val``/``test`` at its multiples, at step 0 when starting there, and at
        the end; ``augment``: ``True`` (CIFAR crop + flip) or ``(key, x) -> x``;
        ``chunk_size``: steps per compiled call with ``loop="device"``; ``checkpoint_every``).
        Its random streams are the state's (:func:`~jaxticket.train.init_state`).
      **setting_changes: settings by name, in place of or on top of ``settings``
        (``fit(task, state, train, steps=300, batch_size=50)``).
      hooks: :class:`Hook` s; ``rewind_step``, ``checkpoints`` (+ ``checkpoint_every``),
        ``metrics_path`` and ``progress`` (``None``: a bar for >= 1000 steps) add the
        standard ones (:class:`RewindPoint`, :class:`Checkpointing`, :class:`MetricsFile`,
        :class:`ProgressBar`).
      loop: ``"device"``: up to ``chunk_size`` steps per compiled call; ``"host"``: one
        compiled call per step; ``"auto"``: ``"host"`` for conv models on CPU. Results
        are deterministic within a mode and may differ in the last float bits between modes.
      seed_strategy: how replicas train: ``"vmap"`` (batched in one program),
        ``"sequential"`` (each replica's single-run program in turn) or ``"auto"``
        (``"sequential"`` on CPU, where it is faster, else ``"vmap"``; see
        :data:`jaxticket.train.step.SEED_STRATEGIES`); each replica's result is bitwise its
        single run's either way.
      mesh: a ``parallel.make_mesh`` mesh the state and datasets were put on.

    Returns:
      :class:`FitResult` ``(state, rewind_state, history)``; a history record holds
      ``step``, ``train_<name>`` (running means since the last evaluation),
      ``val_<name>``/``test_<name>`` and ``elapsed_s``, lists over replicas.

    Raises:
      NonFiniteLossError: at the first step with a NaN/inf loss (any replica); a loss
        :data:`DIVERGENCE_FACTOR` times its start warns once (:class:`DivergenceWarning`).

    Example::

        result = fit(task, init_state(task), data.train, steps=1000, batch_size=64,
                     test=data.test, eval_every=100, rewind_step=50)
        result.state, result.rewind_state, result.history[-1]["test_accuracy"]
    """
    s = fit_settings(settings, setting_changes)
    steps = s.steps
    loop = resolve_loop(loop, state)
    train, val, test = (sources.as_source(d) for d in (train, val, test))
    if not sources.is_streamed(train):
        check_inputs(task, train)
    standard = _standard_hooks(rewind_step, checkpoints, s.checkpoint_every, metrics_path, progress, steps)
    hooks = [*standard, *hooks]
    rewind = next((h for h in hooks if isinstance(h, RewindPoint)), None)
    for hook in hooks:
        state = hook.on_start(state, steps)
    start, t0 = host_step(state), time.perf_counter()
    if start > steps:
        raise ValueError(f"the state is at step {start}, past steps={steps}")
    evals = ({0, *range(s.eval_every, steps, s.eval_every)} if s.eval_every else set()) | {steps}
    chunk = min(s.chunk_size, train.max_chunk_steps) if sources.is_streamed(train) else s.chunk_size
    plan = _segments(start, steps, chunk, evals.union(*(h.boundaries(start, steps) for h in hooks)))
    evaluator = _Evaluator(task, val, test, s.eval_batch_size, mesh, t0, seed_strategy)
    calls = _Calls(task, train, plan, s.batch_size, s.augment, chunk, loop, mesh, seed_strategy)
    watch = _DivergenceWatch()
    try:
        at_start = evaluator.record(start, state) if start in evals and start == 0 else None
        for hook in hooks:
            hook.on_boundary(start, state, at_start)
        for state, metrics, first, n in calls(state):
            host = _host_metrics(metrics, n)
            watch.check(host["loss"], first)  # warns before a NaN ends the run
            _raise_if_non_finite(host, first, is_batched(state))
            evaluator.add(host)
            record = evaluator.record(first + n, state) if first + n in evals else None
            for hook in hooks:
                hook.on_boundary(first + n, state, record)
    finally:
        calls.close()
        for hook in hooks:
            hook.on_end(state)
    return FitResult(state=state, rewind_state=None if rewind is None else rewind.state,
                     history=evaluator.history)


def fit_settings(settings: Optional[FitSettings], changes: dict) -> FitSettings:
    """``settings`` with ``changes`` (names of :class:`FitSettings`); without ``settings``,
    ``steps`` and ``batch_size`` must be among the changes."""
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(FitSettings)})
    if unknown:
        raise TypeError(f"fit() got unexpected keyword arguments {unknown}; settings are FitSettings' "
                        f"({', '.join(f.name for f in dataclasses.fields(FitSettings))})")
    if settings is None:
        missing = [name for name in ("steps", "batch_size") if name not in changes]
        if missing:
            raise TypeError(f"fit() needs settings=FitSettings(...) or {' and '.join(missing)}=...")
        return FitSettings(**changes)
    return dataclasses.replace(settings, **changes) if changes else settings


def check_inputs(task: Task, ds) -> None:
    """Refuses, in one line, a device-resident split the task cannot train on: examples of
    another shape than ``task.input_shape``, or labels its loss cannot take
    (:meth:`~jaxticket.train.Task.check_labels`). Streamed splits are not checked."""
    ds = sources.as_source(ds)
    if sources.is_streamed(ds):
        return
    if tuple(ds.example_shape) != tuple(task.input_shape):
        raise ValueError(f"the task expects inputs of shape {tuple(task.input_shape)} per example, "
                         f"the data has {tuple(ds.example_shape)} ({ds.name})")
    task.check_labels(getattr(ds, "labels", None), f"the training split ({ds.name})")


class _Evaluator:
    """Running means of the training metrics, and the evaluation records of a fit."""

    def __init__(self, task, val, test, batch_size, mesh, t0, seed_strategy):
        self.task, self.splits, self.batch_size, self.mesh, self.t0 = task, (("val", val), ("test", test)), batch_size, mesh, t0
        self.seed_strategy = seed_strategy
        self.sums, self.count, self.history = {}, 0, []

    def add(self, metrics: dict) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.astype(np.float64).sum(0)
        self.count += len(metrics["loss"])

    def record(self, step: int, state) -> dict:
        rec = {"step": step}
        for k in ("loss", *self.task.metric_names):
            rec[f"train_{k}"] = as_lists(self.sums[k] / self.count) if self.count else None
        for name, ds in self.splits:
            if ds is not None:
                out = parallel.to_host(evaluate(self.task, state, ds, batch_size=self.batch_size, mesh=self.mesh,
                                                seed_strategy=self.seed_strategy))
                rec.update({f"{name}_{k}": as_lists(v) for k, v in out.items()})
        rec["elapsed_s"] = round(time.perf_counter() - self.t0, 3)
        self.history.append(rec)
        self.sums, self.count = {}, 0
        return rec
