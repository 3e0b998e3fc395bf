"""Training-engine speed: masked vs dense step, fit vs bare scan, seeds, FLOP/s vs peak.

    python benchmarks/train.py [--out benchmarks/results/train_cpu.json] [--quick]

Prints and saves (JSON, with the machine it ran on) three sets of ratios measured in
one run, on random uint8 data held on the device (N = 10,000 examples):

1. masked / dense time per train step, as ``fit`` runs it (LeNet: 200 steps per
   compiled call; conv models on CPU: one call per step, see ``train.fit(loop=)``), for
   LeNet-300-100 (batch 60, 28x28x1), Conv-2 (batch 32, 32x32x3), ResNet-20 (batch 32,
   32x32x3). Target <= 1.05. The masked step applies the mask to the params in the
   forward pass, to the gradients and to the updates; dense runs without a mask.
2. ``fit`` (chunks of 100 steps, metrics to the host after each chunk, NaN check,
   progress bar off) / a bare jitted scan of the same step in chunks of 100, LeNet-300-100,
   1,000 steps. Target <= 1.10.
3. The machine's dense matmul peak (float32 GFLOP/s), measured in the same run.
4. Seeds: S replicas trained by ``fit`` with each seed strategy (``vmap``: one batched
   program; ``sequential``: each replica's single-run program in turn; ``separate``: S
   ``fit`` calls of one replica each) against one replica alone, per seed-step, with the
   achieved FLOP/s (XLA's cost analysis of the step) as a fraction of the peak:
   LeNet-300-100 (S = 1, 2, 4, 8, 16, 32) and LeNet-5 (S = 1, 2, 4, 8); the fastest
   strategy per S beside what ``seed_strategy="auto"`` picks on this backend.
5. Throughput on random data of CIFAR-10's shape: LeNet-300-100 (batch 60) and ResNet-20
   (batch 128), steps per second and achieved FLOP/s against the peak.
6. One full LeNet-300-100 level (50,000 iterations of batch 60, validation every 5,000):
   cold (compilation included) and warm wall time, and ``fit``'s fixed cost.

The same script runs unchanged on a GPU (results/train_gpu.json).

Times are the minimum of a few interleaved repeats after compilation (the first call,
compilation included, is reported apart); the load average is recorded, since on a
shared machine other processes inflate the times.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from host import host  # noqa: E402
from jaxticket import compilation_cache, data, train  # noqa: E402
from jaxticket.data import ArrayDataset  # noqa: E402
from jaxticket.train import sources  # noqa: E402

N = 10_000


def machine() -> dict:
    """:func:`host.host` and the JAX backend the benchmark ran on."""
    dev = jax.devices()[0]
    return {**host(), "jax": jax.__version__, "backend": jax.default_backend(),
            "device": getattr(dev, "device_kind", str(dev)), "device_count": jax.device_count()}


def dataset(shape) -> ArrayDataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, *shape), dtype=np.uint8)
    labels = rng.integers(0, 10, N).astype(np.int32)
    return ArrayDataset(jax.device_put(images), jax.device_put(labels), "bench", 10,
                        data.Normalize((0.5,) * shape[-1], (0.25,) * shape[-1]))


def timed(fn, repeats: int) -> float:
    """Least wall time of ``fn()`` (which must block) over ``repeats`` runs: on a shared
    machine the minimum is the estimate least disturbed by other processes."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def fit_step_time(task, state, ds, k, batch_size, repeats=1):
    """Seconds per step of ``fit`` over ``k`` steps (one chunk, no evaluation), and the
    first call's time (compilation included). ``fit`` picks its loop as usual: many
    steps per compiled call, or one call per step for conv models on CPU."""
    run = lambda: jax.block_until_ready(train.fit(task, state, ds, steps=int(state.step) + k, batch_size=batch_size,  # noqa: E731
                                                  chunk_size=k, progress=False).state)
    t = time.perf_counter()
    run()
    first = time.perf_counter() - t
    return timed(run, repeats) / k, first


def masked_vs_dense(quick):
    out = {}
    cases = [("lenet_300_100", 60, (28, 28, 1), 200), ("conv2", 32, (32, 32, 3), 10),
             ("resnet20", 32, (32, 32, 3), 10)]
    for model, bs, shape, k in cases:
        if quick:
            k = max(2, k // 4)
        ds = dataset(shape)
        task = train.task_from_config(train.TrainConfig(model=model, input_shape=shape, lr=0.1, momentum=0.9,
                                                        weight_decay=1e-4))
        t = time.perf_counter()
        masked = train.init_state(task)
        init_s = time.perf_counter() - t
        dense = masked.replace(mask=None)
        per = {"masked": [], "dense": []}
        first = {}
        for name, st in (("masked", masked), ("dense", dense)):
            _, first[name] = fit_step_time(task, st, ds, k, bs)
        for _ in range(3 if quick else 5):  # interleaved, so drift hits both alike
            for name, st in (("masked", masked), ("dense", dense)):
                per[name].append(fit_step_time(task, st, ds, k, bs)[0])
        m, d = min(per["masked"]), min(per["dense"])
        loop = train.resolve_loop("auto", masked)
        out[model] = {"batch_size": bs, "steps_per_call": k if loop == "device" else 1,
                      "loop": loop, "masked_ms_per_step": 1e3 * m,
                      "dense_ms_per_step": 1e3 * d, "ratio_masked_over_dense": m / d,
                      "init_s": init_s, "first_call_s": first}
        print(f"[masked vs dense] {model:14s} batch {bs:3d} ({loop} loop): masked {1e3 * m:8.2f} "
              f"ms/step, dense {1e3 * d:8.2f} ms/step, ratio {m / d:.3f}", flush=True)
    return out


def fit_vs_scan(quick):
    steps, chunk = (300 if quick else 1000), 100
    ds = dataset((28, 28, 1))
    task = train.task_from_config(train.TrainConfig(model="lenet_300_100", lr=0.05, momentum=0.9))
    state = train.init_state(task)
    feed = sources.DeviceFeed(60)

    @jax.jit
    def scan(s):  # the bare loop: the same masked step, nothing else
        def body(s, _):
            return train.train_step(task, s, feed.batch(ds, s, 0))
        return jax.lax.scan(body, s, None, length=chunk)

    def bare():
        s = state
        for _ in range(steps // chunk):
            s, m = scan(s)
        jax.block_until_ready(s)

    def loop():
        jax.block_until_ready(train.fit(task, state, ds, steps=steps, batch_size=60, chunk_size=chunk,
                                        progress=False).state)

    bare(), loop()  # compile both
    tb, tf = [], []
    for _ in range(3 if quick else 5):
        tb.append(timed(bare, 1))
        tf.append(timed(loop, 1))
    b, f = min(tb), min(tf)
    print(f"[fit vs scan] lenet_300_100 {steps} steps, chunks of {chunk}: fit {f:.3f} s, "
          f"bare scan {b:.3f} s, ratio {f / b:.3f}", flush=True)
    return {"model": "lenet_300_100", "batch_size": 60, "steps": steps, "chunk_size": chunk,
            "fit_s": f, "bare_scan_s": b, "ratio_fit_over_bare": f / b}


def matmul_peak(quick) -> dict:
    """This machine's dense float32 matmul throughput: the physical limit to compare with."""
    n = 1024 if quick else (2048 if jax.default_backend() == "cpu" else 8192)
    a = jax.device_put(np.random.default_rng(0).standard_normal((n, n), np.float32))
    mm = jax.jit(lambda x: x @ x)
    jax.block_until_ready(mm(a))
    t = timed(lambda: jax.block_until_ready(mm(a)), 5)
    flops = 2.0 * n**3
    print(f"[peak] {n}x{n} float32 matmul: {flops / t / 1e9:.1f} GFLOP/s", flush=True)
    return {"n": n, "gflops": flops / t / 1e9}


def step_flops(task, state, ds, bs) -> float:
    """FLOPs of one training step (XLA's cost analysis of the compiled single step)."""
    feed = sources.DeviceFeed(bs)
    one = train.replica(state, 0) if train.is_batched(state) else state
    compiled = jax.jit(lambda s: train.train_step(task, s, feed.batch(ds, s, 0))).lower(one).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


SEED_COUNTS = (1, 2, 4, 8, 16, 32)


def seeds_axis(quick, peak_gflops):
    """S replicas trained by fit with each seed strategy vs one replica alone: cost per
    seed-step relative to the single run (the target was <= 0.6 for 8 seeds of LeNet).

    Strategies: ``vmap`` (one batched program), ``sequential`` (each replica's
    single-run program in turn, inside one ``fit``) and ``separate`` (S ``fit`` calls of
    one replica each, one after the other: what S separate runs cost without their
    processes' start-up). ``single`` is one replica alone (S = 1)."""
    out = {}
    cases = [("lenet_300_100", (28, 28, 1), 60, SEED_COUNTS[:4] if quick else SEED_COUNTS, 50 if quick else 200),
             ("lenet5", (28, 28, 1), 60, (1, 5) if quick else (1, 2, 4, 8), 10 if quick else 40)]
    for model, shape, bs, seed_counts, k in cases:
        ds = dataset(shape)
        task = train.task_from_config(train.TrainConfig(model=model, input_shape=shape, optimizer="adam", lr=1e-3))
        flops = step_flops(task, train.init_state(task), ds, bs)
        per = {}
        for S in seed_counts:
            state = train.init_state(task, seeds=S) if S > 1 else train.init_state(task)

            def fit(st, strategy="auto", k=k):
                return jax.block_until_ready(train.fit(task, st, ds, steps=k, batch_size=bs, chunk_size=k,
                                                       progress=False, seed_strategy=strategy).state)

            if S > 1:
                replicas = [train.replica(state, r) for r in range(S)]
                runs = {"vmap": lambda: fit(state, "vmap"), "sequential": lambda: fit(state, "sequential"),
                        "separate": lambda: [fit(r) for r in replicas]}
            else:
                runs = {"single": lambda: fit(state)}
            for run in runs.values():
                run()  # compile
            times = {st: [] for st in runs}
            for _ in range(3 if quick else 5):  # interleaved
                for st, run in runs.items():
                    times[st].append(timed(run, 1))
            per[str(S)] = {st: 1e3 * min(ts) / (S * k) for st, ts in times.items()}
        single = per["1"]["single"]
        rows = {}
        for S, row in per.items():
            rows[S] = {f"{st}_ms_per_seed_step": v for st, v in row.items()}
            rows[S].update({f"{st}_over_single": v / single for st, v in row.items() if st != "single"})
            rows[S].update({f"{st}_fraction_of_peak": flops / (v / 1e3) / 1e9 / peak_gflops for st, v in row.items()})
            print(f"[seeds] {model:14s} S={S}: " + ", ".join(
                f"{st} {v:.3f} ms/seed-step ({flops / (v / 1e3) / 1e9:.0f} GFLOP/s, "
                f"{100 * flops / (v / 1e3) / 1e9 / peak_gflops:.0f}% of peak)" for st, v in row.items()), flush=True)
        fastest = {S: min((st for st in row if st != "single"), key=row.get) for S, row in per.items() if S != "1"}
        out[model] = {"batch_size": bs, "steps_per_fit": k, "step_gflop": flops / 1e9,
                      "loop": train.resolve_loop("auto", train.init_state(task)), "by_S": rows,
                      "fastest_strategy_by_S": fastest,
                      "auto_strategy": train.resolve_seed_strategy("auto")}
    return out


def throughput(quick, peak_gflops) -> dict:
    """Training steps per second and achieved FLOP/s (XLA's cost analysis of one step)
    against the measured peak, on random data of CIFAR-10's shape (32x32x3):
    LeNet-300-100 (batch 60) and ResNet-20 (batch 128), one replica, as ``fit`` runs them."""
    ds = dataset((32, 32, 3))
    out = {}
    for model, bs, k, extra in (("lenet_300_100", 60, 100 if quick else 1000, dict(optimizer="adam", lr=1e-3)),
                                ("resnet20", 128, 5 if quick else 20, dict(lr=0.1, momentum=0.9, weight_decay=1e-4))):
        task = train.task_from_config(train.TrainConfig(model=model, input_shape=(32, 32, 3), **extra))
        state = train.init_state(task)
        flops = step_flops(task, state, ds, bs)
        run = lambda: jax.block_until_ready(train.fit(task, state, ds, steps=k, batch_size=bs, chunk_size=k,  # noqa: E731
                                                      progress=False).state)
        run()
        t = timed(run, 3)
        gflops = flops * k / t / 1e9
        print(f"[throughput] {model} batch {bs}, 32x32x3: {k / t:.2f} steps/s, {gflops:.1f} GFLOP/s "
              f"({100 * gflops / peak_gflops:.1f}% of peak)", flush=True)
        out[model] = {"batch_size": bs, "input_shape": [32, 32, 3], "steps": k, "steps_per_s": k / t,
                      "step_gflop": flops / 1e9, "gflops": gflops, "fraction_of_peak": gflops / peak_gflops,
                      "loop": train.resolve_loop("auto", state)}
    return out


def full_level(quick) -> dict:
    """One IMP level's training as the LeNet-300-100 preset runs it: 50,000 iterations of
    batch 60 (Adam 1.2e-3) on random data of MNIST's shape with a validation evaluation
    every 5,000, in one ``fit``; wall time of a first call (compilation included) against
    the same call again (warm), and the fixed cost of ``fit`` (its first step, cold)."""
    ds = dataset((28, 28, 1))
    val = dataset((28, 28, 1))
    steps = 2_000 if quick else 50_000
    task = train.task_from_config(train.TrainConfig(model="lenet_300_100", input_shape=(28, 28, 1),
                                                    optimizer="adam", lr=1.2e-3))
    state = train.init_state(task)

    def run(n):
        return jax.block_until_ready(train.fit(task, state, ds, steps=n, batch_size=60, val=val,
                                               eval_every=max(1, n // 10), progress=False).state)

    t = time.perf_counter()
    run(steps)
    cold = time.perf_counter() - t
    warm = timed(lambda: run(steps), 1)
    t = time.perf_counter()
    run(1)
    first_step = time.perf_counter() - t
    print(f"[level] LeNet-300-100, {steps} iterations: {cold:.1f} s cold, {warm:.1f} s warm "
          f"({steps / warm:.0f} it/s); fit's first step with a new length {first_step:.2f} s", flush=True)
    return {"steps": steps, "batch_size": 60, "cold_s": cold, "warm_s": warm, "iterations_per_s": steps / warm,
            "first_step_s": first_step}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/train_<backend>.json)")
    p.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = p.parse_args()
    compilation_cache.enable_default()  # as the jaxticket command (JAXTICKET_COMPILATION_CACHE=off: off)
    t0 = time.perf_counter()
    info = machine()
    print(json.dumps(info), flush=True)
    result = {"machine": info, "dataset_examples": N, "quick": args.quick,
              "masked_vs_dense": masked_vs_dense(args.quick),
              "fit_vs_bare_scan": fit_vs_scan(args.quick),
              "matmul_peak": (peak := matmul_peak(args.quick)),
              "seeds": seeds_axis(args.quick, peak["gflops"]),
              "throughput": throughput(args.quick, peak["gflops"]),
              "full_level": full_level(args.quick)}
    result["total_s"] = time.perf_counter() - t0
    result["loadavg_at_end"] = os.getloadavg()
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"train_{jax.default_backend()}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"total {result['total_s']:.0f} s; wrote {out}")


if __name__ == "__main__":
    main()
