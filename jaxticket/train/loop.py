"""The fit loop, evaluation, and the hooks that add rewind points, checkpoints, a metrics
file and a progress bar to it.

:func:`fit` reads top to bottom: plan the compiled calls (cut at every evaluation and
at every step a hook asks for), run them (the next call is queued on the device before
the host waits for the current one's metrics), and after each call check the loss,
evaluate when due and hand the state to the hooks. A hook is any object with some of
``boundaries(start, end) -> steps``, ``on_start(state, end) -> state``,
``on_boundary(step, state, record)`` and ``on_end(state)`` (:class:`Hook`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
import warnings
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxticket import parallel
from jaxticket.train import sources
from jaxticket.train.state import TrainState, is_batched
from jaxticket.train.step import eval_sums, means, resolve_seed_strategy, run_steps, split_replicas, stack_replicas
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


def host_step(state: TrainState) -> int:
    """The state's step counter on the host (replica 0's for replicas)."""
    return int(np.ravel(parallel.to_host(state.step))[0])


def abstract(tree):
    """``jax.ShapeDtypeStruct`` leaves (with shardings) of a state, as a restore target."""
    def one(x):
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=getattr(x, "sharding", None))

    return jax.tree.map(one, tree)


def _tolist(x):
    x = np.asarray(x)
    return x.item() if x.ndim == 0 else x.tolist()


# ============================================================================ evaluation


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _evaluate(task: Task, state: TrainState, ds, batch_size: int, mesh):
    """One program per (task, split shape): sums, means and the outputs of every example
    (returned on the device; :func:`evaluate` hands them over only when asked)."""
    from jaxticket import data as data_lib

    n = ds.num_examples
    nb = -(-n // batch_size)

    def one(s):
        def body(carry, i):
            x, y, valid = (parallel.constrain_batch(a, mesh) for a in data_lib.eval_batch(ds, i, batch_size))
            sums = eval_sums(task, s, x, y, valid, logits=True)
            out = sums.pop("logits")
            return jax.tree.map(jnp.add, carry, sums), out

        zero = jax.eval_shape(lambda: eval_sums(task, s, *data_lib.eval_batch(ds, 0, batch_size), logits=False))
        carry = jax.tree.map(lambda z: jnp.zeros(z.shape, z.dtype), zero)
        sums, outs = jax.lax.scan(body, carry, jnp.arange(nb))
        result = means(sums, n)
        outs = outs.reshape(nb * batch_size, *outs.shape[2:])[:n]
        result.update(logits=outs, predictions=jnp.argmax(outs, -1).astype(jnp.int32))
        return result

    if is_batched(state):
        one = jax.vmap(one, spmd_axis_name=parallel.REPLICA if mesh is not None else None)
    out = one(state)
    if mesh is not None:
        out = {k: (v if k in ("logits", "predictions") else jax.lax.with_sharding_constraint(v, parallel.replicated(mesh)))
               for k, v in out.items()}
    return out


@functools.partial(jax.jit, static_argnums=(0, 5, 6, 7))
def _evaluate_batch(task: Task, state: TrainState, images, labels, valid, preprocess, logits: bool, mesh):
    def one(s):
        x, y, v = (parallel.constrain_batch(a, mesh) for a in (preprocess(images), labels, valid))
        return eval_sums(task, s, x, y, v, logits=logits)

    if is_batched(state):
        one = jax.vmap(one, spmd_axis_name=parallel.REPLICA if mesh is not None else None)
    out = one(state)
    if mesh is not None:
        out = {k: (v if k == "logits" else jax.lax.with_sharding_constraint(v, parallel.replicated(mesh)))
               for k, v in out.items()}
    return out


def _evaluate_stream(task: Task, state, ds: sources.HostStream, logits: bool, mesh) -> dict:
    """:func:`evaluate` over a streamed split: batch by batch, sums on the host."""
    totals: dict = {}
    outs, n_valid, pending = [], 0, None

    def collect(item):
        nonlocal n_valid
        out, valid = parallel.to_host(item)
        valid = valid.astype(bool)
        n_valid += int(valid.sum())
        for k, v in out.items():
            if k == "logits":
                outs.append(v[..., valid, :])
            else:
                totals[k] = totals.get(k, 0) + v.astype(np.float64 if v.dtype.kind == "f" else np.int64)

    with cf_pool(ds.num_threads) as pool:
        for b in sources.prefetched(ds.batch, range(len(ds)), pool, depth=max(1, ds.num_threads)):
            dev = sources.put_host({k: np.asarray(b[k]) for k in ("image", "label", "mask")}, mesh, lead=0)
            out = _evaluate_batch(task, state, dev["image"], dev["label"], dev["mask"], ds.preprocess, logits, mesh)
            if pending is not None:  # this batch is queued before the host waits for the last
                collect(pending)
            pending = (out, dev["mask"])
    if pending is not None:
        collect(pending)
    if not n_valid:
        raise ValueError("the evaluation stream has no examples")
    result = {k: np.asarray(v / n_valid, np.float32) for k, v in totals.items()}
    if logits:
        result["logits"] = np.concatenate(outs, axis=-2)
        result["predictions"] = np.argmax(result["logits"], -1).astype(np.int32)
    return result


def cf_pool(n: int):
    import concurrent.futures as cf

    return cf.ThreadPoolExecutor(max(1, n))


def evaluate(task: Task, state: TrainState, ds, *, batch_size: int = 1000, logits: bool = False,
             mesh=None, seed_strategy: str = "auto") -> dict:
    """Loss and metrics of a whole split (and its outputs when ``logits``), in one compiled
    program per split shape.

    ``{"loss": f32[], <metric>: f32[]..., ["logits": f32[N, C], "predictions": int32[N]]}``,
    a leading ``S`` axis on each for a state with replicas (evaluated as ``seed_strategy``
    says, see :func:`fit`). Uses the masked params and
    BatchNorm running statistics (evaluation mode); batches of ``batch_size`` (at most
    the split's size) scanned inside one program, the last one padded and weighted out.

    ``ds`` may also be a :class:`~jaxticket.train.HostStream`: its batches are fetched on
    the host (threads, a few ahead), each evaluated by one compiled call, and the sums
    (and outputs, in stream order) gathered on the host as numpy arrays.

    Example::

        out = evaluate(task, state, data.test, logits=True)
        out["accuracy"], out["logits"].shape
    """
    ds = sources.as_source(ds)
    if sources.is_streamed(ds):
        return _evaluate_stream(task, state, ds, logits, mesh)
    size = min(int(batch_size), ds.num_examples)
    if is_batched(state) and resolve_seed_strategy(seed_strategy, mesh) == "sequential":
        # stacked on the host: evaluation outputs go there anyway, and each split's shapes
        # would compile a stacking program of their own
        outs = jax.device_get([_evaluate(task, s, ds, size, mesh) for s in split_replicas(state)])
        out = jax.tree.map(lambda *xs: np.stack(xs), *outs)
    else:
        out = _evaluate(task, state, ds, size, mesh)
    if not logits:
        out = {k: v for k, v in out.items() if k not in ("logits", "predictions")}
    return out


# ============================================================================ hooks


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
    import os

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
        raise NonFiniteLossError(first + bad, reps, _tolist(m["loss"][bad]))


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


def fit(task: Task, state: TrainState, train, *, steps: int, batch_size: int, val=None, test=None,
        eval_every: int = 0, eval_batch_size: int = 1000, augment=False, chunk_size: int = 100,
        hooks: Sequence[Hook] = (), rewind_step: Optional[int] = None, checkpoints=None,
        checkpoint_every: int = 0, metrics_path=None, progress: Optional[bool] = None,
        loop: str = "auto", seed_strategy: str = "auto", mesh=None) -> FitResult:
    """Train ``state`` to step ``steps``; evaluate every ``eval_every`` steps; run the hooks.

    Args:
      task: the :class:`~jaxticket.train.Task`.
      state: from :func:`~jaxticket.train.init_state` (possibly with replicas, possibly on
        a mesh), or a rewind state to continue from. Not modified.
      train, val, test: device-resident :class:`~jaxticket.data.ArrayDataset` s
        (``val``/``test`` optional), or host streams (:class:`HostStream`).
      steps: train until the state's step counter reaches this.
      batch_size: per replica. ``augment``: ``True`` (CIFAR crop + flip) or ``(key, x) -> x``.
      eval_every: evaluate ``val``/``test`` at multiples of it, at step 0 when starting
        there, and at the end (0: only at the end).
      chunk_size: steps per compiled call (``loop="device"``).
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
    loop = resolve_loop(loop, state)
    train, val, test = (sources.as_source(d) for d in (train, val, test))
    if not sources.is_streamed(train):
        check_inputs(task, train)
    standard = _standard_hooks(rewind_step, checkpoints, checkpoint_every, metrics_path, progress, steps)
    hooks = [*standard, *hooks]
    rewind = next((h for h in hooks if isinstance(h, RewindPoint)), None)
    for hook in hooks:
        state = hook.on_start(state, steps)
    start, t0 = host_step(state), time.perf_counter()
    if start > steps:
        raise ValueError(f"the state is at step {start}, past steps={steps}")
    evals = ({0, *range(eval_every, steps, eval_every)} if eval_every else set()) | {steps}
    chunk = min(chunk_size, train.max_chunk_steps) if sources.is_streamed(train) else chunk_size
    plan = _segments(start, steps, chunk, evals.union(*(h.boundaries(start, steps) for h in hooks)))
    evaluator = _Evaluator(task, val, test, eval_batch_size, mesh, t0, seed_strategy)
    calls = _Calls(task, train, plan, batch_size, augment, chunk, loop, mesh, seed_strategy)
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
            rec[f"train_{k}"] = _tolist(self.sums[k] / self.count) if self.count else None
        for name, ds in self.splits:
            if ds is not None:
                out = parallel.to_host(evaluate(self.task, state, ds, batch_size=self.batch_size, mesh=self.mesh,
                                                seed_strategy=self.seed_strategy))
                rec.update({f"{name}_{k}": _tolist(v) for k, v in out.items()})
        rec["elapsed_s"] = round(time.perf_counter() - self.t0, 3)
        self.history.append(rec)
        self.sums, self.count = {}, 0
        return rec
