"""Evaluation of a whole split: loss, metrics and outputs, per replica, in one compiled program.

:func:`evaluate` takes a device-resident split (evaluated in one ``lax.scan`` over its
batches) or a streamed one (:class:`~jaxticket.train.HostStream`, batch by batch with the
host summing); :func:`~jaxticket.train.fit` calls it at every evaluation step.

Example:
    >>> import numpy as np, optax, flax.linen as nn
    >>> from jaxticket import data, train
    >>> x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    >>> d = data.from_arrays(train=(x, (x[:, 0] > 0).astype(np.int32)))
    >>> task = train.Task(nn.Dense(2), input_shape=(8,), tx=optax.sgd(0.1))
    >>> sorted(evaluate(task, train.init_state(task, seeds=2), d.train, batch_size=16))
    ['accuracy', 'loss']
"""

from __future__ import annotations

import concurrent.futures
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxticket import parallel
from jaxticket.train import sources
from jaxticket.train.state import TrainState, is_batched
from jaxticket.train.step import eval_sums, means, resolve_seed_strategy, split_replicas
from jaxticket.train.task import Task

__all__ = ["as_lists", "evaluate"]


def as_lists(x):
    """A host array as Python numbers: a scalar for 0-d, nested lists otherwise."""
    x = np.asarray(x)
    return x.item() if x.ndim == 0 else x.tolist()




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

    with concurrent.futures.ThreadPoolExecutor(max(1, ds.num_threads)) as pool:
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
