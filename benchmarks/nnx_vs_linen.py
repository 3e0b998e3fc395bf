"""The jitted train step of a Flax NNX task against the same model's Linen task, in one run.

The model is the CNN of the Flax NNX MNIST tutorial (conv 32, conv 64, avg pools,
dense 256, dense 10; ``--small``: 8, 16, 64) on MNIST-shaped inputs, written once in
NNX (``jt.Task.from_nnx``) and once in Linen (``jt.Task``), with the same optimizer
(Adam), batch and mask (half the weights pruned, so the masked update is timed too).
Both steps are ``jax.jit(jaxticket.train.train_step, static_argnums=0)``; the NNX one
merges the graph definition with the arrays when it is traced, so the compiled programs
should be the same and the ratio about 1.

Timing: after one call each (compilation, reported apart), ``--repeats`` rounds, each
timing ``--steps`` steps of one task then of the other (alternating which goes first,
so the machine's load falls on both alike); the median seconds per step of each, and
their ratio NNX / Linen. The machine (``jaxticket.machine``, JAX's backend and devices)
is recorded.

Run: ``python benchmarks/nnx_vs_linen.py [--repeats 15] [--steps 20] [--small]
[--out benchmarks/results/nnx_vs_linen/<backend>.json]``
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxticket as jt
from jaxticket import machine, train


class NNXCNN(nnx.Module):
    """The Flax NNX MNIST tutorial's CNN."""

    def __init__(self, *, rngs: nnx.Rngs, width=(32, 64), hidden=256):
        self.conv1 = nnx.Conv(1, width[0], kernel_size=(3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(width[0], width[1], kernel_size=(3, 3), rngs=rngs)
        self.avg_pool = partial(nnx.avg_pool, window_shape=(2, 2), strides=(2, 2))
        self.linear1 = nnx.Linear(7 * 7 * width[1], hidden, rngs=rngs)
        self.linear2 = nnx.Linear(hidden, 10, rngs=rngs)

    def __call__(self, x):
        x = self.avg_pool(nnx.relu(self.conv1(x)))
        x = self.avg_pool(nnx.relu(self.conv2(x)))
        x = x.reshape(x.shape[0], -1)
        return self.linear2(nnx.relu(self.linear1(x)))


class LinenCNN(nn.Module):
    """The same network in Linen."""

    width: tuple = (32, 64)
    hidden: int = 256

    @nn.compact
    def __call__(self, x):
        x = nn.avg_pool(nn.relu(nn.Conv(self.width[0], (3, 3), name="conv1")(x)), (2, 2), (2, 2))
        x = nn.avg_pool(nn.relu(nn.Conv(self.width[1], (3, 3), name="conv2")(x)), (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(10, name="linear2")(nn.relu(nn.Dense(self.hidden, name="linear1")(x)))


def _state(task):
    state = train.init_state(task)
    return train.with_mask(state, jt.magnitude(0.5)(state.params, state.mask, jax.random.key(0)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed round")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--small", action="store_true", help="widths 8, 16, 64 instead of 32, 64, 256")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    width, hidden = ((8, 16), 64) if args.small else ((32, 64), 256)
    tx = optax.adam(1e-3)
    tasks = {
        "nnx": jt.Task.from_nnx(partial(NNXCNN, width=width, hidden=hidden), input_shape=(28, 28, 1), tx=tx),
        "linen": jt.Task(LinenCNN(width, hidden), input_shape=(28, 28, 1), tx=tx),
    }
    rng = np.random.default_rng(0)
    batch = (jnp.asarray(rng.random((args.batch_size, 28, 28, 1), np.float32)),
             jnp.asarray(rng.integers(0, 10, args.batch_size).astype(np.int32)))
    step = jax.jit(train.train_step, static_argnums=0)
    states, compile_s = {}, {}
    for name, task in tasks.items():
        state = _state(task)
        t = time.perf_counter()
        state, metrics = step(task, state, batch)
        jax.block_until_ready(metrics)
        compile_s[name], states[name] = time.perf_counter() - t, state

    per_step = {name: [] for name in tasks}
    for r in range(args.repeats):
        for name in (("nnx", "linen") if r % 2 == 0 else ("linen", "nnx")):
            task, state = tasks[name], states[name]
            t = time.perf_counter()
            for _ in range(args.steps):
                state, metrics = step(task, state, batch)
            jax.block_until_ready((state.params, metrics))
            per_step[name].append((time.perf_counter() - t) / args.steps)
            states[name] = state
    median = {name: statistics.median(v) for name, v in per_step.items()}
    result = {
        "benchmark": "nnx_vs_linen train_step",
        "model": f"tutorial CNN widths {list(width)} hidden {hidden}, input [B, 28, 28, 1], adam, 50% masked",
        "batch_size": args.batch_size, "steps_per_round": args.steps, "repeats": args.repeats,
        "compile_s": {k: round(v, 3) for k, v in compile_s.items()},
        "median_step_s": {k: round(v, 6) for k, v in median.items()},
        "ratio_nnx_over_linen": round(median["nnx"] / median["linen"], 4),
        "per_round_step_s": {k: [round(x, 6) for x in v] for k, v in per_step.items()},
        "machine": {**machine.describe(), "jax": jax.__version__, "backend": jax.default_backend(),
                    "devices": [str(d) for d in jax.devices()]},
    }
    out = pathlib.Path(args.out or f"benchmarks/results/nnx_vs_linen/{jax.default_backend()}"
                       f"{'_small' if args.small else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("compile_s", "median_step_s", "ratio_nnx_over_linen")}))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
