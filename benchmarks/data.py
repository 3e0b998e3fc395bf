"""Benchmark: device-resident batching versus a plain NumPy host loop, and cached loading.

For MNIST-shaped ``[60000, 28, 28, 1]`` and CIFAR-shaped ``[50000, 32, 32, 3]`` random
uint8 data, measures examples/s of

* device: ``jax.jit(make_batch)`` per step (per-step permutation of the epoch, gather,
  optional crop+flip augmentation, normalise), the dataset already on the device;
* device, 4 seeds: the same under ``jax.vmap`` over 4 (data key, aug key) pairs;
* host: a NumPy loop doing the same work (permutation once per epoch, fancy-index
  gather, vectorised crop+flip, normalise) followed by ``jax.device_put`` of the batch;

prints the ratios, then the time to load a cached MNIST (the real cache in
``--data-dir`` / ``$JAXTICKET_DATA_DIR`` if present, else a synthetic one).

Run: ``python benchmarks/data.py [--steps 200] [--batch-size 128]``
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jaxticket import compilation_cache, data  # noqa: E402


def device_rate(ds, batch_size, steps, augment, seeds=1):
    if seeds == 1:
        fn = jax.jit(lambda d, k1, k2, s: data.make_batch(d, k1, k2, s, batch_size, augment=augment))
        k1, k2 = jax.random.key(0), jax.random.key(1)
    else:
        fn = jax.jit(jax.vmap(
            lambda d, k1, k2, s: data.make_batch(d, k1, k2, s, batch_size, augment=augment),
            in_axes=(None, 0, 0, None)))
        k1, k2 = jax.random.split(jax.random.key(0), seeds), jax.random.split(jax.random.key(1), seeds)
    jax.block_until_ready(fn(ds, k1, k2, 0))  # compile
    t = time.perf_counter()
    out = None
    for s in range(1, steps + 1):
        out = fn(ds, k1, k2, s)
    jax.block_until_ready(out)
    return seeds * steps * batch_size / (time.perf_counter() - t)


def host_rate(images, labels, mean, std, batch_size, steps, augment, pad=4):
    rng = np.random.default_rng(0)
    n, h, w, _ = images.shape
    spe = n // batch_size
    mean, inv_std = np.asarray(mean, np.float32), 1 / np.asarray(std, np.float32)
    ar_h, ar_w = np.arange(h), np.arange(w)
    perm = None
    t = time.perf_counter()
    out = None
    for s in range(steps):
        epoch, pos = divmod(s, spe)
        if pos == 0 or perm is None:
            perm = rng.permutation(n)
        idx = perm[pos * batch_size:(pos + 1) * batch_size]
        x, y = images[idx], labels[idx]
        if augment:
            x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
            dy = rng.integers(0, 2 * pad + 1, batch_size)
            dx = rng.integers(0, 2 * pad + 1, batch_size)
            flip = rng.random(batch_size) < 0.5
            rows = dy[:, None] + ar_h
            cols = np.where(flip[:, None], dx[:, None] + (w - 1 - ar_w), dx[:, None] + ar_w)
            x = x[np.arange(batch_size)[:, None, None], rows[:, :, None], cols[:, None, :]]
        x = (x.astype(np.float32) * (1 / 255) - mean) * inv_std
        out = jax.device_put((x, y))
    jax.block_until_ready(out)
    return steps * batch_size / (time.perf_counter() - t)


def cached_mnist_load(data_dir):
    path = data.cache_path(data_dir, "mnist", data.get_spec("mnist").tfds_version, "train")
    kind = "real"
    tmp = None
    if not data.is_cached(path):
        kind = "synthetic"
        tmp = tempfile.TemporaryDirectory()
        rng = np.random.default_rng(0)
        for split, n in (("train", 60000), ("test", 10000)):
            data.save_arrays(
                data.cache_path(tmp.name, "mnist", "3.0.1", split),
                rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
                rng.integers(0, 10, n).astype(np.int32))
        data_dir = tmp.name
    t = time.perf_counter()
    images, labels = data.load_arrays("mnist", "train", validation_size=0, data_dir=data_dir)
    t_np = time.perf_counter() - t
    t = time.perf_counter()
    parts = data.splits("mnist", data_dir=data_dir)
    jax.block_until_ready([parts["train"].inputs, parts["test"].inputs])
    t_dev = time.perf_counter() - t
    if tmp is not None:
        tmp.cleanup()
    return kind, images.shape, t_np, t_dev


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="JSON file for the figures (with the machine)")
    a = p.parse_args()
    compilation_cache.enable_default()  # as the jaxticket command (JAXTICKET_COMPILATION_CACHE=off: off)
    results = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                           "cpu_count": os.cpu_count(), "jax": jax.__version__,
                           "devices": [str(d) for d in jax.devices()],
                           "loadavg_at_start": list(os.getloadavg())},
               "batch_size": a.batch_size, "steps": a.steps, "seeds": a.seeds, "batching": []}

    print(f"machine: {platform.platform()} | python {platform.python_version()} | "
          f"cpus {os.cpu_count()} | jax {jax.__version__} | devices {jax.devices()}")
    print(f"batch size {a.batch_size}, {a.steps} timed steps each (after one warm-up/compile step)\n")
    rng = np.random.default_rng(0)
    cases = [("mnist", (60000, 28, 28, 1), False), ("cifar10", (50000, 32, 32, 3), False),
             ("cifar10", (50000, 32, 32, 3), True)]
    print(f"{'data':28s} {'device ex/s':>12s} {f'dev x{a.seeds} seeds':>15s} "
          f"{'host ex/s':>12s} {'dev/host':>9s} {f'x{a.seeds}/host':>9s}")
    for name, shape, aug in cases:
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        labels = rng.integers(0, 10, shape[0]).astype(np.int32)
        ds = data.to_device(images, labels, name)
        d = device_rate(ds, a.batch_size, a.steps, aug)
        dv = device_rate(ds, a.batch_size, a.steps, aug, seeds=a.seeds)
        h = host_rate(images, labels, ds.preprocess.mean, ds.preprocess.std, a.batch_size, a.steps, aug)
        label = f"{name} {list(shape)}{' +aug' if aug else ''}"
        print(f"{label:28s} {d:12,.0f} {dv:15,.0f} {h:12,.0f} {d / h:9.2f} {dv / h:9.2f}")
        results["batching"].append({"data": label, "device_examples_per_s": d,
                                    "device_seeds_examples_per_s": dv, "host_numpy_examples_per_s": h,
                                    "ratio_device_over_host": d / h, "ratio_seeds_over_host": dv / h})

    kind, shape, t_np, t_dev = cached_mnist_load(data.default_data_dir(a.data_dir))
    print(f"\ncached MNIST ({kind}, train {list(shape)}): load_arrays {t_np * 1e3:.1f} ms; "
          f"splits() train/validation/test incl. device_put {t_dev * 1e3:.1f} ms")
    results["cached_mnist"] = {"kind": kind, "train_shape": list(shape), "load_arrays_s": t_np,
                               "splits_with_device_put_s": t_dev}
    if a.out:
        import json

        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        with open(a.out + ".tmp", "w") as f:
            json.dump(results, f, indent=2)
        os.replace(a.out + ".tmp", a.out)
        print("wrote", a.out)


if __name__ == "__main__":
    main()
